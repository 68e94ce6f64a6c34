//! The release an app starts with when the daemon starts: the one
//! `current` points at, or the app directory in place (a copy of it kept
//! for rollback once its instances are starting).

use std::sync::Arc;
use std::time::SystemTime;

use super::App;
use crate::config::Loaded;
use crate::release::copy::Survey;
use crate::release::{new_release_id, release_config, AppDir, Release, Status};

impl App {
    /// Starts the configured release at daemon start. Its instances restart
    /// with backoff until ready; they take traffic as each becomes ready.
    ///
    /// After a restart that is the release `current` points at, when it is a
    /// complete release folder; otherwise the app directory in place. Release
    /// folders on disk become the rollback history.
    pub(crate) async fn boot(self: Arc<Self>) {
        let loaded = self.config();
        let store = crate::release::Store::new(&loaded);
        for leftover in store.recover() {
            tracing::warn!("removed the incomplete release {}", leftover.display());
        }
        let current_dir = store.current_target();
        let mut from_disk = None;
        for (meta, dir) in store.list() {
            let Ok(config) = release_config(&loaded, &dir) else {
                continue;
            };
            let release = Release {
                id: meta.id,
                source: meta.source,
                dir: dir.clone(),
                config,
                created: humantime::parse_rfc3339(&meta.created).unwrap_or(SystemTime::now()),
                failed: meta.status != Status::Ready,
                size: meta.size,
                retired: crate::release::retired_at(&dir),
            };
            if current_dir.as_deref() == Some(dir.as_path()) && !release.failed {
                from_disk = Some(release.clone());
            }
            self.record_release(release);
        }
        if let Some(r) = &from_disk {
            // The serving release goes last in the history.
            self.record_release(r.clone());
            self.set_config(r.config.clone());
        }
        let (release, copy_later) = match from_disk {
            Some(release) => (release, None),
            None => Self::in_place(&loaded).await,
        };
        let loaded = release.config.clone();
        let count = loaded.config.web.instance_count();
        tracing::info!(
            "release {}: starting {count} instance{} in {}",
            release.id,
            crate::protocol::plural(count as usize),
            release.dir.display()
        );
        let mut started = Vec::new();
        for _ in 0..count {
            match self.start_instance(&release, true) {
                Ok(i) => started.push(i),
                Err(e) => tracing::error!("cannot start an instance: {e}"),
            }
        }
        if let Some(survey) = copy_later {
            keep_copy_later(&self, &loaded, &release.id, survey);
        }
        self.record_release(release.clone());
        let singletons = self.start_singletons(&release);
        if release.retired.is_some() {
            // It serves again.
            store.mark_retired(&release.id, None);
        }
        {
            let mut fleet = self.fleet();
            fleet.singletons = singletons;
            fleet.release = Some(release);
            fleet.serving = started;
        }
        self.publish_assets();
    }

    /// The app directory as the release to run in place: the id of the copy
    /// kept of it when its files are unchanged, else a new id, and what the
    /// copy still to be made under that id needs.
    async fn in_place(loaded: &Loaded) -> (Release, Option<Survey>) {
        let (id, size, copy_later) = match crate::release::survey_app_dir(loaded).await {
            Ok(AppDir::Kept(meta, copy)) => {
                tracing::info!(
                    "release {}: the app directory, unchanged since its copy in {}",
                    meta.id,
                    copy.display()
                );
                (meta.id, meta.size, None)
            }
            Ok(AppDir::Changed(survey)) => (new_release_id(), Some(survey.bytes), Some(survey)),
            Err(e) => {
                let id = new_release_id();
                warn_no_copy(&id, &e);
                (id, None, None)
            }
        };
        let release = Release {
            id,
            source: crate::release::APP_DIR_SOURCE.into(),
            dir: loaded.base_dir.clone(),
            config: loaded.clone(),
            created: SystemTime::now(),
            failed: false,
            size,
            retired: None,
        };
        (release, copy_later)
    }
}

/// Keeps the copy of the app directory for rollback once its instances are
/// starting: a changed app directory is read and copied whole, which took
/// 10 s for a large file with the disk busy, and nobody is served until the
/// first instance is ready.
///
/// On its own thread rather than tokio's blocking pool: the runtime waits
/// for that pool when it shuts down, and a stop or an upgrade must not wait
/// for a copy. A copy cut short leaves a staging folder that the next start
/// removes.
fn keep_copy_later(app: &Arc<App>, loaded: &Loaded, id: &str, survey: Survey) {
    let store = crate::release::Store::new(loaded);
    let (dir, cfg, release) = (
        loaded.base_dir.clone(),
        loaded.config.releases.clone(),
        id.to_string(),
    );
    let app = Arc::clone(app);
    let spawned = std::thread::Builder::new()
        .name("baton-copy".into())
        .spawn(
            move || match store.keep_changed(&dir, &cfg, &survey, Some(&release)) {
                Ok(((meta, copy), renamed_from)) => {
                    if let Some(old) = renamed_from {
                        // Its folder is this release's now.
                        app.forget_release(&old);
                        tracing::info!(
                            "release {old} had the same files; its copy is release {release}'s now"
                        );
                    }
                    tracing::info!(
                        "release {}: the app directory, kept in {}",
                        meta.id,
                        copy.display()
                    );
                }
                Err(e) => warn_no_copy(&release, &e),
            },
        );
    if let Err(e) = spawned {
        warn_no_copy(id, &e);
    }
}

/// A start that keeps no copy still serves; only the rollback to it is lost.
fn warn_no_copy(id: &str, error: &dyn std::fmt::Display) {
    tracing::warn!(
        "release {id}: no copy of the app directory kept, so no rollback to it: {error}"
    );
}
