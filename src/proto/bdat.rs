//! Line checks for BDAT content (RFC 3030 CHUNKING).
//!
//! BDAT content is counted, not dot-stuffed: the session reads exactly the
//! announced number of octets per chunk and hands them to [`ChunkScanner::push`]
//! in whatever pieces it has them. Lines may span chunks (RFC 3030 §2: a chunk
//! boundary may fall anywhere, even between CR and LF).
//!
//! There is no end-of-data line to smuggle around, but the message still goes
//! on to hops that speak DATA, so bare CR and LF get the same policy as in
//! `super::data` (RFC 5321 §2.3.8; see [`BareNewline`]), and the same
//! line-length and header-end bookkeeping (the shared `LineScan`).

use super::data::{BareNewline, DataStatus, Line, LineScan};

/// Tracks line endings, line length and the header end across BDAT chunks.
#[derive(Debug)]
pub struct ChunkScanner {
    lines: LineScan,
    /// A bare newline under `Reject`: final until `reset()`.
    failed: bool,
}

impl ChunkScanner {
    /// `max_line`: the longest line accepted without a
    /// [`DataStatus::LineTooLong`] report, excluding CRLF (RFC 5321 §4.5.3.1.6
    /// allows 998). Values below 1 are treated as 1.
    pub fn new(policy: BareNewline, max_line: usize) -> Self {
        ChunkScanner {
            lines: LineScan::new(policy, max_line),
            failed: false,
        }
    }

    /// Appends `chunk` (any part of the BDAT content) to `out`, writing bare CR
    /// and LF as CRLF under `Normalize`.
    ///
    /// - `Err(BareNewline)` on the first bare CR or LF under `Reject`: `out` is
    ///   garbage, and every later call fails the same way until `reset()`. A CR
    ///   that ends `chunk` is decided by the next `push` or by `finish`.
    /// - `Err(LineTooLong)` if a line became longer than `max_line` in this
    ///   chunk (once per line). A report, not a stop: the whole chunk was still
    ///   appended, and scanning goes on normally with the next chunk.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), DataStatus> {
        if self.failed {
            return Err(DataStatus::BareNewline);
        }
        let mut pos = 0;
        let mut start = 0;
        let mut too_long = false;
        loop {
            match self.lines.scan_line(chunk, &mut pos, &mut start, out) {
                Line::Exhausted => break,
                Line::Ended { .. } => {}
                Line::TooLong => too_long = true,
                Line::Bare => {
                    self.failed = true;
                    return Err(DataStatus::BareNewline);
                }
            }
        }
        self.lines.flush(chunk, &mut start, pos, out);
        if too_long {
            Err(DataStatus::LineTooLong)
        } else {
            Ok(())
        }
    }

    /// Call after the LAST chunk (RFC 3030 `BDAT n LAST`): a message ending in
    /// a bare CR is a violation under `Reject`; under `Normalize` it becomes
    /// CRLF. A last line without any line ending is left as it is (the queue
    /// must end it with CRLF before relaying it with DATA, RFC 5321 §4.1.1.4).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DataStatus> {
        if self.failed {
            return Err(DataStatus::BareNewline);
        }
        match self.lines.end_of_input(out) {
            Line::Bare => {
                self.failed = true;
                Err(DataStatus::BareNewline)
            }
            _ => Ok(()),
        }
    }

    /// Offset in the output just past the first empty line, i.e. where the
    /// body starts (RFC 5322 §2.1); `Some(2)` for a message starting with an
    /// empty line, `None` while (or if) none was seen. Same meaning as
    /// `DataReceiver::header_end`.
    pub fn header_end(&self) -> Option<u64> {
        self.lines.header_end()
    }

    /// Total bytes appended to `out` since `new`/`reset`.
    pub fn emitted(&self) -> u64 {
        self.lines.emitted()
    }

    /// Forgets the current message (same policy and limit).
    pub fn reset(&mut self) {
        self.lines.reset();
        self.failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: BareNewline = BareNewline::Reject;
    const N: BareNewline = BareNewline::Normalize;

    /// Pushes `input` split at `cuts`, then finishes; returns the first error
    /// other than LineTooLong (or Ok), the output, the header end and the
    /// number of LineTooLong reports.
    fn run(
        policy: BareNewline,
        max: usize,
        input: &[u8],
        cuts: &[usize],
    ) -> (Result<(), DataStatus>, Vec<u8>, Option<u64>, usize) {
        let mut sc = ChunkScanner::new(policy, max);
        let mut out = Vec::new();
        let mut too_long = 0;
        let mut from = 0;
        let mut ends = cuts.to_vec();
        ends.push(input.len());
        let mut result = Ok(());
        for end in ends {
            match sc.push(&input[from..end], &mut out) {
                Ok(()) => {}
                Err(DataStatus::LineTooLong) => too_long += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            from = end;
        }
        if result.is_ok() {
            result = sc.finish(&mut out);
        }
        assert_eq!(sc.emitted(), out.len() as u64);
        (result, out, sc.header_end(), too_long)
    }

    /// Reference: every CRLF kept, every bare CR or LF as CRLF; None if any.
    fn normalize_model(input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut bare = false;
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' if input.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => {
                    bare = true;
                    out.extend_from_slice(b"\r\n");
                }
                b => out.push(b),
            }
            i += 1;
        }
        (out, bare)
    }

    fn header_end_model(out: &[u8]) -> Option<u64> {
        if out.starts_with(b"\r\n") {
            return Some(2);
        }
        out.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p as u64 + 4)
    }

    #[test]
    fn chunks_are_copied_and_header_found() {
        let (r, out, he, tl) = run(R, 998, b"A: b\r\n\r\nbody\r\n", &[3, 7]);
        assert_eq!((r, tl), (Ok(()), 0));
        assert_eq!(out, b"A: b\r\n\r\nbody\r\n");
        assert_eq!(he, Some(8));
        // Dots are not special in BDAT.
        let (r, out, _, _) = run(R, 998, b".\r\n..\r\n", &[]);
        assert_eq!(r, Ok(()));
        assert_eq!(out, b".\r\n..\r\n");
        // Leading empty line: empty header section, body at 2.
        assert_eq!(run(R, 998, b"\r\nx", &[1]).2, Some(2));
        // No empty line: no header end.
        assert_eq!(run(R, 998, b"A: b\r\n", &[]).2, None);
    }

    #[test]
    fn crlf_split_between_chunks() {
        let (r, out, he, _) = run(R, 998, b"A: b\r\n\r\nx", &[5, 7]);
        assert_eq!(r, Ok(()));
        assert_eq!(out, b"A: b\r\n\r\nx");
        assert_eq!(he, Some(8));
    }

    #[test]
    fn bare_newlines_under_both_policies() {
        let probes: [&[u8]; 6] = [b"a\nb", b"a\rb", b"\n.\n", b"\r\n.\r", b"\r.\r\n", b"a\r"];
        for p in probes {
            let (r, _, _, _) = run(R, 998, p, &[]);
            assert_eq!(r, Err(DataStatus::BareNewline), "{p:?}");
            let (model, bare) = normalize_model(p);
            assert!(bare);
            let (r, out, _, _) = run(N, 998, p, &[]);
            assert_eq!(r, Ok(()), "{p:?}");
            assert_eq!(out, model, "{p:?}");
        }
        // Failure is final until reset.
        let mut sc = ChunkScanner::new(R, 998);
        let mut out = Vec::new();
        assert_eq!(sc.push(b"x\n", &mut out), Err(DataStatus::BareNewline));
        assert_eq!(sc.push(b"ok\r\n", &mut out), Err(DataStatus::BareNewline));
        assert_eq!(sc.finish(&mut out), Err(DataStatus::BareNewline));
        sc.reset();
        out.clear();
        assert_eq!(sc.push(b"ok\r\n", &mut out), Ok(()));
        assert_eq!(sc.finish(&mut out), Ok(()));
        assert_eq!(sc.emitted(), 4);
    }

    #[test]
    fn trailing_cr_decided_by_finish_or_next_chunk() {
        let mut sc = ChunkScanner::new(R, 998);
        let mut out = Vec::new();
        assert_eq!(sc.push(b"abc\r", &mut out), Ok(()));
        assert_eq!(sc.push(b"\n", &mut out), Ok(()));
        assert_eq!(sc.finish(&mut out), Ok(()));
        assert_eq!(out, b"abc\r\n");
        let mut sc = ChunkScanner::new(R, 998);
        assert_eq!(sc.push(b"abc\r", &mut out), Ok(()));
        assert_eq!(sc.finish(&mut out), Err(DataStatus::BareNewline));
        let mut sc = ChunkScanner::new(N, 998);
        out.clear();
        assert_eq!(sc.push(b"A: b\r\n\r", &mut out), Ok(()));
        assert_eq!(sc.finish(&mut out), Ok(()));
        assert_eq!(out, b"A: b\r\n\r\n");
        assert_eq!(sc.header_end(), Some(8));
    }

    #[test]
    fn exhaustive_short_inputs_every_split() {
        let alphabet = [b'\r', b'\n', b'a', b'.'];
        for len in 0..=7u32 {
            for mut code in 0..4usize.pow(len) {
                let mut s = Vec::new();
                for _ in 0..len {
                    s.push(alphabet[code % 4]);
                    code /= 4;
                }
                let (model, bare) = normalize_model(&s);
                let he = header_end_model(&model);
                let expect_r = if bare {
                    Err(DataStatus::BareNewline)
                } else {
                    Ok(())
                };
                let bytewise: Vec<usize> = (1..s.len()).collect();
                let mut splits: Vec<Vec<usize>> = (0..=s.len()).map(|c| vec![c]).collect();
                splits.push(bytewise);
                for cuts in &splits {
                    let (r, out, h, _) = run(N, 998, &s, cuts);
                    assert_eq!((r, &out, h), (Ok(()), &model, he), "{s:?} {cuts:?}");
                    let (r, out, h, _) = run(R, 998, &s, cuts);
                    assert_eq!(r, expect_r, "{s:?} {cuts:?}");
                    if !bare {
                        assert_eq!((&out, h), (&model, he));
                    }
                }
            }
        }
    }

    #[test]
    fn line_too_long_is_reported_but_nothing_lost() {
        let input = b"12345\r\n123456\r\nabc\r\n1234567";
        // One report per push that saw a line become too long.
        let (r, out, _, tl) = run(R, 5, input, &[]);
        assert_eq!((r, tl), (Ok(()), 1));
        assert_eq!(out, input);
        // One report per long line, even when the line spans chunks.
        let cuts: Vec<usize> = (1..input.len()).collect();
        let (r, out, _, tl) = run(R, 5, input, &cuts);
        assert_eq!((r, tl), (Ok(()), 2));
        assert_eq!(out, input);
        // A bare newline after a long line still fails under Reject.
        let (r, _, _, _) = run(R, 5, b"1234567\nx", &[]);
        assert_eq!(r, Err(DataStatus::BareNewline));
    }

    #[test]
    fn large_message_random_chunks() {
        let mut seed: u64 = 0x0bda_7000_0000_0001;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut msg = b"Subject: x\r\n\r\n".to_vec();
        while msg.len() < 1 << 20 {
            let len = (next() % 100) as usize;
            msg.extend((0..len).map(|_| b'a' + (next() % 26) as u8));
            msg.extend_from_slice(b"\r\n");
        }
        let mut cuts = Vec::new();
        let mut at = 0;
        loop {
            at += 1 + (next() % 20_000) as usize;
            if at >= msg.len() {
                break;
            }
            cuts.push(at);
        }
        let (r, out, he, tl) = run(R, 998, &msg, &cuts);
        assert_eq!((r, tl, he), (Ok(()), 0, Some(14)));
        assert_eq!(out, msg);
    }
}
