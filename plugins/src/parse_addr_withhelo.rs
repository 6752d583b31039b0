//! # parse_addr_withhelo — RFC 821 parsing of MAIL and RCPT after HELO
//!
//! ## Synopsis
//!
//! ```text
//! parse_addr_withhelo [loglevel N]
//! ```
//!
//! ## Description
//!
//! qpsmtpd parsed `MAIL FROM:` and `RCPT TO:` the ESMTP way (RFC 1869: a path, then
//! `KEY=VALUE` parameters) whatever the greeting was; this plugin replaced that parser with
//! RFC 821's for clients that said `HELO`. After `EHLO` it does nothing.
//!
//! What it does after `HELO`, in `mail_pre`/`rcpt_pre` (before the core parses the path):
//!
//! | the client sends | answer |
//! |---|---|
//! | parameters after the path (`MAIL FROM:<a@b> SIZE=10`) | `501 5.5.4 No parameters allowed in MAIL` (RCPT likewise). **The core already refuses these** with `555 5.5.4 ESMTP parameters need EHLO` before any plugin runs (RFC 5321 §4.1.1.11 names 555 for this), so that is the reply a client sees; the plugin's check only stands behind the core's |
//! | a path in angle brackets | nothing: the core's RFC 5321 parser checks it, as for every client |
//! | a path without angle brackets containing `@` (`MAIL FROM:a@b.example`) | accepted as `<a@b.example>`, as qpsmtpd's RFC 821 parser did |
//! | `RCPT TO:postmaster` (any case) | accepted as `<postmaster>` |
//! | anything else without brackets | `501 5.5.2 Could not parse your MAIL FROM command` (or `RCPT TO`) |
//!
//! So beyond the core this plugin adds qpsmtpd's tolerance of a missing `<>` for HELO clients
//! (`dont_require_anglebrackets` does that for every client) and qpsmtpd's wording for a path
//! it cannot read. It does not make the path syntax stricter than the core's, which already
//! follows RFC 5321 §4.1.2 (RFC 821's grammar plus quoted local parts and address literals,
//! the same rules). qpsmtpd's `MAIL FROM:` with nothing after it (read as `<>`) cannot be
//! accepted here: the core refuses an empty path as a syntax error before the plugin runs.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `mail_pre`, `rcpt_pre` (qpsmtpd: `mail_parse`, `rcpt_parse`).
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 821 §4.1.1 and §4.1.2 (MAIL and RCPT without parameters); RFC 1869 and RFC 5321
//! §4.1.1.11 (parameters need EHLO; 555); RFC 3463 X.5.2, X.5.4.
//!
//! ## Security
//!
//! Only brackets are added; the address is checked by the core like any other.

use std::borrow::Cow;

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, HelloKind, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Step,
};

/// The `parse_addr_withhelo` plugin.
pub struct ParseAddrWithHelo {
    common: Common,
}

/// Builds `parse_addr_withhelo` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    Ok(Box::new(ParseAddrWithHelo { common }))
}

impl ParseAddrWithHelo {
    fn check(&self, cx: &Cx, rcpt: bool, path: &str, params: &str) -> Outcome {
        if !matches!(&cx.conn.hello, Some(h) if h.kind == HelloKind::Helo) {
            return Outcome::Declined;
        }
        let verb = if rcpt { "RCPT" } else { "MAIL" };
        if !params.is_empty() {
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail, {verb} parameters after HELO"),
            );
            return Outcome::Deny(Some(Cow::Borrowed(if rcpt {
                "5.5.4 No parameters allowed in RCPT"
            } else {
                "5.5.4 No parameters allowed in MAIL"
            })));
        }
        if path.starts_with('<') {
            return Outcome::Declined;
        }
        if path.contains('@') || (rcpt && path.eq_ignore_ascii_case("postmaster")) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("{verb} path without <>, accepted after HELO"),
            );
            return Outcome::Ok(Some(Cow::Owned(format!("<{path}>"))));
        }
        self.common.log(
            cx,
            Level::Info,
            format_args!("fail, cannot parse {verb} path {path:?}"),
        );
        Outcome::Deny(Some(Cow::Borrowed(if rcpt {
            "5.5.2 Could not parse your RCPT TO command"
        } else {
            "5.5.2 Could not parse your MAIL FROM command"
        })))
    }
}

impl Plugin for ParseAddrWithHelo {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::MailPre, Hook::RcptPre])
    }

    fn mail_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, params: &'a str) -> Step<'a> {
        Step::Ready(self.check(cx, false, path, params))
    }

    fn rcpt_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, params: &'a str) -> Step<'a> {
        Step::Ready(self.check(cx, true, path, params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, run};
    use ringsmtpd_plugin_api::Hello;

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        let line = format!("parse_addr_withhelo {}", args.join(" "));
        testing::build(new, &line, &[])
    }

    fn said(kind: Option<HelloKind>) -> Cx {
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.hello = kind.map(|kind| Hello {
            kind,
            host: "client.example".into(),
        });
        c
    }

    #[test]
    fn after_helo() {
        let p = build(&[]).unwrap();
        let mut c = said(Some(HelloKind::Helo));
        assert_eq!(
            run(p.mail_pre(&mut c, "<a@b.example>", "SIZE=10")),
            Outcome::deny("5.5.4 No parameters allowed in MAIL")
        );
        assert_eq!(
            run(p.rcpt_pre(&mut c, "<a@b.example>", "NOTIFY=NEVER")),
            Outcome::deny("5.5.4 No parameters allowed in RCPT")
        );
        assert_eq!(
            run(p.mail_pre(&mut c, "<a@b.example>", "")),
            Outcome::Declined
        );
        assert_eq!(run(p.mail_pre(&mut c, "<>", "")), Outcome::Declined);
        assert_eq!(
            run(p.mail_pre(&mut c, "a@b.example", "")),
            Outcome::Ok(Some("<a@b.example>".into()))
        );
        assert_eq!(
            run(p.rcpt_pre(&mut c, "c@d.example", "")),
            Outcome::Ok(Some("<c@d.example>".into()))
        );
        assert_eq!(
            run(p.rcpt_pre(&mut c, "PostMaster", "")),
            Outcome::Ok(Some("<PostMaster>".into()))
        );
        assert_eq!(
            run(p.mail_pre(&mut c, "postmaster", "")),
            Outcome::deny("5.5.2 Could not parse your MAIL FROM command")
        );
        assert_eq!(
            run(p.rcpt_pre(&mut c, "nobody", "")),
            Outcome::deny("5.5.2 Could not parse your RCPT TO command")
        );
    }

    #[test]
    fn nothing_after_ehlo_or_before_any_greeting() {
        let p = build(&[]).unwrap();
        for kind in [Some(HelloKind::Ehlo), None] {
            let mut c = said(kind);
            assert_eq!(
                run(p.mail_pre(&mut c, "<a@b.example>", "SIZE=10")),
                Outcome::Declined
            );
            assert_eq!(
                run(p.mail_pre(&mut c, "a@b.example", "")),
                Outcome::Declined
            );
            assert_eq!(run(p.rcpt_pre(&mut c, "nobody", "")), Outcome::Declined);
        }
    }

    #[test]
    fn arguments() {
        assert!(build(&["loglevel", "3"]).is_ok());
        assert!(build(&["strict", "1"]).is_err());
    }
}
