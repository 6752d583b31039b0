//! DNS as plugins see it: ask now, await later.
//!
//! [`Services::dns_query`](crate::Services::dns_query) sends the question at once (batched with
//! every other question of the same event-loop turn, coalesced with identical ones in flight,
//! answered from the cache when fresh) and returns a [`DnsLookup`]: a `'static` handle that a
//! plugin can keep in a note at `connect` and await at `rcpt` ("start early, decide late").
//! Dropping the handle withdraws interest.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The record types plugins ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
    Cname,
    Ns,
}

/// One answer record (only the types above; others in an answer are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// The character-strings of one TXT record, joined.
    Txt(String),
    Ptr(String),
    Cname(String),
    Ns(String),
}

/// A successful exchange: the name exists with records (possibly none of the asked type:
/// NODATA), or does not exist (NXDOMAIN, which for a blocklist means "not listed").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsAnswer {
    pub nxdomain: bool,
    pub records: Vec<Record>,
    /// The smallest TTL of the answer (or the negative TTL), as cached.
    pub ttl: u32,
}

impl DnsAnswer {
    /// The IPv4 addresses in the answer.
    pub fn ipv4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::A(a) => Some(*a),
            _ => None,
        })
    }

    /// The IPv4 and IPv6 addresses in the answer.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::A(a) => Some(IpAddr::V4(*a)),
            Record::Aaaa(a) => Some(IpAddr::V6(*a)),
            _ => None,
        })
    }

    /// The TXT strings in the answer.
    pub fn txt(&self) -> impl Iterator<Item = &str> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::Txt(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// The MX records in the answer: preference and host, in answer order.
    pub fn mx(&self) -> impl Iterator<Item = (u16, &str)> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::Mx {
                preference,
                exchange,
            } => Some((*preference, exchange.as_str())),
            _ => None,
        })
    }

    /// The host names of PTR, CNAME, NS and MX records (MX sorted by the caller if needed).
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.records.iter().filter_map(|r| match r {
            Record::Ptr(n) | Record::Cname(n) | Record::Ns(n) => Some(n.as_str()),
            Record::Mx { exchange, .. } => Some(exchange.as_str()),
            _ => None,
        })
    }
}

/// Why no answer came. Every plugin maps these to its documented soft behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// No upstream answered in time (after retries).
    Timeout,
    /// SERVFAIL from every upstream tried.
    ServFail,
    /// REFUSED, or another error rcode.
    Refused,
    /// The name is not a valid DNS name (too long, empty label...).
    BadName,
    /// No resolver is configured (tests, or `dns_servers` empty).
    NoResolver,
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsError::Timeout => "DNS timeout",
            DnsError::ServFail => "DNS SERVFAIL",
            DnsError::Refused => "DNS query refused",
            DnsError::BadName => "invalid DNS name",
            DnsError::NoResolver => "no DNS resolver configured",
        })
    }
}

/// What a lookup resolves to. Answers are shared (coalesced and cached), hence `Rc`.
pub type DnsResult = Result<Rc<DnsAnswer>, DnsError>;

/// A question in flight. Await it (any time later, any number of polls); drop it to withdraw.
pub struct DnsLookup(Pin<Box<dyn Future<Output = DnsResult>>>);

impl DnsLookup {
    /// A lookup from any future (the resolver's own handle type goes in here).
    pub fn new(fut: impl Future<Output = DnsResult> + 'static) -> DnsLookup {
        DnsLookup(Box::pin(fut))
    }

    /// A lookup that is already answered (cache hits, errors, fakes in tests).
    pub fn ready(result: DnsResult) -> DnsLookup {
        DnsLookup::new(std::future::ready(result))
    }
}

impl Future for DnsLookup {
    type Output = DnsResult;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DnsResult> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for DnsLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DnsLookup(..)")
    }
}

/// The name to look up for a reverse (PTR) query or a DNSBL: `4.3.2.1.in-addr.arpa` style,
/// with `zone` as suffix (`in-addr.arpa`/`ip6.arpa` for PTR, the blocklist zone otherwise).
/// IPv6 addresses are written as 32 reversed nibbles (RFC 3596 §2.5, RFC 5782 §2.4).
pub fn reversed_ip(ip: IpAddr, zone: &str) -> String {
    use std::fmt::Write;
    let mut name = String::with_capacity(80);
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let _ = write!(name, "{}.{}.{}.{}", o[3], o[2], o[1], o[0]);
        }
        IpAddr::V6(v6) => {
            for (i, byte) in v6.octets().iter().rev().enumerate() {
                if i > 0 {
                    name.push('.');
                }
                let _ = write!(name, "{:x}.{:x}", byte & 0xf, byte >> 4);
            }
        }
    }
    if !zone.is_empty() {
        name.push('.');
        name.push_str(zone.trim_matches('.'));
    }
    name
}

/// The PTR name of an address.
pub fn ptr_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => reversed_ip(ip, "in-addr.arpa"),
        IpAddr::V6(_) => reversed_ip(ip, "ip6.arpa"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_names() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(reversed_ip(v4, "zen.example"), "1.2.0.192.zen.example");
        assert_eq!(ptr_name(v4), "1.2.0.192.in-addr.arpa");
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let want = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(ptr_name(v6), want);
    }

    #[test]
    fn ready_lookup_resolves() {
        let answer = DnsAnswer {
            nxdomain: true,
            ..DnsAnswer::default()
        };
        let r = crate::testing::block_on(DnsLookup::ready(Ok(Rc::new(answer))));
        assert!(r.unwrap().nxdomain);
    }
}
