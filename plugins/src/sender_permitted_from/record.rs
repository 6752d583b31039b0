//! An SPF record parsed into terms (RFC 7208 §4.6, §5, §6), strictly: any syntax error
//! anywhere makes the whole record a permerror, before anything is evaluated.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::macros::{escape, Kind, MacroString};

/// Records longer than this are refused (a TXT answer can hold 64 KiB; real records are
/// far under 1 KiB, RFC 7208 §3.4 asks for one that fits a 512-byte UDP answer).
pub const MAX_RECORD: usize = 4096;
/// At most this many terms in a record.
pub const MAX_TERMS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A {
        domain: Option<MacroString>,
        v4: u8,
        v6: u8,
    },
    Mx {
        domain: Option<MacroString>,
        v4: u8,
        v6: u8,
    },
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

impl Mechanism {
    /// Mechanisms that cost a DNS lookup (§4.6.4).
    pub fn counts(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
    /// The term as written (ASCII), for logs and the Received-SPF header.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub directives: Vec<Directive>,
    pub redirect: Option<MacroString>,
    pub exp: Option<MacroString>,
}

/// True if `txt` is an SPF version 1 record: `v=spf1` (any case), then a space or the end.
pub fn is_spf1(txt: &str) -> bool {
    let b = txt.as_bytes();
    b.len() >= 6 && b[..6].eq_ignore_ascii_case(b"v=spf1") && (b.len() == 6 || b[6] == b' ')
}

impl Record {
    /// Parses a record that [`is_spf1`] selected.
    pub fn parse(txt: &str) -> Result<Record, String> {
        if txt.len() > MAX_RECORD {
            return Err(format!("record longer than {MAX_RECORD} bytes"));
        }
        if !is_spf1(txt) {
            return Err("not an SPF version 1 record".into());
        }
        let mut record = Record::default();
        for (n, term) in txt[6..].split(' ').filter(|t| !t.is_empty()).enumerate() {
            if n >= MAX_TERMS {
                return Err(format!("more than {MAX_TERMS} terms"));
            }
            record.term(term)?;
        }
        Ok(record)
    }

    fn term(&mut self, term: &str) -> Result<(), String> {
        if let Some(eq) = term.find('=') {
            let name = &term[..eq];
            if is_name(name) {
                let value = &term[eq + 1..];
                let slot = if name.eq_ignore_ascii_case("redirect") {
                    &mut self.redirect
                } else if name.eq_ignore_ascii_case("exp") {
                    &mut self.exp
                } else {
                    // Unknown modifiers are ignored, but must be well-formed (§6).
                    MacroString::parse(value, Kind::Domain)?;
                    return Ok(());
                };
                if slot.is_some() {
                    return Err(format!("'{name}' given twice"));
                }
                *slot = Some(MacroString::parse_domain(value)?);
                return Ok(());
            }
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let mechanism = mechanism(rest)?;
        self.directives.push(Directive {
            qualifier,
            mechanism,
            text: term.to_string(),
        });
        Ok(())
    }
}

/// `name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`
fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn mechanism(s: &str) -> Result<Mechanism, String> {
    let end = s.find([':', '/']).unwrap_or(s.len());
    let (name, rest) = s.split_at(end);
    let bad = || format!("invalid term '{}'", escape(s));
    // `:` then a required argument, or nothing.
    let arg = |rest: &str| -> Result<Option<String>, String> {
        match rest.strip_prefix(':') {
            Some(a) => Ok(Some(a.to_string())),
            None if rest.is_empty() => Ok(None),
            None => Err(bad()),
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "all" if rest.is_empty() => Ok(Mechanism::All),
        "include" => match arg(rest)? {
            Some(d) => Ok(Mechanism::Include(MacroString::parse_domain(&d)?)),
            None => Err(bad()),
        },
        "exists" => match arg(rest)? {
            Some(d) => Ok(Mechanism::Exists(MacroString::parse_domain(&d)?)),
            None => Err(bad()),
        },
        "ptr" => match arg(rest)? {
            Some(d) => Ok(Mechanism::Ptr(Some(MacroString::parse_domain(&d)?))),
            None => Ok(Mechanism::Ptr(None)),
        },
        "a" | "mx" => {
            let (spec, v4, v6) = dual_cidr(rest).ok_or_else(bad)?;
            let domain = match spec {
                "" => None,
                s => match s.strip_prefix(':') {
                    Some(d) => Some(MacroString::parse_domain(d)?),
                    None => return Err(bad()),
                },
            };
            if name.eq_ignore_ascii_case("a") {
                Ok(Mechanism::A { domain, v4, v6 })
            } else {
                Ok(Mechanism::Mx { domain, v4, v6 })
            }
        }
        "ip4" => {
            let (net, len) = network(rest, 32).ok_or_else(bad)?;
            Ok(Mechanism::Ip4(net, len))
        }
        "ip6" => {
            let (net, len) = network(rest, 128).ok_or_else(bad)?;
            Ok(Mechanism::Ip6(net, len))
        }
        _ => Err(bad()),
    }
}

/// `:network[/len]` of `ip4` and `ip6`; the length defaults to `max`.
fn network<T: std::str::FromStr>(rest: &str, max: u8) -> Option<(T, u8)> {
    let a = rest.strip_prefix(':')?;
    let (net, len) = match a.split_once('/') {
        Some((net, len)) => (net, cidr(len, max)?),
        None => (a, max),
    };
    Some((net.parse().ok()?, len))
}

/// A prefix length: digits without a leading zero (except `0`), at most `max`.
fn cidr(s: &str, max: u8) -> Option<u8> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 3 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    let n: u8 = s.parse().ok()?;
    (n <= max).then_some(n)
}

/// Splits `[:domain-spec][/v4][//v6]` into the domain part and both prefix lengths.
fn dual_cidr(s: &str) -> Option<(&str, u8, u8)> {
    let mut rest = s;
    let mut v6 = 128;
    let mut v4 = 32;
    if let Some(i) = rest.rfind("//") {
        if is_digits(&rest[i + 2..]) {
            v6 = cidr(&rest[i + 2..], 128)?;
            rest = &rest[..i];
        }
    }
    if let Some(i) = rest.rfind('/') {
        if is_digits(&rest[i + 1..]) {
            v4 = cidr(&rest[i + 1..], 32)?;
            rest = &rest[..i];
        }
    }
    // Anything else after a `/` is a malformed length, not part of a domain.
    if rest.ends_with('/') {
        return None;
    }
    Some((rest, v4, v6))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_terms() {
        let r = Record::parse(
            "v=spf1 +a mx/24//64 -ip4:192.0.2.0/24 ~ip6:2001:db8::/32 ?all exp=e.%{d} x-foo=%{l}",
        )
        .unwrap();
        assert_eq!(r.directives.len(), 5);
        assert_eq!(
            r.directives[1].mechanism,
            Mechanism::Mx {
                domain: None,
                v4: 24,
                v6: 64
            }
        );
        assert_eq!(r.directives[2].qualifier, Qualifier::Fail);
        assert_eq!(
            r.directives[3].mechanism,
            Mechanism::Ip6("2001:db8::".parse().unwrap(), 32)
        );
        assert!(r.exp.is_some() && r.redirect.is_none());
        assert!(Record::parse("v=spf1").unwrap().directives.is_empty());
        assert!(Record::parse("V=SpF1  a:example.com//0 ").is_ok());
    }

    #[test]
    fn refuses_bad_syntax() {
        for bad in [
            "v=spf1 ip4:192.0.2.1/33",
            "v=spf1 ip4:192.0.2.01",
            "v=spf1 a/032",
            "v=spf1 a:example.com/",
            "v=spf1 mx//129",
            "v=spf1 include",
            "v=spf1 all:foo",
            "v=spf1 foo",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 exp=",
            "v=spf1 a:foo",
            "v=spf1 x-y=%",
            "v=spf1 a:example.com\rptr",
            "v=spf1 \u{80}a",
            "v=spf1 ip6:::1/129",
        ] {
            assert!(Record::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("v=spf1 {}", "a ".repeat(MAX_TERMS + 1));
        assert!(Record::parse(&long).is_err());
        assert!(Record::parse(&"v=spf1 ".repeat(1000)).is_err());
    }
}
