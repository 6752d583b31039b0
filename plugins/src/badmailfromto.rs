//! # badmailfromto — refuse mail from a given sender to a given recipient
//!
//! ## Synopsis
//!
//! ```text
//! badmailfromto [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! List it before `rcpt_ok` (which accepts local recipients and ends the rcpt chain).
//!
//! ## Description
//!
//! For harassment cases: a sender may not write to one recipient, and must not learn that it
//! is blocked. At `MAIL` the sender is compared with the first column of `badmailfromto`; the
//! sender is always accepted. At `RCPT` a recipient paired with a matching sender is refused
//! with `550 5.1.1 mail to <recipient> not accepted here` — the same words an unknown
//! recipient gets from `badrcptto` — and every other recipient goes on to the next plugin.
//! The null sender `<>` is never matched.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty`, `reject_type` | `1`, `perm` | how a listed pair is refused (qpsmtpd always answered DENY) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! `badmailfromto`, read when the plugin is built (start and reload). One pair per line,
//! separated by whitespace; anything after the pair is a comment:
//!
//! ```text
//! stalker@example.com      victim@example.org
//! @stalker.example         victim@example.org     (every sender at that host)
//! ```
//!
//! The sender is `user@host` or `@host`, the recipient `user@host`, both compared without
//! regard to case, literally (`+` is an ordinary character here). A line without both, or
//! without `@`, stops the server with `badmailfromto:LINE`. Difference from qpsmtpd: qpsmtpd
//! remembered only the last line whose sender matched, so a sender matching both an
//! address line and an `@host` line was only checked against the pairs of one of them; here
//! every matching line counts.
//!
//! ## Hooks
//!
//! `mail`, `rcpt`.
//!
//! ## Notes
//!
//! A private txn note with the recipients refused for this sender (qpsmtpd's txn note
//! `badmailfromto`). Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.3 (550); RFC 3463 X.1.1.
//!
//! ## Security
//!
//! As with `badmailfrom`, the sender address is not authenticated.

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{first_word, lower_parts, AddrPattern};

/// Txn note: the lines whose sender matched this transaction's sender (indexes into `pairs`).
struct Refused(Vec<usize>);

/// The `badmailfromto` plugin.
pub struct Badmailfromto {
    common: Common,
    /// (sender pattern, recipient lowercased).
    pairs: Vec<(AddrPattern, String)>,
}

/// Builds `badmailfromto` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let pairs = args::parse_lines(init, "badmailfromto", |text| {
        let (from, rest) = first_word(text);
        let Some((to, _)) = rest.map(first_word) else {
            return Err(format!("'{text}': expected SENDER RECIPIENT"));
        };
        let from = AddrPattern::parse(from, false).map_err(|e| format!("sender: {e}"))?;
        match AddrPattern::parse(to, false) {
            Ok(AddrPattern::Exact(to)) => Ok((from, to)),
            _ => Err(format!("recipient '{to}' is not user@host")),
        }
    })?;
    Ok(Box::new(Badmailfromto { common, pairs }))
}

impl Plugin for Badmailfromto {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail, Hook::Rcpt])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.pairs.is_empty() {
            return Step::DECLINED;
        }
        let Some((from, host)) = lower_parts(&txn.sender) else {
            return Step::DECLINED;
        };
        let hits: Vec<usize> = (0..self.pairs.len())
            .filter(|&i| self.pairs[i].0.matches(&from, &host))
            .collect();
        if !hits.is_empty() {
            self.common
                .log(cx, Level::Debug, format_args!("sender {from} is listed"));
            txn.notes.set(Refused(hits));
        }
        Step::DECLINED
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        let Some(Refused(hits)) = txn.notes.get::<Refused>() else {
            return Step::DECLINED;
        };
        let Some((to, _)) = lower_parts(&rcpt.addr) else {
            return Step::DECLINED;
        };
        if hits.iter().any(|&i| self.pairs[i].1 == to) {
            let text = format!("5.1.1 mail to {to} not accepted here");
            let what = format_args!("{} -> {to} is listed", txn.sender);
            return self.common.fail(cx, what, text);
        }
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_lines, build, cx, rcpt, run, txn_from};
    use ringsmtpd_plugin_api::Outcome;

    const PAIRS: &str = "Stalker@Example.com   Victim@Example.org   harassment case 12\n\
                         @stalker.example      victim@example.org\n\
                         @example.com          boss@example.org\n\
                         a+b@x.example         c@example.org\n";

    /// MAIL from `from`, then RCPT to each of `tos`: the outcomes.
    fn session(p: &dyn Plugin, from: &str, tos: &[&str]) -> Vec<Outcome> {
        let (mut c, _) = cx("192.0.2.1:1");
        session_on(p, &mut c, from, tos)
    }

    fn session_on(p: &dyn Plugin, c: &mut Cx, from: &str, tos: &[&str]) -> Vec<Outcome> {
        let mut t = txn_from(from);
        assert_eq!(
            run(p.mail(c, &mut t)),
            Outcome::Declined,
            "the sender is always accepted"
        );
        tos.iter()
            .map(|to| run(p.rcpt(c, &mut t, &rcpt(to))))
            .collect()
    }

    fn refused(to: &str) -> Outcome {
        Outcome::Deny(Some(format!("5.1.1 mail to {to} not accepted here").into()))
    }

    #[test]
    fn pairs() {
        let p = build(new, "badmailfromto", &[("badmailfromto", PAIRS)]).unwrap();
        let p = &*p;
        assert_eq!(
            session(
                p,
                "<stalker@example.com>",
                &["<VICTIM@example.org>", "<other@example.org>"]
            ),
            vec![refused("victim@example.org"), Outcome::Declined]
        );
        // stalker@example.com matches both its own line and @example.com: both pairs count.
        assert_eq!(
            session(p, "<stalker@example.com>", &["<boss@example.org>"]),
            vec![refused("boss@example.org")]
        );
        assert_eq!(
            session(p, "<x@stalker.example>", &["<victim@example.org>"]),
            vec![refused("victim@example.org")]
        );
        assert_eq!(
            session(p, "<x@other.example>", &["<victim@example.org>"]),
            vec![Outcome::Declined]
        );
        // Literal '+'.
        assert_eq!(
            session(p, "<a+b@x.example>", &["<c@example.org>"]),
            vec![refused("c@example.org")]
        );
        assert_eq!(
            session(p, "<aab@x.example>", &["<c@example.org>"]),
            vec![Outcome::Declined]
        );
        assert_eq!(
            session(p, "<>", &["<victim@example.org>"]),
            vec![Outcome::Declined]
        );
    }

    #[test]
    fn reject_forms() {
        let forms =
            testing::reject_forms(new, "badmailfromto", &[("badmailfromto", PAIRS)], |p, c| {
                session_on(p, c, "<x@stalker.example>", &["<victim@example.org>"]).remove(0)
            });
        assert!(matches!(forms.temp, Outcome::DenySoft(_)));
        assert_eq!(forms.log_only, Outcome::Declined);
        assert_eq!(forms.naughty, Outcome::Declined);
        assert!(forms.naughty_msg.is_some());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        assert_bad_lines(
            new,
            "badmailfromto",
            "badmailfromto",
            &[
                ("a@b.example c@d.example\nlonely@b.example\n", 2),
                ("nohost c@d.example\n", 1),
                ("a@b.example @d.example\n", 1),
                ("a@b.example d.example\n", 1),
            ],
        );
        assert!(build(new, "badmailfromto x", &[]).is_err());
    }
}
