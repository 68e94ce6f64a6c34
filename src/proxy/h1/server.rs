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

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::HeaderValue;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::coalesce::{hold_answer, Awaiting};
use super::decode::{Chunk, Decoding, Step};
use super::Silence;
use super::{coarse_now, write_date, write_field, write_status_line, RequestHead, ResponseBody};
use crate::proxy::access::{Answered, Opening, Pending};
use crate::proxy::assets::{self, Answer, Ask, Payload};
use crate::proxy::body::{Counted, Parked};
use crate::proxy::framing::{
    check_request, is_valid_target, split_absolute, BodyFraming, Protocol, Rejection,
};
use crate::proxy::headers::{connection_options, find, is_upgrade, Fields};
use crate::proxy::normalise::normalise;
use crate::proxy::path::{self, Forwarded, Refusal};
use crate::proxy::sites::Site;
use crate::proxy::split;
use crate::proxy::Proxy;

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
pub trait ClientStream: Send + Sized + 'static {
    /// The reading half.
    type Reader: AsyncRead + Unpin + Send + 'static;
    /// The writing half.
    type Writer: AsyncWrite + Unpin + Send + 'static;
    /// Splits it.
    fn split(self) -> (Self::Reader, Self::Writer);
    /// Puts the halves back together.
    fn unsplit(reader: Self::Reader, writer: Self::Writer) -> Option<Self>;
    /// `http` or `https`, for X-Forwarded-Proto.
    const PROTO: &'static str;
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

    const PROTO: &'static str = "http";

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

    const PROTO: &'static str = "https";

    fn socket_for_408(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }

    fn zero_copy(_: &Self::Writer) -> Option<&TcpStream> {
        None
    }
}

/// A connection for hyper to go on with, and what Baton read from it.
pub struct Handoff<S = TcpStream> {
    /// The client's connection.
    pub stream: S,
    /// Bytes read and not handled: they come first.
    pub read: Bytes,
}

/// Serves a client connection until it closes, or returns it for hyper
/// when it sends something this server leaves to hyper. Ends after the
/// request in progress once `shutdown` fires.
pub async fn serve<S: ClientStream>(
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
pub(super) enum Next {
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
pub(super) struct Request {
    pub(super) keep_alive: bool,
    /// An HTTP/1.0 client, which knows no chunked bodies.
    http10: bool,
    /// How its body is delimited: as Baton reads it from the client.
    pub(super) body: Decoding,
    /// The client waits for `100 Continue` before it sends the body.
    expects_continue: bool,
    /// The app it goes to, or Baton's own answer.
    route: Route,
    /// Its access log record in the making, when the app keeps a log.
    logged: Option<Box<Pending>>,
}

impl Request {
    /// The head the instance gets; none for a request Baton answers.
    pub(super) fn head(&self) -> Option<&RequestHead> {
        match &self.route {
            Route::Site(_, head) => Some(head),
            Route::Local(_) => None,
        }
    }
}

/// Where a request goes.
enum Route {
    /// To this app's instances, with the head they get (encoded only for
    /// them: Baton's own answers need none).
    Site(Arc<Site>, RequestHead),
    /// Nowhere: Baton answers it itself.
    Local(Local),
}

/// An answer Baton gives itself, without an instance.
enum Local {
    /// Plain HTTP sent to HTTPS: a 308 to this `Location`.
    Redirect(Vec<u8>),
    /// ACME's HTTP-01 check: this key authorization.
    Challenge(String),
    /// No app serves the host (and path): 404 on HTTP, 421 on HTTPS.
    NoApp(StatusCode),
    /// A file under the app's `[static] prefix`.
    Static(Box<Answer>),
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
    /// `http` or `https`, for X-Forwarded-Proto.
    proto: &'static str,
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

    /// Forwards `request`, with its body if it has one, and writes the
    /// answer. Says whether the connection stays open for another request.
    async fn exchange(
        &mut self,
        proxy: &Arc<Proxy>,
        request: Request,
        client: &HeaderValue,
    ) -> io::Result<bool> {
        let site = match &request.route {
            Route::Site(site, _) => site.clone(),
            Route::Local(local) => {
                // A body not read cannot be told from a next request: close.
                let keep_alive = request.keep_alive
                    && request.body == Decoding::Done
                    && !self.shutdown.is_cancelled();
                if let Local::Static(answer) = local {
                    proxy.count(answer.status);
                    self.write_static(proxy, answer, keep_alive, request.http10)
                        .await?;
                    if let Some(logged) = request.logged {
                        logged.finish_static(client, answer);
                    }
                    return Ok(keep_alive);
                }
                self.write_local(proxy, local, keep_alive, request.http10);
                self.flush().await?;
                return Ok(keep_alive);
            }
        };
        if request.body == Decoding::Done {
            return self
                .answer(proxy, &site, request, &Parked::default(), None, client)
                .await;
        }
        if request.expects_continue {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            self.flush().await?;
        }
        let lent = Arc::new(Mutex::new(Lent {
            reader: self.reader.take(),
            read: std::mem::take(&mut self.read),
            decoding: request.body,
            limit: proxy.config.body_limit(),
            received: 0,
            body_timeout: proxy.config.body_timeout,
            silence: Silence::default(),
        }));
        let body = Parked::new(ClientBody(lent.clone()));
        let answered = self
            .answer(proxy, &site, request, &body, Some(&lent), client)
            .await;
        drop(body);
        self.reclaim(&lent);
        if lock(&lent).is_done() {
            return answered;
        }
        // The instance answered without reading the whole body. The rest of
        // it cannot be told from a next request, so the connection closes;
        // first the client's bytes are read away for a while, since a close
        // with unread bytes resets the connection, which can destroy the
        // answer before the client has read it (nginx's lingering close).
        let _ = self.writer.shutdown().await;
        if let Some(reader) = self.reader.as_mut() {
            let mut sink = tokio::io::sink();
            let _ = tokio::time::timeout(LINGER, tokio::io::copy(reader, &mut sink)).await;
        }
        answered.map(|_| false)
    }

    /// Forwards the request and writes the answer (see `exchange`).
    async fn answer(
        &mut self,
        proxy: &Arc<Proxy>,
        site: &Site,
        request: Request,
        body: &Parked,
        lent: Option<&Arc<Mutex<Lent<S::Reader>>>>,
        client: &HeaderValue,
    ) -> io::Result<bool> {
        let logged = request.logged;
        let Route::Site(_, head) = &request.route else {
            unreachable!("exchange answers Baton's own requests itself")
        };
        let forward = path::pass(proxy, site, head, body, client);
        tokio::pin!(forward);
        // A client that leaves before the answer takes its request along
        // (as with nginx and hyper): the instance's connection closes, so
        // the app sees the request aborted, and the request stops counting
        // as in flight, so a drain does not wait for it (`pass` counts it
        // as abandoned when dropped unfinished).
        let awaiting = Awaiting::new();
        let forwarded = poll_fn(|cx| match forward.as_mut().poll(cx) {
            Poll::Ready(forwarded) => Poll::Ready(Some(forwarded)),
            Poll::Pending if self.watch_client(lent, cx) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let Some(forwarded) = forwarded else {
            // nginx's 499: the client closed before the answer.
            if let Some(logged) = logged {
                logged.finish(client, 499, 0, Answered::default());
            }
            return Err(io::ErrorKind::ConnectionAborted.into());
        };
        drop(awaiting);
        // The body is not all read when the instance answers first: the
        // connection closes after this answer (see `exchange`).
        let body_pending = lent.is_some_and(|l| !lock(l).is_done());
        if let (Some(lent), false) = (lent, body_pending) {
            // Read in full: the connection watches its client again.
            self.reclaim(lent);
        }
        let mut keep_alive = request.keep_alive && !body_pending && !self.shutdown.is_cancelled();
        let Forwarded {
            reply: answer,
            guard,
            upstream,
            retries,
            held,
            sticky,
        } = match forwarded {
            Ok(f) => f,
            Err(refusal) => {
                keep_alive &= !refusal.close;
                self.write_refusal(&refusal, keep_alive, request.http10);
                self.flush().await?;
                if let Some(logged) = logged {
                    logged.finish_refused(client, &refusal);
                }
                return Ok(keep_alive);
            }
        };
        let head = &answer.head;
        // A body the instance did not delimit is chunked for an HTTP/1.1
        // client; an HTTP/1.0 client reads it until the close.
        let chunked = !head.is_delimited() && !request.http10;
        keep_alive &= head.is_delimited() || chunked;
        head.write_to(&mut self.out);
        if let (Some(hsts), "https") = (&proxy.edge.hsts, self.proto) {
            if !head.has_field(b"strict-transport-security") {
                write_field(&mut self.out, b"strict-transport-security", hsts.as_bytes());
            }
        }
        if let Some(bucket) = sticky {
            write_field(
                &mut self.out,
                b"set-cookie",
                split::cookie(bucket).as_bytes(),
            );
        }
        if chunked {
            self.out
                .extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        self.write_connection(keep_alive, request.http10);
        self.out.extend_from_slice(b"\r\n");
        let event_stream = head.is_event_stream();
        let status = head.status().as_u16();
        let body = Counted::new(answer.body, guard, &upstream, event_stream);
        hold_answer().await;
        let sent = self.send_body(body, chunked).await?;
        if let Some(logged) = logged {
            logged.finish(client, status, sent, Answered::by(&upstream, retries, held));
        }
        Ok(keep_alive)
    }

    /// Writes the body as the instance sends it: what is ready goes out in
    /// one write with the head before it, and an event stream's events go
    /// out as they come.
    /// Returns the body's length.
    async fn send_body(
        &mut self,
        mut body: Counted<ResponseBody>,
        chunked: bool,
    ) -> io::Result<u64> {
        let mut sent = 0;
        loop {
            let ended = poll_fn(|cx| self.gather(&mut body, chunked, &mut sent, cx)).await?;
            self.flush().await?;
            if ended {
                return Ok(sent);
            }
        }
    }

    /// Moves what the body has ready into the output; ready with whether
    /// the body ended once there is something to write.
    fn gather(
        &mut self,
        body: &mut Counted<ResponseBody>,
        chunked: bool,
        sent: &mut u64,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<bool>> {
        while self.out.len() < FLUSH_AT {
            let frame = Pin::new(&mut *body).poll_frame(cx);
            if let Poll::Ready(Some(Ok(frame))) = &frame {
                *sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            match frame {
                Poll::Ready(None) => {
                    if chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    return Poll::Ready(Ok(true));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if chunked => {
                        let mut size = [0u8; 16];
                        self.out.extend_from_slice(hex(data.len(), &mut size));
                        self.out.extend_from_slice(b"\r\n");
                        self.out.extend_from_slice(&data);
                        self.out.extend_from_slice(b"\r\n");
                    }
                    Ok(data) => self.out.extend_from_slice(&data),
                    Err(frame) => {
                        // Trailers end a chunked body; a client that gets it
                        // any other way has nowhere to put them.
                        if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                            self.out.extend_from_slice(b"0\r\n");
                            for (name, value) in trailers.pairs() {
                                write_field(&mut self.out, name, value);
                            }
                            self.out.extend_from_slice(b"\r\n");
                            return Poll::Ready(Ok(true));
                        }
                    }
                },
                Poll::Pending if !self.out.is_empty() => return Poll::Ready(Ok(false)),
                Poll::Pending => {
                    // Nothing to write until the instance sends more: notice
                    // meanwhile a client that goes away (an event stream
                    // would otherwise outlive it).
                    if self.client_gone(cx) {
                        return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                    }
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(false))
    }

    /// Takes the reading side back from a request body, with what was
    /// read past the body.
    fn reclaim(&mut self, lent: &Mutex<Lent<S::Reader>>) {
        let mut lent = lock(lent);
        if let Some(reader) = lent.reader.take() {
            self.reader = Some(reader);
            self.read = std::mem::take(&mut lent.read);
        }
    }

    /// Whether the client went away while its answer is awaited. A body
    /// still being read notices that itself; one read in full gives the
    /// reading side back first.
    fn watch_client(
        &mut self,
        lent: Option<&Arc<Mutex<Lent<S::Reader>>>>,
        cx: &mut Context<'_>,
    ) -> bool {
        if let Some(lent) = lent.filter(|l| self.reader.is_none() && lock(l).is_done()) {
            self.reclaim(lent);
        }
        self.client_gone(cx)
    }

    /// Whether the client closed its side. What it sent meanwhile (a
    /// pipelined request) is kept, up to a head's worth.
    fn client_gone(&mut self, cx: &mut Context<'_>) -> bool {
        // While the request body has the reading side, the body's reads
        // notice a close.
        let Some(reader) = self.reader.as_mut() else {
            return false;
        };
        while self.read.len() < CLIENT_READ_CHUNK * 8 {
            if self.read.capacity() - self.read.len() < 1024 {
                self.read.reserve(CLIENT_READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut self.read) {
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
        false
    }

    async fn flush(&mut self) -> io::Result<()> {
        let written = self.writer.write_all(&self.out).await;
        self.out.clear();
        written
    }

    /// Baton's own answer when no instance gave one.
    fn write_refusal(&mut self, refusal: &Refusal, keep_alive: bool, http10: bool) {
        let text = refusal.text();
        write_status_line(&mut self.out, refusal.status);
        write_date(&mut self.out);
        self.out
            .extend_from_slice(b"content-type: text/plain\r\ncontent-length: ");
        self.out
            .extend_from_slice(itoa::Buffer::new().format(text.len()).as_bytes());
        self.out.extend_from_slice(b"\r\n");
        if refusal.retry_after {
            self.out.extend_from_slice(b"retry-after: 1\r\n");
        }
        self.write_connection(keep_alive, http10);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(text.as_bytes());
    }

    /// A 308 to `location` (plain HTTP sent to HTTPS).
    fn write_redirect(&mut self, location: &[u8], keep_alive: bool, http10: bool) {
        write_status_line(&mut self.out, StatusCode::PERMANENT_REDIRECT);
        write_date(&mut self.out);
        write_field(&mut self.out, b"location", location);
        self.out.extend_from_slice(b"content-length: 0\r\n");
        self.write_connection(keep_alive, http10);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Baton's own answer.
    fn write_local(&mut self, proxy: &Proxy, local: &Local, keep_alive: bool, http10: bool) {
        match local {
            Local::Redirect(location) => self.write_redirect(location, keep_alive, http10),
            Local::Challenge(key_authorization) => {
                self.write_challenge(key_authorization, keep_alive, http10)
            }
            Local::NoApp(status) => {
                proxy.count(*status);
                let refusal = Refusal::failed(*status, "no app serves this host".into());
                self.write_refusal(&refusal, keep_alive, http10);
            }
            Local::Static(_) => unreachable!("written by write_static"),
        }
    }

    /// A static file's answer: a small file goes out in one write with its
    /// head; a larger one with `sendfile` on plain TCP (no copy through
    /// Baton), in reads otherwise.
    async fn write_static(
        &mut self,
        proxy: &Proxy,
        answer: &Answer,
        keep_alive: bool,
        http10: bool,
    ) -> io::Result<()> {
        write_status_line(&mut self.out, answer.status);
        write_date(&mut self.out);
        for (name, value) in &answer.fields {
            write_field(&mut self.out, name.as_str().as_bytes(), value.as_bytes());
        }
        if let (Some(hsts), "https") = (&proxy.edge.hsts, self.proto) {
            write_field(&mut self.out, b"strict-transport-security", hsts.as_bytes());
        }
        self.write_connection(keep_alive, http10);
        self.out.extend_from_slice(b"\r\n");
        let (file, start, len) = match &answer.body {
            Payload::Empty => return self.flush().await,
            Payload::Text(text) => {
                self.out.extend_from_slice(text.as_bytes());
                return self.flush().await;
            }
            Payload::File { file, start, len } => (file, *start, *len),
        };
        if len <= INLINE_FILE as u64 {
            assets::body::read_into(file, start, len as usize, &mut self.out)?;
            return self.flush().await;
        }
        self.flush().await?;
        if let Some(socket) = S::zero_copy(&self.writer) {
            return assets::body::send_file(socket, file, start, len).await;
        }
        let mut at = start;
        let end = start + len;
        while at < end {
            let chunk = (end - at).min(assets::body::CHUNK as u64) as usize;
            assets::body::read_into(file, at, chunk, &mut self.out)?;
            at += chunk as u64;
            self.flush().await?;
        }
        Ok(())
    }

    /// The answer to an ACME HTTP-01 check (RFC 8555 §8.3).
    fn write_challenge(&mut self, key_authorization: &str, keep_alive: bool, http10: bool) {
        write_status_line(&mut self.out, StatusCode::OK);
        write_date(&mut self.out);
        self.out
            .extend_from_slice(b"content-type: application/octet-stream\r\ncontent-length: ");
        self.out.extend_from_slice(
            itoa::Buffer::new()
                .format(key_authorization.len())
                .as_bytes(),
        );
        self.out.extend_from_slice(b"\r\n");
        self.write_connection(keep_alive, http10);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(key_authorization.as_bytes());
    }

    /// Answers a bad head with `status`, then closes.
    async fn reject(&mut self, status: StatusCode) {
        write_status_line(&mut self.out, status);
        write_date(&mut self.out);
        self.out
            .extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n\r\n");
        if self.flush().await.is_ok() {
            let _ = self.writer.shutdown().await;
        }
    }

    /// The Connection field the client needs: `close` before a close, and
    /// `keep-alive` for an HTTP/1.0 client, which would close otherwise.
    fn write_connection(&mut self, keep_alive: bool, http10: bool) {
        if !keep_alive {
            self.out.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            self.out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
}

/// What the bytes at the start of the buffer are.
pub(super) enum Parsed {
    /// A whole head of this many bytes, and the request made of it.
    Complete(usize, Request),
    Partial,
    Other(Next),
}

/// Parses a request head at the start of `read` and, when it is one this
/// server handles, encodes the instance's request from it.
pub(super) fn parse_request(
    read: &[u8],
    proxy: &Proxy,
    client: &HeaderValue,
    proto: &'static str,
) -> Parsed {
    let max = proxy.config.max_headers;
    let mut stack = [const { MaybeUninit::<httparse::Header>::uninit() }; STACK_HEADERS];
    let mut heap = Vec::new();
    let slots = if max <= STACK_HEADERS {
        &mut stack[..max]
    } else {
        heap.reserve_exact(max);
        &mut heap.spare_capacity_mut()[..max]
    };
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(read, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Other(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE))
        }
        Err(_) if read.starts_with(H2_PREFACE) => return Parsed::Other(Next::Handoff),
        Err(_) => return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST)),
    };
    if len > proxy.config.max_header_bytes {
        return Parsed::Other(Next::Reject(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    };
    let fields: &[httparse::Header] = req.headers;
    let http10 = version == 0;
    let protocol = if http10 {
        Protocol::Http10
    } else {
        Protocol::Http11
    };
    // A target hyper's URI parser would refuse is refused here too, so
    // that both servers agree on what reaches an instance.
    if method != "CONNECT" && !is_valid_target(target.as_bytes()) {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    }
    // Origin form, or the absolute form, whose authority is the host
    // (RFC 9112 §3.2.2) and which the instance gets as a path.
    let (target, authority) = if target.starts_with('/') || method == "CONNECT" {
        (target.as_bytes(), None)
    } else if let Some((authority, path)) = split_absolute(target.as_bytes()) {
        (path, Some(authority))
    } else {
        return Parsed::Other(Next::Reject(StatusCode::BAD_REQUEST));
    };
    let facts = match check_request(protocol, method.as_bytes(), authority, fields) {
        Ok(facts) => facts,
        Err(rejection) => {
            rejection.log();
            return Parsed::Other(Next::Reject(rejection.status));
        }
    };
    // Normalised once: what is routed, answered and sent on from here is
    // one path (the log keeps the client's).
    let (raw_target, target) = match normalise(target) {
        Ok(normal) => (target, normal),
        Err(bad) => {
            let rejection = Rejection::from(bad);
            rejection.log();
            return Parsed::Other(Next::Reject(rejection.status));
        }
    };
    let target = &*target;
    if let (BodyFraming::Length(n), Some(max)) = (facts.body, proxy.config.body_limit()) {
        if n > max {
            return Parsed::Other(Next::Reject(StatusCode::PAYLOAD_TOO_LARGE));
        }
    }
    let body = match facts.body {
        BodyFraming::None | BodyFraming::Length(0) => Decoding::Done,
        BodyFraming::Length(n) => Decoding::Length(n),
        BodyFraming::Chunked => Decoding::Chunked(Chunk::Size),
    };
    let challenge = (method == "GET")
        .then(|| proxy.edge.challenges.http_answer(target))
        .flatten();
    let local = match (challenge, proto, proxy.edge.redirect_to) {
        (Some(key_authorization), ..) => Some(Local::Challenge(key_authorization)),
        (None, "http", Some(port)) => {
            super::super::edge::https_location(facts.host, target, port).map(Local::Redirect)
        }
        _ => None,
    };
    if local.is_none() && is_upgrade(fields) {
        return Parsed::Other(Next::Handoff);
    }
    // A close in any Connection line wins over a keep-alive in another,
    // as hyper reads them.
    let keep_alive = connection_options(fields, true).persists(http10);
    let sites = proxy.sites.load();
    // Baton's own answers need no app: the table is looked up only
    // without one.
    let routed = match local {
        Some(local) => Err(local),
        None => (sites.route(facts.host, target))
            .ok_or(Local::NoApp(crate::proxy::sites::no_app_status(proto))),
    };
    let logged = match &routed {
        Ok(site) => site.access.as_ref().map(|log| {
            let protocol = if http10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let opening = Opening::new(
                method.as_bytes(),
                raw_target,
                protocol,
                find(fields, b"referer"),
                find(fields, b"user-agent"),
            );
            Pending::new(log.clone(), opening)
        }),
        Err(_) => None,
    };
    let route = match routed {
        Ok(site) => {
            let target = site.target(target);
            match static_answer(site, method.as_bytes(), &target, fields) {
                Some(answer) => Route::Local(Local::Static(Box::new(answer))),
                None => {
                    let head = RequestHead::encode_raw(
                        method.as_bytes(),
                        &target,
                        &facts,
                        fields,
                        &proxy.rewrite(client, proto),
                    );
                    Route::Site(site.clone(), head)
                }
            }
        }
        Err(local) => Route::Local(local),
    };
    Parsed::Complete(
        len,
        Request {
            keep_alive,
            http10,
            body,
            expects_continue: body != Decoding::Done
                && !http10
                && find(fields, b"expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue")),
            route,
            logged,
        },
    )
}

/// Baton's answer when `target` is under the site's `[static] prefix`.
fn static_answer(
    site: &Site,
    method: &[u8],
    target: &[u8],
    fields: &[httparse::Header],
) -> Option<Answer> {
    let shelf = site.assets.shelf();
    let shelf = shelf.as_ref().as_ref()?;
    if !shelf.takes(target) {
        return None;
    }
    let field = |name: &[u8]| find(fields, name);
    Some(shelf.answer(&Ask {
        method,
        target,
        if_match: field(b"if-match"),
        if_none_match: field(b"if-none-match"),
        if_modified_since: field(b"if-modified-since"),
        if_unmodified_since: field(b"if-unmodified-since"),
        range: field(b"range"),
        if_range: field(b"if-range"),
        accept_encoding: field(b"accept-encoding"),
        deployment: field(b"x-deployment-id"),
    }))
}

/// Whether `read` has an empty line (the end of a head) that ends past
/// `from`.
fn ends_head(read: &[u8], from: usize) -> bool {
    let tail = &read[from.saturating_sub(3)..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
}

/// A request body read from the client's connection as the instance takes
/// it. The connection lends it its reading side and its buffer meanwhile,
/// and takes both back after the answer; what the client sent after the
/// body (a pipelined request) stays in the buffer.
struct ClientBody<R>(Arc<Mutex<Lent<R>>>);

/// What the connection lends a request body.
struct Lent<R> {
    reader: Option<R>,
    read: BytesMut,
    /// Where the body is in its framing.
    decoding: Decoding,
    /// `max_body_size`, which a chunked body is held to as it comes (a
    /// length over it was refused with the head).
    limit: Option<u64>,
    /// Body bytes read so far.
    received: u64,
    /// Longest silence of the client in the middle of its body.
    body_timeout: Duration,
    silence: Silence,
}

impl<R> Lent<R> {
    /// Whether the body has been read to its end.
    fn is_done(&self) -> bool {
        self.decoding == Decoding::Done
    }
}

fn lock<R>(lent: &Mutex<Lent<R>>) -> std::sync::MutexGuard<'_, Lent<R>> {
    lent.lock().expect("lent body lock poisoned")
}

impl<R: AsyncRead + Unpin + Send + 'static> Body for ClientBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let mut lent = lock(&self.0);
        let lent = &mut *lent;
        loop {
            match lent.decoding.step(&mut lent.read) {
                Ok(Step::Frame(frame)) => {
                    lent.received += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if lent.limit.is_some_and(|max| lent.received > max) {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::FileTooLarge,
                            "the request body is larger than max_body_size",
                        ))));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::NeedMore) => {}
                Err(e) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        e.to_string(),
                    ))))
                }
            }
            let Some(reader) = lent.reader.as_mut() else {
                return Poll::Ready(Some(Err(io::ErrorKind::NotConnected.into())));
            };
            lent.read.reserve(BODY_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(reader), cx, &mut lent.read) {
                Poll::Pending if lent.silence.expired(lent.body_timeout, cx) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "the client sent nothing of its body for {}",
                            humantime::format_duration(lent.body_timeout)
                        ),
                    ))))
                }
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed in the middle of the request body",
                    ))))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(_)) => lent.silence.heard(lent.body_timeout),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0).is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match lock(&self.0).decoding {
            Decoding::Length(left) => SizeHint::with_exact(left),
            Decoding::Done => SizeHint::with_exact(0),
            Decoding::Chunked(_) | Decoding::UntilClose => SizeHint::default(),
        }
    }
}

/// `n` in lowercase hex, written into `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain HTTP goes to the same host and target on HTTPS; a port in
    #[test]
    fn a_head_ends_at_an_empty_line() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(ends_head(head, 0));
        assert!(ends_head(head, head.len() - 1), "the CRLF before counts");
        assert!(!ends_head(&head[..head.len() - 1], 0));
        assert!(ends_head(b"GET / HTTP/1.0\n\n", 15));
        assert!(!ends_head(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
    }

    #[test]
    fn hex_sizes() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(255, &mut buf), b"ff");
        assert_eq!(hex(16 * 1024, &mut buf), b"4000");
        assert_eq!(hex(usize::MAX, &mut buf), b"ffffffffffffffff");
    }

    fn fields(raw: &'static [u8]) -> Vec<httparse::Header<'static>> {
        let mut slots = vec![httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut slots);
        req.parse(raw).unwrap();
        let n = req.headers.len();
        slots.truncate(n);
        slots
    }

    /// The length of the body Baton's own server reads, or `None` when it
    /// has none (chunked, or refused).
    fn body_length(fields: &[httparse::Header]) -> Option<u64> {
        match check_request(Protocol::Http11, b"POST", Some(b"x"), fields) {
            Ok(facts) => match facts.body {
                BodyFraming::None => Some(0),
                BodyFraming::Length(n) => Some(n),
                BodyFraming::Chunked => None,
            },
            Err(_) => None,
        }
    }

    #[test]
    fn only_a_clear_length_is_a_length_and_upgrades_go_to_hyper() {
        let plain = fields(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(body_length(&plain), Some(0));
        assert!(!is_upgrade(plain.as_slice()));
        let sized = fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(body_length(&sized), Some(5));
        let chunked = fields(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_length(&chunked), None);
        let both =
            fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(body_length(&both), None);
        let conflicting =
            fields(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert_eq!(body_length(&conflicting), None);
        let bad = fields(b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n");
        assert_eq!(body_length(&bad), None);
        let ws = fields(
            b"GET / HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(is_upgrade(ws.as_slice()));
        let named_only = fields(b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
        assert!(
            !is_upgrade(named_only.as_slice()),
            "Upgrade without Connection: upgrade is ignored"
        );
    }
}
