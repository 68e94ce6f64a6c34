//! Issue 7: `baton probe` reports exactly what a test server did to it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;

/// Starts tests/apps/flaky.js on a free port with `env`.
fn flaky(env: &[(&str, &str)]) -> (Child, u16) {
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/flaky.js"))
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    wait_until(Duration::from_secs(10), "the flaky server", || {
        get(port, "/").is_ok()
    });
    (child, port)
}

fn probe(port: u16, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(bin())
        .args(["probe", &format!("http://127.0.0.1:{port}/"), "--json"])
        .args(args)
        .output()
        .unwrap();
    let report =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (out.status.code(), report)
}

/// Exactly K failures are reported as K, by kind, and the exit code says so;
/// `--max-failures K` accepts them.
#[test]
fn reports_exactly_k_failures() {
    // The probe of `wait_until` above was request 1.
    let (mut server, port) = flaky(&[("FAIL_FROM", "50"), ("FAIL_COUNT", "7")]);
    let (code, r) = probe(
        port,
        &[
            "--requests",
            "300",
            "--concurrency",
            "4",
            "--duration",
            "30s",
        ],
    );
    assert_eq!(r["requests"], 300);
    assert_eq!(r["failed"], 7, "{r:#}");
    assert_eq!(r["errors"]["5xx"], 7);
    assert_eq!(r["status_codes"]["500"], 7);
    assert_eq!(r["status_codes"]["200"], 293);
    assert_eq!(code, Some(1), "failures exit 1");
    let (code, r) = probe(port, &["--requests", "100", "--max-failures", "7"]);
    assert_eq!(r["failed"], 0);
    assert_eq!(code, Some(0));
    server.kill().unwrap();
}

/// A server that ends keep-alive connections with `Connection: close` fails
/// nothing: the probe opens a new connection, as any client does, instead of
/// counting the closed one's next request as a failure.
#[test]
fn connection_close_is_honoured() {
    let (mut server, port) = flaky(&[("CLOSE_EVERY", "10")]);
    let (code, r) = probe(port, &["--requests", "300", "--concurrency", "4"]);
    assert_eq!(r["requests"], 300, "{r:#}");
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["status_codes"]["200"], 300);
    assert_eq!(code, Some(0));
    server.kill().unwrap();
}

/// Refused connections for a window: the outage is measured within one
/// interval (open loop, 200 requests/s: 5 ms), errors are `refused`.
#[test]
fn measures_the_outage_window() {
    let (mut server, port) = flaky(&[("OUTAGE_AT", "200"), ("OUTAGE_MS", "700")]);
    let (code, r) = probe(
        port,
        &["--rate", "200", "--duration", "3s", "--keepalive=false"],
    );
    assert_eq!(code, Some(1));
    let refused = r["errors"]["refused"].as_u64().unwrap();
    assert!(refused > 100, "{r:#}");
    let gap = r["longest_gap_ms"].as_u64().unwrap();
    // The server was down 700 ms; the probe sees it from the last success
    // before to the first after: 700 ms give or take one 5 ms interval,
    // plus the time node takes to listen again.
    assert!((695..=800).contains(&gap), "gap {gap} ms: {r:#}");
    let total: u64 = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(total, r["failed"].as_u64().unwrap(), "the timeline adds up");
    server.kill().unwrap();
}

/// Open loop, 200 requests a second for 3 s, versions from `x-version`.
const VERSIONS_FOR_3S: [&str; 6] = [
    "--rate",
    "200",
    "--duration",
    "3s",
    "--version-header",
    "x-version",
];

/// The version switch is reported once, at the time the first v2 answered.
#[test]
fn reports_the_switch() {
    let (mut server, port) = flaky(&[("SWITCH_AT", "300")]);
    let (code, r) = probe(port, &VERSIONS_FOR_3S);
    assert_eq!(code, Some(0));
    let switches = r["switches"].as_array().unwrap();
    assert_eq!(switches.len(), 1, "{r:#}");
    assert_eq!(
        (switches[0]["from"].as_str(), switches[0]["to"].as_str()),
        (Some("v1"), Some("v2"))
    );
    // Request 300 of the server is the probe's 299th (one went to the
    // readiness check), due at 298 × 5 ms; it was answered a little later.
    assert_eq!(switches[0]["sent_ms"], 1490, "{r:#}");
    let at = switches[0]["at_ms"].as_u64().unwrap();
    assert!(at >= 1490, "switch at {at} ms: {r:#}");
    assert_eq!(r["versions"][0]["count"], 298);
    server.kill().unwrap();
}

/// The attributes of each `<tag class="class" ...>` in `picture`.
fn drawn(picture: &str, tag: &str, class: &str) -> Vec<std::collections::HashMap<String, String>> {
    let opening = format!("<{tag} class=\"{class}\" ");
    picture
        .split(&opening)
        .skip(1)
        .map(|rest| {
            let end = rest.find('>').expect("a closed tag");
            rest[..end]
                .split("\" ")
                .filter_map(|pair| {
                    let (name, value) = pair.split_once("=\"")?;
                    Some((
                        name.trim().to_string(),
                        value.trim_end_matches(['"', '/']).to_string(),
                    ))
                })
                .collect()
        })
        .collect()
}

/// Checks that `picture` draws exactly the series of the JSON `report`:
/// per second, the answers of each version, those without one and the
/// failures; p99 per second; each switch.
fn assert_picture_matches(picture: &str, report: &serde_json::Value) {
    let mut bars: std::collections::BTreeMap<(u64, String), u64> = Default::default();
    for bar in drawn(picture, "rect", "bar") {
        let key = (
            bar["data-second"].parse().unwrap(),
            bar["data-series"].clone(),
        );
        assert!(bars
            .insert(key, bar["data-count"].parse().unwrap())
            .is_none());
    }
    let mut want: std::collections::BTreeMap<(u64, String), u64> = Default::default();
    let mut p99 = Vec::new();
    for second in report["timeline"].as_array().unwrap() {
        let n = second["second"].as_u64().unwrap();
        let mut versioned = 0;
        for (version, count) in second["versions"].as_object().unwrap() {
            want.insert((n, version.clone()), count.as_u64().unwrap());
            versioned += count.as_u64().unwrap();
        }
        let unversioned = second["ok"].as_u64().unwrap() - versioned;
        for (series, count) in [
            ("unversioned", unversioned),
            ("failed", second["failed"].as_u64().unwrap()),
        ] {
            if count > 0 {
                want.insert((n, series.to_string()), count);
            }
        }
        p99.push((n, second["p99_ms"].as_f64().unwrap()));
    }
    assert_eq!(bars, want, "the bars against the JSON report");
    let points: Vec<(u64, f64)> = drawn(picture, "circle", "p99-point")
        .iter()
        .map(|p| {
            (
                p["data-second"].parse().unwrap(),
                p["data-ms"].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(points, p99, "p99 per second");
    let switches: Vec<(u64, String, String)> = drawn(picture, "line", "switch")
        .iter()
        .map(|l| {
            (
                l["data-at-ms"].parse().unwrap(),
                l["data-from"].clone(),
                l["data-to"].clone(),
            )
        })
        .collect();
    let want: Vec<(u64, String, String)> = report["switches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["at_ms"].as_u64().unwrap(),
                s["from"].as_str().unwrap().to_string(),
                s["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(switches, want, "the switches");
}

/// `--report run.svg` draws a run with failures and a version switch:
/// every bar, failure, p99 point and switch matches the JSON report, and
/// the failures are marked.
#[test]
fn report_svg_draws_failures_and_the_switch() {
    let (mut server, port) = flaky(&[
        ("SWITCH_AT", "300"),
        ("FAIL_FROM", "100"),
        ("FAIL_COUNT", "9"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let (code, r) = probe(
        port,
        &[&VERSIONS_FOR_3S[..], &["--report", svg.to_str().unwrap()]].concat(),
    );
    server.kill().unwrap();
    assert_eq!(code, Some(1), "9 failures: {r:#}");
    assert_eq!(r["failed"], 9, "{r:#}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<?xml"), "{picture}");
    assert!(picture.contains("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_picture_matches(&picture, &r);
    let marked: u64 = drawn(&picture, "text", "failure-mark")
        .iter()
        .map(|m| m["data-failed"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(marked, 9);
    assert_eq!(drawn(&picture, "line", "switch").len(), 1);
}

/// `--report deploy.html` of a real deploy through Baton under load: one
/// self-contained page (no external reference) whose chart stacks the
/// answers of v1 then v2 as the JSON report counts them, with the switch
/// where the report has it, and the JSON report inside.
#[test]
fn report_html_draws_a_deploy() {
    let web = |v: &str| {
        format!(
            "[web]\ncommand = \"node server.js\"\ninstances = 2\nwatch_after_switch = \"1s\"\nenv = {{ APP_VERSION = \"{v}\" }}\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
        )
    };
    let d = Daemon::start(&web("v1"));
    d.wait_ready(2);
    let page = d.path("deploy.html");
    let r = d.across_switch(
        &["--concurrency", "4", "--report", page.to_str().unwrap()],
        || {
            d.rewrite(&web("v2"));
            let out = d.baton(&["deploy"]);
            assert!(out.status.success(), "{}", text(&out));
        },
    );
    assert_clean_switch(&r, "v1", "v2");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "{external} in {html}");
    }
    assert_picture_matches(&html, &r);
    let start = html.find("id=\"baton-probe-report\">").unwrap();
    let json = &html[start..];
    let json = &json[json.find('>').unwrap() + 1..json.find("</script>").unwrap()];
    let inside: serde_json::Value = serde_json::from_str(&json.replace("<\\/", "</")).unwrap();
    assert_eq!(inside, r, "the page holds the report");
    let v1: u64 = drawn(&html, "rect", "bar")
        .iter()
        .filter(|b| b["data-series"] == "v1")
        .map(|b| b["data-count"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(v1, r["versions"][0]["count"].as_u64().unwrap());
}

/// A report file that is neither .html nor .svg is refused before the run.
#[test]
fn report_needs_html_or_svg() {
    let out = Command::new(bin())
        .args(["probe", "http://127.0.0.1:9/", "--report", "run.png"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains(".html or .svg"), "{}", text(&out));
}

/// The JSON report's shape is a stable interface: its keys are pinned.
#[test]
fn json_schema_is_stable() {
    let (mut server, port) = flaky(&[("SWITCH_AT", "4")]);
    let (_, r) = probe(
        port,
        &[
            "--requests",
            "5",
            "--concurrency",
            "1",
            "--version-header",
            "x-version",
        ],
    );
    assert_eq!(
        r["switches"].as_array().unwrap().len(),
        1,
        "the sample has every part: {r:#}"
    );
    server.kill().unwrap();
    fn shape(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            serde_json::Value::Array(a) => {
                serde_json::Value::Array(a.first().map(shape).into_iter().collect())
            }
            serde_json::Value::Number(_) => "number".into(),
            serde_json::Value::String(_) => "string".into(),
            serde_json::Value::Bool(_) => "bool".into(),
            serde_json::Value::Null => "null".into(),
        }
    }
    let mut got = shape(&r);
    // Maps keyed by data, not schema.
    got["status_codes"] = serde_json::json!({"<code>": "number"});
    got["errors"] = serde_json::json!({"<kind>": "number"});
    got["timeline"][0]["versions"] = serde_json::json!({"<version>": "number"});
    let snapshot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/probe-report.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(
            &snapshot,
            serde_json::to_string_pretty(&got).unwrap() + "\n",
        )
        .unwrap();
    }
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&snapshot).unwrap()).unwrap();
    assert_eq!(
        got,
        want,
        "the probe's JSON changed shape; update {} only on purpose",
        snapshot.display()
    );
}

/// Issue 32: `-H 'Host: shop.test'` replaces the probe's own Host, as curl's
/// does, instead of adding a second one (which Baton's strict edge refuses
/// with 400); over h2 it is the `:authority`.
#[test]
fn a_host_header_replaces_the_probes_own() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n",
    );
    d.wait_ready(1);
    for extra in [&[][..], &["--http2"][..]] {
        let mut args = vec!["-H", "Host: shop.test", "--requests", "20"];
        args.extend_from_slice(extra);
        let r = d.probe("/echo-host", &args).report();
        assert_eq!(r["failed"], 0, "{extra:?}: {r:#}");
        assert_eq!(r["versions"][0]["version"], "shop.test", "{extra:?}: {r:#}");
        assert_eq!(r["versions"][0]["count"], 20, "{extra:?}: {r:#}");
    }
}

/// WebSocket mode reports close codes: a deploy-free target that closes
/// with 1001 is counted by code, not as an abnormal close. (The watch after
/// the reload's switch is short, so that the close comes within the
/// probe's 3 s.)
#[test]
fn websocket_close_codes_are_reported() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nconnection_drain_timeout = \"1s\"\nwatch_after_switch = \"1s\"\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n",
    );
    d.wait_ready(1);
    let probe = Command::new(bin())
        .args(["probe", &format!("ws://127.0.0.1:{}/ws", d.port)])
        .args([
            "--concurrency",
            "3",
            "--duration",
            "3s",
            "--json",
            "--version-prefix",
            "version=",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "3 WebSockets", || {
        d.status()["instances"][0]["connections"].as_u64() == Some(3)
    });
    assert!(d.baton(&["reload"]).status.success());
    let out = probe.wait_with_output().unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["close_codes"]["1001"], 3, "{r:#}");
    assert_eq!(r["abnormal_closes"], 0, "{r:#}");
    assert_eq!(r["reconnects"], 3, "{r:#}");
    assert!(r["echoes"].as_u64().unwrap() > 30, "{r:#}");
}
