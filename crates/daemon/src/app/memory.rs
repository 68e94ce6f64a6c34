//! pm2's `max_memory_restart`, without its downtime: an instance whose
//! process group holds more than `[web] max_memory` is replaced by a fresh
//! one, started and ready before the old one leaves rotation and drains.
//! An instance the proxy finds bad for good (see [`replace_bad`]) is
//! replaced the same way.
//! A singleton past its `[process.<name>] max_memory` is restarted: stopped,
//! then started, since two must never run at once.

use std::sync::Arc;
use std::time::Duration;

use super::App;
use crate::deploy::{DeployError, Kind};
use crate::supervisor::procfs;
use crate::supervisor::{Instance, State};

/// How often memory is read (pm2 reads it every 30 s).
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// After a replacement that failed (its new instance never got ready), the
/// next try waits this long rather than starting instances back to back.
const AFTER_FAILURE: Duration = Duration::from_secs(30);

/// Replaces instances past `max_memory`, one at a time, for the app's
/// life. A deploy in progress goes first: the check comes again later.
pub(crate) async fn watch(app: Arc<App>) {
    let mut pause = CHECK_EVERY;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = app.stopping.cancelled() => return,
        }
        pause = CHECK_EVERY;
        let watched = watched_instances(&app);
        if watched.is_empty() {
            continue;
        }
        let groups: Vec<i32> = watched.iter().map(|w| w.pid).collect();
        let Ok(memory) = tokio::task::spawn_blocking(move || procfs::memory(&groups)).await else {
            continue;
        };
        let over = watched.into_iter().find_map(|w| {
            let bytes = *memory.get(&w.pid)?;
            (bytes > w.limit).then_some((w.id, bytes, w.limit))
        });
        let Some((id, bytes, limit)) = over else {
            continue;
        };
        let why = format!(
            "it holds {} MiB, more than max_memory ({} MiB)",
            bytes >> 20,
            limit >> 20
        );
        tracing::warn!("{id}: {why}; giving it a fresh process");
        let kind = Kind::Replace {
            instance: id.clone(),
            why,
        };
        // run_unwatched logs how it went.
        match app.deployer().run_unwatched(kind).await {
            Ok(_) | Err(DeployError::Busy(_)) => {}
            Err(_) => pause = AFTER_FAILURE,
        }
    }
}

/// A running instance with a memory limit.
struct Watched {
    id: String,
    pid: i32,
    limit: u64,
}

/// The serving web instances (under `[web] max_memory`) and singletons
/// (under their `[process.<name>] max_memory`) that are up, with their
/// limits.
fn watched_instances(app: &App) -> Vec<Watched> {
    let loaded = app.config();
    let config = &loaded.config;
    let running = |i: &Instance, limit: u64| {
        let status = i.status();
        let pid = i32::try_from(status.pid?).ok()?;
        (status.state == State::Ready).then(|| Watched {
            id: i.id.to_string(),
            pid,
            limit,
        })
    };
    let mut watched = Vec::new();
    if let Some(max) = &config.web.max_memory {
        let limit = max.get_ref().0;
        watched.extend(app.serving().iter().filter_map(|i| running(i, limit)));
    }
    for i in app.singletons() {
        let process = config.process.get(i.process.name());
        if let Some(max) = process.and_then(|p| p.max_memory.as_ref()) {
            watched.extend(running(&i, max.get_ref().0));
        }
    }
    watched
}

/// Replaces an instance the proxy reports as staying bad (timed out
/// again after `fail_timeout` out of rotation: a hung process still
/// accepts connections), if it still serves. The deploy owner runs one
/// replacement at a time.
pub(crate) async fn replace_bad(app: Arc<App>, id: Arc<str>) {
    if !app.serving().iter().any(|i| i.id == id) {
        return;
    }
    let why = "it timed out again after fail_timeout out of rotation".to_string();
    tracing::warn!("{id}: {why}; giving it a fresh process");
    let kind = Kind::Replace {
        instance: id.to_string(),
        why,
    };
    // run_unwatched logs how it went.
    let _ = app.deployer().run_unwatched(kind).await;
}
