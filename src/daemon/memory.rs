//! pm2's `max_memory_restart`, without its downtime: an instance whose
//! process group holds more than `[web] max_memory` is replaced by a fresh
//! one, started and ready before the old one leaves rotation and drains.

use std::sync::Arc;
use std::time::Duration;

use super::Daemon;
use crate::deploy::{DeployError, Kind};
use crate::supervisor::usage;
use crate::supervisor::State;

/// How often memory is read (pm2 reads it every 30 s).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// After a replacement that failed (its new instance never got ready), the
/// next try waits this long rather than starting instances back to back.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Replaces instances past `max_memory`, one at a time, for the daemon's
/// life. A deploy in progress goes first: the check comes again later.
pub async fn watch(daemon: Arc<Daemon>) {
    let mut pause = CHECK_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = daemon.shutdown.cancelled() => return,
        }
        pause = CHECK_EVERY;
        let Some(limit) = daemon.config().config.web.max_memory.map(|m| m.get_ref().0) else {
            continue;
        };
        let ready: Vec<(String, i32)> = daemon
            .serving()
            .iter()
            .filter_map(|i| {
                let status = i.status();
                let pid = i32::try_from(status.pid?).ok()?;
                (status.state == State::Ready).then(|| (i.id.to_string(), pid))
            })
            .collect();
        let groups: Vec<i32> = ready.iter().map(|(_, pid)| *pid).collect();
        let Ok(memory) = tokio::task::spawn_blocking(move || usage::memory(&groups)).await else {
            continue;
        };
        let over = ready
            .into_iter()
            .find_map(|(id, pid)| Some((id, *memory.get(&pid)?)).filter(|(_, m)| *m > limit));
        let Some((id, bytes)) = over else {
            continue;
        };
        let why = format!(
            "it holds {} MiB, more than max_memory ({} MiB)",
            bytes >> 20,
            limit >> 20
        );
        tracing::warn!("{id}: {why}; replacing it");
        let kind = Kind::Replace {
            instance: id.clone(),
            why,
        };
        match crate::deploy::run_unwatched(&daemon, kind).await {
            Ok(_) => tracing::info!("{id} replaced"),
            Err(DeployError::Busy(_)) => {}
            Err(e) => {
                tracing::warn!("{id} could not be replaced: {e}");
                pause = AFTER_FAILURE;
            }
        }
    }
}
