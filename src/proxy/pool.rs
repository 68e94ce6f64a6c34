//! Keep-alive HTTP/1.1 connections to instances, one idle list per
//! instance.
//!
//! A connection goes back to its list only once its response body has been
//! read to the end, and is never reused after `upstream_idle_timeout`, which
//! stays below the app's own keep-alive timeout: Node closes idle sockets
//! after 5 s, and a request sent on a socket at that instant meets a reset.
//! A request that a dead pooled connection could not even take comes back
//! unsent (hyper's `try_send_request`) and goes out on another connection,
//! so that race costs nothing, not even a retry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::TakeOnPoll;
use super::upstream::Upstream;
use super::{error_chain, AttemptError};

/// Most idle connections kept per instance.
const MAX_IDLE: usize = 512;
/// How long connecting to an instance on loopback may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One idle connection.
pub struct Idle {
    sender: SendRequest<TakeOnPoll>,
    since: Instant,
}

/// The idle list of one instance.
#[derive(Default)]
pub struct IdleList(std::sync::Mutex<Vec<Idle>>);

impl std::fmt::Debug for IdleList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdleList")
    }
}

impl IdleList {
    fn pop(&self) -> Option<Idle> {
        self.0.lock().expect("pool lock poisoned").pop()
    }

    /// Puts a connection whose last response was read in full back.
    pub fn put(&self, sender: SendRequest<TakeOnPoll>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock().expect("pool lock poisoned");
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes every idle connection (the instance is going away).
    pub fn clear(&self) {
        self.0.lock().expect("pool lock poisoned").clear();
    }
}

/// Sends `req` to `upstream` on an idle connection or a new one. On success
/// the connection comes back with the response; return it to the idle list
/// once the body has been read.
///
/// # Errors
/// [`AttemptError::Connect`] when no connection could be made (nothing was
/// sent), [`AttemptError::Exchange`] when the exchange broke.
pub(super) async fn send(
    upstream: &Arc<Upstream>,
    mut req: Request<TakeOnPoll>,
    idle_timeout: Duration,
) -> Result<(Response<Incoming>, SendRequest<TakeOnPoll>), AttemptError> {
    while let Some(mut idle) = upstream.pool.pop() {
        if idle.since.elapsed() >= idle_timeout || idle.sender.ready().await.is_err() {
            continue;
        }
        match idle.sender.try_send_request(req).await {
            Ok(resp) => return Ok((resp, idle.sender)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => {
                    return Err(AttemptError::Exchange(
                        upstream.id.clone(),
                        error_chain(&e.into_error()),
                    ))
                }
            },
        }
    }
    let mut sender = connect(upstream).await?;
    sender
        .try_send_request(req)
        .await
        .map(|resp| (resp, sender))
        .map_err(|e| AttemptError::Exchange(upstream.id.clone(), error_chain(&e.into_error())))
}

async fn connect(upstream: &Arc<Upstream>) -> Result<SendRequest<TakeOnPoll>, AttemptError> {
    let id = &upstream.id;
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream.addr)).await {
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
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AttemptError::Connect(id.clone(), error_chain(&e)))?;
    let open = upstream.begin_pooled();
    tokio::spawn(async move {
        let _open = open;
        let _ = conn.await;
    });
    Ok(sender)
}
