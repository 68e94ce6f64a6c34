//! Issue 25: `baton import pm2` on the two pm2 files of seeds 002 and 003
//! (retyped in tests/fixtures/pm2) and on a YAML file of two apps, which
//! then runs for real.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pm2")
        .join(name)
}

/// `baton import pm2 <fixture> --out <dir> --json` and extra args.
fn import(name: &str, out: &Path, extra: &[&str]) -> (serde_json::Value, std::process::Output) {
    let run = Command::new(bin())
        .args(["import", "pm2"])
        .arg(fixture(name))
        .arg("--out")
        .arg(out)
        .arg("--json")
        .args(extra)
        .output()
        .expect("run baton import");
    let report = serde_json::from_slice(&run.stdout).unwrap_or_default();
    (report, run)
}

fn check(file: &Path) {
    let out = Command::new(bin())
        .args(["check", "-c"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "baton check {}: {}",
        file.display(),
        text(&out)
    );
}

fn left_behind(report: &serde_json::Value) -> String {
    report["left_behind"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Seed 003's app.json with `--env production`: every field Baton has is
/// carried over, and the rest is named with the reason.
#[test]
fn seed_003_app_json_is_carried_over() {
    let out = tempfile::tempdir().unwrap();
    let (report, run) = import("app.json", out.path(), &["--env", "production"]);
    assert!(run.status.success(), "{}", text(&run));
    let file = out.path().join("baton.toml");
    check(&file);
    let toml: toml::Value = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(toml["app"]["name"].as_str(), Some("example"));
    let web = &toml["web"];
    assert_eq!(web["command"].as_str(), Some("node index.js"));
    assert_eq!(web["instances"].as_integer(), Some(4));
    assert_eq!(web["start_timeout"].as_str(), Some("5s"));
    assert_eq!(web["kill_timeout"].as_str(), Some("5s"));
    assert_eq!(web["max_restarts"].as_integer(), Some(5));
    assert_eq!(web["env"]["NODE_ENV"].as_str(), Some("production"));
    assert_eq!(web["readiness"]["kind"].as_str(), Some("node-ipc"));
    assert_eq!(
        toml["daemon"]["app_log"].as_str(),
        Some("/var/www/log/example-output.log")
    );
    let notes = left_behind(&report);
    for field in [
        "error_file",
        "merge_logs",
        "log_date_format",
        "pid_file",
        "watch",
        "exec_mode",
    ] {
        assert!(
            notes.contains(&format!("example: {field}: ")),
            "{field} not named:\n{notes}"
        );
    }
    assert!(!notes.contains("env_production"), "{notes}");
}

/// Seed 002's ecosystem.config.js, evaluated with node as pm2 does; its
/// deploy section and its env_production (without --env) are named.
#[test]
fn seed_002_ecosystem_file_is_evaluated_and_carried_over() {
    let out = tempfile::tempdir().unwrap();
    let (report, run) = import("ecosystem.config.js", out.path(), &[]);
    assert!(run.status.success(), "{}", text(&run));
    let file = out.path().join("baton.toml");
    check(&file);
    let toml: toml::Value = toml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let web = &toml["web"];
    assert_eq!(web["command"].as_str(), Some("node server.js null"));
    assert_eq!(web["instances"].as_integer(), Some(2));
    assert_eq!(web["autorestart"].as_bool(), Some(false));
    assert_eq!(web["min_uptime"].as_str(), Some("1m"));
    assert_eq!(web["max_restarts"].as_integer(), Some(3));
    assert_eq!(web["max_memory"].as_str(), Some("1G"));
    assert_eq!(web["kill_timeout"].as_str(), Some("3s"));
    assert_eq!(web["env"]["NODE_ENV"].as_str(), Some("development"));
    assert_eq!(web["readiness"]["kind"].as_str(), Some("tcp"));
    assert_eq!(toml["daemon"]["app_log"].as_str(), Some("./logs/app.log"));
    let notes = left_behind(&report);
    assert!(
        notes.contains("app: env_production: not applied"),
        "{notes}"
    );
    assert!(notes.contains("deploy: "), "{notes}");
    assert!(notes.contains("app: watch: "), "{notes}");

    // Written once: a second import refuses to overwrite.
    let (_, again) = import("ecosystem.config.js", out.path(), &[]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("does not overwrite"),
        "{}",
        text(&again)
    );
}

/// Two apps become a server file and a folder each; with the app's code
/// in each folder, `baton up` serves both, routed by host.
#[test]
fn several_apps_become_a_server_that_runs() {
    let out = tempfile::tempdir().unwrap();
    let (report, run) = import("several.yaml", out.path(), &[]);
    assert!(run.status.success(), "{}", text(&run));
    let files = report["files"].as_array().unwrap();
    assert_eq!(files.len(), 3, "{report:#}");
    let server = out.path().join("baton.toml");
    let port = free_port();
    let text_of = std::fs::read_to_string(&server).unwrap();
    std::fs::write(
        &server,
        text_of.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    for app in ["api", "worker"] {
        std::fs::copy(app_js(), out.path().join(app).join("server.js")).unwrap();
    }
    check(&server);
    let _daemon = Stops(
        Command::new(bin())
            .arg("up")
            .current_dir(out.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ask = |host: &str| {
        raw(
            port,
            &format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .map(|a| a.body)
        .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "both apps to answer", || {
        ask("api.example.com").starts_with("version=api-v1")
            && ask("worker.example.com").starts_with("version=worker-v1")
    });
}

/// A daemon stopped (SIGTERM, then waited for) when the test ends, as it
/// passes or fails.
struct Stops(std::process::Child);

impl Drop for Stops {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}
