//! Issue 4: zero-downtime deploy, reload, rollback and scale. Every test
//! runs `baton probe` through Baton during the change and asserts exactly 0
//! failed requests, and which version answered.

use std::time::Duration;

use crate::common::*;

pub(crate) fn web(instances: u32, env: &str, extra: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = {instances}\nenv = {{ {env} }}\n{extra}\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
    )
}

/// Waits until the probe has had answers, so the change happens under load.
pub(crate) fn wait_for_load(d: &Daemon) {
    wait_until(Duration::from_secs(20), "the probe's first answers", || {
        d.total("served") >= 20
    });
}

/// Runs `change` while a probe with `probe_args` runs, and returns the report.
pub(crate) fn under_load(
    d: &Daemon,
    probe_args: &[&str],
    change: impl FnOnce(),
) -> serde_json::Value {
    let probe = d.probe("/", probe_args);
    wait_for_load(d);
    change();
    probe.report()
}

pub(crate) fn deploy_ok(d: &Daemon, args: &[&str]) -> String {
    let out = d.baton(args);
    assert!(out.status.success(), "{args:?} failed: {}", text(&out));
    text(&out)
}

/// 1 instance, no signal handlers, a new connection per request: the case
/// where pm2 restart refuses hundreds of connections.
#[test]
pub(crate) fn single_instance_deploy_new_connection_per_request() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    let report = d.across_switch(&["--concurrency", "4", "--keepalive=false"], || {
        d.rewrite(&web(1, "APP_VERSION = \"v2\"", ""));
        let out = deploy_ok(&d, &["deploy"]);
        for step in [
            "starting 1 new instance",
            "ready 1/1",
            "switched to release",
            "draining",
            "old stopped",
            "serves all traffic",
        ] {
            assert!(out.contains(step), "progress lacks {step:?}:\n{out}");
        }
    });
    assert_clean_switch(&report, "v1", "v2");
    let s = d.status();
    assert_eq!(
        s["instances"].as_array().unwrap().len(),
        1,
        "the old instance is gone: {s:#}"
    );
    assert_eq!(s["instances"][0]["release"], s["release"]);
}

/// On a terminal (`script` gives it one), `baton deploy` shows its steps
/// live: each finished step stays, marked and timed, the running one is
/// redrawn in place; in a pipe the same steps are plain lines without a
/// single escape code, as scripts read them.
#[test]
pub(crate) fn deploy_progress_is_live_on_a_terminal_and_plain_in_a_pipe() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    d.rewrite(&web(1, "APP_VERSION = \"v2\"", ""));
    let out = std::process::Command::new("script")
        .args(["-qfec", &format!("{} deploy", bin()), "/dev/null"])
        .current_dir(d.dir.path())
        .env("TERM", "xterm")
        .output()
        .expect("script runs (apt-get install bsdutils)");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    for step in [
        "starting 1 new instance",
        "switched to release",
        "old stopped",
    ] {
        assert!(
            screen
                .lines()
                .any(|l| l.contains(&format!("✓ {step}")) && l.trim_end().ends_with("s)")),
            "no timed, finished {step:?} in {screen:?}"
        );
    }
    assert!(
        screen.contains("\x1b[2K"),
        "nothing redrawn in place: {screen:?}"
    );
    assert!(screen.contains("serves all traffic"), "{screen:?}");

    d.rewrite(&web(1, "APP_VERSION = \"v3\"", ""));
    let piped = deploy_ok(&d, &["deploy"]);
    assert!(!piped.contains('\x1b'), "{piped:?}");
    assert!(piped.contains("\n  switched to release"), "{piped}");
}

/// 2 instances answering in 2 s each: no request is cut (pm2 reload fails
/// 14 of 91 here, SIGKILL after 1.6 s).
#[test]
pub(crate) fn two_instances_with_two_second_requests() {
    let d = Daemon::start(&web(
        2,
        "APP_VERSION = \"v1\", DELAY_MS = \"2000\"",
        "kill_timeout = \"1s\"",
    ));
    d.wait_ready(2);
    let before = d.instance_ids();
    let probe = d.probe(
        "/",
        &[
            "--duration",
            "300s",
            "--concurrency",
            "6",
            "--timeout",
            "10s",
        ],
    );
    wait_until(Duration::from_secs(20), "requests in flight", || {
        d.total("in_flight") >= 4
    });
    d.rewrite(&web(
        2,
        "APP_VERSION = \"v2\", DELAY_MS = \"2000\"",
        "kill_timeout = \"1s\"",
    ));
    let out = deploy_ok(&d, &["deploy"]);
    assert!(out.contains("draining"), "{out}");
    let report = probe.stop_once_new_served(&d, &before, 6);
    assert_clean_switch(&report, "v1", "v2");
}

/// Keep-alive clients (pm2 reload drops 9 here): pooled connections move to
/// the new release without a reset.
#[test]
pub(crate) fn keepalive_clients_through_deploy() {
    let d = Daemon::start(&web(2, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(2);
    let report = d.across_switch(&["--concurrency", "8"], || {
        d.rewrite(&web(2, "APP_VERSION = \"v2\"", ""));
        deploy_ok(&d, &["deploy"]);
    });
    assert_clean_switch(&report, "v1", "v2");
}

/// An app that calls process.send('ready') only after a 3 s warm-up gets
/// traffic only then; v1 serves meanwhile.
#[test]
pub(crate) fn ipc_ready_after_warmup() {
    let cfg = |v: &str, start: &str| {
        format!(
            "[web]\ncommand = \"node server.js\"\ninstances = 1\nenv = {{ APP_VERSION = \"{v}\", READY = \"ipc\", START_MS = \"{start}\" }}\n[web.readiness]\nkind = \"node-ipc\"\n"
        )
    };
    let d = Daemon::start(&cfg("v1", "0"));
    d.wait_ready(1);
    let report = d.across_switch(&["--concurrency", "4"], || {
        d.rewrite(&cfg("v2", "3000"));
        deploy_ok(&d, &["deploy"]);
    });
    assert_clean_switch(&report, "v1", "v2");
    let v1 = &report["versions"][0];
    assert!(
        v1["last_ms"].as_u64().unwrap() >= 3000,
        "v1 kept serving through the warm-up: {report:#}"
    );
}

pub(crate) fn failing_release(bad_env: &str, extra: &str, expect: &str) {
    let d = Daemon::start(&web(2, "APP_VERSION = \"v1\"", extra));
    d.wait_ready(2);
    let before = d.status()["release"].clone();
    let report = under_load(&d, &["--duration", "4s", "--concurrency", "4"], || {
        d.rewrite(&web(2, bad_env, extra));
        let out = d.baton(&["deploy"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a failing release must exit 1: {}",
            text(&out)
        );
        assert!(
            text(&out).contains(expect),
            "want {expect:?} in:\n{}",
            text(&out)
        );
        assert!(text(&out).contains("previous release"), "{}", text(&out));
    });
    assert_eq!(report["failed"], 0, "{report:#}");
    let s = d.status();
    assert_eq!(s["release"], before, "the old release still serves");
    assert_eq!(d.count_in("ready"), 2, "{s:#}");
    assert!(
        s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["release"] == before),
        "no instance of the failed release is left: {s:#}"
    );
    // The last answers came from v1.
    let last = report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|v| v["last_ms"].as_u64())
        .unwrap()
        .clone();
    assert_eq!(last["version"], "v1", "{report:#}");
    let out = d.baton(&["releases"]);
    assert!(text(&out).contains("failed"), "{}", text(&out));
}

/// A release that crashes at start: deploy exits 1 with its log, v1 serves.
#[test]
pub(crate) fn release_that_crashes_at_start() {
    failing_release(
        "APP_VERSION = \"v2\", CRASH_AT_START = \"1\"",
        "",
        "boom: crashing at start on purpose",
    );
}

/// A release that never becomes ready fails at start_timeout; v1 serves.
#[test]
pub(crate) fn release_that_never_becomes_ready() {
    failing_release(
        "APP_VERSION = \"v2\", NEVER_LISTEN = \"1\"",
        "start_timeout = \"1500ms\"",
        "not ready within start_timeout",
    );
}

/// A release that exits right after becoming ready: traffic goes back to
/// the old instances, which were never stopped.
#[test]
pub(crate) fn release_that_exits_after_ready() {
    failing_release(
        "APP_VERSION = \"v2\", EXIT_AFTER_MS = \"300\"",
        "min_uptime = \"2s\"",
        "traffic went back",
    );
}

/// `baton rollback` under load, which must go back to release `to`.
pub(crate) fn rollback_to_previous(d: &Daemon, to: &str) -> serde_json::Value {
    d.across_switch(&["--concurrency", "4"], || {
        let out = deploy_ok(d, &["rollback"]);
        assert!(
            out.contains(&format!("rolling back to release {to}")),
            "{out}"
        );
    })
}

/// Deploy a directory, then roll back to the in-place release, all under load.
#[test]
pub(crate) fn rollback_after_deploy() {
    let d = Daemon::start(&web(2, "", ""));
    d.wait_ready(2);
    let v2 = tempfile::tempdir().unwrap();
    let code = std::fs::read_to_string(d.path("server.js")).unwrap();
    std::fs::write(
        v2.path().join("server.js"),
        code.replace("env.APP_VERSION || 'v1'", "'v2'"),
    )
    .unwrap();
    let first = d.status()["release"].as_str().unwrap().to_string();

    let report = d.across_switch(&["--concurrency", "4"], || {
        deploy_ok(&d, &["deploy", v2.path().to_str().unwrap()]);
    });
    assert_clean_switch(&report, "v1", "v2");
    let second = d.status()["release"].as_str().unwrap().to_string();
    assert!(d
        .path(&format!(".baton/releases/{second}/server.js"))
        .exists());

    let report = rollback_to_previous(&d, &first);
    assert_clean_switch(&report, "v2", "v1");
    assert_eq!(d.status()["release"], first.as_str());
    let r = text(&d.baton(&["releases"]));
    assert!(r.contains(&first) && r.contains(&second), "{r}");
}

/// The README's tour: edit the app in place, deploy, roll back. The rollback
/// brings the old code back even though the folder holds newer code by then,
/// and a rollback forward by id brings the in-place release back, all under
/// load with 0 failed requests.
#[test]
pub(crate) fn rollback_of_an_in_place_deploy_restores_its_code() {
    let d = Daemon::start(&web(2, "", ""));
    d.wait_ready(2);
    let first = d.status()["release"].as_str().unwrap().to_string();
    // The start keeps its copy once the instances run.
    d.wait_for_copy(&first);
    let code = std::fs::read_to_string(d.path("server.js")).unwrap();
    let edit = |version: &str| {
        let edited = code.replace("env.APP_VERSION || 'v1'", &format!("'{version}'"));
        assert_ne!(edited, code, "the test app's version line moved");
        std::fs::write(d.path("server.js"), edited).unwrap();
    };

    edit("v2");
    let report = d.across_switch(&["--concurrency", "4"], || {
        let out = deploy_ok(&d, &["deploy"]);
        assert!(out.contains("keeping a copy of the app directory"), "{out}");
    });
    assert_clean_switch(&report, "v1", "v2");
    let second = d.status()["release"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let kept = d.path(&format!(".baton/releases/{first}/server.js"));
    assert!(
        std::fs::read_to_string(&kept).unwrap().contains("'v1'"),
        "the first release's code was kept in {}",
        kept.display()
    );

    edit("v3");
    let report = rollback_to_previous(&d, &first);
    assert_clean_switch(&report, "v2", "v1");
    assert_eq!(d.status()["release"], first.as_str());

    let report = d.across_switch(&["--concurrency", "4"], || {
        deploy_ok(&d, &["rollback", &second]);
    });
    assert_clean_switch(&report, "v1", "v2");
    assert_eq!(d.status()["release"], second.as_str());
}

/// pm2's max_memory_restart without its downtime: an instance past
/// `max_memory` is replaced by a fresh one, started and ready before the old
/// one leaves rotation and drains, under load with 0 failed.
#[test]
pub(crate) fn an_instance_past_max_memory_is_replaced_without_downtime() {
    let d = Daemon::start(&web(2, "", "max_memory = \"200MiB\""));
    d.wait_ready(2);
    let before = d.instance_ids();
    let probe = d.probe("/", &["--duration", "300s", "--concurrency", "4"]);
    wait_for_load(&d);
    let grown = get(d.port, "/grow?mb=300").unwrap().body.trim().to_string();
    assert!(d.instance_ids().contains(&grown), "{grown}");
    wait_until(
        Duration::from_secs(20),
        "the grown instance replaced by a ready one",
        || {
            let now = d.instance_ids();
            !now.contains(&grown) && d.count_in("ready") == 2
        },
    );
    let report = probe.stop_once_new_served(&d, &before, 20);
    assert_eq!(report["failed"], 0, "{report:#}");
    let log = d.output();
    assert!(
        log.contains(&format!("{grown}: it holds"))
            && log.contains("more than max_memory (200 MiB)"),
        "{log}"
    );
}

/// pm2's cron_restart without its downtime: at each tick the instances are
/// replaced by fresh ones of the same release, ready before the old ones
/// drain, under load with 0 failed.
#[test]
pub(crate) fn cron_restart_gives_fresh_instances_without_downtime() {
    let d = Daemon::start(&web(2, "", "cron_restart = \"*/3 * * * * *\""));
    d.wait_ready(2);
    let first = d.instance_ids();
    let probe = d.probe("/", &["--duration", "300s", "--concurrency", "4"]);
    wait_for_load(&d);
    wait_until_or_show(
        Duration::from_secs(20),
        "a restart on the schedule",
        || {
            let now = d.instance_ids();
            d.count_in("ready") == 2 && now.iter().all(|i| !first.contains(i))
        },
        || format!("{:#}\n{}", d.status(), d.output()),
    );
    let report = probe.stop_once_new_served(&d, &first, 20);
    assert_eq!(report["failed"], 0, "{report:#}");
    let log = d.output();
    assert!(log.contains("cron_restart (*/3 * * * * *)"), "{log}");
}

/// Reload after an env change, with 1 instance: zero downtime (seed 004
/// case 3-2, where pm2 fails), and the change shows in responses.
#[test]
pub(crate) fn reload_applies_env_change_single_instance() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\", GREETING = \"hello\"", ""));
    d.wait_ready(1);
    assert_eq!(get(d.port, "/env/GREETING").unwrap().body, "hello");
    let release = d.status()["release"].clone();
    let report = d.across_switch(&["--concurrency", "4", "--keepalive=false"], || {
        d.rewrite(&web(1, "APP_VERSION = \"v1\", GREETING = \"bonjour\"", ""));
        deploy_ok(&d, &["reload"]);
    });
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(get(d.port, "/env/GREETING").unwrap().body, "bonjour");
    assert_eq!(d.status()["release"], release, "reload keeps the release");
}

/// An invalid new config is refused before anything is touched.
#[test]
pub(crate) fn reload_with_invalid_config_touches_nothing() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    let pid = d.status()["instances"][0]["pid"].clone();
    d.rewrite(&web(1, "APP_VERSION = \"v1\"", "instances = 0"));
    let out = d.baton(&["reload"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a config error exits 2: {}",
        text(&out)
    );
    assert!(text(&out).contains("baton.toml:"), "{}", text(&out));
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
    assert_eq!(d.status()["instances"][0]["pid"], pid);
}

/// Scale up and down under load, 0 failed.
#[test]
pub(crate) fn scale_up_and_down_under_load() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    let report = under_load(&d, &["--duration", "4s", "--concurrency", "4"], || {
        deploy_ok(&d, &["scale", "web=3"]);
        assert_eq!(d.count_in("ready"), 3);
        deploy_ok(&d, &["scale", "web=1"]);
    });
    assert_eq!(report["failed"], 0, "{report:#}");
    wait_until(Duration::from_secs(10), "one instance left", || {
        d.status()["instances"].as_array().unwrap().len() == 1
    });
}

/// A second deploy while one runs is refused, or queued with --wait; a CLI
/// killed mid-deploy leaves the daemon to finish it.
#[test]
pub(crate) fn one_deploy_at_a_time_and_cli_kill_is_harmless() {
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    d.rewrite(&web(1, "APP_VERSION = \"v2\", START_MS = \"1500\"", ""));
    let mut first = std::process::Command::new(bin())
        .arg("deploy")
        .current_dir(d.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(10), "the first deploy to run", || {
        d.status()["deploying"].is_string()
    });
    let out = d.baton(&["deploy"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("a deploy is already running"),
        "{}",
        text(&out)
    );
    // Kill the first CLI: the daemon carries on.
    first.kill().unwrap();
    first.wait().unwrap();
    d.rewrite(&web(1, "APP_VERSION = \"v3\"", ""));
    let out = deploy_ok(&d, &["deploy", "--wait"]);
    assert!(out.contains("waiting for the running deploy"), "{out}");
    assert!(get(d.port, "/").unwrap().body.starts_with("version=v3"));
    let r = text(&d.baton(&["releases", "--json"]));
    let releases: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        releases.as_array().unwrap().len(),
        3,
        "v1, v2 (finished without its CLI), v3: {r}"
    );
}

/// Rolling strategy: one instance at a time, 0 failed.
#[test]
pub(crate) fn rolling_deploy() {
    let d = Daemon::start(&web(3, "APP_VERSION = \"v1\"", "strategy = \"rolling\""));
    d.wait_ready(3);
    let report = d.across_switch(&["--concurrency", "4"], || {
        d.rewrite(&web(3, "APP_VERSION = \"v2\"", "strategy = \"rolling\""));
        let out = deploy_ok(&d, &["deploy"]);
        assert_eq!(out.matches("switched to release").count(), 3, "{out}");
    });
    assert_eq!(report["failed"], 0, "{report:#}");
    let last = &report["versions"].as_array().unwrap().last().unwrap()["version"];
    assert_eq!(last, "v2");
}

/// Seed 003: apps that answer 503 once told they are going away. Baton sends
/// the drain notice (SIGUSR2) at the switch, and retries the 503s of the
/// draining instances on the new release: 0 failed.
#[test]
pub(crate) fn draining_instance_503s_are_retried_on_the_new_release() {
    let metrics = free_port();
    let cfg = |v: &str| {
        web(
            2,
            &format!("APP_VERSION = \"{v}\", DELAY_MS = \"400\", DRAIN_503 = \"1\""),
            "drain_notice = \"SIGUSR2\"",
        ) + &format!("\n[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n")
    };
    let d = Daemon::start(&cfg("v1"));
    d.wait_ready(2);
    let before = d.instance_ids();
    let probe = d.probe("/", &["--duration", "300s", "--concurrency", "8"]);
    // Two rounds answered by v1, the third in flight.
    wait_until(
        Duration::from_secs(20),
        "v1 answers, then requests in flight",
        || d.total("served") >= 16 && d.total("in_flight") >= 6,
    );
    d.rewrite(&cfg("v2"));
    deploy_ok(&d, &["deploy"]);
    let report = probe.stop_once_new_served(&d, &before, 20);
    assert_clean_switch(&report, "v1", "v2");
    // The old instances did answer 503 to what was in flight: Baton retried it.
    let (retries, m) = metric(metrics, "baton_retries_total");
    assert!(retries >= 6, "{m}");
}

/// Apps with their own graceful shutdown (seed 004: SIGTERM, then
/// server.close()) work unchanged: 2 s requests finish, and the old
/// processes exit by themselves, never by SIGKILL.
#[test]
pub(crate) fn apps_with_graceful_shutdown_code_work_too() {
    let cfg = |v: &str| {
        web(
            2,
            &format!("APP_VERSION = \"{v}\", DELAY_MS = \"2000\", GRACEFUL = \"1\""),
            "kill_timeout = \"3s\"",
        )
    };
    let d = Daemon::start(&cfg("v1"));
    d.wait_ready(2);
    let before = d.instance_ids();
    let probe = d.probe(
        "/",
        &[
            "--duration",
            "300s",
            "--concurrency",
            "4",
            "--timeout",
            "10s",
        ],
    );
    wait_until(Duration::from_secs(20), "requests in flight", || {
        d.total("in_flight") >= 3
    });
    d.rewrite(&cfg("v2"));
    deploy_ok(&d, &["deploy"]);
    let report = probe.stop_once_new_served(&d, &before, 4);
    assert_clean_switch(&report, "v1", "v2");
    assert!(!d.output().contains("sending SIGKILL"), "{}", d.output());
}

/// Rolling: a release that dies right after its first batch switched sends
/// every request back to the old instances, which were never stopped.
#[test]
pub(crate) fn rolling_deploy_reverts_a_release_that_dies_after_ready() {
    let extra = "strategy = \"rolling\"\nmin_uptime = \"2s\"";
    let d = Daemon::start(&web(3, "APP_VERSION = \"v1\"", extra));
    d.wait_ready(3);
    let before = d.status()["release"].clone();
    let report = under_load(&d, &["--duration", "4s", "--concurrency", "4"], || {
        d.rewrite(&web(
            3,
            "APP_VERSION = \"v2\", EXIT_AFTER_MS = \"300\"",
            extra,
        ));
        let out = d.baton(&["deploy"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("failed after a rolling switch"),
            "{}",
            text(&out)
        );
    });
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(d.status()["release"], before);
    wait_until(Duration::from_secs(10), "the three v1 instances", || {
        let s = d.status();
        let all = s["instances"].as_array().unwrap();
        all.len() == 3
            && all
                .iter()
                .all(|i| i["release"] == before && i["state"] == "ready")
    });
    let last = report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|v| v["last_ms"].as_u64())
        .unwrap()
        .clone();
    assert_eq!(last["version"], "v1", "{report:#}");
}

/// Issue 20: a release that crashes 2 s after becoming ready, past
/// min_uptime (1 s), was deployed "successfully" and then crash-looped for
/// good. The watch after the switch (watch_after_switch, 10 s by default)
/// still has the old release running, and hands traffic back to it.
#[test]
pub(crate) fn release_that_crashes_seconds_after_ready() {
    failing_release(
        "APP_VERSION = \"v2\", EXIT_AFTER_MS = \"2000\"",
        "",
        "traffic went back",
    );
}

/// Ticks come from the schedule, not from the end of the last run: each
/// run of a `* * * * * *` job is for its own whole second (given to it as
/// `BATON_CRON_TICK`), one after the other, none twice; a job that outlasts
/// its tick has the ticks that passed skipped, and the log says so.
#[test]
pub(crate) fn cron_ticks_come_from_the_schedule_and_passed_ones_are_skipped() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().display().to_string();
    let d = Daemon::start(&format!(
        "[cron.short]\nschedule = \"* * * * * *\"\ncommand = \"echo $BATON_CRON_TICK >> {log_path}; sleep 0.4\"\n\
         [cron.long]\nschedule = \"* * * * * *\"\ncommand = \"sleep 1.5\"\n\n{}",
        web(1, "", "")
    ));
    d.wait_ready(1);
    let ticks = || -> Vec<std::time::SystemTime> {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        text.lines()
            .map(|l| humantime::parse_rfc3339(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };
    wait_until(Duration::from_secs(20), "four runs", || ticks().len() >= 4);
    let ticks = ticks();
    for tick in &ticks {
        let since = tick.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            since.subsec_nanos(),
            0,
            "a tick is a whole second: {ticks:?}"
        );
    }
    for pair in ticks.windows(2) {
        assert!(pair[1] > pair[0], "each run is for a later tick: {ticks:?}");
    }
    wait_until(Duration::from_secs(10), "a skipped tick logged", || {
        (d.output().lines())
            .any(|l| l.contains("[cron.long]: ") && l.contains("skipped: the run was still going"))
    });
    assert!(d.output().contains("for the tick of"), "{}", d.output());
}
