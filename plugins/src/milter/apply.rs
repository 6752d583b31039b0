//! A milter's modifications at end of message, applied to the transaction before it is
//! queued: header fields through the safe writers of the header API, the envelope through
//! the path parser.

use std::borrow::Cow;
use std::ops::Range;

use ringsmtpd_plugin_api::address::parse_path;
use ringsmtpd_plugin_api::headers::{push_value, write_field};
use ringsmtpd_plugin_api::{Recipient, Transaction};

use super::proto::Reply;

/// The largest replacement body kept (in memory).
const MAX_NEW_BODY: usize = 32 * 1024 * 1024;

/// A field of the header section: its name, and its value (after the colon, up to its final
/// CRLF, folds included), as byte ranges; `whole` includes the final line end.
pub(crate) struct FieldAt {
    name: Range<usize>,
    value: Range<usize>,
    whole: Range<usize>,
}

impl FieldAt {
    pub(crate) fn name<'a>(&self, h: &'a [u8]) -> Cow<'a, str> {
        String::from_utf8_lossy(&h[self.name.clone()])
    }
    pub(crate) fn value<'a>(&self, h: &'a [u8]) -> Cow<'a, str> {
        String::from_utf8_lossy(&h[self.value.clone()])
    }
}

/// The well-formed fields of `header` (up to its empty line), with their places; lines that
/// are not fields are left out.
pub(crate) fn header_fields(header: &[u8]) -> Vec<FieldAt> {
    let mut fields: Vec<FieldAt> = Vec::new();
    let mut at = 0;
    while at < header.len() {
        let end = header[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| at + i + 1);
        let line = &header[at..end];
        let text_end =
            end - usize::from(line.ends_with(b"\n")) - usize::from(line.ends_with(b"\r\n"));
        if text_end == at {
            break; // the empty line
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some(f) = fields.last_mut().filter(|f| f.whole.end == at) {
                f.value.end = text_end;
                f.whole.end = end;
            }
        } else if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = &line[..colon];
            if !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic()) {
                fields.push(FieldAt {
                    name: at..at + colon,
                    value: at + colon + 1..text_end,
                    whole: at..end,
                });
            }
        }
        at = end;
    }
    fields
}

/// Writes `name: value` with the milter's folds (LF or CRLF, then white space) kept as they
/// are, so a signature over the field (DKIM's `simple` canonicalization) still holds; a line
/// break without white space after it gets a TAB, a line of white space only is dropped, and
/// every other control character becomes a space ([`push_value`]): the field cannot end early.
fn write_milter_field(out: &mut String, name: &str, value: &str) {
    let mut field = String::new();
    write_field(&mut field, name, "");
    field.truncate(field.len() - 2); // "name: " without its CRLF
    let value = value.strip_prefix(' ').unwrap_or(value);
    for (i, line) in value.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 {
            if line.trim_start_matches([' ', '\t']).is_empty() {
                continue;
            }
            field.push_str(if line.starts_with([' ', '\t']) {
                "\r\n"
            } else {
                "\r\n\t"
            });
        }
        push_value(&mut field, line);
    }
    field.push_str("\r\n");
    out.push_str(&field);
}

/// Applies `mods` in order.
pub(crate) fn apply(txn: &mut Transaction, mods: Vec<Reply>) -> Result<(), String> {
    let mut new_body: Option<Vec<u8>> = None;
    for m in mods {
        match m {
            Reply::AddHeader { name, value } => {
                write_milter_field(&mut txn.added_headers, &name, &value)
            }
            Reply::InsertHeader { index, name, value } => {
                let mut field = String::new();
                write_milter_field(&mut field, &name, &value);
                if index == 0 {
                    txn.added_headers.insert_str(0, &field);
                } else {
                    txn.added_headers.push_str(&field);
                }
            }
            Reply::ChangeHeader { index, name, value } => change_header(txn, index, &name, &value)?,
            Reply::Quarantine(reason) => {
                write_milter_field(&mut txn.added_headers, "X-Quarantine", &reason)
            }
            Reply::AddRcpt { rcpt, .. } => {
                let addr = parse_path(&bracketed(&rcpt), false, true)
                    .map_err(|e| format!("add-recipient {rcpt:?}: {e:?}"))?;
                if !txn
                    .recipients
                    .iter()
                    .any(|r| r.addr.as_str().eq_ignore_ascii_case(addr.as_str()))
                {
                    txn.recipients.push(Recipient {
                        addr,
                        params: Default::default(),
                    });
                }
            }
            Reply::DelRcpt(rcpt) => {
                let addr = parse_path(&bracketed(&rcpt), false, true)
                    .map_err(|e| format!("delete-recipient {rcpt:?}: {e:?}"))?;
                txn.recipients
                    .retain(|r| !r.addr.as_str().eq_ignore_ascii_case(addr.as_str()));
            }
            Reply::ChangeFrom { from, .. } => {
                txn.sender = parse_path(&bracketed(&from), true, true)
                    .map_err(|e| format!("change-sender {from:?}: {e:?}"))?;
            }
            Reply::ReplaceBody(chunk) => {
                let b = new_body.get_or_insert_with(Vec::new);
                if b.len() + chunk.len() > MAX_NEW_BODY {
                    return Err("replacement body over 32 MiB".into());
                }
                b.extend_from_slice(&chunk);
            }
            _ => return Err("a reply that is not a modification".into()),
        }
    }
    if let Some(b) = new_body {
        replace_body(txn, &b);
    }
    if txn.recipients.is_empty() {
        return Err("deleted every recipient".into());
    }
    Ok(())
}

/// `<path>`: milters send addresses with or without angle brackets.
fn bracketed(s: &str) -> Cow<'_, str> {
    if s.starts_with('<') {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("<{s}>"))
    }
}

/// Changes (or, with an empty value, deletes) the `index`-th field called `name` of the
/// message's own header section; no such field: a change adds it, a delete does nothing
/// (libmilter's `smfi_chgheader`).
fn change_header(txn: &mut Transaction, index: u32, name: &str, value: &str) -> Result<(), String> {
    if txn.body.spool.is_some() {
        return Err("change-header on a spooled message is not supported yet".into());
    }
    let header = txn.body.header_bytes();
    let found = header_fields(header)
        .into_iter()
        .filter(|f| f.name(header).eq_ignore_ascii_case(name))
        .nth(index.max(1) as usize - 1);
    let Some(f) = found else {
        if !value.is_empty() {
            write_milter_field(&mut txn.added_headers, name, value);
        }
        return Ok(());
    };
    let mut field = String::new();
    if !value.is_empty() {
        write_milter_field(&mut field, name, value);
    }
    let body = &mut txn.body;
    body.mem.splice(f.whole.clone(), field.bytes());
    let delta = field.len() as i64 - f.whole.len() as i64;
    body.len = (body.len as i64 + delta) as u64;
    body.header_end = body.header_end.map(|e| (e as i64 + delta) as usize);
    Ok(())
}

/// The header section, then `new` as the body with every line ending made CRLF; a spooled
/// message comes into memory.
fn replace_body(txn: &mut Transaction, new: &[u8]) {
    let body = &mut txn.body;
    let header_len = body
        .header_end
        .unwrap_or(body.mem.len())
        .min(body.mem.len());
    body.mem.truncate(header_len);
    if body.header_end.is_none() {
        body.mem.extend_from_slice(b"\r\n");
        body.header_end = Some(body.mem.len());
    }
    let mut prev = 0u8;
    for &b in new {
        if b == b'\n' && prev != b'\r' {
            body.mem.push(b'\r');
        }
        body.mem.push(b);
        prev = b;
    }
    if let Some(spool) = body.spool.take() {
        let _ = std::fs::remove_file(&spool.path);
    }
    body.len = body.mem.len() as u64;
}
