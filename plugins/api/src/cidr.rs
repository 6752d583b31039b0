//! IP address blocks as plugin config files write them: `192.0.2.0/24`, `2001:db8::/32`, a
//! single address, and qmail's and qpsmtpd's prefixes (`192.168.`, `2001:db8:`, `10.1`).
//!
//! ```ignore
//! let net = Cidr::parse("192.168.", IpForms::Prefix)?;
//! assert!(net.contains(cx.conn.remote.ip()));
//! let mut list = IpList::default();
//! list.add("10.0.0.0/8", IpForms::Cidr)?;
//! ```
//!
//! An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, a dual-stack listener's or a PROXY
//! header's view of an IPv4 client) counts as the IPv4 address, in patterns and in the
//! addresses matched. Parsed once, when a plugin is built; matching allocates nothing.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address as (is IPv6, bits left-aligned in a u128).
fn bits(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)) << 96),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        n => u128::MAX << (128 - u32::from(n.min(128))),
    }
}

/// An address block: the first `len` bits of an IPv4 or IPv6 address. An exact address is a
/// block of full length; qmail's `192.168.` prefix is a /16.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    v6: bool,
    bits: u128,
    len: u8,
}

/// Which textual forms a pattern may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpForms {
    /// `IP` and `IP/len` (hosts_allow, invalid_resolvable_fromhost).
    Cidr,
    /// Also qmail's prefixes: `192.168.` (whole octets, with the trailing dot) and IPv6 groups
    /// `2001:db8:` or nibbles `2001:0db` (relay's files).
    Prefix,
    /// Also a bare fragment `10.1` meaning the whole octets `10.1.` (whitelisthosts, where
    /// qpsmtpd matched any start-anchored fragment; dnsbl_allow).
    Fragment,
}

impl Cidr {
    /// The block of the first `len` bits of `ip` (host bits are ignored).
    pub fn new(ip: IpAddr, len: u8) -> Cidr {
        let (v6, b) = bits(ip);
        // Both families are left-aligned in the u128, so the length counts from the top.
        Cidr::of(v6, b, len.min(if v6 { 128 } else { 32 }))
    }

    fn of(v6: bool, bits: u128, len: u8) -> Cidr {
        Cidr {
            v6,
            bits: bits & mask(len),
            len,
        }
    }

    /// True if `ip` is inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, b) = bits(ip);
        v6 == self.v6 && b & mask(self.len) == self.bits
    }

    /// True if the block is a single address.
    pub fn is_host(&self) -> bool {
        self.len == if self.v6 { 128 } else { 32 }
    }

    /// The first address of the block.
    pub fn addr(&self) -> IpAddr {
        match self.v6 {
            true => IpAddr::V6(Ipv6Addr::from(self.bits)),
            false => IpAddr::V4(Ipv4Addr::from((self.bits >> 96) as u32)),
        }
    }

    /// Parses one pattern in the forms `forms` allows.
    pub fn parse(text: &str, forms: IpForms) -> Result<Cidr, String> {
        if let Some((addr, len)) = text.split_once('/') {
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("'{addr}' is not an IP address"))?;
            let max: u8 = if bits(ip).0 { 128 } else { 32 };
            return match len.parse() {
                Ok(n) if n <= max && !len.starts_with('+') => Ok(Cidr::new(ip, n)),
                _ => Err(format!("'/{len}' is not a prefix length 0..={max}")),
            };
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Cidr::new(ip, 128));
        }
        if forms == IpForms::Cidr {
            return Err(format!("'{text}' is not an IP address or IP/len"));
        }
        if text.contains(':') {
            return parse_v6_prefix(text);
        }
        let (octets, dotted) = match text.strip_suffix('.') {
            Some(t) => (t, true),
            None => (text, false),
        };
        if !dotted && forms != IpForms::Fragment {
            return Err(format!(
                "'{text}' is not an IP address, IP/len or prefix ending in '.' (write '{text}.')"
            ));
        }
        let bad = || format!("'{text}' is not an IP address, IP/len or IPv4 prefix");
        let mut value: u32 = 0;
        let mut n = 0u32;
        for part in octets.split('.') {
            let ok =
                !part.is_empty() && part.len() <= 3 && part.bytes().all(|b| b.is_ascii_digit());
            let octet: u8 = match part.parse() {
                Ok(o) if ok && n < 3 => o,
                _ => return Err(bad()),
            };
            value = value << 8 | u32::from(octet);
            n += 1;
        }
        let bits = (u128::from(value) << (32 - 8 * n)) << 96;
        Ok(Cidr::of(false, bits, 8 * n as u8))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

/// `2001:db8:` (whole groups) or `2001:0db` (the last group counts nibbles, as qpsmtpd matched
/// the expanded address `2001:0db8:...` one hex digit at a time).
fn parse_v6_prefix(text: &str) -> Result<Cidr, String> {
    let bad = || format!("'{text}' is not an IP address, IP/len or IPv6 prefix");
    let (groups, whole) = match text.strip_suffix(':') {
        Some(t) => (t, true),
        None => (text, false),
    };
    let count = groups.split(':').count();
    if count > 7 {
        return Err(bad());
    }
    let mut value: u128 = 0;
    let mut len: u32 = 0;
    for (i, part) in groups.split(':').enumerate() {
        if part.is_empty() || part.len() > 4 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let v = u128::from_str_radix(part, 16).map_err(|_| bad())?;
        let width = match i + 1 == count && !whole {
            true => 4 * part.len() as u32,
            false => 16,
        };
        value = (value << width) | v;
        len += width;
    }
    Ok(Cidr::of(true, value << (128 - len), len as u8))
}

/// True if two addresses are in the same /24 (IPv4) or /64 (IPv6): qpsmtpd's "network
/// match" for server pools whose names and addresses do not pair up exactly.
pub fn same_network(a: IpAddr, b: IpAddr) -> bool {
    let len = if bits(a).0 { 64 } else { 24 };
    Cidr::new(a, len).contains(b)
}

/// A set of patterns; matching is a hash lookup for exact addresses and a scan for the
/// blocks (a few lines in practice).
#[derive(Debug, Default)]
pub struct IpList {
    exact: HashSet<(bool, u128)>,
    nets: Vec<Cidr>,
}

impl IpList {
    /// Adds one pattern.
    pub fn add(&mut self, text: &str, forms: IpForms) -> Result<(), String> {
        let net = Cidr::parse(text, forms)?;
        if net.is_host() {
            self.exact.insert((net.v6, net.bits));
        } else {
            self.nets.push(net);
        }
        Ok(())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.exact.contains(&bits(ip)) || self.nets.iter().any(|n| n.contains(ip))
    }

    /// The first block that holds `ip` (a host's block for an exact match), for a log line.
    pub fn find(&self, ip: IpAddr) -> Option<Cidr> {
        if self.exact.contains(&bits(ip)) {
            return Some(Cidr::new(ip, 128));
        }
        self.nets.iter().find(|n| n.contains(ip)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str, f: IpForms) -> Cidr {
        Cidr::parse(s, f).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn cidr_v4_and_v6() {
        let n = net("192.0.2.0/24", IpForms::Cidr);
        assert!(n.contains(ip("192.0.2.77")));
        assert!(!n.contains(ip("192.0.3.1")));
        assert!(!n.contains(ip("2001:db8::1")));
        let n = net("192.0.2.0/25", IpForms::Cidr);
        assert!(n.contains(ip("192.0.2.127")) && !n.contains(ip("192.0.2.128")));
        // Host bits in the network part are ignored.
        assert!(net("192.0.2.9/24", IpForms::Cidr).contains(ip("192.0.2.200")));
        let n = net("2001:db8::/32", IpForms::Cidr);
        assert!(n.contains(ip("2001:db8:ffff::1")));
        assert!(!n.contains(ip("2001:db9::1")));
        assert!(net("0.0.0.0/0", IpForms::Cidr).contains(ip("203.0.113.5")));
        assert!(!net("0.0.0.0/0", IpForms::Cidr).contains(ip("::1")));
        assert!(net("::/0", IpForms::Cidr).contains(ip("::1")));
        // A mapped address counts as IPv4, as pattern and as client.
        assert!(net("192.0.2.0/24", IpForms::Cidr).contains(ip("::ffff:192.0.2.1")));
        let exact = net("198.51.100.7", IpForms::Cidr);
        assert!(exact.contains(ip("198.51.100.7")) && !exact.contains(ip("198.51.100.8")));
        assert!(exact.is_host());
        assert_eq!(exact.to_string(), "198.51.100.7/32");
        assert_eq!(
            net("2001:db8::9/32", IpForms::Cidr).to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn bad_cidr() {
        for bad in [
            "192.0.2.0/33",
            "2001:db8::/129",
            "192.0.2/24",
            "x/8",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/",
        ] {
            assert!(Cidr::parse(bad, IpForms::Prefix).is_err(), "{bad}");
        }
        for bad in ["192.168.", "10.1", "2001:db8:", "example.com"] {
            assert!(Cidr::parse(bad, IpForms::Cidr).is_err(), "{bad}");
        }
    }

    #[test]
    fn v4_prefixes() {
        let n = net("192.168.", IpForms::Prefix);
        assert!(n.contains(ip("192.168.4.5")));
        assert!(!n.contains(ip("192.169.4.5")));
        assert!(net("10.", IpForms::Prefix).contains(ip("10.200.0.1")));
        assert!(net("10.1.2.", IpForms::Prefix).contains(ip("10.1.2.3")));
        // Without the dot only the Fragment form takes it, and it matches whole octets.
        assert!(Cidr::parse("10.1", IpForms::Prefix).is_err());
        let f = net("10.1", IpForms::Fragment);
        assert!(f.contains(ip("10.1.9.9")));
        assert!(!f.contains(ip("10.10.9.9")));
        assert!(net("10", IpForms::Fragment).contains(ip("10.1.2.3")));
        for bad in [
            "256.",
            "1.2.3.4.",
            "a.",
            "1..",
            ".",
            "01234.",
            "300.1.",
            "example.com",
        ] {
            assert!(Cidr::parse(bad, IpForms::Fragment).is_err(), "{bad}");
        }
    }

    #[test]
    fn v6_prefixes() {
        let n = net("2001:db8:e431:ae06:", IpForms::Prefix);
        assert!(n.contains(ip("2001:db8:e431:ae06::25")));
        assert!(!n.contains(ip("2001:db8:e431:ae07::25")));
        // The last group without ':' counts hex digits of the expanded form.
        let n = net("2001:0DB8", IpForms::Prefix);
        assert!(n.contains(ip("2001:db8::1")));
        assert!(!n.contains(ip("2001:db9::1")));
        let n = net("2001:0db", IpForms::Prefix);
        assert!(n.contains(ip("2001:db8::1")) && n.contains(ip("2001:dbf::1")));
        assert!(!n.contains(ip("2001:dc0::1")));
        for bad in ["2001:xyz:", "2001::db8:", "1:2:3:4:5:6:7:8:", "12345:"] {
            assert!(Cidr::parse(bad, IpForms::Prefix).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_list_and_networks() {
        let mut l = IpList::default();
        l.add("192.0.2.1", IpForms::Prefix).unwrap();
        l.add("10.", IpForms::Prefix).unwrap();
        l.add("2001:db8::/64", IpForms::Prefix).unwrap();
        assert!(l.contains(ip("192.0.2.1")));
        assert!(!l.contains(ip("192.0.2.2")));
        assert!(l.contains(ip("10.9.8.7")));
        assert!(l.contains(ip("2001:db8::99")));
        assert!(!l.contains(ip("2001:db8:1::99")));
        assert_eq!(
            l.find(ip("10.9.8.7")).map(|n| n.to_string()),
            Some("10.0.0.0/8".into())
        );
        assert_eq!(
            l.find(ip("::ffff:192.0.2.1")),
            Some(net("192.0.2.1", IpForms::Cidr))
        );
        assert!(l.add("nope", IpForms::Prefix).is_err());
        assert!(same_network(ip("192.0.2.1"), ip("192.0.2.200")));
        assert!(!same_network(ip("192.0.2.1"), ip("192.0.3.1")));
        assert!(same_network(ip("2001:db8::1"), ip("2001:db8::ffff:1")));
        assert!(!same_network(ip("192.0.2.1"), ip("::1")));
    }
}
