//! The `baton` command line. `up` runs the daemon; every other subcommand
//! is a thin client of the daemon's control API.
//!
//! Exit codes: 0 done, 1 failed, 2 bad usage or configuration.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use baton_config as config;
use baton_daemon as daemon;
use baton_fleet as fleet;
use baton_logs as logs;
use baton_probe as probe;
use baton_protocol as protocol;
use baton_proxy as proxy;
use baton_supervisor as supervisor;

mod args;
pub(crate) mod client;
mod commands;
pub(crate) mod find;
pub(crate) mod output;
pub(crate) mod pm2;
pub(crate) mod progress;
pub(crate) mod systemd;
pub(crate) mod watch;

pub(crate) use self::args::{Cli, Command, ImportFrom};

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use self::client::{ApiClient, ClientError};
use self::find::Target;
use crate::config::Setup;
use crate::protocol::Order;

/// A failure with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
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
    // The reaper: the same binary, run by the daemon as its helper.
    if std::env::args().nth(1).as_deref() == Some(crate::supervisor::reaper::REAPER_ARG) {
        crate::supervisor::reaper::run_helper();
        return ExitCode::SUCCESS;
    }
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
pub(crate) fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Up { detach: false } => commands::up::up_foreground(&cli),
        Command::Up { detach: true } => commands::up::up_detached(&cli),
        Command::Check { json } => commands::check::check(&cli, *json),
        Command::Init { dir } => commands::init::run(dir.as_deref()),
        Command::Import {
            from:
                ImportFrom::Pm2 {
                    file,
                    env,
                    out,
                    json,
                },
        } => commands::import::import_pm2(file, env.as_deref(), out.as_deref(), *json),
        Command::Completions { shell } => commands::docs::completions(*shell),
        Command::Man => commands::docs::man(),
        Command::Fleet { what } => runtime()?.block_on(commands::fleet::fleet(what)),
        Command::Systemd => {
            let setup = load_setup(&cli)?;
            let exe = std::env::current_exe().map_err(Failure::failed)?;
            print!("{}", systemd::units(&setup, &exe));
            Ok(())
        }
        Command::Probe(args) => commands::probe::probe(args),
        _ => {
            let target = find::target(&cli)?;
            let client = ApiClient::new(&target.state_dir);
            runtime()?.block_on(remote(&cli, &target, &client))
        }
    }
}

/// A command for the daemon, over its control socket.
async fn remote(cli: &Cli, target: &Target, client: &ApiClient) -> Result<(), Failure> {
    use commands::{control, deploy, logs, status};
    match &cli.command {
        Command::Status { json, watch } => status::status(client, target, *json, *watch).await,
        Command::Apps { json } => status::apps(client, *json).await,
        Command::Reload { json, .. } if target.at_server => {
            control::reload_server(client, *json).await
        }
        Command::Releases { json } => logs::releases(client, target, *json).await,
        Command::Upgrade { binary, json } => {
            commands::upgrade::run(client, binary.as_deref(), *json).await
        }
        Command::Stop => control::stop(client).await,
        Command::Offline => control::online(client, false).await,
        Command::Online => control::online(client, true).await,
        Command::Logs {
            lines,
            follow,
            instance,
        } => logs::logs(client, target, *lines, *follow, instance.as_deref()).await,
        Command::Deploy(ask) => deploy::deploy(client, target, ask).await,
        Command::Promote => control::canary(client, target, true).await,
        Command::Abort => control::canary(client, target, false).await,
        Command::Reload { wait, json } => {
            deploy::watch_deploy(client, target, Order::Reload, *wait, *json).await
        }
        Command::Rollback { id, wait, json } => {
            let order = Order::Rollback { to: id.clone() };
            deploy::watch_deploy(client, target, order, *wait, *json).await
        }
        Command::Scale { spec, wait, json } => {
            deploy::scale(client, target, spec, *wait, *json).await
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

/// The app a command is about, when the daemon runs several (`?app=`).
fn app(target: &Target) -> Option<&str> {
    target.app.as_deref()
}

/// `10%` or `10`, 0 to 100.
fn parse_percent(text: &str) -> Result<f64, String> {
    crate::config::Percent::parse(text).map(|p| p.0)
}
