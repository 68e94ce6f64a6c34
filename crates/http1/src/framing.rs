//! The one place that decides how an HTTP/1 message is framed and routed,
//! for every path a request takes: Baton's own HTTP/1.1 server, hyper's
//! (HTTP/1.1 and h2), and the answers of instances.
//!
//! Request smuggling lives in the gap between what two parsers think a
//! message is. Baton closes it on both sides: a message whose framing is
//! not unambiguous is refused, and the framing fields (Content-Length,
//! Transfer-Encoding) and Host of what Baton forwards are never the
//! client's or the instance's lines passed on, but written by Baton from
//! the decision made here. A Connection header can therefore never take
//! them away (it names only hop-by-hop fields, RFC 9110 §7.6.1).
//!
//! Where RFC 9112 lets a recipient choose, Baton does what nginx does, and
//! the comment says so.

use http::StatusCode;

use super::headers::{is_hop_by_hop, Fields};

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    /// Exactly this many bytes (Content-Length, possibly 0).
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// What the head of a request says, once found unambiguous.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestFacts<'a> {
    /// How its body is delimited.
    pub body: BodyFraming,
    /// The host the request is for: the absolute-form target's authority
    /// when it has one (RFC 9112 §3.2.2), else the Host field.
    pub host: Option<&'a [u8]>,
}

/// A request refused before it reaches an instance, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// The status the client gets; the connection closes after it.
    pub status: StatusCode,
    /// For the log.
    pub why: &'static str,
}

impl Rejection {
    /// Notes the refusal in the daemon's log, at debug level: a client's
    /// malformed request is the client's business.
    pub fn log(&self) {
        tracing::debug!(
            status = self.status.as_u16(),
            "refused a request: {}",
            self.why
        );
    }
}

fn bad(why: &'static str) -> Rejection {
    Rejection {
        status: StatusCode::BAD_REQUEST,
        why,
    }
}

/// The protocol a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0: Host optional, no transfer codings.
    Http10,
    /// HTTP/1.1.
    Http11,
    /// h2: framing is the stream's; Content-Length and Transfer-Encoding
    /// are not HTTP/1 framing there.
    Http2,
}

/// Checks a request head and decides its framing and host.
///
/// `authority` is the absolute-form target's authority, if the target was
/// one (or h2's `:authority`).
///
/// # Errors
/// A [`Rejection`] when the head is ambiguous or not allowed:
/// - Content-Length not 1*DIGIT, or given more than once (RFC 9112 §6.3
///   allows collapsing identical values; nginx refuses any duplicate, and
///   so does Baton): 400.
/// - Transfer-Encoding with HTTP/1.0, beside Content-Length, or twice: 400
///   (nginx; RFC 9112 §6.1 allows a server to refuse the pair). Any coding
///   but a lone `chunked`: 501 (nginx).
/// - HTTP/1.1 without Host, or Host twice: 400 (RFC 9112 §3.2). An
///   invalid host: 400.
/// - h2 with `:authority` and a different `host`: 400 (RFC 9113 §8.3.1
///   makes it malformed; nginx answers 400).
/// - CONNECT: 405 (nginx); Baton is no forward proxy.
pub fn check_request<'a>(
    protocol: Protocol,
    method: &[u8],
    authority: Option<&'a [u8]>,
    fields: &'a (impl Fields + ?Sized),
) -> Result<RequestFacts<'a>, Rejection> {
    if method == b"CONNECT" {
        return Err(Rejection {
            status: StatusCode::METHOD_NOT_ALLOWED,
            why: "CONNECT is not served",
        });
    }
    let mut length = None;
    let mut coding = None;
    let mut host = None;
    for (name, value) in fields.pairs() {
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(bad("more than one Content-Length"));
            }
            length = Some(parse_content_length(value).ok_or(bad("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if coding.is_some() {
                return Err(bad("more than one Transfer-Encoding"));
            }
            coding = Some(value);
        } else if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return Err(bad("more than one Host"));
            }
            host = Some(value);
        }
    }
    if let Some(h) = host {
        if !is_valid_host(h) {
            return Err(bad("invalid Host"));
        }
    }
    if let Some(a) = authority {
        if !is_valid_host(a) {
            return Err(bad("invalid authority in the target"));
        }
    }
    let host = match protocol {
        Protocol::Http2 => match (authority, host) {
            (Some(a), Some(h)) if a != h => return Err(bad(":authority and host differ")),
            (a, h) => a.or(h),
        },
        Protocol::Http11 if authority.is_none() && host.is_none() => {
            return Err(bad("HTTP/1.1 request without Host"))
        }
        Protocol::Http10 | Protocol::Http11 => authority.or(host),
    };
    let body = match (coding, length) {
        (Some(_), _) if protocol == Protocol::Http2 => {
            return Err(bad("Transfer-Encoding in h2"));
        }
        (None, None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
        (Some(_), _) if protocol == Protocol::Http10 => {
            return Err(bad("Transfer-Encoding in HTTP/1.0"))
        }
        (Some(_), Some(_)) => return Err(bad("both Transfer-Encoding and Content-Length")),
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => BodyFraming::Chunked,
        (Some(_), None) => {
            return Err(Rejection {
                status: StatusCode::NOT_IMPLEMENTED,
                why: "a transfer coding other than chunked",
            })
        }
    };
    Ok(RequestFacts { body, host })
}

/// Content-Length = 1*DIGIT (RFC 9110 §8.6), no sign, no spaces, no list;
/// `None` when it is anything else or does not fit in 64 bits.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Host = uri-host [ ":" port ] (RFC 9110 §7.2): the characters of a
/// reg-name, an IP literal in brackets, and a port. No userinfo, no path,
/// nothing a log or an app could split on. An empty Host is allowed (RFC
/// 9112 §3.2, a target with no authority).
pub fn is_valid_host(host: &[u8]) -> bool {
    // A dot first is refused as nginx refuses it (no name starts so).
    host.first() != Some(&b'.')
        && host.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'['
                        | b']'
                        | b'%'
                )
        })
}

/// Whether a request target is one the `http` crate's URI parser (hyper's)
/// takes, so that both servers forward the same targets: RFC 3986's
/// characters, without a fragment (a client never sends one, RFC 9112
/// §3.2). httparse alone lets `"`, `{`, `<` and the like through.
pub fn is_valid_target(target: &[u8]) -> bool {
    !target.contains(&b'#')
        && if target.starts_with(b"/") {
            http::uri::PathAndQuery::try_from(target).is_ok()
        } else {
            http::Uri::try_from(target).is_ok()
        }
}

/// The parts of an absolute-form target (RFC 9112 §3.2.2):
/// `http://authority/path?query`. `None` when the target is not one.
pub fn split_absolute(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains(&b'@') {
        return None;
    }
    Some((authority, path))
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a field called `name` may travel in a trailer section. RFC 9110
/// §6.5.1: no framing, routing, authentication, request modifier or
/// response control field, and nothing about the content's type or
/// coding; a hop-by-hop field is never forwarded anywhere. Trailers that
/// fail this are dropped, as hyper drops them.
pub fn is_forwardable_trailer(name: &[u8]) -> bool {
    const UNSAFE: [&[u8]; 24] = [
        b"content-length",
        b"host",
        b"authorization",
        b"cookie",
        b"set-cookie",
        b"www-authenticate",
        b"authentication-info",
        b"cache-control",
        b"expect",
        b"max-forwards",
        b"pragma",
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"age",
        b"expires",
        b"content-encoding",
        b"content-type",
        b"content-range",
        b"location",
        b"date",
    ];
    !is_hop_by_hop(name) && !UNSAFE.iter().any(|u| u.eq_ignore_ascii_case(name))
}

/// Longest chunk-size line, extensions included. hyper allows 16 KiB of
/// extensions in a whole message; no sender needs more than a few bytes.
const MAX_CHUNK_LINE: usize = 4096;

/// Why a chunk-size line is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid chunk size")]
pub struct BadChunk;

/// Parses a chunk-size line at the start of `buf` (RFC 9112 §7.1):
/// `1*HEXDIG [ BWS ";" chunk-ext ] CRLF`, the size in 64 bits.
/// `Ok(None)` while the line is incomplete; `Ok(Some((used, size)))`.
/// Extensions are skipped (no one defines any); whitespace after the size
/// is allowed, as hyper allows it; a line ended by a bare LF is not.
///
/// # Errors
/// [`BadChunk`] for anything else, and for a line past 4 KiB.
pub fn parse_chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, BadChunk> {
    let digits = buf.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return if buf.is_empty() {
            Ok(None)
        } else {
            Err(BadChunk)
        };
    }
    let significant = buf[..digits].iter().skip_while(|&&b| b == b'0').count();
    if significant > 16 {
        return Err(BadChunk);
    }
    let size = buf[..digits].iter().fold(0u64, |n, &b| {
        n << 4 | u64::from((b as char).to_digit(16).unwrap_or_default())
    });
    let mut at = digits;
    while at < buf.len() && matches!(buf[at], b' ' | b'\t') {
        at += 1;
    }
    if buf.get(at) == Some(&b';') {
        // An extension: visible characters, spaces and tabs, up to CRLF.
        while at < buf.len() && buf[at] != b'\r' {
            let b = buf[at];
            if !(b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80) {
                return Err(BadChunk);
            }
            at += 1;
        }
    }
    match (buf.get(at), buf.get(at + 1)) {
        _ if at > MAX_CHUNK_LINE => Err(BadChunk),
        (None, _) | (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(b'\n')) => Ok(Some((at + 2, size))),
        _ => Err(BadChunk),
    }
}

/// What the head of an instance's answer says about its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerFacts {
    /// How the body is delimited, when it is not `until_close`.
    pub body: BodyFraming,
    /// The Content-Length the instance gave, checked: it describes the body
    /// even when none follows (an answer to HEAD, a 304).
    pub length: Option<u64>,
    /// The body ends only when the instance closes (HTTP/1.1 §6.3 rule 7:
    /// no length and not chunked).
    pub until_close: bool,
    /// Transfer-Encoding came beside Content-Length: decoded by the coding
    /// (RFC 9112 §6.3), and the connection is not reused after it.
    pub suspicious: bool,
}

/// Why an instance's answer head cannot be forwarded (Baton answers 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// Content-Length not 1*DIGIT.
    #[error("invalid content-length")]
    InvalidLength,
    /// nginx refuses any repeated Content-Length from an upstream.
    #[error("more than one content-length")]
    RepeatedLength,
    /// A Transfer-Encoding that is not a list of codings (tokens with
    /// parameters, RFC 9110 §10.1.4).
    #[error("invalid transfer-encoding")]
    InvalidCoding,
    /// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has
    /// faulty framing.
    #[error("transfer-encoding in an HTTP/1.0 answer")]
    CodingInHttp10,
}

/// Decides an answer's framing from its status and fields (RFC 9112 §6.3).
///
/// # Errors
/// [`BadAnswer`] when the Content-Length is not one 1*DIGIT value, or an
/// HTTP/1.0 answer has a Transfer-Encoding.
pub fn check_answer(
    http10: bool,
    status: u16,
    request_was_head: bool,
    fields: &(impl Fields + ?Sized),
) -> Result<AnswerFacts, BadAnswer> {
    let mut length = None;
    let mut coding: Option<&[u8]> = None;
    for (name, value) in fields.pairs() {
        if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Err(BadAnswer::RepeatedLength);
            }
            length = Some(parse_content_length(value).ok_or(BadAnswer::InvalidLength)?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Several lines make one list (RFC 9110 §5.3); the last coding
            // is what counts.
            let list = value
                .iter()
                .all(|&b| is_tchar(b) || matches!(b, b',' | b' ' | b'\t' | b';' | b'=' | b'"'));
            if !list {
                return Err(BadAnswer::InvalidCoding);
            }
            coding = Some(value);
        }
    }
    if http10 && coding.is_some() {
        return Err(BadAnswer::CodingInHttp10);
    }
    let no_body = request_was_head || matches!(status, 100..=199 | 204 | 304);
    let suspicious = coding.is_some() && length.is_some();
    let (body, until_close) = if no_body {
        (BodyFraming::None, false)
    } else if let Some(codings) = coding {
        let last = codings.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            (BodyFraming::Chunked, false)
        } else {
            (BodyFraming::None, true)
        }
    } else {
        match length {
            Some(n) => (BodyFraming::Length(n), false),
            None => (BodyFraming::None, true),
        }
    };
    Ok(AnswerFacts {
        body,
        // A coding overrides the length, which then says nothing.
        length: if coding.is_some() { None } else { length },
        until_close,
        suspicious,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs = Vec<(&'static [u8], &'static [u8])>;

    struct List(Pairs);
    impl Fields for List {
        fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
            self.0.iter().map(|(n, v)| (*n, *v))
        }
    }

    fn check(protocol: Protocol, fields: Pairs) -> Result<BodyFraming, StatusCode> {
        let list = List(fields);
        check_request(protocol, b"POST", None, &list)
            .map(|f| f.body)
            .map_err(|r| r.status)
    }

    const H11: Protocol = Protocol::Http11;
    const HOST: (&[u8], &[u8]) = (b"Host", b"x");

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b"0"), Some(0));
        assert_eq!(parse_content_length(b"0035"), Some(35));
        assert_eq!(
            parse_content_length(b"18446744073709551615"),
            Some(u64::MAX)
        );
        for bad in [
            &b""[..],
            b"+35",
            b"-1",
            b"35 ",
            b" 35",
            b"3 5",
            b"35\xc2\xa0",
            b"0x23",
            b"35,35",
            b"18446744073709551616",
            b"1e3",
        ] {
            assert_eq!(parse_content_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn request_framing_follows_rfc_9112_and_nginx() {
        assert_eq!(check(H11, vec![HOST]), Ok(BodyFraming::None));
        assert_eq!(
            check(H11, vec![HOST, (b"content-length", b"5")]),
            Ok(BodyFraming::Length(5))
        );
        assert_eq!(
            check(H11, vec![HOST, (b"Transfer-Encoding", b"Chunked")]),
            Ok(BodyFraming::Chunked)
        );
        let refused = [
            (
                vec![
                    HOST,
                    (&b"content-length"[..], &b"5"[..]),
                    (b"content-length", b"5"),
                ],
                400,
            ),
            (
                vec![HOST, (b"content-length", b"5"), (b"content-length", b"6")],
                400,
            ),
            (vec![HOST, (b"content-length", b"+5")], 400),
            (
                vec![
                    HOST,
                    (b"transfer-encoding", b"chunked"),
                    (b"content-length", b"5"),
                ],
                400,
            ),
            (
                vec![
                    HOST,
                    (b"transfer-encoding", b"chunked"),
                    (b"transfer-encoding", b"chunked"),
                ],
                400,
            ),
            (vec![HOST, (b"transfer-encoding", b"gzip, chunked")], 501),
            (vec![HOST, (b"transfer-encoding", b"chunked, chunked")], 501),
            (vec![HOST, (b"transfer-encoding", b"xchunked")], 501),
            (vec![HOST, (b"transfer-encoding", b"identity")], 501),
            (vec![(b"content-length", b"5")], 400),
            (vec![HOST, HOST], 400),
            (vec![(b"host", b"a@b")], 400),
            (vec![(b"host", b"a/b")], 400),
            (vec![(b"host", b"a b")], 400),
        ];
        for (fields, status) in refused {
            let shown = format!("{fields:?}");
            assert_eq!(
                check(H11, fields),
                Err(StatusCode::from_u16(status).unwrap()),
                "{shown}"
            );
        }
        assert_eq!(
            check(Protocol::Http10, vec![(b"transfer-encoding", b"chunked")]),
            Err(StatusCode::BAD_REQUEST),
            "no transfer codings in HTTP/1.0"
        );
        assert_eq!(
            check(Protocol::Http10, vec![]),
            Ok(BodyFraming::None),
            "HTTP/1.0 may omit Host"
        );
    }

    #[test]
    fn the_target_authority_wins_and_h2_authorities_must_agree() {
        let list = List(vec![HOST]);
        let facts = check_request(H11, b"GET", Some(b"other.example"), &list).unwrap();
        assert_eq!(facts.host, Some(&b"other.example"[..]));
        let none = List(vec![]);
        let facts = check_request(H11, b"GET", Some(b"a"), &none).unwrap();
        assert_eq!(
            facts.host,
            Some(&b"a"[..]),
            "an absolute target needs no Host"
        );
        assert!(check_request(
            Protocol::Http2,
            b"GET",
            Some(b"a"),
            &List(vec![(b"host", b"b")])
        )
        .is_err());
        assert!(check_request(
            Protocol::Http2,
            b"GET",
            Some(b"a"),
            &List(vec![(b"host", b"a")])
        )
        .is_ok());
        let connect = check_request(H11, b"CONNECT", None, &list).unwrap_err();
        assert_eq!(connect.status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn absolute_targets_split() {
        assert_eq!(
            split_absolute(b"http://other.example/p?q"),
            Some((&b"other.example"[..], &b"/p?q"[..]))
        );
        assert_eq!(
            split_absolute(b"HTTPS://a:8443"),
            Some((&b"a:8443"[..], &b""[..]))
        );
        assert_eq!(split_absolute(b"http://u@a/"), None, "no userinfo");
        assert_eq!(split_absolute(b"/p"), None);
        assert_eq!(split_absolute(b"ftp://a/"), None);
        assert_eq!(split_absolute(b"http:///p"), None);
    }

    #[test]
    fn answer_framing() {
        let facts = |status, head, fields| check_answer(false, status, head, &List(fields));
        assert_eq!(
            facts(200, false, vec![(b"content-length", b"5")])
                .unwrap()
                .body,
            BodyFraming::Length(5)
        );
        let head = facts(200, true, vec![(b"content-length", b"5")]).unwrap();
        assert_eq!((head.body, head.length), (BodyFraming::None, Some(5)));
        assert!(facts(200, false, vec![]).unwrap().until_close);
        let both = facts(
            200,
            false,
            vec![
                (b"content-length", b"5"),
                (b"transfer-encoding", b"chunked"),
            ],
        )
        .unwrap();
        assert_eq!(
            (both.body, both.length, both.suspicious),
            (BodyFraming::Chunked, None, true)
        );
        assert_eq!(
            facts(
                200,
                false,
                vec![(b"content-length", b"5"), (b"content-length", b"5")]
            ),
            Err(BadAnswer::RepeatedLength)
        );
        assert_eq!(
            facts(200, false, vec![(b"content-length", b"+5")]),
            Err(BadAnswer::InvalidLength)
        );
        assert!(
            facts(200, false, vec![(b"transfer-encoding", b"gzip")])
                .unwrap()
                .until_close
        );
    }

    #[test]
    fn chunk_sizes_follow_rfc_9112() {
        assert_eq!(parse_chunk_size(b"5\r\n"), Ok(Some((3, 5))));
        assert_eq!(
            parse_chunk_size(b"00Ff;a=1;b=\"x y\"\r\nrest"),
            Ok(Some((18, 255)))
        );
        assert_eq!(parse_chunk_size(b"5 ;a\r\n"), Ok(Some((6, 5))));
        assert_eq!(
            parse_chunk_size(b"0000000000000000000ffffffffffffffff\r\n"),
            Ok(Some((37, u64::MAX)))
        );
        assert_eq!(parse_chunk_size(b"5"), Ok(None));
        assert_eq!(parse_chunk_size(b"5;ext"), Ok(None));
        assert_eq!(parse_chunk_size(b"5\r"), Ok(None));
        for bad in [
            &b"\r\n"[..],
            b"0x5\r\n",
            b"-5\r\n",
            b"+5\r\n",
            b" 5\r\n",
            b"5\n",
            b"5\rX",
            b"5;a\nb\r\n",
            b"5;a\0\r\n",
            b"5 x\r\n",
            b"1ffffffffffffffff\r\n",
        ] {
            assert_eq!(parse_chunk_size(bad), Err(BadChunk), "{bad:?}");
        }
        let long = [b"5;".as_slice(), &[b'a'; MAX_CHUNK_LINE], b"\r\n"].concat();
        assert_eq!(parse_chunk_size(&long), Err(BadChunk));
    }

    #[test]
    fn trailers_never_carry_framing_routing_or_auth() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "host",
            "authorization",
            "set-cookie",
            "connection",
            "trailer",
        ] {
            assert!(!is_forwardable_trailer(name.as_bytes()), "{name}");
        }
        for name in ["x-checksum", "server-timing", "grpc-status"] {
            assert!(is_forwardable_trailer(name.as_bytes()), "{name}");
        }
    }
}
