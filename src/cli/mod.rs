//! The `baton` command line. `up` runs the daemon; every other subcommand
//! is a thin client of the daemon's control API.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage or configuration.

pub mod client;
pub mod find;
pub mod init;
pub mod output;
pub mod pm2;
pub mod progress;
pub mod systemd;
pub mod upgrade;
pub mod watch;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use http::Method;

use self::client::{ApiClient, ClientError};
use self::find::Target;
use crate::config::{self, Setup};
use crate::daemon::upgrade::exec as upgrade_exec;
use crate::daemon::Exit;
use crate::protocol::{
    DeployRequest, Health, Order, Progress, ReleaseReport, ServerReloadReport, StatusReport,
};

/// Deploy, reload and roll back web apps with zero failed requests.
#[derive(Debug, Parser)]
#[command(name = "baton", version, about, max_term_width = 100)]
pub struct Cli {
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
pub enum Command {
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
    Deploy {
        /// A directory or a .tar.gz/.tgz/.tar to release (default: the app
        /// directory in place).
        #[arg(conflicts_with = "git")]
        source: Option<PathBuf>,
        /// Release a branch, tag or commit of the app's git repository.
        #[arg(long, value_name = "REF")]
        git: Option<String>,
        /// Try it on this share of the clients first (`10%`; alone:
        /// `[canary] share`), judged against the serving release, then
        /// promoted or rolled back.
        #[arg(long, value_name = "SHARE", num_args = 0..=1, value_parser = parse_percent)]
        canary: Option<Option<f64>>,
        /// How long each canary step is watched (default: `[canary]
        /// duration`).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        canary_for: Option<std::time::Duration>,
        /// Canary shares in steps, in percent (`5,25,50`); promotion
        /// follows the last.
        #[arg(long, value_name = "A,B,C", value_delimiter = ',', value_parser = parse_percent)]
        steps: Vec<f64>,
        /// Wait for a running deploy instead of being refused.
        #[arg(long)]
        wait: bool,
        /// Print progress as JSON lines.
        #[arg(long)]
        json: bool,
    },
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
pub enum FleetCommand {
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
pub struct FleetPace {
    /// Hosts changed at once.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// How long the balancer takes to act on a host's /health (its check
    /// interval times its fall count, and some).
    #[arg(long, default_value = "35s", value_parser = humantime::parse_duration)]
    lb_wait: std::time::Duration,
    /// Print events as JSON lines, and the outcome.
    #[arg(long)]
    json: bool,
}

/// Which hosts a fleet command reaches, and how.
#[derive(Debug, clap::Args)]
pub struct FleetHosts {
    /// ssh destinations (`[user@]host`), comma-separated.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<String>,
    /// A file with one `DESTINATION [REMOTE_DIR]` per line.
    #[arg(long, value_name = "FILE")]
    hosts_file: Option<PathBuf>,
    /// The app's folder on the hosts (default: this folder's path).
    #[arg(long, value_name = "DIR")]
    remote_dir: Option<String>,
    /// An ssh config file instead of ~/.ssh/config (passed to ssh and scp
    /// as -F).
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// The baton to run on the hosts.
    #[arg(long, value_name = "PATH", default_value = "baton")]
    remote_baton: String,
}

/// What `baton import` reads.
#[derive(Debug, clap::Subcommand)]
pub enum ImportFrom {
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

/// A failure with its exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn failed(message: impl ToString) -> Failure {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// An exit code with nothing more to say (what was printed says it).
    fn quiet(code: u8) -> Failure {
        Failure {
            code,
            message: String::new(),
        }
    }

    fn usage(message: impl ToString) -> Failure {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure::failed(e)
    }
}

/// Parses the arguments, runs the command, and turns the outcome into an
/// exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("baton: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(None)
}

/// One worker thread means one event loop, like one nginx worker: a
/// current-thread runtime then saves the hand-offs between threads.
fn runtime_with(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = match worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}")))
}

/// What `baton up` runs: the server file (`--server`, or `--config` when
/// it has a `[server]`) or the one app's file.
fn load_setup(cli: &Cli) -> Result<Setup, Failure> {
    let path = cli.server.as_ref().unwrap_or(&cli.config);
    let mut setup = Setup::load(path).map_err(Failure::usage)?;
    if let Some(dir) = &cli.state_dir {
        let dir = std::path::absolute(dir).unwrap_or(dir.clone());
        setup.daemon.state_dir = Some(dir.clone());
        if !setup.server {
            setup.apps[0].config.daemon.state_dir = Some(dir);
        }
    }
    Ok(setup)
}

/// The state directory of the daemon to talk to. A config that does not
/// load any more (edited since `up`) still finds a daemon in the default
/// place, so that `status`, `stop`, and `reload` (which then reports the
/// config error from the daemon) keep working.
fn state_dir(cli: &Cli, file: &Path) -> Result<PathBuf, Failure> {
    if let Some(d) = &cli.state_dir {
        return Ok(d.clone());
    }
    match config::load(file).map_err(Failure::usage) {
        Ok(loaded) => Ok(loaded.state_dir()),
        Err(e) => {
            let base = std::path::absolute(file)
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
                .unwrap_or_default();
            let fallback = base.join(".baton");
            if crate::daemon::socket_path(&fallback).exists() {
                Ok(fallback)
            } else {
                Err(e)
            }
        }
    }
}

/// Runs one command.
///
/// # Errors
/// A [`Failure`] carrying the message and exit code.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Up { detach: false } => up_foreground(&cli),
        Command::Up { detach: true } => up_detached(&cli),
        Command::Check { json } => check(&cli, *json),
        Command::Init { dir } => {
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let file = dir.join("baton.toml");
            if file.exists() {
                return Err(Failure::usage(format!(
                    "{} exists; baton init does not overwrite it",
                    file.display()
                )));
            }
            let found = init::detect(&dir);
            std::fs::write(&file, init::render(&found))
                .map_err(|e| Failure::failed(format!("writing {}: {e}", file.display())))?;
            println!(
                "wrote {} ({}: command {:?}, readiness {}, build {}); check it with `baton check`",
                file.display(),
                if found.node {
                    "a Node app"
                } else {
                    "a generic template"
                },
                found.command,
                found.health.as_deref().unwrap_or("tcp"),
                found.build.as_deref().unwrap_or("none"),
            );
            Ok(())
        }
        Command::Import {
            from:
                ImportFrom::Pm2 {
                    file,
                    env,
                    out,
                    json,
                },
        } => import_pm2(file, env.as_deref(), out.as_deref(), *json),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "baton", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(Failure::failed)?;
            // A page for each subcommand, after the main one, as `git help`
            // has them in one place.
            for sub in <Cli as clap::CommandFactory>::command().get_subcommands() {
                let name = format!("baton-{}", sub.get_name());
                clap_mangen::Man::new(sub.clone())
                    .title(name)
                    .render(&mut out)
                    .map_err(Failure::failed)?;
            }
            use std::io::Write;
            std::io::stdout().write_all(&out).map_err(Failure::failed)?;
            Ok(())
        }
        Command::Fleet { what } => runtime()?.block_on(fleet(what)),
        Command::Systemd => {
            let setup = load_setup(&cli)?;
            let exe = std::env::current_exe().map_err(Failure::failed)?;
            print!("{}", systemd::units(&setup, &exe));
            Ok(())
        }
        Command::Probe(args) => {
            let (ok, failed, total) = runtime()?
                .block_on(crate::probe::run_and_report((**args).clone()))
                .map_err(Failure::usage)?;
            if ok {
                Ok(())
            } else {
                Err(Failure::failed(format!(
                    "{failed} failures in {total} (allowed: {})",
                    args.max_failures
                )))
            }
        }
        _ => {
            let target = find::target(&cli)?;
            let client = ApiClient::new(&target.state_dir);
            runtime()?.block_on(remote(&cli, &target, &client))
        }
    }
}

fn up_foreground(cli: &Cli) -> Result<(), Failure> {
    let setup = load_setup(cli)?;
    init_tracing();
    crate::supervisor::limits::raise_fd_limit();
    // Before the runtime's threads start: it clears the variables.
    let inherited = crate::proxy::activation::Inherited::take_from_env();
    let file = setup.path.clone();
    let exit = runtime_with(setup.daemon.worker_threads)?
        .block_on(crate::daemon::run(setup, inherited))
        .map_err(|e| match e.is_configuration() {
            true => Failure::usage(format!("{}: {e}", file.display())),
            false => Failure::failed(e),
        })?;
    // The runtime and its threads are gone: the exec may renumber fds.
    match exit {
        Exit::Stopped => Ok(()),
        Exit::Upgrade { exe, sockets } => {
            let error = upgrade_exec(&exe, &sockets);
            tracing::error!(
                "cannot run {}: {error}; running this binary again",
                exe.display()
            );
            // The binary this daemon was started from, even if replaced on
            // disk since, so that the app comes back.
            let again = upgrade_exec(Path::new("/proc/self/exe"), &sockets);
            Err(Failure::failed(format!(
                "cannot run {}: {error}, nor this binary again: {again}",
                exe.display()
            )))
        }
    }
}

/// The daemon's own log, on stderr through a queue that never blocks or
/// panics a task (see `QueuedStderr`).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(crate::supervisor::logs::QueuedStderr)
        .log_internal_errors(false)
        .try_init();
}

fn up_detached(cli: &Cli) -> Result<(), Failure> {
    let setup = load_setup(cli)?;
    let state_dir = setup.state_dir();
    let logs = state_dir.join("logs");
    crate::daemon::ensure_state_dir(&state_dir)
        .and_then(|()| std::fs::create_dir_all(&logs))
        .map_err(|e| Failure::failed(format!("creating {}: {e}", logs.display())))?;
    let log_path = logs.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Failure::failed(format!("opening {}: {e}", log_path.display())))?;
    let exe = std::env::current_exe().map_err(Failure::failed)?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("up")
        .arg("--config")
        .arg(&setup.path)
        .arg("--state-dir")
        .arg(&state_dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(Failure::failed)?)
        .stderr(log);
    // The daemon must not die with this terminal's session.
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Failure::failed(format!("cannot start the daemon: {e}")))?;
    let client = ApiClient::new(&state_dir);
    let rt = runtime()?;
    let start_timeout = (setup.apps.iter())
        .map(|a| a.config.web.start_timeout)
        .max()
        .unwrap_or_default();
    let wait = start_timeout + Duration::from_secs(30);
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = text.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            return Err(Failure::failed(format!(
                "the daemon exited ({status}) at start; {}:\n  {}",
                log_path.display(),
                last.join("\n  ")
            )));
        }
        // Started once the first instance is ready, or failed: a command
        // that does not exist must not look like a successful start.
        // Every app of a server must have started.
        if let Ok(all) = rt.block_on(client.get::<Vec<StatusReport>>("/apps")) {
            let starts: Vec<(String, Option<Result<(), String>>)> = (all.iter())
                .map(|s| (s.app.clone(), first_start(s)))
                .collect();
            if let Some((app, Some(Err(why)))) =
                starts.iter().find(|(_, s)| matches!(s, Some(Err(_))))
            {
                let which = if starts.len() > 1 {
                    format!(" {app}")
                } else {
                    String::new()
                };
                return Err(Failure::failed(format!(
                    "the daemon runs (pid {}), but the app{which} did not start: {why}\n  logs in {}; fix it and `baton deploy`, or `baton stop`",
                    child.id(),
                    log_path.display()
                )));
            }
            if !starts.is_empty() && starts.iter().all(|(_, s)| matches!(s, Some(Ok(())))) {
                println!(
                    "baton daemon started (pid {}); logs in {}",
                    child.id(),
                    log_path.display()
                );
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::failed(format!(
                "no instance was ready within {} of the start; logs in {}",
                humantime::format_duration(wait),
                log_path.display()
            )));
        }
        // Polling the socket until the daemon answers; there is no event to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the daemon's first start went: `Ok` once a web instance is ready,
/// `Err` with the reason once every one has failed, `None` meanwhile.
fn first_start(status: &StatusReport) -> Option<Result<(), String>> {
    let web: Vec<_> = status
        .instances
        .iter()
        .filter(|i| i.process == "web")
        .collect();
    if web
        .iter()
        .any(|i| i.state == crate::supervisor::State::Ready)
    {
        return Some(Ok(()));
    }
    // Failed, or restarting without ever having been ready (the daemon's
    // first start retries: a command that does not exist exits 127 again
    // and again, with a growing backoff).
    let not_starting = |i: &&&crate::protocol::InstanceReport| {
        i.state.is_terminal() || (i.restarts > 0 && i.reason.is_some())
    };
    if !web.is_empty() && web.iter().all(|i| not_starting(&i)) {
        let why = web
            .iter()
            .map(|i| {
                format!(
                    "{}: {}",
                    i.instance,
                    i.reason.as_deref().unwrap_or("stopped")
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Some(Err(why));
    }
    None
}

fn check(cli: &Cli, json: bool) -> Result<(), Failure> {
    let path = cli.server.as_ref().unwrap_or(&cli.config);
    if config::is_server_file(path) {
        return check_server(path, json);
    }
    match config::load(&cli.config) {
        Ok(l) => {
            let c = &l.config;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": l.path, "app": c.app.name, "instances": c.web.instance_count(), "listen": c.proxy.listen_addrs()})
                );
            } else {
                println!(
                    "{}: ok (app {}, {} web instance{}, listening on {})",
                    l.path.display(),
                    c.app.name,
                    c.web.instance_count(),
                    crate::plural(c.web.instance_count() as usize),
                    c.proxy
                        .listen_addrs()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(())
        }
        Err(e) => Err(config_failure(e, json)),
    }
}

/// `baton check`'s answer to a configuration that does not load: the
/// error as JSON too with `--json`, exit 2.
fn config_failure(e: config::ConfigError, json: bool) -> Failure {
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": false, "file": e.file, "line": e.line, "field": e.field, "message": e.message})
        );
    }
    Failure::usage(e)
}

async fn remote(cli: &Cli, target: &Target, client: &ApiClient) -> Result<(), Failure> {
    // `?app=NAME` for the routes about one app.
    let app_query = |sep: char| match &target.app {
        Some(app) => format!("{sep}app={}", percent(app)),
        None => String::new(),
    };
    match &cli.command {
        Command::Status { json, watch: true } => {
            watch_status(client, target.at_server, &app_query('?'), *json).await
        }
        Command::Status { json, .. } if target.at_server => {
            let all: Vec<StatusReport> = client.get("/apps").await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                for s in &all {
                    print!("{}", output::status_table(s));
                    println!();
                }
            }
            exit_for(all.iter().map(StatusReport::health).max())
        }
        Command::Status { json, .. } => {
            let s: StatusReport = client.get(&format!("/status{}", app_query('?'))).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                print!("{}", output::status_table(&s));
            }
            exit_for(Some(s.health()))
        }
        Command::Apps { json } => {
            let all: Vec<StatusReport> = client.get("/apps").await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                print!("{}", output::apps_table(&all));
            }
            Ok(())
        }
        Command::Reload { json, .. } if target.at_server => {
            let report: ServerReloadReport = client.post("/server/reload", None).await?;
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                let list = |names: &[String]| match names {
                    [] => "none".to_string(),
                    names => names.join(", "),
                };
                println!(
                    "apps added: {}; removed: {}; kept as they run: {}",
                    list(&report.added),
                    list(&report.removed),
                    list(&report.kept)
                );
            }
            Ok(())
        }
        Command::Releases { json } => {
            let r: Vec<ReleaseReport> = client.get(&format!("/releases{}", app_query('?'))).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", output::releases_table(&r));
            }
            Ok(())
        }
        Command::Upgrade { binary, json } => upgrade::run(client, binary.as_deref(), *json).await,
        Command::Stop => {
            let pid = client
                .get::<StatusReport>("/status")
                .await
                .ok()
                .map(|s| s.pid);
            client.send(Method::POST, "/stop", None).await?;
            // Stopped once the daemon let go of its state lock (every
            // instance stopped, the socket removed) and its process is
            // gone: a deploy in progress may hold it a moment longer.
            let deadline = Instant::now() + Duration::from_secs(600);
            while crate::daemon::lock::is_held(client.state_dir())
                || pid.is_some_and(crate::supervisor::procfs::is_running)
            {
                if Instant::now() > deadline {
                    return Err(Failure::failed(
                        "the daemon is still running after 10 minutes",
                    ));
                }
                // Polled: there is no event for another process's exit.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            println!("stopped");
            Ok(())
        }
        Command::Offline | Command::Online => {
            let offline = matches!(cli.command, Command::Offline);
            let path = if offline { "/offline" } else { "/online" };
            client.send(Method::POST, path, None).await?;
            println!(
                "{}",
                if offline {
                    "offline: /health answers 503"
                } else {
                    "online"
                }
            );
            Ok(())
        }
        Command::Logs {
            lines,
            follow,
            instance,
        } => {
            let mut path = format!("/logs?lines={lines}&follow={follow}{}", app_query('&'));
            if let Some(i) = instance {
                path.push_str(&format!("&instance={}", i.replace('#', "%23")));
            }
            client
                .stream_lines(Method::GET, &path, None, |l| println!("{l}"))
                .await?;
            Ok(())
        }
        Command::Deploy {
            source,
            git,
            canary,
            canary_for,
            steps,
            wait,
            json,
        } => {
            let source = source.as_ref().map(|s| {
                std::path::absolute(s)
                    .unwrap_or(s.clone())
                    .display()
                    .to_string()
            });
            let canary =
                (canary.is_some() || canary_for.is_some() || !steps.is_empty()).then(|| {
                    crate::protocol::CanaryAsk {
                        share: canary.flatten(),
                        step_ms: canary_for.map(|d| d.as_millis() as u64),
                        steps: steps.clone(),
                    }
                });
            let order = Order::Deploy {
                source,
                git: git.clone(),
                canary,
            };
            watch_deploy(client, target, order, *wait, *json).await
        }
        Command::Promote | Command::Abort => {
            let (order, done) = if matches!(cli.command, Command::Promote) {
                ("promote", "promoting the canary: it becomes the release")
            } else {
                (
                    "abort",
                    "aborting the canary: every client back on the stable release",
                )
            };
            let path = format!("/canary/{order}{}", app_query('?'));
            let _: serde_json::Value = client.post(&path, None).await?;
            println!("{done}");
            Ok(())
        }
        Command::Reload { wait, json } => {
            watch_deploy(client, target, Order::Reload, *wait, *json).await
        }
        Command::Rollback { id, wait, json } => {
            let order = Order::Rollback { to: id.clone() };
            watch_deploy(client, target, order, *wait, *json).await
        }
        Command::Scale { spec, wait, json } => {
            let (process, count) = spec.split_once('=').ok_or_else(|| {
                Failure::usage(format!("expected PROCESS=COUNT like web=4, got {spec:?}"))
            })?;
            if process != "web" {
                return Err(Failure::usage(format!(
                    "unknown process {process:?}; Baton runs `web`"
                )));
            }
            let count: u32 = count
                .parse()
                .map_err(|_| Failure::usage(format!("{count:?} is not a whole number")))?;
            let order = Order::Scale { instances: count };
            watch_deploy(client, target, order, *wait, *json).await
        }
        Command::Up { .. }
        | Command::Check { .. }
        | Command::Probe(_)
        | Command::Fleet { .. }
        | Command::Systemd
        | Command::Completions { .. }
        | Command::Init { .. }
        | Command::Import { .. }
        | Command::Man => {
            unreachable!("handled before connecting")
        }
    }
}

/// `baton import pm2`: writes the files (none if any exists already), then
/// names every field left behind.
fn import_pm2(
    file: &Path,
    env: Option<&str>,
    out: Option<&Path>,
    json: bool,
) -> Result<(), Failure> {
    let read = pm2::read(file).map_err(Failure::usage)?;
    let source = file.file_name().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut imported = pm2::convert(&read.apps, &source, env).map_err(Failure::usage)?;
    if read.deploy {
        imported.notes.push(pm2::deploy_note());
    }
    let out = out.map_or_else(
        || file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        Path::to_path_buf,
    );
    let paths: Vec<PathBuf> = imported.files.iter().map(|(p, _)| out.join(p)).collect();
    if let Some(existing) = paths.iter().find(|p| p.exists()) {
        return Err(Failure::usage(format!(
            "{} exists; baton import does not overwrite it (--out DIR writes elsewhere)",
            existing.display()
        )));
    }
    for (path, (_, text)) in paths.iter().zip(&imported.files) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Failure::failed(format!("creating {}: {e}", dir.display())))?;
        }
        std::fs::write(path, text)
            .map_err(|e| Failure::failed(format!("writing {}: {e}", path.display())))?;
    }
    if json {
        let report = serde_json::json!({
            "files": paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "left_behind": imported.notes,
        });
        println!("{report:#}");
        return Ok(());
    }
    for path in &paths {
        println!("wrote {}", path.display());
    }
    if !imported.notes.is_empty() {
        println!("not carried over:");
        for note in &imported.notes {
            println!("  {note}");
        }
    }
    println!(
        "check with `baton check -c {}`, then `baton up`",
        paths[0].display()
    );
    Ok(())
}

/// `baton status --watch`: a frame a second until the user stops it.
async fn watch_status(
    client: &ApiClient,
    at_server: bool,
    app_query: &str,
    json: bool,
) -> Result<(), Failure> {
    let mut screen = watch::Screen::open();
    loop {
        let reports: Vec<StatusReport> = if at_server {
            client.get("/apps").await?
        } else {
            vec![client.get(&format!("/status{app_query}")).await?]
        };
        let frame = if json {
            let value = if at_server {
                serde_json::to_value(&reports)
            } else {
                serde_json::to_value(&reports[0])
            };
            value.map(|v| v.to_string()).unwrap_or_default()
        } else {
            let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
            let tables: Vec<String> = reports.iter().map(output::status_table).collect();
            format!("{stamp}   q or Ctrl-C to quit\n\n{}", tables.join("\n"))
        };
        screen.draw(&frame);
        if !screen.wait().await {
            return Ok(());
        }
    }
}

/// `baton check` on a server file: the server and every app it lists.
fn check_server(path: &Path, json: bool) -> Result<(), Failure> {
    match Setup::load(path) {
        Ok(setup) => {
            let apps: Vec<&str> = setup
                .apps
                .iter()
                .map(|a| a.config.app.name.as_str())
                .collect();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": true, "file": setup.path, "apps": apps, "listen": setup.proxy.listen_addrs()})
                );
            } else {
                println!(
                    "{}: ok (server of {} app{}: {})",
                    setup.path.display(),
                    apps.len(),
                    crate::plural(apps.len()),
                    apps.join(", ")
                );
            }
            Ok(())
        }
        Err(e) => Err(config_failure(e, json)),
    }
}

/// `baton fleet deploy|rollback|status`.
async fn fleet(what: &FleetCommand) -> Result<(), Failure> {
    let (hosts, json) = match what {
        FleetCommand::Deploy { hosts, rollout, .. }
        | FleetCommand::Rollback { hosts, rollout, .. } => (hosts, rollout.json),
        FleetCommand::Status { hosts, json } => (hosts, *json),
    };
    let here = std::env::current_dir().map_err(Failure::failed)?;
    let default_dir = hosts
        .remote_dir
        .clone()
        .unwrap_or_else(|| here.display().to_string());
    let list = crate::fleet::hosts(&hosts.hosts, hosts.hosts_file.as_deref(), &default_dir)
        .map_err(Failure::usage)?;
    let ssh = crate::fleet::Ssh {
        config: hosts.ssh_config.clone(),
        baton: hosts.remote_baton.clone(),
    };
    let (change, batch, lb_wait, _packed) = match what {
        FleetCommand::Status { .. } => {
            let states = crate::fleet::status(&ssh, &list).await;
            print_fleet(&states, json);
            return match states.iter().find_map(|s| s.error.as_ref()) {
                Some(e) => Err(Failure::failed(e)),
                None => Ok(()),
            };
        }
        FleetCommand::Deploy {
            source, rollout, ..
        } => {
            let packed = match source {
                Some(s) => Some(crate::fleet::tarball(s).map_err(Failure::usage)?),
                None => None,
            };
            let tarball = packed.as_ref().map(|(_, t)| t.clone());
            (
                crate::fleet::Change::Deploy { tarball },
                rollout.batch,
                rollout.lb_wait,
                packed,
            )
        }
        FleetCommand::Rollback { id, rollout, .. } => (
            crate::fleet::Change::Rollback { to: id.clone() },
            rollout.batch,
            rollout.lb_wait,
            None,
        ),
    };
    let rollout = crate::fleet::Rollout {
        hosts: list,
        batch,
        lb_wait,
        ssh,
        json,
    };
    let outcome = rollout.run(&change).await;
    if json {
        println!("{}", serde_json::to_string(&outcome).unwrap_or_default());
    } else {
        print_fleet(&outcome.hosts, false);
    }
    match outcome.error {
        Some(e) => Err(Failure::failed(format!("the rollout stopped: {e}"))),
        None => Ok(()),
    }
}

/// The fleet table (or JSON): host, release, online, ready instances.
fn print_fleet(states: &[crate::fleet::HostState], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(states).unwrap_or_default()
        );
        return;
    }
    let mut rows = vec![["HOST", "RELEASE", "ONLINE", "READY", "NOTE"]
        .map(String::from)
        .to_vec()];
    for s in states {
        rows.push(vec![
            s.host.clone(),
            s.release.clone().unwrap_or_else(|| "-".into()),
            if s.online { "yes" } else { "no" }.into(),
            s.ready.to_string(),
            s.error.clone().unwrap_or_default(),
        ]);
    }
    print!("{}", output::table(rows));
}

/// `10%` or `10`, 0 to 100.
fn parse_percent(text: &str) -> Result<f64, String> {
    crate::config::Percent::parse(text).map(|p| p.0)
}

/// The exit of `baton status`, as `systemctl status` tells health: 3
/// degraded, 4 down (the worst app's, at a server).
fn exit_for(health: Option<Health>) -> Result<(), Failure> {
    match health {
        None | Some(Health::Healthy) => Ok(()),
        Some(Health::Degraded) => Err(Failure::quiet(3)),
        Some(Health::Down) => Err(Failure::quiet(4)),
    }
}

/// A query value with the characters a URL query cannot hold escaped.
fn percent(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints a deploy's progress until its end; exit 0 only once the new
/// release serves all traffic.
async fn watch_deploy(
    client: &ApiClient,
    target: &Target,
    order: Order,
    wait: bool,
    json: bool,
) -> Result<(), Failure> {
    let mut outcome: Option<Result<(), Failure>> = None;
    let app = target.app.clone();
    let body = serde_json::to_value(DeployRequest { order, wait, app })
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut steps = (!json).then(progress::Steps::for_stdout);
    client
        .stream_lines(Method::POST, "/deploy", Some(body), |line| {
            if json {
                println!("{line}");
            }
            match serde_json::from_str::<Progress>(line) {
                Ok(Progress::Step { message, .. }) => {
                    if let Some(steps) = &mut steps {
                        steps.step(&message);
                    }
                }
                Ok(Progress::Done { release, switch_ms, total_ms }) => {
                    if let Some(steps) = &mut steps {
                        steps.end(true);
                        println!("release {release} serves all traffic (switched after {switch_ms} ms, done in {total_ms} ms)");
                    }
                    outcome = Some(Ok(()));
                }
                Ok(Progress::Failed {
                    message,
                    config_error,
                }) => {
                    if let Some(steps) = &mut steps {
                        steps.end(false);
                    }
                    outcome = Some(Err(if config_error {
                        Failure::usage(message)
                    } else {
                        Failure::failed(message)
                    }))
                }
                _ => {}
            }
        })
        .await?;
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(failure)) => Err(failure),
        None => Err(Failure::failed(
            "the daemon closed the progress stream before the end",
        )),
    }
}
