//! HTTPS at the edge: rustls (ring), TLS 1.2 and 1.3 only, ALPN `h2` and
//! `http/1.1`, session resumption (tickets and a session cache), the
//! certificate chosen by SNI ([`certificates`]), and certificates issued
//! and renewed by ACME ([`acme`]).
//!
//! A connection's handshake starts by reading the ClientHello alone
//! ([`Tls::accept`]): an ACME server's TLS-ALPN-01 check is answered with
//! its challenge certificate, and a client asking for a name whose first
//! certificate is being issued waits for it (bounded) instead of getting
//! the wrong one.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_protocol as protocol;

pub mod acme;
pub mod certificates;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{Acceptor, ServerSessionMemoryCache};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

pub use self::acme::challenges::Challenges;
pub use self::certificates::{Certificates, Pair};

/// Resumable sessions kept per listener process (nginx's
/// `ssl_session_cache shared:SSL:1m` holds about 4,000).
const SESSION_CACHE: usize = 4096;

/// How long a handshake for a name waits for its first ACME certificate.
/// Let's Encrypt issues in seconds; past this the client gets the default
/// certificate (and most likely a name mismatch) rather than a hang.
const FIRST_CERTIFICATE_WAIT: Duration = Duration::from_secs(30);

/// The ALPN protocol of a TLS-ALPN-01 validation (RFC 8737 §6.2).
const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

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

/// The TLS side of the HTTPS listeners.
#[derive(Debug)]
pub struct Tls {
    config: Arc<ServerConfig>,
    /// For TLS-ALPN-01 validations only: the challenge certificates.
    challenge_config: Arc<ServerConfig>,
    /// What is served, by SNI.
    pub certificates: Arc<Certificates>,
}

fn builder(
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth())
}

impl Tls {
    /// Serves `certificates`, and `challenges` to ACME's TLS-ALPN-01 checks.
    ///
    /// # Errors
    /// When rustls refuses the configuration.
    pub fn new(
        certificates: Arc<Certificates>,
        challenges: Arc<Challenges>,
    ) -> Result<Tls, TlsError> {
        let mut config = builder()?.with_cert_resolver(certificates.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        let mut challenge_config = builder()?.with_cert_resolver(challenges);
        challenge_config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            challenge_config: Arc::new(challenge_config),
            certificates,
        })
    }

    /// The server side of a handshake, each step within `limit`; None when
    /// it failed, timed out, or was an ACME validation (answered, and
    /// done with).
    pub async fn accept(&self, stream: TcpStream, limit: Duration) -> Option<TlsStream<TcpStream>> {
        let hello = LazyConfigAcceptor::new(Acceptor::default(), stream);
        let start = match tokio::time::timeout(limit, hello).await {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                tracing::debug!("TLS: no usable ClientHello: {e}");
                return None;
            }
            Err(_) => return None,
        };
        let hello = start.client_hello();
        let validation = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let name = hello.server_name().map(str::to_owned);
        let config = if validation {
            self.challenge_config.clone()
        } else {
            if let Some(name) = name {
                self.certificates
                    .wait_for(&name, FIRST_CERTIFICATE_WAIT)
                    .await;
            }
            self.config.clone()
        };
        // The rest of the handshake (key exchange, signature) is the
        // costly part: requests already waiting go first.
        tokio::task::yield_now().await;
        match tokio::time::timeout(limit, start.into_stream(config)).await {
            Ok(Ok(stream)) if !validation => Some(stream),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => None,
        }
    }
}
