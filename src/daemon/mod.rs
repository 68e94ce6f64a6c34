//! The long-running daemon, the composition root: it binds the listeners,
//! starts the proxy, the reaper and the apps, serves the control socket,
//! and turns signals into stops and reloads. What an app owns (instances,
//! releases, deploys) is in [`crate::app`].
//!
//! - [`api`]: the HTTP+JSON control API on the 0600 Unix socket.
//! - [`state`]: the map of apps, rotation (`offline`), the upgrade asked for.
//! - [`lock`]: one daemon per state directory.
//! - [`upgrade`]: replacing the daemon with another binary, sockets kept.

pub mod api;
pub mod lock;
pub mod state;
pub mod upgrade;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::{Loaded, Setup};
use crate::protocol::ServerReloadReport;
use crate::proxy::activation::Inherited;
use crate::proxy::router::Router;
use crate::proxy::sites::{Site, SiteTable};
use crate::proxy::{listener, Edge, Proxy, StaysBad};
use crate::supervisor::logs::LogSink;
use crate::supervisor::ports::PortPool;
use crate::supervisor::reaper::Reaper;
use crate::supervisor::Context;
use crate::tls::acme::{self, Acme};
use crate::tls::{Certificates, Tls};
use std::sync::{Arc, Mutex};

pub use state::Daemon;
pub use upgrade::Exit;

/// How long open client connections get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Errors that stop the daemon from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another daemon holds the state directory.
    #[error("another baton daemon (pid {pid}) is already running on {dir}")]
    AlreadyRunning {
        /// Its pid, as it wrote it.
        pid: String,
        /// The state directory.
        dir: String,
    },
    /// A listener could not be bound.
    #[error("{field}: cannot listen on {addr}: {source}")]
    Listen {
        /// The field that names it (`proxy.https_listen`).
        field: String,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `[tls]` certificates cannot be used.
    #[error("tls: {0}")]
    Tls(String),
    /// Something else on disk.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl StartError {
    /// Whether the configuration asks for what cannot be had (a port in
    /// use, a certificate that cannot serve): exit 2, as a configuration
    /// error, rather than 1.
    pub fn is_configuration(&self) -> bool {
        matches!(self, StartError::Listen { .. } | StartError::Tls(_))
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

/// Tells systemd (a `Type=notify` unit) how the daemon is doing, when it
/// runs under one: a datagram to `$NOTIFY_SOCKET` (`@` means the abstract
/// namespace).
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// What every app of the daemon shares: the port pool, the reaper, and the
/// daemon's stop; and the locks on the apps' own state directories.
pub struct Shared {
    ports: PortPool,
    reaper: Reaper,
    stopping: CancellationToken,
    /// The daemon's state directory.
    state_dir: PathBuf,
    /// An app of a server keeps its releases in its own state directory,
    /// locked while the server runs it: `baton up` in the app's folder
    /// cannot run it a second time.
    locks: Mutex<Vec<(PathBuf, lock::StateLock)>>,
}

impl Shared {
    /// Lets go of the lock on a retired app's state directory.
    pub fn release(&self, state_dir: &Path) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|(dir, _)| dir != state_dir);
    }

    /// An app of this daemon, with its own route table, log and run folder.
    ///
    /// # Errors
    /// When its state directory is another daemon's, or cannot be made.
    pub fn app(&self, loaded: Loaded) -> Result<Arc<App>, StartError> {
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
            logs: LogSink::new(&loaded.app_log(), true),
            run_dir,
            changed: Default::default(),
        };
        Ok(App::new(loaded, router, ctx, self.stopping.child_token()))
    }
}

/// Rebuilds the site table when `app`'s configuration changes (a reload
/// or deploy that edited its hosts or path prefix), for the app's life.
async fn follow_routes(daemon: std::sync::Weak<Daemon>, app: Arc<App>) {
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
pub async fn start_app(app: Arc<App>) {
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
pub fn site_table(apps: &[Arc<App>], server: bool) -> SiteTable {
    let mut sites = Vec::new();
    let mut default = None;
    for app in apps {
        let config = app.config().config.app;
        let site = Arc::new(Site {
            app: app.name.as_str().into(),
            router: app.router().clone(),
            prefix: config.path_prefix.clone().unwrap_or_default().into(),
            strip_prefix: config.strip_prefix,
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
pub async fn reload_server(daemon: &Arc<Daemon>) -> Result<ServerReloadReport, String> {
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
fn acme_for(setup: &Setup, tls: &Arc<Tls>, proxy: &Proxy) -> Vec<Arc<Acme>> {
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

/// Creates the state directory, private to its owner (logs and releases
/// are, like the socket). An existing directory is left as it is.
///
/// # Errors
/// When it cannot be created.
pub fn ensure_state_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The control socket's path in a state directory.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("baton.sock")
}

/// Runs the daemon in the foreground until `baton stop`, SIGINT, SIGTERM or
/// `baton upgrade`. SIGHUP reloads. It listens on the sockets passed in
/// (`inherited`: by systemd, or by the daemon it upgrades) where their
/// addresses match, and binds the others itself.
///
/// # Errors
/// [`StartError`] when it cannot start; once running it only logs.
pub async fn run(setup: Setup, mut inherited: Inherited) -> Result<Exit, StartError> {
    // Past a file size limit, a write should fail (EFBIG, like a full disk)
    // and fail the release it belongs to, not kill the daemon. Children get
    // the default back before exec.
    // SAFETY: SIG_IGN installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let state_dir = setup.state_dir();
    ensure_state_dir(&state_dir).map_err(io_err(format!("creating {}", state_dir.display())))?;
    let _lock = lock::StateLock::acquire(&state_dir)?;

    let proxy = Proxy::new(setup.proxy.clone(), Edge::new(&setup.proxy, &setup.tls));
    let mut listen = |addr, field: &str| {
        match inherited.take(addr) {
            Ok(Some(l)) => Ok(l),
            Ok(None) => listener::bind(addr),
            Err(e) => Err(e),
        }
        .map_err(|source| StartError::Listen {
            field: field.to_owned(),
            addr,
            source,
        })
    };
    let mut listeners = Vec::new();
    for addr in setup.proxy.listen_addrs() {
        listeners.push((listen(addr, "proxy.listen")?, None));
    }
    let mut tls = None;
    let https_addrs = setup.proxy.https_addrs();
    if !https_addrs.is_empty() {
        let certificates =
            Certificates::load(&setup.cert_pairs()).map_err(|e| StartError::Tls(e.to_string()))?;
        let edge = Tls::new(Arc::new(certificates), proxy.edge.challenges.clone())
            .map_err(|e| StartError::Tls(e.to_string()))?;
        let edge = Arc::new(edge);
        for addr in https_addrs {
            listeners.push((listen(addr, "proxy.https_listen")?, Some(edge.clone())));
        }
        tls = Some(edge);
    }
    let mut tcp_listeners = Vec::new();
    for (index, app) in setup.apps.iter().enumerate() {
        for (name, svc) in &app.config.tcp {
            let field = format!("tcp.{name}.listen");
            tcp_listeners.push((index, name.clone(), listen(svc.addr(), &field)?));
        }
    }
    let metrics_listener = match setup.daemon.metrics_listen {
        Some(addr) => Some(listen(addr, "daemon.metrics_listen")?),
        None => None,
    };
    // Kept open across `baton upgrade`, when the listeners themselves close.
    let mut kept = Vec::new();
    let every = listeners
        .iter()
        .map(|(l, _)| l)
        .chain(tcp_listeners.iter().map(|(_, _, l)| l))
        .chain(metrics_listener.iter());
    for l in every {
        kept.push(upgrade::keep(l).map_err(io_err("keeping a listening socket"))?);
    }
    let unused = inherited.addresses();
    if !unused.is_empty() {
        tracing::warn!(
            "sockets were passed for {unused:?}, which baton.toml does not listen on; \
             closing them"
        );
    }
    // Closed here, not at the end: a socket still open but never accepted
    // on would leave its clients waiting instead of refused.
    drop(inherited);
    let reaper = Reaper::start(&state_dir).map_err(io_err("starting the orphan reaper"))?;
    let shutdown = CancellationToken::new();
    let shared = Shared {
        ports: PortPool::default(),
        reaper: reaper.clone(),
        stopping: shutdown.clone(),
        state_dir: state_dir.clone(),
        locks: Mutex::default(),
    };
    let apps: Vec<Arc<App>> = (setup.apps.iter())
        .map(|loaded| shared.app(loaded.clone()))
        .collect::<Result<_, _>>()?;
    proxy.sites.publish(site_table(&apps, setup.server));
    let acme = tls
        .as_ref()
        .map(|tls| acme_for(&setup, tls, &proxy))
        .unwrap_or_default();
    let daemon = Daemon::new(
        setup.clone(),
        shared,
        apps.clone(),
        proxy.clone(),
        shutdown.clone(),
        tls.clone(),
        acme.clone(),
    );

    let socket = socket_path(&state_dir);
    let api_listener =
        api::bind(&socket).map_err(io_err(format!("binding {}", socket.display())))?;
    tokio::spawn(api::serve(api_listener, daemon.clone(), shutdown.clone()));
    for app in &apps {
        tokio::spawn(app.clone().publish_routes_forever());
        tokio::spawn(follow_routes(Arc::downgrade(&daemon), app.clone()));
    }

    if let Some(tls) = &tls {
        tokio::spawn(tls.certificates.clone().watch(shutdown.clone()));
    }
    for acme in acme {
        tokio::spawn(acme.run(shutdown.clone()));
    }
    let listen_shutdown = CancellationToken::new();
    let mut servers = Vec::new();
    for (index, name, l) in tcp_listeners {
        tokio::spawn(crate::proxy::tcp::serve(
            l,
            name,
            apps[index].router().clone(),
            proxy.clone(),
            listen_shutdown.clone(),
        ));
    }
    for (l, tls) in listeners {
        servers.push(tokio::spawn(listener::serve(
            l,
            proxy.clone(),
            tls,
            listen_shutdown.clone(),
            SHUTDOWN_GRACE,
        )));
    }
    if let Some(l) = metrics_listener {
        tokio::spawn(api::serve_metrics(l, daemon.clone(), shutdown.clone()));
    }
    tracing::info!(
        apps = ?apps.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        listen = ?setup.proxy.listen_addrs(),
        "baton daemon started (pid {})", std::process::id()
    );
    if let Some(mut bad) = proxy.take_stays_bad() {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            while let Some(StaysBad { app, instance }) = bad.recv().await {
                if let Some(app) = daemon.app_named(&app) {
                    tokio::spawn(crate::app::memory::replace_bad(app, instance));
                }
            }
        });
    }
    futures_util::future::join_all(apps.iter().map(|app| start_app(app.clone()))).await;

    notify_systemd(&format!("READY=1\nMAINPID={}", std::process::id()));

    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("installing SIGINT"))?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("installing SIGTERM"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(io_err("installing SIGHUP"))?;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = shutdown.cancelled() => break,
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading");
                daemon.reload_certificates();
                for app in daemon.apps() {
                    let deployer = app.deployer().clone();
                    tokio::spawn(async move {
                        let _ = deployer.run_unwatched(crate::deploy::Kind::Reload).await;
                    });
                }
            }
        }
    }
    let upgrade_to = daemon.upgrade_target();
    match &upgrade_to {
        Some(exe) => {
            tracing::info!(
                "upgrading to {}: stopping: no new connections; stopping instances; \
                 the public sockets stay open",
                exe.display()
            );
            notify_systemd("RELOADING=1");
        }
        None => {
            tracing::info!("stopping: no new connections; stopping instances");
            notify_systemd("STOPPING=1");
        }
    }
    shutdown.cancel();
    // Requests already accepted finish before their instances go.
    listen_shutdown.cancel();
    for s in servers {
        let _ = s.await;
    }
    proxy.closing.cancel();
    futures_util::future::join_all(daemon.apps().iter().map(|a| a.stop_all())).await;
    reaper.shutdown();
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(match upgrade_to {
        Some(exe) => Exit::Upgrade { exe, sockets: kept },
        None => Exit::Stopped,
    })
}
