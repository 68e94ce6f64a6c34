//! Where the probe connects, and how: the URL's host and port (or the
//! address `--resolve` gives for them, as curl's), and TLS for `https://`
//! and `wss://`, trusting the system's roots or `--cacert`'s.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A connection the probe speaks HTTP or WebSocket over.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where to connect, and with what TLS.
#[derive(Clone)]
pub(crate) struct Target {
    /// `host:port` as the URL names it.
    pub authority: String,
    /// The address dialled: `--resolve`'s for this host and port, or the
    /// host and port themselves.
    dial: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// The target of `url` (`http`, `https`, `ws` or `wss`), offering
    /// `alpn` over TLS.
    ///
    /// # Errors
    /// A URL, `--resolve` entry or CA file that cannot be used.
    pub(crate) fn new(
        url: &http::Uri,
        resolve: &[String],
        cacert: Option<&Path>,
        alpn: &[&[u8]],
    ) -> Result<Target, String> {
        let secure = match url.scheme_str() {
            Some("http" | "ws") => false,
            Some("https" | "wss") => true,
            _ => {
                return Err(format!(
                    "{url}: only http, https, ws and wss URLs are probed"
                ))
            }
        };
        let host = url.host().ok_or_else(|| format!("{url}: no host"))?;
        let port = url.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let authority = match url.port_u16() {
            Some(_) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut dial = format!("{host}:{port}");
        for entry in resolve {
            let (name, rest) = entry
                .split_once(':')
                .ok_or_else(|| format!("--resolve {entry:?}: expected HOST:PORT:ADDRESS"))?;
            let (entry_port, addr) = rest
                .split_once(':')
                .ok_or_else(|| format!("--resolve {entry:?}: expected HOST:PORT:ADDRESS"))?;
            if name.eq_ignore_ascii_case(bare) && entry_port.parse() == Ok(port) {
                let addr = addr.trim_start_matches('[').trim_end_matches(']');
                let ip: std::net::IpAddr = addr
                    .parse()
                    .map_err(|e| format!("--resolve {entry:?}: {addr}: {e}"))?;
                dial = SocketAddr::new(ip, port).to_string();
            }
        }
        let tls = match secure {
            false => None,
            true => {
                let name = ServerName::try_from(bare.to_string())
                    .map_err(|e| format!("{url}: {bare}: {e}"))?;
                Some((connector(cacert, alpn)?, name))
            }
        };
        Ok(Target {
            authority,
            dial,
            tls,
        })
    }

    /// A new connection, through the TLS handshake when the URL is secure.
    ///
    /// # Errors
    /// How it failed, in the probe's words: refused, reset, connect, tls.
    pub(crate) async fn connect(&self) -> Result<Box<dyn Io>, &'static str> {
        let stream = TcpStream::connect(self.dial.as_str())
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused",
                std::io::ErrorKind::ConnectionReset => "reset",
                _ => "connect",
            })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(stream)),
            Some((connector, name)) => {
                let tls =
                    connector
                        .connect(name.clone(), stream)
                        .await
                        .map_err(|e| match e.kind() {
                            std::io::ErrorKind::ConnectionReset => "reset",
                            _ => "tls",
                        })?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// A TLS client trusting `cacert`'s certificates, or the system's roots.
fn connector(cacert: Option<&Path>, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match cacert {
        Some(file) => {
            let certs = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("--cacert {}: {e}", file.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--cacert {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--cacert {}: {e}", file.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--cacert {}: no PEM certificate in it",
                    file.display()
                ));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
