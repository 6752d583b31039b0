//! # loop — refuse messages that have travelled too many hops (a mail loop)
//!
//! ## Synopsis
//!
//! ```text
//! loop [MAX] [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! loop 100
//! ```
//!
//! Debian's name `check_loop` loads the same plugin.
//!
//! ## Description
//!
//! qmail-smtpd's loop check, as qpsmtpd's `loop` copies it: at `data_post`, counts the
//! `Received` and `Delivered-To` fields in the header of the message as the client sent it
//! (each server that relays a message adds a Received; each local delivery a Delivered-To).
//! When the count reaches MAX the message is looping, and is refused with
//!
//! ```text
//! 554 5.4.6 Too many hops, this message is looping
//! ```
//!
//! qmail-smtpd's reply and code (qpsmtpd answers 552, its generic `data_post` code). The
//! comparison is qmail's and qpsmtpd's: refused when the count is **at least** MAX. The
//! Received field this server adds is not counted (qmail-smtpd did not count its own either;
//! qpsmtpd did, so it refused one hop earlier).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `MAX` | `100` | hops allowed; a message with MAX or more is refused. A positive integer |
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection |
//! | `reject_type` | `perm` | `perm`: 554 5.4.6; `disconnect`: the same, then close; `temp`: 452 4.4.6 (the sender retries: rarely what you want for a loop); `temp_disconnect` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`. The permanent refusal is a `DONE` with its own 554 reply (the `data_post`
//! reply table has 552 for a deny); the message is not queued.
//!
//! ## Notes
//!
//! Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §6.3 (loop detection by counting Received fields; "a large limit, e.g. 100"),
//! RFC 3463 §3.5 (X.4.6, routing loop detected); qmail-smtpd's `MAXHOPS` (100) and reply.
//!
//! ## Security
//!
//! A loop between two misconfigured servers multiplies mail until something stops it; this
//! is that something. The count reads the in-memory header section only, without allocating,
//! and stops at MAX.

use std::borrow::Cow;

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::headers;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reject,
    RejectType, Reply, Step, Transaction,
};

const DEFAULT_MAX: u32 = 100;
const TEXT: &str = "Too many hops, this message is looping";

/// The `loop` plugin.
pub struct Loop {
    common: Common,
    max: u32,
}

/// Builds `loop` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let max = args::positive(init, &rest, "MAX", DEFAULT_MAX)?;
    Ok(Box::new(Loop { common, max }))
}

/// Received + Delivered-To fields in `header`, counting no further than `max`.
fn hops(header: &[u8], max: u32) -> u32 {
    let mut n = 0;
    for field in headers::fields(header).flatten() {
        if field.is("Received") || field.is("Delivered-To") {
            n += 1;
            if n >= max {
                break;
            }
        }
    }
    n
}

impl Plugin for Loop {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let n = hops(txn.body.header_bytes(), self.max);
        if n < self.max {
            return Step::DECLINED;
        }
        self.common
            .log(cx, Level::Info, format_args!("fail, {n} or more hops"));
        let permanent = match self.common.args.reject_type {
            RejectType::Perm => Some(false),
            RejectType::Disconnect => Some(true),
            RejectType::Temp | RejectType::TempDisconnect => None,
        };
        match (self.common.args.reject, permanent) {
            (Reject::Yes, Some(disconnect)) => Step::Ready(Outcome::Done(Some(Reply {
                code: 554,
                enhanced: Some(Cow::Borrowed("5.4.6")),
                lines: vec![Cow::Borrowed(TEXT)],
                disconnect,
            }))),
            _ => Step::Ready(
                self.common
                    .reject(cx, "4.4.6 Too many hops, this message is looping"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run, set_message};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("loop {}", args.join(" ")), &[])
    }

    /// A message with `received` Received and `delivered` Delivered-To fields.
    fn message(received: usize, delivered: usize) -> Transaction {
        let mut m = String::new();
        for i in 0..received {
            m.push_str(&format!("Received: from h{i}\r\n\tby h{};\r\n", i + 1));
        }
        for i in 0..delivered {
            m.push_str(&format!("delivered-to: u{i}@x.test\r\n"));
        }
        m.push_str("Subject: x\r\n\r\nReceived: in the body\r\n");
        let mut t = Transaction::default();
        set_message(&mut t, &m);
        t
    }

    fn check(p: &dyn Plugin, mut t: Transaction) -> (Outcome, bool) {
        let (mut c, _) = cx("192.0.2.1:1");
        let o = run(p.data_post(&mut c, &mut t));
        (o, c.conn.notes.contains::<Naughty>())
    }

    fn refused(disconnect: bool) -> Outcome {
        Outcome::Done(Some(Reply {
            code: 554,
            enhanced: Some("5.4.6".into()),
            lines: vec![TEXT.into()],
            disconnect,
        }))
    }

    #[test]
    fn at_max_hops_is_a_loop() {
        let p = build(&[]).unwrap();
        assert_eq!(check(&*p, message(99, 0)).0, Outcome::Declined);
        assert_eq!(check(&*p, message(100, 0)).0, refused(false));
        assert_eq!(check(&*p, message(60, 40)).0, refused(false));
        assert_eq!(check(&*p, message(60, 39)).0, Outcome::Declined);
        assert_eq!(check(&*p, message(300, 3)).0, refused(false));
    }

    #[test]
    fn max_argument() {
        let p = build(&["3"]).unwrap();
        assert_eq!(check(&*p, message(2, 0)).0, Outcome::Declined);
        assert_eq!(check(&*p, message(2, 1)).0, refused(false));
        let p = build(&["1"]).unwrap();
        assert_eq!(check(&*p, message(0, 0)).0, Outcome::Declined);
        assert_eq!(check(&*p, message(0, 1)).0, refused(false));
    }

    #[test]
    fn reject_forms() {
        let t = || message(5, 0);
        let p = build(&["5", "reject_type", "disconnect"]).unwrap();
        assert_eq!(check(&*p, t()).0, refused(true));
        let p = build(&["5", "reject_type", "temp"]).unwrap();
        assert_eq!(
            check(&*p, t()).0,
            Outcome::deny_soft("4.4.6 Too many hops, this message is looping")
        );
        let p = build(&["5", "reject_type", "temp_disconnect"]).unwrap();
        assert!(matches!(check(&*p, t()).0, Outcome::DenySoftDisconnect(_)));
        let p = build(&["5", "reject", "0"]).unwrap();
        assert_eq!(check(&*p, t()), (Outcome::Declined, false));
        let p = build(&["reject", "naughty", "5"]).unwrap();
        assert_eq!(check(&*p, t()), (Outcome::Declined, true));
    }

    #[test]
    fn counting_stops_at_max_and_ignores_the_body() {
        let t = message(10, 0);
        assert_eq!(hops(t.body.header_bytes(), 4), 4);
        assert_eq!(hops(t.body.header_bytes(), 1000), 10);
        assert_eq!(hops(b"Received: a\r\n\r\nReceived: b\r\n", 100), 1);
    }

    #[test]
    fn bad_arguments() {
        let bad = [&["0"][..], &["x"], &["-3"], &["100", "5"]];
        assert_bad_args(new, "loop", &bad);
    }
}
