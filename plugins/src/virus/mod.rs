//! Virus scanners (qpsmtpd's `plugins/virus/`): each checks the message at `data_post`.
//! `clamdscan` and `sophie` talk to a daemon on the shared scanner-client shape of
//! `crate::helpers::scanner`; `clamav`, `uvscan`, `bitdefender`, `hbedv` and `aveclient` run a
//! command-line scanner through `crate::helpers::command_scanner`, and share `verdict.rs`
//! (what a found virus or a clean message becomes: reply or headers).

pub mod aveclient;
pub mod bitdefender;
pub mod clamav;
pub mod clamdscan;
pub mod hbedv;
pub mod sophie;
pub mod uvscan;
pub(crate) mod verdict;

use ringsmtpd_plugin_api::headers::first;
use ringsmtpd_plugin_api::Transaction;

/// The longest virus name kept.
const MAX_NAME: usize = 128;

/// A virus name as a scanner printed it, safe for a reply, a header and a log line: letters,
/// digits and `._-:/+!@# ` kept, anything else (control characters, CR, LF) becomes `?`, at
/// most 128 characters.
pub(crate) fn clean_name(name: &str) -> String {
    name.trim()
        .chars()
        .take(MAX_NAME)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-:/+!@# ".contains(c) {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// The top Content-Type is `multipart/*` with a boundary (qpsmtpd's test for scanning only
/// messages that can carry an attachment).
pub(crate) fn is_multipart(txn: &Transaction) -> bool {
    let Some(field) = first(txn.body.header_bytes(), "Content-Type") else {
        return false;
    };
    let value = field.value().to_ascii_lowercase();
    value.trim_start().starts_with("multipart/") && value.contains("boundary=")
}
