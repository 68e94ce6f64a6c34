//! The daemon's shared state: configuration, the serving set, instances
//! being drained, release history, and publishing the route table.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::protocol::{InstanceReport, ReleaseReport, StatusReport};
use crate::config::Loaded;
use crate::deploy::new_release_id;
use crate::proxy::router::RouteTable;
use crate::proxy::Proxy;
use crate::release::copy::Survey;
use crate::release::AppDir;
use crate::supervisor::logs::LOG_HEALTH;
use crate::supervisor::{Context, Instance, InstanceSpec, State};

/// One release: a folder of code and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct Release {
    /// Sortable id: UTC time plus a short hash.
    pub id: String,
    /// Where it came from (a path, or "app directory").
    pub source: String,
    /// The folder the web process runs in.
    pub dir: PathBuf,
    /// The configuration it runs with.
    pub config: Loaded,
    /// When it was made.
    pub created: SystemTime,
    /// It failed to deploy.
    pub failed: bool,
    /// Bytes in its folder (or in the copy kept of it), when known.
    pub size: Option<u64>,
}

/// The instances that take traffic, and those on their way out.
#[derive(Default)]
struct Serving {
    release: Option<Release>,
    instances: Vec<Instance>,
    draining: Vec<(Instance, SystemTime)>,
}

/// The daemon. Shared as `Arc<Daemon>` by the API, the deploy code and the
/// route publisher.
pub struct Daemon {
    config: RwLock<Loaded>,
    /// Counts the changes of configuration: every schedule watches it, so a
    /// changed pattern applies at once, not after the old one's next tick.
    pub config_changes: tokio::sync::watch::Sender<u64>,
    /// The folder of the baton.toml the daemon started with: the app's home,
    /// and the repository `deploy --git` exports from.
    pub app_dir: PathBuf,
    /// That baton.toml: what `baton deploy` without a source releases, in
    /// place, whatever the current release folder ships.
    pub app_config: PathBuf,
    /// The data plane.
    pub proxy: Arc<Proxy>,
    /// What every instance shares.
    pub ctx: Context,
    serving: Mutex<Serving>,
    singletons: Mutex<Vec<Instance>>,
    releases: Mutex<Vec<Release>>,
    /// Held by the one deploy that runs.
    pub deploy_lock: Arc<tokio::sync::Mutex<()>>,
    /// CPU and memory readings for `status`.
    usage: crate::supervisor::usage::Sampler,
    deploying: Mutex<Option<String>>,
    offline: std::sync::atomic::AtomicBool,
    next_number: AtomicU64,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Set by `baton upgrade`: the binary to exec once stopped, and the
    /// deploy lock, held so that no deploy starts meanwhile.
    upgrade: Mutex<Option<(PathBuf, tokio::sync::OwnedMutexGuard<()>)>>,
    started: SystemTime,
}

impl Daemon {
    /// A daemon with nothing running yet.
    pub fn new(
        config: Loaded,
        proxy: Arc<Proxy>,
        ctx: Context,
        shutdown: CancellationToken,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            app_dir: config.base_dir.clone(),
            app_config: config.path.clone(),
            config: RwLock::new(config),
            config_changes: tokio::sync::watch::Sender::new(0),
            proxy,
            ctx,
            serving: Mutex::default(),
            singletons: Mutex::default(),
            releases: Mutex::default(),
            deploy_lock: Arc::default(),
            usage: Default::default(),
            deploying: Mutex::default(),
            offline: Default::default(),
            next_number: AtomicU64::new(1),
            shutdown,
            upgrade: Mutex::default(),
            started: SystemTime::now(),
        })
    }

    /// Stops the daemon to exec `exe` (see [`super::upgrade`]); `deploys`
    /// is the deploy lock, held until then.
    pub fn upgrade_to(&self, exe: PathBuf, deploys: tokio::sync::OwnedMutexGuard<()>) {
        *self.upgrade.lock().expect("upgrade lock poisoned") = Some((exe, deploys));
        self.shutdown.cancel();
    }

    /// The binary `baton upgrade` asked for, if it did.
    pub fn upgrade_target(&self) -> Option<PathBuf> {
        let upgrade = self.upgrade.lock().expect("upgrade lock poisoned");
        upgrade.as_ref().map(|(exe, _)| exe.clone())
    }

    /// The configuration in force.
    pub fn config(&self) -> Loaded {
        self.config.read().expect("config lock poisoned").clone()
    }

    /// Replaces the configuration in force (after a successful deploy).
    pub fn set_config(&self, loaded: Loaded) {
        *self.config.write().expect("config lock poisoned") = loaded;
        self.config_changes.send_modify(|n| *n += 1);
    }

    /// The release serving traffic.
    pub fn current_release(&self) -> Option<Release> {
        self.serving
            .lock()
            .expect("serving lock poisoned")
            .release
            .clone()
    }

    /// The serving instances.
    pub fn serving(&self) -> Vec<Instance> {
        self.serving
            .lock()
            .expect("serving lock poisoned")
            .instances
            .clone()
    }

    /// Describes the deploy in progress, for status and for refusals.
    pub fn set_deploying(&self, what: Option<String>) {
        *self.deploying.lock().expect("deploying lock poisoned") = what;
        // Requests may wait for the deploy's instances (or not, after it).
        self.publish_routes();
    }

    /// The deploy in progress, described.
    pub fn deploying(&self) -> Option<String> {
        self.deploying
            .lock()
            .expect("deploying lock poisoned")
            .clone()
    }

    /// Takes this server out of (or back into) an external load balancer's
    /// rotation: the admin `/health` answers 503 while offline. Baton's own
    /// proxy keeps serving whatever still arrives.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Release);
    }

    /// Whether `/health` says this server can take traffic: online, and at
    /// least one instance ready.
    pub fn healthy(&self) -> Result<usize, &'static str> {
        if self.offline.load(Ordering::Acquire) {
            return Err("offline");
        }
        match self.proxy.router.table().instances.len() {
            0 => Err("no ready instance"),
            n => Ok(n),
        }
    }

    /// Starts one instance of `release`'s web process.
    ///
    /// # Errors
    /// When no private port can be had.
    pub fn start_instance(
        &self,
        release: &Release,
        restart_before_ready: bool,
    ) -> std::io::Result<Instance> {
        let web = &release.config.config.web;
        let cwd = match &web.cwd {
            Some(p) => release.dir.join(p),
            None => release.dir.clone(),
        };
        let spec = InstanceSpec {
            process: "web".into(),
            number: self.next_number.fetch_add(1, Ordering::Relaxed),
            release: release.id.clone(),
            command: web.command.get_ref().clone(),
            cwd,
            env: web.env.clone(),
            readiness: web.readiness.clone(),
            start_timeout: web.start_timeout,
            stop_signal: web.stop_signal(),
            kill_timeout: web.kill_timeout,
            min_uptime: web.min_uptime,
            restart_window: web.restart_window,
            max_restarts: web.max_restarts,
            autorestart: web.autorestart,
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
        let spec = InstanceSpec {
            process: name.to_string(),
            number: self.next_number.fetch_add(1, Ordering::Relaxed),
            release: release.id.clone(),
            command: p.command.get_ref().clone(),
            cwd: p
                .cwd
                .as_ref()
                .map_or_else(|| release.dir.clone(), |c| release.dir.join(c)),
            env: p.env.clone(),
            readiness: crate::config::Readiness {
                kind: crate::config::ReadinessKind::None,
                ..Default::default()
            },
            start_timeout: std::time::Duration::from_secs(30),
            stop_signal: p.stop_signal(),
            kill_timeout: p.kill_timeout,
            min_uptime: p.min_uptime,
            restart_window: crate::config::default_restart_window(),
            max_restarts: p.max_restarts,
            autorestart: p.autorestart,
            tcp: Vec::new(),
            restart_before_ready: true,
        };
        Instance::start(spec, self.ctx.clone())
            .map_err(|e| tracing::error!("cannot start {name}: {e}"))
            .ok()
    }

    /// The singletons now running.
    pub fn singletons(&self) -> Vec<Instance> {
        self.singletons
            .lock()
            .expect("singletons lock poisoned")
            .clone()
    }

    /// Gives the singleton `old` a fresh process of `release`: `old` is
    /// stopped first, as at a deploy, so two never run at once; it is
    /// listed (as stopping) until then. Calls `report` for each step.
    pub async fn restart_singleton(
        &self,
        release: &Release,
        old: &Instance,
        report: impl Fn(String),
    ) {
        report(format!("{}: stopping it first (singleton)", old.id));
        old.stop().await;
        // A daemon stopping meanwhile has stopped the old one too.
        let fresh = if self.shutdown.is_cancelled() {
            None
        } else {
            self.start_singleton(release, &old.process)
        };
        let mut singletons = self.singletons.lock().expect("singletons lock poisoned");
        singletons.retain(|i| i.id != old.id);
        if let Some(fresh) = fresh {
            report(format!("{}: started with release {}", fresh.id, release.id));
            singletons.push(fresh);
        }
    }

    /// Replaces the singletons with `release`'s: each old one is stopped
    /// before the new one starts, so two never run at once (a scheduler must
    /// not fire twice). Calls `report` for each step.
    pub async fn replace_singletons(&self, release: &Release, report: impl Fn(String)) {
        let old = std::mem::take(&mut *self.singletons.lock().expect("singletons lock poisoned"));
        if old.is_empty() && release.config.config.process.is_empty() {
            return;
        }
        for i in &old {
            report(format!("{}: stopping the old one first (singleton)", i.id));
        }
        futures_util::future::join_all(old.iter().map(Instance::stop)).await;
        let started = self.start_singletons(release);
        for i in &started {
            report(format!("{}: started with release {}", i.id, release.id));
        }
        *self.singletons.lock().expect("singletons lock poisoned") = started;
    }

    /// Starts the configured release at daemon start. Its instances restart
    /// with backoff until ready; they take traffic as each becomes ready.
    ///
    /// After a restart that is the release `current` points at, when it is a
    /// complete release folder; otherwise the app directory in place. Release
    /// folders on disk become the rollback history.
    pub async fn start_initial(self: Arc<Self>) {
        let loaded = self.config();
        let store = crate::release::Store::new(&loaded);
        for leftover in store.recover() {
            tracing::warn!("removed the incomplete release {}", leftover.display());
        }
        let current_dir = store.current_target();
        let mut from_disk = None;
        for (meta, dir) in store.list() {
            let Ok(config) = crate::deploy::release_config(&loaded, &dir) else {
                continue;
            };
            let release = Release {
                id: meta.id,
                source: meta.source,
                dir: dir.clone(),
                config,
                created: humantime::parse_rfc3339(&meta.created).unwrap_or(SystemTime::now()),
                failed: meta.status != "ready",
                size: meta.size,
            };
            if current_dir.as_deref() == Some(dir.as_path()) && !release.failed {
                from_disk = Some(release.clone());
            }
            self.record_release(release);
        }
        if let Some(r) = &from_disk {
            // The serving release goes last in the history.
            self.record_release(r.clone());
            self.set_config(r.config.clone());
        }
        let (release, copy_later) = match from_disk {
            Some(release) => (release, None),
            None => Self::in_place(&loaded).await,
        };
        let loaded = release.config.clone();
        let count = loaded.config.web.instance_count();
        tracing::info!(
            "release {}: starting {count} instance{} in {}",
            release.id,
            crate::deploy::plural(count as usize),
            release.dir.display()
        );
        let mut started = Vec::new();
        for _ in 0..count {
            match self.start_instance(&release, true) {
                Ok(i) => started.push(i),
                Err(e) => tracing::error!("cannot start an instance: {e}"),
            }
        }
        if let Some(survey) = copy_later {
            keep_copy_later(&self, &loaded, &release.id, survey);
        }
        self.record_release(release.clone());
        *self.singletons.lock().expect("singletons lock poisoned") =
            self.start_singletons(&release);
        let mut serving = self.serving.lock().expect("serving lock poisoned");
        serving.release = Some(release);
        serving.instances = started;
    }

    /// The app directory as the release to run in place: the id of the copy
    /// kept of it when its files are unchanged, else a new id, and what the
    /// copy still to be made under that id needs.
    async fn in_place(loaded: &Loaded) -> (Release, Option<Survey>) {
        let (id, size, copy_later) = match crate::release::survey_app_dir(loaded).await {
            Ok(AppDir::Kept(meta, copy)) => {
                tracing::info!(
                    "release {}: the app directory, unchanged since its copy in {}",
                    meta.id,
                    copy.display()
                );
                (meta.id, meta.size, None)
            }
            Ok(AppDir::Changed(survey)) => (new_release_id(), Some(survey.bytes), Some(survey)),
            Err(e) => {
                let id = new_release_id();
                warn_no_copy(&id, &e);
                (id, None, None)
            }
        };
        let release = Release {
            id,
            source: crate::release::APP_DIR_SOURCE.into(),
            dir: loaded.base_dir.clone(),
            config: loaded.clone(),
            created: SystemTime::now(),
            failed: false,
            size,
        };
        (release, copy_later)
    }

    /// Makes `instances` (of `release`) the serving set and publishes the
    /// route table at once. Returns the instances that left the set; they
    /// are listed as draining until [`Daemon::forget_drained`].
    pub fn swap(&self, release: Release, instances: Vec<Instance>) -> Vec<Instance> {
        let retired = {
            let mut serving = self.serving.lock().expect("serving lock poisoned");
            let keep: Vec<Arc<str>> = instances.iter().map(|i| i.id.clone()).collect();
            let old = std::mem::replace(&mut serving.instances, instances);
            serving.release = Some(release);
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
        retired
    }

    /// Drops drained instances from the status listing.
    pub fn forget_drained(&self, gone: &[Instance]) {
        let mut serving = self.serving.lock().expect("serving lock poisoned");
        serving
            .draining
            .retain(|(i, _)| !gone.iter().any(|g| g.id == i.id));
    }

    /// Publishes the serving instances that are ready.
    pub fn publish_routes(&self) {
        let serving = self.serving.lock().expect("serving lock poisoned");
        // A Ready instance whose drain was just called off is still listed as
        // Draining until its task handles the message; it serves either way.
        let ready: Vec<_> = serving
            .instances
            .iter()
            .filter(|i| matches!(i.status().state, State::Ready | State::Draining))
            .map(|i| i.upstream.clone())
            .collect();
        // Requests wait for an instance only while one may come: a
        // starting or restarting one, or a deploy's.
        let hopeless = ready.is_empty()
            && !serving.instances.is_empty()
            && serving
                .instances
                .iter()
                .all(|i| i.status().state.is_terminal())
            && self.deploying().is_none();
        self.proxy.router.publish_table(RouteTable {
            instances: ready,
            hopeless,
        });
    }

    /// Re-publishes on every instance state change, for the daemon's life.
    pub async fn publish_routes_forever(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.ctx.changed.notified() => self.publish_routes(),
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    /// Remembers a release for rollback and `baton releases`.
    pub fn record_release(&self, release: Release) {
        let mut releases = self.releases.lock().expect("releases lock poisoned");
        releases.retain(|r| r.id != release.id);
        releases.push(release);
    }

    /// Forgets a release whose folder was pruned.
    pub fn forget_release(&self, id: &str) {
        self.releases
            .lock()
            .expect("releases lock poisoned")
            .retain(|r| r.id != id);
    }

    /// Marks a release as failed.
    pub fn mark_failed(&self, id: &str) {
        let mut releases = self.releases.lock().expect("releases lock poisoned");
        if let Some(r) = releases.iter_mut().find(|r| r.id == id) {
            r.failed = true;
        }
    }

    /// A release by id, or the last good one before the current one.
    pub fn rollback_target(&self, id: Option<&str>) -> Option<Release> {
        let releases = self.releases.lock().expect("releases lock poisoned");
        let current = self.current_release().map(|r| r.id);
        if let Some(id) = id {
            return releases.iter().find(|r| r.id == id).cloned();
        }
        let before_current = releases
            .iter()
            .position(|r| Some(&r.id) == current.as_ref())
            .unwrap_or(releases.len());
        releases[..before_current]
            .iter()
            .rev()
            .find(|r| !r.failed)
            .cloned()
    }

    /// Every known release, oldest first.
    pub fn releases(&self) -> Vec<ReleaseReport> {
        let current = self.current_release().map(|r| r.id);
        let releases = self.releases.lock().expect("releases lock poisoned");
        releases
            .iter()
            .map(|r| ReleaseReport {
                id: r.id.clone(),
                created: humantime::format_rfc3339_seconds(r.created).to_string(),
                source: r.source.clone(),
                dir: r.dir.display().to_string(),
                size: r.size,
                status: if Some(&r.id) == current.as_ref() {
                    "current".into()
                } else if r.failed {
                    "failed".into()
                } else {
                    "previous".into()
                },
            })
            .collect()
    }

    /// The status report.
    pub fn status(&self) -> StatusReport {
        let loaded = self.config();
        let serving = self.serving.lock().expect("serving lock poisoned");
        let now = SystemTime::now();
        let report = |i: &Instance, draining_since: Option<SystemTime>| {
            let s = i.status();
            InstanceReport {
                process: i.process.to_string(),
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
        let mut instances: Vec<InstanceReport> =
            serving.instances.iter().map(|i| report(i, None)).collect();
        instances.extend(serving.draining.iter().map(|(i, t)| report(i, Some(*t))));
        instances.extend(
            self.singletons
                .lock()
                .expect("singletons lock poisoned")
                .iter()
                .map(|i| report(i, None)),
        );
        StatusReport {
            app: loaded.config.app.name.clone(),
            pid: std::process::id(),
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            version: crate::VERSION.to_string(),
            uptime_secs: now.duration_since(self.started).map_or(0, |d| d.as_secs()),
            listen: loaded
                .config
                .proxy
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            release: serving.release.as_ref().map(|r| r.id.clone()),
            deploying: self.deploying(),
            online: !self.offline.load(Ordering::Acquire),
            instances,
            log_errors: LOG_HEALTH.total(),
            log_error: LOG_HEALTH.last(),
        }
    }

    /// [`Daemon::status`] with each instance's CPU and memory, read from
    /// /proc off the async threads.
    pub async fn status_with_usage(self: &Arc<Self>) -> StatusReport {
        let mut report = self.status();
        let now = std::time::Instant::now();
        let groups: Vec<(i32, std::time::Instant)> = report
            .instances
            .iter()
            .filter_map(|i| {
                let up = std::time::Duration::from_secs(i.uptime_secs?.max(1));
                Some((i32::try_from(i.pid?).ok()?, now.checked_sub(up)?))
            })
            .collect();
        let daemon = self.clone();
        let Ok(usage) = tokio::task::spawn_blocking(move || daemon.usage.read(&groups)).await
        else {
            return report;
        };
        for i in &mut report.instances {
            let Some(u) = i.pid.and_then(|p| usage.get(&(p as i32))) else {
                continue;
            };
            i.memory_bytes = Some(u.memory_bytes);
            i.cpu_seconds = Some(u.cpu_seconds);
            i.cpu_percent = Some(u.cpu_percent);
        }
        report
    }

    /// Stops every instance, serving and draining, at once.
    pub async fn stop_all(&self) {
        let all: Vec<Instance> = {
            let mut serving = self.serving.lock().expect("serving lock poisoned");
            let mut all = std::mem::take(&mut serving.instances);
            all.extend(serving.draining.drain(..).map(|(i, _)| i));
            all.append(&mut self.singletons.lock().expect("singletons lock poisoned"));
            all
        };
        self.proxy.router.publish(Vec::new());
        futures_util::future::join_all(all.iter().map(Instance::stop)).await;
    }
}

/// Keeps the copy of the app directory for rollback once its instances are
/// starting: a changed app directory is read and copied whole, which took
/// 10 s for a large file with the disk busy, and nobody is served until the
/// first instance is ready.
///
/// On its own thread rather than tokio's blocking pool: the runtime waits
/// for that pool when it shuts down, and a stop or an upgrade must not wait
/// for a copy. A copy cut short leaves a staging folder that the next start
/// removes.
fn keep_copy_later(daemon: &Arc<Daemon>, loaded: &Loaded, id: &str, survey: Survey) {
    let store = crate::release::Store::new(loaded);
    let (dir, cfg, release) = (
        loaded.base_dir.clone(),
        loaded.config.releases.clone(),
        id.to_string(),
    );
    let daemon = Arc::clone(daemon);
    let spawned = std::thread::Builder::new()
        .name("baton-copy".into())
        .spawn(
            move || match store.keep_changed(&dir, &cfg, &survey, Some(&release)) {
                Ok(((meta, copy), renamed_from)) => {
                    if let Some(old) = renamed_from {
                        // Its folder is this release's now.
                        daemon.forget_release(&old);
                        tracing::info!(
                            "release {old} had the same files; its copy is release {release}'s now"
                        );
                    }
                    tracing::info!(
                        "release {}: the app directory, kept in {}",
                        meta.id,
                        copy.display()
                    );
                }
                Err(e) => warn_no_copy(&release, &e),
            },
        );
    if let Err(e) = spawned {
        warn_no_copy(id, &e);
    }
}

/// A start that keeps no copy still serves; only the rollback to it is lost.
fn warn_no_copy(id: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(
        "release {id}: no copy of the app directory kept, so no rollback to it: {error}"
    );
}
