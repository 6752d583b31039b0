//! # naughty — refuse marked connections at one chosen step
//!
//! ## Synopsis
//!
//! ```text
//! naughty [reject connect|mail|rcpt|data|data_post] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! ## Description
//!
//! Plugins run with `reject naughty` do not refuse a client themselves: they mark the
//! connection (conn note `Naughty`, with their reply text) and let it go on. This plugin turns
//! the mark into a refusal at the one step named by its `reject` argument, with the marking
//! plugin's text. So one line decides when every such check bites: `naughty reject rcpt`
//! lets clients authenticate first (AUTH clears the mark) and refuses before any data is sent;
//! `naughty reject data_post` receives the whole message (for training spam filters) and then
//! refuses it. Unmarked connections pass untouched.
//!
//! A plugin before this one at the same step may end that step's chain (`rcpt_ok` answering
//! `OK` at `rcpt`, say), so this one never runs there: list `naughty` before `rcpt_ok`, or
//! choose a later step. As a safety net, unless the step chosen is `data_post`, this plugin
//! also checks at `data_post`, so a marked client never gets a message queued.
//!
//! ## Arguments
//!
//! Here `reject` names the step, not `0|1|naughty` as for other plugins.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject connect\|mail\|rcpt\|data\|data_post` | `rcpt` | where marked connections are refused |
//! | `reject_type` | `disconnect` | `disconnect`: 5xx and close; `temp_disconnect`: 4xx and close; `perm`: 5xx; `temp`: 4xx (at `connect` every refusal closes) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! Differences from qpsmtpd: an unknown step is an error at start (qpsmtpd logged it and used
//! `data_post`). qpsmtpd appended the texts of several marking plugins and used the first
//! one's `reject_type`; here the mark holds one text (the last plugin's: `Common::reject`
//! replaces it) and this plugin's `reject_type` decides.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! The chosen one, and `data_post`.
//!
//! ## Notes
//!
//! Reads conn note `Naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.3 and §3.8 (replies; a server may close after a 5xx/4xx only as described
//! there: this plugin's `disconnect` forms send their reply first).
//!
//! ## Security
//!
//! Deferring a refusal means accepting more of the conversation from a client already judged
//! bad; the cost is bounded by the step chosen. `connect` costs least.

use std::borrow::Cow;

use ringsmtpd_plugin_api::shared::Naughty;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, RejectType, Step,
};

use crate::helpers::limits::same_at;

/// The `naughty` plugin.
pub struct NaughtyPlugin {
    common: Common,
    hook: Hook,
}

/// Builds `naughty` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<NaughtyPlugin, ConfigError> {
    // `reject` is this plugin's own argument: take it out before the common ones are parsed.
    let (reject, others) = init.take_arg("reject")?;
    let hook = match reject.map(str::to_ascii_lowercase).as_deref() {
        None | Some("rcpt") => Hook::Rcpt,
        Some("connect") => Hook::Connect,
        Some("mail") => Hook::Mail,
        Some("data") => Hook::Data,
        Some("data_post") => Hook::DataPost,
        Some(_) => {
            return Err(init.error(format!(
                "reject must be connect, mail, rcpt, data or data_post, not '{}'",
                reject.unwrap_or_default()
            )))
        }
    };
    let defaults = CommonArgs {
        reject_type: RejectType::Disconnect,
        ..CommonArgs::DEFAULT
    };
    let common = PluginInit {
        args: &others,
        ..*init
    }
    .common_only(defaults)?;
    Ok(NaughtyPlugin { common, hook })
}

impl NaughtyPlugin {
    fn check(&self, cx: &Cx, _hook: Hook) -> Step<'static> {
        let Some(mark) = cx.conn.notes.get::<Naughty>() else {
            self.common.log(cx, Level::Debug, format_args!("pass"));
            return Step::DECLINED;
        };
        self.common.log(
            cx,
            Level::Info,
            format_args!("refusing, marked by {}: {}", mark.plugin, mark.msg),
        );
        Step::Ready(self.common.args.deny(Some(Cow::Owned(mark.msg.clone()))))
    }
}

impl Plugin for NaughtyPlugin {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[self.hook, Hook::DataPost])
    }

    same_at!(check: connect, mail, rcpt, data, data_post);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, run};
    use ringsmtpd_plugin_api::{Outcome, Transaction};

    fn build_with(args: &[&str]) -> Result<NaughtyPlugin, ConfigError> {
        testing::build(build, &format!("naughty {}", args.join(" ")), &[])
    }

    fn marked() -> Cx {
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.notes.set(Naughty {
            plugin: "dnsbl".into(),
            msg: "5.7.1 Listed at zen.example".into(),
        });
        c
    }

    fn listed() -> Option<Cow<'static, str>> {
        Some("5.7.1 Listed at zen.example".into())
    }

    #[test]
    fn default_rcpt_disconnect() {
        let p = build_with(&[]).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Rcpt, Hook::DataPost]));
        let mut c = marked();
        let mut t = Transaction::default();
        let r = testing::rcpt("<a@b.example>");
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &r)),
            Outcome::DenyDisconnect(listed())
        );
        assert_eq!(
            run(p.data_post(&mut c, &mut t)),
            Outcome::DenyDisconnect(listed())
        );
        let (mut clean, _) = cx("192.0.2.2:1");
        assert_eq!(run(p.rcpt(&mut clean, &mut t, &r)), Outcome::Declined);
        assert_eq!(run(p.data_post(&mut clean, &mut t)), Outcome::Declined);
    }

    #[test]
    fn chosen_hook() {
        for (name, hook) in [
            ("connect", Hook::Connect),
            ("MAIL", Hook::Mail),
            ("data", Hook::Data),
            ("rcpt", Hook::Rcpt),
        ] {
            let p = build_with(&["reject", name]).unwrap();
            assert_eq!(p.hooks(), HookSet::of(&[hook, Hook::DataPost]), "{name}");
        }
        let p = build_with(&["reject", "data_post"]).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::DataPost]));
        let p = build_with(&["reject", "connect"]).unwrap();
        assert_eq!(
            run(p.connect(&mut marked())),
            Outcome::DenyDisconnect(listed())
        );
        let p = build_with(&["reject", "mail"]).unwrap();
        assert_eq!(
            run(p.mail(&mut marked(), &mut Transaction::default())),
            Outcome::DenyDisconnect(listed())
        );
        let p = build_with(&["reject", "data"]).unwrap();
        assert_eq!(
            run(p.data(&mut marked(), &mut Transaction::default())),
            Outcome::DenyDisconnect(listed())
        );
    }

    #[test]
    fn reject_type() {
        let mut t = Transaction::default();
        for (rt, want) in [
            ("perm", Outcome::Deny(listed())),
            ("temp", Outcome::DenySoft(listed())),
            ("temp_disconnect", Outcome::DenySoftDisconnect(listed())),
            ("disconnect", Outcome::DenyDisconnect(listed())),
        ] {
            let p = build_with(&["reject", "data", "reject_type", rt]).unwrap();
            assert_eq!(run(p.data(&mut marked(), &mut t)), want, "{rt}");
        }
    }

    #[test]
    fn bad_arguments() {
        for bad in [
            &["reject"][..],
            &["reject", "helo"],
            &["reject", "1"],
            &["reject_type", "x"],
            &["other"],
        ] {
            assert!(build_with(bad).is_err(), "{bad:?}");
        }
        assert!(build_with(&["loglevel", "7", "reject", "mail"]).is_ok());
    }
}
