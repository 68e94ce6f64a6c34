//! Reading an instance's response: the head as spans of the bytes it came
//! in (no field copied), then the body decoded from its framing (a length,
//! chunked, or until the instance closes).

use std::mem::MaybeUninit;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::decode::{Chunk, Decoding, Step};
use super::request::{Stopped, Upload};
use super::{write_field, write_status_line, Conn, ExchangeError, Silence};
use crate::body::BoxError;
use crate::framing::{self, BodyFraming};
use crate::headers::{connection_lists, connection_options, is_hop_by_hop, is_written_by_baton};
use crate::upstream::Upstream;

/// Most headers in a response head.
const MAX_HEADERS: usize = 128;
/// Largest response head, and largest chunk-size line or trailer section.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// A parsed response head and what it says about the body. The fields
/// stay as the instance sent them, as spans of the head's bytes: the
/// HTTP/1.1 server writes them back out as they are, and only a response
/// that goes out through hyper needs a header map.
pub(crate) struct Head {
    status: StatusCode,
    bytes: Bytes,
    /// The fields forwarded to the client: hop-by-hop ones and
    /// Content-Length left out.
    fields: Vec<Field>,
    /// The Content-Length the client gets (see `Head::content_length`).
    length: Option<u64>,
    pub(super) framing: Decoding,
    keep_alive: bool,
    event_stream: bool,
}

/// One field: where its name and value are in the head's bytes.
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// An instance's answer: the head, and the body still on its connection.
pub(crate) struct Answer {
    /// The status and fields.
    pub head: Head,
    /// The body, read from the instance as it is polled.
    pub body: ResponseBody,
}

fn broken(why: impl Into<String>) -> ExchangeError {
    ExchangeError::Broken(why.into())
}

/// Parses a response head at the start of `buf` and consumes it; `Ok(None)`
/// while more bytes are needed. Hop-by-hop headers are left out of it.
pub(super) fn parse_head(
    buf: &mut BytesMut,
    request_was_head: bool,
) -> Result<Option<Head>, ExchangeError> {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(broken("response head too large")),
        Err(e) => return Err(broken(format!("invalid response head: {e}"))),
    };
    let code = parsed.code.expect("a complete head has a status");
    let status = StatusCode::from_u16(code).map_err(|_| broken("invalid status code"))?;
    let fields: &[httparse::Header] = parsed.headers;
    let facts = framing::check_answer(parsed.version == Some(0), code, request_was_head, fields)
        .map_err(|e| broken(e.to_string()))?;
    let connection = connection_options(fields, false);
    // TE beside CL: the connection is not reused (RFC 9112 §6.3).
    let mut keep_alive = !facts.suspicious && connection.persists(parsed.version == Some(0));
    let mut event_stream = false;
    let start = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let at = s.as_ptr() as usize - start;
        at..at + s.len()
    };
    let mut forwarded = Vec::with_capacity(fields.len());
    for h in fields {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-type") {
            event_stream |=
                (h.value.get(..17)).is_some_and(|v| v.eq_ignore_ascii_case(b"text/event-stream"));
        }
        // Content-Length is written by the side that answers the client,
        // from the framing decided here (see `framing`).
        if !is_hop_by_hop(name) && !name.eq_ignore_ascii_case(b"content-length") {
            forwarded.push(Field {
                name: span(name),
                value: span(h.value),
            });
        }
    }
    let framing = match facts.body {
        _ if facts.until_close => Decoding::UntilClose,
        BodyFraming::None | BodyFraming::Length(0) => Decoding::Done,
        BodyFraming::Length(n) => Decoding::Length(n),
        BodyFraming::Chunked => Decoding::Chunked(Chunk::Size),
    };
    if framing == Decoding::UntilClose {
        keep_alive = false;
    }
    // A late filter, rare: the fields the Connection header names (before
    // it or after it). Framing fields and Host are not among them.
    if connection.names_fields {
        forwarded.retain(|f| {
            let name = &buf[f.name.clone()];
            !connection_lists(fields, name) || is_written_by_baton(name)
        });
    }
    // 1xx and 204 carry no Content-Length (RFC 9110 §8.6); other answers
    // keep the length they gave, which describes the body even where none
    // follows (an answer to HEAD, a 304).
    let length = match code {
        100..=199 | 204 => None,
        _ => facts.length,
    };
    Ok(Some(Head {
        status,
        bytes: buf.split_to(len).freeze(),
        fields: forwarded,
        length,
        framing,
        keep_alive,
        event_stream,
    }))
}

impl Head {
    /// The status code.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// A 1xx other than 101: a provisional answer the final one follows.
    pub(super) fn is_interim(&self) -> bool {
        self.status.is_informational() && self.status != StatusCode::SWITCHING_PROTOCOLS
    }

    /// Whether this is an event stream (SSE), which lasts as long as it
    /// likes.
    pub(crate) fn is_event_stream(&self) -> bool {
        self.event_stream
    }

    /// Whether the fields delimit the body for the client: a length, or no
    /// body at all. Otherwise (chunked, or until close) the side that
    /// writes to the client frames it.
    pub(crate) fn is_delimited(&self) -> bool {
        matches!(self.framing, Decoding::Length(_) | Decoding::Done)
    }

    /// The Content-Length the client gets: the body's length, or for an
    /// answer without a body (to HEAD, a 304) the one the instance gave.
    /// `None` for a body the writer frames itself (chunked, until close).
    pub(crate) fn content_length(&self) -> Option<u64> {
        match self.framing {
            Decoding::Length(n) => Some(n),
            Decoding::Done => self.length,
            Decoding::Chunked(_) | Decoding::UntilClose => None,
        }
    }

    /// Whether the instance sent a field called `name` (any case).
    pub(crate) fn has_field(&self, name: &[u8]) -> bool {
        self.fields
            .iter()
            .any(|f| self.bytes[f.name.clone()].eq_ignore_ascii_case(name))
    }

    /// Writes the status line and the forwarded fields, as they came, each
    /// line ended by CRLF, then the Content-Length Baton decided; the
    /// caller adds its own fields and the blank line.
    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        write_status_line(out, self.status);
        // Runs of forwarded lines go out as one copy each: the bytes from a
        // name to its value are the instance's own (a colon and optional
        // whitespace between), and a line ended by CRLF joins the next.
        let mut fields = self.fields.iter().peekable();
        while let Some(first) = fields.next() {
            let mut end = first.value.end;
            while let Some(next) =
                fields.next_if(|f| self.bytes.get(end..f.name.start) == Some(b"\r\n"))
            {
                end = next.value.end;
            }
            out.extend_from_slice(&self.bytes[first.name.start..end]);
            out.extend_from_slice(b"\r\n");
        }
        if let Some(n) = self.content_length() {
            // Spelled as Node spells it: a head mostly reads as the app
            // wrote it.
            write_field(
                out,
                b"Content-Length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
    }

    /// The answer, whose body reads on from `conn`.
    pub(super) fn into_answer(
        self,
        conn: Box<Conn>,
        upload: Option<Box<Upload>>,
        upload_failed: bool,
        upstream: Arc<Upstream>,
        read_timeout: Duration,
    ) -> Answer {
        let mut body = ResponseBody {
            conn: Some(conn),
            decoding: self.framing,
            upload,
            // An event stream is quiet between events, for as long as it
            // likes; the client's side notices a client gone.
            read_timeout: (!self.event_stream).then_some(read_timeout),
            silence: Silence::default(),
            // A 101 to a plain request leaves the connection in another
            // protocol: it is never reused.
            reusable: self.keep_alive
                && !upload_failed
                && self.status != StatusCode::SWITCHING_PROTOCOLS,
            upstream,
        };
        if body.decoding == Decoding::Done {
            body.finish();
        }
        Answer { head: self, body }
    }
}

impl Answer {
    /// The answer as a response for hyper's server: the fields go into a
    /// header map, their values as slices of the head, not copies.
    pub(crate) fn into_response(self) -> Response<ResponseBody> {
        let head = self.head;
        let mut headers = HeaderMap::with_capacity(head.fields.len());
        for f in &head.fields {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&head.bytes[f.name.clone()]),
                HeaderValue::from_maybe_shared(head.bytes.slice(f.value.clone())),
            ) {
                headers.append(name, value);
            }
        }
        if let Some(n) = head.content_length() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        let mut response = Response::new(self.body);
        *response.status_mut() = head.status;
        *response.headers_mut() = headers;
        response
    }
}

/// A response body read from the instance's connection as the client side
/// asks for it. The connection goes back to its instance's idle list once
/// the body has ended and the request body has been written in full.
pub(crate) struct ResponseBody {
    // Both boxed: an answer is moved several times on its way to the
    // client, and a box moves as one pointer. The connection's box lives
    // as long as the connection (the idle list keeps it); only requests
    // with a body allocate an upload. 480 fewer instructions per request.
    conn: Option<Box<Conn>>,
    decoding: Decoding,
    upload: Option<Box<Upload>>,
    reusable: bool,
    upstream: Arc<Upstream>,
    /// Longest silence of the instance in the middle of the body.
    read_timeout: Option<Duration>,
    silence: Silence,
}

impl ResponseBody {
    /// The body has ended: the connection goes back for reuse if the
    /// exchange left it clean.
    fn finish(&mut self) {
        self.decoding = Decoding::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.reusable && self.upload.is_none() && conn.buf.is_empty() {
                conn.idle();
                self.upstream.pool.put(conn);
            }
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match Upload::advance(&mut this.upload, &mut conn.stream, cx) {
                None => {}
                // The instance stopped reading: its answer goes on.
                Some(Stopped::ByInstance) => this.reusable = false,
                // The exchange can never complete: the instance's
                // connection closes with the answer cut short.
                Some(Stopped::ByClient(why, status)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(ExchangeError::ClientBody(why, status).into())));
                }
            }
            match this.decoding.step(&mut conn.buf) {
                Ok(Step::Frame(frame)) => {
                    if this.decoding == Decoding::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            let conn = this.conn.as_mut().expect("checked above");
            match conn.poll_read_more(cx) {
                Poll::Pending => {
                    if let Some(limit) = this.read_timeout {
                        if this.silence.expired(limit, cx) {
                            this.conn = None;
                            return Poll::Ready(Some(Err(ExchangeError::TimedOut(format!(
                                "the instance sent nothing for {} in the middle of a body",
                                humantime::format_duration(limit)
                            ))
                            .into())));
                        }
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) if this.decoding == Decoding::UntilClose => {
                    this.conn = None;
                    this.decoding = Decoding::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(broken(
                        "the instance closed the connection in the middle of the body",
                    )
                    .into())));
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(limit) = this.read_timeout {
                        this.silence.heard(limit);
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoding == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoding {
            Decoding::Length(left) => SizeHint::with_exact(left),
            Decoding::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` one byte at a time: the head, then every frame of the
    /// body. Returns the head, the data, the trailers and what was left.
    fn decode(wire: &[u8], request_was_head: bool) -> (Head, Vec<u8>, HeaderMap, BytesMut) {
        let mut bytes = wire.iter();
        let mut buf = BytesMut::new();
        let head = loop {
            if let Some(head) = parse_head(&mut buf, request_was_head).unwrap() {
                break head;
            }
            buf.extend_from_slice(&[*bytes.next().expect("the head ends")]);
        };
        let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
        let mut decoding = head.framing;
        loop {
            match decoding.step(&mut buf).unwrap() {
                Step::Frame(frame) => match frame.into_data() {
                    Ok(d) => data.extend_from_slice(&d),
                    Err(f) => trailers = f.into_trailers().unwrap(),
                },
                Step::NeedMore => match bytes.next() {
                    Some(b) => buf.extend_from_slice(&[*b]),
                    None if decoding == Decoding::UntilClose => break,
                    None => panic!("the body never ended: {decoding:?}"),
                },
                Step::End => break,
            }
        }
        buf.extend(bytes);
        (head, data, trailers, buf)
    }

    fn written(head: &Head) -> String {
        let mut out = Vec::new();
        head.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\
            Connection: keep-alive, x-private\r\nX-Private: 1\r\nKeep-Alive: timeout=5\r\n\
            Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n\
            5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-checksum: abc\r\n\r\nNEXT";
        let (head, data, trailers, rest) = decode(wire, false);
        assert_eq!(data, b"hello world");
        assert_eq!(trailers["x-checksum"], "abc");
        assert_eq!(&rest[..], b"NEXT", "nothing past the body is consumed");
        assert!(head.keep_alive);
        assert_eq!(
            written(&head),
            "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
            "hop-by-hop and Connection-named headers go; the rest stay as sent"
        );
        assert!(
            !head.is_delimited(),
            "the client side frames a chunked body"
        );
    }

    /// Fields go out in runs of the instance's own bytes, yet every line
    /// ends with CRLF: bare LF endings and trailing whitespace do not pass.
    #[test]
    fn forwarded_lines_end_with_crlf_whatever_the_instance_sent() {
        let (head, ..) = decode(
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nKeep-Alive: timeout=5\r\nC: 3 \nD:  4\n\
              Content-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert_eq!(
            written(&head),
            "HTTP/1.1 200 OK\r\nA: 1\r\nB:2\r\nC: 3\r\nD:  4\r\n\
             Content-Type: Text/Event-Stream; charset=utf-8\r\nContent-Length: 0\r\n"
        );
        assert!(head.is_event_stream());
        let (plain, ..) = decode(
            b"HTTP/1.1 204 No Content\r\nContent-Type: text/html\r\n\r\n",
            false,
        );
        assert!(!plain.is_event_stream());
        assert_eq!(
            written(&plain),
            "HTTP/1.1 204 No Content\r\nContent-Type: text/html\r\n"
        );
    }

    #[test]
    fn content_length_body_stops_at_its_length() {
        let (head, data, _, rest) = decode(
            b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhelloHTTP",
            false,
        );
        assert_eq!(head.status(), StatusCode::CREATED);
        assert_eq!(
            written(&head),
            "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n"
        );
        assert!(head.is_delimited());
        assert_eq!(data, b"hello");
        assert_eq!(&rest[..], b"HTTP");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |wire: &[u8], head_request: bool| {
            let mut buf = BytesMut::from(wire);
            let head = parse_head(&mut buf, head_request).unwrap().unwrap();
            (head.framing, head.keep_alive)
        };
        let ka = true;
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            (Decoding::Done, ka),
            "an answer to HEAD has no body"
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Decoding::Done, ka)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                false
            ),
            (Decoding::Done, ka)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Decoding::UntilClose, false),
            "no length: the body ends with the connection"
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n", false),
            (Decoding::Length(2), false),
            "HTTP/1.0 closes unless it says keep-alive"
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            (Decoding::Length(2), true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            (Decoding::Length(2), false)
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                false
            ),
            (Decoding::Length(2), false),
            "a close in one Connection line wins over a keep-alive in another"
        );
        let mut both = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        );
        let head = parse_head(&mut both, false).unwrap().unwrap();
        assert_eq!(
            head.framing,
            Decoding::Chunked(Chunk::Size),
            "chunked wins over a length"
        );
        assert!(!written(&head)
            .to_ascii_lowercase()
            .contains("content-length"));
        let mut interim = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"[..]);
        assert!(parse_head(&mut interim, false)
            .unwrap()
            .unwrap()
            .is_interim());
        assert_eq!(&interim[..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn malformed_answers_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(wire);
            assert!(parse_head(&mut buf, false).is_err(), "{wire:?}");
        }
        let mut huge = BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-big: "[..]);
        huge.resize(MAX_HEAD_BYTES + 1, b'a');
        assert!(
            parse_head(&mut huge, false).is_err(),
            "a head past the limit"
        );
        let mut bad_chunk = BytesMut::from(&b"zz\r\n"[..]);
        assert!(Decoding::Chunked(Chunk::Size).step(&mut bad_chunk).is_err());
        let mut no_crlf = BytesMut::from(&b"2\r\nhiXX"[..]);
        let mut chunked = Decoding::Chunked(Chunk::Size);
        assert!(matches!(chunked.step(&mut no_crlf), Ok(Step::Frame(_))));
        assert!(
            chunked.step(&mut no_crlf).is_err(),
            "chunk data must end with CRLF"
        );
    }
}
