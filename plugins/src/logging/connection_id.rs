//! # logging/connection_id — stderr lines that start with the connection id
//!
//! ## Synopsis
//!
//! ```text
//! logging/connection_id [<level>]
//! logging/connection_id [loglevel <level>]
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! qpsmtpd's demo of the connection id (disabled there: its `register` dies with "currently
//! unsupported"). Every line at or below `<level>` goes to stderr as
//! `<conn> <level> <source>: <msg>`, the connection id (hex, `-` for lines not about a
//! connection) first, so `sort -s -k1,1` groups a busy log by connection. Written through the
//! same non-blocking stderr writer as `logging/warn`; control characters are escaped.
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
//! `logging` (returns `DECLINED`).
//!
//! ## Notes
//!
//! None.
//!
//! ## Security
//!
//! As `logging/warn`.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;

use ringsmtpd_plugin_api::{
    ConfigError, Hook, HookSet, Level, LogRecord, Outcome, Plugin, PluginInit,
};

use super::sink::{self, Sink};

/// The `logging/connection_id` plugin.
pub struct ConnectionId {
    level: Level,
    sink: Arc<Sink>,
    line: RefCell<String>,
}

/// Builds `logging/connection_id` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let level = super::warn::level_arg(init)?;
    let sink =
        sink::stderr().map_err(|e| init.error(format!("cannot start the log writer: {e}")))?;
    Ok(Box::new(ConnectionId::with_sink(level, sink)))
}

impl ConnectionId {
    pub fn with_sink(level: Level, sink: Arc<Sink>) -> ConnectionId {
        ConnectionId {
            level,
            sink,
            line: RefCell::new(String::new()),
        }
    }
}

impl Plugin for ConnectionId {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Logging])
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        if record.level > self.level {
            return Outcome::Declined;
        }
        let Ok(mut line) = self.line.try_borrow_mut() else {
            return Outcome::Declined;
        };
        line.clear();
        if record.conn == 0 {
            line.push('-');
        } else {
            let _ = write!(line, "{:x}", record.conn);
        }
        line.push(' ');
        line.push_str(record.level.name());
        line.push(' ');
        super::write_source_msg(&mut line, record);
        line.push('\n');
        self.sink.push(line.as_bytes(), None, false);
        Outcome::Declined
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::sink::tests::mem_sink;
    use crate::logging::test_util::{build, record};

    #[test]
    fn id_first() {
        let (sink, mem) = mem_sink();
        let p = ConnectionId::with_sink(Level::Notice, sink.clone());
        record(Level::Notice, 0xab, "relay", "yes", |r| p.logging(r));
        record(Level::Info, 0xab, "relay", "too verbose", |r| p.logging(r));
        record(Level::Error, 0, "core", "server", |r| p.logging(r));
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(mem.text(), "ab notice relay: yes\n- error core: server\n");
        assert!(build(new, "logging/connection_id", &["loglevel", "7"]).is_ok());
        assert!(build(new, "logging/connection_id", &["9"]).is_err());
    }
}
