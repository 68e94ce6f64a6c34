//! Keep-alive HTTP/1.1 connections to instances, one idle list per
//! instance.
//!
//! A connection goes back to its list only once its response body has been
//! read to the end, and is never reused after `upstream_idle_timeout`, which
//! stays below the app's own keep-alive timeout: Node closes idle sockets
//! after 5 s. A connection the instance closed while it sat idle is noticed
//! before use. When one closes just as a request goes out on it, an
//! idempotent request is sent again on another connection (when its body
//! was never read), and any request is when none of it was written (see
//! [`send`]): that race costs nothing, not even a retry.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::body::Parked;
use super::h1::{self, Answer, Conn, ExchangeError, RequestHead};
use super::upstream::Upstream;
use super::AttemptError;
use crate::config::ExchangeLimits;

/// Most idle connections kept per instance.
const MAX_IDLE: usize = 512;

/// The idle list of one instance.
#[derive(Default)]
pub struct IdleList(std::sync::Mutex<Idle>);

/// The idle connections, and whether the list still takes any.
#[derive(Default)]
#[allow(
    clippy::vec_box,
    reason = "a connection keeps its box from connect to close; an answer moves it as a pointer"
)]
struct Idle {
    conns: Vec<Box<Conn>>,
    /// Cleared for good: the instance is leaving. A connection handed back
    /// later (its answer was still streaming) is closed, not kept: it
    /// would hold its instance's `Upstream` alive through its guard, and
    /// its socket open in CLOSE-WAIT, for as long as the daemon runs.
    closed: bool,
}

impl std::fmt::Debug for IdleList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleList")
    }
}

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.0.lock().expect("pool lock poisoned")
    }

    /// The most recently used connection that can still take a request;
    /// `strict` asks the kernel whether it is still open (see
    /// [`Conn::is_quiet_now`]) instead of trusting the last readiness.
    fn pop_reusable(&self, idle_timeout: Duration, strict: bool) -> Option<Box<Conn>> {
        loop {
            let conn = self.lock().conns.pop()?;
            if conn.is_reusable(idle_timeout) && (!strict || conn.is_quiet_now()) {
                return Some(conn);
            }
        }
    }

    /// Puts a connection whose last exchange ended cleanly back, unless
    /// the list was closed.
    pub(crate) fn put(&self, conn: Box<Conn>) {
        let mut idle = self.lock();
        if !idle.closed && idle.conns.len() < MAX_IDLE {
            idle.conns.push(conn);
        }
    }

    /// Closes every idle connection and takes no more (the instance is
    /// going away).
    pub fn clear(&self) {
        let conns = {
            let mut idle = self.lock();
            idle.closed = true;
            std::mem::take(&mut idle.conns)
        };
        drop(conns);
    }

    /// How many connections sit idle.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().conns.len()
    }

    /// Whether none does.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sends a request to `upstream` on an idle connection or a new one, and
/// returns the response once its head has arrived.
///
/// The keep-alive race: an instance may close an idle connection just as a
/// request goes out on it. When the close came before the write, nothing
/// reached the instance, and the request goes out again on another
/// connection, whatever its method: the kernel says so, either before the
/// write (a non-idempotent request's connection is checked with a peek
/// just before, [`Conn::is_quiet_now`]) or at it (the write fails before
/// its first byte, [`ExchangeError::NotSent`]). When the connection closes
/// unanswered *after* the write, the instance may have closed it idle as
/// the request arrived, or read the request, acted on it and died: nothing
/// Baton can see tells these apart (both end in a FIN or a reset with no
/// answer byte). An idempotent request goes again; any other fails with
/// 502, as nginx's `proxy_next_upstream` does without `non_idempotent`.
/// What keeps that window small: `upstream_idle_timeout` below the apps'
/// keep-alive, so an instance does not close connections Baton may use,
/// and a retired instance's idle list is cleared before it is stopped.
///
/// # Errors
/// [`AttemptError::Connect`] when nothing was sent (no connection could be
/// made, or it broke before the first byte), [`AttemptError::Exchange`]
/// when the exchange broke after the request went out.
pub(super) async fn send(
    upstream: &Arc<Upstream>,
    head: &RequestHead,
    body: &Parked,
    limits: &ExchangeLimits,
) -> Result<Answer, AttemptError> {
    loop {
        let strict = !head.idempotent;
        let (conn, reused) = match upstream.pool.pop_reusable(limits.idle, strict) {
            Some(conn) => (conn, true),
            // Boxed: connecting is rare next to reuse, and its future is
            // large.
            None => (Box::pin(connect(upstream, limits.connect)).await?, false),
        };
        match h1::exchange(conn, head, body.attempt(), upstream, limits).await {
            Ok(resp) => return Ok(resp),
            Err(ExchangeError::NotSent(_)) if reused => continue,
            Err(ExchangeError::NotSent(why)) => {
                return Err(AttemptError::Connect(upstream.id.clone(), why))
            }
            Err(ExchangeError::Unanswered(_)) if reused && head.idempotent && body.untouched() => {
                continue
            }
            Err(ExchangeError::ClientBody(why, status)) => {
                return Err(AttemptError::ClientBody(why, status))
            }
            Err(ExchangeError::TimedOut(why)) => {
                return Err(AttemptError::TimedOut(upstream.id.clone(), why))
            }
            Err(e) => return Err(AttemptError::Exchange(upstream.id.clone(), e.to_string())),
        }
    }
}

async fn connect(upstream: &Arc<Upstream>, limit: Duration) -> Result<Box<Conn>, AttemptError> {
    let id = &upstream.id;
    let stream = match tokio::time::timeout(limit, TcpStream::connect(upstream.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(AttemptError::Connect(id.clone(), e.to_string())),
        Err(_) => {
            return Err(AttemptError::Connect(
                id.clone(),
                "connect timed out".into(),
            ))
        }
    };
    let _ = stream.set_nodelay(true);
    Ok(Box::new(Conn::new(stream, upstream.begin_pooled())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::BodyFraming;
    use crate::headers::Rewrite;
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the instance does with the `n`th request on its `c`th connection.
    enum Act {
        Answer,
        CloseUnanswered,
    }

    /// A raw instance: answers each request with the number of the
    /// connection it came on, or closes as `script(conn, request)` says.
    async fn instance(script: fn(usize, usize) -> Act) -> Arc<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for conn in 1.. {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    for request in 1.. {
                        head.clear();
                        while !head.ends_with(b"\r\n\r\n") {
                            let mut byte = [0u8];
                            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            head.push(byte[0]);
                        }
                        match script(conn, request) {
                            Act::Answer => {
                                let body = format!("conn {conn}");
                                let answer = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                s.write_all(answer.as_bytes()).await.unwrap();
                            }
                            Act::CloseUnanswered => return,
                        }
                    }
                });
            }
        });
        Arc::new(Upstream::new("web#1".into(), port))
    }

    async fn get(upstream: &Arc<Upstream>) -> Result<String, AttemptError> {
        call(upstream, http::Method::GET).await
    }

    /// A bodiless request with `method`, and the answer's body.
    async fn call(upstream: &Arc<Upstream>, method: http::Method) -> Result<String, AttemptError> {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri("/")
            .body(())
            .unwrap()
            .into_parts();
        parts.headers.insert("host", "x".parse().unwrap());
        let body = Parked::default();
        let client = HeaderValue::from_static("127.0.0.1");
        let rewrite = Rewrite {
            client: &client,
            proto: crate::Proto::Http,
            trust: false,
        };
        let head = RequestHead::encode(parts, &rewrite, BodyFraming::None);
        let limits = crate::config::ProxyConfig::default().exchange_limits();
        let resp = send(upstream, &head, &body, &limits).await?;
        let body = resp.body.collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    /// A retired instance's list takes no connection back: one that comes
    /// back after the clear (its answer was still streaming) is closed,
    /// not kept open for the daemon's lifetime (issue 20: 118 sockets in
    /// CLOSE-WAIT after 20 deploys).
    #[tokio::test]
    async fn a_cleared_list_closes_what_comes_back() {
        let up = instance(|_, _| Act::Answer).await;
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        assert_eq!(up.pool.len(), 1);
        up.pool.clear();
        assert!(up.pool.is_empty());
        assert_eq!(get(&up).await.unwrap(), "conn 2");
        assert!(up.pool.is_empty(), "handed back after the clear");
        assert_eq!(up.counts().upstream_connections, 0, "and closed");
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read() {
        let up = instance(|_, _| Act::Answer).await;
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        assert_eq!(up.counts().upstream_connections, 1);
    }

    /// Node closing a keep-alive socket just as a request arrives on it:
    /// the request goes out again on a new connection, with no error.
    #[tokio::test]
    async fn a_reused_connection_closed_under_a_request_is_replaced() {
        let up = instance(|conn, request| match (conn, request) {
            (1, 2) => Act::CloseUnanswered,
            _ => Act::Answer,
        })
        .await;
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        assert_eq!(get(&up).await.unwrap(), "conn 2");
    }

    /// Issue 32: a POST on a reused connection that closes unanswered after
    /// the request went out may have been acted on (the instance read it,
    /// then died): it is the caller's failure, not sent again.
    #[tokio::test]
    async fn a_post_is_not_sent_again_on_a_connection_closed_under_it() {
        let up = instance(|conn, request| match (conn, request) {
            (1, 2) => Act::CloseUnanswered,
            _ => Act::Answer,
        })
        .await;
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        let sent = call(&up, http::Method::POST).await;
        assert!(matches!(sent, Err(AttemptError::Exchange(..))), "{sent:?}");
    }

    /// A connection the instance closed before the request is found closed
    /// before the write: a POST goes out on a fresh one, as a GET would.
    #[tokio::test]
    async fn a_post_takes_a_fresh_connection_when_the_idle_one_was_closed() {
        // On a thread of its own, so that it closes while this runtime's
        // task spins (below).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let up = Arc::new(Upstream::new(
            "web#1".into(),
            listener.local_addr().unwrap().port(),
        ));
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in 1..=2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut head = Vec::new();
                for request in 1.. {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8];
                        if s.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    if (conn, request) == (1, 2) {
                        break;
                    }
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nconn {conn}");
                    s.write_all(answer.as_bytes()).unwrap();
                }
            }
        });
        assert_eq!(get(&up).await.unwrap(), "conn 1");
        // The instance closes connection 1 once it reads the next head.
        let probe = up.pool.pop_reusable(Duration::from_secs(60), true).unwrap();
        probe
            .write_for_test(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        // Waited for without an await: the runtime's reactor does not run,
        // so tokio's readiness has not seen the close (as on a busy
        // runtime), and only the kernel's answer to a peek tells.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while probe.is_quiet_now() {
            assert!(std::time::Instant::now() < deadline, "the close never came");
            std::thread::yield_now();
        }
        up.pool.put(probe);
        assert_eq!(call(&up, http::Method::POST).await.unwrap(), "conn 2");
    }

    /// A new connection that closes unanswered is the instance's failure,
    /// not a race: the caller hears of it.
    #[tokio::test]
    async fn a_fresh_connection_closed_unanswered_is_an_error() {
        let up = instance(|_, _| Act::CloseUnanswered).await;
        assert!(matches!(get(&up).await, Err(AttemptError::Exchange(..))));
    }
}
