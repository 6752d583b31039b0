//! # badrcptto — refuse listed recipients
//!
//! ## Synopsis
//!
//! ```text
//! badrcptto [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! List it before `rcpt_ok`: `rcpt_ok` accepts local recipients, and no rcpt plugin after it
//! runs for them.
//!
//! ## Description
//!
//! `badmailfrom` for recipients. At `RCPT`, the recipient's `user@host` (lowercased) is compared
//! with each line of `badrcptto`; the first match refuses it with the line's reason, or with
//! `550 5.1.1 mail to <entry> not accepted here` (qpsmtpd's "no such user" DSN). Recipients
//! without a domain (the bare `postmaster`) and immune clients (relay clients, whitelisted hosts
//! and senders) skip the check.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection for the `naughty` plugin |
//! | `reject_type` | `perm` | `perm` 550, `temp` 450, `disconnect` 550 and close, `temp_disconnect` 421 and close |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! (qpsmtpd's `badrcptto` always answered DENY; the common arguments are added.)
//!
//! ## Config files
//!
//! `badrcptto`, read when the plugin is built (start and reload), in `badmailfrom`'s format:
//!
//! ```text
//! olduser@example.com                         (this address, any case)
//! @retired.example    That domain is gone     (every address at this host)
//! [%!]                No source routes        (a regular expression: percent hack, bang paths)
//! ```
//!
//! An entry containing any of `/ ^ $ * + ! % ? \` is a regular expression, matched anywhere in
//! `user@host` without regard to case (as qpsmtpd). A pattern that does not compile, or a
//! plain entry without `@`, stops the server with `badrcptto:LINE`.
//!
//! ## Hooks
//!
//! `rcpt`.
//!
//! ## Notes
//!
//! Reads `relay_client`, `WhitelistHost`, `WhitelistSender` (through `is_immune`). Writes
//! `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.3 (550 mailbox unavailable); RFC 3463 X.1.1 (bad destination mailbox).
//!
//! ## Security
//!
//! Refusing one address does not hide whether others exist. Patterns run in linear time.

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{lower_parts, AddrList};

/// The `badrcptto` plugin.
pub struct Badrcptto {
    common: Common,
    list: AddrList,
}

/// Builds `badrcptto` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let list = AddrList::load(init, "badrcptto")?;
    Ok(Box::new(Badrcptto { common, list }))
}

impl Plugin for Badrcptto {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Rcpt])
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        if self.list.is_empty() || is_immune(cx, Some(txn)) {
            return Step::DECLINED;
        }
        let Some((to, host)) = lower_parts(&rcpt.addr) else {
            return Step::DECLINED;
        };
        if let Some(hit) = self.list.find(&to, &host) {
            let entry = &hit.entry;
            let reason = hit.reason_or(format!("5.1.1 mail to {entry} not accepted here"));
            return self
                .common
                .fail(cx, format_args!("{to} matches {entry}"), reason);
        }
        self.common.log(cx, Level::Debug, format_args!("pass"));
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::WhitelistSender;
    use ringsmtpd_plugin_api::testing::{
        self, assert_bad_lines, build, cx, rcpt, rcpt_outcome, run,
    };
    use ringsmtpd_plugin_api::Outcome;

    const LIST: &str = "OldUser@Example.com\n@retired.example   That domain is gone\n[%!]   No source routes\n^.*\\.INVALID$\n";

    fn with_list(list: &str) -> Box<dyn Plugin> {
        build(new, "badrcptto", &[("badrcptto", list)]).unwrap()
    }

    #[test]
    fn entries() {
        let p = with_list(LIST);
        let check = |to| rcpt_outcome(&*p, to);
        let gone = Outcome::Deny(Some(
            "5.1.1 mail to olduser@example.com not accepted here".into(),
        ));
        assert_eq!(check("<olduser@example.com>"), gone);
        assert_eq!(check("<OLDUSER@example.COM>"), gone);
        assert_eq!(check("<newuser@example.com>"), Outcome::Declined);
        assert_eq!(
            check("<x@Retired.Example>"),
            Outcome::Deny(Some("That domain is gone".into()))
        );
        assert_eq!(check("<x@sub.retired.example>"), Outcome::Declined);
        assert_eq!(
            check("<\"a%b\"@example.com>"),
            Outcome::Deny(Some("No source routes".into()))
        );
        // Patterns are case-insensitive.
        assert!(matches!(check("<x@host.invalid>"), Outcome::Deny(_)));
        assert_eq!(check("<postmaster>"), Outcome::Declined);
    }

    #[test]
    fn immune_skip() {
        let p = with_list(LIST);
        let r = rcpt("<olduser@example.com>");
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        t.notes.set(WhitelistSender("a@b".into()));
        assert_eq!(run(p.rcpt(&mut c, &mut t, &r)), Outcome::Declined);
        let mut t = Transaction::default();
        c.conn.relay_client = true;
        assert_eq!(run(p.rcpt(&mut c, &mut t, &r)), Outcome::Declined);
    }

    #[test]
    fn reject_forms() {
        let files = &[("badrcptto", "@retired.example\n")];
        let forms = testing::reject_forms(new, "badrcptto", files, |p, c| {
            let r = rcpt("<a@retired.example>");
            run(p.rcpt(c, &mut Transaction::default(), &r))
        });
        assert!(matches!(forms.temp, Outcome::DenySoft(_)));
        assert_eq!(forms.log_only, Outcome::Declined);
        assert_eq!(forms.naughty, Outcome::Declined);
        assert!(forms.naughty_msg.unwrap().contains("@retired.example"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [("a@b\nplain\n", 2), ("^[unclosed\n", 1), ("@\n", 1)];
        assert_bad_lines(new, "badrcptto", "badrcptto", &cases);
        assert!(build(new, "badrcptto x", &[]).is_err());
    }
}
