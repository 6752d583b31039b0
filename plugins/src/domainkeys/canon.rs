//! DomainKeys canonicalization (RFC 4870 §3.4): `simple` presents every line as received,
//! `nofws` removes all white space from each line (header fields unfolded first). Both end
//! each line with CRLF and drop the empty lines at the end of the message, the empty line
//! between header and body included when the body is all empty lines.

/// The `c=` of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    Simple,
    Nofws,
}

impl Canon {
    pub fn parse(text: &str) -> Option<Canon> {
        match text {
            "simple" => Some(Canon::Simple),
            "nofws" => Some(Canon::Nofws),
            _ => None,
        }
    }
}

fn is_fws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Appends a header field (name, colon, value and its folds, no final line end) in `canon`.
pub fn push_field(out: &mut Vec<u8>, canon: Canon, field: &[u8]) {
    match canon {
        Canon::Simple => out.extend_from_slice(field),
        Canon::Nofws => out.extend(field.iter().copied().filter(|&b| !is_fws(b))),
    }
    out.extend_from_slice(b"\r\n");
}

/// The lines after the header fields (the empty separator line first, then the body), fed in
/// pieces, appended to `out` canonicalized. Empty lines are held back until a line with
/// content follows, so the trailing ones never reach `out`.
pub struct BodyCanon {
    canon: Canon,
    /// The current line's bytes so far (canonicalized, without its line end).
    line: Vec<u8>,
    /// Empty lines held back.
    blank: usize,
    /// The current line ended in CR, which may be the first half of its CRLF.
    cr: bool,
    pub out: Vec<u8>,
}

impl BodyCanon {
    /// Starts after the header fields: `out` holds them; `separator` if the message has the
    /// empty line that ends its header section.
    pub fn new(canon: Canon, out: Vec<u8>, separator: bool) -> BodyCanon {
        BodyCanon {
            canon,
            line: Vec::new(),
            blank: usize::from(separator),
            cr: false,
            out,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if b == b'\n' {
                if self.cr {
                    self.cr = false;
                } else if self.canon == Canon::Simple {
                    // A bare LF (the core refuses them unless told to normalize): content.
                    self.line.push(b);
                    continue;
                }
                self.end_line();
                continue;
            }
            if std::mem::take(&mut self.cr) && self.canon == Canon::Simple {
                self.line.push(b'\r'); // a CR not followed by LF is content
            }
            match b {
                b'\r' => self.cr = true,
                _ if self.canon == Canon::Nofws && is_fws(b) => {}
                _ => self.line.push(b),
            }
        }
    }

    fn end_line(&mut self) {
        if self.line.is_empty() {
            self.blank += 1;
            return;
        }
        for _ in 0..std::mem::take(&mut self.blank) {
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.append(&mut self.line);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The canonical message: a last line without a line end counts as a line.
    pub fn finish(mut self) -> Vec<u8> {
        if std::mem::take(&mut self.cr) && self.canon == Canon::Simple {
            self.line.push(b'\r');
        }
        if !self.line.is_empty() {
            self.end_line();
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(canon: Canon, text: &str, pieces: usize) -> String {
        let mut c = BodyCanon::new(canon, b"H: v\r\n".to_vec(), true);
        for piece in text.as_bytes().chunks(pieces) {
            c.feed(piece);
        }
        String::from_utf8(c.finish()).unwrap()
    }

    #[test]
    fn trailing_empty_lines_are_dropped_in_both() {
        for n in [1, 2, 100] {
            let text = "Hi  there\r\n\r\n \t\r\nbye\r\n\r\n\r\n";
            assert_eq!(
                body(Canon::Simple, text, n),
                "H: v\r\n\r\nHi  there\r\n\r\n \t\r\nbye\r\n"
            );
            assert_eq!(
                body(Canon::Nofws, text, n),
                "H: v\r\n\r\nHithere\r\n\r\n\r\nbye\r\n"
            );
            // A body of empty lines only: the separator goes too.
            assert_eq!(body(Canon::Simple, "\r\n\r\n", n), "H: v\r\n");
            assert_eq!(body(Canon::Nofws, " \r\n\t\r\n", n), "H: v\r\n");
            assert_eq!(body(Canon::Simple, "", n), "H: v\r\n");
        }
        assert_eq!(body(Canon::Simple, "no end", 3), "H: v\r\n\r\nno end\r\n");
        assert_eq!(body(Canon::Simple, "a\rb\r\n", 1), "H: v\r\n\r\na\rb\r\n");
    }

    #[test]
    fn header_fields_unfold_and_lose_white_space_in_nofws() {
        let field = b"Subject: a  b\r\n\tc";
        let mut out = Vec::new();
        push_field(&mut out, Canon::Nofws, field);
        push_field(&mut out, Canon::Simple, field);
        assert_eq!(out, b"Subject:abc\r\nSubject: a  b\r\n\tc\r\n");
        assert_eq!(Canon::parse("nofws"), Some(Canon::Nofws));
        assert_eq!(Canon::parse("relaxed"), None);
    }
}
