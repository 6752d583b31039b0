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
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
    Transaction,
};

/// The `queue/discard` plugin.
pub struct Discard {
    name: String,
    common: CommonArgs,
}

/// Builds `queue/discard` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("unknown argument '{extra}'")));
    }
    Ok(Box::new(Discard {
        name: init.name.to_string(),
        common,
    }))
}

impl Plugin for Discard {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if let Some(level) = self.common.adjust(Level::Info) {
            cx.log(
                level,
                &self.name,
                format_args!(
                    "discarded message from {} to {} recipient(s), {} bytes",
                    txn.sender,
                    txn.recipients.len(),
                    txn.message_len()
                ),
            );
        }
        Step::Ready(Outcome::ok("Message discarded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::default();
        let line = origin("queue/discard");
        new(&PluginInit {
            name: "queue/discard",
            args: &args,
            config: &config,
            origin: &line,
        })
    }

    #[test]
    fn discards_with_ok() {
        let p = build(&[]).unwrap();
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
        assert!(build(&["loglevel", "6"]).is_ok());
        assert!(build(&["/var/spool"]).is_err());
    }
}
