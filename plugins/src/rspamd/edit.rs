//! Header fields removed from the message itself (rspamd's `milter.remove_headers`, the old
//! Subject of a `rewrite subject`). Fields are only ever added through
//! [`Transaction::append_header`](ringsmtpd_plugin_api::Transaction::append_header); removal
//! rewrites the header section of a message held in memory. A spooled message is left alone
//! (its header section lives in the spool file too, and rewriting that file is not done yet).

use ringsmtpd_plugin_api::{headers, Body};

/// Removes the fields `remove` names from the message's header section: for each (name,
/// which), every field of that name when `which` is 0, the `which`-th (from 1) when it is
/// positive, the `-which`-th from the end when negative. Returns how many were removed.
pub fn remove_fields(body: &mut Body, remove: &[(String, i64)]) -> Result<usize, &'static str> {
    if body.spool.is_some() {
        return Err("the message is spooled");
    }
    let Some(header_end) = body.header_end else {
        return Err("the message has no header section end");
    };
    let header = &body.mem[..header_end.min(body.mem.len())];
    let base = header.as_ptr() as usize;
    // (start, end, lowercased name) of each field, end past its line end.
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
        let chosen = match *which {
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
    let removed = drop.iter().filter(|&&d| d).count();
    if removed == 0 {
        return Ok(0);
    }
    let mut out = Vec::with_capacity(body.mem.len());
    let mut at = 0;
    for (i, (start, end, _)) in spans.iter().enumerate() {
        if drop[i] {
            out.extend_from_slice(&body.mem[at..*start]);
            at = *end;
        }
    }
    out.extend_from_slice(&body.mem[at..]);
    let cut = body.mem.len() - out.len();
    body.mem = out;
    body.header_end = Some(header_end - cut);
    body.len -= cut as u64;
    Ok(removed)
}
