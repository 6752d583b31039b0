//! Log lines that text from the network cannot forge: [`Escape`] writes control characters
//! (CR, LF, ESC...) as `\xNN` and cuts a line at a limit, so a user name or a DNS answer
//! with a newline cannot start a fake log line, and a huge one cannot flood the log. The
//! built-in logger and the logging plugins write every line through it.

use std::fmt;

/// The longest message text a line carries; the rest is cut and marked with `...`. Keeps one
/// pathological line from filling the writer's buffer by itself.
pub const MAX_MSG: usize = 8 * 1024;

/// A `fmt::Write` that escapes control characters and stops after `limit` bytes.
pub struct Escape<'a> {
    out: &'a mut String,
    limit: usize,
    cut: bool,
}

impl<'a> Escape<'a> {
    /// Appends to `out`, at most `limit` bytes more.
    pub fn new(out: &'a mut String, limit: usize) -> Escape<'a> {
        let limit = out.len().saturating_add(limit);
        Escape {
            out,
            limit,
            cut: false,
        }
    }

    /// Marks a cut line with `...`.
    pub fn finish(self) {
        if self.cut {
            self.out.push_str("...");
        }
    }
}

impl fmt::Write for Escape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let plain = s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
        if plain && self.out.len() + s.len() <= self.limit {
            self.out.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if self.out.len() + 4 > self.limit {
                self.cut = true;
                break;
            }
            if c.is_control() && c != '\t' {
                let _ = write!(self.out, "\\x{:02x}", u32::from(c));
            } else {
                self.out.push(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn control_characters_are_escaped_and_long_lines_cut() {
        let mut line = String::new();
        let mut esc = Escape::new(&mut line, 64);
        let _ = write!(esc, "user joe\r\nerror 0 core: forged\t\u{1b}[31m");
        esc.finish();
        assert_eq!(line, "user joe\\x0d\\x0aerror 0 core: forged\t\\x1b[31m");
        let mut line = String::from("> ");
        let mut esc = Escape::new(&mut line, 10);
        let _ = write!(esc, "{}", "y".repeat(100));
        esc.finish();
        assert!(line.starts_with("> yyyyyy") && line.ends_with("...") && line.len() <= 2 + 10 + 3);
    }
}
