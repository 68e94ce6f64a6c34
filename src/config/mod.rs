//! `baton.toml`: the schema, its defaults, and validation whose errors name
//! the file, the line and the field.
//!
//! A minimal file is three lines:
//!
//! ```toml
//! [app]
//! name = "hello"
//! [web]
//! command = "node server.js"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

mod canary;
mod fields;
mod server;
mod statics;

pub use self::server::{is_server_file_at as is_server_file, ServerFile, Setup};

pub use self::canary::{CanaryConfig, Percent, P99_SLACK};
pub use self::statics::{StaticConfig, HASHED_NAME};

pub use self::fields::{parse_cron, Address, CronPattern, DrainNotice, SignalName};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[app]`: what the app is called.
    pub app: AppConfig,
    /// `[proxy]`: the public side.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// `[web]`: the HTTP process group that the proxy routes to.
    pub web: WebConfig,
    /// `[daemon]`: where Baton keeps its state.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[releases]`: release folders, build hook, retention, inbox.
    #[serde(default)]
    pub releases: ReleasesConfig,
    /// `[tcp.<name>]`: raw TCP services (L4 mode).
    #[serde(default)]
    pub tcp: BTreeMap<String, TcpService>,
    /// `[process.<name>]`: singletons (schedulers, queue consumers) that
    /// get no traffic; on a deploy the old one stops before the new starts.
    #[serde(default)]
    pub process: BTreeMap<String, ProcessConfig>,
    /// `[cron.<name>]`: commands Baton runs on a schedule, once per tick.
    #[serde(default)]
    pub cron: BTreeMap<String, CronJob>,
    /// `[tls]`: certificates for `[proxy] https_listen`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// `[static]`: files Baton serves itself, from the serving release
    /// and from those that served lately.
    #[serde(default, rename = "static")]
    pub statics: Option<StaticConfig>,
    /// `[canary]`: the defaults of `baton deploy --canary`.
    #[serde(default)]
    pub canary: CanaryConfig,
}

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

/// `[cron.<name>]`: a command run by Baton itself on a cron schedule, in the
/// current release, never overlapping itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    /// Cron pattern, 5 fields or 6 with seconds first: "0 4 * * *".
    pub schedule: CronPattern,
    /// Shell command.
    pub command: Spanned<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A run taking longer is killed.
    #[serde(default = "default_cron_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_cron_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// `[process.<name>]`: one singleton process per release.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Shell command.
    pub command: Spanned<String>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the release folder.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Readiness check, as `[web.readiness]`; none by default: a singleton
    /// takes no traffic, and counts as up once started.
    #[serde(default = "no_readiness")]
    pub readiness: Readiness,
    /// Not ready within this (with a readiness check) means failed.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Signal that asks it to stop.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: SignalName,
    /// Who gets `stop_signal`: the main process or the whole group.
    #[serde(default)]
    pub stop_to: StopTo,
    /// SIGKILL follows `stop_signal` after this.
    #[serde(default = "default_kill_timeout", with = "humantime_serde")]
    pub kill_timeout: Duration,
    /// Exits sooner than this after start are unstable.
    #[serde(default = "default_min_uptime", with = "humantime_serde")]
    pub min_uptime: Duration,
    /// Unstable restarts in a row before failed.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Restart it when it exits (pm2's `autorestart`).
    #[serde(default = "yes")]
    pub autorestart: bool,
    /// Restarted (stopped, then started: two never run at once) when its
    /// process group holds more memory than this (pm2's
    /// `max_memory_restart`).
    #[serde(default)]
    pub max_memory: Option<Spanned<Size>>,
    /// A cron pattern: restarted the same way at each tick (pm2's
    /// `cron_restart`).
    #[serde(default)]
    pub cron_restart: Option<CronPattern>,
}

impl ProcessConfig {
    /// The stop signal.
    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        self.stop_signal.0
    }
}

/// `[tcp.<name>]`: a public address proxied to `$PORT_<NAME>` of each instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpService {
    /// Public address.
    pub listen: Address,
}

impl TcpService {
    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.listen.0
    }
}

/// `[releases]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReleasesConfig {
    /// Folder of release folders; relative to the state directory.
    pub root: PathBuf,
    /// Successful releases kept besides the current one.
    pub keep: usize,
    /// Shell command run in a new release folder before any instance starts.
    pub build: Option<String>,
    /// A build running longer than this fails.
    #[serde(with = "humantime_serde")]
    pub build_timeout: Duration,
    /// Folders and files shared by every release (symlinked in, as Capistrano).
    pub shared: Vec<String>,
    /// Copy `node_modules` when releasing a directory.
    pub keep_node_modules: bool,
    /// Names never copied from a directory (besides `.git` and `.baton`).
    pub ignore: Vec<String>,
    /// Largest unpacked size of a tarball, such as "2GB".
    pub max_unpacked_size: Spanned<Size>,
    /// Largest app directory of which a copy is kept at an in-place release
    /// (for its rollback); 0 keeps none.
    pub max_copy_size: Size,
    /// A folder watched for new tarballs to deploy.
    pub inbox: Option<PathBuf>,
    /// A tarball is taken once its size and mtime held still this long.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Random wait, up to this, before an inbox deploy, so that servers
    /// sharing one inbox do not all restart at once.
    #[serde(with = "humantime_serde")]
    pub stagger: Duration,
}

impl Default for ReleasesConfig {
    fn default() -> Self {
        ReleasesConfig {
            root: PathBuf::from("releases"),
            keep: 5,
            build: None,
            build_timeout: Duration::from_secs(600),
            shared: Vec::new(),
            keep_node_modules: false,
            ignore: Vec::new(),
            max_unpacked_size: Spanned::new(0..0, Size(2 << 30)),
            max_copy_size: Size(256 << 20),
            inbox: None,
            settle: Duration::from_secs(2),
            stagger: Duration::ZERO,
        }
    }
}

/// A byte size: a whole number of bytes, or a string such as "512MB", "2GiB".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Size(n)),
            Raw::S(s) => parse_size(&s).map(Size).ok_or_else(|| {
                serde::de::Error::custom(format!("{s:?} is not a size like \"512MB\" or \"2GiB\""))
            }),
        }
    }
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `[app]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// A name for logs and status.
    pub name: String,
    /// The host names it serves: `[tls] acme_email` gets certificates for
    /// them. Exact names, or `*.` and one label for a wildcard.
    #[serde(default)]
    pub hosts: Option<Spanned<Vec<String>>>,
    /// Only requests under this path (`/api`) are this app's; with several
    /// apps on one host, the longest prefix wins.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// The app sees the path without `path_prefix` (`/api/x` as `/x`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// This app answers the hosts no other app claims.
    #[serde(default)]
    pub default: bool,
}

impl AppConfig {
    /// Its host names, in lower case.
    pub fn hosts(&self) -> Vec<String> {
        (self.hosts.as_ref())
            .map(|h| h.get_ref().iter().map(|n| n.to_ascii_lowercase()).collect())
            .unwrap_or_default()
    }
}

/// `[daemon]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// State directory (control socket, logs, releases). Relative paths are
    /// taken from the directory holding baton.toml. Default `.baton`.
    pub state_dir: Option<PathBuf>,
    /// Optional admin listener serving Prometheus metrics on `/metrics`.
    pub metrics_listen: Option<SocketAddr>,
    /// Threads serving the proxy and the daemon (default: one per CPU).
    pub worker_threads: Option<usize>,
    /// The app's log file: every process's lines, prefixed (pm2's `log`).
    /// Relative to the directory holding baton.toml. Default
    /// `<state_dir>/logs/web.log`.
    pub app_log: Option<PathBuf>,
    /// A log file past this size is rotated (default 16 MiB).
    pub log_max_size: Option<Size>,
    /// Rotated log files kept: `<file>.1` (the newest) to `<file>.<n>`
    /// (default 5).
    pub log_keep: Option<u32>,
    /// Instances' private ports come from this range, `"20000-20999"`
    /// (default: any free port the system gives).
    pub port_range: Option<Spanned<String>>,
}

impl DaemonConfig {
    /// `port_range` as numbers; `Err` says what is wrong with it.
    pub fn port_range(&self) -> Result<Option<std::ops::RangeInclusive<u16>>, String> {
        let Some(text) = &self.port_range else {
            return Ok(None);
        };
        let parsed = text.get_ref().split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        match parsed {
            Some((first, last)) if 1024 <= first && first <= last => Ok(Some(first..=last)),
            _ => Err(format!(
                "{:?} is not a range of ports such as \"20000-20999\" (from 1024 up)",
                text.get_ref()
            )),
        }
    }
}

/// `[proxy] access_log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessFormat {
    /// nginx's `combined`, then the request time, the instance, the
    /// release, the retries and whether it was held.
    #[default]
    Combined,
    /// One JSON object per line.
    Json,
}

/// How the proxy picks an instance for a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// The ready instance with the fewest requests in flight.
    #[default]
    LeastOutstanding,
    /// Each ready instance in turn.
    RoundRobin,
}

/// `[proxy]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Public addresses, IPv4 or IPv6. A single string is accepted too.
    pub listen: Spanned<Addresses>,
    /// Public HTTPS addresses, served with the `[tls]` certificates.
    #[serde(default)]
    pub https_listen: Option<Spanned<Addresses>>,
    /// Balancing policy.
    pub balance: Balance,
    /// How long a request waits for a ready instance before a 503.
    #[serde(with = "humantime_serde")]
    pub hold_timeout: Duration,
    /// How many requests may wait at once; more get 503 at once.
    pub hold_capacity: usize,
    /// How many times a request is retried on another instance: any
    /// request that none of reached an instance (a refused connect), an
    /// idempotent one also after an instance broke or timed out.
    pub retries: u32,
    /// Trust X-Forwarded-* headers that arrive from clients.
    pub trust_forwarded: bool,
    /// A client must send its whole request head within this time (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Largest request head in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Most request headers; more gets 431.
    pub max_headers: usize,
    /// Idle pooled upstream connections are closed after this. Keep it below
    /// the app's own keep-alive timeout (Node's is 5 s).
    #[serde(with = "humantime_serde")]
    pub upstream_idle_timeout: Duration,
    /// Connecting to an instance may take this long (nginx's
    /// `proxy_connect_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// An instance must start its answer this long after the request was
    /// sent in full; else 504 (nginx's `proxy_read_timeout`, kamal-proxy's
    /// `--target-timeout`).
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Longest silence between two pieces of a body, either way between
    /// Baton and an instance (nginx's `proxy_read_timeout` and
    /// `proxy_send_timeout`). Event streams (SSE) and WebSockets are exempt:
    /// they are quiet between events.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest silence between two pieces of a client's request body; else
    /// 408 (nginx's `client_body_timeout`).
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Largest request body; larger gets 413 (nginx's
    /// `client_max_body_size`). No limit when unset.
    pub max_body_size: Option<Spanned<Size>>,
    /// Timeouts of one instance within `fail_timeout` that take it out of
    /// rotation for `fail_timeout` (nginx's `max_fails`).
    pub max_fails: u32,
    /// See `max_fails` (nginx's `fail_timeout`).
    #[serde(with = "humantime_serde")]
    pub fail_timeout: Duration,
    /// A line per request in this file (relative to baton.toml's folder),
    /// rotated as `[daemon] log_max_size` and `log_keep` say.
    pub access_log: Option<PathBuf>,
    /// `combined` (nginx's) or `json`.
    pub access_log_format: AccessFormat,
}

/// What limits the proxy puts on one exchange with an instance.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeLimits {
    /// See [`ProxyConfig::connect_timeout`].
    pub connect: Duration,
    /// See [`ProxyConfig::response_timeout`].
    pub response: Duration,
    /// See [`ProxyConfig::read_timeout`].
    pub read: Duration,
    /// See [`ProxyConfig::upstream_idle_timeout`].
    pub idle: Duration,
}

impl ProxyConfig {
    /// The limits on each exchange with an instance.
    pub fn exchange_limits(&self) -> ExchangeLimits {
        ExchangeLimits {
            connect: self.connect_timeout,
            response: self.response_timeout,
            read: self.read_timeout,
            idle: self.upstream_idle_timeout,
        }
    }

    /// The largest request body, when one is set.
    pub fn body_limit(&self) -> Option<u64> {
        self.max_body_size.as_ref().map(|s| s.get_ref().0)
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: Spanned::new(
                0..0,
                Addresses::One(Address(SocketAddr::from(([127, 0, 0, 1], 8080)))),
            ),
            https_listen: None,
            balance: Balance::default(),
            hold_timeout: Duration::from_secs(30),
            hold_capacity: 10_000,
            retries: 2,
            trust_forwarded: false,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            upstream_idle_timeout: Duration::from_secs(4),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            max_body_size: None,
            max_fails: 3,
            fail_timeout: Duration::from_secs(10),
            access_log: None,
            access_log_format: AccessFormat::default(),
        }
    }
}

/// How many instances to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// Exactly this many.
    Count(u32),
    /// One per CPU.
    Max,
}

impl Instances {
    /// The number of instances this resolves to on this machine.
    pub fn resolve(self) -> u32 {
        match self {
            Instances::Count(n) => n,
            Instances::Max => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
        }
    }
}

impl<'de> Deserialize<'de> for Instances {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(i64),
            S(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::N(n)) if (0..=u32::MAX as i64).contains(&n) => Ok(Instances::Count(n as u32)),
            Ok(Raw::N(n)) => Err(serde::de::Error::custom(format!(
                "{n} is not a valid instance count"
            ))),
            Ok(Raw::S(s)) if s == "max" => Ok(Instances::Max),
            _ => Err(serde::de::Error::custom(
                "expected a whole number or \"max\"",
            )),
        }
    }
}

impl Serialize for Instances {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Instances::Count(n) => s.serialize_u32(*n),
            Instances::Max => s.serialize_str("max"),
        }
    }
}

/// How Baton learns that a fresh instance can take traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadinessKind {
    /// `GET <path>` answers 2xx, `successes` times in a row.
    #[default]
    Http,
    /// The port accepts a TCP connection.
    Tcp,
    /// The child calls `process.send('ready')` (pm2's `wait_ready`).
    NodeIpc,
    /// The child sends `READY=1` to `$NOTIFY_SOCKET` (systemd's sd_notify).
    Notify,
    /// Ready once spawned (the default for `[process.<name>]` singletons).
    None,
}

/// `[web.readiness]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Readiness {
    /// Which check.
    pub kind: ReadinessKind,
    /// Health path for `http`.
    pub path: String,
    /// Longest pause between two checks for `http` and `tcp`. While a
    /// check fails, checks come every 5 ms at first and slow down to this.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Consecutive passing checks needed for `http`.
    pub successes: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness {
            kind: ReadinessKind::Http,
            path: "/".into(),
            interval: Duration::from_millis(50),
            successes: 1,
        }
    }
}

/// Who gets `stop_signal`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopTo {
    /// The main process (as systemd's `KillMode=mixed`). Process managers
    /// such as egg-scripts and `npm start` pass it on to their children
    /// once; a process whose parent exited without passing it on gets it
    /// then. SIGKILL goes to the whole group at `kill_timeout`.
    #[default]
    Main,
    /// Every process of the group at once (`KillMode=control-group`).
    Group,
}

/// How a deploy replaces the serving instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the whole new set, swap once, drain the old set.
    #[default]
    BlueGreen,
    /// Replace `max_surge` instances at a time.
    Rolling,
}

/// `[web]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// Shell command that starts one instance; it must listen on `$PORT`.
    pub command: Spanned<String>,
    /// Instance count, or `"max"` for one per CPU.
    #[serde(default = "default_instances")]
    pub instances: Spanned<Instances>,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to baton.toml's folder.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Readiness check.
    #[serde(default)]
    pub readiness: Readiness,
    /// A start that is not ready within this is failed.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Signal that asks an instance to stop.
    #[serde(default = "default_stop_signal")]
    pub stop_signal: SignalName,
    /// Who gets `stop_signal`: the main process or the whole group.
    #[serde(default)]
    pub stop_to: StopTo,
    /// SIGKILL follows `stop_signal` after this.
    #[serde(default = "default_kill_timeout", with = "humantime_serde")]
    pub kill_timeout: Duration,
    /// How long old instances keep WebSocket and TCP connections after a
    /// deploy before Baton closes them (1001 / FIN) so clients reconnect.
    #[serde(default = "default_connection_drain_timeout", with = "humantime_serde")]
    pub connection_drain_timeout: Duration,
    /// Tell draining instances so they can ask their clients to reconnect:
    /// `"ipc"` sends `{"type":"drain"}` over Node IPC, a signal name sends it.
    #[serde(default)]
    pub drain_notice: Option<DrainNotice>,
    /// How long a deploy waits for old instances' requests to finish.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Deploy strategy.
    #[serde(default)]
    pub strategy: Strategy,
    /// For `rolling`: how many new instances may run beyond `instances`.
    #[serde(default = "default_max_surge")]
    pub max_surge: Spanned<u32>,
    /// An instance that exits sooner than this after starting counts as an
    /// unstable restart (pm2's `min_uptime`).
    #[serde(default = "default_min_uptime", with = "humantime_serde")]
    pub min_uptime: Duration,
    /// After this many unstable restarts in a row the instance is `failed`.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// After a deploy's switch the new instances are watched this long,
    /// with the old ones still running: one that exits meanwhile sends all
    /// traffic back to the old release. A release that crashes a few
    /// seconds after it became ready is caught here, not after the old
    /// release is gone.
    #[serde(default = "default_watch_after_switch", with = "humantime_serde")]
    pub watch_after_switch: Duration,
    /// Restarts within this window count as a crash loop even when each
    /// run outlived `min_uptime`: the third and later ones are unstable.
    #[serde(default = "default_restart_window", with = "humantime_serde")]
    pub restart_window: Duration,
    /// Restart an instance that exits (pm2's `autorestart`). Off, an exit
    /// leaves it `failed` and the others serve.
    #[serde(default = "yes")]
    pub autorestart: bool,
    /// An instance whose process group holds more memory than this is
    /// replaced by a fresh one without downtime (pm2's
    /// `max_memory_restart`).
    #[serde(default)]
    pub max_memory: Option<Spanned<Size>>,
    /// A cron pattern: at each tick every instance is replaced by a fresh
    /// one of the same release and configuration, without downtime (pm2's
    /// `cron_restart`).
    #[serde(default)]
    pub cron_restart: Option<CronPattern>,
}

fn default_instances() -> Spanned<Instances> {
    Spanned::new(0..0, Instances::Count(1))
}
fn default_start_timeout() -> Duration {
    Duration::from_secs(30)
}
fn no_readiness() -> Readiness {
    Readiness {
        kind: ReadinessKind::None,
        ..Readiness::default()
    }
}
fn default_stop_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGTERM)
}
fn default_kill_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connection_drain_timeout() -> Duration {
    Duration::from_secs(3600)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_surge() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn default_watch_after_switch() -> Duration {
    Duration::from_secs(10)
}

/// See [`WebConfig::restart_window`].
pub fn default_restart_window() -> Duration {
    Duration::from_secs(60)
}

fn default_min_uptime() -> Duration {
    Duration::from_secs(1)
}
fn default_max_restarts() -> u32 {
    10
}
fn yes() -> bool {
    true
}

/// One address or a list of them.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Addresses {
    /// `listen = "127.0.0.1:8080"`
    One(Address),
    /// `listen = ["127.0.0.1:8080", "[::1]:8080"]`
    Many(Vec<Address>),
}

impl<'de> Deserialize<'de> for Addresses {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// What the file holds, before each address is parsed (an
        /// untagged enum would hide which one is wrong).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            One(String),
            Many(Vec<String>),
        }
        let parse = |text: String| Address::parse(&text).map_err(serde::de::Error::custom);
        Ok(match Written::deserialize(d)? {
            Written::One(text) => Addresses::One(parse(text)?),
            Written::Many(texts) => {
                Addresses::Many(texts.into_iter().map(parse).collect::<Result<_, _>>()?)
            }
        })
    }
}

impl Addresses {
    /// Every address.
    pub fn as_slice(&self) -> &[Address] {
        match self {
            Addresses::One(s) => std::slice::from_ref(s),
            Addresses::Many(v) => v,
        }
    }
}

impl WebConfig {
    /// The stop signal.
    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        self.stop_signal.0
    }

    /// The instance count on this machine.
    pub fn instance_count(&self) -> u32 {
        self.instances.get_ref().resolve()
    }
}

impl ProxyConfig {
    /// The listen addresses.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listen
            .get_ref()
            .as_slice()
            .iter()
            .map(|a| a.0)
            .collect()
    }

    /// The HTTPS listen addresses.
    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        let addrs = self.https_listen.as_ref().map(|l| l.get_ref().as_slice());
        addrs.unwrap_or_default().iter().map(|a| a.0).collect()
    }
}

/// A configuration error that points at the place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field name, when known (`web.instances`).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A loaded configuration together with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed, validated configuration.
    pub config: Config,
    /// The baton.toml path.
    pub path: PathBuf,
    /// The folder that holds baton.toml; relative paths start here.
    pub base_dir: PathBuf,
}

impl Loaded {
    /// The state directory: `[daemon] state_dir` or `.baton` beside baton.toml.
    pub fn state_dir(&self) -> PathBuf {
        match &self.config.daemon.state_dir {
            Some(p) => self.base_dir.join(p),
            None => self.base_dir.join(".baton"),
        }
    }

    /// The app's log file.
    pub fn app_log(&self) -> PathBuf {
        match &self.config.daemon.app_log {
            Some(p) => self.base_dir.join(p),
            None => self.state_dir().join("logs").join("web.log"),
        }
    }

    /// How its log files are rotated.
    pub fn log_rotation(&self) -> crate::supervisor::logs::Rotation {
        let default = crate::supervisor::logs::Rotation::default();
        let daemon = &self.config.daemon;
        crate::supervisor::logs::Rotation {
            max_size: daemon
                .log_max_size
                .as_ref()
                .map_or(default.max_size, |s| s.0),
            keep: daemon.log_keep.unwrap_or(default.keep),
        }
    }

    /// The folder holding release folders.
    pub fn releases_root(&self) -> PathBuf {
        self.state_dir().join(&self.config.releases.root)
    }
}

/// Reads and validates a baton.toml.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_text(&read(path)?, path)
}

/// A config file's text, or the error naming the file.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })
}

/// [`load`] of text already read from `path`.
fn load_text(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
    let config = parse(text, path)?;
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Loaded {
        config,
        path,
        base_dir,
    })
}

/// Parses and validates configuration text; `file` is used in errors only.
///
/// # Errors
/// A [`ConfigError`] naming the file, line and field of the first problem.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let config: Config = from_toml(text, file)?;
    validate(&config, text, file)?;
    Ok(config)
}

/// TOML text deserialized, or the error at its line and field.
fn from_toml<T: serde::de::DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let span = e.span();
        let (line, field) = match &span {
            Some(span) => (
                Some(line_of(text, span.start)),
                field_at(text, span.clone()),
            ),
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            field,
            message: e.message().trim().to_string(),
        }
    })
}

/// HTTPS needs a certificate, and a certificate its key.
fn check_tls(
    c: &Config,
    err: impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let tls = &c.tls;
    match (&tls.cert, &tls.key) {
        (Some(cert), None) => {
            return Err(err(
                cert.span(),
                "tls.key",
                "[tls] cert needs its key".into(),
            ));
        }
        (None, Some(key)) => {
            return Err(err(
                key.span(),
                "tls.cert",
                "[tls] key needs its cert".into(),
            ));
        }
        _ => {}
    }
    if let Some(hsts) = &tls.hsts {
        if http::HeaderValue::from_str(hsts.get_ref()).is_err() {
            return Err(err(
                hsts.span(),
                "tls.hsts",
                "not a valid header value".into(),
            ));
        }
    }
    if let Some(hosts) = &c.app.hosts {
        if let Some(bad) = hosts.get_ref().iter().find(|h| !is_host_name(h)) {
            return Err(err(
                hosts.span(),
                "app.hosts",
                format!(
                    "{bad:?} is not a host name (letters, digits, '-' and '.', or '*.' and a name)"
                ),
            ));
        }
    }
    check_acme(c, &err)?;
    if let Some(https) = &c.proxy.https_listen {
        if tls.cert.is_none() && tls.certificates.is_empty() && tls.acme_email.is_none() {
            return Err(err(
                https.span(),
                "proxy.https_listen",
                "needs a certificate: [tls] cert and key, [tls] certificates, or [tls] acme_email"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Automatic certificates need names to issue for, a listener to answer
/// the challenges on and to serve them, and an HTTPS directory.
fn check_acme(
    c: &Config,
    err: &impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let tls = &c.tls;
    let Some(email) = &tls.acme_email else {
        return Ok(());
    };
    if !email.get_ref().contains('@') {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "not an email address".into(),
        ));
    }
    let hosts = c.app.hosts();
    if hosts.is_empty() {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "needs [app] hosts: the names to get certificates for".into(),
        ));
    }
    if let Some(wildcard) = hosts.iter().find(|h| h.starts_with("*.")) {
        let span = c.app.hosts.as_ref().map(Spanned::span).unwrap_or(0..0);
        return Err(err(
            span,
            "app.hosts",
            format!(
                "{wildcard}: a wildcard certificate needs the DNS-01 challenge, which Baton does \
                 not answer; give its certificate in [tls] certificates"
            ),
        ));
    }
    if c.proxy.https_listen.is_none() {
        return Err(err(
            email.span(),
            "tls.acme_email",
            "certificates are for [proxy] https_listen, which is not set".into(),
        ));
    }
    if let Some(directory) = &tls.acme_directory {
        if !directory.get_ref().starts_with("https://") {
            return Err(err(
                directory.span(),
                "tls.acme_directory",
                "an ACME directory is an https:// URL (RFC 8555 §6.1)".into(),
            ));
        }
    }
    Ok(())
}

/// A DNS name as `[app] hosts` takes it: labels of letters, digits and
/// '-', or `*.` before such a name.
fn is_host_name(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    name.len() <= 253
        && name.contains(|c: char| c.is_ascii_alphabetic())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The `max_memory` of `section` (`web`, or `process.<name>`), which means
/// the same in both; `err` locates an error.
fn check_max_memory(
    section: &str,
    max_memory: Option<&Spanned<Size>>,
    err: impl Fn(Range<usize>, &str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Some(max) = max_memory {
        if max.get_ref().0 == 0 {
            return Err(err(
                max.span(),
                &format!("{section}.max_memory"),
                "must be more than 0".into(),
            ));
        }
    }
    Ok(())
}

fn validate(c: &Config, text: &str, file: &Path) -> Result<(), ConfigError> {
    let err = |span: Range<usize>, field: &str, message: String| ConfigError {
        file: file.to_path_buf(),
        line: (span.end > 0).then(|| line_of(text, span.start)),
        field: Some(field.to_string()),
        message,
    };
    let listen = &c.proxy.listen;
    if listen.get_ref().as_slice().is_empty() {
        return Err(err(
            listen.span(),
            "proxy.listen",
            "needs at least one address".into(),
        ));
    }
    if c.web.command.get_ref().trim().is_empty() {
        return Err(err(
            c.web.command.span(),
            "web.command",
            "must not be empty".into(),
        ));
    }
    if *c.web.instances.get_ref() == Instances::Count(0) {
        return Err(err(
            c.web.instances.span(),
            "web.instances",
            "must be at least 1".into(),
        ));
    }
    if *c.web.max_surge.get_ref() == 0 {
        return Err(err(
            c.web.max_surge.span(),
            "web.max_surge",
            "must be at least 1".into(),
        ));
    }
    for (name, p) in &c.process {
        if name == "web" {
            return Err(err(
                p.command.span(),
                "process.web",
                "`web` is the [web] section's name".into(),
            ));
        }
        check_max_memory(&format!("process.{name}"), p.max_memory.as_ref(), err)?;
    }
    check_max_memory("web", c.web.max_memory.as_ref(), err)?;
    check_tls(c, err)?;
    if let Err(message) = c.daemon.port_range() {
        let span = c.daemon.port_range.as_ref().map_or(0..0, Spanned::span);
        return Err(err(span, "daemon.port_range", message));
    }
    if let Some(statics) = &c.statics {
        statics::check(statics, err)?;
    }
    if let Some(prefix) = &c.app.path_prefix {
        if !prefix.starts_with('/') || prefix.len() > 1 && prefix.ends_with('/') {
            return Err(err(
                find_key(text, "app", "path_prefix"),
                "app.path_prefix",
                "a path such as \"/api\": starts with '/', does not end with one".into(),
            ));
        }
    }
    for name in c.tcp.keys() {
        if !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        {
            return Err(err(
                0..0,
                &format!("tcp.{name}"),
                "names are letters, digits and _ (they become PORT_<NAME>)".into(),
            ));
        }
    }
    if c.releases.max_unpacked_size.get_ref().0 == 0 {
        return Err(err(
            c.releases.max_unpacked_size.span(),
            "releases.max_unpacked_size",
            "must be more than 0".into(),
        ));
    }
    if c.web.readiness.kind == ReadinessKind::Http && !c.web.readiness.path.starts_with('/') {
        return Err(err(
            find_key(text, "readiness", "path"),
            "web.readiness.path",
            "must start with '/'".into(),
        ));
    }
    Ok(())
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted name of the key on the line holding `span`, with the table
/// header above it: `web.instances`.
fn field_at(text: &str, span: Range<usize>) -> Option<String> {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    if line.starts_with('[') {
        return Some(
            line.trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string(),
        );
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return table;
    }
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    })
}

/// The span of `key = ...` inside a table whose header ends with `table`.
fn find_key(text: &str, table: &str, key: &str) -> Range<usize> {
    let mut offset = 0;
    let mut in_table = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t.trim_matches(|c| c == '[' || c == ']').ends_with(table);
        } else if in_table && t.split('=').next().map(str::trim) == Some(key) {
            return offset..offset + line.len();
        }
        offset += line.len();
    }
    0..0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> ConfigError {
        parse(text, Path::new("baton.toml")).expect_err("config should be rejected")
    }

    /// The line and field a rejected config is blamed on.
    fn located(text: &str) -> (Option<usize>, Option<String>) {
        let e = parse_err(text);
        (e.line, e.field)
    }

    #[test]
    fn a_bad_port_range_is_blamed_on_its_line() {
        for range in ["90-80", "20000", "80-90", "a-b"] {
            let text = format!(
                "[app]\nname = \"a\"\n[daemon]\nport_range = \"{range}\"\n[web]\ncommand = \"x\"\n"
            );
            assert_eq!(
                located(&text),
                (Some(4), Some("daemon.port_range".into())),
                "{range}"
            );
        }
        let text =
            "[app]\nname = \"a\"\n[daemon]\nport_range = \"20000-20009\"\n[web]\ncommand = \"x\"\n";
        let loaded = parse(text, Path::new("baton.toml")).unwrap();
        assert_eq!(loaded.daemon.port_range(), Ok(Some(20000..=20009)));
    }

    /// ACME needs hosts without wildcards, an HTTPS listener, an email and
    /// an https directory; each mistake is blamed on its line and field.
    #[test]
    fn acme_settings_are_checked() {
        let file = |hosts: &str, https: &str, tls: &str| {
            format!(
                "[app]\nname = \"shop\"\n{hosts}\n[proxy]\nlisten = \"127.0.0.1:80\"\n{https}\n\
                 [web]\ncommand = \"node s.js\"\n[tls]\n{tls}\n"
            )
        };
        let https = "https_listen = \"127.0.0.1:443\"";
        let email = "acme_email = \"ops@shop.test\"";
        let hosts = "hosts = [\"shop.test\", \"www.shop.test\"]";
        let ok = parse(&file(hosts, https, email), Path::new("baton.toml")).expect("valid");
        assert_eq!(ok.app.hosts(), ["shop.test", "www.shop.test"]);
        assert!(ok.tls.acme_challenge.is_none());
        assert_eq!(
            located(&file("", https, email)),
            (Some(10), Some("tls.acme_email".into())),
            "no hosts"
        );
        assert_eq!(
            located(&file(hosts, "", email)),
            (Some(10), Some("tls.acme_email".into())),
            "no https_listen"
        );
        assert_eq!(
            located(&file("hosts = [\"*.shop.test\"]", https, email)),
            (Some(3), Some("app.hosts".into())),
            "a wildcard needs DNS-01"
        );
        assert_eq!(
            located(&file("hosts = [\"shop test\"]", https, email)),
            (Some(3), Some("app.hosts".into())),
            "not a host name"
        );
        assert_eq!(
            located(&file(hosts, https, "acme_email = \"ops\"")),
            (Some(10), Some("tls.acme_email".into())),
        );
        let plain_directory = format!("{email}\nacme_directory = \"http://ca.test/dir\"");
        assert_eq!(
            located(&file(hosts, https, &plain_directory)),
            (Some(11), Some("tls.acme_directory".into())),
        );
        let unknown = format!("{email}\nacme_challenge = \"dns-01\"");
        assert_eq!(located(&file(hosts, https, &unknown)).0, Some(11));
        // Wildcards are fine in hosts when no ACME is asked for.
        parse(
            &file("hosts = [\"*.shop.test\"]", "", ""),
            Path::new("baton.toml"),
        )
        .expect("a wildcard host without ACME");
    }

    /// The three-line file from the README is enough.
    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(
            "[app]\nname = \"hello\"\n[web]\ncommand = \"node server.js\"\n",
            Path::new("baton.toml"),
        )
        .expect("minimal config parses");
        assert_eq!(c.web.instance_count(), 1);
        assert_eq!(
            c.proxy.listen_addrs(),
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
        assert_eq!(c.web.kill_timeout, Duration::from_secs(5));
        assert_eq!(c.web.readiness.kind, ReadinessKind::Http);
    }

    /// An unknown field names its line and dotted field.
    #[test]
    fn unknown_field_is_located() {
        let e = parse_err("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstancez = 2\n");
        assert_eq!(e.line, Some(5));
        assert_eq!(e.field.as_deref(), Some("web.instancez"));
        assert!(e.message.contains("unknown field"), "{}", e.message);
    }

    /// A value of the wrong type names its line and field.
    #[test]
    fn wrong_type_is_located() {
        let e = parse_err("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nkill_timeout = 5\n");
        assert_eq!(e.line, Some(5));
        assert_eq!(e.field.as_deref(), Some("web.kill_timeout"));
    }

    /// Impossible values are refused with their line.
    #[test]
    fn impossible_values_are_located() {
        assert_eq!(
            located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = 0\n"),
            (Some(5), Some("web.instances".into()))
        );
        assert_eq!(
            located("[app]\nname = \"x\"\n[proxy]\nlisten = \"nowhere\"\n[web]\ncommand = \"x\"\n"),
            (Some(4), Some("proxy.listen".into()))
        );
        assert_eq!(
            located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nstop_signal = \"SIGNOPE\"\n"),
            (Some(5), Some("web.stop_signal".into()))
        );
        assert_eq!(
            located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = \"lots\"\n"),
            (Some(5), Some("web.instances".into()))
        );
    }

    /// Sizes read with units; a bad one names its line.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MB"), Some(512 << 20));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(
            located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\nmax_memory = 0\n"),
            (Some(5), Some("web.max_memory".into()))
        );
        assert_eq!(located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[releases]\nmax_unpacked_size = \"huge\"\n"), (Some(6), Some("releases.max_unpacked_size".into())));
    }

    /// A bad cron pattern (of a job or of `cron_restart`) or a singleton
    /// named `web` is refused with its line.
    #[test]
    fn cron_and_process_validation() {
        assert_eq!(located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[cron.clean]\nschedule = \"every day\"\ncommand = \"x\"\n"), (Some(6), Some("cron.clean.schedule".into())));
        assert_eq!(
            located(
                "[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[process.web]\ncommand = \"y\"\n"
            ),
            (Some(6), Some("process.web".into()))
        );
        assert_eq!(
            located("[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ncron_restart = \"soon\"\n"),
            (Some(5), Some("web.cron_restart".into()))
        );
        let singleton =
            "[app]\nname = \"x\"\n[web]\ncommand = \"x\"\n[process.jobs]\ncommand = \"y\"\n";
        assert_eq!(
            located(&format!("{singleton}cron_restart = \"soon\"\n")),
            (Some(7), Some("process.jobs.cron_restart".into()))
        );
        assert_eq!(
            located(&format!("{singleton}max_memory = 0\n")),
            (Some(7), Some("process.jobs.max_memory".into()))
        );
        assert!(parse_cron("0 4 * * *").is_ok());
        assert!(parse_cron("*/5 * * * * *").is_ok());
    }

    /// `"max"` means one instance per CPU and durations read as humantime.
    #[test]
    fn max_instances_and_durations() {
        let c = parse(
            "[app]\nname = \"x\"\n[web]\ncommand = \"x\"\ninstances = \"max\"\nkill_timeout = \"500ms\"\n",
            Path::new("baton.toml"),
        )
        .unwrap();
        assert!(c.web.instance_count() >= 1);
        assert_eq!(c.web.kill_timeout, Duration::from_millis(500));
    }
}

#[cfg(test)]
mod readme {
    /// The README's full configuration reference is a valid baton.toml.
    #[test]
    fn readme_reference_parses() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("Every field, with its default:")
            .expect("reference section");
        let block = &readme[start..];
        let open = block.find("```toml\n").expect("toml block") + "```toml\n".len();
        let close = block[open..].find("```").expect("block end");
        let text = &block[open..open + close];
        let c =
            super::parse(text, std::path::Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.tcp.len(), 1);
        assert_eq!(c.releases.keep, 5);
        assert!(c.web.drain_notice.is_some());
        assert!(c
            .statics
            .is_some_and(|s| s.keep_for.as_secs() == 7 * 24 * 3600));
    }

    /// Every recipe (Egg, Express, Next) is a valid baton.toml.
    #[test]
    fn readme_recipes_parse() {
        let readme = include_str!("../../README.md");
        let start = readme.find("## Recipes").expect("recipes section");
        let end = start + readme[start..].find("\n## ").expect("a next section");
        let mut recipes = 0;
        for block in readme[start..end].split("```toml\n").skip(1) {
            let text = &block[..block.find("```").expect("block end")];
            super::parse(text, std::path::Path::new("README.md"))
                .unwrap_or_else(|e| panic!("{e}\n{text}"));
            recipes += 1;
        }
        assert_eq!(recipes, 3);
    }
}
