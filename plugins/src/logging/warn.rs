//! # logging/warn — log to stderr at or below a level
//!
//! ## Synopsis
//!
//! ```text
//! logging/warn [<level>]
//! logging/warn [loglevel <level>]
//! logging/warn LOGINFO
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! The built-in logger as a plugin (qpsmtpd's `logging/warn`): every line at or below
//! `<level>` goes to stderr as `<level> <conn> <source>: <msg>`, the same format as the
//! server's own logger (`conn` in hex, left out for lines not about a connection). Useful to
//! keep stderr output next to another logging plugin, since any configured logging plugin
//! replaces the built-in logger.
//!
//! The line is copied into a buffer and written by a background thread shared by all workers
//! (see `logging/sink.rs`): a stderr that is a slow pipe never stalls a worker; when the buffer
//! is full, lines are dropped and counted, and the count is written once the pipe drains.
//! Lines are written in runs of at most 4096 bytes so they stay whole next to the server's own
//! stderr lines. Control characters in messages are escaped (`\x0a`).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<level>` or `loglevel <level>` | `4` (LOGWARN) | the highest level written: `0`-`7` or a name (`LOGINFO`, `info`, `LOG_INFO`) |
//!
//! `reject` and `reject_type` are refused: a logging plugin rejects nothing.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `logging`. Returns `DECLINED`, so the next logging plugin sees the line too (as qpsmtpd).
//!
//! ## Notes
//!
//! None.
//!
//! ## Differences from qpsmtpd
//!
//! qpsmtpd's line is `<pid> (<hook>) <plugin>: <msg>`; ours carries the level and connection
//! id, not the pid and hook. A bad level is an error here (qpsmtpd fell back silently).
//!
//! ## Security
//!
//! Escaping keeps a client's text from forging log lines.

use ringsmtpd_plugin_api::{ConfigError, LogRecord, Plugin, PluginInit};

use super::{Formatted, Lines};

/// Builds `logging/warn` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(Formatted::new(Lines::stderr(init)?, format)))
}

/// The built-in logger's line.
fn format(line: &mut String, record: &LogRecord<'_>) {
    super::write_body(line, record);
    line.push('\n');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::level_arg;
    use crate::logging::sink::tests::mem_sink;
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::testing::build_args;
    use ringsmtpd_plugin_api::{Level, Outcome};

    #[test]
    fn writes_at_or_below_level_in_the_builtin_format() {
        let (sink, mem) = mem_sink();
        let p = Formatted::new(Lines::new(Level::Info, sink.clone()), format);
        for (level, conn, msg) in [
            (Level::Debug, 1, "hidden"),
            (Level::Info, 0x10000000002, "shown"),
            (Level::Error, 0, "server"),
        ] {
            let o = record(level, conn, "relay", msg, |r| p.logging(r));
            assert_eq!(o, Outcome::Declined);
        }
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(
            mem.text(),
            "info 10000000002 relay: shown\nerror relay: server\n"
        );
    }

    #[test]
    fn arguments() {
        let lvl = |args: &[&str]| build_args(level_arg, "logging/warn", args, &[]);
        assert_eq!(lvl(&[]), Ok(Level::Warn));
        assert_eq!(lvl(&["LOGDEBUG"]), Ok(Level::Debug));
        assert_eq!(lvl(&["6"]), Ok(Level::Info));
        assert_eq!(lvl(&["loglevel", "LOGERROR"]), Ok(Level::Error));
        let e = lvl(&["reject", "1"]).unwrap_err();
        assert!(e.to_string().contains("does not apply"), "{e}");
        let e = lvl(&["6", "7"]).unwrap_err();
        assert!(e.to_string().contains("unknown argument '7'"), "{e}");
        let e = lvl(&["LOUD"]).unwrap_err();
        assert_eq!(e.file, "plugins");
        assert_eq!(e.line, 1);
        assert!(build(new, "logging/warn", &["LOGINFO"]).is_ok());
    }
}
