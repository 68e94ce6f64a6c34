//! Issue 6: WebSocket, SSE and raw TCP connections survive deploys: they
//! stay with their old instance until they close or the connection drain
//! ends them politely, and reconnects land on the new release.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// `[web]` with `extra`. The watch after a deploy's switch is short: these
/// tests time how long a deploy waits for open connections, which it must
/// not, and the watch (10 s by default) is not about them.
fn web(version: &str, extra: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = 2\nenv = {{ APP_VERSION = \"{version}\" }}\nwatch_after_switch = \"1s\"\n{extra}\n[web.readiness]\nkind = \"http\"\npath = \"/health\"\n"
    )
}

/// 50 WebSocket clients exchanging a message every 100 ms through a deploy:
/// none breaks before connection_drain_timeout; then each gets close 1001
/// and reconnects, to v2.
#[test]
fn websockets_survive_deploy_then_reconnect_to_v2() {
    let extra = "connection_drain_timeout = \"2s\"";
    let d = Daemon::start(&web("v1", extra));
    d.wait_ready(2);
    let started = Instant::now();
    let probe = Command::new(bin())
        .args(["probe", &format!("ws://127.0.0.1:{}/ws", d.port)])
        .args([
            "--concurrency",
            "50",
            "--duration",
            "7s",
            "--interval",
            "100ms",
            "--version-prefix",
            "version=",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(20), "50 open WebSockets", || {
        d.total("connections") == 50
    });
    d.rewrite(&web("v2", extra));
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("keep 50 open connections"),
        "{}",
        text(&out)
    );
    let deployed = started.elapsed();
    // Old instances are listed as draining, with their connections, meanwhile.
    let s = d.status();
    let draining: Vec<_> = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["draining_since"].is_string())
        .collect();
    assert_eq!(draining.len(), 2, "{s:#}");
    assert_eq!(
        draining
            .iter()
            .map(|i| i["connections"].as_u64().unwrap())
            .sum::<u64>(),
        50
    );

    let out = probe.wait_with_output().unwrap();
    let r: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert_eq!(r["abnormal_closes"], 0, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["failed_connects"], 0, "{r:#}");
    assert_eq!(r["close_codes"]["1001"], 50, "{r:#}");
    assert_eq!(r["reconnects"], 50, "{r:#}");
    assert_eq!(
        r["last_versions"]["v2"], 50,
        "every reconnect landed on v2: {r:#}"
    );
    let first_close = r["first_close_ms"].as_u64().unwrap();
    assert!(
        first_close + 300 >= deployed.as_millis() as u64 + 2000,
        "closed at {first_close} ms, before the 2 s drain after the deploy at {deployed:?}"
    );
    wait_until(Duration::from_secs(15), "old instances stopped", || {
        d.status()["instances"].as_array().unwrap().len() == 2
    });
}

/// An SSE stream opened on v1 goes on through a deploy, to its end; the
/// deploy does not wait for it; new requests get v2.
#[test]
fn sse_stream_across_deploy() {
    let extra = "connection_drain_timeout = \"60s\"";
    let d = Daemon::start(&web("v1", extra));
    d.wait_ready(2);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /sse?n=15 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reader = BufReader::new(s);
    let mut events = Vec::new();
    let mut line = String::new();
    while events.is_empty() {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data:") {
            events.push(line.clone());
        }
    }
    d.rewrite(&web("v2", extra));
    let began = Instant::now();
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        began.elapsed() < Duration::from_secs(4),
        "the deploy waited for the stream"
    );
    assert!(
        text(&out).contains("keep 1 open connection"),
        "{}",
        text(&out)
    );
    assert!(get(d.port, "/").unwrap().body.starts_with("version=v2"));
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("data:") {
            events.push(line.clone());
        }
        if events.len() == 15 {
            break;
        }
    }
    assert_eq!(events.len(), 15, "{events:?}");
    assert!(events.iter().all(|e| e.contains(" v1 ")), "{events:?}");
    wait_until(Duration::from_secs(10), "the old instances to stop", || {
        d.status()["instances"].as_array().unwrap().len() == 2
    });
}

fn echo(conn: &mut BufReader<TcpStream>, msg: &str) -> String {
    conn.get_mut()
        .write_all(format!("{msg}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    line.trim().to_string()
}

/// A raw TCP service (L4 mode) across a deploy: the open connection stays
/// on v1 until connection_drain_timeout ends it with a FIN; new ones get v2.
#[test]
fn tcp_echo_across_deploy() {
    let tcp_port = free_port();
    let body = |v: &str| {
        format!(
            "[tcp.echo]\nlisten = \"127.0.0.1:{tcp_port}\"\n\n{}",
            web(v, "connection_drain_timeout = \"2s\"")
        )
    };
    let d = Daemon::start(&body("v1"));
    d.wait_ready(2);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        BufReader::new(s)
    };
    let mut a = connect();
    assert_eq!(echo(&mut a, "a1"), "v1 a1");
    d.rewrite(&body("v2"));
    let out = d.baton(&["deploy"]);
    assert!(out.status.success(), "{}", text(&out));
    let closed_after = Instant::now();
    assert_eq!(
        echo(&mut a, "a2"),
        "v1 a2",
        "the open connection stays on v1"
    );
    let mut b = connect();
    assert_eq!(echo(&mut b, "b1"), "v2 b1", "a new connection lands on v2");
    let mut rest = Vec::new();
    let n = a.read_to_end(&mut rest).unwrap();
    assert_eq!(n, 0, "FIN, nothing more");
    assert!(
        closed_after.elapsed() >= Duration::from_millis(1700),
        "closed before the drain timeout"
    );
    assert_eq!(echo(&mut b, "b2"), "v2 b2");
}
