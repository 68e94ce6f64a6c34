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
//! goes out once the tasks already ready have run.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::Poll;

/// Requests awaiting answers on this thread above which an answer waits
/// for the next poll of the sockets.
const BUSY: usize = 12;

thread_local! {
    /// Requests forwarded from this thread and not yet answered. An atomic,
    /// because with several worker threads a task can move to another
    /// thread before its answer comes, and must count down where it counted
    /// up. Leaked: one word per worker thread, which lives as long as the
    /// runtime.
    static AWAITING: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
}

fn awaiting_here() -> usize {
    AWAITING.with(|n| n.load(Relaxed))
}

/// Counts a request as awaiting its answer on this thread, until dropped.
pub struct Awaiting(&'static AtomicUsize);

impl Awaiting {
    pub fn new() -> Self {
        let count = AWAITING.with(|n| *n);
        count.fetch_add(1, Relaxed);
        Awaiting(count)
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Waits until the answer that just arrived should be written.
pub async fn hold_answer() {
    if awaiting_here() > BUSY {
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

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_waits_for_the_ready_tasks_at_any_load() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                assert_eq!(awaiting_here(), 0);
                assert!(ready_task_runs_first().await, "light load");
                let awaiting: Vec<_> = (0..=BUSY).map(|_| Awaiting::new()).collect();
                assert_eq!(awaiting_here(), BUSY + 1);
                assert!(ready_task_runs_first().await, "busy");
                drop(awaiting);
                assert_eq!(awaiting_here(), 0);
            })
            .await;
    }
}
