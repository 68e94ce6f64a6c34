//! HTTPS at the edge: rustls (ring), TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, session resumption (tickets and a session cache), and the
//! certificate chosen by the client's SNI among the configured pairs.
//!
//! A name no certificate covers gets the first pair, as nginx answers with
//! its default server's certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Resumable sessions kept per listener process (nginx's
/// `ssl_session_cache shared:SSL:1m` holds about 4,000).
const SESSION_CACHE: usize = 4096;

/// Why the certificates cannot be used; the one in use (if any) keeps
/// serving.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM of the kind expected.
    #[error("{}: {why}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The key does not belong to the certificate.
    #[error("{} and {}: the key does not match the certificate", cert.display(), key.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One certificate chain with its key.
#[derive(Debug)]
struct Pair {
    certified: Arc<CertifiedKey>,
}

impl Pair {
    /// Reads a PEM chain and a PEM key, and checks that they belong together.
    fn load(cert: &Path, key: &Path) -> Result<Pair, TlsError> {
        let file_err = |path: &Path, why: String| TlsError::File {
            path: path.to_path_buf(),
            why,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err(cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(cert, "no PEM certificate in it".into()));
        }
        let private =
            PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
        warn_if_readable_by_others(key);
        let provider = rustls::crypto::ring::default_provider();
        let signing = provider
            .key_provider
            .load_private_key(private)
            .map_err(|e| file_err(key, e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        if certified.keys_match().is_err() {
            return Err(TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        webpki::EndEntityCert::try_from(certified.end_entity_cert()?)
            .map_err(|e| file_err(cert, format!("not a usable certificate: {e}")))?;
        Ok(Pair {
            certified: Arc::new(certified),
        })
    }

    /// Whether its certificate is valid for `name` (its SANs, wildcards
    /// included).
    fn serves(&self, name: &ServerName<'_>) -> bool {
        let Ok(der) = self.certified.end_entity_cert() else {
            return false;
        };
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

/// A key anyone may read is a key anyone on the machine may serve with.
fn warn_if_readable_by_others(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "{}: the private key is readable by other users (mode {:o}); chmod 600 it",
                key.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
}

/// Chooses the certificate by SNI.
#[derive(Debug)]
struct BySni {
    pairs: Vec<Pair>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        let chosen = wanted
            .and_then(|name| self.pairs.iter().find(|p| p.serves(&name)))
            .or_else(|| self.pairs.first())?;
        Some(chosen.certified.clone())
    }
}

/// The TLS side of the HTTPS listeners, from `(cert, key)` file pairs.
///
/// # Errors
/// [`TlsError`] naming the file that cannot be used.
pub fn server_config(pairs: &[(PathBuf, PathBuf)]) -> Result<Arc<ServerConfig>, TlsError> {
    let pairs = pairs
        .iter()
        .map(|(cert, key)| Pair::load(cert, key))
        .collect::<Result<Vec<_>, _>>()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { pairs }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(config))
}
