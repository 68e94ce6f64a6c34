//! Upgraded connections (WebSocket over HTTP/1.1 Upgrade). Hyper hands an
//! upgraded connection over and forgets it, so Baton tracks each tunnel
//! itself: counted per instance, kept through a deploy until it closes on
//! its own or the instance's connection drain ends it, and closed politely:
//! a WebSocket client gets close frame 1001 "going away" so it reconnects,
//! and the reconnect lands on the new release.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::TakeOnPoll;
use super::upstream::Upstream;
use super::websocket::{close_frame, FrameTracker};
use super::{error_chain, AttemptError, Proxy};

/// After the drain ends a tunnel, how long the current frame may take to
/// finish before the close frame goes out anyway.
const FRAME_GRACE: Duration = Duration::from_secs(5);

/// Relay buffer per direction.
const RELAY_BUF: usize = 4096;

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
/// handed over, and relays bytes both ways until either side closes, the
/// instance's connection drain ends, or the proxy shuts down.
pub(super) fn spawn(
    proxy: Arc<Proxy>,
    client: OnUpgrade,
    instance: OnUpgrade,
    upstream: Arc<Upstream>,
    websocket: bool,
) {
    let counted = upstream.begin_connection();
    let closing = proxy.closing.clone();
    tokio::spawn(async move {
        let _counted = counted;
        let (Ok(client), Ok(instance)) = tokio::join!(client, instance) else {
            return;
        };
        let client = TokioIo::new(client);
        let instance = TokioIo::new(instance);
        let end = async {
            tokio::select! {
                _ = closing.cancelled() => {}
                _ = upstream.connections_closing().cancelled() => {}
            }
        };
        relay(client, instance, websocket, end).await;
    });
}

async fn relay(
    client: TokioIo<Upgraded>,
    instance: TokioIo<Upgraded>,
    websocket: bool,
    end: impl std::future::Future<Output = ()>,
) {
    let (mut client_rd, mut client_wr) = tokio::io::split(client);
    let (mut inst_rd, mut inst_wr) = tokio::io::split(instance);
    let mut tracker = FrameTracker::default();
    // Small buffers: an idle WebSocket should cost little, and thousands
    // of them may sit open.
    let mut buf = vec![0u8; RELAY_BUF];
    let drained = {
        let upstream_to_client = async {
            loop {
                let n = inst_rd.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<_, std::io::Error>(());
                }
                tracker.feed(&buf[..n]);
                client_wr.write_all(&buf[..n]).await?;
            }
        };
        let mut client_buffered = tokio::io::BufReader::with_capacity(RELAY_BUF, &mut client_rd);
        let client_to_upstream = tokio::io::copy_buf(&mut client_buffered, &mut inst_wr);
        tokio::select! {
            _ = upstream_to_client => false,
            _ = client_to_upstream => false,
            _ = end => true,
        }
    };
    if !drained {
        return;
    }
    // The drain ended this tunnel. Let the frame in progress finish, then
    // say goodbye: 1001 to a WebSocket client, FIN to anything else.
    if websocket {
        let finish = async {
            while !tracker.at_boundary() {
                let n = inst_rd.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let cut = boundary_within(&mut tracker, &buf[..n]);
                client_wr.write_all(&buf[..cut]).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let _ = tokio::time::timeout(FRAME_GRACE, finish).await;
        let _ = client_wr.write_all(&close_frame(1001, "going away")).await;
    }
    let _ = client_wr.shutdown().await;
    let _ = inst_wr.shutdown().await;
    // Give the client a moment to answer the close before the socket goes.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(n) = client_rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Feeds `data` up to the next frame boundary; returns how many bytes that was.
fn boundary_within(tracker: &mut FrameTracker, data: &[u8]) -> usize {
    for i in 0..data.len() {
        tracker.feed(&data[i..=i]);
        if tracker.at_boundary() {
            return i + 1;
        }
    }
    data.len()
}

/// Relays a raw TCP connection (L4 mode) until either side closes or the
/// drain ends it with a FIN both ways.
pub(crate) async fn relay_tcp<A, B>(
    mut client: A,
    mut instance: B,
    end: impl std::future::Future<Output = ()>,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut instance) => {}
        _ = end => {
            let _ = client.shutdown().await;
            let _ = instance.shutdown().await;
        }
    }
}
