//! Restarts under socket activation and `baton upgrade`: the daemon
//! replaced, its sockets kept, and no client refused.

use super::core::*;
use crate::common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Under systemd socket activation the daemon serves on the socket it was
/// passed, and restarting it (an upgrade of Baton itself) fails no request:
/// clients that connect meanwhile wait in the socket's backlog, then in the
/// hold queue until the new instance is ready. Keep-alive clients busy at
/// the stop get their next request answered (with `Connection: close`), and
/// a connection accepted before the stop and still silent gets its request
/// served, not a close. Apps inherit neither the socket nor the variables.
#[test]
fn restart_under_socket_activation_fails_nothing() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let d = Daemon::prepare(WEB_HTTP);
    let listener = std::net::TcpListener::bind(("127.0.0.1", d.port)).unwrap();
    let mut d = d.up_activated(&listener);
    d.wait_ready(1);
    assert_eq!(get(d.port, "/env/LISTEN_FDS").unwrap().body, "");
    let socket = format!(
        "socket:[{}]",
        nix::sys::stat::fstat(listener.as_raw_fd()).unwrap().st_ino
    );
    let pid = d.status()["instances"][0]["pid"].as_i64().unwrap();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        assert_ne!(target.to_string_lossy(), socket, "the app holds the socket");
    }

    let mut silent = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the silent connection's accept",
        || accept_queue(d.port) == Some(0),
    );
    let [keep_alive, new_each_time] = mixed_load(&d);
    d.terminate();
    wait_until(
        Duration::from_secs(10),
        "the daemon to begin stopping",
        || d.output().contains("stopping: no new connections"),
    );
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = silent.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(d.stop().success());
    let d = d.up_activated(&listener);
    for report in [keep_alive.report(), new_each_time.report()] {
        assert_eq!(report["failed"], 0, "failed across the restart: {report:#}");
    }
    assert!(
        d.total("served") > 0,
        "the new daemon served part of the load"
    );
}

/// 4 s of load from 8 keep-alive clients and 2 that connect for each
/// request, once it is being served.
fn mixed_load(d: &Daemon) -> [Probe; 2] {
    let keep_alive = d.probe("/", &["--duration", "4s", "--concurrency", "8"]);
    let new_each_time = d.probe(
        "/",
        &[
            "--duration",
            "4s",
            "--concurrency",
            "2",
            "--keepalive=false",
        ],
    );
    wait_until(Duration::from_secs(20), "the probe's first answers", || {
        d.total("served") >= 20
    });
    [keep_alive, new_each_time]
}

fn instance_pids(status: &serde_json::Value) -> Vec<i64> {
    status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .collect()
}

/// `baton upgrade` run from a new Baton binary (here a copy of this one):
/// the daemon execs it in the same process and keeps the public socket
/// open, so clients with kept connections and with a new one per request
/// see no failure, and the new binary serves with fresh instances.
#[test]
fn upgrade_replaces_the_daemon_without_refusing_anyone() {
    let d = Daemon::start(&WEB_HTTP.replace("[web]\n", "[web]\ninstances = 2\n"));
    d.wait_ready(2);
    let before = d.status();
    let old_pids = instance_pids(&before);
    // Installed outside the app directory, as a new Baton is: inside it,
    // it would be part of the release's rollback copy, 137 MB of debug
    // binary.
    let install = tempfile::tempdir().unwrap();
    let next = install.path().join("baton-next");
    std::fs::copy(bin(), &next).unwrap();

    let [keep_alive, new_each_time] = mixed_load(&d);
    let out = std::process::Command::new(&next)
        .args(["upgrade", "--json"])
        .current_dir(d.path("."))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["pid"], d.pid(), "{outcome}");
    assert_eq!(outcome["ready"], 2, "{outcome}");

    for report in [keep_alive.report(), new_each_time.report()] {
        assert_eq!(
            report["failed"],
            0,
            "failed across the upgrade: {report:#}\nupgrade: {}\ndaemon: {}",
            text(&out),
            d.output()
        );
        assert!(report["requests"].as_u64().unwrap() > 0, "{report:#}");
    }
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", d.pid())).unwrap(),
        next.canonicalize().unwrap(),
        "the daemon runs the new binary"
    );
    let after = d.status();
    assert_ne!(after["started"], before["started"]);
    let new_pids = instance_pids(&after);
    assert_eq!(new_pids.len(), 2, "{after:#}");
    for pid in &old_pids {
        assert!(!new_pids.contains(pid), "{pid} survived the upgrade");
        assert!(!alive(*pid as i32), "the old instance {pid} still runs");
    }
    assert!(
        d.total("served") > 0,
        "the new daemon served part of the load"
    );
    assert!(
        d.output().contains("the public sockets stay open"),
        "{}",
        d.output()
    );
}

/// An address dropped from `[proxy] listen` before an upgrade is closed by
/// the new daemon: its clients are refused, not left waiting in a backlog
/// nobody accepts from.
#[test]
fn an_address_dropped_before_an_upgrade_is_closed() {
    let d = Daemon::prepare(WEB_HTTP);
    let second = free_port();
    let single = format!("listen = \"127.0.0.1:{}\"", d.port);
    let both = format!(
        "listen = [\"127.0.0.1:{}\", \"127.0.0.1:{second}\"]",
        d.port
    );
    d.edit_config(|toml| toml.replace(&single, &both));
    let d = d.up();
    d.wait_ready(1);
    assert_eq!(get(second, "/").unwrap().status, 200);

    d.rewrite(WEB_HTTP);
    let out = d.baton(&["upgrade"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(get(d.port, "/").unwrap().status, 200);
    let refused = std::net::TcpStream::connect(("127.0.0.1", second));
    assert!(
        refused.is_err(),
        "port {second} still accepts after it left baton.toml"
    );
}

/// A binary that is not Baton, or a Baton that rejects baton.toml, is
/// refused before anything stops: same daemon, same instances.
#[test]
fn upgrade_to_a_bad_binary_changes_nothing() {
    let d = Daemon::prepare(WEB_HTTP);
    let not_baton = d.path("not-baton");
    std::fs::write(&not_baton, "#!/bin/sh\necho 'something else 1.0'\n").unwrap();
    let picky = d.path("picky-baton");
    std::fs::write(
        &picky,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'baton 9.9.9'; exit 0; }\n\
         echo 'baton.toml:1: unknown field' >&2; exit 2\n",
    )
    .unwrap();
    for script in [&not_baton, &picky] {
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let d = d.up();
    d.wait_ready(1);
    let before = d.status();

    let out = d.baton(&["upgrade", "--binary", "not-baton"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is not baton"), "{}", text(&out));
    let out = d.baton(&["upgrade", "--binary", "picky-baton"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("does not accept") && text(&out).contains("unknown field"),
        "{}",
        text(&out)
    );
    let out = d.baton(&["upgrade", "--binary", "missing"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot run"), "{}", text(&out));

    let after = d.status();
    assert_eq!(after["started"], before["started"]);
    assert_eq!(instance_pids(&after), instance_pids(&before));
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// A new Baton that passes the check but fails to start once it has
/// replaced the daemon: `baton upgrade` starts the copy of the previous
/// binary the daemon kept, the app serves again, and the command fails with
/// both stories.
#[test]
fn an_upgrade_that_fails_to_start_goes_back_to_the_previous_baton() {
    let d = Daemon::prepare(WEB_HTTP);
    let broken = d.path("broken-baton");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version|check) exec {} \"$@\";; esac\n\
             echo 'this Baton crashes at start' >&2; exit 3\n",
            bin()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = d.up();
    d.wait_ready(1);
    let before = d.status();

    let out = d.baton(&["upgrade", "--binary", "broken-baton"]);
    // The daemon now running came from the fallback, detached: stopped at
    // the end whatever the assertions say.
    struct StopAtEnd<'a>(&'a Daemon);
    impl Drop for StopAtEnd<'_> {
        fn drop(&mut self) {
            self.0.baton(&["stop"]);
        }
    }
    let _stop = StopAtEnd(&d);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for said in ["the new daemon exited during the upgrade", "serves again"] {
        assert!(text(&out).contains(said), "{said:?} in {}", text(&out));
    }
    assert!(
        std::fs::read_to_string(d.path("daemon.out"))
            .unwrap()
            .contains("this Baton crashes at start"),
        "the broken binary ran"
    );
    let after = d.status();
    assert_ne!(after["pid"], before["pid"], "{after:#}");
    assert_eq!(after["version"], before["version"]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", after["pid"])).unwrap(),
        d.path(".baton/baton.previous").canonicalize().unwrap(),
        "the previous Baton runs again"
    );
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}
