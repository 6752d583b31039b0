//! # queue/postfix-queue — hand each message to Postfix's cleanup service
//!
//! ## Synopsis
//!
//! ```text
//! queue/postfix-queue [<socket>] [FLAG_* ...] [timeout <seconds>] [loglevel N]
//! queue/postfix-queue
//! queue/postfix-queue /var/spool/postfix/public/cleanup FLAG_MASK_EXTERNAL
//! queue/postfix-queue 127.0.0.1:10026 FLAG_FILTER FLAG_MAP_OK
//! ```
//!
//! ## Description
//!
//! Speaks Postfix's own protocol to its `cleanup` service, as Postfix's smtpd (and qpsmtpd's
//! `Qpsmtpd::Postfix`) do: the message goes straight into Postfix's queue, with no second
//! SMTP hop. The exchange, on one connection per message:
//!
//! 1. cleanup sends an attribute list (Postfix's `attr_print0` format: `name\0value\0` pairs,
//!    ended by an empty name): `protocol=cleanup_protocol` (Postfix ≥ 3.7; older versions send
//!    none, which is accepted) and `queue_id=<id>`.
//! 2. We send `flags=<n>`, the `CLEANUP_FLAG_*` bits of the arguments.
//! 3. We send the message as Postfix records (`src/global/rec_type.h`): one type byte, the
//!    length as a base-128 number, low 7 bits first, the high bit set on every byte but the
//!    last, then the data:
//!    - `T` arrival time, `<seconds> <microseconds>`;
//!    - `A` `rewrite_context=remote` (`local` for relay clients: Postfix then qualifies bare
//!      addresses in headers, as its smtpd does for its own local clients);
//!    - `S` the sender (empty for `<>`);
//!    - `A` `log_client_name=`, `log_client_address=`, `log_client_port=`, `log_helo_name=`,
//!      `log_protocol_name=`: who sent it, for Postfix's logs and XFORWARD;
//!    - `R` each recipient;
//!    - `M` (content follows), then each line of the message (the added headers, then the
//!      message as received) as an `N` record without its CRLF; a line longer than 2048 bytes
//!      is cut into `L` records ending with an `N`;
//!    - `X` (extracted information follows; we send none) and `E` (end).
//! 4. cleanup fsyncs the queue file and answers `status=<n>`, `reason=<text>`.
//!
//! Only status 0 gives `250 Queued! <Message-ID> (Queue-Id: <id>)`. A connection that breaks
//! before the `E` record makes cleanup throw the message away, so nothing half-written is ever
//! queued; a break after it may leave the message queued while the client gets 4xx and sends
//! it again (SMTP's at-least-once).
//!
//! A non-zero status becomes the reply Postfix's smtpd gives for it (`cleanup_strerror.c`),
//! with cleanup's `reason` as the text when there is one (a `header_checks` REJECT text):
//!
//! | status bit | reply |
//! |---|---|
//! | `DEFER` (0x100) | `451 4.7.1 service unavailable` |
//! | `PROXY` (0x80) | `451 4.3.0 queue file write error` |
//! | `BAD` (0x1) | `451 4.3.0 internal protocol error` |
//! | `RCPT` (0x40) | `550 5.1.0 no recipients specified` |
//! | `HOPS` (0x10) | `554 5.4.0 too many hops` |
//! | `SIZE` (0x4) | `552 5.3.4 message file too big` |
//! | `CONT` (0x8) | `550 5.7.1 message content rejected` |
//! | `WRITE` (0x2) | `451 4.3.0 queue file write error` |
//! | `NOPERM` (0x200) | `550 5.7.1 service denied` |
//! | anything else | `451 4.3.0 queue error` |
//!
//! With `FLAG_SMTP_REPLY`, cleanup's reason is a complete SMTP reply (`550 5.7.1 text`) and
//! is used as it is. No cleanup to connect to, a wrong protocol, or a connection that breaks
//! gives `451 4.3.0`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<socket>` | `/var/spool/postfix/public/cleanup` | the cleanup service: an absolute path (Unix socket), or `IP:port` / `[IPv6]:port` (an `inet` cleanup service in master.cf). Overridden by the file `cleanup_sockets`, which is overridden by the environment variable `POSTFIXQUEUE` (qpsmtpd's order). |
//! | `FLAG_*` | none (0, as qpsmtpd) | cleanup flags, ORed: `FLAG_NONE`, `FLAG_BOUNCE`, `FLAG_FILTER` (header/body checks, content_filter), `FLAG_HOLD`, `FLAG_DISCARD`, `FLAG_BCC_OK`, `FLAG_MAP_OK` (virtual aliases, canonical maps), `FLAG_MILTER`, `FLAG_SMTP_REPLY`, `FLAG_SMTPUTF8`, `FLAG_AUTOUTF8`, `FLAG_FILTER_ALL`, `FLAG_MASK_EXTERNAL` (what Postfix's smtpd uses: filter, milter, BCC and maps; probably what you want), `FLAG_MASK_INTERNAL`, `FLAG_MASK_EXTRA`. An unknown flag is an error (qpsmtpd ignores it). `FLAG_SMTPUTF8` is added by itself for a client that sent `SMTPUTF8`. |
//! | `timeout <seconds>` | `10` | connect timeout, 1–3600. The whole exchange is bounded by `plugin_timeout`. |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! ## Config files
//!
//! | file | meaning |
//! |---|---|
//! | `cleanup_sockets` | one socket per line (path or `IP:port`), tried in order until one connects (qpsmtpd). A line that is neither stops the server with `file:line`. |
//!
//! The environment variable `POSTFIXQUEUE` (one socket) overrides both the file and the
//! argument.
//!
//! ## Hooks
//!
//! `queue`. The socket I/O runs on the worker's runtime (non-blocking); a spooled message is
//! read in 64 KiB chunks on the blocking thread pool.
//!
//! ## Notes
//!
//! None read or written.
//!
//! ## Standards
//!
//! Postfix's cleanup protocol (`src/cleanup/cleanup.c`, `src/global/rec_type.h`,
//! `src/global/cleanup_user.h`, `src/util/attr_print0.c`; there is no RFC). RFC 5321 §6.1.
//!
//! Differences from qpsmtpd: qpsmtpd sends the time as seconds only, no `rewrite_context` and
//! no client attributes; it ignores the `protocol` attribute of Postfix ≥ 3.7; for a status
//! it cannot map it returns `DECLINED`; a failed connect is a `die` there.
//!
//! ## Security
//!
//! Access to the cleanup socket lets a process put any message into Postfix's queue; the
//! public socket is open to local users anyway. cleanup trusts the sender and recipients we
//! give: they are the envelope the SMTP client gave and the other plugins accepted.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use super::local::{is_enhanced, txn_message_id, CHUNK};
use ringsmtpd_plugin_api::args::parse_timeout;
use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::{
    blocking, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Reply, Step, Transaction,
};

/// Postfix's default public cleanup socket.
const DEFAULT_SOCKET: &str = "/var/spool/postfix/public/cleanup";

/// Connect timeout: cleanup answers at once or is not running.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest record we send for one piece of a line: Postfix's `line_length_limit` default.
const PIECE: usize = 2048;

/// Send buffer size before a write.
const SEND_AT: usize = 64 * 1024;

/// Attribute lists from cleanup are tiny; more than this is not cleanup talking.
const MAX_ATTRS: usize = 16 * 1024;

/// Record types (`src/global/rec_type.h`).
mod rec {
    pub const TIME: u8 = b'T';
    pub const ATTR: u8 = b'A';
    pub const FROM: u8 = b'S';
    pub const RCPT: u8 = b'R';
    pub const MESG: u8 = b'M';
    pub const CONT: u8 = b'L';
    pub const NORM: u8 = b'N';
    pub const XTRA: u8 = b'X';
    pub const END: u8 = b'E';
}

/// `CLEANUP_FLAG_*` (`src/global/cleanup_user.h`), by the names qpsmtpd's plugin takes.
const FLAGS: &[(&str, u32)] = &[
    ("FLAG_NONE", 0),
    ("FLAG_BOUNCE", 1 << 0),
    ("FLAG_FILTER", 1 << 1),
    ("FLAG_HOLD", 1 << 2),
    ("FLAG_DISCARD", 1 << 3),
    ("FLAG_BCC_OK", 1 << 4),
    ("FLAG_MAP_OK", 1 << 5),
    ("FLAG_MILTER", 1 << 6),
    ("FLAG_SMTP_REPLY", 1 << 7),
    ("FLAG_SMTPUTF8", 1 << 8),
    ("FLAG_AUTOUTF8", 1 << 9),
    ("FLAG_FILTER_ALL", (1 << 1) | (1 << 6)),
    (
        "FLAG_MASK_EXTERNAL",
        (1 << 1) | (1 << 6) | (1 << 4) | (1 << 5),
    ),
    ("FLAG_MASK_INTERNAL", 1 << 5),
    ("FLAG_MASK_EXTRA", (1 << 2) | (1 << 3)),
];

const FLAG_SMTP_REPLY: u32 = 1 << 7;
const FLAG_SMTPUTF8: u32 = 1 << 8;

/// `CLEANUP_STAT_*` -> Postfix smtpd's reply, in `cleanup_strerror.c`'s order (the first
/// matching bit wins).
const STATUS: &[(u32, u16, &str, &str)] = &[
    (1 << 8, 451, "4.7.1", "service unavailable"),
    (1 << 7, 451, "4.3.0", "queue file write error"),
    (1 << 0, 451, "4.3.0", "internal protocol error"),
    (1 << 6, 550, "5.1.0", "no recipients specified"),
    (1 << 4, 554, "5.4.0", "too many hops"),
    (1 << 2, 552, "5.3.4", "message file too big"),
    (1 << 3, 550, "5.7.1", "message content rejected"),
    (1 << 1, 451, "4.3.0", "queue file write error"),
    (1 << 9, 550, "5.7.1", "service denied"),
];

/// The `queue/postfix-queue` plugin.
pub struct PostfixQueue {
    common: Common,
    /// Tried in order until one connects.
    sockets: Vec<Endpoint>,
    flags: u32,
    connect_timeout: Duration,
}

/// Builds `queue/postfix-queue` from its config line, `cleanup_sockets` and `POSTFIXQUEUE`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init, std::env::var_os("POSTFIXQUEUE"))?))
}

/// [`new`] with the environment passed in, for tests.
fn build(init: &PluginInit<'_>, env: Option<OsString>) -> Result<PostfixQueue, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut socket = None;
    let mut flags = 0u32;
    let mut connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    let mut it = rest.into_iter().enumerate();
    while let Some((i, arg)) = it.next() {
        if arg == "timeout" {
            let v = it
                .next()
                .ok_or_else(|| init.error("argument 'timeout' needs a value"))?
                .1;
            connect_timeout = parse_timeout(v).map_err(|e| init.error(e))?;
        } else if let Some(&(_, bits)) = FLAGS.iter().find(|(n, _)| *n == arg) {
            flags |= bits;
        } else if i == 0 {
            socket = Some(parse_endpoint(arg).map_err(|e| init.error(e))?);
        } else {
            return Err(init.error(format!(
                "unknown argument '{arg}' (flags are FLAG_FILTER, FLAG_MASK_EXTERNAL, ...)"
            )));
        }
    }
    let sockets = if let Some(env) = env.filter(|v| !v.is_empty()) {
        let text = env.to_string_lossy();
        vec![parse_endpoint(&text).map_err(|e| init.error(format!("POSTFIXQUEUE: {e}")))?]
    } else {
        let mut from_file = Vec::new();
        for line in init.config.lines("cleanup_sockets")?.unwrap_or_default() {
            from_file.push(parse_endpoint(&line.text).map_err(|e| line.error(e))?);
        }
        if from_file.is_empty() {
            vec![socket.unwrap_or_else(|| Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)))]
        } else {
            from_file
        }
    };
    Ok(PostfixQueue {
        common,
        sockets,
        flags,
        connect_timeout,
    })
}

/// `/path` or `IP:port` / `[IPv6]:port`.
fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    if s.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(s)));
    }
    s.parse::<SocketAddr>().map(Endpoint::Tcp).map_err(|_| {
        format!("'{s}' is neither an absolute socket path nor an IP:port for the cleanup service")
    })
}

/// Why a message was not queued.
enum Failure {
    /// The connection failed at `step`.
    Io(&'static str, io::Error),
    /// cleanup said something we do not understand.
    Protocol(String),
    /// The spool file could not be read: we hung up before `E`, nothing was queued.
    Spool(io::Error),
    /// cleanup refused: its status and reason.
    Status(u32, String),
}

impl PostfixQueue {
    /// The whole exchange on a connected stream; the queue id on success.
    async fn inject(
        &self,
        cx: &Cx,
        txn: &Transaction,
        stream: &mut dyn Stream,
    ) -> Result<String, Failure> {
        let mut inbuf = Vec::with_capacity(512);
        let hello = read_attrs(stream, &mut inbuf).await?;
        if let Some(proto) = attr(&hello, "protocol") {
            if proto != "cleanup_protocol" {
                return Err(Failure::Protocol(format!(
                    "the socket speaks {proto}, not cleanup_protocol"
                )));
            }
        }
        let queue_id = attr(&hello, "queue_id")
            .ok_or_else(|| Failure::Protocol("no queue_id from cleanup".into()))?
            .to_string();

        let mut flags = self.flags;
        if txn.mail_params.smtputf8 {
            flags |= FLAG_SMTPUTF8;
        }
        let mut out = Vec::with_capacity(SEND_AT + PIECE + 16);
        out.extend_from_slice(format!("flags\0{flags}\0\0").as_bytes());
        envelope_records(&mut out, cx, txn);
        put_rec(&mut out, rec::MESG, b"");

        let mut content = Content::default();
        content.feed(&mut out, txn.added_headers.as_bytes());
        match &txn.body.spool {
            None => {
                let mut rest: &[u8] = &txn.body.mem;
                while !rest.is_empty() {
                    let n = rest.len().min(SEND_AT);
                    content.feed(&mut out, &rest[..n]);
                    rest = &rest[n..];
                    if out.len() >= SEND_AT {
                        out = send(stream, out).await?;
                    }
                }
            }
            Some(spool) => {
                // The envelope goes now: cleanup works on it while we read the spool file.
                out = send(stream, out).await?;
                let mut file = spool.file.try_clone().map_err(Failure::Spool)?;
                let mut offset = 0u64;
                loop {
                    let (f, read) = blocking(&*cx.svc, move || {
                        let mut buf = vec![0u8; CHUNK];
                        let r = read_chunk(&file, &mut buf, offset).map(|n| {
                            buf.truncate(n);
                            buf
                        });
                        (file, r)
                    })
                    .await
                    .ok_or_else(|| Failure::Spool(io::Error::other("spool read job panicked")))?;
                    file = f;
                    let chunk = read.map_err(Failure::Spool)?;
                    if chunk.is_empty() {
                        break;
                    }
                    offset += chunk.len() as u64;
                    content.feed(&mut out, &chunk);
                    if out.len() >= SEND_AT {
                        out = send(stream, out).await?;
                    }
                }
            }
        }
        content.finish(&mut out);
        put_rec(&mut out, rec::XTRA, b"");
        put_rec(&mut out, rec::END, b"");
        send(stream, out).await?;

        let result = read_attrs(stream, &mut inbuf).await?;
        let status = attr(&result, "status")
            .ok_or_else(|| Failure::Protocol("no status from cleanup".into()))?;
        let status: u32 = status
            .parse()
            .map_err(|_| Failure::Protocol(format!("bad status '{status}' from cleanup")))?;
        if status != 0 {
            let reason = attr(&result, "reason").unwrap_or("").to_string();
            return Err(Failure::Status(status, reason));
        }
        Ok(queue_id)
    }

    fn reply_for(&self, failure: &Failure) -> Reply {
        match failure {
            Failure::Io(..) | Failure::Spool(_) => {
                Reply::new(451, "4.3.0", "Queue error (Postfix cleanup unavailable)")
            }
            Failure::Protocol(_) => {
                Reply::new(451, "4.3.0", "Queue error (Postfix cleanup protocol)")
            }
            Failure::Status(status, reason) => {
                status_reply(*status, reason, self.flags & FLAG_SMTP_REPLY != 0)
            }
        }
    }
}

impl Plugin for PostfixQueue {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(async move {
            let mut stream = None;
            for socket in &self.sockets {
                match cx.svc.connect(socket, self.connect_timeout).await {
                    Ok(s) => {
                        stream = Some((socket, s));
                        break;
                    }
                    Err(e) => self.common.log(
                        cx,
                        Level::Error,
                        format_args!("cannot connect to cleanup at {socket}: {e}"),
                    ),
                }
            }
            let Some((socket, mut stream)) = stream else {
                return Outcome::Done(Some(Reply::new(
                    451,
                    "4.3.0",
                    "Queue error (Postfix cleanup unavailable)",
                )));
            };
            match self.inject(cx, txn, &mut *stream).await {
                Ok(queue_id) => {
                    let queue_id: String = queue_id
                        .chars()
                        .filter(|c| c.is_ascii_graphic())
                        .take(64)
                        .collect();
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!(
                            "queued as {queue_id} by {socket} ({} bytes)",
                            txn.message_len()
                        ),
                    );
                    let text = match txn_message_id(&txn.added_headers, &txn.body) {
                        Some(id) => format!("Queued! {id} (Queue-Id: {queue_id})"),
                        None => format!("Queued! (Queue-Id: {queue_id})"),
                    };
                    Outcome::Ok(Some(Cow::Owned(text)))
                }
                Err(failure) => {
                    let r = self.reply_for(&failure);
                    let why = match &failure {
                        Failure::Io(step, e) => format!("{step}: {e}"),
                        Failure::Protocol(m) => m.clone(),
                        Failure::Spool(e) => format!("reading the spool file: {e} (aborted)"),
                        Failure::Status(s, reason) => format!("status {s:#x}, reason '{reason}'"),
                    };
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!(
                            "cleanup at {socket} failed ({why}): {} {}",
                            r.code,
                            r.lines.join(" ")
                        ),
                    );
                    Outcome::Done(Some(r))
                }
            }
        })
    }
}

/// `pread` until `buf` is full or end of file.
fn read_chunk(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    loop {
        match file.read_at(buf, offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

async fn send(stream: &mut dyn Stream, buf: Vec<u8>) -> Result<Vec<u8>, Failure> {
    let (res, mut buf) = stream.write_all(buf).await;
    res.map_err(|e| Failure::Io("write", e))?;
    buf.clear();
    Ok(buf)
}

/// Reads one attribute list (`name\0value\0...\0`), leaving anything after it in `buf`.
async fn read_attrs(
    stream: &mut dyn Stream,
    buf: &mut Vec<u8>,
) -> Result<Vec<(String, String)>, Failure> {
    loop {
        if let Some((attrs, used)) = parse_attrs(buf) {
            buf.drain(..used);
            return Ok(attrs);
        }
        if buf.len() > MAX_ATTRS {
            return Err(Failure::Protocol(
                "attribute list from cleanup too long".into(),
            ));
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        let (res, b) = stream.read(std::mem::take(buf)).await;
        *buf = b;
        match res {
            Ok(0) => return Err(Failure::Io("read", io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(Failure::Io("read", e)),
        }
    }
}

/// A complete attribute list at the start of `data`, and its length; `None` if incomplete.
fn parse_attrs(data: &[u8]) -> Option<(Vec<(String, String)>, usize)> {
    let mut attrs = Vec::new();
    let mut pos = 0;
    loop {
        let name_end = pos + memchr::memchr(0, &data[pos..])?;
        if name_end == pos {
            return Some((attrs, pos + 1));
        }
        let value_end = name_end + 1 + memchr::memchr(0, &data[name_end + 1..])?;
        attrs.push((
            String::from_utf8_lossy(&data[pos..name_end]).into_owned(),
            String::from_utf8_lossy(&data[name_end + 1..value_end]).into_owned(),
        ));
        pos = value_end + 1;
    }
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// One record: type, length (base 128, low bits first, high bit = more), data.
fn put_rec(out: &mut Vec<u8>, ty: u8, data: &[u8]) {
    out.push(ty);
    let mut len = data.len();
    loop {
        let mut byte = (len & 0x7f) as u8;
        len >>= 7;
        if len != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(data);
}

/// The envelope records, in the order Postfix's smtpd sends them.
fn envelope_records(out: &mut Vec<u8>, cx: &Cx, txn: &Transaction) {
    let now = cx.svc.now().duration_since(UNIX_EPOCH).unwrap_or_default();
    put_rec(
        out,
        rec::TIME,
        format!("{} {}", now.as_secs(), now.subsec_micros()).as_bytes(),
    );
    let context = if cx.conn.relay_client {
        "local"
    } else {
        "remote"
    };
    put_rec(
        out,
        rec::ATTR,
        format!("rewrite_context={context}").as_bytes(),
    );
    put_rec(out, rec::FROM, txn.sender.as_str().as_bytes());
    let conn = &cx.conn;
    let name = conn.remote_host.as_deref().unwrap_or("unknown");
    let attrs = [
        ("log_client_name", name.to_string()),
        ("log_client_address", conn.remote.ip().to_string()),
        ("log_client_port", conn.remote.port().to_string()),
    ];
    for (k, v) in attrs {
        put_rec(out, rec::ATTR, format!("{k}={v}").as_bytes());
    }
    if let Some(hello) = &conn.hello {
        put_rec(
            out,
            rec::ATTR,
            format!("log_helo_name={}", hello.host).as_bytes(),
        );
    }
    let proto = if conn.is_esmtp() { "ESMTP" } else { "SMTP" };
    put_rec(
        out,
        rec::ATTR,
        format!("log_protocol_name={proto}").as_bytes(),
    );
    for r in &txn.recipients {
        put_rec(out, rec::RCPT, r.addr.as_str().as_bytes());
    }
}

/// Turns the message into `N`/`L` records, one line at a time, across chunk boundaries.
#[derive(Default)]
struct Content {
    /// The start of a line whose end has not arrived yet (never more than `PIECE` bytes).
    carry: Vec<u8>,
}

impl Content {
    fn feed(&mut self, out: &mut Vec<u8>, mut data: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            if self.carry.is_empty() {
                line_records(out, &data[..i]);
            } else {
                self.carry.extend_from_slice(&data[..i]);
                let line = std::mem::take(&mut self.carry);
                line_records(out, &line);
                self.carry = line;
                self.carry.clear();
            }
            data = &data[i + 1..];
        }
        self.carry.extend_from_slice(data);
        // A very long line: send its start now, keep at least one byte (a CR may be the
        // last byte, waiting for its LF).
        while self.carry.len() > PIECE {
            put_rec(out, rec::CONT, &self.carry[..PIECE]);
            self.carry.drain(..PIECE);
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.carry.is_empty() {
            let line = std::mem::take(&mut self.carry);
            line_records(out, &line);
        }
    }
}

/// One line without its LF (a CR before it is dropped too).
fn line_records(out: &mut Vec<u8>, line: &[u8]) {
    let mut line = line.strip_suffix(b"\r").unwrap_or(line);
    while line.len() > PIECE {
        put_rec(out, rec::CONT, &line[..PIECE]);
        line = &line[PIECE..];
    }
    put_rec(out, rec::NORM, line);
}

/// The reply for a non-zero cleanup status.
fn status_reply(status: u32, reason: &str, smtp_reply: bool) -> Reply {
    let reason = reason.trim();
    if smtp_reply {
        if let Some(r) = parse_smtp_reply(reason) {
            return r;
        }
    }
    let text = |default: &'static str| -> Cow<'static, str> {
        if reason.is_empty() {
            Cow::Borrowed(default)
        } else {
            let mut end = reason.len().min(400);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            Cow::Owned(reason[..end].to_string())
        }
    };
    for &(bit, code, enhanced, default) in STATUS {
        if status & bit != 0 {
            return Reply {
                code,
                enhanced: Some(Cow::Borrowed(enhanced)),
                lines: vec![text(default)],
                disconnect: false,
            };
        }
    }
    Reply {
        code: 451,
        enhanced: Some(Cow::Borrowed("4.3.0")),
        lines: vec![text("queue error")],
        disconnect: false,
    }
}

/// `NNN x.y.z text` or `NNN text` with NNN a 4xx or 5xx code.
fn parse_smtp_reply(s: &str) -> Option<Reply> {
    let (code, rest) = s.split_once(' ').unwrap_or((s, ""));
    let code: u16 = code.parse().ok().filter(|c| (400..600).contains(c))?;
    let (enhanced, text) = match rest.split_once(' ') {
        Some((e, t)) if is_enhanced(e, code) => (Some(Cow::Owned(e.to_string())), t),
        _ => (None, rest),
    };
    Some(Reply {
        code,
        enhanced,
        lines: vec![Cow::Owned(text.chars().take(400).collect())],
        disconnect: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::test_util::{txn, unreadable_spool};
    use ringsmtpd_plugin_api::testing::{self, cx, run, spool, TempDir};
    use ringsmtpd_plugin_api::{Hello, HelloKind};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    /// What the fake cleanup does after reading the flags.
    #[derive(Clone, Copy)]
    enum Script {
        /// Reads records to `E`, answers this status and reason.
        Answer(u32, &'static str),
        /// Reads records to `E`, then hangs up without a status.
        HangUp,
        /// Sends this hello instead of the usual one, reads nothing.
        Hello(&'static [u8]),
    }

    /// An in-process fake of Postfix's cleanup service on a Unix socket (one connection):
    /// sends `protocol` and `queue_id`, reads the `flags` attribute and the records up to `E`
    /// (as cleanup's `rec_get_raw` does), and returns everything it read, byte for byte.
    fn fake_cleanup(path: &std::path::Path, script: Script) -> JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            if let Script::Hello(h) = script {
                s.write_all(h).unwrap();
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
                return rest;
            }
            s.write_all(b"protocol\0cleanup_protocol\0queue_id\0ABC123DEF\0\0")
                .unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            let mut next = |s: &mut std::os::unix::net::UnixStream, got: &mut Vec<u8>| {
                s.read_exact(&mut byte).unwrap();
                got.push(byte[0]);
                byte[0]
            };
            // flags\0<n>\0\0
            let mut zeros = 0;
            while zeros < 3 {
                zeros += usize::from(next(&mut s, &mut got) == 0);
            }
            // Records to E.
            loop {
                let ty = next(&mut s, &mut got);
                let mut len = 0usize;
                let mut shift = 0;
                loop {
                    let b = next(&mut s, &mut got);
                    len |= ((b & 0x7f) as usize) << shift;
                    shift += 7;
                    if b & 0x80 == 0 {
                        break;
                    }
                }
                let mut data = vec![0u8; len];
                s.read_exact(&mut data).unwrap();
                got.extend_from_slice(&data);
                if ty == b'E' {
                    break;
                }
            }
            match script {
                Script::Answer(status, reason) => {
                    s.write_all(format!("status\0{status}\0reason\0{reason}\0\0").as_bytes())
                        .unwrap();
                }
                Script::HangUp | Script::Hello(_) => {}
            }
            got
        })
    }

    fn build_with(
        args: &[&str],
        files: &[(&str, &str)],
        env: Option<&str>,
    ) -> Result<PostfixQueue, ConfigError> {
        let line = format!("queue/postfix-queue {}", args.join(" "));
        testing::build(|init| build(init, env.map(OsString::from)), &line, files)
    }

    const MESSAGE: &str =
        "Subject: hi\r\nMessage-ID: <abc@example.org>\r\n\r\nline 1\r\n.dot\r\n\r\nend\r\n";

    fn queue(p: &PostfixQueue, t: &mut Transaction) -> (Outcome, Cx) {
        let (mut cx, _svc) = cx("192.0.2.1:4242");
        cx.conn.hello = Some(Hello {
            kind: HelloKind::Ehlo,
            host: "client.example".into(),
        });
        cx.conn.remote_host = Some("mail.example".into());
        let o = run(p.queue(&mut cx, t));
        (o, cx)
    }

    fn rec_bytes(ty: u8, data: &str) -> Vec<u8> {
        let mut v = Vec::new();
        put_rec(&mut v, ty, data.as_bytes());
        v
    }

    /// What the plugin must send for `txn(["b@example.com", "c@example.net"])` with `flags`,
    /// given the time record it sent.
    fn expected_stream(flags: u32, time: &str, content_lines: &[&str]) -> Vec<u8> {
        let mut v = format!("flags\0{flags}\0\0").into_bytes();
        for (ty, data) in [
            (b'T', time),
            (b'A', "rewrite_context=remote"),
            (b'S', "a@example.org"),
            (b'A', "log_client_name=mail.example"),
            (b'A', "log_client_address=192.0.2.1"),
            (b'A', "log_client_port=4242"),
            (b'A', "log_helo_name=client.example"),
            (b'A', "log_protocol_name=ESMTP"),
            (b'R', "b@example.com"),
            (b'R', "c@example.net"),
            (b'M', ""),
        ] {
            v.extend(rec_bytes(ty, data));
        }
        for l in content_lines {
            v.extend(rec_bytes(b'N', l));
        }
        v.extend(rec_bytes(b'X', ""));
        v.extend(rec_bytes(b'E', ""));
        v
    }

    /// The time record's text, found in what the fake read (it is the clock's "now").
    fn time_of(got: &[u8]) -> String {
        let start = got.iter().position(|&b| b == b'T').unwrap();
        let len = got[start + 1] as usize;
        String::from_utf8(got[start + 2..start + 2 + len].to_vec()).unwrap()
    }

    #[test]
    fn records_byte_for_byte_and_250_with_queue_id() {
        let d = TempDir::new("ok");
        let sock = d.path().join("cleanup");
        let server = fake_cleanup(&sock, Script::Answer(0, ""));
        let p = build_with(&[sock.to_str().unwrap(), "FLAG_MASK_EXTERNAL"], &[], None).unwrap();
        let mut t = txn(
            "a@example.org",
            &["b@example.com", "c@example.net"],
            MESSAGE,
        );
        let (o, _cx) = queue(&p, &mut t);
        assert_eq!(
            o,
            Outcome::ok("Queued! <abc@example.org> (Queue-Id: ABC123DEF)")
        );
        let got = server.join().unwrap();
        let time = time_of(&got);
        let (secs, usecs) = time.split_once(' ').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000);
        assert!(usecs.parse::<u32>().unwrap() < 1_000_000);
        let expected = expected_stream(
            0x72,
            &time,
            &[
                "Received: from x",
                " by y; now",
                "Subject: hi",
                "Message-ID: <abc@example.org>",
                "",
                "line 1",
                ".dot",
                "",
                "end",
            ],
        );
        assert_eq!(
            got,
            expected,
            "\n{:?}\n{:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected)
        );
    }

    #[test]
    fn long_lines_spooled_message_null_sender_and_utf8() {
        let d = TempDir::new("long");
        let sock = d.path().join("cleanup");
        let server = fake_cleanup(&sock, Script::Answer(0, ""));
        let p = build_with(&[sock.to_str().unwrap()], &[], None).unwrap();
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        t.sender = Default::default();
        t.mail_params.smtputf8 = true;
        // Spooled: a line of 5000 bytes crossing the 64 KiB read boundary, CRLF split too.
        let mut body = String::from("Subject: long\r\n\r\n");
        while body.len() < CHUNK - 2500 {
            body.push_str("short line\r\n");
        }
        let long: String = (0..5000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        body.push_str(&long);
        body.push_str("\r\n");
        while body.len() < 2 * CHUNK - 1 {
            body.push('z');
        }
        body.push_str("\r\nlast\r\n");
        spool(&mut t.body, &d.path().join("spool"), body.as_bytes());
        t.added_headers.clear();
        let (o, _) = queue(&p, &mut t);
        assert_eq!(o, Outcome::ok("Queued! (Queue-Id: ABC123DEF)"));
        let got = server.join().unwrap();
        assert!(got.starts_with(format!("flags\0{}\0\0", FLAG_SMTPUTF8).as_bytes()));
        // The null sender is an empty S record.
        assert!(got.windows(3).any(|w| w == b"S\0A"), "empty sender record");
        // Rebuild the content from the records after M, checking each record's shape.
        let m = got.windows(2).position(|w| w == b"M\0").unwrap() + 2;
        let mut pos = m;
        let mut lines: Vec<Vec<u8>> = vec![Vec::new()];
        loop {
            let ty = got[pos];
            let (mut len, mut shift, mut p2) = (0usize, 0, pos + 1);
            loop {
                let b = got[p2];
                p2 += 1;
                len |= ((b & 0x7f) as usize) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let data = &got[p2..p2 + len];
            pos = p2 + len;
            match ty {
                b'L' => {
                    assert_eq!(len, PIECE);
                    lines.last_mut().unwrap().extend_from_slice(data)
                }
                b'N' => {
                    assert!(len <= PIECE);
                    lines.last_mut().unwrap().extend_from_slice(data);
                    lines.push(Vec::new());
                }
                b'X' => break,
                t => panic!("unexpected record {}", t as char),
            }
        }
        lines.pop();
        let expected: Vec<Vec<u8>> = body
            .strip_suffix("\r\n")
            .unwrap()
            .split("\r\n")
            .map(|l| l.as_bytes().to_vec())
            .collect();
        assert_eq!(lines.len(), expected.len());
        assert!(lines == expected);
        assert!(lines.iter().any(|l| l.len() == 5000));
    }

    #[test]
    fn cleanup_refusals_become_postfix_replies() {
        for (status, reason, flags, code, enhanced, text) in [
            (
                0x100u32,
                "",
                "FLAG_NONE",
                451u16,
                "4.7.1",
                "service unavailable",
            ),
            (0x4, "", "FLAG_NONE", 552, "5.3.4", "message file too big"),
            (
                0x8,
                "no spam here",
                "FLAG_FILTER",
                550,
                "5.7.1",
                "no spam here",
            ),
            (0x2, "", "FLAG_NONE", 451, "4.3.0", "queue file write error"),
            (
                0x40,
                "",
                "FLAG_NONE",
                550,
                "5.1.0",
                "no recipients specified",
            ),
            (0x10, "", "FLAG_NONE", 554, "5.4.0", "too many hops"),
            (0x200, "", "FLAG_NONE", 550, "5.7.1", "service denied"),
            (
                0x1,
                "",
                "FLAG_NONE",
                451,
                "4.3.0",
                "internal protocol error",
            ),
            (
                0x80,
                "",
                "FLAG_NONE",
                451,
                "4.3.0",
                "queue file write error",
            ),
            (0x8000, "", "FLAG_NONE", 451, "4.3.0", "queue error"),
            // DEFER wins over CONT, as in Postfix.
            (0x108, "later", "FLAG_NONE", 451, "4.7.1", "later"),
            (
                0x8,
                "554 5.7.0 rejected by policy",
                "FLAG_SMTP_REPLY",
                554,
                "5.7.0",
                "rejected by policy",
            ),
        ] {
            let d = TempDir::new("status");
            let sock = d.path().join("cleanup");
            let server = fake_cleanup(&sock, Script::Answer(status, reason));
            let p = build_with(&[sock.to_str().unwrap(), flags], &[], None).unwrap();
            let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
            let (o, _) = queue(&p, &mut t);
            assert_eq!(
                o,
                Outcome::Done(Some(Reply::new(code, enhanced, text))),
                "status {status:#x}"
            );
            server.join().unwrap();
        }
    }

    #[test]
    fn broken_or_foreign_peers_give_451() {
        let unavailable = Outcome::Done(Some(Reply::new(
            451,
            "4.3.0",
            "Queue error (Postfix cleanup unavailable)",
        )));
        // Nothing listening.
        let d = TempDir::new("broken");
        let p = build_with(&[d.path().join("none").to_str().unwrap()], &[], None).unwrap();
        let (o, cx) = queue(&p, &mut txn("a@example.org", &["b@example.com"], MESSAGE));
        assert_eq!(o, unavailable);
        drop(cx);
        // Hangs up after the message without a status: maybe queued, so 4xx (the client
        // retries; at-least-once).
        let sock = d.path().join("hangup");
        let server = fake_cleanup(&sock, Script::HangUp);
        let p = build_with(&[sock.to_str().unwrap()], &[], None).unwrap();
        assert_eq!(
            queue(&p, &mut txn("a@example.org", &["b@example.com"], MESSAGE)).0,
            unavailable
        );
        server.join().unwrap();
        // Another Postfix service on that socket.
        let sock = d.path().join("other");
        let server = fake_cleanup(&sock, Script::Hello(b"protocol\0showq_protocol\0\0"));
        let p = build_with(&[sock.to_str().unwrap()], &[], None).unwrap();
        let protocol = Outcome::Done(Some(Reply::new(
            451,
            "4.3.0",
            "Queue error (Postfix cleanup protocol)",
        )));
        assert_eq!(
            queue(&p, &mut txn("a@example.org", &["b@example.com"], MESSAGE)).0,
            protocol
        );
        // Nothing was sent to it after its hello.
        assert_eq!(server.join().unwrap(), b"");
        // An old Postfix without the protocol attribute is fine; no queue_id is not.
        let sock = d.path().join("noid");
        let server = fake_cleanup(&sock, Script::Hello(b"\0"));
        let p = build_with(&[sock.to_str().unwrap()], &[], None).unwrap();
        assert_eq!(
            queue(&p, &mut txn("a@example.org", &["b@example.com"], MESSAGE)).0,
            protocol
        );
        server.join().unwrap();
    }

    #[test]
    fn unreadable_spool_hangs_up_before_the_end_record() {
        let d = TempDir::new("spoolerr");
        let sock = d.path().join("cleanup");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"queue_id\0Q1\0\0").unwrap();
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            all
        });
        let p = build_with(&[sock.to_str().unwrap()], &[], None).unwrap();
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        t.body.spool = unreadable_spool(d.path());
        let (o, _) = queue(&p, &mut t);
        assert_eq!(
            o,
            Outcome::Done(Some(Reply::new(
                451,
                "4.3.0",
                "Queue error (Postfix cleanup unavailable)"
            )))
        );
        let got = server.join().unwrap();
        // cleanup saw the envelope but never an E record: it discards the message.
        assert!(got.starts_with(b"flags\0"));
        assert!(!got.ends_with(&rec_bytes(b'E', "")));
        t.body.spool = None;
    }

    #[test]
    fn sockets_flags_and_errors() {
        let p = build_with(&[], &[], None).unwrap();
        assert_eq!(p.sockets, vec![Endpoint::Unix(DEFAULT_SOCKET.into())]);
        assert_eq!((p.flags, p.connect_timeout), (0, DEFAULT_CONNECT_TIMEOUT));
        // qpsmtpd: a first argument that is not a path is a flag.
        let p = build_with(&["FLAG_FILTER", "FLAG_BCC_OK", "timeout", "3"], &[], None).unwrap();
        assert_eq!(p.sockets, vec![Endpoint::Unix(DEFAULT_SOCKET.into())]);
        assert_eq!((p.flags, p.connect_timeout), (0x12, Duration::from_secs(3)));
        let p = build_with(&["127.0.0.1:10026", "FLAG_HOLD"], &[], None).unwrap();
        assert_eq!(
            p.sockets,
            vec![Endpoint::Tcp("127.0.0.1:10026".parse().unwrap())]
        );
        assert_eq!(p.flags, 4);
        // cleanup_sockets overrides the argument; POSTFIXQUEUE overrides both.
        let file = [("cleanup_sockets", "# list\n/a/cleanup\n[::1]:10026\n")];
        let p = build_with(&["/arg/cleanup"], &file, None).unwrap();
        assert_eq!(
            p.sockets,
            vec![
                Endpoint::Unix("/a/cleanup".into()),
                Endpoint::Tcp("[::1]:10026".parse().unwrap())
            ]
        );
        let p = build_with(&["/arg/cleanup"], &file, Some("/env/cleanup")).unwrap();
        assert_eq!(p.sockets, vec![Endpoint::Unix("/env/cleanup".into())]);
        // Errors.
        let e = build_with(&[], &[("cleanup_sockets", "/ok\nlocalhost:10026\n")], None)
            .err()
            .unwrap();
        assert_eq!((e.file.as_str(), e.line), ("cleanup_sockets", 2));
        assert!(e.reason.contains("neither an absolute socket path"), "{e}");
        for (args, env, needle) in [
            (
                &["relative/cleanup"][..],
                None,
                "neither an absolute socket path",
            ),
            (&["/s", "FLAG_NOPE"], None, "unknown argument 'FLAG_NOPE'"),
            (&["/s", "/t"], None, "unknown argument '/t'"),
            (&["/s", "timeout"], None, "needs a value"),
            (&["/s", "timeout", "x"], None, "timeout must be"),
            (&[], Some("cleanup"), "POSTFIXQUEUE"),
        ] {
            let e = build_with(args, &[], env).err().unwrap();
            assert!(e.reason.contains(needle), "{args:?}: {e}");
            assert!(e.reason.starts_with("queue/postfix-queue: "), "{e}");
        }
    }

    #[test]
    fn record_and_attribute_encoding() {
        assert_eq!(rec_bytes(b'N', ""), b"N\0");
        let mut v = Vec::new();
        put_rec(&mut v, b'N', &[b'x'; 127]);
        assert_eq!(&v[..2], b"N\x7f");
        v.clear();
        put_rec(&mut v, b'N', &[b'x'; 128]);
        assert_eq!(&v[..3], b"N\x80\x01");
        v.clear();
        put_rec(&mut v, b'L', &[b'x'; 2048]);
        assert_eq!(&v[..3], b"L\x80\x10");
        v.clear();
        put_rec(&mut v, b'N', &vec![b'x'; 300_000]);
        // 300000 = 0x493E0: 0x60|0x80, 0x27|0x80, 0x12
        assert_eq!(&v[..4], b"N\xe0\xa7\x12");

        assert_eq!(parse_attrs(b"a\0b\0"), None);
        assert_eq!(parse_attrs(b"a\0b"), None);
        let (attrs, used) = parse_attrs(b"status\x000\0reason\0\0\0more").unwrap();
        assert_eq!(
            attrs,
            vec![
                ("status".to_string(), "0".to_string()),
                ("reason".to_string(), String::new())
            ]
        );
        assert_eq!(used, 18);

        // A CR at a chunk boundary and a bare CR inside a line.
        let mut out = Vec::new();
        let mut c = Content::default();
        c.feed(&mut out, b"ab\r");
        c.feed(&mut out, b"\nc\rd\r\n");
        c.feed(&mut out, b"tail");
        c.finish(&mut out);
        let mut expected = rec_bytes(b'N', "ab");
        expected.extend(rec_bytes(b'N', "c\rd"));
        expected.extend(rec_bytes(b'N', "tail"));
        assert_eq!(out, expected);

        assert!(is_enhanced("5.7.1", 550));
        assert!(!is_enhanced("4.7.1", 550));
        assert!(!is_enhanced("5.7", 550));
        assert!(parse_smtp_reply("250 ok").is_none());
        assert_eq!(
            parse_smtp_reply("450 try later").unwrap(),
            Reply {
                code: 450,
                enhanced: None,
                lines: vec!["try later".into()],
                disconnect: false
            }
        );
    }
}
