//! Sans-IO parser for the HAProxy PROXY protocol, versions 1 and 2.
//!
//! Spec: haproxy's `doc/proxy-protocol.txt` ("The PROXY protocol, Versions 1 &
//! 2"). A load balancer in front of us sends one header before the client's
//! bytes, telling the client's real address. §1 of the spec: the receiver must
//! only accept connections that start with a valid header (never guess whether
//! one is present: that would let anyone spoof an address), must not speak
//! before it has a complete header (SMTP servers speak first), and should abort
//! "as soon as possible" on anything that does not exactly match. [`parse`]
//! therefore decides at the first byte that can no longer lead to a valid
//! header, so a client that sends "EHLO ..." on a proxy listener is refused at
//! once.
//!
//! Strictness beyond the bare grammar, all from the spec's wording:
//! - v1 (§2.1): exactly one space between fields; IPv4 as four decimal numbers
//!   without leading zeros (std's parser enforces that); IPv6 as std parses it
//!   (which also admits the `::ffff:1.2.3.4` form, like the `inet_pton` that
//!   haproxy uses); ports decimal 0-65535 *without leading zeros* ("0" itself is
//!   fine); the address family must match TCP4/TCP6; the line must end with
//!   CRLF within 107 bytes, and a lone CR or LF is an error. `UNKNOWN` ignores
//!   the rest of the line.
//! - v2 (§2.2): version nibble 2; command LOCAL or PROXY; family 0-3 and
//!   protocol 0-2, anything else rejected; the address block must be long
//!   enough for the addresses we decode; TLVs are skipped unread (the spec lets
//!   a receiver ignore them); the whole header is at most
//!   16 + [`V2_MAX_ADDR_LEN`] bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use memchr::memchr;

/// The addresses a proxy reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address. `None` for v1 `UNKNOWN`, v2 `LOCAL`, and v2
    /// families/protocols we do not decode (UNSPEC, UNIX, DGRAM): the spec says
    /// to fall back to the real connection endpoints then.
    pub source: Option<SocketAddr>,
    /// The address the client connected to (the proxy's listener). `None`
    /// whenever `source` is.
    pub destination: Option<SocketAddr>,
}

/// Why a header was refused; the text is for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError(pub &'static str);

/// "PROXY " (§2.1): the v1 signature with its mandatory single space.
const V1_PREFIX: &[u8] = b"PROXY ";

/// §2.1: the longest v1 line, CRLF included ("PROXY UNKNOWN" with two full
/// IPv6 addresses and ports). No CRLF within this many bytes is an error.
pub const V1_MAX_LEN: usize = 107;

/// §2.2: the 12-byte v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a v2 header: signature, version/command, family, length.
const V2_FIXED_LEN: usize = 16;

/// Largest v2 address block (addresses + TLVs) we accept. The spec allows up
/// to 65535, but a real one (addresses, SSL, ALPN, authority, unique-id TLVs)
/// fits in a few hundred bytes; the cap bounds what an unauthenticated peer
/// makes us buffer before we know who it is.
pub const V2_MAX_ADDR_LEN: usize = 1536;

const NOT_PROXY: ProxyError = ProxyError("not a PROXY protocol header");

/// Parses a PROXY protocol v1 or v2 header at the start of `buf`.
///
/// - `Ok(None)`: need more bytes, and the bytes so far are a valid prefix
///   (for v1 address and port fields: valid characters and length so far).
/// - `Ok(Some((header, consumed)))`: `buf[consumed..]` is the client's data.
/// - `Err`: invalid; the caller closes the connection.
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(NOT_PROXY),
    }
}

/// True if `buf` and `sig` agree on their common length.
fn agrees(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf.get(..n) == sig.get(..n)
}

const fn unknown() -> ProxyHeader {
    ProxyHeader {
        source: None,
        destination: None,
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if !agrees(buf, V1_PREFIX) {
        return Err(NOT_PROXY);
    }
    if buf.len() <= V1_PREFIX.len() {
        return Ok(None);
    }
    let window = buf.get(..buf.len().min(V1_MAX_LEN)).unwrap_or_default();
    let fields = window.get(V1_PREFIX.len()..).unwrap_or_default();
    if let Some(lf) = memchr(b'\n', fields) {
        // The LF must follow a CR; the line is what comes before that CR.
        let Some(cr) = lf
            .checked_sub(1)
            .filter(|&cr| fields.get(cr) == Some(&b'\r'))
        else {
            return Err(ProxyError("v1: bare LF"));
        };
        let line = fields.get(..cr).unwrap_or_default();
        if memchr(b'\r', line).is_some() {
            return Err(ProxyError("v1: bare CR"));
        }
        let header = v1_line(line)?;
        return Ok(Some((header, V1_PREFIX.len() + lf + 1)));
    }
    if buf.len() >= V1_MAX_LEN {
        return Err(ProxyError("v1: no CRLF within 107 bytes"));
    }
    // Incomplete: a CR may only be the last byte, and then the line is complete.
    match memchr(b'\r', fields) {
        Some(cr) if cr + 1 == fields.len() => {
            v1_line(fields.get(..cr).unwrap_or_default())?;
        }
        Some(_) => return Err(ProxyError("v1: bare CR")),
        None => v1_prefix(fields)?,
    }
    Ok(None)
}

/// A complete v1 line after "PROXY ", without CRLF.
fn v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        // §2.1: "the receiver must ignore anything presented before the CRLF".
        return Ok(unknown());
    }
    let mut fields = line.split(|&b| b == b' ');
    let mut next = || fields.next().ok_or(ProxyError("v1: missing field"));
    let v6 = match next()? {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(ProxyError("v1: protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let src = v1_addr(next()?, v6)?;
    let dst = v1_addr(next()?, v6)?;
    let sport = v1_port(next()?)?;
    let dport = v1_port(next()?)?;
    if fields.next().is_some() {
        return Err(ProxyError("v1: too many fields"));
    }
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(src, sport)),
        destination: Some(SocketAddr::new(dst, dport)),
    })
}

fn v1_addr(field: &[u8], v6: bool) -> Result<IpAddr, ProxyError> {
    let text = std::str::from_utf8(field).map_err(|_| ProxyError("v1: bad address"))?;
    if v6 {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError("v1: bad IPv6 address for TCP6"))
    } else {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError("v1: bad IPv4 address for TCP4"))
    }
}

/// §2.1: "a decimal integer in the range [0..65535] inclusive. Heading zeroes
/// are not permitted".
fn v1_port(field: &[u8]) -> Result<u16, ProxyError> {
    if field.is_empty() {
        return Err(ProxyError("v1: empty port"));
    }
    // At most 5 decimal digits from here on, so this cannot overflow.
    v1_port_prefix(field)?;
    let value = field
        .iter()
        .fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
    u16::try_from(value).map_err(|_| ProxyError("v1: port above 65535"))
}

/// Checks a port that may still grow: digits only, no leading zero, at most 5.
fn v1_port_prefix(field: &[u8]) -> Result<(), ProxyError> {
    if !field.iter().all(u8::is_ascii_digit) {
        return Err(ProxyError("v1: port is not decimal"));
    }
    if field.len() > 1 && field.first() == Some(&b'0') {
        return Err(ProxyError("v1: port with a leading zero"));
    }
    if field.len() > 5 {
        return Err(ProxyError("v1: port above 65535"));
    }
    Ok(())
}

/// Checks an incomplete v1 line after "PROXY ": every complete field fully,
/// the last (growing) one by its characters and length.
fn v1_prefix(text: &[u8]) -> Result<(), ProxyError> {
    let count = text.split(|&b| b == b' ').count();
    let mut v6 = false;
    for (i, field) in text.split(|&b| b == b' ').enumerate() {
        let complete = i + 1 < count;
        match i {
            0 if complete => match field {
                b"TCP4" => v6 = false,
                b"TCP6" => v6 = true,
                // UNKNOWN ignores the rest of the line.
                b"UNKNOWN" => return Ok(()),
                _ => return Err(ProxyError("v1: protocol is not TCP4, TCP6 or UNKNOWN")),
            },
            0 => {
                let could_be = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
                    .iter()
                    .any(|p| p.starts_with(field));
                if !could_be {
                    return Err(ProxyError("v1: protocol is not TCP4, TCP6 or UNKNOWN"));
                }
            }
            1 | 2 if complete => {
                v1_addr(field, v6)?;
            }
            1 | 2 => {
                let (ok, max) = if v6 {
                    (
                        field
                            .iter()
                            .all(|b| b.is_ascii_hexdigit() || b":.".contains(b)),
                        45,
                    )
                } else {
                    (field.iter().all(|b| b.is_ascii_digit() || *b == b'.'), 15)
                };
                if !ok || field.len() > max {
                    return Err(ProxyError("v1: bad address"));
                }
            }
            3 if complete => {
                v1_port(field)?;
            }
            3 | 4 => v1_port_prefix(field)?,
            _ => return Err(ProxyError("v1: too many fields")),
        }
    }
    Ok(())
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if !agrees(buf, V2_SIGNATURE) {
        return Err(NOT_PROXY);
    }
    // Byte 13: version (high nibble, must be 2) and command (low nibble).
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError("v2: version is not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0x0 => true,
        0x1 => false,
        _ => return Err(ProxyError("v2: command is not LOCAL or PROXY")),
    };
    // Byte 14: address family (high nibble) and transport protocol (low).
    let Some(&fam) = buf.get(13) else {
        return Ok(None);
    };
    if fam >> 4 > 3 || fam & 0x0f > 2 {
        return Err(ProxyError("v2: unknown address family or protocol"));
    }
    // Bytes 15-16: length of the rest, network byte order.
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > V2_MAX_ADDR_LEN {
        return Err(ProxyError("v2: header longer than we accept"));
    }
    // §2.2: TCP over IPv4 is 2*4 + 2*2 bytes, TCP over IPv6 2*16 + 2*2. For
    // LOCAL the block is discarded whatever it holds.
    let need = match (local, fam) {
        (false, 0x11) => 12,
        (false, 0x21) => 36,
        _ => 0,
    };
    if len < need {
        return Err(ProxyError("v2: address block too short for its family"));
    }
    let total = V2_FIXED_LEN + len;
    let Some(block) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(None);
    };
    let header = match need {
        12 => inet(block, |a| IpAddr::V4(Ipv4Addr::from(a)))?,
        36 => inet(block, |a: [u8; 16]| IpAddr::V6(Ipv6Addr::from(a)))?,
        // LOCAL, UNSPEC, UNIX, DGRAM: use the real endpoints (§2.2: a receiver
        // falls back to UNSPEC for combinations it does not support).
        _ => unknown(),
    };
    Ok(Some((header, total)))
}

/// Decodes "source address, destination address, source port, destination
/// port" with addresses of N bytes (§2.2).
fn inet<const N: usize>(
    block: &[u8],
    ip: impl Fn([u8; N]) -> IpAddr,
) -> Result<ProxyHeader, ProxyError> {
    let short = ProxyError("v2: address block too short for its family");
    let src: [u8; N] = block
        .get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or(short.clone())?;
    let dst: [u8; N] = block
        .get(N..2 * N)
        .and_then(|s| s.try_into().ok())
        .ok_or(short.clone())?;
    let port = |at: usize| -> Result<u16, ProxyError> {
        match block.get(at..at + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(short.clone()),
        }
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(ip(src), port(2 * N)?)),
        destination: Some(SocketAddr::new(ip(dst), port(2 * N + 2)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    fn ok(buf: &[u8]) -> (ProxyHeader, usize) {
        parse(buf).unwrap().unwrap()
    }

    /// Every strict prefix of a valid header needs more bytes.
    fn prefixes_need_more(full: &[u8], header_len: usize) {
        for n in 0..header_len {
            assert_eq!(parse(&full[..n]), Ok(None), "prefix {n} of {full:?}");
        }
    }

    #[test]
    fn v1_tcp4() {
        let buf = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 25\r\nEHLO x\r\n";
        let (h, n) = ok(buf);
        assert_eq!(h.source, sa("192.0.2.1:56324"));
        assert_eq!(h.destination, sa("198.51.100.7:25"));
        assert_eq!(&buf[n..], b"EHLO x\r\n");
        prefixes_need_more(buf, n);
    }

    #[test]
    fn v1_tcp6() {
        let buf = b"PROXY TCP6 2001:db8::1 ::1 0 65535\r\n";
        let (h, n) = ok(buf);
        assert_eq!(n, buf.len());
        assert_eq!(h.source, sa("[2001:db8::1]:0"));
        assert_eq!(h.destination, sa("[::1]:65535"));
        prefixes_need_more(buf, n);
        let full = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(full.len(), 104);
        assert_eq!(ok(full).1, 104);
    }

    #[test]
    fn v1_unknown() {
        let (h, n) = ok(b"PROXY UNKNOWN\r\nX");
        assert_eq!((h.source, h.destination, n), (None, None, 15));
        // The rest of an UNKNOWN line is ignored, up to the 107-byte limit.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(105, b'z');
        long.extend_from_slice(b"\r\n");
        assert_eq!(long.len(), V1_MAX_LEN);
        assert_eq!(ok(&long), (unknown(), 107));
        prefixes_need_more(&long, 107);
        long.insert(20, b'z');
        assert!(parse(&long).is_err(), "108 bytes");
        assert!(parse(b"PROXY UNKNOWNX\r\n").is_err());
        assert!(parse(b"PROXY UNKNOWNX").is_err());
    }

    #[test]
    fn v1_rejects_malformed_lines() {
        let bad: [&[u8]; 18] = [
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\r\n",
        ];
        for b in bad {
            assert!(parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        // A CR at the very end is undecided; after a bad line it is an error.
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), Ok(None));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r").is_err());
        // A line without CRLF in 107 bytes is refused even if it could go on.
        let mut long = b"PROXY TCP6 ".to_vec();
        long.resize(107, b'1');
        assert!(parse(&long).is_err());
    }

    #[test]
    fn refuses_as_early_as_possible() {
        for early in [
            &b"E"[..],
            b"EHLO mail.example.org\r\n",
            b"PROXX",
            b"PROXY T",
            b"PROXY TCP",
        ] {
            let r = parse(early);
            if early.starts_with(b"PROXY T") {
                assert_eq!(r, Ok(None), "{early:?} is a valid prefix");
            } else {
                assert!(r.is_err(), "{early:?}");
            }
        }
        let bad_prefixes: [&[u8]; 9] = [
            b"PROXY X",
            b"PROXY TCP4x",
            b"PROXY TCP4 1.2.3.4x",
            b"PROXY TCP4 1.2.3.400 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 0",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP6 2001:db8::g",
            b"\r\n\r\n\0\r\nQUIT\r",
        ];
        for b in bad_prefixes {
            if b == b"PROXY TCP4 1.2.3.4 5.6.7.8 0" {
                // "0" is a complete, valid port so far.
                assert_eq!(parse(b), Ok(None));
            } else {
                assert!(parse(b).is_err(), "{:?}", String::from_utf8_lossy(b));
            }
        }
        assert_eq!(parse(b"\r\n\r"), Ok(None));
        assert!(parse(b"\r\nEHLO").is_err());
        assert!(parse(b"\r\n\r\n\x01").is_err());
    }

    fn v2(ver_cmd: u8, fam: u8, block: &[u8]) -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.push(ver_cmd);
        b.push(fam);
        b.extend_from_slice(&(block.len() as u16).to_be_bytes());
        b.extend_from_slice(block);
        b
    }

    #[test]
    fn v2_tcp4_with_tlvs() {
        let mut block = vec![192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0, 25];
        // A NOOP TLV and an AUTHORITY TLV, skipped.
        block.extend_from_slice(&[0x04, 0, 2, 0, 0, 0x02, 0, 3, b'a', b'.', b'b']);
        let mut buf = v2(0x21, 0x11, &block);
        let len = buf.len();
        buf.extend_from_slice(b"EHLO x\r\n");
        let (h, n) = ok(&buf);
        assert_eq!(n, len);
        assert_eq!(h.source, sa("192.0.2.1:56324"));
        assert_eq!(h.destination, sa("198.51.100.7:25"));
        prefixes_need_more(&buf, n);
    }

    #[test]
    fn v2_tcp6() {
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mut block = src.octets().to_vec();
        block.extend_from_slice(&dst.octets());
        block.extend_from_slice(&[0x12, 0x34, 0x01, 0xd1]);
        let buf = v2(0x21, 0x21, &block);
        let (h, n) = ok(&buf);
        assert_eq!(n, 16 + 36);
        assert_eq!(h.source, sa("[2001:db8::1]:4660"));
        assert_eq!(h.destination, sa("[2001:db8::2]:465"));
    }

    #[test]
    fn v2_local_unspec_and_fallbacks() {
        // LOCAL: addresses discarded, whatever the family says.
        let tcp4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        assert_eq!(ok(&v2(0x20, 0x11, &tcp4)), (unknown(), 28));
        assert_eq!(ok(&v2(0x20, 0x00, &[])), (unknown(), 16));
        // LOCAL with a short block is fine: it is discarded.
        assert_eq!(ok(&v2(0x20, 0x11, &[])), (unknown(), 16));
        // PROXY with UNSPEC, UNIX or UDP: fall back to the real endpoints.
        assert_eq!(ok(&v2(0x21, 0x00, &[])), (unknown(), 16));
        assert_eq!(ok(&v2(0x21, 0x31, &[0; 216])).0, unknown());
        assert_eq!(ok(&v2(0x21, 0x12, &tcp4)).0, unknown());
    }

    #[test]
    fn v2_rejects_malformed() {
        let tcp4 = [1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        let bad = [
            v2(0x11, 0x11, &tcp4), // version 1 in a v2 header
            v2(0x22, 0x11, &tcp4), // unknown command
            v2(0x21, 0x41, &tcp4), // unknown family
            v2(0x21, 0x13, &tcp4), // unknown protocol
            v2(0x21, 0x11, &tcp4[..8]),
            v2(0x21, 0x21, &[0; 35]),
        ];
        for b in &bad {
            assert!(parse(b).is_err(), "{b:?}");
        }
        // Refused at byte 13 or 14 already, without the rest.
        assert!(parse(&bad[0][..13]).is_err());
        assert!(parse(&bad[2][..14]).is_err());
        // Too long: refused as soon as the length is known.
        let long = v2(0x21, 0x11, &vec![0; V2_MAX_ADDR_LEN + 1]);
        assert!(parse(&long[..16]).is_err());
        let max = v2(0x21, 0x11, &vec![0; V2_MAX_ADDR_LEN]);
        assert_eq!(ok(&max).1, 16 + V2_MAX_ADDR_LEN);
        // A short block is refused before it arrives.
        assert!(parse(&bad[4][..16]).is_err());
    }
}
