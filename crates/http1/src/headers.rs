//! Header rewriting between client and instance: hop-by-hop stripping and
//! the X-Forwarded-* family.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Whether a header called `name` (in any case) describes one connection
/// and is never forwarded (RFC 9110 §7.6.1): Connection, Keep-Alive, TE,
/// Trailer, Transfer-Encoding, Upgrade (kept only on an upgrade) and
/// `proxy-*`.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 6] = [
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
}

/// Whether the request asks to switch protocols (WebSocket).
pub fn is_upgrade(fields: &(impl Fields + ?Sized)) -> bool {
    find(fields, b"upgrade").is_some()
        && fields.pairs().any(|(name, value)| {
            name.eq_ignore_ascii_case(b"connection") && lists(value, b"upgrade")
        })
}

/// How a request's headers change on the way to an instance: hop-by-hop
/// headers and those the Connection header names are dropped, and
/// X-Forwarded-For (appended), -Proto and -Host are set. Incoming
/// X-Forwarded-* values are kept and extended only when trusted.
///
/// Host and the framing fields (Content-Length, Transfer-Encoding) never
/// pass through here: the request's writer sets them from what
/// `framing::check_request` decided, so that no Connection header can
/// take them away.
///
/// It reads and writes `(name, value)` byte pairs, so that it serves both
/// a header map (requests that come through hyper) and the raw fields of a
/// head Baton parsed itself; names may be in any case.
pub struct Rewrite<'a> {
    /// The client's address.
    pub client: &'a HeaderValue,
    /// The client connection's scheme.
    pub proto: crate::Proto,
    /// Whether the client's X-Forwarded-* headers are believed.
    pub trust: bool,
}

impl Rewrite<'_> {
    /// Calls `emit` with each header the instance gets. The request head
    /// is written straight from this, without building a second map.
    /// `host` is the request's host, as `framing::check_request` found it.
    pub fn for_each(
        &self,
        fields: &(impl Fields + ?Sized),
        host: Option<&[u8]>,
        mut emit: impl FnMut(&[u8], &[u8]),
    ) {
        let names_fields = connection_options(fields, true).names_fields;
        let mut prior_for: Option<Vec<u8>> = None;
        let (mut has_proto, mut has_host) = (false, false);
        for (name, value) in fields.pairs() {
            if is_dropped(name, fields, names_fields) || is_written_by_baton(name) {
                continue;
            }
            if name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-") {
                let suffix = &name[12..];
                if suffix.eq_ignore_ascii_case(b"for") {
                    if self.trust {
                        let prior = prior_for.get_or_insert_with(Vec::new);
                        if !prior.is_empty() {
                            prior.extend_from_slice(b", ");
                        }
                        prior.extend_from_slice(value);
                    }
                    continue;
                }
                let proto = suffix.eq_ignore_ascii_case(b"proto");
                let host = suffix.eq_ignore_ascii_case(b"host");
                if proto || host {
                    if !self.trust {
                        continue;
                    }
                    has_proto |= proto;
                    has_host |= host;
                }
            }
            emit(name, value);
        }
        match prior_for.filter(|p| !p.is_empty()) {
            None => emit(b"x-forwarded-for", self.client.as_bytes()),
            Some(mut prior) => {
                prior.extend_from_slice(b", ");
                prior.extend_from_slice(self.client.as_bytes());
                emit(b"x-forwarded-for", &prior);
            }
        }
        if !has_proto {
            emit(b"x-forwarded-proto", self.proto.as_str().as_bytes());
        }
        if !has_host {
            if let Some(host) = host {
                emit(b"x-forwarded-host", host);
            }
        }
    }

    /// The same rewrite on a header map, for requests that go through
    /// hyper's client (upgrades). With `upgrade`, `Connection: upgrade` and
    /// Upgrade are kept.
    pub fn apply(&self, headers: &mut HeaderMap, upgrade: bool) {
        let mut out = HeaderMap::with_capacity(headers.len() + 3);
        let host = headers.get(header::HOST);
        if let Some(host) = host {
            out.insert(header::HOST, host.clone());
        }
        self.for_each(headers, host.map(HeaderValue::as_bytes), |name, value| {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                out.append(name, value);
            }
        });
        if upgrade {
            if let Some(v) = headers.get(header::UPGRADE) {
                out.insert(header::UPGRADE, v.clone());
                out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            }
        }
        *headers = out;
    }
}

/// A message's header fields as `(name, value)` byte pairs, names in any
/// case: a header map, or the raw fields of a head Baton parsed itself.
pub trait Fields {
    /// Every field, in order.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])>;
}

impl Fields for HeaderMap {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes()))
    }
}

impl Fields for [httparse::Header<'_>] {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().map(|h| (h.name.as_bytes(), h.value))
    }
}

/// Removes hop-by-hop headers and those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let names_fields = connection_options(&*headers, true).names_fields;
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_dropped(name.as_str().as_bytes(), &*headers, names_fields))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// The client's address as an X-Forwarded-For entry; made once per
/// connection, not per request.
pub fn client_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// Whether a header called `name` stops at this hop: hop-by-hop, or listed
/// in the message's Connection header. Framing fields and Host are never
/// dropped for being listed (RFC 9110 §7.6.1 lets Connection name only
/// hop-by-hop fields): their writer decides them (see `framing`).
///
/// `names_fields` says whether a Connection line names any field at all
/// ([`ConnectionOptions::names_fields`]), so that the common message,
/// whose Connection says only keep-alive or close, is not searched once
/// per field.
pub fn is_dropped(name: &[u8], fields: &(impl Fields + ?Sized), names_fields: bool) -> bool {
    is_hop_by_hop(name)
        || (names_fields && !is_written_by_baton(name) && connection_lists(fields, name))
}

/// What a message's Connection lines say about its connection, read in
/// one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `close` is listed: it wins over a `keep-alive` anywhere.
    pub close: bool,
    /// `keep-alive` is listed (what keeps an HTTP/1.0 connection).
    pub keep_alive: bool,
    /// Some other name is listed: a field that stops at this hop.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// Whether the connection stays open after this message, for the
    /// HTTP/1.x minor `version` it came in.
    pub fn persists(self, http10: bool) -> bool {
        !self.close && (!http10 || self.keep_alive)
    }
}

/// Reads every Connection line of `fields` (see [`ConnectionOptions`]).
/// With `text_only`, a line with bytes outside visible ASCII lists nothing,
/// as hyper's server reads a client's (see [`connection_lists`]); without
/// it, an instance's `close` is honoured however the line is written.
pub fn connection_options(fields: &(impl Fields + ?Sized), text_only: bool) -> ConnectionOptions {
    let mut options = ConnectionOptions::default();
    for (_, value) in fields
        .pairs()
        .filter(|(n, v)| n.eq_ignore_ascii_case(b"connection") && (!text_only || is_visible(v)))
    {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                options.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                options.keep_alive = true;
            } else if !token.is_empty() {
                options.names_fields = true;
            }
        }
    }
    options
}

/// Visible ASCII and tabs: a value hyper reads as text (`to_str`).
fn is_visible(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Whether any Connection line lists `token`: several lines make one list
/// (RFC 9110 §5.3), as hyper reads them. A line with bytes outside visible
/// ASCII lists nothing, as hyper reads it (found by fuzzing: an HTTP/1.0
/// keep-alive behind such a byte kept the connection in Baton's server
/// and closed it in hyper's).
pub fn connection_lists(fields: &(impl Fields + ?Sized), token: &[u8]) -> bool {
    fields
        .pairs()
        .any(|(n, v)| n.eq_ignore_ascii_case(b"connection") && is_visible(v) && lists(v, token))
}

/// Host and Content-Length: Baton writes them itself on what it forwards
/// (Transfer-Encoding is hop-by-hop).
pub fn is_written_by_baton(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"host") || name.eq_ignore_ascii_case(b"content-length")
}

/// Whether the comma-separated `value` has `token` (in any case).
pub fn lists(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The first value of the header called `name` (in any case).
pub fn find<'h>(fields: &'h (impl Fields + ?Sized), name: &[u8]) -> Option<&'h [u8]> {
    fields
        .pairs()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(h: &mut HeaderMap, trust: bool, upgrade: bool) {
        let client = client_ip("10.1.2.3:5555".parse().unwrap());
        let rewrite = Rewrite {
            client: &client,
            proto: crate::Proto::Http,
            trust,
        };
        rewrite.apply(h, upgrade);
    }

    #[test]
    fn hop_by_hop_names_in_any_case() {
        for name in [
            "connection",
            "Keep-Alive",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "UPGRADE",
            "proxy-authorization",
            "Proxy-A",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "host",
            "tk",
            "trailers",
            "upgraded",
            "content-length",
            "proxy",
            "x-upgrade",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    /// Hop-by-hop headers, and the ones Connection names, are removed.
    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("proxy-authorization", "x".parse().unwrap());
        h.insert("proxy-connection", "x".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::TRAILER, "x-sum".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        rewritten(&mut h, false, false);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["x-forwarded-for", "x-forwarded-proto", "x-kept"]);
    }

    /// A map stripped in place loses the same headers.
    #[test]
    fn strip_in_place() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    /// On an upgrade, Upgrade and `Connection: upgrade` survive.
    #[test]
    fn keeps_upgrade_on_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        rewritten(&mut h, false, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    /// X-Forwarded-* from the client are kept and extended only when
    /// trusted; other X-Forwarded-* names pass either way.
    #[test]
    fn forwarded_trust() {
        let incoming = || {
            let mut h = HeaderMap::new();
            h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
            h.append("x-forwarded-for", "2.2.2.2".parse().unwrap());
            h.insert("x-forwarded-proto", "https".parse().unwrap());
            h.insert("x-forwarded-port", "443".parse().unwrap());
            h.insert(header::HOST, "example.com".parse().unwrap());
            h
        };
        let mut h = incoming();
        rewritten(&mut h, true, false);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["x-forwarded-port"], "443");
        let mut h = incoming();
        rewritten(&mut h, false, false);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert_eq!(h["host"], "example.com", "Host is preserved");
    }
}
