//! The logging plugins (`config/logging`): qpsmtpd's `plugins/logging/*`.
//!
//! A logging plugin's [`Plugin::logging`] hook runs on the worker thread for every log line,
//! so it must never block. Each plugin here formats its line and copies it into a [`sink::Sink`]
//! (a bounded in-memory buffer); one background thread per destination and process does the
//! writes. See `sink.rs` for the design and its limits.
//!
//! | plugin | destination |
//! |---|---|
//! | [`warn`] | stderr, like the built-in logger |
//! | [`file`] | a file (strftime path) or a pipe to a command |
//! | [`syslog`] | the syslog socket (unix datagram or UDP) |
//! | [`adaptive`] | stderr; replays the lines of accepted messages with a prefix |
//! | [`devnull`] | nowhere |
//! | [`connection_id`], [`transaction_id`] | stderr, the line prefixed with the id |
//!
//! All of them return `DECLINED`, as qpsmtpd's do: every plugin of `config/logging` sees every
//! line and filters by its own level. The engine's stderr logger runs only when no logging
//! plugin is configured, so a configured one (even `devnull`) replaces it.
//!
//! [`Plugin::logging`]: ringsmtpd_plugin_api::Plugin::logging

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::format::{Fixed, Item, Numeric, StrftimeItems};
use chrono::{DateTime, Local};
use ringsmtpd_plugin_api::{
    ConfigError, Hook, HookSet, Level, LogRecord, Outcome, Plugin, PluginInit,
};

use ringsmtpd_plugin_api::escape::{Escape, MAX_MSG};
use sink::Sink;

pub mod adaptive;
pub mod connection_id;
pub mod devnull;
pub mod file;
pub mod sink;
pub mod syslog;
pub mod transaction_id;
pub mod warn;

/// Waits until every logging writer of the process has written what it was given (at most
/// `timeout` in all); false if some did not finish. For the server's exit, after the workers
/// stopped, so the last lines are not lost with the process.
pub fn flush_all(timeout: Duration) -> bool {
    sink::flush_all(timeout)
}

/// The wall clock as (seconds, nanoseconds) since the epoch.
pub(crate) fn now() -> (i64, u32) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => (0, 0),
    }
}

/// Writes `<level> <conn> <source>: <msg>` (the built-in logger's format, `conn` in hex and
/// left out when 0) into `line`. Control characters are escaped (`\x0a`): a message can hold
/// text from the network (a HELO name, an address), and a raw newline would forge a line.
pub(crate) fn write_body(line: &mut String, record: &LogRecord<'_>) {
    line.push_str(record.level.name());
    line.push(' ');
    if record.conn != 0 {
        let _ = write!(line, "{:x} ", record.conn);
    }
    write_source_msg(line, record);
}

/// `<id> <level> <source>: <msg>` and a newline, the line of `connection_id` and
/// `transaction_id`: `id` is the transaction's, else the connection's in hex (`-` for the
/// server's own lines).
pub(crate) fn write_with_id(line: &mut String, record: &LogRecord<'_>, id: Option<&str>) {
    match id {
        Some(id) if !id.is_empty() => line.push_str(id),
        _ if record.conn == 0 => line.push('-'),
        _ => {
            let _ = write!(line, "{:x}", record.conn);
        }
    }
    line.push(' ');
    line.push_str(record.level.name());
    line.push(' ');
    write_source_msg(line, record);
    line.push('\n');
}

/// `<source>: <msg>`, escaped and cut at [`MAX_MSG`].
pub(crate) fn write_source_msg(line: &mut String, record: &LogRecord<'_>) {
    let mut esc = Escape::new(line, MAX_MSG);
    let _ = esc.write_str(record.source);
    let _ = esc.write_str(": ");
    let _ = write!(esc, "{}", record.msg);
    esc.finish();
}

/// Where a logging plugin writes its lines one by one: its level, its writer and the line
/// each record is formatted into (one buffer, reused).
pub(crate) struct Lines {
    level: Level,
    sink: Arc<Sink>,
    line: RefCell<String>,
}

impl Lines {
    pub(crate) fn new(level: Level, sink: Arc<Sink>) -> Lines {
        Lines {
            level,
            sink,
            line: RefCell::new(String::new()),
        }
    }

    /// The lines of `logging/warn`, `connection_id` and `transaction_id`: to stderr, at or
    /// below the level of their one argument.
    pub(crate) fn stderr(init: &PluginInit<'_>) -> Result<Lines, ConfigError> {
        Ok(Lines::new(level_arg(init)?, stderr_sink(init)?))
    }

    /// Formats `record` with `format` and hands the line to the writer, if the record is at or
    /// below the level. `DECLINED` always: every logging plugin sees every line.
    pub(crate) fn write(
        &self,
        record: &LogRecord<'_>,
        format: impl FnOnce(&mut String),
    ) -> Outcome {
        if record.level > self.level {
            return Outcome::Declined;
        }
        let Ok(mut line) = self.line.try_borrow_mut() else {
            return Outcome::Declined;
        };
        line.clear();
        format(&mut line);
        self.sink.push(line.as_bytes(), None, false);
        Outcome::Declined
    }
}

/// A logging plugin that writes every line, as `format` makes it, and nothing else
/// (`logging/warn`, `logging/connection_id`).
pub(crate) struct Formatted {
    lines: Lines,
    format: fn(&mut String, &LogRecord<'_>),
}

impl Formatted {
    pub(crate) fn new(lines: Lines, format: fn(&mut String, &LogRecord<'_>)) -> Formatted {
        Formatted { lines, format }
    }
}

impl Plugin for Formatted {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Logging])
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        self.lines.write(record, |line| (self.format)(line, record))
    }
}

/// The process's stderr writer, for a plugin's line.
pub(crate) fn stderr_sink(init: &PluginInit<'_>) -> Result<Arc<Sink>, ConfigError> {
    sink::stderr().map_err(|e| init.error(format!("cannot start the log writer: {e}")))
}

/// A log level argument: a qpsmtpd number (`0`..`7`) or name (`LOGINFO`, `info`, `LOG_INFO`).
pub(crate) fn parse_level(
    init: &PluginInit<'_>,
    key: &str,
    value: &str,
) -> Result<Level, ConfigError> {
    let v = value.trim();
    let named = v
        .strip_prefix("LOG_")
        .or_else(|| v.strip_prefix("log_"))
        .unwrap_or(v);
    let numeric = named
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'+' || b == b'-');
    let ok = !numeric
        || (named.bytes().all(|b| b.is_ascii_digit()) && named.parse::<u8>().is_ok_and(|n| n <= 7));
    match (ok, Level::parse(named)) {
        (true, Some(level)) => Ok(level),
        _ => Err(init.error(format!(
            "{key} must be 0-7 or a level name (LOGDEBUG ... LOGEMERG), not '{value}'"
        ))),
    }
}

/// The error for `reject`/`reject_type` on a logging plugin: there is nothing to reject.
pub(crate) fn no_reject(init: &PluginInit<'_>, key: &str) -> ConfigError {
    init.error(format!("'{key}' does not apply to a logging plugin"))
}

/// The one optional level argument of `logging/warn`, `connection_id`, `transaction_id`:
/// `<level>` or `loglevel <level>`; default LOGWARN.
pub(crate) fn level_arg(init: &PluginInit<'_>) -> Result<Level, ConfigError> {
    match init.args {
        [] => Ok(Level::Warn),
        [key, v] if key == "loglevel" => parse_level(init, "loglevel", v),
        [key, ..] if key == "reject" || key == "reject_type" => Err(no_reject(init, key)),
        [v] => parse_level(init, "the level", v),
        [_, extra, ..] => Err(init.unknown(extra)),
    }
}

/// This host's name for the `host[pid]` of file lines and syslog headers: config `me`, else
/// the kernel's host name. Read when the plugin is built, never per line.
pub(crate) fn host_name(init: &PluginInit<'_>) -> String {
    if let Ok(Some(me)) = init.config.first("me") {
        if let Some(word) = me.text.split_whitespace().next() {
            return word.to_string();
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A validated strftime format in local time, with the text of the last second cached: the
/// format runs at most once a second unless it shows fractions of a second.
pub(crate) struct Strftime {
    fmt: String,
    subsec: bool,
    cache: RefCell<(i64, String)>,
}

impl Strftime {
    /// Checks `fmt`; an unknown `%` conversion is an error.
    pub(crate) fn new(fmt: &str) -> Result<Strftime, String> {
        let mut subsec = false;
        for item in StrftimeItems::new(fmt) {
            match item {
                Item::Error => return Err(format!("bad strftime format '{fmt}'")),
                Item::Fixed(
                    Fixed::Nanosecond
                    | Fixed::Nanosecond3
                    | Fixed::Nanosecond6
                    | Fixed::Nanosecond9
                    | Fixed::RFC3339
                    | Fixed::Internal(_),
                )
                | Item::Numeric(Numeric::Nanosecond, _) => subsec = true,
                _ => {}
            }
        }
        Ok(Strftime {
            fmt: fmt.to_string(),
            subsec,
            cache: RefCell::new((i64::MIN, String::new())),
        })
    }

    /// Appends the time `secs`.`nanos` in this format.
    pub(crate) fn render(&self, secs: i64, nanos: u32, out: &mut String) {
        if self.subsec {
            format_time(&self.fmt, secs, nanos, out);
            return;
        }
        let mut cache = self.cache.borrow_mut();
        if cache.0 != secs {
            cache.1.clear();
            format_time(&self.fmt, secs, 0, &mut cache.1);
            cache.0 = secs;
        }
        out.push_str(&cache.1);
    }
}

/// strftime in local time (the `TZ` variable or `/etc/localtime`, as libc does).
pub(crate) fn format_time(fmt: &str, secs: i64, nanos: u32, out: &mut String) {
    if let Some(t) = DateTime::from_timestamp(secs, nanos) {
        let _ = write!(out, "{}", t.with_timezone(&Local).format(fmt));
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use ringsmtpd_plugin_api::testing::build_args;
    use ringsmtpd_plugin_api::{ConfigError, Factory, Level, LogRecord, Plugin};

    /// The config of the logging tests: this host is `mx.example.test`.
    pub const ME: &[(&str, &str)] = &[("me", "mx.example.test")];

    /// Builds plugin `name` with `args` through its factory.
    pub fn build(
        factory: Factory,
        name: &str,
        args: &[&str],
    ) -> Result<Box<dyn Plugin>, ConfigError> {
        build_args(factory, name, args, ME)
    }

    /// Calls `f` with a record.
    pub fn record<R>(
        level: Level,
        conn: u64,
        source: &str,
        msg: &str,
        f: impl FnOnce(&LogRecord<'_>) -> R,
    ) -> R {
        let args = format_args!("{msg}");
        f(&LogRecord {
            level,
            conn,
            source,
            msg: &args,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::record;
    use super::*;

    #[test]
    fn body_format_and_escaping() {
        let mut line = String::new();
        record(
            Level::Info,
            0x10000000001,
            "helo",
            "bad\r\nname\x7f\tok",
            |r| write_body(&mut line, r),
        );
        assert_eq!(line, "info 10000000001 helo: bad\\x0d\\x0aname\\x7f\tok");
        line.clear();
        record(Level::Warn, 0, "core", "é ok", |r| {
            write_body(&mut line, r)
        });
        assert_eq!(line, "warn core: é ok");
    }

    #[test]
    fn long_messages_are_cut() {
        let mut line = String::new();
        let long = "x".repeat(MAX_MSG * 2);
        record(Level::Info, 1, "p", &long, |r| write_body(&mut line, r));
        assert!(line.len() <= MAX_MSG + 20, "{}", line.len());
        assert!(line.ends_with("x..."));
        // Cut inside escaped text too, and never inside a UTF-8 sequence.
        line.clear();
        let long = "é\n".repeat(MAX_MSG);
        record(Level::Info, 1, "p", &long, |r| write_body(&mut line, r));
        assert!(line.len() <= MAX_MSG + 20 && line.ends_with("..."));
    }

    #[test]
    fn levels() {
        use super::test_util::build;
        // parse_level is reached through a plugin's arguments.
        for (arg, ok) in [
            ("6", true),
            ("LOGINFO", true),
            ("LOG_INFO", true),
            ("debug", true),
            ("8", false),
            ("+1", false),
            ("-1", false),
            ("LOUD", false),
        ] {
            let r = build(super::warn::new, "logging/warn", &[arg]);
            assert_eq!(r.is_ok(), ok, "{arg}");
        }
    }

    #[test]
    fn strftime_validation_and_cache() {
        assert!(Strftime::new("%Y-%m-%d %T").is_ok());
        assert!(Strftime::new("%Q").is_err());
        let s = Strftime::new("%s").unwrap();
        assert!(!s.subsec);
        let mut out = String::new();
        s.render(1_000_000_000, 5, &mut out);
        assert_eq!(out, "1000000000");
        out.clear();
        s.render(1_000_000_000, 999, &mut out);
        assert_eq!(out, "1000000000", "same second: cached");
        let f = Strftime::new("%s.%3f").unwrap();
        assert!(f.subsec);
        out.clear();
        f.render(1_000_000_000, 123_000_000, &mut out);
        assert_eq!(out, "1000000000.123");
    }
}
