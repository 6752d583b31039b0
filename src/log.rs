//! The built-in logger: one line per event on stderr, filtered by `loglevel`.
//!
//! Each line is formatted into a per-thread buffer and written with one `write(2)`, so lines
//! from different workers never interleave. Logging plugins (`config/logging`) come later;
//! until then this is qpsmtpd's default STDERR logger.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, Ordering};

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
        let _ = write!(line, "{} ", level.name());
        if conn != 0 {
            let _ = write!(line, "{conn:x} ");
        }
        let _ = writeln!(line, "{source}: {msg}");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    });
}

/// Logs through the built-in logger: `log!(Level::Info, conn, "core", "x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $conn:expr, $source:expr, $($arg:tt)+) => {
        $crate::log::write($level, $conn, $source, format_args!($($arg)+))
    };
}
