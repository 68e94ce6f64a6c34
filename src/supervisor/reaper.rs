//! The orphan reaper: a tiny helper process that kills every instance's
//! process group if the daemon dies without cleaning up (even by SIGKILL).
//!
//! `PR_SET_PDEATHSIG` alone reaches only the direct child, not the
//! grandchildren an `npm start` or a shell leaves in the group. The helper is
//! told each group as it starts and ends over a pipe; when the pipe reaches
//! end-of-file (the daemon is gone, however it went) it sends SIGKILL to the
//! groups still registered and exits.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The hidden subcommand that runs the helper.
pub const REAPER_ARG: &str = "__reaper";

/// The daemon's side of the helper.
#[derive(Clone)]
pub struct Reaper {
    pipe: Arc<Mutex<Option<(Child, ChildStdin)>>>,
}

impl Reaper {
    /// Starts the helper from this same executable.
    ///
    /// # Errors
    /// When the helper cannot be spawned.
    pub fn start() -> std::io::Result<Reaper> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg(REAPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().expect("stdin was piped");
        Ok(Reaper {
            pipe: Arc::new(Mutex::new(Some((child, stdin)))),
        })
    }

    fn send(&self, line: String) {
        if let Some((_, stdin)) = self.pipe.lock().expect("reaper lock poisoned").as_mut() {
            // A failed write means the helper died; cleanup still happens by
            // the explicit stops, so there is nothing better to do than go on.
            let _ = stdin.write_all(line.as_bytes());
        }
    }

    /// The group `pgid` now exists.
    pub fn register(&self, pgid: i32) {
        self.send(format!("+{pgid}\n"));
    }

    /// The group `pgid` was stopped by the daemon.
    pub fn unregister(&self, pgid: i32) {
        self.send(format!("-{pgid}\n"));
    }

    /// Ends the helper after a clean shutdown.
    pub fn shutdown(&self) {
        if let Some((mut child, stdin)) = self.pipe.lock().expect("reaper lock poisoned").take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// The helper's main loop: read `+pgid` / `-pgid` lines until end-of-file,
/// then kill what is left.
pub fn run_helper() {
    // The terminal's Ctrl-C reaches the daemon's whole foreground group; the
    // helper must outlive the daemon to do its job, so it ignores it.
    // SAFETY: setting a signal to SIG_IGN has no handler to be unsafe in.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn);
        let _ = nix::sys::signal::signal(Signal::SIGTERM, nix::sys::signal::SigHandler::SigIgn);
    }
    let mut groups = BTreeSet::new();
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
