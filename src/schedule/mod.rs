//! Cron jobs, run by Baton itself (seed 000 ran schedules in an app
//! instance of their own; seed 003 ran a restart cron). One task per job:
//! it sleeps until the next tick of the schedule, runs the command once in
//! the release serving at that moment, and only then looks for the next
//! tick, so a job never overlaps itself and deploys never double it.
//! `[web] cron_restart` ticks the same way, and each tick is a deploy of the
//! serving release; a `[process.<name>] cron_restart` tick restarts that
//! singleton. (Singletons live in the supervisor, beside `web`.)
//!
//! [`keep`] owns these tasks: it starts one for each schedule in the
//! configuration, and looks again whenever a deploy changes it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use tokio::process::Command;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::supervisor::{logs, spawn};

/// What ticks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Schedule {
    /// `[web] cron_restart`.
    WebRestart,
    /// `[process.<name>] cron_restart`.
    SingletonRestart(String),
    /// `[cron.<name>]`.
    Job(String),
}

impl Schedule {
    /// The schedules `config` has.
    fn all_in(config: &Config) -> Vec<Schedule> {
        let web = config
            .web
            .cron_restart
            .is_some()
            .then_some(Schedule::WebRestart);
        let singletons = config
            .process
            .iter()
            .filter(|(_, p)| p.cron_restart.is_some())
            .map(|(name, _)| Schedule::SingletonRestart(name.clone()));
        let jobs = config.cron.keys().map(|name| Schedule::Job(name.clone()));
        web.into_iter().chain(singletons).chain(jobs).collect()
    }

    /// Its cron pattern in `config`, if it is still there.
    fn pattern(&self, config: &Config) -> Option<String> {
        let pattern = match self {
            Schedule::WebRestart => config.web.cron_restart.as_ref(),
            Schedule::SingletonRestart(name) => config.process.get(name)?.cron_restart.as_ref(),
            Schedule::Job(name) => Some(&config.cron.get(name)?.schedule),
        };
        pattern.map(|p| p.get_ref().clone())
    }

    /// What it does at a tick.
    async fn tick(&self, daemon: &Arc<Daemon>, pattern: &str) {
        match self {
            Schedule::WebRestart => restart_web(daemon, pattern).await,
            Schedule::SingletonRestart(name) => restart_singleton(daemon, name, pattern).await,
            Schedule::Job(name) => run_once(daemon, name).await,
        }
    }
}

/// Keeps one task per schedule of the configuration in force, for the
/// daemon's life: a deploy that adds one starts it. A task ends once its
/// schedule is gone.
pub async fn keep(daemon: Arc<Daemon>) {
    let mut changes = daemon.config_changes.subscribe();
    let mut tasks: HashMap<Schedule, JoinHandle<()>> = HashMap::new();
    loop {
        changes.mark_unchanged();
        for schedule in Schedule::all_in(&daemon.config().config) {
            if tasks.get(&schedule).is_none_or(JoinHandle::is_finished) {
                let task = on_each_tick(daemon.clone(), schedule.clone());
                tasks.insert(schedule, tokio::spawn(task));
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = daemon.shutdown.cancelled() => return,
        }
    }
}

/// Runs `schedule` at each of its ticks while the configuration has it.
/// The pattern is read again at every change of configuration, so a deploy
/// that changes or removes it applies at once: a daily job made hourly does
/// not wait for its old daily tick first.
async fn on_each_tick(daemon: Arc<Daemon>, schedule: Schedule) {
    let mut changes = daemon.config_changes.subscribe();
    loop {
        changes.mark_unchanged();
        let Some(pattern) = schedule.pattern(&daemon.config().config) else {
            return;
        };
        match next_tick(&daemon, &pattern, &mut changes).await {
            // A change at the very tick: the configuration in force decides.
            Wake::Tick if schedule.pattern(&daemon.config().config).as_ref() == Some(&pattern) => {
                schedule.tick(&daemon, &pattern).await;
            }
            Wake::Tick => {}
            // The next tick is worked out again, from the pattern in force.
            Wake::ConfigChanged => {}
            Wake::Never => return,
        }
    }
}

/// A `[web] cron_restart` tick: a deploy of the serving release (fresh
/// instances ready before the old ones drain). A tick that meets a running
/// deploy is skipped: that deploy brings fresh instances anyway.
async fn restart_web(daemon: &Arc<Daemon>, pattern: &str) {
    tracing::info!("cron_restart ({pattern}): restarting the web instances");
    match crate::deploy::run_unwatched(daemon, crate::deploy::Kind::Restart).await {
        Ok(release) => tracing::info!("cron_restart: release {release} runs on fresh instances"),
        Err(e) => tracing::warn!("cron_restart: {e}"),
    }
}

/// A `[process.<name>] cron_restart` tick: that singleton is stopped, then
/// started, as at a deploy. A tick that meets a running deploy is skipped.
async fn restart_singleton(daemon: &Arc<Daemon>, name: &str, pattern: &str) {
    let running = daemon
        .singletons()
        .into_iter()
        .find(|i| *i.process == *name);
    let Some(singleton) = running else {
        return;
    };
    let kind = crate::deploy::Kind::Replace {
        instance: singleton.id.to_string(),
        why: format!("cron_restart ({pattern})"),
    };
    match crate::deploy::run_unwatched(daemon, kind).await {
        Ok(_) => tracing::info!("cron_restart: {} has a fresh process", singleton.id),
        Err(e) => tracing::warn!("cron_restart of {}: {e}", singleton.id),
    }
}

/// Why a schedule's wait ended.
enum Wake {
    /// Its tick came.
    Tick,
    /// The configuration changed first.
    ConfigChanged,
    /// The daemon stops, or the pattern has no next tick.
    Never,
}

/// Sleeps until the next tick of `pattern`, or a change of configuration.
async fn next_tick(
    daemon: &Daemon,
    pattern: &str,
    changes: &mut tokio::sync::watch::Receiver<u64>,
) -> Wake {
    let Ok(cron) = crate::config::parse_cron(pattern) else {
        return Wake::Never;
    };
    let now = chrono::Utc::now();
    let Ok(next) = cron.find_next_occurrence(&now, false) else {
        return Wake::Never;
    };
    let wait = (next - now).to_std().unwrap_or_default();
    tokio::select! {
        // In this order: a change that lands as the tick comes does not
        // cost the tick.
        biased;
        _ = daemon.shutdown.cancelled() => Wake::Never,
        _ = tokio::time::sleep(wait) => Wake::Tick,
        // Only a dropped sender errs, and the daemon holds it for life.
        _ = changes.changed() => Wake::ConfigChanged,
    }
}

/// Runs the job `name` once, as the serving release defines it: during a
/// deploy, from the switch on, that is the new release, whose baton.toml
/// may have changed or dropped the job.
async fn run_once(daemon: &Daemon, name: &str) {
    let Some(release) = daemon.current_release() else {
        return;
    };
    let Some(job) = release.config.config.cron.get(name) else {
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
