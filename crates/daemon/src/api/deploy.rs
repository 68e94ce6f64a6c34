//! `POST /deploy`: hands the order to the app's deploy owner and streams
//! its progress as JSON lines. The deploy does not depend on the caller: a
//! CLI that goes away mid-deploy leaves the deploy to finish.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::Json;
use bytes::Bytes;

use crate::deploy::Kind;
use crate::protocol::DeployRequest;
use crate::Daemon;

/// A deploy, reload, rollback or scale of the app.
pub(crate) async fn deploy(
    State(daemon): State<Arc<Daemon>>,
    Json(req): Json<DeployRequest>,
) -> Result<Response, super::ApiError> {
    let app = daemon.pick(req.app.as_deref())?;
    if matches!(req.order, crate::protocol::Order::Reload) {
        daemon.reload_certificates();
    }
    let kind = Kind::from_order(req.order, &app.home);
    let ticket = app.deployer().submit(kind, req.wait);
    let lines = futures_util::stream::unfold(ticket.progress, |mut rx| async move {
        let event = rx.recv().await?;
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, Infallible>(Bytes::from(line)), rx))
    });
    Ok(Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_default())
}
