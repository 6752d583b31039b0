//! The embedded store's file: every live entry, written whole to a temporary file, fsync'd
//! and renamed over the old one, so a crash leaves the old file or the new one, never half
//! of one.
//!
//! Format (integers big-endian): the magic line `ringsmtpd-store 1\n`; the entry count (u64);
//! per entry the key length (u32), the key, the value length (u32), the value, the expiry
//! (u64, milliseconds since the Unix epoch, 0 for none); then an FNV-1a 64 checksum of all
//! that (u64). Lengths are checked against the store's limits before anything is allocated,
//! so a damaged file is refused with its reason, never half-loaded.

use std::io::Write;
use std::path::Path;

use ringsmtpd_plugin_api::store::{Key, Table, MAX_KEY, MAX_VALUE};

const MAGIC: &[u8] = b"ringsmtpd-store 1\n";

/// Serializes the entries of `table` live at `now`.
pub fn encode(table: &Table, now: u64) -> Vec<u8> {
    let entries = table.live_entries(now);
    let mut out = Vec::with_capacity(64 + entries.len() * 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(entries.len() as u64).to_be_bytes());
    for (key, entry) in entries {
        let k = key.as_bytes();
        // Both bounded by MAX_KEY and MAX_VALUE, far below u32::MAX.
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        out.extend_from_slice(&(entry.value.len() as u32).to_be_bytes());
        out.extend_from_slice(&entry.value);
        out.extend_from_slice(&entry.expires.unwrap_or(0).to_be_bytes());
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_be_bytes());
    out
}

/// Loads `bytes` into `table` (entries expired at `now` skipped); the reason if the data is
/// not a whole, intact store file.
pub fn decode(bytes: &[u8], table: &mut Table, now: u64) -> Result<(), String> {
    let body_len = bytes
        .len()
        .checked_sub(8)
        .ok_or("shorter than its header")?;
    let (body, sum) = bytes.split_at(body_len);
    let mut r = Reader { data: body, pos: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("not a ringsmtpd store file (bad magic)".into());
    }
    if u64::from_be_bytes(sum.try_into().map_err(|_| "short checksum")?) != fnv1a(body) {
        return Err("checksum mismatch".into());
    }
    let count = r.u64()?;
    for _ in 0..count {
        let klen = r.u32()? as usize;
        if klen > MAX_KEY {
            return Err(format!("a key of {klen} bytes (at most {MAX_KEY})"));
        }
        let key = r.take(klen)?.to_vec();
        let vlen = r.u32()? as usize;
        if vlen > MAX_VALUE {
            return Err(format!("a value of {vlen} bytes (at most {MAX_VALUE})"));
        }
        let value = r.take(vlen)?.to_vec();
        let expires = Some(r.u64()?).filter(|&e| e != 0);
        let key = Key::from_raw(key).map_err(|e| e.to_string())?;
        table.load(key, value, expires, now);
    }
    if r.pos != body.len() {
        return Err(format!("{} bytes after the last entry", body.len() - r.pos));
    }
    Ok(())
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
        let data = encode(&sample(), 1_000);
        let mut back = Table::new(100);
        decode(&data, &mut back, 5_000).unwrap();
        assert_eq!(back.len(), 2); // "soon" expired at 2000
        let mut b = Batch::new();
        let bin = b.get(Key::new("t", &[b"bin\r\n\0\xff"]).unwrap());
        let r = back.apply(&b, 5_000).unwrap();
        assert_eq!(r.value(bin), Some(&[0u8, 255, 13, 10][..]));
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let data = encode(&sample(), 1_000);
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
        // a huge length with a matching checksum is refused before any allocation
        let mut forged = MAGIC.to_vec();
        forged.extend_from_slice(&1u64.to_be_bytes());
        forged.extend_from_slice(&u32::MAX.to_be_bytes());
        let sum = fnv1a(&forged);
        forged.extend_from_slice(&sum.to_be_bytes());
        assert!(load(&forged)
            .unwrap_err()
            .contains("a key of 4294967295 bytes"));
    }
}
