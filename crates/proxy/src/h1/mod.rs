//! Baton's own HTTP/1.1: the client for its keep-alive connections to
//! instances (here), and the server side for the common requests
//! ([`server`]).
//!
//! hyper's client runs every connection in a task of its own and talks to it
//! through channels: two task hand-offs per request, plus a body channel per
//! response. Here a request's whole exchange runs inside the task that
//! serves the client. The head goes out in one write, and the response head
//! is parsed by httparse straight out of the connection's buffer; header
//! values are slices of that buffer, not copies. The response body is read
//! from the socket when the client side asks for more. A request body is
//! written from the same polls as the reads, so an instance that answers
//! while it is still reading (an echo, an early 413) cannot deadlock
//! against Baton.

mod coalesce;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod request;
mod response;
pub(crate) mod server;

use baton_http1::decode;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::StatusCode;
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub(crate) use self::request::RequestHead;
use self::request::{Stopped, Upload};
pub(crate) use self::response::{Answer, Head, ResponseBody};
use super::body::TakeOnPoll;
use super::upstream::{PooledGuard, Upstream};
use crate::config::ExchangeLimits;
use crate::framing::BodyFraming;

/// Bytes read from an instance at a time.
const INSTANCE_READ_CHUNK: usize = 16 * 1024;

/// One keep-alive connection to an instance.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// On the coarse clock.
    idle_since: Duration,
    _counted: PooledGuard,
}

impl Conn {
    /// A fresh connection, counted in its instance's open connections.
    pub(crate) fn new(stream: TcpStream, counted: PooledGuard) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            idle_since: coarse_now(),
            _counted: counted,
        }
    }

    /// Whether an idle connection can take another request: younger than
    /// `idle_timeout`, and the instance has neither closed it nor sent
    /// anything unasked on it.
    pub(crate) fn is_reusable(&self, idle_timeout: Duration) -> bool {
        // No syscall unless the socket was reported readable: then a read
        // tells a close (0) or stray bytes from nothing to read.
        coarse_now().saturating_sub(self.idle_since) < idle_timeout
            && matches!(self.stream.try_read(&mut [0u8; 1]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Whether the instance has neither closed this connection nor sent
    /// anything on it, asked of the kernel now (a `MSG_PEEK` read), not of
    /// the readiness tokio last saw: a close that arrived since the reactor
    /// last polled shows here. A request that must not reach an instance
    /// twice is written only on a connection that passed this just before.
    pub(crate) fn is_quiet_now(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut byte = [0u8; 1];
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(
            recv(self.stream.as_raw_fd(), &mut byte, flags),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    /// Writes raw bytes, for tests that make an instance act on an idle
    /// connection.
    #[cfg(test)]
    pub(crate) async fn write_for_test(&self, bytes: &[u8]) {
        let mut written = 0;
        while written < bytes.len() {
            self.stream.writable().await.unwrap();
            match self.stream.try_write(&bytes[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Marks the start of an idle period.
    fn idle(&mut self) {
        self.idle_since = coarse_now();
    }

    /// Reads more bytes from the instance into the buffer; `Ok(0)` at its end.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(INSTANCE_READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}

/// The coarse monotonic clock: milliseconds of resolution and no TSC read.
/// An idle limit in seconds needs no better, and it is read twice per
/// request.
fn coarse_now() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Whole seconds on the coarse monotonic clock.
pub(crate) fn coarse_seconds() -> u64 {
    coarse_now().as_secs()
}

/// Writes an HTTP/1.1 status line, such as `HTTP/1.1 200 OK`.
fn write_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Writes the Date field of an answer Baton makes itself (RFC 9110 asks
/// it of a server with a clock; an instance's answers carry their own).
fn write_date(out: &mut Vec<u8>) {
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    write_field(out, b"date", now.as_bytes());
}

/// Writes one field line: `name: value`.
fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes a request head. A write that fails before its first byte was
/// taken found the connection already broken (the instance reset it while
/// it sat idle): nothing of the request left Baton, so it is
/// [`ExchangeError::NotSent`], which any method may be sent again after.
async fn write_head(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), ExchangeError> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]).await {
            Ok(0) => {
                return Err(ExchangeError::Unanswered(
                    "the connection took no bytes".into(),
                ))
            }
            Ok(n) => written += n,
            Err(e) if written == 0 => return Err(ExchangeError::NotSent(e.to_string())),
            Err(e) => return Err(ExchangeError::Unanswered(e.to_string())),
        }
    }
    Ok(())
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Not one byte of the request was written: the connection was broken
    /// before it. Safe to send again, whatever the method.
    #[error("the connection was closed before the request: {0}")]
    NotSent(String),
    /// The connection ended before a single byte of an answer, after the
    /// request was written. On a reused keep-alive connection this may be
    /// the instance closing it idle as the request went out, or an
    /// instance that read the request, acted, and died: the two cannot be
    /// told apart from here (see `pool::send`).
    #[error("connection closed before any response: {0}")]
    Unanswered(String),
    /// The connection broke or the answer was not HTTP.
    #[error("{0}")]
    Broken(String),
    /// The client's request body failed before the instance answered; the
    /// instance is not at fault. The client gets the status (400, or 408
    /// for a body that stalled, 413 for one past `max_body_size`).
    #[error("the request body failed: {0}")]
    ClientBody(String, StatusCode),
    /// The instance was silent too long (`response_timeout`,
    /// `read_timeout`).
    #[error("{0}")]
    TimedOut(String),
}

impl From<decode::Broken> for ExchangeError {
    fn from(broken: decode::Broken) -> ExchangeError {
        ExchangeError::Broken(broken.0)
    }
}

/// A timer for the silences an exchange allows. Made on the first wait,
/// not per request: most answers come before any wait is long.
#[derive(Default)]
pub(crate) struct Silence(Option<Pin<Box<tokio::time::Sleep>>>);

impl Silence {
    /// Whether `limit` has passed since the last [`Silence::heard`]; if
    /// not, the timer wakes the task when it does.
    pub(crate) fn expired(&mut self, limit: Duration, cx: &mut Context<'_>) -> bool {
        let timer = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Something moved: the silence starts again, `limit` long.
    pub(crate) fn heard(&mut self, limit: Duration) {
        if let Some(timer) = self.0.as_mut() {
            timer.as_mut().reset(tokio::time::Instant::now() + limit);
        }
    }
}

/// Sends one request on `conn` and reads the response head. The response
/// body comes with it, still on the connection, which returns to
/// `upstream`'s idle list when the body has been read to its end.
///
/// # Errors
/// [`ExchangeError`] when the instance did not answer with a valid head.
pub(crate) async fn exchange(
    mut conn: Box<Conn>,
    head: &RequestHead,
    body: TakeOnPoll,
    upstream: &Arc<Upstream>,
    limits: &ExchangeLimits,
) -> Result<Answer, ExchangeError> {
    let has_body = !body.is_end_stream();
    write_head(&mut conn.stream, &head.bytes).await?;
    let mut upload =
        has_body.then(|| Box::new(Upload::new(body, head.framing == BodyFraming::Chunked)));
    let mut upload_failed = false;
    let mut answered = false;
    // While the body goes out, the instance may be silent for read_timeout
    // between two writes it takes; once it is all out, response_timeout.
    let mut silence = Silence::default();
    let mut limit = if has_body {
        limits.read
    } else {
        limits.response
    };
    let answer = poll_fn(|cx| loop {
        let sent = upload.as_ref().map(|u| u.sent());
        match Upload::advance(&mut upload, &mut conn.stream, cx) {
            None => {}
            // The wait goes on: the instance may still answer (an early
            // 413 and a close).
            Some(Stopped::ByInstance) => upload_failed = true,
            // An instance waiting for the rest of a body would hold the
            // request until its own timeout.
            Some(Stopped::ByClient(why, status)) => {
                return Poll::Ready(Err(ExchangeError::ClientBody(why, status)))
            }
        }
        match (sent, upload.as_ref().map(|u| u.sent())) {
            (Some(_), None) => {
                limit = limits.response;
                silence.heard(limit);
            }
            (Some(before), Some(now)) if now > before => silence.heard(limit),
            _ => {}
        }
        while !conn.buf.is_empty() {
            match response::parse_head(&mut conn.buf, head.is_head) {
                Ok(Some(answer)) if answer.is_interim() => continue,
                Ok(Some(answer)) => return Poll::Ready(Ok(answer)),
                Ok(None) => break,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        let closed = match conn.poll_read_more(cx) {
            Poll::Pending if silence.expired(limit, cx) => {
                return Poll::Ready(Err(ExchangeError::TimedOut(format!(
                    "no answer within {}",
                    humantime::format_duration(limit)
                ))))
            }
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => "closed by the instance".to_string(),
            Poll::Ready(Ok(_)) => {
                answered = true;
                silence.heard(limits.read);
                limit = limits.read;
                continue;
            }
            Poll::Ready(Err(e)) => e.to_string(),
        };
        return Poll::Ready(Err(if answered {
            ExchangeError::Broken(format!("{closed} in the middle of the response head"))
        } else {
            ExchangeError::Unanswered(closed)
        }));
    })
    .await?;
    Ok(answer.into_answer(conn, upload, upload_failed, upstream.clone(), limits.read))
}
