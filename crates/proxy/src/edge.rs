//! What the edge does beside proxying: sending plain HTTP to HTTPS,
//! telling browsers to stay there, and answering ACME's HTTP-01 checks.

use std::sync::Arc;

use http::HeaderValue;

/// The edge's settings.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// Plain HTTP requests get a 308 to https on this port.
    pub redirect_to: Option<u16>,
    /// Strict-Transport-Security for answers over HTTPS.
    pub hsts: Option<HeaderValue>,
    /// The ACME challenges published now.
    pub challenges: Arc<crate::tls::Challenges>,
}

impl Edge {
    /// The edge `[proxy]` and `[tls]` ask for.
    pub fn new(proxy: &crate::config::ProxyConfig, tls: &crate::config::TlsConfig) -> Edge {
        let https_port = proxy.https_addrs().first().map(|a| a.port());
        Edge {
            redirect_to: https_port.filter(|_| tls.redirect_http),
            hsts: (tls.hsts.as_ref())
                .and_then(|h| HeaderValue::from_str(h.get_ref()).ok())
                .filter(|_| https_port.is_some()),
            challenges: Arc::default(),
        }
    }
}

/// Where a plain HTTP request goes on HTTPS: the same host (its port
/// replaced by `port`, left out for 443) and target. None without a host
/// (HTTP/1.0), and for ACME's http-01 challenges, which stay on HTTP.
pub(crate) fn https_location(host: Option<&[u8]>, target: &[u8], port: u16) -> Option<Vec<u8>> {
    let host = host?;
    if target.starts_with(b"/.well-known/acme-challenge/") || !target.starts_with(b"/") {
        return None;
    }
    // `[::1]:8080` keeps its brackets; `example.com:80` loses its port.
    let name = match host.iter().rposition(|&b| b == b':') {
        Some(colon) if !host[colon..].contains(&b']') => &host[..colon],
        _ => host,
    };
    let mut location = b"https://".to_vec();
    location.extend_from_slice(name);
    if port != 443 {
        location.push(b':');
        location.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
    }
    location.extend_from_slice(target);
    Some(location)
}

#[cfg(test)]
mod tests {
    use super::https_location;

    /// Host is replaced (kept out for 443), IPv6 keeps its brackets; no
    /// host, or an ACME challenge, stays on HTTP.
    #[test]
    fn https_location_keeps_host_and_target() {
        let at = |host: &[u8], target: &[u8], port| {
            https_location(Some(host), target, port).map(|l| String::from_utf8(l).unwrap())
        };
        assert_eq!(
            at(b"a.test:80", b"/x?y=1", 443).as_deref(),
            Some("https://a.test/x?y=1")
        );
        assert_eq!(
            at(b"a.test", b"/", 8443).as_deref(),
            Some("https://a.test:8443/")
        );
        assert_eq!(
            at(b"[::1]:80", b"/", 443).as_deref(),
            Some("https://[::1]/")
        );
        assert_eq!(at(b"[::1]", b"/", 443).as_deref(), Some("https://[::1]/"));
        assert_eq!(at(b"a.test", b"/.well-known/acme-challenge/t", 443), None);
        assert_eq!(https_location(None, b"/", 443), None);
    }
}
