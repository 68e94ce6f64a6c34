//! Turning a source into a release folder: a directory is copied into
//! `<state>/releases/<id>/`, leaving out `.git` and Baton's own state.

use std::io;
use std::path::Path;

/// Names never copied into a release.
const IGNORED: [&str; 2] = [".git", ".baton"];

/// Copies `from` into `to` (which must not exist). Symlinks are copied as
/// symlinks; special files are refused.
///
/// # Errors
/// Any I/O error, or a special file in the source.
pub fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if IGNORED.iter().any(|i| name == *i) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_dir(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            return Err(io::Error::other(format!(
                "{} is not a regular file, folder or symlink",
                src.display()
            )));
        }
    }
    Ok(())
}
