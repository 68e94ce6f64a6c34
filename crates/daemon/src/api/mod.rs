//! The control API: HTTP+JSON on a Unix socket only its owner can open.
//! Every CLI subcommand is a thin client of one route here.
//!
//! | route | file |
//! |---|---|
//! | `GET /status`, `GET /releases`, `GET /metrics` | [`status`] |
//! | `POST /deploy` (deploy, reload, rollback, scale) | [`deploy`] |
//! | `GET /logs` | [`logs`] |
//! | `POST /stop`, `/upgrade`, `/offline`, `/online`, `/canary/promote`, `/canary/abort`, `GET /health` | here |

pub(crate) mod deploy;
pub(crate) mod logs;
pub(crate) mod status;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::Daemon;
use crate::protocol::{ErrorBody, Route, UpgradeReport, UpgradeRequest};

/// Binds the control socket with mode 0600. The umask makes the socket
/// private from its creation, not only after a chmod.
///
/// # Errors
/// When the socket cannot be bound.
pub(crate) fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        // The state lock is held, so a socket here is a dead daemon's.
        std::fs::remove_file(path)?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn routes(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route(&Route::Status.path(), get(status::status))
        .route(&Route::Apps.path(), get(status::apps))
        .route(&Route::ServerReload.path(), post(server_reload))
        .route(&Route::Releases.path(), get(status::releases))
        .route(&Route::Metrics.path(), get(status::metrics))
        .route(&Route::Deploy.path(), post(deploy::deploy))
        .route(&Route::Logs.path(), get(logs::logs))
        .route(&Route::Stop.path(), post(stop))
        .route(&Route::Upgrade.path(), post(upgrade))
        .route(&Route::Canary("{order}").path(), post(canary))
        .route(&Route::Offline.path(), post(offline))
        .route(&Route::Online.path(), post(online))
        .route(&Route::Health.path(), get(health))
        .with_state(daemon)
}

/// Serves the control API until `shutdown`.
pub(crate) async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) {
    let app = routes(daemon);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
}

/// Serves `GET /metrics` alone on the opt-in admin listener.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    daemon: Arc<Daemon>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route(&Route::Metrics.path(), get(status::metrics))
        .route(&Route::Health.path(), get(health))
        .with_state(daemon);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
}

async fn stop(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> Json<serde_json::Value> {
    daemon.shutdown.cancel();
    Json(serde_json::json!({ "stopping": true }))
}

/// Checks the new binary, then stops the daemon for it to exec (see
/// [`super::upgrade`]). A broken binary, or a running deploy, is refused
/// before anything stops.
async fn upgrade(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
    Json(req): Json<UpgradeRequest>,
) -> Result<Json<UpgradeReport>, ApiError> {
    let exe = std::path::PathBuf::from(&req.exe);
    if !exe.is_absolute() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the binary must be an absolute path, not {:?}", req.exe),
        ));
    }
    let (config_file, state_dir) = {
        let setup = daemon.setup.lock().unwrap_or_else(|p| p.into_inner());
        (setup.path.clone(), setup.state_dir())
    };
    let version = super::upgrade::check_binary(&exe, &config_file)
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let mut deploys = Vec::new();
    for app in daemon.apps() {
        let Ok(hold) = app.deployer().hold().await else {
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!(
                    "a deploy of {} is running: upgrade once it is done",
                    app.name
                ),
            ));
        };
        deploys.push(hold);
    }
    if daemon.shutdown.is_cancelled() {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "the daemon is stopping".to_string(),
        ));
    }
    let previous = super::upgrade::keep_previous(&state_dir)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot keep a copy of the running binary to go back to: {e}"),
            )
        })?;
    tracing::info!("upgrade to {} ({version}) requested", exe.display());
    daemon.upgrade_to(exe, deploys);
    Ok(Json(UpgradeReport {
        version,
        previous: Some(previous.to_string_lossy().into_owned()),
        config: Some(config_file.to_string_lossy().into_owned()),
        systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
    }))
}

/// `baton promote` / `baton abort`: the order goes to the app's running
/// canary (404 when none runs); the deploy that runs it acts at once.
async fn canary(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
    axum::extract::Path(order): axum::extract::Path<String>,
    axum::extract::Query(query): axum::extract::Query<AppQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let order = match order.as_str() {
        "promote" => crate::protocol::CanaryOrder::Promote,
        "abort" => crate::protocol::CanaryOrder::Abort,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!("no canary order {other:?}"),
            ))
        }
    };
    let app = daemon.pick(query.app.as_deref())?;
    app.order_canary(order)
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e))?;
    Ok(Json(serde_json::json!({ "app": app.name, "order": order })))
}

async fn offline(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> Json<serde_json::Value> {
    daemon.set_offline(true);
    Json(serde_json::json!({ "online": false }))
}

async fn online(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> Json<serde_json::Value> {
    daemon.set_offline(false);
    Json(serde_json::json!({ "online": true }))
}

/// For an external load balancer or gateway (seed 001): 200 while this
/// server should get traffic, 503 after `baton offline` or with no ready
/// instance.
async fn health(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> (StatusCode, String) {
    match daemon.healthy() {
        Ok(n) => (StatusCode::OK, format!("online: {n} ready\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// An error answer: a status code and a message for a person.
pub(crate) struct ApiError(pub StatusCode, pub String);

impl From<super::state::Pick> for ApiError {
    fn from(e: super::state::Pick) -> ApiError {
        ApiError(StatusCode::NOT_FOUND, e.to_string())
    }
}

/// The app a request names (`?app=`); none: the only one.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct AppQuery {
    /// The app's name.
    pub app: Option<String>,
}

/// `baton reload` at a server: reads the server file again, starts the
/// apps added to `[server] apps`, drains and stops the ones removed; the
/// others are not touched.
async fn server_reload(
    axum::extract::State(daemon): axum::extract::State<Arc<Daemon>>,
) -> Result<Json<crate::protocol::ServerReloadReport>, ApiError> {
    super::reload_server(&daemon)
        .await
        .map(Json)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}
