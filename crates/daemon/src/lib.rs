//! The long-running daemon, the composition root: it binds the listeners,
//! starts the proxy, the reaper and the apps, serves the control socket,
//! and turns signals into stops and reloads. What an app owns (instances,
//! releases, deploys) is in [`crate::app`].
//!
//! - [`api`]: the HTTP+JSON control API on the 0600 Unix socket.
//! - [`state`]: the map of apps, rotation (`offline`), the upgrade asked for.
//! - [`lock`]: one daemon per state directory.
//! - [`upgrade`]: replacing the daemon with another binary, sockets kept.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_deploy as deploy;
use baton_logs as logs;
use baton_protocol as protocol;
use baton_proxy as proxy;
use baton_release as release;
use baton_supervisor as supervisor;
use baton_tls as tls;

pub(crate) mod app;
pub(crate) mod schedule;

pub(crate) mod api;
pub(crate) mod apps;
pub mod lock;
pub(crate) mod state;
pub mod upgrade;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Setup;
use crate::proxy::activation::Inherited;
use crate::proxy::{listener, Edge, Proxy, StaysBad};
use crate::supervisor::ports::PortPool;
use crate::supervisor::reaper::Reaper;
use crate::tls::{Certificates, Tls};
use std::sync::{Arc, Mutex};

use apps::{acme_for, follow_routes};
pub(crate) use apps::{reload_server, site_table, start_app, Shared};
pub(crate) use state::Daemon;
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
    crate::supervisor::sys::ignore_signal(nix::sys::signal::Signal::SIGXFSZ);
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
        // Checked when the configuration was loaded.
        ports: PortPool::new(setup.daemon.port_range().unwrap_or_default()),
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
                if setup.server {
                    // As `baton reload` at the server: apps added and
                    // removed, the others untouched.
                    let daemon = daemon.clone();
                    tokio::spawn(async move {
                        if let Err(e) = reload_server(&daemon).await {
                            tracing::error!("reload: {e}; nothing changed");
                        }
                    });
                } else {
                    for app in daemon.apps() {
                        let deployer = app.deployer().clone();
                        tokio::spawn(async move {
                            let _ = deployer.run_unwatched(crate::deploy::Kind::Reload).await;
                        });
                    }
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
