//! The answer cache: positive and negative answers by (type, name), each until its TTL runs
//! out, at most `cap` of them.
//!
//! Eviction is first-in first-out: when the cache is full, the answer stored longest ago goes
//! first (answers with long TTLs are the ones that stay long, so this approximates "soonest to
//! expire" without a priority queue). Expired answers are removed when they are looked up, and
//! by the FIFO as the cache fills. Every operation is O(1) amortized: the FIFO may hold stale
//! slots for replaced keys, and is rebuilt once it holds more than twice `cap` slots.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::dns::DnsAnswer;

struct Entry {
    answer: Rc<DnsAnswer>,
    expires: Instant,
    /// Insertion serial: the FIFO slot `(key, serial)` is current only if this matches.
    serial: u64,
}

pub struct Cache {
    cap: usize,
    map: HashMap<Rc<str>, Entry>,
    fifo: VecDeque<(Rc<str>, u64)>,
    serial: u64,
}

impl Cache {
    /// A cache of at most `cap` answers (0: nothing is cached).
    pub fn new(cap: usize) -> Cache {
        Cache {
            cap,
            map: HashMap::with_capacity(cap.min(1024)),
            fifo: VecDeque::with_capacity(cap.min(1024)),
            serial: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The answer for `key` if it is still fresh at `now`; an expired one is removed.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<Rc<DnsAnswer>> {
        let entry = self.map.get(key)?;
        if entry.expires > now {
            return Some(entry.answer.clone());
        }
        self.map.remove(key);
        None
    }

    /// Stores `answer` under `key` for its TTL (an answer with TTL 0 is not stored).
    pub fn insert(&mut self, key: &str, answer: Rc<DnsAnswer>, now: Instant) {
        if self.cap == 0 || answer.ttl == 0 {
            return;
        }
        let expires = now + Duration::from_secs(u64::from(answer.ttl));
        self.serial += 1;
        let serial = self.serial;
        if let Some(e) = self.map.get_mut(key) {
            *e = Entry {
                answer,
                expires,
                serial,
            };
            if let Some((k, _)) = self.map.get_key_value(key) {
                self.fifo.push_back((k.clone(), serial));
            }
        } else {
            while self.map.len() >= self.cap {
                let Some((k, s)) = self.fifo.pop_front() else {
                    break;
                };
                if self.map.get(&k).is_some_and(|e| e.serial == s) {
                    self.map.remove(&k);
                }
            }
            let k: Rc<str> = Rc::from(key);
            self.map.insert(
                k.clone(),
                Entry {
                    answer,
                    expires,
                    serial,
                },
            );
            self.fifo.push_back((k, serial));
        }
        if self.fifo.len() > 2 * self.cap + 16 {
            self.compact();
        }
    }

    /// Drops the FIFO slots of replaced or removed keys.
    fn compact(&mut self) {
        let map = &self.map;
        self.fifo
            .retain(|(k, s)| map.get(k).is_some_and(|e| e.serial == *s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ans(ttl: u32) -> Rc<DnsAnswer> {
        Rc::new(DnsAnswer {
            nxdomain: false,
            records: vec![],
            ttl,
        })
    }

    #[test]
    fn hit_until_ttl() {
        let mut c = Cache::new(10);
        let t0 = Instant::now();
        c.insert("aone", ans(60), t0);
        assert!(c.get("aone", t0 + Duration::from_secs(59)).is_some());
        assert!(c.get("aone", t0 + Duration::from_secs(60)).is_none());
        assert_eq!(c.len(), 0, "expired entry removed on lookup");
        c.insert("azero", ans(0), t0);
        assert!(c.get("azero", t0).is_none(), "TTL 0 is not cached");
    }

    #[test]
    fn bounded_fifo() {
        let mut c = Cache::new(3);
        let t0 = Instant::now();
        for k in ["a1", "a2", "a3", "a4"] {
            c.insert(k, ans(60), t0);
        }
        assert_eq!(c.len(), 3);
        assert!(c.get("a1", t0).is_none(), "oldest evicted");
        // Replacing a key refreshes it; churn never grows the FIFO without bound.
        for _ in 0..1000 {
            c.insert("a2", ans(60), t0);
        }
        assert!(c.fifo.len() <= 2 * 3 + 16);
        c.insert("a5", ans(60), t0);
        assert!(c.get("a3", t0).is_none());
        assert!(c.get("a2", t0).is_some() && c.get("a5", t0).is_some());
        let mut off = Cache::new(0);
        off.insert("a1", ans(60), t0);
        assert_eq!(off.len(), 0);
    }
}
