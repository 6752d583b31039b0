//! Parsing of SMTP paths (RFC 5321 §4.1.2), RFC 6531 for SMTPUTF8.
//!
//! The grammar, from RFC 5321 §4.1.2 and §4.1.3 (with RFC 6531 §3.3 additions marked "6531"):
//!
//! ```text
//! Reverse-path = Path / "<>"            Forward-path = Path / "<Postmaster>" (§4.5.1)
//! Path         = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l        = At-domain *( "," At-domain )        ; source route, ignored (Appendix C)
//! At-domain    = "@" Domain
//! Mailbox      = Local-part "@" ( Domain / address-literal )
//! Local-part   = Dot-string / Quoted-string
//! Dot-string   = Atom *("." Atom)         Atom = 1*atext   ; 6531: atext =/ UTF8-non-ascii
//! Quoted-string= DQUOTE *(qtextSMTP / "\" %d32-126) DQUOTE ; 6531: qtextSMTP =/ UTF8-non-ascii
//! Domain       = sub-domain *("." sub-domain)              ; 6531: sub-domain =/ U-label
//! sub-domain   = Let-dig [Ldh-str]
//! address-literal = "[" ( IPv4 / "IPv6:" IPv6 / Ldh-str ":" 1*dcontent ) "]"
//! ```
//!
//! The only allocation is the `String` inside the returned [`Address`].

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::envelope::Address;

/// Why a path did not parse; the text goes into the 501/553 reply and starts with an enhanced
/// status code (RFC 3463: 5.1.7 bad sender syntax, 5.1.3 bad recipient syntax; RFC 6531 §3.7.4.2:
/// 5.6.7 non-ASCII address without SMTPUTF8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub &'static str);

/// RFC 5321 §4.5.3.1.1: "The maximum total length of a user name or other local-part is 64
/// octets."
const MAX_LOCAL: usize = 64;
/// RFC 5321 §4.5.3.1.2: "The maximum total length of a domain name or number is 255 octets."
/// Today the 256-octet path limit implies it; it is kept so the rule survives a change there.
const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3: a path is at most 256 octets "including the punctuation and element
/// separators", so the angle brackets and any source route count.
const MAX_PATH: usize = 256;
/// RFC 1035 §2.3.4: a DNS label is at most 63 octets (checked for ASCII labels only; a U-label's
/// length limit applies to its A-label form, which we do not compute here).
const MAX_LABEL: usize = 63;

/// An error naming the sender (5.1.7) or the recipient (5.1.3), chosen by `reverse`.
macro_rules! bad {
    ($reverse:expr, $why:literal) => {
        AddressError(if $reverse {
            concat!("5.1.7 Bad sender address syntax: ", $why)
        } else {
            concat!("5.1.3 Bad recipient address syntax: ", $why)
        })
    };
}

/// Parses an RFC 5321 path including its angle brackets: `<local@domain>`,
/// `<@a,@b:local@domain>` (the source route is checked and dropped, RFC 5321 Appendix C), and
/// for reverse paths `<>` (the null path, RFC 5321 §4.5.5). For forward paths `<postmaster>`
/// (any case) is accepted without a domain (RFC 5321 §4.5.1).
///
/// With `smtputf8` (the client gave `SMTPUTF8` on MAIL, RFC 6531 §3.4) non-ASCII characters are
/// allowed in the local part and in domain labels (RFC 6531 §3.3); without it any non-ASCII
/// character is refused with 5.6.7. Control characters (C0, DEL, C1) are refused everywhere.
/// IPv4 literals are checked with [`Ipv4Addr`]'s parser, which refuses leading zeros ("01").
pub fn parse_path(input: &str, reverse: bool, smtputf8: bool) -> Result<Address, AddressError> {
    let mut addr = Address::null();
    parse_path_into(input, reverse, smtputf8, &mut addr)?;
    Ok(addr)
}

/// [`parse_path`] into an existing address, reusing its buffer: the session parses every MAIL
/// and RCPT into recycled addresses, so a long-lived connection allocates none per command.
/// On error `into` is left empty.
pub fn parse_path_into(
    input: &str,
    reverse: bool,
    smtputf8: bool,
    into: &mut Address,
) -> Result<(), AddressError> {
    into.clear();
    if input.len() > MAX_PATH {
        return Err(bad!(reverse, "path longer than 256 octets"));
    }
    for c in input.chars() {
        if c.is_control() {
            return Err(bad!(reverse, "control character"));
        }
        if !c.is_ascii() && !smtputf8 {
            return Err(AddressError("5.6.7 Non-ASCII address requires SMTPUTF8"));
        }
    }
    let mut p = Cursor {
        s: input.as_bytes(),
        i: 0,
    };
    if !p.eat(b'<') {
        return Err(bad!(reverse, "must be enclosed in <>"));
    }
    if p.eat(b'>') {
        return match (p.peek(), reverse) {
            (Some(_), _) => Err(bad!(reverse, "characters after '>'")),
            (None, true) => Ok(()),
            (None, false) => Err(bad!(reverse, "empty address")),
        };
    }
    // RFC 5321 Appendix C: a source route must be accepted, and the route ignored.
    let routed = p.peek() == Some(b'@');
    if routed {
        loop {
            p.eat(b'@');
            p.domain().map_err(|e| e.text(reverse))?;
            if p.eat(b':') {
                break;
            }
            if !(p.eat(b',') && p.peek() == Some(b'@')) {
                return Err(bad!(reverse, "bad source route"));
            }
        }
    }
    let start = p.i;
    if p.peek() == Some(b'"') {
        p.quoted_string().map_err(|e| e.text(reverse))?;
    } else {
        p.dot_string().map_err(|e| e.text(reverse))?;
    }
    let at = p.i;
    if at - start > MAX_LOCAL {
        return Err(bad!(reverse, "local part longer than 64 octets"));
    }
    if !p.eat(b'@') {
        let local = input.get(start..at).unwrap_or("");
        // RFC 5321 §4.5.1: "<Postmaster>" (case-insensitive) without a domain, and no route.
        if !reverse && !routed && p.rest() == b">" && local.eq_ignore_ascii_case("postmaster") {
            into.text.push_str(local);
            return Ok(());
        }
        return Err(match p.peek() {
            Some(b'>') | None => bad!(reverse, "missing @domain"),
            Some(_) => bad!(reverse, "invalid character in local part"),
        });
    }
    let domain_start = p.i;
    if p.peek() == Some(b'[') {
        p.address_literal().map_err(|e| e.text(reverse))?;
    } else {
        p.domain().map_err(|e| e.text(reverse))?;
    }
    let end = p.i;
    if end - domain_start > MAX_DOMAIN {
        return Err(bad!(reverse, "domain longer than 255 octets"));
    }
    if !p.eat(b'>') {
        return Err(match p.peek() {
            None => bad!(reverse, "missing closing '>'"),
            Some(_) => bad!(reverse, "invalid character in domain"),
        });
    }
    if p.peek().is_some() {
        return Err(bad!(reverse, "characters after '>'"));
    }
    let text = input
        .get(start..end)
        .ok_or(bad!(reverse, "invalid address"))?;
    into.text.push_str(text);
    into.at = Some(at - start);
    Ok(())
}

/// What went wrong inside one element; turned into the sender or recipient text by [`Why::text`].
#[derive(Debug, Clone, Copy)]
enum Why {
    EmptyAtom,
    LocalChar,
    Unterminated,
    QuotedChar,
    EmptyLabel,
    Hyphen,
    LongLabel,
    Literal,
}

impl Why {
    fn text(self, reverse: bool) -> AddressError {
        match self {
            Why::EmptyAtom => bad!(
                reverse,
                "empty, leading, trailing or double dot in local part"
            ),
            Why::LocalChar => bad!(reverse, "invalid character in local part"),
            Why::Unterminated => bad!(reverse, "unterminated quoted string"),
            Why::QuotedChar => bad!(reverse, "invalid character in quoted string"),
            Why::EmptyLabel => bad!(
                reverse,
                "empty domain label (leading, trailing or double dot)"
            ),
            Why::Hyphen => bad!(reverse, "domain label starts or ends with '-'"),
            Why::LongLabel => bad!(reverse, "domain label longer than 63 octets"),
            Why::Literal => bad!(reverse, "invalid address literal"),
        }
    }
}

/// A position in the path. Splits happen only at ASCII bytes, so every slice taken from the
/// input stays on a UTF-8 boundary.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.i..).unwrap_or_default()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        self.i += usize::from(hit);
        hit
    }

    /// Advances over bytes matching `f`, returns how many.
    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> usize {
        let n = self.rest().iter().take_while(|&&b| f(b)).count();
        self.i += n;
        n
    }

    /// Dot-string = Atom *("." Atom), RFC 5321 §4.1.2; atext per RFC 5322 §3.2.3, plus
    /// UTF8-non-ascii (RFC 6531 §3.3; non-ASCII was already refused unless SMTPUTF8).
    fn dot_string(&mut self) -> Result<(), Why> {
        let start = self.i;
        loop {
            if self.take_while(is_atext) == 0 {
                let dot = self.i > start || self.peek() == Some(b'.');
                return Err(if dot { Why::EmptyAtom } else { Why::LocalChar });
            }
            if !self.eat(b'.') {
                return Ok(());
            }
        }
    }

    /// Quoted-string = DQUOTE *QcontentSMTP DQUOTE, RFC 5321 §4.1.2: qtextSMTP is %d32-33 /
    /// %d35-91 / %d93-126 (printable ASCII and space, but not `"` or `\`), quoted-pairSMTP is
    /// `\` followed by %d32-126. The quotes and backslashes stay in the text as sent.
    fn quoted_string(&mut self) -> Result<(), Why> {
        self.eat(b'"');
        loop {
            match self.peek() {
                None => return Err(Why::Unterminated),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => match self.s.get(self.i + 1) {
                    Some(32..=126) => self.i += 2,
                    None => return Err(Why::Unterminated),
                    Some(_) => return Err(Why::QuotedChar),
                },
                Some(32..=126) | Some(0x80..) => self.i += 1,
                Some(_) => return Err(Why::QuotedChar),
            }
        }
    }

    /// Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str], RFC 5321 §4.1.2:
    /// letters, digits and inner hyphens. RFC 6531 §3.3 adds U-labels (non-ASCII bytes here).
    /// An empty label covers a leading, doubled or trailing dot (`a.b.` is not a Domain).
    fn domain(&mut self) -> Result<(), Why> {
        loop {
            let start = self.i;
            let n = self.take_while(|b| b.is_ascii_alphanumeric() || b == b'-' || b >= 0x80);
            let label = self.s.get(start..self.i).unwrap_or_default();
            match (label.first(), label.last()) {
                (None, _) | (_, None) => return Err(Why::EmptyLabel),
                (Some(b'-'), _) | (_, Some(b'-')) => return Err(Why::Hyphen),
                _ if n > MAX_LABEL && label.is_ascii() => return Err(Why::LongLabel),
                _ => {}
            }
            if !self.eat(b'.') {
                return Ok(());
            }
        }
    }

    /// address-literal, RFC 5321 §4.1.3: `[IPv4]`, `[IPv6:addr]` (tag case-insensitive, as all
    /// ABNF literals), or a General-address-literal `[tag:content]` with tag an Ldh-str and
    /// content 1*dcontent (%d33-90 / %d94-126), accepted on syntax alone. Always ASCII.
    fn address_literal(&mut self) -> Result<(), Why> {
        self.eat(b'[');
        let start = self.i;
        self.take_while(|b| matches!(b, 33..=90 | 94..=126));
        let inner = self.s.get(start..self.i).unwrap_or_default();
        if !self.eat(b']') {
            return Err(Why::Literal);
        }
        let inner = std::str::from_utf8(inner).map_err(|_| Why::Literal)?;
        let ok = match inner.split_once(':') {
            None => inner.parse::<Ipv4Addr>().is_ok(),
            Some((tag, addr)) if tag.eq_ignore_ascii_case("IPv6") => {
                addr.parse::<Ipv6Addr>().is_ok()
            }
            // An IPv6 address without its "IPv6:" tag would pass as a general literal with
            // tag "2001"; §4.1.3 requires the tag, so refuse it.
            Some(_) if inner.parse::<Ipv6Addr>().is_ok() => false,
            Some((tag, content)) => {
                // Standardized-tag = Ldh-str = *( ALPHA / DIGIT / "-" ) Let-dig
                let ldh = tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                ldh && tag
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
                    && !content.is_empty()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(Why::Literal)
        }
    }
}

/// atext, RFC 5322 §3.2.3 (referenced by RFC 5321 §4.1.2), plus UTF-8 bytes (RFC 6531 §3.3).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str, reverse: bool, utf8: bool) -> Address {
        match parse_path(input, reverse, utf8) {
            Ok(a) => a,
            Err(e) => panic!("{input:?} should parse, got {e:?}"),
        }
    }

    fn err(input: &str, reverse: bool, utf8: bool) -> &'static str {
        match parse_path(input, reverse, utf8) {
            Ok(a) => panic!("{input:?} should fail, got {a:?}"),
            Err(e) => e.0,
        }
    }

    /// Asserts the local part and domain of a forward path (and the reverse path agrees).
    fn parts(input: &str, local: &str, domain: &str) {
        for reverse in [false, true] {
            let a = ok(input, reverse, false);
            assert_eq!((a.local(), a.domain()), (local, domain), "{input:?}");
            assert_eq!(a.as_str(), format!("{local}@{domain}"));
            assert_eq!(a.to_string(), format!("<{local}@{domain}>"));
        }
    }

    #[test]
    fn plain_mailbox() {
        parts("<user@example.com>", "user", "example.com");
        parts("<a@b>", "a", "b");
        parts(
            "<first.last+tag@sub.example.co.uk>",
            "first.last+tag",
            "sub.example.co.uk",
        );
        parts("<!#$%&'*+-/=?^_`{|}~@x.y>", "!#$%&'*+-/=?^_`{|}~", "x.y");
        parts("<u@3com.com>", "u", "3com.com");
        parts("<u@a-b.c--d.e>", "u", "a-b.c--d.e");
        parts("<User@EXAMPLE.com>", "User", "EXAMPLE.com");
    }

    #[test]
    fn null_path_only_for_senders() {
        let a = ok("<>", true, false);
        assert!(a.is_null());
        assert_eq!(
            (a.local(), a.domain(), a.to_string().as_str()),
            ("", "", "<>")
        );
        assert!(err("<>", false, false).starts_with("5.1.3 "));
        assert!(err("<>x", true, false).contains("after '>'"));
        assert!(err("<> ", true, false).contains("after '>'"));
    }

    #[test]
    fn postmaster_forward_only() {
        for p in ["<postmaster>", "<Postmaster>", "<POSTMASTER>"] {
            let a = ok(p, false, false);
            assert!(a.is_bare_postmaster());
            assert_eq!((a.local(), a.domain()), (&p[1..p.len() - 1], ""));
        }
        assert!(err("<postmaster>", true, false).contains("missing @domain"));
        assert!(err("<@relay:postmaster>", false, false).contains("missing @domain"));
        assert!(err("<\"postmaster\">", false, false).contains("missing @domain"));
        assert!(err("<postmistress>", false, false).contains("missing @domain"));
        assert!(err("<postmaster>x", false, false).contains("missing @domain"));
        parts("<postmaster@example.com>", "postmaster", "example.com");
        assert!(!ok("<postmaster@example.com>", false, false).is_bare_postmaster());
    }

    #[test]
    fn source_route_is_dropped() {
        parts("<@a,@b.c:user@d.e>", "user", "d.e");
        parts("<@relay.example:user@[10.0.0.1]>", "user", "[10.0.0.1]");
        // The route is not part of the text kept for relaying.
        assert_eq!(ok("<@a:u@b>", true, false).as_str(), "u@b");
    }

    #[test]
    fn bad_source_routes() {
        for p in [
            "<@a>",
            "<@a,user@b>",
            "<@a,:user@b>",
            "<@:user@b>",
            "<@a;@b:user@c>",
            "<@a,b:u@c>",
            "<@a:>",
        ] {
            assert!(parse_path(p, true, false).is_err(), "{p:?}");
        }
        assert!(err("<@-a:user@b>", false, false).contains("'-'"));
        assert!(err("<@a.:user@b>", false, false).contains("empty domain label"));
    }

    #[test]
    fn address_literals() {
        parts("<u@[192.0.2.1]>", "u", "[192.0.2.1]");
        parts("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]");
        parts("<u@[ipv6:::1]>", "u", "[ipv6:::1]");
        parts(
            "<u@[IPv6:::ffff:192.0.2.1]>",
            "u",
            "[IPv6:::ffff:192.0.2.1]",
        );
        parts("<u@[x-tag:any!content~]>", "u", "[x-tag:any!content~]");
        for p in [
            "<u@[256.0.0.1]>",
            "<u@[1.2.3]>",
            "<u@[01.2.3.4]>",
            "<u@[1.2.3.4.5]>",
            "<u@[IPv6:2001:db8::g]>",
            "<u@[IPv6:1.2.3.4]>",
            "<u@[2001:db8::1]>",
            "<u@[]>",
            "<u@[tag:]>",
            "<u@[tag-:x]>",
            "<u@[:x]>",
            "<u@[1.2.3.4>",
            "<u@[1.2.3.4 ]>",
            "<u@[a\\b:c]>",
            "<u@[1.2.3.4].com>",
        ] {
            assert!(err(p, false, false).starts_with("5.1.3 "), "{p:?}");
        }
        assert!(err("<u@[300.1.1.1]>", true, false).contains("address literal"));
    }

    #[test]
    fn quoted_local_parts() {
        parts("<\"john doe\"@example.com>", "\"john doe\"", "example.com");
        parts("<\"a\\\"b\\\\c\"@x>", "\"a\\\"b\\\\c\"", "x");
        parts("<\"a@b\"@x>", "\"a@b\"", "x");
        parts("<\"<>,;:\"@x>", "\"<>,;:\"", "x");
        parts("<\"\"@x>", "\"\"", "x");
        parts("<\"\\ \"@x>", "\"\\ \"", "x");
        assert!(err("<\"abc@x>", false, false).contains("unterminated"));
        assert!(err("<\"abc\\", false, false).contains("unterminated"));
        assert!(err("<\"a\tb\"@x>", false, false).contains("control"));
        assert!(err("<\"a\"b@x>", false, false).contains("invalid character in local part"));
        assert!(err("<a.\"b\"@x>", false, false).contains("local part"));
        assert!(err("<\"a\"\"b\"@x>", false, false).contains("local part"));
    }

    #[test]
    fn dot_string_edges() {
        for p in ["<.a@b>", "<a.@b>", "<a..b@b>", "<.@b>", "<@b>"] {
            assert!(parse_path(p, false, false).is_err(), "{p:?}");
        }
        assert!(err("<.a@b>", false, false).contains("dot in local part"));
        assert!(err("<a..b@c>", true, false).starts_with("5.1.7 "));
        assert!(err("<a b@c>", false, false).contains("invalid character in local part"));
        assert!(err("<a(b)@c>", false, false).contains("invalid character"));
        assert!(err("<a@b@c>", false, false).contains("invalid character in domain"));
    }

    #[test]
    fn domain_edges() {
        assert!(err("<a@b.>", false, false).contains("empty domain label"));
        assert!(err("<a@.b>", false, false).contains("empty domain label"));
        assert!(err("<a@b..c>", false, false).contains("empty domain label"));
        assert!(err("<a@>", false, false).contains("empty domain label"));
        assert!(err("<a@-b.c>", false, false).contains("'-'"));
        assert!(err("<a@b-.c>", false, false).contains("'-'"));
        assert!(err("<a@b_c.d>", false, false).contains("invalid character in domain"));
        assert!(err("<user@example.com#>", false, false).contains("invalid character in domain"));
        assert!(err("<a@b c>", false, false).contains("invalid character in domain"));
        let long_label = format!("<a@{}.com>", "x".repeat(64));
        assert!(err(&long_label, false, false).contains("63"));
        ok(&format!("<a@{}.com>", "x".repeat(63)), false, false);
    }

    #[test]
    fn brackets_and_trailing_garbage() {
        assert!(err("user@example.com", false, false).contains("<>"));
        assert!(err("", true, false).contains("<>"));
        assert!(err("<user@example.com", false, false).contains("missing closing"));
        assert!(err("<a@b>x", false, false).contains("after '>'"));
        assert!(err("<a@b>>", false, false).contains("after '>'"));
        assert!(err("<a@b> ", false, false).contains("after '>'"));
        assert!(err(" <a@b>", false, false).contains("<>"));
        assert!(err("< a@b>", false, false).contains("local part"));
        assert!(err("<a@b >", false, false).contains("invalid character in domain"));
        assert!(err("<<a@b>>", false, false).contains("local part"));
    }

    #[test]
    fn control_characters() {
        for p in [
            "<a\0b@c>",
            "<a@b\0>",
            "<a\r@b>",
            "<a@b\n>",
            "<a\x7f@b>",
            "<a\u{85}@b>",
        ] {
            assert!(err(p, false, true).contains("control character"), "{p:?}");
        }
    }

    #[test]
    fn smtputf8() {
        let a = ok("<用户@例子.广告>", false, true);
        assert_eq!((a.local(), a.domain()), ("用户", "例子.广告"));
        assert!(a.is_utf8());
        let a = ok("<\"jöhn doe\"@bücher.de>", true, true);
        assert_eq!((a.local(), a.domain()), ("\"jöhn doe\"", "bücher.de"));
        assert_eq!(
            err("<用户@例子.广告>", false, false),
            "5.6.7 Non-ASCII address requires SMTPUTF8"
        );
        assert_eq!(
            err("<user@bücher.de>", true, false),
            "5.6.7 Non-ASCII address requires SMTPUTF8"
        );
        assert!(err("<u@[1.2.3.ü]>", false, true).contains("address literal"));
        assert!(err("<u@-ü.de>", false, true).contains("'-'"));
        assert!(err("<\"a\\ü\"@x>", false, true).contains("quoted string"));
        // An A-label is plain ASCII and needs no SMTPUTF8.
        assert!(!ok("<u@xn--bcher-kva.de>", false, false).is_utf8());
    }

    #[test]
    fn length_limits() {
        let local64 = "l".repeat(64);
        let a = ok(&format!("<{local64}@x>"), false, false);
        assert_eq!(a.local().len(), 64);
        assert!(err(&format!("<{}@x>", "l".repeat(65)), false, false).contains("64"));
        // A quoted local part counts with its quotes.
        assert!(err(&format!("<\"{}\"@x>", "l".repeat(63)), false, false).contains("64"));
        // The path limit binds first: "<a@" + 253-octet domain + ">" is 257 octets.
        let label = "d".repeat(63);
        let domain253 = format!("{label}.{label}.{label}.{}", "d".repeat(61));
        assert_eq!(domain253.len(), 253);
        let p = format!("<a@{domain253}>");
        assert_eq!(p.len(), 257);
        assert!(err(&p, false, false).contains("256"));
        let domain251 = format!("{label}.{label}.{label}.{}", "d".repeat(59));
        let a = ok(&format!("<a@{domain251}>"), false, false);
        assert_eq!(a.domain().len(), 251);
        let p = format!("<{}@x>", "l".repeat(300));
        assert!(err(&p, false, false).contains("256"));
    }

    #[test]
    fn errors_name_sender_or_recipient() {
        assert!(err("<a b@c>", true, false).starts_with("5.1.7 Bad sender address syntax"));
        assert!(err("<a b@c>", false, false).starts_with("5.1.3 Bad recipient address syntax"));
    }

    use crate::testing as counting;

    #[test]
    fn one_allocation_on_success_none_on_error() {
        for (input, want) in [
            ("<@a,@b:\"x y\"@[IPv6:2001:db8::1]>", 1),
            ("<用户@例子.广告>", 1),
            ("<postmaster>", 1),
            ("<>", 0),
            ("<a..b@c>", 0),
            ("<a@b>x", 0),
            ("<a@b\0>", 0),
        ] {
            let before = counting::allocations();
            let result = parse_path(input, true, true).or_else(|_| parse_path(input, false, false));
            assert_eq!(
                counting::allocations() - before,
                want,
                "{input:?} {result:?}"
            );
        }
    }
}
