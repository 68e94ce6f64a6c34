//! `GET /logs?lines=N&follow=true`: the last lines of the web log, then,
//! with follow, new lines as they are written.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;

use crate::Daemon;

/// Query parameters.
#[derive(Debug, Deserialize)]
pub(crate) struct LogsQuery {
    /// How many past lines (default 50).
    lines: Option<usize>,
    /// Keep streaming new lines.
    #[serde(default)]
    follow: bool,
    /// Only this instance's (or process's) lines: `web#2`, `scheduler`.
    instance: Option<String>,
    /// The app (none: the only one).
    app: Option<String>,
}

/// Lines read "<time> <instance> <stream> | ...": a line belongs to `web#2`
/// by its instance, or to `web` by its process.
fn belongs(line: &str, wanted: Option<&str>) -> bool {
    wanted.is_none_or(|w| {
        let who = line.split(' ').nth(1).unwrap_or("");
        who == w || who.split('#').next() == Some(w)
    })
}

/// The log tail, optionally followed.
pub(crate) async fn logs(
    State(daemon): State<Arc<Daemon>>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, super::ApiError> {
    let app = daemon.pick(q.app.as_deref())?;
    let sink = &app.ctx.logs;
    let live = q.follow.then(|| sink.subscribe());
    let text = tokio::fs::read_to_string(sink.path())
        .await
        .unwrap_or_default();
    let n = q.lines.unwrap_or(50);
    // Lines read "<time> <instance> <stream> | ...".
    let wanted = q.instance.clone();
    let all: Vec<&str> = text
        .lines()
        .filter(|l| belongs(l, wanted.as_deref()))
        .collect();
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
            let tail = futures_util::stream::unfold(
                (rx, shutdown, wanted),
                |(mut rx, shutdown, wanted)| async move {
                    loop {
                        let line = tokio::select! {
                            l = rx.recv() => l,
                            _ = shutdown.cancelled() => return None,
                        };
                        match line {
                            Ok(l) if belongs(&l, wanted.as_deref()) => {
                                return Some((Ok(Bytes::from(l + "\n")), (rx, shutdown, wanted)))
                            }
                            Ok(_) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return None,
                        }
                    }
                },
            );
            Body::from_stream(head.chain(tail))
        }
    };
    Ok(Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .unwrap_or_default())
}
