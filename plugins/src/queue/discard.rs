//! # queue/discard — accept every message and throw it away
//!
//! **THIS PLUGIN LOSES MAIL. Every message it "queues" is gone: the client is told `250` and
//! nothing is written anywhere. Use it for benchmarks of the SMTP engine and nothing else.**
//!
//! ## Synopsis
//!
//! ```text
//! queue/discard [loglevel N]
//! ```
//!
//! ## Description
//!
//! Returns `OK` with `Message discarded` at the `queue` hook, so the client gets
//! `250 Message discarded`, and logs (at info) the sender, the number of recipients and the
//! size. It measures what the engine costs without the cost of a disk or a downstream MTA.
//!
//! ## Arguments
//!
//! | argument | meaning |
//! |---|---|
//! | `loglevel` | qpsmtpd's per-plugin log level (`reject`, `reject_type` are accepted, no effect) |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `queue`.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! Violates RFC 5321 §6.1 on purpose: a 250 after DATA takes responsibility for the message.
//!
//! ## Security
//!
//! A server with this plugin black-holes mail. Never put it in a production `config/plugins`.

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
    Transaction,
};

/// The `queue/discard` plugin.
pub struct Discard {
    common: Common,
}

/// Builds `queue/discard` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    Ok(Box::new(Discard { common }))
}

impl Plugin for Discard {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        self.common.log(
            cx,
            Level::Info,
            format_args!(
                "discarded message from {} to {} recipient(s), {} bytes",
                txn.sender,
                txn.recipients.len(),
                txn.message_len()
            ),
        );
        Step::Ready(Outcome::ok("Message discarded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{build, cx, run};

    #[test]
    fn discards_with_ok() {
        let p = build(new, "queue/discard", &[]).unwrap();
        assert!(p.hooks().contains(Hook::Queue));
        let (mut cx, svc) = cx("192.0.2.1:4242");
        let mut txn = Transaction::default();
        txn.body.mem = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        assert_eq!(
            run(p.queue(&mut cx, &mut txn)),
            Outcome::ok("Message discarded")
        );
        assert!(svc.logged("discarded message from <>"));
    }

    #[test]
    fn arguments() {
        assert!(build(new, "queue/discard loglevel 6", &[]).is_ok());
        assert!(build(new, "queue/discard /var/spool", &[]).is_err());
    }
}
