//! The route table: which instances take new requests. Immutable, swapped
//! whole with `arc-swap`, so a request sees either the old set or the new
//! one, never half of each.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::split::{Ask, Side, Split};
use super::upstream::Upstream;
use crate::config::Balance;

/// One published set of instances.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Ready instances, in a stable order.
    pub instances: Vec<Arc<Upstream>>,
    /// None is ready and none is on its way (every instance failed, no
    /// deploy running): waiting would only delay the 503.
    pub hopeless: bool,
    /// Instances out of the table that still finish their requests, with
    /// their release: they answer requests from pages of that release
    /// (version pinning, `x-deployment-id`).
    pub draining: Vec<(Arc<str>, Arc<Upstream>)>,
    /// A canary beside `instances`, while one runs.
    pub split: Option<Arc<Split>>,
}

/// Why no instance could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoInstance {
    /// Nothing became ready within `hold_timeout`.
    HoldTimeout,
    /// Too many requests are already waiting.
    HoldFull,
    /// No instance is ready and none is coming (see
    /// [`RouteTable::hopeless`]).
    NoneComing,
}

/// The router: the current table, and a way to wait for the next one.
pub struct Router {
    table: ArcSwap<RouteTable>,
    version: watch::Sender<u64>,
    next: AtomicUsize,
    balance: Balance,
    hold: Semaphore,
    held: AtomicU64,
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
            held: AtomicU64::new(0),
        }
    }

    /// Swaps in a new table and wakes requests waiting for one.
    pub fn publish(&self, instances: Vec<Arc<Upstream>>) {
        self.publish_table(RouteTable {
            instances,
            ..RouteTable::default()
        });
    }

    /// Swaps in `table` and wakes requests waiting for one.
    pub fn publish_table(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
        self.version.send_modify(|v| *v += 1);
    }

    /// Requests that had to wait for a ready instance, since start.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Wakes waiters and re-reads health flags without changing the set.
    pub(crate) fn republish(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// The current table.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Picks an instance that is not down and not in `tried`; falls back to
    /// one in `tried` when nothing else is left. Allocates nothing: this
    /// runs for every request.
    pub(crate) fn pick(&self, tried: &[Arc<str>]) -> Option<Arc<Upstream>> {
        let table = self.table.load();
        let instances = &table.instances;
        if instances.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = instances.len();
        let rotated = (0..n).map(|k| &instances[(start + k) % n]);
        let choose = |fresh_only: bool| {
            let eligible = rotated
                .clone()
                .filter(|u| !(u.is_down() || (fresh_only && tried.contains(&u.id))));
            match self.balance {
                // Starting point rotates, so ties spread out.
                Balance::RoundRobin => eligible.into_iter().next(),
                Balance::LeastOutstanding => eligible.min_by_key(|u| u.in_flight()),
            }
        };
        choose(true).or_else(|| choose(false)).cloned()
    }

    /// The side a request goes to, and the bucket a fresh client gets in
    /// a cookie. Without a canary: the stable side, and no cookie.
    pub(crate) fn side(&self, ask: Ask) -> (Side, Option<u16>) {
        match &self.table.load().split {
            Some(split) => split.side(ask),
            None => (Side::Stable, None),
        }
    }

    /// [`Router::pick`] for `side`: for the canary, its least busy instance
    /// that is not down and not tried; when it has none left, a stable one,
    /// so that its share goes back to the stable release at once.
    pub(crate) fn pick_on(&self, side: Side, tried: &[Arc<str>]) -> Option<Arc<Upstream>> {
        if side == Side::Canary {
            let table = self.table.load();
            let canary = (table.split.iter())
                .flat_map(|split| split.canary.iter())
                .filter(|u| !u.is_down() && !tried.contains(&u.id))
                .min_by_key(|u| u.in_flight());
            if let Some(u) = canary {
                return Some(u.clone());
            }
        }
        self.pick(tried)
    }

    /// Scores one attempt on `upstream` for its side, while a canary runs:
    /// `failed` for a 5xx, a reset or a timeout.
    pub(crate) fn score(&self, upstream: &Arc<Upstream>, failed: bool, took: Duration) {
        let table = self.table.load();
        let Some(split) = &table.split else {
            return;
        };
        let side = if split.canary.iter().any(|u| Arc::ptr_eq(u, upstream)) {
            Side::Canary
        } else {
            Side::Stable
        };
        split.score(side).record(failed, took);
    }

    /// A draining instance of `release` not tried yet, the least busy;
    /// none when that release has none left.
    pub(crate) fn pick_draining(
        &self,
        release: &[u8],
        tried: &[Arc<str>],
    ) -> Option<Arc<Upstream>> {
        let table = self.table.load();
        (table.draining.iter())
            .filter(|(r, u)| r.as_bytes() == release && !u.is_down() && !tried.contains(&u.id))
            .min_by_key(|(_, u)| u.in_flight())
            .map(|(_, u)| u.clone())
    }

    /// Picks an instance, waiting up to `hold` for one to become ready.
    ///
    /// # Errors
    /// [`NoInstance`] when the hold queue is full or the wait timed out.
    pub(crate) async fn pick_or_hold(
        &self,
        tried: &[Arc<str>],
        hold: Duration,
    ) -> Result<Arc<Upstream>, NoInstance> {
        if let Some(u) = self.pick(tried) {
            return Ok(u);
        }
        // Subscribed before the next look, so no publish is missed.
        let mut changes = self.version.subscribe();
        if self.table.load().hopeless {
            return Err(NoInstance::NoneComing);
        }
        let _permit = self.hold.try_acquire().map_err(|_| NoInstance::HoldFull)?;
        self.held.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + hold;
        loop {
            if let Some(u) = self.pick(tried) {
                return Ok(u);
            }
            if self.table.load().hopeless {
                return Err(NoInstance::NoneComing);
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

    /// With a canary, its side picks its instances, and falls back to the
    /// stable ones once none of its own is left; attempts are scored by
    /// the side that took them.
    #[test]
    fn a_canary_takes_its_side_until_it_has_nothing_left() {
        let r = Router::new(Balance::RoundRobin, 10);
        let (stable, canary) = (up("web#1", 1), up("web#2", 2));
        let scores: Arc<[crate::split::Scorecard; 2]> = Default::default();
        r.publish_table(RouteTable {
            instances: vec![stable.clone()],
            split: Some(Arc::new(Split::new(
                "r2".into(),
                vec![canary.clone()],
                500,
                scores.clone(),
            ))),
            ..RouteTable::default()
        });
        assert_eq!(r.side(Ask::Always), (Side::Canary, None));
        assert_eq!(&*r.pick_on(Side::Canary, &[]).unwrap().id, "web#2");
        assert_eq!(&*r.pick_on(Side::Stable, &[]).unwrap().id, "web#1");
        r.score(&canary, true, Duration::from_millis(3));
        r.score(&stable, false, Duration::from_millis(3));
        assert_eq!(scores[Side::Canary as usize].score().errors, 1);
        assert_eq!(scores[Side::Stable as usize].score().requests, 1);
        canary.set_down(true);
        assert_eq!(&*r.pick_on(Side::Canary, &[]).unwrap().id, "web#1");
        r.publish(vec![stable.clone()]);
        assert_eq!(
            r.side(Ask::Always),
            (Side::Stable, None),
            "no canary, no side"
        );
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
