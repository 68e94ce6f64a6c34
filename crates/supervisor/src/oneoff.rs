//! A command run once to its end (a `[cron.*]` job), spawned as instances
//! are: in its own process group, watched by the reaper, its output
//! captured under its name, and nothing of its group left behind after it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::process::Command;

use super::{logs, spawn, Context};

/// What to run.
pub struct OneOff<'a> {
    /// Its name in the log (`cron:<name>`), and its `BATON_ROLE`.
    pub who: &'a str,
    /// Shell command.
    pub command: &'a str,
    /// Working directory.
    pub cwd: &'a Path,
    /// Extra environment.
    pub env: &'a BTreeMap<String, String>,
    /// The release it runs in (`BATON_RELEASE`).
    pub release: &'a str,
    /// Killed (its whole group) after this.
    pub timeout: Duration,
}

/// How a run ended.
#[derive(Debug)]
pub enum Ended {
    /// It exited.
    Exited(ExitStatus),
    /// Waiting for it failed.
    Lost(std::io::Error),
    /// It ran past its timeout and was killed.
    TimedOut,
}

impl OneOff<'_> {
    /// Runs it to its end; its output lines are in the app's log by then.
    ///
    /// # Errors
    /// When it cannot be started.
    pub async fn run(&self, ctx: &Context) -> std::io::Result<Ended> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(self.command)
            .current_dir(self.cwd)
            .envs(self.env)
            .env("BATON_RELEASE", self.release)
            .env("BATON_ROLE", self.who)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        spawn::prepare(&mut cmd, None);
        let mut child = spawn::spawn(cmd)?;
        let pgid = child.id().unwrap_or(0) as i32;
        ctx.reaper.register(pgid);
        let tail = logs::Tail::default();
        let capture = |stream, reader| {
            let (who, logs, tail) = (self.who.to_string(), ctx.logs.clone(), tail.clone());
            tokio::spawn(async move { logs::capture(reader, who, stream, logs, tail).await })
        };
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(capture(
                "out",
                Box::new(out) as Box<dyn AsyncRead + Send + Unpin>,
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(capture("err", Box::new(err)));
        }
        let group = Pid::from_raw(pgid);
        let ended = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => Ended::Exited(status),
            Ok(Err(e)) => Ended::Lost(e),
            Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                let _ = child.wait().await;
                Ended::TimedOut
            }
        };
        let _ = killpg(group, Signal::SIGKILL);
        ctx.reaper.unregister(pgid);
        for r in readers {
            let _ = r.await;
        }
        Ok(ended)
    }
}
