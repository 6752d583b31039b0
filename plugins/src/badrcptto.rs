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

use std::borrow::Cow;

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{first_word, log, lower_parts, AddrPattern};

/// The `badrcptto` plugin.
pub struct Badrcptto {
    name: String,
    common: CommonArgs,
    /// (pattern, the entry as written lowercased, reason).
    entries: Vec<(AddrPattern, String, Option<String>)>,
}

/// Builds `badrcptto` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<Badrcptto, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("unknown argument '{extra}'")));
    }
    let mut entries = Vec::new();
    for line in init.config.lines("badrcptto")?.unwrap_or_default() {
        let (bad, reason) = first_word(&line.text);
        let pattern = AddrPattern::parse(bad, true).map_err(|e| line.error(e))?;
        entries.push((pattern, bad.to_lowercase(), reason.map(str::to_string)));
    }
    Ok(Badrcptto {
        name: init.name.to_string(),
        common,
        entries,
    })
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
        if self.entries.is_empty() || is_immune(cx, Some(txn)) {
            return Step::DECLINED;
        }
        let Some((to, host)) = lower_parts(&rcpt.addr) else {
            return Step::DECLINED;
        };
        for (pattern, entry, reason) in &self.entries {
            if pattern.matches(&to, &host) {
                log(
                    cx,
                    &self.common,
                    &self.name,
                    Level::Info,
                    format_args!("fail, {to} matches {entry}"),
                );
                let text: Cow<'static, str> = match reason {
                    Some(r) => Cow::Owned(r.clone()),
                    None => Cow::Owned(format!("5.1.1 mail to {entry} not accepted here")),
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
    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistSender};
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};
    use ringsmtpd_plugin_api::Outcome;

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<Badrcptto, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::new(files);
        let line = origin(&format!("badrcptto {}", args.join(" ")));
        build(&PluginInit {
            name: "badrcptto",
            args: &args,
            config: &config,
            origin: &line,
        })
    }

    const LIST: &str = "OldUser@Example.com\n@retired.example   That domain is gone\n[%!]   No source routes\n^.*\\.INVALID$\n";

    fn check(p: &Badrcptto, to: &str) -> Outcome {
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        let r = Recipient {
            addr: parse_path(to, false, false).unwrap(),
            params: Default::default(),
        };
        run(p.rcpt(&mut c, &mut t, &r))
    }

    #[test]
    fn entries() {
        let p = build_with(&[], &[("badrcptto", LIST)]).unwrap();
        let gone = Outcome::Deny(Some(
            "5.1.1 mail to olduser@example.com not accepted here".into(),
        ));
        assert_eq!(check(&p, "<olduser@example.com>"), gone);
        assert_eq!(check(&p, "<OLDUSER@example.COM>"), gone);
        assert_eq!(check(&p, "<newuser@example.com>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<x@Retired.Example>"),
            Outcome::Deny(Some("That domain is gone".into()))
        );
        assert_eq!(check(&p, "<x@sub.retired.example>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<\"a%b\"@example.com>"),
            Outcome::Deny(Some("No source routes".into()))
        );
        // Patterns are case-insensitive.
        assert!(matches!(check(&p, "<x@host.invalid>"), Outcome::Deny(_)));
        assert_eq!(check(&p, "<postmaster>"), Outcome::Declined);
    }

    #[test]
    fn immune_skip() {
        let p = build_with(&[], &[("badrcptto", LIST)]).unwrap();
        let r = Recipient {
            addr: parse_path("<olduser@example.com>", false, false).unwrap(),
            params: Default::default(),
        };
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
        let p = build_with(&["reject_type", "temp"], files).unwrap();
        assert!(matches!(
            check(&p, "<a@retired.example>"),
            Outcome::DenySoft(_)
        ));
        let p = build_with(&["reject", "0"], files).unwrap();
        assert_eq!(check(&p, "<a@retired.example>"), Outcome::Declined);
        let p = build_with(&["reject", "naughty"], files).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        let r = Recipient {
            addr: parse_path("<a@retired.example>", false, false).unwrap(),
            params: Default::default(),
        };
        assert_eq!(run(p.rcpt(&mut c, &mut t, &r)), Outcome::Declined);
        assert!(c
            .conn
            .notes
            .get::<Naughty>()
            .unwrap()
            .msg
            .contains("@retired.example"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [("a@b\nplain\n", 2), ("^[unclosed\n", 1), ("@\n", 1)] {
            let e = build_with(&[], &[("badrcptto", text)]).err().unwrap();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("badrcptto", line),
                "{text:?}: {e}"
            );
        }
        assert!(build_with(&["x"], &[]).is_err());
    }
}
