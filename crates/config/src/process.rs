//! What runs: `[web]`, `[process.*]`, `[cron.*]`, `[tcp.*]`, and how an
//! instance is started, checked, stopped and replaced.

use super::*;

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

pub(super) fn default_cron_timeout() -> Duration {
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

    /// How its process runs, for the supervisor.
    pub fn process_spec(&self) -> ProcessSpec {
        ProcessSpec {
            command: self.command.get_ref().clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            readiness: self.readiness.clone(),
            start_timeout: self.start_timeout,
            stop_signal: self.stop_signal(),
            stop_to: self.stop_to,
            kill_timeout: self.kill_timeout,
            min_uptime: self.min_uptime,
            restart_window: default_restart_window(),
            max_restarts: self.max_restarts,
            autorestart: self.autorestart,
        }
    }
}

/// How one process runs, whether `[web]` or a `[process.NAME]` says it:
/// what the supervisor needs of either, in one type (the two sections
/// keep their own schemas, since their defaults and extra fields differ).
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Shell command.
    pub command: String,
    /// Working directory, relative to the release folder.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Readiness check.
    pub readiness: Readiness,
    /// Not ready within this means failed.
    pub start_timeout: Duration,
    /// Signal that asks it to stop.
    pub stop_signal: nix::sys::signal::Signal,
    /// Who gets `stop_signal`.
    pub stop_to: StopTo,
    /// SIGKILL after this.
    pub kill_timeout: Duration,
    /// Exits sooner than this after start are unstable.
    pub min_uptime: Duration,
    /// Restarts within this window count as a crash loop.
    pub restart_window: Duration,
    /// Unstable exits in a row before failed.
    pub max_restarts: u32,
    /// Restart it when it exits; off, an exit is final.
    pub autorestart: bool,
}

impl ProcessSpec {
    /// Its working directory in the release folder `release_dir`.
    pub fn cwd_in(&self, release_dir: &Path) -> PathBuf {
        match &self.cwd {
            Some(cwd) => release_dir.join(cwd),
            None => release_dir.to_path_buf(),
        }
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

pub(super) fn default_instances() -> Spanned<Instances> {
    Spanned::new(0..0, Instances::Count(1))
}
pub(super) fn default_start_timeout() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn no_readiness() -> Readiness {
    Readiness {
        kind: ReadinessKind::None,
        ..Readiness::default()
    }
}
pub(super) fn default_stop_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGTERM)
}
pub(super) fn default_kill_timeout() -> Duration {
    Duration::from_secs(5)
}
pub(super) fn default_connection_drain_timeout() -> Duration {
    Duration::from_secs(3600)
}
pub(super) fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_max_surge() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
pub(super) fn default_watch_after_switch() -> Duration {
    Duration::from_secs(10)
}

/// See [`WebConfig::restart_window`].
pub fn default_restart_window() -> Duration {
    Duration::from_secs(60)
}

pub(super) fn default_min_uptime() -> Duration {
    Duration::from_secs(1)
}
pub(super) fn default_max_restarts() -> u32 {
    10
}
pub(super) fn yes() -> bool {
    true
}

impl WebConfig {
    /// The stop signal.
    pub fn stop_signal(&self) -> nix::sys::signal::Signal {
        self.stop_signal.0
    }

    /// How a web instance's process runs, for the supervisor.
    pub fn process_spec(&self) -> ProcessSpec {
        ProcessSpec {
            command: self.command.get_ref().clone(),
            cwd: self.cwd.clone(),
            env: self.env.clone(),
            readiness: self.readiness.clone(),
            start_timeout: self.start_timeout,
            stop_signal: self.stop_signal(),
            stop_to: self.stop_to,
            kill_timeout: self.kill_timeout,
            min_uptime: self.min_uptime,
            restart_window: self.restart_window,
            max_restarts: self.max_restarts,
            autorestart: self.autorestart,
        }
    }

    /// The instance count on this machine.
    pub fn instance_count(&self) -> u32 {
        self.instances.get_ref().resolve()
    }
}
