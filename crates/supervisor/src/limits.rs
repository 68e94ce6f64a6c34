//! Process limits the daemon sets for itself.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft limit on open files to the hard limit, as Node, nginx
/// (`worker_rlimit_nofile`) and Go's runtime do. Every proxied request
/// holds two fds; systemd's default soft limit of 1024 caps Baton near 500
/// clients, while the hard limit (524288 under systemd) is the real bound.
/// Instances are spawned with the limit put back (see `spawn`), since some
/// programs misbehave with a huge soft limit (select(2), closing every fd
/// at start).
pub fn raise_fd_limit() {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    ORIGINAL_SOFT.store(soft, std::sync::atomic::Ordering::Relaxed);
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => tracing::warn!("cannot raise the open files limit from {soft}: {e}"),
        }
    }
}

/// The soft limit Baton was started with (0 before `raise_fd_limit`).
static ORIGINAL_SOFT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The soft limit to give a child back: the one Baton was started with.
pub(crate) fn original_soft_fd_limit() -> Option<u64> {
    match ORIGINAL_SOFT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}
