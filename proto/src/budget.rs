//! Connection budgets: how many connections one process (a mail node over all its listeners, a
//! router over all its public ports) holds at once, in all and from one client address. Per
//! listener, seven listeners would allow seven times the numbers configured.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A process's connection limits, shared by its listeners.
pub struct ConnectionBudget {
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    max_per_ip: usize,
}

/// One connection's place in the budget's total, given back on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// One connection's place among its client address's, given back on drop.
pub struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

#[derive(Default)]
struct PerIp {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionBudget {
    /// At most `max` connections, `max_per_ip` of them from one client address.
    pub fn new(max: usize, max_per_ip: usize) -> Arc<ConnectionBudget> {
        Arc::new(ConnectionBudget { slots: Arc::new(Semaphore::new(max)), per_ip: Arc::default(), max_per_ip })
    }

    /// A place in the total, if one is free.
    pub fn slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok().map(|permit| Slot { _permit: permit })
    }

    /// A place among `ip`'s connections, if it has fewer than its limit.
    pub fn ip_slot(&self, ip: IpAddr) -> Option<IpSlot> {
        let mut counts = self.per_ip.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot { table: self.per_ip.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_come_back_when_dropped() {
        let budget = ConnectionBudget::new(2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let (s1, s2) = (budget.slot().expect("1"), budget.slot().expect("2"));
        assert!(budget.slot().is_none(), "the total is used up");
        drop(s1);
        assert!(budget.slot().is_some());
        drop(s2);
        let held = budget.ip_slot(a).expect("a's first");
        assert!(budget.ip_slot(a).is_none(), "a's limit is 1");
        assert!(budget.ip_slot(b).is_some(), "b has its own");
        drop(held);
        assert!(budget.ip_slot(a).is_some());
        assert!(budget.per_ip.counts.lock().unwrap().is_empty(), "no entry left for idle addresses");
    }
}
