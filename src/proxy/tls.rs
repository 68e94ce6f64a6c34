//! HTTPS at the edge: rustls (ring), TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, session resumption (tickets and a session cache), and the
//! certificate chosen by the client's SNI among the configured pairs.
//!
//! A name no certificate covers gets the first pair, as nginx answers with
//! its default server's certificate.
//!
//! Certificate files are watched: a renewed pair (certbot, a deploy script)
//! is served from the next handshake on, without a restart and without
//! closing a connection; a pair that cannot be used is logged, naming the
//! file, and the pairs in use go on serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

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

/// How often the certificate files are looked at.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The certificates in use, chosen by SNI, and the files they come from.
#[derive(Debug)]
pub struct Certificates {
    pairs: ArcSwap<Vec<Pair>>,
    files: Vec<(PathBuf, PathBuf)>,
}

/// What a file looked like: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(files: &[(PathBuf, PathBuf)]) -> Vec<Stamp> {
    let stamp = |p: &PathBuf| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    files
        .iter()
        .flat_map(|(c, k)| [stamp(c), stamp(k)])
        .collect()
}

fn load_all(files: &[(PathBuf, PathBuf)]) -> Result<Vec<Pair>, TlsError> {
    files
        .iter()
        .map(|(cert, key)| Pair::load(cert, key))
        .collect()
}

impl Certificates {
    /// Looks at the files every second, for as long as `stop` allows, and
    /// serves changed pairs once all of them load.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = stamps(&self.files);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = stamps(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match load_all(&self.files) {
                Ok(pairs) => {
                    self.pairs.store(Arc::new(pairs));
                    tracing::info!(
                        "certificates reloaded: the changed files are served from now on"
                    );
                }
                Err(e) => tracing::error!("{e}; the certificates in use go on serving"),
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let pairs = self.pairs.load();
        let wanted = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok());
        let chosen = wanted
            .and_then(|name| pairs.iter().find(|p| p.serves(&name)))
            .or_else(|| pairs.first())?;
        Some(chosen.certified.clone())
    }
}

/// The TLS side of the HTTPS listeners, from `(cert, key)` file pairs, and
/// the certificates it serves (to watch).
///
/// # Errors
/// [`TlsError`] naming the file that cannot be used.
pub fn server_config(
    files: &[(PathBuf, PathBuf)],
) -> Result<(Arc<ServerConfig>, Arc<Certificates>), TlsError> {
    let certificates = Arc::new(Certificates {
        pairs: ArcSwap::from_pointee(load_all(files)?),
        files: files.to_vec(),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok((Arc::new(config), certificates))
}
