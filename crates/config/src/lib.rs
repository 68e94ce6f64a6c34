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

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_logs as logs;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

mod canary;
mod checks;
mod fields;
mod load;
mod process;
mod proxy;
mod releases;
mod server;
mod statics;
#[cfg(test)]
mod tests;
mod tls;

use self::checks::*;
pub use self::load::*;
use self::load::{find_key, from_toml, line_of, load_text, read};
pub use self::process::*;
pub use self::proxy::*;
pub use self::releases::*;
pub use self::tls::*;

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
