//! # logging/transaction_id — stderr lines that start with the transaction id
//!
//! ## Synopsis
//!
//! ```text
//! logging/transaction_id [<level>]
//! logging/transaction_id [loglevel <level>]
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! qpsmtpd's demo of the transaction id (disabled there: its `register` dies with "currently
//! unsupported"). Every line at or below `<level>` goes to stderr as
//! `<txn> <level> <source>: <msg>`, where `<txn>` is the open transaction's id
//! (`<conn>.<n>`, the id queue plugins put in their replies), `<conn>` between transactions,
//! and `-` for lines not about a connection. Written through the same non-blocking stderr
//! writer as `logging/warn`; control characters are escaped.
//!
//! The `logging` hook is not told the transaction, so the plugin follows it with hooks: the
//! id is taken at `mail` (the logging plugins' hooks run before any other plugin's, so the
//! `mail` lines of the other plugins already carry it) and forgotten at `reset_transaction`,
//! at a deny of `MAIL` (no transaction then), and at `post-connection`. Lines between `MAIL`
//! and the `mail` hook (`mail_pre`) carry the connection id.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<level>` or `loglevel <level>` | `4` (LOGWARN) | the highest level written |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `logging` (returns `DECLINED`), `mail`, `deny`, `reset_transaction`, `post-connection`
//! (all `DECLINED`).
//!
//! ## Notes
//!
//! None; the ids are kept in the plugin, per worker, one entry per connection with an open
//! transaction.
//!
//! ## Security
//!
//! As `logging/warn`.

use std::cell::RefCell;
use std::collections::HashMap;

use ringsmtpd_plugin_api::{
    ConfigError, Cx, Hook, HookSet, LogRecord, Outcome, Plugin, PluginInit, Step, Transaction,
};

use super::Lines;

/// The `logging/transaction_id` plugin.
pub struct TransactionId {
    lines: Lines,
    /// The open transaction's id by connection.
    open: RefCell<HashMap<u64, String>>,
}

/// Builds `logging/transaction_id` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(TransactionId::with_lines(Lines::stderr(init)?)))
}

impl TransactionId {
    fn with_lines(lines: Lines) -> TransactionId {
        TransactionId {
            lines,
            open: RefCell::new(HashMap::new()),
        }
    }

    fn forget(&self, conn: u64) {
        self.open.borrow_mut().remove(&conn);
    }
}

impl Plugin for TransactionId {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Logging,
            Hook::Mail,
            Hook::Deny,
            Hook::ResetTransaction,
            Hook::PostConnection,
        ])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let mut open = self.open.borrow_mut();
        let id = open.entry(cx.conn.id).or_default();
        id.clear();
        id.push_str(&txn.id);
        Step::DECLINED
    }

    fn deny<'a>(
        &'a self,
        cx: &'a mut Cx,
        _plugin: &'a str,
        hook: Hook,
        _outcome: &'a Outcome,
    ) -> Step<'a> {
        if hook == Hook::Mail {
            self.forget(cx.conn.id);
        }
        Step::DECLINED
    }

    fn reset_transaction<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        self.forget(cx.conn.id);
        Step::DECLINED
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.forget(cx.conn.id);
        Step::DECLINED
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        self.lines.write(record, |line| {
            let open = self.open.try_borrow().ok();
            let id = open.as_ref().and_then(|o| o.get(&record.conn));
            super::write_with_id(line, record, id.map(String::as_str));
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::sink::tests::mem_sink;
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::testing::{cx, run};
    use ringsmtpd_plugin_api::Level;

    #[test]
    fn follows_the_transaction() {
        let (sink, mem) = mem_sink();
        let p = TransactionId::with_lines(Lines::new(Level::Info, sink.clone()));
        let (mut cx, _svc) = cx("192.0.2.1:4242");
        let conn = cx.conn.id;
        record(Level::Info, conn, "helo", "before", |r| p.logging(r));
        let mut txn = Transaction::default();
        txn.id = "1.1".into();
        assert_eq!(run(p.mail(&mut cx, &mut txn)), Outcome::Declined);
        record(Level::Info, conn, "rcpt_ok", "inside", |r| p.logging(r));
        record(Level::Info, 0, "core", "server", |r| p.logging(r));
        assert_eq!(
            run(p.reset_transaction(&mut cx, &mut txn)),
            Outcome::Declined
        );
        record(Level::Info, conn, "core", "after", |r| p.logging(r));
        // A denied MAIL leaves no transaction.
        txn.id = "1.2".into();
        run(p.mail(&mut cx, &mut txn));
        let denied = Outcome::deny("no");
        run(p.deny(&mut cx, "badmailfrom", Hook::Mail, &denied));
        record(Level::Info, conn, "core", "denied", |r| p.logging(r));
        run(p.mail(&mut cx, &mut txn));
        run(p.post_connection(&mut cx));
        assert!(
            p.open.borrow().is_empty(),
            "nothing kept after the connection"
        );
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(
            mem.text(),
            "1 info helo: before\n1.1 info rcpt_ok: inside\n- info core: server\n\
             1 info core: after\n1 info core: denied\n"
        );
        assert!(build(new, "logging/transaction_id", &[]).is_ok());
        assert!(build(new, "logging/transaction_id", &["loglevel"]).is_err());
    }
}
