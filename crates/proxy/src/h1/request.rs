//! Writing a request to an instance: the head, then the body in its framing
//! (as is when its length is known, chunked when not).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, HOST};
use http::{request, StatusCode};
use http_body::Body;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::write_field;
use crate::body::TakeOnPoll;
use crate::framing::{is_forwardable_trailer, BodyFraming, RequestFacts};
use crate::headers::{Fields, Rewrite};
use crate::split::{self, Ask};

/// A request head as written to an instance: encoded once, for every
/// attempt.
pub(crate) struct RequestHead {
    pub(super) bytes: Vec<u8>,
    /// The framing Baton wrote (chunked: the body's length is unknown).
    pub(super) framing: BodyFraming,
    /// A HEAD request: its answer has no body whatever its headers say.
    pub(super) is_head: bool,
    /// Its method is idempotent (RFC 9110 §9.2.2): it may be sent again
    /// after it reached an instance. Any other goes again only when no
    /// byte of it did.
    pub(crate) idempotent: bool,
    /// The release the client's page came from (`x-deployment-id`, or
    /// `?dpl=`): its instances answer while they drain.
    pub(crate) deployment: Option<Box<[u8]>>,
    /// Its side of a canary, as its `x-baton-canary` and cookie say.
    pub(crate) canary: Ask,
}

impl RequestHead {
    /// Encodes `parts` with its headers as `rewrite` has them, and the
    /// framing Baton chose for its body. It takes the parts and drops
    /// them: the client's request holds slices of hyper's read buffer,
    /// which hyper can then reuse for the next request instead of
    /// allocating a new one while this one is in flight.
    pub(crate) fn encode(
        parts: request::Parts,
        rewrite: &Rewrite<'_>,
        framing: BodyFraming,
    ) -> RequestHead {
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = parts.headers.get(HOST).map(HeaderValue::as_bytes);
        encode_head(
            parts.method.as_str().as_bytes(),
            target.as_bytes(),
            host,
            &parts.headers,
            rewrite,
            framing,
        )
    }

    /// Encodes a request from the raw fields of a head Baton parsed itself
    /// (see `server`), with no header map in between.
    pub(crate) fn encode_raw(
        method: &[u8],
        target: &[u8],
        facts: &RequestFacts<'_>,
        fields: &[httparse::Header<'_>],
        rewrite: &Rewrite<'_>,
    ) -> RequestHead {
        encode_head(method, target, facts.host, fields, rewrite, facts.body)
    }
}

/// The request line, Host, the rewritten headers and the framing field.
///
/// Host and the framing are written here, from the decision
/// `framing::check_request` made, and never copied from the client's
/// lines: what the instance parses is what Baton parsed.
///
/// `Expect: 100-continue` is the client's business with Baton, which sends
/// the 100 itself (hyper when the body is first read, Baton's own server
/// before it forwards), so it is not passed on.
fn encode_head(
    method: &[u8],
    target: &[u8],
    host: Option<&[u8]>,
    fields: &(impl Fields + ?Sized),
    rewrite: &Rewrite<'_>,
    framing: BodyFraming,
) -> RequestHead {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method);
    out.push(b' ');
    // The origin form starts with "/" (RFC 9112 §3.2.1); an absolute
    // target with no path, or a query right after its authority, has none.
    if !target.starts_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // HTTP/1.1 needs a Host line; a request with no host (HTTP/1.0, or h2
    // without `:authority`) gets an empty one (RFC 9112 §3.2).
    write_field(&mut out, b"host", host.unwrap_or_default());
    let host = host.filter(|h| !h.is_empty());
    let mut deployment = crate::http1::query_value(target, b"dpl").map(Box::from);
    let (mut forced, mut cookie) = (Ask::Fresh, Ask::Fresh);
    rewrite.for_each(fields, host, |name, value| {
        if name.eq_ignore_ascii_case(b"expect") {
            return;
        }
        if name.eq_ignore_ascii_case(b"x-deployment-id") {
            deployment = Some(value.into());
        } else if name.eq_ignore_ascii_case(split::HEADER.as_bytes()) {
            forced = Ask::of(Some(value), std::iter::empty());
        } else if name.eq_ignore_ascii_case(b"cookie") && cookie == Ask::Fresh {
            cookie = Ask::of(None, std::iter::once(value));
        }
        write_field(&mut out, name, value);
    });
    match framing {
        BodyFraming::None => {}
        BodyFraming::Length(n) => write_field(
            &mut out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        BodyFraming::Chunked => write_field(&mut out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
    RequestHead {
        bytes: out,
        framing,
        is_head: method == b"HEAD",
        idempotent: crate::is_idempotent(method),
        deployment,
        canary: if forced == Ask::Fresh { cookie } else { forced },
    }
}

/// Why an upload stopped short.
pub(super) enum Stopped {
    /// The instance stopped reading. It may still answer (an early 413);
    /// its connection is not reused.
    ByInstance,
    /// The client's body failed: the client closed in the middle of it,
    /// sent a malformed one, stalled past `body_timeout` (408) or went past
    /// `max_body_size` (413). The request can never be complete.
    ByClient(String, StatusCode),
}

/// The status for a client's body that failed with `e`.
fn client_body_status(e: &(dyn std::error::Error + 'static)) -> StatusCode {
    // An h2 body without a length, past max_body_size (`Proxy::handle`
    // wraps it in http-body-util's `Limited`).
    if e.is::<http_body_util::LengthLimitError>() {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    match e.downcast_ref::<std::io::Error>().map(std::io::Error::kind) {
        Some(std::io::ErrorKind::TimedOut) => StatusCode::REQUEST_TIMEOUT,
        Some(std::io::ErrorKind::FileTooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Most bytes of a body written in one turn, before the exchange looks
/// for an answer from the instance.
const TURN_BYTES: u64 = 256 * 1024;

/// A request body on its way to the instance.
pub(super) struct Upload {
    body: TakeOnPoll,
    chunked: bool,
    /// Bytes framed and not yet written.
    queue: VecDeque<Bytes>,
    ended: bool,
    /// Bytes written so far, framing included.
    sent: u64,
}

impl Upload {
    pub(super) fn new(body: TakeOnPoll, chunked: bool) -> Upload {
        Upload {
            body,
            chunked,
            queue: VecDeque::new(),
            ended: false,
            sent: 0,
        }
    }

    /// Bytes written so far: progress, for the silence an upload allows.
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Writes as much of the body as the socket and the client allow, up
    /// to `TURN_BYTES` a turn; ready once all of it is written.
    pub(super) fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Stopped>> {
        let turn_ends = self.sent + TURN_BYTES;
        loop {
            if self.sent >= turn_ends {
                // A client and an instance that both keep up would keep
                // this loop going to the body's end, and the caller would
                // read the instance's early answer (a 413) only then, after
                // the whole upload. The caller polls again at once.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 8];
                let count = self
                    .queue
                    .iter()
                    .zip(slices.iter_mut())
                    .map(|(bytes, slice)| *slice = IoSlice::new(bytes))
                    .count();
                let written = match ready!(
                    Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
                ) {
                    Ok(0) | Err(_) => return Poll::Ready(Err(Stopped::ByInstance)),
                    Ok(written) => written,
                };
                self.consume(written);
                continue;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => {
                    self.ended = true;
                    if self.chunked {
                        self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                    }
                }
                Some(Err(e)) => {
                    let status = client_body_status(&*e);
                    return Poll::Ready(Err(Stopped::ByClient(e.to_string(), status)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => self.queue.push_back(data),
                    Err(frame) => {
                        // Trailers end a chunked body; a sized body has
                        // nowhere to put them.
                        if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                            let mut last = b"0\r\n".to_vec();
                            for (name, value) in trailers.pairs() {
                                if is_forwardable_trailer(name) {
                                    write_field(&mut last, name, value);
                                }
                            }
                            last.extend_from_slice(b"\r\n");
                            self.queue.push_back(Bytes::from(last));
                            self.ended = true;
                        }
                    }
                },
            }
        }
    }

    /// Drives the upload in `slot`, if any: the slot empties once it is
    /// written in full or has stopped short, and says why it stopped.
    pub(super) fn advance(
        slot: &mut Option<Box<Upload>>,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Option<Stopped> {
        let upload = slot.as_mut()?;
        match upload.poll_send(stream, cx) {
            Poll::Pending => None,
            Poll::Ready(done) => {
                *slot = None;
                done.err()
            }
        }
    }

    fn consume(&mut self, mut written: usize) {
        self.sent += written as u64;
        while written > 0 {
            let front = self.queue.front_mut().expect("written bytes were queued");
            if front.len() <= written {
                written -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}
