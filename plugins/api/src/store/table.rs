//! The store's semantics in memory: the embedded backend's data (owned by its store thread)
//! and the test kit's fake. Time is a parameter (milliseconds since the Unix epoch), so
//! expiry is tested without waiting and survives a restart.

use std::collections::{HashMap, HashSet};

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
    /// Keys written, deleted or evicted since [`Table::take_changes`] (the owner persists
    /// them then). Expiry needs no record: a saved entry carries its expiry time.
    changed: HashSet<Key>,
}

impl Table {
    pub fn new(max_entries: usize) -> Table {
        Table {
            map: HashMap::new(),
            max_entries: max_entries.max(1),
            seq: 0,
            evicted: None,
            changed: HashSet::new(),
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
                    self.changed.insert(key.clone());
                }
                Reply::Existed(existed)
            }
            Op::Expire { key, ttl } => {
                let at = expiry(Some(*ttl));
                match self.map.get_mut(key) {
                    Some(e) if !expired(e, now) => {
                        e.expires = at;
                        self.changed.insert(key.clone());
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
        self.changed.insert(key.clone());
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
            let changed = &mut self.changed;
            self.map.retain(|k, e| {
                let keep = e.seq > limit;
                if !keep {
                    changed.insert(k.clone());
                    oldest += 1;
                }
                keep
            });
        }
        let total = self.evicted.get_or_insert_with(Evicted::default);
        total.expired += expired_count;
        total.oldest += oldest;
    }

    /// Drops every expired entry; returns how many.
    pub fn purge_expired(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| !expired(e, now));
        before - self.map.len()
    }

    /// What evictions dropped since the last call, if any.
    pub fn take_evicted(&mut self) -> Option<Evicted> {
        self.evicted.take()
    }

    /// True if something was written, deleted or evicted since [`Table::take_changes`].
    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// Each key changed since the last call, with its entry now (none: deleted or evicted;
    /// an expired entry is returned as it is, its expiry says so).
    pub fn take_changes(&mut self) -> Vec<(Key, Option<&Entry>)> {
        let keys = std::mem::take(&mut self.changed);
        keys.into_iter()
            .map(|k| {
                let e = self.map.get(&k);
                (k, e)
            })
            .collect()
    }

    /// The entries not expired at `now`, oldest-written first (for saving).
    pub fn live_entries(&self, now: u64) -> Vec<(&Key, &Entry)> {
        let mut v: Vec<_> = self.map.iter().filter(|(_, e)| !expired(e, now)).collect();
        v.sort_by_key(|(_, e)| e.seq);
        v
    }

    /// Adds (or replaces) an entry read back from storage, in the order it was saved; an
    /// expired one removes the key, and a new key beyond the bound is skipped. Not a change.
    pub fn load(&mut self, key: Key, value: Vec<u8>, expires: Option<u64>, now: u64) {
        if expires.is_some_and(|at| at <= now) {
            self.map.remove(&key);
            return;
        }
        if !self.map.contains_key(&key) && self.map.len() >= self.max_entries {
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

    /// Removes an entry, as a deletion read back from storage does. Not a change.
    pub fn unload(&mut self, key: &Key) {
        self.map.remove(key);
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
        assert_eq!(t.take_changes().len(), 2);
        assert!(!t.has_changes());
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

    #[test]
    fn changes_name_each_key_once_with_its_entry_now() {
        let mut t = Table::new(32);
        one(&mut t, set("a", "1", None), 0);
        one(&mut t, set("a", "2", None), 0);
        one(&mut t, set("b", "1", None), 0);
        one(&mut t, Op::Del(key("b")), 0);
        one(
            &mut t,
            Op::Expire {
                key: key("c"),
                ttl: S,
            },
            0,
        ); // absent: no change
        let mut changes: Vec<_> = t
            .take_changes()
            .into_iter()
            .map(|(k, e)| (k, e.map(|e| e.value.clone())))
            .collect();
        changes.sort_by(|x, y| x.0.as_bytes().cmp(y.0.as_bytes()));
        assert_eq!(
            changes,
            vec![(key("a"), Some(b"2".to_vec())), (key("b"), None)]
        );
        assert!(!t.has_changes());
        // reading an expired entry drops it from memory but records nothing (its saved
        // expiry already says it is gone)
        one(&mut t, set("e", "1", Some(S)), 0);
        t.take_changes();
        assert_eq!(get(&mut t, "e", 5000), None);
        assert!(!t.has_changes());
        // evicted entries are changes: they must not come back from the log
        let mut small = Table::new(2);
        one(&mut small, set("x", "1", None), 0);
        one(&mut small, set("y", "1", None), 0);
        small.take_changes();
        one(&mut small, set("z", "1", None), 0);
        let evicted: Vec<_> = small
            .take_changes()
            .into_iter()
            .filter(|(_, e)| e.is_none())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(evicted, vec![key("x")]);
    }

    #[test]
    fn load_replays_sets_and_deletions_in_order() {
        let mut t = Table::new(2);
        t.load(key("a"), b"1".to_vec(), None, 0);
        t.load(key("a"), b"2".to_vec(), None, 0); // a later record wins
        t.load(key("b"), b"1".to_vec(), None, 0);
        t.load(key("a"), b"3".to_vec(), None, 0); // full, but a is there already
        t.unload(&key("b"));
        t.load(key("c"), b"1".to_vec(), Some(10), 0);
        t.load(key("c"), b"1".to_vec(), Some(10), 20); // expired now: removes c
        assert_eq!(get(&mut t, "a", 20), Some(b"3".to_vec()));
        assert_eq!((get(&mut t, "b", 20), get(&mut t, "c", 20)), (None, None));
        assert!(!t.has_changes());
    }
}
