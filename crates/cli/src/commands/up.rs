//! `baton up`: the daemon in the foreground, or started in the
//! background and waited for until its first start is settled.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::ApiClient;
use crate::daemon::upgrade::exec as upgrade_exec;
use crate::daemon::Exit;
use crate::protocol::{Route, StatusReport};
use crate::{load_setup, runtime, runtime_with, Cli, Failure};

pub(crate) fn up_foreground(cli: &Cli) -> Result<(), Failure> {
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
        .with_writer(crate::logs::QueuedStderr)
        .log_internal_errors(false)
        .try_init();
}

pub(crate) fn up_detached(cli: &Cli) -> Result<(), Failure> {
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
    crate::supervisor::sys::new_session(&mut cmd);
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
        if let Ok(all) = rt.block_on(client.get::<Vec<StatusReport>>(&Route::Apps.url(None, &[]))) {
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
        .filter(|i| i.process.is_web())
        .collect();
    if web.iter().any(|i| i.state == crate::protocol::State::Ready) {
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
