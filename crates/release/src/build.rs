//! The build hook (`npm ci --omit=dev`, say): run in the new release folder
//! before any instance starts; its output streamed to the deploy's progress
//! and saved next to the release.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// Runs `command` in `dir`, calling `on_line` for every output line and
/// saving them in `<dir>.build.log` beside the folder. Returns the log path.
///
/// # Errors
/// A message with the exit status and the last lines.
pub async fn run(
    command: &str,
    dir: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<PathBuf, (PathBuf, String)> {
    let log_path = dir.with_extension("build.log");
    let mut log = Vec::<String>::new();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        // The release id, which a framework may stamp its pages with
        // (Next.js's `deploymentId`: see `[static]` and version pinning).
        .env("BATON_RELEASE", dir.file_name().unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err((log_path, format!("cannot run `{command}`: {e}"))),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    forward(child.stdout.take().expect("piped"), tx.clone());
    forward(child.stderr.take().expect("piped"), tx.clone());
    drop(tx);
    let outcome = tokio::time::timeout(timeout, async {
        while let Some(line) = rx.recv().await {
            on_line(&line);
            log.push(line);
        }
        child.wait().await
    })
    .await;
    let _ = std::fs::write(&log_path, log.join("\n") + "\n");
    let tail = log
        .iter()
        .rev()
        .take(10)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n  ");
    match outcome {
        Ok(Ok(status)) if status.success() => Ok(log_path),
        Ok(Ok(status)) => Err((
            log_path,
            format!("`{command}` {status}; last lines:\n  {tail}"),
        )),
        Ok(Err(e)) => Err((log_path, format!("`{command}`: {e}"))),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err((
                log_path,
                format!(
                    "`{command}` ran longer than build_timeout ({})",
                    humantime::format_duration(timeout)
                ),
            ))
        }
    }
}

fn forward<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
}
