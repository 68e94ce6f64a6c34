//! Upgraded connections (WebSocket over HTTP/1.1 Upgrade). Hyper hands an
//! upgraded connection over and forgets it, so Baton tracks each tunnel
//! itself: counted per instance, closed at shutdown.

use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::TakeOnPoll;
use super::upstream::Upstream;
use super::{error_chain, AttemptError, Proxy};

/// Sends an upgrade request on a connection of its own (never pooled).
pub(super) async fn send_upgrade(
    req: Request<TakeOnPoll>,
    upstream: &Upstream,
) -> Result<Response<Incoming>, AttemptError> {
    let id = upstream.id.clone();
    let stream = TcpStream::connect(upstream.addr)
        .await
        .map_err(|e| AttemptError::Connect(id.clone(), e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AttemptError::Exchange(id.clone(), error_chain(&e)))?;
    tokio::spawn(conn.with_upgrades());
    sender
        .send_request(req)
        .await
        .map_err(|e| AttemptError::Exchange(id, error_chain(&e)))
}

/// Joins the client's and the instance's upgraded streams once both are
/// handed over, and copies bytes both ways until either side closes or the
/// proxy shuts down.
pub(super) fn spawn(
    proxy: Arc<Proxy>,
    client: OnUpgrade,
    instance: OnUpgrade,
    upstream: Arc<Upstream>,
) {
    let counted = upstream.begin_connection();
    let closing = proxy.closing.clone();
    proxy.tunnels.spawn(async move {
        let _counted = counted;
        let (Ok(client), Ok(instance)) = tokio::join!(client, instance) else {
            return;
        };
        let mut client = TokioIo::new(client);
        let mut instance = TokioIo::new(instance);
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut instance) => {}
            _ = closing.cancelled() => {}
        }
    });
}
