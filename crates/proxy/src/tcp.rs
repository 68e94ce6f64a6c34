//! L4 mode: `[tcp.<name>]` proxies raw TCP from a public address to the
//! port each instance got as `PORT_<NAME>`, for protocols that are not HTTP.
//! New connections go to the current release; established ones stay with
//! their instance through a deploy, until they close or its connection
//! drain ends them with a FIN.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Proxy;

/// Connecting to an instance's L4 port may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves L4 service `name` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    name: String,
    router: Arc<super::router::Router>,
    proxy: Arc<Proxy>,
    shutdown: CancellationToken,
) {
    loop {
        let (client, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    super::listener::accept_failed(&e, &proxy.stats).await;
                    continue;
                }
            },
        };
        let _ = client.set_nodelay(true);
        let proxy = proxy.clone();
        let router = router.clone();
        let name = name.clone();
        let closing = proxy.closing.clone();
        tokio::spawn(async move {
            let mut tried: Vec<Arc<str>> = Vec::new();
            for _ in 0..=proxy.config.retries {
                let Ok(upstream) = router.pick_or_hold(&tried, proxy.config.hold_timeout).await
                else {
                    return;
                };
                let Some(port) = upstream.tcp_port(&name) else {
                    return;
                };
                let connect = TcpStream::connect(("127.0.0.1", port));
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(instance)) => {
                        let _ = instance.set_nodelay(true);
                        let _counted = upstream.begin_connection();
                        let end = async {
                            tokio::select! {
                                _ = closing.cancelled() => {}
                                _ = upstream.connections_closing().cancelled() => {}
                            }
                        };
                        super::tunnel::relay_tcp(client, instance, end).await;
                        return;
                    }
                    _ => tried.push(upstream.id.clone()),
                }
            }
        });
    }
}
