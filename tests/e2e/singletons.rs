//! Singletons (`[process.*]`) and cron jobs across deploys: never two
//! at once, moved at the switch, restarted alone.

use super::deploy::*;
use crate::common::*;
use std::time::Duration;

/// Seed 000's separate schedule instance: a `[process.<name>]` singleton
/// gets no traffic, and on a deploy the old one stops before the new one
/// starts, so two never run at once.
#[test]
fn singleton_process_never_runs_twice() {
    let dir_marker = "LOCK_DIR_PLACEHOLDER";
    let cfg = |v: &str, lock_dir: &str| {
        format!(
            "[process.scheduler]\ncommand = \"node {}\"\nenv = {{ LOCK_DIR = \"{lock_dir}\" }}\n\n{}",
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/scheduler.js").display(),
            web(1, &format!("APP_VERSION = \"{v}\""), "")
        )
    };
    let d = Daemon::prepare(&cfg("v1", dir_marker));
    let lock_dir = d.dir.path().display().to_string();
    d.rewrite(&cfg("v1", &lock_dir));
    let d = d.up();
    d.wait_ready(2);
    let ticks = d.path("ticks.log");
    let count = || std::fs::read_to_string(&ticks).map_or(0, |t| t.lines().count());
    wait_until(Duration::from_secs(10), "scheduler ticks", || count() > 3);
    let first = d.status()["release"].as_str().unwrap().to_string();
    d.rewrite(&cfg("v2", &lock_dir));
    let out = deploy_ok(&d, &["deploy"]);
    assert!(
        out.contains("stopping the old one first (singleton)"),
        "{out}"
    );
    let second = d.status()["release"].as_str().unwrap().to_string();
    let before = count();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count() <= before + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no ticks from the new scheduler:\n{}",
            d.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(&ticks).unwrap();
    let at = |release: &str| -> Vec<u64> {
        text.lines()
            .filter(|l| l.starts_with(release))
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (old, new) = (at(&first), at(&second));
    assert!(!old.is_empty() && !new.is_empty(), "{text}");
    assert!(
        old.iter().max() < new.iter().min(),
        "the two schedulers overlapped:\n{text}"
    );
    assert!(
        !d.output().contains("two schedulers at once"),
        "{}",
        d.output()
    );
    let s = d.status();
    let scheduler: Vec<_> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["process"] == "scheduler")
        .collect();
    assert_eq!(scheduler.len(), 1, "{s:#}");
    assert_eq!(scheduler[0]["release"], second.as_str());
}

/// A daemon running one web instance and the test scheduler as a singleton,
/// with `extra` lines in its `[process.scheduler]` and `env` in its
/// environment; its lock and tick files in the daemon's folder.
fn with_scheduler(extra: &str, env: &str) -> Daemon {
    let d = Daemon::prepare(&format!(
        "[process.scheduler]\ncommand = \"node {}\"\nenv = {{ LOCK_DIR = \"LOCK_DIR_PLACEHOLDER\"{env} }}\n{extra}\n\n{}",
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/scheduler.js").display(),
        web(1, "", "")
    ));
    // The lock directory is the daemon's own folder, known once prepared.
    let lock_dir = d.dir.path().display().to_string();
    d.edit_config(|toml| toml.replace("LOCK_DIR_PLACEHOLDER", &lock_dir));
    let d = d.up();
    d.wait_ready(2);
    d
}

/// A singleton moves to the new release at the switch, beside the web
/// drain: with a request that never ends holding the old web instance in
/// its drain, the new scheduler (with a node-ipc readiness check) is
/// started, ready and ticking while the old web instance still drains.
/// Moved after the drain, as it was, a scheduler paused for as long as the
/// slowest request (seed 000's Egg app: 5 to 14 s).
#[test]
fn a_singleton_moves_at_the_switch_beside_the_drain() {
    let d = with_scheduler("[process.scheduler.readiness]\nkind = \"node-ipc\"", "");
    let first = d.status()["release"].as_str().unwrap().to_string();
    let ticks = d.path("ticks.log");
    let ticks_of_another = || {
        std::fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .any(|l| !l.starts_with(&first))
    };
    let mut hang = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    use std::io::Write;
    hang.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_until(Duration::from_secs(10), "the request in flight", || {
        d.total("in_flight") == 1
    });
    d.edit_config(|c| {
        c.replace(
            "[web]\n",
            "[web]\ndrain_timeout = \"120s\"\nwatch_after_switch = \"1s\"\n",
        )
    });
    let deploy = std::process::Command::new(bin())
        .arg("deploy")
        .current_dir(d.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_or_show(
        Duration::from_secs(30),
        "a tick of the new scheduler",
        ticks_of_another,
        || d.output(),
    );
    assert_eq!(d.count_in("draining"), 1, "{:#}", d.status());
    drop(hang);
    let out = deploy.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = text(&out);
    let at = |step: &str| {
        out.find(step)
            .unwrap_or_else(|| panic!("no {step:?} in:\n{out}"))
    };
    assert!(at(": started with release") < at("old stopped"), "{out}");
    assert!(at("scheduler#") < at("old stopped"), "{out}");
    assert!(out.contains(": ready\n"), "{out}");
    assert!(d.output().contains("(node-ipc check)"), "{}", d.output());
    assert!(!d.output().contains("two schedulers at once"));
}

/// The scheduler's instance id and pid, and the web instances' ids.
fn scheduler_and_web(d: &Daemon) -> ((String, u64), Vec<String>) {
    let s = d.status();
    let all = s["instances"].as_array().unwrap();
    let (scheduler, web): (Vec<_>, Vec<_>) = all.iter().partition(|i| i["process"] == "scheduler");
    assert_eq!(scheduler.len(), 1, "one scheduler: {s:#}");
    let pid = scheduler[0]["pid"].as_u64().unwrap_or(0);
    let id = scheduler[0]["instance"].as_str().unwrap().to_string();
    let web = web
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_string());
    ((id, pid), web.collect())
}

/// Waits until the scheduler runs with a process other than `old_pid`, and
/// checks that the web instances were left alone and that the two
/// schedulers never ran at once (the app's own lock file says so).
fn wait_for_fresh_scheduler(d: &Daemon, old_pid: u64, web: &[String]) {
    wait_until(Duration::from_secs(20), "a fresh scheduler", || {
        let ((_, pid), _) = scheduler_and_web(d);
        pid != 0 && pid != old_pid
    });
    let (_, now) = scheduler_and_web(d);
    assert_eq!(now, web, "the web instances are not restarted");
    let log = d.output();
    assert!(!log.contains("two schedulers at once"), "{log}");
    assert!(log.contains("stopping it first (singleton)"), "{log}");
}

/// pm2's max_memory_restart for a singleton: past `[process.<name>]
/// max_memory` it is restarted (stopped, then started, never two at once),
/// and the web instances are left alone.
#[test]
fn a_singleton_past_max_memory_is_restarted_alone() {
    let d = with_scheduler("max_memory = \"100MiB\"", ", GROW_MB = \"200\"");
    let ((id, pid), web) = scheduler_and_web(&d);
    wait_for_fresh_scheduler(&d, pid, &web);
    let log = d.output();
    assert!(
        log.contains(&format!("{id}: it holds")) && log.contains("more than max_memory (100 MiB)"),
        "{log}"
    );
}

/// pm2's cron_restart for a singleton: at each tick it is restarted
/// (stopped, then started), and the web instances are left alone.
#[test]
fn a_singleton_cron_restart_restarts_it_alone() {
    let d = with_scheduler("cron_restart = \"*/2 * * * * *\"", "");
    let ((_, pid), web) = scheduler_and_web(&d);
    wait_for_fresh_scheduler(&d, pid, &web);
    assert!(
        d.output().contains("cron_restart (*/2 * * * * *)"),
        "{}",
        d.output()
    );
}

/// `[cron.<name>]` runs on its schedule in the serving release, never
/// overlapping itself, and follows a deploy to the new release.
#[test]
fn cron_job_runs_once_per_tick_in_the_serving_release() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().display().to_string();
    let cfg = |v: &str| {
        format!(
            "[cron.tick]\nschedule = \"* * * * * *\"\ncommand = \"echo start $BATON_RELEASE >> {log_path}; sleep 1.2; echo end >> {log_path}\"\n\n{}",
            web(1, &format!("APP_VERSION = \"{v}\""), "")
        )
    };
    let d = Daemon::start(&cfg("v1"));
    d.wait_ready(1);
    let lines = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until(Duration::from_secs(15), "two runs", || {
        lines().matches("end").count() >= 2
    });
    d.rewrite(&cfg("v2"));
    deploy_ok(&d, &["deploy"]);
    let second = d.status()["release"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(15), "a run in the new release", || {
        lines().lines().any(|l| l == format!("start {second}"))
    });
    wait_until(Duration::from_secs(15), "that run to end", || {
        lines().ends_with("end\n")
    });
    let text = lines();
    // Every start is followed by its end before the next start: no overlap,
    // although a run (1.2 s) outlasts the schedule's 1 s tick.
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    for pair in kinds.chunks(2) {
        assert_eq!(pair, ["start", "end"], "{text}");
    }
    assert!(
        d.output().contains("cron:tick baton | run ended"),
        "{}",
        d.output()
    );
}

/// A `[cron.<name>]` on `schedule` that appends "`name` `release`" to
/// `log_path` at each run.
fn echo_job(name: &str, schedule: &str, log_path: &str) -> String {
    format!("[cron.{name}]\nschedule = \"{schedule}\"\ncommand = \"echo {name} $BATON_RELEASE >> {log_path}\"\n")
}

/// A deploy that adds a `[cron.<name>]` starts it, and one that drops it
/// stops it: no run of it in the release without it.
#[test]
fn a_deploy_adds_and_drops_cron_jobs() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().display().to_string();
    let job = |name: &str| echo_job(name, "* * * * * *", &log_path);
    let release = |d: &Daemon| d.status()["release"].as_str().unwrap().to_string();
    let lines = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let d = Daemon::start(&web(1, "APP_VERSION = \"v1\"", ""));
    d.wait_ready(1);
    d.rewrite(&(job("added") + &web(1, "APP_VERSION = \"v2\"", "")));
    deploy_ok(&d, &["deploy"]);
    let second = release(&d);
    wait_until(Duration::from_secs(15), "a run of the added job", || {
        lines().contains(&format!("added {second}"))
    });
    d.rewrite(&(job("other") + &web(1, "APP_VERSION = \"v3\"", "")));
    deploy_ok(&d, &["deploy"]);
    let third = release(&d);
    wait_until(
        Duration::from_secs(15),
        "two runs of the job that replaced it",
        || lines().matches(&format!("other {third}")).count() >= 2,
    );
    assert!(!lines().contains(&format!("added {third}")), "{}", lines());
}

/// A deploy that changes a job's schedule applies it at once: a job made to
/// run every second from once a year runs within seconds, not after its old
/// yearly tick.
#[test]
fn a_deploy_that_changes_a_schedule_applies_it_at_once() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().display().to_string();
    let job = |schedule: &str| echo_job("report", schedule, &log_path);
    let d = Daemon::start(&(job("0 0 0 1 1 *") + &web(1, "APP_VERSION = \"v1\"", "")));
    d.wait_ready(1);
    d.rewrite(&(job("* * * * * *") + &web(1, "APP_VERSION = \"v2\"", "")));
    deploy_ok(&d, &["deploy"]);
    let second = d.status()["release"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(15), "a run on the new schedule", || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .contains(&format!("report {second}"))
    });
}
