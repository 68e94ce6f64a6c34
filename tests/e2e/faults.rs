//! Issue 20: faults a production server meets. Each case runs under load
//! counted by an independent client (`baton probe`) with exact counts.

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;

fn web(instances: u32, env: &str) -> String {
    web_with(instances, env, "")
}

/// `[web]` with `extra` lines in it.
fn web_with(instances: u32, env: &str, extra: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = {instances}\nenv = {{ {env} }}\n{extra}\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
    )
}

/// A load of `requests` GETs, 4 at a time, through the probe; asserts that
/// every one was answered 200.
fn load_all_ok(d: &Daemon, requests: u32) {
    let n = requests.to_string();
    let r = d
        .probe("/", &["--requests", &n, "--concurrency", "4"])
        .report();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["ok"], requests, "{r:#}");
}

fn log_errors(d: &Daemon) -> u64 {
    d.status()["log_errors"].as_u64().expect("log_errors")
}

/// `baton up | head -n 2`: stdout is a pipe whose reader is gone. An app
/// that logs every request keeps being served (println! panicked in the
/// log capture and every request hung after it), and the lost lines are
/// counted in `baton status`.
#[test]
fn a_closed_stdout_never_stops_serving() {
    let d = Daemon::prepare(&web(1, "LOG_REQUESTS = \"1\""));
    // Close-on-exec, so that the daemon does not inherit the reading end.
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let d = d.up_with_stdout(Stdio::from(writer));
    drop(reader);
    d.wait_ready(1);
    load_all_ok(&d, 300);
    assert!(log_errors(&d) > 0, "{:#}", d.status());
    let table = text(&d.baton(&["status"]));
    assert!(table.contains("log lines lost"), "{table}");
    load_all_ok(&d, 100);
}

/// `baton up > /dev/full`: every write to stdout fails with ENOSPC.
#[test]
fn a_full_stdout_never_stops_serving() {
    let d = Daemon::prepare(&web(1, "LOG_REQUESTS = \"1\""));
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let d = d.up_with_stdout(Stdio::from(full));
    d.wait_ready(1);
    load_all_ok(&d, 300);
    assert!(log_errors(&d) > 0, "{:#}", d.status());
    let status = d.status();
    assert!(
        status["log_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "{status:#}"
    );
}

/// User and system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm")
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of fds, the accept loop backs off instead of spinning a core on
/// failed accepts (14k EMFILE a second), and serves again once fds free up.
#[test]
fn out_of_fds_the_accept_loop_backs_off_and_recovers() {
    let metrics = free_port();
    let d = Daemon::prepare(&format!(
        "[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n{}",
        web(1, "")
    ))
    .up_via_shell("ulimit -n 64 && exec \"$BATON\" up");
    d.wait_ready(1);
    load_all_ok(&d, 50);
    let held: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", d.port)).ok())
        .collect();
    assert_eq!(held.len(), 100, "the kernel's backlog takes them all");
    // Measured over a window: a busy loop would use all of it.
    let before = cpu_ticks(d.pid());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = (cpu_ticks(d.pid()) - before) as f64 / 100.0;
    let window = started.elapsed().as_secs_f64();
    assert!(
        used < window / 4.0,
        "the daemon used {used:.2} s of CPU in {window:.2} s while out of fds"
    );
    drop(held);
    wait_until(
        Duration::from_secs(10),
        "requests to be served again",
        || get(d.port, "/").is_ok_and(|a| a.status == 200),
    );
    load_all_ok(&d, 50);
    let (errors, m) = metric(metrics, "baton_accept_errors_total");
    assert!(errors > 0, "{m}");
}

/// The soft "Max open files" limit of `pid`, and the hard one.
fn fd_limits(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// The daemon raises its soft fd limit to the hard one (systemd's 1024
/// meant about 500 clients); its instances get the limit it was started
/// with.
#[test]
fn the_soft_fd_limit_is_raised_for_the_daemon_only() {
    let d = Daemon::prepare(&web(1, "")).up_via_shell("ulimit -S -n 256 && exec \"$BATON\" up");
    d.wait_ready(1);
    let (soft, hard) = fd_limits(d.pid());
    assert!(
        hard > 256,
        "this machine's hard limit is {hard}: the test needs one above 256"
    );
    assert_eq!(
        soft, hard,
        "the daemon's soft limit is raised to the hard one"
    );
    let instance = d.status()["instances"][0]["pid"].as_i64().expect("pid") as i32;
    assert_eq!(
        fd_limits(instance).0,
        256,
        "the instance gets the original back"
    );
}

/// The daemon's open fds.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

/// The daemon's resident memory, in kB.
fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// 100 reloads under load leave no fd and no memory behind: connections
/// that came back to a retired instance's pool after it was cleared stayed
/// open for good (24 → 141 fds after 20 deploys, in CLOSE-WAIT).
#[test]
fn fds_and_memory_do_not_grow_across_100_deploys_under_load() {
    // Short watches: the test is about what each deploy leaves behind.
    let d = Daemon::start(&web_with(
        2,
        "DELAY_MS = \"5\"",
        "watch_after_switch = \"100ms\"\nmin_uptime = \"100ms\"",
    ));
    d.wait_ready(2);
    let reload = || {
        let out = d.baton(&["reload"]);
        assert!(out.status.success(), "{}", text(&out));
    };
    // A few rounds first, so that what a daemon opens or allocates once is
    // there.
    let load = d.probe("/", &["--duration", "600s", "--concurrency", "8"]);
    for _ in 0..5 {
        reload();
    }
    assert_eq!(load.stop()["failed"], 0);
    let (fds_before, rss_before) = (fds(d.pid()), rss_kb(d.pid()));
    let load = d.probe("/", &["--duration", "600s", "--concurrency", "8"]);
    for _ in 0..100 {
        reload();
    }
    let r = load.stop();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(r["ok"].as_u64().unwrap_or(0) > 1000, "{r:#}");
    wait_until(Duration::from_secs(10), "the drains to end", || {
        d.count_in("draining") == 0
    });
    let (fds_after, rss_after) = (fds(d.pid()), rss_kb(d.pid()));
    println!(
        "100 reloads, {} requests: fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} kB",
        r["ok"]
    );
    // The pool keeps up to one connection per concurrent request to each
    // serving instance, before and after.
    assert!(
        fds_after <= fds_before + 8,
        "{fds_before} fds before 100 reloads under load, {fds_after} after"
    );
    assert!(
        rss_after <= rss_before + 4096,
        "{rss_before} kB resident before 100 reloads under load, {rss_after} kB after"
    );
}

/// `systemctl reload` sends SIGHUP; a broken baton.toml must say why in the
/// daemon's log, and the serving release goes on.
#[test]
fn a_broken_config_on_sighup_is_reported() {
    let d = Daemon::start(&web(1, ""));
    d.wait_ready(1);
    d.rewrite("[web]\ncommand = \"node server.js\"\ninstancez = 2\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the reload to fail in the log",
        || d.output().contains("reload failed"),
    );
    let out = d.output();
    let line = out
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap_or_default();
    assert!(
        line.contains("baton.toml") && line.contains("instancez"),
        "the log names the file and the field: {line}"
    );
    load_all_ok(&d, 20);
}

/// `baton status` exits 0 when every instance is ready, 3 when some are
/// not, 4 when none is (documented in the README).
#[test]
fn status_exit_codes_tell_health() {
    let d = Daemon::start(&web(2, ""));
    d.wait_ready(2);
    assert_eq!(d.baton(&["status"]).status.code(), Some(0));
    let crashing = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nenv = { CRASH_AT_START = \"1\" }\nmax_restarts = 1\n[web.readiness]\nkind = \"tcp\"\n",
    );
    wait_until(Duration::from_secs(20), "the instance to fail", || {
        crashing.count_in("failed") == 1
    });
    let out = crashing.baton(&["status"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let json = crashing.baton(&["status", "--json"]);
    assert_eq!(json.status.code(), Some(4), "--json exits alike");
}

fn tcp_web(instances: u32, env: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = {instances}\nenv = {{ {env} }}\n[web.readiness]\nkind = \"tcp\"\n"
    )
}

/// One of two instances accepts and never answers (round robin sends it
/// every other request). Each GET it gets times out after response_timeout
/// and is retried on the other one (0 failed, where clients waited forever
/// before), and after max_fails timeouts it leaves rotation.
#[test]
fn a_hung_instance_times_out_and_leaves_rotation() {
    let d = Daemon::start(&format!(
        "balance = \"round-robin\"\nresponse_timeout = \"1s\"\nmax_fails = 2\nfail_timeout = \"60s\"\n{}",
        tcp_web(2, "HANG_INSTANCE = \"web#2\"")
    ));
    d.wait_ready(2);
    let r = d
        .probe("/", &["--requests", "40", "--concurrency", "2"])
        .report();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert_eq!(r["ok"], 40, "{r:#}");
    assert!(
        d.output().contains("web#2") && d.output().contains("out of rotation"),
        "{}",
        d.output()
    );
}

/// A POST (not replayable) to a hung instance gets 504 after
/// response_timeout.
#[test]
fn a_post_to_a_hung_instance_gets_504() {
    let d = Daemon::start(&format!(
        "response_timeout = \"1s\"\n{}",
        tcp_web(1, "HANG_INSTANCE = \"web#1\"")
    ));
    d.wait_ready(1);
    let a = raw(
        d.port,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(a.status, 504, "{}", a.body);
}

/// An answer that goes silent in the middle of its body is cut off after
/// read_timeout; an event stream quiet for longer between events is not.
#[test]
fn read_timeout_cuts_a_stalled_body_but_not_an_event_stream() {
    let d = Daemon::start(&format!("read_timeout = \"1s\"\n{}", web(1, "")));
    d.wait_ready(1);
    let stalled = raw(
        d.port,
        "GET /stall HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(stalled.status, 200);
    assert!(stalled.body.contains("partial"), "{}", stalled.body);
    assert!(
        !stalled.body.ends_with("0\r\n\r\n"),
        "the cut body must not look complete: {:?}",
        stalled.body
    );
    let sse = raw(
        d.port,
        "GET /sse-slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(
        sse.body.contains("data: one") && sse.body.contains("data: two"),
        "{:?}",
        sse.body
    );
    assert!(sse.body.ends_with("0\r\n\r\n"), "{:?}", sse.body);
}

/// A client that stops sending its body gets 408 after body_timeout, and
/// the instance sees the request aborted.
#[test]
fn a_stalled_request_body_gets_408() {
    let d = Daemon::start(&format!("body_timeout = \"1s\"\n{}", web(1, "")));
    d.wait_ready(1);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// max_body_size: a length over it is refused with the head, a chunked
/// body when it goes over; a body within it passes.
#[test]
fn max_body_size_gives_413() {
    let d = Daemon::start(&format!("max_body_size = \"1KiB\"\n{}", web(1, "")));
    d.wait_ready(1);
    let big = "x".repeat(2000);
    let sized = raw(
        d.port,
        &format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{big}"),
    )
    .unwrap();
    assert_eq!(sized.status, 413);
    let chunked = raw(
        d.port,
        &format!("POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n{big}\r\n0\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(chunked.status, 413);
    let ok = raw(
        d.port,
        &format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
            "y".repeat(1000)
        ),
    )
    .unwrap();
    assert_eq!(ok.status, 200);
    assert!(ok.body.contains("received 1000"), "{}", ok.body);
}

/// An instance that dies every 1.5 s outlives min_uptime (1 s) each time,
/// so it crash-looped for good; restarts within restart_window count too,
/// and it ends `failed` with the reason.
#[test]
fn a_crash_loop_past_min_uptime_ends_failed() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nenv = { EXIT_AFTER_MS = \"1500\" }\nmax_restarts = 2\n[web.readiness]\nkind = \"tcp\"\n",
    );
    wait_until(
        Duration::from_secs(40),
        "the crash loop to end failed",
        || d.count_in("failed") == 1,
    );
    let s = d.status();
    let reason = s["instances"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("restart_window"), "{s:#}");
    assert_eq!(d.baton(&["status"]).status.code(), Some(4));
    // Nothing will become ready: a request gets its 503 at once, not after
    // hold_timeout (30 s; the client here gives up after 5 s).
    use std::io::{Read, Write};
    let mut c = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer)
        .expect("an answer well before hold_timeout");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

/// `up --detach` with a command that does not exist exited 0; it waits for
/// the first instance to be ready or failed, and says which.
#[test]
fn up_detach_reports_an_app_that_does_not_start() {
    let d = Daemon::prepare(
        "[web]\ncommand = \"no-such-program-for-baton\"\n[web.readiness]\nkind = \"tcp\"\n",
    );
    let out = d.baton(&["up", "--detach"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("did not start"), "{}", text(&out));
    let stop = d.baton(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
}

/// `baton stop` returns once the daemon's process is gone, even in the
/// middle of a deploy (it said `stopped` while the daemon lived 2 s more).
#[test]
fn stop_returns_once_the_daemon_has_exited() {
    let d = Daemon::prepare(&web(1, "START_MS = \"500\""));
    let out = d.baton(&["up", "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = d.status()["pid"].as_i64().expect("pid");
    let deploy = std::process::Command::new(bin())
        .arg("reload")
        .current_dir(d.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("reload");
    wait_until(Duration::from_secs(10), "the reload to start", || {
        d.status()["deploying"].is_string()
    });
    let stop = d.baton(&["stop"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(
        !alive(pid as i32),
        "`stop` returned while the daemon (pid {pid}) runs"
    );
    let _ = deploy.wait_with_output();
}

/// The daemon's orphan reaper: its child running `baton __reaper`.
fn reaper_of(daemon: i32) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == daemon && cmdline.contains("__reaper") && alive(pid)).then_some(pid)
        })
}

fn kill9(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn instance_pid(d: &Daemon) -> i32 {
    d.status()["instances"][0]["pid"].as_i64().expect("pid") as i32
}

/// A reaper killed on its own is replaced: a kill -9 of the daemon after
/// it still leaves no instance behind.
#[test]
fn a_killed_reaper_is_replaced() {
    let mut d = Daemon::start(&web(1, ""));
    d.wait_ready(1);
    let app = instance_pid(&d);
    let first = reaper_of(d.pid()).expect("a reaper");
    kill9(first);
    wait_until(Duration::from_secs(10), "a new reaper", || {
        reaper_of(d.pid()).is_some_and(|p| p != first)
    });
    d.kill9();
    wait_until(Duration::from_secs(10), "the instance to be killed", || {
        !alive(app)
    });
}

/// `killall -9 baton`: the daemon and its reaper die together and the
/// instances live on under pid 1. The next `baton up` of the same state
/// directory stops them before it starts its own (it started a second set
/// beside them).
#[test]
fn instances_left_by_a_killed_daemon_and_reaper_are_stopped_at_the_next_start() {
    // The instance leaves a `sleep` in its process group, as `npm start`
    // leaves node: the parent-death signal reaches only the direct child.
    let mut d = Daemon::start(&web(1, "SPAWN_SLEEPER = \"1\""));
    d.wait_ready(1);
    let app = instance_pid(&d);
    let reaper = reaper_of(d.pid()).expect("a reaper");
    // Stopped first, so that neither notices the other's death.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid()),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    kill9(reaper);
    d.kill9();
    assert!(
        !group_members(app).is_empty(),
        "the instance's process group outlived both"
    );
    let d = d.up();
    d.wait_ready(1);
    wait_until(
        Duration::from_secs(10),
        "the old group to be stopped",
        || group_members(app).is_empty(),
    );
    assert!(
        d.output().contains("left 1 process group running"),
        "{}",
        d.output()
    );
    assert_ne!(instance_pid(&d), app);
    load_all_ok(&d, 20);
}

/// A hung instance still hung when it comes back after fail_timeout stays
/// bad: it gets a fresh process, started and ready before the hung one
/// leaves (as for max_memory), with no request failing meanwhile.
#[test]
fn an_instance_that_stays_hung_is_replaced() {
    let d = Daemon::start(&format!(
        "balance = \"round-robin\"\nresponse_timeout = \"500ms\"\nmax_fails = 1\nfail_timeout = \"1s\"\n{}",
        tcp_web(2, "HANG_INSTANCE = \"web#2\"")
    ));
    d.wait_ready(2);
    let load = d.probe("/", &["--duration", "8s", "--concurrency", "2"]);
    wait_until(Duration::from_secs(20), "web#2 to be replaced", || {
        let s = d.status();
        let instances = s["instances"].as_array().cloned().unwrap_or_default();
        let ready: Vec<&str> = instances
            .iter()
            .filter(|i| i["state"] == "ready")
            .filter_map(|i| i["instance"].as_str())
            .collect();
        ready.len() == 2 && !ready.contains(&"web#2")
    });
    let r = load.report();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(
        d.output().contains("giving it a fresh process"),
        "{}",
        d.output()
    );
}

/// An app log in a folder that cannot be made dropped every line without a
/// word; now the daemon says so once, and `baton status` shows it.
#[test]
fn an_unwritable_log_folder_is_reported() {
    let d = Daemon::start(&format!(
        "[daemon]\napp_log = \"/dev/full/app.log\"\n{}",
        web(1, "LOG_REQUESTS = \"1\"")
    ));
    d.wait_ready(1);
    load_all_ok(&d, 20);
    let s = d.status();
    assert!(s["log_errors"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert!(
        s["log_error"]
            .as_str()
            .is_some_and(|e| e.contains("/dev/full/app.log")),
        "{s:#}"
    );
    assert!(d.output().contains("log write failed"), "{}", d.output());
}

/// A full disk under the state directory, as the daemon sees it: its file
/// size limit (RLIMIT_FSIZE, `ulimit -f`) lets no file grow past 16 KiB, so
/// writes fail as on a full disk (EFBIG instead of ENOSPC; the daemon
/// ignores SIGXFSZ). The app's log and the release copy fail; serving does
/// not, and the lost lines are counted.
#[test]
fn a_full_state_disk_keeps_serving() {
    let d = Daemon::prepare(&web(1, "LOG_REQUESTS = \"1\""))
        .up_via_shell("ulimit -f 32 && exec \"$BATON\" up");
    d.wait_ready(1);
    load_all_ok(&d, 400);
    let s = d.status();
    assert!(s["log_errors"].as_u64().unwrap_or(0) > 0, "{s:#}");
    load_all_ok(&d, 100);
}

/// max_body_size holds for an h2 request body that announced no length:
/// it is counted as it comes, and the client gets 413.
#[test]
fn max_body_size_holds_for_h2_bodies_without_a_length() {
    use http_body_util::{BodyExt, StreamBody};

    let d = Daemon::start(&format!("max_body_size = \"1KiB\"\n{}", web(1, "")));
    d.wait_ready(1);
    // Four 1000-byte frames and no length: hyper's client sends none.
    let frames = (0..4).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            1000
        ])))
    });
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let request = http::Request::post("http://x/upload").body(body).unwrap();
    let status = h2_exchange(d.port, vec![request])[0].0;
    assert_eq!(status, 413);
}

/// The app's log rotates past `log_max_size` into `log_keep` generations
/// (`web.log.1` the newest), and no more are kept.
#[test]
fn the_app_log_rotates_into_log_keep_generations() {
    let d = Daemon::start(&format!(
        "[daemon]\nlog_max_size = \"4KB\"\nlog_keep = 3\n\n{}",
        web(1, "LOG_REQUESTS = \"1\"")
    ));
    d.wait_ready(1);
    // Each request writes a line of more than 200 bytes: 200 requests are
    // over 40 KB, ten files' worth.
    load_all_ok(&d, 200);
    let log = d.path(".baton/logs/web.log");
    let generation = |n: u32| {
        let mut p = log.clone().into_os_string();
        p.push(format!(".{n}"));
        std::path::PathBuf::from(p)
    };
    wait_until(Duration::from_secs(10), "three generations", || {
        (1..=3).all(|n| generation(n).exists())
    });
    assert!(!generation(4).exists(), "log_keep = 3 kept a fourth");
    for n in 1..=3 {
        let len = std::fs::metadata(generation(n)).unwrap().len();
        assert!(
            (4096..4096 + 1024).contains(&len),
            "web.log.{n} has {len} bytes"
        );
    }
}
