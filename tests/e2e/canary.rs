//! Canary releases (`baton deploy --canary`): a share of the clients on the
//! new release, judged by Baton against the serving one, then promoted or
//! rolled back; all under load, with 0 failed requests from the mechanics.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

/// Two instances of the test app answering `version`, `env` added to their
/// environment, and a `[canary]` that judges after `min_requests`.
fn web(version: &str, env: &str, min_requests: u32) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = 2\nwatch_after_switch = \"1s\"\n\
         env = {{ APP_VERSION = \"{version}\"{env} }}\n\
         [web.readiness]\nkind = \"http\"\npath = \"/health\"\n\
         [canary]\nmin_requests = {min_requests}\n"
    )
}

/// A daemon serving v1 (`extra` after its config) under a probe that
/// counts answers by version.
fn serving_v1_under_load(min_requests: u32, extra: &str) -> (Daemon, Probe) {
    let d = Daemon::start(&(web("v1", "", min_requests) + extra));
    d.wait_ready(2);
    let probe = d.probe("/", &["--duration", "300s", "--concurrency", "4"]);
    wait_until(Duration::from_secs(20), "the probe's first answers", || {
        d.total("served") >= 20
    });
    (d, probe)
}

/// Starts `baton deploy` with `args` in the daemon's folder.
fn deploy(d: &Daemon, args: &[&str]) -> std::process::Child {
    std::process::Command::new(bin())
        .arg("deploy")
        .args(args)
        .current_dir(d.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The version a GET of / with `headers` answered, and the canary cookie
/// it was given, if any.
fn ask(d: &Daemon, headers: &str) -> (String, Option<String>) {
    let answer = raw(
        d.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"),
    )
    .unwrap();
    let version = (answer.header("x-version"))
        .unwrap_or_else(|| panic!("no version in {:?}", answer.headers))
        .to_string();
    let cookie = (answer.header("set-cookie")).map(|c| c.split(';').next().unwrap().to_string());
    (version, cookie)
}

/// The status, and the canary's instances in it.
fn canary_instances(d: &Daemon) -> Vec<Value> {
    let s = d.status();
    let Some(release) = s["canary"]["release"].as_str() else {
        return Vec::new();
    };
    (s["instances"].as_array().unwrap().iter())
        .filter(|i| i["release"] == release)
        .cloned()
        .collect()
}

/// The failures the probe saw, by version.
fn failed_by_version(report: &Value) -> Vec<(String, u64)> {
    (report["versions"].as_array().unwrap().iter())
        .map(|v| {
            (
                v["version"].as_str().unwrap().to_string(),
                v["failed"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A v2 that answers 500 to 20 % of its requests is rolled back on its
/// own: `baton deploy` exits 1 with the figures, every failure the probe
/// saw came from v2 (its share), none from v1 or from the mechanics, and
/// v1 serves everyone afterwards.
#[test]
fn a_failing_canary_is_rolled_back_with_its_figures() {
    let (d, probe) = serving_v1_under_load(100, "");
    let stable = d.status()["release"].as_str().unwrap().to_string();
    d.rewrite(&web("v2", ", FAIL_PERCENT = \"20\"", 100));
    let out = deploy(&d, &["--canary", "50%", "--canary-for", "120s"])
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("rolled back: error rate"), "{said}");
    assert!(
        said.contains("the stable release serves every client"),
        "{said}"
    );
    let r = probe.stop();
    let by_version = failed_by_version(&r);
    assert_eq!(by_version.len(), 2, "{r:#}");
    assert_eq!(by_version[0], ("v1".to_string(), 0), "{r:#}");
    let v2_failed = by_version[1].1;
    assert!(v2_failed > 0, "{r:#}");
    assert_eq!(
        r["failed"].as_u64().unwrap(),
        v2_failed,
        "only v2 failed: {r:#}"
    );
    assert_eq!(r["errors"]["5xx"].as_u64().unwrap(), v2_failed, "{r:#}");
    let s = d.status();
    assert_eq!(s["release"], stable.as_str());
    assert!(s["canary"].is_null(), "{s:#}");
    assert!(
        (s["instances"].as_array().unwrap().iter()).all(|i| i["release"] == stable.as_str()),
        "the canary's instances are gone: {s:#}"
    );
    for _ in 0..20 {
        assert_eq!(ask(&d, "").0, "v1");
    }
}

/// A healthy v2 in two steps (20 %, then 50 %) is promoted after its
/// window: an ordinary switch and drain, 0 failed, and v2 answers last.
#[test]
fn a_healthy_canary_is_promoted_after_its_steps() {
    let (d, probe) = serving_v1_under_load(50, "");
    d.rewrite(&web("v2", "", 50));
    let out = deploy(&d, &["--steps", "20,50", "--canary-for", "1s"])
        .wait_with_output()
        .unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for step in [
        "canary step 1/2: 20% of clients",
        "step 1/2 healthy",
        "canary step 2/2: 50% of clients",
        "step 2/2 healthy",
        "promoting release",
        "serves all traffic",
    ] {
        assert!(said.contains(step), "no {step:?} in:\n{said}");
    }
    let r = probe.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
    let versions = r["versions"].as_array().unwrap();
    let last = versions
        .iter()
        .max_by_key(|v| v["last_ms"].as_u64())
        .unwrap();
    assert_eq!(last["version"], "v2", "{r:#}");
    assert!(d.status()["canary"].is_null());
    for _ in 0..10 {
        assert_eq!(ask(&d, "").0, "v2");
    }
}

/// While a canary runs: a client keeps its side by its cookie across 100
/// requests, testers force a side by header or cookie, `baton status`
/// and /metrics show both releases; then `baton abort` ends it at once:
/// the deploy exits 1, everyone is on v1, and the probe saw 0 failed.
#[test]
fn the_cookie_keeps_a_client_on_its_side_and_abort_ends_the_canary() {
    let metrics = free_port();
    let admin = format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n");
    let (d, probe) = serving_v1_under_load(1_000_000, &admin);
    d.rewrite(&(web("v2", "", 1_000_000) + &admin));
    let running = deploy(&d, &["--canary", "50%", "--canary-for", "300s"]);
    wait_until(Duration::from_secs(30), "the canary to run", || {
        d.status()["canary"]["share_percent"] == 50.0
    });
    // Fresh clients get a cookie; with it, one client stays on one side.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (first, cookie) = ask(&d, "");
        let cookie = cookie.expect("a fresh client gets the canary cookie");
        assert!(cookie.starts_with("baton_canary="), "{cookie}");
        for _ in 0..100 {
            let (again, set) = ask(&d, &format!("Cookie: a=1; {cookie}\r\n"));
            assert_eq!(again, first, "{cookie} moved");
            assert_eq!(set, None, "a client with a cookie keeps it");
        }
        seen.insert(first);
    }
    for _ in 0..20 {
        assert_eq!(ask(&d, "x-baton-canary: always\r\n").0, "v2");
        assert_eq!(ask(&d, "x-baton-canary: never\r\n").0, "v1");
        assert_eq!(ask(&d, "Cookie: baton_canary=always\r\n").0, "v2");
    }
    let s = d.status();
    let canary = &s["canary"];
    assert!(canary["canary"]["requests"].as_u64().unwrap() > 0, "{s:#}");
    assert!(canary["stable"]["requests"].as_u64().unwrap() > 0, "{s:#}");
    let human = text(&d.baton(&["status"]));
    assert!(human.contains("canary: release"), "{human}");
    let m = get(metrics, "/metrics").unwrap().body;
    assert!(m.contains("baton_canary_share_ratio{"), "{m}");
    assert!(
        m.contains("side=\"canary\"") && m.contains("side=\"stable\""),
        "{m}"
    );

    let out = d.baton(&["abort"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("aborted by `baton abort`"),
        "{}",
        text(&out)
    );
    assert!(canary_instances(&d).is_empty());
    for _ in 0..20 {
        assert_eq!(
            ask(&d, "x-baton-canary: always\r\n").0,
            "v1",
            "no canary left"
        );
    }
    let r = probe.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
    let out = d.baton(&["promote"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing to promote: {}",
        text(&out)
    );
    assert!(text(&out).contains("no canary"), "{}", text(&out));
    // Twenty fresh clients at 50 %: all on one side would happen to a fair
    // draw once in half a million runs.
    assert_eq!(seen.len(), 2, "{seen:?}");
}

/// The canary's instances crash (SIGKILL) under load: its share goes back
/// to the stable release at once (0 failed: what was in flight is retried
/// there), and the deploy fails saying which instance died.
#[test]
fn a_crashed_canary_sends_its_share_back_at_once() {
    let (d, probe) = serving_v1_under_load(1_000_000, "");
    d.rewrite(&web("v2", "", 1_000_000));
    let running = deploy(&d, &["--canary", "50%", "--canary-for", "300s"]);
    wait_until(Duration::from_secs(30), "the canary to answer", || {
        d.status()["canary"]["canary"]["requests"].as_u64() > Some(20)
    });
    for i in canary_instances(&d) {
        let pid = i["pid"].as_i64().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("canary instance web#"),
        "{}",
        text(&out)
    );
    let r = probe.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(canary_instances(&d).is_empty());
    assert_eq!(ask(&d, "x-baton-canary: always\r\n").0, "v1");
}
