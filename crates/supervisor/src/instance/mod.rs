//! One task owns each instance's lifecycle: spawn, readiness, crash restarts
//! with backoff, and stop. Everyone else holds an [`Instance`] handle, reads
//! its [`Status`] from a watch channel and sends it `Control` messages.

mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Notify};

use self::task::*;
use super::logs::{LogSink, Tail};
use super::ports::PortPool;
use super::reaper::Reaper;
use crate::config::ProcessSpec;
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
    /// Working directory, resolved.
    pub cwd: PathBuf,
    /// How its process runs.
    pub run: ProcessSpec,
    /// Names of L4 services; each gets a port as `PORT_<NAME>`.
    pub tcp: Vec<String>,
    /// Restart an instance that exits before its first ready. A deploy says
    /// no: a release that crashes at start fails the deploy at once.
    pub restart_before_ready: bool,
}

impl InstanceSpec {
    /// `web#3`
    pub(crate) fn id(&self) -> String {
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
