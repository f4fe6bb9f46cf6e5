//! The per-IP connection cap (MAX_CONNECTIONS_PER_IP): how many connections one client
//! address — an IPv6 client's whole RATE_LIMIT_IPV6_PREFIX network — may hold open at
//! once, so a single client cannot take all of MAX_CONNECTIONS for itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

/// Open connections by client network. An entry goes when its count drops to zero, so
/// the table never holds more entries than there are open connections.
#[derive(Debug, Default)]
pub struct PerIpConnections {
    open: Mutex<HashMap<IpNet, usize>>,
}

/// One counted connection; dropping it (when the connection ends) uncounts it.
#[derive(Debug)]
pub struct PerIpPermit {
    table: Arc<PerIpConnections>,
    network: IpNet,
}

impl PerIpConnections {
    /// Counts one more connection from `network`, unless it already has `cap` open.
    pub fn try_acquire(self: &Arc<Self>, network: IpNet, cap: usize) -> Option<PerIpPermit> {
        let mut open = self.lock();
        let count = open.entry(network).or_insert(0);
        if *count >= cap {
            if *count == 0 {
                open.remove(&network);
            }
            return None;
        }
        *count += 1;
        Some(PerIpPermit {
            table: self.clone(),
            network,
        })
    }

    /// How many connections `network` has open.
    pub fn open(&self, network: &IpNet) -> usize {
        self.lock().get(network).copied().unwrap_or(0)
    }

    /// How many networks have connections open.
    pub fn networks(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpNet, usize>> {
        // A panic while holding the lock cannot leave a count half-updated.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for PerIpPermit {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.network) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.network);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_gets_at_most_cap_and_entries_go_with_their_last_connection() {
        let table = Arc::new(PerIpConnections::default());
        let a: IpNet = "203.0.113.9/32".parse().unwrap();
        let b: IpNet = "2001:db8:1:2::/64".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| table.try_acquire(a, 3).unwrap()).collect();
        assert!(table.try_acquire(a, 3).is_none());
        let other = table.try_acquire(b, 3).unwrap();
        assert_eq!((table.open(&a), table.open(&b)), (3, 1));
        drop(held);
        assert_eq!(table.open(&a), 0);
        assert!(table.try_acquire(a, 3).is_some());
        drop(other);
        assert_eq!(table.networks(), 0);
        // A cap of zero is handled by the caller (no cap); here it admits nobody and
        // leaves no entry behind.
        assert!(table.try_acquire(a, 0).is_none());
        assert_eq!(table.networks(), 0);
    }
}
