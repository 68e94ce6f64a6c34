//! Opening a file beneath a release's served folder, and nowhere else.
//!
//! Linux's `openat2(RESOLVE_BENEATH)` resolves the path in the kernel and
//! refuses any step out of the folder: `..` past it, an absolute symlink,
//! a relative one leading out. One system call, no race between a check
//! and the open. Kernels before 5.6 lack it; there the path is resolved
//! with `realpath` and checked to stay inside before it is opened.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

/// A served folder, held open so that a lookup resolves from it.
#[derive(Debug)]
pub(crate) struct Folder {
    fd: OwnedFd,
    /// Resolved (no symlinks), for the fallback's check.
    path: PathBuf,
}

/// What a path names inside a folder.
pub(crate) enum Found {
    /// A regular file, open for reading.
    File(Opened),
    /// A folder.
    Dir,
    /// Nothing (or something that is neither file nor folder).
    Missing,
    /// A path that leads out of the folder (a symlink pointing out).
    Outside,
}

/// An open file and what its answer says about it.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The file, open for reading.
    pub file: File,
    /// Its length.
    pub size: u64,
    /// Its modification time.
    pub modified: SystemTime,
    /// The validator's part that tells two files of one size and time
    /// apart (two releases unpacked from archives with fixed times).
    pub inode: u64,
}

/// Set once `openat2` turned out missing (ENOSYS): the fallback is used.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

impl Folder {
    /// Opens `path` as a folder to serve from.
    ///
    /// # Errors
    /// When it is not a folder that can be opened.
    pub(crate) fn open(path: &Path) -> io::Result<Folder> {
        let resolved = std::fs::canonicalize(path)?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&resolved)?;
        Ok(Folder {
            fd: file.into(),
            path: resolved,
        })
    }

    /// Opens `relative` (plain names only, see [`super::target`]) beneath
    /// this folder.
    pub(crate) fn find(&self, relative: &Path) -> io::Result<Found> {
        let opened = if NO_OPENAT2.load(Ordering::Relaxed) {
            self.open_checked(relative)
        } else {
            match self.open_beneath(relative) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    self.open_checked(relative)
                }
                other => other,
            }
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                return match e.raw_os_error() {
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => Ok(Found::Missing),
                    Some(libc::EXDEV | libc::ELOOP) => Ok(Found::Outside),
                    _ => Err(e),
                }
            }
        };
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Ok(Found::Dir);
        }
        if !meta.is_file() {
            return Ok(Found::Missing);
        }
        Ok(Found::File(Opened {
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode: meta.ino(),
            file,
        }))
    }

    fn open_beneath(&self, relative: &Path) -> io::Result<File> {
        // Non-blocking: opening a FIFO for reading would otherwise wait for
        // a writer. Reads of a regular file ignore the flag.
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        crate::sys::openat2(self.fd.as_raw_fd(), relative, how)
    }

    fn open_checked(&self, relative: &Path) -> io::Result<File> {
        let resolved = std::fs::canonicalize(self.path.join(relative))?;
        if !resolved.starts_with(&self.path) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW)
            .open(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> (tempfile::TempDir, Folder) {
        let root = tempfile::tempdir().unwrap();
        let public = root.path().join("public");
        std::fs::create_dir_all(public.join("js")).unwrap();
        std::fs::write(public.join("js/app.js"), "app").unwrap();
        std::fs::write(root.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink("../secret", public.join("up")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), public.join("abs")).unwrap();
        std::os::unix::fs::symlink("js/app.js", public.join("inside")).unwrap();
        let folder = Folder::open(&public).unwrap();
        (root, folder)
    }

    fn found(folder: &Folder, path: &str) -> &'static str {
        match folder.find(Path::new(path)).unwrap() {
            Found::File(_) => "file",
            Found::Dir => "dir",
            Found::Missing => "missing",
            Found::Outside => "outside",
        }
    }

    #[test]
    fn symlinks_out_of_the_folder_are_refused_and_those_inside_followed() {
        let (_root, folder) = folder();
        assert_eq!(found(&folder, "js/app.js"), "file");
        assert_eq!(found(&folder, "js"), "dir");
        assert_eq!(found(&folder, "nope.js"), "missing");
        assert_eq!(found(&folder, "js/app.js/x"), "missing");
        assert_eq!(found(&folder, "up"), "outside");
        assert_eq!(found(&folder, "abs"), "outside");
        assert_eq!(found(&folder, "inside"), "file");
    }

    #[test]
    fn the_fallback_refuses_the_same_symlinks() {
        let (_root, folder) = folder();
        let escapes = |p: &str| {
            folder
                .open_checked(Path::new(p))
                .err()
                .and_then(|e| e.raw_os_error())
                == Some(libc::EXDEV)
        };
        assert!(escapes("up"));
        assert!(escapes("abs"));
        assert!(!escapes("inside"));
        assert!(folder.open_checked(Path::new("js/app.js")).is_ok());
    }
}
