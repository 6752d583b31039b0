//! # dont_require_anglebrackets — accept MAIL FROM and RCPT TO without `<>`
//!
//! ## Synopsis
//!
//! ```text
//! dont_require_anglebrackets [loglevel N]
//! ```
//!
//! ## Description
//!
//! RFC 5321 §4.1.2 requires the path in `MAIL FROM:` and `RCPT TO:` to be enclosed in angle
//! brackets; some old or home-made clients send `MAIL FROM:user@example.com`. Before the core
//! parses the path (`mail_pre`/`rcpt_pre`), this plugin adds the brackets to a path that has
//! neither, and the core then checks the address as usual (so `MAIL FROM:not an address` is
//! still refused, with the core's 501). A path that already starts with `<` or ends with `>` is
//! left alone (qpsmtpd wrapped a half-bracketed path again, which the parser then refused
//! anyway) and the plugin declines, so later `mail_pre`/`rcpt_pre` plugins still run.
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
//! `mail_pre`, `rcpt_pre`.
//!
//! ## Notes
//!
//! None. (qpsmtpd lowered the client's karma by 2; there is no karma plugin here.)
//!
//! ## Standards
//!
//! RFC 5321 §4.1.2 (`Path = "<" [ A-d-l ":" ] Mailbox ">"`), which this plugin relaxes; RFC 821
//! §4.1.2 had the same rule.
//!
//! ## Security
//!
//! Only the brackets are added; the address is parsed and checked exactly as any other.

use std::borrow::Cow;

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

/// The `dont_require_anglebrackets` plugin.
pub struct DontRequireAnglebrackets {
    common: Common,
}

/// Builds `dont_require_anglebrackets` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    Ok(Box::new(DontRequireAnglebrackets { common }))
}

impl DontRequireAnglebrackets {
    fn wrap(&self, cx: &Cx, verb: &str, path: &str) -> Step<'static> {
        if path.starts_with('<') || path.ends_with('>') {
            return Step::DECLINED;
        }
        self.common.log(
            cx,
            Level::Info,
            format_args!("fail, added {verb} angle brackets"),
        );
        Step::Ready(Outcome::Ok(Some(Cow::Owned(format!("<{path}>")))))
    }
}

impl Plugin for DontRequireAnglebrackets {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::MailPre, Hook::RcptPre])
    }

    fn mail_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, _params: &'a str) -> Step<'a> {
        self.wrap(cx, "MAIL", path)
    }

    fn rcpt_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, _params: &'a str) -> Step<'a> {
        self.wrap(cx, "RCPT", path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, run};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        let line = format!("dont_require_anglebrackets {}", args.join(" "));
        testing::build(new, &line, &[])
    }

    #[test]
    fn adds_brackets_to_bare_paths() {
        let p = build(&[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(
            run(p.mail_pre(&mut c, "user@example.com", "")),
            Outcome::Ok(Some("<user@example.com>".into()))
        );
        assert_eq!(
            run(p.rcpt_pre(&mut c, "rcpt@example.org", "NOTIFY=NEVER")),
            Outcome::Ok(Some("<rcpt@example.org>".into()))
        );
        assert!(svc.logged("added MAIL angle brackets") && svc.logged("added RCPT angle brackets"));
    }

    #[test]
    fn leaves_bracketed_paths_alone() {
        let p = build(&[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        for path in ["<user@example.com>", "<>", "<a@b", "a@b>"] {
            assert_eq!(
                run(p.mail_pre(&mut c, path, "")),
                Outcome::Declined,
                "{path}"
            );
            assert_eq!(
                run(p.rcpt_pre(&mut c, path, "")),
                Outcome::Declined,
                "{path}"
            );
        }
    }

    #[test]
    fn arguments() {
        assert!(build(&["loglevel", "3"]).is_ok());
        assert!(build(&["strict"]).is_err());
    }
}
