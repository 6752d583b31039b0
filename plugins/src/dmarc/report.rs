//! The data of RFC 7489 §7.2 aggregate reports, one tab-separated line per message in a
//! file per day (`<report_dir>/dmarc-YYYY-MM-DD.tsv`, UTC). Nothing is sent: see the
//! plugin's manual page for how to turn the files into reports.
//!
//! Fields, in order (a field with nothing in it is `-`):
//!
//! | # | field | report element (Appendix C) |
//! |---|---|---|
//! | 1 | time, seconds since the epoch | `date_range` |
//! | 2 | client IP | `row/source_ip` |
//! | 3 | Author Domain | `identifiers/header_from` |
//! | 4 | MAIL FROM domain (`-` for `<>`) | `identifiers/envelope_from` |
//! | 5 | domain of the first recipient | `identifiers/envelope_to` |
//! | 6 | domain the policy was found at | `policy_published/domain` |
//! | 7 | `p`, `sp`, `adkim`, `aspf`, `pct` as `p=reject,sp=-,adkim=r,aspf=r,pct=100` | `policy_published` |
//! | 8 | `rua` as published | (where to send the report) |
//! | 9 | disposition applied: `none`, `quarantine`, `reject` | `policy_evaluated/disposition` |
//! | 10 | DKIM aligned: `pass` or `fail` | `policy_evaluated/dkim` |
//! | 11 | SPF aligned: `pass` or `fail` | `policy_evaluated/spf` |
//! | 12 | reason: `sampled_out`, `local_policy` or `-` | `policy_evaluated/reason` |
//! | 13 | DKIM signatures, `domain:selector:result` separated by `,` | `auth_results/dkim` |
//! | 14 | SPF as `scope:domain:result` (`mfrom` or `helo`) | `auth_results/spf` |
//!
//! Every field is printable ASCII without tabs (anything else becomes `?`) and at most
//! [`MAX_FIELD`] bytes, so a line is at most [`MAX_LINE`] bytes: one `write` on a file
//! opened for appending, which concurrent writers do not interleave.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest field written.
pub const MAX_FIELD: usize = 600;
/// DKIM signatures listed at most (`dkim` verifies 10).
const MAX_SIGNATURES: usize = 10;
/// The longest line written: 14 fields, each with its tab or newline.
pub const MAX_LINE: usize = 14 * (MAX_FIELD + 1);

/// One message's row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub time: Option<SystemTime>,
    pub source_ip: String,
    pub header_from: String,
    pub envelope_from: String,
    pub envelope_to: String,
    pub policy_domain: String,
    pub published: String,
    pub rua: String,
    pub disposition: &'static str,
    pub dkim_aligned: bool,
    pub spf_aligned: bool,
    pub reason: &'static str,
    /// `(domain, selector, result)` of each signature.
    pub dkim: Vec<(String, String, &'static str)>,
    /// `(scope, domain, result)`.
    pub spf: Option<(&'static str, String, &'static str)>,
}

/// A field: printable ASCII, no tab, bounded, `-` if empty.
fn field(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push('-');
    }
    for c in value.chars().take(MAX_FIELD) {
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
}

fn pass(aligned: bool) -> &'static str {
    if aligned {
        "pass"
    } else {
        "fail"
    }
}

impl Row {
    /// The line, with its newline.
    pub fn line(&self) -> String {
        let secs = self
            .time
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let dkim: Vec<String> = self
            .dkim
            .iter()
            .take(MAX_SIGNATURES)
            .map(|(d, s, r)| format!("{d}:{s}:{r}"))
            .collect();
        let spf = match &self.spf {
            Some((scope, d, r)) => format!("{scope}:{d}:{r}"),
            None => String::new(),
        };
        let mut out = String::with_capacity(256);
        for (i, value) in [
            &secs.to_string(),
            &self.source_ip,
            &self.header_from,
            &self.envelope_from,
            &self.envelope_to,
            &self.policy_domain,
            &self.published,
            &self.rua,
            self.disposition,
            pass(self.dkim_aligned),
            pass(self.spf_aligned),
            self.reason,
            &dkim.join(","),
            &spf,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push('\t');
            }
            field(&mut out, value);
        }
        out.push('\n');
        debug_assert!(out.len() <= MAX_LINE);
        out
    }

    /// The file this row goes to: one per UTC day.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let day: chrono::DateTime<chrono::Utc> = self.time.unwrap_or(UNIX_EPOCH).into();
        dir.join(format!("dmarc-{}.tsv", day.format("%Y-%m-%d")))
    }
}

/// Appends `line` to `path` (created 0640). Blocking: run it on the blocking pool.
pub fn append(path: &Path, line: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)?;
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_row_is_one_bounded_line_of_14_clean_fields() {
        let row = Row {
            time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            source_ip: "192.0.2.1".into(),
            header_from: "example.com".into(),
            envelope_from: String::new(),
            envelope_to: "rcpt.test".into(),
            policy_domain: "example.com".into(),
            published: "p=reject,sp=-,adkim=r,aspf=r,pct=100".into(),
            rua: format!("mailto:a@b.test\t\r\nX{}", "y".repeat(5000)),
            disposition: "reject",
            dkim_aligned: false,
            spf_aligned: true,
            reason: "",
            dkim: vec![("example.com".into(), "sel".into(), "pass"); 50],
            spf: Some(("mfrom", "example.com".into(), "pass")),
        };
        let line = row.line();
        assert!(line.ends_with('\n') && line.len() <= MAX_LINE);
        assert_eq!(line.matches('\n').count(), 1);
        let fields: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 14);
        assert_eq!(
            &fields[..4],
            ["1700000000", "192.0.2.1", "example.com", "-"]
        );
        assert!(fields[7].starts_with("mailto:a@b.test???X") && fields[7].len() == MAX_FIELD);
        assert_eq!(&fields[8..12], ["reject", "fail", "pass", "-"]);
        assert_eq!(
            fields[12].matches("example.com:sel:pass").count(),
            MAX_SIGNATURES
        );
        assert_eq!(fields[13], "mfrom:example.com:pass");
        assert_eq!(
            row.path(Path::new("/r")),
            Path::new("/r/dmarc-2023-11-14.tsv")
        );
    }
}
