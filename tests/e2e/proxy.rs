//! Issue 3: the proxy owns the public port and never refuses or drops a
//! request.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::*;

pub(crate) fn web(instances: u32, env: &str, readiness: &str, extra: &str) -> String {
    format!(
        "[web]\ncommand = \"node server.js\"\ninstances = {instances}\nenv = {{ {env} }}\n{extra}\n[web.readiness]\n{readiness}\n"
    )
}

pub(crate) const HTTP_READY: &str = "kind = \"http\"\npath = \"/health\"";

/// Keep-alive clients, a new connection per request, and an h2c client are
/// all served, with nothing failing.
#[test]
pub(crate) fn keepalive_new_connection_and_h2c() {
    let d = Daemon::start(&web(2, "", HTTP_READY, ""));
    d.wait_ready(2);
    for args in [
        &["--keepalive=true"][..],
        &["--keepalive=false"][..],
        &["--http2"][..],
    ] {
        let mut all = vec!["--requests", "400", "--concurrency", "4"];
        all.extend_from_slice(args);
        let r = d.probe("/", &all).report();
        assert_eq!(r["failed"], 0, "{args:?}: {r:#}");
        assert_eq!(r["ok"], 400, "{args:?}: {r:#}");
    }
}

pub(crate) fn hwm_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// 100 MB up and 100 MB down stream through without Baton's memory
/// growing anywhere near that.
#[test]
pub(crate) fn streams_100mb_each_way_with_bounded_memory() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    const MB100: usize = 100 * 1024 * 1024;
    // Upload, chunked, in 1 MB writes.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    let block = vec![b'u'; 1024 * 1024];
    for _ in 0..100 {
        s.write_all(format!("{:x}\r\n", block.len()).as_bytes())
            .unwrap();
        s.write_all(&block).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(&format!("received {MB100}")), "{answer}");
    // Upload with a length (Baton's own HTTP/1.1 server reads that one),
    // then another request on the same connection.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {MB100}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    for _ in 0..100 {
        s.write_all(&block).unwrap();
    }
    s.write_all(b"GET /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(&format!("received {MB100}\n")), "{answer}");
    assert!(answer.ends_with("received 0\n"), "{answer}");
    // Download.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"GET /download?mb=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    assert!(total > MB100, "got {total} bytes");
    let peak = hwm_kb(d.pid());
    assert!(
        peak < 64 * 1024,
        "daemon peak RSS {peak} kB while streaming 100 MB each way"
    );
}

/// Reads from `s` until `marker` appears; returns when it did.
pub(crate) fn first_arrival(s: &mut TcpStream, marker: &str) -> Instant {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended before {marker:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&seen).contains(marker) {
            return Instant::now();
        }
    }
}

/// Chunked and SSE responses reach the client as they are written: the
/// first event arrives long before the last is written (1.5 s later).
#[test]
pub(crate) fn chunked_and_sse_are_flushed_as_written() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    for (path, first, last) in [
        ("/sse", "data: event 1", "data: event 5"),
        ("/chunked", "chunk 1", "chunk 5"),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let t1 = first_arrival(&mut s, first);
        let t5 = first_arrival(&mut s, last);
        assert!(
            t1 - start < Duration::from_millis(900),
            "{path}: first part after {:?}",
            t1 - start
        );
        assert!(
            t5 - t1 > Duration::from_millis(900),
            "{path}: parts arrived together"
        );
    }
}

/// Hop-by-hop headers are stripped; X-Forwarded-For/-Proto/-Host are set;
/// Host is preserved; an untrusted X-Forwarded-For is replaced.
#[test]
pub(crate) fn hop_by_hop_and_forwarded_headers() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    let a = raw(
        d.port,
        "GET /echo-headers HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-private\r\nx-private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: basic x\r\nX-Forwarded-For: 6.6.6.6\r\nx-kept: yes\r\n\r\n",
    )
    .unwrap();
    assert_eq!(a.status, 200, "{a:?}");
    let h: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(h["host"], "shop.example");
    assert_eq!(h["x-kept"], "yes");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization"] {
        assert!(h.get(gone).is_none(), "{gone} reached the app: {h}");
    }
}

/// With trust_forwarded, the client's X-Forwarded-For is extended.
#[test]
pub(crate) fn trusted_forwarded_for_is_appended() {
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| toml.replace("[proxy]\n", "[proxy]\ntrust_forwarded = true\n"));
    let d = d.up();
    d.wait_ready(1);
    let a = raw(d.port, "GET /echo-headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 10.0.0.9\r\n\r\n").unwrap();
    let h: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(h["x-forwarded-for"], "10.0.0.9, 127.0.0.1");
}

/// kill -9 of one instance under a steady GET load: 0 failed (retry on the
/// other instance, passive health), and the supervisor restarts it.
#[test]
pub(crate) fn kill9_of_one_instance_under_load() {
    let d = Daemon::start(&web(2, "", HTTP_READY, ""));
    d.wait_ready(2);
    let probe = d.probe(
        "/",
        &[
            "--duration",
            "3s",
            "--concurrency",
            "8",
            "--keepalive=false",
        ],
    );
    wait_until(Duration::from_secs(10), "load", || {
        d.status()["instances"][0]["served"].as_u64().unwrap_or(0) > 50
    });
    let pid = d.status()["instances"][0]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let r = probe.report();
    assert_eq!(r["failed"], 0, "{r:#}");
    d.wait_ready(2);
    assert_eq!(d.status()["instances"][0]["restarts"], 1);
}

/// Every instance down for about 2 s, then back: requests are held, none
/// fails.
#[test]
pub(crate) fn all_instances_down_then_back_requests_held() {
    let d = Daemon::start(&web(2, "START_MS = \"2000\"", "kind = \"tcp\"", ""));
    d.wait_ready(2);
    let probe = d.probe(
        "/",
        &["--duration", "5s", "--concurrency", "4", "--timeout", "20s"],
    );
    wait_until(Duration::from_secs(10), "load", || {
        d.status()["instances"][0]["served"].as_u64().unwrap_or(0) > 20
    });
    for i in d.status()["instances"].as_array().unwrap() {
        let pid = i["pid"].as_i64().unwrap() as i32;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let r = probe.report();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(
        r["longest_gap_ms"].as_u64().unwrap() >= 1500,
        "the outage was real: {r:#}"
    );
    let metrics = text(&d.baton(&["status"]));
    assert!(metrics.contains("ready"), "{metrics}");
}

/// What the test app's `/hang` saw: `arrived` and `aborted` lines.
pub(crate) fn hang_log(d: &Daemon) -> String {
    std::fs::read_to_string(d.path("hang.log")).unwrap_or_default()
}

/// Sends `request` (to `/hang`, after `before` others), and closes once
/// the app has it; then waits until the app saw it aborted and nothing is
/// in flight.
pub(crate) fn send_then_leave(d: &Daemon, request: &str, before: usize) {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    wait_until(
        Duration::from_secs(5),
        "the request reaches the app",
        || hang_log(d).matches("arrived").count() == before + 1,
    );
    assert_eq!(d.total("in_flight"), 1, "{request}");
    drop(s);
    wait_until(Duration::from_secs(5), "the app sees it aborted", || {
        hang_log(d).matches("aborted").count() == before + 1
    });
    wait_until(Duration::from_secs(5), "no longer in flight", || {
        d.total("in_flight") == 0
    });
}

/// A client that leaves before its answer takes the request along: the app
/// sees the request aborted, it stops counting as in flight (a drain would
/// wait on it), and the metrics count it. Each way a request comes in: no
/// body, a body of known length (Baton's own server), a chunked body
/// (hyper's side).
#[test]
pub(crate) fn a_client_that_leaves_takes_its_request_along() {
    let metrics = free_port();
    let d = Daemon::start(
        &(web(1, "", HTTP_READY, "")
            + &format!("\n[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n")),
    );
    d.wait_ready(1);
    let requests = [
        "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        "POST /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for (n, request) in requests.iter().enumerate() {
        send_then_leave(&d, request, n);
    }
    let log = || hang_log(&d);
    assert_eq!(
        log(),
        "arrived GET\naborted GET\narrived POST\naborted POST\narrived POST\naborted POST\n"
    );
    // An h2 client that gives up on its request (the probe times out).
    let r = d
        .probe(
            "/hang",
            &["--http2", "--requests", "1", "--timeout", "500ms"],
        )
        .report();
    assert_eq!(r["failed"], 1, "{r:#}");
    wait_until(
        Duration::from_secs(5),
        "the app sees the h2 request aborted",
        || log().matches("aborted").count() == 4,
    );
    let m = get(metrics, "/metrics").unwrap().body;
    assert!(m.contains("baton_abandoned_total 4\n"), "{m}");
    // The instance still serves.
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// A client whose request body fails (it closes in the middle, or sends a
/// malformed chunk) does not leave the instance waiting for the rest, before
/// the answer or while an answer streams: the instance's connection closes,
/// and nothing stays in flight. The instance is not taken out of rotation
/// for it. A client still there gets 400.
#[test]
pub(crate) fn a_body_cut_short_does_not_hold_the_instance() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    let cut = [
        "POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly this",
        "POST /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ];
    for (n, request) in cut.iter().enumerate() {
        send_then_leave(&d, request, n);
    }
    let log = || hang_log(&d);
    // Cut short after the answer began: an app that echoes the body as
    // it comes would otherwise wait for the rest of it.
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.write_all(b"POST /duplex HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst-piece")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("first-piece") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    drop(s);
    wait_until(
        Duration::from_secs(5),
        "the app sees the echo aborted",
        || log().matches("aborted").count() == 3,
    );
    wait_until(Duration::from_secs(5), "no longer in flight", || {
        d.total("in_flight") == 0
    });
    let a = raw(
        d.port,
        "POST /hang HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    wait_until(Duration::from_secs(5), "the app sees it aborted", || {
        log().matches("aborted").count() == 4
    });
    assert_eq!(d.total("in_flight"), 0);
    // The instance stayed in rotation: the next request is answered at once.
    assert_eq!(get(d.port, "/").unwrap().status, 200);
    assert!(!d.output().contains("out of rotation"), "{}", d.output());
}

/// An instance that answers before it has read the request body (an upload
/// limit's 413): the client gets the answer and `Connection: close`, and the
/// rest of its body is read away before the close, so the client's writes
/// are not reset under it (nginx's lingering close).
#[test]
pub(crate) fn an_early_answer_lets_the_client_finish_its_upload() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    const SIZE: usize = 32 * 1024 * 1024;
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {SIZE}\r\n\r\n"
    )
    .unwrap();
    let block = vec![b'u'; 64 * 1024];
    for sent in (0..SIZE).step_by(block.len()) {
        s.write_all(&block)
            .unwrap_or_else(|e| panic!("the upload was cut after {sent} bytes: {e}"));
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .expect("the answer ends with a clean close, not a reset");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert!(answer.ends_with("too large\n"), "{answer}");
    assert_eq!(get(d.port, "/").unwrap().status, 200);
}

/// An oversized request head gets 431.
#[test]
pub(crate) fn oversized_header_gets_431() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    let big = "a".repeat(100 * 1024);
    let a = raw(
        d.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(a.status, 431);
    assert!(
        a.header("date").is_some_and(|d| d.ends_with(" GMT")),
        "{a:?}"
    );
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let a = raw(
        d.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(a.status, 431);
}

/// `max_header_bytes` holds for a whole head that arrives in one piece, as
/// for one that keeps coming.
#[test]
pub(crate) fn header_limit_holds_for_a_complete_head() {
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| toml.replace("[proxy]\n", "[proxy]\nmax_header_bytes = 4096\n"));
    let d = d.up();
    d.wait_ready(1);
    let fits = "a".repeat(3000);
    let a = raw(
        d.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {fits}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(a.status, 200);
    let over = "a".repeat(5000);
    let a = raw(
        d.port,
        &format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {over}\r\nConnection: close\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(a.status, 431);
}

/// A head that arrives a few bytes at a time is answered once it is whole.
#[test]
pub(crate) fn a_head_sent_in_pieces_is_answered() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Paced so that Baton reads the pieces apart (the pause shapes the
    // input; nothing waits on it): the last piece alone ends the head.
    for piece in [
        &b"GET /echo-headers HTTP/1.1\r\nHo"[..],
        b"st: pieces\r\nConnection: close\r\n",
        b"\r",
        b"\n",
    ] {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains(r#""host":"pieces""#), "{answer:?}");
}

/// A slowloris connection gets 408 and is closed after header_read_timeout,
/// while other clients are served.
#[test]
pub(crate) fn slowloris_is_closed_while_others_are_served() {
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| toml.replace("[proxy]\n", "[proxy]\nheader_read_timeout = \"1s\"\n"));
    let d = d.up();
    d.wait_ready(1);
    let mut slow = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let start = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .unwrap();
    let probe = d.probe("/", &["--duration", "1500ms", "--concurrency", "2"]);
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    let waited = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let r = probe.report();
    assert_eq!(r["failed"], 0, "{r:#}");
    assert!(r["ok"].as_u64().unwrap() > 10, "{r:#}");
}

/// A connection that never sends a request (a browser's preconnect, a
/// client pool's spare) does not hold up a stop for header_read_timeout:
/// during an upgrade that wait kept every new client in the backlog.
#[test]
pub(crate) fn a_connection_that_never_sends_does_not_hold_up_a_stop() {
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| toml.replace("[proxy]\n", "[proxy]\nheader_read_timeout = \"60s\"\n"));
    let mut d = d.up();
    d.wait_ready(1);
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Accepts are in order: once a later connection is answered, the
    // silent one has been accepted too.
    assert_eq!(get(d.port, "/").unwrap().status, 200);
    let start = Instant::now();
    let exit = d.stop();
    let waited = start.elapsed();
    assert!(exit.success(), "{exit:?}");
    let mut rest = Vec::new();
    let closed = silent.read_to_end(&mut rest);
    assert!(closed.is_ok() && rest.is_empty(), "{closed:?} {rest:?}");
    assert!(
        waited < Duration::from_secs(10),
        "the stop waited {waited:?}"
    );
}

/// Every listen address serves, IPv4 and IPv6 side by side.
#[test]
pub(crate) fn listens_on_ipv4_and_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; only IPv4 is exercised elsewhere");
        return;
    }
    let v6 = free_port();
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| {
        toml.replace(
            &format!("listen = \"127.0.0.1:{}\"", d.port),
            &format!("listen = [\"127.0.0.1:{}\", \"[::1]:{v6}\"]", d.port),
        )
    });
    let d = d.up();
    d.wait_ready(1);
    assert_eq!(get(d.port, "/").unwrap().status, 200);
    let mut s = TcpStream::connect(("::1", v6)).unwrap();
    s.write_all(b"GET /echo-headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"x-forwarded-for\":\"::1\""), "{answer}");
}

/// With no instance ready, a request waits hold_timeout, then gets 503 with
/// Retry-After; the metrics count it.
#[test]
pub(crate) fn hold_timeout_gives_503_with_retry_after() {
    let metrics = free_port();
    let d = Daemon::prepare(&web(1, "NEVER_LISTEN = \"1\"", "kind = \"tcp\"", ""));
    d.edit_config(|toml| {
        toml.replace("[proxy]\n", "[proxy]\nhold_timeout = \"1s\"\n")
            + &format!("\n[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n")
    });
    let d = d.up();
    let start = Instant::now();
    let a = get(d.port, "/").unwrap();
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert!(
        a.header("date").is_some_and(|d| d.ends_with(" GMT")),
        "{a:?}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "answered before hold_timeout"
    );
    let m = get(metrics, "/metrics").unwrap();
    assert!(
        m.body.contains("baton_responses_total{class=\"5xx\"} 1"),
        "{}",
        m.body
    );
    assert!(m.body.contains("baton_held_total 1"), "{}", m.body);
    assert!(m.body.contains("baton_instances_ready 0"), "{}", m.body);
}

/// Seed 001's online/offline switch for an external gateway: the admin
/// /health answers 200, then 503 after `baton offline` while Baton keeps
/// serving, then 200 again after `baton online`.
#[test]
pub(crate) fn offline_and_online_for_an_external_balancer() {
    let admin = free_port();
    let d = Daemon::prepare(&web(1, "", HTTP_READY, ""));
    d.edit_config(|toml| toml + &format!("\n[daemon]\nmetrics_listen = \"127.0.0.1:{admin}\"\n"));
    let d = d.up();
    d.wait_ready(1);
    assert_eq!(get(admin, "/health").unwrap().status, 200);
    let out = d.baton(&["offline"]);
    assert!(out.status.success(), "{}", text(&out));
    let h = get(admin, "/health").unwrap();
    assert_eq!((h.status, h.body.as_str()), (503, "offline\n"));
    assert_eq!(d.status()["online"], false);
    assert!(text(&d.baton(&["status"])).contains("offline"));
    assert_eq!(
        get(d.port, "/").unwrap().status,
        200,
        "traffic that still arrives is served"
    );
    assert!(d.baton(&["online"]).status.success());
    assert_eq!(get(admin, "/health").unwrap().status, 200);
}

/// One response off a keep-alive connection: the head (names lowercased)
/// and the body, framed by its length, chunked (decoded), or until close.
pub(crate) fn read_response(r: &mut std::io::BufReader<TcpStream>) -> (String, String) {
    use std::io::BufRead;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "closed mid-head: {head:?}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    };
    let mut body = Vec::new();
    let status = head.split(' ').nth(1).unwrap_or_default();
    if status.starts_with('1') || status == "204" || status == "304" {
        // No body, whatever the fields say.
    } else if let Some(n) = field("content-length") {
        body.resize(n.trim().parse().unwrap(), 0);
        r.read_exact(&mut body).unwrap();
    } else if field("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            assert!(chunk.ends_with(b"\r\n"), "a chunk ends with CRLF");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).unwrap();
    }
    (head, String::from_utf8(body).unwrap())
}

/// On one keep-alive connection: pipelined requests answered in order,
/// answers to HEAD and 204 and 304 answers without a body, a chunked answer re-framed for the client, a body sent after `100
/// Continue`, a chunked body (hyper serves the connection from then on) and
/// more requests after it, and a close on request. HTTP/1.0 clients get
/// keep-alive when they ask, and a body of unknown length until the close.
#[test]
pub(crate) fn pipelining_http10_and_a_body_in_mid_connection() {
    let d = Daemon::start(&web(1, "", HTTP_READY, ""));
    d.wait_ready(1);
    let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    w.write_all(
        b"GET /echo-headers?first HTTP/1.1\r\nHost: a\r\n\r\nGET /?second HTTP/1.1\r\nHost: b\r\n\r\n",
    )
    .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["host"],
        "a"
    );
    let (head, body) = read_response(&mut r);
    assert!(
        head.starts_with("http/1.1 200") && body.starts_with("version="),
        "{head}{body}"
    );

    // An answer to HEAD has no body, whatever its fields say: the next
    // answer follows its head directly.
    w.write_all(
        b"HEAD /?head HTTP/1.1\r\nHost: x\r\n\r\nGET /?after-head HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line.to_ascii_lowercase());
    }
    assert!(
        head.starts_with("http/1.1 200") && !head.contains("connection: close"),
        "{head}"
    );
    let (head, body) = read_response(&mut r);
    assert!(
        head.starts_with("http/1.1 200") && body.starts_with("version="),
        "{head}{body}"
    );
    // Nor do 204 and 304 answers.
    w.write_all(b"GET /status?code=204 HTTP/1.1\r\nHost: x\r\n\r\nGET /status?code=304 HTTP/1.1\r\nHost: x\r\n\r\nGET /?after-304 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for status in ["204", "304"] {
        let (head, body) = read_response(&mut r);
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(body, "");
    }
    let (head, body) = read_response(&mut r);
    assert!(
        head.starts_with("http/1.1 200") && body.starts_with("version="),
        "{head}{body}"
    );

    w.write_all(b"GET /chunked?n=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    assert!(
        body.starts_with("chunk 1 at") && body.contains("chunk 2 at"),
        "{body:?}"
    );

    // A body the client sends only once told to continue.
    w.write_all(
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 100"), "{head}");
    w.write_all(b"hello").unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "received 5\n");
    // A chunked body: hyper serves the connection from here on.
    w.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, "received 5\n");
    w.write_all(b"GET /?after HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (_, body) = read_response(&mut r);
    assert!(body.starts_with("version="), "{body}");

    w.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (head, _) = read_response(&mut r);
    assert!(head.contains("connection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the answer"
    );

    // HTTP/1.0: keep-alive on request, then a body of unknown length.
    let s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = std::io::BufReader::new(s);
    w.write_all(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(head.contains("connection: keep-alive\r\n"), "{head}");
    assert!(body.starts_with("version="), "{body}");
    w.write_all(b"GET /chunked?n=2 HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let (head, body) = read_response(&mut r);
    assert!(
        head.contains("connection: close\r\n") && !head.contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        body.starts_with("chunk 1 at") && body.contains("chunk 2 at"),
        "{body:?}"
    );
}
