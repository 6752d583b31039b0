//! The store's semantics in memory: the embedded backend's data (owned by its store thread)
//! and the test kit's fake. Time is a parameter (milliseconds since the Unix epoch), so
//! expiry is tested without waiting and survives a restart.

use std::collections::HashMap;

use super::{Batch, Key, Op, Replies, Reply, StoreError};

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    /// Milliseconds since the Unix epoch; none: never expires.
    pub expires: Option<u64>,
    /// Order of the last write, for evicting the oldest first.
    seq: u64,
}

/// What the last eviction dropped (the owner logs it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Evicted {
    pub expired: usize,
    pub oldest: usize,
}

/// Keys and values with expiry, at most `max_entries` of them.
///
/// A write that would go beyond the bound first drops every expired entry; if that frees
/// nothing, it drops the oldest-written sixteenth (at least one), so the full scan this
/// takes is paid once per many writes. [`Table::take_evicted`] tells what was dropped.
#[derive(Debug)]
pub struct Table {
    map: HashMap<Key, Entry>,
    max_entries: usize,
    seq: u64,
    evicted: Option<Evicted>,
    /// Set by every write, cleared by [`Table::take_dirty`] (the owner persists then).
    dirty: bool,
}

impl Table {
    pub fn new(max_entries: usize) -> Table {
        Table {
            map: HashMap::new(),
            max_entries: max_entries.max(1),
            seq: 0,
            evicted: None,
            dirty: false,
        }
    }

    /// Entries stored, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Applies a batch at time `now`, in order. An operation the data refuses (`incr` on a
    /// value that is not an integer) fails the batch after the operations before it.
    pub fn apply(&mut self, batch: &Batch, now: u64) -> Result<Replies, StoreError> {
        batch.check()?;
        let mut replies = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            replies.push(self.apply_one(op, now)?);
        }
        Ok(Replies(replies))
    }

    fn apply_one(&mut self, op: &Op, now: u64) -> Result<Reply, StoreError> {
        let expiry = |ttl: Option<std::time::Duration>| {
            ttl.map(|t| now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)))
        };
        Ok(match op {
            Op::Get(key) => Reply::Value(self.live(key, now).map(|e| e.value.clone())),
            Op::Set { key, value, ttl } => {
                self.write(key, value.clone(), expiry(*ttl), now);
                Reply::Stored(true)
            }
            Op::SetNx { key, value, ttl } => {
                if self.live(key, now).is_some() {
                    Reply::Stored(false)
                } else {
                    self.write(key, value.clone(), expiry(*ttl), now);
                    Reply::Stored(true)
                }
            }
            Op::Incr { key, by, ttl } => {
                let (old, expires) = match self.live(key, now) {
                    Some(e) => (parse_int(&e.value)?, e.expires),
                    None => (0, expiry(*ttl)),
                };
                let new = old
                    .checked_add(*by)
                    .ok_or_else(|| StoreError::Refused("increment overflows".into()))?;
                self.write(key, new.to_string().into_bytes(), expires, now);
                Reply::Int(new)
            }
            Op::Del(key) => {
                let existed = self.live(key, now).is_some();
                if self.map.remove(key).is_some() {
                    self.dirty = true;
                }
                Reply::Existed(existed)
            }
            Op::Expire { key, ttl } => {
                let at = expiry(Some(*ttl));
                match self.map.get_mut(key) {
                    Some(e) if !expired(e, now) => {
                        e.expires = at;
                        self.dirty = true;
                        Reply::Existed(true)
                    }
                    _ => Reply::Existed(false),
                }
            }
        })
    }

    /// The entry, unless absent or expired (an expired one is dropped here).
    fn live(&mut self, key: &Key, now: u64) -> Option<&Entry> {
        if self.map.get(key).is_some_and(|e| expired(e, now)) {
            self.map.remove(key);
            self.dirty = true;
        }
        self.map.get(key)
    }

    fn write(&mut self, key: &Key, value: Vec<u8>, expires: Option<u64>, now: u64) {
        if !self.map.contains_key(key) && self.map.len() >= self.max_entries {
            self.evict(now);
        }
        self.seq += 1;
        let entry = Entry {
            value,
            expires,
            seq: self.seq,
        };
        self.map.insert(key.clone(), entry);
        self.dirty = true;
    }

    /// Makes room: expired entries first, then the oldest-written.
    fn evict(&mut self, now: u64) {
        let expired_count = self.purge_expired(now);
        let mut oldest = 0;
        if self.map.len() >= self.max_entries {
            let drop = (self.max_entries / 16).max(1);
            let mut seqs: Vec<u64> = self.map.values().map(|e| e.seq).collect();
            let cut = drop.min(seqs.len()) - 1;
            let (_, nth, _) = seqs.select_nth_unstable(cut);
            let limit = *nth;
            let before = self.map.len();
            self.map.retain(|_, e| e.seq > limit);
            oldest = before - self.map.len();
        }
        let total = self.evicted.get_or_insert_with(Evicted::default);
        total.expired += expired_count;
        total.oldest += oldest;
        self.dirty = true;
    }

    /// Drops every expired entry; returns how many.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| !expired(e, now));
        let dropped = before - self.map.len();
        if dropped > 0 {
            self.dirty = true;
        }
        dropped
    }

    /// What evictions dropped since the last call, if any.
    pub fn take_evicted(&mut self) -> Option<Evicted> {
        self.evicted.take()
    }

    /// True if something changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    /// Marks the table changed (a save that failed is retried).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// The entries not expired at `now`, oldest-written first (for saving).
    pub fn live_entries(&self, now: u64) -> Vec<(&Key, &Entry)> {
        let mut v: Vec<_> = self.map.iter().filter(|(_, e)| !expired(e, now)).collect();
        v.sort_by_key(|(_, e)| e.seq);
        v
    }

    /// Adds an entry read back from storage (in the order they were saved); expired ones
    /// and those beyond the bound are skipped. Does not mark the table dirty.
    pub fn load(&mut self, key: Key, value: Vec<u8>, expires: Option<u64>, now: u64) {
        if expires.is_some_and(|at| at <= now) || self.map.len() >= self.max_entries {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        self.map.insert(
            key,
            Entry {
                value,
                expires,
                seq,
            },
        );
    }
}

fn expired(e: &Entry, now: u64) -> bool {
    e.expires.is_some_and(|at| at <= now)
}

fn parse_int(v: &[u8]) -> Result<i64, StoreError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| StoreError::Refused("value is not an integer".into()))
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(s: &str) -> Key {
        Key::new("t", &[s.as_bytes()]).unwrap()
    }

    fn one(t: &mut Table, op: Op, now: u64) -> Reply {
        let b = Batch { ops: vec![op] };
        t.apply(&b, now).unwrap().0.remove(0)
    }

    fn get(t: &mut Table, k: &str, now: u64) -> Option<Vec<u8>> {
        match one(t, Op::Get(key(k)), now) {
            Reply::Value(v) => v,
            other => panic!("{other:?}"),
        }
    }

    const S: Duration = Duration::from_secs(1);

    fn set(k: &str, v: impl Into<Vec<u8>>, ttl: Option<Duration>) -> Op {
        Op::Set {
            key: key(k),
            value: v.into(),
            ttl,
        }
    }

    #[test]
    fn expiry_is_enforced() {
        let mut t = Table::new(10);
        let mut b = Batch::new();
        b.set(key("a"), "1", Some(S));
        b.set(key("b"), "2", None);
        t.apply(&b, 1000).unwrap();
        assert_eq!(get(&mut t, "a", 1999), Some(b"1".to_vec()));
        assert_eq!(get(&mut t, "a", 2000), None);
        assert_eq!(get(&mut t, "b", 1_000_000), Some(b"2".to_vec()));
        // expire: only an existing key, and it moves the deadline
        assert_eq!(
            one(
                &mut t,
                Op::Expire {
                    key: key("a"),
                    ttl: S
                },
                3000
            ),
            Reply::Existed(false)
        );
        assert_eq!(
            one(
                &mut t,
                Op::Expire {
                    key: key("b"),
                    ttl: S
                },
                3000
            ),
            Reply::Existed(true)
        );
        assert_eq!(get(&mut t, "b", 3999), Some(b"2".to_vec()));
        assert_eq!(get(&mut t, "b", 4000), None);
    }

    #[test]
    fn set_nx_and_del() {
        let mut t = Table::new(10);
        let nx = |v: &str| Op::SetNx {
            key: key("k"),
            value: v.into(),
            ttl: Some(S),
        };
        assert_eq!(one(&mut t, nx("first"), 0), Reply::Stored(true));
        assert_eq!(one(&mut t, nx("second"), 10), Reply::Stored(false));
        assert_eq!(get(&mut t, "k", 10), Some(b"first".to_vec()));
        // once expired, the key is absent again
        assert_eq!(one(&mut t, nx("third"), 1000), Reply::Stored(true));
        assert_eq!(one(&mut t, Op::Del(key("k")), 1001), Reply::Existed(true));
        assert_eq!(one(&mut t, Op::Del(key("k")), 1002), Reply::Existed(false));
    }

    #[test]
    fn incr_counts_in_a_window_set_at_creation() {
        let mut t = Table::new(10);
        let incr = |by| Op::Incr {
            key: key("n"),
            by,
            ttl: Some(Duration::from_secs(10)),
        };
        assert_eq!(one(&mut t, incr(1), 0), Reply::Int(1));
        assert_eq!(one(&mut t, incr(5), 9000), Reply::Int(6));
        assert_eq!(one(&mut t, incr(-2), 9999), Reply::Int(4));
        // the window was fixed by the first incr: later ones did not extend it
        assert_eq!(one(&mut t, incr(1), 10_000), Reply::Int(1));
        one(&mut t, set("s", "x", None), 0);
        let incr_of = |k| Batch {
            ops: vec![Op::Incr {
                key: key(k),
                by: 1,
                ttl: None,
            }],
        };
        assert!(matches!(
            t.apply(&incr_of("s"), 0),
            Err(StoreError::Refused(_))
        ));
        one(&mut t, set("m", i64::MAX.to_string(), None), 0);
        assert!(matches!(
            t.apply(&incr_of("m"), 0),
            Err(StoreError::Refused(_))
        ));
    }

    #[test]
    fn a_full_table_evicts_expired_first_then_oldest() {
        let mut t = Table::new(32);
        for i in 0..16 {
            one(&mut t, set(&format!("short{i}"), "v", Some(S)), 0);
        }
        for i in 0..16 {
            one(&mut t, set(&format!("long{i}"), "v", None), 0);
        }
        assert_eq!(t.take_evicted(), None);
        // full: the next write drops the 16 expired ones, and nothing else
        one(&mut t, set("new", "v", None), 5000);
        assert_eq!(
            t.take_evicted(),
            Some(Evicted {
                expired: 16,
                oldest: 0
            })
        );
        assert_eq!(t.len(), 17);
        for i in 0..15 {
            one(&mut t, set(&format!("more{i}"), "v", None), 5000);
        }
        assert_eq!(t.len(), 32);
        // full of live entries: the oldest-written sixteenth (2) goes
        one(&mut t, set("last", "v", None), 5000);
        assert_eq!(
            t.take_evicted(),
            Some(Evicted {
                expired: 0,
                oldest: 2
            })
        );
        assert_eq!(get(&mut t, "long0", 5000), None);
        assert_eq!(get(&mut t, "long1", 5000), None);
        assert!(get(&mut t, "long2", 5000).is_some() && get(&mut t, "last", 5000).is_some());
        // overwriting an existing key never evicts
        one(&mut t, set("last", "w", None), 5000);
        assert_eq!(t.take_evicted(), None);
    }

    #[test]
    fn saved_entries_load_back_without_the_expired() {
        let mut t = Table::new(10);
        one(
            &mut t,
            Op::Set {
                key: key("a"),
                value: "1".into(),
                ttl: Some(S),
            },
            0,
        );
        one(
            &mut t,
            Op::Set {
                key: key("b"),
                value: "2".into(),
                ttl: None,
            },
            0,
        );
        assert!(t.take_dirty() && !t.take_dirty());
        let saved: Vec<_> = t
            .live_entries(0)
            .into_iter()
            .map(|(k, e)| (k.clone(), e.value.clone(), e.expires))
            .collect();
        assert_eq!(saved.len(), 2);
        let mut back = Table::new(10);
        for (k, v, exp) in saved {
            back.load(k, v, exp, 1500);
        }
        assert_eq!(back.len(), 1);
        assert_eq!(get(&mut back, "b", 1500), Some(b"2".to_vec()));
    }
}
