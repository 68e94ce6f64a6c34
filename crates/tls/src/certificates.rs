//! The certificates HTTPS serves, chosen by the client's SNI: pairs from
//! files (`[tls] cert`/`key`, `[tls] certificates`) and pairs issued by ACME.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;

/// One certificate chain with its key, and what its leaf says.
#[derive(Debug, Clone)]
pub struct Pair {
    pub(super) certified: Arc<CertifiedKey>,
    /// The DNS names it is valid for (SANs, or the CN of a certificate
    /// without any), in lower case; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// Its validity.
    pub not_before: SystemTime,
    /// Its expiry.
    pub not_after: SystemTime,
}

impl Pair {
    /// A pair from a PEM chain and a PEM key that belong together; the
    /// error says what is wrong, for the caller to say where.
    pub(crate) fn from_pem(chain: &[u8], key: &[u8]) -> Result<Pair, PemError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| PemError::Cert(e.to_string()))?;
        if chain.is_empty() {
            return Err(PemError::Cert("no PEM certificate in it".into()));
        }
        let private =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| PemError::Key(e.to_string()))?;
        let signing = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(private)
            .map_err(|e| PemError::Key(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing);
        if certified.keys_match().is_err() {
            return Err(PemError::Mismatch);
        }
        let (names, not_before, not_after) = leaf_facts(&certified.cert[0])
            .map_err(|e| PemError::Cert(format!("not a usable certificate: {e}")))?;
        Ok(Pair {
            certified: Arc::new(certified),
            names,
            not_before,
            not_after,
        })
    }

    /// Reads a PEM chain and a PEM key, and checks that they belong
    /// together and that the certificate has not expired.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Pair, TlsError> {
        let file_err = |path: &Path, why: String| TlsError::File {
            path: path.to_path_buf(),
            why,
        };
        let chain = std::fs::read(cert).map_err(|e| file_err(cert, e.to_string()))?;
        let private = std::fs::read(key).map_err(|e| file_err(key, e.to_string()))?;
        warn_if_readable_by_others(key);
        let pair = Pair::from_pem(&chain, &private).map_err(|e| match e {
            PemError::Cert(why) => file_err(cert, why),
            PemError::Key(why) => file_err(key, why),
            PemError::Mismatch => TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            },
        })?;
        if pair.not_after <= SystemTime::now() {
            return Err(file_err(
                cert,
                format!(
                    "the certificate expired on {}",
                    httpdate::fmt_http_date(pair.not_after)
                ),
            ));
        }
        Ok(pair)
    }

    /// Whether it is valid for `name`: an exact name, or a wildcard
    /// standing for exactly one label (RFC 6125 §6.4.3).
    pub(crate) fn serves(&self, name: &str) -> bool {
        self.names.iter().any(|n| name_matches(n, name))
    }

    /// When two thirds of its lifetime are over: when ACME renews it, as
    /// certbot and Caddy do (30 days before a 90-day certificate ends).
    pub(crate) fn renew_at(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life * 2 / 3
    }
}

/// What is wrong with a PEM chain and key.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PemError {
    /// The chain.
    #[error("{0}")]
    Cert(String),
    /// The key.
    #[error("{0}")]
    Key(String),
    /// The key is not the certificate's.
    #[error("the key does not match the certificate")]
    Mismatch,
}

/// Whether certificate name `pattern` covers host `name`.
pub(crate) fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(parent)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

/// The leaf's DNS names and validity.
fn leaf_facts(der: &[u8]) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    if names.is_empty() {
        names = cert
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .map(str::to_ascii_lowercase)
            .collect();
    }
    let at = |t: &x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        match u64::try_from(secs) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH,
        }
    };
    let validity = cert.validity();
    Ok((names, at(&validity.not_before), at(&validity.not_after)))
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

/// The certificates in use, chosen by SNI: the files' first, then ACME's.
#[derive(Debug)]
pub struct Certificates {
    /// `(cert, key)` files, in the order configured.
    files: Vec<(PathBuf, PathBuf)>,
    from_files: ArcSwap<Vec<Pair>>,
    issued: ArcSwap<Vec<Pair>>,
    /// Names ACME issues for and no pair covers yet: a handshake for one
    /// waits (bounded) for its first certificate.
    awaited: ArcSwap<Vec<String>>,
    /// Moves on every change, for those waiting.
    changed: watch::Sender<u64>,
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
    /// The pairs of `files`, each of which must load.
    ///
    /// # Errors
    /// [`TlsError`] naming the first file that cannot be used.
    pub fn load(files: &[(PathBuf, PathBuf)]) -> Result<Certificates, TlsError> {
        Ok(Certificates {
            from_files: ArcSwap::from_pointee(load_all(files)?),
            files: files.to_vec(),
            issued: ArcSwap::from_pointee(Vec::new()),
            awaited: ArcSwap::from_pointee(Vec::new()),
            changed: watch::Sender::new(0),
        })
    }

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
            match self.reload_files() {
                Ok(()) => tracing::info!(
                    "certificates reloaded: the changed files are served from now on"
                ),
                Err(e) => tracing::error!("{e}; the certificates in use go on serving"),
            }
        }
    }

    /// Reads the files again; on an error the pairs in use stay.
    ///
    /// # Errors
    /// [`TlsError`] naming the first file that cannot be used.
    pub fn reload_files(&self) -> Result<(), TlsError> {
        self.from_files.store(Arc::new(load_all(&self.files)?));
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Serves `pair` (issued by ACME) in place of any issued pair for the
    /// same first name.
    pub(crate) fn install(&self, pair: Pair) {
        let mut issued: Vec<Pair> = (self.issued.load().iter())
            .filter(|old| old.names.first() != pair.names.first())
            .cloned()
            .collect();
        issued.push(pair);
        self.issued.store(Arc::new(issued));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Names that ACME is to issue for: handshakes for the ones no pair
    /// covers wait for them.
    pub(crate) fn expect(&self, names: &[String]) {
        // Added to those already awaited: one ACME task per app calls this.
        let mut awaited: Vec<String> = self.awaited.load().to_vec();
        for name in names {
            if !self.covers(name) && !awaited.contains(name) {
                awaited.push(name.clone());
            }
        }
        self.awaited.store(Arc::new(awaited));
        self.changed.send_modify(|n| *n += 1);
    }

    /// Whether some pair is valid for `name`.
    pub(crate) fn covers(&self, name: &str) -> bool {
        self.from_files.load().iter().any(|p| p.serves(name))
            || self.issued.load().iter().any(|p| p.serves(name))
    }

    /// Waits, for up to `bound`, until a pair covers `name` if it is a name
    /// whose first certificate ACME is issuing; at once otherwise.
    pub(crate) async fn wait_for(&self, name: &str, bound: Duration) {
        let waits = || {
            self.awaited
                .load()
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
                && !self.covers(name)
        };
        if self.awaited.load().is_empty() || !waits() {
            return;
        }
        let mut changes = self.changed.subscribe();
        let _ = tokio::time::timeout(bound, async {
            while waits() {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Every pair served, with where it came from.
    pub fn served(&self) -> Vec<Served> {
        let files = self.from_files.load();
        let issued = self.issued.load();
        let from_files = files.iter().zip(&self.files).map(|(p, (cert, _))| Served {
            source: Source::File(cert.clone()),
            names: p.names.clone(),
            not_after: p.not_after,
        });
        let from_acme = issued.iter().map(|p| Served {
            source: Source::Acme,
            names: p.names.clone(),
            not_after: p.not_after,
        });
        from_files.chain(from_acme).collect()
    }
}

/// A pair served, as status and metrics show it.
#[derive(Debug, Clone)]
pub struct Served {
    /// Where it comes from.
    pub source: Source,
    /// The names it is valid for.
    pub names: Vec<String>,
    /// Its expiry.
    pub not_after: SystemTime,
}

/// Where a served certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A configured file.
    File(PathBuf),
    /// Issued by ACME.
    Acme,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let files = self.from_files.load();
        let issued = self.issued.load();
        let chosen = hello
            .server_name()
            .and_then(|name| files.iter().chain(issued.iter()).find(|p| p.serves(name)))
            .or_else(|| files.first())
            .or_else(|| issued.first())?;
        Some(chosen.certified.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::{name_matches, Pair};
    use crate::TlsError;

    /// A pair for `names` valid from `from` to `to` (years), in `dir`.
    fn pair_files(
        dir: &std::path::Path,
        names: &[&str],
        from: i32,
        to: i32,
    ) -> (std::path::PathBuf, std::path::PathBuf) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from, 1, 1);
        params.not_after = rcgen::date_time_ymd(to, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{from}.pem")),
            dir.join(format!("{from}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    /// A pair is read once: its names and validity, and an expired or
    /// mismatched one is refused with its file named.
    #[test]
    fn pairs_are_read_once_and_refused_when_expired_or_mismatched() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair_files(dir.path(), &["Shop.test", "*.shop.test"], 2024, 2124);
        let pair = Pair::load(&cert, &key).expect("a valid pair");
        assert_eq!(pair.names, ["shop.test", "*.shop.test"]);
        assert!(pair.serves("www.shop.test") && pair.serves("shop.test"));
        assert!(!pair.serves("blog.test"));
        let life = pair.not_after.duration_since(pair.not_before).unwrap();
        assert_eq!(pair.renew_at(), pair.not_before + life * 2 / 3);

        let (old, old_key) = pair_files(dir.path(), &["shop.test"], 2020, 2021);
        match Pair::load(&old, &old_key) {
            Err(TlsError::File { path, why }) => {
                assert_eq!(path, old);
                assert!(why.contains("expired on"), "{why}");
            }
            other => panic!("an expired pair: {other:?}"),
        }
        match Pair::load(&cert, &old_key) {
            Err(TlsError::Mismatch { cert: c, key: k }) => assert_eq!((c, k), (cert, old_key)),
            other => panic!("a key of another certificate: {other:?}"),
        }
    }

    #[test]
    fn a_wildcard_stands_for_one_label() {
        assert!(name_matches("shop.test", "SHOP.test"));
        assert!(name_matches("*.shop.test", "www.shop.test"));
        assert!(!name_matches("*.shop.test", "shop.test"));
        assert!(!name_matches("*.shop.test", "a.b.shop.test"));
        assert!(!name_matches("*.shop.test", ".shop.test"));
        assert!(!name_matches("shop.test", "www.shop.test"));
    }
}
