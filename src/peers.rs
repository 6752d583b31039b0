//! Connections open per client IP, across every worker and listener of the process, for
//! `hosts_allow`'s per-IP limit (qpsmtpd's `max_conn_ip`). A connection enters at accept (after
//! its PROXY header, so the real client counts) and leaves when its session ends.
//!
//! Sharded by IP: a worker takes one shard lock per connection open and close, never per
//! message, and two workers rarely want the same shard.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

pub struct PeerCounts {
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
    hasher: RandomState,
}

/// Holds one connection's place in the count; leaving is dropping it.
pub struct PeerGuard {
    counts: Arc<PeerCounts>,
    ip: IpAddr,
}

impl PeerCounts {
    pub fn new() -> Arc<PeerCounts> {
        Arc::new(PeerCounts {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        &self.shards[self.hasher.hash_one(ip) as usize % SHARDS]
    }

    /// Counts a new connection from `ip`; returns the guard and the count including it.
    pub fn enter(self: &Arc<Self>, ip: IpAddr) -> (PeerGuard, u32) {
        let mut map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        *n += 1;
        let count = *n;
        drop(map);
        (
            PeerGuard {
                counts: self.clone(),
                ip,
            },
            count,
        )
    }

    /// Connections open from `ip` now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for PeerGuard {
    fn drop(&mut self) {
        let mut map = self
            .counts
            .shard(&self.ip)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip); // the map holds only IPs with open connections
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_across_threads_and_forgets_closed() {
        let counts = PeerCounts::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let (g1, n1) = counts.enter(ip);
        let c2 = counts.clone();
        let (g2, n2) = std::thread::spawn(move || c2.enter(ip)).join().unwrap();
        let (_g3, n3) = counts.enter(other);
        assert_eq!((n1, n2, n3), (1, 2, 1));
        drop(g1);
        assert_eq!(counts.count(ip), 1);
        drop(g2);
        assert_eq!(counts.count(ip), 0);
        assert!(counts
            .shards
            .iter()
            .all(|s| !s.lock().unwrap().contains_key(&ip)));
    }
}
