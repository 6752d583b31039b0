//! Plugin names: Debian's compatibility names (a note: they run the renamed plugin), and names
//! this build does not implement (an error naming the closest plugin it has).

use std::collections::HashSet;

use crate::config::PluginLine;

use super::{Finding, Severity};

/// qpsmtpd 0.94's plugins (its `plugins/` directory, as Debian's package installs it).
#[rustfmt::skip]
const QPSMTPD: &[&str] = &[
    "async/dns_whitelist_soft", "async/dnsbl", "async/earlytalker", "async/queue/smtp-forward",
    "async/resolvable_fromhost", "async/rhsbl", "async/uribl", "auth/auth_checkpassword",
    "auth/auth_cvm_unix_local", "auth/auth_flat_file", "auth/auth_ldap_bind", "auth/auth_vpopmail",
    "auth/auth_vpopmail_sql", "auth/auth_vpopmaild", "auth/authdeny", "badmailfrom",
    "badmailfromto", "badrcptto", "bogus_bounce", "check_badmailfrom", "check_badrcptto",
    "check_earlytalker", "check_loop", "check_relay", "check_spamhelo", "connection_time",
    "content_log", "count_unrecognized_commands", "dkim", "dmarc", "dns_whitelist_soft", "dnsbl",
    "domainkeys", "dont_require_anglebrackets", "dspam", "earlytalker", "fcrdns", "greylisting",
    "headers", "helo", "help", "hosts_allow", "http_config", "ident/geoip", "ident/p0f", "karma",
    "karma_tool", "loadcheck", "logging/adaptive", "logging/apache", "logging/connection_id",
    "logging/devnull", "logging/file", "logging/syslog", "logging/transaction_id", "logging/warn",
    "loop", "milter", "naughty", "noop_counter", "parse_addr_withhelo", "qmail_deliverable",
    "queue/exim-bsmtp", "queue/maildir", "queue/postfix-queue", "queue/qmail-queue",
    "queue/smtp-forward", "quit_fortune", "random_error", "rcpt_map", "rcpt_ok", "rcpt_regexp",
    "relay", "resolvable_fromhost", "rhsbl", "sender_permitted_from", "spamassassin", "stunnel",
    "tls", "tls_cert", "uribl", "virus/aveclient", "virus/bitdefender", "virus/clamav",
    "virus/clamdscan", "virus/hbedv", "virus/kavscanner", "virus/klez_filter", "virus/sophie",
    "virus/uvscan", "whitelist",
];

/// Older qpsmtpd names (its `registry.txt` aliases) and qpsmtpd plugins whose job ringsmtpd
/// does elsewhere: (name, what to write instead).
const RENAMES: &[(&str, &str)] = &[
    ("check_norelay", "relay (its norelayclients file)"),
    ("relay_only", "relay only 1"),
    ("check_badmailfrom_patterns", "badmailfrom"),
    ("check_badrcptto_patterns", "badrcptto"),
    ("require_resolvable_fromhost", "resolvable_fromhost"),
    ("check_bogus_bounce", "bogus_bounce"),
    ("check_basicheaders", "headers"),
    ("rcpt_regex", "rcpt_regexp"),
    ("unrecognized_commands", "count_unrecognized_commands"),
    ("noop", "noop_counter"),
    ("tls_cert", "the command `ringsmtpd tls-cert`"),
    ("karma_tool", "the command `ringsmtpd karma`"),
    (
        "stunnel",
        "a listen line `ADDR:PORT tls` (implicit TLS is built in)",
    ),
    (
        "auth/auth_vpopmail",
        "auth/auth_checkpassword (vpopmail's vchkpw) or auth/auth_imap",
    ),
    (
        "auth/auth_vpopmaild",
        "auth/auth_checkpassword (vpopmail's vchkpw) or auth/auth_imap",
    ),
    (
        "auth/auth_vpopmail_sql",
        "auth/auth_checkpassword (vpopmail's vchkpw) or auth/auth_imap",
    ),
    (
        "auth/auth_cvm_unix_local",
        "auth/auth_checkpassword or auth/auth_imap",
    ),
];

/// More unknown-plugin errors than this are summed up in one line (a 10,000-line file of
/// garbage gives a readable report).
const MAX_REPORTED: usize = 20;

/// The plugin a `config/plugins` base name runs: Debian's compatibility names resolved.
pub(super) fn plugin_of(base: &str) -> &str {
    ringsmtpd_plugins::aliases()
        .find(|(alias, _)| *alias == base)
        .map_or(base, |(_, plugin)| plugin)
}

/// Reports each line's name; returns the (file, line) of the lines naming no plugin.
pub(super) fn check(lines: &[PluginLine], out: &mut Vec<Finding>) -> HashSet<(String, u32)> {
    let mut unknown = HashSet::new();
    for line in lines {
        let base = line.base_name();
        if base == "tls" {
            continue; // the core's TLS setup, configured as qpsmtpd's tls plugin
        }
        if ringsmtpd_plugins::find(&line.name).is_some() {
            let plugin = plugin_of(base);
            if plugin != base {
                out.push(Finding::at_line(
                    Severity::Note,
                    line,
                    format!(
                        "{base} is Debian's compatibility name of {plugin}: it runs {plugin} \
                         (`ringsmtpd help {plugin}`); write {plugin} to say so"
                    ),
                ));
            }
            continue;
        }
        unknown.insert((line.origin.file.clone(), line.origin.line));
        if unknown.len() > MAX_REPORTED {
            continue;
        }
        let known = if QPSMTPD.contains(&base) {
            " (a qpsmtpd 0.94 plugin that ringsmtpd does not implement)"
        } else {
            ""
        };
        let hint = match closest(base) {
            Some(near) => format!("instead, use {near}"),
            None => "no implemented plugin is close; `ringsmtpd help` lists them".to_string(),
        };
        out.push(Finding::at_line(
            Severity::Error,
            line,
            format!(
                "unknown plugin '{}'{known}: remove the line or, {hint}",
                line.name
            ),
        ));
    }
    if unknown.len() > MAX_REPORTED {
        out.push(Finding::new(
            Severity::Error,
            lines
                .first()
                .map_or_else(String::new, |l| l.origin.file.clone()),
            format!(
                "and {} more lines naming unknown plugins",
                unknown.len() - MAX_REPORTED
            ),
        ));
    }
    unknown
}

/// What to write instead of `base`: a known rename, the same plugin without qpsmtpd's `async/`
/// prefix, or the implemented plugin with the nearest name (edit distance, also against the
/// name without its family: `virus/clamav` against `clamav`).
pub(super) fn closest(base: &str) -> Option<String> {
    if let Some((_, instead)) = RENAMES.iter().find(|(name, _)| *name == base) {
        return Some((*instead).to_string());
    }
    if let Some(rest) = base.strip_prefix("async/") {
        if ringsmtpd_plugins::find(rest).is_some() {
            return Some(format!("{rest} (every ringsmtpd plugin is asynchronous)"));
        }
    }
    let short = |n: &str| n.rsplit('/').next().unwrap_or(n).to_string();
    let (dist, near) = ringsmtpd_plugins::registry()
        .iter()
        .map(|(name, _)| {
            let d = distance(base, name).min(distance(&short(base), &short(name)));
            (d, *name)
        })
        .min()?;
    // Close enough to be a typo or a rename, not just any short name.
    let limit = (base.len() / 3).clamp(1, 3);
    (dist <= limit).then(|| format!("{} (`ringsmtpd help {}`)", near, plugin_of(near)))
}

/// Levenshtein distance over bytes (plugin names are ASCII).
fn distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut row = Vec::with_capacity(b.len() + 1);
        row.push(i + 1);
        for (j, &cb) in b.iter().enumerate() {
            let replace = prev[j] + usize::from(ca != cb);
            row.push(replace.min(prev[j + 1] + 1).min(row[j] + 1));
        }
        prev = row;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("rcpt_ok", "rcpt_ok"), 0);
        assert_eq!(distance("rcpt_okk", "rcpt_ok"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_knows_renames_typos_and_async() {
        assert_eq!(closest("rcpt_regex").as_deref(), Some("rcpt_regexp"));
        assert_eq!(closest("relay_only").as_deref(), Some("relay only 1"));
        assert!(closest("async/uribl").unwrap().starts_with("uribl "));
        assert!(closest("rcpt_okk").unwrap().starts_with("rcpt_ok "));
        assert!(closest("queue/maildri")
            .unwrap()
            .starts_with("queue/maildir "));
        assert!(closest("auth_flat_file")
            .unwrap()
            .starts_with("auth/auth_flat_file "));
        // Nothing is close to a fortune cookie.
        assert_eq!(closest("quit_fortune"), None);
    }

    #[test]
    fn every_qpsmtpd_plugin_is_implemented_or_has_an_answer() {
        // Not a hard-coded pass: each name is either found or gets a finding.
        for name in QPSMTPD {
            let line = crate::config::PluginLine {
                name: name.to_string(),
                args: Vec::new(),
                origin: ringsmtpd_plugin_api::ConfigLine {
                    text: name.to_string(),
                    file: "plugins".into(),
                    line: 1,
                },
            };
            let mut out = Vec::new();
            let unknown = check(std::slice::from_ref(&line), &mut out);
            let implemented = ringsmtpd_plugins::find(name).is_some() || *name == "tls";
            assert_eq!(unknown.is_empty(), implemented, "{name}");
            if !implemented {
                assert!(
                    out[0].message.contains("qpsmtpd 0.94 plugin"),
                    "{name}: {:?}",
                    out
                );
            }
        }
    }
}
