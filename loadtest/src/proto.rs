//! Sans-IO pieces of the SMTP client: the reply parser, and the PROXY protocol header.
//!
//! Replies are parsed from whatever the server sent, in place, with explicit bounds: a server
//! under test is exactly the kind of peer that sends garbage, endless lines or nothing at all.

use std::net::{IpAddr, SocketAddr};

use crate::config::ProxyVersion;

/// Longest reply line accepted. RFC 5321 §4.5.3.1.5 says 512 including CRLF; real servers
/// send longer texts, so allow four times that before calling it garbage.
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines in one multiline reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 100;

/// One complete reply: its code, and (for EHLO) which extensions the generator uses it
/// advertised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub pipelining: bool,
    pub starttls: bool,
    /// An `AUTH` line listing `PLAIN` (`AUTH=PLAIN`, the pre-RFC 4954 form, counts too).
    pub auth_plain: bool,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// A line longer than [`MAX_REPLY_LINE`].
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines in one reply.
    TooManyLines,
    /// Not `ddd`, `ddd text` or `ddd-text`, or a code outside 200..=599, or a multiline reply
    /// whose lines disagree on the code.
    Malformed,
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProtoError::LineTooLong => "reply line too long",
            ProtoError::TooManyLines => "reply has too many lines",
            ProtoError::Malformed => "malformed reply",
        })
    }
}

/// Parses one reply from the start of `buf`. `Ok(None)`: not complete yet, read more.
/// On success, also returns how many bytes it used. Lines may end in CRLF or a bare LF
/// (we measure servers, we do not police them).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
    let mut pos = 0;
    let mut code = None;
    let mut reply = Reply::default();
    for _ in 0..MAX_REPLY_LINES {
        let rest = &buf[pos..];
        let Some(nl) = memchr::memchr(b'\n', rest) else {
            return if rest.len() >= MAX_REPLY_LINE {
                Err(ProtoError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        if nl + 1 > MAX_REPLY_LINE {
            return Err(ProtoError::LineTooLong);
        }
        let mut line = &rest[..nl];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        pos += nl + 1;
        let (c, last, text) = match line {
            [a, b, c] => (digits(*a, *b, *c)?, true, &[][..]),
            [a, b, c, sep, text @ ..] if *sep == b' ' || *sep == b'-' => {
                (digits(*a, *b, *c)?, *sep == b' ', text)
            }
            _ => return Err(ProtoError::Malformed),
        };
        if *code.get_or_insert(c) != c {
            return Err(ProtoError::Malformed);
        }
        let mut words = text.split(|&b| b == b' ' || b == b'=');
        let keyword = words.next().unwrap_or(&[]);
        if keyword.eq_ignore_ascii_case(b"PIPELINING") {
            reply.pipelining = true;
        } else if keyword.eq_ignore_ascii_case(b"STARTTLS") {
            reply.starttls = true;
        } else if keyword.eq_ignore_ascii_case(b"AUTH") {
            reply.auth_plain |= words.any(|w| w.eq_ignore_ascii_case(b"PLAIN"));
        }
        if last {
            reply.code = c;
            return Ok(Some((reply, pos)));
        }
    }
    Err(ProtoError::TooManyLines)
}

fn digits(a: u8, b: u8, c: u8) -> Result<u16, ProtoError> {
    if !(b'2'..=b'5').contains(&a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(ProtoError::Malformed);
    }
    Ok((a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16)
}

/// Writes a PROXY protocol header (haproxy's proxy-protocol.txt) claiming `src` -> `dst`.
/// The two addresses must be of one family; an IPv4 one is mapped into IPv6 otherwise.
pub fn proxy_header(version: ProxyVersion, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src_ip, dst_ip) = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V6(d)) => (IpAddr::V6(s.to_ipv6_mapped()), IpAddr::V6(d)),
        (IpAddr::V6(s), IpAddr::V4(d)) => (IpAddr::V6(s), IpAddr::V6(d.to_ipv6_mapped())),
        (s, d) => (s, d),
    };
    match version {
        ProxyVersion::V1 => {
            let fam = if src_ip.is_ipv4() { "TCP4" } else { "TCP6" };
            out.extend_from_slice(
                format!(
                    "PROXY {fam} {src_ip} {dst_ip} {} {}\r\n",
                    src.port(),
                    dst.port()
                )
                .as_bytes(),
            );
        }
        ProxyVersion::V2 => {
            out.extend_from_slice(b"\r\n\r\n\0\r\nQUIT\n");
            out.push(0x21); // version 2, PROXY command
            match (src_ip, dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                }
                // Mapped above: the families agree.
                _ => unreachable!("proxy_header: families were unified"),
            }
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<Option<(Reply, usize)>, ProtoError> {
        parse_reply(s.as_bytes())
    }

    #[test]
    fn single_and_multiline_replies() {
        assert_eq!(
            one("220 hi\r\n").unwrap(),
            Some((
                Reply {
                    code: 220,
                    ..Reply::default()
                },
                8
            ))
        );
        assert_eq!(one("250\r\n").unwrap().unwrap().0.code, 250);
        assert_eq!(one("354 go\n").unwrap().unwrap().1, 7);
        let ehlo = "250-mx Hi\r\n250-PIPELINING\r\n250-SIZE 10\r\n250 8BITMIME\r\n";
        let (r, n) = one(ehlo).unwrap().unwrap();
        assert_eq!((r.code, r.pipelining, n), (250, true, ehlo.len()));
        assert!(!r.starttls && !r.auth_plain);
        let (r, _) = one("250-mx\r\n250 SIZE 5\r\n").unwrap().unwrap();
        assert!(!r.pipelining);
        let tls = "250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN PLAIN\r\n";
        let (r, _) = one(tls).unwrap().unwrap();
        assert!(r.starttls && r.auth_plain && !r.pipelining);
        let (r, _) = one("250-mx\r\n250-AUTH=PLAIN\r\n250 AUTH CRAM-MD5\r\n")
            .unwrap()
            .unwrap();
        assert!(r.auth_plain && !r.starttls);
        let (r, _) = one("250-mx\r\n250-AUTH LOGIN\r\n250 X-PLAIN\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.auth_plain);
        // Two pipelined replies in one buffer: the first is returned with its length.
        let (r, n) = one("250 ok\r\n354 go\r\n").unwrap().unwrap();
        assert_eq!((r.code, n), (250, 8));
    }

    #[test]
    fn incomplete_replies_ask_for_more() {
        assert_eq!(one("").unwrap(), None);
        assert_eq!(one("25").unwrap(), None);
        assert_eq!(one("250-a\r\n250-b\r\n").unwrap(), None);
        assert_eq!(one("250 ok\r").unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_hang() {
        assert_eq!(one("hello\r\n"), Err(ProtoError::Malformed));
        assert_eq!(one("250x\r\n"), Err(ProtoError::Malformed));
        assert_eq!(one("650 no\r\n"), Err(ProtoError::Malformed));
        assert_eq!(one("250-a\r\n251 b\r\n"), Err(ProtoError::Malformed));
        let long = "2".repeat(MAX_REPLY_LINE);
        assert_eq!(one(&long), Err(ProtoError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(one(&many), Err(ProtoError::TooManyLines));
    }

    #[test]
    fn proxy_headers() {
        let src: SocketAddr = "127.0.0.2:40000".parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let mut v1 = Vec::new();
        proxy_header(ProxyVersion::V1, src, dst, &mut v1);
        assert_eq!(v1, b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n");
        let mut v2 = Vec::new();
        proxy_header(ProxyVersion::V2, src, dst, &mut v2);
        assert_eq!(v2.len(), 16 + 12);
        assert_eq!(&v2[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&v2[16..20], &[127, 0, 0, 2]);
        assert_eq!(&v2[24..28], &[0x9c, 0x40, 0, 25]);
        let mut v6 = Vec::new();
        proxy_header(ProxyVersion::V2, "[::1]:1".parse().unwrap(), dst, &mut v6);
        assert_eq!(v6.len(), 16 + 36);
    }
}
