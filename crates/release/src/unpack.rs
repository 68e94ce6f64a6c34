//! Unpacking a tarball into a release folder, safely: nothing is written
//! outside the folder, whatever the archive says.
//!
//! Refused: absolute paths, `..`, symlinks or hard links that point outside,
//! writing through a symlink, device files and FIFOs, and more than
//! `max_unpacked_size` bytes in all (a decompression bomb).

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

/// Why an archive was refused or could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The archive tries to write outside its folder, or holds a special file.
    #[error("refused: {0}")]
    Hostile(String),
    /// The unpacked size would exceed the limit.
    #[error("refused: unpacks to more than max_unpacked_size ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// Reading the archive or writing the files failed (disk full, say).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads through to a sha256.
pub(crate) struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashing<R> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: R) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
        }
    }

    /// Reads what is left, and returns the hex digest of everything read.
    ///
    /// # Errors
    /// A read error.
    pub(crate) fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(super::copy::hex(&self.hash.finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Opens a `.tar.gz`, `.tgz` or `.tar`: gzip is told by its magic bytes,
/// not by the name.
///
/// # Errors
/// When the file cannot be read.
pub(crate) fn open_archive(path: &Path) -> io::Result<(bool, std::fs::File)> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    use std::io::Seek;
    f.rewind()?;
    Ok((n == 2 && magic == [0x1f, 0x8b], f))
}

/// The relative path an entry names, or why it is hostile.
fn sanitize(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Hostile(format!(
                    "{} climbs out with ..",
                    path.display()
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Hostile(format!(
                    "{} is an absolute path",
                    path.display()
                )))
            }
        }
    }
    Ok(out)
}

/// Whether `target`, read from `link`'s folder, stays inside the root.
fn stays_inside(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = link.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Refuses to write below a symlink: every existing ancestor of `rel`
/// inside `dest` must be a real folder.
fn check_ancestors(dest: &Path, rel: &Path) -> Result<(), UnpackError> {
    let mut here = dest.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        here.push(c);
        match std::fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Hostile(format!(
                    "{} would be written through the symlink {}",
                    rel.display(),
                    here.strip_prefix(dest).unwrap_or(&here).display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Unpacks a tar stream into `dest` (which must exist and be empty).
/// Returns the number of bytes written.
///
/// # Errors
/// [`UnpackError`]; `dest` may then hold part of the archive: the caller
/// removes it.
pub(crate) fn unpack<R: Read>(reader: R, dest: &Path, limit: u64) -> Result<u64, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut total: u64 = 0;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.into_owned();
        let rel = sanitize(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        check_ancestors(dest, &rel)?;
        let target = dest.join(&rel);
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => std::fs::create_dir_all(&target)?,
            EntryType::Regular | EntryType::Continuous => {
                total = total.saturating_add(entry.size());
                if total > limit {
                    return Err(UnpackError::TooLarge { limit });
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                // Never follow whatever sits at the path already.
                let _ = std::fs::remove_file(&target);
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                let size = entry.size();
                let written = io::copy(&mut (&mut entry).take(size), &mut out)?;
                if written != size {
                    return Err(UnpackError::Io(io::Error::other(format!(
                        "{} is truncated",
                        rel.display()
                    ))));
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                use std::os::unix::fs::PermissionsExt;
                out.set_permissions(std::fs::Permissions::from_mode(mode | 0o600))?;
            }
            EntryType::Symlink => {
                let link = entry.link_name()?.ok_or_else(|| {
                    UnpackError::Hostile(format!("{} is a symlink to nothing", rel.display()))
                })?;
                if !stays_inside(&rel, &link) {
                    return Err(UnpackError::Hostile(format!(
                        "symlink {} points outside the release: {}",
                        rel.display(),
                        link.display()
                    )));
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(&target);
                std::os::unix::fs::symlink(&link, &target)?;
            }
            EntryType::Link => {
                let link = entry.link_name()?.ok_or_else(|| {
                    UnpackError::Hostile(format!("{} is a hard link to nothing", rel.display()))
                })?;
                let source_rel = sanitize(&link).map_err(|_| {
                    UnpackError::Hostile(format!(
                        "hard link {} points outside the release: {}",
                        rel.display(),
                        link.display()
                    ))
                })?;
                check_ancestors(dest, &source_rel)?;
                let source = dest.join(&source_rel);
                let meta = std::fs::symlink_metadata(&source).map_err(|_| {
                    UnpackError::Hostile(format!(
                        "hard link {} points to {} which is not in the release",
                        rel.display(),
                        link.display()
                    ))
                })?;
                if !meta.is_file() {
                    return Err(UnpackError::Hostile(format!(
                        "hard link {} points to a non-file",
                        rel.display()
                    )));
                }
                let _ = std::fs::remove_file(&target);
                std::fs::hard_link(&source, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                return Err(UnpackError::Hostile(format!(
                    "{} is a device file or FIFO",
                    rel.display()
                )))
            }
            // Metadata entries (pax, GNU long names) are read by the tar
            // crate itself; anything else carries nothing to write.
            _ => {}
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lexical containment of symlink targets.
    #[test]
    fn symlink_containment() {
        assert!(stays_inside(Path::new("a/link"), Path::new("b")));
        assert!(stays_inside(Path::new("a/link"), Path::new("../b")));
        assert!(!stays_inside(Path::new("a/link"), Path::new("../../b")));
        assert!(!stays_inside(Path::new("link"), Path::new("/etc/passwd")));
        assert!(!stays_inside(Path::new("link"), Path::new("..")));
    }

    /// `..` and absolute names are refused.
    #[test]
    fn sanitize_refuses_escapes() {
        assert!(sanitize(Path::new("../x")).is_err());
        assert!(sanitize(Path::new("a/../../x")).is_err());
        assert!(sanitize(Path::new("/etc/x")).is_err());
        assert_eq!(sanitize(Path::new("./a/b")).unwrap(), PathBuf::from("a/b"));
    }
}
