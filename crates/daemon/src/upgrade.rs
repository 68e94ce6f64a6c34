//! `baton upgrade`: the daemon replaces itself with another Baton binary
//! (nginx's binary upgrade, pm2's `update`) and keeps its public sockets
//! open throughout, so no client is refused.
//!
//! The daemon stops as for `baton stop` (connections finish, instances
//! drain and stop), except that the listening sockets stay open: a copy of
//! each was kept at start. It then execs the new binary with the same
//! arguments in the same process, passing the sockets the way systemd's
//! socket activation does (fd 3 on, `LISTEN_FDS`, `LISTEN_PID`: the pid
//! does not change). Clients that connect meanwhile wait in the kernel's
//! backlog until the new daemon's instances are ready. The new binary is
//! checked first (it runs, and accepts baton.toml), so a broken one is
//! refused before anything stops; and a copy of the running binary is kept
//! in the state directory, which `baton upgrade` starts again should the
//! new one fail to start all the same.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::proxy::activation::FIRST_FD;

/// How long the new binary gets to answer `--version` and `check`.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// What the daemon does once it has stopped.
pub enum Exit {
    /// Nothing more.
    Stopped,
    /// Exec a new binary with the listening sockets.
    Upgrade {
        /// The binary.
        exe: PathBuf,
        /// Copies of the listening sockets, in the order they were bound.
        sockets: Vec<OwnedFd>,
    },
}

/// A copy of a listening socket, made close-on-exec, which keeps it open
/// when the listener itself is dropped at shutdown.
///
/// # Errors
/// When the fd cannot be duplicated.
pub(crate) fn keep(listener: &impl AsFd) -> std::io::Result<OwnedFd> {
    listener.as_fd().try_clone_to_owned()
}

/// Checks that `exe` is a Baton that runs here and accepts `config`; on
/// success, its version line.
///
/// # Errors
/// Why not, with what it printed.
pub(crate) async fn check_binary(exe: &Path, config: &Path) -> Result<String, String> {
    let version = run(exe, &[OsString::from("--version")]).await?;
    let version = version.trim().to_string();
    if !version.starts_with("baton ") {
        return Err(format!(
            "{} is not baton: --version printed {version:?}",
            exe.display()
        ));
    }
    run(
        exe,
        &[
            OsString::from("check"),
            OsString::from("--config"),
            config.as_os_str().to_owned(),
        ],
    )
    .await
    .map_err(|e| format!("{version} does not accept {}: {e}", config.display()))?;
    Ok(version)
}

/// Copies the running binary (even if replaced on disk since) to
/// `<state_dir>/baton.previous`, for `baton upgrade` to start again should
/// the new binary fail to start once it has replaced this one.
///
/// # Errors
/// When the copy cannot be written.
pub(crate) async fn keep_previous(state_dir: &Path) -> std::io::Result<PathBuf> {
    let kept = state_dir.join("baton.previous");
    let partial = state_dir.join("baton.previous.partial");
    // Written aside and renamed: a daemon running from the kept copy (after
    // one such return) keeps its own file while the new copy replaces it.
    tokio::fs::copy("/proc/self/exe", &partial).await?;
    tokio::fs::rename(&partial, &kept).await?;
    Ok(kept)
}

/// Runs `exe args` and returns its stdout, or why it failed.
async fn run(exe: &Path, args: &[OsString]) -> Result<String, String> {
    let child = tokio::process::Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(CHECK_TIMEOUT, child).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("cannot run {}: {e}", exe.display())),
        Err(_) => {
            return Err(format!(
                "{} did not finish within {CHECK_TIMEOUT:?}",
                exe.display()
            ))
        }
    };
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{} exited with {}: {}",
            exe.display(),
            out.status,
            said.trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces this process with `exe`, run with this process's arguments,
/// the `sockets` at fd 3 on. Call it with no other thread running: it
/// renumbers fds. Returns only if the exec failed.
pub fn exec(exe: &Path, sockets: &[OwnedFd]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let count = sockets.len() as RawFd;
    // First out of the way of 3..3+count, so that placing one cannot close
    // another; then into place, where dup2 clears close-on-exec.
    let mut moved = Vec::with_capacity(sockets.len());
    for socket in sockets {
        match nix::fcntl::fcntl(
            socket.as_raw_fd(),
            nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(FIRST_FD + count),
        ) {
            Ok(fd) => moved.push(fd),
            Err(e) => return e.into(),
        }
    }
    for (at, fd) in moved.iter().enumerate() {
        if let Err(e) = nix::unistd::dup2(*fd, FIRST_FD + at as RawFd) {
            return e.into();
        }
    }
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    std::process::Command::new(exe)
        .args(args)
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_PID", std::process::id().to_string())
        .env_remove("LISTEN_FDNAMES")
        .exec()
}
