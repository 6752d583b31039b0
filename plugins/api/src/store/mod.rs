//! The state store: data that outlives a connection (greylisting triplets, karma history,
//! rate-limit counters), shared by every worker of the process and, with Redis, by every
//! process and host. A plugin never sees which backend it has.
//!
//! A hook builds a [`Batch`] of operations and sends it with
//! [`Services::store`](crate::Services::store): the batch is one round trip to the backend
//! (one pipelined write and its replies with Redis, one message to the store thread with the
//! embedded store), and its replies come back in order. Plugins of one hook can share one
//! round trip by planning their batches ([`ahead`]'s module docs: `Plugin::store_ahead` and
//! [`Cx::store_planned`](crate::Cx::store_planned)).
//!
//! ```ignore
//! let key = Key::new("greylisting", &[ip.as_bytes(), sender.as_bytes()])?;
//! let mut b = Batch::new();
//! let seen = b.set_nx(key.clone(), now.to_string(), Some(grey_timeout));
//! let first = b.get(key);
//! let replies = cx.svc.store(b).await?;        // Err: StoreError, the plugin's fail policy
//! if replies.stored(seen) { /* first attempt */ }
//! ```
//!
//! Semantics (both backends):
//!
//! - keys and values are bytes; a [`Key`] is built from components, each length-prefixed, so
//!   no envelope data (long, binary, `\r\n`, RESP's `*$+-:`) can change where a key ends or
//!   collide with another plugin's or another component's key;
//! - an expiry (`ttl`) is relative to the moment the backend applies the operation;
//!   an expired key is absent;
//! - [`Batch::incr`] adds to a decimal integer value (absent: 0); its `ttl` applies only when
//!   the key is created, so a counter with a ttl counts within a fixed window (rate limits),
//!   and one without counts forever (concurrency counts that go up and down);
//! - [`Batch::set_nx`] stores only if the key is absent, and says whether it did;
//! - [`Batch::expire`] gives an existing key a new expiry and says whether it existed;
//! - the operations of a batch are applied in order; a batch is not a transaction: another
//!   worker's batch may run between two of them with Redis.
//!
//! Errors are typed ([`StoreError`]) so each plugin applies its documented fail policy
//! (greylisting lets mail through when the store is down, by default).

pub mod ahead;
mod table;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use ahead::{send_plans, Ahead, Planned, Plans};
pub use table::{unix_ms, Entry, Evicted, Table};

/// The longest encoded key, in bytes. Envelope addresses are at most 256 bytes (RFC 5321
/// §4.5.3.1.3); a key built from longer data is refused ([`StoreError::KeyTooLong`]).
pub const MAX_KEY: usize = 2048;
/// The largest value, in bytes.
pub const MAX_VALUE: usize = 64 * 1024;
/// The most operations in one batch.
pub const MAX_BATCH: usize = 64;

/// A store key: a namespace (the plugin's name) and components, each written as its decimal
/// length, `:`, and its bytes. The encoding is prefix-free: two different lists of
/// components never give the same key, whatever bytes they hold.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The key for `parts` in `namespace`; `KeyTooLong` beyond [`MAX_KEY`] bytes.
    pub fn new(namespace: &str, parts: &[&[u8]]) -> Result<Key, StoreError> {
        let mut k = Vec::with_capacity(
            namespace.len() + parts.iter().map(|p| p.len() + 6).sum::<usize>() + 6,
        );
        for part in std::iter::once(namespace.as_bytes()).chain(parts.iter().copied()) {
            k.extend_from_slice(part.len().to_string().as_bytes());
            k.push(b':');
            k.extend_from_slice(part);
            if k.len() > MAX_KEY {
                return Err(StoreError::KeyTooLong);
            }
        }
        Ok(Key(k))
    }

    /// A key exactly as stored (a backend reading its own data back, e.g. from a file).
    pub fn from_raw(raw: Vec<u8>) -> Result<Key, StoreError> {
        if raw.len() > MAX_KEY {
            return Err(StoreError::KeyTooLong);
        }
        Ok(Key(raw))
    }

    /// The encoded bytes, as the backend stores them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The components after the namespace, if this key is in `namespace` and well formed (a
    /// tool listing one plugin's entries of a store).
    pub fn parts_in(&self, namespace: &str) -> Option<Vec<&[u8]>> {
        let mut parts = Vec::new();
        let mut rest = &self.0[..];
        while !rest.is_empty() {
            let colon = rest.iter().position(|&b| b == b':')?;
            let digits = std::str::from_utf8(&rest[..colon]).ok()?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let len: usize = digits.parse().ok()?;
            let part = rest.get(colon + 1..colon + 1 + len)?;
            parts.push(part);
            rest = &rest[colon + 1 + len..];
        }
        (parts.first() == Some(&namespace.as_bytes())).then(|| parts.split_off(1))
    }
}

/// Escaped for a log line (bytes outside printable ASCII as `\xNN`).
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One operation of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The value, if the key is present: [`Reply::Value`].
    Get(Key),
    /// Stores the value (with an expiry, or none): [`Reply::Stored`] (always true).
    Set {
        key: Key,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// Stores the value only if the key is absent: [`Reply::Stored`] (whether it did).
    SetNx {
        key: Key,
        value: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// Adds `by` to the decimal integer value (absent: 0), `ttl` set when it is created:
    /// [`Reply::Int`] (the new value).
    Incr {
        key: Key,
        by: i64,
        ttl: Option<Duration>,
    },
    /// Removes the key: [`Reply::Existed`].
    Del(Key),
    /// A new expiry for an existing key: [`Reply::Existed`].
    Expire { key: Key, ttl: Duration },
}

impl Op {
    /// The key the operation works on.
    pub fn key(&self) -> &Key {
        match self {
            Op::Get(key) | Op::Del(key) => key,
            Op::Set { key, .. }
            | Op::SetNx { key, .. }
            | Op::Incr { key, .. }
            | Op::Expire { key, .. } => key,
        }
    }
}

/// The reply to one [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Stored(bool),
    Int(i64),
    Existed(bool),
}

/// Why a batch failed. The batch may have been applied in part (Redis applies what it
/// received before the connection broke).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No store is configured, or the backend cannot be reached (connection refused, down
    /// and waiting to retry): fail fast.
    Unavailable(String),
    /// The backend did not answer in time.
    Timeout,
    /// The backend refused an operation (e.g. `incr` on a value that is not an integer).
    Refused(String),
    /// The backend's answer was not what the protocol allows.
    Protocol(String),
    /// A key beyond [`MAX_KEY`] bytes.
    KeyTooLong,
    /// A value beyond [`MAX_VALUE`] bytes, or a batch beyond [`MAX_BATCH`] operations.
    TooLarge,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unavailable(why) => write!(f, "state store unavailable: {why}"),
            StoreError::Timeout => write!(f, "state store timed out"),
            StoreError::Refused(why) => write!(f, "state store refused: {why}"),
            StoreError::Protocol(why) => write!(f, "state store protocol error: {why}"),
            StoreError::KeyTooLong => write!(f, "state store key too long"),
            StoreError::TooLarge => write!(f, "state store value or batch too large"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The replies of a batch, in the order of its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replies(pub Vec<Reply>);

/// The position of an operation in its batch, to read its reply from [`Replies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot(usize);

impl Replies {
    fn at(&self, slot: Slot) -> Option<&Reply> {
        self.0.get(slot.0)
    }
    /// The value of a `get` (none if absent, or if the slot is not a `get`).
    pub fn value(&self, slot: Slot) -> Option<&[u8]> {
        match self.at(slot) {
            Some(Reply::Value(Some(v))) => Some(v),
            _ => None,
        }
    }
    /// True if a `set`/`set_nx` stored its value.
    pub fn stored(&self, slot: Slot) -> bool {
        matches!(self.at(slot), Some(Reply::Stored(true)))
    }
    /// The new value of an `incr` (0 if the slot is not an `incr`).
    pub fn int(&self, slot: Slot) -> i64 {
        match self.at(slot) {
            Some(Reply::Int(n)) => *n,
            _ => 0,
        }
    }
    /// True if the key of a `del`/`expire` existed.
    pub fn existed(&self, slot: Slot) -> bool {
        matches!(self.at(slot), Some(Reply::Existed(true)))
    }
}

/// Operations sent together: one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }
    fn push(&mut self, op: Op) -> Slot {
        self.ops.push(op);
        Slot(self.ops.len() - 1)
    }
    pub fn get(&mut self, key: Key) -> Slot {
        self.push(Op::Get(key))
    }
    pub fn set(&mut self, key: Key, value: impl Into<Vec<u8>>, ttl: Option<Duration>) -> Slot {
        self.push(Op::Set {
            key,
            value: value.into(),
            ttl,
        })
    }
    pub fn set_nx(&mut self, key: Key, value: impl Into<Vec<u8>>, ttl: Option<Duration>) -> Slot {
        self.push(Op::SetNx {
            key,
            value: value.into(),
            ttl,
        })
    }
    pub fn incr(&mut self, key: Key, by: i64, ttl: Option<Duration>) -> Slot {
        self.push(Op::Incr { key, by, ttl })
    }
    pub fn del(&mut self, key: Key) -> Slot {
        self.push(Op::Del(key))
    }
    pub fn expire(&mut self, key: Key, ttl: Duration) -> Slot {
        self.push(Op::Expire { key, ttl })
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks the limits every backend enforces: [`MAX_BATCH`] operations, [`MAX_VALUE`]
    /// bytes per value.
    pub fn check(&self) -> Result<(), StoreError> {
        let too_big = |op: &Op| match op {
            Op::Set { value, .. } | Op::SetNx { value, .. } => value.len() > MAX_VALUE,
            _ => false,
        };
        if self.ops.len() > MAX_BATCH || self.ops.iter().any(too_big) {
            return Err(StoreError::TooLarge);
        }
        Ok(())
    }
}

/// The future of [`Services::store`](crate::Services::store).
pub type StoreFuture = Pin<Box<dyn Future<Output = Result<Replies, StoreError>>>>;

/// Says a store failure once per [`FailureLog::INTERVAL`], not once per message: a plugin
/// failing open while the store is down would otherwise write a line for every message. Kept
/// in a `static` of the plugin's, so the interval holds across all workers of the process.
#[derive(Debug)]
pub struct FailureLog {
    /// When the last line was written, milliseconds since the Unix epoch (0: never).
    last: AtomicU64,
    /// Failures not logged since the last line.
    quiet: AtomicU64,
}

impl FailureLog {
    /// How often a failing store is logged at most.
    pub const INTERVAL: Duration = Duration::from_secs(60);

    pub const fn new() -> FailureLog {
        FailureLog {
            last: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
        }
    }

    /// `Some(failures not logged since the last line)` if this failure should be logged now.
    pub fn should_log(&self) -> Option<u64> {
        self.should_log_at(unix_ms(std::time::SystemTime::now()))
    }

    fn should_log_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= Self::INTERVAL.as_millis() as u64;
        // One worker wins the line; the others count themselves as not logged.
        if due
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.quiet.swap(0, Ordering::Relaxed));
        }
        self.quiet.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for FailureLog {
    fn default() -> FailureLog {
        FailureLog::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefix_free_whatever_the_bytes() {
        let k = |parts: &[&[u8]]| Key::new("grey", parts).unwrap();
        // The same bytes split differently never collide.
        assert_ne!(k(&[b"a:b", b"c"]), k(&[b"a", b"b:c"]));
        assert_ne!(k(&[b"1:a"]), k(&[b"", b"a"]));
        assert_ne!(k(&[b"ab"]), k(&[b"a", b"b"]));
        assert_ne!(
            Key::new("g", &[b"1:x"]).unwrap(),
            Key::new("g1:x", &[]).unwrap()
        );
        assert_eq!(
            k(&[b"10.0.0.1", b"a@b"]).as_bytes(),
            b"4:grey8:10.0.0.13:a@b".as_slice()
        );
        // RESP and binary data stay inside their component.
        let resp: &[u8] = b"x\r\n*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n\0\xff";
        let key = k(&[resp, b"tail"]);
        assert!(key.as_bytes().ends_with(b"4:tail"));
        assert_ne!(
            key,
            k(&[b"x\r\n*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n\0\xff4:tail"])
        );
        assert!(!key.to_string().contains('\r') && key.to_string().contains("\\r\\n*3"));
        // Long keys are refused, not truncated into a collision.
        let long = vec![b'a'; MAX_KEY];
        assert_eq!(Key::new("grey", &[&long]), Err(StoreError::KeyTooLong));
        assert!(Key::new("grey", &[&long[..1000]]).is_ok());
    }

    #[test]
    fn parts_in_reads_back_what_new_wrote() {
        let resp: &[u8] = b"x\r\n4:tail\0";
        let key = Key::new("karma", &[resp, b"", b"nice"]).unwrap();
        assert_eq!(key.parts_in("karma"), Some(vec![resp, b"", b"nice"]));
        assert_eq!(key.parts_in("grey"), None);
        assert_eq!(
            Key::new("karma", &[]).unwrap().parts_in("karma"),
            Some(vec![])
        );
        for raw in [&b"5:karma3:ab"[..], b"5:karma:ab", b"5:karmaX", b"+5:karma"] {
            let k = Key::from_raw(raw.to_vec()).unwrap();
            assert_eq!(k.parts_in("karma"), None, "{k}");
        }
    }

    #[test]
    fn batches_are_bounded_and_replies_read_by_slot() {
        let key = Key::new("t", &[b"k"]).unwrap();
        let mut b = Batch::new();
        let g = b.get(key.clone());
        let s = b.set_nx(key.clone(), "1", None);
        let i = b.incr(key.clone(), 2, None);
        let d = b.del(key.clone());
        assert!(b.check().is_ok());
        let r = Replies(vec![
            Reply::Value(Some(b"v".to_vec())),
            Reply::Stored(true),
            Reply::Int(3),
            Reply::Existed(false),
        ]);
        assert_eq!(
            (r.value(g), r.stored(s), r.int(i), r.existed(d)),
            (Some(&b"v"[..]), true, 3, false)
        );
        assert_eq!(r.value(s), None);
        b.set(key.clone(), vec![0; MAX_VALUE + 1], None);
        assert_eq!(b.check(), Err(StoreError::TooLarge));
        let mut many = Batch::new();
        for _ in 0..=MAX_BATCH {
            many.get(key.clone());
        }
        assert_eq!(many.check(), Err(StoreError::TooLarge));
    }

    #[test]
    fn failures_are_logged_once_per_interval() {
        let log = FailureLog::new();
        assert_eq!(log.should_log_at(1_000), Some(0));
        assert_eq!(log.should_log_at(2_000), None);
        assert_eq!(log.should_log_at(60_999), None);
        assert_eq!(log.should_log_at(61_000), Some(2));
        assert_eq!(log.should_log_at(61_001), None);
    }
}
