//! `[tls]`: certificate files, ACME, the redirect to HTTPS and HSTS.

use super::*;

/// `[tls]`: the certificates HTTPS serves, chosen by SNI.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM chain (relative paths start at baton.toml's folder).
    #[serde(default)]
    pub cert: Option<Spanned<PathBuf>>,
    /// Its PEM private key.
    #[serde(default)]
    pub key: Option<Spanned<PathBuf>>,
    /// More pairs; each client gets the one whose names cover its SNI.
    #[serde(default)]
    pub certificates: Vec<CertPair>,
    /// Plain HTTP requests get a 308 to https (when `https_listen` is set).
    #[serde(default = "yes")]
    pub redirect_http: bool,
    /// Strict-Transport-Security for answers over HTTPS, such as
    /// `"max-age=31536000"` (an instance's own is kept).
    #[serde(default)]
    pub hsts: Option<Spanned<String>>,
    /// The ACME account's contact: certificates for `[app] hosts` are
    /// issued automatically (Let's Encrypt by default).
    #[serde(default)]
    pub acme_email: Option<Spanned<String>>,
    /// The ACME directory URL: a staging or private CA in place of
    /// Let's Encrypt's.
    #[serde(default)]
    pub acme_directory: Option<Spanned<String>>,
    /// Extra trust roots (PEM) for a private ACME server's own HTTPS.
    #[serde(default)]
    pub acme_ca: Option<PathBuf>,
    /// Only this challenge: `"http-01"` (answered on `listen`) or
    /// `"tls-alpn-01"` (on `https_listen`). Default: TLS-ALPN-01, then
    /// HTTP-01 after a failure, and so on in turn.
    #[serde(default)]
    pub acme_challenge: Option<AcmeChallenge>,
}

/// The ACME default: Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// How an ACME server checks that Baton serves a name (RFC 8555 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AcmeChallenge {
    /// A file under `/.well-known/acme-challenge/` over plain HTTP.
    #[serde(rename = "http-01")]
    Http01,
    /// A handshake with ALPN `acme-tls/1` (RFC 8737).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            certificates: Vec::new(),
            redirect_http: true,
            hsts: None,
            acme_email: None,
            acme_directory: None,
            acme_ca: None,
            acme_challenge: None,
        }
    }
}

/// One certificate chain and its key.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}
