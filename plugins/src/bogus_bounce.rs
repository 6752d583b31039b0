//! # bogus_bounce — refuse bounces that cannot be real
//!
//! ## Synopsis
//!
//! ```text
//! bogus_bounce [log|deny|denysoft] [reject 0|1|naughty] [reject_type perm|temp|...] [loglevel N]
//! bogus_bounce deny
//! ```
//!
//! ## Description
//!
//! A bounce (a delivery status notification, RFC 3464) has the null reverse path `MAIL
//! FROM:<>` and goes to exactly one recipient: the sender of the message that failed. A
//! message from `<>` to several recipients is backscatter or spam dressed as a bounce. At
//! `data_post`, for a message with the null sender, this plugin fails it if
//!
//! 1. it does not have exactly one recipient: `this bounce message does not have 1
//!    recipient`;
//! 2. or its header has a `Return-Path` whose value is not `<>` (qpsmtpd's check since 2013:
//!    a bounce's return path is empty): `a bounce return path must be empty (RFC 3834)`.
//!
//! A failure is refused with `552 5.7.1 <reason>` (`deny`), `452 4.7.1 <reason>`
//! (`denysoft`), or only logged (`log`, the default, as in qpsmtpd). Messages with a
//! sender are not looked at.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `log\|deny\|denysoft` | `log` | the action (qpsmtpd's single argument, also written `action X`): `log` is `reject 0`, `deny` is `reject 1` + `reject_type perm`, `denysoft` is `reject 1` + `reject_type temp` |
//! | `reject 0\|1\|naughty` | from the action | given explicitly, overrides the action |
//! | `reject_type` | from the action | given explicitly, overrides the action |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! Difference from qpsmtpd: there, `deny` and `denysoft` only set the reply type while
//! `reject` stayed at its legacy default 0, so `bogus_bounce deny` only logged. Here `deny`
//! refuses, as its documentation says.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.5.5 (notifications are sent with a null reverse path, to the originator),
//! §4.4 (Return-Path is added at final delivery); RFC 3464 (DSN); RFC 3834 §3.3 (responses
//! use a null return path); RFC 3463 (X.7.1).
//!
//! ## Security
//!
//! Only the envelope and one header field are read; the header walk does not allocate.

use ringsmtpd_plugin_api::headers;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Reject,
    RejectType, Step, Transaction,
};

/// The `bogus_bounce` plugin.
pub struct BogusBounce {
    common: Common,
}

/// Builds `bogus_bounce` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    // First find the action, which sets the defaults; then read the common arguments again,
    // so that an explicit `reject`/`reject_type` wins over the action.
    let (_, rest) = init.common(CommonArgs::DEFAULT)?;
    let action = match rest.as_slice() {
        [] => "log",
        [action] | ["action", action] => action,
        [_, extra, ..] => return Err(init.unknown(extra)),
    };
    let defaults = match action.to_ascii_lowercase().as_str() {
        "log" => CommonArgs {
            reject: Reject::No,
            ..CommonArgs::DEFAULT
        },
        "deny" => CommonArgs::DEFAULT,
        "denysoft" => CommonArgs {
            reject_type: RejectType::Temp,
            ..CommonArgs::DEFAULT
        },
        other => {
            return Err(init.error(format!(
                "the action must be log, deny or denysoft, not '{other}'"
            )))
        }
    };
    let (common, _) = init.common(defaults)?;
    Ok(Box::new(BogusBounce { common }))
}

impl Plugin for BogusBounce {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let common = &self.common;
        if !txn.sender.is_null() {
            common.log(cx, Level::Debug, format_args!("pass, not a null sender"));
            return Step::DECLINED;
        }
        let n = txn.recipients.len();
        if n != 1 {
            let msg = "5.7.1 this bounce message does not have 1 recipient";
            return common.fail(cx, format_args!("bogus bounce to {n} recipients"), msg);
        }
        if let Some(rp) = headers::first(txn.body.header_bytes(), "Return-Path") {
            if rp.value() != "<>" {
                let msg = "5.7.1 a bounce return path must be empty (RFC 3834)";
                let what = format_args!("bounce with Return-Path {}", rp.value());
                return common.fail(cx, what, msg);
            }
        }
        common.log(
            cx,
            Level::Info,
            format_args!("pass, single recipient, empty Return-Path"),
        );
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{
        self, assert_bad_args, cx, rcpt, run, set_message, txn_from,
    };
    use ringsmtpd_plugin_api::Outcome;

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("bogus_bounce {}", args.join(" ")), &[])
    }

    fn txn(sender: &str, rcpts: &[&str], message: &str) -> Transaction {
        let mut t = txn_from(sender);
        t.recipients.extend(rcpts.iter().map(|r| rcpt(r)));
        set_message(&mut t, message);
        t
    }
    fn check(p: &dyn Plugin, t: &mut Transaction) -> (Outcome, bool) {
        let (mut c, _) = cx("192.0.2.1:1");
        let o = run(p.data_post(&mut c, t));
        (o, c.conn.notes.contains::<Naughty>())
    }

    const MSG: &str = "Subject: x\r\n\r\nbody\r\n";

    #[test]
    fn deny_refuses_null_sender_to_several() {
        let p = build(&["deny"]).unwrap();
        let mut t = txn("<>", &["<a@x.test>", "<b@x.test>"], MSG);
        assert_eq!(
            check(&*p, &mut t).0,
            Outcome::deny("5.7.1 this bounce message does not have 1 recipient")
        );
        let mut t = txn("<>", &["<a@x.test>"], MSG);
        assert_eq!(check(&*p, &mut t).0, Outcome::Declined);
        // A sender: not a bounce, never looked at.
        let mut t = txn("<s@y.test>", &["<a@x.test>", "<b@x.test>"], MSG);
        assert_eq!(check(&*p, &mut t).0, Outcome::Declined);
    }

    #[test]
    fn return_path_must_be_empty() {
        let p = build(&["deny"]).unwrap();
        let msg = "Return-Path: <s@y.test>\r\nSubject: x\r\n\r\n";
        let mut t = txn("<>", &["<a@x.test>"], msg);
        assert_eq!(
            check(&*p, &mut t).0,
            Outcome::deny("5.7.1 a bounce return path must be empty (RFC 3834)")
        );
        let mut t = txn("<>", &["<a@x.test>"], "return-path:  <>\r\n\r\n");
        assert_eq!(check(&*p, &mut t).0, Outcome::Declined);
        // In the body, not the header: not a Return-Path.
        let mut t = txn(
            "<>",
            &["<a@x.test>"],
            "Subject: x\r\n\r\nReturn-Path: <s@y>\r\n",
        );
        assert_eq!(check(&*p, &mut t).0, Outcome::Declined);
    }

    #[test]
    fn actions_and_overrides() {
        let mut t = txn("<>", &["<a@x.test>", "<b@x.test>"], MSG);
        let p = build(&[]).unwrap();
        assert_eq!(
            check(&*p, &mut t),
            (Outcome::Declined, false),
            "log is the default"
        );
        let p = build(&["log"]).unwrap();
        assert_eq!(check(&*p, &mut t).0, Outcome::Declined);
        let p = build(&["denysoft"]).unwrap();
        assert!(matches!(check(&*p, &mut t).0, Outcome::DenySoft(_)));
        let p = build(&["action", "DenySoft"]).unwrap();
        assert!(matches!(check(&*p, &mut t).0, Outcome::DenySoft(_)));
        let p = build(&["deny", "reject_type", "disconnect"]).unwrap();
        assert!(matches!(check(&*p, &mut t).0, Outcome::DenyDisconnect(_)));
        let p = build(&["reject", "0", "deny"]).unwrap();
        assert_eq!(
            check(&*p, &mut t).0,
            Outcome::Declined,
            "explicit reject wins"
        );
        let p = build(&["reject", "naughty"]).unwrap();
        assert_eq!(check(&*p, &mut t), (Outcome::Declined, true));
    }

    #[test]
    fn bad_arguments() {
        assert_bad_args(
            new,
            "bogus_bounce",
            &[
                &["refuse"][..],
                &["deny", "log"],
                &["action"],
                &["reject", "2"],
            ],
        );
    }
}
