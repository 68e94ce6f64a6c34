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
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::app::App;
use crate::config::{Config, CronPattern};
use crate::deploy::Kind;
use crate::logs;
use crate::supervisor::oneoff::{Ended, OneOff};

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
    fn pattern(&self, config: &Config) -> Option<CronPattern> {
        let pattern = match self {
            Schedule::WebRestart => config.web.cron_restart.as_ref(),
            Schedule::SingletonRestart(name) => config.process.get(name)?.cron_restart.as_ref(),
            Schedule::Job(name) => Some(&config.cron.get(name)?.schedule),
        };
        pattern.cloned()
    }

    /// How the log names it.
    fn describe(&self) -> String {
        match self {
            Schedule::WebRestart => "[web] cron_restart".into(),
            Schedule::SingletonRestart(name) => format!("[process.{name}] cron_restart"),
            Schedule::Job(name) => format!("[cron.{name}]"),
        }
    }

    /// What it does at a tick.
    async fn tick(&self, app: &Arc<App>, pattern: &str, at: chrono::DateTime<chrono::Utc>) {
        match self {
            Schedule::WebRestart => restart_web(app, pattern).await,
            Schedule::SingletonRestart(name) => restart_singleton(app, name, pattern).await,
            Schedule::Job(name) => run_once(app, name, at).await,
        }
    }
}

/// Keeps one task per schedule of the configuration in force, for the
/// daemon's life: a deploy that adds one starts it. A task ends once its
/// schedule is gone.
pub(crate) async fn keep(app: Arc<App>) {
    let mut changes = app.config_changes();
    let mut tasks: HashMap<Schedule, JoinHandle<()>> = HashMap::new();
    loop {
        changes.mark_unchanged();
        for schedule in Schedule::all_in(&app.config().config) {
            if tasks.get(&schedule).is_none_or(JoinHandle::is_finished) {
                let task = on_each_tick(app.clone(), schedule.clone());
                tasks.insert(schedule, tokio::spawn(task));
            }
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = app.stopping.cancelled() => return,
        }
    }
}

/// Runs `schedule` at each of its ticks while the configuration has it.
/// The pattern is read again at every change of configuration, so a deploy
/// that changes or removes it applies at once: a daily job made hourly does
/// not wait for its old daily tick first.
///
/// Ticks come from the schedule, not from the end of the last run: the
/// next tick is the one after the tick just run, so a job that takes 0.3 s
/// of a `* * * * * *` schedule still runs at each whole second. A tick
/// that passes while a run is still going is skipped, and the log says so.
async fn on_each_tick(app: Arc<App>, schedule: Schedule) {
    let mut changes = app.config_changes();
    let mut after = whole_second(chrono::Utc::now());
    loop {
        changes.mark_unchanged();
        let Some(pattern) = schedule.pattern(&app.config().config) else {
            return;
        };
        match next_tick(&app, &pattern, after, &mut changes).await {
            // A change at the very tick: the configuration in force decides.
            Wake::Tick(at) if schedule.pattern(&app.config().config).as_ref() == Some(&pattern) => {
                schedule.tick(&app, pattern.as_str(), at).await;
                after = at;
                let skipped = skip_passed(&pattern, &mut after, chrono::Utc::now());
                if skipped > 0 {
                    tracing::warn!(
                        "{}: {skipped} tick{} of {:?} skipped: the run was still going",
                        schedule.describe(),
                        crate::protocol::plural(skipped),
                        pattern.as_str()
                    );
                }
            }
            Wake::Tick(at) => after = at,
            // The next tick is worked out again, from the pattern in force.
            Wake::ConfigChanged => after = whole_second(chrono::Utc::now()),
            Wake::Never => return,
        }
    }
}

/// `t` without its fraction of a second. croner keeps the fraction of the
/// time it is given in the tick it finds: from 10.727, the next tick of a
/// schedule of every second would be 11.727, and every run would start
/// 0.727 s late (and drift, when each search started from the end of the
/// last run).
fn whole_second(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::Timelike::with_nanosecond(&t, 0).unwrap_or(t)
}

/// Moves `after` past the ticks of `pattern` up to `now`; returns how
/// many there were.
fn skip_passed(
    pattern: &CronPattern,
    after: &mut chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> usize {
    let mut skipped = 0;
    while let Ok(tick) = pattern.cron().find_next_occurrence(after, false) {
        if tick > now {
            break;
        }
        *after = tick;
        skipped += 1;
    }
    skipped
}

/// A `[web] cron_restart` tick: a deploy of the serving release (fresh
/// instances ready before the old ones drain). A tick that meets a running
/// deploy is skipped: that deploy brings fresh instances anyway.
async fn restart_web(app: &App, pattern: &str) {
    tracing::info!("cron_restart ({pattern}): restarting the web instances");
    match app.deployer().run_unwatched(Kind::Restart).await {
        Ok(release) => tracing::info!("cron_restart: release {release} runs on fresh instances"),
        Err(e) => tracing::warn!("cron_restart: {e}"),
    }
}

/// A `[process.<name>] cron_restart` tick: that singleton is stopped, then
/// started, as at a deploy. A tick that meets a running deploy is skipped.
async fn restart_singleton(app: &App, name: &str, pattern: &str) {
    let running = app
        .singletons()
        .into_iter()
        .find(|i| i.process.name() == name);
    let Some(singleton) = running else {
        return;
    };
    let kind = Kind::Replace {
        instance: singleton.id.to_string(),
        why: format!("cron_restart ({pattern})"),
    };
    match app.deployer().run_unwatched(kind).await {
        Ok(_) => tracing::info!("cron_restart: {} has a fresh process", singleton.id),
        Err(e) => tracing::warn!("cron_restart of {}: {e}", singleton.id),
    }
}

/// Why a schedule's wait ended.
enum Wake {
    /// Its tick, at this time, came.
    Tick(chrono::DateTime<chrono::Utc>),
    /// The configuration changed first.
    ConfigChanged,
    /// The daemon stops, or the pattern has no next tick.
    Never,
}

/// Sleeps until the tick of `pattern` after `after`, or a change of
/// configuration.
async fn next_tick(
    app: &App,
    pattern: &CronPattern,
    after: chrono::DateTime<chrono::Utc>,
    changes: &mut tokio::sync::watch::Receiver<crate::config::Loaded>,
) -> Wake {
    let Ok(next) = pattern.cron().find_next_occurrence(&after, false) else {
        return Wake::Never;
    };
    let wait = (next - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        // In this order: a change that lands as the tick comes does not
        // cost the tick.
        biased;
        _ = app.stopping.cancelled() => Wake::Never,
        _ = tokio::time::sleep(wait) => Wake::Tick(next),
        // Only a dropped sender errs, and the app holds it for life.
        _ = changes.changed() => Wake::ConfigChanged,
    }
}

/// Runs the job `name` once, as the serving release defines it: during a
/// deploy, from the switch on, that is the new release, whose baton.toml
/// may have changed or dropped the job.
async fn run_once(app: &App, name: &str, tick: chrono::DateTime<chrono::Utc>) {
    let Some(release) = app.current_release() else {
        return;
    };
    let Some(job) = release.config.config.cron.get(name) else {
        return;
    };
    let who = format!("cron:{name}");
    let note = |msg: String| {
        let line = format!("{} {msg}", logs::prefix(&who, "baton"));
        app.ctx.logs.write_line(&line);
    };
    // The tick it runs for, as `BATON_CRON_TICK`: a job can tell which
    // run it is, whenever it started.
    let tick = tick.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let mut env = job.env.clone();
    env.insert("BATON_CRON_TICK".into(), tick.clone());
    let run = OneOff {
        who: &who,
        command: job.command.get_ref(),
        cwd: &release.dir,
        env: &env,
        release: &release.id,
        timeout: job.timeout,
    };
    note(format!(
        "run started in release {} for the tick of {tick}",
        release.id
    ));
    match run.run(&app.ctx).await {
        Ok(Ended::Exited(status)) => note(format!("run ended: {status}")),
        Ok(Ended::Lost(e)) => note(format!("run lost: {e}")),
        Ok(Ended::TimedOut) => note(format!(
            "run killed after timeout ({})",
            humantime::format_duration(job.timeout)
        )),
        Err(e) => note(format!("cannot start: {e}")),
    }
}
