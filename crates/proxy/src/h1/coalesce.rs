//! When an answer goes to its client: at once, or together with the
//! answers that arrive with it.
//!
//! Written one by one, each answer wakes its client, which on a busy machine
//! takes a core from Baton to read one answer. Held until the event loop has
//! polled its sockets again, an answer goes out together with the others of
//! that round, and the client finds several at once (wrk, 32 connections on
//! 2 cores: the client's wake-ups per request 0.31 -> 0.20, 5-8 % more
//! requests/s). But the hold costs the held answer the time the loop spends
//! on what that poll brought, and with few requests in flight there is
//! little to group it with: at 8 connections it put p99 at 1.14x nginx's.
//! So the hold scales with the load, as a network card moderates its
//! interrupts: with few requests awaiting answers on this thread, an answer
//! goes out once the tasks already ready have run (8 connections: p99
//! 1.14x -> 0.96x nginx's; requests/s unchanged at 8, 16, 32 and 128).

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::Poll;

/// Requests awaiting answers on this thread above which an answer waits
/// for the next poll of the sockets.
const BUSY: usize = 12;

/// This thread's counts. Atomics, because with several worker threads a
/// task can move to another thread between counting up and down, and must
/// count down where it counted up.
#[derive(Default)]
struct Counts {
    /// Requests forwarded and not yet answered.
    awaiting: AtomicUsize,
    /// Answers held until the next poll of the sockets.
    held: AtomicUsize,
}

thread_local! {
    /// Leaked: two words per worker thread, which lives as long as the
    /// runtime.
    static HERE: &'static Counts = Box::leak(Box::default());
}

/// One up on a count until dropped.
struct Up(&'static AtomicUsize);

impl Up {
    fn new(count: fn(&'static Counts) -> &'static AtomicUsize) -> Self {
        let count = HERE.with(|here| count(here));
        count.fetch_add(1, Relaxed);
        Up(count)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Counts a request as awaiting its answer on this thread, until dropped.
pub(crate) struct Awaiting {
    _count: Up,
}

impl Awaiting {
    pub(crate) fn new() -> Self {
        Awaiting {
            _count: Up::new(|here| &here.awaiting),
        }
    }
}

/// Waits until the answer that just arrived should be written.
pub(crate) async fn hold_answer() {
    let (awaiting, held) = HERE.with(|here| (here.awaiting.load(Relaxed), here.held.load(Relaxed)));
    // Once one answer of this round is held, the later ones are held with
    // it: were they written at once, the answer that came first would go
    // out last, and the tail grows (p99 at 16 connections 1.19x nginx's
    // against 1.07x).
    if awaiting > BUSY || held > 0 {
        let _held = Up::new(|here| &here.held);
        // Deferred until the event loop has run out of ready tasks and polled
        // the sockets again.
        tokio::task::yield_now().await;
    } else {
        after_ready_tasks().await;
    }
}

/// Goes to the back of the run queue once: the tasks ready now run first,
/// and the sockets are not polled in between.
async fn after_ready_tasks() {
    let mut queued = false;
    poll_fn(|cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// Whether a task spawned before the hold has run when the hold ends.
    async fn ready_task_runs_first() -> bool {
        let ran = Rc::new(Cell::new(false));
        let flag = ran.clone();
        tokio::task::spawn_local(async move { flag.set(true) });
        hold_answer().await;
        ran.get()
    }

    fn awaiting() -> usize {
        HERE.with(|here| here.awaiting.load(Relaxed))
    }

    fn held() -> usize {
        HERE.with(|here| here.held.load(Relaxed))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_waits_for_the_ready_tasks_at_any_load() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                assert_eq!(awaiting(), 0);
                assert!(ready_task_runs_first().await, "light load");
                let requests: Vec<_> = (0..=BUSY).map(|_| Awaiting::new()).collect();
                assert_eq!(awaiting(), BUSY + 1);
                assert!(ready_task_runs_first().await, "busy");
                // A hold given up half way (its client left) is not
                // counted as held any more.
                let mut hold = Box::pin(hold_answer());
                assert!(futures_util::poll!(hold.as_mut()).is_pending());
                assert_eq!(held(), 1);
                drop(hold);
                assert_eq!(held(), 0);
                drop(requests);
                assert_eq!(awaiting(), 0);
            })
            .await;
    }
}
