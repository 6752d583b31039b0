//! The built-in logger: one line per event on stderr, filtered by `loglevel`.
//!
//! Each line is formatted into a per-thread buffer and written with one `write(2)`, so lines
//! from different workers never interleave. The source and message are written through
//! [`Escape`]: a control character from the network (a user name with CR LF, a DNS answer)
//! shows as `\xNN` and cannot start a line of its own, and a message is cut at
//! [`MAX_MSG`]. Without logging plugins (`config/logging`) this is qpsmtpd's default STDERR
//! logger.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

use ringsmtpd_plugin_api::escape::{Escape, MAX_MSG};
use ringsmtpd_plugin_api::Level;

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the threshold: lines above it (less important) are dropped.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes `<level> <conn> <source>: <msg>`; `conn` 0 means "not about a connection".
pub fn write(level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return; // a log call from inside a log call (a panic while formatting): drop it
        };
        line.clear();
        format_line(&mut line, level, conn, source, msg);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    });
}

/// Formats one line into `line`: the level, the connection, then the escaped source and
/// message, and the newline.
fn format_line(
    line: &mut String,
    level: Level,
    conn: u64,
    source: &str,
    msg: std::fmt::Arguments<'_>,
) {
    let _ = write!(line, "{} ", level.name());
    if conn != 0 {
        let _ = write!(line, "{conn:x} ");
    }
    let mut esc = Escape::new(line, MAX_MSG);
    let _ = write!(esc, "{source}: {msg}");
    esc.finish();
    line.push('\n');
}

/// Logs through the built-in logger: `log!(Level::Info, conn, "core", "x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $conn:expr, $source:expr, $($arg:tt)+) => {
        $crate::log::write($level, $conn, $source, format_args!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_cannot_write_a_log_line_of_its_own() {
        let mut line = String::new();
        let user = "joe\r\nerror 0 core: server compromised";
        format_line(
            &mut line,
            Level::Warn,
            0x2a,
            "core",
            format_args!("AUTH failed for {user}"),
        );
        assert_eq!(
            line,
            "warn 2a core: AUTH failed for joe\\x0d\\x0aerror 0 core: server compromised\n"
        );
        assert_eq!(line.lines().count(), 1);
    }
}
