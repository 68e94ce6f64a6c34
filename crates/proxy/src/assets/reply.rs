//! The answer for a file found: its fields, the validators and what the
//! request's conditions (RFC 9110 §13) and range (§14) make of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName, HeaderValue};
use http::StatusCode;
use http_range_header::RangeUnsatisfiableError;

use super::open::Opened;
use crate::phases::{OwnAnswer as Answer, Payload};

/// What a static request carries that its answer depends on. Field values
/// are raw bytes, as either server has them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Ask<'a> {
    /// The request method.
    pub method: &'a [u8],
    /// The target as the app would see it (after `strip_prefix`).
    pub target: &'a [u8],
    /// `If-Match`.
    pub if_match: Option<&'a [u8]>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a [u8]>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a [u8]>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a [u8]>,
    /// `Range`.
    pub range: Option<&'a [u8]>,
    /// `If-Range`.
    pub if_range: Option<&'a [u8]>,
    /// `Accept-Encoding`.
    pub accept_encoding: Option<&'a [u8]>,
    /// `x-deployment-id`: the release a page was rendered by (Next.js's
    /// `deploymentId`); `?dpl=` in the target says the same.
    pub deployment: Option<&'a [u8]>,
}

impl Ask<'_> {
    /// GET or HEAD: the only methods a file answers.
    pub(crate) fn is_read(&self) -> bool {
        self.method == b"GET" || self.method == b"HEAD"
    }

    fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }
}

/// The content coding of the file chosen: the file asked for, or its
/// precompressed sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// The file itself.
    Identity,
    /// Its `.br` sibling.
    Brotli,
    /// Its `.gz` sibling.
    Gzip,
}

impl Coding {
    /// The sibling's suffix.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Brotli => ".br",
            Coding::Gzip => ".gz",
        }
    }

    fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// How a file is cached by browsers and CDNs.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Names that are not hashed may change with the next deploy: a minute,
/// then a revalidation (a 304 when unchanged).
const SHORT: &str = "public, max-age=60";

/// What is known of the file chosen before the request's conditions.
pub(crate) struct Chosen<'a> {
    /// The file.
    pub opened: Opened,
    /// Which of its codings it is.
    pub coding: Coding,
    /// Its media type (of the name asked for, not of a `.br` sibling).
    pub content_type: HeaderValue,
    /// A precompressed sibling could answer another client: `Vary`.
    pub varies: bool,
    /// Its name is hashed: cached for a year.
    pub immutable: bool,
    /// The release it is from.
    pub release: &'a HeaderValue,
}

/// The answer for `chosen`, after `ask`'s conditions and range.
pub(crate) fn file_answer(ask: &Ask<'_>, chosen: Chosen<'_>) -> Answer {
    let Chosen {
        opened,
        coding,
        content_type,
        varies,
        immutable,
        release,
    } = chosen;
    let etag = entity_tag(&opened, coding);
    let modified = whole_seconds(opened.modified);
    let mut fields = Vec::with_capacity(10);
    fields.push((header::ETAG, etag.clone()));
    fields.push((
        header::LAST_MODIFIED,
        HeaderValue::try_from(httpdate::fmt_http_date(modified)).expect("a date is a valid value"),
    ));
    fields.push((
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable { IMMUTABLE } else { SHORT }),
    ));
    if varies {
        fields.push((header::VARY, HeaderValue::from_static("accept-encoding")));
    }
    fields.push((HeaderName::from_static("x-baton-release"), release.clone()));
    let tag = etag.as_bytes();
    match precondition(ask, tag, modified) {
        Precondition::Failed => {
            return Answer {
                status: StatusCode::PRECONDITION_FAILED,
                fields,
                body: Payload::Empty,
                close: false,
            }
            .with_length(0)
        }
        Precondition::NotModified => {
            return Answer {
                status: StatusCode::NOT_MODIFIED,
                fields,
                body: Payload::Empty,
                close: false,
            }
        }
        Precondition::Pass => {}
    }
    fields.push((header::CONTENT_TYPE, content_type));
    if coding != Coding::Identity {
        fields.push((
            header::CONTENT_ENCODING,
            HeaderValue::from_static(coding.token()),
        ));
    }
    fields.push((header::ACCEPT_RANGES, HeaderValue::from_static("bytes")));
    let size = opened.size;
    let (status, start, len) = match byte_range(ask, tag, modified, size) {
        Span::Whole => (StatusCode::OK, 0, size),
        Span::Part(start, end) => {
            fields.push((
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes {start}-{end}/{size}"))
                    .expect("digits are a valid value"),
            ));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Span::Unsatisfiable => {
            fields.push((
                header::CONTENT_RANGE,
                HeaderValue::try_from(format!("bytes */{size}")).expect("digits are a valid value"),
            ));
            return Answer {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                fields,
                body: Payload::Empty,
                close: false,
            }
            .with_length(0);
        }
    };
    let body = if ask.is_head() || len == 0 {
        Payload::Empty
    } else {
        Payload::File {
            file: opened.file,
            start,
            len,
        }
    };
    Answer {
        status,
        fields,
        body,
        close: false,
    }
    .with_length(len)
}

impl Answer {
    fn with_length(mut self, len: u64) -> Answer {
        self.fields
            .push((header::CONTENT_LENGTH, HeaderValue::from(len)));
        self
    }
}

/// A strong validator: size, modification time (to the nanosecond) and
/// inode, and the coding, since a `.br` sibling is other bytes.
fn entity_tag(opened: &Opened, coding: Coding) -> HeaderValue {
    let since = opened
        .modified
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let tag = format!(
        "\"{:x}-{:x}.{:x}-{:x}{}\"",
        opened.size,
        since.as_secs(),
        since.subsec_nanos(),
        opened.inode,
        coding.suffix().replace('.', "-"),
    );
    HeaderValue::try_from(tag).expect("hex digits are a valid value")
}

/// HTTP dates have whole seconds; comparisons use what was sent.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_secs(since.as_secs())
}

enum Precondition {
    Pass,
    NotModified,
    Failed,
}

/// RFC 9110 §13.2.2, in its order: If-Match, else If-Unmodified-Since;
/// then If-None-Match, else If-Modified-Since (GET and HEAD only).
fn precondition(ask: &Ask<'_>, etag: &[u8], modified: SystemTime) -> Precondition {
    if let Some(wanted) = ask.if_match {
        if !tag_list_matches(wanted, etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(date) = ask.if_unmodified_since.and_then(http_date) {
        if modified > date {
            return Precondition::Failed;
        }
    }
    if let Some(wanted) = ask.if_none_match {
        if tag_list_matches(wanted, etag, false) {
            return Precondition::NotModified;
        }
    } else if let Some(date) = ask.if_modified_since.and_then(http_date) {
        if modified <= date {
            return Precondition::NotModified;
        }
    }
    Precondition::Pass
}

/// Whether `etag` is in a list of entity tags (or the list is `*`):
/// strong comparison for If-Match, weak for If-None-Match (§8.8.3.2).
fn tag_list_matches(list: &[u8], etag: &[u8], strong: bool) -> bool {
    let list = trim(list);
    if list == b"*" {
        return true;
    }
    list.split(|&b| b == b',').map(trim).any(|candidate| {
        let weak = candidate.starts_with(b"W/");
        let opaque = candidate.strip_prefix(b"W/").unwrap_or(candidate);
        opaque == etag && !(strong && weak)
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn http_date(value: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()
}

enum Span {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// The bytes a GET asks for (§14.2). A Range the server cannot read, or of
/// several parts, is ignored (the whole file, as §14.2 allows); a Range
/// whose If-Range no longer holds too. A single range past the end: 416.
fn byte_range(ask: &Ask<'_>, etag: &[u8], modified: SystemTime, size: u64) -> Span {
    let Some(range) = ask.range.filter(|_| ask.method == b"GET") else {
        return Span::Whole;
    };
    if let Some(condition) = ask.if_range {
        let condition = trim(condition);
        let holds = if condition.starts_with(b"\"") || condition.starts_with(b"W/") {
            condition == etag
        } else {
            http_date(condition) == Some(modified)
        };
        if !holds {
            return Span::Whole;
        }
    }
    let Some(parsed) = std::str::from_utf8(range)
        .ok()
        .and_then(|r| http_range_header::parse_range_header(r).ok())
    else {
        return Span::Whole;
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Span::Part(*ranges[0].start(), *ranges[0].end()),
        Ok(_) | Err(RangeUnsatisfiableError::Rejected(_)) => Span::Whole,
        Err(_) => Span::Unsatisfiable,
    }
}

/// The coding to answer with, of those `accept_encoding` allows (§12.5.3):
/// `br` before `gzip`; `q=0` refuses one; `*` stands for any not named.
pub(crate) fn acceptable(accept_encoding: Option<&[u8]>, coding: Coding) -> bool {
    let Some(list) = accept_encoding else {
        return false;
    };
    let mut star = None;
    for item in list.split(|&b| b == b',') {
        let mut parts = item.split(|&b| b == b';');
        let name = trim(parts.next().unwrap_or_default());
        let refused = parts.any(|p| {
            let p = trim(p);
            p.len() >= 2
                && p[..2].eq_ignore_ascii_case(b"q=")
                && trim(&p[2..]).iter().all(|&b| b == b'0' || b == b'.')
        });
        if name.eq_ignore_ascii_case(coding.token().as_bytes())
            || coding == Coding::Gzip && name.eq_ignore_ascii_case(b"x-gzip")
        {
            return !refused;
        }
        if name == b"*" {
            star = Some(!refused);
        }
    }
    star.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file for a whole test: its validators stay the same.
    struct Fixture(tempfile::TempDir);

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("f.js"), b"0123456789").unwrap();
            Fixture(dir)
        }

        fn answer(&self, ask: Ask<'_>) -> Answer {
            let folder = super::super::open::Folder::open(self.0.path()).unwrap();
            let super::super::open::Found::File(opened) =
                folder.find(std::path::Path::new("f.js")).unwrap()
            else {
                panic!("written at the start");
            };
            let release = HeaderValue::from_static("r1");
            file_answer(
                &ask,
                Chosen {
                    opened,
                    coding: Coding::Identity,
                    content_type: HeaderValue::from_static("text/javascript"),
                    varies: false,
                    immutable: true,
                    release: &release,
                },
            )
        }

        fn etag(&self) -> String {
            let a = self.answer(get());
            field(&a, header::ETAG).unwrap().to_string()
        }
    }

    fn answer(ask: Ask<'_>) -> Answer {
        Fixture::new().answer(ask)
    }

    fn get() -> Ask<'static> {
        Ask {
            method: b"GET",
            target: b"/static/f.js",
            ..Ask::default()
        }
    }

    fn field(answer: &Answer, name: HeaderName) -> Option<&str> {
        answer
            .fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn a_plain_get_is_the_whole_file_with_validators() {
        let a = answer(get());
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body_len(), 10);
        assert_eq!(field(&a, header::CONTENT_LENGTH), Some("10"));
        assert_eq!(field(&a, header::CACHE_CONTROL), Some(IMMUTABLE));
        assert_eq!(field(&a, header::ACCEPT_RANGES), Some("bytes"));
        assert!(field(&a, header::LAST_MODIFIED).unwrap().ends_with(" GMT"));
        let tag = field(&a, header::ETAG).unwrap();
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{tag}");
    }

    #[test]
    fn head_has_the_length_and_no_body() {
        let a = answer(Ask {
            method: b"HEAD",
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(field(&a, header::CONTENT_LENGTH), Some("10"));
        assert!(matches!(a.body, Payload::Empty));
    }

    // RFC 9110 §13.1.2: If-None-Match uses the weak comparison, so W/"x"
    // matches "x"; a list matches when any member does; `*` matches.
    #[test]
    fn if_none_match_gives_304_by_weak_comparison() {
        let file = Fixture::new();
        let tag = file.etag();
        let weak = format!("W/{tag}");
        let list = format!("\"other\", {tag}");
        for value in [tag.as_str(), weak.as_str(), list.as_str(), "*"] {
            let a = file.answer(Ask {
                if_none_match: Some(value.as_bytes()),
                ..get()
            });
            assert_eq!(a.status, StatusCode::NOT_MODIFIED, "{value}");
            assert!(matches!(a.body, Payload::Empty));
            assert_eq!(field(&a, header::ETAG), Some(tag.as_str()));
            assert_eq!(field(&a, header::CONTENT_LENGTH), None);
        }
        let a = file.answer(Ask {
            if_none_match: Some(b"\"other\""),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
    }

    // §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    #[test]
    fn if_modified_since_gives_304_unless_if_none_match_says_otherwise() {
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        let a = answer(Ask {
            if_modified_since: Some(later.as_bytes()),
            ..get()
        });
        assert_eq!(a.status, StatusCode::NOT_MODIFIED);
        let a = answer(Ask {
            if_modified_since: Some(later.as_bytes()),
            if_none_match: Some(b"\"other\""),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
        let earlier = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(3600));
        let a = answer(Ask {
            if_modified_since: Some(earlier.as_bytes()),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
    }

    // §13.1.1: If-Match uses the strong comparison; a weak tag never matches.
    #[test]
    fn if_match_fails_with_412_by_strong_comparison() {
        let file = Fixture::new();
        let tag = file.etag();
        let weak = format!("W/{tag}");
        let a = file.answer(Ask {
            if_match: Some(weak.as_bytes()),
            ..get()
        });
        assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
        let a = file.answer(Ask {
            if_match: Some(tag.as_bytes()),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
    }

    // §14.1.2 and §14.4: a satisfiable single range is 206 with
    // Content-Range; suffix and open-ended forms count from the end and to
    // the end; a first byte past the end is 416 with `bytes */size`.
    #[test]
    fn ranges_give_206_and_416_as_rfc_9110_says() {
        for (range, content_range, len) in [
            ("bytes=0-3", "bytes 0-3/10", 4),
            ("bytes=7-", "bytes 7-9/10", 3),
            ("bytes=-2", "bytes 8-9/10", 2),
            ("bytes=5-100", "bytes 5-9/10", 5),
        ] {
            let a = answer(Ask {
                range: Some(range.as_bytes()),
                ..get()
            });
            assert_eq!(a.status, StatusCode::PARTIAL_CONTENT, "{range}");
            assert_eq!(field(&a, header::CONTENT_RANGE), Some(content_range));
            assert_eq!(a.body_len(), len, "{range}");
            let Payload::File { start, .. } = a.body else {
                panic!("{range}: a file body");
            };
            assert_eq!(
                start,
                content_range[6..]
                    .split('-')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            );
        }
        let a = answer(Ask {
            range: Some(b"bytes=10-"),
            ..get()
        });
        assert_eq!(a.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(field(&a, header::CONTENT_RANGE), Some("bytes */10"));
    }

    // §14.2: a Range the server does not understand is ignored, as it is
    // on HEAD (range requests are defined for GET only).
    #[test]
    fn unreadable_ranges_and_head_get_the_whole_file() {
        for range in ["items=0-3", "bytes=3-1", "bytes=abc"] {
            let a = answer(Ask {
                range: Some(range.as_bytes()),
                ..get()
            });
            assert_eq!(a.status, StatusCode::OK, "{range}");
        }
        let a = answer(Ask {
            method: b"HEAD",
            range: Some(b"bytes=0-3"),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
    }

    // §13.1.5: a Range with an If-Range that no longer holds gets the
    // whole (new) file.
    #[test]
    fn if_range_that_does_not_hold_gets_the_whole_file() {
        let file = Fixture::new();
        let tag = file.etag();
        let a = file.answer(Ask {
            range: Some(b"bytes=0-3"),
            if_range: Some(b"\"stale\""),
            ..get()
        });
        assert_eq!(a.status, StatusCode::OK);
        let a = file.answer(Ask {
            range: Some(b"bytes=0-3"),
            if_range: Some(tag.as_bytes()),
            ..get()
        });
        assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    }

    // §12.5.3: q=0 refuses a coding; `*` stands for codings not named.
    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        let ok = |value: &str, coding| acceptable(Some(value.as_bytes()), coding);
        assert!(ok("gzip, deflate, br, zstd", Coding::Brotli));
        assert!(ok("gzip, deflate, br, zstd", Coding::Gzip));
        assert!(!ok("gzip", Coding::Brotli));
        assert!(!ok("br;q=0, gzip", Coding::Brotli));
        assert!(!ok("br;q=0.0", Coding::Brotli));
        assert!(ok("br;q=0.5", Coding::Brotli));
        assert!(ok("*", Coding::Brotli));
        assert!(!ok("*, br;q=0", Coding::Brotli));
        assert!(ok("x-gzip", Coding::Gzip));
        assert!(!acceptable(None, Coding::Gzip));
    }
}
