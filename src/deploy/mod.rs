//! Deploy, reload, rollback and scale: one state machine ([`phase`]) driven
//! by the daemon. The CLI only watches the progress stream, so a killed CLI
//! never leaves a half-switched daemon.
//!
//! Blue-green: start the whole new set beside the old one, wait until every
//! new instance is ready, swap the route table once, drain the old set (the
//! proxy's own in-flight count reaching 0, or `drain_timeout`), then stop it.
//! Rolling: the same, `max_surge` instances at a time.

pub mod phase;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use self::phase::{Machine, Phase};
use crate::config::{self, Instances, Strategy};
use crate::daemon::protocol::Progress;
use crate::daemon::state::Release;
use crate::daemon::Daemon;
use crate::proxy::upstream::Upstream;
use crate::release::{Meta, Source, Store, APP_DIR_SOURCE};
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
    fn verb(&self) -> &'static str {
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

/// A sortable release id: UTC time to the second, then a short hash of the
/// exact time and a counter, so two ids in one second still differ.
pub fn new_release_id() -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now();
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    now.hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{stamp}-{:06x}", h.finish() & 0xff_ffff)
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

/// The configuration a release folder runs with: its own baton.toml if it
/// ships one, else the daemon's; relative paths start in the folder, and the
/// state directory stays the daemon's.
pub fn release_config(
    loaded: &config::Loaded,
    dir: &std::path::Path,
) -> Result<config::Loaded, DeployError> {
    let own = dir.join("baton.toml");
    let mut config = if own.exists() {
        config::load(&own)?
    } else {
        config::load(&loaded.path)?
    };
    config.config.daemon.state_dir = Some(loaded.state_dir());
    config.base_dir = dir.to_path_buf();
    Ok(config)
}

/// Sends progress to whoever watches; a watcher that left is fine.
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

/// Runs one deploy of `kind` to its end, reporting on `progress`. Returns
/// the release that serves afterwards.
///
/// # Errors
/// [`DeployError`]; in every case the previous release keeps serving.
pub async fn run(
    daemon: &Arc<Daemon>,
    kind: Kind,
    progress: mpsc::UnboundedSender<Progress>,
    wait: bool,
) -> Result<String, DeployError> {
    let began = Instant::now();
    let report = Reporter { tx: progress };
    let _guard = match daemon.deploy_lock.clone().try_lock_owned() {
        Ok(g) => g,
        Err(_) if wait => {
            report.step(
                Phase::Preparing,
                format!(
                    "waiting for the running deploy ({}) to finish",
                    daemon.deploying().unwrap_or_default()
                ),
            );
            daemon.deploy_lock.clone().lock_owned().await
        }
        Err(_) => {
            return Err(DeployError::Busy(
                daemon.deploying().unwrap_or_else(|| "starting".into()),
            ))
        }
    };
    if daemon.shutdown.is_cancelled() {
        return Err(DeployError::ShuttingDown);
    }
    daemon.set_deploying(Some(format!(
        "{} since {}",
        kind.verb(),
        humantime::format_rfc3339_seconds(SystemTime::now())
    )));
    let result = Deploy {
        daemon: daemon.clone(),
        report,
        machine: Machine::default(),
        began,
    }
    .run(kind)
    .await;
    daemon.set_deploying(None);
    result
}

/// [`run`] for what Baton starts itself (SIGHUP, `cron_restart`,
/// `max_memory`): nobody watches the progress stream, and every step is in
/// the daemon's log already. A running deploy is not waited for.
///
/// # Errors
/// As [`run`].
pub async fn run_unwatched(daemon: &Arc<Daemon>, kind: Kind) -> Result<String, DeployError> {
    let (tx, rx) = mpsc::unbounded_channel();
    // Steps sent to a closed stream are dropped, not kept for no one.
    drop(rx);
    let what = kind.verb();
    let result = run(daemon, kind, tx, false).await;
    // Nobody else hears of a failure: a broken baton.toml on SIGHUP
    // (`systemctl reload`) said only "reloading".
    match &result {
        Ok(summary) => tracing::info!("{what} done: {summary}"),
        Err(e @ DeployError::Busy(_)) => tracing::info!("{what} not started: {e}"),
        Err(e) => tracing::error!("{what} failed, the serving release goes on: {e}"),
    }
    result
}

struct Deploy {
    daemon: Arc<Daemon>,
    report: Reporter,
    machine: Machine,
    began: Instant,
}

impl Deploy {
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
        let running = &self.daemon.config().config;
        if target.config.config.proxy.listen_addrs() != running.proxy.listen_addrs()
            || target.config.config.tcp.keys().ne(running.tcp.keys())
        {
            self.report.step(
                Phase::Preparing,
                "note: [proxy] listen and [tcp.*] addresses apply at the next `baton up`; the daemon keeps its sockets".into(),
            );
        }
        let strategy = target.config.config.web.strategy;
        let result = match (&kind, strategy) {
            (Kind::Scale { .. }, _) => self.scale(target.clone()).await,
            (Kind::Replace { instance, why }, _) => {
                self.replace(target.clone(), instance, why).await
            }
            (_, Strategy::BlueGreen) => self.blue_green(target.clone()).await,
            (_, Strategy::Rolling) => self.rolling(target.clone()).await,
        };
        match &result {
            Ok(_) => {
                self.daemon.set_config(target.config.clone());
                self.daemon.record_release(target.clone());
                self.settle_on_disk(&target);
                // Only a new release or configuration restarts singletons.
                let web_only = matches!(
                    kind,
                    Kind::Scale { .. } | Kind::Replace { .. } | Kind::Restart
                );
                if !web_only {
                    let report = &self.report;
                    self.daemon
                        .replace_singletons(&target, |m| report.step(Phase::Done, m))
                        .await;
                }
            }
            Err(_) => {
                if matches!(kind, Kind::Deploy { .. }) {
                    Store::new(&self.daemon.config()).set_status(&target.dir, "failed");
                    let mut failed = target.clone();
                    failed.failed = true;
                    self.daemon.record_release(failed);
                    self.daemon.mark_failed(&target.id);
                }
            }
        }
        result
    }

    /// After a successful deploy: `current` points at the serving release,
    /// and old release folders beyond `keep` go.
    fn settle_on_disk(&self, target: &Release) {
        let loaded = self.daemon.config();
        let store = Store::new(&loaded);
        if let Err(e) = store.switch_current(&target.dir) {
            self.report.step(
                Phase::Done,
                format!("cannot switch the current symlink: {e}"),
            );
        }
        for gone in store.prune(loaded.config.releases.keep, &[target.id.as_str()]) {
            self.daemon.forget_release(&gone);
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
            status: "ready".into(),
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
                meta.status = "failed".into();
                let _ = store.finish(&dir, &meta);
                self.daemon.record_release(Release {
                    id: id.clone(),
                    source: source_text,
                    dir: dir.clone(),
                    config: loaded.clone(),
                    created: SystemTime::now(),
                    failed: true,
                    size: None,
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
        })
    }

    /// Decides the target release. Nothing runs or changes for clients here.
    async fn prepare(&mut self, kind: &Kind) -> Result<Release, DeployError> {
        let current = self.daemon.current_release();
        let loaded = self.daemon.config();
        match kind {
            Kind::Deploy { source: None } => {
                let mut fresh = config::load(&self.daemon.app_config)?;
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
                })
            }
            Kind::Deploy {
                source: Some(source),
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
                let target = self.daemon.rollback_target(to.as_deref()).ok_or_else(|| {
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
            match self.daemon.start_instance(release, false) {
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

    fn switch(&mut self, release: &Release, serving: Vec<Instance>) -> Vec<Instance> {
        let retired = self.daemon.swap(release.clone(), serving);
        if let Some(notice) = release.config.config.web.drain_notice() {
            for i in &retired {
                match notice {
                    None => i.send_message(serde_json::json!({ "type": "drain" })),
                    Some(signal) => i.signal(signal),
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
        self.daemon.forget_drained(&idle);
        if busy.is_empty() {
            self.report.step(Phase::Stopping, "old stopped".into());
            return;
        }
        let timeout = self.daemon.config().config.web.connection_drain_timeout;
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
        tokio::spawn(drain_connections(self.daemon.clone(), busy, timeout));
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
        let web = &release.config.config.web;
        let count = web.instance_count();
        let drain_timeout = web.drain_timeout;
        let watch_window = web.watch_after_switch.max(web.min_uptime);
        let previous = self.daemon.current_release();
        let fresh = self.start_ready(&release, count).await?;
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
            self.daemon.swap(previous, retired);
            stop_all(&fresh).await;
            self.daemon.forget_drained(&fresh);
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
        let previous = self.daemon.current_release();
        let mut old = self.daemon.serving();
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
            retired_all.extend(self.daemon.swap(release.clone(), serving));
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
            self.daemon.swap(previous.clone(), back);
        }
        stop_all(fresh).await;
        self.daemon.forget_drained(fresh);
    }

    /// Starts a fresh instance of `release`, and once it is ready swaps it
    /// in for `id`, which then drains and stops.
    async fn replace(
        &mut self,
        release: Release,
        id: &str,
        why: &str,
    ) -> Result<String, DeployError> {
        if let Some(singleton) = self.daemon.singletons().into_iter().find(|i| &*i.id == id) {
            // A singleton takes no traffic, and two must never run at once:
            // handing its role to a fresh process means stopping it first.
            self.to(Phase::Switching, format!("restarting {id}: {why}"));
            let report = &self.report;
            self.daemon
                .restart_singleton(&release, &singleton, |m| report.step(Phase::Switching, m))
                .await;
            let ms = self.began.elapsed().as_millis();
            return self.done(&release, ms);
        }
        let serving = self.daemon.serving();
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
        let serving = self.daemon.serving();
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
async fn drain_connections(daemon: Arc<Daemon>, instances: Vec<Instance>, timeout: Duration) {
    let open = || {
        instances
            .iter()
            .map(|i| i.upstream.connections())
            .sum::<usize>()
    };
    wait_disconnected(&daemon, &instances, tokio::time::Instant::now() + timeout).await;
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
        wait_disconnected(&daemon, &instances, closed_by).await;
    }
    stop_all(&instances).await;
    daemon.forget_drained(&instances);
}

fn in_flight(instances: &[Instance]) -> usize {
    instances.iter().map(|i| i.upstream.in_flight()).sum()
}

/// Resolves `Ok` once every instance has stayed ready for `window`, or
/// `Err` with the first one that left the ready state, and why.
async fn stays_up(instances: &[Instance], window: Duration) -> Result<(), String> {
    let leaves = instances.iter().map(|i| {
        Box::pin(async move {
            let s = i.wait_for(|s| !matches!(s.state, State::Ready)).await;
            format!("{} {}", i.id, s.reason.unwrap_or_else(|| "stopped".into()))
        })
    });
    match tokio::time::timeout(window, futures_util::future::select_all(leaves)).await {
        Ok((why, _, _)) => Err(why),
        Err(_) => Ok(()),
    }
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
    daemon: &Daemon,
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
        _ = daemon.shutdown.cancelled() => {}
    }
}

async fn stop_all(instances: &[Instance]) {
    futures_util::future::join_all(instances.iter().map(Instance::stop)).await;
}

/// The "s" that makes `n` things plural in a message.
pub(crate) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
