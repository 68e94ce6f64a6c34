//! One app: its instances, its release history, its configuration, and the
//! one task that deploys it. The daemon holds a map of apps; an app knows
//! nothing of the daemon.
//!
//! - [`boot`]: the release an app starts with when the daemon starts.
//! - [`memory`]: replacing instances past `max_memory`, and those the proxy
//!   finds bad for good.
//! - [`inbox`]: the watched upload folder (seed 003's cron, done safely).
//!
//! State: the instances ([`Fleet`]) and the release history sit behind one
//! lock each, and no method holds one while taking the other. Changes to
//! them come from the app's deploy owner ([`crate::deploy::owner`]) and, at
//! start, from [`boot`]; everyone else reads.

pub(crate) mod boot;
mod canary;
pub(crate) mod inbox;
pub(crate) mod memory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::deploy::owner::Deployer;
use crate::deploy::{Report, Runtime};
use crate::protocol::{InstanceReport, ReleaseReport, ReleaseState, Role};
use crate::proxy::access::AccessLog;
use crate::proxy::assets::{Assets, Shelf, Shelved};
use crate::proxy::router::{RouteTable, Router};
use crate::release::Release;
use crate::supervisor::{Context, Instance, InstanceSpec, State};

/// The instances of an app: those that take traffic, those on their way
/// out, its singletons, and the deploy in progress.
#[derive(Default)]
struct Fleet {
    /// The release the serving instances run.
    release: Option<Release>,
    serving: Vec<Instance>,
    /// Out of the route table, finishing what they were sent; since when.
    draining: Vec<(Instance, SystemTime)>,
    singletons: Vec<Instance>,
    /// A release tried on a share of the clients (`deploy --canary`).
    canary: Option<crate::deploy::canary::Canary>,
    /// The deploy in progress, described.
    deploying: Option<String>,
}

/// One app. Shared as `Arc<App>` by the daemon, its deploy owner, its
/// schedules and watchers.
pub(crate) struct App {
    /// `[app] name`.
    pub name: String,
    /// The folder of the app's baton.toml: its home, and the repository
    /// `deploy --git` exports from.
    pub home: PathBuf,
    /// That baton.toml: what `baton deploy` without a source releases, in
    /// place, whatever the current release folder ships.
    pub config_file: PathBuf,
    /// The configuration in force; schedules watch it, so a changed
    /// pattern applies at once.
    config: watch::Sender<Loaded>,
    /// Where the ready instances are published for the proxy.
    router: Arc<Router>,
    /// Where the releases whose static files are served are published.
    assets: Arc<Assets>,
    /// Its access log, while `[proxy] access_log` names one.
    access: Mutex<Option<Arc<AccessLog>>>,
    /// What every instance shares.
    pub ctx: Context,
    fleet: Mutex<Fleet>,
    /// Every known release, oldest first; the serving one last.
    history: Mutex<Vec<Release>>,
    next_number: AtomicU64,
    /// Where `baton promote` and `baton abort` reach a running canary.
    canary_orders: Mutex<Option<tokio::sync::mpsc::UnboundedSender<crate::protocol::CanaryOrder>>>,
    /// Cancelled when the app stops (with the daemon).
    pub stopping: CancellationToken,
    deployer: OnceLock<Deployer>,
}

impl App {
    /// An app with nothing running yet, and its deploy owner started.
    pub(crate) fn new(
        config: Loaded,
        router: Arc<Router>,
        ctx: Context,
        stopping: CancellationToken,
    ) -> Arc<App> {
        let app = Arc::new(App {
            name: config.config.app.name.clone(),
            home: config.base_dir.clone(),
            config_file: config.path.clone(),
            config: watch::Sender::new(config),
            router,
            assets: Arc::default(),
            access: Mutex::default(),
            ctx,
            fleet: Mutex::default(),
            history: Mutex::default(),
            next_number: AtomicU64::new(1),
            canary_orders: Mutex::default(),
            stopping,
            deployer: OnceLock::new(),
        });
        let _ = app.deployer.set(Deployer::spawn(app.clone()));
        app
    }

    /// Its route table and hold queue.
    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Its access log as the configuration in force has it: the one
    /// running when the file and format are the same, else a new one (the
    /// old one's thread ends once no site holds it).
    pub(crate) fn access_log(&self) -> Option<Arc<AccessLog>> {
        let loaded = self.config();
        let proxy = &loaded.config.proxy;
        let mut access = self.access.lock().expect("access log lock poisoned");
        let Some(file) = &proxy.access_log else {
            *access = None;
            return None;
        };
        // From the app's folder: a release's own baton.toml would
        // otherwise put the log inside that release.
        let path = self.home.join(file);
        let format = proxy.access_log_format;
        if let Some(log) = access
            .as_ref()
            .filter(|l| l.path == path && l.format == format)
        {
            return Some(log.clone());
        }
        let log = Arc::new(AccessLog::start(&path, format, loaded.log_rotation()));
        *access = Some(log.clone());
        Some(log)
    }

    /// Its static files, as the proxy answers them.
    pub(crate) fn assets(&self) -> &Arc<Assets> {
        &self.assets
    }

    /// Where deploys, reloads, rollbacks, scales and replacements of this
    /// app are sent: one runs at a time.
    pub(crate) fn deployer(&self) -> &Deployer {
        self.deployer.get().expect("set in App::new")
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> Loaded {
        self.config.borrow().clone()
    }

    /// Changes of configuration, as they happen.
    pub(crate) fn config_changes(&self) -> watch::Receiver<Loaded> {
        self.config.subscribe()
    }

    fn fleet(&self) -> MutexGuard<'_, Fleet> {
        self.fleet.lock().expect("fleet lock poisoned")
    }

    fn history(&self) -> MutexGuard<'_, Vec<Release>> {
        self.history.lock().expect("history lock poisoned")
    }

    /// The deploy in progress, described.
    pub(crate) fn deploying(&self) -> Option<String> {
        self.fleet().deploying.clone()
    }

    /// The release serving traffic.
    pub(crate) fn current_release(&self) -> Option<Release> {
        self.fleet().release.clone()
    }

    /// The serving instances.
    pub(crate) fn serving(&self) -> Vec<Instance> {
        self.fleet().serving.clone()
    }

    /// Describes the deploy in progress, for status and for refusals.
    pub(crate) fn set_deploying(&self, what: Option<String>) {
        self.fleet().deploying = what;
        // Requests may wait for the deploy's instances (or not, after it).
        self.publish_routes();
    }

    /// Replaces the configuration in force (after a successful deploy).
    pub(crate) fn set_config(&self, loaded: Loaded) {
        self.config.send_replace(loaded);
    }

    /// How many instances take traffic now.
    pub(crate) fn ready_count(&self) -> usize {
        self.router.table().instances.len()
    }

    /// Starts one instance of `release`'s web process.
    ///
    /// # Errors
    /// When no private port can be had.
    pub(crate) fn start_instance(
        &self,
        release: &Release,
        restart_before_ready: bool,
    ) -> std::io::Result<Instance> {
        let run = release.config.config.web.process_spec();
        let spec = InstanceSpec {
            process: Role::Web,
            number: self.next_number.fetch_add(1, Ordering::Relaxed),
            release: release.id.clone(),
            cwd: run.cwd_in(&release.dir),
            run,
            tcp: release.config.config.tcp.keys().cloned().collect(),
            restart_before_ready,
        };
        Instance::start(spec, self.ctx.clone())
    }

    /// Starts `release`'s `[process.<name>]` singletons.
    fn start_singletons(&self, release: &Release) -> Vec<Instance> {
        release
            .config
            .config
            .process
            .keys()
            .filter_map(|name| self.start_singleton(release, name))
            .collect()
    }

    /// Starts `release`'s `[process.<name>]`; logs why when it cannot.
    fn start_singleton(&self, release: &Release, name: &str) -> Option<Instance> {
        let p = release.config.config.process.get(name)?;
        let run = p.process_spec();
        let spec = InstanceSpec {
            process: Role::from(name),
            number: self.next_number.fetch_add(1, Ordering::Relaxed),
            release: release.id.clone(),
            cwd: run.cwd_in(&release.dir),
            run,
            tcp: Vec::new(),
            restart_before_ready: true,
        };
        Instance::start(spec, self.ctx.clone())
            .map_err(|e| tracing::error!("cannot start {name}: {e}"))
            .ok()
    }

    /// The singletons now running.
    pub(crate) fn singletons(&self) -> Vec<Instance> {
        self.fleet().singletons.clone()
    }

    /// Gives the singleton `old` a fresh process of `release`: `old` is
    /// stopped first, as at a deploy, so two never run at once; it is
    /// listed (as stopping) until then. Calls `report` for each step.
    pub(crate) async fn restart_singleton(
        &self,
        release: &Release,
        old: &Instance,
        report: Report<'_>,
    ) {
        report(format!("{}: stopping it first (singleton)", old.id));
        old.stop().await;
        // A daemon stopping meanwhile has stopped the old one too.
        let fresh = if self.stopping.is_cancelled() {
            None
        } else {
            self.start_singleton(release, old.process.name())
        };
        {
            let mut fleet = self.fleet();
            fleet.singletons.retain(|i| i.id != old.id);
            if let Some(fresh) = &fresh {
                fleet.singletons.push(fresh.clone());
            }
        }
        if let Some(fresh) = fresh {
            report(format!("{}: started with release {}", fresh.id, release.id));
            self.report_singleton_ready(release, &fresh, report).await;
        }
    }

    /// Replaces the singletons with `release`'s: each old one is stopped
    /// before its new one starts, so two never run at once (a scheduler must
    /// not fire twice), and each new one starts as soon as its old one has
    /// exited. With a readiness check, waits for it. Calls `report` for each
    /// step.
    pub(crate) async fn replace_singletons(&self, release: &Release, report: Report<'_>) {
        let old = std::mem::take(&mut self.fleet().singletons);
        let names: std::collections::BTreeSet<&str> = (old.iter())
            .map(|i| i.process.name())
            .chain(release.config.config.process.keys().map(String::as_str))
            .collect();
        let handovers = names.into_iter().map(|name| {
            let old: Vec<&Instance> = old.iter().filter(|i| i.process.name() == name).collect();
            async move {
                for i in &old {
                    report(format!("{}: stopping the old one first (singleton)", i.id));
                }
                futures_util::future::join_all(old.iter().map(|i| i.stop())).await;
                // A daemon stopping meanwhile has stopped the old one too.
                if self.stopping.is_cancelled() {
                    return;
                }
                let Some(fresh) = self.start_singleton(release, name) else {
                    return;
                };
                report(format!("{}: started with release {}", fresh.id, release.id));
                self.fleet().singletons.push(fresh.clone());
                self.report_singleton_ready(release, &fresh, report).await;
            }
        });
        futures_util::future::join_all(handovers).await;
    }

    /// Waits for a fresh singleton's readiness check, when it has one, and
    /// says how it went.
    async fn report_singleton_ready(
        &self,
        release: &Release,
        fresh: &Instance,
        report: Report<'_>,
    ) {
        let checked = (release.config.config.process.get(fresh.process.name()))
            .is_some_and(|p| p.readiness.kind != crate::config::ReadinessKind::None);
        if !checked {
            return;
        }
        match fresh.wait_ready().await {
            Ok(()) => report(format!("{}: ready", fresh.id)),
            Err(status) => report(format!(
                "{}: not ready: {}",
                fresh.id,
                status.reason.unwrap_or_else(|| "stopped".into())
            )),
        }
    }

    /// Makes `instances` (of `release`) the serving set and publishes the
    /// route table at once. Returns the instances that left the set; they
    /// are listed as draining until [`App::forget_drained`].
    pub(crate) fn swap(&self, release: Release, instances: Vec<Instance>) -> Vec<Instance> {
        let mut left = None;
        let retired = {
            let mut serving = self.fleet();
            // A new serving set ends any canary: promoted, its instances
            // are that set.
            serving.canary = None;
            let keep: Vec<Arc<str>> = instances.iter().map(|i| i.id.clone()).collect();
            let old = std::mem::replace(&mut serving.serving, instances);
            let came = release.id.clone();
            if let Some(went) = serving.release.replace(release) {
                left = (went.id != came).then_some((went.id, came));
            }
            let retired: Vec<Instance> =
                old.into_iter().filter(|i| !keep.contains(&i.id)).collect();
            // Instances called back from a drain (a reverted deploy) serve again.
            let returning: Vec<Instance> = serving
                .draining
                .iter()
                .filter(|(i, _)| keep.contains(&i.id))
                .map(|(i, _)| i.clone())
                .collect();
            serving.draining.retain(|(i, _)| !keep.contains(&i.id));
            for i in returning {
                i.set_serving();
            }
            let now = SystemTime::now();
            for i in &retired {
                // Idle keep-alive connections to it will not be used again;
                // closing them lets an app's own server.close() finish.
                i.upstream.pool.clear();
                i.upstream.set_draining(true);
                i.set_draining();
                serving.draining.push((i.clone(), now));
            }
            retired
        };
        self.publish_routes();
        if let Some((went, came)) = left {
            self.mark_retired(&went, &came);
        }
        self.publish_assets();
        retired
    }

    /// Release `went` stopped serving and `came` serves (again, after a
    /// rollback): in the history, and on disk for the next start.
    fn mark_retired(&self, went: &str, came: &str) {
        let now = SystemTime::now();
        for r in self.history().iter_mut() {
            if r.id == went {
                r.retired = Some(now);
            } else if r.id == came {
                r.retired = None;
            }
        }
        let store = crate::release::Store::new(&self.config());
        store.mark_retired(went, Some(now));
        store.mark_retired(came, None);
    }

    /// Publishes which releases' static files are served: the serving
    /// release's, then those that stopped serving less than `keep_for`
    /// ago, the latest to stop first. A retired release is served from its
    /// own folder under `releases/` (for a release that ran the app
    /// directory in place, the copy kept of it).
    pub(crate) fn publish_assets(&self) {
        let Some(serving) = self.current_release() else {
            return;
        };
        let Some(statics) = serving.config.config.statics.clone() else {
            self.assets.publish(None);
            return;
        };
        let root = serving.config.releases_root();
        let now = SystemTime::now();
        let mut shelved = vec![Shelved {
            release: serving.id.clone(),
            dir: statics.dir_in(&serving.dir),
            until: None,
        }];
        let mut retired: Vec<Shelved> = self
            .history()
            .iter()
            .filter(|r| r.id != serving.id && !r.failed)
            .filter_map(|r| {
                let until = r.retired? + statics.keep_for;
                let own = r.config.config.statics.as_ref().unwrap_or(&statics);
                (until > now).then(|| Shelved {
                    release: r.id.clone(),
                    dir: own.dir_in(&root.join(&r.id)),
                    until: Some(until),
                })
            })
            .collect();
        retired.sort_by_key(|s| std::cmp::Reverse(s.until));
        shelved.extend(retired);
        self.assets.publish(Some(Shelf::new(&statics, &shelved)));
    }

    /// Drops drained instances from the status listing.
    pub(crate) fn forget_drained(&self, gone: &[Instance]) {
        self.fleet()
            .draining
            .retain(|(i, _)| !gone.iter().any(|g| g.id == i.id));
    }

    /// Publishes the serving instances that are ready.
    pub(crate) fn publish_routes(&self) {
        let fleet = self.fleet();
        // A Ready instance whose drain was just called off is still listed as
        // Draining until its task handles the message; it serves either way.
        let ready: Vec<_> = fleet
            .serving
            .iter()
            .filter(|i| matches!(i.status().state, State::Ready | State::Draining))
            .map(|i| i.upstream.clone())
            .collect();
        // Requests wait for an instance only while one may come: a
        // starting or restarting one, or a deploy's.
        let hopeless = ready.is_empty()
            && !fleet.serving.is_empty()
            && fleet.serving.iter().all(|i| i.status().state.is_terminal())
            && fleet.deploying.is_none();
        // Ready too: one just retired may not have taken its drain yet.
        let draining = (fleet.draining.iter())
            .filter(|(i, _)| matches!(i.status().state, State::Ready | State::Draining))
            .map(|(i, _)| (i.release.clone(), i.upstream.clone()))
            .collect();
        self.router.publish_table(RouteTable {
            instances: ready,
            hopeless,
            draining,
            split: canary::split_of(fleet.canary.as_ref()),
        });
    }

    /// Re-publishes on every instance state change, for the app's life.
    pub(crate) async fn publish_routes_forever(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.ctx.changed.notified() => self.publish_routes(),
                _ = self.stopping.cancelled() => return,
            }
        }
    }

    /// Remembers a release for rollback and `baton releases` (again, when
    /// it is known: a failed one is marked so).
    pub(crate) fn record_release(&self, release: Release) {
        let mut history = self.history();
        history.retain(|r| r.id != release.id);
        history.push(release);
    }

    /// Forgets a release whose folder was pruned.
    pub(crate) fn forget_release(&self, id: &str) {
        self.history().retain(|r| r.id != id);
    }

    /// A release by id, or the last good one before the current one.
    pub(crate) fn rollback_target(&self, id: Option<&str>) -> Option<Release> {
        let current = self.current_release().map(|r| r.id);
        let history = self.history();
        if let Some(id) = id {
            return history.iter().find(|r| r.id == id).cloned();
        }
        let before_current = history
            .iter()
            .position(|r| Some(&r.id) == current.as_ref())
            .unwrap_or(history.len());
        history[..before_current]
            .iter()
            .rev()
            .find(|r| !r.failed)
            .cloned()
    }

    /// Every known release, oldest first.
    pub(crate) fn releases(&self) -> Vec<ReleaseReport> {
        let current = self.current_release();
        let keep_for = current
            .as_ref()
            .and_then(|r| r.config.config.statics.as_ref())
            .map(|s| s.keep_for);
        let current = current.map(|r| r.id);
        let now = SystemTime::now();
        self.history()
            .iter()
            .map(|r| ReleaseReport {
                assets_until: keep_for
                    .zip(r.retired)
                    .map(|(keep_for, retired)| retired + keep_for)
                    .filter(|until| *until > now && Some(&r.id) != current.as_ref())
                    .map(|until| humantime::format_rfc3339_seconds(until).to_string()),
                id: r.id.clone(),
                created: humantime::format_rfc3339_seconds(r.created).to_string(),
                source: r.source.clone(),
                dir: r.dir.display().to_string(),
                size: r.size,
                status: if Some(&r.id) == current.as_ref() {
                    ReleaseState::Current
                } else if r.failed {
                    ReleaseState::Failed
                } else {
                    ReleaseState::Previous
                },
            })
            .collect()
    }

    /// Every instance, serving, draining and singleton, as `status` lists
    /// them (without CPU and memory, which the daemon reads).
    pub(crate) fn instance_reports(&self) -> Vec<InstanceReport> {
        let fleet = self.fleet();
        let now = SystemTime::now();
        let report = |i: &Instance, draining_since: Option<SystemTime>| {
            let s = i.status();
            InstanceReport {
                process: i.process.clone(),
                instance: i.id.to_string(),
                release: i.release.to_string(),
                pid: s.pid,
                port: i.upstream.addr.port(),
                state: s.state,
                uptime_secs: s
                    .started
                    .filter(|_| s.pid.is_some())
                    .and_then(|t| now.duration_since(t).ok())
                    .map(|d| d.as_secs()),
                restarts: s.restarts,
                memory_bytes: None,
                cpu_seconds: None,
                cpu_percent: None,
                counts: i.upstream.counts(),
                draining_since: draining_since
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                reason: s.reason,
            }
        };
        let serving = fleet.serving.iter().map(|i| report(i, None));
        let canary =
            (fleet.canary.iter()).flat_map(|c| c.instances.iter().map(|i| report(i, None)));
        let draining = fleet.draining.iter().map(|(i, t)| report(i, Some(*t)));
        let singletons = fleet.singletons.iter().map(|i| report(i, None));
        serving
            .chain(canary)
            .chain(draining)
            .chain(singletons)
            .collect()
    }

    /// Ends the app for good (removed from a server, and out of the
    /// proxy's sites already): waits for the requests in flight on its
    /// instances (up to `drain_timeout`), stops them all and its watchers.
    pub(crate) async fn retire(&self) {
        let deadline = tokio::time::Instant::now() + self.config().config.web.drain_timeout;
        let serving: Vec<Instance> = self.fleet().serving.clone();
        for i in &serving {
            i.upstream
                .wait_until_zero(crate::proxy::upstream::Upstream::in_flight, deadline)
                .await;
        }
        self.stop_all().await;
        self.stopping.cancel();
    }

    /// Stops every instance, serving, draining and singleton, at once.
    pub(crate) async fn stop_all(&self) {
        let all: Vec<Instance> = {
            let mut fleet = self.fleet();
            let mut all = std::mem::take(&mut fleet.serving);
            all.extend(fleet.canary.take().into_iter().flat_map(|c| c.instances));
            all.extend(fleet.draining.drain(..).map(|(i, _)| i));
            all.append(&mut fleet.singletons);
            all
        };
        self.router.publish(Vec::new());
        futures_util::future::join_all(all.iter().map(Instance::stop)).await;
    }
}

impl Runtime for App {
    fn config(&self) -> Loaded {
        App::config(self)
    }

    fn config_file(&self) -> PathBuf {
        self.config_file.clone()
    }

    fn set_config(&self, loaded: Loaded) {
        App::set_config(self, loaded);
    }

    fn current_release(&self) -> Option<Release> {
        App::current_release(self)
    }

    fn serving(&self) -> Vec<Instance> {
        App::serving(self)
    }

    fn singletons(&self) -> Vec<Instance> {
        App::singletons(self)
    }

    /// A deploy's instance must pass readiness once before any restart: a
    /// release that crashes at start fails the deploy at once.
    fn start_instance(&self, release: &Release) -> std::io::Result<Instance> {
        App::start_instance(self, release, false)
    }

    fn swap(&self, release: Release, instances: Vec<Instance>) -> Vec<Instance> {
        App::swap(self, release, instances)
    }

    fn forget_drained(&self, gone: &[Instance]) {
        App::forget_drained(self, gone);
    }

    fn set_deploying(&self, what: Option<String>) {
        App::set_deploying(self, what);
    }

    fn record_release(&self, release: Release) {
        App::record_release(self, release);
    }

    fn forget_release(&self, id: &str) {
        App::forget_release(self, id);
    }

    fn rollback_target(&self, id: Option<&str>) -> Option<Release> {
        App::rollback_target(self, id)
    }

    async fn replace_singletons(&self, release: &Release, report: Report<'_>) {
        App::replace_singletons(self, release, report).await;
    }

    async fn restart_singleton(&self, release: &Release, old: &Instance, report: Report<'_>) {
        App::restart_singleton(self, release, old, report).await;
    }

    fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    fn set_canary(&self, canary: crate::deploy::canary::Canary) {
        App::set_canary(self, canary);
    }

    fn end_canary(&self) -> Vec<Instance> {
        App::end_canary(self)
    }

    fn canary_orders(&self) -> tokio::sync::mpsc::UnboundedReceiver<crate::protocol::CanaryOrder> {
        App::canary_orders(self)
    }
}
