//! The one task per app that runs its deploys. The control API, SIGHUP,
//! schedules, the memory watch, the proxy's "stays bad" reports and the
//! inbox all submit here, and get a [`Ticket`] that streams the progress
//! and ends with the outcome. One deploy runs at a time: a request that
//! meets a running one is refused (`Busy`), or queued when it asked to
//! wait. `baton upgrade` takes a [`Hold`], under which none starts.
//!
//! ```text
//!            submit            deploy ends, queue empty
//!   Idle ───────────────▶ Running ─────────────────────▶ Idle
//!    │  ▲                  │   ▲ deploy ends: the next queued one runs
//!    │  │ Hold dropped     └───┘
//!    ▼  │
//!   Held  (every request refused: an upgrade is under way)
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::phase::Phase;
use super::{DeployError, Kind, Runtime};
use crate::protocol::Progress;

/// Where an app's deploys are sent. Cloning it is cheap.
#[derive(Clone)]
pub struct Deployer {
    requests: mpsc::UnboundedSender<Request>,
}

/// A submitted deploy: its progress as it happens, then its outcome.
pub struct Ticket {
    /// Every step, then `Done` or `Failed`; closed after that.
    pub progress: mpsc::UnboundedReceiver<Progress>,
    outcome: oneshot::Receiver<Result<String, DeployError>>,
}

impl Ticket {
    /// Waits for the end; the release that serves afterwards.
    ///
    /// # Errors
    /// Why the deploy did not happen; the previous release still serves.
    pub async fn outcome(self) -> Result<String, DeployError> {
        drop(self.progress);
        self.outcome.await.unwrap_or(Err(DeployError::ShuttingDown))
    }
}

/// While it lives, no deploy starts (see [`Deployer::hold`]).
pub struct Hold {
    _held: oneshot::Sender<()>,
}

/// A message to the owner.
enum Request {
    Deploy(Order),
    Hold(oneshot::Sender<Result<Hold, DeployError>>),
}

/// A deploy asked for, with where its progress and outcome go.
struct Order {
    kind: Kind,
    wait: bool,
    progress: mpsc::UnboundedSender<Progress>,
    outcome: oneshot::Sender<Result<String, DeployError>>,
}

impl Order {
    /// Answers it; a failure also ends its progress stream.
    fn finish(self, outcome: Result<String, DeployError>) {
        if let Err(e) = &outcome {
            let _ = self.progress.send(Progress::Failed {
                message: e.to_string(),
                config_error: matches!(e, DeployError::Config(_)),
            });
        }
        let _ = self.outcome.send(outcome);
    }
}

type Running = Pin<Box<dyn Future<Output = Result<String, DeployError>> + Send>>;

/// Where the owner is.
enum Owner {
    /// Nothing runs; the next request starts at once.
    Idle,
    /// One deploy runs; `what` describes it in refusals.
    Running {
        what: String,
        run: Running,
        order: Order,
    },
    /// `baton upgrade` holds it until the hold is dropped.
    Held(oneshot::Receiver<()>),
}

impl Deployer {
    /// Starts the owner task of `app`; it ends when the app stops.
    pub fn spawn<R: Runtime>(app: Arc<R>) -> Deployer {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(own(app, rx));
        Deployer { requests }
    }

    /// Asks for a deploy of `kind`. `wait`: queue it behind a running one
    /// rather than be refused.
    pub fn submit(&self, kind: Kind, wait: bool) -> Ticket {
        let (progress_tx, progress) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = oneshot::channel();
        let order = Order {
            kind,
            wait,
            progress: progress_tx,
            outcome: outcome_tx,
        };
        // An owner gone (the app stopped) drops the order: the ticket says
        // ShuttingDown.
        let _ = self.requests.send(Request::Deploy(order));
        Ticket { progress, outcome }
    }

    /// A deploy Baton starts itself (SIGHUP, `cron_restart`, `max_memory`):
    /// nobody watches its progress, every step is in the daemon's log, and
    /// a running deploy is not waited for.
    ///
    /// # Errors
    /// As [`Ticket::outcome`].
    pub async fn run_unwatched(&self, kind: Kind) -> Result<String, DeployError> {
        let what = kind.verb();
        let result = self.submit(kind, false).outcome().await;
        // Nobody else hears of a failure: a broken baton.toml on SIGHUP
        // (`systemctl reload`) said only "reloading".
        match &result {
            Ok(summary) => tracing::info!("{what} done: {summary}"),
            Err(e @ DeployError::Busy(_)) => tracing::info!("{what} not started: {e}"),
            Err(e) => tracing::error!("{what} failed, the serving release goes on: {e}"),
        }
        result
    }

    /// Keeps deploys from starting until the [`Hold`] is dropped.
    ///
    /// # Errors
    /// `Busy` while a deploy runs; `ShuttingDown` once the app stopped.
    pub async fn hold(&self) -> Result<Hold, DeployError> {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Hold(tx)).is_err() {
            return Err(DeployError::ShuttingDown);
        }
        rx.await.unwrap_or(Err(DeployError::ShuttingDown))
    }
}

/// The owner task: one state, one loop, every request answered in one
/// place per state.
async fn own<R: Runtime>(app: Arc<R>, mut requests: mpsc::UnboundedReceiver<Request>) {
    let mut queued: VecDeque<Order> = VecDeque::new();
    let mut state = Owner::Idle;
    loop {
        state = match state {
            Owner::Idle => match queued.pop_front() {
                Some(order) => start(&app, order),
                None => tokio::select! {
                    request = requests.recv() => match request {
                        Some(Request::Deploy(order)) => start(&app, order),
                        Some(Request::Hold(reply)) => hold(reply),
                        None => return,
                    },
                    _ = app.stopping().cancelled() => return,
                },
            },
            Owner::Running {
                what,
                mut run,
                order,
            } => tokio::select! {
                // An end and a request at once: the end first, so that a
                // request sent after the deploy ended is not refused.
                biased;
                outcome = &mut run => {
                    app.set_deploying(None);
                    order.finish(outcome);
                    Owner::Idle
                }
                request = requests.recv() => {
                    match request {
                        Some(Request::Deploy(waiting)) if waiting.wait => {
                            let _ = waiting.progress.send(Progress::Step {
                                phase: Phase::Preparing,
                                message: format!("waiting for the running deploy ({what}) to finish"),
                            });
                            queued.push_back(waiting);
                        }
                        Some(Request::Deploy(refused)) => {
                            refused.finish(Err(DeployError::Busy(what.clone())));
                        }
                        Some(Request::Hold(reply)) => {
                            let _ = reply.send(Err(DeployError::Busy(what.clone())));
                        }
                        // The app is gone; the deploy still finishes.
                        None => {
                            let outcome = run.await;
                            app.set_deploying(None);
                            order.finish(outcome);
                            return;
                        }
                    }
                    Owner::Running { what, run, order }
                }
            },
            Owner::Held(mut released) => tokio::select! {
                // A request sent after the hold was dropped is not refused.
                biased;
                _ = &mut released => Owner::Idle,
                request = requests.recv() => {
                    let upgrading = || DeployError::Busy("an upgrade of the daemon".into());
                    match request {
                        Some(Request::Deploy(refused)) => refused.finish(Err(upgrading())),
                        Some(Request::Hold(reply)) => {
                            let _ = reply.send(Err(upgrading()));
                        }
                        None => return,
                    }
                    Owner::Held(released)
                }
            },
        };
    }
}

/// Starts `order`'s deploy, unless the app is stopping.
fn start<R: Runtime>(app: &Arc<R>, order: Order) -> Owner {
    if app.stopping().is_cancelled() {
        order.finish(Err(DeployError::ShuttingDown));
        return Owner::Idle;
    }
    let what = format!(
        "{} since {}",
        order.kind.verb(),
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    app.set_deploying(Some(what.clone()));
    let run = Box::pin(
        super::Deploy::new(app.clone(), order.progress.clone(), Instant::now())
            .run(order.kind.clone()),
    );
    Owner::Running { what, run, order }
}

fn hold(reply: oneshot::Sender<Result<Hold, DeployError>>) -> Owner {
    let (held, released) = oneshot::channel();
    match reply.send(Ok(Hold { _held: held })) {
        Ok(()) => Owner::Held(released),
        // Asked for and gone: nothing holds.
        Err(_) => Owner::Idle,
    }
}
