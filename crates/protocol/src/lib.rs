//! The control API's messages, shared by the daemon and the CLI.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod routes;

use serde::{Deserialize, Serialize};

pub use self::routes::Route;

/// `GET /status`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    /// App name.
    pub app: String,
    /// Daemon pid.
    pub pid: u32,
    /// Daemon start time (RFC 3339, in ms).
    pub started: String,
    /// The daemon's Baton version.
    #[serde(default)]
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// Public addresses.
    pub listen: Vec<String>,
    /// The host names the app serves (none: every host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The path prefix it serves, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Requests that waited for a ready instance of this app.
    #[serde(default)]
    pub held: u64,
    /// The release serving traffic.
    pub release: Option<String>,
    /// A deploy in progress, described.
    pub deploying: Option<String>,
    /// False after `baton offline`: the admin `/health` answers 503.
    #[serde(default = "yes")]
    pub online: bool,
    /// Every instance: serving, draining, failed.
    pub instances: Vec<InstanceReport>,
    /// Log lines that could not be written (stdout or a log file) since
    /// the daemon started.
    #[serde(default)]
    pub log_errors: u64,
    /// Why, while writes still fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
    /// A canary running beside the serving release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryReport>,
    /// The certificates HTTPS serves, and ACME's work on them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<CertificateReport>,
}

/// One certificate: where it comes from, until when it is valid, and for
/// an ACME one, its renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateReport {
    /// The names it is valid for (or, before its first issuance, is to be).
    pub names: Vec<String>,
    /// `acme`, or the certificate file.
    pub source: String,
    /// What is happening to it.
    pub state: CertificateState,
    /// Its expiry, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<u64>,
    /// ACME: when it is renewed (two thirds into its lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_at: Option<u64>,
    /// ACME: the last failure, while failures go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// ACME: when it tries again after that failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<u64>,
}

/// Where a certificate is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateState {
    /// Valid and served.
    Serving,
    /// ACME: the first certificate is being issued; none is served yet.
    Issuing,
    /// ACME: issuance or renewal failed and is retried; the old one (if
    /// any) keeps serving.
    Failing,
}

/// How healthy a status is, as `baton status` exits (worst last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Every instance of the serving release is ready.
    Healthy,
    /// Some serve, but an instance failed or is not ready.
    Degraded,
    /// No instance is ready: requests wait, then get 503.
    Down,
}

fn yes() -> bool {
    true
}

/// One instance in [`StatusReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceReport {
    /// Process name (`web`).
    pub process: Role,
    /// Instance id (`web#3`).
    pub instance: String,
    /// Release it runs.
    pub release: String,
    /// Current pid.
    pub pid: Option<u32>,
    /// Private port.
    pub port: u16,
    /// Lifecycle state.
    pub state: State,
    /// Seconds since its process started.
    pub uptime_secs: Option<u64>,
    /// Restarts after crashes.
    pub restarts: u32,
    /// Resident memory of its process group, in bytes.
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// CPU time its process group used, in seconds.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
    /// Its CPU use since the previous status (or since it started), in
    /// percent of one core, as `pm2 ls` shows it.
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// Live proxy counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// When draining began (RFC 3339).
    pub draining_since: Option<String>,
    /// Why it failed or restarts.
    pub reason: Option<String>,
}

/// `POST /deploy`: what to do, and whether to wait for a running deploy.
/// The CLI sends it, the control API hands it to the app's deploy owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// What to do.
    pub order: Order,
    /// Wait for a running deploy instead of being refused.
    #[serde(default)]
    pub wait: bool,
    /// The app (none: the only one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

/// What `baton reload` at a server did to its apps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReloadReport {
    /// Apps started.
    pub added: Vec<String>,
    /// Apps drained and stopped.
    pub removed: Vec<String>,
    /// Apps left as they run.
    pub kept: Vec<String>,
}

/// A change of what serves, as a user asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Order {
    /// A new release.
    Deploy {
        /// A directory or archive to release (default: the app in place).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
        /// A git ref of the app's repository, via `git archive`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        git: Option<String>,
        /// Tried on a share of the clients first, judged, then promoted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<CanaryAsk>,
    },
    /// The same release, fresh processes, baton.toml read again.
    Reload,
    /// Back to an earlier release.
    Rollback {
        /// Its id (default: the previous one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// Another instance count.
    Scale {
        /// The new count.
        instances: u32,
    },
}

/// `baton deploy --canary [SHARE] [--canary-for D] [--steps A,B,C]`; what
/// is not given comes from `[canary]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryAsk {
    /// The share of clients, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
    /// How long each step is watched, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_ms: Option<u64>,
    /// The shares of successive steps, in percent; promotion follows the
    /// last. None: one step at `share`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
}

/// A canary as `baton status` shows it: its release, its share and both
/// sides' figures over the current step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The canary's release.
    pub release: String,
    /// The share of clients it gets, in percent.
    pub share_percent: f64,
    /// Which step, from 1, of how many.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The stable release's figures over the step so far.
    pub stable: Score,
    /// The canary's.
    pub canary: Score,
}

/// `baton promote` / `baton abort`: what to do with the running canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CanaryOrder {
    /// Finish now: the canary becomes the release.
    Promote,
    /// End it: all traffic back to the stable release.
    Abort,
}

/// One line of a deploy's progress stream (newline-delimited JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Progress {
    /// A step happened.
    Step {
        /// The deploy's phase.
        phase: Phase,
        /// Human text.
        message: String,
    },
    /// The deploy finished and the new release serves all traffic.
    Done {
        /// The release now serving.
        release: String,
        /// Milliseconds from the request to the switch.
        switch_ms: u64,
        /// Milliseconds in all.
        total_ms: u64,
    },
    /// The deploy failed; the previous release still serves.
    Failed {
        /// Why, with the new instance's last lines.
        message: String,
        /// The new configuration was invalid (exit code 2, not 1).
        #[serde(default)]
        config_error: bool,
    },
}

/// A release known to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseReport {
    /// Release id.
    pub id: String,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Where it came from.
    pub source: String,
    /// Its folder.
    pub dir: String,
    /// Bytes in its folder, when known.
    #[serde(default)]
    pub size: Option<u64>,
    /// Serving, one to go back to, or failed.
    pub status: ReleaseState,
    /// Its static files are served until then (RFC 3339), for pages it
    /// rendered (`[static] keep_for` after it stopped serving); its folder
    /// is kept until then whatever `keep` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assets_until: Option<String>,
}

/// Where a release stands, in [`ReleaseReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseState {
    /// It serves.
    Current,
    /// It served before, or could: `baton rollback` can go back to it.
    Previous,
    /// Its build or its deploy failed.
    Failed,
}

impl std::fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ReleaseState::Current => "current",
            ReleaseState::Previous => "previous",
            ReleaseState::Failed => "failed",
        })
    }
}

/// `POST /upgrade`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRequest {
    /// The Baton binary to run, an absolute path.
    pub exe: String,
}

/// The answer to [`UpgradeRequest`], before the daemon stops.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeReport {
    /// What the new binary's `--version` printed.
    pub version: String,
    /// A copy of the running binary, to start again should the new one
    /// fail to start. (Optional: `baton upgrade` runs the new CLI against
    /// the old daemon, which may not send it.)
    #[serde(default)]
    pub previous: Option<String>,
    /// The baton.toml the daemon runs.
    #[serde(default)]
    pub config: Option<String>,
    /// The daemon runs under systemd, which restarts it by itself.
    #[serde(default)]
    pub systemd: bool,
}

/// Body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The message for a person.
    pub error: String,
}

/// What an instance's process is: the app's `web`, which the proxy sends
/// requests to, or a `[process.NAME]` singleton. Written as its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Role {
    /// `[web]`.
    Web,
    /// `[process.NAME]`.
    Singleton(std::sync::Arc<str>),
}

impl Role {
    /// As the config file and `baton status` name it.
    pub fn name(&self) -> &str {
        match self {
            Role::Web => "web",
            Role::Singleton(name) => name,
        }
    }

    /// Whether it is the app's `web`.
    pub fn is_web(&self) -> bool {
        *self == Role::Web
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl From<&str> for Role {
    fn from(name: &str) -> Role {
        match name {
            "web" => Role::Web,
            name => Role::Singleton(name.into()),
        }
    }
}

impl From<String> for Role {
    fn from(name: String) -> Role {
        Role::from(name.as_str())
    }
}

impl From<Role> for String {
    fn from(role: Role) -> String {
        role.name().to_owned()
    }
}

/// A snapshot of the counters, for status and metrics.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default)]
pub struct Counts {
    /// Requests sent and not yet answered in full.
    pub in_flight: usize,
    /// Upgraded connections (WebSocket) open now.
    pub connections: usize,
    /// Keep-alive HTTP connections from Baton to it, open now.
    #[serde(default)]
    pub upstream_connections: usize,
    /// Requests answered since start.
    pub served: u64,
}

/// A side's figures over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// Attempts answered or failed.
    pub requests: u64,
    /// 5xx answers, resets and timeouts among them.
    pub errors: u64,
    /// errors / requests.
    pub error_rate: f64,
    /// 99th percentile time to the answer's head, ms.
    pub p99_ms: f64,
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Spawned (or waiting to respawn); gets no traffic.
    Starting,
    /// Passed its readiness check.
    Ready,
    /// Out of the route table; requests in flight are finishing.
    Draining,
    /// `stop_signal` sent; SIGKILL follows after `kill_timeout`.
    Stopping,
    /// Gone, on purpose.
    Stopped,
    /// Gone, and will not be restarted: see `reason`.
    Failed,
}

impl State {
    /// Stopped and failed are the end.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Stopped | State::Failed)
    }
}

/// The "s" that makes `n` things plural in a message.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// This Baton's version, as `baton --version` prints it and the CLI and
/// the daemon compare.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where a deploy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Reading config, copying the release.
    Preparing,
    /// New instances starting, not yet taking traffic.
    Starting,
    /// New instances take a share of the clients, and are judged.
    Canary,
    /// The route table is being swapped.
    #[serde(rename = "switched")]
    Switching,
    /// Old instances finish their requests.
    Draining,
    /// Old instances are being stopped.
    Stopping,
    /// The new release serves all traffic.
    Done,
    /// Nothing changed for clients; the old release serves.
    Failed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Phase::Preparing => "preparing",
            Phase::Starting => "starting",
            Phase::Canary => "canary",
            Phase::Switching => "switched",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Done => "done",
            Phase::Failed => "failed",
        };
        f.write_str(s)
    }
}
