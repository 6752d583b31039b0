//! Counting in time windows on the state store. Time is cut into windows of a fixed length
//! (`now / period`); a counter has one store key per window, which expires two windows after
//! it was made, so the previous window's count is still there to read. A check adds to the
//! current window's key and reads the previous one, in the batch of its hook: one round trip
//! whatever the number of counters.
//!
//! A rate is the sliding-window estimate: the current window's count plus the previous
//! window's weighted by the part of it still inside the last `period` seconds. A plain fixed
//! window would let a client send twice the limit across a window's edge (all of it at the
//! end of one window, all again at the start of the next); the estimate costs one `get` more
//! in the same round trip and keeps any `period` seconds near the limit. It assumes the
//! previous window's events were spread evenly, which is the usual trade (exact sliding logs
//! need a timestamp per event).
//!
//! A concurrency count is the sum of both windows' counts: a connection adds one to the
//! window it opened in and takes it back from that same key when it closes.

use std::time::Duration;

use ringsmtpd_plugin_api::store::{Batch, Key, Replies, Slot, StoreError};

const NAMESPACE: &str = "limit";

/// One counter's operations in a batch, and where to read its replies.
#[derive(Debug)]
pub(super) struct Counter {
    cur: Slot,
    prev: Slot,
    /// Seconds of the current window gone by, and the window's length.
    elapsed: u64,
    period: u64,
    /// The current window's key (where a concurrency count is taken back).
    pub key: Key,
}

/// The key of counter `name` for `subject` in window number `window`.
fn key(name: &str, subject: &[u8], window: u64) -> Result<Key, StoreError> {
    Key::new(
        NAMESPACE,
        &[name.as_bytes(), subject, window.to_string().as_bytes()],
    )
}

/// Adds `by` to counter `name` of `subject` in the window of `now` (seconds since the epoch),
/// and reads the previous window's count.
pub(super) fn count(
    b: &mut Batch,
    name: &str,
    subject: &[u8],
    period: u64,
    now: u64,
) -> Result<Counter, StoreError> {
    let period = period.max(1);
    let window = now / period;
    let cur_key = key(name, subject, window)?;
    let prev_key = key(name, subject, window.wrapping_sub(1))?;
    let cur = b.incr(cur_key.clone(), 1, Some(expiry(period)));
    let prev = b.get(prev_key);
    Ok(Counter {
        cur,
        prev,
        elapsed: now % period,
        period,
        key: cur_key,
    })
}

/// How long a window's key lives: past the end of the next window, where it is read as the
/// previous one.
pub(super) fn expiry(period: u64) -> Duration {
    Duration::from_secs(2 * period)
}

impl Counter {
    /// Both windows' counts, each at least 0 (a value that is not a number counts 0).
    fn both(&self, r: &Replies) -> (u64, u64) {
        let prev = r
            .value(self.prev)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        (r.int(self.cur).max(0) as u64, prev.max(0) as u64)
    }

    /// The sliding-window estimate of the events in the last `period` seconds, this one
    /// included.
    pub fn sliding(&self, r: &Replies) -> u64 {
        let (cur, prev) = self.both(r);
        let weighted =
            u128::from(prev) * u128::from(self.period - self.elapsed) / u128::from(self.period);
        cur.saturating_add(weighted.min(u128::from(u64::MAX)) as u64)
    }

    /// Both windows' counts added: connections open now, this one included.
    pub fn sum(&self, r: &Replies) -> u64 {
        let (cur, prev) = self.both(r);
        cur.saturating_add(prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::{unix_ms, Table};
    use std::time::{Duration, UNIX_EPOCH};

    fn apply(t: &mut Table, b: &Batch, now: u64) -> Replies {
        t.apply(b, unix_ms(UNIX_EPOCH + Duration::from_secs(now)))
            .unwrap()
    }

    #[test]
    fn the_previous_window_fades_as_the_current_one_goes_by() {
        let mut t = Table::new(1000);
        let start = 6_000; // the start of window 100 of 60 s
        for i in 0..10 {
            let mut b = Batch::new();
            let c = count(&mut b, "rate_rcpt_host", b"192.0.2.1", 60, start + i).unwrap();
            assert_eq!(c.sliding(&apply(&mut t, &b, start + i)), i + 1);
        }
        // 15 s into the next window: 1 new + 10 × 45/60
        let mut b = Batch::new();
        let c = count(&mut b, "rate_rcpt_host", b"192.0.2.1", 60, start + 75).unwrap();
        assert_eq!(c.sliding(&apply(&mut t, &b, start + 75)), 1 + 7);
        // two windows later the old counts are gone
        let mut b = Batch::new();
        let c = count(&mut b, "rate_rcpt_host", b"192.0.2.1", 60, start + 180).unwrap();
        assert_eq!(c.sliding(&apply(&mut t, &b, start + 180)), 1);
        // another subject, another counter
        let mut b = Batch::new();
        let c = count(&mut b, "rate_rcpt_host", b"192.0.2.2", 60, start + 180).unwrap();
        assert_eq!(c.sum(&apply(&mut t, &b, start + 180)), 1);
    }

    #[test]
    fn a_count_is_taken_back_from_the_window_it_was_made_in() {
        let mut t = Table::new(1000);
        let mut b = Batch::new();
        let first = count(&mut b, "concurrency", b"ip", 600, 599).unwrap();
        assert_eq!(first.sum(&apply(&mut t, &b, 599)), 1);
        // the next window: the first connection still counts
        let mut b = Batch::new();
        let second = count(&mut b, "concurrency", b"ip", 600, 601).unwrap();
        assert_eq!(second.sum(&apply(&mut t, &b, 601)), 2);
        assert_ne!(first.key, second.key);
        let mut b = Batch::new();
        b.incr(first.key.clone(), -1, Some(expiry(600)));
        apply(&mut t, &b, 700);
        let mut b = Batch::new();
        let third = count(&mut b, "concurrency", b"ip", 600, 702).unwrap();
        assert_eq!(third.sum(&apply(&mut t, &b, 702)), 2);
        // the two never taken back (window 1) stop counting two windows on
        let mut b = Batch::new();
        let later = count(&mut b, "concurrency", b"ip", 600, 1800).unwrap();
        assert_eq!(later.sum(&apply(&mut t, &b, 1800)), 1);
    }

    #[test]
    fn damaged_or_negative_values_count_zero() {
        let mut t = Table::new(1000);
        let mut b = Batch::new();
        b.set(key("c", b"s", 9).unwrap(), "junk\r\n", None);
        b.incr(key("c", b"s", 10).unwrap(), -5, None);
        apply(&mut t, &b, 600);
        let mut b = Batch::new();
        let c = count(&mut b, "c", b"s", 60, 600).unwrap();
        let r = apply(&mut t, &b, 600);
        assert_eq!((c.sum(&r), c.sliding(&r)), (0, 0));
    }
}
