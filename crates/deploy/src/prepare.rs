//! The prepare phase: a release folder made from the deploy's source,
//! and its configuration loaded, before any instance starts.

use crate::config::Instances;
use crate::phase::Phase;
use crate::release::{
    new_release_id, release_config, Meta, Release, Source, Status, Store, APP_DIR_SOURCE,
};
use crate::runtime::Runtime;
use crate::*;
use std::time::SystemTime;

impl<R: Runtime> Deploy<R> {
    /// Makes a release folder from `source`: unpack or copy, shared links,
    /// build, `RELEASE`. A failure leaves traffic untouched.
    pub(crate) async fn prepare_folder(
        &mut self,
        loaded: &config::Loaded,
        source: &Source,
    ) -> Result<Release, DeployError> {
        let store = Store::new(loaded);
        let described = match source {
            Source::Dir(d) => format!("copying {}", d.display()),
            Source::Tarball(t) => format!("unpacking {}", t.display()),
            Source::Git { rev, .. } => format!("exporting git {rev}"),
        };
        self.report.step(Phase::Preparing, described);
        let cfg = loaded.config.releases.clone();
        let (id, dir, checksum) = {
            let (store, source) = (store.clone(), source.clone());
            tokio::task::spawn_blocking(move || store.create(&source, &cfg))
                .await
                .map_err(|e| DeployError::Prepare(e.to_string()))?
                .map_err(|e| DeployError::Prepare(e.to_string()))?
        };
        self.report.step(
            Phase::Preparing,
            format!("release {id} in {}", dir.display()),
        );
        let source_text = match source {
            Source::Dir(d) | Source::Tarball(d) => std::path::absolute(d)
                .unwrap_or(d.clone())
                .display()
                .to_string(),
            Source::Git { rev, repo } => format!("git {rev} of {}", repo.display()),
        };
        let mut meta = Meta {
            id: id.clone(),
            source: source_text.clone(),
            checksum,
            created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            build_log: None,
            status: Status::Ready,
            size: None,
            fingerprint: None,
        };
        if let Some(command) = &loaded.config.releases.build {
            self.report
                .step(Phase::Preparing, format!("building: {command}"));
            let report = &self.report;
            let built = crate::release::build::run(
                command,
                &dir,
                loaded.config.releases.build_timeout,
                |line| {
                    report.step(Phase::Preparing, format!("build | {line}"));
                },
            )
            .await;
            let (log, failure) = match built {
                Ok(log) => (log, None),
                Err((log, why)) => (log, Some(why)),
            };
            meta.build_log = Some(log.display().to_string());
            if let Some(why) = failure {
                meta.status = Status::Failed;
                let _ = store.finish(&dir, &meta);
                self.app.record_release(Release {
                    id: id.clone(),
                    source: source_text,
                    dir: dir.clone(),
                    config: loaded.clone(),
                    created: SystemTime::now(),
                    failed: true,
                    size: None,
                    retired: None,
                });
                return Err(DeployError::Prepare(format!(
                    "release {id}: build failed, traffic was not touched: {why}"
                )));
            }
        }
        let config = release_config(loaded, &dir)?;
        let measured = dir.clone();
        meta.size = tokio::task::spawn_blocking(move || crate::release::folder_size(&measured))
            .await
            .ok();
        store.finish(&dir, &meta).map_err(|e| {
            DeployError::Prepare(format!(
                "writing {}: {e}",
                dir.join(crate::release::META_FILE).display()
            ))
        })?;
        Ok(Release {
            id,
            source: source_text,
            dir,
            config,
            created: SystemTime::now(),
            failed: false,
            size: meta.size,
            retired: None,
        })
    }

    /// Decides the target release. Nothing runs or changes for clients here.
    pub(crate) async fn prepare(&mut self, kind: &Kind) -> Result<Release, DeployError> {
        let current = self.app.current_release();
        let loaded = self.app.config();
        match kind {
            Kind::Deploy { source: None, .. } => {
                let mut fresh = config::load(&self.app.config_file())?;
                fresh.config.daemon.state_dir = Some(loaded.state_dir());
                self.report.step(
                    Phase::Preparing,
                    "keeping a copy of the app directory for rollback".into(),
                );
                let (id, size) = match crate::release::keep_app_copy(&fresh).await {
                    Ok((meta, copy)) => {
                        self.report.step(
                            Phase::Preparing,
                            format!("release {}, kept in {}", meta.id, copy.display()),
                        );
                        (meta.id, meta.size)
                    }
                    Err(e) => {
                        self.report.step(
                            Phase::Preparing,
                            format!("no copy kept, so this release cannot be rolled back to: {e}"),
                        );
                        (new_release_id(), None)
                    }
                };
                Ok(Release {
                    id,
                    source: APP_DIR_SOURCE.into(),
                    dir: fresh.base_dir.clone(),
                    config: fresh,
                    created: SystemTime::now(),
                    failed: false,
                    size,
                    retired: None,
                })
            }
            Kind::Deploy {
                source: Some(source),
                ..
            } => self.prepare_folder(&loaded, source).await,
            Kind::Reload => {
                let current = current
                    .ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))?;
                let fresh = config::load(&current.config.path)?;
                let mut fresh_config = fresh;
                fresh_config.base_dir = current.config.base_dir.clone();
                fresh_config.config.daemon.state_dir = Some(loaded.state_dir());
                Ok(Release {
                    config: fresh_config,
                    ..current
                })
            }
            Kind::Rollback { to } => {
                let target = self.app.rollback_target(to.as_deref()).ok_or_else(|| {
                    DeployError::NoTarget(match to {
                        Some(id) => format!("no release {id}; see `baton releases`"),
                        None => "no previous release to roll back to".into(),
                    })
                })?;
                let target = from_kept_copy(target, &loaded)?;
                self.report.step(
                    Phase::Preparing,
                    format!("rolling back to release {}", target.id),
                );
                Ok(target)
            }
            Kind::Replace { .. } | Kind::Restart => {
                current.ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))
            }
            Kind::Scale { instances } => {
                let mut current = current
                    .ok_or_else(|| DeployError::NoTarget("nothing is running yet".into()))?;
                if *instances == 0 {
                    return Err(DeployError::NoTarget(
                        "cannot scale to 0 instances; use `baton stop`".into(),
                    ));
                }
                let span = current.config.config.web.instances.span();
                current.config.config.web.instances =
                    toml::Spanned::new(span, Instances::Count(*instances));
                Ok(current)
            }
        }
    }
}
