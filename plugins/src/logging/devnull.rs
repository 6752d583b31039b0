//! # logging/devnull — drop every log line
//!
//! ## Synopsis
//!
//! ```text
//! logging/devnull
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! Writes nothing. Because any configured logging plugin replaces the server's built-in
//! stderr logger, `config/logging` holding only `logging/devnull` silences the server's log
//! (qpsmtpd's `logging/devnull`). Other logging plugins listed with it still get every line.
//!
//! ## Arguments
//!
//! None; any argument is an error.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `logging`: returns `DECLINED` without looking at the line, as qpsmtpd's does.
//!
//! ## Notes
//!
//! None.
//!
//! ## Security
//!
//! With it alone, refusals and plugin failures leave no trace: for benchmarks and tests.

use ringsmtpd_plugin_api::{ConfigError, Hook, HookSet, LogRecord, Outcome, Plugin, PluginInit};

/// The `logging/devnull` plugin.
pub struct Devnull;

/// Builds `logging/devnull`; it takes no arguments.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    if let Some(arg) = init.args.first() {
        return Err(init.error(format!("takes no arguments, got '{arg}'")));
    }
    Ok(Box::new(Devnull))
}

impl Plugin for Devnull {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Logging])
    }

    fn logging(&self, _record: &LogRecord<'_>) -> Outcome {
        Outcome::Declined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::Level;

    #[test]
    fn drops_and_declines() {
        let p = build(new, "logging/devnull", &[]).unwrap();
        assert!(p.hooks().contains(Hook::Logging));
        let o = record(Level::Emerg, 1, "core", "x", |r| p.logging(r));
        assert_eq!(o, Outcome::Declined);
        let e = build(new, "logging/devnull", &["x"]).err().unwrap();
        assert_eq!(
            e.to_string(),
            "plugins:1: logging/devnull: takes no arguments, got 'x'"
        );
    }
}
