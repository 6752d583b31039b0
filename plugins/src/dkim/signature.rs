//! DKIM tag lists (RFC 6376 §3.2) and the DKIM-Signature field (§3.5), parsed strictly:
//! required tags enforced, duplicate tags refused, unknown tags ignored, `i=` inside `d=`.

use super::canon::Canon;

/// Tags kept per tag list at most: a real signature has about 12, a key record 4.
const MAX_TAGS: usize = 64;
/// Names in `h=` at most: real signers list 10 to 30; this bounds the header hash work.
pub const MAX_SIGNED_FIELDS: usize = 256;

/// Splits a tag list into `(name, value)` pairs, values trimmed of folding white space.
/// A trailing `;` is allowed; a duplicate name, an empty or malformed name is an error.
pub fn tag_list(text: &str) -> Result<Vec<(&str, &str)>, &'static str> {
    let mut tags: Vec<(&str, &str)> = Vec::new();
    let parts: Vec<&str> = text.split(';').collect();
    for (n, part) in parts.iter().enumerate() {
        let part = trim_fws(part);
        if part.is_empty() {
            if n + 1 == parts.len() {
                break; // the optional final `;`
            }
            return Err("empty tag");
        }
        let Some((name, value)) = part.split_once('=') else {
            return Err("tag without '='");
        };
        let name = trim_fws(name);
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err("malformed tag name");
        }
        if tags.iter().any(|(t, _)| *t == name) {
            return Err("duplicate tag");
        }
        if tags.len() >= MAX_TAGS {
            return Err("too many tags");
        }
        tags.push((name, trim_fws(value)));
    }
    Ok(tags)
}

fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_fws(s: &str) -> &str {
    s.trim_matches(is_fws)
}

/// Decodes base64 with folding white space anywhere (RFC 6376 §2.4): any other character
/// outside the alphabet, or bad padding, is an error.
pub fn base64(text: &str) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits, mut pad, mut chars) = (0u32, 0u32, 0usize, 0usize);
    for c in text.bytes() {
        let v = match c {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            b'=' => {
                pad += 1;
                chars += 1;
                continue;
            }
            _ if pad > 0 => return Err("data after base64 padding"),
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("not base64"),
        };
        chars += 1;
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if pad > 2 || !chars.is_multiple_of(4) {
        return Err("bad base64 length or padding");
    }
    Ok(out)
}

/// Encodes `data` as base64 with padding, on one line.
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let v = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            match i <= c.len() {
                true => out.push(char::from(A[(v >> (18 - 6 * i) & 63) as usize])),
                false => out.push('='),
            }
        }
    }
    out
}

/// The signing algorithms a signature may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// The key type (`k=` of the key record) this algorithm needs.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa",
            Algorithm::Ed25519Sha256 => "ed25519",
        }
    }
}

/// What the Authentication-Results clause names of a signature: known even when the rest of
/// it is broken. Values are cleaned ([`clean`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ident {
    pub d: String,
    pub i: String,
    /// The first 8 characters of `b=` (RFC 6008 §4).
    pub b: String,
}

/// A parsed DKIM-Signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub algorithm: Algorithm,
    pub b: Vec<u8>,
    pub bh: Vec<u8>,
    pub header_canon: Canon,
    pub body_canon: Canon,
    /// `d=`, lowercased.
    pub domain: String,
    /// `h=`, lowercased, in order.
    pub headers: Vec<String>,
    /// `i=`, or `@d` without it.
    pub identity: String,
    /// `l=`: the body bytes signed.
    pub length: Option<u64>,
    /// `s=`, lowercased.
    pub selector: String,
    pub timestamp: Option<u64>,
    pub expires: Option<u64>,
    pub ident: Ident,
}

/// Why a signature is not usable (a `permerror`), with what could be read of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub why: &'static str,
    pub ident: Ident,
}

/// Text from a signature for a log line or a header: printable ASCII outside `;`, `(`, `)`,
/// `"`, `\` and blanks, at most 256 characters; anything else becomes `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .take(256)
        .map(|c| match c.is_ascii_graphic() && !";()\"\\".contains(c) {
            true => c,
            false => '?',
        })
        .collect()
}

/// A DNS name as DKIM uses it (`d=`, `s=`): labels of letters, digits, `-`, `_`.
pub fn dns_name(s: &str) -> bool {
    ringsmtpd_plugin_api::dnsutil::check_zone(s).is_ok() && !s.ends_with('.')
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses the value of a DKIM-Signature field (after the colon, folded or not).
pub fn parse(value: &[u8]) -> Result<Signature, Invalid> {
    let mut ident = Ident::default();
    let bad = |why, ident: &Ident| {
        Err(Invalid {
            why,
            ident: ident.clone(),
        })
    };
    let Ok(text) = std::str::from_utf8(value) else {
        return bad("not UTF-8", &ident);
    };
    let tags = match tag_list(text) {
        Ok(t) => t,
        Err(why) => return bad(why, &ident),
    };
    let get = |name: &str| tags.iter().find(|(t, _)| *t == name).map(|(_, v)| *v);
    // What the A-R clause shows, first: it is wanted even for a broken signature.
    if let Some(d) = get("d") {
        ident.d = clean(&d.to_ascii_lowercase());
    }
    if let Some(b) = get("b") {
        let b: String = b.chars().filter(|c| !is_fws(*c)).take(8).collect();
        ident.b = clean(&b);
    }
    ident.i = match get("i") {
        Some(i) => clean(i),
        None if !ident.d.is_empty() => format!("@{}", ident.d),
        None => String::new(),
    };
    match get("v") {
        Some("1") => {}
        Some(_) => return bad("unknown version v=", &ident),
        None => return bad("no v= tag", &ident),
    }
    let algorithm = match get("a").map(str::to_ascii_lowercase).as_deref() {
        Some("rsa-sha256") => Algorithm::RsaSha256,
        Some("ed25519-sha256") => Algorithm::Ed25519Sha256,
        Some("rsa-sha1") => return bad("rsa-sha1 is not acceptable (RFC 8301)", &ident),
        Some(_) => return bad("unknown algorithm a=", &ident),
        None => return bad("no a= tag", &ident),
    };
    let b = match get("b").map(base64) {
        Some(Ok(b)) if !b.is_empty() => b,
        Some(Ok(_)) => return bad("empty b= tag", &ident),
        Some(Err(why)) => return bad(why, &ident),
        None => return bad("no b= tag", &ident),
    };
    let bh = match get("bh").map(base64) {
        Some(Ok(bh)) if bh.len() == 32 => bh,
        Some(Ok(_)) => return bad("bh= is not a SHA-256 hash", &ident),
        Some(Err(why)) => return bad(why, &ident),
        None => return bad("no bh= tag", &ident),
    };
    let (header_canon, body_canon) = match get("c").map(str::to_ascii_lowercase) {
        None => (Canon::Simple, Canon::Simple),
        Some(c) => {
            let (h, b) = c.split_once('/').unwrap_or((c.as_str(), "simple"));
            match (Canon::parse(h), Canon::parse(b)) {
                (Some(h), Some(b)) => (h, b),
                _ => return bad("unknown canonicalization c=", &ident),
            }
        }
    };
    let domain = match get("d") {
        Some(d) if dns_name(d) => d.to_ascii_lowercase(),
        Some(_) => return bad("d= is not a domain name", &ident),
        None => return bad("no d= tag", &ident),
    };
    let headers: Vec<String> = match get("h") {
        Some(h) => h
            .split(':')
            .map(|n| trim_fws(n).to_ascii_lowercase())
            .collect(),
        None => return bad("no h= tag", &ident),
    };
    if headers.len() > MAX_SIGNED_FIELDS {
        return bad("too many fields in h=", &ident);
    }
    if headers.iter().any(|n| n.is_empty() || n.contains(is_fws)) {
        return bad("malformed field name in h=", &ident);
    }
    if !headers.iter().any(|n| n == "from") {
        return bad("From is not signed (h= lacks from)", &ident);
    }
    let identity = match get("i") {
        None => format!("@{domain}"),
        Some(i) => {
            let Some((_, idom)) = i.rsplit_once('@') else {
                return bad("i= has no '@'", &ident);
            };
            let idom = idom.to_ascii_lowercase();
            let inside = idom == domain
                || (idom.len() > domain.len()
                    && idom.ends_with(&domain)
                    && idom.as_bytes()[idom.len() - domain.len() - 1] == b'.');
            if !inside {
                return bad("i= is not within d=", &ident);
            }
            i.to_string()
        }
    };
    let length = match get("l") {
        None => None,
        Some(l) => match number(l) {
            Some(n) => Some(n),
            None => return bad("malformed l= tag", &ident),
        },
    };
    if let Some(q) = get("q") {
        if !q
            .split(':')
            .any(|m| trim_fws(m).eq_ignore_ascii_case("dns/txt"))
        {
            return bad("no supported query method q=", &ident);
        }
    }
    let selector = match get("s") {
        Some(s) if dns_name(s) => s.to_ascii_lowercase(),
        Some(_) => return bad("s= is not a DNS name", &ident),
        None => return bad("no s= tag", &ident),
    };
    let timestamp = match get("t") {
        None => None,
        Some(t) => match number(t) {
            Some(n) => Some(n),
            None => return bad("malformed t= tag", &ident),
        },
    };
    let expires = match get("x") {
        None => None,
        Some(x) => match number(x) {
            Some(n) => Some(n),
            None => return bad("malformed x= tag", &ident),
        },
    };
    if let (Some(t), Some(x)) = (timestamp, expires) {
        if x <= t {
            return bad("x= is not after t=", &ident);
        }
    }
    Ok(Signature {
        algorithm,
        b,
        bh,
        header_canon,
        body_canon,
        domain,
        headers,
        identity,
        length,
        selector,
        timestamp,
        expires,
        ident,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; \
        i=joe@mail.example.com; s=sel; t=100; x=200; l=5; h=From : To:subject; \
        bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; b=dGVzdA==; z=ignored|x";

    fn why(value: &str) -> &'static str {
        parse(value.as_bytes()).unwrap_err().why
    }

    #[test]
    fn parses_every_tag() {
        let s = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(s.algorithm, Algorithm::RsaSha256);
        assert_eq!(
            (s.header_canon, s.body_canon),
            (Canon::Relaxed, Canon::Simple)
        );
        assert_eq!(s.domain, "example.com");
        assert_eq!(s.headers, ["from", "to", "subject"]);
        assert_eq!(s.identity, "joe@mail.example.com");
        assert_eq!(s.length, Some(5));
        assert_eq!((s.timestamp, s.expires), (Some(100), Some(200)));
        assert_eq!(s.b, b"test");
        assert_eq!(s.ident.b, "dGVzdA==");
        assert_eq!(s.ident.i, "joe@mail.example.com");
    }

    #[test]
    fn defaults() {
        let s = parse(b"v=1;a=ed25519-sha256;d=Example.COM;s=x;h=from;bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=;b=AAAA;").unwrap();
        assert_eq!(
            (s.header_canon, s.body_canon),
            (Canon::Simple, Canon::Simple)
        );
        assert_eq!(s.identity, "@example.com");
        assert_eq!(s.ident.i, "@example.com");
        let s = parse(GOOD.replace("relaxed/simple", "relaxed").as_bytes()).unwrap();
        assert_eq!(s.body_canon, Canon::Simple);
    }

    #[test]
    fn refuses_broken_signatures() {
        let cases: &[(&str, &str, &str)] = &[
            ("v=1; ", "", "no v= tag"),
            ("v=1", "v=2", "unknown version v="),
            (
                "a=rsa-sha256",
                "a=rsa-sha1",
                "rsa-sha1 is not acceptable (RFC 8301)",
            ),
            ("a=rsa-sha256", "a=dsa-md5", "unknown algorithm a="),
            ("b=dGVzdA==", "b=dGV*zdA==", "not base64"),
            ("b=dGVzdA==", "b=dGVzdA", "bad base64 length or padding"),
            ("b=dGVzdA==", "b=dG==VzdA", "data after base64 padding"),
            ("b=dGVzdA==", "b=", "empty b= tag"),
            (
                "bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=",
                "bh=dGVzdA==",
                "bh= is not a SHA-256 hash",
            ),
            (
                "c=relaxed/simple",
                "c=loose/simple",
                "unknown canonicalization c=",
            ),
            ("d=example.com", "d=exa mple.com", "d= is not a domain name"),
            (
                "h=From : To:subject",
                "h=To:subject",
                "From is not signed (h= lacks from)",
            ),
            (
                "h=From : To:subject",
                "h=from::to",
                "malformed field name in h=",
            ),
            (
                "i=joe@mail.example.com",
                "i=joe@example.org",
                "i= is not within d=",
            ),
            (
                "i=joe@mail.example.com",
                "i=joe@badexample.com",
                "i= is not within d=",
            ),
            ("i=joe@mail.example.com", "i=joe", "i= has no '@'"),
            ("l=5", "l=-5", "malformed l= tag"),
            ("l=5", "l=99999999999999999999999", "malformed l= tag"),
            ("s=sel", "s=", "s= is not a DNS name"),
            ("x=200", "x=50", "x= is not after t="),
            ("t=100", "t=1e3", "malformed t= tag"),
            ("z=ignored|x", "d=again", "duplicate tag"),
            ("z=ignored|x", "9z=x", "malformed tag name"),
            ("z=ignored|x", "z", "tag without '='"),
            ("t=100;", "t=100;;", "empty tag"),
        ];
        for (from, to, want) in cases {
            assert!(GOOD.contains(from), "{from}");
            assert_eq!(why(&GOOD.replacen(from, to, 1)), *want, "{to}");
        }
        assert_eq!(why("\u{0}\u{ff}"), "tag without '='");
        assert_eq!(why("\u{0}\u{ff}=1"), "malformed tag name");
        assert_eq!(parse(b"v=1; d=a.b; \xff").unwrap_err().why, "not UTF-8");
        let many = format!("{GOOD}; h2=x{}", ";y=1".repeat(100));
        assert!(parse(many.as_bytes()).is_err());
        let long_h = GOOD.replace("h=From", &format!("h={}From", "x:".repeat(300)));
        assert_eq!(why(&long_h), "too many fields in h=");
    }

    #[test]
    fn broken_signature_keeps_its_ident_clean() {
        let e = parse(b"v=1; d=Ex;ample.com; b=ab cd\r\n ef; i=\"a b\"@x").unwrap_err();
        assert_eq!(e.why, "tag without '='");
        let e = parse(b"v=2; d=Example.com; b=ab cd\r\n efgh; i=\"a b\"@x(y)").unwrap_err();
        assert_eq!(e.why, "unknown version v=");
        assert_eq!(e.ident.d, "example.com");
        assert_eq!(e.ident.b, "abcdefgh");
        assert_eq!(e.ident.i, "?a?b?@x?y?");
        // `;` cannot be inside a value; quotes and parentheses are replaced.
        let e = parse(b"v=2; d=x.y; i=\"a\"(b)@x.y").unwrap_err();
        assert_eq!(e.ident.i, "?a??b?@x.y");
    }

    #[test]
    fn base64_with_folding() {
        assert_eq!(base64("dGVz\r\n dA=\t="), Ok(b"test".to_vec()));
        assert_eq!(base64(""), Ok(Vec::new()));
        assert!(base64("dGVzdA=").is_err());
        assert!(base64("====").is_err());
    }
}
