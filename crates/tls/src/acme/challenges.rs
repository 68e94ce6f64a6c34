//! The answers to an ACME server's checks while an order is open: HTTP-01
//! key authorizations, served by the plain listener under
//! `/.well-known/acme-challenge/`, and TLS-ALPN-01 certificates, served to
//! handshakes that ask for ALPN `acme-tls/1`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The path HTTP-01 checks ask for, before the token.
pub(crate) const HTTP_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// The challenges published now.
#[derive(Debug, Default)]
pub struct Challenges {
    /// HTTP-01: token → key authorization.
    http: RwLock<HashMap<String, String>>,
    /// TLS-ALPN-01: name → challenge certificate.
    alpn: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// The body that answers `GET /.well-known/acme-challenge/<token>`,
    /// when an order of Baton's published that token.
    pub fn http_answer(&self, target: &[u8]) -> Option<String> {
        let token = target.strip_prefix(HTTP_CHALLENGE_PATH.as_bytes())?;
        let token = std::str::from_utf8(token).ok()?;
        let http = self.http.read().unwrap_or_else(|p| p.into_inner());
        http.get(token).cloned()
    }

    pub(super) fn publish_http(&self, token: &str, key_authorization: &str) {
        let mut http = self.http.write().unwrap_or_else(|p| p.into_inner());
        http.insert(token.to_owned(), key_authorization.to_owned());
    }

    pub(super) fn withdraw_http(&self, token: &str) {
        let mut http = self.http.write().unwrap_or_else(|p| p.into_inner());
        http.remove(token);
    }

    pub(super) fn publish_alpn(&self, name: &str, certificate: Arc<CertifiedKey>) {
        let mut alpn = self.alpn.write().unwrap_or_else(|p| p.into_inner());
        alpn.insert(name.to_ascii_lowercase(), certificate);
    }

    pub(super) fn withdraw_alpn(&self, name: &str) {
        let mut alpn = self.alpn.write().unwrap_or_else(|p| p.into_inner());
        alpn.remove(&name.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for Challenges {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        let alpn = self.alpn.read().unwrap_or_else(|p| p.into_inner());
        alpn.get(&name).cloned()
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed, with
/// `name` as its one SAN and the SHA-256 of the key authorization in the
/// critical acmeIdentifier extension.
pub(crate) fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}
