//! Issue 7: `baton probe` reports exactly what a test server did to it.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

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

/// The version switch is reported once, at the time the first v2 answered.
#[test]
fn reports_the_switch() {
    let (mut server, port) = flaky(&[("SWITCH_AT", "300")]);
    let (code, r) = probe(
        port,
        &[
            "--rate",
            "200",
            "--duration",
            "3s",
            "--version-header",
            "x-version",
        ],
    );
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
