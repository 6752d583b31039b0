//! Sans-IO receiver for the content of the DATA command (RFC 5321 §4.1.1.4).
//!
//! The client sends the message as lines ending in CRLF, with every line that
//! starts with "." sent with one more "." in front (dot-stuffing, §4.5.2), and ends
//! the message with a line holding a single ".": `CRLF . CRLF`. [`DataReceiver`]
//! takes the bytes as they arrive, split anywhere, and appends the message content
//! to a caller's buffer: dot-unstuffed, with CRLF line endings, without the final
//! ".\r\n".
//!
//! # Why bare CR and LF matter: SMTP smuggling
//!
//! A server that accepts some other line ending as a terminator ("\n.\n",
//! "\r\n.\r", "\r.\r\n", ...) disagrees with the next hop about where a message
//! ends, and a sender can hide a second message inside the first one. Only
//! `CRLF . CRLF` ends data here, and a bare CR or LF (one not part of a CRLF) is
//! either refused ([`BareNewline::Reject`], like Postfix `smtpd_forbid_bare_newline`)
//! or rewritten to CRLF ([`BareNewline::Normalize`]) in a way that never makes a
//! "." line delimited by a bare newline an end of data.
//!
//! # Speed
//!
//! Content is copied from the input to the output in runs: the receiver only
//! looks at each line start (for a ".") and at the CR/LF bytes, found with
//! `memchr2`; everything else is copied with one `extend_from_slice` per run of
//! unmodified input, which usually spans many lines. Nothing is allocated per
//! line. The same line scanner ([`LineScan`]) serves BDAT (`super::bdat`).

use memchr::memchr2;

/// What to do with a bare CR or LF (one not part of CRLF) in message content.
///
/// RFC 5321 §2.3.8: "CR and LF MUST only occur together as CRLF"; a server must
/// not guess what a bare one means, because the next hop may guess otherwise
/// (SMTP smuggling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareNewline {
    /// Stop at the first bare CR or LF and report [`DataStatus::BareNewline`]. The
    /// caller replies 5xx and disconnects: after an ambiguous line end nobody
    /// knows where the client thinks the data ends.
    Reject,
    /// Write each bare CR or LF as CRLF. A "." line ends the data only when it is
    /// preceded *and* terminated by a real CRLF; a "." line delimited by a bare
    /// newline is content and is stored as the line ".".
    Normalize,
}

/// The result of [`DataReceiver::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum DataStatus {
    /// All input was consumed; the message is not complete yet.
    NeedMore,
    /// The `CRLF . CRLF` terminator was consumed; the message is complete.
    Done,
    /// A bare CR or LF was seen under [`BareNewline::Reject`]. Final until
    /// `reset()`.
    BareNewline,
    /// A line is longer than `max_line`. A report, not a stop: feeding the rest
    /// of the input continues where it left off and loses nothing.
    LineTooLong,
}

/// What [`LineScan::scan_line`] saw.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// The input ended inside a line (possibly just after a CR whose meaning
    /// depends on the next byte).
    Exhausted,
    /// A line ended; `crlf` tells whether with a real CRLF or a normalized bare
    /// CR/LF.
    Ended { crlf: bool },
    /// The current line just became longer than `max_line` (reported once per
    /// line). The input position is at the CR/LF or input end that stopped the
    /// run.
    TooLong,
    /// A bare CR or LF under [`BareNewline::Reject`].
    Bare,
}

/// Line-ending, line-length and header-end bookkeeping shared by DATA and BDAT.
///
/// The scanner copies input to the output in *spans*: `input[start..pos]` is
/// input that will be copied unchanged; it is flushed with one
/// `extend_from_slice` only when the output must differ from the input (a
/// stuffing dot to drop, a bare newline to rewrite) or at the end of a call.
/// While a span is open, the output offset of `input[pos]` is
/// `emitted + (pos - start)`.
#[derive(Debug)]
pub(super) struct LineScan {
    policy: BareNewline,
    max_line: usize,
    /// Input bytes of the current line so far, without its line ending; for
    /// DATA this counts a stuffing dot (the line as sent, which is also the line
    /// as a downstream will see it once our queue stuffs it again).
    line_len: usize,
    /// `LineTooLong` was already reported for the current line.
    long_reported: bool,
    /// The last input byte was a CR whose meaning depends on the next byte.
    pending_cr: bool,
    /// Bytes appended to the output (flushed spans and explicit emits).
    emitted: u64,
    header_end: Option<u64>,
}

impl LineScan {
    pub(super) fn new(policy: BareNewline, max_line: usize) -> LineScan {
        LineScan {
            policy,
            // At least 1, so that the terminating "." line always fits.
            max_line: max_line.max(1),
            line_len: 0,
            long_reported: false,
            pending_cr: false,
            emitted: 0,
            header_end: None,
        }
    }

    pub(super) fn reset(&mut self) {
        *self = LineScan::new(self.policy, self.max_line);
    }

    pub(super) fn policy(&self) -> BareNewline {
        self.policy
    }

    pub(super) fn emitted(&self) -> u64 {
        self.emitted
    }

    pub(super) fn header_end(&self) -> Option<u64> {
        self.header_end
    }

    /// Output offset of `input[pos]` while the span `input[start..pos]` is open.
    fn out_pos(&self, start: usize, pos: usize) -> u64 {
        self.emitted + pos.saturating_sub(start) as u64
    }

    /// Copies the open span `input[*start..pos]` to `out` and starts a new one at
    /// `pos`.
    pub(super) fn flush(&mut self, input: &[u8], start: &mut usize, pos: usize, out: &mut Vec<u8>) {
        let span = input.get(*start..pos).unwrap_or_default();
        out.extend_from_slice(span);
        self.emitted += span.len() as u64;
        *start = pos;
    }

    /// Appends bytes that are not in the input; the caller has flushed the span.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(bytes);
        self.emitted += bytes.len() as u64;
    }

    /// Starts a line whose first input byte (a stuffing or terminating ".") is
    /// not copied but counts toward the line length.
    pub(super) fn start_dot_line(&mut self) {
        self.line_len = 1;
    }

    /// Appends a whole line that is not in the input (DATA's content "." line),
    /// ending it. The caller has flushed the span.
    pub(super) fn emit_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.emit(line, out);
        self.end_line(self.emitted);
    }

    /// Bookkeeping at a line end; `out_pos` is the output offset just past it.
    /// The first empty line ends the header section (RFC 5322 §2.1).
    fn end_line(&mut self, out_pos: u64) {
        if self.line_len == 0 && self.header_end.is_none() {
            self.header_end = Some(out_pos);
        }
        self.line_len = 0;
        self.long_reported = false;
    }

    /// Adds `n` bytes to the current line; true if that makes the line too
    /// long for the first time.
    fn count(&mut self, n: usize) -> bool {
        self.line_len = self.line_len.saturating_add(n);
        if self.line_len > self.max_line && !self.long_reported {
            self.long_reported = true;
            return true;
        }
        false
    }

    /// Scans from `input[*pos]` to the end of the current line or of the input,
    /// leaving the line's bytes in the open span (and rewriting a bare newline
    /// under `Normalize`).
    pub(super) fn scan_line(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        start: &mut usize,
        out: &mut Vec<u8>,
    ) -> Line {
        if self.pending_cr {
            let Some(&next) = input.get(*pos) else {
                return Line::Exhausted;
            };
            self.pending_cr = false;
            return self.after_cr(next, pos, start, input, out);
        }
        let rest = input.get(*pos..).unwrap_or_default();
        let Some(k) = memchr2(b'\r', b'\n', rest) else {
            *pos = input.len();
            return if self.count(rest.len()) {
                Line::TooLong
            } else {
                Line::Exhausted
            };
        };
        *pos += k;
        if self.count(k) {
            return Line::TooLong;
        }
        if rest.get(k) == Some(&b'\r') {
            // The CR stays in the span: it is output whatever follows.
            *pos += 1;
            match input.get(*pos) {
                Some(&next) => self.after_cr(next, pos, start, input, out),
                None => {
                    self.pending_cr = true;
                    Line::Exhausted
                }
            }
        } else {
            // A bare LF at input[*pos].
            match self.policy {
                BareNewline::Reject => Line::Bare,
                BareNewline::Normalize => {
                    self.flush(input, start, *pos, out);
                    self.emit(b"\r", out);
                    // The LF opens the next span.
                    *pos += 1;
                    self.end_line(self.out_pos(*start, *pos));
                    Line::Ended { crlf: false }
                }
            }
        }
    }

    /// Decides a CR (already in the span, at `input[*pos - 1]` or in an earlier
    /// input) by the byte after it, `next`, at `input[*pos]`.
    fn after_cr(
        &mut self,
        next: u8,
        pos: &mut usize,
        start: &mut usize,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Line {
        if next == b'\n' {
            *pos += 1;
            self.end_line(self.out_pos(*start, *pos));
            return Line::Ended { crlf: true };
        }
        match self.policy {
            BareNewline::Reject => Line::Bare,
            BareNewline::Normalize => {
                self.flush(input, start, *pos, out);
                self.emit(b"\n", out);
                self.end_line(self.emitted);
                Line::Ended { crlf: false }
            }
        }
    }

    /// At the end of the content (BDAT's LAST chunk): decides a trailing CR.
    /// Returns `Bare` under `Reject`, `Ended` if a CR was normalized, else
    /// `Exhausted`.
    pub(super) fn end_of_input(&mut self, out: &mut Vec<u8>) -> Line {
        if !self.pending_cr {
            return Line::Exhausted;
        }
        match self.policy {
            BareNewline::Reject => Line::Bare,
            BareNewline::Normalize => {
                self.pending_cr = false;
                self.emit(b"\n", out);
                self.end_line(self.emitted);
                Line::Ended { crlf: false }
            }
        }
    }
}

/// Where the receiver is in the DATA stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The next byte starts a line.
    LineStart,
    /// The line so far is "." (not copied).
    Dot,
    /// The line so far is ".\r" (not copied).
    DotCr,
    /// Inside a line (the dot, if any, already dropped).
    InLine,
    /// The terminator was consumed.
    Done,
    /// A bare newline under `Reject`.
    Failed,
}

/// Receives the DATA stream (RFC 5321 §4.1.1.4) incrementally; see the module
/// docs.
///
/// ```ignore
/// let mut rx = DataReceiver::new(BareNewline::Reject, 998);
/// let mut msg = Vec::new();
/// let (used, status) = rx.feed(b"Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n", &mut msg);
/// assert_eq!(status, DataStatus::Done);
/// assert_eq!(msg, b"Subject: hi\r\n\r\n.dot\r\n");
/// assert_eq!(rx.header_end(), Some(15));
/// // input[used..] == b"QUIT\r\n": the next pipelined command (RFC 2920).
/// ```
#[derive(Debug)]
pub struct DataReceiver {
    lines: LineScan,
    state: State,
    /// The previous line ended with a real CRLF, or there was none (RFC 5321
    /// §4.1.1.4: a DATA stream that starts with ".\r\n" is an empty message).
    /// Under `Normalize` a "." line only ends the data when this holds.
    after_crlf: bool,
}

impl DataReceiver {
    /// `max_line`: the longest line accepted without a [`DataStatus::LineTooLong`]
    /// report, in bytes as sent (a stuffing dot counts), excluding CRLF. RFC 5321
    /// §4.5.3.1.6 allows 998. Values below 1 are treated as 1.
    pub fn new(policy: BareNewline, max_line: usize) -> DataReceiver {
        DataReceiver {
            lines: LineScan::new(policy, max_line),
            state: State::LineStart,
            after_crlf: true,
        }
    }

    /// Consumes bytes of the DATA stream from `input`, appends the message
    /// content to `out` (dot-unstuffed, CRLF line endings, without the final
    /// ".\r\n"), returns (bytes of input consumed, status).
    ///
    /// - `NeedMore`: all input was consumed.
    /// - `Done`: `input[consumed..]` are the pipelined commands that followed the
    ///   end of data (RFC 2920). Further calls return `(0, Done)` until `reset()`.
    /// - `LineTooLong`: `out` holds everything up to `input[consumed]`; call
    ///   `feed(&input[consumed..], ..)` to go on (e.g. to find the end of data and
    ///   then refuse the message).
    /// - `BareNewline`: `input[consumed]` (or the byte just before it, for a
    ///   bare CR) is the offender; `out` is garbage. Further calls return
    ///   `(0, BareNewline)` until `reset()`.
    ///
    /// The output is *not* dot-stuffed: whoever sends it on over SMTP must stuff
    /// it again. Under `Normalize` it may contain the line "." (from a "." line
    /// delimited by a bare newline).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, DataStatus) {
        let mut pos = 0;
        let mut start = 0;
        let status = self.run(input, &mut pos, &mut start, out);
        self.lines.flush(input, &mut start, pos, out);
        (pos, status)
    }

    fn run(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        start: &mut usize,
        out: &mut Vec<u8>,
    ) -> DataStatus {
        let normalize = self.lines.policy() == BareNewline::Normalize;
        loop {
            match self.state {
                State::Done => return DataStatus::Done,
                State::Failed => return DataStatus::BareNewline,
                State::LineStart => {
                    let Some(&b) = input.get(*pos) else {
                        return DataStatus::NeedMore;
                    };
                    if b == b'.' {
                        // §4.5.2: drop the first dot (stuffing, or the
                        // terminator's dot); the span restarts after it.
                        self.lines.flush(input, start, *pos, out);
                        *pos += 1;
                        *start = *pos;
                        self.lines.start_dot_line();
                        self.state = State::Dot;
                    } else {
                        self.state = State::InLine;
                    }
                }
                State::Dot => {
                    let Some(&b) = input.get(*pos) else {
                        return DataStatus::NeedMore;
                    };
                    match b {
                        b'\r' => {
                            *pos += 1;
                            *start = *pos;
                            self.state = State::DotCr;
                        }
                        b'\n' if normalize => {
                            // ".\n": a "." line ended by a bare LF is content.
                            *pos += 1;
                            *start = *pos;
                            self.lines.emit_line(b".\r\n", out);
                            self.after_crlf = false;
                            self.state = State::LineStart;
                        }
                        b'\n' => return self.fail(),
                        // A stuffed line: its first dot is already dropped.
                        _ => self.state = State::InLine,
                    }
                }
                State::DotCr => {
                    let Some(&b) = input.get(*pos) else {
                        return DataStatus::NeedMore;
                    };
                    if b == b'\n' {
                        *pos += 1;
                        *start = *pos;
                        if self.after_crlf {
                            self.state = State::Done;
                            return DataStatus::Done;
                        }
                        // Only under Normalize: "\n.\r\n" or "\r.\r\n" is content.
                        self.lines.emit_line(b".\r\n", out);
                        self.after_crlf = true;
                    } else if normalize {
                        // ".\r" + something else: a bare CR; `b` starts the next
                        // line.
                        self.lines.emit_line(b".\r\n", out);
                        self.after_crlf = false;
                    } else {
                        return self.fail();
                    }
                    self.state = State::LineStart;
                }
                State::InLine => match self.lines.scan_line(input, pos, start, out) {
                    Line::Exhausted => return DataStatus::NeedMore,
                    Line::Ended { crlf } => {
                        self.after_crlf = crlf;
                        self.state = State::LineStart;
                    }
                    Line::TooLong => return DataStatus::LineTooLong,
                    Line::Bare => return self.fail(),
                },
            }
        }
    }

    fn fail(&mut self) -> DataStatus {
        self.state = State::Failed;
        DataStatus::BareNewline
    }

    /// Offset in the output (counting all bytes emitted since `new`/`reset`) just
    /// past the first empty line, i.e. where the body starts (RFC 5322 §2.1).
    /// `None` until an empty line is seen, so also for a message with no body
    /// (and no empty line) at all. A message whose first line is empty has no
    /// header fields and `header_end() == Some(2)`: the value is always the
    /// body's offset, and the header section is `out[..header_end - 2]`.
    /// Works across `feed()` calls; the empty line is found after
    /// normalization.
    pub fn header_end(&self) -> Option<u64> {
        self.lines.header_end()
    }

    /// Total bytes appended to `out` so far since `new`/`reset`.
    pub fn emitted(&self) -> u64 {
        self.lines.emitted()
    }

    /// Forgets everything about the current message (same policy and limit).
    pub fn reset(&mut self) {
        self.lines.reset();
        self.state = State::LineStart;
        self.after_crlf = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: BareNewline = BareNewline::Reject;
    const N: BareNewline = BareNewline::Normalize;
    const BIG: usize = usize::MAX;

    /// Result of feeding a whole stream: total consumed, final status, output,
    /// header end, and the number of LineTooLong reports (continuing after each).
    #[derive(Debug, PartialEq, Eq)]
    struct Run {
        consumed: usize,
        status: DataStatus,
        out: Vec<u8>,
        header_end: Option<u64>,
        too_long: usize,
    }

    /// Feeds `input` in chunks whose ends are `cuts` (sorted), continuing after
    /// LineTooLong, stopping at Done or BareNewline.
    fn run_cuts(policy: BareNewline, max: usize, input: &[u8], cuts: &[usize]) -> Run {
        let mut rx = DataReceiver::new(policy, max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut too_long = 0;
        let mut status = DataStatus::NeedMore;
        let mut ends: Vec<usize> = cuts.to_vec();
        ends.push(input.len());
        let mut from = 0;
        'chunks: for &end in &ends {
            let mut chunk = &input[from..end];
            from = end;
            loop {
                let (n, st) = rx.feed(chunk, &mut out);
                consumed += n;
                chunk = &chunk[n..];
                match st {
                    DataStatus::LineTooLong => too_long += 1,
                    DataStatus::NeedMore => {
                        assert!(chunk.is_empty(), "NeedMore must consume all");
                        status = st;
                        break;
                    }
                    _ => {
                        status = st;
                        break 'chunks;
                    }
                }
            }
        }
        assert_eq!(rx.emitted(), out.len() as u64, "emitted() tracks out");
        Run {
            consumed,
            status,
            out,
            header_end: rx.header_end(),
            too_long,
        }
    }

    fn run1(policy: BareNewline, input: &[u8]) -> Run {
        run_cuts(policy, BIG, input, &[])
    }

    fn bytewise(policy: BareNewline, max: usize, input: &[u8]) -> Run {
        let cuts: Vec<usize> = (1..input.len()).collect();
        run_cuts(policy, max, input, &cuts)
    }

    /// An obviously-correct, allocation-happy model of the rules, line by line.
    fn model(policy: BareNewline, input: &[u8]) -> (usize, DataStatus, Vec<u8>, Option<u64>) {
        let mut out = Vec::new();
        let mut he = None;
        let mut i = 0;
        let mut after_crlf = true;
        let unstuff = |t: &[u8]| -> Vec<u8> {
            if t.len() > 1 && t[0] == b'.' {
                t[1..].to_vec()
            } else {
                t.to_vec()
            }
        };
        loop {
            let rest = &input[i..];
            let Some(k) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                // Incomplete last line.
                if rest != b"." {
                    out.extend(unstuff(rest));
                }
                return (input.len(), DataStatus::NeedMore, out, he);
            };
            let text = &rest[..k];
            let crlf = rest[k] == b'\r' && rest.get(k + 1) == Some(&b'\n');
            if rest[k] == b'\r' && k + 1 == rest.len() {
                // Undecided CR at the end: the CR is output unless the line is ".".
                if text != b"." {
                    out.extend(unstuff(text));
                    out.push(b'\r');
                }
                return (input.len(), DataStatus::NeedMore, out, he);
            }
            if crlf && text == b"." && after_crlf {
                return (i + k + 2, DataStatus::Done, out, he);
            }
            if !crlf && policy == BareNewline::Reject {
                let at = if rest[k] == b'\r' { i + k + 1 } else { i + k };
                return (at, DataStatus::BareNewline, out, he);
            }
            out.extend(unstuff(text));
            out.extend_from_slice(b"\r\n");
            if text.is_empty() && he.is_none() {
                he = Some(out.len() as u64);
            }
            after_crlf = crlf;
            i += k + if crlf { 2 } else { 1 };
        }
    }

    /// Checks a stream against the model, fed whole, byte by byte and split at
    /// every position.
    fn check_all_splits(policy: BareNewline, input: &[u8]) {
        let whole = run1(policy, input);
        let (c, st, out, he) = model(policy, input);
        assert_eq!(whole.status, st, "status for {input:?} {policy:?}");
        assert_eq!(whole.consumed, c, "consumed for {input:?} {policy:?}");
        if st != DataStatus::BareNewline {
            assert_eq!(whole.out, out, "out for {input:?} {policy:?}");
            assert_eq!(whole.header_end, he, "header_end for {input:?} {policy:?}");
        }
        let same = |r: &Run| {
            assert_eq!(r.status, whole.status, "split status for {input:?}");
            assert_eq!(r.consumed, whole.consumed, "split consumed for {input:?}");
            if whole.status != DataStatus::BareNewline {
                assert_eq!(r.out, whole.out, "split out for {input:?}");
                assert_eq!(r.header_end, whole.header_end);
            }
        };
        same(&bytewise(policy, BIG, input));
        for cut in 0..=input.len() {
            same(&run_cuts(policy, BIG, input, &[cut]));
        }
    }

    /// Dot-stuffs content lines as a client would and appends the terminator.
    fn stuff(content: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut at_start = true;
        for &b in content {
            if at_start && b == b'.' {
                wire.push(b'.');
            }
            wire.push(b);
            at_start = b == b'\n';
        }
        wire.extend_from_slice(b".\r\n");
        wire
    }

    /// Deterministic xorshift64* PRNG.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn simple_message_and_pipelined_rest() {
        let input = b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n";
        let mut rx = DataReceiver::new(R, 998);
        let mut out = Vec::new();
        let (n, st) = rx.feed(input, &mut out);
        assert_eq!(st, DataStatus::Done);
        assert_eq!(&input[n..], b"QUIT\r\n");
        assert_eq!(out, b"Subject: hi\r\n\r\nbody\r\n");
        assert_eq!(rx.header_end(), Some(15));
        assert_eq!(rx.emitted(), 21);
        // Done is sticky until reset.
        assert_eq!(rx.feed(b"more\r\n.\r\n", &mut out), (0, DataStatus::Done));
        rx.reset();
        out.clear();
        assert_eq!(rx.feed(b"x\r\n.\r\n", &mut out), (6, DataStatus::Done));
        assert_eq!(out, b"x\r\n");
        assert_eq!(rx.header_end(), None);
    }

    #[test]
    fn empty_message() {
        for p in [R, N] {
            let r = run1(p, b".\r\nRSET\r\n");
            assert_eq!((r.consumed, r.status), (3, DataStatus::Done));
            assert!(r.out.is_empty());
            assert_eq!(r.header_end, None);
        }
    }

    #[test]
    fn message_without_body_has_no_header_end() {
        let r = run1(R, b"From: a@b\r\nTo: c@d\r\n.\r\n");
        assert_eq!(r.status, DataStatus::Done);
        assert_eq!(r.out, b"From: a@b\r\nTo: c@d\r\n");
        assert_eq!(r.header_end, None);
    }

    #[test]
    fn header_end_detection() {
        // Empty header section: the body starts at 2.
        let r = run1(R, b"\r\nbody\r\n.\r\n");
        assert_eq!(r.header_end, Some(2));
        // Only the first empty line counts.
        let r = run1(R, b"A: b\r\n\r\n\r\nx\r\n.\r\n");
        assert_eq!(r.header_end, Some(8));
        // Header and body but the body is empty.
        let r = run1(R, b"A: b\r\n\r\n.\r\n");
        assert_eq!((r.out.len(), r.header_end), (8, Some(8)));
        // A stuffed "." line is not empty.
        let r = run1(R, b"A: b\r\n..\r\n\r\n.\r\n");
        assert_eq!(r.out, b"A: b\r\n.\r\n\r\n");
        assert_eq!(r.header_end, Some(11));
        // Found after normalization: a bare LF empty line counts.
        let r = run1(N, b"A: b\n\nx\r\n.\r\n");
        assert_eq!(r.out, b"A: b\r\n\r\nx\r\n");
        assert_eq!(r.header_end, Some(8));
        // Across every split.
        check_all_splits(R, b"Subject: x\r\nTo: y\r\n\r\nbody\r\n.\r\n");
    }

    #[test]
    fn dot_unstuffing() {
        let r = run1(R, b"..\r\n...\r\n.x\r\nx.\r\n. \r\n.\r\n");
        assert_eq!(r.status, DataStatus::Done);
        assert_eq!(r.out, b".\r\n..\r\nx\r\nx.\r\n \r\n");
    }

    #[test]
    fn dot_stuffing_round_trips() {
        let contents: [&[u8]; 6] = [
            b"",
            b".\r\n",
            b"..\r\n.\r\n...x\r\n",
            b"a\r\n.\r\n.\r\nb\r\n",
            b"\r\n\r\n.\r\n",
            b".hidden\r\n\r\n.\r\n.end\r\n",
        ];
        for c in contents {
            for p in [R, N] {
                let wire = stuff(c);
                let r = run1(p, &wire);
                assert_eq!(r.status, DataStatus::Done);
                assert_eq!(r.consumed, wire.len());
                assert_eq!(r.out, c, "round trip of {c:?}");
            }
        }
    }

    #[test]
    fn terminator_must_follow_real_crlf() {
        // "x.\r\n" is not a terminator: the dot is not at a line start.
        let r = run1(R, b"x.\r\n");
        assert_eq!(r.status, DataStatus::NeedMore);
        assert_eq!(r.out, b"x.\r\n");
        // " .\r\n" neither.
        assert_eq!(run1(R, b" .\r\n").status, DataStatus::NeedMore);
    }

    /// smtpsmug-style probes: ambiguous end-of-data sequences.
    const PROBES: [&[u8]; 8] = [
        b"\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n.\n",
        b"\r\n.\rX",
        b"\r.\r",
        b"\n.\r\r\n",
    ];

    #[test]
    fn smuggling_probes_rejected() {
        for probe in PROBES {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(probe);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n\r\n.\r\n");
            let r = run1(R, &input);
            assert_eq!(r.status, DataStatus::BareNewline, "probe {probe:?}");
            assert!(
                r.consumed <= 18 + probe.len(),
                "stopped in the probe {probe:?}"
            );
            check_all_splits(R, &input);
        }
    }

    #[test]
    fn smuggling_probes_normalized_are_content() {
        for probe in PROBES {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(probe);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\n.\r\nNEXT");
            let r = run1(N, &input);
            assert_eq!(r.status, DataStatus::Done, "probe {probe:?}");
            // The smuggled command stays inside the message.
            assert_eq!(&input[r.consumed..], b"NEXT", "probe {probe:?}");
            // Every line ending in the output is CRLF.
            for (i, &b) in r.out.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(r.out[i - 1], b'\r', "probe {probe:?}");
                }
                if b == b'\r' {
                    assert_eq!(r.out.get(i + 1), Some(&b'\n'), "probe {probe:?}");
                }
            }
            // The content "." line is kept as ".".
            assert!(r.out.windows(5).any(|w| w == b"\r\n.\r\n"), "{probe:?}");
            check_all_splits(N, &input);
        }
        let r = run1(N, b"a\n.\r\nb\r\n.\r\n");
        assert_eq!(r.out, b"a\r\n.\r\nb\r\n");
        let r = run1(N, b"a\r\n.\rb\r\n.\r\n");
        assert_eq!(r.out, b"a\r\n.\r\nb\r\n");
    }

    #[test]
    fn nul_is_content() {
        for p in [R, N] {
            let r = run1(p, b"a\r\n\x00.\r\n.\r\n");
            assert_eq!(r.status, DataStatus::Done);
            assert_eq!(r.out, b"a\r\n\x00.\r\n");
        }
    }

    #[test]
    fn trailing_cr_is_undecided() {
        let mut rx = DataReceiver::new(R, 998);
        let mut out = Vec::new();
        assert_eq!(rx.feed(b"abc\r", &mut out), (4, DataStatus::NeedMore));
        assert_eq!(rx.feed(b"x", &mut out), (0, DataStatus::BareNewline));
        assert_eq!(rx.feed(b"\n", &mut out), (0, DataStatus::BareNewline));
        let mut rx = DataReceiver::new(R, 998);
        assert_eq!(rx.feed(b"abc\r", &mut out), (4, DataStatus::NeedMore));
        assert_eq!(rx.feed(b"\n.\r", &mut out), (3, DataStatus::NeedMore));
        assert_eq!(rx.feed(b"\nZ", &mut out), (1, DataStatus::Done));
    }

    #[test]
    fn exhaustive_short_streams_match_model() {
        // Every stream of length <= 7 over an alphabet with the interesting bytes,
        // under both policies, whole, byte by byte, and split at every position.
        let alphabet = [b'\r', b'\n', b'.', b'a'];
        let mut checked = 0;
        for len in 0..=7u32 {
            for mut code in 0..4usize.pow(len) {
                let mut s = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    s.push(alphabet[code % 4]);
                    code /= 4;
                }
                check_all_splits(R, &s);
                check_all_splits(N, &s);
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=7).map(|l| 4usize.pow(l)).sum::<usize>());
    }

    #[test]
    fn random_streams_match_model() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let alphabet = [b'\r', b'\n', b'.', b'a', b'b', b'\r', b'\n'];
        for _ in 0..3000 {
            let len = rng.below(40);
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            check_all_splits(R, &s);
            check_all_splits(N, &s);
        }
    }

    #[test]
    fn large_message_random_splits() {
        let mut rng = Rng(42);
        let mut content = b"From: a@example.org\r\nSubject: big\r\n\r\n".to_vec();
        let header_len = content.len() as u64;
        while content.len() < 1 << 20 {
            let len = rng.below(120);
            for i in 0..len {
                let b = match rng.below(20) {
                    0 if i == 0 => b'.',
                    1 => b'.',
                    2 => b' ',
                    _ => b'a' + rng.below(26) as u8,
                };
                content.push(b);
            }
            content.extend_from_slice(b"\r\n");
        }
        let mut wire = stuff(&content);
        wire.extend_from_slice(b"QUIT\r\n");
        for p in [R, N] {
            let whole = run1(p, &wire);
            assert_eq!(whole.status, DataStatus::Done);
            assert_eq!(whole.out, content);
            assert_eq!(whole.header_end, Some(header_len));
            assert_eq!(whole.consumed, wire.len() - 6);
            for round in 0..20 {
                let mut cuts = Vec::new();
                let mut at = 0;
                let max_chunk = if round % 2 == 0 { 16 } else { 70_000 };
                loop {
                    at += 1 + rng.below(max_chunk);
                    if at >= wire.len() {
                        break;
                    }
                    cuts.push(at);
                }
                let r = run_cuts(p, BIG, &wire, &cuts);
                assert_eq!(r, whole, "round {round}");
            }
        }
    }

    #[test]
    fn line_too_long() {
        // Exactly max_line is fine; one more is reported once per line.
        let r = run_cuts(R, 5, b"12345\r\n.\r\n", &[]);
        assert_eq!((r.status, r.too_long), (DataStatus::Done, 0));
        let input = b"123456\r\nok\r\n1234567890\r\n.\r\n";
        let r = run_cuts(R, 5, input, &[]);
        assert_eq!((r.status, r.too_long), (DataStatus::Done, 2));
        assert_eq!(r.out, b"123456\r\nok\r\n1234567890\r\n", "nothing lost");
        // The stuffing dot counts (the line as sent).
        let r = run_cuts(R, 5, b"..2345\r\n.\r\n", &[]);
        assert_eq!(r.too_long, 1);
        let r = run_cuts(R, 5, b"..234\r\n.\r\n", &[]);
        assert_eq!(r.too_long, 0);
        // Same reports and output whatever the split.
        let whole = run_cuts(R, 5, input, &[]);
        let r = bytewise(R, 5, input);
        assert_eq!(
            (r.out, r.too_long, r.consumed),
            (whole.out, 2, whole.consumed)
        );
        for cut in 0..=input.len() {
            let r = run_cuts(N, 5, input, &[cut]);
            assert_eq!((r.status, r.too_long), (DataStatus::Done, 2), "cut {cut}");
        }
        // The report comes without waiting for the line end.
        let mut rx = DataReceiver::new(R, 4);
        let mut out = Vec::new();
        assert_eq!(rx.feed(b"abcdefgh", &mut out), (8, DataStatus::LineTooLong));
        assert_eq!(rx.feed(b"ijk", &mut out), (3, DataStatus::NeedMore));
        // CRs and LFs are not counted.
        let r = run_cuts(N, 3, b"abc\r\nabc\nabc\rx\r\n.\r\n", &[]);
        assert_eq!((r.status, r.too_long), (DataStatus::Done, 0));
    }
}
