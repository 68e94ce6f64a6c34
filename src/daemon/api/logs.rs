//! `GET /logs?lines=N&follow=true`: the last lines of the web log, then,
//! with follow, new lines as they are written.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::daemon::Daemon;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    /// How many past lines (default 50).
    lines: Option<usize>,
    /// Keep streaming new lines.
    #[serde(default)]
    follow: bool,
}

/// The log tail, optionally followed.
pub async fn logs(State(daemon): State<Arc<Daemon>>, Query(q): Query<LogsQuery>) -> Response {
    let sink = &daemon.ctx.logs;
    let live = q.follow.then(|| sink.subscribe());
    let text = tokio::fs::read_to_string(sink.path())
        .await
        .unwrap_or_default();
    let n = q.lines.unwrap_or(50);
    let all: Vec<&str> = text.lines().collect();
    let mut past = all[all.len().saturating_sub(n)..].join("\n");
    if !past.is_empty() {
        past.push('\n');
    }
    let head = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(past)) });
    let body = match live {
        None => Body::from_stream(head),
        Some(rx) => {
            use futures_util::StreamExt;
            let shutdown = daemon.shutdown.clone();
            let tail =
                futures_util::stream::unfold((rx, shutdown), |(mut rx, shutdown)| async move {
                    loop {
                        let line = tokio::select! {
                            l = rx.recv() => l,
                            _ = shutdown.cancelled() => return None,
                        };
                        match line {
                            Ok(l) => return Some((Ok(Bytes::from(l + "\n")), (rx, shutdown))),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return None,
                        }
                    }
                });
            Body::from_stream(head.chain(tail))
        }
    };
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_default()
}
