//! One instance as the proxy sees it: its address and the counts a drain
//! waits on.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

pub use crate::protocol::Counts;

/// An instance's address and live counters. Shared by the route table, the
/// supervisor and the deploy code.
#[derive(Debug)]
pub struct Upstream {
    /// Instance id, `web#3`.
    pub id: Arc<str>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `127.0.0.1:<port>` for request URIs.
    pub authority: http::uri::Authority,
    /// Idle keep-alive connections to it.
    pub pool: super::pool::IdleList,
    in_flight: AtomicUsize,
    connections: AtomicUsize,
    pooled: AtomicUsize,
    served: AtomicU64,
    down: AtomicBool,
    draining: AtomicBool,
    closing: tokio_util::sync::CancellationToken,
    /// Woken whenever the requests or the connections here drop to zero, so
    /// a drain reacts to the last one instead of polling.
    finished: tokio::sync::Notify,
    /// Named L4 ports (`[tcp.<name>]`), as `(name, port)`.
    pub tcp_ports: Vec<(String, u16)>,
    /// The release it runs (for access logs).
    pub release: Arc<str>,
    /// Timeouts in the current `fail_timeout` window (see
    /// [`Upstream::record_failure`]).
    failures: std::sync::Mutex<Failures>,
    /// Times taken out of rotation for timeouts since its last answer.
    benched: std::sync::atomic::AtomicU32,
}

/// Recent timeouts of one instance.
#[derive(Debug, Default)]
struct Failures {
    count: u32,
    since: Option<std::time::Instant>,
}

impl Upstream {
    /// A fresh upstream on a loopback port.
    pub fn new(id: Arc<str>, port: u16) -> Upstream {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Upstream {
            id,
            addr,
            authority: addr
                .to_string()
                .parse()
                .expect("a socket address is an authority"),
            pool: Default::default(),
            in_flight: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            pooled: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            down: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closing: tokio_util::sync::CancellationToken::new(),
            finished: tokio::sync::Notify::new(),
            tcp_ports: Vec::new(),
            release: "".into(),
            failures: Default::default(),
            benched: Default::default(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Upgraded connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// All counters.
    pub fn counts(&self) -> Counts {
        Counts {
            in_flight: self.in_flight(),
            connections: self.connections(),
            upstream_connections: self.pooled.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
        }
    }

    /// Passive health said it refuses connections.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Sets the passive-health flag; returns the previous value.
    pub fn set_down(&self, down: bool) -> bool {
        self.down.swap(down, Ordering::AcqRel)
    }

    /// Counts a timeout; true when it is the `max_fails`-th within
    /// `window` (and the count starts over).
    pub(crate) fn record_failure(&self, max_fails: u32, window: std::time::Duration) -> bool {
        let mut failures = self.failures.lock().expect("failures lock poisoned");
        let now = std::time::Instant::now();
        if failures
            .since
            .is_none_or(|t| now.duration_since(t) > window)
        {
            *failures = Failures {
                count: 0,
                since: Some(now),
            };
        }
        failures.count += 1;
        if failures.count >= max_fails.max(1) {
            *failures = Failures::default();
            return true;
        }
        false
    }

    /// Counts one more time out of rotation for timeouts; returns how many
    /// since its last answer.
    pub(crate) fn bench(&self) -> u32 {
        self.benched.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// It answered: it is not one that stays bad.
    pub(crate) fn answered(&self) {
        // Read first: the common case writes nothing to the shared line.
        if self.benched.load(Ordering::Relaxed) != 0 {
            self.benched.store(0, Ordering::Relaxed);
        }
    }

    /// A deploy took it out of rotation.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks it draining, or back in service.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Release);
    }

    /// Cancelled when the connection drain of this instance ends: its
    /// tunnels close (WebSocket 1001, TCP FIN).
    pub fn connections_closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.closing
    }

    /// Waits until `count` (of this upstream) is 0, or `deadline`; says
    /// whether it got to 0.
    pub async fn wait_until_zero(
        &self,
        count: impl Fn(&Upstream) -> usize,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            let finished = self.finished.notified();
            tokio::pin!(finished);
            // Registered before the check, so an end in between still wakes us.
            finished.as_mut().enable();
            if count(self) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return count(self) == 0;
            }
        }
    }

    /// The port of L4 service `name`.
    pub(crate) fn tcp_port(&self, name: &str) -> Option<u16> {
        self.tcp_ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }

    /// Counts one request until the guard is dropped (when the response body
    /// has been sent in full, or abandoned).
    pub(crate) fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }

    /// Counts one pooled HTTP connection until the guard is dropped.
    pub(crate) fn begin_pooled(self: &Arc<Self>) -> PooledGuard {
        self.pooled.fetch_add(1, Ordering::AcqRel);
        PooledGuard(self.clone())
    }

    /// Counts one upgraded connection until the guard is dropped.
    pub(crate) fn begin_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::AcqRel);
        ConnectionGuard(self.clone())
    }
}

/// Holds one request in an upstream's in-flight count.
#[derive(Debug)]
pub(crate) struct RequestGuard(Arc<Upstream>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.served.fetch_add(1, Ordering::Relaxed);
        // A drain waits for zero; only that change is worth a wake-up.
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.finished.notify_waiters();
        }
    }
}

/// Holds one pooled connection in an upstream's count.
#[derive(Debug)]
pub(crate) struct PooledGuard(Arc<Upstream>);

impl Drop for PooledGuard {
    fn drop(&mut self) {
        self.0.pooled.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one upgraded connection in an upstream's connection count.
#[derive(Debug)]
pub(crate) struct ConnectionGuard(Arc<Upstream>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.finished.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A drain wakes when the last request ends, and gives up at its deadline.
    #[tokio::test(start_paused = true)]
    async fn wait_until_zero_reacts_to_the_last_request() {
        let up = Arc::new(Upstream::new("web#1".into(), 1));
        let first = up.begin_request();
        let second = up.begin_request();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let waiter = {
            let up = up.clone();
            tokio::spawn(async move { up.wait_until_zero(Upstream::in_flight, deadline).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one request is still in flight");
        drop(second);
        assert!(waiter.await.unwrap());
        let _held = up.begin_request();
        let soon = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(!up.wait_until_zero(Upstream::in_flight, soon).await);
    }
}
