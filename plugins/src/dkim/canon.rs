//! Canonicalization (RFC 6376 §3.4): `simple` and `relaxed`, for header fields and for the
//! body. The body is canonicalized as it streams by, chunk by chunk, straight into a SHA-256
//! context ([`BodyHasher`]): no copy of the body is kept.

use ring::digest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    pub fn parse(s: &str) -> Option<Canon> {
        match s {
            "simple" => Some(Canon::Simple),
            "relaxed" => Some(Canon::Relaxed),
            _ => None,
        }
    }
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Appends the canonical form of one header field (`Name: value` with its folds, without the
/// final line end) and CRLF to `out` (§3.4.1, §3.4.2).
pub fn header(canon: Canon, field: &[u8], out: &mut Vec<u8>) {
    match canon {
        Canon::Simple => out.extend_from_slice(field),
        Canon::Relaxed => {
            let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
            let name = field[..colon].trim_ascii_end();
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            out.push(b':');
            let value = field.get(colon + 1..).unwrap_or_default();
            // Unfold, then runs of WSP become one SP; none at either end of the value.
            let mut wsp = false;
            let mut started = false;
            for &b in value {
                match b {
                    b'\r' | b'\n' => {}
                    b if is_wsp(b) => wsp = true,
                    b => {
                        if wsp && started {
                            out.push(b' ');
                        }
                        wsp = false;
                        started = true;
                        out.push(b);
                    }
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Canonicalizes a body as it streams by and hashes it with SHA-256, up to `limit` bytes of
/// canonical body (a signature's `l=`), while counting the whole canonical length.
pub struct BodyHasher {
    canon: Canon,
    limit: Option<u64>,
    ctx: digest::Context,
    /// Canonical bytes produced so far (hashed or not).
    produced: u64,
    /// Line ends seen but not produced yet: they are dropped if only empty lines follow.
    crlfs: u64,
    /// Blanks seen in the current line, not produced yet (relaxed).
    wsp: bool,
    /// A CR was the last byte: a line end if LF follows.
    cr: bool,
    /// Something was produced: the body is not empty.
    content: bool,
    buf: Vec<u8>,
}

impl BodyHasher {
    pub fn new(canon: Canon, limit: Option<u64>) -> BodyHasher {
        BodyHasher {
            canon,
            limit,
            ctx: digest::Context::new(&digest::SHA256),
            produced: 0,
            crlfs: 0,
            wsp: false,
            cr: false,
            content: false,
            buf: Vec::with_capacity(8192),
        }
    }

    /// Whether this hasher computes what `canon` and `limit` ask (one per distinct pair).
    pub fn is(&self, canon: Canon, limit: Option<u64>) -> bool {
        self.canon == canon && self.limit == limit
    }

    /// The next piece of the body (pieces of any size; a CRLF may be split).
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    self.line_end();
                    continue;
                }
                self.byte(b'\r');
            }
            match b {
                b'\r' => self.cr = true,
                // A bare LF ends a line too (the core stores CRLF; a spool may not).
                b'\n' => self.line_end(),
                b => self.byte(b),
            }
            if self.buf.len() >= 8192 {
                self.flush();
            }
        }
    }

    fn byte(&mut self, b: u8) {
        if self.canon == Canon::Relaxed && is_wsp(b) {
            self.wsp = true;
            return;
        }
        // Empty lines followed by content are kept (a long run is produced in bounded steps).
        while self.crlfs > 0 {
            self.buf.extend_from_slice(b"\r\n");
            self.crlfs -= 1;
            if self.buf.len() >= 8192 {
                self.flush();
            }
        }
        if self.wsp {
            self.buf.push(b' ');
            self.wsp = false;
        }
        self.buf.push(b);
        self.content = true;
    }

    fn line_end(&mut self) {
        // Relaxed: blanks at the end of a line are dropped.
        self.wsp = false;
        self.crlfs += 1;
    }

    fn flush(&mut self) {
        let data = std::mem::take(&mut self.buf);
        let hashed = match self.limit {
            Some(l) => {
                let room = l.saturating_sub(self.produced);
                &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))]
            }
            None => &data[..],
        };
        self.ctx.update(hashed);
        self.produced += data.len() as u64;
        self.buf = data;
        self.buf.clear();
    }

    /// Ends the body: the SHA-256 of its canonical form (up to the limit) and the length of
    /// the whole canonical body.
    pub fn finish(mut self) -> (Vec<u8>, u64) {
        if self.cr {
            self.cr = false;
            self.byte(b'\r');
        }
        // The last line's end (added if missing); trailing empty lines are dropped. An empty
        // body is CRLF in simple, nothing in relaxed.
        if self.content || self.canon == Canon::Simple {
            self.buf.extend_from_slice(b"\r\n");
        }
        self.flush();
        let hash = self.ctx.finish().as_ref().to_vec();
        (hash, self.produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon_headers(canon: Canon, fields: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for f in fields {
            header(canon, f, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// What the hasher produces: hashed in one piece and byte by byte, both must agree.
    fn body(canon: Canon, input: &[u8]) -> (Vec<u8>, u64) {
        let mut whole = BodyHasher::new(canon, None);
        whole.feed(input);
        let whole = whole.finish();
        let mut bytes = BodyHasher::new(canon, None);
        for b in input {
            bytes.feed(std::slice::from_ref(b));
        }
        assert_eq!(bytes.finish(), whole, "split feeding differs");
        whole
    }

    fn sha(data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    fn same_as(canon: Canon, input: &[u8], want: &[u8]) {
        assert_eq!(
            body(canon, input),
            (sha(want), want.len() as u64),
            "{canon:?} {:?}",
            String::from_utf8_lossy(input)
        );
    }

    /// RFC 6376 §3.4.5, the example's header fields.
    #[test]
    fn rfc6376_example_headers() {
        let fields: &[&[u8]] = &[b"A: X", b"B : Y\t\r\n\tZ  "];
        assert_eq!(canon_headers(Canon::Relaxed, fields), "a:X\r\nb:Y Z\r\n");
        assert_eq!(
            canon_headers(Canon::Simple, fields),
            "A: X\r\nB : Y\t\r\n\tZ  \r\n"
        );
        assert_eq!(
            canon_headers(Canon::Relaxed, &[b"Empty:  \r\n "]),
            "empty:\r\n"
        );
    }

    /// RFC 6376 §3.4.5, the example's body.
    #[test]
    fn rfc6376_example_body() {
        let input = b" C \r\nD \t E\r\n\r\n\r\n";
        same_as(Canon::Relaxed, input, b" C\r\nD E\r\n");
        same_as(Canon::Simple, input, b" C \r\nD \t E\r\n");
    }

    #[test]
    fn empty_and_unterminated_bodies() {
        same_as(Canon::Simple, b"", b"\r\n");
        same_as(Canon::Relaxed, b"", b"");
        same_as(Canon::Simple, b"\r\n\r\n", b"\r\n");
        same_as(Canon::Relaxed, b"\r\n \t\r\n", b"");
        same_as(Canon::Simple, b"x", b"x\r\n");
        same_as(Canon::Relaxed, b"x  ", b"x\r\n");
        // Blank lines inside are kept; a bare CR is content.
        same_as(Canon::Simple, b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n");
        same_as(Canon::Relaxed, b"a\rb \r", b"a\rb \r\r\n");
        same_as(Canon::Simple, b"a\nb\n\n", b"a\r\nb\r\n");
        // The hashes RFC 6376 §3.4.3 and §3.4.4 imply for an empty body.
        use crate::dkim::signature::base64;
        let simple = base64("frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=").unwrap();
        assert_eq!(body(Canon::Simple, b"").0, simple);
        let relaxed = base64("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap();
        assert_eq!(body(Canon::Relaxed, b"\r\n").0, relaxed);
    }

    #[test]
    fn limit_hashes_a_prefix_and_counts_all() {
        let mut h = BodyHasher::new(Canon::Simple, Some(3));
        h.feed(b"abcdef\r\n");
        assert_eq!(h.finish(), (sha(b"abc"), 8));
        let mut h = BodyHasher::new(Canon::Relaxed, Some(100));
        h.feed(b"a  b\r\n\r\n");
        assert_eq!(h.finish(), (sha(b"a b\r\n"), 5));
        assert!(BodyHasher::new(Canon::Relaxed, Some(1)).is(Canon::Relaxed, Some(1)));
    }

    #[test]
    fn large_body_in_chunks() {
        let line = b"0123456789 abcdefghij  \t\r\n";
        let mut input = Vec::new();
        for _ in 0..5000 {
            input.extend_from_slice(line);
        }
        input.extend_from_slice(b"\r\n\r\n");
        let mut want = Vec::new();
        for _ in 0..5000 {
            want.extend_from_slice(b"0123456789 abcdefghij\r\n");
        }
        let mut h = BodyHasher::new(Canon::Relaxed, None);
        for chunk in input.chunks(1000) {
            h.feed(chunk);
        }
        assert_eq!(h.finish(), (sha(&want), want.len() as u64));
    }
}
