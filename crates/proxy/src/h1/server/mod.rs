//! Baton's own HTTP/1.1 server side, for every HTTP/1.x request but an
//! upgrade.
//!
//! The request head is parsed by httparse straight out of the connection's
//! buffer, and the instance's request is encoded from its raw fields. The
//! answer's head goes back to the client as the instance wrote it, less the
//! hop-by-hop fields. No header map is built on either side, and the whole
//! exchange runs in the connection's task. Serving HTTP/1 through hyper
//! instead costs 9–13 % more CPU time per request (README, Benchmarks).
//!
//! An upgrade (WebSocket) and h2c go to hyper, with the bytes already read;
//! the connection stays with hyper from then on, and after an upgrade it
//! refuses it closes (so hyper never parses a second HTTP/1 request head).
//! Every head is checked by `framing::check_request` before either server
//! acts on it, and request bodies are decoded by `decode`, the decoder
//! that reads instances' answers.

mod client_body;
mod exchange;
mod parse;
mod write;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use self::parse::ends_head;
pub(crate) use self::parse::{parse_request, Parsed};
use super::coarse_now;
use super::decode::Decoding;
use super::RequestHead;
use crate::phases::{Log, OwnAnswer};
use crate::sites::Site;
use crate::{Proto, Proxy};

/// Bytes read from a client at a time.
const CLIENT_READ_CHUNK: usize = 8 * 1024;
/// At shutdown, a keep-alive connection idle this long is closed; one
/// answered more recently gets until then to send its next request.
const SHUTDOWN_IDLE: Duration = Duration::from_millis(200);
/// At shutdown, a connection that has sent no request yet gets this long
/// from its accept to send one. Its client most likely connected to send
/// one at once; but a browser's preconnect, or a client pool's spare
/// connection, may never send, and waiting out header_read_timeout for it
/// held a stop, and an upgrade with every client in the backlog, for 10 s.
const SHUTDOWN_FRESH: Duration = Duration::from_secs(1);
/// Response bytes gathered before they are written.
const FLUSH_AT: usize = 64 * 1024;
/// How long a closing connection reads away what its client still sends.
const LINGER: Duration = Duration::from_secs(2);
/// Request body bytes read from a client at a time.
const BODY_CHUNK: usize = 16 * 1024;
/// Header slots kept on the stack; a larger `max_headers` uses the heap.
const STACK_HEADERS: usize = 128;
/// The start of the HTTP/2 connection preface (h2c with prior knowledge).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// A static file up to this size is read into the answer's one write;
/// a larger one is sent after its head (with `sendfile` where it can be).
const INLINE_FILE: usize = 32 * 1024;

/// A client connection Baton's own server can serve: split in a reading
/// and a writing half (a request body borrows the reading half while its
/// answer is awaited), and put back together for hyper. Plain TCP splits
/// without a lock; a TLS stream will split with `tokio::io::split`.
pub(crate) trait ClientStream: Send + Sized + 'static {
    /// The reading half.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Writer: AsyncWrite + Unpin + Send + 'static;
    /// Splits it.
    fn split(self) -> (Self::Reader, Self::Writer);
    /// Puts the halves back together.
    fn unsplit(reader: Self::Reader, writer: Self::Writer) -> Option<Self>;
    /// Its scheme, for X-Forwarded-Proto, HSTS and the redirect.
    const PROTO: Proto;
    /// A second handle on the socket, for a 408 written past hyper when a
    /// head it reads is cut short; none on TLS, whose bytes must go
    /// through the TLS state, which hyper holds.
    fn socket_for_408(&self) -> Option<std::os::fd::OwnedFd>;
    /// The socket under the writing half, for `sendfile`; none on TLS,
    /// whose bytes Baton encrypts.
    fn zero_copy(writer: &Self::Writer) -> Option<&TcpStream>;
}

impl ClientStream for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }

    fn unsplit(reader: OwnedReadHalf, writer: OwnedWriteHalf) -> Option<TcpStream> {
        reader.reunite(writer).ok()
    }

    const PROTO: Proto = Proto::Http;

    fn socket_for_408(&self) -> Option<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned().ok()
    }

    fn zero_copy(writer: &OwnedWriteHalf) -> Option<&TcpStream> {
        Some(writer.as_ref())
    }
}

/// A TLS connection splits with a lock between its halves (one TLS state).
impl ClientStream for tokio_rustls::server::TlsStream<TcpStream> {
    type Reader = tokio::io::ReadHalf<Self>;
    type Writer = tokio::io::WriteHalf<Self>;

    fn split(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self)
    }

    fn unsplit(reader: Self::Reader, writer: Self::Writer) -> Option<Self> {
        reader.is_pair_of(&writer).then(|| reader.unsplit(writer))
    }

    const PROTO: Proto = Proto::Https;

    fn socket_for_408(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }

    fn zero_copy(_: &Self::Writer) -> Option<&TcpStream> {
        None
    }
}

/// A connection for hyper to go on with, and what Baton read from it.
pub(crate) struct Handoff<S = TcpStream> {
    /// The client's connection.
    pub stream: S,
    /// Bytes read and not handled: they come first.
    pub read: Bytes,
}

/// Serves a client connection until it closes, or returns it for hyper
/// when it sends something this server leaves to hyper. Ends after the
/// request in progress once `shutdown` fires.
pub(crate) async fn serve<S: ClientStream>(
    proxy: Arc<Proxy>,
    stream: S,
    client: HeaderValue,
    shutdown: CancellationToken,
) -> Option<Handoff<S>> {
    let mut conn = Connection::new(stream, proxy.config.header_read_timeout, shutdown);
    loop {
        let request = match conn.read_request(&proxy, &client).await {
            Next::Request(request) => request,
            Next::Handoff => {
                let reader = conn.reader?;
                return Some(Handoff {
                    stream: S::unsplit(reader, conn.writer)?,
                    read: conn.read.freeze(),
                });
            }
            Next::Close => return None,
            Next::Reject(status) => {
                conn.reject(status).await;
                return None;
            }
        };
        match conn.exchange(&proxy, request, &client).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = conn.writer.shutdown().await;
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// What a client sent next.
pub(crate) enum Next {
    Request(Request),
    /// Something for hyper.
    Handoff,
    /// The client closed, went quiet for header_read_timeout between
    /// requests, or Baton is shutting down.
    Close,
    /// A bad head: the client gets this status and the connection closes.
    Reject(StatusCode),
}

/// A request as the instance gets it, and what the answer depends on.
pub(crate) struct Request {
    pub(super) keep_alive: bool,
    /// An HTTP/1.0 client, which knows no chunked bodies.
    http10: bool,
    /// How its body is delimited: as Baton reads it from the client.
    pub(crate) body: Decoding,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
    /// The app it goes to, or Baton's own answer.
    route: Route,
}

#[cfg(feature = "fuzz")]
impl Request {
    /// The head the instance gets; none for a request Baton answers.
    pub(crate) fn head(&self) -> Option<&RequestHead> {
        match &self.route {
            Route::Site(_, head, _) => Some(head),
            Route::Own(..) => None,
        }
    }
}

/// Where a request goes, with its access log record in the making.
enum Route {
    /// To this app's instances, with the head they get (encoded only for
    /// them: Baton's own answers need none).
    Site(Arc<Site>, RequestHead, Log),
    /// Nowhere: Baton answers it itself (a request filter, a static file,
    /// no app).
    Own(OwnAnswer, Log),
}

/// One client connection.
struct Connection<S: ClientStream> {
    /// Lent to the request body while one is read (see [`ClientBody`]).
    reader: Option<S::Reader>,
    writer: S::Writer,
    /// Bytes read from the client and not yet used.
    read: BytesMut,
    /// What goes to the client next.
    out: Vec<u8>,
    header_read_timeout: Duration,
    /// When the wait for the current head began, on the coarse clock.
    waiting_since: Duration,
    /// Fires at the end of header_read_timeout. It is moved only when it
    /// fires early, not re-armed for every request: most waits end long
    /// before it.
    deadline: Pin<Box<Sleep>>,
    shutdown: CancellationToken,
    closing: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Its scheme.
    proto: Proto,
    /// No request has come yet. A shutdown gives such a connection
    /// SHUTDOWN_FRESH from its accept: its client connected to send one,
    /// and a close now would fail that request (a new connection is never
    /// retried the way a reused one is).
    fresh: bool,
}

/// How a wait for more of a head ended.
enum Read {
    More,
    Closed,
    TimedOut,
}

impl<S: ClientStream> Connection<S> {
    fn new(stream: S, header_read_timeout: Duration, shutdown: CancellationToken) -> Self {
        let (reader, writer) = stream.split();
        Connection {
            reader: Some(reader),
            writer,
            read: BytesMut::with_capacity(CLIENT_READ_CHUNK),
            out: Vec::with_capacity(1024),
            header_read_timeout,
            waiting_since: coarse_now(),
            deadline: Box::pin(tokio::time::sleep(header_read_timeout)),
            closing: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            fresh: true,
            proto: S::PROTO,
        }
    }

    /// Reads and parses the next request head.
    async fn read_request(&mut self, proxy: &Proxy, client: &HeaderValue) -> Next {
        self.waiting_since = coarse_now();
        // How much of a partial head has been seen to hold no empty line:
        // it is parsed again only once one arrives, so that a head sent a
        // byte at a time costs linear time, not quadratic.
        let mut scanned = None;
        loop {
            let worth_parsing = match scanned {
                None => !self.read.is_empty(),
                Some(from) => ends_head(&self.read, from),
            };
            if worth_parsing {
                match parse_request(&self.read, proxy, client, self.proto) {
                    Parsed::Complete(len, request) => {
                        self.read.advance(len);
                        self.fresh = false;
                        return Next::Request(request);
                    }
                    Parsed::Partial => {}
                    Parsed::Other(next) => return next,
                }
                scanned = Some(self.read.len());
            }
            if self.read.len() >= proxy.config.max_header_bytes {
                return Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            }
            match poll_fn(|cx| self.poll_head_bytes(cx)).await {
                Read::More => {}
                Read::Closed => return Next::Close,
                // A client that started a head and did not finish it in time
                // is told; an idle keep-alive connection is closed quietly.
                Read::TimedOut if self.read.is_empty() => return Next::Close,
                Read::TimedOut => return Next::Reject(StatusCode::REQUEST_TIMEOUT),
            }
        }
    }

    /// Reads more of a head, until header_read_timeout from the start of
    /// the wait.
    fn poll_head_bytes(&mut self, cx: &mut Context<'_>) -> Poll<Read> {
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Ready(Read::Closed);
        };
        if self.read.capacity() - self.read.len() < 1024 {
            self.read.reserve(CLIENT_READ_CHUNK);
        }
        match tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut self.read) {
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Read::Closed),
            Poll::Ready(Ok(_)) => return Poll::Ready(Read::More),
            Poll::Pending => {}
        }
        while self.deadline.as_mut().poll(cx).is_ready() {
            let waited = coarse_now().saturating_sub(self.waiting_since);
            if waited >= self.header_read_timeout {
                return Poll::Ready(Read::TimedOut);
            }
            // Set for an earlier wait: move it to the end of this one.
            let left = self.header_read_timeout - waited;
            self.deadline.as_mut().reset(Instant::now() + left);
        }
        if self.read.is_empty() && self.closing.as_mut().poll(cx).is_ready() {
            // Shutting down: an idle keep-alive connection closes. One that
            // was answered a moment ago likely carries its next request
            // already, and a close under it would reset that request; it
            // gets SHUTDOWN_IDLE to send it, and the answer says close.
            let allowed = if self.fresh {
                SHUTDOWN_FRESH
            } else {
                SHUTDOWN_IDLE
            };
            let idle = coarse_now().saturating_sub(self.waiting_since);
            if idle >= allowed {
                return Poll::Ready(Read::Closed);
            }
            let at = Instant::now() + (allowed - idle);
            if self.deadline.deadline() > at {
                self.deadline.as_mut().reset(at);
                // Registers the timer's waker.
                let _ = self.deadline.as_mut().poll(cx);
            }
        }
        Poll::Pending
    }
}
