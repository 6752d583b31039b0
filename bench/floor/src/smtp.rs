//! The dialogue, shared by both back ends: a fixed reply per verb, the end of DATA, nothing
//! else. A command line is looked at only through its first five bytes (the verb and what
//! follows it) and its length; a message body only for `CRLF.CRLF`. No buffer holds a line: a
//! command or the terminating dot split across reads is carried by a few bytes of state.

use memchr::{memchr, memmem};

pub const BANNER: &[u8] = b"220 floor ESMTP\r\n";
const HELLO: &[u8] = b"250 floor\r\n";
const MAIL: &[u8] = b"250 2.1.0 Ok\r\n";
const RCPT: &[u8] = b"250 2.1.5 Ok\r\n";
const DATA: &[u8] = b"354 End data with <CR><LF>.<CR><LF>\r\n";
const QUEUED: &[u8] = b"250 2.0.0 Ok: queued\r\n";
const OK: &[u8] = b"250 2.0.0 Ok\r\n";
const BYE: &[u8] = b"221 2.0.0 Bye\r\n";
const UNKNOWN: &[u8] = b"502 5.5.2 Error: command not recognized\r\n";
const TOO_LONG: &[u8] = b"500 5.5.2 Error: line too long\r\n";

/// The longest reply one input byte can cause (a bare LF is a line: "502 ..."). A caller that
/// must not see its output buffer grow reserves `MAX_REPLY * input.len()` bytes first.
pub const MAX_REPLY: usize = UNKNOWN.len();

/// The longest command line, CRLF included (RFC 5321 4.5.3.1.4).
const LINE_MAX: u32 = 512;

/// The end of a message body; a body starts as if its CRLF had just been seen.
const END: &[u8] = b"\r\n.\r\n";

/// What the connection does after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Open,
    /// QUIT was answered: send what was written, then close.
    Quit,
}

#[derive(Default)]
pub struct Session {
    /// In a message body.
    data: bool,
    /// In a body: how many bytes of `END` the input so far ends with.
    matched: u8,
    /// In a command: its first bytes, as far as they came.
    head: [u8; 5],
    /// In a command: its length so far (saturating).
    len: u32,
}

impl Session {
    /// Consumes one read's bytes, appends the replies they call for to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Outcome {
        while !input.is_empty() {
            if self.data {
                match self.body(input) {
                    Some(rest) => {
                        self.data = false;
                        out.extend_from_slice(QUEUED);
                        input = rest;
                    }
                    None => return Outcome::Open,
                }
                continue;
            }
            let (line, rest) = match memchr(b'\n', input) {
                Some(i) => (&input[..i], Some(&input[i + 1..])),
                None => (input, None),
            };
            let have = self.len.min(5) as usize;
            let take = (5 - have).min(line.len());
            self.head[have..have + take].copy_from_slice(&line[..take]);
            self.len = self.len.saturating_add(line.len() as u32);
            let Some(rest) = rest else { return Outcome::Open };
            input = rest;
            if self.command(out) == Outcome::Quit {
                return Outcome::Quit;
            }
        }
        Outcome::Open
    }

    /// A command line ended (its LF just seen): its reply.
    fn command(&mut self, out: &mut Vec<u8>) -> Outcome {
        let (len, head) = (self.len, self.head);
        self.len = 0;
        if len + 1 > LINE_MAX {
            out.extend_from_slice(TOO_LONG);
            return Outcome::Open;
        }
        // The verb is four letters, then a space, the CR of CRLF, or the line's end.
        if len < 4 || (len > 4 && !matches!(head[4], b' ' | b'\r')) {
            out.extend_from_slice(UNKNOWN);
            return Outcome::Open;
        }
        let verb = [
            head[0].to_ascii_uppercase(),
            head[1].to_ascii_uppercase(),
            head[2].to_ascii_uppercase(),
            head[3].to_ascii_uppercase(),
        ];
        let reply = match &verb {
            b"EHLO" | b"HELO" => HELLO,
            b"MAIL" => MAIL,
            b"RCPT" => RCPT,
            b"RSET" | b"NOOP" => OK,
            b"DATA" => {
                self.data = true;
                self.matched = 2; // the DATA line's CRLF: a body may be empty
                DATA
            }
            b"QUIT" => {
                out.extend_from_slice(BYE);
                return Outcome::Quit;
            }
            _ => UNKNOWN,
        };
        out.extend_from_slice(reply);
        Outcome::Open
    }

    /// Looks for the end of the body in `input`: what follows it, or None (all consumed).
    fn body<'a>(&mut self, input: &'a [u8]) -> Option<&'a [u8]> {
        // Continue a match that began in an earlier read, one byte at a time (at most four).
        let mut i = 0;
        while self.matched > 0 && i < input.len() {
            self.matched = step(self.matched, input[i]);
            i += 1;
            if self.matched as usize == END.len() {
                return Some(&input[i..]);
            }
        }
        let rest = &input[i..];
        if let Some(at) = memmem::find(rest, END) {
            return Some(&rest[at + END.len()..]);
        }
        // No end here: how much of one the input ends with (a match is at most 4 bytes long).
        if !rest.is_empty() {
            self.matched = rest[rest.len().saturating_sub(END.len() - 1)..]
                .iter()
                .fold(0, |m, &b| step(m, b));
        }
        None
    }
}

/// One byte through the matcher of `END`: on a mismatch only a CR can start a new match (no
/// proper suffix of a partial match other than "\r" is a prefix of `END`).
fn step(matched: u8, byte: u8) -> u8 {
    if byte == END[matched as usize] {
        matched + 1
    } else if byte == b'\r' {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole dialogue, with the replies each part must cause.
    const DIALOGUE: &[(&[u8], &[u8])] = &[
        (b"EHLO client.test\r\n", HELLO),
        (b"MAIL FROM:<a@example.org>\r\n", MAIL),
        (b"RCPT TO:<b@example.com>\r\n", RCPT),
        (b"DATA\r\n", DATA),
        (b"Subject: x\r\n\r\n..not the end\r\n.x\r\nstill\r\n\r\n", b""),
        (b".\r\n", QUEUED),
        (b"rset\r\n", OK),
        (b"MAILX\r\n", UNKNOWN),
        (b"NOOP\r\n", OK),
        (b"HELO x\r\n", HELLO),
        (b"DATA\r\n", DATA),
        (b".\r\n", QUEUED), // an empty body
        (b"RCPT\r\n", RCPT),
        (b"QUIT\r\n", BYE),
    ];

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Outcome) {
        let (mut s, mut out) = (Session::default(), Vec::new());
        let mut last = Outcome::Open;
        for c in chunks {
            last = s.feed(c, &mut out);
        }
        (out, last)
    }

    fn expected() -> Vec<u8> {
        DIALOGUE.iter().flat_map(|(_, r)| r.iter().copied()).collect()
    }

    #[test]
    fn replies_are_the_same_however_the_input_is_split() {
        let all: Vec<u8> = DIALOGUE.iter().flat_map(|(c, _)| c.iter().copied()).collect();
        assert_eq!(run(&[&all]), (expected(), Outcome::Quit), "in one read");
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(run(&bytes), (expected(), Outcome::Quit), "a byte per read");
        for size in [2, 3, 4, 5, 7] {
            let chunks: Vec<&[u8]> = all.chunks(size).collect();
            assert_eq!(run(&chunks), (expected(), Outcome::Quit), "{size} bytes per read");
        }
    }

    #[test]
    fn the_end_of_data_split_at_every_byte() {
        for cut in 0..=5 {
            let body = b"x\r\n.\r\n";
            let (a, b) = body.split_at(cut + 1);
            let (out, _) = run(&[b"DATA\r\n", a, b]);
            assert_eq!(out, [DATA, QUEUED].concat(), "cut after {}", cut + 1);
        }
        // Almost-ends, split around their CR: not the end.
        let (out, _) = run(&[b"DATA\r\n", b"a\r\n.\r", b"\r\n", b"..\r\n", b"\r\r\n.\r\r\n.x"]);
        assert_eq!(out, DATA);
    }

    #[test]
    fn what_follows_the_end_of_data_in_the_same_read_is_a_command() {
        let (out, q) = run(&[b"DATA\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\nNOOP\r\n"]);
        assert_eq!((out, q), ([DATA, QUEUED, OK, BYE].concat(), Outcome::Quit));
    }

    #[test]
    fn overlong_and_short_lines() {
        let long = [b'N'; 600];
        let (out, _) = run(&[&long[..300], &long[300..], b"\r\n", b"NOO\r\n", b"\n", b"NOOP\n"]);
        assert_eq!(out, [TOO_LONG, UNKNOWN, UNKNOWN, OK].concat());
    }

}
