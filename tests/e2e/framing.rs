//! Issue 19: the HTTP/1 data plane is as strict as nginx. A differential
//! suite: raw requests and raw answers through Baton, with a backend
//! (tests/apps/recorder.js) that records every byte it receives. Each case
//! asserts what the client gets, the exact bytes the backend saw (field
//! names compared in lower case, RFC 9110 §5.1), and then sends a victim
//! request, on the same connection when it stays open and on a new one,
//! to prove that nothing is left over to desynchronise either hop.
//!
//! The expected outcomes come from RFC 9112/9110, and where the RFC lets a
//! recipient choose, from what nginx does (the case says so).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;

/// What Baton should do with one message the client sends.
pub(crate) enum Outcome {
    /// The backend gets exactly this request and its answer reaches the
    /// client.
    Forwarded(Vec<u8>),
    /// Baton answers this status itself and closes the connection; the
    /// backend gets nothing.
    Refused(u16),
    /// The head went to the backend, then the client's body turned out
    /// malformed: Baton closes both connections, the client gets this
    /// status.
    BodyRefused(Vec<u8>, u16),
}

use Outcome::*;

/// A request as the backend should see it: `line` (method and target),
/// Host, the client's end-to-end `fields`, Baton's X-Forwarded-*, the
/// framing field Baton writes, and the body.
pub(crate) fn fwd(
    line: &str,
    host: Option<&str>,
    fields: &[&str],
    framing: &str,
    body: &str,
) -> Vec<u8> {
    let mut out = format!("{line} HTTP/1.1\r\nhost: {}\r\n", host.unwrap_or_default());
    for f in fields {
        out += f;
        out += "\r\n";
    }
    out += "x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n";
    if let Some(host) = host {
        out += &format!("x-forwarded-host: {host}\r\n");
    }
    if !framing.is_empty() {
        out += framing;
        out += "\r\n";
    }
    out += "\r\n";
    out += body;
    out.into_bytes()
}

/// A bodiless GET of `target` with Host x, as the backend should see it.
pub(crate) fn get_x(target: &str) -> Vec<u8> {
    fwd(&format!("GET {target}"), Some("x"), &[], "", "")
}

pub(crate) const VICTIM: &[u8] = b"GET /victim HTTP/1.1\r\nHost: v\r\nCookie: secret=1\r\n\r\n";

pub(crate) fn victim_seen() -> Vec<u8> {
    fwd("GET /victim", Some("v"), &["cookie: secret=1"], "", "")
}

/// A Baton in front of the recording backend.
pub(crate) struct Suite {
    d: Daemon,
    log: PathBuf,
}

impl Suite {
    pub(crate) fn start() -> Suite {
        let d = Daemon::prepare("");
        let log = d.path("record.log");
        std::fs::write(&log, "").unwrap();
        d.rewrite(&format!(
            "[web]\ncommand = \"node recorder.js\"\ninstances = 1\nenv = {{ RECORD_LOG = \"{}\" }}\n[web.readiness]\nkind = \"tcp\"\n",
            log.display()
        ));
        std::fs::copy(
            app_js().with_file_name("recorder.js"),
            d.path("recorder.js"),
        )
        .unwrap();
        let d = d.up();
        d.wait_ready(1);
        Suite { d, log }
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.d.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Every byte the backend received, in the order it came.
    fn recorded(&self) -> Vec<u8> {
        let text = std::fs::read_to_string(&self.log).unwrap();
        let mut all = Vec::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            all.extend(unhex(v["data"].as_str().unwrap()));
        }
        all
    }

    /// Sends `send` on a new connection and checks each outcome in turn,
    /// then the victims; returns what the backend saw meanwhile, for the
    /// caller to compare.
    fn run(&self, name: &str, send: &[u8], outcomes: &[Outcome]) {
        let before = self.recorded().len();
        let mut s = self.connect();
        s.write_all(send).unwrap();
        let mut reader = Reader::default();
        let mut expected_backend = Vec::new();
        let mut open = true;
        for outcome in outcomes {
            let answer = reader
                .next(&mut s)
                .unwrap_or_else(|| panic!("{name}: no answer"));
            match outcome {
                Forwarded(seen) => {
                    assert_eq!(answer.status, 200, "{name}: {}", answer.text());
                    expected_backend.extend_from_slice(seen);
                    open = !answer.close;
                }
                Refused(status) => {
                    assert_eq!(answer.status, *status, "{name}: {}", answer.text());
                    assert!(reader.closed(&mut s), "{name}: the connection closes");
                    open = false;
                }
                BodyRefused(head, status) => {
                    assert_eq!(answer.status, *status, "{name}: {}", answer.text());
                    expected_backend.extend_from_slice(head);
                    open = false;
                }
            }
        }
        if open {
            s.write_all(VICTIM).unwrap();
            let answer = reader
                .next(&mut s)
                .unwrap_or_else(|| panic!("{name}: no answer to the victim"));
            assert_victim(name, &answer);
            expected_backend.extend(victim_seen());
        }
        let mut fresh = self.connect();
        fresh.write_all(VICTIM).unwrap();
        let answer = Reader::default()
            .next(&mut fresh)
            .unwrap_or_else(|| panic!("{name}: no answer to the victim on a new connection"));
        assert_victim(name, &answer);
        expected_backend.extend(victim_seen());
        let seen = self.recorded()[before..].to_vec();
        assert_eq!(
            show(&normalize(&seen)),
            show(&normalize(&expected_backend)),
            "{name}: the bytes the backend saw"
        );
    }

    /// Sends a GET for `/answer/<hex>` (or `/answer-close/`), which the
    /// backend answers with `answer` exactly; checks the client gets
    /// `expected` exactly (`None`: the connection ends without a whole
    /// answer), then the victims.
    pub(crate) fn answer(
        &self,
        name: &str,
        method: &str,
        answer: &[u8],
        close: bool,
        expected: Option<&[u8]>,
    ) {
        let path = if close { "answer-close" } else { "answer" };
        let request = format!(
            "{method} /{path}/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            hex(answer)
        );
        let mut s = self.connect();
        s.write_all(request.as_bytes()).unwrap();
        let mut reader = Reader {
            head_only: method == "HEAD",
            ..Reader::default()
        };
        let got = reader.next(&mut s);
        match (expected, got) {
            (Some(expected), Some(got)) => {
                assert_eq!(
                    show(&got.raw),
                    show(expected),
                    "{name}: what the client got"
                );
                if !got.close {
                    reader.head_only = false;
                    s.write_all(VICTIM).unwrap();
                    let victim = reader
                        .next(&mut s)
                        .unwrap_or_else(|| panic!("{name}: no answer to the victim"));
                    assert_victim(name, &victim);
                }
            }
            (None, None) => {}
            (None, Some(got)) => panic!("{name}: expected no whole answer, got {}", got.text()),
            (Some(_), None) => panic!("{name}: no answer"),
        }
        let mut fresh = self.connect();
        fresh.write_all(VICTIM).unwrap();
        let victim = Reader::default()
            .next(&mut fresh)
            .unwrap_or_else(|| panic!("{name}: no answer to the victim on a new connection"));
        assert_victim(name, &victim);
    }
}

pub(crate) fn assert_victim(name: &str, answer: &ClientAnswer) {
    assert_eq!(answer.status, 200, "{name}: victim: {}", answer.text());
    let seen: serde_json::Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| panic!("{name}: victim: {}", answer.text()));
    assert_eq!(
        seen["url"], "/victim",
        "{name}: the victim was desynchronised: {seen}"
    );
    assert_eq!(seen["method"], "GET", "{name}: {seen}");
    assert_eq!(seen["body"], 0, "{name}: {seen}");
}

/// One answer as the client read it.
pub(crate) struct ClientAnswer {
    pub(crate) status: u16,
    pub(crate) raw: Vec<u8>,
    pub(crate) body: Vec<u8>,
    pub(crate) close: bool,
}

impl ClientAnswer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// Reads answers off a client connection: 1xx skipped, bodies delimited by
/// Content-Length, chunked, or the close.
#[derive(Default)]
pub(crate) struct Reader {
    buf: Vec<u8>,
    eof: bool,
    head_only: bool,
}

impl Reader {
    fn fill(&mut self, s: &mut TcpStream) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 65536];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn closed(&mut self, s: &mut TcpStream) -> bool {
        while self.fill(s) {}
        self.buf.is_empty()
    }

    pub(crate) fn next(&mut self, s: &mut TcpStream) -> Option<ClientAnswer> {
        loop {
            let end = loop {
                if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                    break at + 4;
                }
                if !self.fill(s) {
                    return None;
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            if (100..200).contains(&status) {
                self.buf.drain(..end);
                continue;
            }
            let field = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_ascii_lowercase())
                })
            };
            let close = field("connection").is_some_and(|c| c.contains("close"));
            let no_body = self.head_only || status == 204 || status == 304;
            let (body, used) = if no_body {
                (Vec::new(), end)
            } else if field("transfer-encoding").is_some_and(|t| t == "chunked") {
                loop {
                    if let Some(done) = dechunk(&self.buf[end..]) {
                        break (done.0, end + done.1);
                    }
                    if !self.fill(s) {
                        return None;
                    }
                }
            } else if let Some(n) = field("content-length") {
                let n: usize = n.parse().ok()?;
                while self.buf.len() < end + n {
                    if !self.fill(s) {
                        return None;
                    }
                }
                (self.buf[end..end + n].to_vec(), end + n)
            } else {
                while self.fill(s) {}
                (self.buf[end..].to_vec(), self.buf.len())
            };
            let raw: Vec<u8> = self.buf.drain(..used).collect();
            return Some(ClientAnswer {
                status,
                raw,
                body,
                close,
            });
        }
    }
}

/// A chunked body at the start of `b`: its data and the bytes it took, or
/// `None` while incomplete.
pub(crate) fn dechunk(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut at = 0;
    let mut data = Vec::new();
    loop {
        let line_end = at + find(&b[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&b[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            let end = at + find(&b[at..], b"\r\n")?;
            if end == at {
                return Some((data, end + 2));
            }
            let end = at + find(&b[at..], b"\r\n\r\n")?;
            return Some((data, end + 4));
        }
        if b.len() < at + size + 2 {
            return None;
        }
        data.extend_from_slice(&b[at..at + size]);
        at += size + 2;
    }
}

/// How many bytes at the start of `b` are whole chunks (the last one
/// included, if it is there): a body Baton cut off ends after them.
pub(crate) fn whole_chunks(b: &[u8]) -> usize {
    if let Some((_, used)) = dechunk(b) {
        return used;
    }
    let mut at = 0;
    loop {
        let Some(line_end) = find(&b[at..], b"\r\n").map(|e| at + e) else {
            return at;
        };
        let size_text = String::from_utf8_lossy(&b[at..line_end]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
        else {
            return at;
        };
        if size == 0 || b.len() < line_end + 2 + size + 2 {
            return at;
        }
        at = line_end + 2 + size + 2;
    }
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Requests as the backend got them, with each field name in lower case.
pub(crate) fn normalize(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(end) = find(&bytes[at..], b"\r\n\r\n").map(|e| at + e + 4) else {
            out.extend_from_slice(&bytes[at..]);
            break;
        };
        let head = String::from_utf8_lossy(&bytes[at..end]).into_owned();
        let mut lines = head.split("\r\n");
        out.extend_from_slice(lines.next().unwrap_or_default().as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length = 0;
        let mut chunked = false;
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            let name = name.to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse().unwrap_or(0);
            }
            chunked |= name == "transfer-encoding";
            out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        let body_end = if chunked {
            end + whole_chunks(&bytes[end..])
        } else {
            (end + length).min(bytes.len())
        };
        out.extend_from_slice(&bytes[end..body_end]);
        at = body_end;
    }
    out
}

pub(crate) fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The request cases: (name, what the client sends, what must happen).
pub(crate) fn request_cases() -> Vec<(&'static str, Vec<u8>, Vec<Outcome>)> {
    let post5 = |fields: &[&str]| fwd("POST /", Some("x"), fields, "content-length: 5", "hello");
    let chunked5 = |fields: &[&str]| {
        fwd(
            "POST /",
            Some("x"),
            fields,
            "transfer-encoding: chunked",
            "5\r\nhello\r\n0\r\n\r\n",
        )
    };
    let te = |value: &str| {
        format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {value}\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .into_bytes()
    };
    let cl = |value: &[u8]| {
        let mut r = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ".to_vec();
        r.extend_from_slice(value);
        r.extend_from_slice(b"\r\n\r\nhello");
        r
    };
    let chunks = |body: &[u8]| {
        let mut r = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        r.extend_from_slice(body);
        r
    };
    let b = |s: &str| s.as_bytes().to_vec();
    let smuggled = "GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";
    vec![
        // Content-Length (RFC 9110 §8.6, RFC 9112 §6.3).
        ("plain GET", b("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), vec![Forwarded(get_x("/"))]),
        ("a length", cl(b"5"), vec![Forwarded(post5(&[]))]),
        ("leading zeros are digits", cl(b"005"), vec![Forwarded(post5(&[]))]),
        ("whitespace around the value is not part of it", cl(b" 5 "), vec![Forwarded(post5(&[]))]),
        (
            "an empty body with a length",
            b("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
            vec![Forwarded(fwd("POST /", Some("x"), &[], "content-length: 0", ""))],
        ),
        ("a sign", cl(b"+5"), vec![Refused(400)]),
        ("a minus", cl(b"-5"), vec![Refused(400)]),
        ("a no-break space", cl(b"5\xc2\xa0"), vec![Refused(400)]),
        ("hex", cl(b"0x5"), vec![Refused(400)]),
        ("a list of equal values (nginx: 400)", cl(b"5, 5"), vec![Refused(400)]),
        ("an empty value", cl(b""), vec![Refused(400)]),
        ("past 64 bits", cl(b"99999999999999999999"), vec![Refused(400)]),
        ("digits with a space inside", cl(b"5 5"), vec![Refused(400)]),
        (
            "two equal lines (nginx: 400)",
            b("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            vec![Refused(400)],
        ),
        (
            "two different lines",
            b("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
            vec![Refused(400)],
        ),
        (
            "a length on a GET",
            b("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            vec![Forwarded(fwd("GET /", Some("x"), &[], "content-length: 3", "abc"))],
        ),
        // Transfer-Encoding (RFC 9112 §6.1, §7).
        ("chunked", te("chunked"), vec![Forwarded(chunked5(&[]))]),
        ("Chunked in any case", te("ChUnKeD"), vec![Forwarded(chunked5(&[]))]),
        ("chunked with a tab before it", te("\tchunked"), vec![Forwarded(chunked5(&[]))]),
        ("a coding that is not chunked (nginx: 501)", te("xchunked"), vec![Refused(501)]),
        ("identity (nginx: 501)", te("identity"), vec![Refused(501)]),
        ("gzip, chunked (nginx: 501)", te("gzip, chunked"), vec![Refused(501)]),
        ("chunked, identity", te("chunked, identity"), vec![Refused(501)]),
        ("chunked twice in one line (nginx: 501)", te("chunked, chunked"), vec![Refused(501)]),
        ("chunked with a NUL", te("chunked\0"), vec![Refused(400)]),
        (
            "two Transfer-Encoding lines (nginx: 400)",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        (
            "a length and chunked (nginx: 400)",
            b("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        (
            "chunked and a length (nginx: 400)",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        (
            "chunked in HTTP/1.0 (RFC 9112 §6.1)",
            b("POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        (
            "a space before the colon (RFC 9112 §5.1)",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        (
            "obs-fold (RFC 9112 §5.2)",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Refused(400)],
        ),
        // Chunk forms (RFC 9112 §7.1): Baton re-frames what it decoded.
        (
            "chunk extensions are dropped",
            chunks(b"5;a=1;b=\"x\"\r\nhello\r\n0\r\n\r\n"),
            vec![Forwarded(chunked5(&[]))],
        ),
        (
            "leading zeros in a chunk size",
            chunks(b"0005\r\nhello\r\n000\r\n\r\n"),
            vec![Forwarded(chunked5(&[]))],
        ),
        (
            "a chunk size in 0x form",
            chunks(b"0x5\r\nhello\r\n0\r\n\r\n"),
            vec![BodyRefused(fwd("POST /", Some("x"), &[], "transfer-encoding: chunked", ""), 400)],
        ),
        (
            "a chunk size past 64 bits",
            chunks(b"fffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
            vec![BodyRefused(fwd("POST /", Some("x"), &[], "transfer-encoding: chunked", ""), 400)],
        ),
        (
            "chunk data longer than its size",
            chunks(b"3\r\nhello\r\n0\r\n\r\n"),
            // The chunk that was whole went on before the error showed.
            vec![BodyRefused(fwd("POST /", Some("x"), &[], "transfer-encoding: chunked", "3\r\nhel\r\n"), 400)],
        ),
        (
            "trailers: only safe fields pass",
            chunks(b"5\r\nhello\r\n0\r\nX-Sum: 1\r\nContent-Length: 9\r\nHost: evil\r\n\r\n"),
            vec![Forwarded(fwd(
                "POST /",
                Some("x"),
                &[],
                "transfer-encoding: chunked",
                "5\r\nhello\r\n0\r\nx-sum: 1\r\n\r\n",
            ))],
        ),
        // Field syntax (RFC 9112 §2.2, §5).
        ("bare LF line ends (RFC 9112 §2.2 allows)", b("GET / HTTP/1.1\nHost: x\n\n"), vec![Forwarded(get_x("/"))]),
        ("a bare CR in a field", b("GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\n\r\n"), vec![Refused(400)]),
        ("a NUL in a value", b("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"), vec![Refused(400)]),
        ("obs-fold in any field", b("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"), vec![Refused(400)]),
        ("a space before a colon", b("GET / HTTP/1.1\r\nHost : x\r\n\r\n"), vec![Refused(400)]),
        ("an empty field name", b("GET / HTTP/1.1\r\nHost: x\r\n: y\r\n\r\n"), vec![Refused(400)]),
        ("a name that is not a token", b("GET / HTTP/1.1\r\nHost: x\r\nX(A): 1\r\n\r\n"), vec![Refused(400)]),
        ("two spaces in the request line", b("GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), vec![Refused(400)]),
        ("a space in the target", b("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), vec![Refused(400)]),
        // Host and targets (RFC 9112 §3.2).
        ("HTTP/1.1 without Host", b("GET / HTTP/1.1\r\n\r\n"), vec![Refused(400)]),
        ("two Host lines", b("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), vec![Refused(400)]),
        ("a Host with userinfo", b("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), vec![Refused(400)]),
        ("a Host with a path", b("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), vec![Refused(400)]),
        ("a Host with a space", b("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), vec![Refused(400)]),
        (
            "HTTP/1.0 may omit Host; HTTP/1.1 then has an empty one (RFC 9112 §3.2)",
            b("GET / HTTP/1.0\r\n\r\n"),
            vec![Forwarded(fwd("GET /", None, &[], "", ""))],
        ),
        (
            "the absolute form's authority replaces Host",
            b("GET http://other.example/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Forwarded(fwd("GET /p?q=1", Some("other.example"), &[], "", ""))],
        ),
        (
            "an absolute https target with a port and no path",
            b("GET HTTPS://other.example:8443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Forwarded(fwd("GET /", Some("other.example:8443"), &[], "", ""))],
        ),
        (
            "an absolute target with userinfo",
            b("GET http://u@other.example/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Refused(400)],
        ),
        ("the asterisk form (nginx: 400)", b("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), vec![Refused(400)]),
        ("CONNECT (nginx: 405)", b("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"), vec![Refused(405)]),
        ("the authority form on a GET", b("GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n"), vec![Refused(400)]),
        // Connection and hop-by-hop fields (RFC 9110 §7.6.1).
        (
            "the issue's smuggling: Connection names Content-Length",
            format!("POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 35\r\n\r\n{smuggled}").into_bytes(),
            vec![Forwarded(fwd("POST /", Some("x"), &[], "content-length: 35", smuggled))],
        ),
        (
            "Connection names Transfer-Encoding",
            b("POST / HTTP/1.1\r\nHost: x\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Forwarded(chunked5(&[]))],
        ),
        (
            "Connection names Host",
            b("GET / HTTP/1.1\r\nConnection: host\r\nHost: x\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        (
            "Connection names a field",
            b("GET / HTTP/1.1\r\nHost: x\r\nConnection: x-secret\r\nX-Secret: 1\r\nX-Kept: 2\r\n\r\n"),
            vec![Forwarded(fwd("GET /", Some("x"), &["x-kept: 2"], "", ""))],
        ),
        (
            "Connection names X-Forwarded-For",
            b("GET / HTTP/1.1\r\nHost: x\r\nConnection: x-forwarded-for\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        (
            "Connection names Cookie (RFC 9110: it goes)",
            b("GET / HTTP/1.1\r\nHost: x\r\nConnection: cookie\r\nCookie: a=1\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        (
            "hop-by-hop fields go",
            b("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, te\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nUpgrade: websocket\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        (
            "untrusted X-Forwarded-* are replaced",
            b("GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Proto: https\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        (
            "a close in one Connection line wins over a keep-alive in another (found by fuzzing)",
            b("GET /1 HTTP/1.0\r\nConnection: close\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n"),
            vec![Forwarded(fwd("GET /1", None, &[], "", ""))],
        ),
        (
            "Connection: close ends the connection after the answer",
            b("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            vec![Forwarded(get_x("/"))],
        ),
        // Pipelining (RFC 9112 §9.3.2).
        (
            "two GETs in one write",
            b("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Forwarded(get_x("/1")), Forwarded(get_x("/2"))],
        ),
        (
            "a POST with a length, then a GET",
            b("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Forwarded(post5(&[])), Forwarded(get_x("/2"))],
        ),
        (
            "a chunked POST, then a GET",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n"),
            vec![Forwarded(chunked5(&[])), Forwarded(get_x("/2"))],
        ),
        (
            "a chunked POST, then a request that smuggles a length",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            vec![Forwarded(chunked5(&[])), Refused(400)],
        ),
        (
            "a GET, then garbage",
            b("GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"),
            vec![Forwarded(get_x("/1")), Refused(400)],
        ),
        (
            "a misspelt Transfer-Encoding is just a field; its body is the next request",
            b("POST / HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Forwarded(fwd("POST /", Some("x"), &["transfer_encoding: chunked"], "", "")), Refused(400)],
        ),
        // Expect (RFC 9110 §10.1.1): the 100 is Baton's.
        (
            "100-continue with a length",
            b("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"),
            vec![Forwarded(post5(&[]))],
        ),
        (
            "100-continue with chunks",
            b("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            vec![Forwarded(chunked5(&[]))],
        ),
        // Limits.
        (
            "a head past max_header_bytes",
            format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024)).into_bytes(),
            vec![Refused(431)],
        ),
        (
            "more fields than max_headers",
            format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: 1\r\n".repeat(120)).into_bytes(),
            vec![Refused(431)],
        ),
    ]
}

#[test]
pub(crate) fn request_framing_cases() {
    let suite = Suite::start();
    let cases = request_cases();
    assert!(cases.len() >= 60, "{} request cases", cases.len());
    println!("{} request cases", cases.len());
    for (name, send, outcomes) in cases {
        suite.run(name, &send, &outcomes);
    }
}

/// (name, the request's method, the instance's answer, whether the
/// instance closes after it, what the client gets: `None` for no whole
/// answer).
pub(crate) type AnswerCase = (&'static str, &'static str, Vec<u8>, bool, Option<Vec<u8>>);

/// h2 (RFC 9113 §8.3.1, §8.2.3): an `:authority` and a `host` that differ
/// make a malformed request (nginx: 400); cookie crumbs reach the instance
/// as one Cookie line; the instance gets `:authority` as its Host.
#[test]
pub(crate) fn h2_authority_and_cookie_crumbs() {
    use http_body_util::{BodyExt, Empty};

    let suite = Suite::start();
    let before = suite.recorded().len();
    let empty = || Empty::<bytes::Bytes>::new().boxed_unsync();
    let answers = h2_exchange(
        suite.d.port,
        vec![
            http::Request::get("http://a.example/differ")
                .header("host", "b.example")
                .body(empty())
                .unwrap(),
            http::Request::get("http://a.example/crumbs")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(empty())
                .unwrap(),
        ],
    );
    assert_eq!(answers[0].0, 400, "{:?}", answers[0].1);
    assert_eq!(answers[1].0, 200, "{:?}", answers[1].1);
    let seen = suite.recorded()[before..].to_vec();
    assert_eq!(
        show(&normalize(&seen)),
        show(&fwd(
            "GET /crumbs",
            Some("a.example"),
            &["cookie: a=1; b=2"],
            "",
            ""
        )),
        "only the second request reaches the backend, with one Cookie line"
    );
}
