//! Where the resolver sends its questions, and its default limits: `dns_servers` lines
//! (`IP[:port]`), `/etc/resolv.conf` `nameserver` lines, and the `dns_*` defaults that
//! `config.rs` applies when a file is absent.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// The DNS port (RFC 1035 §4.2).
pub const DNS_PORT: u16 = 53;
/// Default per-try timeout (`dns_timeout`): 5 s, the resolv.conf(5) default.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default retries after the first try (`dns_retries`): 2, so three tries, each to the next
/// upstream. With the default timeout a lookup gives up after 15 s, inside the default 30 s
/// `plugin_timeout`, so a plugin sees `Err(Timeout)` and applies its own soft behaviour.
pub const DEFAULT_DNS_RETRIES: u32 = 2;
/// Default cache size (`dns_cache_size`) in answers per worker: 10,000 answers are about 2-4 MB
/// per worker, enough for the DNSBL answers of every client of the last TTL at a busy site.
pub const DEFAULT_DNS_CACHE_SIZE: usize = 10_000;
/// The upstream when neither `dns_servers` nor `/etc/resolv.conf` names one.
pub const FALLBACK_SERVER: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), DNS_PORT);

/// Parses one upstream: `IP` or `IP:port`, an IPv6 address bare (`::1`) or in brackets
/// (`[::1]`, `[::1]:5353`). Port 0 and host names are refused: the resolver needs an address
/// to send to before it can resolve anything.
pub fn parse_server(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty DNS server address".into());
    }
    let bad_port = |p: &str| format!("bad port '{p}' in '{s}' (expected 1-65535)");
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad_port(p)),
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(format!("'{s}': missing ']'"));
        };
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| format!("'{inner}' is not an IPv6 address"))?;
        let port = match after {
            "" => DNS_PORT,
            p => match p.strip_prefix(':') {
                Some(p) => port_of(p)?,
                None => return Err(format!("'{s}' is not [IPv6]:PORT")),
            },
        };
        return Ok(SocketAddr::new(IpAddr::V6(ip), port));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DNS_PORT));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            let ip: std::net::Ipv4Addr = host.parse().map_err(|_| {
                format!("'{host}' is not an IP address (dns_servers takes IP[:port])")
            })?;
            Ok(SocketAddr::new(IpAddr::V4(ip), port_of(port)?))
        }
        _ => Err(format!(
            "'{s}' is not an IP address (dns_servers takes IP[:port], IPv6 with a port as [IP]:port)"
        )),
    }
}

/// The `nameserver` addresses of a resolv.conf text, in order. Lines that do not parse (a
/// scoped link-local `fe80::1%eth0`, a typo) are skipped, as the C library does.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let sa = SocketAddr::new(ip, DNS_PORT);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out
}

/// The default upstreams: `/etc/resolv.conf`'s `nameserver` lines, else 127.0.0.1:53.
pub fn default_servers() -> Vec<SocketAddr> {
    let from_file = std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| resolv_conf_servers(&t))
        .unwrap_or_default();
    if from_file.is_empty() {
        vec![FALLBACK_SERVER]
    } else {
        from_file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let ok = |s: &str| parse_server(s).unwrap().to_string();
        assert_eq!(ok("192.0.2.1"), "192.0.2.1:53");
        assert_eq!(ok(" 192.0.2.1:5353 "), "192.0.2.1:5353");
        assert_eq!(ok("::1"), "[::1]:53");
        assert_eq!(ok("[::1]"), "[::1]:53");
        assert_eq!(ok("[2001:db8::1]:5300"), "[2001:db8::1]:5300");
        for bad in [
            "",
            "localhost",
            "resolver.example:53",
            "192.0.2.1:0",
            "192.0.2.1:65536",
            "192.0.2.1:+53",
            "192.0.2.1:",
            "[::1",
            "[::1]53",
            "[::1]:x",
            "[192.0.2.1]:53",
            "256.1.1.1",
            "fe80::1%eth0",
        ] {
            assert!(parse_server(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver 192.0.2.53\n\
                    nameserver   2001:db8::53\nnameserver fe80::1%eth0\nnameserver\n\
                    options timeout:1\nnameserver 192.0.2.53\n";
        let got = resolv_conf_servers(text);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert!(!default_servers().is_empty());
    }
}
