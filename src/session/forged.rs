//! Authentication-Results fields that claim to be ours (RFC 8601 §5): an incoming message may
//! carry an `Authentication-Results: <me>; dkim=pass ...` written by the sender to be trusted
//! downstream. Before the core writes its own header, every such field of the message is
//! renamed to `X-Forged-Authn-Results`, a name of the same length: the evidence stays, no
//! reader of the message takes it for ours, and no byte of the message moves, so the copy
//! in the spool file is fixed with one positional write of the affected range (the header
//! section is always in memory too, see `Sink::keep_header_in_memory`).
//!
//! A field is ours when its authserv-id (§2.2: the first `value` after optional comments and
//! folding white space, a token or a quoted string) equals `me` case-insensitively, a final
//! dot ignored. A field whose authserv-id cannot be parsed is renamed when its value names
//! `me` anywhere, since a lenient reader downstream might still take it for ours. Other
//! servers' fields are kept. `ARC-Authentication-Results` fields are left alone: they belong
//! to ARC sets (RFC 8617) that their `ARC-Seal` signs, so renaming one would break the chain,
//! and a forger cannot seal a set in our name.

use std::borrow::Cow;
use std::io;

use ringsmtpd_plugin_api::{headers, Transaction};

/// The name a forged field gets: as long as `Authentication-Results`.
pub const RENAMED: &[u8; 22] = b"X-Forged-Authn-Results";
const NAME: &str = "Authentication-Results";
const _: () = assert!(RENAMED.len() == NAME.len());

/// Deepest comment nesting accepted before the authserv-id.
const MAX_COMMENT_DEPTH: usize = 32;

/// Renames the header section's fields claiming `me` in place; returns the byte range of
/// `header` that changed (empty when nothing did) and how many fields were renamed.
pub fn rename_claims(header: &mut [u8], me: &str) -> (std::ops::Range<usize>, usize) {
    let base = header.as_ptr() as usize;
    let offsets: Vec<usize> = headers::fields(header)
        .flatten()
        .filter(|f| f.is(NAME) && claims(f.raw_value(), me))
        // The name borrows `header`: its address minus the section's is its offset.
        .map(|f| f.name().as_ptr() as usize - base)
        .collect();
    for &at in &offsets {
        header[at..at + RENAMED.len()].copy_from_slice(RENAMED);
    }
    match (offsets.first(), offsets.last()) {
        (Some(&first), Some(&last)) => (first..last + RENAMED.len(), offsets.len()),
        _ => (0..0, 0),
    }
}

/// True if the Authentication-Results value `raw` (as it stands after the colon) is one `me`
/// would write, or a malformed one naming `me`.
fn claims(raw: &[u8], me: &str) -> bool {
    let me = me.strip_suffix('.').unwrap_or(me);
    match authserv_id(raw) {
        Some(id) => id.strip_suffix('.').unwrap_or(&id).eq_ignore_ascii_case(me),
        None => !me.is_empty() && contains_ignore_case(raw, me.as_bytes()),
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The authserv-id of an Authentication-Results value (RFC 8601 §2.2), or `None` when the
/// value does not start with one: `[CFWS] value`, followed by CFWS, `;` or the end (an
/// `authres-version` or the `;` of the first result comes next). `value` is an RFC 2045 token
/// or a quoted string (quoted pairs and folds undone).
pub fn authserv_id(raw: &[u8]) -> Option<Cow<'_, str>> {
    let mut i = skip_cfws(raw, 0)?;
    let id = if raw.get(i) == Some(&b'"') {
        let mut s = Vec::new();
        i += 1;
        loop {
            match *raw.get(i)? {
                b'"' => break,
                b'\\' => {
                    s.push(*raw.get(i + 1)?);
                    i += 2;
                }
                b'\r' | b'\n' => i += 1, // a fold inside the quotes
                b => {
                    s.push(b);
                    i += 1;
                }
            }
        }
        i += 1;
        Cow::Owned(String::from_utf8(s).ok()?)
    } else {
        let start = i;
        while raw.get(i).is_some_and(|&b| is_token(b)) {
            i += 1;
        }
        Cow::Borrowed(std::str::from_utf8(&raw[start..i]).ok()?)
    };
    if id.is_empty() {
        return None;
    }
    match raw.get(i) {
        None | Some(b';' | b' ' | b'\t' | b'\r' | b'\n' | b'(') => Some(id),
        Some(_) => None,
    }
}

/// RFC 2045 `token` characters (bytes past ASCII are let through: RFC 8616 allows UTF-8).
fn is_token(b: u8) -> bool {
    b > b' ' && b != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// The index past white space, folds and (nested) comments from `i`; `None` for a comment
/// left open or nested too deep.
fn skip_cfws(raw: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    while let Some(&b) = raw.get(i) {
        match b {
            b'(' => {
                depth += 1;
                if depth > MAX_COMMENT_DEPTH {
                    return None;
                }
            }
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1, // a quoted pair in a comment
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    (depth == 0).then_some(i)
}

/// Renames the message's forged fields in memory and, for a spooled message, in its spool
/// file (same offsets: memory holds the message's first bytes). Returns how many.
pub async fn rename_in_message(txn: &mut Transaction, me: &str) -> io::Result<usize> {
    let end = txn.body.header_end.unwrap_or(txn.body.mem.len());
    let (range, n) = rename_claims(&mut txn.body.mem[..end], me);
    if let Some(spool) = txn.body.spool.as_ref().filter(|_| n > 0) {
        let file = monoio::fs::File::from_std(spool.file.try_clone()?)?;
        let bytes = txn.body.mem[range.clone()].to_vec();
        let (res, _) = file.write_all_at(bytes, range.start as u64).await;
        res?;
    }
    Ok(n)
}

/// True if the message went to the spool before its header section ended and that section
/// is longer than what memory keeps: its fields could not all be checked.
pub fn header_cut(txn: &Transaction) -> bool {
    let b = &txn.body;
    b.spool.is_some() && b.header_end.is_none() && (b.mem.len() as u64) < b.len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: &str) -> Option<String> {
        authserv_id(raw.as_bytes()).map(Cow::into_owned)
    }

    #[test]
    fn authserv_id_follows_rfc_8601_grammar() {
        assert_eq!(
            id(" mx.example.test; spf=pass").as_deref(),
            Some("mx.example.test")
        );
        assert_eq!(
            id(" mx.example.test 1; none").as_deref(),
            Some("mx.example.test")
        );
        assert_eq!(id(" mx.example.test").as_deref(), Some("mx.example.test"));
        let commented = " (a (nested \\) comment)\r\n\t) MX.Example.Test(x);dkim=pass";
        assert_eq!(id(commented).as_deref(), Some("MX.Example.Test"));
        assert_eq!(
            id(" \"mx.ex\\ample.\r\n test\"; spf=pass").as_deref(),
            Some("mx.example. test")
        );
        for bad in [
            "",
            " ; spf=pass",
            " (open comment mx.example.test; spf=pass",
            " \"mx.example.test; spf=pass",
            " mx.example.test@evil; spf=pass",
            " mx.example.test:; spf=pass",
        ] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
        let deep = format!(" {}x{} mx.example.test;", "(".repeat(40), ")".repeat(40));
        assert_eq!(id(&deep), None);
    }

    #[test]
    fn only_fields_claiming_our_id_are_renamed_in_place() {
        let section = "Received: x\r\n\
            Authentication-Results: mx.example.test; dkim=pass header.d=bank.example\r\n\
            authentication-results : (forged)\r\n MX.EXAMPLE.TEST.; spf=pass\r\n\
            Authentication-Results: other.example; spf=pass\r\n\
            Authentication-Results: mx.example.test.evil; spf=pass\r\n\
            ARC-Authentication-Results: i=1; mx.example.test; spf=pass\r\n\
            Authentication-Results: (broken mx.example.test; dkim=pass\r\n\
            Subject: Authentication-Results: mx.example.test; spf=pass\r\n\
            \r\n\
            Authentication-Results: mx.example.test; in the body\r\n";
        let mut bytes = section.as_bytes().to_vec();
        let (range, n) = rename_claims(&mut bytes, "mx.example.test");
        assert_eq!(n, 3);
        let out = String::from_utf8(bytes).unwrap();
        assert_eq!(out.len(), section.len());
        assert_eq!(&out[..range.start], &section[..range.start]);
        assert_eq!(&out[range.end..], &section[range.end..]);
        let names: Vec<String> = headers::fields(out.as_bytes())
            .flatten()
            .map(|f| f.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "Received",
                "X-Forged-Authn-Results",
                "X-Forged-Authn-Results",
                "Authentication-Results",
                "Authentication-Results",
                "ARC-Authentication-Results",
                "X-Forged-Authn-Results",
                "Subject",
            ]
        );
        assert!(out.ends_with("\r\nAuthentication-Results: mx.example.test; in the body\r\n"));
        let mut none = b"Authentication-Results: other.example; spf=pass\r\n".to_vec();
        assert_eq!(rename_claims(&mut none, "mx.example.test"), (0..0, 0));
    }
}
