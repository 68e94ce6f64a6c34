//! Releasing a directory: copy it into the new release folder, leaving out
//! `.git`, Baton's own state, `node_modules` (unless kept) and the ignore
//! list, and hash what was copied.

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Names never copied.
const ALWAYS_IGNORED: [&str; 2] = [".git", ".baton"];

/// Copies `from` into `to`, returning the sha256 of the copied paths and
/// contents. Symlinks are copied as symlinks; special files are refused.
///
/// # Errors
/// Any I/O error, or a special file in the source.
pub fn copy_dir(from: &Path, to: &Path, ignore: &[String]) -> io::Result<String> {
    let mut hash = Sha256::new();
    copy_into(from, to, ignore, Path::new(""), &mut hash)?;
    Ok(hex(&hash.finalize()))
}

fn copy_into(
    from: &Path,
    to: &Path,
    ignore: &[String],
    rel: &Path,
    hash: &mut Sha256,
) -> io::Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if ALWAYS_IGNORED.iter().any(|i| name == *i) || ignore.iter().any(|i| name == i.as_str()) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        let rel = rel.join(&name);
        hash.update(rel.as_os_str().as_encoded_bytes());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_into(&src, &dst, ignore, &rel, hash)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            hash.update(target.as_os_str().as_encoded_bytes());
            std::os::unix::fs::symlink(target, &dst)?;
        } else if kind.is_file() {
            copy_file(&src, &dst, hash)?;
        } else {
            return Err(io::Error::other(format!(
                "{} is not a regular file, folder or symlink",
                src.display()
            )));
        }
    }
    Ok(())
}

fn copy_file(src: &Path, dst: &Path, hash: &mut Sha256) -> io::Result<()> {
    let mut input = std::fs::File::open(src)?;
    let mut output = std::fs::File::create(dst)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        output.write_all(&buf[..n])?;
    }
    output.set_permissions(input.metadata()?.permissions())?;
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
