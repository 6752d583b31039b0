//! The embedded store's files: a snapshot of every live entry, and a log of the changes
//! since that snapshot.
//!
//! Why two files: a snapshot alone must be rewritten whole for every save, so a busy store of
//! a million entries would write about 100 MB every interval; the log costs only what
//! changed (a karma counter bumped a thousand times is one record per interval). When the log
//! grows past the last snapshot's size, the owner writes a new snapshot and starts a new log.
//!
//! Snapshot (`store.db`), written whole to a temporary file, fsync'd and renamed over the old
//! one, so a crash leaves the old file or the new one, never half of one. Integers
//! big-endian: the magic line `ringsmtpd-store 2\n`; the generation (u64); the entry count
//! (u64); per entry the key length (u32), the key, the value length (u32), the value, the
//! expiry (u64, milliseconds since the Unix epoch, 0 for none); then an FNV-1a 64 checksum of
//! all that (u64). Version 1 files (no generation) are read as generation 0.
//!
//! Log (`store.log`): the magic line `ringsmtpd-store-log 1\n` and the generation of the
//! snapshot it follows (u64), created whole like the snapshot; then records appended, each
//! the payload length (u32), the payload, and the payload's FNV-1a 64 (u64). A payload is
//! `S`, the key length (u32), the key, the value length (u32), the value and the expiry (u64)
//! for an entry as it is now, or `D`, the key length (u32) and the key for a deleted one. A
//! log of another generation is left over from a crash between a new snapshot and its log,
//! and is ignored: that snapshot holds everything the log did. A record cut short or not
//! matching its checksum ends the log (a crash while appending); the owner truncates it there.
//!
//! Lengths are checked against the store's limits before anything is allocated, so a damaged
//! file is refused with its reason, never half-loaded.

use std::io::Write;
use std::path::Path;

use ringsmtpd_plugin_api::store::{Entry, Key, Table, MAX_KEY, MAX_VALUE};

const MAGIC_V1: &[u8] = b"ringsmtpd-store 1\n";
const MAGIC: &[u8] = b"ringsmtpd-store 2\n";
const LOG_MAGIC: &[u8] = b"ringsmtpd-store-log 1\n";

/// The log's header length: its magic and the generation.
pub const LOG_HEADER: usize = LOG_MAGIC.len() + 8;

/// The largest record payload: a set of the longest key and value.
const MAX_PAYLOAD: usize = 1 + 4 + MAX_KEY + 4 + MAX_VALUE + 8;

/// Serializes the entries of `table` live at `now`, as generation `generation`.
pub fn encode(table: &Table, now: u64, generation: u64) -> Vec<u8> {
    let entries = table.live_entries(now);
    let mut out = Vec::with_capacity(64 + entries.len() * 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (key, entry) in entries {
        put_entry(&mut out, key, entry);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// Loads `bytes` into `table` (entries expired at `now` skipped); the snapshot's generation,
/// or the reason if the data is not a whole, intact store file.
pub fn decode(bytes: &[u8], table: &mut Table, now: u64) -> Result<u64, String> {
    let body_len = bytes
        .len()
        .checked_sub(8)
        .ok_or("shorter than its header")?;
    let (body, sum) = bytes.split_at(body_len);
    let mut r = Reader { data: body, pos: 0 };
    let magic = r.take(MAGIC.len())?;
    if magic != MAGIC && magic != MAGIC_V1 {
        return Err("not a ringsmtpd store file (bad magic)".into());
    }
    if u64::from_be_bytes(sum.try_into().map_err(|_| "short checksum")?) != fnv1a(body) {
        return Err("checksum mismatch".into());
    }
    let generation = if magic == MAGIC { r.u64()? } else { 0 };
    let count = r.u64()?;
    for _ in 0..count {
        let (key, value, expires) = r.entry()?;
        table.load(key, value, expires, now);
    }
    if r.pos != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - r.pos));
    }
    Ok(generation)
}

/// A new, empty log following snapshot `generation`.
pub fn log_header(generation: u64) -> Vec<u8> {
    let mut out = LOG_MAGIC.to_vec();
    out.extend_from_slice(&generation.to_be_bytes());
    out
}

/// Log records for `changes` (from [`Table::take_changes`]).
pub fn encode_changes(changes: &[(Key, Option<&Entry>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut payload = Vec::new();
    for (key, entry) in changes {
        payload.clear();
        match entry {
            Some(e) => {
                payload.push(b'S');
                put_entry(&mut payload, key, e);
            }
            None => {
                payload.push(b'D');
                put_bytes(&mut payload, key.as_bytes());
            }
        }
        // A payload is bounded by MAX_PAYLOAD, far below u32::MAX.
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&fnv1a(&payload).to_be_bytes());
    }
    out
}

/// What reading a log found.
#[derive(Debug, PartialEq, Eq)]
pub enum Replayed {
    /// The log follows another snapshot: nothing applied.
    Stale,
    /// `records` applied; the log's intact part is `valid` bytes long, and `torn` says why
    /// the rest (if any) was not read.
    Applied {
        records: usize,
        valid: usize,
        torn: Option<String>,
    },
}

/// Applies the log in `bytes` to `table` if it follows snapshot `generation`. A damaged
/// header is an error (the header is written whole, so no crash leaves it half).
pub fn replay(
    bytes: &[u8],
    table: &mut Table,
    now: u64,
    generation: u64,
) -> Result<Replayed, String> {
    let mut r = Reader {
        data: bytes,
        pos: 0,
    };
    if r.take(LOG_MAGIC.len()).ok() != Some(LOG_MAGIC) {
        return Err("not a ringsmtpd store log (bad magic)".into());
    }
    if r.u64()? != generation {
        return Ok(Replayed::Stale);
    }
    let mut records = 0;
    let torn = loop {
        let valid = r.pos;
        if valid == bytes.len() {
            break None;
        }
        match r.record() {
            Ok((op, payload)) => {
                let mut p = Reader {
                    data: payload,
                    pos: 0,
                };
                let applied = match op {
                    b'S' => p.entry().map(|(k, v, exp)| table.load(k, v, exp, now)),
                    _ => p.key().map(|k| table.unload(&k)),
                };
                if let Err(why) = applied.and_then(|()| p.end()) {
                    r.pos = valid;
                    break Some(format!("record at byte {valid}: {why}"));
                }
                records += 1;
            }
            Err(why) => {
                r.pos = valid;
                break Some(format!("record at byte {valid}: {why}"));
            }
        }
    };
    Ok(Replayed::Applied {
        records,
        valid: r.pos,
        torn,
    })
}

/// Writes `data` to `path` durably: a temporary file beside it, fsync, rename, fsync of the
/// directory.
pub fn save(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Appends `data` to the log at `path` and makes it durable (fdatasync).
pub fn append(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(data)?;
    f.sync_data()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Bounded by MAX_KEY and MAX_VALUE, far below u32::MAX.
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_entry(out: &mut Vec<u8>, key: &Key, entry: &Entry) {
    put_bytes(out, key.as_bytes());
    put_bytes(out, &entry.value);
    out.extend_from_slice(&entry.expires.unwrap_or(0).to_be_bytes());
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn key(&mut self) -> Result<Key, String> {
        let klen = self.u32()? as usize;
        if klen > MAX_KEY {
            return Err(format!("a key of {klen} bytes (at most {MAX_KEY})"));
        }
        Key::from_raw(self.take(klen)?.to_vec()).map_err(|e| e.to_string())
    }
    fn entry(&mut self) -> Result<(Key, Vec<u8>, Option<u64>), String> {
        let key = self.key()?;
        let vlen = self.u32()? as usize;
        if vlen > MAX_VALUE {
            return Err(format!("a value of {vlen} bytes (at most {MAX_VALUE})"));
        }
        let value = self.take(vlen)?.to_vec();
        let expires = Some(self.u64()?).filter(|&e| e != 0);
        Ok((key, value, expires))
    }
    /// A log record: its operation byte and its payload after it, checksum verified.
    fn record(&mut self) -> Result<(u8, &'a [u8]), String> {
        let len = self.u32()? as usize;
        if !(1..=MAX_PAYLOAD).contains(&len) {
            return Err(format!("a record of {len} bytes"));
        }
        let payload = self.take(len)?;
        if self.u64()? != fnv1a(payload) {
            return Err("checksum mismatch".into());
        }
        match payload[0] {
            op @ (b'S' | b'D') => Ok((op, &payload[1..])),
            op => Err(format!("unknown operation {:?}", op as char)),
        }
    }
    fn end(&self) -> Result<(), String> {
        match self.data.len() - self.pos {
            0 => Ok(()),
            n => Err(format!("{n} bytes after the entry")),
        }
    }
}

/// FNV-1a, 64 bits: catches a damaged or truncated file (not an adversary: the file is ours).
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::Batch;
    use std::time::Duration;

    fn sample() -> Table {
        let mut t = Table::new(100);
        let mut b = Batch::new();
        let k = |s: &[u8]| Key::new("t", &[s]).unwrap();
        b.set(k(b"forever"), "1", None);
        b.set(k(b"soon"), "2", Some(Duration::from_secs(1)));
        b.set(
            k(b"bin\r\n\0\xff"),
            vec![0u8, 255, 13, 10],
            Some(Duration::from_secs(100)),
        );
        t.apply(&b, 1_000).unwrap();
        t
    }

    #[test]
    fn round_trip_skips_expired() {
        let data = encode(&sample(), 1_000, 7);
        let mut back = Table::new(100);
        assert_eq!(decode(&data, &mut back, 5_000), Ok(7));
        assert_eq!(back.len(), 2); // "soon" expired at 2000
        let mut b = Batch::new();
        let bin = b.get(Key::new("t", &[b"bin\r\n\0\xff"]).unwrap());
        let r = back.apply(&b, 5_000).unwrap();
        assert_eq!(r.value(bin), Some(&[0u8, 255, 13, 10][..]));
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let data = encode(&sample(), 1_000, 1);
        let load = |d: &[u8]| decode(d, &mut Table::new(100), 1_000);
        assert!(load(&data).is_ok());
        assert!(load(&data[..data.len() - 3]).is_err());
        assert_eq!(load(b"").unwrap_err(), "shorter than its header");
        let mut flipped = data.clone();
        flipped[MAGIC.len() + 12] ^= 1;
        assert_eq!(load(&flipped).unwrap_err(), "checksum mismatch");
        assert!(load(b"something else entirely, long enough")
            .unwrap_err()
            .contains("bad magic"));
        // a huge length with a matching checksum is refused before any allocation (in a
        // version 1 file, which has no generation)
        let mut forged = MAGIC_V1.to_vec();
        forged.extend_from_slice(&1u64.to_be_bytes());
        forged.extend_from_slice(&u32::MAX.to_be_bytes());
        let sum = fnv1a(&forged);
        forged.extend_from_slice(&sum.to_be_bytes());
        assert!(load(&forged)
            .unwrap_err()
            .contains("a key of 4294967295 bytes"));
    }

    fn log_of(generation: u64, changes: &[(Key, Option<&Entry>)]) -> Vec<u8> {
        let mut log = log_header(generation);
        log.extend_from_slice(&encode_changes(changes));
        log
    }

    #[test]
    fn a_log_replays_over_its_snapshot_and_stops_at_a_torn_record() {
        let k = |s: &[u8]| Key::new("t", &[s]).unwrap();
        let mut t = sample();
        t.take_changes();
        let snapshot = encode(&t, 1_000, 3);
        let mut b = Batch::new();
        b.set(k(b"forever"), "changed", None);
        b.del(k(b"bin\r\n\0\xff"));
        b.set(k(b"new"), "n", None);
        t.apply(&b, 1_000).unwrap();
        let mut log = log_of(3, &t.take_changes());
        let intact = log.len();
        // a crash while appending: a record half written
        let mut b = Batch::new();
        b.set(k(b"late"), "x", None);
        t.apply(&b, 1_000).unwrap();
        let more = encode_changes(&t.take_changes());
        log.extend_from_slice(&more[..more.len() - 5]);

        let mut back = Table::new(100);
        assert_eq!(decode(&snapshot, &mut back, 1_000), Ok(3));
        let Replayed::Applied {
            records,
            valid,
            torn,
        } = replay(&log, &mut back, 1_000, 3).unwrap()
        else {
            panic!("not applied")
        };
        assert_eq!((records, valid), (3, intact));
        assert!(torn.unwrap().contains(&format!("record at byte {intact}")));
        let mut b = Batch::new();
        let forever = b.get(k(b"forever"));
        let bin = b.get(k(b"bin\r\n\0\xff"));
        let new = b.get(k(b"new"));
        let late = b.get(k(b"late"));
        let r = back.apply(&b, 1_000).unwrap();
        assert_eq!(r.value(forever), Some(&b"changed"[..]));
        assert_eq!((r.value(bin), r.value(late)), (None, None));
        assert_eq!(r.value(new), Some(&b"n"[..]));

        // a flipped byte in a record ends the log there too
        let mut flipped = log.clone();
        flipped[LOG_HEADER + 6] ^= 1;
        let Replayed::Applied { records, valid, .. } =
            replay(&flipped, &mut Table::new(100), 1_000, 3).unwrap()
        else {
            panic!("not applied")
        };
        assert_eq!((records, valid), (0, LOG_HEADER));
    }

    #[test]
    fn a_log_of_another_generation_is_ignored_and_a_bad_header_refused() {
        let mut source = Table::new(10);
        let mut b = Batch::new();
        b.set(Key::new("t", &[b"a"]).unwrap(), "1", None);
        source.apply(&b, 0).unwrap();
        let log = log_of(4, &source.take_changes());
        let mut t = Table::new(10);
        assert_eq!(replay(&log, &mut t, 0, 5), Ok(Replayed::Stale));
        assert!(t.is_empty());
        assert!(replay(b"garbage", &mut t, 0, 5)
            .unwrap_err()
            .contains("bad magic"));
        assert!(replay(&log[..LOG_HEADER - 2], &mut t, 0, 4).is_err());
        assert_eq!(
            replay(&log[..LOG_HEADER], &mut t, 0, 4),
            Ok(Replayed::Applied {
                records: 0,
                valid: LOG_HEADER,
                torn: None
            })
        );
    }
}
