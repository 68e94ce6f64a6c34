//! Releasing a directory: copy it into the new release folder, leaving out
//! `.git`, Baton's own state, `node_modules` (unless kept) and the ignore
//! list, and hash what was copied.

use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Names never copied.
const ALWAYS_IGNORED: [&str; 2] = [".git", ".baton"];

/// What a copy leaves out besides `.git` and `.baton`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exclude {
    /// File or folder names left out wherever they appear.
    pub names: Vec<String>,
    /// Files and folders left out by location: Baton's state folder, release
    /// root, inbox and app log when they sit inside the app. Copying the
    /// state folder would copy the release being made into itself.
    pub paths: Vec<PathBuf>,
}

impl Exclude {
    fn resolved(&self) -> Exclude {
        Exclude {
            names: self.names.clone(),
            paths: self
                .paths
                .iter()
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .collect(),
        }
    }

    fn leaves_out(&self, name: &std::ffi::OsStr, path: &Path) -> bool {
        ALWAYS_IGNORED.iter().any(|i| name == *i)
            || self.names.iter().any(|i| name == i.as_str())
            || self.paths.iter().any(|p| p == path)
    }
}

/// Copies `from` into `to`, returning the sha256 of the copied paths and
/// contents. Symlinks are copied as symlinks; sockets and FIFOs are left
/// out; devices are refused.
///
/// # Errors
/// Any I/O error, or a device file in the source.
pub(crate) fn copy_dir(from: &Path, to: &Path, exclude: &Exclude) -> io::Result<String> {
    let mut hash = Sha256::new();
    walk(from, Some(to), exclude, &mut Pass::Copy(&mut hash))?;
    Ok(hex(&hash.finalize()))
}

/// The checksum [`copy_dir`] would return, without copying.
///
/// # Errors
/// As [`copy_dir`].
pub(crate) fn checksum_dir(from: &Path, exclude: &Exclude) -> io::Result<String> {
    let mut hash = Sha256::new();
    walk(from, None, exclude, &mut Pass::Hash(&mut hash))?;
    Ok(hex(&hash.finalize()))
}

/// What the metadata of a source says, without reading a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The bytes [`copy_dir`] would copy, from the file sizes. Past the
    /// survey's limit the walk stops (a whole home folder need not be walked
    /// to know it is too big), so a figure above the limit is a lower bound.
    pub bytes: u64,
    /// sha256 of every path with its file's size, times, inode and mode (a
    /// symlink's target): the same fingerprint means unchanged files, as
    /// git's index assumes. None when a file changed too recently to tell:
    /// file times tick coarsely, so a file rewritten at the same size within
    /// one tick would keep its fingerprint (git's "racily clean" entries).
    pub fingerprint: Option<String>,
}

/// Surveys what [`copy_dir`] would copy, from metadata alone. A file
/// changed less than a second before `settled` (usually now) leaves the
/// survey without a fingerprint.
///
/// # Errors
/// As [`copy_dir`].
pub(crate) fn survey_dir(
    from: &Path,
    exclude: &Exclude,
    limit: u64,
    settled: std::time::SystemTime,
) -> io::Result<Survey> {
    let mut tally = Tally {
        hash: Sha256::new(),
        bytes: 0,
        limit,
        settled,
        racy: false,
    };
    walk(from, None, exclude, &mut Pass::Survey(&mut tally))?;
    Ok(Survey {
        bytes: tally.bytes,
        fingerprint: (!tally.racy).then(|| hex(&tally.hash.finalize())),
    })
}

/// A survey under way.
struct Tally {
    hash: Sha256,
    bytes: u64,
    limit: u64,
    settled: std::time::SystemTime,
    racy: bool,
}

impl Tally {
    fn add_file(&mut self, meta: &std::fs::Metadata) {
        use std::os::unix::fs::MetadataExt;
        self.bytes += meta.len();
        let at = |secs: i64, nanos: i64| {
            std::time::UNIX_EPOCH + std::time::Duration::new(secs.max(0) as u64, nanos as u32)
        };
        let changed = at(meta.mtime(), meta.mtime_nsec()).max(at(meta.ctime(), meta.ctime_nsec()));
        // A second's margin: far more than a file time's tick.
        if changed + std::time::Duration::from_secs(1) > self.settled {
            self.racy = true;
        }
        let line = format!(
            "{} {}.{} {}.{} {} {:o}",
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
            meta.ino(),
            meta.mode()
        );
        self.hash.update(line.as_bytes());
    }
}

/// What one walk over the source does with each entry.
enum Pass<'a> {
    /// Hashes paths and metadata, and adds up file sizes, up to just past a
    /// limit.
    Survey(&'a mut Tally),
    /// Hashes paths and contents.
    Hash(&'a mut Sha256),
    /// Hashes and copies.
    Copy(&'a mut Sha256),
}

impl Pass<'_> {
    fn hash(&mut self, bytes: &[u8]) {
        match self {
            Pass::Survey(tally) => tally.hash.update(bytes),
            Pass::Hash(hash) | Pass::Copy(hash) => hash.update(bytes),
        }
    }
}

fn walk(from: &Path, to: Option<&Path>, exclude: &Exclude, pass: &mut Pass<'_>) -> io::Result<()> {
    // From the canonical root, every folder's path is canonical too (symlinks
    // are not followed), so excluded paths compare as they are.
    let from = std::fs::canonicalize(from)?;
    copy_into(&from, to, &exclude.resolved(), Path::new(""), pass)
}

fn copy_into(
    from: &Path,
    to: Option<&Path>,
    exclude: &Exclude,
    rel: &Path,
    pass: &mut Pass<'_>,
) -> io::Result<()> {
    if let Some(to) = to {
        std::fs::create_dir_all(to)?;
    }
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if let Pass::Survey(tally) = pass {
            if tally.bytes > tally.limit {
                return Ok(());
            }
        }
        let name = entry.file_name();
        let src = entry.path();
        if exclude.leaves_out(&name, &src) {
            continue;
        }
        let kind = entry.file_type()?;
        // A socket or FIFO is a running program's, not part of the code:
        // an app listening on `tmp/app.sock` can still be released.
        if kind.is_socket() || kind.is_fifo() {
            continue;
        }
        let dst = to.map(|to| to.join(&name));
        let rel = rel.join(&name);
        pass.hash(rel.as_os_str().as_encoded_bytes());
        if kind.is_dir() {
            copy_into(&src, dst.as_deref(), exclude, &rel, pass)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            pass.hash(target.as_os_str().as_encoded_bytes());
            if let Some(dst) = dst {
                std::os::unix::fs::symlink(target, dst)?;
            }
        } else if kind.is_file() {
            match pass {
                Pass::Survey(tally) => tally.add_file(&entry.metadata()?),
                Pass::Hash(hash) => copy_file(&src, None, hash)?,
                Pass::Copy(hash) => copy_file(&src, dst.as_deref(), hash)?,
            }
        } else {
            return Err(io::Error::other(format!(
                "{} is a device, not a regular file, folder or symlink",
                src.display()
            )));
        }
    }
    Ok(())
}

fn copy_file(src: &Path, dst: Option<&Path>, hash: &mut Sha256) -> io::Result<()> {
    let mut input = std::fs::File::open(src)?;
    let mut output = dst.map(std::fs::File::create).transpose()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        if let Some(output) = &mut output {
            output.write_all(&buf[..n])?;
        }
    }
    if let Some(output) = output {
        output.set_permissions(input.metadata()?.permissions())?;
    }
    Ok(())
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state folder inside the app under another name is left out by
    /// location, as is a socket, and the checksum alone matches the copy's.
    #[test]
    fn state_folder_left_out_and_checksum_matches_copy() {
        let app = tempfile::tempdir().unwrap();
        std::fs::write(app.path().join("server.js"), "v1").unwrap();
        let state = app.path().join("state");
        std::fs::create_dir_all(state.join("releases")).unwrap();
        std::fs::write(state.join("baton.log"), "log").unwrap();
        std::fs::create_dir_all(app.path().join("lib/state")).unwrap();
        std::fs::write(app.path().join("lib/state/x.js"), "kept").unwrap();
        let exclude = Exclude {
            names: vec![],
            paths: vec![state.clone()],
        };
        let _socket = std::os::unix::net::UnixListener::bind(app.path().join("app.sock")).unwrap();
        let to = state.join("releases/copy");
        let copied = copy_dir(app.path(), &to, &exclude).unwrap();
        assert!(to.join("server.js").exists());
        assert!(!to.join("state").exists(), "the state folder is not copied");
        assert!(!to.join("app.sock").exists(), "a socket is left out");
        assert!(
            to.join("lib/state/x.js").exists(),
            "a name elsewhere is kept"
        );
        assert_eq!(checksum_dir(app.path(), &exclude).unwrap(), copied);
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let survey = survey_dir(app.path(), &exclude, 100, later).unwrap();
        assert_eq!(survey.bytes, 2 + 4);
        assert!(survey.fingerprint.is_some());
        assert_eq!(
            survey_dir(app.path(), &exclude, 100, later).unwrap(),
            survey
        );
        assert!(survey_dir(app.path(), &exclude, 1, later).unwrap().bytes > 1);
        let now = std::time::SystemTime::now();
        assert_eq!(
            survey_dir(app.path(), &exclude, 100, now)
                .unwrap()
                .fingerprint,
            None,
            "files written this second are too recent to fingerprint"
        );
        std::fs::write(app.path().join("server.js"), "v2").unwrap();
        assert_ne!(checksum_dir(app.path(), &exclude).unwrap(), copied);
        std::fs::write(app.path().join("server.js"), "v10").unwrap();
        assert_ne!(
            survey_dir(app.path(), &exclude, 100, later).unwrap(),
            survey
        );
        std::fs::write(app.path().join("server.js"), "v1").unwrap();
        std::fs::rename(app.path().join("server.js"), app.path().join("main.js")).unwrap();
        let renamed = survey_dir(app.path(), &exclude, 100, later).unwrap();
        assert_eq!(renamed.bytes, survey.bytes);
        assert_ne!(renamed.fingerprint, survey.fingerprint);
    }
}
