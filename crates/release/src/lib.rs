//! Releases on disk: `releases/<id>/` folders, each with a `RELEASE` file,
//! and a `current` symlink switched atomically.
//!
//! - [`copy`]: a directory source.
//! - [`unpack`]: a tarball or `git archive` source, unpacked safely.
//! - [`build`]: the build hook.
//!
//! A release folder appears under its final name only once its files are
//! complete (it is unpacked under `.staging-<id>` first), and it counts only
//! once its `RELEASE` file is written, after the build. Folders without one
//! are leftovers of a crash and are removed at start.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;

pub mod build;
pub mod copy;
pub(crate) mod unpack;

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::{Loaded, ReleasesConfig};

/// The metadata file in each release folder.
pub const META_FILE: &str = "RELEASE";

/// The file in a release folder that says when it stopped serving.
pub(crate) const RETIRED_FILE: &str = "RETIRED";

/// The source of a release that runs the app directory in place.
pub const APP_DIR_SOURCE: &str = "app directory";

/// Where a release comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory, copied.
    Dir(PathBuf),
    /// A `.tar.gz`, `.tgz` or `.tar`.
    Tarball(PathBuf),
    /// A ref of the git repository at `repo`, via `git archive`.
    Git {
        /// The repository.
        repo: PathBuf,
        /// Branch, tag or commit.
        rev: String,
    },
}

impl Source {
    /// A path given on the command line: a directory or an archive.
    pub fn from_path(path: &Path) -> Source {
        if path.is_dir() {
            Source::Dir(path.to_path_buf())
        } else {
            Source::Tarball(path.to_path_buf())
        }
    }
}

/// `RELEASE`: what a release is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Release id.
    pub id: String,
    /// Where it came from.
    pub source: String,
    /// sha256 of the archive (or of the copied files).
    pub checksum: String,
    /// When it was made (RFC 3339, to the millisecond; older releases to
    /// the second).
    pub created: String,
    /// The build's log, if a build ran.
    pub build_log: Option<String>,
    /// Ready, or failed (its build, or its deploy).
    pub status: Status,
    /// Bytes in the folder's files once it was made (see [`folder_size`]).
    #[serde(default)]
    pub size: Option<u64>,
    /// For a copy of the app directory: the directory's fingerprint when it
    /// was kept (see [`copy::Survey`]), so a start that finds the same one
    /// reuses the copy without reading a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Whether a release folder can be deployed: in its `RELEASE` file as
/// `"ready"` or `"failed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made (and built) in full.
    Ready,
    /// Its build failed, or a deploy of it did.
    Failed,
}

/// One release: a folder of code and the configuration it runs with.
#[derive(Debug, Clone)]
pub struct Release {
    /// Sortable id: UTC time plus a short hash (see [`new_release_id`]).
    pub id: String,
    /// Where it came from (a path, or [`APP_DIR_SOURCE`]).
    pub source: String,
    /// The folder the web process runs in.
    pub dir: PathBuf,
    /// The configuration it runs with.
    pub config: Loaded,
    /// When it was made.
    pub created: SystemTime,
    /// It failed to build or to deploy.
    pub failed: bool,
    /// Bytes in its folder (or in the copy kept of it), when known.
    pub size: Option<u64>,
    /// When it stopped serving (its `RETIRED` file); `None` while it
    /// serves or before it ever did. Its static files stay reachable
    /// `[static] keep_for` after.
    pub retired: Option<SystemTime>,
}

/// When the release in `dir` stopped serving, from its `RETIRED` file.
pub fn retired_at(dir: &Path) -> Option<SystemTime> {
    let text = std::fs::read_to_string(dir.join(RETIRED_FILE)).ok()?;
    humantime::parse_rfc3339(text.trim()).ok()
}

/// A sortable release id: UTC time to the second, then a short hash of the
/// exact time and a counter, so two ids in one second still differ.
pub fn new_release_id() -> String {
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now();
    let stamp: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    now.hash(&mut h);
    COUNTER.fetch_add(1, Ordering::Relaxed).hash(&mut h);
    std::process::id().hash(&mut h);
    format!("{stamp}-{:06x}", h.finish() & 0xff_ffff)
}

/// The configuration a release folder runs with: its own baton.toml if it
/// ships one, else the daemon's; relative paths start in the folder, and the
/// state directory stays the daemon's.
///
/// # Errors
/// When that baton.toml is invalid.
pub fn release_config(loaded: &Loaded, dir: &Path) -> Result<Loaded, crate::config::ConfigError> {
    let own = dir.join("baton.toml");
    let mut config = if own.exists() {
        crate::config::load(&own)?
    } else {
        crate::config::load(&loaded.path)?
    };
    config.config.daemon.state_dir = Some(loaded.state_dir());
    config.base_dir = dir.to_path_buf();
    Ok(config)
}

/// Why a release could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The archive was refused or could not be unpacked.
    #[error("unpacking {source_name}: {error}")]
    Unpack {
        /// The archive.
        source_name: String,
        /// What was wrong.
        error: unpack::UnpackError,
    },
    /// Copying, writing metadata, linking shared paths.
    #[error("{0}")]
    Io(String),
}

/// The release folders of one app.
#[derive(Debug, Clone)]
pub struct Store {
    /// `releases/`
    pub root: PathBuf,
    /// The state directory (holds `current` and `shared/`).
    pub state_dir: PathBuf,
    /// The watched upload folder, if any: never part of a release.
    pub inbox: Option<PathBuf>,
    /// The app's log file, which may sit in the app directory: never part
    /// of a release either.
    pub app_log: PathBuf,
    /// How many rotated generations of it there may be.
    pub log_keep: u32,
}

impl Store {
    /// The store a configuration names.
    pub fn new(loaded: &Loaded) -> Store {
        Store {
            root: loaded.releases_root(),
            state_dir: loaded.state_dir(),
            inbox: (loaded.config.releases.inbox.as_ref()).map(|i| loaded.base_dir.join(i)),
            app_log: loaded.app_log(),
            log_keep: loaded.log_rotation().keep,
        }
    }

    /// The `current` symlink.
    pub(crate) fn current_link(&self) -> PathBuf {
        self.state_dir.join("current")
    }

    /// Where `current` points.
    pub fn current_target(&self) -> Option<PathBuf> {
        std::fs::read_link(self.current_link()).ok()
    }

    /// Points `current` at `dir`: a new symlink, then rename(2) over the old
    /// one, so there is never a moment without `current`.
    ///
    /// # Errors
    /// When the link cannot be made.
    pub fn switch_current(&self, dir: &Path) -> io::Result<()> {
        let tmp = self
            .state_dir
            .join(format!(".current.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(dir, &tmp)?;
        std::fs::rename(&tmp, self.current_link())
    }

    /// Removes leftovers of an interrupted release: staging folders and
    /// folders without a `RELEASE` file. Returns what was removed.
    pub fn recover(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return removed;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            let incomplete = name.starts_with(".staging-") || !path.join(META_FILE).exists();
            if path.is_dir() && incomplete && std::fs::remove_dir_all(&path).is_ok() {
                removed.push(path);
            }
        }
        removed
    }

    /// Every complete release, oldest first.
    pub fn list(&self) -> Vec<(Meta, PathBuf)> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for e in entries.flatten() {
            let dir = e.path();
            let Ok(text) = std::fs::read_to_string(dir.join(META_FILE)) else {
                continue;
            };
            if let Ok(meta) = serde_json::from_str::<Meta>(&text) {
                out.push((meta, dir));
            }
        }
        // Ids sort by time only to the second: within one, by their hash.
        out.sort_by_cached_key(|(meta, _)| {
            let created = humantime::parse_rfc3339(&meta.created).ok();
            (created, meta.id.clone())
        });
        out
    }

    /// Deletes old releases: keeps the newest `keep` successful ones, the
    /// newest failed one (for its log), everything in `protect`, and those
    /// whose static files are still served (`keep_for` after they stopped
    /// serving).
    pub fn prune(&self, keep: usize, protect: &[&str], keep_for: Option<Duration>) -> Vec<String> {
        let mut kept_ok = 0;
        let mut kept_failed = 0;
        let mut removed = Vec::new();
        let now = SystemTime::now();
        for (meta, dir) in self.list().into_iter().rev() {
            if protect.contains(&meta.id.as_str()) {
                continue;
            }
            let assets_until = keep_for.and_then(|keep_for| Some(retired_at(&dir)? + keep_for));
            if assets_until.is_some_and(|until| until > now) {
                continue;
            }
            let keep_it = if meta.status == Status::Ready {
                kept_ok += 1;
                kept_ok <= keep
            } else {
                kept_failed += 1;
                kept_failed <= 1
            };
            if !keep_it && std::fs::remove_dir_all(&dir).is_ok() {
                removed.push(meta.id);
            }
        }
        removed
    }

    /// Writes when release `id` stopped serving (`None`: it serves again).
    /// Its folder may be gone (pruned) or not made yet (the copy of an app
    /// directory): then there is nothing to write.
    pub fn mark_retired(&self, id: &str, at: Option<SystemTime>) {
        let file = self.root.join(id).join(RETIRED_FILE);
        let written = match at {
            Some(at) => {
                let tmp = self.root.join(id).join(format!(".{RETIRED_FILE}.tmp"));
                std::fs::write(&tmp, humantime::format_rfc3339_millis(at).to_string())
                    .and_then(|()| std::fs::rename(&tmp, &file))
            }
            None => std::fs::remove_file(&file),
        };
        if let Err(e) = written {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot write {}: {e}", file.display());
            }
        }
    }

    /// Makes the folder of release `id` from `source`: unpacked or copied
    /// under a staging name, shared paths linked in, then renamed into place.
    /// The build and the `RELEASE` file come after (see [`Store::finish`]).
    ///
    /// # Errors
    /// [`ReleaseError`]; nothing is left behind.
    /// Returns the new id (UTC time, then the start of the checksum), the
    /// folder and the checksum.
    pub fn create(
        &self,
        source: &Source,
        cfg: &ReleasesConfig,
    ) -> Result<(String, PathBuf, String), ReleaseError> {
        self.make(None, |staging| {
            let checksum = self.fill(staging, source, cfg)?;
            self.link_shared(staging, cfg)?;
            Ok(checksum)
        })
    }

    /// Fills a staging folder with `fill` (which returns the checksum), then
    /// renames it to its id: `id` when one is given, else the time and the
    /// start of the checksum.
    fn make(
        &self,
        id: Option<&str>,
        fill: impl FnOnce(&Path) -> Result<String, ReleaseError>,
    ) -> Result<(String, PathBuf, String), ReleaseError> {
        let stamp = id.map_or_else(new_release_id, str::to_string);
        let staging = self.staging(&stamp);
        std::fs::create_dir_all(&staging)
            .map_err(|e| ReleaseError::Io(format!("creating {}: {e}", staging.display())))?;
        let made = fill(&staging).and_then(|checksum| {
            let time = stamp.split('-').next().unwrap_or(&stamp);
            let mut id = id.map_or_else(|| format!("{time}-{}", &checksum[..6]), str::to_string);
            // The same content twice in one second still gets two folders.
            let mut n = 1;
            while self.root.join(&id).exists() {
                n += 1;
                id = format!("{time}-{}.{n}", &checksum[..6]);
            }
            let dest = self.root.join(&id);
            std::fs::rename(&staging, &dest)
                .map_err(|e| ReleaseError::Io(format!("moving the release into place: {e}")))?;
            Ok((id, dest, checksum))
        });
        match made {
            Ok(done) => Ok(done),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// Where a release is made before it is complete.
    pub fn staging(&self, stamp: &str) -> PathBuf {
        self.root.join(format!(".staging-{stamp}"))
    }

    /// What copying a directory leaves out.
    fn exclude(&self, cfg: &ReleasesConfig) -> copy::Exclude {
        let mut names = cfg.ignore.clone();
        if !cfg.keep_node_modules {
            names.push("node_modules".into());
        }
        let mut paths = vec![
            self.state_dir.clone(),
            self.root.clone(),
            self.app_log.clone(),
        ];
        // Its rotated generations (`web.log.1`, …) stay out too.
        paths.extend((1..=self.log_keep).map(|n| {
            let mut rotated = self.app_log.clone().into_os_string();
            rotated.push(format!(".{n}"));
            PathBuf::from(rotated)
        }));
        paths.extend(self.inbox.clone());
        copy::Exclude { names, paths }
    }

    /// Keeps a copy of the app directory that is about to run in place, so
    /// that a rollback to it runs this code and not whatever the folder holds
    /// by then. Unchanged content reuses the copy kept last time. Returns the
    /// copy's `RELEASE` and folder.
    ///
    /// # Errors
    /// [`ReleaseError`]; nothing is left behind.
    pub(crate) fn keep_copy(
        &self,
        app_dir: &Path,
        cfg: &ReleasesConfig,
    ) -> Result<(Meta, PathBuf), ReleaseError> {
        let survey = match self.survey_app_dir(app_dir, cfg)? {
            AppDir::Kept(meta, dir) => return Ok((meta, dir)),
            AppDir::Changed(survey) => survey,
        };
        Ok(self.keep_changed(app_dir, cfg, &survey, None)?.0)
    }

    /// Keeps a copy of the app directory that changed since `survey`'s
    /// fingerprint was last seen: the copy kept before of the same files when
    /// there is one (their times changed, not their contents), else a new
    /// copy ([`Store::copy_app_dir`]).
    ///
    /// When `id` is given (a release already running in place under that
    /// id), a copy of the same files is renamed to it, and the second value
    /// returned is the id it had.
    ///
    /// # Errors
    /// [`ReleaseError`]; nothing is left behind.
    pub fn keep_changed(
        &self,
        app_dir: &Path,
        cfg: &ReleasesConfig,
        survey: &copy::Survey,
        id: Option<&str>,
    ) -> Result<((Meta, PathBuf), Option<String>), ReleaseError> {
        let exclude = self.app_dir_exclude(app_dir, cfg);
        let checksum = copy::checksum_dir(app_dir, &exclude).map_err(copy_err(app_dir))?;
        let same_files = self.newest_app_dir_copy(|meta| meta.checksum == checksum);
        let Some((mut meta, mut dir)) = same_files else {
            return Ok((self.copy_app_dir(app_dir, &exclude, cfg, survey, id)?, None));
        };
        let old_id = meta.id.clone();
        if let Some(id) = id.filter(|id| *id != old_id) {
            let renamed = self.root.join(id);
            if std::fs::rename(&dir, &renamed).is_err() {
                // Pruned meanwhile, say: copy anew.
                return Ok((
                    self.copy_app_dir(app_dir, &exclude, cfg, survey, Some(id))?,
                    None,
                ));
            }
            dir = renamed;
            meta.id = id.to_string();
        }
        if survey.fingerprint.is_some() {
            meta.fingerprint.clone_from(&survey.fingerprint);
        }
        self.finish(&dir, &meta)
            .map_err(|e| ReleaseError::Io(format!("writing {META_FILE}: {e}")))?;
        let renamed_from = (meta.id != old_id).then_some(old_id);
        Ok(((meta, dir), renamed_from))
    }

    /// What the app directory is, from its files' metadata alone: a copy
    /// kept of it already, or changed since every copy.
    ///
    /// # Errors
    /// When it cannot be read, or no copy may be kept of it: copies are off
    /// or it holds more than `max_copy_size` (that is data, not code, and
    /// copying it at each release would fill the disk).
    pub(crate) fn survey_app_dir(
        &self,
        app_dir: &Path,
        cfg: &ReleasesConfig,
    ) -> Result<AppDir, ReleaseError> {
        let limit = cfg.max_copy_size.0;
        if limit == 0 {
            return Err(ReleaseError::Io(
                "copies are off (releases.max_copy_size = 0)".into(),
            ));
        }
        let exclude = self.app_dir_exclude(app_dir, cfg);
        let survey = copy::survey_dir(app_dir, &exclude, limit, std::time::SystemTime::now())
            .map_err(copy_err(app_dir))?;
        if survey.bytes > limit {
            return Err(ReleaseError::Io(format!(
                "{} holds more than releases.max_copy_size ({limit} bytes); \
                 name its data folders in releases.ignore or releases.shared",
                app_dir.display()
            )));
        }
        let kept = survey.fingerprint.as_ref().and_then(|fingerprint| {
            self.newest_app_dir_copy(|meta| meta.fingerprint.as_ref() == Some(fingerprint))
        });
        Ok(match kept {
            Some((meta, dir)) => AppDir::Kept(meta, dir),
            None => AppDir::Changed(survey),
        })
    }

    /// Copies the app directory `survey` describes, less `exclude` (see
    /// [`Store::app_dir_exclude`]), into a release folder named `id` when
    /// one is given (a release already running in place).
    ///
    /// The copy runs with the app directory's data, as the release did in
    /// place: its shared paths and (unless `keep_node_modules`) its
    /// `node_modules` are links to the app directory's own, not copies.
    ///
    /// # Errors
    /// [`ReleaseError`]; nothing is left behind.
    fn copy_app_dir(
        &self,
        app_dir: &Path,
        exclude: &copy::Exclude,
        cfg: &ReleasesConfig,
        survey: &copy::Survey,
        id: Option<&str>,
    ) -> Result<(Meta, PathBuf), ReleaseError> {
        let (id, dir, checksum) = self.make(id, |staging| {
            let checksum = copy::copy_dir(app_dir, staging, exclude).map_err(copy_err(app_dir))?;
            let mut links = cfg.shared.clone();
            if !cfg.keep_node_modules {
                links.push("node_modules".into());
            }
            link_to_app(staging, app_dir, &links)?;
            Ok(checksum)
        })?;
        let meta = Meta {
            id: id.clone(),
            source: APP_DIR_SOURCE.into(),
            checksum,
            created: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            build_log: None,
            status: Status::Ready,
            // Surveyed: the copy holds the same files, and its links count
            // nothing, as in folder_size.
            size: Some(survey.bytes),
            fingerprint: survey.fingerprint.clone(),
        };
        match self.finish(&dir, &meta) {
            Ok(()) => Ok((meta, dir)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(ReleaseError::Io(format!("writing {META_FILE}: {e}")))
            }
        }
    }

    /// The newest complete copy of the app directory that `matches`.
    fn newest_app_dir_copy(&self, matches: impl Fn(&Meta) -> bool) -> Option<(Meta, PathBuf)> {
        self.list().into_iter().rev().find(|(meta, _)| {
            meta.source == APP_DIR_SOURCE && meta.status == Status::Ready && matches(meta)
        })
    }

    /// What a copy of the app directory leaves out: besides the usual, its
    /// shared paths, which the copy links to instead.
    fn app_dir_exclude(&self, app_dir: &Path, cfg: &ReleasesConfig) -> copy::Exclude {
        let mut exclude = self.exclude(cfg);
        exclude
            .paths
            .extend(cfg.shared.iter().map(|name| app_dir.join(name)));
        exclude
    }

    fn fill(
        &self,
        dir: &Path,
        source: &Source,
        cfg: &ReleasesConfig,
    ) -> Result<String, ReleaseError> {
        let limit = cfg.max_unpacked_size.get_ref().0;
        match source {
            Source::Dir(from) => copy::copy_dir(from, dir, &self.exclude(cfg))
                .map_err(|e| ReleaseError::Io(format!("copying {}: {e}", from.display()))),
            Source::Tarball(path) => {
                let name = path.display().to_string();
                let wrap = |error| ReleaseError::Unpack {
                    source_name: name.clone(),
                    error,
                };
                let (gzip, file) = unpack::open_archive(path).map_err(|e| wrap(e.into()))?;
                let mut hashing = unpack::Hashing::new(io::BufReader::new(file));
                if gzip {
                    unpack::unpack(flate2::read::GzDecoder::new(&mut hashing), dir, limit)
                        .map_err(wrap)?;
                } else {
                    unpack::unpack(&mut hashing, dir, limit).map_err(wrap)?;
                }
                hashing.finish().map_err(|e| wrap(e.into()))
            }
            Source::Git { repo, rev } => {
                let name = format!("git {rev}");
                let mut child = std::process::Command::new("git")
                    .arg("-C")
                    .arg(repo)
                    .args(["archive", "--format=tar", rev])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| ReleaseError::Io(format!("running git: {e}")))?;
                let stdout = child.stdout.take().expect("stdout was piped");
                let mut hashing = unpack::Hashing::new(io::BufReader::new(stdout));
                let unpacked = unpack::unpack(&mut hashing, dir, limit);
                let checksum = hashing.finish();
                let out = child
                    .wait_with_output()
                    .map_err(|e| ReleaseError::Io(format!("running git: {e}")))?;
                if !out.status.success() {
                    return Err(ReleaseError::Io(format!(
                        "git archive {rev} in {}: {}",
                        repo.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
                unpacked.map_err(|error| ReleaseError::Unpack {
                    source_name: name.clone(),
                    error,
                })?;
                checksum.map_err(|e| ReleaseError::Io(e.to_string()))
            }
        }
    }

    /// Symlinks each shared path into the release, as Capistrano does. The
    /// first release that ships a shared path seeds it.
    fn link_shared(&self, dir: &Path, cfg: &ReleasesConfig) -> Result<(), ReleaseError> {
        let err = |what: &str, e: io::Error| ReleaseError::Io(format!("shared {what}: {e}"));
        for name in &cfg.shared {
            let rel = inside_release(name)?;
            let shared = self.state_dir.join("shared").join(rel);
            let inside = dir.join(rel);
            if let Some(parent) = shared.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err(name, e))?;
            }
            if !shared.exists() {
                if inside.exists() {
                    std::fs::rename(&inside, &shared).map_err(|e| err(name, e))?;
                } else {
                    std::fs::create_dir_all(&shared).map_err(|e| err(name, e))?;
                }
            } else if inside.is_dir() && !inside.is_symlink() {
                std::fs::remove_dir_all(&inside).map_err(|e| err(name, e))?;
            } else if inside.exists() || inside.is_symlink() {
                std::fs::remove_file(&inside).map_err(|e| err(name, e))?;
            }
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent).map_err(|e| err(name, e))?;
            }
            std::os::unix::fs::symlink(&shared, &inside).map_err(|e| err(name, e))?;
        }
        Ok(())
    }

    /// Sets the status in a release's `RELEASE` file.
    pub fn set_status(&self, dir: &Path, status: Status) {
        let Ok(text) = std::fs::read_to_string(dir.join(META_FILE)) else {
            return;
        };
        if let Ok(mut meta) = serde_json::from_str::<Meta>(&text) {
            meta.status = status;
            let _ = self.finish(dir, &meta);
        }
    }

    /// Writes the `RELEASE` file: from here on the release counts.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn finish(&self, dir: &Path, meta: &Meta) -> io::Result<()> {
        let tmp = dir.join(format!(".{META_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(meta).unwrap_or_default())?;
        std::fs::rename(tmp, dir.join(META_FILE))
    }
}

/// The app directory that is about to run in place, as far as its files'
/// metadata tells (see [`Store::survey_app_dir`]).
#[derive(Debug)]
pub enum AppDir {
    /// Unchanged since this copy was kept of it.
    Kept(Meta, PathBuf),
    /// Changed since every copy, or too recently changed to tell: a copy is
    /// still to be made ([`Store::copy_app_dir`]).
    Changed(copy::Survey),
}

/// The error of a failed copy of `dir`.
fn copy_err(dir: &Path) -> impl Fn(io::Error) -> ReleaseError + '_ {
    move |e| ReleaseError::Io(format!("copying {}: {e}", dir.display()))
}

/// [`Store::keep_copy`] of the app directory `loaded` runs in, off the async
/// threads.
///
/// # Errors
/// Why no copy was kept.
pub async fn keep_app_copy(loaded: &Loaded) -> Result<(Meta, PathBuf), String> {
    off_thread(loaded, Store::keep_copy).await
}

/// [`Store::survey_app_dir`] of the app directory `loaded` runs in, off the
/// async threads.
///
/// # Errors
/// Why no copy may be kept of it.
pub async fn survey_app_dir(loaded: &Loaded) -> Result<AppDir, String> {
    off_thread(loaded, Store::survey_app_dir).await
}

/// Runs `work` with the store and the app directory `loaded` names on
/// tokio's blocking threads: it walks and reads the whole directory.
async fn off_thread<T: Send + 'static>(
    loaded: &Loaded,
    work: fn(&Store, &Path, &ReleasesConfig) -> Result<T, ReleaseError>,
) -> Result<T, String> {
    let store = Store::new(loaded);
    let (dir, cfg) = (loaded.base_dir.clone(), loaded.config.releases.clone());
    match tokio::task::spawn_blocking(move || work(&store, &dir, &cfg)).await {
        Ok(done) => done.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Bytes in the files of a release folder. Links are not followed, so a
/// `node_modules` or shared path linked in counts nothing.
pub fn folder_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => folders.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map_or(0, |m| m.len());
                }
                _ => {}
            }
        }
    }
    total
}

/// A shared path, refused unless it stays inside the release folder.
fn inside_release(name: &str) -> Result<&Path, ReleaseError> {
    let rel = Path::new(name);
    let escapes = rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
    if escapes {
        return Err(ReleaseError::Io(format!(
            "shared path {name:?} must stay inside the release"
        )));
    }
    Ok(rel)
}

/// Links each of `names` that the app directory has into `copy` (which left
/// them out), so the copy uses the app directory's own.
fn link_to_app(copy: &Path, app_dir: &Path, names: &[String]) -> Result<(), ReleaseError> {
    let err = |name: &str, e: io::Error| ReleaseError::Io(format!("linking {name}: {e}"));
    for name in names {
        let rel = inside_release(name)?;
        let target = app_dir.join(rel);
        if !target.exists() {
            continue;
        }
        let target = std::path::absolute(&target).map_err(|e| err(name, e))?;
        let inside = copy.join(rel);
        if let Some(parent) = inside.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(name, e))?;
        }
        std::os::unix::fs::symlink(&target, &inside).map_err(|e| err(name, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two releases made in the same second list in the order they were
    /// made, though their ids (time to the second, then a hash) sort the
    /// other way; an old `RELEASE` with its time to the second still lists.
    #[test]
    fn releases_list_in_the_order_they_were_made() {
        let root = tempfile::tempdir().unwrap();
        let store = Store {
            root: root.path().to_path_buf(),
            state_dir: root.path().to_path_buf(),
            inbox: None,
            app_log: root.path().join("app.log"),
            log_keep: 5,
        };
        let made = [
            ("20261121T164415Z-aaaaaa", "2026-11-21T16:44:14Z"),
            ("20261121T164415Z-ffffff", "2026-11-21T16:44:15.100Z"),
            ("20261121T164415Z-000000", "2026-11-21T16:44:15.200Z"),
        ];
        for (id, created) in made {
            let dir = root.path().join(id);
            std::fs::create_dir(&dir).unwrap();
            let meta = Meta {
                id: id.into(),
                source: "test".into(),
                checksum: String::new(),
                created: created.into(),
                build_log: None,
                status: Status::Ready,
                size: None,
                fingerprint: None,
            };
            store.finish(&dir, &meta).unwrap();
        }
        let listed: Vec<String> = store.list().into_iter().map(|(m, _)| m.id).collect();
        assert_eq!(listed, made.map(|(id, _)| id.to_string()));
    }
}
