//! The command line's schema, as clap reads it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::parse_percent;

/// Deploy, reload and roll back web apps with zero failed requests.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// The app's configuration file.
    #[arg(short, long, global = true, default_value = "baton.toml")]
    pub config: PathBuf,
    /// The daemon's state directory (default: `.baton` beside baton.toml).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
    /// The server file of the daemon that runs this app (default: the
    /// nearest baton.toml above the app's with a `[server]` listing it).
    #[arg(long, global = true, env = "BATON_SERVER", value_name = "PATH")]
    pub server: Option<PathBuf>,
    /// The app to act on, by name, in a server of several apps.
    #[arg(long, global = true, value_name = "NAME")]
    pub app: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: start the app and the proxy (foreground by default).
    Up {
        /// Run in the background and return once the daemon answers.
        #[arg(long)]
        detach: bool,
    },
    /// Write a commented baton.toml for the app in this folder (a Node app
    /// is read from its package.json); an existing one is kept.
    Init {
        /// The app's folder (default: this one).
        dir: Option<PathBuf>,
    },
    /// Validate baton.toml without starting anything.
    Check {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show every instance: release, pid, port, state, uptime, restarts
    /// (every app's, at a server of several).
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Redraw every second until `q` or Ctrl-C (as `pm2 monit`); with
        /// `--json` or without a terminal, one report per second.
        #[arg(long, short)]
        watch: bool,
    },
    /// List the apps of the server: hosts, path prefix, release, instances.
    Apps {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop every instance gracefully, then the daemon.
    Stop,
    /// Tell an external load balancer to stop sending traffic here: the
    /// admin /health answers 503 (Baton keeps serving what still arrives).
    Offline,
    /// Undo `baton offline`.
    Online,
    /// Deploy a new release with zero downtime.
    Deploy(DeployArgs),
    /// End the running canary now: it becomes the release (promotion is
    /// an ordinary switch and drain).
    Promote,
    /// End the running canary now: every client back on the stable
    /// release; the canary deploy fails.
    Abort,
    /// Same code, fresh processes; baton.toml is read again.
    Reload {
        /// Wait for a running deploy instead of being refused.
        #[arg(long)]
        wait: bool,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Go back to the previous release (or the one named).
    Rollback {
        /// Release id (see `baton releases`).
        id: Option<String>,
        /// Wait for a running deploy instead of being refused.
        #[arg(long)]
        wait: bool,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Change the instance count: `baton scale web=4`.
    Scale {
        /// `web=N`
        spec: String,
        /// Wait for a running deploy instead of being refused.
        #[arg(long)]
        wait: bool,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// List known releases.
    Releases {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Send load and report every failed request (exit 1 on failures).
    Probe(Box<crate::probe::ProbeArgs>),
    /// Replace the running daemon with this baton binary (after installing a
    /// new Baton), keeping the public sockets open: clients wait, none is
    /// refused.
    Upgrade {
        /// Another baton binary to run instead of this one.
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print systemd units that run this app's daemon at boot (as `pm2
    /// startup`): a Type=notify service and a socket unit for the public
    /// addresses, so that restarting Baton itself refuses nothing.
    Systemd,
    /// Print a shell completion script: `baton completions bash >
    /// /etc/bash_completion.d/baton` (zsh and fish too).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `baton man | man -l -`.
    Man,
    /// Roll a release across servers behind a load balancer, over ssh.
    Fleet {
        /// What to do across the hosts.
        #[command(subcommand)]
        what: FleetCommand,
    },
    /// Write baton.toml files from another tool's configuration.
    Import {
        /// What to import.
        #[command(subcommand)]
        from: ImportFrom,
    },
    /// Show the app's log.
    Logs {
        /// How many past lines.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Only one instance (`web#2`) or process (`web`, `scheduler`).
        #[arg(short, long)]
        instance: Option<String>,
    },
}

/// `baton fleet ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum FleetCommand {
    /// Deploy SOURCE (a folder or tarball, shipped to each host once
    /// packed; default: each host's app folder in place), a batch of hosts
    /// at a time: offline, wait for the balancer, deploy, online.
    Deploy {
        /// A folder or a .tar.gz to release.
        source: Option<PathBuf>,
        /// The hosts.
        #[command(flatten)]
        hosts: FleetHosts,
        /// How the rollout goes.
        #[command(flatten)]
        rollout: FleetPace,
    },
    /// Roll every host back to its previous release (or the one named),
    /// a batch at a time, as a deploy.
    Rollback {
        /// Release id (the same on every host, for a fleet deploy of one
        /// tarball: ids differ per host, so usually the previous one).
        id: Option<String>,
        /// The hosts.
        #[command(flatten)]
        hosts: FleetHosts,
        /// How the rollout goes.
        #[command(flatten)]
        rollout: FleetPace,
    },
    /// Which host runs which release, online or not, ready instances.
    Status {
        /// The hosts.
        #[command(flatten)]
        hosts: FleetHosts,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How a fleet rollout goes.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetPace {
    /// Hosts changed at once.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// How long the balancer takes to act on a host's /health (its check
    /// interval times its fall count, and some).
    #[arg(long, default_value = "35s", value_parser = humantime::parse_duration)]
    pub lb_wait: std::time::Duration,
    /// Print events as JSON lines, and the outcome.
    #[arg(long)]
    pub json: bool,
}

/// Which hosts a fleet command reaches, and how.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetHosts {
    /// ssh destinations (`[user@]host`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// A file with one `DESTINATION [REMOTE_DIR]` per line.
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<PathBuf>,
    /// The app's folder on the hosts (default: this folder's path).
    #[arg(long, value_name = "DIR")]
    pub remote_dir: Option<String>,
    /// An ssh config file instead of ~/.ssh/config (passed to ssh and scp
    /// as -F).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// The baton to run on the hosts.
    #[arg(long, value_name = "PATH", default_value = "baton")]
    pub remote_baton: String,
}

/// What `baton import` reads.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ImportFrom {
    /// A pm2 ecosystem file (`ecosystem.config.js`, `.cjs`, `app.json`,
    /// `.yaml`): one baton.toml for one app; for several, a server file
    /// and a folder per app.
    Pm2 {
        /// The pm2 file.
        file: PathBuf,
        /// Apply `env_<NAME>` over `env`, as `pm2 start --env NAME`.
        #[arg(long)]
        env: Option<String>,
        /// Where to write (default: the pm2 file's folder).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print what was written and left behind as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `baton deploy` takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DeployArgs {
    /// A directory or a .tar.gz/.tgz/.tar to release (default: the app
    /// directory in place).
    #[arg(conflicts_with = "git")]
    pub source: Option<PathBuf>,
    /// Release a branch, tag or commit of the app's git repository.
    #[arg(long, value_name = "REF")]
    pub git: Option<String>,
    /// Try it on this share of the clients first (`10%`; alone:
    /// `[canary] share`), judged against the serving release, then
    /// promoted or rolled back.
    #[arg(long, value_name = "SHARE", num_args = 0..=1, value_parser = parse_percent)]
    pub canary: Option<Option<f64>>,
    /// How long each canary step is watched (default: `[canary]
    /// duration`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub canary_for: Option<std::time::Duration>,
    /// Canary shares in steps, in percent (`5,25,50`); promotion
    /// follows the last.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', value_parser = parse_percent)]
    pub steps: Vec<f64>,
    /// Wait for a running deploy instead of being refused.
    #[arg(long)]
    pub wait: bool,
    /// Print progress as JSON lines.
    #[arg(long)]
    pub json: bool,
}
