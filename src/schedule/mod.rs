//! Cron jobs, run by Baton itself (seed 000 ran schedules in an app
//! instance of their own; seed 003 ran a restart cron). One task per job:
//! it sleeps until the next tick of the schedule, runs the command once in
//! the release serving at that moment, and only then looks for the next
//! tick, so a job never overlaps itself and deploys never double it.
//! `[web] cron_restart` ticks the same way, and each tick is a deploy of the
//! serving release; a `[process.<name>] cron_restart` tick restarts that
//! singleton. (Singletons live in the supervisor, beside `web`.)

use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;

use crate::daemon::Daemon;
use crate::supervisor::{logs, spawn};

/// Restarts the web instances at each tick of `[web] cron_restart`, as a
/// deploy of the serving release (fresh instances ready before the old ones
/// drain), for the daemon's life. A tick that meets a running deploy is
/// skipped: that deploy brings fresh instances anyway.
pub async fn cron_restart(daemon: Arc<Daemon>) {
    loop {
        let Some(pattern) = daemon.config().config.web.cron_restart.clone() else {
            return;
        };
        if !next_tick(&daemon, pattern.get_ref()).await {
            return;
        }
        tracing::info!(
            "cron_restart ({}): restarting the web instances",
            pattern.get_ref()
        );
        match crate::deploy::run_unwatched(&daemon, crate::deploy::Kind::Restart).await {
            Ok(release) => {
                tracing::info!("cron_restart: release {release} runs on fresh instances")
            }
            Err(e) => tracing::warn!("cron_restart: {e}"),
        }
    }
}

/// Restarts the singleton `[process.<name>]` at each tick of its
/// `cron_restart`, for the daemon's life: stopped, then started, as at a
/// deploy. A tick that meets a running deploy is skipped.
pub async fn cron_restart_singleton(daemon: Arc<Daemon>, name: String) {
    loop {
        let config = daemon.config();
        let Some(pattern) = config
            .config
            .process
            .get(&name)
            .and_then(|p| p.cron_restart.clone())
        else {
            return;
        };
        if !next_tick(&daemon, pattern.get_ref()).await {
            return;
        }
        let running = daemon
            .singletons()
            .into_iter()
            .find(|i| *i.process == *name);
        let Some(singleton) = running else {
            continue;
        };
        let kind = crate::deploy::Kind::Replace {
            instance: singleton.id.to_string(),
            why: format!("cron_restart ({})", pattern.get_ref()),
        };
        match crate::deploy::run_unwatched(&daemon, kind).await {
            Ok(_) => tracing::info!("cron_restart: {} has a fresh process", singleton.id),
            Err(e) => tracing::warn!("cron_restart of {}: {e}", singleton.id),
        }
    }
}

/// Runs `[cron.<name>]` for the daemon's life. The job's schedule and
/// command are read again at every tick, so a deploy that changes them
/// applies from the next tick.
pub async fn run(daemon: Arc<Daemon>, name: String) {
    loop {
        let Some(job) = daemon.config().config.cron.get(&name).cloned() else {
            return;
        };
        if !next_tick(&daemon, job.schedule.get_ref()).await {
            return;
        }
        run_once(&daemon, &name, &job).await;
    }
}

/// Sleeps until the next tick of `pattern`. False when the daemon stops
/// first, or the pattern has no next tick.
async fn next_tick(daemon: &Daemon, pattern: &str) -> bool {
    let Ok(cron) = crate::config::parse_cron(pattern) else {
        return false;
    };
    let now = chrono::Utc::now();
    let Ok(next) = cron.find_next_occurrence(&now, false) else {
        return false;
    };
    let wait = (next - now).to_std().unwrap_or_default();
    tokio::select! {
        _ = daemon.shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

async fn run_once(daemon: &Daemon, name: &str, job: &crate::config::CronJob) {
    let Some(release) = daemon.current_release() else {
        return;
    };
    let who = format!("cron:{name}");
    let sink = daemon.ctx.logs.clone();
    let note = |msg: String| sink.write_line(&format!("{} {msg}", logs::prefix(&who, "baton")));
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(job.command.get_ref())
        .current_dir(&release.dir)
        .envs(&job.env)
        .env("BATON_RELEASE", &release.id)
        .env("BATON_ROLE", &who)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    spawn::prepare(&mut cmd, None);
    let mut child = match spawn::spawn(cmd) {
        Ok(c) => c,
        Err(e) => return note(format!("cannot start: {e}")),
    };
    let pgid = child.id().unwrap_or(0) as i32;
    daemon.ctx.reaper.register(pgid);
    note(format!("run started in release {}", release.id));
    let tail = logs::Tail::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(logs::capture(
            out,
            who.clone(),
            "out",
            sink.clone(),
            tail.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(logs::capture(
            err,
            who.clone(),
            "err",
            sink.clone(),
            tail.clone(),
        )));
    }
    let group = nix::unistd::Pid::from_raw(pgid);
    match tokio::time::timeout(job.timeout, child.wait()).await {
        Ok(Ok(status)) => note(format!("run ended: {status}")),
        Ok(Err(e)) => note(format!("run lost: {e}")),
        Err(_) => {
            note(format!(
                "run killed after timeout ({})",
                humantime::format_duration(job.timeout)
            ));
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait().await;
        }
    }
    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    daemon.ctx.reaper.unregister(pgid);
    for r in readers {
        let _ = r.await;
    }
}
