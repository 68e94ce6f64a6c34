//! Private ports handed to instances.
//!
//! Binding `:0` and closing the socket races with every other program on the
//! machine, so a port Baton handed out stays reserved here until its instance
//! is gone, and is never handed out twice at once. With `[daemon]
//! port_range` (a host whose firewall opens only some ports, or that
//! reserves ranges for other services), ports come from that range only.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

/// The set of ports in use by live instances.
#[derive(Clone, Default)]
pub struct PortPool {
    taken: Arc<Mutex<HashSet<u16>>>,
    /// Ports come from here only, when set.
    range: Option<RangeInclusive<u16>>,
    /// Where the next search in `range` starts: ports go round the range
    /// rather than back to its start, which a stopping instance may hold.
    cursor: Arc<AtomicU16>,
}

/// A reserved port; released when dropped.
pub(crate) struct PortLease {
    port: u16,
    pool: PortPool,
}

impl PortLease {
    /// The port number.
    pub(crate) fn port(&self) -> u16 {
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
    /// A pool handing out ports of `range` only (any free port when none).
    pub fn new(range: Option<RangeInclusive<u16>>) -> PortPool {
        PortPool {
            range,
            ..PortPool::default()
        }
    }

    /// Picks a free loopback port that no live instance holds.
    ///
    /// # Errors
    /// When the OS gives no free port, or none in the range is free.
    pub(crate) fn lease(&self) -> io::Result<PortLease> {
        if let Some(range) = &self.range {
            return self.lease_in(range);
        }
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

    /// A port of `range` that no instance holds and nothing else listens on.
    fn lease_in(&self, range: &RangeInclusive<u16>) -> io::Result<PortLease> {
        let (first, last) = (*range.start(), *range.end());
        let size = u32::from(last - first) + 1;
        let mut taken = self.taken.lock().expect("port pool lock poisoned");
        let start = u32::from(self.cursor.fetch_add(1, Ordering::Relaxed));
        for step in 0..size {
            let port = first + ((start + step) % size) as u16;
            if taken.contains(&port) {
                continue;
            }
            // Free now: bound and let go (another program may take it
            // after, as with port 0; the instance then fails to listen and
            // is restarted on another).
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                taken.insert(port);
                return Ok(PortLease {
                    port,
                    pool: self.clone(),
                });
            }
        }
        Err(io::Error::other(format!(
            "no free port in port_range {first}-{last} ({} held by instances)",
            taken.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports come from the range, never twice at once, and come back when
    /// let go; a full range is a clear error.
    #[test]
    fn a_range_is_handed_out_and_exhausted() {
        let first = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            .clamp(1024, 65000);
        let pool = PortPool::new(Some(first..=first + 2));
        let leases: Vec<PortLease> = (0..3).filter_map(|_| pool.lease().ok()).collect();
        let mut ports: Vec<u16> = leases.iter().map(PortLease::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert!(
            ports.iter().all(|p| (first..=first + 2).contains(p)),
            "{ports:?}"
        );
        assert_eq!(
            ports.len(),
            leases.len(),
            "a port handed out twice: {ports:?}"
        );
        if leases.len() == 3 {
            let e = pool.lease().err().expect("the range is full");
            assert!(e.to_string().contains("no free port in port_range"), "{e}");
        }
        drop(leases);
        assert!(pool.lease().is_ok(), "ports come back when let go");
    }
}
