//! Starting a child: its own process group, the parent-death signal, and the
//! Node IPC channel.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. Children are forked from the runtime's own threads (the
//! current-thread runtime's one, or the multi-thread runtime's workers),
//! which live as long as the daemon; never from the blocking pool, which
//! retires idle threads. No thread of Baton's own is needed for it: with one
//! worker thread the daemon stays single-threaded, and then the kernel
//! skips a file reference count on every socket syscall.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::process::{Child, Command};

/// The fd number the Node IPC channel gets in the child.
pub(crate) const NODE_CHANNEL_FD: RawFd = 3;

/// Prepares `cmd` to run in its own process group, to die with the daemon,
/// and, when `ipc` is given, to inherit it as fd 3 (`NODE_CHANNEL_FD`).
pub(crate) fn prepare(cmd: &mut Command, ipc: Option<&OwnedFd>) {
    let parent = std::process::id() as i32;
    let ipc_fd = ipc.map(AsRawFd::as_raw_fd);
    let soft_fd_limit = crate::limits::original_soft_fd_limit();
    cmd.process_group(0);
    crate::sys::prepare_child(cmd, parent, ipc_fd, soft_fd_limit);
}

/// Spawns `cmd` from the runtime thread this runs on (see the module
/// notes for why that thread matters).
///
/// # Errors
/// The spawn error, such as a missing working directory.
pub(crate) fn spawn(mut cmd: Command) -> io::Result<Child> {
    cmd.spawn()
}
