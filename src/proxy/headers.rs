//! Header rewriting between client and instance: hop-by-hop stripping and
//! the X-Forwarded-* family.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// Whether `name` is stripped: one of [`HOP_BY_HOP`], Upgrade, or `proxy-*`.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    name == "upgrade" || name.starts_with("proxy-") || HOP_BY_HOP.iter().any(|h| h.as_str() == name)
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

/// Removes hop-by-hop headers, and those named by Connection. With
/// `upgrade`, `Connection: upgrade` and `Upgrade` are kept.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none of these: one pass over the names says so,
    // cheaper than a removal per name.
    if !headers.keys().any(|k| is_hop_by_hop(k.as_str())) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let upgrade_value = headers.get(header::UPGRADE).cloned();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    for name in headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect::<Vec<_>>()
    {
        headers.remove(name);
    }
    if upgrade {
        if let Some(v) = upgrade_value {
            headers.insert(header::UPGRADE, v);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
}

/// The client's address as an X-Forwarded-For entry; made once per
/// connection, not per request.
pub fn client_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .expect("an IP address is a valid header value")
}

/// Sets X-Forwarded-For (appended), -Proto and -Host. Untrusted incoming
/// values are replaced rather than extended.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &str,
    host: Option<&HeaderValue>,
    trust: bool,
) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let prior: Vec<&str> = if trust {
        headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let value = if prior.is_empty() {
        client.clone()
    } else {
        let ip = client.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {ip}", prior.join(", ")))
            .unwrap_or_else(|_| client.clone())
    };
    headers.insert(xff, value);
    if !(trust && headers.contains_key(&xfp)) {
        headers.insert(
            xfp,
            HeaderValue::from_str(proto).unwrap_or(HeaderValue::from_static("http")),
        );
    }
    if !(trust && headers.contains_key(&xfh)) {
        match host {
            Some(h) => {
                headers.insert(xfh, h.clone());
            }
            None => {
                headers.remove(xfh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hop-by-hop headers, and the ones Connection names, are removed.
    #[test]
    fn strips_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("proxy-authorization", "x".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    /// On an upgrade, Upgrade and `Connection: upgrade` survive.
    #[test]
    fn keeps_upgrade_on_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    /// X-Forwarded-For is appended only when trusted.
    #[test]
    fn forwarded_for_trust() {
        let client = client_ip("10.1.2.3:5555".parse().unwrap());
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        set_forwarded(
            &mut h,
            &client,
            "http",
            Some(&"example.com".parse().unwrap()),
            true,
        );
        assert_eq!(h.get("x-forwarded-for").unwrap(), "1.1.1.1, 10.1.2.3");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "example.com");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1".parse().unwrap());
        set_forwarded(&mut h, &client, "http", None, false);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
    }
}
