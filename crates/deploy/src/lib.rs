//! Deploy, reload, rollback and scale: one state machine ([`phase`]) run
//! by each app's deploy [`owner`], on the app as [`Runtime`] shows it. The
//! CLI only watches the progress stream, so a killed CLI never leaves a
//! half-switched app.
//!
//! Blue-green: start the whole new set beside the old one, wait until every
//! new instance is ready, swap the route table once, drain the old set (the
//! proxy's own in-flight count reaching 0, or `drain_timeout`), then stop it.
//! Rolling: the same, `max_surge` instances at a time.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_protocol as protocol;
use baton_proxy as proxy;
use baton_release as release;
use baton_supervisor as supervisor;

pub mod canary;
mod drain;
pub mod owner;
pub(crate) mod phase;
mod prepare;
mod runtime;
mod strategies;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use self::drain::*;
use self::phase::{Machine, Phase};
pub use self::runtime::{Report, Runtime};
use crate::config::Strategy;
use crate::protocol::plural;
use crate::protocol::{CanaryAsk, Order, Progress};
use crate::release::{release_config, Release, Source, Status, Store};

/// Lines of a failed instance's log quoted in the deploy error.
const FAILURE_LINES: usize = 10;

/// What to do.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A new release: from a directory, or the app folder in place.
    Deploy {
        /// A directory, tarball or git ref for a release folder.
        source: Option<Source>,
        /// Tried on a share of the clients first (`--canary`).
        canary: Option<CanaryAsk>,
    },
    /// The same release, fresh processes, baton.toml read again.
    Reload,
    /// The same release and configuration, fresh processes
    /// (`cron_restart`).
    Restart,
    /// An earlier release, by id or the previous one.
    Rollback {
        /// Release id.
        to: Option<String>,
    },
    /// The current release with another instance count.
    Scale {
        /// New count.
        instances: u32,
    },
    /// One serving instance swapped for a fresh one of the same release
    /// (one past `max_memory`), or a singleton restarted (past its
    /// `max_memory`, or at a tick of its `cron_restart`).
    Replace {
        /// Its id.
        instance: String,
        /// Why, for the progress report.
        why: String,
    },
}

impl Kind {
    /// What the order asks for, given the app's home (the repository
    /// `deploy --git` exports from).
    pub fn from_order(order: Order, home: &std::path::Path) -> Kind {
        match order {
            Order::Deploy {
                git: Some(rev),
                canary,
                ..
            } => Kind::Deploy {
                source: Some(Source::Git {
                    repo: home.to_path_buf(),
                    rev,
                }),
                canary,
            },
            Order::Deploy {
                source,
                git: None,
                canary,
            } => Kind::Deploy {
                source: source.map(|path| Source::from_path(std::path::Path::new(&path))),
                canary,
            },
            Order::Reload => Kind::Reload,
            Order::Rollback { to } => Kind::Rollback { to },
            Order::Scale { instances } => Kind::Scale { instances },
        }
    }

    /// `deploy`, `reload`, ...: for messages.
    pub(crate) fn verb(&self) -> &'static str {
        match self {
            Kind::Deploy { .. } => "deploy",
            Kind::Reload => "reload",
            Kind::Restart => "restart",
            Kind::Rollback { .. } => "rollback",
            Kind::Scale { .. } => "scale",
            Kind::Replace { .. } => "replace",
        }
    }
}

/// Why a deploy did not happen. In every case the old release still serves.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// Another deploy runs and `--wait` was not given.
    #[error("a deploy is already running ({0}); wait for it or pass --wait")]
    Busy(String),
    /// The new configuration is invalid; nothing was touched.
    #[error("invalid configuration, nothing was changed: {0}")]
    Config(#[from] config::ConfigError),
    /// There is nothing to roll back to, or the id is unknown.
    #[error("{0}")]
    NoTarget(String),
    /// The release folder could not be made.
    #[error("cannot prepare the release: {0}")]
    Prepare(String),
    /// A new instance did not become ready.
    #[error("{0}")]
    NotReady(String),
    /// The daemon is stopping.
    #[error("the daemon is stopping")]
    ShuttingDown,
}

/// A release that ran the app directory in place comes back from the copy
/// kept of it: the app directory holds newer code by now.
fn from_kept_copy(target: Release, loaded: &config::Loaded) -> Result<Release, DeployError> {
    let store = Store::new(loaded);
    if target.dir.starts_with(&store.root) {
        return Ok(target);
    }
    let kept = store.root.join(&target.id);
    if store.staging(&target.id).exists() {
        return Err(DeployError::NoTarget(format!(
            "release {} ran the app directory in place and its copy is still being \
             made; nothing was changed, try again in a moment",
            target.id
        )));
    }
    if !kept.join(crate::release::META_FILE).exists() {
        return Err(DeployError::NoTarget(format!(
            "release {} ran the app directory in place and no copy of it was kept; \
             nothing was changed",
            target.id
        )));
    }
    Ok(Release {
        config: release_config(loaded, &kept)?,
        dir: kept,
        ..target
    })
}

/// Sends progress to whoever watches; a watcher that left is fine.
#[derive(Clone)]
struct Reporter {
    tx: mpsc::UnboundedSender<Progress>,
}

impl Reporter {
    fn step(&self, phase: Phase, message: String) {
        tracing::info!("{phase}: {message}");
        let _ = self.tx.send(Progress::Step { phase, message });
    }
}

/// One deploy on its way, from the owner's start to its outcome.
struct Deploy<R: Runtime> {
    app: Arc<R>,
    report: Reporter,
    machine: Machine,
    began: Instant,
    singletons: Handover,
}

/// The singletons' move to the new release. It starts at the first switch
/// and runs beside the drain: a scheduler must not pause while a long
/// request finishes on an old web instance.
enum Handover {
    /// This deploy leaves them alone (scale, replace, restart).
    NotThisDeploy,
    /// Not yet: no switch so far.
    AtTheSwitch,
    /// Under way since the switch.
    Started(tokio::task::JoinHandle<()>),
}

impl<R: Runtime> Deploy<R> {
    fn new(app: Arc<R>, progress: mpsc::UnboundedSender<Progress>, began: Instant) -> Self {
        Deploy {
            app,
            report: Reporter { tx: progress },
            machine: Machine::default(),
            began,
            singletons: Handover::NotThisDeploy,
        }
    }

    fn to(&mut self, phase: Phase, message: String) {
        self.machine.advance(phase);
        self.report.step(phase, message);
    }

    async fn run(mut self, kind: Kind) -> Result<String, DeployError> {
        let target = match self.prepare(&kind).await {
            Ok(t) => t,
            Err(e) => {
                self.machine.advance(Phase::Failed);
                return Err(e);
            }
        };
        let running = &self.app.config().config;
        if target.config.config.proxy.listen_addrs() != running.proxy.listen_addrs()
            || target.config.config.tcp.keys().ne(running.tcp.keys())
        {
            self.report.step(
                Phase::Preparing,
                "note: [proxy] listen and [tcp.*] addresses apply at the next `baton up`; the daemon keeps its sockets".into(),
            );
        }
        // Only a new release or configuration moves the singletons.
        let web_only = matches!(
            kind,
            Kind::Scale { .. } | Kind::Replace { .. } | Kind::Restart
        );
        if !web_only {
            self.singletons = Handover::AtTheSwitch;
        }
        let strategy = target.config.config.web.strategy;
        let result = match (&kind, strategy) {
            (
                Kind::Deploy {
                    canary: Some(ask), ..
                },
                _,
            ) => {
                let plan = canary::Plan::new(ask, &target.config.config.canary);
                self.canary(target.clone(), plan).await
            }
            (Kind::Scale { .. }, _) => self.scale(target.clone()).await,
            (Kind::Replace { instance, why }, _) => {
                self.replace(target.clone(), instance, why).await
            }
            (_, Strategy::BlueGreen) => self.blue_green(target.clone()).await,
            (_, Strategy::Rolling) => self.rolling(target.clone()).await,
        };
        match &result {
            Ok(_) => {
                self.app.set_config(target.config.clone());
                self.app.record_release(target.clone());
                self.settle_on_disk(&target);
                match std::mem::replace(&mut self.singletons, Handover::NotThisDeploy) {
                    Handover::Started(handover) => {
                        let _ = handover.await;
                    }
                    Handover::AtTheSwitch => self.hand_over_singletons(&target).await,
                    Handover::NotThisDeploy => {}
                }
            }
            Err(_) => {
                // Traffic went back: so do the singletons.
                if let Handover::Started(handover) =
                    std::mem::replace(&mut self.singletons, Handover::NotThisDeploy)
                {
                    let _ = handover.await;
                    if let Some(back) = self.app.current_release() {
                        self.hand_over_singletons(&back).await;
                    }
                }
                if matches!(kind, Kind::Deploy { .. }) {
                    Store::new(&self.app.config()).set_status(&target.dir, Status::Failed);
                    let mut failed = target.clone();
                    failed.failed = true;
                    self.app.record_release(failed);
                }
            }
        }
        result
    }

    /// After a successful deploy: `current` points at the serving release,
    /// and old release folders beyond `keep` go.
    fn settle_on_disk(&self, target: &Release) {
        let loaded = self.app.config();
        let store = Store::new(&loaded);
        if let Err(e) = store.switch_current(&target.dir) {
            self.report.step(
                Phase::Done,
                format!("cannot switch the current symlink: {e}"),
            );
        }
        let keep_for = (target.config.config.statics.as_ref()).map(|s| s.keep_for);
        for gone in store.prune(loaded.config.releases.keep, &[target.id.as_str()], keep_for) {
            self.app.forget_release(&gone);
            tracing::info!("removed old release {gone}");
        }
    }

    fn done(&mut self, release: &Release, switch_ms: u128) -> Result<String, DeployError> {
        self.machine.advance(Phase::Done);
        let total_ms = self.began.elapsed().as_millis() as u64;
        let _ = self.report.tx.send(Progress::Done {
            release: release.id.clone(),
            switch_ms: switch_ms as u64,
            total_ms,
        });
        Ok(release.id.clone())
    }
}

#[cfg(test)]
mod tests;
