//! Automatic certificates (ACME, RFC 8555) for `[app] hosts`, with
//! instant-acme: one certificate for all the names, issued at start when
//! none is stored, renewed two thirds into its lifetime, retried with a
//! growing pause after a failure while the certificate in use goes on
//! serving.
//!
//! One task ([`Acme::run`]) owns the certificate's life. The ACME server's
//! checks are answered by the listeners from [`Challenges`]: HTTP-01 by the
//! plain one, TLS-ALPN-01 by the TLS one. The account and the certificate
//! are kept under `<state_dir>/acme`, mode 0600.

pub(crate) mod challenges;
mod store;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, HttpClient, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use self::challenges::{alpn_certificate, Challenges};
use super::certificates::{Certificates, Pair};
use crate::config::{AcmeChallenge, Setup};
use crate::protocol::{CertificateReport, CertificateState};

/// One issuance, from the new order to the certificate, at most this long
/// (a hung ACME server must not hang renewals forever).
const ISSUE_TIMEOUT: Duration = Duration::from_secs(300);

/// How long the order may take to become ready, and the certificate to
/// be signed once asked for.
const POLL_FOR: Duration = Duration::from_secs(90);

/// The pauses after the first, second, … failure in a row; the last one
/// repeats. They keep a failing name under Let's Encrypt's limit of 5
/// failed validations an hour.
const BACKOFF: [Duration; 6] = [
    Duration::from_secs(10),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(60 * 60),
];

/// What `[tls]` and `[app] hosts` ask of ACME.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The account's contact.
    pub email: String,
    /// The directory URL.
    pub directory: String,
    /// Extra trust roots for the ACME server's own HTTPS.
    pub ca: Option<PathBuf>,
    /// The names on the certificate.
    pub hosts: Vec<String>,
    /// Only this challenge, or TLS-ALPN-01 and HTTP-01 in turn.
    pub challenge: Option<AcmeChallenge>,
    /// `<state_dir>/acme`.
    pub dir: PathBuf,
}

impl Settings {
    /// The certificate for `hosts` (an app's), when the server's `[tls]`
    /// has an `acme_email`. Wildcards are left out: they need DNS-01.
    pub fn new(setup: &Setup, hosts: Vec<String>) -> Option<Settings> {
        let tls = &setup.tls;
        let email = tls.acme_email.as_ref()?.get_ref().clone();
        let hosts: Vec<String> = hosts.into_iter().filter(|h| !h.starts_with("*.")).collect();
        if hosts.is_empty() {
            return None;
        }
        Some(Settings {
            email,
            directory: (tls.acme_directory.as_ref())
                .map(|d| d.get_ref().clone())
                .unwrap_or_else(|| crate::config::LETS_ENCRYPT.to_owned()),
            ca: tls.acme_ca.as_ref().map(|ca| setup.base_dir.join(ca)),
            hosts,
            challenge: tls.acme_challenge,
            dir: setup.state_dir().join("acme"),
        })
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.hosts[0]))
    }

    fn key_file(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.hosts[0]))
    }

    fn account_file(&self) -> PathBuf {
        self.dir.join("account.json")
    }
}

/// Why an issuance failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {why}")]
pub(crate) struct AcmeError {
    /// What was being done.
    step: &'static str,
    /// What went wrong.
    why: String,
}

fn failed<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> AcmeError {
    move |e| AcmeError {
        step,
        why: e.to_string(),
    }
}

/// What the task shows of itself.
#[derive(Debug, Clone)]
struct Shown {
    state: CertificateState,
    not_after: Option<SystemTime>,
    renew_at: Option<SystemTime>,
    error: Option<String>,
    next_try: Option<SystemTime>,
}

/// The ACME side of one certificate.
#[derive(Debug)]
pub struct Acme {
    settings: Settings,
    certificates: Arc<Certificates>,
    challenges: Arc<Challenges>,
    shown: Mutex<Shown>,
}

/// The account as stored: the directory it belongs to, and its key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

impl Acme {
    /// The issuer for `settings`, installing into `certificates` and
    /// publishing its challenges in `challenges`.
    pub fn new(
        settings: Settings,
        certificates: Arc<Certificates>,
        challenges: Arc<Challenges>,
    ) -> Arc<Acme> {
        // From now on, before the task runs: a handshake that comes first
        // waits for the certificate instead of getting none.
        certificates.expect(&settings.hosts);
        Arc::new(Acme {
            settings,
            certificates,
            challenges,
            shown: Mutex::new(Shown {
                state: CertificateState::Issuing,
                not_after: None,
                renew_at: None,
                error: None,
                next_try: None,
            }),
        })
    }

    /// How the certificate stands, for `baton status` and `/metrics`.
    pub fn report(&self) -> CertificateReport {
        let shown = self.shown.lock().unwrap_or_else(|p| p.into_inner()).clone();
        CertificateReport {
            names: self.settings.hosts.clone(),
            source: "acme".into(),
            state: shown.state,
            not_after: shown.not_after.map(unix_seconds),
            renew_at: shown.renew_at.map(unix_seconds),
            error: shown.error,
            next_try: shown.next_try.map(unix_seconds),
        }
    }

    fn show(&self, change: impl FnOnce(&mut Shown)) {
        change(&mut self.shown.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Keeps the certificate valid until `stop`: serves the stored one, and
    /// issues a new one when there is none, when it does not cover every
    /// host, and two thirds into its lifetime.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let hosts = &self.settings.hosts;
        let mut current = self.stored();
        if let Some(pair) = &current {
            self.certificates.install(pair.clone());
            self.show(|s| serving(s, pair));
        }
        let mut account = None;
        let mut failures = 0usize;
        loop {
            let due = match &current {
                Some(pair) if hosts.iter().all(|h| pair.serves(h)) => pair.renew_at(),
                _ => SystemTime::now(),
            };
            let wait = match failures {
                0 => due.duration_since(SystemTime::now()).unwrap_or_default(),
                n => BACKOFF[(n - 1).min(BACKOFF.len() - 1)],
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let challenge = self.challenge_for(failures);
            let issued = tokio::time::timeout(ISSUE_TIMEOUT, self.issue(&mut account, challenge));
            let issued = match issued.await {
                Ok(result) => result,
                Err(_) => Err(AcmeError {
                    step: "issuing",
                    why: format!("no certificate after {}s", ISSUE_TIMEOUT.as_secs()),
                }),
            };
            match issued {
                Ok(pair) => {
                    failures = 0;
                    tracing::info!(
                        "ACME: certificate for {} issued, valid until {}; renewal at {}",
                        hosts.join(", "),
                        httpdate::fmt_http_date(pair.not_after),
                        httpdate::fmt_http_date(pair.renew_at()),
                    );
                    self.certificates.install(pair.clone());
                    self.show(|s| serving(s, &pair));
                    current = Some(pair);
                }
                Err(e) => {
                    failures += 1;
                    let pause = BACKOFF[(failures - 1).min(BACKOFF.len() - 1)];
                    let keeps = match &current {
                        Some(pair) => format!(
                            "the certificate in use (valid until {}) goes on serving",
                            httpdate::fmt_http_date(pair.not_after)
                        ),
                        None => "no certificate is served for these names yet".into(),
                    };
                    tracing::error!(
                        "ACME: certificate for {} ({} challenge) failed: {e}; {keeps}; next try in {}s",
                        hosts.join(", "),
                        challenge_name(challenge),
                        pause.as_secs()
                    );
                    self.show(|s| {
                        s.state = CertificateState::Failing;
                        s.error = Some(e.to_string());
                        s.next_try = Some(SystemTime::now() + pause);
                    });
                }
            }
        }
    }

    /// The challenge to answer after `failures` failures in a row: the one
    /// configured, or TLS-ALPN-01 and HTTP-01 in turn (a firewall that
    /// lets one port through and not the other does not stop issuance).
    fn challenge_for(&self, failures: usize) -> AcmeChallenge {
        match self.settings.challenge {
            Some(only) => only,
            None if failures.is_multiple_of(2) => AcmeChallenge::TlsAlpn01,
            None => AcmeChallenge::Http01,
        }
    }

    /// The certificate stored by an earlier run, if it can still serve.
    fn stored(&self) -> Option<Pair> {
        let (cert, key) = (self.settings.cert_file(), self.settings.key_file());
        if !cert.exists() {
            return None;
        }
        match Pair::load(&cert, &key) {
            Ok(pair) => Some(pair),
            Err(e) => {
                tracing::warn!(
                    "ACME: the stored certificate cannot serve ({e}); issuing a new one"
                );
                None
            }
        }
    }

    /// The account: the stored one when it belongs to the directory, else
    /// a new one (stored).
    async fn account(&self) -> Result<Account, AcmeError> {
        let settings = &self.settings;
        let stored: Option<StoredAccount> = std::fs::read(settings.account_file())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let http = http_client(settings.ca.as_deref())?;
        if let Some(stored) = stored.filter(|s| s.directory == settings.directory) {
            return Account::builder_with_http(http)
                .from_credentials(stored.credentials)
                .await
                .map_err(failed("loading the ACME account"));
        }
        let contact = format!("mailto:{}", settings.email);
        let (account, credentials) = Account::builder_with_http(http)
            .create(
                &NewAccount {
                    contact: &[&contact],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                settings.directory.clone(),
                None,
            )
            .await
            .map_err(failed("creating the ACME account"))?;
        let stored = StoredAccount {
            directory: settings.directory.clone(),
            credentials,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(failed("storing the account"))?;
        store::write_private(&settings.account_file(), &json)
            .map_err(failed("storing the account"))?;
        tracing::info!(
            "ACME: account created at {} for {}",
            settings.directory,
            settings.email
        );
        Ok(account)
    }

    /// One order, from start to certificate (stored, and returned).
    async fn issue(
        &self,
        account: &mut Option<Account>,
        challenge: AcmeChallenge,
    ) -> Result<Pair, AcmeError> {
        let account = match account {
            Some(account) => account,
            None => account.insert(self.account().await?),
        };
        let identifiers: Vec<Identifier> = (self.settings.hosts.iter())
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(failed("creating the order"))?;
        let mut published = Published {
            challenges: &self.challenges,
            http: Vec::new(),
            alpn: Vec::new(),
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(failed("reading an authorization"))?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError {
                        step: "reading an authorization",
                        why: format!("it is {other:?}"),
                    })
                }
            }
            let kind = match challenge {
                AcmeChallenge::Http01 => ChallengeType::Http01,
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut handle = authorization.challenge(kind).ok_or(AcmeError {
                step: "choosing a challenge",
                why: format!("the server does not offer {}", challenge_name(challenge)),
            })?;
            let name = handle.identifier().to_string();
            let key_authorization = handle.key_authorization();
            match challenge {
                AcmeChallenge::Http01 => {
                    published.publish_http(&handle.token, key_authorization.as_str());
                }
                AcmeChallenge::TlsAlpn01 => {
                    let certificate = alpn_certificate(&name, key_authorization.digest().as_ref())
                        .map_err(failed("making the TLS-ALPN-01 certificate"))?;
                    published.publish_alpn(&name, certificate);
                }
            }
            handle
                .set_ready()
                .await
                .map_err(failed("answering the challenge"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(POLL_FOR))
            .await
            .map_err(failed("waiting for validation"))?;
        if status != OrderStatus::Ready {
            return Err(AcmeError {
                step: "validation",
                why: why_invalid(&mut order).await,
            });
        }
        let key = order.finalize().await.map_err(failed("finalizing"))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(POLL_FOR))
            .await
            .map_err(failed("downloading the certificate"))?;
        drop(published);
        let pair = Pair::from_pem(chain.as_bytes(), key.as_bytes())
            .map_err(failed("reading the issued certificate"))?;
        store::write_private(&self.settings.key_file(), key.as_bytes())
            .map_err(failed("storing the key"))?;
        store::write_private(&self.settings.cert_file(), chain.as_bytes())
            .map_err(failed("storing the certificate"))?;
        Ok(pair)
    }
}

/// What the ACME server said about the challenges of an order that
/// turned invalid (connection refused, wrong answer, …).
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        if let Ok(state) = authorization.refresh().await {
            let name = state.identifier().to_string();
            for challenge in &state.challenges {
                if let Some(error) = &challenge.error {
                    reasons.push(format!("{name}: {error}"));
                }
            }
        }
    }
    if reasons.is_empty() {
        "the order became invalid".into()
    } else {
        reasons.join("; ")
    }
}

/// The challenges an order published; withdrawn when it ends, however it
/// ends.
struct Published<'a> {
    challenges: &'a Challenges,
    http: Vec<String>,
    alpn: Vec<String>,
}

impl Published<'_> {
    fn publish_http(&mut self, token: &str, key_authorization: &str) {
        self.challenges.publish_http(token, key_authorization);
        self.http.push(token.to_owned());
    }

    fn publish_alpn(&mut self, name: &str, certificate: Arc<rustls::sign::CertifiedKey>) {
        self.challenges.publish_alpn(name, certificate);
        self.alpn.push(name.to_owned());
    }
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for token in &self.http {
            self.challenges.withdraw_http(token);
        }
        for name in &self.alpn {
            self.challenges.withdraw_alpn(name);
        }
    }
}

fn serving(shown: &mut Shown, pair: &Pair) {
    *shown = Shown {
        state: CertificateState::Serving,
        not_after: Some(pair.not_after),
        renew_at: Some(pair.renew_at()),
        error: None,
        next_try: None,
    };
}

fn challenge_name(challenge: AcmeChallenge) -> &'static str {
    match challenge {
        AcmeChallenge::Http01 => "http-01",
        AcmeChallenge::TlsAlpn01 => "tls-alpn-01",
    }
}

/// Seconds since the epoch.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The HTTPS client that talks to the ACME server: the system's trust
/// roots, and `ca`'s for a private ACME server.
fn http_client(ca: Option<&Path>) -> Result<Box<dyn HttpClient>, AcmeError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        let step = "reading acme_ca";
        let certs = CertificateDer::pem_file_iter(ca).map_err(|e| AcmeError {
            step,
            why: format!("{}: {e}", ca.display()),
        })?;
        for cert in certs {
            let cert = cert.map_err(|e| AcmeError {
                step,
                why: format!("{}: {e}", ca.display()),
            })?;
            roots.add(cert).map_err(failed(step))?;
        }
    }
    if roots.is_empty() {
        return Err(AcmeError {
            step: "trusting the ACME server",
            why: "no trust roots: install ca-certificates, or set [tls] acme_ca".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(failed("configuring TLS"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, instant_acme::BodyWrapper<bytes::Bytes>>(connector);
    Ok(Box::new(client))
}
