//! SPF macro strings (RFC 7208 §7): parsed once with the record, expanded per evaluation.

use std::fmt::Write;
use std::net::IpAddr;

/// The longest expansion kept: a domain is cut to 253 bytes afterwards (§7.3), an explanation
/// to this many bytes.
pub const MAX_EXPANSION: usize = 1024;

/// One piece of a macro string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text, `%%`, `%_` and `%-` already turned into `%`, ` ` and `%20`.
    Lit(String),
    /// `%{<letter><digits><r><delimiters>}`.
    Macro {
        /// The letter, lowercased.
        letter: u8,
        /// An uppercase letter: the value is URL-encoded.
        url: bool,
        /// Keep this many parts from the right.
        keep: Option<usize>,
        reverse: bool,
        /// The delimiters to split on (`.` when none is given).
        delims: Vec<u8>,
    },
}

/// A parsed macro string; `ends_with_macro` records whether the last token was a
/// macro-expand (it may then end a domain-spec without a top label).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacroString {
    pub pieces: Vec<Piece>,
    pub ends_with_macro: bool,
    /// The literal characters that end the string (after the last macro-expand).
    tail: String,
}

/// Where a macro string is used: explanations accept spaces and the `c`, `r`, `t` letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Domain,
    Explain,
}

impl MacroString {
    /// Parses `s` strictly (ABNF of §7.1); the error says what is wrong.
    pub fn parse(s: &str, kind: Kind) -> Result<MacroString, String> {
        let b = s.as_bytes();
        let mut out = MacroString::default();
        let mut lit = String::new();
        let mut i = 0;
        while i < b.len() {
            let c = b[i];
            if c != b'%' {
                let ok = (0x21..=0x7e).contains(&c) || (kind == Kind::Explain && c == b' ');
                if !ok {
                    return Err(format!("invalid character 0x{c:02x} in '{}'", escape(s)));
                }
                lit.push(c as char);
                out.tail.push(c as char);
                out.ends_with_macro = false;
                i += 1;
                continue;
            }
            let next = b.get(i + 1).copied();
            match next {
                Some(b'%') => lit.push('%'),
                Some(b'_') => lit.push(' '),
                Some(b'-') => lit.push_str("%20"),
                Some(b'{') => {
                    let close = b[i..]
                        .iter()
                        .position(|&x| x == b'}')
                        .ok_or_else(|| format!("unterminated macro in '{}'", escape(s)))?;
                    let body = &b[i + 2..i + close];
                    let piece = parse_macro(body, kind)
                        .ok_or_else(|| format!("invalid macro in '{}'", escape(s)))?;
                    if !lit.is_empty() {
                        out.pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    out.pieces.push(piece);
                    out.tail.clear();
                    out.ends_with_macro = true;
                    i += close + 1;
                    continue;
                }
                _ => return Err(format!("invalid '%' in '{}'", escape(s))),
            }
            out.tail.clear();
            out.ends_with_macro = true;
            i += 2;
        }
        if !lit.is_empty() {
            out.pieces.push(Piece::Lit(lit));
        }
        Ok(out)
    }

    /// A domain-spec: a macro string that ends with a macro-expand or `.toplabel[.]`.
    pub fn parse_domain(s: &str) -> Result<MacroString, String> {
        let m = MacroString::parse(s, Kind::Domain)?;
        if s.is_empty() {
            return Err("empty domain-spec".into());
        }
        if m.ends_with_macro {
            return Ok(m);
        }
        let t = m.tail.strip_suffix('.').unwrap_or(&m.tail);
        let ok = match t.rfind('.') {
            Some(dot) => is_toplabel(&t[dot + 1..]),
            None => false,
        };
        if ok {
            Ok(m)
        } else {
            Err(format!("'{}' does not end in a top label", escape(s)))
        }
    }
}

fn is_toplabel(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter().any(|c| c.is_ascii_alphabetic())
}

fn parse_macro(body: &[u8], kind: Kind) -> Option<Piece> {
    let (&first, mut rest) = body.split_first()?;
    let letter = first.to_ascii_lowercase();
    let allowed: &[u8] = match kind {
        Kind::Domain => b"slodiphv",
        Kind::Explain => b"slodiphvcrt",
    };
    if !allowed.contains(&letter) {
        return None;
    }
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    let keep = if digits > 0 {
        // More digits than any label count is pointless; refuse absurd values.
        let n: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        if n == 0 || n > 128 {
            return None;
        }
        Some(n)
    } else {
        None
    };
    rest = &rest[digits..];
    let reverse = matches!(rest.first(), Some(b'r' | b'R'));
    if reverse {
        rest = &rest[1..];
    }
    if !rest.iter().all(|c| b".-+,/_=".contains(c)) {
        return None;
    }
    Some(Piece::Macro {
        letter,
        url: first.is_ascii_uppercase(),
        keep,
        reverse,
        delims: rest.to_vec(),
    })
}

/// What the macro letters stand for during one check.
pub struct Values<'a> {
    pub sender: &'a str,
    pub local: &'a str,
    pub sender_domain: &'a str,
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    pub receiver: &'a str,
    /// `%{p}`: the validated name, looked up by the caller when the string uses it.
    pub validated: &'a str,
    pub now: u64,
}

impl MacroString {
    /// True if expanding needs `%{p}`.
    pub fn uses_p(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Macro { letter: b'p', .. }))
    }

    /// Expands with `v`; at most [`MAX_EXPANSION`] bytes.
    pub fn expand(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Macro {
                    letter,
                    url,
                    keep,
                    reverse,
                    delims,
                } => {
                    let value = letter_value(*letter, v);
                    let value = transform(&value, *keep, *reverse, delims);
                    if *url {
                        url_encode(&value, &mut out);
                    } else {
                        out.push_str(&value);
                    }
                }
            }
            if out.len() > MAX_EXPANSION {
                let mut cut = MAX_EXPANSION;
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
                break;
            }
        }
        out
    }
}

fn letter_value(letter: u8, v: &Values<'_>) -> String {
    match letter {
        b's' => v.sender.to_string(),
        b'l' => v.local.to_string(),
        b'o' => v.sender_domain.to_string(),
        b'd' => v.domain.to_string(),
        b'i' => dotted_ip(v.ip),
        b'p' => v.validated.to_string(),
        b'v' => match v.ip {
            IpAddr::V4(_) => "in-addr".into(),
            IpAddr::V6(_) => "ip6".into(),
        },
        b'h' => v.helo.to_string(),
        b'c' => v.ip.to_string(),
        b'r' => v.receiver.to_string(),
        b't' => v.now.to_string(),
        _ => String::new(),
    }
}

/// `%{i}`: dotted quad, or 32 dot-separated nibbles for IPv6.
fn dotted_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(63);
            for (i, byte) in a.octets().iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                let _ = write!(s, "{:x}.{:x}", byte >> 4, byte & 0xf);
            }
            s
        }
    }
}

fn transform(value: &str, keep: Option<usize>, reverse: bool, delims: &[u8]) -> String {
    if keep.is_none() && !reverse && delims.is_empty() {
        return value.to_string();
    }
    let delims: &[u8] = if delims.is_empty() { b"." } else { delims };
    let mut parts: Vec<&str> = value
        .split(|c: char| c.is_ascii() && delims.contains(&(c as u8)))
        .collect();
    if reverse {
        parts.reverse();
    }
    if let Some(n) = keep {
        if parts.len() > n {
            parts.drain(..parts.len() - n);
        }
    }
    parts.join(".")
}

fn url_encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// Text for a log line or error: printable ASCII kept, the rest as `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().take(300) {
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:x}}}", c as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(ip: &str) -> Values<'static> {
        Values {
            sender: "strong-bad@email.example.com",
            local: "strong-bad",
            sender_domain: "email.example.com",
            domain: "email.example.com",
            ip: ip.parse().unwrap(),
            helo: "mx.example.org",
            receiver: "rx.example.net",
            validated: "unknown",
            now: 12,
        }
    }

    fn ex(s: &str, ip: &str) -> String {
        MacroString::parse(s, Kind::Explain)
            .unwrap()
            .expand(&values(ip))
    }

    #[test]
    fn rfc_examples() {
        // RFC 7208 §7.4.
        let v4 = "192.0.2.3";
        assert_eq!(ex("%{s}", v4), "strong-bad@email.example.com");
        assert_eq!(ex("%{o}", v4), "email.example.com");
        assert_eq!(ex("%{d4}", v4), "email.example.com");
        assert_eq!(ex("%{d2}", v4), "example.com");
        assert_eq!(ex("%{d1}", v4), "com");
        assert_eq!(ex("%{dr}", v4), "com.example.email");
        assert_eq!(ex("%{d2r}", v4), "example.email");
        assert_eq!(ex("%{l}", v4), "strong-bad");
        assert_eq!(ex("%{l-}", v4), "strong.bad");
        assert_eq!(ex("%{lr}", v4), "strong-bad");
        assert_eq!(ex("%{lr-}", v4), "bad.strong");
        assert_eq!(ex("%{l1r-}", v4), "strong");
        assert_eq!(
            ex("%{ir}.%{v}._spf.%{d2}", v4),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            ex("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01"),
            "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
        );
        assert_eq!(ex("%%%_%-", v4), "% %20");
        assert_eq!(ex("%{L}", v4), "strong-bad");
        assert_eq!(ex("%{S}", v4), "strong-bad%40email.example.com");
        assert_eq!(
            ex("%{c} %{r} %{t}", "2001:db8::1"),
            "2001:db8::1 rx.example.net 12"
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in ["%", "%x", "%{", "%{x}", "%{d0}", "%{d2q}", "a b", "%{c}"] {
            assert!(MacroString::parse(bad, Kind::Domain).is_err(), "{bad}");
        }
        for bad in ["foo", "example.123", "museum.", "ex.-com", ""] {
            assert!(MacroString::parse_domain(bad).is_err(), "{bad}");
        }
        for good in [
            "example.com",
            "example.com.",
            "%{d}",
            "_spf.%{d2}",
            "a.b-c",
            "%%",
        ] {
            assert!(MacroString::parse_domain(good).is_ok(), "{good}");
        }
    }
}
