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
pub mod owner;
pub mod phase;
mod runtime;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use self::phase::{Machine, Phase};
pub use self::runtime::{Report, Runtime};
use crate::config::{DrainNotice, Instances, Strategy};
use crate::protocol::plural;
use crate::protocol::{CanaryAsk, Order, Progress};
use crate::proxy::upstream::Upstream;
use crate::release::{
    new_release_id, release_config, Meta, Release, Source, Status, Store, APP_DIR_SOURCE,
};
use crate::supervisor::{Instance, State};

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
    pub fn verb(&self) -> &'static str {
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
        let _ = self.tx.send(Progress::Step {
            phase: phase.to_string(),
            message,
        });
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

    /// Makes a release folder from `source`: unpack or copy, shared links,
    /// build, `RELEASE`. A failure leaves traffic untouched.
    async fn prepare_folder(
        &mut self,
        loaded: &config::Loaded,
        source: &Source,
    ) -> Result<Release, DeployError> {
        let store = Store::new(loaded);
        let described = match source {
            Source::Dir(d) => format!("copying {}", d.display()),
            Source::Tarball(t) => format!("unpacking {}", t.display()),
            Source::Git { rev, .. } => format!("exporting git {rev}"),
        };
        self.report.step(Phase::Preparing, described);
        let cfg = loaded.config.releases.clone();
        let (id, dir, checksum) = {
            let (store, source) = (store.clone(), source.clone());
            tokio::task::spawn_blocking(move || store.create(&source, &cfg))
                .await
                .map_err(|e| DeployError::Prepare(e.to_string()))?
                .map_err(|e| DeployError::Prepare(e.to_string()))?
        };
        self.report.step(
            Phase::Preparing,
            format!("release {id} in {}", dir.display()),
        );
        let source_text = match source {
            Source::Dir(d) | Source::Tarball(d) => std::path::absolute(d)
                .unwrap_or(d.clone())
                .display()
                .to_string(),
            Source::Git { rev, repo } => format!("git {rev} of {}", repo.display()),
        };
        let mut meta = Meta {
            id: id.clone(),
            source: source_text.clone(),
            checksum,
            created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            build_log: None,
            status: Status::Ready,
            size: None,
            fingerprint: None,
        };
        if let Some(command) = &loaded.config.releases.build {
            self.report
                .step(Phase::Preparing, format!("building: {command}"));
            let report = &self.report;
            let built = crate::release::build::run(
                command,
                &dir,
                loaded.config.releases.build_timeout,
                |line| {
                    report.step(Phase::Preparing, format!("build | {line}"));
                },
            )
            .await;
            let (log, failure) = match built {
                Ok(log) => (log, None),
                Err((log, why)) => (log, Some(why)),
            };
            meta.build_log = Some(log.display().to_string());
            if let Some(why) = failure {
                meta.status = Status::Failed;
                let _ = store.finish(&dir, &meta);
                self.app.record_release(Release {
                    id: id.clone(),
                    source: source_text,
                    dir: dir.clone(),
                    config: loaded.clone(),
                    created: SystemTime::now(),
                    failed: true,
                    size: None,
                    retired: None,
                });
                return Err(DeployError::Prepare(format!(
                    "release {id}: build failed, traffic was not touched: {why}"
                )));
            }
        }
        let config = release_config(loaded, &dir)?;
        let measured = dir.clone();
        meta.size = tokio::task::spawn_blocking(move || crate::release::folder_size(&measured))
            .await
            .ok();
        store.finish(&dir, &meta).map_err(|e| {
            DeployError::Prepare(format!(
                "writing {}: {e}",
                dir.join(crate::release::META_FILE).display()
            ))
        })?;
        Ok(Release {
            id,
            source: source_text,
            dir,
            config,
            created: SystemTime::now(),
            failed: false,
            size: meta.size,
            retired: None,
        })
    }

    /// Decides the target release. Nothing runs or changes for clients here.
    async fn prepare(&mut self, kind: &Kind) -> Result<Release, DeployError> {
        let current = self.app.current_release();
        let loaded = self.app.config();
        match kind {
            Kind::Deploy { source: None, .. } => {
                let mut fresh = config::load(&self.app.config_file())?;
                fresh.config.daemon.state_dir = Some(loaded.state_dir());
                self.report.step(
                    Phase::Preparing,
                    "keeping a copy of the app directory for rollback".into(),
                );
                let (id, size) = match crate::release::keep_app_copy(&fresh).await {
                    Ok((meta, copy)) => {
                        self.report.step(
                            Phase::Preparing,
                            format!("release {}, kept in {}", meta.id, copy.display()),
                        );
                        (meta.id, meta.size)
                    }
                    Err(e) => {
                        self.report.step(
                            Phase::Preparing,
                            format!("no copy kept, so this release cannot be rolled back to: {e}"),
                        );
                        (new_release_id(), None)
                    }
                };
                Ok(Release {
                    id,
                    source: APP_DIR_SOURCE.into(),
                    dir: fresh.base_dir.clone(),
                    config: fresh,
                    created: SystemTime::now(),
                    failed: false,
                    size,
                    retired: None,
                })
            }
            Kind::Deploy {
                source: Some(source),
                ..
            } => self.prepare_folder(&loaded, source).await,
            Kind::Reload => {
                let current = current
                    .ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))?;
                let fresh = config::load(&current.config.path)?;
                let mut fresh_config = fresh;
                fresh_config.base_dir = current.config.base_dir.clone();
                fresh_config.config.daemon.state_dir = Some(loaded.state_dir());
                Ok(Release {
                    config: fresh_config,
                    ..current
                })
            }
            Kind::Rollback { to } => {
                let target = self.app.rollback_target(to.as_deref()).ok_or_else(|| {
                    DeployError::NoTarget(match to {
                        Some(id) => format!("no release {id}; see `baton releases`"),
                        None => "no previous release to roll back to".into(),
                    })
                })?;
                let target = from_kept_copy(target, &loaded)?;
                self.report.step(
                    Phase::Preparing,
                    format!("rolling back to release {}", target.id),
                );
                Ok(target)
            }
            Kind::Replace { .. } | Kind::Restart => {
                current.ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))
            }
            Kind::Scale { instances } => {
                let mut current = current
                    .ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))?;
                if *instances == 0 {
                    return Err(DeployError::NoTarget(
                        "cannot scale to 0 instances; use `baton stop`".into(),
                    ));
                }
                let span = current.config.config.web.instances.span();
                current.config.config.web.instances =
                    toml::Spanned::new(span, Instances::Count(*instances));
                Ok(current)
            }
        }
    }

    /// Starts `count` instances of `release` and waits until all are ready.
    /// On a failure, stops every one of them and says why.
    async fn start_ready(
        &mut self,
        release: &Release,
        count: u32,
    ) -> Result<Vec<Instance>, DeployError> {
        self.to(
            Phase::Starting,
            format!(
                "starting {count} new instance{} of release {}",
                plural(count as usize),
                release.id
            ),
        );
        let mut started = Vec::new();
        for _ in 0..count {
            match self.app.start_instance(release) {
                Ok(i) => started.push(i),
                Err(e) => {
                    stop_all(&started).await;
                    self.machine.advance(Phase::Failed);
                    return Err(DeployError::NotReady(format!(
                        "cannot start an instance: {e}"
                    )));
                }
            }
        }
        let mut waits: futures_util::stream::FuturesUnordered<_> = started
            .iter()
            .cloned()
            .map(|i| async move { (i.id.clone(), i.wait_ready().await) })
            .collect();
        let mut ready = 0;
        use futures_util::StreamExt;
        while let Some((id, outcome)) = waits.next().await {
            match outcome {
                Ok(()) => {
                    ready += 1;
                    self.report
                        .step(Phase::Starting, format!("ready {ready}/{count} ({id})"));
                }
                Err(status) => {
                    drop(waits);
                    self.report.step(
                        Phase::Starting,
                        format!("{id} did not become ready; stopping the new instances"),
                    );
                    stop_all(&started).await;
                    self.machine.advance(Phase::Failed);
                    let why = status.reason.unwrap_or_else(|| "stopped".into());
                    let tail = started
                        .iter()
                        .find(|i| i.id == id)
                        .map(|i| i.tail(FAILURE_LINES))
                        .unwrap_or_default();
                    let mut msg = format!(
                        "release {} failed: {id} {why}; the previous release keeps serving",
                        release.id
                    );
                    if !why.contains("last lines") && !tail.is_empty() {
                        msg.push_str(&format!("\n  {}", tail.join("\n  ")));
                    }
                    return Err(DeployError::NotReady(msg));
                }
            }
        }
        Ok(started)
    }

    /// Replaces the singletons with `release`'s, and says so.
    async fn hand_over_singletons(&self, release: &Release) {
        hand_over_singletons(&*self.app, release, &self.report).await;
    }

    fn switch(&mut self, release: &Release, serving: Vec<Instance>) -> Vec<Instance> {
        let retired = self.app.swap(release.clone(), serving);
        if let Handover::AtTheSwitch = self.singletons {
            let (app, release, reporter) = (self.app.clone(), release.clone(), self.report.clone());
            self.singletons = Handover::Started(tokio::spawn(async move {
                hand_over_singletons(&*app, &release, &reporter).await;
            }));
        }
        if let Some(notice) = release.config.config.web.drain_notice {
            for i in &retired {
                match notice {
                    DrainNotice::Ipc => i.send_message(serde_json::json!({ "type": "drain" })),
                    DrainNotice::Signal(signal) => i.signal(signal),
                }
            }
        }
        self.to(
            Phase::Switching,
            format!(
                "switched to release {} after {} ms",
                release.id,
                self.began.elapsed().as_millis()
            ),
        );
        retired
    }

    /// Waits until the proxy has seen the last request of `retired` finish
    /// (or `drain_timeout`), then stops them.
    async fn drain_and_stop(&mut self, retired: &[Instance], drain_timeout: Duration) {
        self.to(
            Phase::Draining,
            format!(
                "draining {} in flight on {} old instance{}",
                in_flight(retired),
                retired.len(),
                plural(retired.len())
            ),
        );
        self.stop_drained(retired, drain_timeout).await;
    }

    /// The second half of [`Deploy::drain_and_stop`], once in `Draining`.
    async fn stop_drained(&mut self, retired: &[Instance], drain_timeout: Duration) {
        wait_drained(retired, drain_timeout).await;
        let left = in_flight(retired);
        if left > 0 {
            self.report.step(
                Phase::Draining,
                format!("drain_timeout reached with {left} still in flight"),
            );
        }
        // Instances that still hold WebSocket or TCP connections keep them,
        // in the background, for connection_drain_timeout.
        let (busy, idle): (Vec<Instance>, Vec<Instance>) = retired
            .iter()
            .cloned()
            .partition(|i| i.upstream.connections() > 0);
        self.to(
            Phase::Stopping,
            format!("stopping {} old instance{}", idle.len(), plural(idle.len())),
        );
        stop_all(&idle).await;
        self.app.forget_drained(&idle);
        if busy.is_empty() {
            self.report.step(Phase::Stopping, "old stopped".into());
            return;
        }
        let timeout = self.app.config().config.web.connection_drain_timeout;
        let open: usize = busy.iter().map(|i| i.upstream.connections()).sum();
        self.report.step(
            Phase::Stopping,
            format!(
                "{} old instance{} keep {open} open connection{} for up to {} (connection_drain_timeout), then close them (WebSocket 1001, TCP FIN)",
                busy.len(),
                plural(busy.len()),
                plural(open),
                humantime::format_duration(timeout)
            ),
        );
        tokio::spawn(drain_connections(self.app.clone(), busy, timeout));
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

    async fn blue_green(&mut self, release: Release) -> Result<String, DeployError> {
        let count = release.config.config.web.instance_count();
        let fresh = self.start_ready(&release, count).await?;
        self.switch_and_drain(release, fresh).await
    }

    /// Makes `fresh` (ready instances of `release`) the serving set, watches
    /// it for `watch_after_switch` (a death hands traffic back), then drains
    /// and stops the old set.
    async fn switch_and_drain(
        &mut self,
        release: Release,
        fresh: Vec<Instance>,
    ) -> Result<String, DeployError> {
        let web = &release.config.config.web;
        let drain_timeout = web.drain_timeout;
        let watch_window = web.watch_after_switch.max(web.min_uptime);
        let previous = self.app.current_release();
        let retired = self.switch(&release, fresh.clone());
        let switch_ms = self.began.elapsed().as_millis();
        if retired.is_empty() {
            return self.done(&release, switch_ms);
        }
        self.to(
            Phase::Draining,
            format!(
                "draining {} in flight on {} old instance{}",
                in_flight(&retired),
                retired.len(),
                plural(retired.len())
            ),
        );
        // The old set keeps running until the new one has stayed up for
        // watch_after_switch, so a release that dies in its first seconds
        // hands traffic straight back.
        self.report.step(
            Phase::Draining,
            format!(
                "watching the new instances for {} (watch_after_switch) before the old ones stop",
                humantime::format_duration(watch_window)
            ),
        );
        if let (Err(why), Some(previous)) = (stays_up(&fresh, watch_window).await, previous) {
            self.app.swap(previous, retired);
            stop_all(&fresh).await;
            self.app.forget_drained(&fresh);
            self.machine.advance(Phase::Failed);
            return Err(DeployError::NotReady(format!(
                "release {} failed after the switch: {why}; traffic went back to the previous release",
                release.id
            )));
        }
        self.stop_drained(&retired, drain_timeout).await;
        self.done(&release, switch_ms)
    }

    async fn rolling(&mut self, release: Release) -> Result<String, DeployError> {
        let web = &release.config.config.web;
        let count = web.instance_count() as usize;
        let surge = (*web.max_surge.get_ref() as usize).max(1);
        let drain_timeout = web.drain_timeout;
        let batch_window = web.min_uptime;
        let watch_window = web.watch_after_switch.max(web.min_uptime);
        let previous = self.app.current_release();
        let mut old = self.app.serving();
        let mut fresh: Vec<Instance> = Vec::new();
        let mut retired_all = Vec::new();
        let mut switch_ms = None;
        while fresh.len() < count {
            let batch = surge.min(count - fresh.len());
            let new = match self.start_ready(&release, batch as u32).await {
                Ok(n) => n,
                Err(e) => {
                    self.revert(previous.as_ref(), &old, &retired_all, &fresh)
                        .await;
                    return Err(e);
                }
            };
            fresh.extend(new.iter().cloned());
            old.drain(..batch.min(old.len()));
            let mut serving = old.clone();
            serving.extend(fresh.iter().cloned());
            retired_all.extend(self.switch(&release, serving));
            switch_ms.get_or_insert(self.began.elapsed().as_millis());
            // A batch must stay up for min_uptime before the next one goes,
            // and the last one for watch_after_switch: the old instances
            // it replaced are still running until the end.
            let window = if fresh.len() < count {
                batch_window
            } else {
                watch_window
            };
            if let Err(why) = stays_up(&fresh, window).await {
                self.revert(previous.as_ref(), &old, &retired_all, &fresh)
                    .await;
                self.machine.advance(Phase::Failed);
                return Err(DeployError::NotReady(format!(
                    "release {} failed after a rolling switch: {why}; traffic went back to the previous release",
                    release.id
                )));
            }
        }
        // Instances beyond the new count (scaling down in the same deploy).
        if !old.is_empty() {
            let serving = fresh.clone();
            retired_all.extend(self.app.swap(release.clone(), serving));
        }
        if !retired_all.is_empty() {
            self.drain_and_stop(&retired_all, drain_timeout).await;
        }
        self.done(&release, switch_ms.unwrap_or(0))
    }

    /// Undoes a rolling deploy's batches: the old instances (the ones not
    /// yet replaced and the retired ones, all still running) serve again,
    /// and the new ones stop.
    async fn revert(
        &self,
        previous: Option<&Release>,
        not_replaced: &[Instance],
        retired: &[Instance],
        fresh: &[Instance],
    ) {
        if fresh.is_empty() {
            return;
        }
        if let Some(previous) = previous {
            let mut back = not_replaced.to_vec();
            back.extend(retired.iter().cloned());
            self.app.swap(previous.clone(), back);
        }
        stop_all(fresh).await;
        self.app.forget_drained(fresh);
    }

    /// Starts a fresh instance of `release`, and once it is ready swaps it
    /// in for `id`, which then drains and stops.
    async fn replace(
        &mut self,
        release: Release,
        id: &str,
        why: &str,
    ) -> Result<String, DeployError> {
        if let Some(singleton) = self.app.singletons().into_iter().find(|i| &*i.id == id) {
            // A singleton takes no traffic, and two must never run at once:
            // handing its role to a fresh process means stopping it first.
            self.to(Phase::Switching, format!("restarting {id}: {why}"));
            let report = &self.report;
            let report = |m| report.step(Phase::Switching, m);
            self.app
                .restart_singleton(&release, &singleton, &report)
                .await;
            let ms = self.began.elapsed().as_millis();
            return self.done(&release, ms);
        }
        let serving = self.app.serving();
        if !serving.iter().any(|i| &*i.id == id) {
            return Err(DeployError::NoTarget(format!("{id} no longer serves")));
        }
        self.report
            .step(Phase::Preparing, format!("replacing {id}: {why}"));
        let fresh = self.start_ready(&release, 1).await?;
        let mut next: Vec<Instance> = serving.into_iter().filter(|i| &*i.id != id).collect();
        next.extend(fresh);
        let retired = self.switch(&release, next);
        let ms = self.began.elapsed().as_millis();
        self.drain_and_stop(&retired, release.config.config.web.drain_timeout)
            .await;
        self.done(&release, ms)
    }

    async fn scale(&mut self, release: Release) -> Result<String, DeployError> {
        let want = release.config.config.web.instance_count() as usize;
        let serving = self.app.serving();
        let drain_timeout = release.config.config.web.drain_timeout;
        if want > serving.len() {
            let added = self
                .start_ready(&release, (want - serving.len()) as u32)
                .await?;
            let mut all = serving;
            all.extend(added);
            self.switch(&release, all);
            let ms = self.began.elapsed().as_millis();
            self.done(&release, ms)
        } else {
            let keep: Vec<Instance> = serving.iter().take(want).cloned().collect();
            let retired = self.switch(&release, keep);
            let ms = self.began.elapsed().as_millis();
            if !retired.is_empty() {
                self.drain_and_stop(&retired, drain_timeout).await;
            }
            self.done(&release, ms)
        }
    }
}

/// The background half of a drain: waits until `instances` hold no
/// upgraded or TCP connection, or `timeout`; then closes what is left
/// politely and stops them.
async fn drain_connections<R: Runtime>(app: Arc<R>, instances: Vec<Instance>, timeout: Duration) {
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

fn in_flight(instances: &[Instance]) -> usize {
    instances.iter().map(|i| i.upstream.in_flight()).sum()
}

/// Resolves `Ok` once every instance has stayed ready for `window`, or
/// `Err` with the first one that left the ready state, and why.
async fn stays_up(instances: &[Instance], window: Duration) -> Result<(), String> {
    match tokio::time::timeout(window, first_to_leave(instances)).await {
        Ok(why) => Err(why),
        Err(_) => Ok(()),
    }
}

/// Replaces `app`'s singletons with `release`'s, each step reported.
async fn hand_over_singletons(app: &impl Runtime, release: &Release, reporter: &Reporter) {
    let report = |m| reporter.step(Phase::Switching, m);
    app.replace_singletons(release, &report).await;
}

/// Resolves when one of `instances` is no longer ready, saying which and
/// why (`web#3 exited with code 1`).
async fn first_to_leave(instances: &[Instance]) -> String {
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
async fn wait_drained(instances: &[Instance], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for i in instances {
        i.upstream
            .wait_until_zero(Upstream::in_flight, deadline)
            .await;
    }
}

/// Waits until `instances` hold no upgraded, SSE or TCP connection, or
/// `deadline`, or the daemon stops.
async fn wait_disconnected(
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

async fn stop_all(instances: &[Instance]) {
    futures_util::future::join_all(instances.iter().map(Instance::stop)).await;
}

#[cfg(test)]
mod tests;
