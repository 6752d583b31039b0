//! Command-line framing: splits the input into command lines. Only CRLF ends a line (RFC 5321
//! §2.3.8); a line may be at most `max_line` bytes with its CRLF (§4.5.3.1.4, 512 by default).
//!
//! - A longer line is one [`Line::TooLong`] (the session answers 500 and goes on). A partial
//!   line that already fills `max_line` is dropped at once ([`Lines::overflow`]), so a client
//!   cannot make the buffer grow, and the rest of it, up to its LF, becomes the `TooLong`.
//! - Under [`BareNewline::Reject`] a bare LF, or a CR anywhere but before the LF, is
//!   [`Line::BareNewline`] (the session answers 521 and closes: SMTP smuggling). Under
//!   `Normalize` a bare LF ends a line too, and a CR stays in the line for the command parser.

use super::data::BareNewline;

/// What the input holds next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A command line, without its line end.
    Command(&'a [u8]),
    /// A line longer than `max_line`: all of it is consumed.
    TooLong,
    /// A bare CR or LF under [`BareNewline::Reject`].
    BareNewline,
}

/// The framing state of one session's command input.
#[derive(Debug)]
pub struct Lines {
    policy: BareNewline,
    max_line: usize,
    /// The start of an over-long line was dropped: its rest, up to the LF, is skipped.
    discarding: bool,
}

impl Lines {
    pub fn new(policy: BareNewline, max_line: usize) -> Lines {
        Lines {
            policy,
            max_line,
            discarding: false,
        }
    }

    /// The next line of `input` and the bytes it takes (with its line end); `None` when
    /// `input` holds no complete line.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Option<(Line<'a>, usize)> {
        let nl = memchr::memchr(b'\n', input)?;
        let used = nl + 1;
        if std::mem::take(&mut self.discarding) || used > self.max_line {
            return Some((Line::TooLong, used));
        }
        let line = &input[..nl];
        let reject = self.policy == BareNewline::Reject;
        let line = match line.strip_suffix(b"\r") {
            Some(l) => l,
            None if !reject => line,
            None => return Some((Line::BareNewline, used)),
        };
        // A CR inside the line is a bare CR too: a receiver that takes it as a line end
        // would see two commands here.
        if reject && memchr::memchr(b'\r', line).is_some() {
            return Some((Line::BareNewline, used));
        }
        Some((Line::Command(line), used))
    }

    /// For a partial line (`input` after [`Lines::next`] found no complete one): the bytes to
    /// drop now. A partial line of `max_line` bytes can only end too long: it goes, and the
    /// rest of it becomes one [`Line::TooLong`].
    pub fn overflow(&mut self, input: &[u8]) -> usize {
        if input.len() >= self.max_line {
            self.discarding = true;
            input.len()
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` as reads, the way the session does, and names what came out:
    /// `cmd:<text>`, `too long`, `bare`; `rest:<n>` for the partial line left at the end.
    fn frame(policy: BareNewline, max_line: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::new(policy, max_line);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            let mut pos = 0;
            while let Some((line, used)) = lines.next(&buf[pos..]) {
                pos += used;
                seen.push(match line {
                    Line::Command(l) => format!("cmd:{}", String::from_utf8_lossy(l)),
                    Line::TooLong => "too long".to_string(),
                    Line::BareNewline => "bare".to_string(),
                });
            }
            pos += lines.overflow(&buf[pos..]);
            buf.drain(..pos);
        }
        if !buf.is_empty() {
            seen.push(format!("rest:{}", buf.len()));
        }
        seen
    }

    /// A case: its name, the policy, `max_line`, the reads, what comes out.
    type Case = (
        &'static str,
        BareNewline,
        usize,
        &'static [&'static [u8]],
        &'static [&'static str],
    );

    #[test]
    fn framing() {
        use BareNewline::{Normalize, Reject};
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("one line", Reject, 512, &[b"NOOP\r\n"], &["cmd:NOOP"]),
            ("pipelined batch", Reject, 512, &[b"MAIL FROM:<>\r\nRCPT TO:<a@b>\r\nDATA\r\n"],
                &["cmd:MAIL FROM:<>", "cmd:RCPT TO:<a@b>", "cmd:DATA"]),
            ("split across reads", Reject, 512, &[b"NO", b"OP\r", b"\n"], &["cmd:NOOP"]),
            ("partial line waits", Reject, 512, &[b"NOOP\r\nQU"], &["cmd:NOOP", "rest:2"]),
            ("empty line", Reject, 512, &[b"\r\n"], &["cmd:"]),
            ("exactly max_line", Reject, 8, &[b"ABCDEF\r\n"], &["cmd:ABCDEF"]),
            ("one over max_line", Reject, 8, &[b"ABCDEFG\r\nNOOP\r\n"], &["too long", "cmd:NOOP"]),
            ("long line in one read", Reject, 512, &[&[b'x'; 600], b"\r\nNOOP\r\n"],
                &["too long", "cmd:NOOP"]),
            ("long partial dropped, rest is one error", Reject, 8, &[b"ABCDEFGHIJ", b"KL\r\nNOOP\r\n"],
                &["too long", "cmd:NOOP"]),
            ("partial below max_line kept", Reject, 8, &[b"ABCDEFG"], &["rest:7"]),
            ("bare LF refused", Reject, 512, &[b"NOOP\nQUIT\r\n"], &["bare", "cmd:QUIT"]),
            ("bare CR refused", Reject, 512, &[b"NO\rOP\r\n"], &["bare"]),
            ("CR CR LF refused", Reject, 512, &[b"NOOP\r\r\n"], &["bare"]),
            ("bare LF ends a line under normalize", Normalize, 512, &[b"NOOP\nQUIT\r\n"],
                &["cmd:NOOP", "cmd:QUIT"]),
            ("bare CR kept under normalize", Normalize, 512, &[b"NO\rOP\r\n"], &["cmd:NO\rOP"]),
            ("too long beats bare LF", Reject, 4, &[b"ABCDEF\n"], &["too long"]),
        ];
        for (name, policy, max, chunks, want) in cases {
            assert_eq!(frame(*policy, *max, chunks), *want, "{name}");
        }
    }
}
