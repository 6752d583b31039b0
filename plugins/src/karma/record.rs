//! karma's records in the state store, shared by the plugin and `ringsmtpd karma`: per client
//! IP, four keys (`karma` / IP / field): `naughty`, `nice` and `connects` counters, and
//! `penalty`, the end of the penalty box in Unix seconds, which expires by itself then.
//! Counters are separate keys so every update is an atomic `incr`, whatever other workers,
//! processes or hosts do meanwhile.

use std::net::IpAddr;
use std::time::Duration;

use ringsmtpd_plugin_api::store::{Batch, Key, Replies, Slot, StoreError};

/// The store namespace.
pub const NAMESPACE: &str = "karma";

const FIELDS: [&str; 4] = ["naughty", "nice", "connects", "penalty"];

/// The keys of one client IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub naughty: Key,
    pub nice: Key,
    pub connects: Key,
    pub penalty: Key,
}

impl Keys {
    /// The keys of `ip` (IPv4-mapped IPv6 addresses as IPv4).
    pub fn new(ip: IpAddr) -> Result<Keys, StoreError> {
        let ip = ip.to_canonical().to_string();
        let key = |field: &str| Key::new(NAMESPACE, &[ip.as_bytes(), field.as_bytes()]);
        Ok(Keys {
            naughty: key(FIELDS[0])?,
            nice: key(FIELDS[1])?,
            connects: key(FIELDS[2])?,
            penalty: key(FIELDS[3])?,
        })
    }
}

/// What the store holds about one IP. Values read back are checked: anything but a decimal
/// number counts as absent, so a damaged or foreign value cannot box or free a client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    pub naughty: i64,
    pub nice: i64,
    pub connects: i64,
    /// The end of the penalty box, Unix seconds.
    pub penalty_until: Option<u64>,
}

/// Where a [`Record`]'s values are in a batch's replies.
#[derive(Debug, Clone, Copy)]
pub struct Slots([Slot; 4]);

impl Record {
    /// Adds the reads of `keys` to `b`.
    pub fn read(b: &mut Batch, keys: &Keys) -> Slots {
        Slots([
            b.get(keys.naughty.clone()),
            b.get(keys.nice.clone()),
            b.get(keys.connects.clone()),
            b.get(keys.penalty.clone()),
        ])
    }

    /// The record from the replies of [`Record::read`].
    pub fn from_replies(r: &Replies, slots: Slots) -> Record {
        let mut rec = Record::default();
        for (field, slot) in FIELDS.iter().zip(slots.0) {
            if let Some(v) = r.value(slot) {
                rec.set_field(field.as_bytes(), v);
            }
        }
        rec
    }

    /// Sets one field from a stored value (listing a whole store); unknown fields are ignored.
    pub fn set_field(&mut self, field: &[u8], value: &[u8]) {
        match field {
            b"naughty" => self.naughty = number(value).unwrap_or(0),
            b"nice" => self.nice = number(value).unwrap_or(0),
            b"connects" => self.connects = number(value).unwrap_or(0),
            b"penalty" => self.penalty_until = number(value).and_then(|n| u64::try_from(n).ok()),
            _ => {}
        }
    }

    /// Nice minus naughty connections (qpsmtpd's `karma_history`).
    pub fn history(&self) -> i64 {
        self.nice.saturating_sub(self.naughty)
    }

    /// Seconds left in the penalty box at `now`, if the client is in it.
    pub fn penalty_left(&self, now: u64) -> Option<u64> {
        self.penalty_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }
}

/// A counter's stored value (absent or damaged: 0).
pub fn counter(v: Option<&[u8]>) -> i64 {
    v.and_then(number).unwrap_or(0)
}

/// A stored decimal integer, strictly: optional `-`, at most 19 digits.
fn number(v: &[u8]) -> Option<i64> {
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Puts the IP in the penalty box until `until` (Unix seconds, after `now`) and counts a
/// naughty connection (qpsmtpd's `karma_tool capture`); counters live `keep` since.
pub fn capture(keys: &Keys, now: u64, until: u64, keep: Duration) -> Batch {
    let mut b = Batch::new();
    let ttl = Duration::from_secs(until.saturating_sub(now).max(1));
    b.set(keys.penalty.clone(), until.to_string(), Some(ttl));
    b.incr(keys.naughty.clone(), 1, Some(keep));
    b.expire(keys.naughty.clone(), keep);
    b
}

/// Takes the IP out of the penalty box and forgets its naughty connections (qpsmtpd's
/// `karma_tool release`); nice connections stay.
pub fn release(keys: &Keys) -> Batch {
    let mut b = Batch::new();
    b.del(keys.penalty.clone());
    b.del(keys.naughty.clone());
    b
}

/// For a listing: the IP and field of a key in karma's namespace.
pub fn parse_key(key: &Key) -> Option<(String, &[u8])> {
    match key.parts_in(NAMESPACE)?.as_slice() {
        [ip, field] => {
            let ip: IpAddr = std::str::from_utf8(ip).ok()?.parse().ok()?;
            Some((ip.to_string(), field))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::Table;

    #[test]
    fn records_round_trip_and_bad_values_count_as_absent() {
        let keys = Keys::new("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(keys, Keys::new("192.0.2.1".parse().unwrap()).unwrap());
        assert_eq!(
            parse_key(&keys.nice),
            Some(("192.0.2.1".to_string(), &b"nice"[..]))
        );
        let mut t = Table::new(100);
        let day = Duration::from_secs(86_400);
        t.apply(&capture(&keys, 1000, 5000, day), 1_000_000)
            .unwrap();
        let mut b = Batch::new();
        let slots = Record::read(&mut b, &keys);
        let rec = Record::from_replies(&t.apply(&b, 1_000_000).unwrap(), slots);
        assert_eq!(rec.naughty, 1);
        assert_eq!(rec.penalty_until, Some(5000));
        assert_eq!(rec.penalty_left(1000), Some(4000));
        assert_eq!(rec.penalty_left(5000), None);
        assert_eq!(rec.history(), -1);
        t.apply(&release(&keys), 1_000_000).unwrap();
        let rec = Record::from_replies(&t.apply(&b, 1_000_000).unwrap(), slots);
        assert_eq!(rec, Record::default());

        let mut rec = Record::default();
        for bad in [
            &b""[..],
            b"-",
            b"1e3",
            b" 1",
            b"99999999999999999999",
            b"\xff",
        ] {
            rec.set_field(b"nice", bad);
            rec.set_field(b"penalty", bad);
            assert_eq!(rec, Record::default(), "{}", bad.escape_ascii());
        }
        rec.set_field(b"penalty", b"-5");
        assert_eq!(rec.penalty_until, None);
        rec.set_field(b"naughty", b"-3");
        assert_eq!(rec.history(), 3);
    }
}
