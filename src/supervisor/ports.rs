//! Private ports handed to instances.
//!
//! Binding `:0` and closing the socket races with every other program on the
//! machine, so a port Baton handed out stays reserved here until its instance
//! is gone, and is never handed out twice at once.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};

/// The set of ports in use by live instances.
#[derive(Clone, Default)]
pub struct PortPool {
    taken: Arc<Mutex<HashSet<u16>>>,
}

/// A reserved port; released when dropped.
pub struct PortLease {
    port: u16,
    pool: PortPool,
}

impl PortLease {
    /// The port number.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool
            .taken
            .lock()
            .expect("port pool lock poisoned")
            .remove(&self.port);
    }
}

impl PortPool {
    /// Picks a free loopback port that no live instance holds.
    ///
    /// # Errors
    /// When the OS gives no free port.
    pub fn lease(&self) -> io::Result<PortLease> {
        for _ in 0..64 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let mut taken = self.taken.lock().expect("port pool lock poisoned");
            if taken.insert(port) {
                return Ok(PortLease {
                    port,
                    pool: self.clone(),
                });
            }
        }
        Err(io::Error::other("no free port after 64 tries"))
    }
}
