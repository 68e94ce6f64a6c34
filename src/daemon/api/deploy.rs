//! `POST /deploy`, `/reload`, `/rollback`, `/scale`: each starts the deploy
//! in a task of the daemon's own and streams its progress as JSON lines. The
//! task does not depend on the caller: a CLI that goes away mid-deploy
//! leaves the deploy to finish.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::daemon::protocol::{DeployRequest, Progress};
use crate::daemon::Daemon;
use crate::deploy::{self, Kind};
use crate::release::Source;

/// A new release.
pub async fn deploy(State(daemon): State<Arc<Daemon>>, Json(req): Json<DeployRequest>) -> Response {
    let source = match (req.source, req.git) {
        (_, Some(rev)) => Some(Source::Git {
            repo: daemon.app_dir.clone(),
            rev,
        }),
        (Some(path), None) => Some(Source::from_path(std::path::Path::new(&path))),
        (None, None) => None,
    };
    let kind = Kind::Deploy { source };
    start(daemon, kind, req.wait)
}

/// Same release, fresh processes, config read again.
pub async fn reload(State(daemon): State<Arc<Daemon>>, Json(req): Json<DeployRequest>) -> Response {
    start(daemon, Kind::Reload, req.wait)
}

/// Back to an earlier release.
pub async fn rollback(
    State(daemon): State<Arc<Daemon>>,
    Json(req): Json<DeployRequest>,
) -> Response {
    start(daemon, Kind::Rollback { to: req.to }, req.wait)
}

/// Another instance count.
pub async fn scale(State(daemon): State<Arc<Daemon>>, Json(req): Json<DeployRequest>) -> Response {
    let instances = req.instances.unwrap_or(0);
    start(daemon, Kind::Scale { instances }, req.wait)
}

fn start(daemon: Arc<Daemon>, kind: Kind, wait: bool) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let outcome = deploy::run(&daemon, kind, tx.clone(), wait).await;
        if let Err(e) = outcome {
            let config_error = matches!(e, deploy::DeployError::Config(_));
            let _ = tx.send(Progress::Failed {
                message: e.to_string(),
                config_error,
            });
        }
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_default()
}
