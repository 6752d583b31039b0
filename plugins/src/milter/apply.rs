//! A milter's modifications at end of message, applied to the transaction before it is
//! queued: header fields through the header API's edits (`header_edit`, in memory or on a
//! spooled message), the envelope through the path parser.

use std::borrow::Cow;
use std::ops::Range;

use ringsmtpd_plugin_api::address::parse_path;
use ringsmtpd_plugin_api::header_edit::{Edit, NewField};
use ringsmtpd_plugin_api::headers::count;
use ringsmtpd_plugin_api::{Recipient, Services, Transaction};

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

/// Applies `mods` in order; the header edits (change, delete, insert) go through the header
/// API together, then the added fields after them.
pub(crate) async fn apply(
    svc: &dyn Services,
    txn: &mut Transaction,
    mods: Vec<Reply>,
) -> Result<(), String> {
    let mut new_body: Option<Vec<u8>> = None;
    let mut edits = Vec::new();
    let mut added = Vec::new();
    for m in mods {
        match m {
            Reply::AddHeader { name, value } => added.push(NewField::keeping_folds(&name, &value)),
            Reply::InsertHeader { index, name, value } => edits.push(Edit::Insert {
                index: index as usize,
                field: NewField::keeping_folds(&name, &value),
            }),
            Reply::ChangeHeader { index, name, value } => {
                edits.push(change_header(txn, index, &name, &value))
            }
            Reply::Quarantine(reason) => {
                added.push(NewField::keeping_folds("X-Quarantine", &reason))
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
    if !edits.is_empty() {
        txn.edit_headers(svc, &edits)
            .await
            .map_err(|e| format!("header changes: {e}"))?;
    }
    for field in added {
        txn.added_headers.push_str(field.as_str());
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
/// message's own header section (the milter saw only those: the fields ringsmtpd added are
/// skipped); no such field: a change adds it, a delete does nothing (`smfi_chgheader`).
fn change_header(txn: &Transaction, index: u32, name: &str, value: &str) -> Edit {
    let ours = count(txn.added_headers.as_bytes(), &[name]);
    Edit::Change {
        name: name.to_string(),
        nth: index.max(1) as usize + ours,
        field: (!value.is_empty()).then(|| NewField::keeping_folds(name, value)),
    }
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
