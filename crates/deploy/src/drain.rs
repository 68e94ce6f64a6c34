//! Waiting on instances: drained of requests and connections, gone,
//! staying up.

use crate::phase::Phase;
use crate::proxy::upstream::Upstream;
use crate::release::Release;
use crate::runtime::Runtime;
use crate::supervisor::{Instance, State};
use crate::*;
use std::sync::Arc;
use std::time::Duration;

/// The background half of a drain: waits until `instances` hold no
/// upgraded or TCP connection, or `timeout`; then closes what is left
/// politely and stops them.
pub(crate) async fn drain_connections<R: Runtime>(
    app: Arc<R>,
    instances: Vec<Instance>,
    timeout: Duration,
) {
    let open = || {
        instances
            .iter()
            .map(|i| i.upstream.connections())
            .sum::<usize>()
    };
    wait_disconnected(&*app, &instances, tokio::time::Instant::now() + timeout).await;
    if open() > 0 {
        tracing::info!(
            "connection_drain_timeout: closing {} connections of old instances",
            open()
        );
        for i in &instances {
            i.upstream.connections_closing().cancel();
        }
        // Each tunnel finishes its frame, says 1001 and waits a little for
        // the client's answer: bounded by the tunnel's own grace times.
        let closed_by = tokio::time::Instant::now() + Duration::from_secs(10);
        wait_disconnected(&*app, &instances, closed_by).await;
    }
    stop_all(&instances).await;
    app.forget_drained(&instances);
}

pub(crate) fn in_flight(instances: &[Instance]) -> usize {
    instances.iter().map(|i| i.upstream.in_flight()).sum()
}

/// Resolves `Ok` once every instance has stayed ready for `window`, or
/// `Err` with the first one that left the ready state, and why.
pub(crate) async fn stays_up(instances: &[Instance], window: Duration) -> Result<(), String> {
    match tokio::time::timeout(window, first_to_leave(instances)).await {
        Ok(why) => Err(why),
        Err(_) => Ok(()),
    }
}

/// Replaces `app`'s singletons with `release`'s, each step reported.
pub(crate) async fn hand_over_singletons(
    app: &impl Runtime,
    release: &Release,
    reporter: &Reporter,
) {
    let report = |m| reporter.step(Phase::Switching, m);
    app.replace_singletons(release, &report).await;
}

/// Resolves when one of `instances` is no longer ready, saying which and
/// why (`web#3 exited with code 1`).
pub(crate) async fn first_to_leave(instances: &[Instance]) -> String {
    let leaves = instances.iter().map(|i| {
        Box::pin(async move {
            let s = i.wait_for(|s| !matches!(s.state, State::Ready)).await;
            format!("{} {}", i.id, s.reason.unwrap_or_else(|| "stopped".into()))
        })
    });
    futures_util::future::select_all(leaves).await.0
}

/// Waits until the proxy counts no request in flight on `instances`, or
/// `timeout` passes.
pub(crate) async fn wait_drained(instances: &[Instance], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for i in instances {
        i.upstream
            .wait_until_zero(Upstream::in_flight, deadline)
            .await;
    }
}

/// Waits until `instances` hold no upgraded, SSE or TCP connection, or
/// `deadline`, or the daemon stops.
pub(crate) async fn wait_disconnected(
    app: &impl Runtime,
    instances: &[Instance],
    deadline: tokio::time::Instant,
) {
    let all = async {
        for i in instances {
            i.upstream
                .wait_until_zero(Upstream::connections, deadline)
                .await;
        }
    };
    tokio::select! {
        _ = all => {}
        _ = app.stopping().cancelled() => {}
    }
}

pub(crate) async fn stop_all(instances: &[Instance]) {
    futures_util::future::join_all(instances.iter().map(Instance::stop)).await;
}
