//! The daemon's own state: its apps, whether it is in rotation, and the
//! upgrade it was asked for. Everything an app owns is in [`App`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::app::App;
use crate::config::Setup;
use crate::deploy::owner::Hold;
use crate::logs::LOG_HEALTH;
use crate::protocol::{CertificateReport, CertificateState, StatusReport};
use crate::proxy::Proxy;
use crate::tls::acme::{unix_seconds, Acme};
use crate::tls::certificates::Source;
use crate::tls::Tls;

/// The daemon: the composition root. Shared as `Arc<Daemon>` by the
/// control API and the run loop.
pub(crate) struct Daemon {
    /// What it was started with (the server file, or the one app's).
    pub setup: Mutex<Setup>,
    /// What new apps are made with.
    pub shared: Shared,
    /// The apps, in the order the server file lists them.
    apps: RwLock<Vec<Arc<App>>>,
    /// The data plane.
    pub proxy: Arc<Proxy>,
    /// Cancelled when the daemon stops.
    pub shutdown: CancellationToken,
    /// Set by `baton upgrade`: the binary to exec once stopped, and the
    /// holds on every app's deploys, kept so that none starts meanwhile.
    upgrade: Mutex<Option<(PathBuf, Vec<Hold>)>>,
    /// Out of an external load balancer's rotation (`baton offline`).
    offline: AtomicBool,
    /// CPU and memory readings for `status`.
    usage: crate::supervisor::procfs::Sampler,
    started: SystemTime,
    /// The HTTPS side, when `https_listen` is set.
    tls: Option<Arc<Tls>>,
    /// Automatic certificates, one per app with hosts, when `[tls]
    /// acme_email` is set; apps added by a reload add theirs.
    acme: Mutex<Vec<Arc<Acme>>>,
}

/// Which app a control request names.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Pick {
    /// No app by that name.
    #[error("no app named {0:?} here (baton apps lists them)")]
    Unknown(String),
    /// Several apps, and none named.
    #[error("this server runs several apps: name one with --app (baton apps lists them)")]
    Ambiguous,
}

impl Daemon {
    /// A daemon serving `apps`, over HTTPS too with `tls`.
    pub(crate) fn new(
        setup: Setup,
        shared: Shared,
        apps: Vec<Arc<App>>,
        proxy: Arc<Proxy>,
        shutdown: CancellationToken,
        tls: Option<Arc<Tls>>,
        acme: Vec<Arc<Acme>>,
    ) -> Arc<Daemon> {
        Arc::new(Daemon {
            setup: Mutex::new(setup),
            shared,
            tls,
            acme: Mutex::new(acme),
            apps: RwLock::new(apps),
            proxy,
            shutdown,
            upgrade: Mutex::default(),
            offline: AtomicBool::default(),
            usage: Default::default(),
            started: SystemTime::now(),
        })
    }

    /// The app a control request is for: the one named, or the only one.
    ///
    /// # Errors
    /// [`Pick`] when there is no such app, or several and none named.
    pub(crate) fn pick(&self, name: Option<&str>) -> Result<Arc<App>, Pick> {
        let apps = self.apps();
        match name {
            Some(name) => (apps.into_iter())
                .find(|a| a.name == name)
                .ok_or_else(|| Pick::Unknown(name.to_owned())),
            None if apps.len() == 1 => Ok(apps[0].clone()),
            None => Err(Pick::Ambiguous),
        }
    }

    /// The app named `name`.
    pub(crate) fn app_named(&self, name: &str) -> Option<Arc<App>> {
        self.apps().into_iter().find(|a| a.name == name)
    }

    /// Every app, in order.
    pub(crate) fn apps(&self) -> Vec<Arc<App>> {
        self.apps.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the list of apps (`baton reload` at a server); the proxy's
    /// sites follow.
    pub(crate) fn set_apps(&self, apps: Vec<Arc<App>>) {
        *self.apps.write().unwrap_or_else(|p| p.into_inner()) = apps;
        self.republish_sites();
    }

    /// Serves a site table made from the apps and their configurations now.
    pub(crate) fn republish_sites(&self) {
        let server = self.setup.lock().unwrap_or_else(|p| p.into_inner()).server;
        self.proxy
            .sites
            .publish(super::site_table(&self.apps(), server));
    }

    /// Stops the daemon to exec `exe` (see [`super::upgrade`]); `deploys`
    /// holds every app's deploys off until then.
    pub(crate) fn upgrade_to(&self, exe: PathBuf, deploys: Vec<Hold>) {
        *self.upgrade.lock().expect("upgrade lock poisoned") = Some((exe, deploys));
        self.shutdown.cancel();
    }

    /// The binary `baton upgrade` asked for, if it did.
    pub(crate) fn upgrade_target(&self) -> Option<PathBuf> {
        let upgrade = self.upgrade.lock().expect("upgrade lock poisoned");
        upgrade.as_ref().map(|(exe, _)| exe.clone())
    }

    /// Takes this server out of (or back into) an external load balancer's
    /// rotation: the admin `/health` answers 503 while offline. Baton's own
    /// proxy keeps serving whatever still arrives.
    pub(crate) fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Release);
    }

    /// Whether `/health` says this server can take traffic: online, and at
    /// least one instance ready.
    pub(crate) fn healthy(&self) -> Result<usize, &'static str> {
        if self.offline.load(Ordering::Acquire) {
            return Err("offline");
        }
        match self.apps().iter().map(|a| a.ready_count()).sum() {
            0 => Err("no ready instance"),
            n => Ok(n),
        }
    }

    /// The status report of `app`.
    pub(crate) fn status(&self, app: &App) -> StatusReport {
        let loaded = app.config();
        let now = SystemTime::now();
        StatusReport {
            app: app.name.clone(),
            pid: std::process::id(),
            started: humantime::format_rfc3339_millis(self.started).to_string(),
            version: crate::protocol::VERSION.to_string(),
            uptime_secs: now.duration_since(self.started).map_or(0, |d| d.as_secs()),
            listen: (self.setup.lock().unwrap_or_else(|p| p.into_inner()).proxy)
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect(),
            hosts: loaded.config.app.hosts(),
            path_prefix: loaded.config.app.path_prefix.clone(),
            held: app.router().held(),
            release: app.current_release().map(|r| r.id),
            deploying: app.deploying(),
            online: !self.offline.load(Ordering::Acquire),
            instances: app.instance_reports(),
            log_errors: LOG_HEALTH.total(),
            log_error: LOG_HEALTH.last(),
            canary: app.canary_report(),
            certificates: self.certificates(),
        }
    }

    /// The certificates served from files, then ACME's.
    pub(crate) fn certificates(&self) -> Vec<CertificateReport> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let files = tls.certificates.served().into_iter().filter_map(|served| {
            let Source::File(file) = served.source else {
                return None;
            };
            Some(CertificateReport {
                names: served.names,
                source: file.display().to_string(),
                state: CertificateState::Serving,
                not_after: Some(unix_seconds(served.not_after)),
                renew_at: None,
                error: None,
                next_try: None,
            })
        });
        let acme = self.acme.lock().unwrap_or_else(|p| p.into_inner()).clone();
        files.chain(acme.iter().map(|a| a.report())).collect()
    }

    /// Issues and renews certificates for `hosts` (an app added by a
    /// reload), when the server has ACME; the hosts another certificate
    /// already covers are left out.
    pub(crate) fn add_acme(&self, setup: &crate::config::Setup, hosts: Vec<String>) {
        let Some(tls) = &self.tls else {
            return;
        };
        let mut acme = self.acme.lock().unwrap_or_else(|p| p.into_inner());
        let taken: Vec<String> = acme.iter().flat_map(|a| a.report().names).collect();
        let hosts = hosts.into_iter().filter(|h| !taken.contains(h)).collect();
        if let Some(settings) = crate::tls::acme::Settings::new(setup, hosts) {
            let issuer = Acme::new(
                settings,
                tls.certificates.clone(),
                self.proxy.edge.challenges.clone(),
            );
            tokio::spawn(issuer.clone().run(self.shutdown.clone()));
            acme.push(issuer);
        }
    }

    /// Reads the certificate files again (`baton reload`); the pairs in use
    /// stay when one cannot be used, and the log names the file.
    pub(crate) fn reload_certificates(&self) {
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.certificates.reload_files() {
                tracing::error!("{e}; the certificates in use go on serving");
            }
        }
    }

    /// [`Daemon::status`] with each instance's CPU and memory, read from
    /// /proc off the async threads.
    pub(crate) async fn status_with_usage(self: &Arc<Self>, app: &App) -> StatusReport {
        let mut report = self.status(app);
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
}
