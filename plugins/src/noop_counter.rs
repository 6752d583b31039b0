//! # noop_counter — disconnect a client after N consecutive NOOPs
//!
//! ## Synopsis
//!
//! ```text
//! noop_counter [N] [reject 0|1|naughty] [reject_type disconnect|perm] [loglevel N]
//! noop_counter 3
//! ```
//!
//! Load it **early** in `config/plugins`: a command resets the count only if this plugin's
//! hook for it runs, and a plugin before it that decides (accepts or refuses) stops the chain.
//!
//! ## Description
//!
//! Counts consecutive `NOOP` commands on a connection. The Nth one in a row is answered
//!
//! ```text
//! 500 5.5.1 Stop wasting my time, too many consecutive NOOPs
//! ```
//!
//! and the connection is closed: a client that keeps a connection open with NOOPs holds a
//! slot doing nothing.
//!
//! "Another command" resets the count. These are the commands whose hooks this plugin
//! implements (qpsmtpd's list, plus the unknown verbs):
//!
//! | command | hook |
//! |---|---|
//! | `HELO`, `EHLO` | `helo`, `ehlo` |
//! | `MAIL` | `mail_pre` (every MAIL, before its path is parsed) |
//! | `RCPT` | `rcpt_pre` (every RCPT) |
//! | `DATA`, the first `BDAT` | `data` |
//! | `RSET` | `reset_transaction`: **only inside a transaction** (after an accepted MAIL); ringsmtpd runs that hook only when there is a transaction to reset |
//! | `VRFY`, `HELP` | `vrfy`, `help` |
//! | an unknown verb (also `STARTTLS`/`AUTH` without their plugins) | `unrecognized_command` |
//!
//! Commands refused by the core before any hook (a syntax error, `MAIL` before `HELO`, a
//! second `MAIL`) do not reset it; neither do later `BDAT` chunks nor `QUIT` (which ends the
//! connection anyway).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `N` | `3` | the number of consecutive NOOPs at which the client is refused (the Nth is). A positive integer |
//! | `reject 0\|1\|naughty` | `1` | `0`: only log; `naughty`: mark the connection |
//! | `reject_type` | `disconnect` | `disconnect`: 500 and close (qpsmtpd); `perm`: 500, connection kept. The NOOP reply table has no 4xx, so `temp`/`temp_disconnect` are refused |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `noop` (counts and refuses); `helo`, `ehlo`, `mail_pre`, `rcpt_pre`, `data`, `vrfy`,
//! `help`, `unrecognized_command`, `reset_transaction` (reset the count). Every hook declines
//! except `noop` at the limit.
//!
//! ## Notes
//!
//! Writes the connection note `NoopCount`. qpsmtpd kept the count in the plugin object,
//! which in its process-per-connection models is the same thing. Writes `Naughty` with
//! `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.1.1.9 (NOOP), §3.8 (the server may close the connection), §4.5.3.2 (timeouts:
//! a NOOP resets the client's idle timer, which is what this plugin bounds).
//!
//! ## Security
//!
//! Bounds how long a client can hold a connection with NOOPs alone (the core's idle timeout
//! does not, since every NOOP is activity). No allocation: a counter per connection.

use ringsmtpd_plugin_api::{Common, ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step};

use crate::matchers::{bump, limit_args, same_at};

/// Consecutive NOOPs on this connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoopCount(pub u32);

/// The `noop_counter` plugin.
pub struct NoopCounter {
    common: Common,
    max: u32,
}

/// Builds `noop_counter` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, max) = limit_args(init, 3)?;
    Ok(Box::new(NoopCounter { common, max }))
}

impl NoopCounter {
    /// Another command: the NOOPs are no longer consecutive.
    fn reset(&self, cx: &mut Cx, _hook: Hook) -> Step<'static> {
        if let Some(c) = cx.conn.notes.get_mut::<NoopCount>() {
            c.0 = 0;
        }
        Step::DECLINED
    }
}

impl Plugin for NoopCounter {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Noop,
            Hook::Helo,
            Hook::Ehlo,
            Hook::MailPre,
            Hook::RcptPre,
            Hook::Data,
            Hook::Vrfy,
            Hook::Help,
            Hook::UnrecognizedCommand,
            Hook::ResetTransaction,
        ])
    }

    fn noop<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let count = bump(&mut cx.conn.notes.get_or_insert_with(NoopCount::default).0);
        if count < self.max {
            return Step::DECLINED;
        }
        let text = "5.5.1 Stop wasting my time, too many consecutive NOOPs";
        self.common
            .fail(cx, format_args!("{count} NOOPs in a row"), text)
    }

    same_at!(
        reset: helo,
        ehlo,
        mail_pre,
        rcpt_pre,
        data,
        vrfy,
        help,
        unrecognized_command,
        reset_transaction,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run};
    use ringsmtpd_plugin_api::{Outcome, Transaction};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("noop_counter {}", args.join(" ")), &[])
    }

    #[test]
    fn third_consecutive_noop_disconnects() {
        let p = build(&[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(run(p.noop(&mut c)), Outcome::Declined);
        assert_eq!(run(p.noop(&mut c)), Outcome::Declined);
        assert_eq!(
            run(p.noop(&mut c)),
            Outcome::DenyDisconnect(Some(
                "5.5.1 Stop wasting my time, too many consecutive NOOPs".into()
            ))
        );
    }

    #[test]
    fn every_other_command_resets() {
        let p = build(&["2"]).unwrap();
        let mut txn = Transaction::default();
        type Reset<'p> = Box<dyn Fn(&mut Cx, &mut Transaction) -> Outcome + 'p>;
        let resets: Vec<Reset<'_>> = vec![
            Box::new(|c, _| run(p.helo(c, "h"))),
            Box::new(|c, _| run(p.ehlo(c, "h"))),
            Box::new(|c, _| run(p.mail_pre(c, "<a@b>", ""))),
            Box::new(|c, _| run(p.rcpt_pre(c, "<a@b>", ""))),
            Box::new(|c, t| run(p.data(c, t))),
            Box::new(|c, _| run(p.vrfy(c, "x"))),
            Box::new(|c, _| run(p.help(c, ""))),
            Box::new(|c, _| run(p.unrecognized_command(c, "x", ""))),
            Box::new(|c, t| run(p.reset_transaction(c, t))),
        ];
        assert_eq!(resets.len() + 1, p.hooks().iter().count());
        for (i, reset) in resets.iter().enumerate() {
            let (mut c, _) = cx("192.0.2.1:1");
            assert_eq!(run(p.noop(&mut c)), Outcome::Declined);
            assert_eq!(reset(&mut c, &mut txn), Outcome::Declined, "hook {i}");
            assert_eq!(c.conn.notes.get(), Some(&NoopCount(0)), "hook {i}");
            assert_eq!(run(p.noop(&mut c)), Outcome::Declined, "hook {i}");
            assert!(matches!(run(p.noop(&mut c)), Outcome::DenyDisconnect(_)));
        }
    }

    #[test]
    fn common_args_and_n() {
        let p = build(&["1", "reject_type", "perm"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert!(matches!(run(p.noop(&mut c)), Outcome::Deny(_)));
        let p = build(&["reject", "naughty", "1"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(run(p.noop(&mut c)), Outcome::Declined);
        assert!(c.conn.notes.contains::<Naughty>());
        let p = build(&["5"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        for _ in 0..4 {
            assert_eq!(run(p.noop(&mut c)), Outcome::Declined);
        }
        assert!(matches!(run(p.noop(&mut c)), Outcome::DenyDisconnect(_)));
    }

    #[test]
    fn bad_arguments() {
        assert_bad_args(
            new,
            "noop_counter",
            &[
                &["0"][..],
                &["x"],
                &["3", "4"],
                &["reject_type", "temp"],
                &["reject_type", "temp_disconnect"],
            ],
        );
    }
}
