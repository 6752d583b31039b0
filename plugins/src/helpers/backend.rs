//! Where a backend server is, as plugin arguments give it: a host (an address, or a name
//! resolved at each use through the worker's DNS client), a port, a timeout. Shared by the
//! plugins that talk to servers (`auth/*`, `milter`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use ringsmtpd_plugin_api::dns::QType;
use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::Services;

/// A server to connect to: an address, or a name resolved at each use (so a changed DNS
/// record is followed without a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    /// An IP address (IPv6 with or without brackets) or a host name (letters, digits, `-`,
    /// `_` and dots: RFC 1123 names, and the `_` qpsmtpd allowed).
    pub(crate) fn parse(s: &str) -> Result<Host, String> {
        let bare = s
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        if s.eq_ignore_ascii_case("localhost") {
            return Ok(Host::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        let name = s.trim_end_matches('.');
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if valid {
            Ok(Host::Name(name.to_ascii_lowercase()))
        } else {
            Err(format!("'{s}' is not an IP address or host name"))
        }
    }

    /// The address to connect to: the IP, or the first A (then AAAA) record of the name.
    pub(crate) async fn resolve(
        &self,
        svc: &dyn Services,
        port: u16,
    ) -> Result<SocketAddr, String> {
        let name = match self {
            Host::Ip(ip) => return Ok(SocketAddr::new(*ip, port)),
            Host::Name(name) => name,
        };
        let mut why = String::new();
        for qtype in [QType::A, QType::Aaaa] {
            match svc.dns_query(name, qtype).await {
                Ok(answer) => {
                    if let Some(ip) = answer.ips().next() {
                        return Ok(SocketAddr::new(ip, port));
                    }
                    if answer.nxdomain {
                        return Err(format!("{name}: no such host (NXDOMAIN)"));
                    }
                }
                Err(e) => why = format!("{name}: {e}"),
            }
        }
        if why.is_empty() {
            why = format!("{name}: no address");
        }
        Err(why)
    }

    /// A connection to `port` at this host, within `timeout`; the error says why, naming the
    /// host as `what` when it does not resolve.
    pub(crate) async fn connect(
        &self,
        svc: &dyn Services,
        port: u16,
        timeout: Duration,
        what: &str,
    ) -> Result<(SocketAddr, Box<dyn Stream>), String> {
        let addr = self
            .resolve(svc, port)
            .await
            .map_err(|e| format!("cannot resolve {what}: {e}"))?;
        match svc.connect(&Endpoint::Tcp(addr), timeout).await {
            Ok(stream) => Ok((addr, stream)),
            Err(e) => Err(format!("cannot connect to {addr}: {e}")),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A port number, 1..=65535.
pub(crate) fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port '{s}' is not a number from 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::{DnsError, Record};
    use ringsmtpd_plugin_api::testing::{block_on, FakeServices};

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("127.0.0.1"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(Host::parse("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(Host::parse("::1"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            Host::parse("LocalHost"),
            Ok(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(
            Host::parse("Imap.Example.org."),
            Ok(Host::Name("imap.example.org".into()))
        );
        for bad in ["", "a..b", "-a.b", "a b", "a/b", "x:1", "."] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resolve_names() {
        let svc = FakeServices::new("mx.test");
        svc.answer(
            "ldap.test",
            QType::A,
            vec![Record::A("192.0.2.7".parse().unwrap())],
        );
        svc.answer(
            "v6.test",
            QType::Aaaa,
            vec![Record::Aaaa("2001:db8::7".parse().unwrap())],
        );
        svc.answer("v6.test", QType::A, vec![]);
        svc.fail("broken.test", QType::A, DnsError::ServFail);
        svc.fail("broken.test", QType::Aaaa, DnsError::ServFail);
        let r = |h: &str| block_on(Host::parse(h).unwrap().resolve(&*svc, 389));
        assert_eq!(r("ldap.test"), Ok("192.0.2.7:389".parse().unwrap()));
        assert_eq!(r("v6.test"), Ok("[2001:db8::7]:389".parse().unwrap()));
        assert_eq!(r("192.0.2.9"), Ok("192.0.2.9:389".parse().unwrap()));
        assert!(r("missing.test").unwrap_err().contains("NXDOMAIN"));
        assert!(r("broken.test").unwrap_err().contains("SERVFAIL"));
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("143"), Ok(143));
        for bad in ["0", "65536", "x", "-1", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
