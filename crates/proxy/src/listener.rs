//! Accepting client connections: HTTP/1.1 and h2c on one port (Baton's own
//! HTTP/1.1 server first, hyper for the rest), the slowloris guard, and
//! graceful shutdown.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::h1::{self, server::ClientStream, server::Handoff};
use super::Proxy;
use crate::config::ProxyConfig;

/// Binds one public address. IPv6 sockets are IPv6-only so that `0.0.0.0`
/// and `[::]` can be listed side by side.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

fn builder(cfg: &ProxyConfig) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .keep_alive(true);
    // hyper's own limit is 100 and costs nothing; any other limit makes it
    // initialise a header array of that size for every request.
    if cfg.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        b.http1().max_headers(cfg.max_headers);
    }
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(cfg.max_header_bytes.min(u32::MAX as usize) as u32);
    b
}

/// Serves `listener` until `shutdown` fires, then lets open connections
/// finish their requests for up to `grace`. With `tls`, every connection
/// starts with a TLS handshake (within `header_read_timeout`).
///
/// A connection starts with Baton's own HTTP/1.1 server, which serves
/// every HTTP/1 request but an upgrade, and goes on with hyper for an
/// upgrade or h2 (h2c, or ALPN `h2` over TLS).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let builder = Arc::new(builder(&proxy.config));
    // For the benchmark's comparison only (bench/proxy.sh): every HTTP/1
    // connection served by hyper, Baton's own server left out.
    let own_http1 = std::env::var_os("BATON_HTTP1").is_none_or(|v| v != "hyper");
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e, &proxy.stats).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            proxy: proxy.clone(),
            client: super::headers::client_ip(peer),
            shutdown: shutdown.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            own_http1,
        };
        match &tls {
            None => connections.spawn(accepted.serve_plain(stream)),
            Some(tls) => connections.spawn(accepted.serve_tls(tls.clone(), stream)),
        };
        // One accept, then the connections already open get their turn,
        // as nginx's event loop does (multi_accept off): draining the whole
        // backlog first queues every new handshake ahead of the requests
        // waiting on open connections.
        tokio::task::yield_now().await;
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(grace, async {
        graceful.shutdown().await;
        connections.wait().await;
    })
    .await;
}

/// One accepted connection, with what serving it needs.
struct Accepted {
    proxy: Arc<Proxy>,
    client: HeaderValue,
    shutdown: CancellationToken,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    own_http1: bool,
}

impl Accepted {
    /// The rest of a connection: Baton's own HTTP/1.1 server first, then
    /// hyper for what it hands over; hyper from the start when
    /// `hyper_first` (h2 by ALPN, or the benchmark's `BATON_HTTP1=hyper`).
    async fn serve<S>(self, stream: S, hyper_first: bool)
    where
        S: ClientStream + AsyncRead + AsyncWrite + Unpin,
    {
        let served = if hyper_first {
            Some(Handoff {
                stream,
                read: Bytes::new(),
            })
        } else {
            let Accepted {
                proxy,
                client,
                shutdown,
                ..
            } = &self;
            h1::server::serve(proxy.clone(), stream, client.clone(), shutdown.clone()).await
        };
        let Some(handoff) = served else {
            return;
        };
        let timeout_reply = handoff.stream.socket_for_408();
        let Accepted {
            proxy,
            client,
            builder,
            watcher,
            ..
        } = self;
        serve_with_hyper(
            &builder,
            watcher,
            handoff,
            timeout_reply,
            proxy,
            client,
            S::PROTO,
        )
        .await;
    }

    async fn serve_plain(self, stream: TcpStream) {
        let hyper_first = !self.own_http1;
        self.serve(stream, hyper_first).await;
    }

    /// The handshake, then h2 (ALPN) with hyper, or HTTP/1.1 with Baton's
    /// own server. A client that does not finish its handshake within
    /// `header_read_timeout` is dropped, as one that does not finish a head.
    async fn serve_tls(self, tls: Arc<crate::tls::Tls>, stream: TcpStream) {
        let limit = self.proxy.config.header_read_timeout;
        let Some(stream) = tls.accept(stream, limit).await else {
            return;
        };
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        self.serve(stream, h2).await;
    }
}

/// After an accept failed: out of fds (EMFILE, ENFILE) or kernel memory,
/// the loop pauses before it tries again, as nginx does, and says so at
/// most every 10 s; the connections already open go on being served. Any
/// other failure (a client that reset before its accept) is only counted.
/// Without the pause the loop spun a core on 14,000 failed accepts a
/// second, each one failing again at once.
pub(crate) async fn accept_failed(e: &io::Error, stats: &super::ProxyStats) {
    /// Seconds on the coarse clock when the last warning went out.
    static WARNED_AT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    stats.accept_errors.fetch_add(1, Ordering::Relaxed);
    let exhausted = matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    );
    if !exhausted {
        return;
    }
    let now = super::h1::coarse_seconds();
    let last = WARNED_AT.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && WARNED_AT
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            "cannot accept connections: {e}; open connections are still served (baton_accept_errors_total counts the failures)"
        );
    }
    // A backoff, not a synchronisation: no event says when an fd frees up.
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// How long accepting pauses when the process is out of fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the rest of a connection with hyper.
///
/// `timeout_reply`: the connection's fd, for a 408 written past hyper when a
/// head is cut short by header_read_timeout (plain TCP only: on TLS the
/// bytes would have to go through the TLS state, which hyper holds).
pub(super) async fn serve_with_hyper<S>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    handoff: Handoff<S>,
    timeout_reply: Option<std::os::fd::OwnedFd>,
    proxy: Arc<Proxy>,
    client: HeaderValue,
    proto: crate::Proto,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = PartialHeadIo::new(handoff);
    let pending = io.pending.clone();
    let service = service_fn(move |req| {
        // Called here, not inside the future: see Proxy::handle.
        let response = proxy.clone().handle(req, client.clone(), proto);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        let timed_out = e
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout);
        if timed_out && pending.load(Ordering::Acquire) {
            if let Some(fd) = timeout_reply {
                reply_408(fd).await;
            }
        }
    }
}

/// A client that started a request head and did not finish it in time gets
/// a 408 before the close; an idle keep-alive connection is closed quietly.
async fn reply_408(fd: std::os::fd::OwnedFd) {
    let std = std::net::TcpStream::from(fd);
    let Ok(mut stream) = TcpStream::from_std(std) else {
        return;
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream
            .write_all(
                b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A client stream handed to hyper. The bytes Baton's own server read come
/// first, and it remembers whether a request head is half-read: set when
/// bytes arrive, cleared when a response is written.
struct PartialHeadIo<S> {
    read_first: Bytes,
    inner: S,
    pending: Arc<AtomicBool>,
}

impl<S> PartialHeadIo<S> {
    fn new(handoff: Handoff<S>) -> PartialHeadIo<S> {
        PartialHeadIo {
            pending: Arc::new(AtomicBool::new(!handoff.read.is_empty())),
            read_first: handoff.read,
            inner: handoff.stream,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PartialHeadIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_first.is_empty() {
            let n = self.read_first.len().min(buf.remaining());
            buf.put_slice(&self.read_first.split_to(n));
            self.pending.store(true, Ordering::Release);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.pending.store(true, Ordering::Release);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PartialHeadIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.store(false, Ordering::Release);
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.pending.store(false, Ordering::Release);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
