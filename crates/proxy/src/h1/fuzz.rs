//! Fuzz targets for the HTTP/1 parsers at the edge, run by `tests/fuzz.rs`
//! (a bounded mutation run on every `cargo test`, longer runs from
//! `fuzz/run.sh`, and the checked-in corpus replayed). Each target takes
//! any bytes and panics when a property fails.
//!
//! - [`request_head`]: Baton's own request head parser and encoder. What
//!   it forwards parses back to the same request, with exactly one Host,
//!   Baton's own framing, and no hop-by-hop field.
//! - [`answer`]: the answer head parser and body decoder (chunked
//!   included). The decoded body does not depend on how the bytes were
//!   split into reads, and whatever Baton accepts, hyper's client reads the
//!   same way: same status, same body.
//! - [`framing`]: the framing decision on arbitrary field lists. A request
//!   Baton accepts, re-encoded, is decided the same way again, and no two
//!   framings can be read out of it.
//! - [`differential`]: a byte stream sent by a client, served by Baton's
//!   own HTTP/1.1 server and by hyper's (with the checks Baton applies to
//!   what hyper parses). Both find the same requests, each with the same
//!   body length, and both refuse at the same point.
//! - [`normalise`]: the path normalisation every request goes through
//!   before it is routed, against RFC 3986 §5.2.4's own algorithm written
//!   out step by step: the same path, or the same refusal; what comes out
//!   is normal already, and the query is untouched.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::decode::{Decoding, Step};
use super::response;
use super::server::{parse_request, Next, Parsed};
use crate::config::ProxyConfig;
use crate::framing::{check_request, BodyFraming, Protocol};
use crate::headers::{is_hop_by_hop, Fields};
use crate::Proxy;

/// The default proxy, for the parsers' limits and rewriting.
/// A proxy with one app, which answers every host: each request parsed
/// is encoded for it.
fn proxy() -> Arc<Proxy> {
    let proxy = Proxy::new(ProxyConfig::default(), Default::default());
    let app = Arc::new(crate::sites::Site {
        app: "fuzzed".into(),
        router: Arc::new(crate::router::Router::new(Default::default(), 1)),
        prefix: "".into(),
        strip_prefix: false,
        hold_timeout: std::time::Duration::from_secs(1),
        retries: 0,
        assets: Arc::default(),
        access: None,
    });
    (proxy.sites).publish(crate::sites::SiteTable::new(Vec::new(), Some(app)));
    proxy
}

fn client() -> HeaderValue {
    HeaderValue::from_static("127.0.0.1")
}

/// A request head taken apart: method, target, fields, length.
type Reparsed = (String, String, Vec<(Vec<u8>, Vec<u8>)>, usize);

/// Parses `raw` as one request head with httparse's defaults.
fn reparse(raw: &[u8]) -> Reparsed {
    let mut slots = vec![httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("Baton wrote a head that does not parse ({other:?}): {raw:?}"),
    };
    let fields = req
        .headers
        .iter()
        .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
        .collect();
    (
        req.method.unwrap_or_default().to_string(),
        req.path.unwrap_or_default().to_string(),
        fields,
        len,
    )
}

struct Pairs(Vec<(Vec<u8>, Vec<u8>)>);

impl Fields for Pairs {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_slice(), v.as_slice()))
    }
}

/// Checks what Baton forwards for a head it accepted: one request head,
/// nothing after it, exactly one Host, the framing Baton chose and no
/// hop-by-hop field.
fn check_forwarded(bytes: &[u8], body: BodyFraming) {
    let (method, target, fields, len) = reparse(bytes);
    assert_eq!(len, bytes.len(), "one head, nothing after it");
    assert!(target.starts_with('/'), "origin form: {target}");
    for (name, _) in &fields {
        // Transfer-Encoding is the framing Baton writes.
        let framing =
            body == BodyFraming::Chunked && name.eq_ignore_ascii_case(b"transfer-encoding");
        assert!(
            framing || !is_hop_by_hop(name),
            "a hop-by-hop field went on: {}",
            String::from_utf8_lossy(bytes)
        );
    }
    let fields = Pairs(fields);
    let hosts = fields
        .pairs()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
        .count();
    assert_eq!(hosts, 1, "one Host: {bytes:?}");
    let facts = check_request(Protocol::Http11, method.as_bytes(), None, &fields)
        .unwrap_or_else(|r| panic!("Baton forwards what it would refuse ({r:?}): {bytes:?}"));
    assert_eq!(facts.body, body, "{bytes:?}");
}

/// Target: Baton's own request head parser and encoder.
pub fn request_head(data: &[u8]) {
    let proxy = proxy();
    match parse_request(data, &proxy, &client(), crate::Proto::Http) {
        Parsed::Complete(len, request) => {
            assert!(len <= data.len());
            // What Baton reads from the client is what it says it sends.
            let head = request
                .head()
                .expect("the fuzzed proxy has an app for every host");
            let reads = match head.framing {
                BodyFraming::None | BodyFraming::Length(0) => Decoding::Done,
                BodyFraming::Length(n) => Decoding::Length(n),
                BodyFraming::Chunked => Decoding::Chunked(super::decode::Chunk::Size),
            };
            assert_eq!(request.body, reads);
            check_forwarded(&head.bytes, head.framing);
        }
        Parsed::Partial | Parsed::Other(_) => {}
    }
}

/// Target: the framing decision. `data` is read as field lines
/// (`name:value`, one per line) after a request line.
pub fn framing(data: &[u8]) {
    let fields: Vec<(Vec<u8>, Vec<u8>)> = data
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.iter().position(|&b| b == b':')?;
            Some((line[..at].to_vec(), line[at + 1..].to_vec()))
        })
        .collect();
    let pairs = Pairs(fields);
    for protocol in [Protocol::Http10, Protocol::Http11, Protocol::Http2] {
        let Ok(facts) = check_request(protocol, b"POST", None, &pairs) else {
            continue;
        };
        // Re-encoded as Baton writes it: Host and the framing are the
        // decision's, so deciding again gives the same answer.
        let mut again = vec![(b"host".to_vec(), facts.host.unwrap_or_default().to_vec())];
        again.extend(
            pairs
                .0
                .iter()
                .filter(|(n, _)| !is_hop_by_hop(n) && !crate::headers::is_written_by_baton(n))
                .cloned(),
        );
        match facts.body {
            BodyFraming::None => {}
            BodyFraming::Length(n) => {
                again.push((b"content-length".to_vec(), n.to_string().into_bytes()))
            }
            BodyFraming::Chunked => {
                again.push((b"transfer-encoding".to_vec(), b"chunked".to_vec()))
            }
        }
        let again = Pairs(again);
        let second = check_request(Protocol::Http11, b"POST", None, &again)
            .unwrap_or_else(|r| panic!("{protocol:?}: re-encoded and refused: {r:?}"));
        assert_eq!(second.body, facts.body, "{protocol:?}");
        assert_eq!(second.host, Some(facts.host.unwrap_or_default()));
    }
}

/// What Baton's answer parser made of an instance's bytes.
#[derive(Debug, PartialEq)]
enum Read {
    /// The head was refused.
    Refused,
    /// The head and a body that ended (or the bytes ran out first).
    Answer {
        status: u16,
        body: Vec<u8>,
        complete: bool,
    },
}

/// Runs the answer parser over `data` given in reads of `splits` sizes.
fn read_answer(data: &[u8], request_was_head: bool, mut split: impl FnMut() -> usize) -> Read {
    let mut buf = BytesMut::new();
    let mut rest = data;
    let mut feed = |buf: &mut BytesMut| {
        if rest.is_empty() {
            return false;
        }
        let n = split().clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        true
    };
    let head = loop {
        match response::parse_head(&mut buf, request_was_head) {
            Ok(Some(head)) if head.is_interim() => continue,
            Ok(Some(head)) => break head,
            Ok(None) if feed(&mut buf) => {}
            Ok(None) => {
                return Read::Answer {
                    status: 0,
                    body: Vec::new(),
                    complete: false,
                }
            }
            Err(_) => return Read::Refused,
        }
    };
    let status = head.status().as_u16();
    let mut decoding = head.framing;
    let mut body = Vec::new();
    loop {
        match decoding.step(&mut buf) {
            Ok(Step::Frame(frame)) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            Ok(Step::End) => {
                return Read::Answer {
                    status,
                    body,
                    complete: true,
                }
            }
            Ok(Step::NeedMore) if feed(&mut buf) => {}
            Ok(Step::NeedMore) => {
                // The close ends a body that runs until it.
                let complete = decoding == Decoding::UntilClose;
                return Read::Answer {
                    status,
                    body,
                    complete,
                };
            }
            Err(_) => {
                return Read::Answer {
                    status,
                    body,
                    complete: false,
                }
            }
        }
    }
}

/// Target: the answer head parser and body decoder, against hyper's
/// client.
pub fn answer(data: &[u8], rt: &tokio::runtime::Runtime) {
    let request_was_head = data.first().is_some_and(|b| b & 1 == 1);
    let data = data.get(1..).unwrap_or_default();
    let whole = read_answer(data, request_was_head, || usize::MAX);
    let mut sizes = data.iter().map(|b| usize::from(*b % 7) + 1).cycle();
    let split = read_answer(data, request_was_head, || sizes.next().unwrap_or(1));
    let bytewise = read_answer(data, request_was_head, || 1);
    assert_eq!(whole, split, "reads split differently give another answer");
    assert_eq!(whole, bytewise, "reads of one byte give another answer");
    let Read::Answer {
        status,
        body,
        complete: true,
    } = whole
    else {
        return;
    };
    // What hyper's client reads from the same bytes.
    let theirs = rt.block_on(async {
        let io = Scripted::answering(Bytes::copy_from_slice(data));
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let method = if request_was_head {
            http::Method::HEAD
        } else {
            http::Method::GET
        };
        let request = http::Request::builder()
            .method(method)
            .uri("/")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = send.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, body))
    });
    // Baton is stricter than hyper in places (a repeated Content-Length,
    // say), never looser: what Baton reads, hyper reads the same way.
    let Some((their_status, their_body)) = theirs else {
        panic!(
            "Baton read an answer ({status}, {} body bytes) that hyper refuses",
            body.len()
        );
    };
    assert_eq!(status, their_status);
    assert_eq!(body, their_body.to_vec(), "the body differs from hyper's");
}

/// What a server made of a client's bytes: each request's method, target
/// and body length, then whether it refused what came next.
#[derive(Debug, Default, PartialEq, Clone)]
pub struct Served {
    /// Method, target (as forwarded: origin form) and body length.
    pub requests: Vec<(String, String, u64)>,
    /// The server refused a request (or its body) and closed.
    pub refused: bool,
}

/// Baton's own server over `data`, as `server::serve` goes through it:
/// requests one after another until one is refused, the connection is
/// not kept, an upgrade or h2c hands it to hyper, or the bytes run out.
fn served_by_baton(data: &[u8]) -> Served {
    let proxy = proxy();
    let mut served = Served::default();
    let mut rest = BytesMut::from(data);
    loop {
        let (len, request) = match parse_request(&rest, &proxy, &client(), crate::Proto::Http) {
            Parsed::Complete(len, request) => (len, request),
            Parsed::Other(Next::Reject(_)) => {
                served.refused = true;
                return served;
            }
            Parsed::Partial | Parsed::Other(Next::Handoff | Next::Close | Next::Request(_)) => {
                return served
            }
        };
        let line = request_line(&request.head().expect("an app for every host").bytes);
        let _ = rest.split_to(len);
        let mut decoding = request.body;
        let mut length = 0u64;
        loop {
            match decoding.step(&mut rest) {
                Ok(Step::Frame(frame)) => {
                    length += frame.into_data().map_or(0, |d| d.len() as u64);
                }
                Ok(Step::End) => break,
                Ok(Step::NeedMore) => return served,
                Err(_) => {
                    served.refused = true;
                    return served;
                }
            }
        }
        served.requests.push((line.0, line.1, length));
        if !request.keep_alive {
            return served;
        }
    }
}

/// The method and origin-form target of a head.
fn request_line(head: &[u8]) -> (String, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let target = parts.next().unwrap_or_default();
    let target = crate::framing::split_absolute(target).map_or(target, |(_, path)| path);
    let target = if target.is_empty() { b"/" } else { target };
    (method, String::from_utf8_lossy(target).into_owned())
}

/// hyper's server over `data`, with Baton's checks on each request
/// (`Proxy::handle` makes the same ones).
fn served_by_hyper(data: &[u8], rt: &tokio::runtime::Runtime) -> Served {
    let served = Arc::new(Mutex::new(Served::default()));
    let log = served.clone();
    let outcome = served.clone();
    rt.block_on(async move {
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let log = log.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let method = parts.method.to_string();
                    let refused = crate::prepare(&mut parts, None).is_err();
                    let mut response = http::Response::new(Full::new(Bytes::new()));
                    if refused {
                        log.lock().expect("log").refused = true;
                        *response.status_mut() = http::StatusCode::BAD_REQUEST;
                        response
                            .headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                        return Ok::<_, Infallible>(response);
                    }
                    let target = parts
                        .uri
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string();
                    match body.collect().await {
                        Ok(body) => {
                            let length = body.to_bytes().len() as u64;
                            log.lock()
                                .expect("log")
                                .requests
                                .push((method, target, length));
                        }
                        // The bytes ended inside the body: no verdict.
                        Err(e) if e.is_incomplete_message() || ended_early(&e) => {}
                        Err(_) => log.lock().expect("log").refused = true,
                    }
                    Ok(response)
                }
            });
        let io = Scripted::new(Bytes::copy_from_slice(data));
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The bytes end where the client stops sending, not where it
        // leaves: what it sent is served.
        builder.half_close(true);
        builder.max_buf_size(ProxyConfig::default().max_header_bytes.max(8192));
        if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
            if e.is_parse() || e.is_parse_too_large() || e.is_parse_status() {
                // A head hyper could not parse: it answers 400 or 431.
                outcome.lock().expect("served").refused = true;
            }
        }
    });
    let served = served.lock().expect("served").clone();
    served
}

/// Whether hyper's body error is the input ending before the body did.
fn ended_early(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::UnexpectedEof)
        {
            return true;
        }
        source = inner.source();
    }
    false
}

/// Target: Baton's own HTTP/1.1 server and hyper's agree on a client's
/// byte stream.
pub fn differential(data: &[u8], rt: &tokio::runtime::Runtime) {
    // h2c's preface is hyper's alone.
    if data.starts_with(b"PRI ") {
        return;
    }
    let ours = served_by_baton(data);
    let theirs = served_by_hyper(data, rt);
    // An upgrade ends what Baton's own server serves; hyper goes on with
    // it (and `Proxy::handle` checks it). The requests before it must
    // agree.
    if !ours.refused && upgrade_ahead(data, &ours) {
        assert!(
            theirs.requests.starts_with(&ours.requests),
            "Baton's own server and hyper disagree before an upgrade: {ours:?} {theirs:?}"
        );
        return;
    }
    if ours.refused {
        // Baton refuses more than hyper does (a repeated Content-Length,
        // Transfer-Encoding beside Content-Length, as nginx does) and then
        // closes: what came before must agree, and nothing after counts.
        assert!(
            theirs.requests.starts_with(&ours.requests),
            "Baton's own server and hyper disagree before Baton refused: {ours:?} {theirs:?}"
        );
        return;
    }
    assert_eq!(ours, theirs, "Baton's own server and hyper disagree");
}

/// Whether Baton's own server stopped because the next request is an
/// upgrade (or h2c), which it leaves to hyper.
fn upgrade_ahead(data: &[u8], ours: &Served) -> bool {
    let proxy = proxy();
    let mut rest = BytesMut::from(data);
    for _ in 0..=ours.requests.len() {
        match parse_request(&rest, &proxy, &client(), crate::Proto::Http) {
            Parsed::Complete(len, request) => {
                let _ = rest.split_to(len);
                let mut decoding = request.body;
                while let Ok(Step::Frame(_)) = decoding.step(&mut rest) {}
            }
            Parsed::Other(Next::Handoff) => return true,
            _ => return false,
        }
    }
    false
}

/// An in-memory connection: reads give `input` then the end; writes are
/// taken and dropped. As a client's peer (`speaks_first` false) it gives
/// nothing before the first write: a client connection that reads an
/// answer before it sent a request drops it.
struct Scripted {
    input: Bytes,
    speaks_first: bool,
    waiting: Option<std::task::Waker>,
}

impl Scripted {
    fn new(input: Bytes) -> Scripted {
        Scripted {
            input,
            speaks_first: true,
            waiting: None,
        }
    }

    fn answering(input: Bytes) -> Scripted {
        Scripted {
            speaks_first: false,
            ..Scripted::new(input)
        }
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.speaks_first {
            self.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = self.input.len().min(buf.remaining());
        buf.put_slice(&self.input.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.speaks_first = true;
        if let Some(waker) = self.waiting.take() {
            waker.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Target: [`crate::normalise::normalise`] on any bytes, as the
/// target of a request.
pub fn normalise(data: &[u8]) {
    use crate::normalise::{normalise, BadPath};
    let end = data.iter().position(|&b| b == b'?').unwrap_or(data.len());
    let (path, query) = data.split_at(end);
    let got = normalise(data);
    let Some(decoded) = decode_unreserved(path) else {
        // Refused (400) either way; which reason comes first depends on
        // whether a `..` above the root comes before the bad escape.
        assert!(got.is_err(), "{data:?}: a bad escape was accepted");
        return;
    };
    let merged = merge_slashes(&decoded);
    if climbs_above_root(&merged) {
        assert_eq!(got.err(), Some(BadPath::AboveRoot), "{data:?}");
        return;
    }
    let mut want = remove_dot_segments(&merged);
    if want.is_empty() {
        want.push(b'/');
    }
    want.extend_from_slice(query);
    let got = got.unwrap_or_else(|e| panic!("{data:?}: refused ({e:?}), expected {want:?}"));
    assert_eq!(&*got, &want[..], "{data:?}");
    // Normal already: a second pass changes nothing.
    assert!(
        matches!(
            crate::normalise::normalise(&got),
            Ok(std::borrow::Cow::Borrowed(_))
        ),
        "{data:?} gave {got:?}, which is not normal"
    );
}

/// `path` with escapes of unreserved characters decoded and the others'
/// digits in upper case; none when a `%` lacks two hex digits. A leading
/// "/" is added when missing (an absolute URI's empty path).
fn decode_unreserved(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if path.first() != Some(&b'/') {
        out.push(b'/');
    }
    let mut i = 0;
    while i < path.len() {
        if path[i] != b'%' {
            out.push(path[i]);
            i += 1;
            continue;
        }
        let hex = std::str::from_utf8(path.get(i + 1..i + 3)?).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let byte = u8::from_str_radix(hex, 16).ok()?;
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte);
        } else {
            out.push(b'%');
            out.extend(hex.bytes().map(|b| b.to_ascii_uppercase()));
        }
        i += 3;
    }
    Some(out)
}

/// Runs of "/" made one (nginx's `merge_slashes`).
fn merge_slashes(path: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    for &b in path {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

/// Whether a `..` segment comes when no segment is left to remove.
fn climbs_above_root(path: &[u8]) -> bool {
    let mut depth = 0usize;
    for segment in path.split(|&b| b == b'/').skip(1) {
        match segment {
            b".." if depth == 0 => return true,
            b".." => depth -= 1,
            b"." | b"" => {}
            _ => depth += 1,
        }
    }
    false
}

/// RFC 3986 §5.2.4, rule by rule, on an absolute path.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut input = path.to_vec();
    let mut output: Vec<u8> = Vec::new();
    while !input.is_empty() {
        // A: "../" and "./" go; B: "/./" becomes "/" (its "/." goes).
        if input.starts_with(b"../") {
            input.drain(..3);
        } else if input.starts_with(b"./") || input.starts_with(b"/./") {
            input.drain(..2);
        } else if input == b"/." {
            input = b"/".to_vec();
        } else if input.starts_with(b"/../") || input == b"/.." {
            // C: the last output segment goes with it.
            input.drain(..3);
            if input.is_empty() || input[0] != b'/' {
                input.insert(0, b'/');
            }
            let last = output.iter().rposition(|&b| b == b'/').unwrap_or(0);
            output.truncate(last);
        } else if input == b"." || input == b".." {
            // D
            input.clear();
        } else {
            // E: the first segment moves to the output.
            let start = usize::from(input[0] == b'/');
            let end = input[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(input.len(), |p| p + start);
            output.extend(input.drain(..end));
        }
    }
    output
}
