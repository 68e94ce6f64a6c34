//! A request's path, normalised once, before anything is routed on it.
//!
//! A path prefix is an access boundary (an admin app at `/admin`, a public
//! one at `/`), so the app a route chooses, the static file a shelf opens
//! and the path the app then reads must be one and the same path. Routing
//! on the raw target and letting the app resolve `..` later lets
//! `/api/../admin` pick `api` while the app serves `/admin` (issue 32).
//!
//! What is done, in RFC 3986's words (§6.2.2, syntax-based normalisation),
//! to the path only (the query is left as sent):
//! - percent-encodings of unreserved characters are decoded (`%61` → `a`,
//!   `%2e` → `.`), and every other one is written with upper-case digits
//!   (`%2f` → `%2F`); a `%` not followed by two hex digits is refused, as
//!   nginx refuses it;
//! - dot-segments are removed (§5.2.4): `.` goes, `..` takes the segment
//!   before it with it; one that would climb above the root is refused
//!   (nginx answers it 400 too);
//! - empty segments are merged (`//` → `/`), as nginx's `merge_slashes`
//!   does: frameworks that merge them themselves would otherwise see
//!   `//admin` as the `/admin` that the route did not.
//!
//! An encoded slash (`%2F`) stays encoded: it is data inside a segment, not
//! a separator (RFC 3986 §2.2), as in `/packages/@scope%2Fname`. A route
//! does not split on it, and neither does this. (nginx decodes it before
//! choosing a location; Baton does not, so that such paths reach their app
//! as sent. The differential test lists this one difference.)

use std::borrow::Cow;

use http::StatusCode;

use super::framing::Rejection;

/// Why a target cannot be normalised: the client gets 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// `..` past the root: `/../etc/passwd`.
    AboveRoot,
    /// `%` without two hex digits after it.
    BadEscape,
}

impl BadPath {
    /// For the log.
    pub fn why(self) -> &'static str {
        match self {
            BadPath::AboveRoot => "the path climbs above the root",
            BadPath::BadEscape => "a % in the path is not followed by two hex digits",
        }
    }
}

impl From<BadPath> for Rejection {
    fn from(bad: BadPath) -> Rejection {
        Rejection {
            status: StatusCode::BAD_REQUEST,
            why: bad.why(),
        }
    }
}

/// `target` (an origin-form `path?query`) with its path normalised; the
/// same bytes, borrowed, when there was nothing to do (the common case,
/// found in one scan).
pub fn normalise(target: &[u8]) -> Result<Cow<'_, [u8]>, BadPath> {
    let end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    let (path, query) = target.split_at(end);
    if is_normal(path) {
        return Ok(Cow::Borrowed(target));
    }
    let mut out = Vec::with_capacity(target.len());
    // Where each kept segment starts in `out` (after its '/'), for `..`.
    let mut starts: Vec<usize> = Vec::new();
    let mut segments = path.split(|&b| b == b'/').peekable();
    // An origin-form path starts with '/': the piece before it is empty.
    // A path that does not (an absolute URI's empty path) is made one.
    if path.first() == Some(&b'/') {
        segments.next();
    }
    let mut segment = Vec::new();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        segment.clear();
        decode_unreserved(raw, &mut segment)?;
        match segment.as_slice() {
            b"." => {}
            b".." => {
                let start = starts.pop().ok_or(BadPath::AboveRoot)?;
                out.truncate(start - 1);
            }
            b"" => {}
            name => {
                out.push(b'/');
                starts.push(out.len());
                out.extend_from_slice(name);
                continue;
            }
        }
        // A path that ends in a dot-segment or a slash names a folder:
        // it keeps its trailing slash (`/a/b/..` → `/a/`).
        if last {
            out.push(b'/');
        }
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(query);
    Ok(Cow::Owned(out))
}

/// Whether `path` is already normal: it starts with '/', its escapes are
/// normal, and it has no dot-segment and no empty segment but a trailing
/// one.
fn is_normal(path: &[u8]) -> bool {
    let Some(rest) = path.strip_prefix(b"/") else {
        return false;
    };
    if !escapes_are_normal(rest) {
        return false;
    }
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if segment == b"." || segment == b".." || (segment.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// Whether every `%` in `path` starts an escape with upper-case digits of
/// a character that is not unreserved (what [`decode_unreserved`] writes).
fn escapes_are_normal(path: &[u8]) -> bool {
    let mut rest = path;
    while let Some(at) = rest.iter().position(|&b| b == b'%') {
        let upper = (rest.get(at + 1..at + 3)).is_some_and(|d| d.iter().all(|b| HEX.contains(b)));
        if !upper || escaped(rest, at).is_none_or(is_unreserved) {
            return false;
        }
        rest = &rest[at + 3..];
    }
    true
}

/// Appends `raw` to `out` with the escapes of unreserved characters
/// decoded and every other escape's digits in upper case.
fn decode_unreserved(raw: &[u8], out: &mut Vec<u8>) -> Result<(), BadPath> {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let byte = escaped(raw, i).ok_or(BadPath::BadEscape)?;
        if is_unreserved(byte) {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
        i += 3;
    }
    Ok(())
}

/// An unreserved character (RFC 3986 §2.3): its escape means the
/// character itself.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~".contains(&byte)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte that the escape `%XY` at `at` in `raw` stands for (digits of
/// either case); none when two hex digits do not follow the `%`.
pub fn escaped(raw: &[u8], at: usize) -> Option<u8> {
    let digit = |i: usize| (*raw.get(i)? as char).to_digit(16).map(|d| d as u8);
    Some(digit(at + 1)? << 4 | digit(at + 2)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(target: &str) -> Result<String, BadPath> {
        normalise(target.as_bytes()).map(|p| String::from_utf8(p.into_owned()).unwrap())
    }

    /// RFC 3986 §5.2.4's own examples, and the ones issue 32 met.
    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(n("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(n("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(n("/api/../x").unwrap(), "/x");
        assert_eq!(n("/api/%2e%2e/x").unwrap(), "/x");
        assert_eq!(n("/api/%2E./x").unwrap(), "/x");
        assert_eq!(n("/api/.").unwrap(), "/api/");
        assert_eq!(n("/api/..").unwrap(), "/");
        assert_eq!(n("/a/b/..?q=/../").unwrap(), "/a/?q=/../");
        assert_eq!(n("/..a/b.").unwrap(), "/..a/b.");
    }

    #[test]
    fn a_path_above_the_root_is_refused() {
        assert_eq!(n("/../../etc/passwd"), Err(BadPath::AboveRoot));
        assert_eq!(n("/a/../.."), Err(BadPath::AboveRoot));
        assert_eq!(n("/%2e%2e/x"), Err(BadPath::AboveRoot));
        assert_eq!(n("/a/%2E%2E/%2e%2e/b"), Err(BadPath::AboveRoot));
    }

    #[test]
    fn escapes_are_normalised_and_a_bad_one_refused() {
        assert_eq!(n("/%61pi/%7e%41").unwrap(), "/api/~A");
        assert_eq!(n("/a%2fb/%c3%a9").unwrap(), "/a%2Fb/%C3%A9");
        assert_eq!(n("/%zz"), Err(BadPath::BadEscape));
        assert_eq!(n("/a%4"), Err(BadPath::BadEscape));
        assert_eq!(n("/a%"), Err(BadPath::BadEscape));
    }

    #[test]
    fn slashes_are_merged_but_a_trailing_one_kept() {
        assert_eq!(n("//api//x").unwrap(), "/api/x");
        assert_eq!(n("/api/x/").unwrap(), "/api/x/");
        assert_eq!(n("/api//").unwrap(), "/api/");
        assert_eq!(n("//").unwrap(), "/");
    }

    /// What is normal already comes back borrowed, query and all; an
    /// absolute URI's empty path becomes "/".
    #[test]
    fn a_normal_path_is_borrowed() {
        for t in [
            "/",
            "/a/b.c/.well-known/x?y=/../..",
            "/a/",
            "/...",
            "/a%20b/%2F%C3%A9",
        ] {
            assert!(
                matches!(normalise(t.as_bytes()), Ok(Cow::Borrowed(_))),
                "{t}"
            );
        }
        assert_eq!(n("").unwrap(), "/");
        assert_eq!(n("?q").unwrap(), "/?q");
    }
}
