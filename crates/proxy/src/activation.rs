//! systemd socket activation: listening sockets passed in from fd 3 on
//! (`LISTEN_FDS`, for the process `LISTEN_PID`). systemd keeps them open
//! while Baton restarts, so clients connecting during a restart wait in
//! the kernel's backlog instead of being refused.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

/// The first fd passed (`SD_LISTEN_FDS_START`), by systemd or by the
/// daemon that upgrades to this one.
pub const FIRST_FD: RawFd = 3;

/// The TCP listening sockets passed to this process, by address.
#[derive(Debug, Default)]
pub struct Inherited(Vec<(SocketAddr, std::net::TcpListener)>);

impl Inherited {
    /// Takes the sockets passed to this process, and removes the variables
    /// that describe them so no child takes them for its own (as
    /// `sd_listen_fds(1)`). Instances do not inherit the fds either: they
    /// are made close-on-exec.
    ///
    /// Call it before any thread starts: it changes the environment.
    pub fn take_from_env() -> Inherited {
        let pid = std::env::var("LISTEN_PID").ok();
        let count = std::env::var("LISTEN_FDS").ok();
        for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(name);
        }
        let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        let count = count.and_then(|n| n.parse::<RawFd>().ok()).unwrap_or(0);
        if !ours || count <= 0 {
            return Inherited::default();
        }
        let mut sockets = Vec::new();
        for fd in FIRST_FD..FIRST_FD + count {
            let socket = crate::sys::take_passed_socket(fd);
            let _ = socket.set_cloexec(true);
            match tcp_listener_addr(&socket) {
                Some(addr) => sockets.push((addr, socket.into())),
                None => {
                    tracing::warn!("fd {fd} from systemd is not a TCP listening socket; ignored");
                    let _ = socket.into_raw_fd();
                }
            }
        }
        Inherited(sockets)
    }

    /// The socket passed for `addr`, ready for tokio.
    ///
    /// # Errors
    /// When it cannot be made non-blocking.
    pub fn take(&mut self, addr: SocketAddr) -> std::io::Result<Option<tokio::net::TcpListener>> {
        let Some(at) = self.0.iter().position(|(a, _)| *a == addr) else {
            return Ok(None);
        };
        let (_, socket) = self.0.remove(at);
        socket.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(socket).map(Some)
    }

    /// The addresses passed and not taken.
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.0.iter().map(|(a, _)| *a).collect()
    }
}

fn tcp_listener_addr(socket: &socket2::Socket) -> Option<SocketAddr> {
    let stream = socket.r#type().ok()? == socket2::Type::STREAM;
    let listening = nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::AcceptConn)
        .unwrap_or(false);
    if !(stream && listening) {
        return None;
    }
    socket.local_addr().ok()?.as_socket()
}
