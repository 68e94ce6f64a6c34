//! The task that owns one instance's process: spawn, readiness,
//! restarts with backoff, drain and stop, its state in [`Life`].

use super::*;
use crate::config::{ReadinessKind, StopTo};
use crate::logs::{self, Tail};
use crate::ports::PortLease;
use crate::proxy::upstream::Upstream;
use crate::readiness::{self, Channel};
use crate::spawn;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

/// The task's own state; only it touches the child.
pub(super) struct InstanceTask {
    pub(super) spec: InstanceSpec,
    pub(super) ctx: Context,
    pub(super) status: watch::Sender<Status>,
    pub(super) ctl: mpsc::UnboundedReceiver<Control>,
    pub(super) upstream: Arc<Upstream>,
    pub(super) tail: Tail,
    pub(super) _leases: Vec<PortLease>,
    /// Restarts after exits, in all.
    pub(super) restarts: u32,
    /// Unstable exits in a row (see [`InstanceTask::after_exit`]).
    pub(super) unstable: u32,
    /// When the last exits were, within `restart_window`.
    pub(super) recent_exits: Vec<tokio::time::Instant>,
}

/// Where an instance is in its life, with what that state holds. The task
/// waits for the next [`Event`] of its state, and [`InstanceTask::on`]
/// decides the next state.
pub(super) enum Life {
    /// No process: one is spawned now.
    Spawning,
    /// A process runs and has not passed its readiness check yet.
    Starting {
        run: Run,
        ready: Pin<Box<dyn Future<Output = ()> + Send>>,
        timeout: Pin<Box<tokio::time::Sleep>>,
    },
    /// It passed: it serves, or drains (only its status says which).
    Serving { run: Run },
    /// Its process exited; a fresh one is spawned when the wait ends.
    Backoff { wait: Pin<Box<tokio::time::Sleep>> },
    /// Stopped or failed: the task ends.
    Ended,
}

/// One process of the instance.
pub(super) struct Run {
    child: Child,
    pgid: i32,
    channel: Channel,
    started: Instant,
}

/// What the task waits for.
pub(super) enum Event {
    Control(Option<Control>),
    Exited(ExitStatus),
    Ready,
    StartTimeout,
    BackoffOver,
}

impl InstanceTask {
    pub(super) fn set(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            let before = s.state;
            f(s);
            if s.state != before {
                s.since = SystemTime::now();
            }
        });
        self.ctx.changed.notify_one();
    }

    pub(super) fn id(&self) -> String {
        self.spec.id()
    }

    pub(super) fn log(&self, msg: &str) {
        self.ctx
            .logs
            .write_line(&format!("{} {msg}", logs::prefix(&self.id(), "baton")));
    }

    /// The end of the instance: stopped on purpose, or failed for `reason`.
    pub(super) fn end(&self, reason: Option<String>) -> Life {
        if let Some(reason) = &reason {
            self.log(&format!("failed: {reason}"));
        }
        let restarts = self.restarts;
        self.set(|s| {
            s.state = if reason.is_some() {
                State::Failed
            } else {
                State::Stopped
            };
            s.pid = None;
            s.restarts = restarts;
            if reason.is_some() {
                s.reason = reason;
            }
        });
        Life::Ended
    }

    pub(super) async fn run(mut self) {
        let mut life = Life::Spawning;
        loop {
            life = match life {
                Life::Spawning => self.spawn(),
                Life::Ended => return,
                mut waiting => {
                    let event = next_event(&mut self.ctl, &mut waiting).await;
                    self.on(waiting, event).await
                }
            };
        }
    }

    /// Every state's answer to every event, in one place.
    pub(super) async fn on(&mut self, life: Life, event: Event) -> Life {
        match (life, event) {
            (Life::Starting { run, .. }, Event::Ready) => {
                self.log(&match self.spec.run.readiness.kind {
                    ReadinessKind::None => {
                        format!("started (no readiness check), pid {}", run.pgid)
                    }
                    kind => format!(
                        "ready on port {} after {} ms ({} check)",
                        self.upstream.addr.port(),
                        run.started.elapsed().as_millis(),
                        kind_name(kind)
                    ),
                });
                // A fresh process passed its check: whatever passive health
                // said about the previous one no longer holds.
                self.upstream.set_down(false);
                self.set(|s| {
                    s.state = State::Ready;
                    s.ever_ready = true;
                    s.reason = None;
                });
                Life::Serving { run }
            }
            (Life::Starting { mut run, .. }, Event::StartTimeout) => {
                self.stop_group(&mut run).await;
                self.finish(&run);
                let reason = self.with_tail(format!(
                    "not ready within start_timeout ({}) by its {} check",
                    humantime::format_duration(self.spec.run.start_timeout),
                    kind_name(self.spec.run.readiness.kind),
                ));
                self.end(Some(reason))
            }
            (Life::Starting { run, .. } | Life::Serving { run }, Event::Exited(status)) => {
                self.finish(&run);
                self.after_exit(status, run.started.elapsed())
            }
            (Life::Backoff { .. }, Event::BackoffOver) => Life::Spawning,
            (life, Event::Control(msg)) => self.control(life, msg).await,
            // An event of another state (none is produced): no change.
            (life, _) => life,
        }
    }

    /// Every control message, in every state.
    pub(super) async fn control(&mut self, life: Life, msg: Option<Control>) -> Life {
        match msg {
            // The handles gone, nobody could stop it later.
            Some(Control::Stop) | None => self.stop(life).await,
            Some(Control::Drain) => {
                if matches!(life, Life::Serving { .. }) {
                    self.set(|s| s.state = State::Draining);
                }
                life
            }
            Some(Control::Serve) => {
                if matches!(life, Life::Serving { .. }) {
                    self.set(|s| s.state = State::Ready);
                }
                life
            }
            Some(Control::Message(m)) => {
                if let Some(run) = life.run() {
                    send_ipc(&run.channel, &m).await;
                }
                life
            }
            Some(Control::Signal(sig)) => {
                if let Some(run) = life.run() {
                    let _ = killpg(Pid::from_raw(run.pgid), sig);
                }
                life
            }
        }
    }

    /// Stops its process, if one runs, and ends it.
    pub(super) async fn stop(&mut self, life: Life) -> Life {
        if let Life::Starting { mut run, .. } | Life::Serving { mut run } = life {
            self.set(|s| s.state = State::Stopping);
            self.stop_group(&mut run).await;
            self.finish(&run);
        }
        self.end(None)
    }

    /// After an exit on its own: a restart after a backoff, or the end
    /// (never ready and not to be restarted before, autorestart off, or a
    /// crash loop).
    pub(super) fn after_exit(&mut self, status: ExitStatus, uptime: Duration) -> Life {
        let how = describe_exit(status);
        if !self.status.borrow().ever_ready && !self.spec.restart_before_ready {
            let reason = self.with_tail(format!("{how} before it was ready"));
            return self.end(Some(reason));
        }
        if !self.spec.run.autorestart {
            let reason = self.with_tail(format!("{how}; not restarted (autorestart = false)"));
            return self.end(Some(reason));
        }
        // A crash loop: an exit within min_uptime, or the third exit
        // within restart_window even when each run outlived min_uptime
        // (a release that dies every few seconds looped for good).
        let now = tokio::time::Instant::now();
        let window = self.spec.run.restart_window;
        self.recent_exits
            .retain(|t| now.duration_since(*t) < window);
        self.recent_exits.push(now);
        let looping = self.recent_exits.len() >= LOOP_EXITS;
        self.unstable = if uptime < self.spec.run.min_uptime || looping {
            self.unstable + 1
        } else {
            0
        };
        self.restarts += 1;
        if self.unstable > self.spec.run.max_restarts {
            let reason = self.with_tail(format!(
                "{how}; crashed {} times in a row within min_uptime ({}) or restart_window ({}), giving up",
                self.unstable,
                humantime::format_duration(self.spec.run.min_uptime),
                humantime::format_duration(self.spec.run.restart_window)
            ));
            return self.end(Some(reason));
        }
        let backoff = BACKOFF_START
            .saturating_mul(1 << self.unstable.min(16))
            .min(BACKOFF_MAX);
        self.log(&format!(
            "{how} after {}; restarting in {}",
            humantime::format_duration(Duration::from_millis(uptime.as_millis() as u64)),
            humantime::format_duration(backoff)
        ));
        let restarts = self.restarts;
        self.set(|s| {
            s.state = State::Starting;
            s.pid = None;
            s.restarts = restarts;
            s.reason = Some(format!("{how}; restarting"));
        });
        Life::Backoff {
            wait: Box::pin(tokio::time::sleep(backoff)),
        }
    }

    pub(super) fn with_tail(&self, reason: String) -> String {
        let lines = self.tail.last(REASON_LINES);
        let hint = if lines.iter().any(|l| l.contains("EADDRINUSE")) {
            format!(
                " (port {} was taken by another program)",
                self.upstream.addr.port()
            )
        } else {
            String::new()
        };
        if lines.is_empty() {
            format!("{reason}{hint}; it wrote nothing")
        } else {
            format!("{reason}{hint}; last lines:\n  {}", lines.join("\n  "))
        }
    }

    pub(super) fn command(&self, channel: &Channel) -> Command {
        let spec = &self.spec;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&spec.run.command)
            .current_dir(&spec.cwd)
            .envs(&spec.run.env)
            .env("PORT", self.upstream.addr.port().to_string())
            .env("BATON_INSTANCE", self.id())
            .env("BATON_RELEASE", &spec.release)
            .env("BATON_ROLE", spec.process.name())
            .envs(self.upstream.tcp_ports.iter().map(|(name, port)| {
                (
                    format!("PORT_{}", name.to_ascii_uppercase()),
                    port.to_string(),
                )
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // systemd's socket is the daemon's; an app gets Baton's own, if any.
            .env_remove("NOTIFY_SOCKET");
        match channel {
            Channel::NodeIpc { theirs, .. } => {
                cmd.env("NODE_CHANNEL_FD", spawn::NODE_CHANNEL_FD.to_string())
                    .env("NODE_CHANNEL_SERIALIZATION_MODE", "json");
                spawn::prepare(&mut cmd, theirs.as_ref());
            }
            Channel::Notify { path, .. } => {
                cmd.env("NOTIFY_SOCKET", path);
                spawn::prepare(&mut cmd, None);
            }
            Channel::None => spawn::prepare(&mut cmd, None),
        }
        cmd
    }

    /// Spawns a process: `Starting` with its readiness wait and
    /// `start_timeout` running, or the end when it cannot start.
    pub(super) fn spawn(&mut self) -> Life {
        let notify_path = self
            .ctx
            .run_dir
            .join(format!("{}.{}.notify", self.spec.process, self.spec.number));
        let mut channel = match Channel::open(self.spec.run.readiness.kind, &notify_path) {
            Ok(c) => c,
            Err(e) => return self.end(Some(format!("cannot open the readiness channel: {e}"))),
        };
        let mut child = match spawn::spawn(self.command(&channel)) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!(
                    "cannot start `{}` in {}: {e}",
                    self.spec.run.command,
                    self.spec.cwd.display()
                );
                return self.end(Some(reason));
            }
        };
        if let Channel::NodeIpc { theirs, .. } = &mut channel {
            // The child has its copy; ours would keep the channel open after
            // the child dies.
            theirs.take();
        }
        let pid = child.id().unwrap_or(0);
        let pgid = pid as i32;
        self.ctx.reaper.register(pgid);
        let id = self.id();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(logs::capture(
                out,
                id.clone(),
                "out",
                self.ctx.logs.clone(),
                self.tail.clone(),
            ));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(logs::capture(
                err,
                id.clone(),
                "err",
                self.ctx.logs.clone(),
                self.tail.clone(),
            ));
        }
        let started = Instant::now();
        self.set(|s| {
            s.state = State::Starting;
            s.pid = Some(pid);
            s.started = Some(SystemTime::now());
        });
        let mut signals = channel.listen();
        let readiness = self.spec.run.readiness.clone();
        let port = self.upstream.addr.port();
        let ready = Box::pin(async move {
            readiness::wait_ready(&readiness, port, &mut signals).await;
        });
        Life::Starting {
            run: Run {
                child,
                pgid,
                channel,
                started,
            },
            ready,
            timeout: Box::pin(tokio::time::sleep(self.spec.run.start_timeout)),
        }
    }

    /// After its process ended: nothing of its group is left behind, and
    /// it takes no traffic until a fresh process passes its check.
    pub(super) fn finish(&self, run: &Run) {
        let _ = killpg(Pid::from_raw(run.pgid), Signal::SIGKILL);
        self.ctx.reaper.unregister(run.pgid);
        // Nothing listens on the port now. The route table drops this
        // instance only once the publisher runs; until then a request that
        // picked it would meet a refusal and, on its last attempt, fail.
        // The flag is cleared when a fresh process passes its check.
        self.upstream.set_down(true);
    }

    /// `stop_signal` as `stop_to` says; SIGKILL to whatever of the group
    /// is still there after `kill_timeout`. The leader is often a shell
    /// wrapping the app, and exits at once on the signal while the app is
    /// still running its own shutdown: the whole group gets the time.
    pub(super) async fn stop_group(&self, run: &mut Run) {
        let child = &mut run.child;
        let group = Pid::from_raw(run.pgid);
        let deadline = tokio::time::Instant::now() + self.spec.run.kill_timeout;
        let signal = self.spec.run.stop_signal;
        let pass_on = match self.spec.run.stop_to {
            StopTo::Group => {
                let _ = killpg(group, signal);
                false
            }
            StopTo::Main => {
                let _ = nix::sys::signal::kill(group, signal);
                true
            }
        };
        let leader_gone = tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_ok();
        let group_gone = leader_gone && self.until_group_gone(group, deadline, pass_on).await;
        if !group_gone {
            self.log(&format!(
                "still running {} after {}; sending SIGKILL",
                humantime::format_duration(self.spec.run.kill_timeout),
                self.spec.run.stop_signal
            ));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

impl InstanceTask {
    /// Waits until no live process is left in `group`, or `deadline`;
    /// whether it is gone. The members are not our children (only the
    /// leader is), so each is watched through a pidfd, which becomes
    /// readable when its process exits.
    ///
    /// With `pass_on` (`stop_to = "main"`), a member whose parent exited
    /// without passing `stop_signal` on (a shell or `npx` wrapper) gets it
    /// then, and nobody gets it twice: egg's master, for one, handles only
    /// the first and dies on a second.
    pub(super) async fn until_group_gone(
        &self,
        group: Pid,
        deadline: tokio::time::Instant,
        pass_on: bool,
    ) -> bool {
        let mut signalled = vec![group.as_raw()];
        loop {
            let family = live_family(group);
            if family.is_empty() {
                return true;
            }
            for orphan in (family.iter()).filter(|m| pass_on && m.is_topmost(&family)) {
                if !signalled.contains(&orphan.pid) {
                    self.log(&format!(
                        "passing {} on to process {}, whose parent exited without it",
                        self.spec.run.stop_signal, orphan.pid
                    ));
                    let _ = nix::sys::signal::kill(
                        Pid::from_raw(orphan.pid),
                        self.spec.run.stop_signal,
                    );
                    signalled.push(orphan.pid);
                }
            }
            let mut exits = Vec::new();
            for member in &family {
                match watch_exit(member.pid) {
                    Ok(Some(exit)) => exits.push(Box::pin(exit)),
                    // Gone between the listing and the watch.
                    Ok(None) => {}
                    // No pidfd on this kernel: nothing to react to but the deadline.
                    Err(()) => {
                        tokio::time::sleep_until(deadline).await;
                        return live_family(group).is_empty();
                    }
                }
            }
            if exits.is_empty() {
                continue;
            }
            // Until one of them exits: the family changes only then.
            let first = futures_util::future::select_all(exits);
            if tokio::time::timeout_at(deadline, first).await.is_err() {
                return live_family(group).is_empty();
            }
        }
    }
}

impl Life {
    /// Its process, when one runs.
    pub(super) fn run(&self) -> Option<&Run> {
        match self {
            Life::Starting { run, .. } | Life::Serving { run } => Some(run),
            _ => None,
        }
    }
}

/// The next event of `life`'s state: a control message in every state;
/// an exit while a process runs; readiness or `start_timeout` while it
/// starts; the end of the backoff.
pub(super) async fn next_event(
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    life: &mut Life,
) -> Event {
    let exited = |status: std::io::Result<ExitStatus>| {
        Event::Exited(status.unwrap_or_else(|_| ExitStatus::from_raw(0)))
    };
    match life {
        Life::Starting {
            run,
            ready,
            timeout,
        } => tokio::select! {
            _ = ready => Event::Ready,
            status = run.child.wait() => exited(status),
            _ = timeout => Event::StartTimeout,
            msg = ctl.recv() => Event::Control(msg),
        },
        Life::Serving { run } => tokio::select! {
            status = run.child.wait() => exited(status),
            msg = ctl.recv() => Event::Control(msg),
        },
        Life::Backoff { wait } => tokio::select! {
            _ = wait => Event::BackoffOver,
            msg = ctl.recv() => Event::Control(msg),
        },
        Life::Spawning | Life::Ended => std::future::pending().await,
    }
}

/// A future that resolves when process `pid` exits; `Ok(None)` when it is
/// already gone, `Err` when the kernel has no pidfd.
pub(super) fn watch_exit(pid: i32) -> Result<Option<impl std::future::Future<Output = ()>>, ()> {
    let fd = match crate::sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
        Err(_) => return Err(()),
    };
    let watched = crate::sys::watch_readable(fd).map_err(|_| ())?;
    Ok(Some(async move {
        let _ = watched.readable().await;
    }))
}

/// The live processes of `group` and their parents (see
/// [`crate::procfs::group_family`]); a group that no longer exists is not
/// looked for in /proc.
pub(super) fn live_family(group: Pid) -> Vec<crate::procfs::Member> {
    if killpg(group, None).is_err() {
        return Vec::new();
    }
    crate::procfs::group_family(group.as_raw())
}

pub(super) async fn send_ipc(channel: &Channel, msg: &serde_json::Value) {
    if let Channel::NodeIpc { writer, .. } = channel {
        let line = format!("{msg}\n");
        // A full socket buffer would block; the message is advisory.
        let _ = writer.try_write(line.as_bytes());
    }
}

pub(super) fn kind_name(kind: ReadinessKind) -> &'static str {
    match kind {
        ReadinessKind::Http => "http",
        ReadinessKind::Tcp => "tcp",
        ReadinessKind::NodeIpc => "node-ipc",
        ReadinessKind::Notify => "notify",
        ReadinessKind::None => "none",
    }
}

pub(super) fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("killed by {name}")
        }
        _ => "exited".to_string(),
    }
}
