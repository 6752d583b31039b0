//! Queue plugins (qpsmtpd's `plugins/queue/`): the `queue` hook delivers the message. At least
//! one must be configured, or every DATA ends in 451. `OK` means the message is durable at its
//! destination (DESIGN.md §6): the client gets 250 only then.

mod by_path; // shared objects per directory (queue/maildir)
pub mod discard;
mod fsync_batch; // queue/maildir's group commit of new/ fsyncs
mod fsync_pool; // queue/maildir's parallel file fsyncs
mod group_commit; // queue/maildir's batches, process-wide
pub mod maildir;
// issue 4, local queues (maildir above; shared helpers in `local`):
pub mod exim_bsmtp;
pub(crate) mod local;
pub mod postfix_queue;
pub mod qmail_queue;
// issue 4, network queues (shared SMTP/LMTP client in `smtp_client`):
pub mod lmtp;
pub mod smtp_client;
pub mod smtp_forward;

/// Locks `m`, also after a thread panicked holding it: the queue helpers' shared state
/// (commit queues, fsync tasks) stays consistent at every unlock, so it is still usable.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Shared by the local queue plugins' tests.

    use std::path::Path;

    use ringsmtpd_plugin_api::testing::{cx, rcpt, run, set_message, txn_from};
    use ringsmtpd_plugin_api::{Outcome, Plugin, SpoolFile, Transaction};

    /// A transaction from `sender` (`""`: `<>`) to `rcpts` holding `message`, with the
    /// Received header the server adds.
    pub fn txn(sender: &str, rcpts: &[&str], message: &str) -> Transaction {
        let mut t = txn_from(&format!("<{sender}>"));
        t.recipients = rcpts.iter().map(|r| rcpt(&format!("<{r}>"))).collect();
        set_message(&mut t, message);
        t.added_headers = "Received: from x\r\n by y; now\r\n".into();
        t
    }

    /// Runs the queue hook for a client at 192.0.2.1:4242.
    pub fn queue(p: &dyn Plugin, t: &mut Transaction) -> Outcome {
        let (mut cx, _svc) = cx("192.0.2.1:4242");
        run(p.queue(&mut cx, t))
    }

    /// A spool "file" whose reads fail: a handle on the directory `dir` (EISDIR).
    pub fn unreadable_spool(dir: &Path) -> Option<SpoolFile> {
        Some(SpoolFile {
            path: dir.join("nowhere"),
            file: std::fs::File::open(dir).expect("open the directory"),
        })
    }
}
