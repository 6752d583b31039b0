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

use ringsmtpd_plugin_api::{ConfigError, LogRecord, Plugin, PluginInit};

use super::{Formatted, Lines};

/// Builds `logging/connection_id` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(Formatted::new(Lines::stderr(init)?, format)))
}

/// The line with the connection's id first.
fn format(line: &mut String, record: &LogRecord<'_>) {
    super::write_with_id(line, record, None);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::logging::sink::tests::mem_sink;
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::Level;

    #[test]
    fn id_first() {
        let (sink, mem) = mem_sink();
        let p = Formatted::new(Lines::new(Level::Notice, sink.clone()), format);
        record(Level::Notice, 0xab, "relay", "yes", |r| p.logging(r));
        record(Level::Info, 0xab, "relay", "too verbose", |r| p.logging(r));
        record(Level::Error, 0, "core", "server", |r| p.logging(r));
        assert!(sink.flush(Duration::from_secs(5)));
        assert_eq!(mem.text(), "ab notice relay: yes\n- error core: server\n");
        assert!(build(new, "logging/connection_id", &["loglevel", "7"]).is_ok());
        assert!(build(new, "logging/connection_id", &["9"]).is_err());
    }
}
