//! Reading a message body without loading it whole: the raw bytes in bounded chunks
//! ([`read_message`], [`read_file`]), and its MIME structure as it streams by ([`Walker`]:
//! header sections, multipart boundaries, base64 and quoted-printable decoding, RFC 2045,
//! RFC 2046).
//!
//! - A virus or spam scanner streams the raw message: `read_message(svc, &txn.body, max, conn,
//!   |conn, chunk| ...)`.
//! - DKIM reads the raw body the same way and canonicalizes it itself.
//! - A content filter (uribl) feeds the chunks to a [`Walker`] and gets each part's header
//!   section and its decoded body:
//!
//! ```ignore
//! struct Texts(Vec<u8>);
//! impl Visitor for Texts {
//!     fn entity(&mut self, e: &Entity<'_>) -> bool { e.media.starts_with("text/") }
//!     fn data(&mut self, decoded: &[u8]) { self.0.extend_from_slice(decoded) }
//!     fn end(&mut self) {}
//! }
//! let walker = read_message(&*cx.svc, &txn.body, max, Walker::new(Texts(Vec::new())),
//!     |w, chunk| { w.feed(chunk); ControlFlow::Continue(()) }).await?;
//! let texts = walker.finish();
//! ```
//!
//! A spooled message is read on the blocking pool ([`crate::blocking`], i.e.
//! `Services::spawn_blocking`), never on a worker; an in-memory one where it is.
//!
//! The message is hostile input: lines, header sections, nesting and the number of parts are
//! bounded ([`MAX_LINE`], [`MAX_HEAD`], [`MAX_DEPTH`], [`MAX_ENTITIES`]), the decoders accept
//! any bytes, and nothing here panics on what a client sends.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;

use crate::context::{blocking, Body, Services};

/// Bytes read from a spool file at a time.
pub const CHUNK: usize = 64 * 1024;
/// Nesting followed at most (multiparts and enclosed messages): real mail nests 3 or 4 deep,
/// a bomb thousands. Deeper entities are skipped.
pub const MAX_DEPTH: u32 = 8;
/// Entities (the message, its parts, enclosed messages) walked at most; later ones are skipped.
pub const MAX_ENTITIES: usize = 500;
/// Longer lines are never boundary lines; they pass as data in pieces.
pub const MAX_LINE: usize = 1000;
/// The bytes of a header section kept at most; the rest of the section is dropped.
pub const MAX_HEAD: usize = 256 * 1024;

/// Feeds the first `max` bytes of the message (header section and body, as received) to `f`,
/// in pieces of at most [`CHUNK`] bytes, with `state`, which it gives back; `f` breaks to
/// stop early. A spooled message is read on the blocking pool, an in-memory one right here.
pub async fn read_message<S, F>(
    svc: &dyn Services,
    body: &Body,
    max: u64,
    mut state: S,
    mut f: F,
) -> io::Result<S>
where
    S: Send + 'static,
    F: FnMut(&mut S, &[u8]) -> ControlFlow<()> + Send + 'static,
{
    let Some(spool) = body.spool.as_ref() else {
        let mem = &body.mem[..body.mem.len().min(max.try_into().unwrap_or(usize::MAX))];
        for chunk in mem.chunks(CHUNK) {
            if f(&mut state, chunk).is_break() {
                break;
            }
        }
        return Ok(state);
    };
    let file = spool.file.try_clone()?;
    let job = move || read_file(&file, max, |chunk| f(&mut state, chunk)).map(|()| state);
    blocking(svc, job)
        .await
        .unwrap_or_else(|| Err(io::Error::other("the read job panicked")))
}

/// Feeds the message from byte `from` to its end (its body, when `from` is where the header
/// section ends) to `f`, in pieces of at most [`CHUNK`] bytes, with `state`, which it gives
/// back. As [`read_message`]: a spooled message is read on the blocking pool.
pub async fn read_message_from<S, F>(
    svc: &dyn Services,
    body: &Body,
    from: u64,
    state: S,
    mut f: F,
) -> io::Result<S>
where
    S: Send + 'static,
    F: FnMut(&mut S, &[u8]) + Send + 'static,
{
    let feed = move |(skip, state): &mut (u64, S), chunk: &[u8]| {
        let skipped = usize::try_from(*skip)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        *skip -= skipped as u64;
        if skipped < chunk.len() {
            f(state, &chunk[skipped..]);
        }
        ControlFlow::Continue(())
    };
    let (_, state) = read_message(svc, body, u64::MAX, (from, state), feed).await?;
    Ok(state)
}

/// Feeds the first `max` bytes of `file` to `f` in chunks of at most [`CHUNK`] bytes, until
/// `f` breaks. Positional reads: the file's offset (which queue plugins use) is left alone.
/// Blocking: call it on the blocking pool, never on a worker.
pub fn read_file(
    file: &File,
    max: u64,
    mut f: impl FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < max {
        let want = (max - at).min(CHUNK as u64) as usize;
        match file.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(n) => {
                at += n as u64;
                if f(&buf[..n]).is_break() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a [`Walker`] reports.
pub trait Visitor {
    /// An entity's header section is complete: the message, a body part, or an enclosed
    /// message. Return true to get its body, decoded, through `data` and `end`. Multipart and
    /// enclosed-message bodies are walked instead: for those the answer does not matter.
    fn entity(&mut self, entity: &Entity<'_>) -> bool;
    /// The next piece of the wanted entity's decoded body (pieces of any size).
    fn data(&mut self, decoded: &[u8]);
    /// The wanted entity's body has ended.
    fn end(&mut self);
}

/// A MIME entity whose header section has been read.
#[derive(Debug)]
pub struct Entity<'h> {
    /// The header section as received, without the empty line ending it (at most
    /// [`MAX_HEAD`] bytes).
    pub head: &'h [u8],
    /// 0 for the message; one more inside each multipart or enclosed message.
    pub depth: u32,
    /// A message (the top one, or one enclosed as `message/rfc822`), not a body part.
    pub is_message: bool,
    /// The media type without parameters, lowercased (`text/plain`); empty without a
    /// `Content-Type` field.
    pub media: String,
    /// `Content-Transfer-Encoding`, lowercased; empty without the field.
    pub encoding: String,
}

/// Walks a message's MIME structure as its bytes are fed in, in pieces of any size.
pub struct Walker<V> {
    visitor: V,
    /// The open multipart containers, outermost first.
    frames: Vec<Frame>,
    state: State,
    /// The current line so far, while it may still be a boundary or the end of a header
    /// section.
    line: Vec<u8>,
    /// The current line passed [`MAX_LINE`]: the rest of it is data.
    long_line: bool,
    entities: usize,
    /// Decoded bytes, before they go to the visitor.
    out: Vec<u8>,
}

struct Frame {
    boundary: Vec<u8>,
    depth: u32,
}

enum State {
    /// Reading a header section.
    Head {
        buf: Vec<u8>,
        depth: u32,
        is_message: bool,
    },
    /// In a body that is not walked: decoded for the visitor if it wants it.
    Leaf { decoder: Decoder, want: bool },
    /// Preamble, epilogue, or a skipped entity.
    Ignore,
}

impl<V: Visitor> Walker<V> {
    pub fn new(visitor: V) -> Walker<V> {
        Walker {
            visitor,
            frames: Vec::new(),
            state: State::Head {
                buf: Vec::new(),
                depth: 0,
                is_message: true,
            },
            line: Vec::new(),
            long_line: false,
            entities: 0,
            out: Vec::new(),
        }
    }

    /// Walks the next bytes of the message.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let end = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
            let (seg, rest) = data.split_at(end);
            data = rest;
            let complete = seg.ends_with(b"\n");
            if self.long_line {
                self.content(seg, false);
                self.long_line = !complete;
            } else if self.frames.is_empty() && !matches!(self.state, State::Head { .. }) {
                // No boundary can end this body: no need to look at its lines.
                self.content(seg, false);
            } else if complete && self.line.is_empty() {
                self.line_done(seg);
            } else {
                self.line.extend_from_slice(seg);
                if complete {
                    let line = std::mem::take(&mut self.line);
                    self.line_done(&line);
                    self.line = line;
                    self.line.clear();
                } else if self.line.len() > MAX_LINE {
                    let line = std::mem::take(&mut self.line);
                    self.content(&line, false);
                    self.long_line = true;
                }
            }
        }
    }

    /// Ends the walk (the message may stop anywhere) and gives the visitor back.
    pub fn finish(mut self) -> V {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        self.end_entity();
        self.visitor
    }

    /// A whole line (or the last, unterminated one).
    fn line_done(&mut self, line: &[u8]) {
        let short = line.len() <= MAX_LINE;
        let delimiter = (line.trim_ascii_end().strip_prefix(b"--")).filter(|_| short);
        for (i, frame) in self.frames.iter().enumerate() {
            let rest = delimiter.and_then(|d| d.strip_prefix(frame.boundary.as_slice()));
            if let Some(rest @ (b"" | b"--")) = rest {
                self.boundary(i, rest == b"--");
                return;
            }
        }
        self.content(line, true);
    }

    /// Bytes of the current entity: `whole` if they are one whole line.
    fn content(&mut self, bytes: &[u8], whole: bool) {
        match &mut self.state {
            State::Head { buf, .. } => {
                if whole && matches!(bytes, b"\n" | b"\r\n") {
                    self.head_done();
                } else {
                    let room = MAX_HEAD.saturating_sub(buf.len());
                    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
            }
            State::Leaf { decoder, want } => {
                if *want {
                    decoder.decode(bytes, false, &mut self.out);
                    self.flush();
                }
            }
            State::Ignore => {}
        }
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.visitor.data(&self.out);
            self.out.clear();
        }
    }

    /// The header section of the current entity is complete.
    fn head_done(&mut self) {
        let State::Head {
            buf,
            depth,
            is_message,
        } = std::mem::replace(&mut self.state, State::Ignore)
        else {
            return;
        };
        self.entities += 1;
        if depth > MAX_DEPTH || self.entities > MAX_ENTITIES {
            return;
        }
        let ctype = header(&buf, b"content-type").unwrap_or_default();
        let media = ctype.split(';').next().unwrap_or("").trim();
        let entity = Entity {
            head: &buf,
            depth,
            is_message,
            media: media.to_ascii_lowercase(),
            encoding: header(&buf, b"content-transfer-encoding")
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        let want = self.visitor.entity(&entity);
        let boundary = param(&ctype, "boundary");
        let media = entity.media.as_str();
        self.state = match boundary {
            Some(b) if media.starts_with("multipart/") => {
                self.frames.push(Frame {
                    boundary: b.into_bytes(),
                    depth,
                });
                State::Ignore
            }
            // RFC 2046 §5.2.1: an enclosed message is never encoded; one that is stays a leaf.
            _ if matches!(media, "message/rfc822" | "message/global")
                && Decoder::new(&entity.encoding).is_identity() =>
            {
                State::Head {
                    buf: Vec::new(),
                    depth: depth + 1,
                    is_message: true,
                }
            }
            _ => State::Leaf {
                decoder: Decoder::new(&entity.encoding),
                want,
            },
        };
    }

    /// Ends the current entity, whatever it is in.
    fn end_entity(&mut self) {
        while matches!(self.state, State::Head { .. }) {
            self.head_done();
        }
        if let State::Leaf { decoder, want } = &mut self.state {
            if *want {
                decoder.decode(&[], true, &mut self.out);
                self.flush();
                self.visitor.end();
            }
        }
        self.state = State::Ignore;
    }

    /// A boundary line of the container `frames[i]`: it ends everything inside.
    fn boundary(&mut self, i: usize, close: bool) {
        self.end_entity();
        self.frames.truncate(i + 1);
        if close {
            self.frames.pop();
        } else {
            self.state = State::Head {
                buf: Vec::new(),
                depth: self.frames[i].depth + 1,
                is_message: false,
            };
        }
    }
}

/// A Content-Transfer-Encoding decoder that keeps its state between pieces.
enum Decoder {
    Identity,
    Base64 { acc: u32, bits: u32, done: bool },
    QuotedPrintable { carry: Vec<u8> },
}

impl Decoder {
    fn new(encoding: &str) -> Decoder {
        match encoding.trim() {
            "base64" => Decoder::Base64 {
                acc: 0,
                bits: 0,
                done: false,
            },
            "quoted-printable" => Decoder::QuotedPrintable { carry: Vec::new() },
            _ => Decoder::Identity,
        }
    }

    fn is_identity(&self) -> bool {
        matches!(self, Decoder::Identity)
    }

    /// Decodes `input` onto `out`; `last`: no input follows.
    fn decode(&mut self, input: &[u8], last: bool, out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => out.extend_from_slice(input),
            Decoder::Base64 { acc, bits, done } => base64(input, acc, bits, done, out),
            Decoder::QuotedPrintable { carry } => {
                if carry.is_empty() {
                    let used = quoted_printable(input, last, out);
                    carry.extend_from_slice(&input[used..]);
                } else {
                    carry.extend_from_slice(input);
                    let used = quoted_printable(carry, last, out);
                    carry.drain(..used);
                }
            }
        }
    }
}

/// Base64, leniently: characters outside the alphabet are skipped (RFC 2045 §6.8), the first
/// `=` ends the data, a dangling partial group is dropped.
fn base64(input: &[u8], acc: &mut u32, bits: &mut u32, done: &mut bool, out: &mut Vec<u8>) {
    if *done {
        return;
    }
    for &b in input {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                *done = true;
                return;
            }
            _ => continue,
        };
        *acc = (*acc << 6) | u32::from(v);
        *bits += 6;
        if *bits >= 8 {
            *bits -= 8;
            out.push((*acc >> *bits) as u8);
            *acc &= (1 << *bits) - 1;
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Blanks after a `=` waited for at most, to see whether a line break follows (a soft break).
const MAX_QP_BLANKS: usize = 256;

/// Quoted-printable (RFC 2045 §6.7): `=XX` is a byte, `=` at a line end is a soft break, any
/// other `=` stays as it is. Returns the bytes used: unless `last`, an escape that the next
/// input could still complete is left for it.
fn quoted_printable(input: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != b'=' {
            out.push(b);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if let (Some(&h), Some(&l)) = (rest.first(), rest.get(1)) {
            if let (Some(h), Some(l)) = (hex(h), hex(l)) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        // Soft line break: `=`, optional trailing blanks, then CRLF or LF.
        let blanks = rest
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        let open = match &rest[blanks..] {
            [] => blanks <= MAX_QP_BLANKS,
            [b'\r'] => true,
            [h] => blanks == 0 && hex(*h).is_some(),
            _ => false,
        };
        if open && !last {
            return i;
        }
        match &rest[blanks..] {
            [b'\r', b'\n', ..] => i += 1 + blanks + 2,
            [b'\n', ..] => i += 1 + blanks + 1,
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    i
}

/// The unfolded value of the first header field `name` (lowercase), if present.
pub fn header(head: &[u8], name: &[u8]) -> Option<String> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .peekable();
    while let Some(line) = lines.next() {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon].trim_ascii_end().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
        while let Some(next) = lines.peek() {
            if !next.starts_with(b" ") && !next.starts_with(b"\t") {
                break;
            }
            value.push(' ');
            value.push_str(&String::from_utf8_lossy(next.trim_ascii()));
            lines.next();
        }
        return Some(value.trim().to_string());
    }
    None
}

/// A parameter of a structured header value (`boundary="abc"`), RFC 2045 §5.1.
pub fn param(value: &str, name: &str) -> Option<String> {
    for p in value.split(';').skip(1) {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case(name) {
            let v = v.trim();
            let v = match v.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or(""),
                None => v.split_whitespace().next().unwrap_or(""),
            };
            return (!v.is_empty()).then(|| v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what the walker reports: (depth, media) of each entity and the decoded text
    /// of the wanted ones.
    #[derive(Default, Debug, PartialEq)]
    struct Log {
        entities: Vec<(u32, String)>,
        texts: Vec<String>,
        current: Option<Vec<u8>>,
    }

    impl Visitor for Log {
        fn entity(&mut self, e: &Entity<'_>) -> bool {
            self.entities.push((e.depth, e.media.clone()));
            self.current = Some(Vec::new());
            !e.media.starts_with("image/")
        }
        fn data(&mut self, decoded: &[u8]) {
            self.current
                .as_mut()
                .expect("data after entity")
                .extend_from_slice(decoded);
        }
        fn end(&mut self) {
            let text = self.current.take().expect("end after entity");
            self.texts.push(String::from_utf8_lossy(&text).into_owned());
        }
    }

    /// Walks `msg` fed in pieces of `piece` bytes.
    fn walk(msg: &[u8], piece: usize) -> Log {
        let mut w = Walker::new(Log::default());
        for chunk in msg.chunks(piece.max(1)) {
            w.feed(chunk);
        }
        w.finish()
    }

    /// The same result whatever the pieces.
    fn walk_all(msg: &[u8]) -> Log {
        let whole = walk(msg, msg.len());
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(walk(msg, piece), whole, "pieces of {piece}");
        }
        whole
    }

    fn decode_all(encoding: &str, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut d = Decoder::new(encoding);
        d.decode(input, true, &mut out);
        out
    }

    const NESTED: &str = "Content-Type: multipart/mixed;\n boundary=\"outer\"\n\npreamble\n\
        --outer\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n\
        See http://qp.exa=\nmple/ and =3D\n\
        --outer\nContent-Type: multipart/alternative; boundary=inner\n\n\
        --inner\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
        PGI+aGk8L2\nI+Cg==\n\
        --inner\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\naW1n\n\
        --outer\nContent-Type: message/rfc822\n\nSubject: inner\n\nenclosed\n\
        --outer--\nepilogue\n";

    #[test]
    fn nested_multiparts_any_pieces() {
        let log = walk_all(NESTED.as_bytes());
        let media: Vec<(u32, &str)> = log.entities.iter().map(|(d, m)| (*d, m.as_str())).collect();
        assert_eq!(
            media,
            [
                (0, "multipart/mixed"),
                (1, "text/plain"),
                (1, "multipart/alternative"),
                (2, "text/html"),
                (2, "image/png"),
                (1, "message/rfc822"),
                (2, ""),
            ]
        );
        // The inner multipart never closed: the outer boundary ended it.
        assert_eq!(
            log.texts,
            [
                "See http://qp.example/ and =\n",
                "<b>hi</b>\n",
                "enclosed\n"
            ]
        );
    }

    #[test]
    fn decoders() {
        assert_eq!(decode_all("base64", b"aGVs\r\nbG8=\r\nignored"), b"hello");
        assert_eq!(decode_all("base64", b"a*G!V-sbG8"), b"hello");
        assert_eq!(decode_all("base64", b"aGVsbG8"), b"hello");
        assert_eq!(
            decode_all("quoted-printable", b"a=3Db=\r\nc= \nd=zz=4"),
            b"a=bcd=zz=4"
        );
        assert_eq!(decode_all("7bit", b"a=3D"), b"a=3D");
        // Split anywhere, the same bytes.
        for (enc, input) in [
            ("base64", &b"aGVs\r\nbG8gd29y\r\nbGQ="[..]),
            ("quoted-printable", b"a=3Db=\r\nc= \t \r\nd=zz=4=\r=\n"),
        ] {
            let whole = decode_all(enc, input);
            for cut in 0..=input.len() {
                let mut d = Decoder::new(enc);
                let mut out = Vec::new();
                d.decode(&input[..cut], false, &mut out);
                d.decode(&input[cut..], true, &mut out);
                assert_eq!(out, whole, "{enc} cut at {cut}");
            }
        }
        assert_eq!(
            param("multipart/mixed; BOUNDARY=\"a b\"; x=y", "boundary"),
            Some("a b".into())
        );
        assert_eq!(
            param("multipart/mixed; boundary=abc ; x=y", "boundary"),
            Some("abc".into())
        );
        assert_eq!(
            header(
                b"X: 1\r\nContent-Type: text/plain;\r\n\tcharset=x\r\n",
                b"content-type"
            ),
            Some("text/plain; charset=x".into())
        );
    }

    #[test]
    fn plain_messages_and_bodies_without_heads() {
        let log = walk_all(b"Subject: x\r\n\r\nline 1\r\nline 2");
        assert_eq!(log.texts, ["line 1\r\nline 2"]);
        let log = walk_all(b"\r\nbody only\r\n");
        assert_eq!(
            (log.entities.len(), log.texts[0].as_str()),
            (1, "body only\r\n")
        );
        let log = walk_all(b"Subject: no body\r\n");
        assert_eq!(log.texts, [""]);
    }

    #[test]
    fn hostile_input_is_bounded() {
        // No closing boundary, huge lines, bad base64, a boundary that never comes.
        let mut msg = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\
            Content-Transfer-Encoding: base64\n\n!!!!****\n"
            .to_vec();
        msg.extend(std::iter::repeat_n(b'x', 3 * MAX_LINE));
        msg.extend_from_slice(b"\n--b\n\nlast part, never closed");
        let log = walk_all(&msg);
        assert_eq!(log.texts.len(), 2);
        assert_eq!(log.texts[1], "last part, never closed");
        // A boundary line longer than MAX_LINE is data.
        let long = "b".repeat(MAX_LINE + 10);
        let msg = format!("Content-Type: multipart/mixed; boundary={long}\n\n--{long}\n\nx\n");
        assert!(walk_all(msg.as_bytes()).texts.is_empty());
        // A header section without end is cut at MAX_HEAD.
        let mut head = Vec::new();
        while head.len() < 2 * MAX_HEAD {
            head.extend_from_slice(b"X-Junk: 0123456789012345678901234567890123456789\n");
        }
        assert_eq!(walk(&head, CHUNK).texts, [""]);
        // Deep nesting and many parts stop at the limits.
        let mut deep = String::new();
        for i in 0..50 {
            deep.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        deep.push_str("\nhttp://deep.example/\n");
        let log = walk_all(deep.as_bytes());
        assert_eq!(log.entities.len(), MAX_DEPTH as usize + 1);
        assert!(log.texts.is_empty());
        let many = "Content-Type: multipart/mixed; boundary=m\n\n".to_string()
            + &"--m\n\nx\n".repeat(2 * MAX_ENTITIES);
        assert_eq!(walk(many.as_bytes(), CHUNK).texts.len(), MAX_ENTITIES - 1);
        // Pseudo-random bytes never panic.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let alphabet = b"-bm\r\n:=Content-Type; boundary=b QP64";
        let noise: Vec<u8> = (0..20_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match i % 97 {
                    0 => b'\n',
                    1 => b'=',
                    _ => alphabet[(x % alphabet.len() as u64) as usize],
                }
            })
            .collect();
        walk_all(&noise);
    }

    #[test]
    fn spooled_message_larger_than_a_chunk() {
        let dir = crate::testing::TempDir::new("mime");
        let path = dir.path().join("spool");
        let mut msg =
            b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        let line = b"aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29y\r\n";
        while msg.len() < 3 * CHUNK {
            msg.extend_from_slice(line);
        }
        std::fs::write(&path, &msg).expect("write spool");
        let spool_path = path.clone();
        let mut body = Body {
            mem: Vec::new(),
            spool: Some(crate::SpoolFile {
                file: File::open(&path).expect("open spool"),
                path,
            }),
            header_end: None,
            len: msg.len() as u64,
        };
        let (cx, _svc) = crate::testing::cx("192.0.2.1:1");
        let feed = |(w, n): &mut (Walker<Log>, usize), chunk: &[u8]| {
            assert!(chunk.len() <= CHUNK);
            *n += chunk.len();
            w.feed(chunk);
            ControlFlow::Continue(())
        };
        let state = (Walker::new(Log::default()), 0);
        let read = read_message(&*cx.svc, &body, u64::MAX, state, feed);
        let (walker, n) = crate::testing::block_on(read).expect("read");
        assert_eq!(n, msg.len());
        let text = &walker.finish().texts[0];
        assert!(text.len() > 2 * CHUNK && text.starts_with("hello world hello"));
        // `max` bounds the read, in memory too.
        let count = |n: &mut usize, c: &[u8]| {
            *n += c.len();
            ControlFlow::Continue(())
        };
        let read = read_message(&*cx.svc, &body, 1000, 0, count);
        assert_eq!(crate::testing::block_on(read).expect("read"), 1000);
        body.spool = None;
        body.mem = msg.clone();
        let read = read_message(&*cx.svc, &body, CHUNK as u64 + 1, 0, count);
        assert_eq!(crate::testing::block_on(read).expect("read"), CHUNK + 1);
        // From an offset past the first chunk: exactly the bytes after it, in order, from
        // memory and from the spool file.
        let from = CHUNK as u64 + 7;
        let collect = |all: &mut Vec<u8>, c: &[u8]| all.extend_from_slice(c);
        let read = read_message_from(&*cx.svc, &body, from, Vec::new(), collect);
        assert_eq!(
            crate::testing::block_on(read).expect("read"),
            msg[from as usize..]
        );
        body.spool = Some(crate::SpoolFile {
            file: File::open(&spool_path).expect("open spool"),
            path: spool_path,
        });
        body.mem = Vec::new();
        let read = read_message_from(&*cx.svc, &body, from, Vec::new(), collect);
        assert_eq!(
            crate::testing::block_on(read).expect("read"),
            msg[from as usize..]
        );
    }
}
