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

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
    Transaction,
};

use crate::matchers::{lower_parts, AddrList};

const DEFAULT_REASON: &str = "Your envelope sender is in my badmailfrom list";

/// The `badmailfrom` plugin.
pub struct Badmailfrom {
    common: Common,
    list: AddrList,
}

/// Builds `badmailfrom` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let list = AddrList::load(init, "badmailfrom")?;
    Ok(Box::new(Badmailfrom { common, list }))
}

impl Plugin for Badmailfrom {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.list.is_empty() || is_immune(cx, None) {
            return Step::DECLINED;
        }
        let Some((from, host)) = lower_parts(&txn.sender) else {
            return Step::DECLINED; // <>
        };
        if let Some(hit) = self.list.find(&from, &host) {
            let reason = hit.reason_or(DEFAULT_REASON);
            return self
                .common
                .fail(cx, format_args!("{from} is listed"), reason);
        }
        self.common.log(cx, Level::Debug, format_args!("pass"));
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::WhitelistHost;
    use ringsmtpd_plugin_api::testing::{
        self, assert_bad_lines, build, cx, mail_outcome, run, txn_from,
    };
    use ringsmtpd_plugin_api::Outcome;

    const LIST: &str = "# bad senders\n\
        spammer@Example.com\n\
        @spam.example    No mail from there, ever\n\
        ^return.*@.*\\.pidplate\\.biz$   VERP spam\n\
        ^admin.*\\.ppoonn400\\.com$\n";

    fn with_list(line: &str, list: &str) -> Box<dyn Plugin> {
        build(new, line, &[("badmailfrom", list)]).unwrap()
    }

    #[test]
    fn address_host_and_pattern_entries() {
        let p = with_list("badmailfrom", LIST);
        let check = |from| mail_outcome(&*p, from);
        assert_eq!(
            check("<spammer@example.com>"),
            Outcome::deny(DEFAULT_REASON)
        );
        assert_eq!(
            check("<SPAMMER@EXAMPLE.COM>"),
            Outcome::deny(DEFAULT_REASON)
        );
        assert_eq!(check("<other@example.com>"), Outcome::Declined);
        assert_eq!(
            check("<anyone@Spam.Example>"),
            Outcome::Deny(Some("No mail from there, ever".into()))
        );
        assert_eq!(check("<a@sub.spam.example>"), Outcome::Declined);
        assert_eq!(
            check("<return-77@x.pidplate.biz>"),
            Outcome::Deny(Some("VERP spam".into()))
        );
        assert_eq!(check("<bounce@x.pidplate.biz>"), Outcome::Declined);
        assert_eq!(
            check("<admin7@mail.ppoonn400.com>"),
            Outcome::deny(DEFAULT_REASON)
        );
    }

    #[test]
    fn null_sender_and_immune_skip() {
        let p = with_list("badmailfrom", "^.*$\n");
        assert_eq!(mail_outcome(&*p, "<>"), Outcome::Declined);
        assert_eq!(
            mail_outcome(&*p, "<a@b.example>"),
            Outcome::deny(DEFAULT_REASON)
        );
        let mut t = txn_from("<a@b.example>");
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
    }

    #[test]
    fn no_file_no_check() {
        let p = build(new, "badmailfrom", &[]).unwrap();
        assert_eq!(
            mail_outcome(&*p, "<spammer@example.com>"),
            Outcome::Declined
        );
    }

    #[test]
    fn reject_forms() {
        let files = &[("badmailfrom", "spammer@example.com\n")];
        let forms = testing::reject_forms(new, "badmailfrom", files, |p, c| {
            run(p.mail(c, &mut txn_from("<spammer@example.com>")))
        });
        assert_eq!(forms.log_only, Outcome::Declined);
        assert_eq!(forms.temp, Outcome::deny_soft(DEFAULT_REASON));
        let p = build(new, "badmailfrom reject_type disconnect", files).unwrap();
        assert!(matches!(
            mail_outcome(&*p, "<spammer@example.com>"),
            Outcome::DenyDisconnect(_)
        ));
        assert_eq!(forms.naughty, Outcome::Declined);
        assert_eq!(forms.naughty_msg.as_deref(), Some(DEFAULT_REASON));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        assert_bad_lines(
            new,
            "badmailfrom",
            "badmailfrom",
            &[
                ("ok@example.com\nnoatsign\n", 2),
                ("# c\n^(unclosed   reason\n", 2),
                ("(?<=look)behind$\n", 1),
                ("user@\n", 1),
            ],
        );
    }

    #[test]
    fn unknown_argument() {
        assert!(build(new, "badmailfrom strict", &[]).is_err());
    }
}
