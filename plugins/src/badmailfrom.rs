//! # badmailfrom — refuse listed envelope senders
//!
//! ## Synopsis
//!
//! ```text
//! badmailfrom [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! ## Description
//!
//! qmail's `badmailfrom`, with qpsmtpd's per-line reasons and patterns. At `MAIL`, the sender's
//! `user@host` (lowercased) is compared with each line of `badmailfrom`; the first match refuses
//! the sender with the line's reason, or `Your envelope sender is in my badmailfrom list`
//! (`550 5.7.1 <sender>, reason` with the defaults). The null sender `<>`, immune clients (relay
//! clients, whitelisted hosts) and an empty list skip the check.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection, and let the `naughty` plugin refuse later (qpsmtpd's sample config uses `badmailfrom reject naughty`) |
//! | `reject_type` | `perm` | `perm` 550, `temp` 450, `disconnect` 550 and close, `temp_disconnect` 421 and close |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! `badmailfrom`, read when the plugin is built (start and reload). One entry per line, an
//! optional reason after whitespace:
//!
//! ```text
//! spammer@example.com                            (this address, any case)
//! @spam.example          No mail from there      (every address at this host; not subdomains)
//! ^return.*@.*\.pidplate\.biz$   VERP spam      (a regular expression)
//! ```
//!
//! An entry containing any of `/ ^ $ * + ! % ? \` is a regular expression (qpsmtpd's rule),
//! matched anywhere in `user@host` unless anchored, without regard to case (qpsmtpd matched it
//! case-sensitively against the lowercased address, so an upper-case letter in a pattern
//! could never match). So `a+b@example.com` is a pattern (one or more `a`): write `a\+b@...`
//! for the literal address. Patterns use the `regex` crate's syntax, which is Perl's without
//! look-around and back-references; a pattern that does not compile, or a plain entry without
//! `@`, stops the server with `badmailfrom:LINE` (qpsmtpd logged and ignored it).
//!
//! ## Hooks
//!
//! `mail`.
//!
//! ## Notes
//!
//! Reads `relay_client`, `WhitelistHost` (through `is_immune`). Writes `Naughty` with
//! `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §3.3 and §4.2.3 (550 at MAIL for a policy refusal); RFC 3463 X.7.1.
//!
//! ## Security
//!
//! The envelope sender is whatever the client says: this list stops careless senders and
//! known bounce sources, not a forger. Patterns run in linear time (the `regex` crate has no
//! backtracking), so a pattern cannot be made to hang the server.

use std::borrow::Cow;

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step, Transaction,
};

use crate::matchers::{first_word, log, lower_parts, AddrPattern};

const DEFAULT_REASON: &str = "Your envelope sender is in my badmailfrom list";

/// The `badmailfrom` plugin.
pub struct Badmailfrom {
    name: String,
    common: CommonArgs,
    entries: Vec<(AddrPattern, Option<String>)>,
}

/// Builds `badmailfrom` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<Badmailfrom, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("unknown argument '{extra}'")));
    }
    let mut entries = Vec::new();
    for line in init.config.lines("badmailfrom")?.unwrap_or_default() {
        let (bad, reason) = first_word(&line.text);
        let pattern = AddrPattern::parse(bad, true).map_err(|e| line.error(e))?;
        entries.push((pattern, reason.map(str::to_string)));
    }
    Ok(Badmailfrom {
        name: init.name.to_string(),
        common,
        entries,
    })
}

impl Plugin for Badmailfrom {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.entries.is_empty() || is_immune(cx, None) {
            return Step::DECLINED;
        }
        let Some((from, host)) = lower_parts(&txn.sender) else {
            return Step::DECLINED; // <>
        };
        for (pattern, reason) in &self.entries {
            if pattern.matches(&from, &host) {
                log(
                    cx,
                    &self.common,
                    &self.name,
                    Level::Info,
                    format_args!("fail, {from} is listed"),
                );
                let text: Cow<'static, str> = match reason {
                    Some(r) => Cow::Owned(r.clone()),
                    None => Cow::Borrowed(DEFAULT_REASON),
                };
                return Step::Ready(self.common.reject(cx, &self.name, text));
            }
        }
        log(
            cx,
            &self.common,
            &self.name,
            Level::Debug,
            format_args!("pass"),
        );
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::address::parse_path;
    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistHost};
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};
    use ringsmtpd_plugin_api::Outcome;

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<Badmailfrom, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::new(files);
        let line = origin(&format!("badmailfrom {}", args.join(" ")));
        build(&PluginInit {
            name: "badmailfrom",
            args: &args,
            config: &config,
            origin: &line,
        })
    }

    const LIST: &str = "# bad senders\n\
        spammer@Example.com\n\
        @spam.example    No mail from there, ever\n\
        ^return.*@.*\\.pidplate\\.biz$   VERP spam\n\
        ^admin.*\\.ppoonn400\\.com$\n";

    fn check(p: &Badmailfrom, from: &str) -> Outcome {
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        t.sender = parse_path(from, true, false).unwrap();
        run(p.mail(&mut c, &mut t))
    }

    #[test]
    fn address_host_and_pattern_entries() {
        let p = build_with(&[], &[("badmailfrom", LIST)]).unwrap();
        assert_eq!(
            check(&p, "<spammer@example.com>"),
            Outcome::deny(DEFAULT_REASON)
        );
        assert_eq!(
            check(&p, "<SPAMMER@EXAMPLE.COM>"),
            Outcome::deny(DEFAULT_REASON)
        );
        assert_eq!(check(&p, "<other@example.com>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<anyone@Spam.Example>"),
            Outcome::Deny(Some("No mail from there, ever".into()))
        );
        assert_eq!(check(&p, "<a@sub.spam.example>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<return-77@x.pidplate.biz>"),
            Outcome::Deny(Some("VERP spam".into()))
        );
        assert_eq!(check(&p, "<bounce@x.pidplate.biz>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<admin7@mail.ppoonn400.com>"),
            Outcome::deny(DEFAULT_REASON)
        );
    }

    #[test]
    fn null_sender_and_immune_skip() {
        let p = build_with(&[], &[("badmailfrom", "^.*$\n")]).unwrap();
        assert_eq!(check(&p, "<>"), Outcome::Declined);
        assert_eq!(check(&p, "<a@b.example>"), Outcome::deny(DEFAULT_REASON));
        let mut t = Transaction::default();
        t.sender = parse_path("<a@b.example>", true, false).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
    }

    #[test]
    fn no_file_no_check() {
        let p = build_with(&[], &[]).unwrap();
        assert_eq!(check(&p, "<spammer@example.com>"), Outcome::Declined);
    }

    #[test]
    fn reject_forms() {
        let files = &[("badmailfrom", "spammer@example.com\n")];
        let p = build_with(&["reject", "0"], files).unwrap();
        assert_eq!(check(&p, "<spammer@example.com>"), Outcome::Declined);
        let p = build_with(&["reject_type", "temp"], files).unwrap();
        assert_eq!(
            check(&p, "<spammer@example.com>"),
            Outcome::deny_soft(DEFAULT_REASON)
        );
        let p = build_with(&["reject_type", "disconnect"], files).unwrap();
        assert!(matches!(
            check(&p, "<spammer@example.com>"),
            Outcome::DenyDisconnect(_)
        ));
        let p = build_with(&["reject", "naughty"], files).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        t.sender = parse_path("<spammer@example.com>", true, false).unwrap();
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
        assert_eq!(c.conn.notes.get::<Naughty>().unwrap().msg, DEFAULT_REASON);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [
            ("ok@example.com\nnoatsign\n", 2),
            ("# c\n^(unclosed   reason\n", 2),
            ("(?<=look)behind$\n", 1),
            ("user@\n", 1),
        ] {
            let e = build_with(&[], &[("badmailfrom", text)]).err().unwrap();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("badmailfrom", line),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn unknown_argument() {
        assert!(build_with(&["strict"], &[]).is_err());
    }
}
