//! The orphan reaper: a tiny helper process that kills every instance's
//! process group if the daemon dies without cleaning up (even by SIGKILL).
//!
//! `PR_SET_PDEATHSIG` alone reaches only the direct child, not the
//! grandchildren an `npm start` or a shell leaves in the group. The helper is
//! told each group as it starts and ends over a pipe; when the pipe reaches
//! end-of-file (the daemon is gone, however it went) it sends SIGKILL to the
//! groups still registered and exits.
//!
//! Two more guards, for what the helper alone cannot cover:
//! - A helper that dies (killed on its own) is noticed by a thread that
//!   waits for it, and replaced; the new one is told every live group.
//! - The groups are also recorded in the state directory (`groups`), so that
//!   when the daemon and the helper die together (`killall -9 baton`), the
//!   next daemon of the same state directory stops what they left before it
//!   starts anything.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The hidden subcommand that runs the helper.
pub const REAPER_ARG: &str = "__reaper";
/// How long groups left by an earlier daemon get between SIGTERM and
/// SIGKILL.
const LEFTOVER_GRACE: Duration = Duration::from_secs(5);

/// The daemon's side of the helper.
#[derive(Clone)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    helper: Option<Helper>,
    /// Live groups: pgid → the start time of its leader (clock ticks since
    /// boot), which tells the group from a later one with the same number.
    groups: BTreeMap<i32, u64>,
    /// Where the groups are recorded for the next daemon.
    record: PathBuf,
    /// A clean shutdown: the helper's exit is expected.
    closing: bool,
}

struct Helper {
    child: Child,
    stdin: ChildStdin,
}

impl Helper {
    fn spawn() -> std::io::Result<Helper> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(REAPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Helper { child, stdin })
    }
}

impl Inner {
    fn send(&mut self, line: &str) {
        if let Some(helper) = self.helper.as_mut() {
            // A failed write means the helper died; its watcher replaces it
            // and tells the new one every group.
            let _ = helper.stdin.write_all(line.as_bytes());
        }
    }

    /// Writes the live groups to the state directory, whole (a temporary
    /// file renamed over the old one).
    fn save(&self) {
        let mut text = format!("{}\n", boot_id());
        for (pgid, started) in &self.groups {
            text.push_str(&format!("{pgid} {started}\n"));
        }
        let tmp = self.record.with_extension("tmp");
        let saved = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.record));
        if let Err(e) = saved {
            tracing::warn!(
                "cannot record the process groups in {}: {e}",
                self.record.display()
            );
        }
    }
}

impl Reaper {
    /// Stops the groups an earlier daemon of `state_dir` left behind, then
    /// starts the helper from this same executable.
    ///
    /// # Errors
    /// When the helper cannot be spawned.
    pub fn start(state_dir: &Path) -> std::io::Result<Reaper> {
        let record = state_dir.join("groups");
        stop_leftovers(&record);
        let helper = Helper::spawn()?;
        let pid = helper.child.id();
        let reaper = Reaper {
            inner: Arc::new(Mutex::new(Inner {
                helper: Some(helper),
                groups: BTreeMap::new(),
                record,
                closing: false,
            })),
        };
        reaper.inner().save();
        reaper.watch(pid);
        Ok(reaper)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("reaper lock poisoned")
    }

    /// Waits, on a thread of its own, for the helper to exit; one that
    /// exits before a clean shutdown is replaced.
    fn watch(&self, mut pid: u32) {
        let reaper = self.clone();
        let spawned = std::thread::Builder::new()
            .name("baton-reaper-watch".into())
            .spawn(move || loop {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), None);
                let mut inner = reaper.inner();
                if inner.closing {
                    return;
                }
                match Helper::spawn() {
                    Ok(helper) => {
                        tracing::warn!(
                            "the orphan reaper (pid {pid}) died; started another (pid {})",
                            helper.child.id()
                        );
                        pid = helper.child.id();
                        inner.helper = Some(helper);
                        let lines: Vec<String> =
                            inner.groups.keys().map(|g| format!("+{g}\n")).collect();
                        for line in lines {
                            inner.send(&line);
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            "the orphan reaper died and cannot be restarted: {e}; if the daemon is killed, its instances will be stopped by the next `baton up`"
                        );
                        inner.helper = None;
                        return;
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot watch the orphan reaper: {e}");
        }
    }

    /// The group `pgid` now exists.
    pub(crate) fn register(&self, pgid: i32) {
        let started = super::procfs::start_ticks(pgid).unwrap_or(0);
        let mut inner = self.inner();
        inner.groups.insert(pgid, started);
        inner.send(&format!("+{pgid}\n"));
        inner.save();
    }

    /// The group `pgid` was stopped by the daemon.
    pub(crate) fn unregister(&self, pgid: i32) {
        let mut inner = self.inner();
        inner.groups.remove(&pgid);
        inner.send(&format!("-{pgid}\n"));
        inner.save();
    }

    /// Ends the helper after a clean shutdown.
    pub fn shutdown(&self) {
        let helper = {
            let mut inner = self.inner();
            inner.closing = true;
            inner.helper.take()
        };
        if let Some(Helper { mut child, stdin }) = helper {
            drop(stdin);
            // The watcher may have reaped it already.
            let _ = child.wait();
        }
    }
}

/// This boot's id: recorded groups from another boot are long gone, and
/// their numbers may be anyone's now.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether the group still has a process in it.
fn group_lives(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Stops the groups recorded in `record` by a daemon that died with its
/// helper: SIGTERM, then SIGKILL after a grace period. A recorded number
/// whose leader is another process now (started at another time) is left
/// alone.
fn stop_leftovers(record: &Path) {
    let Ok(text) = std::fs::read_to_string(record) else {
        return;
    };
    let mut lines = text.lines();
    if lines.next() != Some(boot_id().as_str()) {
        return;
    }
    let ours: Vec<i32> = lines
        .filter_map(|line| {
            let (pgid, started) = line.split_once(' ')?;
            let (pgid, started): (i32, u64) = (pgid.parse().ok()?, started.parse().ok()?);
            let same = match super::procfs::start_ticks(pgid) {
                Some(now) => now == started,
                // The leader is gone; while the group lives its number
                // cannot have been given to another.
                None => true,
            };
            (same && group_lives(pgid)).then_some(pgid)
        })
        .collect();
    if ours.is_empty() {
        return;
    }
    tracing::warn!(
        "an earlier daemon of this state directory died and left {} process group{} running ({ours:?}); stopping them before starting",
        ours.len(),
        if ours.len() == 1 { "" } else { "s" }
    );
    for &pgid in &ours {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    }
    let members: Vec<i32> = ours
        .iter()
        .flat_map(|&g| super::procfs::group_members(g))
        .collect();
    wait_for_exits(&members, LEFTOVER_GRACE);
    for &pgid in &ours {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Waits until every process in `pids` has exited, or `grace` passes. They
/// are no children of ours, so no wait(2): each gets a pidfd, which
/// becomes readable when its process exits (Linux 5.3).
fn wait_for_exits(pids: &[i32], grace: Duration) {
    use std::os::fd::{AsRawFd, OwnedFd};
    let fds: Vec<OwnedFd> = (pids.iter())
        .filter_map(|&pid| crate::sys::pidfd_open(pid).ok())
        .collect();
    let mut waiting: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = Instant::now() + grace;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match crate::sys::poll_readable(&mut waiting, left) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => return,
            _ => {}
        }
        waiting.retain(|p| p.revents == 0);
    }
}

/// The helper's main loop: read `+pgid` / `-pgid` lines until end-of-file,
/// then kill what is left.
pub fn run_helper() {
    // The terminal's Ctrl-C reaches the daemon's whole foreground group; the
    // helper must outlive the daemon to do its job, so it ignores it.
    crate::sys::ignore_signal(Signal::SIGINT);
    crate::sys::ignore_signal(Signal::SIGTERM);
    let mut groups = std::collections::BTreeSet::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let (op, num) = line.split_at(1.min(line.len()));
        let Ok(pgid) = num.parse::<i32>() else {
            continue;
        };
        match op {
            "+" => {
                groups.insert(pgid);
            }
            "-" => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}
