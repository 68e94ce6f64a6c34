//! Header rewriting between client and instance: hop-by-hop stripping and
//! the X-Forwarded-* family.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether `name` describes one connection and is never forwarded (RFC 9110
/// §7.6.1): Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade
/// (kept only on an upgrade) and `proxy-*`.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
    ) || name.starts_with("proxy-")
}

/// Whether the request asks to switch protocols (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// How a request's headers change on the way to an instance: hop-by-hop
/// headers and those the Connection header names are dropped, and
/// X-Forwarded-For (appended), -Proto and -Host are set. Incoming
/// X-Forwarded-* values are kept and extended only when trusted.
pub struct Rewrite<'a> {
    /// The client's address.
    pub client: &'a HeaderValue,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Whether the client's X-Forwarded-* headers are believed.
    pub trust: bool,
}

impl Rewrite<'_> {
    /// Calls `emit` with each header the instance gets. The request head
    /// is written straight from this, without building a second map.
    pub fn for_each(&self, headers: &HeaderMap, mut emit: impl FnMut(&HeaderName, &HeaderValue)) {
        let connection = headers.get(header::CONNECTION);
        let mut prior_for: Option<String> = None;
        let (mut has_proto, mut has_host) = (false, false);
        for (name, value) in headers {
            if is_dropped(name, connection) {
                continue;
            }
            if name.as_str().starts_with("x-forwarded-") {
                if *name == X_FORWARDED_FOR {
                    if self.trust {
                        let prior = prior_for.get_or_insert_with(String::new);
                        if !prior.is_empty() {
                            prior.push_str(", ");
                        }
                        prior.push_str(value.to_str().unwrap_or_default());
                    }
                    continue;
                }
                if *name == X_FORWARDED_PROTO || *name == X_FORWARDED_HOST {
                    if !self.trust {
                        continue;
                    }
                    has_proto |= *name == X_FORWARDED_PROTO;
                    has_host |= *name == X_FORWARDED_HOST;
                }
            }
            emit(name, value);
        }
        match prior_for.filter(|p| !p.is_empty()) {
            None => emit(&X_FORWARDED_FOR, self.client),
            Some(prior) => {
                let ip = self.client.to_str().unwrap_or_default();
                let joined = HeaderValue::from_str(&format!("{prior}, {ip}"))
                    .unwrap_or_else(|_| self.client.clone());
                emit(&X_FORWARDED_FOR, &joined);
            }
        }
        if !has_proto {
            emit(&X_FORWARDED_PROTO, &HeaderValue::from_static(self.proto));
        }
        if !has_host {
            if let Some(host) = headers.get(header::HOST) {
                emit(&X_FORWARDED_HOST, host);
            }
        }
    }

    /// The same rewrite on a header map, for requests that go through
    /// hyper's client (upgrades). With `upgrade`, `Connection: upgrade` and
    /// Upgrade are kept.
    pub fn apply(&self, headers: &mut HeaderMap, upgrade: bool) {
        let mut out = HeaderMap::with_capacity(headers.len() + 3);
        self.for_each(headers, |name, value| {
            out.append(name.clone(), value.clone());
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

/// Removes hop-by-hop headers and those the Connection header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let connection = headers.get(header::CONNECTION).cloned();
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_dropped(name, connection.as_ref()))
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

/// Whether `name` stops at this hop: hop-by-hop, or listed in the message's
/// Connection header.
fn is_dropped(name: &HeaderName, connection: Option<&HeaderValue>) -> bool {
    is_hop_by_hop(name) || connection.is_some_and(|c| names(c, name))
}

/// Whether the Connection header value `connection` lists `name`.
fn names(connection: &HeaderValue, name: &HeaderName) -> bool {
    connection.as_bytes().split(|&b| b == b',').any(|token| {
        token
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_str().as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(h: &mut HeaderMap, trust: bool, upgrade: bool) {
        let client = client_ip("10.1.2.3:5555".parse().unwrap());
        let rewrite = Rewrite {
            client: &client,
            proto: "http",
            trust,
        };
        rewrite.apply(h, upgrade);
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
