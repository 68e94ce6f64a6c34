//! From a request target to a path inside the served folder, or a refusal.
//!
//! The target comes normalised ([`crate::normalise`]: no dot-segment
//! is left in it); its path is decoded here for the file system, and each
//! segment is checked again, a second line of defence should a target
//! come another way: no `.` or `..` (plain or percent-encoded), no encoded
//! `/` or `\`, no NUL,
//! no hidden names (`.env`, `.git`). What passes is a relative path of
//! plain names; the kernel then opens it beneath the folder (see
//! [`super::open`]), which also refuses symlinks that lead out.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use crate::normalise::escaped;

/// Why a target names no file that may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `..`, `.`, an encoded separator, a NUL, a bad escape: 400.
    Malformed,
    /// A hidden name: 404, as if it did not exist.
    Hidden,
}

/// The path of `target` (its query dropped) under `prefix`, as a relative
/// path to open; `Ok(None)` when it names the folder itself.
///
/// `target` must start with `prefix` (see [`super::Shelf::takes`]).
pub(crate) fn relative(target: &[u8], prefix: &str) -> Result<Option<PathBuf>, Refused> {
    let path = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(end) => &target[..end],
        None => target,
    };
    let rest = &path[prefix.len().min(path.len())..];
    let mut out: Vec<u8> = Vec::with_capacity(rest.len());
    for raw in rest.split(|&b| b == b'/') {
        if raw.is_empty() {
            continue;
        }
        let segment = decode(raw)?;
        if segment == b"." || segment == b".." {
            return Err(Refused::Malformed);
        }
        if segment.contains(&b'/') || segment.contains(&b'\\') || segment.contains(&0) {
            return Err(Refused::Malformed);
        }
        if segment.first() == Some(&b'.') {
            return Err(Refused::Hidden);
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(&segment);
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(OsString::from_vec(out))))
}

/// Percent-decodes one segment; a `%` not followed by two hex digits is
/// refused rather than kept (two servers must not read one target two ways).
fn decode(raw: &[u8]) -> Result<Vec<u8>, Refused> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            out.push(escaped(raw, i).ok_or(Refused::Malformed)?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(target: &str) -> Result<Option<String>, Refused> {
        relative(target.as_bytes(), "/static").map(|p| p.map(|p| p.to_string_lossy().into_owned()))
    }

    #[test]
    fn plain_names_pass_and_the_query_is_dropped() {
        assert_eq!(rel("/static/app.js"), Ok(Some("app.js".into())));
        assert_eq!(rel("/static/js/a.b.js?v=1"), Ok(Some("js/a.b.js".into())));
        assert_eq!(rel("/static/js//a.js"), Ok(Some("js/a.js".into())));
        assert_eq!(rel("/static/a%20b.js"), Ok(Some("a b.js".into())));
        assert_eq!(rel("/static/"), Ok(None));
        assert_eq!(rel("/static"), Ok(None));
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for target in [
            "/static/../baton.toml",
            "/static/js/../../x",
            "/static/%2e%2e/baton.toml",
            "/static/%2E%2E/baton.toml",
            "/static/.%2e/x",
            "/static/./app.js",
            "/static/..%2fbaton.toml",
            "/static/js%2f..%2f..%2fx",
            "/static/..%5cx",
            "/static/a%00.js",
            "/static/a%zz.js",
            "/static/a%2",
        ] {
            assert_eq!(rel(target), Err(Refused::Malformed), "{target}");
        }
    }

    #[test]
    fn hidden_names_are_not_served() {
        assert_eq!(rel("/static/.env"), Err(Refused::Hidden));
        assert_eq!(rel("/static/.git/config"), Err(Refused::Hidden));
        assert_eq!(rel("/static/%2egit/config"), Err(Refused::Hidden));
    }
}
