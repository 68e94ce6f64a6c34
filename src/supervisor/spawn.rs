//! Starting a child: its own process group, the parent-death signal, and the
//! Node IPC channel.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
//! not the process. Tokio's blocking pool retires idle threads, so children
//! are forked from one dedicated thread that lives as long as the daemon.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc as std_mpsc;
use std::sync::OnceLock;

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// The fd number the Node IPC channel gets in the child.
pub const NODE_CHANNEL_FD: RawFd = 3;

type SpawnRequest = (Command, oneshot::Sender<io::Result<Child>>);

static SPAWNER: OnceLock<std_mpsc::Sender<SpawnRequest>> = OnceLock::new();

fn spawner() -> &'static std_mpsc::Sender<SpawnRequest> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = std_mpsc::channel::<SpawnRequest>();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("baton-spawner".into())
            .spawn(move || {
                // tokio's Child registers with the runtime's SIGCHLD driver.
                let _guard = runtime.enter();
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        tx
    })
}

/// Prepares `cmd` to run in its own process group, to die with the daemon,
/// and, when `ipc` is given, to inherit it as fd 3 (`NODE_CHANNEL_FD`).
pub fn prepare(cmd: &mut Command, ipc: Option<&OwnedFd>) {
    let parent = std::process::id() as i32;
    let ipc_fd = ipc.map(AsRawFd::as_raw_fd);
    cmd.process_group(0);
    // SAFETY: only async-signal-safe calls (prctl, getppid, dup2, fcntl,
    // _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The daemon ignores SIGXFSZ; the app gets the default back.
            libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
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

/// Spawns `cmd` from the long-lived spawner thread.
///
/// # Errors
/// The spawn error, such as a missing working directory.
pub async fn spawn(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = oneshot::channel();
    spawner()
        .send((cmd, tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}
