//! Every `unsafe` block of the proxy, each with its SAFETY note: file
//! descriptors that the kernel or systemd hands over, taken into owning
//! types.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OpenHow;

/// `openat2(2)` of `relative` under the folder `dir`, as `how` says.
pub(crate) fn openat2(dir: RawFd, relative: &Path, how: OpenHow) -> io::Result<File> {
    let fd = nix::fcntl::openat2(dir, relative, how)
        .map_err(|e: Errno| io::Error::from_raw_os_error(e as i32))?;
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A listening socket systemd passed as `fd` (socket activation). Only
/// for the fds `LISTEN_FDS` counts, once `LISTEN_PID` named this process
/// (`activation::Inherited::take_from_env`), each taken once.
pub(crate) fn take_passed_socket(fd: RawFd) -> socket2::Socket {
    // SAFETY: systemd passed this fd to this process for it to own, and
    // nothing else in it has used the fd yet (the caller takes each once).
    unsafe { socket2::Socket::from_raw_fd(fd) }
}
