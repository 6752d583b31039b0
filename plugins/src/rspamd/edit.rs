//! Header fields removed from the message itself (rspamd's `milter.remove_headers`, the old
//! Subject of a `rewrite subject`). Fields are only ever added through
//! [`Transaction::append_header`](ringsmtpd_plugin_api::Transaction::append_header); removal
//! rewrites the header section: in memory for a small message, and for a spooled one a new
//! spool file (the new header section, then the old file's body) written on the blocking pool
//! and renamed over the old one.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ringsmtpd_plugin_api::{blocking, headers, Body, Services, SpoolFile};

/// Bytes copied from the old spool file at a time.
const CHUNK: usize = 64 * 1024;

/// Removes the fields `remove` names from the message's header section: for each (name,
/// which), every field of that name when `which` is 0, the `which`-th (from 1) when it is
/// positive, the `-which`-th from the end when negative. Returns how many were removed.
pub async fn remove_fields(
    svc: &dyn Services,
    body: &mut Body,
    remove: &[(String, i64)],
) -> Result<usize, String> {
    let Some(header_end) = body.header_end else {
        return Err("the header section is not all in memory".into());
    };
    let header = &body.mem[..header_end.min(body.mem.len())];
    let (new_header, removed) = without(header, remove);
    if removed == 0 {
        return Ok(0);
    }
    let cut = header_end - new_header.len();
    match &body.spool {
        None => {
            body.mem.splice(..header_end, new_header);
        }
        Some(spool) => {
            let old = spool.file.try_clone().map_err(|e| e.to_string())?;
            let path = spool.path.clone();
            let head = new_header.clone();
            let file = blocking(svc, move || rewrite(&old, &path, &head, header_end as u64))
                .await
                .ok_or("the spool rewrite failed")?
                .map_err(|e| format!("spool rewrite: {e}"))?;
            let path = spool.path.clone();
            // The old SpoolFile goes without removing anything: its name is the new file's.
            body.spool = Some(SpoolFile { path, file });
            body.mem = new_header;
        }
    }
    body.header_end = Some(header_end - cut);
    body.len -= cut as u64;
    Ok(removed)
}

/// The header section without the fields `remove` names, and how many went.
fn without(header: &[u8], remove: &[(String, i64)]) -> (Vec<u8>, usize) {
    let base = header.as_ptr() as usize;
    // (start, end past its line end, lowercased name) of each field.
    let spans: Vec<(usize, usize, String)> = headers::fields(header)
        .flatten()
        .map(|f| {
            let start = f.name().as_ptr() as usize - base;
            let raw = f.raw_value();
            let mut end = raw.as_ptr() as usize - base + raw.len();
            end += header[end..]
                .iter()
                .take(2)
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            (start, end, f.name().to_ascii_lowercase())
        })
        .collect();
    let mut drop = vec![false; spans.len()];
    for (name, which) in remove {
        let name = name.to_ascii_lowercase();
        let idx: Vec<usize> = (0..spans.len()).filter(|&i| spans[i].2 == name).collect();
        let chosen: Vec<usize> = match *which {
            0 => idx,
            n if n > 0 => idx.get(n as usize - 1).copied().into_iter().collect(),
            n => idx
                .len()
                .checked_sub(n.unsigned_abs() as usize)
                .and_then(|i| idx.get(i).copied())
                .into_iter()
                .collect(),
        };
        for i in chosen {
            drop[i] = true;
        }
    }
    let mut out = Vec::with_capacity(header.len());
    let mut at = 0;
    for (i, (start, end, _)) in spans.iter().enumerate() {
        if drop[i] {
            out.extend_from_slice(&header[at..*start]);
            at = *end;
        }
    }
    out.extend_from_slice(&header[at..]);
    (out, drop.iter().filter(|&&d| d).count())
}

/// Blocking: writes `head` then `old` from `from` on into a new file beside `path`, renames it
/// over `path`, and returns it open for reading and writing (as the core opens spool files).
fn rewrite(old: &File, path: &Path, head: &[u8], from: u64) -> io::Result<File> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".rspamd");
    let mut new = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let copied = (|| {
        new.write_all(head)?;
        let mut buf = vec![0u8; CHUNK];
        let mut at = from;
        loop {
            let n = match old.read_at(&mut buf, at) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            new.write_all(&buf[..n])?;
            at += n as u64;
        }
    })()
    .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(new)
}
