//! The milter protocol, version 6 (libmilter 1.0.1), MTA side, without I/O: the packets we
//! send ([`Packet`]) and a strict, bounded parser of every packet a milter may send back
//! ([`parse`]), including the option negotiation ([`Negotiated`]).
//!
//! A packet is `len(4, big-endian) cmd(1) data(len - 1)`. Strings in the data are
//! NUL-terminated. [`parse`] takes the bytes received so far and returns a complete reply and
//! its length, `Ok(None)` when more bytes are needed, or an error for anything a milter may
//! not send: an empty or oversized packet, an unknown command, a reply whose data does not
//! have its command's exact shape.

use std::fmt;

/// The protocol version we speak.
pub const VERSION: u32 = 6;

/// The largest packet accepted from a milter. libmilter sends at most 64 KiB of data in one
/// packet (`MILTER_CHUNK_SIZE`) when no `SMFIP_MDS_*` flag is negotiated, and we offer none;
/// 1 MiB leaves room for a long header value, and is far below the 64 MiB the issue's
/// bound allows.
pub const MAX_PACKET: usize = 1024 * 1024;

/// The most body bytes sent in one `SMFIC_BODY` packet: libmilter's `MILTER_CHUNK_SIZE`, the
/// largest packet it accepts without `SMFIP_MDS_*`.
pub const BODY_CHUNK: usize = 65535;

/// Actions (`SMFIF_*`): what the milter may do at end of message.
pub mod action {
    pub const ADDHDRS: u32 = 0x1;
    pub const CHGBODY: u32 = 0x2;
    pub const ADDRCPT: u32 = 0x4;
    pub const DELRCPT: u32 = 0x8;
    pub const CHGHDRS: u32 = 0x10;
    pub const QUARANTINE: u32 = 0x20;
    pub const CHGFROM: u32 = 0x40;
    pub const ADDRCPT_PAR: u32 = 0x80;
    pub const SETSYMLIST: u32 = 0x100;
}

/// Protocol steps (`SMFIP_*`): what the milter does not want to see or answer.
pub mod step {
    pub const NOCONNECT: u32 = 0x1;
    pub const NOHELO: u32 = 0x2;
    pub const NOMAIL: u32 = 0x4;
    pub const NORCPT: u32 = 0x8;
    pub const NOBODY: u32 = 0x10;
    pub const NOHDRS: u32 = 0x20;
    pub const NOEOH: u32 = 0x40;
    pub const NR_HDR: u32 = 0x80;
    pub const NOUNKNOWN: u32 = 0x100;
    pub const NODATA: u32 = 0x200;
    pub const SKIP: u32 = 0x400;
    pub const RCPT_REJ: u32 = 0x800;
    pub const NR_CONN: u32 = 0x1000;
    pub const NR_HELO: u32 = 0x2000;
    pub const NR_MAIL: u32 = 0x4000;
    pub const NR_RCPT: u32 = 0x8000;
    pub const NR_DATA: u32 = 0x10000;
    pub const NR_UNKN: u32 = 0x20000;
    pub const NR_EOH: u32 = 0x40000;
    pub const NR_BODY: u32 = 0x80000;
    pub const HDR_LEADSPC: u32 = 0x100000;
}

/// The actions we offer: all of them (what a milter asks for beyond this is refused).
pub const OFFERED_ACTIONS: u32 = 0x1ff;

/// The protocol steps we offer: every "do not send" and "no reply" flag, `SKIP`, `RCPT_REJ`
/// and `HDR_LEADSPC`; not the `MDS_*` larger packets.
pub const OFFERED_STEPS: u32 = 0x1f_ffff;

/// The macro stages of `SMFIC_OPTNEG`'s symbol lists (`SMFIM_*`), in protocol order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    Eom = 5,
    Eoh = 6,
}

impl Stage {
    pub const ALL: [Stage; 7] = [
        Stage::Connect,
        Stage::Helo,
        Stage::Mail,
        Stage::Rcpt,
        Stage::Data,
        Stage::Eom,
        Stage::Eoh,
    ];

    /// The command letter a `SMFIC_MACRO` packet names for this stage.
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => b'C',
            Stage::Helo => b'H',
            Stage::Mail => b'M',
            Stage::Rcpt => b'R',
            Stage::Data => b'T',
            Stage::Eom => b'E',
            Stage::Eoh => b'N',
        }
    }
}

/// The client's address as `SMFIC_CONNECT` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Family {
    Inet(std::net::SocketAddr),
    Unknown,
}

/// A packet we send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    OptNeg {
        actions: u32,
        steps: u32,
    },
    Macro {
        stage: Stage,
        pairs: &'a [(String, String)],
    },
    Connect {
        host: &'a str,
        family: Family,
    },
    Helo(&'a str),
    /// `MAIL FROM`: the path in angle brackets, then the ESMTP arguments.
    Mail(&'a [String]),
    /// `RCPT TO`: the path in angle brackets, then the ESMTP arguments.
    Rcpt(&'a [String]),
    Data,
    Header {
        name: &'a str,
        value: &'a str,
    },
    Eoh,
    Body(&'a [u8]),
    Eom,
    Abort,
    Quit,
    /// `SMFIC_UNKNOWN`: a command line the server does not know.
    Unknown(&'a str),
}

impl Packet<'_> {
    /// Appends the packet's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let cstr = |out: &mut Vec<u8>, s: &[u8]| {
            // A NUL inside would end the string early and shift the rest: drop it.
            out.extend(s.iter().copied().filter(|&b| b != 0));
            out.push(0);
        };
        match self {
            Packet::OptNeg { actions, steps } => {
                out.push(b'O');
                for v in [VERSION, *actions, *steps] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Packet::Macro { stage, pairs } => {
                out.push(b'D');
                out.push(stage.command());
                for (name, value) in pairs.iter() {
                    cstr(out, name.as_bytes());
                    cstr(out, value.as_bytes());
                }
            }
            Packet::Connect { host, family } => {
                out.push(b'C');
                cstr(out, host.as_bytes());
                match family {
                    Family::Inet(addr) => {
                        out.push(if addr.is_ipv4() { b'4' } else { b'6' });
                        out.extend_from_slice(&addr.port().to_be_bytes());
                        cstr(out, addr.ip().to_string().as_bytes());
                    }
                    Family::Unknown => out.push(b'U'),
                }
            }
            Packet::Helo(host) => {
                out.push(b'H');
                cstr(out, host.as_bytes());
            }
            Packet::Mail(args) | Packet::Rcpt(args) => {
                out.push(if matches!(self, Packet::Mail(_)) {
                    b'M'
                } else {
                    b'R'
                });
                for a in args.iter() {
                    cstr(out, a.as_bytes());
                }
            }
            Packet::Data => out.push(b'T'),
            Packet::Header { name, value } => {
                out.push(b'L');
                cstr(out, name.as_bytes());
                cstr(out, value.as_bytes());
            }
            Packet::Eoh => out.push(b'N'),
            Packet::Body(chunk) => {
                out.push(b'B');
                out.extend_from_slice(chunk);
            }
            Packet::Eom => out.push(b'E'),
            Packet::Abort => out.push(b'A'),
            Packet::Quit => out.push(b'Q'),
            Packet::Unknown(line) => {
                out.push(b'U');
                cstr(out, line.as_bytes());
            }
        }
        let len = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

/// The milter's answer to `SMFIC_OPTNEG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub version: u32,
    pub actions: u32,
    pub steps: u32,
    /// The macros the milter wants at a stage, replacing our default list for it.
    pub macros: Vec<(Stage, Vec<String>)>,
}

/// A packet a milter sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    OptNeg(Negotiated),
    Accept,
    Continue,
    Discard,
    Reject,
    Tempfail,
    /// `SMFIR_REPLYCODE`: the whole reply text, possibly several CRLF-separated lines.
    ReplyCode(String),
    Progress,
    Skip,
    AddHeader {
        name: String,
        value: String,
    },
    InsertHeader {
        index: u32,
        name: String,
        value: String,
    },
    /// `SMFIR_CHGHEADER`: the `index`-th (from 1) field called `name`; an empty value deletes.
    ChangeHeader {
        index: u32,
        name: String,
        value: String,
    },
    AddRcpt {
        rcpt: String,
        args: Option<String>,
    },
    DelRcpt(String),
    ChangeFrom {
        from: String,
        args: Option<String>,
    },
    ReplaceBody(Vec<u8>),
    Quarantine(String),
}

impl Reply {
    /// The action flag a modification needs to have been negotiated, if any.
    pub fn needs(&self) -> Option<u32> {
        Some(match self {
            Reply::AddHeader { .. } => action::ADDHDRS,
            Reply::InsertHeader { .. } => action::ADDHDRS,
            Reply::ChangeHeader { .. } => action::CHGHDRS,
            Reply::AddRcpt { args: None, .. } => action::ADDRCPT,
            Reply::AddRcpt { args: Some(_), .. } => action::ADDRCPT_PAR,
            Reply::DelRcpt(_) => action::DELRCPT,
            Reply::ChangeFrom { .. } => action::CHGFROM,
            Reply::ReplaceBody(_) => action::CHGBODY,
            Reply::Quarantine(_) => action::QUARANTINE,
            _ => return None,
        })
    }
}

/// Why a milter's packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// A declared length of 0 (no command byte).
    Empty,
    /// A declared length over [`MAX_PACKET`].
    TooLong(u32),
    UnknownCommand(u8),
    /// The data does not have the command's shape.
    Malformed(u8, &'static str),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |c: u8| if c.is_ascii_graphic() { c as char } else { '?' };
        match self {
            ProtoError::Empty => f.write_str("empty packet"),
            ProtoError::TooLong(n) => write!(f, "packet of {n} bytes (most {MAX_PACKET})"),
            ProtoError::UnknownCommand(c) => write!(f, "unknown reply 0x{c:02x}"),
            ProtoError::Malformed(c, why) => write!(f, "bad reply '{}': {why}", shown(*c)),
        }
    }
}

/// Parses one packet from the front of `buf`: the reply and the bytes it used, `Ok(None)` if
/// the packet is not complete yet. Never reads past `buf`, never allocates more than the packet.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtoError> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if len == 0 {
        return Err(ProtoError::Empty);
    }
    if len as usize > MAX_PACKET {
        return Err(ProtoError::TooLong(len));
    }
    let end = 4 + len as usize;
    let Some(packet) = buf.get(4..end) else {
        return Ok(None);
    };
    let (cmd, data) = (packet[0], &packet[1..]);
    Ok(Some((reply(cmd, data)?, end)))
}

fn reply(cmd: u8, data: &[u8]) -> Result<Reply, ProtoError> {
    let bad = |why| ProtoError::Malformed(cmd, why);
    let simple = |r: Reply| {
        if data.is_empty() {
            Ok(r)
        } else {
            Err(bad("unexpected data"))
        }
    };
    let mut d = Fields { data, cmd };
    let r = match cmd {
        b'a' => return simple(Reply::Accept),
        b'c' => return simple(Reply::Continue),
        b'd' => return simple(Reply::Discard),
        b'r' => return simple(Reply::Reject),
        b't' => return simple(Reply::Tempfail),
        b'p' => return simple(Reply::Progress),
        b's' => return simple(Reply::Skip),
        b'b' => return Ok(Reply::ReplaceBody(data.to_vec())),
        b'O' => {
            return negotiated(data)
                .map(Reply::OptNeg)
                .ok_or(bad("bad negotiation"))
        }
        b'y' => Reply::ReplyCode(d.string()?),
        b'h' => Reply::AddHeader {
            name: d.string()?,
            value: d.string()?,
        },
        b'i' | b'm' => {
            let index = d.u32()?;
            let (name, value) = (d.string()?, d.string()?);
            if cmd == b'i' {
                Reply::InsertHeader { index, name, value }
            } else {
                Reply::ChangeHeader { index, name, value }
            }
        }
        b'+' => Reply::AddRcpt {
            rcpt: d.string()?,
            args: None,
        },
        b'2' => Reply::AddRcpt {
            rcpt: d.string()?,
            args: d.optional_string()?,
        },
        b'-' => Reply::DelRcpt(d.string()?),
        b'e' => Reply::ChangeFrom {
            from: d.string()?,
            args: d.optional_string()?,
        },
        b'q' => Reply::Quarantine(d.string()?),
        other => return Err(ProtoError::UnknownCommand(other)),
    };
    if !d.data.is_empty() {
        return Err(bad("trailing data"));
    }
    if let Reply::AddHeader { name, .. }
    | Reply::InsertHeader { name, .. }
    | Reply::ChangeHeader { name, .. } = &r
    {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(bad("bad header name"));
        }
    }
    Ok(r)
}

/// A cursor over a reply's data.
struct Fields<'a> {
    data: &'a [u8],
    cmd: u8,
}

impl Fields<'_> {
    fn u32(&mut self) -> Result<u32, ProtoError> {
        let Some((v, rest)) = self.data.split_first_chunk::<4>() else {
            return Err(ProtoError::Malformed(self.cmd, "truncated number"));
        };
        self.data = rest;
        Ok(u32::from_be_bytes(*v))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self) -> Result<String, ProtoError> {
        let Some(nul) = self.data.iter().position(|&b| b == 0) else {
            return Err(ProtoError::Malformed(self.cmd, "string without NUL"));
        };
        let s = std::str::from_utf8(&self.data[..nul])
            .map_err(|_| ProtoError::Malformed(self.cmd, "string not UTF-8"))?;
        self.data = &self.data[nul + 1..];
        Ok(s.to_owned())
    }

    fn optional_string(&mut self) -> Result<Option<String>, ProtoError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        self.string().map(Some)
    }
}

/// `version(4) actions(4) steps(4)` then `stage(4) "macro names"\0` pairs.
fn negotiated(data: &[u8]) -> Option<Negotiated> {
    let mut d = Fields { data, cmd: b'O' };
    let (version, actions, steps) = (d.u32().ok()?, d.u32().ok()?, d.u32().ok()?);
    let mut macros = Vec::new();
    while !d.data.is_empty() {
        let stage = *Stage::ALL.get(d.u32().ok()? as usize)?;
        if macros.iter().any(|(s, _)| *s == stage) {
            return None;
        }
        let names = d.string().ok()?;
        let names: Vec<String> = names
            .split([' ', ','])
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        if names.len() > 64 || names.iter().any(|n| n.len() > 64) {
            return None;
        }
        macros.push((stage, names));
    }
    Some(Negotiated {
        version,
        actions,
        steps,
        macros,
    })
}

/// Checks a milter's negotiation against our offer: version 2 to 6 (libmilter answers with
/// the version we offered or lower), no action or step beyond what we offered.
pub fn check_negotiation(n: &Negotiated) -> Result<(), String> {
    if !(2..=VERSION).contains(&n.version) {
        return Err(format!("milter speaks version {}", n.version));
    }
    if n.actions & !OFFERED_ACTIONS != 0 {
        return Err(format!(
            "milter asks for actions 0x{:x} not offered",
            n.actions
        ));
    }
    if n.steps & !OFFERED_STEPS != 0 {
        return Err(format!(
            "milter asks for protocol steps 0x{:x} not offered",
            n.steps
        ));
    }
    Ok(())
}

/// Cleans a `SMFIR_REPLYCODE` text into a reply: (code, enhanced status or "", lines of text).
/// Each line must start with the same 4xx or 5xx code; CR, LF and other control characters
/// never reach the client. `None` if the text is not such a reply.
pub fn reply_code(text: &str) -> Option<(u16, String, Vec<String>)> {
    let mut code = None;
    let mut enhanced = String::new();
    let mut lines = Vec::new();
    for (i, line) in text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
    {
        if i >= 32 || line.len() < 3 || !line.is_char_boundary(3) {
            return None;
        }
        let (digits, rest) = line.split_at(3);
        let c: u16 = digits.parse().ok().filter(|c| (400..600).contains(c))?;
        if *code.get_or_insert(c) != c || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let rest = rest.strip_prefix([' ', '-']).unwrap_or(rest);
        let rest = match rest.split_once(' ') {
            Some((e, t)) if is_enhanced(e, c) => {
                if i == 0 {
                    enhanced = e.to_owned();
                }
                t
            }
            _ if is_enhanced(rest, c) => "",
            _ => rest,
        };
        lines.push(
            rest.chars()
                .map(|ch| if ch.is_control() { '?' } else { ch })
                .collect(),
        );
    }
    Some((code?, enhanced, lines))
}

/// `class.subject.detail` with the class of `code` (RFC 3463).
pub(crate) fn is_enhanced(s: &str, code: u16) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts[0].len() == 1
        && parts[0].as_bytes()[0] == b'0' + (code / 100) as u8
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
        let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        v.push(cmd);
        v.extend_from_slice(data);
        v
    }

    fn one(cmd: u8, data: &[u8]) -> Result<Reply, ProtoError> {
        let p = packet(cmd, data);
        parse(&p).map(|r| {
            let (r, n) = r.expect("complete");
            assert_eq!(n, p.len());
            r
        })
    }

    #[test]
    fn simple_replies() {
        assert_eq!(one(b'a', b""), Ok(Reply::Accept));
        assert_eq!(one(b'c', b""), Ok(Reply::Continue));
        assert_eq!(one(b'd', b""), Ok(Reply::Discard));
        assert_eq!(one(b'r', b""), Ok(Reply::Reject));
        assert_eq!(one(b't', b""), Ok(Reply::Tempfail));
        assert_eq!(one(b'p', b""), Ok(Reply::Progress));
        assert_eq!(one(b's', b""), Ok(Reply::Skip));
        assert!(matches!(
            one(b'c', b"x"),
            Err(ProtoError::Malformed(b'c', _))
        ));
    }

    #[test]
    fn modifications() {
        assert_eq!(
            one(b'h', b"X-A\0v 1\0"),
            Ok(Reply::AddHeader {
                name: "X-A".into(),
                value: "v 1".into()
            })
        );
        assert_eq!(
            one(b'm', b"\0\0\0\x02Subject\0\0"),
            Ok(Reply::ChangeHeader {
                index: 2,
                name: "Subject".into(),
                value: "".into()
            })
        );
        assert_eq!(
            one(b'i', b"\0\0\0\0X-B\0w\0"),
            Ok(Reply::InsertHeader {
                index: 0,
                name: "X-B".into(),
                value: "w".into()
            })
        );
        assert_eq!(
            one(b'+', b"<a@b>\0"),
            Ok(Reply::AddRcpt {
                rcpt: "<a@b>".into(),
                args: None
            })
        );
        assert_eq!(
            one(b'2', b"<a@b>\0NOTIFY=NEVER\0"),
            Ok(Reply::AddRcpt {
                rcpt: "<a@b>".into(),
                args: Some("NOTIFY=NEVER".into())
            })
        );
        assert_eq!(one(b'-', b"<a@b>\0"), Ok(Reply::DelRcpt("<a@b>".into())));
        assert_eq!(
            one(b'e', b"<s@b>\0"),
            Ok(Reply::ChangeFrom {
                from: "<s@b>".into(),
                args: None
            })
        );
        assert_eq!(
            one(b'b', b"new body"),
            Ok(Reply::ReplaceBody(b"new body".to_vec()))
        );
        assert_eq!(one(b'q', b"held\0"), Ok(Reply::Quarantine("held".into())));
        assert_eq!(
            one(b'y', b"550 5.7.1 no\0"),
            Ok(Reply::ReplyCode("550 5.7.1 no".into()))
        );
    }

    #[test]
    fn hostile_packets() {
        // Truncated: the length says more than has arrived.
        let p = packet(b'h', b"X-A\0v\0");
        for cut in 0..p.len() {
            assert_eq!(parse(&p[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse(&[0, 0, 0, 0, b'c']), Err(ProtoError::Empty));
        assert_eq!(
            parse(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtoError::TooLong(u32::MAX))
        );
        let over = (MAX_PACKET as u32 + 1).to_be_bytes();
        assert_eq!(
            parse(&over),
            Err(ProtoError::TooLong(MAX_PACKET as u32 + 1))
        );
        assert_eq!(one(b'Z', b""), Err(ProtoError::UnknownCommand(b'Z')));
        assert_eq!(one(b'C', b""), Err(ProtoError::UnknownCommand(b'C')));
        // Strings without NUL, trailing data, short numbers, bad names, bad UTF-8.
        assert!(one(b'h', b"X-A\0v").is_err());
        assert!(one(b'h', b"X-A\0v\0extra").is_err());
        assert!(one(b'h', b"X-A\0v\0\0").is_err());
        assert!(one(b'm', b"\0\0\x01").is_err());
        assert!(one(b'h', b"X A\0v\0").is_err());
        assert!(one(b'h', b"X:A\0v\0").is_err());
        assert!(one(b'h', b"\0v\0").is_err());
        assert!(one(b'h', b"X\r\nB\0v\0").is_err());
        assert!(one(b'q', b"\xff\0").is_err());
        assert!(one(b'-', b"").is_err());
        assert!(one(b'y', b"550 no").is_err());
        // Two packets in a row: the first is parsed, its length returned.
        let mut two = packet(b'c', b"");
        two.extend(packet(b'a', b""));
        assert_eq!(parse(&two), Ok(Some((Reply::Continue, 5))));
        assert_eq!(parse(&two[5..]), Ok(Some((Reply::Accept, 5))));
    }

    #[test]
    fn every_prefix_and_byte_flip_is_handled() {
        // A small fuzz over a realistic reply stream: no panic, no read past the input.
        let mut stream = packet(b'h', b"X-A\0v\0");
        stream.extend(packet(b'm', b"\0\0\0\x01Subject\0new\0"));
        stream.extend(packet(b'y', b"451 4.7.1 later\0"));
        for i in 0..stream.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut s = stream.clone();
                s[i] ^= flip;
                let mut at = 0;
                while let Ok(Some((_, n))) = parse(&s[at..]) {
                    at += n;
                    assert!(at <= s.len());
                }
            }
        }
    }

    fn optneg(version: u32, actions: u32, steps: u32, tail: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        for v in [version, actions, steps] {
            d.extend_from_slice(&v.to_be_bytes());
        }
        d.extend_from_slice(tail);
        d
    }

    #[test]
    fn negotiation() {
        let data = optneg(
            6,
            0x111,
            0x100702,
            b"\0\0\0\x05i {auth_type}\0\0\0\0\x02{mail_addr}\0",
        );
        let Ok(Reply::OptNeg(n)) = one(b'O', &data) else {
            panic!("not parsed")
        };
        assert_eq!((n.version, n.actions, n.steps), (6, 0x111, 0x100702));
        assert_eq!(
            n.macros,
            vec![
                (Stage::Eom, vec!["i".to_string(), "{auth_type}".to_string()]),
                (Stage::Mail, vec!["{mail_addr}".to_string()]),
            ]
        );
        assert_eq!(check_negotiation(&n), Ok(()));
        // Short, unknown stage, repeated stage, list without NUL.
        assert!(one(b'O', &data[..11]).is_err());
        assert!(one(b'O', &optneg(6, 0, 0, b"\0\0\0\x07i\0")).is_err());
        assert!(one(b'O', &optneg(6, 0, 0, b"\0\0\0\x01i\0\0\0\0\x01j\0")).is_err());
        assert!(one(b'O', &optneg(6, 0, 0, b"\0\0\0\x01i")).is_err());
        let n = |v, a, s| Negotiated {
            version: v,
            actions: a,
            steps: s,
            macros: vec![],
        };
        assert!(check_negotiation(&n(7, 0, 0)).is_err());
        assert!(check_negotiation(&n(1, 0, 0)).is_err());
        assert!(check_negotiation(&n(6, 0x200, 0)).is_err());
        assert!(check_negotiation(&n(6, 0, 0x20_0000)).is_err()); // SMFIP_MDS_256K
        assert!(check_negotiation(&n(6, 0, 0x1000_0000)).is_err());
        assert!(check_negotiation(&n(2, OFFERED_ACTIONS, OFFERED_STEPS)).is_ok());
    }

    #[test]
    fn encodes_packets() {
        let mut out = Vec::new();
        Packet::OptNeg {
            actions: 1,
            steps: 2,
        }
        .encode(&mut out);
        assert_eq!(out, packet(b'O', &optneg(6, 1, 2, b"")));
        out.clear();
        let addr: std::net::SocketAddr = "192.0.2.1:25".parse().unwrap();
        Packet::Connect {
            host: "h\0x",
            family: Family::Inet(addr),
        }
        .encode(&mut out);
        assert_eq!(out, packet(b'C', b"hx\x004\x00\x19192.0.2.1\0"));
        out.clear();
        let pairs = [("j".to_string(), "mx".to_string())];
        Packet::Macro {
            stage: Stage::Mail,
            pairs: &pairs,
        }
        .encode(&mut out);
        assert_eq!(out, packet(b'D', b"Mj\0mx\0"));
        out.clear();
        Packet::Mail(&["<a@b>".into(), "SIZE=10".into()]).encode(&mut out);
        assert_eq!(out, packet(b'M', b"<a@b>\0SIZE=10\0"));
        out.clear();
        Packet::Header {
            name: "Subject",
            value: " hi",
        }
        .encode(&mut out);
        assert_eq!(out, packet(b'L', b"Subject\0 hi\0"));
        out.clear();
        Packet::Unknown("XYZZY a\0b").encode(&mut out);
        assert_eq!(out, packet(b'U', b"XYZZY ab\0"));
    }

    #[test]
    fn reply_codes_are_cleaned() {
        assert_eq!(
            reply_code("550 5.7.1 Go away"),
            Some((550, "5.7.1".into(), vec!["Go away".into()]))
        );
        assert_eq!(
            reply_code("451-4.7.1 one\r\n451-4.7.1 two\x07\r\n451 4.7.1 three"),
            Some((
                451,
                "4.7.1".into(),
                vec!["one".into(), "two?".into(), "three".into()]
            ))
        );
        assert_eq!(
            reply_code("554 spam"),
            Some((554, "".into(), vec!["spam".into()]))
        );
        assert_eq!(reply_code("250 ok"), None);
        assert_eq!(reply_code("550 a\r\n451 b"), None);
        assert_eq!(reply_code("5x0 a"), None);
        assert_eq!(reply_code("55"), None);
        assert_eq!(reply_code("55é"), None);
        assert_eq!(reply_code("+50 a"), None);
    }
}
