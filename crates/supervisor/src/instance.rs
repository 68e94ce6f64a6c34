//! One task owns each instance's lifecycle: spawn, readiness, crash restarts
//! with backoff, and stop. Everyone else holds an [`Instance`] handle, reads
//! its [`Status`] from a watch channel and sends it `Control` messages.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch, Notify};

use super::logs::{self, LogSink, Tail};
use super::ports::{PortLease, PortPool};
use super::readiness::{self, Channel};
use super::reaper::Reaper;
use super::spawn;
use crate::config::{Readiness, ReadinessKind, StopTo};
use crate::protocol::Role;
pub use crate::protocol::State;
use crate::proxy::upstream::Upstream;

/// Exits within `restart_window` from which on each one is unstable.
const LOOP_EXITS: usize = 3;
/// Backoff between crash restarts starts here and doubles per unstable exit.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// ... up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Lines of the app's log quoted in a failure reason.
const REASON_LINES: usize = 10;

/// An instance's observable status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Lifecycle state.
    pub state: State,
    /// Current pid (the process group leader).
    pub pid: Option<u32>,
    /// How many times it was restarted after exiting.
    pub restarts: u32,
    /// When the state was entered.
    #[serde(with = "humantime_serde")]
    pub since: SystemTime,
    /// When the current process started.
    #[serde(with = "humantime_serde")]
    pub started: Option<SystemTime>,
    /// Why it failed, or why it is restarting.
    pub reason: Option<String>,
    /// It passed readiness at least once.
    pub ever_ready: bool,
}

/// What to run for one instance.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Process name, such as `web`.
    pub process: Role,
    /// Instance number; the id is `<process>#<number>`.
    pub number: u64,
    /// Release the instance runs.
    pub release: String,
    /// Shell command.
    pub command: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Readiness check.
    pub readiness: Readiness,
    /// Not ready within this means failed.
    pub start_timeout: Duration,
    /// Signal that asks it to stop.
    pub stop_signal: Signal,
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
    /// Names of L4 services; each gets a port as `PORT_<NAME>`.
    pub tcp: Vec<String>,
    /// Restart an instance that exits before its first ready. A deploy says
    /// no: a release that crashes at start fails the deploy at once.
    pub restart_before_ready: bool,
}

impl InstanceSpec {
    /// `web#3`
    pub fn id(&self) -> String {
        format!("{}#{}", self.process, self.number)
    }
}

/// Shared by every instance the daemon runs.
#[derive(Clone)]
pub struct Context {
    /// Private port hand-out.
    pub ports: PortPool,
    /// Kills orphans if the daemon dies.
    pub reaper: Reaper,
    /// Where app output goes, per process name.
    pub logs: LogSink,
    /// Folder for sd_notify sockets.
    pub run_dir: PathBuf,
    /// Woken on every state change, so the route table is rebuilt.
    pub changed: Arc<Notify>,
}

/// A message to the task that owns an instance.
enum Control {
    /// Stop it. Whoever asks waits for the state to say stopped (or
    /// failed), not for a reply: a message sent as the task ends is never
    /// read, and stays queued while any handle lives.
    Stop,
    /// It left the route table and is finishing its requests.
    Drain,
    /// It is back in the route table (a deploy was reverted).
    Serve,
    /// Send a JSON message over the Node IPC channel, if there is one.
    Message(serde_json::Value),
    /// Send a signal to the process group.
    Signal(Signal),
}

/// A cloneable handle on one instance.
#[derive(Clone)]
pub struct Instance {
    /// `web#3`
    pub id: Arc<str>,
    /// Process name.
    pub process: Role,
    /// Release it runs.
    pub release: Arc<str>,
    /// Proxy-side counters and address.
    pub upstream: Arc<Upstream>,
    status: watch::Receiver<Status>,
    ctl: mpsc::UnboundedSender<Control>,
    tail: Tail,
}

impl Instance {
    /// Starts the task that owns a new instance.
    ///
    /// # Errors
    /// When no private port can be had.
    pub fn start(spec: InstanceSpec, ctx: Context) -> std::io::Result<Instance> {
        let lease = ctx.ports.lease()?;
        let mut leases = vec![lease];
        let mut tcp_ports = Vec::new();
        for name in &spec.tcp {
            let l = ctx.ports.lease()?;
            tcp_ports.push((name.clone(), l.port()));
            leases.push(l);
        }
        let id: Arc<str> = spec.id().into();
        let mut upstream = Upstream::new(id.clone(), leases[0].port());
        upstream.tcp_ports = tcp_ports;
        upstream.release = spec.release.as_str().into();
        let upstream = Arc::new(upstream);
        let (status_tx, status_rx) = watch::channel(Status {
            state: State::Starting,
            pid: None,
            restarts: 0,
            since: SystemTime::now(),
            started: None,
            reason: None,
            ever_ready: false,
        });
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let tail = Tail::default();
        let handle = Instance {
            id,
            process: spec.process.clone(),
            release: spec.release.clone().into(),
            upstream: upstream.clone(),
            status: status_rx,
            ctl: ctl_tx,
            tail: tail.clone(),
        };
        let task = InstanceTask {
            spec,
            ctx,
            status: status_tx,
            ctl: ctl_rx,
            upstream,
            tail,
            _leases: leases,
            restarts: 0,
            unstable: 0,
            recent_exits: Vec::new(),
        };
        tokio::spawn(task.run());
        Ok(handle)
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f`, and returns it.
    pub async fn wait_for(&self, f: impl FnMut(&Status) -> bool) -> Status {
        let mut rx = self.status.clone();
        let seen = rx.wait_for(f).await.map(|s| s.clone());
        seen.unwrap_or_else(|_| self.status())
    }

    /// Waits until it is ready (`Ok`) or has failed or stopped (`Err`).
    pub async fn wait_ready(&self) -> Result<(), Status> {
        let s = self
            .wait_for(|s| s.state == State::Ready || s.state.is_terminal())
            .await;
        if s.state == State::Ready {
            Ok(())
        } else {
            Err(s)
        }
    }

    /// Stops it (stop signal, then SIGKILL after the kill timeout) and waits
    /// until it is gone.
    pub async fn stop(&self) {
        // A task already gone refuses the message; its state is terminal,
        // or it ended (a closed status channel ends the wait too).
        let _ = self.ctl.send(Control::Stop);
        self.wait_for(|s| s.state.is_terminal()).await;
    }

    /// Marks it draining: out of rotation, finishing its requests.
    pub fn set_draining(&self) {
        let _ = self.ctl.send(Control::Drain);
    }

    /// Marks it serving again after a drain was called off.
    pub fn set_serving(&self) {
        self.upstream.set_draining(false);
        let _ = self.ctl.send(Control::Serve);
    }

    /// Sends a signal to its process group (the drain notice).
    pub fn signal(&self, signal: Signal) {
        let _ = self.ctl.send(Control::Signal(signal));
    }

    /// Sends a JSON message over its Node IPC channel (no-op without one).
    pub fn send_message(&self, msg: serde_json::Value) {
        let _ = self.ctl.send(Control::Message(msg));
    }

    /// The last `n` lines it wrote.
    pub fn tail(&self, n: usize) -> Vec<String> {
        self.tail.last(n)
    }
}

/// An instance with no process, for tests of what drives instances (the
/// deploy machine): the test sets its state, and it obeys `stop`, drain
/// and serve as a real one's task would.
#[cfg(feature = "puppet")]
pub struct Puppet {
    status: watch::Sender<Status>,
}

#[cfg(feature = "puppet")]
impl Puppet {
    /// A puppet `web#<number>` of `release`, starting.
    pub fn start(number: u64, release: &str) -> (Instance, Puppet) {
        let id: Arc<str> = format!("web#{number}").into();
        let (status, status_rx) = watch::channel(Status {
            state: State::Starting,
            pid: None,
            restarts: 0,
            since: SystemTime::now(),
            started: Some(SystemTime::now()),
            reason: None,
            ever_ready: false,
        });
        let (ctl, mut ctl_rx) = mpsc::unbounded_channel();
        let instance = Instance {
            upstream: Arc::new(Upstream::new(id.clone(), 0)),
            id,
            process: Role::Web,
            release: release.into(),
            status: status_rx,
            ctl,
            tail: Tail::default(),
        };
        let task_status = status.clone();
        tokio::spawn(async move {
            while let Some(msg) = ctl_rx.recv().await {
                let set = |state: State| {
                    task_status.send_modify(|s| {
                        if !s.state.is_terminal() {
                            s.state = state;
                        }
                    })
                };
                match msg {
                    Control::Stop => set(State::Stopped),
                    Control::Drain => set(State::Draining),
                    Control::Serve => set(State::Ready),
                    Control::Message(_) | Control::Signal(_) => {}
                }
            }
        });
        (instance, Puppet { status })
    }

    /// It passed its readiness check.
    pub fn ready(&self) {
        self.status.send_modify(|s| {
            s.state = State::Ready;
            s.ever_ready = true;
        });
    }

    /// It failed for good, for `reason`.
    pub fn fail(&self, reason: &str) {
        self.status.send_modify(|s| {
            s.state = State::Failed;
            s.reason = Some(reason.into());
        });
    }
}

/// The task's own state; only it touches the child.
struct InstanceTask {
    spec: InstanceSpec,
    ctx: Context,
    status: watch::Sender<Status>,
    ctl: mpsc::UnboundedReceiver<Control>,
    upstream: Arc<Upstream>,
    tail: Tail,
    _leases: Vec<PortLease>,
    /// Restarts after exits, in all.
    restarts: u32,
    /// Unstable exits in a row (see [`InstanceTask::after_exit`]).
    unstable: u32,
    /// When the last exits were, within `restart_window`.
    recent_exits: Vec<tokio::time::Instant>,
}

/// Where an instance is in its life, with what that state holds. The task
/// waits for the next [`Event`] of its state, and [`InstanceTask::on`]
/// decides the next state.
enum Life {
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
struct Run {
    child: Child,
    pgid: i32,
    channel: Channel,
    started: Instant,
}

/// What the task waits for.
enum Event {
    Control(Option<Control>),
    Exited(ExitStatus),
    Ready,
    StartTimeout,
    BackoffOver,
}

impl InstanceTask {
    fn set(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            let before = s.state;
            f(s);
            if s.state != before {
                s.since = SystemTime::now();
            }
        });
        self.ctx.changed.notify_one();
    }

    fn id(&self) -> String {
        self.spec.id()
    }

    fn log(&self, msg: &str) {
        self.ctx
            .logs
            .write_line(&format!("{} {msg}", logs::prefix(&self.id(), "baton")));
    }

    /// The end of the instance: stopped on purpose, or failed for `reason`.
    fn end(&self, reason: Option<String>) -> Life {
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

    async fn run(mut self) {
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
    async fn on(&mut self, life: Life, event: Event) -> Life {
        match (life, event) {
            (Life::Starting { run, .. }, Event::Ready) => {
                self.log(&match self.spec.readiness.kind {
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
                    humantime::format_duration(self.spec.start_timeout),
                    kind_name(self.spec.readiness.kind),
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
    async fn control(&mut self, life: Life, msg: Option<Control>) -> Life {
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
    async fn stop(&mut self, life: Life) -> Life {
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
    fn after_exit(&mut self, status: ExitStatus, uptime: Duration) -> Life {
        let how = describe_exit(status);
        if !self.status.borrow().ever_ready && !self.spec.restart_before_ready {
            let reason = self.with_tail(format!("{how} before it was ready"));
            return self.end(Some(reason));
        }
        if !self.spec.autorestart {
            let reason = self.with_tail(format!("{how}; not restarted (autorestart = false)"));
            return self.end(Some(reason));
        }
        // A crash loop: an exit within min_uptime, or the third exit
        // within restart_window even when each run outlived min_uptime
        // (a release that dies every few seconds looped for good).
        let now = tokio::time::Instant::now();
        let window = self.spec.restart_window;
        self.recent_exits
            .retain(|t| now.duration_since(*t) < window);
        self.recent_exits.push(now);
        let looping = self.recent_exits.len() >= LOOP_EXITS;
        self.unstable = if uptime < self.spec.min_uptime || looping {
            self.unstable + 1
        } else {
            0
        };
        self.restarts += 1;
        if self.unstable > self.spec.max_restarts {
            let reason = self.with_tail(format!(
                "{how}; crashed {} times in a row within min_uptime ({}) or restart_window ({}), giving up",
                self.unstable,
                humantime::format_duration(self.spec.min_uptime),
                humantime::format_duration(self.spec.restart_window)
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

    fn with_tail(&self, reason: String) -> String {
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

    fn command(&self, channel: &Channel) -> Command {
        let spec = &self.spec;
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&spec.command)
            .current_dir(&spec.cwd)
            .envs(&spec.env)
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
    fn spawn(&mut self) -> Life {
        let notify_path = self
            .ctx
            .run_dir
            .join(format!("{}.{}.notify", self.spec.process, self.spec.number));
        let mut channel = match Channel::open(self.spec.readiness.kind, &notify_path) {
            Ok(c) => c,
            Err(e) => return self.end(Some(format!("cannot open the readiness channel: {e}"))),
        };
        let mut child = match spawn::spawn(self.command(&channel)) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!(
                    "cannot start `{}` in {}: {e}",
                    self.spec.command,
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
        let readiness = self.spec.readiness.clone();
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
            timeout: Box::pin(tokio::time::sleep(self.spec.start_timeout)),
        }
    }

    /// After its process ended: nothing of its group is left behind, and
    /// it takes no traffic until a fresh process passes its check.
    fn finish(&self, run: &Run) {
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
    async fn stop_group(&self, run: &mut Run) {
        let child = &mut run.child;
        let group = Pid::from_raw(run.pgid);
        let deadline = tokio::time::Instant::now() + self.spec.kill_timeout;
        let signal = self.spec.stop_signal;
        let pass_on = match self.spec.stop_to {
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
                humantime::format_duration(self.spec.kill_timeout),
                self.spec.stop_signal
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
    async fn until_group_gone(
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
                        self.spec.stop_signal, orphan.pid
                    ));
                    let _ =
                        nix::sys::signal::kill(Pid::from_raw(orphan.pid), self.spec.stop_signal);
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
    fn run(&self) -> Option<&Run> {
        match self {
            Life::Starting { run, .. } | Life::Serving { run } => Some(run),
            _ => None,
        }
    }
}

/// The next event of `life`'s state: a control message in every state;
/// an exit while a process runs; readiness or `start_timeout` while it
/// starts; the end of the backoff.
async fn next_event(ctl: &mut mpsc::UnboundedReceiver<Control>, life: &mut Life) -> Event {
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
fn watch_exit(pid: i32) -> Result<Option<impl std::future::Future<Output = ()>>, ()> {
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
/// [`super::procfs::group_family`]); a group that no longer exists is not
/// looked for in /proc.
fn live_family(group: Pid) -> Vec<super::procfs::Member> {
    if killpg(group, None).is_err() {
        return Vec::new();
    }
    super::procfs::group_family(group.as_raw())
}

async fn send_ipc(channel: &Channel, msg: &serde_json::Value) {
    if let Channel::NodeIpc { writer, .. } = channel {
        let line = format!("{msg}\n");
        // A full socket buffer would block; the message is advisory.
        let _ = writer.try_write(line.as_bytes());
    }
}

fn kind_name(kind: ReadinessKind) -> &'static str {
    match kind {
        ReadinessKind::Http => "http",
        ReadinessKind::Tcp => "tcp",
        ReadinessKind::NodeIpc => "node-ipc",
        ReadinessKind::Notify => "notify",
        ReadinessKind::None => "none",
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
            format!("killed by {name}")
        }
        _ => "exited".to_string(),
    }
}
