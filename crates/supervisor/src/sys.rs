//! Every `unsafe` block of the supervisor, each with its SAFETY note:
//! the system calls std and nix do not wrap (pidfd_open, poll), signal
//! dispositions, and what a child runs between fork and exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::Duration;

use nix::sys::signal::{SigHandler, Signal};

use crate::spawn::NODE_CHANNEL_FD;

/// A pidfd for process `pid` (Linux 5.3): readable once it exits.
///
/// # Errors
/// ESRCH when the process is gone; ENOSYS on older kernels.
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // nothing is borrowed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a non-negative result is a fresh fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout` for any of `fds` to be readable; `revents` set as
/// poll(2) sets them. Returns how many are ready (0 at the timeout).
pub(crate) fn poll_readable(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let timeout = i32::try_from(timeout.as_millis())
        .unwrap_or(i32::MAX)
        .max(1);
    // SAFETY: `fds` is a valid array of pollfd for its length, borrowed
    // mutably for the call; the caller keeps its fds open.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ready as usize)
}

/// `fd` watched by tokio for readability (a pidfd: its process exited).
///
/// # Errors
/// When the runtime cannot register it.
pub(crate) fn watch_readable(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the fd is owned by the AsyncFd and closed only when it
    // drops, which deregisters it first.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Ignores `signal` from now on (SIGXFSZ in the daemon, SIGINT and SIGTERM
/// in the reaper).
pub fn ignore_signal(signal: Signal) {
    // SAFETY: SIG_IGN installs no handler, so nothing runs in signal
    // context.
    unsafe {
        let _ = nix::sys::signal::signal(signal, SigHandler::SigIgn);
    }
}

/// The started process leads a session of its own: it does not die with
/// the terminal it was started from (`baton up -d`).
pub fn new_session(cmd: &mut std::process::Command) {
    // SAFETY: setsid is async-signal-safe, and nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
}

/// What an instance's process does between fork and exec: the default
/// SIGXFSZ back, the open files limit Baton was started with, death with
/// the daemon (`parent`), and the IPC channel on fd 3.
pub(crate) fn prepare_child(
    cmd: &mut tokio::process::Command,
    parent: i32,
    ipc_fd: Option<RawFd>,
    soft_fd_limit: Option<u64>,
) {
    // SAFETY: only async-signal-safe calls (signal, getrlimit, setrlimit,
    // prctl, getppid, dup2, fcntl, _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The daemon ignores SIGXFSZ; the app gets the default back.
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
            // And the open files limit Baton was started with, which the
            // daemon raised for itself (Node raises its own).
            if let Some(soft) = soft_fd_limit {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                    limit.rlim_cur = soft.min(limit.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The daemon may have died between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(fd) = ipc_fd {
                if fd == NODE_CHANNEL_FD {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                } else if libc::dup2(fd, NODE_CHANNEL_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
