//! One daemon per state directory: an exclusive `flock` on `baton.lock`,
//! held for the daemon's life and released by the kernel however it ends.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use super::StartError;

/// The held lock; dropping it releases it.
pub(crate) struct StateLock {
    _file: Flock<File>,
}

/// Whether a daemon holds the state directory's lock right now.
pub fn is_held(state_dir: &Path) -> bool {
    let Ok(file) = File::open(state_dir.join("baton.lock")) else {
        return false;
    };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

impl StateLock {
    /// Takes the lock, or says who holds it.
    ///
    /// # Errors
    /// [`StartError::AlreadyRunning`] when another daemon holds it.
    pub(crate) fn acquire(state_dir: &Path) -> Result<StateLock, StartError> {
        let path = state_dir.join("baton.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| StartError::Io {
                what: format!("opening {}", path.display()),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                let _ = locked.set_len(0);
                let _ = locked.rewind();
                let _ = write!(locked, "{}", std::process::id());
                Ok(StateLock { _file: locked })
            }
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(StartError::AlreadyRunning {
                    pid: pid.trim().to_string(),
                    dir: state_dir.display().to_string(),
                })
            }
        }
    }
}
