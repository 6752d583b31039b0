//! # count_unrecognized_commands — disconnect a client after N unknown commands
//!
//! ## Synopsis
//!
//! ```text
//! count_unrecognized_commands [N] [reject 0|1|naughty] [reject_type disconnect|perm] [loglevel N]
//! count_unrecognized_commands 4
//! ```
//!
//! ## Description
//!
//! Counts the commands of a connection that the server does not know (qpsmtpd's
//! `unrecognized_command` hook: an unknown verb, or `STARTTLS`/`AUTH` while no plugin offers
//! them). The first N-1 get the core's `500 5.5.1 Unrecognized command`; the Nth and any
//! later one get
//!
//! ```text
//! 521 5.5.1 Closing connection, N unrecognized commands. Perhaps you should read RFC 2821?
//! ```
//!
//! and the connection is closed. A client that sends HTTP or other protocols at port 25 (an
//! open proxy relaying spam) is gone after a few lines. The count is per connection and is
//! not reset by other commands or by RSET.
//!
//! The core has its own limit, `max_unrecognized` (default 10), which closes the connection
//! with 421 when exceeded: an N above it never takes effect.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `N` | `4` | unknown commands allowed, the Nth included in the count: the Nth is refused with 521 and disconnect. A positive integer |
//! | `reject 0\|1\|naughty` | `1` | `0`: only log; `naughty`: mark the connection (`naughty` plugin) |
//! | `reject_type` | `disconnect` | `disconnect`: 521 and close; `perm`: 500 with the text above, the connection stays open. A 4xx to an unknown command is no reply qpsmtpd has, so `temp` and `temp_disconnect` are refused |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `unrecognized_command`. Returns `DENY_DISCONNECT` at the limit (the engine maps it to 521);
//! declines below it, so other `unrecognized_command` plugins after this one still run.
//!
//! ## Notes
//!
//! Writes the connection note `UnrecognizedCount` (qpsmtpd's conn note `unrec_cmd_count`).
//! Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.4 (500 for an unrecognized command), §3.8 (the server may close the
//! connection); RFC 7504 (521, "does not accept mail"); RFC 3463 (X.5.1, invalid command).
//!
//! ## Security
//!
//! Bounds what an unknown protocol can do on one connection. Cheap: one counter per
//! connection, no allocation below the limit.

use ringsmtpd_plugin_api::{
    Common, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Step,
};

use crate::matchers::{bump, limit_args};

/// Unknown commands seen on this connection (qpsmtpd conn note `unrec_cmd_count`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnrecognizedCount(pub u32);

/// The `count_unrecognized_commands` plugin.
pub struct CountUnrecognized {
    common: Common,
    max: u32,
}

/// Builds `count_unrecognized_commands` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, max) = limit_args(init, 4)?;
    Ok(Box::new(CountUnrecognized { common, max }))
}

impl Plugin for CountUnrecognized {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::UnrecognizedCommand])
    }

    fn unrecognized_command<'a>(
        &'a self,
        cx: &'a mut Cx,
        verb: &'a str,
        _args: &'a str,
    ) -> Step<'a> {
        let count = bump(
            &mut cx
                .conn
                .notes
                .get_or_insert_with(UnrecognizedCount::default)
                .0,
        );
        if count < self.max {
            self.common
                .log(cx, Level::Info, format_args!("'{verb}' ({count})"));
            return Step::DECLINED;
        }
        let text = format!(
            "5.5.1 Closing connection, {count} unrecognized commands. Perhaps you should read \
             RFC 2821?"
        );
        self.common
            .fail(cx, format_args!("'{verb}' ({count})"), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run};
    use ringsmtpd_plugin_api::Outcome;

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        let line = format!("count_unrecognized_commands {}", args.join(" "));
        testing::build(new, &line, &[])
    }

    fn outcomes(p: &dyn Plugin, n: usize) -> Vec<Outcome> {
        let (mut c, _) = cx("192.0.2.1:1");
        (0..n)
            .map(|_| run(p.unrecognized_command(&mut c, "get", "/ HTTP/1.0")))
            .collect()
    }

    #[test]
    fn default_is_four_as_in_qpsmtpd_t_misc() {
        // t/misc.t: three unknown commands get 500, the fourth 521 and a disconnect.
        let p = build(&[]).unwrap();
        let o = outcomes(&*p, 5);
        assert!(o[..3].iter().all(|o| *o == Outcome::Declined), "{o:?}");
        match &o[3] {
            Outcome::DenyDisconnect(Some(m)) => {
                assert!(
                    m.starts_with("5.5.1 Closing connection, 4 unrecognized"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(o[4], Outcome::DenyDisconnect(_)));
    }

    #[test]
    fn counts_per_connection_in_a_note() {
        let p = build(&["2"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(
            run(p.unrecognized_command(&mut c, "x", "")),
            Outcome::Declined
        );
        assert_eq!(c.conn.notes.get(), Some(&UnrecognizedCount(1)));
        assert!(matches!(
            run(p.unrecognized_command(&mut c, "y", "")),
            Outcome::DenyDisconnect(_)
        ));
        // A new connection starts at zero.
        let (mut c2, _) = cx("192.0.2.1:2");
        assert_eq!(
            run(p.unrecognized_command(&mut c2, "x", "")),
            Outcome::Declined
        );
        // N = 1: the first one is already refused.
        let p = build(&["1"]).unwrap();
        assert!(matches!(outcomes(&*p, 1)[0], Outcome::DenyDisconnect(_)));
    }

    #[test]
    fn common_args() {
        let p = build(&["2", "reject_type", "perm"]).unwrap();
        assert!(matches!(outcomes(&*p, 2)[1], Outcome::Deny(_)));
        let p = build(&["reject", "0", "2"]).unwrap();
        assert_eq!(outcomes(&*p, 3), vec![Outcome::Declined; 3]);
        let p = build(&["2", "reject", "naughty"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        run(p.unrecognized_command(&mut c, "x", ""));
        assert_eq!(
            run(p.unrecognized_command(&mut c, "x", "")),
            Outcome::Declined
        );
        assert!(c.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn bad_arguments() {
        assert_bad_args(
            new,
            "count_unrecognized_commands",
            &[
                &["0"][..],
                &["-1"],
                &["four"],
                &["4", "5"],
                &["reject_type", "temp"],
                &["reject_type", "temp_disconnect"],
                &["reject"],
            ],
        );
    }
}
