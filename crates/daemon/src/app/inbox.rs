//! The inbox: a folder (often shared by several servers) where tarballs are
//! uploaded. Seed 003 ran a cron that compared file sizes a second apart;
//! here a tarball is taken once its size and mtime held still for `settle`,
//! or at once when `<name>.done` appears. It is copied aside into this
//! server's state and recorded before the deploy, so a crash never deploys
//! it twice; the outcome is written beside it as `<name>.<host>.result`.
//! Servers sharing the inbox take turns through a lock file in it, after a
//! random wait up to `stagger`, so they never all restart at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::App;
use crate::deploy::Kind;
use crate::release::Source;

/// How often the inbox is listed. Polling, not inotify: inotify does not
/// see writes made by other machines on a shared (NFS) folder.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// A lock file older than this is a crashed server's and is taken over.
const STALE_LOCK: Duration = Duration::from_secs(3600);

/// What a tarball looked like when last listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: SystemTime,
    stable_since: Instant,
}

fn is_tarball(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar")
}

fn host() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Watches `inbox` for the app's life.
pub(crate) async fn watch(app: Arc<App>, inbox: PathBuf) {
    let state = app.config().state_dir();
    let taken_dir = state.join("incoming");
    let _ = std::fs::create_dir_all(&taken_dir);
    let record = taken_dir.join("taken.json");
    let mut taken: BTreeSet<String> = std::fs::read(&record)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut watching: BTreeMap<String, Seen> = BTreeMap::new();
    tracing::info!("watching the inbox {}", inbox.display());
    loop {
        tokio::select! {
            _ = app.stopping.cancelled() => return,
            _ = tokio::time::sleep(SCAN_EVERY) => {}
        }
        let settle = app.config().config.releases.settle;
        let Ok(entries) = std::fs::read_dir(&inbox) else {
            continue;
        };
        let mut present = BTreeSet::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Ok(meta) = e.metadata() else { continue };
            if !is_tarball(&name) || !meta.is_file() {
                continue;
            }
            present.insert(name.clone());
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let key = format!(
                "{name}:{}:{}",
                meta.len(),
                mtime
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            );
            if taken.contains(&key) {
                continue;
            }
            let now = Instant::now();
            let seen = watching.entry(name.clone()).or_insert(Seen {
                size: meta.len(),
                mtime,
                stable_since: now,
            });
            if seen.size != meta.len() || seen.mtime != mtime {
                *seen = Seen {
                    size: meta.len(),
                    mtime,
                    stable_since: now,
                };
                continue;
            }
            let done_marker = inbox.join(format!("{name}.done")).exists();
            if !done_marker && seen.stable_since.elapsed() < settle {
                continue;
            }
            // Taken: copy aside and record before anything else.
            let aside = taken_dir.join(&name);
            if let Err(e) = copy_aside(&inbox.join(&name), &aside) {
                tracing::error!("inbox: cannot take {name}: {e}");
                continue;
            }
            taken.insert(key);
            let _ = std::fs::write(&record, serde_json::to_vec(&taken).unwrap_or_default());
            watching.remove(&name);
            deploy_one(&app, &inbox, &name, &aside).await;
        }
        watching.retain(|k, _| present.contains(k));
    }
}

fn copy_aside(from: &Path, to: &Path) -> std::io::Result<()> {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp)?;
    std::fs::rename(tmp, to)
}

async fn deploy_one(app: &Arc<App>, inbox: &Path, name: &str, aside: &Path) {
    let stagger = app.config().config.releases.stagger;
    if !stagger.is_zero() {
        let wait = rand::random_range(0..=stagger.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let lock = inbox.join(".baton-deploy.lock");
    let me = format!("{} pid {}", host(), std::process::id());
    // Take turns with the other servers on this inbox.
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&lock)
        {
            Ok(mut f) => {
                use std::io::Write;
                let _ = writeln!(f, "{me}");
                break;
            }
            Err(_) => {
                let stale = std::fs::metadata(&lock)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE_LOCK);
                if stale {
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                tokio::select! {
                    _ = app.stopping.cancelled() => return,
                    _ = tokio::time::sleep(SCAN_EVERY) => {}
                }
            }
        }
    }
    tracing::info!("inbox: deploying {name}");
    let kind = Kind::Deploy {
        source: Some(Source::Tarball(aside.to_path_buf())),
        canary: None,
    };
    let mut ticket = app.deployer().submit(kind, true);
    while let Some(p) = ticket.progress.recv().await {
        tracing::info!(
            "inbox deploy: {}",
            serde_json::to_string(&p).unwrap_or_default()
        );
    }
    let outcome = ticket.outcome().await;
    let result = match &outcome {
        Ok(release) => serde_json::json!({ "ok": true, "host": host(), "release": release }),
        Err(e) => serde_json::json!({ "ok": false, "host": host(), "error": e.to_string() }),
    };
    let _ = std::fs::write(
        inbox.join(format!("{name}.{}.result", host())),
        serde_json::to_vec_pretty(&result).unwrap_or_default(),
    );
    let _ = std::fs::remove_file(&lock);
}
