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

use std::borrow::Cow;

use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{first_word, log, lower_parts, AddrPattern};

/// Txn note: the lines whose sender matched this transaction's sender (indexes into `pairs`).
struct Refused(Vec<usize>);

/// The `badmailfromto` plugin.
pub struct Badmailfromto {
    name: String,
    common: CommonArgs,
    /// (sender pattern, recipient lowercased).
    pairs: Vec<(AddrPattern, String)>,
}

/// Builds `badmailfromto` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<Badmailfromto, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("unknown argument '{extra}'")));
    }
    let mut pairs = Vec::new();
    for line in init.config.lines("badmailfromto")?.unwrap_or_default() {
        let (from, rest) = first_word(&line.text);
        let to = rest.map(|r| first_word(r).0);
        let Some(to) = to else {
            return Err(line.error(format!("'{}': expected SENDER RECIPIENT", line.text)));
        };
        let from =
            AddrPattern::parse(from, false).map_err(|e| line.error(format!("sender: {e}")))?;
        match AddrPattern::parse(to, false) {
            Ok(AddrPattern::Exact(to)) => pairs.push((from, to)),
            _ => return Err(line.error(format!("recipient '{to}' is not user@host"))),
        }
    }
    Ok(Badmailfromto {
        name: init.name.to_string(),
        common,
        pairs,
    })
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
            log(
                cx,
                &self.common,
                &self.name,
                Level::Debug,
                format_args!("sender {from} is listed"),
            );
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
            log(
                cx,
                &self.common,
                &self.name,
                Level::Info,
                format_args!("fail, {} -> {to} is listed", txn.sender),
            );
            let text = format!("5.1.1 mail to {to} not accepted here");
            return Step::Ready(self.common.reject(cx, &self.name, Cow::Owned(text)));
        }
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::address::parse_path;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};
    use ringsmtpd_plugin_api::Outcome;

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<Badmailfromto, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::new(files);
        let line = origin(&format!("badmailfromto {}", args.join(" ")));
        build(&PluginInit {
            name: "badmailfromto",
            args: &args,
            config: &config,
            origin: &line,
        })
    }

    const PAIRS: &str = "Stalker@Example.com   Victim@Example.org   harassment case 12\n\
                         @stalker.example      victim@example.org\n\
                         @example.com          boss@example.org\n\
                         a+b@x.example         c@example.org\n";

    /// MAIL from `from`, then RCPT to each of `tos`: the outcomes.
    fn session(p: &Badmailfromto, from: &str, tos: &[&str]) -> Vec<Outcome> {
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        t.sender = parse_path(from, true, false).unwrap();
        assert_eq!(
            run(p.mail(&mut c, &mut t)),
            Outcome::Declined,
            "the sender is always accepted"
        );
        tos.iter()
            .map(|to| {
                let r = Recipient {
                    addr: parse_path(to, false, false).unwrap(),
                    params: Default::default(),
                };
                run(p.rcpt(&mut c, &mut t, &r))
            })
            .collect()
    }

    fn refused(to: &str) -> Outcome {
        Outcome::Deny(Some(format!("5.1.1 mail to {to} not accepted here").into()))
    }

    #[test]
    fn pairs() {
        let p = build_with(&[], &[("badmailfromto", PAIRS)]).unwrap();
        assert_eq!(
            session(
                &p,
                "<stalker@example.com>",
                &["<VICTIM@example.org>", "<other@example.org>"]
            ),
            vec![refused("victim@example.org"), Outcome::Declined]
        );
        // stalker@example.com matches both its own line and @example.com: both pairs count.
        assert_eq!(
            session(&p, "<stalker@example.com>", &["<boss@example.org>"]),
            vec![refused("boss@example.org")]
        );
        assert_eq!(
            session(&p, "<x@stalker.example>", &["<victim@example.org>"]),
            vec![refused("victim@example.org")]
        );
        assert_eq!(
            session(&p, "<x@other.example>", &["<victim@example.org>"]),
            vec![Outcome::Declined]
        );
        // Literal '+'.
        assert_eq!(
            session(&p, "<a+b@x.example>", &["<c@example.org>"]),
            vec![refused("c@example.org")]
        );
        assert_eq!(
            session(&p, "<aab@x.example>", &["<c@example.org>"]),
            vec![Outcome::Declined]
        );
        assert_eq!(
            session(&p, "<>", &["<victim@example.org>"]),
            vec![Outcome::Declined]
        );
    }

    #[test]
    fn reject_forms() {
        let files = &[("badmailfromto", PAIRS)];
        let p = build_with(&["reject_type", "temp"], files).unwrap();
        assert!(matches!(
            session(&p, "<x@stalker.example>", &["<victim@example.org>"])[0],
            Outcome::DenySoft(_)
        ));
        let p = build_with(&["reject", "0"], files).unwrap();
        assert_eq!(
            session(&p, "<x@stalker.example>", &["<victim@example.org>"]),
            vec![Outcome::Declined]
        );
        let p = build_with(&["reject", "naughty"], files).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        t.sender = parse_path("<x@stalker.example>", true, false).unwrap();
        run(p.mail(&mut c, &mut t));
        let r = Recipient {
            addr: parse_path("<victim@example.org>", false, false).unwrap(),
            params: Default::default(),
        };
        assert_eq!(run(p.rcpt(&mut c, &mut t, &r)), Outcome::Declined);
        assert!(c.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [
            ("a@b.example c@d.example\nlonely@b.example\n", 2),
            ("nohost c@d.example\n", 1),
            ("a@b.example @d.example\n", 1),
            ("a@b.example d.example\n", 1),
        ] {
            let e = build_with(&[], &[("badmailfromto", text)]).err().unwrap();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("badmailfromto", line),
                "{text:?}: {e}"
            );
        }
        assert!(build_with(&["x"], &[]).is_err());
    }
}
