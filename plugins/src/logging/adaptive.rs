//! # logging/adaptive — log accepted messages at one level, the rest at another
//!
//! ## Synopsis
//!
//! ```text
//! logging/adaptive [accept <level>] [reject <level>] [prefix <text>]
//! logging/adaptive accept LOGNOTICE reject LOGDEBUG prefix `
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! qpsmtpd's `logging/adaptive`, as its code behaves:
//!
//! - every line at or below the **reject** level goes to stderr at once, as
//!   `<level> <conn> <source>: <msg>` (the detailed log, written whatever becomes of the
//!   message);
//! - lines at or below the **accept** level are also kept, per connection, until the end of
//!   the transaction; if the message was **accepted** (a queue plugin answered `OK`), they
//!   are written again with the prefix after the connection id,
//!   `<level> <conn> <prefix> <source>: <msg>`; otherwise they are thrown away.
//!
//! So with a low accept level and a high reject level, a refused or failed message leaves a
//! detailed trace and an accepted one also leaves a short, marked summary that a log
//! splitter can pick out by its prefix (qpsmtpd's multilog example:
//! `multilog t '-*` *' ./detailed '-*' '+*` *' ./accepted`).
//!
//! The lines kept cover the connection up to the end of the transaction: for the first
//! message of a connection they include the `connect` and `HELO` lines. Each transaction end
//! (`reset_transaction`: after the queue reply, RSET, a new MAIL, disconnect) writes or drops
//! what is kept and starts again.
//!
//! Written through the same non-blocking stderr writer as `logging/warn`. The lines kept are
//! bounded: 64 KiB per connection and 16 MiB per worker; past that, lines are not kept and
//! a line at the replay says how many were left out.
//!
//! ## Arguments
//!
//! Pairs of `key value`, as in qpsmtpd.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `accept <level>` | `3` (LOGERROR) | lines at or below it are replayed, prefixed, for accepted messages |
//! | `reject <level>` | `4` (LOGWARN) | lines at or below it are written at once |
//! | `prefix <text>` | `` ` `` | marks the replayed lines (no spaces: arguments are split on whitespace) |
//!
//! Levels are `0`-`7` or names (`LOGINFO`). Here `reject` is the level argument of qpsmtpd's
//! plugin, not the common `reject 0|1|naughty` (which a logging plugin has no use for);
//! `reject_type` is refused.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `logging` (returns `DECLINED`), `connect` (starts keeping lines for the connection), `ok`
//! (a queue plugin's `OK` marks the message accepted), `reset_transaction` (replay or drop),
//! `post-connection` (forget the connection). All return `DECLINED`.
//!
//! ## Notes
//!
//! None; the kept lines are in the plugin, per worker, by connection id.
//!
//! ## Differences from qpsmtpd
//!
//! qpsmtpd replays unless some plugin denied: a transaction ended by RSET, or refused with no
//! plugin denying (every RCPT plugin declining), counted as accepted; its "denied" flag was
//! never cleared, so after one deny nothing was replayed again in that process. Here
//! accepted means queued, per transaction. qpsmtpd's docs swap the defaults' names (they say
//! "LOGERROR (4)", "LOGWARN (5)"); the code's numbers, kept here, are 3 and 4.
//!
//! ## Security
//!
//! As `logging/warn`; the bounds keep a client that makes many lines from growing memory.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use ringsmtpd_plugin_api::{
    ConfigError, Cx, Hook, HookSet, Level, LogRecord, Outcome, Plugin, PluginInit, Step,
    Transaction,
};

use super::sink::Sink;

/// Bytes of kept lines per connection.
const MAX_CONN_BYTES: usize = 64 * 1024;
/// Bytes of kept lines per worker, all connections together.
const MAX_WORKER_BYTES: usize = 16 * 1024 * 1024;

/// The `logging/adaptive` plugin.
pub struct Adaptive {
    accept: Level,
    reject: Level,
    prefix: String,
    sink: Arc<Sink>,
    conns: RefCell<HashMap<u64, Kept>>,
    /// Bytes kept over all connections.
    kept_bytes: Cell<usize>,
    line: RefCell<String>,
}

/// The lines kept for one connection's current transaction.
#[derive(Default)]
struct Kept {
    /// Finished lines (prefixed, with newlines), back to back.
    text: String,
    left_out: u64,
    accepted: bool,
}

/// Builds `logging/adaptive` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(Adaptive::from_init(
        init,
        super::stderr_sink(init)?,
    )?))
}

impl Adaptive {
    fn from_init(init: &PluginInit<'_>, sink: Arc<Sink>) -> Result<Adaptive, ConfigError> {
        let args = init.args;
        if args.len() % 2 == 1 {
            return Err(init.error(format!(
                "arguments come in pairs (key value); '{}' has no value",
                args[args.len() - 1]
            )));
        }
        let mut accept = Level::Error;
        let mut reject = Level::Warn;
        let mut prefix = "`".to_string();
        for pair in args.chunks(2) {
            let (key, value) = (pair[0].as_str(), pair[1].as_str());
            match key {
                "accept" => accept = super::parse_level(init, "accept", value)?,
                "reject" => reject = super::parse_level(init, "reject", value)?,
                "prefix" => prefix = value.to_string(),
                "reject_type" => return Err(super::no_reject(init, key)),
                _ => return Err(init.unknown(key)),
            }
        }
        Ok(Adaptive {
            accept,
            reject,
            prefix,
            sink,
            conns: RefCell::new(HashMap::new()),
            kept_bytes: Cell::new(0),
            line: RefCell::new(String::new()),
        })
    }

    /// Writes (accepted) or drops what is kept for `conn`, and starts again.
    fn finish(&self, conn: u64) {
        let mut conns = self.conns.borrow_mut();
        let Some(kept) = conns.get_mut(&conn) else {
            return;
        };
        if kept.accepted {
            let mut start = 0;
            while let Some(end) = kept.text[start..].find('\n') {
                let line = &kept.text[start..start + end + 1];
                self.sink.push(line.as_bytes(), None, false);
                start += end + 1;
            }
            if kept.left_out > 0 {
                let line = format!(
                    "notice {conn:x} {} logging/adaptive: {} lines not kept (limit reached)\n",
                    self.prefix, kept.left_out
                );
                self.sink.push(line.as_bytes(), None, false);
            }
        }
        self.kept_bytes
            .set(self.kept_bytes.get().saturating_sub(kept.text.len()));
        kept.text.clear();
        kept.left_out = 0;
        kept.accepted = false;
    }
}

impl Plugin for Adaptive {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Logging,
            Hook::Connect,
            Hook::Ok,
            Hook::ResetTransaction,
            Hook::PostConnection,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.conns.borrow_mut().entry(cx.conn.id).or_default();
        Step::DECLINED
    }

    fn ok<'a>(
        &'a self,
        cx: &'a mut Cx,
        _plugin: &'a str,
        hook: Hook,
        outcome: &'a Outcome,
    ) -> Step<'a> {
        if hook == Hook::Queue && matches!(outcome, Outcome::Ok(_)) {
            if let Some(kept) = self.conns.borrow_mut().get_mut(&cx.conn.id) {
                kept.accepted = true;
            }
        }
        Step::DECLINED
    }

    fn reset_transaction<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        self.finish(cx.conn.id);
        Step::DECLINED
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.finish(cx.conn.id);
        if let Some(kept) = self.conns.borrow_mut().remove(&cx.conn.id) {
            self.kept_bytes
                .set(self.kept_bytes.get().saturating_sub(kept.text.len()));
        }
        Step::DECLINED
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        let now = record.level <= self.reject;
        let keep = record.level <= self.accept && record.conn != 0;
        if !now && !keep {
            return Outcome::Declined;
        }
        let Ok(mut line) = self.line.try_borrow_mut() else {
            return Outcome::Declined;
        };
        if now {
            line.clear();
            super::write_body(&mut line, record);
            line.push('\n');
            self.sink.push(line.as_bytes(), None, false);
        }
        if keep {
            let Ok(mut conns) = self.conns.try_borrow_mut() else {
                return Outcome::Declined;
            };
            let Some(kept) = conns.get_mut(&record.conn) else {
                return Outcome::Declined;
            };
            line.clear();
            let _ = write!(
                line,
                "{} {:x} {} ",
                record.level.name(),
                record.conn,
                self.prefix
            );
            super::write_source_msg(&mut line, record);
            line.push('\n');
            let total = self.kept_bytes.get();
            if kept.text.len() + line.len() > MAX_CONN_BYTES
                || total + line.len() > MAX_WORKER_BYTES
            {
                kept.left_out += 1;
            } else {
                kept.text.push_str(&line);
                self.kept_bytes.set(total + line.len());
            }
        }
        Outcome::Declined
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::sink::tests::{mem_sink, MemWriter};
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};

    fn adaptive(args: &[&str]) -> (Adaptive, Arc<Sink>, MemWriter) {
        let (sink, mem) = mem_sink();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::default();
        let line = origin("logging/adaptive");
        let init = PluginInit {
            name: "logging/adaptive",
            args: &args,
            config: &config,
            origin: &line,
        };
        match Adaptive::from_init(&init, sink.clone()) {
            Ok(a) => (a, sink, mem),
            Err(e) => panic!("{e}"),
        }
    }

    /// One transaction: connect line, a warning, a notice, then queued or not.
    fn transaction(p: &Adaptive, cx: &mut Cx, queued: bool) {
        let conn = cx.conn.id;
        record(Level::Notice, conn, "rcpt_ok", "to b@example.com", |r| {
            p.logging(r)
        });
        record(Level::Info, conn, "spf", "details", |r| p.logging(r));
        if queued {
            let ok = Outcome::ok("Queued");
            run(p.ok(cx, "queue/maildir", Hook::Queue, &ok));
        } else {
            let deny = Outcome::deny("spam");
            run(p.deny(cx, "spamassassin", Hook::DataPost, &deny));
        }
        let mut txn = Transaction::default();
        run(p.reset_transaction(cx, &mut txn));
    }

    #[test]
    fn accepted_messages_are_replayed_with_the_prefix() {
        let (p, sink, mem) = adaptive(&["accept", "LOGNOTICE", "reject", "LOGINFO", "prefix", "+"]);
        let (mut cx, _svc) = cx("192.0.2.1:1");
        run(p.connect(&mut cx));
        record(Level::Info, 1, "core", "connect", |r| p.logging(r));
        record(Level::Debug, 1, "core", "chatter", |r| p.logging(r));
        transaction(&p, &mut cx, true);
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(
            mem.text(),
            "info 1 core: connect\nnotice 1 rcpt_ok: to b@example.com\ninfo 1 spf: details\n\
             notice 1 + rcpt_ok: to b@example.com\n"
        );
        run(p.post_connection(&mut cx));
        assert!(p.conns.borrow().is_empty());
        assert_eq!(p.kept_bytes.get(), 0);
    }

    #[test]
    fn refused_messages_are_not_replayed_and_the_next_one_is() {
        let (p, sink, mem) = adaptive(&[]);
        let (mut cx, _svc) = cx("192.0.2.1:1");
        run(p.connect(&mut cx));
        // Defaults: accept 3 (error), reject 4 (warn).
        let conn = cx.conn.id;
        record(Level::Error, conn, "a", "refused one", |r| p.logging(r));
        let deny = Outcome::deny("no");
        run(p.deny(&mut cx, "x", Hook::Rcpt, &deny));
        run(p.reset_transaction(&mut cx, &mut Transaction::default()));
        record(Level::Warn, conn, "a", "warning", |r| p.logging(r));
        record(Level::Error, conn, "a", "accepted two", |r| p.logging(r));
        // A queue answer other than OK does not count, nor an OK at another hook.
        run(p.ok(&mut cx, "relay", Hook::Rcpt, &Outcome::ok("yes")));
        run(p.ok(
            &mut cx,
            "queue/maildir",
            Hook::Queue,
            &Outcome::ok("Queued"),
        ));
        run(p.reset_transaction(&mut cx, &mut Transaction::default()));
        // RSET: not queued, nothing replayed.
        record(Level::Error, conn, "a", "aborted three", |r| p.logging(r));
        run(p.reset_transaction(&mut cx, &mut Transaction::default()));
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(
            mem.text(),
            "error 1 a: refused one\nwarn 1 a: warning\nerror 1 a: accepted two\n\
             error 1 ` a: accepted two\nerror 1 a: aborted three\n"
        );
    }

    #[test]
    fn bounded_per_connection() {
        let (p, sink, mem) = adaptive(&["accept", "7", "reject", "0"]);
        let (mut cx, _svc) = cx("192.0.2.1:1");
        run(p.connect(&mut cx));
        let msg = "z".repeat(1000);
        for _ in 0..100 {
            record(Level::Info, 1, "p", &msg, |r| p.logging(r));
        }
        assert!(p.kept_bytes.get() <= MAX_CONN_BYTES);
        // Lines not about a connection, or about one never seen at connect, are not kept.
        record(Level::Info, 0, "core", "server", |r| p.logging(r));
        record(Level::Info, 99, "core", "unknown", |r| p.logging(r));
        assert_eq!(p.conns.borrow().len(), 1);
        run(p.ok(&mut cx, "q", Hook::Queue, &Outcome::Ok(None)));
        run(p.reset_transaction(&mut cx, &mut Transaction::default()));
        assert!(sink.flush(Duration::from_secs(5)));
        let text = mem.text();
        let kept = text
            .lines()
            .filter(|l| l.starts_with("info 1 ` p: z"))
            .count();
        assert!((60..=65).contains(&kept), "{kept}");
        assert!(
            text.ends_with(&format!(
                "notice 1 ` logging/adaptive: {} lines not kept (limit reached)\n",
                100 - kept
            )),
            "{}",
            &text[text.len() - 100..]
        );
        assert_eq!(p.kept_bytes.get(), 0);
    }

    #[test]
    fn arguments() {
        let err = |args: &[&str]| {
            build(new, "logging/adaptive", args)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(&["accept"]).contains("come in pairs"));
        assert!(err(&["accept", "x"]).contains("accept must be"));
        assert!(err(&["reject", "naughty"]).contains("reject must be"));
        assert!(err(&["reject_type", "temp"]).contains("does not apply"));
        assert!(err(&["level", "1"]).contains("unknown argument 'level'"));
        let (p, _, _) = adaptive(&["accept", "LOGINFO", "reject", "7", "prefix", "ACC"]);
        assert_eq!(
            (p.accept, p.reject, p.prefix.as_str()),
            (Level::Info, Level::Debug, "ACC")
        );
        assert!(build(new, "logging/adaptive", &[]).is_ok());
    }
}
