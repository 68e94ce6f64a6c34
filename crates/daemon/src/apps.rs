//! The daemon's apps: made with what they share (`Shared`), started, routed
//! to (`site_table`, kept in step with each app's configuration), and added
//! or retired by `baton reload` at a server (`reload_server`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::{ensure_state_dir, io_err, lock, Daemon, StartError};
use crate::app::App;
use crate::config::{Loaded, Setup};
use crate::logs::LogSink;
use crate::protocol::ServerReloadReport;
use crate::proxy::router::Router;
use crate::proxy::sites::{Site, SiteTable};
use crate::proxy::Proxy;
use crate::supervisor::ports::PortPool;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::Context;
use crate::tls::acme::{self, Acme};
use crate::tls::Tls;

/// What every app of the daemon shares: the port pool, the reaper, and the
/// daemon's stop; and the locks on the apps' own state directories.
pub(crate) struct Shared {
    pub(super) ports: PortPool,
    pub(super) reaper: Reaper,
    pub(super) stopping: CancellationToken,
    /// The daemon's state directory.
    pub(super) state_dir: PathBuf,
    /// An app of a server keeps its releases in its own state directory,
    /// locked while the server runs it: `baton up` in the app's folder
    /// cannot run it a second time.
    pub(super) locks: Mutex<Vec<(PathBuf, lock::StateLock)>>,
}

impl Shared {
    /// Lets go of the lock on a retired app's state directory.
    pub(crate) fn release(&self, state_dir: &Path) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|(dir, _)| dir != state_dir);
    }

    /// An app of this daemon, with its own route table, log and run folder.
    ///
    /// # Errors
    /// When its state directory is another daemon's, or cannot be made.
    pub(crate) fn app(&self, loaded: Loaded) -> Result<Arc<App>, StartError> {
        let dir = loaded.state_dir();
        if dir != self.state_dir {
            ensure_state_dir(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
            let lock = lock::StateLock::acquire(&dir)?;
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.push((dir, lock));
        }
        let run_dir = loaded.state_dir().join("run");
        std::fs::create_dir_all(&run_dir).map_err(io_err("creating the run folder"))?;
        let proxy = &loaded.config.proxy;
        let router = Arc::new(Router::new(proxy.balance, proxy.hold_capacity));
        let ctx = Context {
            ports: self.ports.clone(),
            reaper: self.reaper.clone(),
            logs: LogSink::new(&loaded.app_log(), true, loaded.log_rotation()),
            run_dir,
            changed: Default::default(),
        };
        Ok(App::new(loaded, router, ctx, self.stopping.child_token()))
    }
}

/// Rebuilds the site table when `app`'s configuration changes (a reload
/// or deploy that edited its hosts or path prefix), for the app's life.
pub(super) async fn follow_routes(daemon: std::sync::Weak<Daemon>, app: Arc<App>) {
    let mut changes = app.config_changes();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = app.stopping.cancelled() => return,
        }
        match daemon.upgrade() {
            Some(daemon) => daemon.republish_sites(),
            None => return,
        }
    }
}

/// Starts an app's release and its watchers: memory, schedules, inbox.
pub(crate) async fn start_app(app: Arc<App>) {
    app.clone().boot().await;
    tokio::spawn(crate::app::memory::watch(app.clone()));
    tokio::spawn(crate::schedule::keep(app.clone()));
    if let Some(inbox) = &app.config().config.releases.inbox {
        let inbox = app.config().base_dir.join(inbox);
        tokio::spawn(crate::app::inbox::watch(app.clone(), inbox));
    }
}

/// Which app each request is for: each app's hosts and path prefix, and
/// the default app (the only one, when not at a server: it answers every
/// host, as before servers of several apps).
pub(crate) fn site_table(apps: &[Arc<App>], server: bool) -> SiteTable {
    let mut sites = Vec::new();
    let mut default = None;
    for app in apps {
        let loaded = app.config();
        let (config, proxy) = (loaded.config.app, loaded.config.proxy);
        let site = Arc::new(Site {
            app: app.name.as_str().into(),
            router: app.router().clone(),
            prefix: config.path_prefix.clone().unwrap_or_default().into(),
            strip_prefix: config.strip_prefix,
            hold_timeout: proxy.hold_timeout,
            retries: proxy.retries,
            assets: app.assets().clone(),
            access: app.access_log(),
        });
        if config.default || !server {
            default = Some(site.clone());
        }
        sites.push((site, config.hosts()));
    }
    SiteTable::new(sites, default)
}

/// `baton reload` at a server: reads the server file again, starts the
/// apps added to `[server] apps`, then swaps the sites (the new apps ready,
/// the removed ones out), then drains and stops the removed apps. The
/// apps kept are not touched. Listener and `[tls]` changes need a restart.
///
/// # Errors
/// The server file or an app's does not load; nothing changed then.
pub(crate) async fn reload_server(daemon: &Arc<Daemon>) -> Result<ServerReloadReport, String> {
    let path = daemon
        .setup
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .path
        .clone();
    let fresh = Setup::load(&path).map_err(|e| e.to_string())?;
    if !fresh.server {
        return Err(format!(
            "{} has no [server]: reload the app instead",
            path.display()
        ));
    }
    let current = daemon.apps();
    let mut report = ServerReloadReport::default();
    let mut next = Vec::new();
    let mut added = Vec::new();
    for loaded in &fresh.apps {
        let name = &loaded.config.app.name;
        match current.iter().find(|a| &a.name == name) {
            Some(app) => {
                report.kept.push(name.clone());
                next.push(app.clone());
            }
            None => {
                let app = daemon
                    .shared
                    .app(loaded.clone())
                    .map_err(|e| e.to_string())?;
                report.added.push(name.clone());
                added.push(app.clone());
                next.push(app);
            }
        }
    }
    for app in &added {
        tokio::spawn(app.clone().publish_routes_forever());
        tokio::spawn(follow_routes(Arc::downgrade(daemon), app.clone()));
        daemon.add_acme(&fresh, app.config().config.app.hosts());
    }
    futures_util::future::join_all(added.iter().map(|app| start_app(app.clone()))).await;
    let removed: Vec<Arc<App>> = (current.into_iter())
        .filter(|a| !next.iter().any(|n| Arc::ptr_eq(n, a)))
        .collect();
    daemon.set_apps(next);
    *daemon.setup.lock().unwrap_or_else(|p| p.into_inner()) = fresh;
    for app in removed {
        report.removed.push(app.name.clone());
        app.retire().await;
        daemon.shared.release(&app.config().state_dir());
    }
    tracing::info!(
        "server reloaded: added {:?}, removed {:?}, kept {:?}",
        report.added,
        report.removed,
        report.kept
    );
    Ok(report)
}

/// One ACME certificate per app with hosts (a host two apps share, by
/// path prefix, goes on the first one's).
pub(super) fn acme_for(setup: &Setup, tls: &Arc<Tls>, proxy: &Proxy) -> Vec<Arc<Acme>> {
    let mut taken: Vec<String> = Vec::new();
    let mut issuers = Vec::new();
    for app in &setup.apps {
        let hosts: Vec<String> = (app.config.app.hosts().into_iter())
            .filter(|h| !taken.contains(h))
            .collect();
        taken.extend(hosts.iter().cloned());
        if let Some(settings) = acme::Settings::new(setup, hosts) {
            issuers.push(Acme::new(
                settings,
                tls.certificates.clone(),
                proxy.edge.challenges.clone(),
            ));
        }
    }
    issuers
}
