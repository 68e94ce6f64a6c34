//! The end-to-end harness: a real `baton up` on a temp dir and a free port,
//! the real test app, the real CLI, and `baton probe` as the load client.

#![allow(dead_code)]

pub mod sys;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The built `baton` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_baton")
}

/// The test app's source.
pub fn app_js() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps/server.js")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Polls `f` every 20 ms until it is true; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] that adds `context()` (a daemon's log) to the panic.
pub fn wait_until_or_show(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + limit;
    while !f() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    // A zombie still answers kill(0); /proc tells them apart.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of live processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[2].parse::<i32>().ok() == Some(pgid) && rest[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

/// A raw HTTP/1.1 answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Header block, lowercased names.
    pub headers: Vec<(String, String)>,
    /// Body bytes as text.
    pub body: String,
}

impl Answer {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request body for [`h2_exchange`].
pub type H2Body =
    http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::convert::Infallible>;

/// Sends `requests` one after another on one h2 connection (prior
/// knowledge) to `port`, and returns each answer's status and body.
pub fn h2_exchange(port: u16, requests: Vec<http::Request<H2Body>>) -> Vec<(u16, bytes::Bytes)> {
    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("h2 handshake");
        tokio::spawn(conn);
        let mut answers = Vec::new();
        for request in requests {
            let response = send.send_request(request).await.expect("h2 request");
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            answers.push((status, body));
        }
        answers
    })
}

/// Whether `baton status` reached the daemon: 0 all ready, 3 degraded,
/// 4 nothing ready (1 is no daemon, 2 bad usage).
pub fn answered(out: &Output) -> bool {
    matches!(out.status.code(), Some(0 | 3 | 4))
}

/// Sends a raw request (a whole HTTP/1.1 message) and reads until close.
pub fn raw(port: u16, request: &str) -> std::io::Result<Answer> {
    raw_at("127.0.0.1", port, request)
}

/// [`raw`] to another loopback address than 127.0.0.1.
pub fn raw_at(ip: &str, port: u16, request: &str) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Answer {
        status,
        headers,
        body: body.to_string(),
    })
}

/// `GET path` with `Connection: close`.
pub fn get(port: u16, path: &str) -> std::io::Result<Answer> {
    raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"),
    )
}

/// tests/apps/`name` with its node_modules, installed by `npm ci` into
/// the target folder once per test binary and run.
pub fn installed_node_app(name: &str) -> PathBuf {
    static INSTALLED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = installed.iter().find(|(n, _)| n == name) {
        return dir.clone();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-app"));
    let _ = std::fs::remove_dir_all(&dir);
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/apps")
            .join(name),
        &dir,
    );
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .output()
        .expect("npm runs (apt-get install npm)");
    assert!(
        out.status.success(),
        "npm ci in {}: {}",
        dir.display(),
        text(&out)
    );
    installed.push((name.to_string(), dir.clone()));
    dir
}

/// Copies the files and folders under `from` into `to`, but node_modules.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == "node_modules" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&source, &target);
        } else {
            std::fs::copy(&source, &target).unwrap();
        }
    }
}

/// Writes the test app into `dir` as `server.js`, answering `version`.
pub fn write_app(dir: &Path, version: &str) {
    let code = std::fs::read_to_string(app_js()).expect("the test app");
    let code = code.replace("env.APP_VERSION || 'v1'", &format!("'{version}'"));
    std::fs::write(dir.join("server.js"), code).expect("write server.js");
}

/// A running daemon on a temp dir.
pub struct Daemon {
    /// The app folder (holds baton.toml, server.js, .baton/).
    pub dir: tempfile::TempDir,
    /// The public port.
    pub port: u16,
    child: Option<Child>,
}

impl Daemon {
    /// Writes `baton.toml` (an `[app]` and `[proxy] listen` on a free port,
    /// then `rest`) and the test app, and starts `baton up`.
    pub fn start(rest: &str) -> Daemon {
        let d = Daemon::prepare(rest);
        d.up()
    }

    /// Writes the files without starting.
    pub fn prepare(rest: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("baton-e2e")
            .tempdir()
            .expect("temp dir");
        std::fs::copy(app_js(), dir.path().join("server.js")).expect("copy app");
        let port = free_port();
        let toml =
            format!("[app]\nname = \"e2e\"\n\n[proxy]\nlisten = \"127.0.0.1:{port}\"\n\n{rest}");
        std::fs::write(dir.path().join("baton.toml"), toml).expect("write baton.toml");
        Daemon {
            dir,
            port,
            child: None,
        }
    }

    /// Starts `baton up` through `sh -c script`, in which `$BATON` is the
    /// binary (to set limits first, say); output to `daemon.out`.
    pub fn up_via_shell(self, script: &str) -> Daemon {
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", script]).env("BATON", bin());
        self.launch(cmd)
    }

    /// Starts `baton up` with its stdout going to `stdout` (a closed pipe,
    /// /dev/full); stderr goes to `daemon.out`.
    pub fn up_with_stdout(self, stdout: Stdio) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.arg("up");
        self.launch_with(cmd, Some(stdout))
    }

    /// Starts `baton up` in the foreground, output to `daemon.out`.
    pub fn up(self) -> Daemon {
        let mut cmd = Command::new(bin());
        cmd.arg("up");
        self.launch(cmd)
    }

    /// Starts `baton up` as systemd's socket activation does: `listener` as
    /// fd 3, `LISTEN_FDS=1`, and `LISTEN_PID` the daemon's pid (`sh` execs
    /// it, keeping its pid).
    pub fn up_activated(self, listener: &std::net::TcpListener) -> Daemon {
        use std::os::fd::AsRawFd;
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" up", bin()]);
        sys::pass_as_fd3(&mut cmd, fd);
        self.launch(cmd)
    }

    /// Runs `cmd` in the app folder, output appended to `daemon.out`, and
    /// waits until the daemon answers.
    fn launch(self, cmd: Command) -> Daemon {
        self.launch_with(cmd, None)
    }

    /// [`Daemon::launch`], with stdout going to `stdout` when given.
    fn launch_with(mut self, mut cmd: Command, stdout: Option<Stdio>) -> Daemon {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.out"))
            .expect("daemon.out");
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(match stdout {
                Some(stdout) => stdout,
                None => out.try_clone().expect("dup").into(),
            });
        let child = cmd.stderr(out).spawn().expect("spawn baton up");
        self.child = Some(child);
        wait_until(Duration::from_secs(20), "the daemon to answer", || {
            answered(&self.baton(&["status"]))
        });
        self
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("started").id() as i32
    }

    /// Path inside the app folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Rewrites baton.toml through `change` (before `up`, to set what
    /// `prepare` writes no line for).
    pub fn edit_config(&self, change: impl FnOnce(String) -> String) {
        let toml = std::fs::read_to_string(self.path("baton.toml")).expect("read baton.toml");
        std::fs::write(self.path("baton.toml"), change(toml)).expect("write baton.toml");
    }

    /// Replaces baton.toml's part after `[proxy]`.
    pub fn rewrite(&self, rest: &str) {
        let toml = format!(
            "[app]\nname = \"e2e\"\n\n[proxy]\nlisten = \"127.0.0.1:{}\"\n\n{rest}",
            self.port
        );
        std::fs::write(self.path("baton.toml"), toml).expect("rewrite baton.toml");
    }

    /// Runs the CLI in the app folder.
    pub fn baton(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run baton")
    }

    /// `baton status --json`.
    pub fn status(&self) -> Value {
        let out = self.baton(&["status", "--json"]);
        assert!(
            answered(&out),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    /// The ids of the instances listed by `status`.
    pub fn instance_ids(&self) -> Vec<String> {
        self.status()["instances"]
            .as_array()
            .map_or(Vec::new(), |a| {
                a.iter()
                    .filter_map(|i| i["instance"].as_str().map(str::to_string))
                    .collect()
            })
    }

    /// The sum of `field` over the instances that are not in `before`.
    pub fn total_of_new(&self, before: &[String], field: &str) -> u64 {
        self.status()["instances"].as_array().map_or(0, |a| {
            a.iter()
                .filter(|i| !before.iter().any(|b| i["instance"] == b.as_str()))
                .map(|i| i[field].as_u64().unwrap_or(0))
                .sum()
        })
    }

    /// Runs `change` (a deploy, a rollback) under `baton probe` with
    /// `probe_args` once the current instances answer, and ends the probe
    /// once the instances the change started have answered 20 requests. The
    /// probe sees the switch however long the change takes on a slow machine;
    /// a fixed probe duration could end before it.
    pub fn across_switch(&self, probe_args: &[&str], change: impl FnOnce()) -> Value {
        let mut args = vec!["--duration", "300s"];
        args.extend_from_slice(probe_args);
        let probe = self.probe("/", &args);
        wait_until(Duration::from_secs(20), "the probe's first answers", || {
            self.total("served") >= 20
        });
        let before = self.instance_ids();
        change();
        probe.stop_once_new_served(self, &before, 20)
    }

    /// Instances in `state` right now.
    pub fn count_in(&self, state: &str) -> usize {
        self.status()["instances"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|i| i["state"] == state).count())
    }

    /// A count summed over every instance in `status`: `served`,
    /// `in_flight`, `connections`.
    pub fn total(&self, field: &str) -> u64 {
        self.status()["instances"].as_array().map_or(0, |a| {
            a.iter().map(|i| i[field].as_u64().unwrap_or(0)).sum()
        })
    }

    /// Waits until `n` instances are ready.
    pub fn wait_ready(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} ready instances"),
            || self.count_in("ready") == n,
        );
    }

    /// What the daemon printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.path("daemon.out")).unwrap_or_default()
    }

    /// Waits for the log to say the copy of the app directory that release
    /// `id` runs is kept: a start makes it once its instances run.
    pub fn wait_for_copy(&self, id: &str) {
        let kept = format!("release {id}: the app directory, kept in");
        wait_until(Duration::from_secs(20), &kept, || {
            self.output().contains(&kept)
        });
    }

    /// Starts `baton probe --json` against `path` with extra args.
    pub fn probe(&self, path: &str, args: &[&str]) -> Probe {
        let child = Command::new(bin())
            .arg("probe")
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .args(["--json", "--version-header", "x-version"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn probe");
        Probe { child }
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.terminate();
        self.child
            .take()
            .expect("started")
            .wait()
            .expect("wait daemon")
    }

    /// Sends SIGTERM, and does not wait.
    pub fn terminate(&self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    /// SIGKILLs the daemon.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("started");
        child.kill().expect("kill -9");
        child.wait().expect("wait");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running probe.
pub struct Probe {
    child: Child,
}

impl Probe {
    /// A probe started by the test itself.
    pub fn of(child: Child) -> Probe {
        Probe { child }
    }

    /// Ends the run now (Ctrl-C, which the probe answers with its report)
    /// and returns the report.
    pub fn stop(self) -> Value {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT to the probe");
        self.report()
    }

    /// Ends the run once the instances that are not in `before` (those a
    /// deploy started) have answered `n` requests, and returns the report.
    pub fn stop_once_new_served(self, d: &Daemon, before: &[String], n: u64) -> Value {
        wait_until(
            Duration::from_secs(60),
            &format!("{n} answers from the new instances"),
            || d.total_of_new(before, "served") >= n,
        );
        self.stop()
    }

    /// Waits for the report.
    pub fn report(self) -> Value {
        let out = self.child.wait_with_output().expect("probe output");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "probe printed no JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// Asserts the probe saw no failure, and that versions went from `from` to
/// `to` exactly once and never back.
pub fn assert_clean_switch(report: &Value, from: &str, to: &str) {
    assert_eq!(
        report["failed"], 0,
        "failed requests during the deploy: {report:#}"
    );
    assert!(
        report["requests"].as_u64().unwrap_or(0) > 0,
        "the probe sent nothing"
    );
    let switches = report["switches"].as_array().expect("switches");
    assert_eq!(
        switches.len(),
        1,
        "expected one switch {from} -> {to}: {report:#}"
    );
    assert_eq!(switches[0]["from"], from);
    assert_eq!(switches[0]["to"], to);
}

/// Connections waiting to be accepted on the listener at 127.0.0.1:`port`
/// (for a listening socket, /proc/net/tcp's rx_queue is its accept queue).
pub fn accept_queue(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) || fields.get(3) != Some(&"0A") {
            return None;
        }
        let rx = fields.get(4)?.split(':').nth(1)?;
        u64::from_str_radix(rx, 16).ok()
    })
}

/// Stdout and stderr of a CLI run, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value of the unlabelled Prometheus counter `name` (as
/// `baton_retries_total`) on the metrics port, with the whole page for a
/// failing assertion's message.
pub fn metric(port: u16, name: &str) -> (u64, String) {
    let page = get(port, "/metrics").expect("the metrics port").body;
    let prefix = format!("{name} ");
    let value = page
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    (value, page)
}
