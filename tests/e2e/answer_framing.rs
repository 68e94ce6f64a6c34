//! What an instance's answer may say about its framing, and what the
//! client gets: RFC 9112 cases, each with the outcome the RFC gives.

use super::framing::*;
use std::io::Write;

#[test]
fn answer_framing_cases() {
    let suite = Suite::start();
    let ok = |rest: &str| format!("HTTP/1.1 200 OK\r\n{rest}").into_bytes();
    let bad_gateway = |s: &Suite, name: &str, answer: &[u8]| {
        let request = format!("GET /answer/{} HTTP/1.1\r\nHost: x\r\n\r\n", hex(answer));
        let mut c = s.connect();
        c.write_all(request.as_bytes()).unwrap();
        let got = Reader::default()
            .next(&mut c)
            .unwrap_or_else(|| panic!("{name}: no answer"));
        assert_eq!(got.status, 502, "{name}: {}", got.text());
        s.answer(
            name,
            "GET",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
            Some(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        );
    };
    let cases: Vec<AnswerCase> = vec![
        ("a length", "GET", ok("Content-Length: 5\r\n\r\nhello"), false, Some(ok("Content-Length: 5\r\n\r\nhello"))),
        (
            "the issue's answer: Connection names Content-Length",
            "GET",
            ok("Connection: content-length\r\nContent-Length: 5\r\n\r\nhello"),
            false,
            Some(ok("Content-Length: 5\r\n\r\nhello")),
        ),
        (
            "Connection names Transfer-Encoding",
            "GET",
            ok("Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            false,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "chunked",
            "GET",
            ok("Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\n\r\n"),
            false,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "chunked beats a length (RFC 9112 §6.3); the length goes",
            "GET",
            ok("Content-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            false,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "a coding that is not chunked: the body ends at the close",
            "GET",
            ok("Transfer-Encoding: gzip\r\n\r\nhello"),
            true,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "no length: the body ends at the close",
            "GET",
            ok("\r\nhello"),
            true,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "trailers: only safe fields pass",
            "GET",
            ok("Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Sum: 1\r\nContent-Length: 3\r\nSet-Cookie: a=1\r\n\r\n"),
            false,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n")),
        ),
        (
            "a 204 has no Content-Length (RFC 9110 §8.6)",
            "GET",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n".to_vec(),
            false,
            Some(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        ),
        (
            "a 304 keeps its length and has no body",
            "GET",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_vec(),
            false,
            Some(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n".to_vec()),
        ),
        (
            "an answer to HEAD keeps its length and has no body",
            "HEAD",
            ok("Content-Length: 5\r\n\r\n"),
            false,
            Some(ok("Content-Length: 5\r\n\r\n")),
        ),
        (
            "an interim 100 is not passed on",
            "GET",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            false,
            Some(ok("Content-Length: 5\r\n\r\nhello")),
        ),
        (
            "bare LF line ends become CRLF",
            "GET",
            b"HTTP/1.1 200 OK\nContent-Length: 5\nX-A: 1\n\nhello".to_vec(),
            false,
            Some(ok("X-A: 1\r\nContent-Length: 5\r\n\r\nhello")),
        ),
        (
            "bytes past the body are not a next answer",
            "GET",
            ok("Content-Length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil"),
            false,
            Some(ok("Content-Length: 5\r\n\r\nhello")),
        ),
        (
            "hop-by-hop fields go",
            "GET",
            ok("Connection: keep-alive, x-private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"),
            false,
            Some(ok("Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n")),
        ),
        (
            "Connection: close from the instance does not close the client",
            "GET",
            ok("Connection: close\r\nContent-Length: 2\r\n\r\nhi"),
            true,
            Some(ok("Content-Length: 2\r\n\r\nhi")),
        ),
        (
            "an HTTP/1.0 answer without a length",
            "GET",
            b"HTTP/1.0 200 OK\r\n\r\nhello".to_vec(),
            true,
            Some(ok("transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")),
        ),
        (
            "an invalid chunk size cuts the answer off",
            "GET",
            ok("Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            false,
            None,
        ),
    ];
    let count = cases.len();
    for (name, method, answer, close, expected) in cases {
        suite.answer(name, method, &answer, close, expected.as_deref());
    }
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("a signed length", ok("Content-Length: +5\r\n\r\nhello")),
        (
            "a length with a no-break space",
            ok("Content-Length: 5\u{a0}\r\n\r\nhello"),
        ),
        (
            "two equal lengths (nginx: 502)",
            ok("Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
        ),
        (
            "two different lengths",
            ok("Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        ),
        ("a list of lengths", ok("Content-Length: 5, 5\r\n\r\nhello")),
        (
            "obs-fold (RFC 9112 §5.2)",
            ok("X-A: 1\r\n 2\r\nContent-Length: 5\r\n\r\nhello"),
        ),
        (
            "a space before a colon (RFC 9112 §5.1)",
            ok("Content-Length : 5\r\n\r\nhello"),
        ),
        (
            "a NUL in a value",
            ok("X-A: a\0b\r\nContent-Length: 5\r\n\r\nhello"),
        ),
    ];
    assert!(
        count + refused.len() >= 20,
        "{} answer cases",
        count + refused.len()
    );
    println!("{} answer cases", count + refused.len());
    for (name, answer) in refused {
        bad_gateway(&suite, name, &answer);
    }
}
