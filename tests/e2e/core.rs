//! Issue 2: `baton up` supervises an app from baton.toml, with a control
//! socket and a CLI.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

pub(crate) const WEB_HTTP: &str =
    "[web]\ncommand = \"node server.js\"\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n";

/// A three-line baton.toml boots and serves through the default port.
#[test]
pub(crate) fn minimal_config_boots() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(app_js(), dir.path().join("server.js")).unwrap();
    std::fs::write(
        dir.path().join("baton.toml"),
        "[app]\nname = \"mini\"\n[web]\ncommand = \"node server.js\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["check"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("127.0.0.1:8080"), "{}", text(&out));
    // Run it for real only when the default port is free on this machine.
    if std::net::TcpListener::bind("127.0.0.1:8080").is_err() {
        eprintln!("port 8080 is busy here; the boot half of this test ran in the other tests");
        return;
    }
    let mut child = std::process::Command::new(bin())
        .arg("up")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "an answer on 8080", || {
        get(8080, "/").is_ok_and(|a| a.status == 200 && a.body.starts_with("version=v1"))
    });
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    child.wait().unwrap();
}

/// Status shows each instance's process, release, pid, port, state and uptime,
/// as a table and as JSON, and the app sees PORT and the BATON_* variables.
#[test]
pub(crate) fn status_and_environment() {
    let d = Daemon::start(&WEB_HTTP.replace("command", "instances = 2\ncommand"));
    d.wait_ready(2);
    let s = d.status();
    let inst = &s["instances"][0];
    assert_eq!(inst["process"], "web");
    assert!(inst["pid"].as_u64().unwrap() > 0);
    assert!(inst["port"].as_u64().unwrap() > 0);
    assert_eq!(inst["release"], s["release"]);
    let table = text(&d.baton(&["status"]));
    for col in [
        "INSTANCE", "RELEASE", "PID", "PORT", "STATE", "UPTIME", "RESTARTS",
    ] {
        assert!(table.contains(col), "{table}");
    }
    let env_of = |name: &str| get(d.port, &format!("/env/{name}")).unwrap().body;
    assert_eq!(env_of("BATON_ROLE"), "web");
    assert_eq!(env_of("BATON_RELEASE"), s["release"].as_str().unwrap());
    assert!(env_of("BATON_INSTANCE").starts_with("web#"));
    let port: u64 = env_of("PORT").parse().unwrap();
    assert!(s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["port"] == port));
    // App output is captured with a prefix, into the daemon output and a log file.
    wait_until(Duration::from_secs(5), "prefixed app output", || {
        d.output().contains(" web#1 out | listening on")
    });
    let log = std::fs::read_to_string(d.path(".baton/logs/web.log")).unwrap();
    assert!(log.contains(" web#1 out | listening on"), "{log}");
    let logs = text(&d.baton(&["logs", "-n", "5"]));
    assert!(logs.contains("web#"), "{logs}");
    let only = text(&d.baton(&["logs", "-n", "50", "--instance", "web#2"]));
    assert!(only.contains(" web#2 out | listening on"), "{only}");
    assert!(
        only.lines().all(|l| l.split(' ').nth(1) == Some("web#2")),
        "{only}"
    );
}

/// `app_log` puts the app's log where pm2's `log` would, `baton logs` reads
/// it there, and the copy kept of an in-place release leaves it out.
#[test]
pub(crate) fn app_log_goes_where_baton_toml_says() {
    let d = Daemon::start(&format!("[daemon]\napp_log = \"logs/app.log\"\n{WEB_HTTP}"));
    d.wait_ready(1);
    wait_until(Duration::from_secs(5), "app lines in logs/app.log", || {
        std::fs::read_to_string(d.path("logs/app.log"))
            .is_ok_and(|log| log.contains(" web#1 out | listening on"))
    });
    let logs = text(&d.baton(&["logs", "-n", "5"]));
    assert!(logs.contains(" web#1 out | listening on"), "{logs}");
    let release = d.status()["release"].as_str().unwrap().to_string();
    let kept = d.path(&format!(".baton/releases/{release}"));
    assert!(kept.join("server.js").exists(), "{}", kept.display());
    assert!(!kept.join("logs/app.log").exists(), "the log was copied");
}

/// `kind = "tcp"`: ready once the port accepts.
#[test]
pub(crate) fn readiness_tcp() {
    let d = Daemon::start("[web]\ncommand = \"node server.js\"\nenv = { START_MS = \"300\" }\n[web.readiness]\nkind = \"tcp\"\n");
    d.wait_ready(1);
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// `kind = "node-ipc"`: an unchanged pm2 `wait_ready` app that calls
/// `process.send('ready')` becomes ready; before that it gets no traffic.
#[test]
pub(crate) fn readiness_node_ipc() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nenv = { READY = \"ipc\" }\n[web.readiness]\nkind = \"node-ipc\"\n",
    );
    d.wait_ready(1);
    assert!(d.output().contains("ready on port"), "{}", d.output());
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// An app that never sends 'ready' over IPC fails at start_timeout with the
/// reason and its last log lines.
#[test]
pub(crate) fn start_timeout_fails_with_reason() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nstart_timeout = \"1s\"\n[web.readiness]\nkind = \"node-ipc\"\n",
    );
    wait_until(Duration::from_secs(15), "failed state", || {
        d.count_in("failed") == 1
    });
    let s = d.status();
    let reason = s["instances"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not ready within start_timeout (1s)"),
        "{reason}"
    );
    assert!(
        reason.contains("listening on"),
        "the reason quotes the app's last lines: {reason}"
    );
    let table = text(&d.baton(&["status"]));
    assert!(table.contains("failed"), "{table}");
}

/// `kind = "notify"`: READY=1 on $NOTIFY_SOCKET, sent by a Python sd_notify.
#[test]
pub(crate) fn readiness_notify() {
    let sender = r#"python3 -c 'import os,socket,time; s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM); time.sleep(0.3); s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"]); time.sleep(600)'"#;
    let d = Daemon::start(&format!(
        "[web]\ncommand = \"{sender}\"\n[web.readiness]\nkind = \"notify\"\n"
    ));
    d.wait_ready(1);
}

/// A crash is restarted with backoff; a crash loop ends in `failed` and
/// stops restarting.
#[test]
pub(crate) fn crash_restarts_then_crash_loop_fails() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\nenv = { EXIT_AFTER_MS = \"100\" }\nmin_uptime = \"2s\"\nmax_restarts = 3\n[web.readiness]\nkind = \"tcp\"\n",
    );
    wait_until(
        Duration::from_secs(30),
        "failed after the crash loop",
        || d.count_in("failed") == 1,
    );
    let s = d.status();
    let inst = &s["instances"][0];
    assert_eq!(inst["restarts"], 4, "{inst:#}");
    let reason = inst["reason"].as_str().unwrap();
    assert!(reason.contains("crashed 4 times in a row"), "{reason}");
    let out = d.output();
    // Backoff doubles: 200ms, 400ms, 800ms.
    for wait in [
        "restarting in 200ms",
        "restarting in 400ms",
        "restarting in 800ms",
    ] {
        assert!(out.contains(wait), "missing {wait:?} in:\n{out}");
    }
}

/// `autorestart = false` (pm2's): an instance that exits after it was ready
/// stays down, `failed` with the reason, and is not restarted; the other
/// instance keeps serving.
#[test]
pub(crate) fn autorestart_false_leaves_an_exit_down() {
    let d = Daemon::start(
        "[web]\ncommand = \"node server.js\"\ninstances = 2\nautorestart = false\n[web.readiness]\nkind = \"tcp\"\n",
    );
    d.wait_ready(2);
    let pid = d.status()["instances"][0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the killed instance failed",
        || d.count_in("failed") == 1,
    );
    let s = d.status();
    let failed = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["state"] == "failed")
        .unwrap();
    assert_eq!(failed["restarts"], 0, "{failed:#}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("not restarted (autorestart = false)"),
        "{reason}"
    );
    assert_eq!(d.count_in("ready"), 1);
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// Two instances whose groups each hold node and a `sleep` grandchild;
/// returns the daemon and the group ids.
pub(crate) fn two_instances_with_grandchildren() -> (Daemon, Vec<i32>) {
    let d = Daemon::start(&WEB_HTTP.replace(
        "command",
        "instances = 2\nenv = { SPAWN_SLEEPER = \"1\" }\ncommand",
    ));
    d.wait_ready(2);
    let pids: Vec<i32> = d.status()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["pid"].as_i64().unwrap() as i32)
        .collect();
    for pgid in &pids {
        assert!(
            group_members(*pgid).len() >= 2,
            "node and its sleeper share the group"
        );
    }
    (d, pids)
}

/// `baton stop` stops every instance's whole process group, grandchildren
/// included, then the daemon exits.
#[test]
pub(crate) fn stop_leaves_no_process() {
    let (mut d, pids) = two_instances_with_grandchildren();
    let out = d.baton(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(d.stop().success());
    for pgid in pids {
        assert!(
            group_members(pgid).is_empty(),
            "group {pgid} left {:?}",
            group_members(pgid)
        );
    }
}

/// SIGKILL of the daemon still leaves no process of any group alive.
#[test]
pub(crate) fn sigkill_of_daemon_leaves_no_process() {
    let (mut d, pids) = two_instances_with_grandchildren();
    d.kill9();
    wait_until(Duration::from_secs(10), "every group to be gone", || {
        pids.iter().all(|p| group_members(*p).is_empty())
    });
}

/// Bad configs are refused by `baton check` and `baton up` with exit 2 and
/// file:line: field: message.
#[test]
pub(crate) fn bad_configs_name_file_line_and_field() {
    let cases = [
        (
            "[web]\ncommand = \"x\"\ninstancez = 2\n",
            "baton.toml:9: web.instancez: unknown field `instancez`",
        ),
        (
            "[web]\ncommand = \"x\"\nkill_timeout = 5\n",
            "baton.toml:9: web.kill_timeout:",
        ),
        (
            "[web]\ncommand = \"x\"\ninstances = 0\n",
            "baton.toml:9: web.instances: must be at least 1",
        ),
        (
            "[web]\ncommand = \"x\"\nstart_timeout = \"soon\"\n",
            "baton.toml:9: web.start_timeout:",
        ),
        (
            "[web]\ncommand = \"x\"\nstop_signal = \"SIGFOO\"\n",
            "baton.toml:9: web.stop_signal: \"SIGFOO\" is not a signal name",
        ),
        (
            "[web]\ncommand = \"x\"\n[web.readiness]\nkind = \"magic\"\n",
            "baton.toml:10: web.readiness.kind: unknown variant `magic`",
        ),
    ];
    for (body, expected) in cases {
        let d = Daemon::prepare(body);
        for args in [&["check"][..], &["up"][..]] {
            let out = d.baton(args);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?} on {body:?}: {}",
                text(&out)
            );
            let msg = text(&out);
            assert!(
                msg.contains(expected),
                "{args:?} on {body:?}:\n  got {msg}\n  want {expected}"
            );
        }
    }
    let d = Daemon::prepare(WEB_HTTP);
    let out = d.baton(&["check", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A second daemon on the same state dir is refused with a clear message,
/// and the socket is private to its owner.
#[test]
pub(crate) fn second_daemon_refused_and_socket_private() {
    let d = Daemon::start(WEB_HTTP);
    d.wait_ready(1);
    let out = d.baton(&["up"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "another baton daemon (pid {}) is already running",
            d.pid()
        )),
        "{}",
        text(&out)
    );
    let mode = std::fs::metadata(d.path(".baton/baton.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(d.path(".baton"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o777,
        0o700,
        "the state directory is the owner's"
    );
    // The first daemon is unaffected.
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// CLI commands without a daemon fail with exit 1 and say how to start one.
#[test]
pub(crate) fn no_daemon_is_a_clear_error() {
    let d = Daemon::prepare(WEB_HTTP);
    let out = d.baton(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no baton daemon is running"),
        "{}",
        text(&out)
    );
}

/// `up --detach` returns once the daemon answers; `stop` ends it.
#[test]
pub(crate) fn detach_then_stop() {
    let d = Daemon::prepare(WEB_HTTP);
    let out = d.baton(&["up", "--detach"]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_ready(1);
    use std::os::unix::fs::PermissionsExt;
    let dir_mode = std::fs::metadata(d.path(".baton"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(get(d.port, "/").unwrap().status, 200);
    let out = d.baton(&["stop"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!d.path(".baton/baton.sock").exists());
}

/// `baton status` shows each instance's CPU and memory, as `pm2 ls` does:
/// sums over its process group. An instance kept busy shows the CPU time.
#[test]
pub(crate) fn status_shows_cpu_and_memory() {
    let metrics = free_port();
    let d = Daemon::start(&format!(
        "[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n{WEB_HTTP}"
    ));
    d.wait_ready(1);
    let before = d.status()["instances"][0].clone();
    let memory = before["memory_bytes"].as_u64().unwrap();
    assert!(memory > 5 << 20 && memory < 2 << 30, "{before:#}");
    let cpu_before = before["cpu_seconds"].as_f64().unwrap();
    assert_eq!(get(d.port, "/burn?ms=1200").unwrap().body, "burnt\n");
    let after = d.status()["instances"][0].clone();
    let used = after["cpu_seconds"].as_f64().unwrap() - cpu_before;
    assert!(
        used >= 1.15,
        "{used} s of CPU counted for 1.2 s used: {after:#}"
    );
    let percent = after["cpu_percent"].as_f64().unwrap();
    assert!(percent > 10.0, "{after:#}");
    let table = text(&d.baton(&["status"]));
    assert!(table.contains("CPU") && table.contains("MiB"), "{table}");
    let m = get(metrics, "/metrics").unwrap().body;
    let value = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {m}"))
    };
    assert!(value("baton_instance_memory_bytes{") > 5e6, "{m}");
    assert!(value("baton_instance_cpu_seconds_total{") >= 1.15, "{m}");
}

/// `baton systemd` prints the units that run this app at boot (as `pm2
/// startup`): the service starts this binary on this baton.toml, the socket
/// unit holds `[proxy] listen`, and systemd's own checker, where installed,
/// finds nothing wrong in either.
#[test]
pub(crate) fn systemd_units_for_this_app() {
    let d = Daemon::prepare(WEB_HTTP);
    let out = d.baton(&["systemd"]);
    assert!(out.status.success(), "{}", text(&out));
    let units = String::from_utf8(out.stdout).unwrap();
    for line in [
        "Type=notify".to_string(),
        format!(
            "ExecStart={} up --config {}",
            bin(),
            d.path("baton.toml").display()
        ),
        format!("WorkingDirectory={}", d.dir.path().display()),
        format!("ListenStream=127.0.0.1:{}", d.port),
        "Requires=baton-e2e.socket".to_string(),
    ] {
        assert!(units.lines().any(|l| l == line), "no {line:?} in\n{units}");
    }
    let files = tempfile::tempdir().unwrap();
    let mut name = None;
    let mut body = String::new();
    for line in units.lines().chain(["# /etc/systemd/system/end"]) {
        if let Some(next) = line.strip_prefix("# /etc/systemd/system/") {
            if let Some(name) = name.replace(next.to_string()) {
                std::fs::write(files.path().join(name), std::mem::take(&mut body)).unwrap();
            }
        } else {
            body.push_str(line);
            body.push('\n');
        }
    }
    let service = files.path().join("baton-e2e.service");
    let socket = files.path().join("baton-e2e.socket");
    assert!(service.exists() && socket.exists(), "{units}");
    let Ok(verify) = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&service)
        .arg(&socket)
        .output()
    else {
        eprintln!("no systemd-analyze here; the units' lines were checked above");
        return;
    };
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}\n{units}",
        text(&verify)
    );
}

/// Under systemd (`Type=notify`), the daemon says READY=1 with its pid once
/// it serves, and STOPPING=1 when it stops; the apps do not inherit
/// systemd's socket.
#[test]
pub(crate) fn tells_systemd_when_ready() {
    let d = Daemon::prepare(WEB_HTTP);
    let sock_path = d.path("systemd.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("up")
        .current_dir(d.dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg, format!("READY=1\nMAINPID={}", child.id()));
    d.wait_ready(1);
    assert_eq!(
        get(d.port, "/env/NOTIFY_SOCKET").unwrap().body,
        "",
        "apps do not inherit it"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    child.wait().unwrap();
}

/// `baton status --watch --json` without a terminal prints one report a
/// second until Ctrl-C (SIGINT), then exits 0.
#[test]
pub(crate) fn status_watch_prints_a_report_a_second_until_interrupted() {
    use std::io::BufRead;
    let d = Daemon::start(WEB_HTTP);
    d.wait_ready(1);
    let mut watch = std::process::Command::new(bin())
        .args(["status", "--watch", "--json"])
        .current_dir(d.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let started = std::time::Instant::now();
    for _ in 0..2 {
        let line = lines.next().expect("a report").unwrap();
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(report["instances"][0]["state"], "ready", "{report}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "two reports came at once"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends the watch cleanly");
}

/// On a terminal (`script` gives it one), `baton status --watch` draws on
/// the alternate screen, redraws in place without clearing it, and `q`
/// ends it with the screen and the cursor given back.
#[test]
pub(crate) fn status_watch_on_a_terminal_redraws_in_place_and_quits_on_q() {
    let d = Daemon::start(WEB_HTTP);
    d.wait_ready(1);
    // `q` is typed once two frames are on the screen, not after a guess.
    let mut watch = std::process::Command::new("script")
        .args(["-qfec", &format!("{} status --watch", bin()), "/dev/null"])
        .current_dir(d.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script runs (apt-get install bsdutils)");
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let (mut from, shown) = (watch.stdout.take().unwrap(), shown.clone());
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                shown.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    wait_until(Duration::from_secs(20), "two frames of the watch", || {
        let shown = shown.lock().unwrap();
        String::from_utf8_lossy(&shown).matches("\x1b[H").count() >= 2
    });
    use std::io::Write;
    watch.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = watch.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = watch.kill();
            panic!("q did not end the watch");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let out = std::process::Output {
        status,
        stdout: shown.lock().unwrap().clone(),
        stderr: Vec::new(),
    };
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.starts_with("\x1b[?1049h\x1b[?25l"),
        "no alternate screen: {screen:?}"
    );
    assert!(
        screen.contains("\x1b[?25h\x1b[?1049l"),
        "the screen was not given back: {screen:?}"
    );
    let frames = screen.matches("\x1b[H").count();
    assert!(frames >= 2, "{frames} frames: {screen:?}");
    assert!(
        !screen.contains("\x1b[2J"),
        "a frame cleared the screen (flicker)"
    );
    assert!(screen.contains("web#1"), "{screen:?}");
}

/// `[daemon] port_range`: every instance's private port comes from it,
/// through a deploy too.
#[test]
pub(crate) fn instance_ports_come_from_port_range() {
    let first = free_port().clamp(1024, 65000);
    let last = first + 9;
    let d = Daemon::start(&format!(
        "[daemon]\nport_range = \"{first}-{last}\"\n\n{}",
        WEB_HTTP.replace("command", "instances = 2\ncommand")
    ));
    d.wait_ready(2);
    let ports = |d: &Daemon| -> Vec<u64> {
        d.status()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["port"].as_u64().unwrap())
            .collect()
    };
    let before = ports(&d);
    assert!(
        before.iter().all(|p| (first..=last).contains(&(*p as u16))),
        "{before:?} not in {first}-{last}"
    );
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = ports(&d);
    assert!(
        after.iter().all(|p| (first..=last).contains(&(*p as u16))),
        "{after:?} not in {first}-{last}"
    );
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}
