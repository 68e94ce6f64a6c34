//! The route table: which instances take new requests. Immutable, swapped
//! whole with `arc-swap`, so a request sees either the old set or the new
//! one, never half of each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::upstream::Upstream;
use crate::config::Balance;

/// One published set of instances.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Ready instances, in a stable order.
    pub instances: Vec<Arc<Upstream>>,
}

/// Why no instance could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoInstance {
    /// Nothing became ready within `hold_timeout`.
    HoldTimeout,
    /// Too many requests are already waiting.
    HoldFull,
}

/// The router: the current table, and a way to wait for the next one.
pub struct Router {
    table: ArcSwap<RouteTable>,
    version: watch::Sender<u64>,
    next: AtomicUsize,
    balance: Balance,
    hold: Semaphore,
}

impl Router {
    /// An empty router.
    pub fn new(balance: Balance, hold_capacity: usize) -> Router {
        Router {
            table: ArcSwap::from_pointee(RouteTable::default()),
            version: watch::channel(0).0,
            next: AtomicUsize::new(0),
            balance,
            hold: Semaphore::new(hold_capacity),
        }
    }

    /// Swaps in a new table and wakes requests waiting for one.
    pub fn publish(&self, instances: Vec<Arc<Upstream>>) {
        self.table.store(Arc::new(RouteTable { instances }));
        self.version.send_modify(|v| *v += 1);
    }

    /// Wakes waiters and re-reads health flags without changing the set.
    pub fn republish(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The current table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Picks an instance that is not down and not in `tried`; falls back to
    /// one in `tried` when nothing else is left.
    pub fn pick(&self, tried: &[Arc<str>]) -> Option<Arc<Upstream>> {
        let table = self.table.load();
        let healthy = || table.instances.iter().filter(|u| !u.is_down());
        let fresh: Vec<&Arc<Upstream>> = healthy().filter(|u| !tried.contains(&u.id)).collect();
        let candidates = if fresh.is_empty() {
            healthy().collect()
        } else {
            fresh
        };
        if candidates.is_empty() {
            return None;
        }
        // Starting point rotates so that ties spread out.
        let start = self.next.fetch_add(1, Ordering::Relaxed) % candidates.len();
        let rotated = candidates.iter().cycle().skip(start).take(candidates.len());
        match self.balance {
            Balance::RoundRobin => rotated.into_iter().next().map(|u| (*u).clone()),
            Balance::LeastOutstanding => {
                rotated.min_by_key(|u| u.in_flight()).map(|u| (*u).clone())
            }
        }
    }

    /// Picks an instance, waiting up to `hold` for one to become ready.
    ///
    /// # Errors
    /// [`NoInstance`] when the hold queue is full or the wait timed out.
    pub async fn pick_or_hold(
        &self,
        tried: &[Arc<str>],
        hold: Duration,
    ) -> Result<Arc<Upstream>, NoInstance> {
        let mut changes = self.version.subscribe();
        if let Some(u) = self.pick(tried) {
            return Ok(u);
        }
        let _permit = self.hold.try_acquire().map_err(|_| NoInstance::HoldFull)?;
        let deadline = Instant::now() + hold;
        loop {
            if let Some(u) = self.pick(tried) {
                return Ok(u);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(NoInstance::HoldTimeout),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(id: &str, port: u16) -> Arc<Upstream> {
        Arc::new(Upstream::new(id.into(), port))
    }

    /// Least-outstanding picks the instance with the fewest requests in flight.
    #[test]
    fn least_outstanding_prefers_idle() {
        let r = Router::new(Balance::LeastOutstanding, 10);
        let (a, b) = (up("web#1", 1), up("web#2", 2));
        r.publish(vec![a.clone(), b.clone()]);
        let _busy = a.begin_request();
        for _ in 0..4 {
            assert_eq!(&*r.pick(&[]).unwrap().id, "web#2");
        }
    }

    /// Instances marked down by passive health are skipped; tried ones only
    /// when nothing else is left.
    #[test]
    fn skips_down_and_tried() {
        let r = Router::new(Balance::RoundRobin, 10);
        let (a, b) = (up("web#1", 1), up("web#2", 2));
        r.publish(vec![a.clone(), b.clone()]);
        a.set_down(true);
        for _ in 0..4 {
            assert_eq!(&*r.pick(&[]).unwrap().id, "web#2");
        }
        assert_eq!(&*r.pick(&["web#2".into()]).unwrap().id, "web#2");
        b.set_down(true);
        assert!(r.pick(&[]).is_none());
    }

    /// A request waits for a table with a ready instance instead of failing.
    #[tokio::test(start_paused = true)]
    async fn holds_until_published() {
        let r = Arc::new(Router::new(Balance::LeastOutstanding, 10));
        let waiter = {
            let r = r.clone();
            tokio::spawn(async move { r.pick_or_hold(&[], Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        r.publish(vec![up("web#9", 9)]);
        let got = waiter
            .await
            .unwrap()
            .expect("held request gets the new instance");
        assert_eq!(&*got.id, "web#9");
        let err = r.pick_or_hold(&["x".into()], Duration::from_secs(1)).await;
        assert!(err.is_ok(), "a tried-only table still serves");
        r.publish(vec![]);
        let err = r
            .pick_or_hold(&[], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err, NoInstance::HoldTimeout);
    }
}
