//! The retry rule: a request that reached an instance goes again only
//! when its method is idempotent; any goes again when none of it did.

use super::proxy::*;
use crate::common::*;

/// A POST whose body was sent and that meets a reset gets 502 and is never
/// replayed on the other instance.
#[test]
fn post_meeting_reset_gets_502_and_no_replay() {
    let d = Daemon::start(&web(2, "", HTTP_READY, ""));
    d.wait_ready(2);
    let a = raw(
        d.port,
        "POST /reset HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world",
    )
    .unwrap();
    assert_eq!(a.status, 502, "{a:?}");
    let log = std::fs::read_to_string(d.path("posts.log")).unwrap();
    assert_eq!(log.lines().count(), 1, "the POST was replayed: {log}");
    // A GET meeting the same reset is retried (and resets again each time).
    let a = get(d.port, "/reset").unwrap();
    assert_eq!(a.status, 502);
    let log = std::fs::read_to_string(d.path("posts.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        1 + 3,
        "a GET is tried 1 + retries (2) times: {log}"
    );
}

/// The lines of the test app's `file` (each one a request that reached the
/// app), 0 when it was never written.
fn app_lines(d: &Daemon, file: &str) -> usize {
    std::fs::read_to_string(d.path(file)).map_or(0, |log| log.lines().count())
}

/// The non-idempotent requests of the retry cases: POST and PATCH with no
/// framing field at all (`curl -X POST`), with `Content-Length: 0` (a
/// browser's bodiless POST), and with a body.
fn unsafe_requests(path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for method in ["POST", "PATCH"] {
        for (kind, framing) in [
            ("no body", String::new()),
            ("length 0", "Content-Length: 0\r\n".to_string()),
            ("a body", "Content-Length: 5\r\n".to_string()),
        ] {
            let body = if kind == "a body" { "hello" } else { "" };
            out.push((
                format!("{method} with {kind}"),
                format!("{method} {path} HTTP/1.1\r\nHost: x\r\n{framing}Connection: close\r\n\r\n{body}"),
            ));
        }
    }
    out
}

/// Issue 32: a non-idempotent request that reached an instance is never
/// sent again, body or not (RFC 9110 §9.2.2). The app acts, then destroys
/// the socket: each POST and PATCH reached it once and got 502 (before the
/// fix, a bodiless POST reached it 4 times, a PATCH 3).
#[test]
fn an_unsafe_request_that_reached_an_instance_is_never_sent_again() {
    let d = Daemon::start(&web(2, "", HTTP_READY, ""));
    d.wait_ready(2);
    let mut counts = Vec::new();
    for (case, request) in unsafe_requests("/reset") {
        let before = app_lines(&d, "posts.log");
        let a = raw(d.port, &request).unwrap();
        counts.push((case.clone(), a.status, app_lines(&d, "posts.log") - before));
    }
    for (case, status, reached) in &counts {
        assert_eq!((*status, *reached), (502, 1), "{case}: {counts:?}");
    }
}

/// Issue 32: after `response_timeout`, a POST or PATCH gets 504 and is not
/// sent to the other instance (before: a bodiless POST reached two).
#[test]
fn an_unsafe_request_that_timed_out_is_never_sent_again() {
    // Under [proxy]: Daemon's file ends its [proxy] table with these.
    let d = Daemon::start(&format!(
        "response_timeout = \"1s\"\nmax_fails = 100\n{}",
        web(2, "", HTTP_READY, "")
    ));
    d.wait_ready(2);
    let mut counts = Vec::new();
    for (case, request) in unsafe_requests("/hang") {
        let before = hang_log(&d).matches("arrived").count();
        let a = raw(d.port, &request).unwrap();
        let reached = hang_log(&d).matches("arrived").count() - before;
        counts.push((case.clone(), a.status, reached));
    }
    for (case, status, reached) in &counts {
        assert_eq!((*status, *reached), (504, 1), "{case}: {counts:?}");
    }
}

/// Issue 32: a request none of which reached an instance (its connect was
/// refused) goes to another instance whatever its method, and reaches the
/// app once. web#1 closes its port once it is ready.
#[test]
fn an_unsafe_request_whose_connect_was_refused_goes_to_another_instance() {
    let metrics = free_port();
    let d = Daemon::start(&web(2, "UNLISTEN = \"web#1\"", HTTP_READY, "").replace(
        "[web]",
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\n[web]"),
    ));
    d.wait_ready(2);
    let requests = unsafe_requests("/record");
    for (case, request) in &requests {
        let a = raw(d.port, request).unwrap();
        assert_eq!(a.status, 200, "{case}: {a:?}");
    }
    let log = std::fs::read_to_string(d.path("requests.log")).unwrap();
    assert_eq!(log.lines().count(), requests.len(), "{log}");
    assert!(log.lines().all(|l| l.contains("web#2")), "{log}");
    let (retries, m) = metric(metrics, "baton_retries_total");
    assert!(
        retries >= 1,
        "no request met web#1's closed port: {m}\n{}",
        d.output()
    );
}
