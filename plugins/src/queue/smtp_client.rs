//! The SMTP/LMTP client shared by `queue/smtp-forward` and `queue/lmtp`: arguments, a pool of
//! reusable connections, the dialogue (EHLO/LHLO, STARTTLS, XCLIENT, XFORWARD, pipelined
//! MAIL/RCPT/DATA, the dot-stuffed message) and the mapping of the downstream's replies to
//! the outcome our client sees. Everything runs on the worker through
//! [`Stream`](ringsmtpd_plugin_api::net::Stream); every wait has a timeout.
//!
//! The rule (DESIGN.md §6): `Ok` only after the downstream said 250 to the final dot, for
//! every recipient. See the plugins' headers for the arguments and the reply mapping.

use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::args::parse_timeout;
use ringsmtpd_plugin_api::dns::QType;
use ringsmtpd_plugin_api::net::{read_line, Endpoint, Stream, TlsVerify};
use ringsmtpd_plugin_api::{
    blocking, BodyType, Common, CommonArgs, ConfigError, Connection, Cx, Hook, HookSet, Level,
    Outcome, Plugin, PluginInit, Ret, Services, Step, Transaction,
};

/// The longest reply line we accept. RFC 5321 §4.5.3.1.5 says 512 octets with CRLF; real
/// servers send a little more in EHLO lists, so there is room, but a peer that never ends its
/// line cannot grow the buffer without bound.
pub const MAX_REPLY_LINE: usize = 2048;
/// The most lines in one reply (an EHLO list has about 20).
pub const MAX_REPLY_LINES: usize = 100;
/// The most bytes of message handed to the socket in one write.
const CHUNK: usize = 64 * 1024;
/// How long the liveness probe (RSET) of a pooled connection may take: a live downstream
/// answers at once; one that does not is replaced, which is cheaper than a message waiting.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// XCLIENT/XFORWARD command lines are kept under this length (as qpsmtpd does; Postfix's
/// line limit is far larger, but 512 is what RFC 5321 promises).
const MAX_ATTR_LINE: usize = 500;

// ---------------------------------------------------------------------------------------------
// Settings from the plugin line.

/// Which protocol the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Smtp,
    Lmtp,
}

/// STARTTLS policy towards the downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Never (the default): the downstream is trusted local infrastructure.
    Off,
    /// Use STARTTLS when offered; a failed handshake falls back to a new plain connection.
    May(TlsVerify),
    /// Never talk to the downstream without TLS: no STARTTLS offered or a failed handshake
    /// (certificate included) is a temporary failure; nothing is sent in the clear.
    Require(TlsVerify),
}

/// Where the downstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP literal.
    Addr(SocketAddr),
    /// A host name, resolved (A, then AAAA) for each new connection.
    Name(String, u16),
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Everything the plugin line sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub proto: Proto,
    pub target: Target,
    pub xclient: bool,
    pub xforward: bool,
    pub tls: TlsMode,
    /// The name the certificate must carry (default: the host argument).
    pub tls_name: String,
    pub connect_timeout: Duration,
    /// Each reply, and each write of the message.
    pub timeout: Duration,
    /// The reply to the final dot.
    pub data_timeout: Duration,
    /// Idle connections kept per worker (0: a new connection per message).
    pub pool: usize,
    /// How long an idle connection is kept.
    pub pool_idle: Duration,
    /// Messages sent over one connection before it is closed.
    pub pool_uses: u32,
}

impl Settings {
    fn defaults(proto: Proto, target: Target, tls_name: String) -> Settings {
        Settings {
            proto,
            target,
            xclient: false,
            xforward: false,
            tls: TlsMode::Off,
            tls_name,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(25),
            data_timeout: Duration::from_secs(25),
            pool: 4,
            pool_idle: Duration::from_secs(10),
            pool_uses: 100,
        }
    }

    /// `queue/smtp-forward host [port] [flags and options]`.
    pub fn smtp(rest: Vec<&str>) -> Result<Settings, String> {
        let mut it = rest.into_iter().peekable();
        let host = it.next().ok_or("the downstream host is required")?;
        let port = match it.peek() {
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                let p = it.next().unwrap_or_default();
                parse_port(p)?
            }
            _ => 25,
        };
        let (target, name) = parse_host(host, port)?;
        let mut s = Settings::defaults(Proto::Smtp, target, name);
        s.options(&mut it)?;
        Ok(s)
    }

    /// `queue/lmtp host:port|/socket [options]`.
    pub fn lmtp(rest: Vec<&str>) -> Result<Settings, String> {
        let mut it = rest.into_iter().peekable();
        let dest = it
            .next()
            .ok_or("the LMTP server is required: host:port or /path/to/socket")?;
        let (target, name) = if dest.starts_with('/') {
            (Target::Unix(PathBuf::from(dest)), "localhost".to_string())
        } else {
            let (host, port) = dest
                .rsplit_once(':')
                .filter(|(h, p)| !h.is_empty() && !p.is_empty() && !h.ends_with(':'))
                .ok_or_else(|| format!("'{dest}' is neither host:port nor /path/to/socket"))?;
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host);
            parse_host(host, parse_port(port)?)?
        };
        let mut s = Settings::defaults(Proto::Lmtp, target, name);
        s.options(&mut it)?;
        if s.xclient {
            return Err("xclient is an SMTP extension; LMTP servers do not offer it".into());
        }
        Ok(s)
    }

    fn options<'s>(
        &mut self,
        it: &mut std::iter::Peekable<impl Iterator<Item = &'s str>>,
    ) -> Result<(), String> {
        let mut verify: Option<TlsVerify> = None;
        let mut tls: Option<bool> = None; // Some(true): require
        while let Some(arg) = it.next() {
            let mut value =
                |what: &str| -> Result<String, String> { take_value(&mut *it, arg, what) };
            match arg.to_ascii_lowercase().as_str() {
                "xclient" => self.xclient = true,
                "xforward" => self.xforward = true,
                "tls" => {
                    tls = Some(match it.peek().map(|v| v.to_ascii_lowercase()) {
                        Some(v) if v == "may" => {
                            it.next();
                            false
                        }
                        Some(v) if v == "require" => {
                            it.next();
                            true
                        }
                        _ => false,
                    })
                }
                "tls_verify" => {
                    let v = value("none, system or cafile:<path>")?;
                    verify = Some(match v.as_str() {
                        "none" => TlsVerify::None,
                        "system" => TlsVerify::System,
                        _ => match v.strip_prefix("cafile:") {
                            Some(p) if !p.is_empty() => TlsVerify::CaFile(PathBuf::from(p)),
                            _ => {
                                return Err(format!(
                                    "tls_verify must be none, system or cafile:<path>, not '{v}'"
                                ))
                            }
                        },
                    })
                }
                "tls_name" => self.tls_name = value("a host name")?,
                "timeout" => self.timeout = parse_timeout(&value("seconds")?)?,
                "connect_timeout" => self.connect_timeout = parse_timeout(&value("seconds")?)?,
                "data_timeout" => self.data_timeout = parse_timeout(&value("seconds")?)?,
                "pool" => {
                    let v = value("a number")?;
                    self.pool = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n <= 1000)
                        .ok_or_else(|| format!("pool must be 0..1000, not '{v}'"))?;
                }
                "pool_idle" => self.pool_idle = parse_timeout(&value("seconds")?)?,
                "pool_uses" => {
                    let v = value("a number")?;
                    self.pool_uses = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("pool_uses must be at least 1, not '{v}'"))?;
                }
                _ => return Err(format!("unknown argument '{arg}'")),
            }
        }
        self.tls = match (tls, verify) {
            (None, None) => TlsMode::Off,
            (None, Some(_)) => return Err("tls_verify needs `tls may` or `tls require`".into()),
            (Some(false), v) => TlsMode::May(v.unwrap_or(TlsVerify::None)),
            (Some(true), v) => TlsMode::Require(v.unwrap_or(TlsVerify::System)),
        };
        if let TlsMode::May(TlsVerify::CaFile(p)) | TlsMode::Require(TlsVerify::CaFile(p)) =
            &self.tls
        {
            if !p.is_file() {
                return Err(format!("tls_verify cafile: {} is not a file", p.display()));
            }
        }
        Ok(())
    }
}

fn take_value<'s>(
    it: &mut impl Iterator<Item = &'s str>,
    arg: &str,
    what: &str,
) -> Result<String, String> {
    it.next()
        .map(str::to_string)
        .ok_or_else(|| format!("argument '{arg}' needs {what}"))
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("bad port '{p}'"))
}

/// An IP literal or a host name (letters, digits, `-`, `.`, `_`, as qpsmtpd allows).
fn parse_host(host: &str, port: u16) -> Result<(Target, String), String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok((Target::Addr(SocketAddr::new(ip, port)), ip.to_string()));
    }
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok {
        return Err(format!("bad host '{host}'"));
    }
    Ok((
        Target::Name(host.to_ascii_lowercase(), port),
        host.to_ascii_lowercase(),
    ))
}

// ---------------------------------------------------------------------------------------------
// Replies.

/// One reply from the downstream: its code and text lines (without `NNN-`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / 100
    }

    /// The text for our own reply: the downstream's lines, its enhanced status code kept at the
    /// front of the first line and taken off the others (the engine repeats it on each line).
    pub fn text(&self) -> String {
        let enhanced = self.lines.first().and_then(|l| enhanced_code(l));
        let mut out = String::new();
        for (i, line) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
                let stripped = match enhanced {
                    Some(e) => line
                        .strip_prefix(e)
                        .and_then(|r| r.strip_prefix(' '))
                        .unwrap_or(line),
                    None => line,
                };
                out.push_str(stripped);
            } else {
                out.push_str(line);
            }
        }
        // Our own reply must carry the class of the code we give (4.x.x with a 4xx, ...), so
        // a downstream code of another class is not passed on as is.
        if enhanced.is_some_and(|e| !e.starts_with(char::from(b'0' + self.class() as u8))) {
            return format!("{}.0.0 {out}", self.class());
        }
        out
    }

    /// One line for logs.
    pub fn brief(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" / "))
    }
}

/// `x.y.z` at the start of a reply line (RFC 3463), if any.
fn enhanced_code(line: &str) -> Option<&str> {
    let first = line.split(' ').next()?;
    let mut parts = first.split('.');
    let class_ok = matches!(parts.next(), Some("2" | "4" | "5"));
    let num = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    (class_ok && num(parts.next()) && num(parts.next()) && parts.next().is_none()).then_some(first)
}

/// Adds one line (CRLF included) to the reply being read; `Ok(true)` if it was the last.
/// Refuses a malformed line, a code that differs from the first line's, and a reply of more
/// than [`MAX_REPLY_LINES`] lines.
fn add_reply_line(reply: &mut Reply, line: &[u8]) -> Result<bool, String> {
    let (code, last, text) = parse_reply_line(line)?;
    if !reply.lines.is_empty() && code != reply.code {
        return Err("reply lines with different codes".into());
    }
    reply.code = code;
    reply.lines.push(text.to_string());
    if !last && reply.lines.len() >= MAX_REPLY_LINES {
        return Err("reply too long".into());
    }
    Ok(last)
}

/// Reads a downstream's bytes as [`Conn`] does: lines of at most [`MAX_REPLY_LINE`] octets
/// into replies, each one's text as we would pass it on and, read as an EHLO reply, the
/// capabilities; the first error ends the stream. The fuzz target `smtp_reply` (`fuzz/`)
/// feeds it hostile bytes.
pub fn read_replies(mut data: &[u8]) -> Vec<Result<(Reply, String, Caps), String>> {
    let mut out = Vec::new();
    let mut reply = Reply::default();
    while let Some(nl) = memchr::memchr(b'\n', data) {
        if nl + 1 > MAX_REPLY_LINE {
            out.push(Err("reply line too long".into()));
            return out;
        }
        let (line, rest) = data.split_at(nl + 1);
        data = rest;
        match add_reply_line(&mut reply, line) {
            Ok(false) => {}
            Ok(true) => {
                let done = std::mem::take(&mut reply);
                let (text, caps) = (done.text(), Caps::parse(&done));
                out.push(Ok((done, text, caps)));
            }
            Err(e) => {
                out.push(Err(e));
                return out;
            }
        }
    }
    out
}

/// Parses one reply line (CRLF included). Returns (code, last line?, text).
fn parse_reply_line(line: &[u8]) -> Result<(u16, bool, &str), String> {
    let body = line
        .strip_suffix(b"\r\n")
        .ok_or("reply line not ended by CRLF")?;
    if body.len() < 3 || !body[..3].iter().all(u8::is_ascii_digit) {
        return Err("reply does not start with a three-digit code".into());
    }
    let code = u16::from(body[0] - b'0') * 100
        + u16::from(body[1] - b'0') * 10
        + u16::from(body[2] - b'0');
    if !(200..600).contains(&code) {
        return Err(format!("reply code {code} out of range"));
    }
    let (last, text) = match body.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &body[4..]),
        Some(b'-') => (false, &body[4..]),
        Some(_) => return Err("reply code not followed by space or hyphen".into()),
    };
    let text = std::str::from_utf8(text).map_err(|_| "reply text is not UTF-8")?;
    if text.bytes().any(|b| b < 0x20 && b != b'\t') {
        return Err("control character in reply text".into());
    }
    Ok((code, last, text))
}

// ---------------------------------------------------------------------------------------------
// Failures and timeouts.

/// Why a step failed.
#[derive(Debug)]
pub enum Fail {
    /// The downstream could not be reached: 4.4.1.
    Connect(String),
    /// The connection broke, timed out or the peer broke the protocol: 4.4.2.
    Conn(String),
    /// A refusal to a command outside the envelope (greeting, EHLO, XCLIENT, STARTTLS): the
    /// downstream's problem with us, never the message's, so always temporary.
    Setup(String),
    /// TLS required and not possible: 4.7.x.
    Tls(String),
}

impl Fail {
    fn outcome(&self) -> Outcome {
        let text = match self {
            Fail::Connect(e) => format!("4.4.1 Downstream not reachable ({e})"),
            Fail::Conn(e) => format!("4.4.2 Connection to downstream failed ({e})"),
            Fail::Setup(e) => format!("4.3.0 Downstream refused the session ({e})"),
            Fail::Tls(e) => e.clone(),
        };
        Outcome::DenySoft(Some(Cow::Owned(text)))
    }
}

fn io_fail(what: &str, e: io::Error) -> Fail {
    Fail::Conn(format!("{what}: {}", short_io(&e)))
}

fn short_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "connection closed by the downstream".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// Runs `fut` for at most `d` on the worker's timer.
pub async fn timed<T>(
    svc: &dyn Services,
    d: Duration,
    fut: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let mut fut = pin!(fut);
    let mut sleep = svc.sleep(d);
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// One connection.

/// What the downstream's EHLO/LHLO offered.
#[derive(Debug, Default, Clone)]
pub struct Caps {
    pub pipelining: bool,
    pub size: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub starttls: bool,
    /// The attribute names after XCLIENT (uppercased); `None` if not offered.
    pub xclient: Option<Vec<String>>,
    pub xforward: Option<Vec<String>>,
}

impl Caps {
    fn parse(reply: &Reply) -> Caps {
        let mut c = Caps::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            let attrs = || {
                words
                    .clone()
                    .map(|w| w.to_ascii_uppercase())
                    .collect::<Vec<_>>()
            };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = true,
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "DSN" => c.dsn = true,
                "STARTTLS" => c.starttls = true,
                "XCLIENT" => c.xclient = Some(attrs()),
                "XFORWARD" => c.xforward = Some(attrs()),
                _ => {}
            }
        }
        c
    }
}

/// A connection to the downstream, after its greeting and our EHLO/LHLO.
pub struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    pos: usize,
    pub caps: Caps,
    pub tls: bool,
    uses: u32,
    idle_since: Instant,
    /// The XCLIENT attributes in force on this connection, so a reused connection for the
    /// same client needs no new XCLIENT.
    xclient_sent: Option<String>,
}

impl Conn {
    fn new(stream: Box<dyn Stream>) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(1024),
            pos: 0,
            caps: Caps::default(),
            tls: false,
            uses: 0,
            idle_since: Instant::now(),
            xclient_sent: None,
        }
    }

    async fn write(
        &mut self,
        svc: &dyn Services,
        t: Duration,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, Fail> {
        let mut back = Vec::new();
        let stream = &mut self.stream;
        timed(svc, t, async {
            let (res, buf) = stream.write_all(data).await;
            back = buf;
            res
        })
        .await
        .map_err(|e| io_fail("write", e))?;
        Ok(back)
    }

    async fn send(&mut self, svc: &dyn Services, t: Duration, line: &str) -> Result<(), Fail> {
        let mut data = Vec::with_capacity(line.len() + 2);
        data.extend_from_slice(line.as_bytes());
        data.extend_from_slice(b"\r\n");
        self.write(svc, t, data).await.map(|_| ())
    }

    /// Reads one complete reply, strictly: CRLF lines, the same code on every line, at most
    /// [`MAX_REPLY_LINES`] lines of [`MAX_REPLY_LINE`] octets.
    async fn reply(&mut self, svc: &dyn Services, t: Duration) -> Result<Reply, Fail> {
        let Conn {
            stream, buf, pos, ..
        } = self;
        let r = timed(svc, t, async {
            let mut reply = Reply::default();
            loop {
                let end = read_line(&mut **stream, buf, *pos, MAX_REPLY_LINE).await?;
                let last = add_reply_line(&mut reply, &buf[*pos..end])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                *pos = end;
                if last {
                    return Ok(reply);
                }
            }
        })
        .await;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 16 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        r.map_err(|e| io_fail("reading the reply", e))
    }

    /// A command and its reply.
    async fn command(
        &mut self,
        svc: &dyn Services,
        t: Duration,
        line: &str,
    ) -> Result<Reply, Fail> {
        self.send(svc, t, line).await?;
        self.reply(svc, t).await
    }

    /// True if bytes are waiting that no command asked for (a server that answers ahead).
    fn has_unread(&self) -> bool {
        self.pos < self.buf.len()
    }

    /// Best effort QUIT before dropping: the downstream logs a clean end, and we do not wait.
    async fn quit(mut self, svc: &dyn Services) {
        let _ = self.send(svc, Duration::from_secs(1), "QUIT").await;
    }
}

// ---------------------------------------------------------------------------------------------
// The client with its pool.

/// One plugin instance's client: settings and the idle connections of this worker. It is the
/// `queue/smtp-forward` or `queue/lmtp` plugin: its `queue` hook delivers.
pub struct Client {
    common: Common,
    settings: Settings,
    pool: RefCell<Vec<Conn>>,
}

/// Builds `queue/smtp-forward` or `queue/lmtp` from its config line: `settings` reads the
/// arguments besides the common ones ([`Settings::smtp`], [`Settings::lmtp`]).
pub fn plugin(
    init: &PluginInit<'_>,
    settings: fn(Vec<&str>) -> Result<Settings, String>,
) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let settings = settings(rest).map_err(|e| init.error(e))?;
    Ok(Box::new(Client {
        common,
        settings,
        pool: RefCell::new(Vec::new()),
    }))
}

impl Plugin for Client {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(self.deliver(cx, txn))
    }

    /// MAIL and RCPT to the downstream carry RET, ENVID, NOTIFY and ORCPT as received.
    fn carries_dsn(&self) -> bool {
        true
    }
}

/// The result of one delivery attempt on one connection (short-lived: not worth a box).
#[allow(clippy::large_enum_variant)]
enum Attempt {
    /// Decided; the connection may go back to the pool if `Some`.
    Done(Outcome, Option<Conn>),
    /// A reused connection failed before anything of the transaction was accepted: try again
    /// on a fresh one.
    Stale,
}

impl Client {
    /// Delivers the transaction; the outcome for the queue hook.
    pub async fn deliver(&self, cx: &Cx, txn: &Transaction) -> Outcome {
        if txn.recipients.is_empty() {
            return Outcome::deny_soft("4.3.0 Queue error (no recipients)");
        }
        // A pooled connection first; if it turns out dead before the transaction started,
        // a fresh one, transparently.
        while let Some(conn) = self.checkout(cx).await {
            match self.attempt(cx, txn, conn, true).await {
                Attempt::Done(outcome, conn) => return self.finish(cx, outcome, conn).await,
                Attempt::Stale => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("pooled connection was stale, replaced"),
                    );
                }
            }
        }
        let conn = match self.open(cx, true).await {
            Ok(c) => c,
            Err(f) => {
                self.common.log(
                    cx,
                    Level::Warn,
                    format_args!("{} : {f:?}", self.settings.target),
                );
                return f.outcome();
            }
        };
        match self.attempt(cx, txn, conn, false).await {
            Attempt::Done(outcome, conn) => self.finish(cx, outcome, conn).await,
            // Not produced for fresh connections; kept total.
            Attempt::Stale => Outcome::deny_soft("4.4.2 Connection to downstream failed"),
        }
    }

    async fn finish(&self, cx: &Cx, outcome: Outcome, conn: Option<Conn>) -> Outcome {
        if let Some(mut conn) = conn {
            conn.uses += 1;
            conn.idle_since = Instant::now();
            let full = self.pool.borrow().len() >= self.settings.pool;
            if full || conn.uses >= self.settings.pool_uses {
                conn.quit(&*cx.svc).await;
            } else {
                self.pool.borrow_mut().push(conn);
            }
        }
        outcome
    }

    /// An idle connection that answers RSET, or `None`. Expired ones are closed on the way.
    async fn checkout(&self, cx: &Cx) -> Option<Conn> {
        loop {
            let conn = self.pool.borrow_mut().pop()?;
            let mut conn = conn;
            if conn.idle_since.elapsed() >= self.settings.pool_idle {
                conn.quit(&*cx.svc).await;
                // Older ones are older still: close them all.
                let old: Vec<Conn> = self.pool.borrow_mut().drain(..).collect();
                for c in old {
                    c.quit(&*cx.svc).await;
                }
                return None;
            }
            if conn.has_unread() {
                continue; // something arrived while idle (a 421?): not in a known state
            }
            match conn.command(&*cx.svc, PROBE_TIMEOUT, "RSET").await {
                Ok(r) if r.code == 250 => return Some(conn),
                Ok(r) => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("pooled connection: RSET answered {}", r.brief()),
                    );
                }
                Err(f) => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("pooled connection is gone: {f:?}"),
                    );
                }
            }
        }
    }

    async fn endpoints(&self, cx: &Cx) -> Result<Vec<Endpoint>, Fail> {
        match &self.settings.target {
            Target::Addr(a) => Ok(vec![Endpoint::Tcp(*a)]),
            Target::Unix(p) => Ok(vec![Endpoint::Unix(p.clone())]),
            Target::Name(name, port) => {
                if name == "localhost" {
                    return Ok(vec![Endpoint::Tcp(SocketAddr::new(
                        [127, 0, 0, 1].into(),
                        *port,
                    ))]);
                }
                let mut out = Vec::new();
                let mut why = String::from("no address");
                for q in [QType::A, QType::Aaaa] {
                    match cx.svc.dns_query(name, q).await {
                        Ok(answer) => {
                            out.extend(
                                answer
                                    .ips()
                                    .map(|ip| Endpoint::Tcp(SocketAddr::new(ip, *port))),
                            );
                        }
                        Err(e) => why = e.to_string(),
                    }
                    if !out.is_empty() {
                        break;
                    }
                }
                if out.is_empty() {
                    return Err(Fail::Connect(format!("{name}: {why}")));
                }
                Ok(out)
            }
        }
    }

    /// A new connection: connect, greeting, EHLO/LHLO, STARTTLS as configured.
    async fn open(&self, cx: &Cx, allow_tls: bool) -> Result<Conn, Fail> {
        let s = &self.settings;
        let svc = &*cx.svc;
        let mut last = Fail::Connect(format!("{}: no address", s.target));
        for ep in self.endpoints(cx).await? {
            let stream =
                match timed(svc, s.connect_timeout, svc.connect(&ep, s.connect_timeout)).await {
                    Ok(st) => st,
                    Err(e) => {
                        last = Fail::Connect(format!("{ep}: {}", short_io(&e)));
                        continue;
                    }
                };
            let mut conn = Conn::new(stream);
            let greeting = conn.reply(svc, s.timeout).await?;
            if greeting.code != 220 {
                return Err(Fail::Setup(format!("greeting {}", greeting.brief())));
            }
            self.hello(cx, &mut conn, None).await?;
            match &s.tls {
                TlsMode::Off => {}
                TlsMode::Require(verify) => {
                    if !conn.caps.starttls {
                        conn.quit(svc).await;
                        return Err(Fail::Tls(
                            "4.7.4 Downstream does not offer STARTTLS, which is required".into(),
                        ));
                    }
                    conn = self
                        .starttls(cx, conn, verify)
                        .await
                        .map_err(|e| Fail::Tls(format!("4.7.5 TLS to downstream failed ({e})")))?;
                }
                TlsMode::May(verify) => {
                    if allow_tls && conn.caps.starttls {
                        match self.starttls(cx, conn, verify).await {
                            Ok(c) => conn = c,
                            Err(e) => {
                                self.common.log(
                                    cx,
                                    Level::Warn,
                                    format_args!("STARTTLS failed ({e}); retrying without TLS"),
                                );
                                return Box::pin(self.open(cx, false)).await;
                            }
                        }
                    }
                }
            }
            return Ok(conn);
        }
        Err(last)
    }

    /// EHLO (LHLO for LMTP); falls back to HELO if an SMTP server refuses EHLO.
    async fn hello(&self, cx: &Cx, conn: &mut Conn, name: Option<&str>) -> Result<(), Fail> {
        let svc = &*cx.svc;
        let t = self.settings.timeout;
        let me = name.unwrap_or_else(|| svc.me());
        let verb = match self.settings.proto {
            Proto::Smtp => "EHLO",
            Proto::Lmtp => "LHLO",
        };
        let r = conn.command(svc, t, &format!("{verb} {me}")).await?;
        if r.code == 250 {
            conn.caps = Caps::parse(&r);
            return Ok(());
        }
        if self.settings.proto == Proto::Smtp && r.class() == 5 {
            let r2 = conn.command(svc, t, &format!("HELO {me}")).await?;
            if r2.code == 250 {
                conn.caps = Caps::default();
                return Ok(());
            }
            return Err(Fail::Setup(format!("HELO {}", r2.brief())));
        }
        Err(Fail::Setup(format!("{verb} {}", r.brief())))
    }

    /// STARTTLS, the handshake, and EHLO again (RFC 3207 §4.2: forget what was said before).
    async fn starttls(&self, cx: &Cx, mut conn: Conn, verify: &TlsVerify) -> Result<Conn, String> {
        let svc = &*cx.svc;
        let t = self.settings.timeout;
        let r = conn
            .command(svc, t, "STARTTLS")
            .await
            .map_err(|f| format!("{f:?}"))?;
        if r.code != 220 {
            return Err(format!("STARTTLS answered {}", r.brief()));
        }
        if conn.has_unread() {
            // Plain text after the 220 would be taken as if it came over TLS (CVE-2011-0411).
            return Err("data after the STARTTLS reply".into());
        }
        let stream = conn.stream;
        let name = self.settings.tls_name.clone();
        let stream = timed(svc, t, stream.start_tls(name, verify.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = Conn::new(stream);
        conn.tls = true;
        self.hello(cx, &mut conn, None)
            .await
            .map_err(|f| format!("{f:?}"))?;
        Ok(conn)
    }

    /// One delivery on `conn`. `reused`: a failure before anything was accepted is `Stale`.
    async fn attempt(&self, cx: &Cx, txn: &Transaction, mut conn: Conn, reused: bool) -> Attempt {
        let s = &self.settings;
        let svc = &*cx.svc;
        let t = s.timeout;
        macro_rules! early {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(f) if reused && !matches!(f, Fail::Tls(_)) => {
                        self.common
                            .log(cx, Level::Info, format_args!("reused connection: {f:?}"));
                        return Attempt::Stale;
                    }
                    Err(f) => {
                        self.common
                            .log(cx, Level::Warn, format_args!("{}: {f:?}", s.target));
                        return Attempt::Done(f.outcome(), None);
                    }
                }
            };
        }
        if matches!(s.tls, TlsMode::Require(_)) && !conn.tls {
            return Attempt::Done(Fail::Tls("4.7.4 TLS required".into()).outcome(), None);
        }
        if s.xclient {
            early!(self.xclient(cx, &mut conn).await);
        }
        if s.xforward {
            early!(self.xforward(cx, txn, &mut conn).await);
        }
        if let Some(o) = self.envelope_check(&conn, txn) {
            return Attempt::Done(o, Some(conn));
        }

        // The envelope: pipelined when offered (RFC 2920), else one command at a time.
        let mut cmds = vec![mail_command(txn, &conn.caps)];
        cmds.extend(txn.recipients.iter().map(|r| rcpt_command(r, &conn.caps)));
        cmds.push("DATA".to_string());
        let mut replies: Vec<Reply> = Vec::with_capacity(cmds.len());
        if conn.caps.pipelining {
            let mut batch = String::new();
            for c in &cmds {
                batch.push_str(c);
                batch.push_str("\r\n");
            }
            early!(conn.write(svc, t, batch.into_bytes()).await);
            for i in 0..cmds.len() {
                let r = match conn.reply(svc, t).await {
                    Ok(r) => r,
                    Err(_) if i == 0 && reused => return Attempt::Stale,
                    Err(f) => return self.conn_failed(cx, f),
                };
                replies.push(r);
            }
        } else {
            for (i, c) in cmds.iter().enumerate() {
                let is_data = i == cmds.len() - 1;
                if is_data && replies.iter().skip(1).any(|r| r.class() != 2) {
                    break; // a recipient was refused: nothing will be sent
                }
                let r = match conn.command(svc, t, c).await {
                    Ok(r) => r,
                    Err(_) if i == 0 && reused => return Attempt::Stale,
                    Err(f) => return self.conn_failed(cx, f),
                };
                let mail_refused = i == 0 && r.class() != 2;
                replies.push(r);
                if mail_refused {
                    break;
                }
            }
        }
        let mail = &replies[0];
        if reused && mail.code == 421 {
            return Attempt::Stale; // the server is closing this connection: not the message
        }
        let n = txn.recipients.len();
        let rcpt_replies = replies.get(1..(1 + n).min(replies.len())).unwrap_or(&[]);
        let data_reply = replies.get(1 + n);
        let got_354 = data_reply.is_some_and(|r| r.code == 354);
        let verdict = if mail.class() != 2 {
            Some(self.refused(cx, "MAIL", mail))
        } else {
            self.rcpt_verdict(cx, txn, rcpt_replies)
        };
        if let Some(o) = verdict {
            // Nothing may be delivered. After a 354 the only safe abort is to close: a lone
            // dot would deliver an empty message.
            if got_354 {
                return Attempt::Done(o, None);
            }
            let keep = match conn.command(svc, t, "RSET").await {
                Ok(r) if r.code == 250 => Some(conn),
                _ => None,
            };
            return Attempt::Done(o, keep);
        }
        match data_reply {
            Some(r) if r.code == 354 => {}
            Some(r) => {
                let o = self.refused(cx, "DATA", r);
                let keep = match conn.command(svc, t, "RSET").await {
                    Ok(r) if r.code == 250 => Some(conn),
                    _ => None,
                };
                return Attempt::Done(o, keep);
            }
            None => return self.conn_failed(cx, Fail::Conn("no reply to DATA".into())),
        }

        // The message.
        if let Err(f) = self.send_message(cx, txn, &mut conn).await {
            return self.conn_failed(cx, f);
        }
        match s.proto {
            Proto::Smtp => match conn.reply(svc, s.data_timeout).await {
                Ok(r) => {
                    let o = self.final_smtp(cx, &r);
                    let keep = (r.code != 421).then_some(conn);
                    Attempt::Done(o, keep)
                }
                Err(f) => self.conn_failed(cx, f),
            },
            Proto::Lmtp => {
                let mut finals = Vec::with_capacity(n);
                for _ in 0..n {
                    match conn.reply(svc, s.data_timeout).await {
                        Ok(r) => finals.push(r),
                        Err(f) => {
                            if finals.iter().any(|r| r.class() == 2) {
                                self.common.log(cx, Level::Warn, format_args!(
                                    "connection lost after {} of {n} LMTP replies; the client's retry duplicates the message for those accepted",
                                    finals.len()
                                ));
                            }
                            return self.conn_failed(cx, f);
                        }
                    }
                }
                let o = self.final_lmtp(cx, txn, &finals);
                let keep = finals.iter().all(|r| r.code != 421).then_some(conn);
                Attempt::Done(o, keep)
            }
        }
    }

    fn conn_failed(&self, cx: &Cx, f: Fail) -> Attempt {
        self.common.log(
            cx,
            Level::Warn,
            format_args!("{}: {f:?}", self.settings.target),
        );
        Attempt::Done(f.outcome(), None)
    }

    /// What the downstream cannot take, known before MAIL.
    fn envelope_check(&self, conn: &Conn, txn: &Transaction) -> Option<Outcome> {
        let utf8 = txn.mail_params.smtputf8
            || txn.sender.is_utf8()
            || txn.recipients.iter().any(|r| r.addr.is_utf8());
        if utf8 && !conn.caps.smtputf8 {
            // RFC 6531 §3.4: such a message must not go to a server without SMTPUTF8.
            return Some(Outcome::deny("5.6.7 Downstream does not support SMTPUTF8"));
        }
        None
    }

    fn refused(&self, cx: &Cx, what: &str, r: &Reply) -> Outcome {
        self.common.log(
            cx,
            Level::Info,
            format_args!("downstream refused {what}: {}", r.brief()),
        );
        deny_for(r)
    }

    /// Recipients: all accepted → `None` (go on). Otherwise nothing is delivered, see the
    /// plugin docs: any 4xx → DenySoft; else (every refusal permanent) Deny.
    fn rcpt_verdict(&self, cx: &Cx, txn: &Transaction, replies: &[Reply]) -> Option<Outcome> {
        let mut first_temp: Option<(usize, &Reply)> = None;
        let mut first_perm: Option<(usize, &Reply)> = None;
        let mut refused = 0;
        for (i, r) in replies.iter().enumerate() {
            if r.class() == 2 {
                continue;
            }
            refused += 1;
            self.common.log(
                cx,
                Level::Info,
                format_args!(
                    "downstream refused RCPT {}: {}",
                    txn.recipients[i].addr,
                    r.brief()
                ),
            );
            if r.class() == 5 {
                first_perm.get_or_insert((i, r));
            } else {
                first_temp.get_or_insert((i, r));
            }
        }
        if replies.len() < txn.recipients.len() {
            return Some(Outcome::deny_soft(
                "4.4.2 Downstream did not answer every RCPT",
            ));
        }
        if refused == 0 {
            return None;
        }
        let accepted = replies.len() - refused;
        let (i, r) = first_temp.or(first_perm)?;
        let text = prefixed(
            r,
            &format!("<{}>: ", txn.recipients[i].addr.as_str()),
            if accepted > 0 {
                " (not delivered to any recipient)"
            } else {
                ""
            },
        );
        Some(match r.class() {
            5 => Outcome::Deny(Some(Cow::Owned(text))),
            _ => Outcome::DenySoft(Some(Cow::Owned(text))),
        })
    }

    fn final_smtp(&self, cx: &Cx, r: &Reply) -> Outcome {
        match r.class() {
            2 => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("delivered to {}: {}", self.settings.target, r.brief()),
                );
                Outcome::Ok(Some(Cow::Owned(r.text())))
            }
            _ => self.refused(cx, "the message", r),
        }
    }

    /// LMTP (RFC 2033 §4.2): one reply per accepted recipient. All 2xx → OK; any 4xx →
    /// DenySoft (the client retries for all; those that got 250 get it twice); otherwise
    /// Deny, saying which recipients have it.
    fn final_lmtp(&self, cx: &Cx, txn: &Transaction, finals: &[Reply]) -> Outcome {
        for (r, rcpt) in finals.iter().zip(&txn.recipients) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("LMTP {}: {}", rcpt.addr, r.brief()),
            );
        }
        let ok = finals.iter().filter(|r| r.class() == 2).count();
        if ok == finals.len() {
            let last = finals.last().map(Reply::text).unwrap_or_default();
            return Outcome::Ok(Some(Cow::Owned(last)));
        }
        let pick = |class: u16| {
            finals
                .iter()
                .zip(&txn.recipients)
                .find(|(r, _)| r.class() == class)
        };
        let note = if ok > 0 {
            format!(" (delivered to {ok} of {} recipients)", finals.len())
        } else {
            String::new()
        };
        if let Some((r, rcpt)) = pick(4) {
            let text = prefixed(r, &format!("<{}>: ", rcpt.addr.as_str()), &note);
            return Outcome::DenySoft(Some(Cow::Owned(text)));
        }
        match finals
            .iter()
            .zip(&txn.recipients)
            .find(|(r, _)| r.class() != 2)
        {
            Some((r, rcpt)) if r.class() == 5 => {
                let text = prefixed(r, &format!("<{}>: ", rcpt.addr.as_str()), &note);
                Outcome::Deny(Some(Cow::Owned(text)))
            }
            _ => Outcome::deny_soft("4.4.2 Downstream gave an unexpected reply"),
        }
    }

    /// XCLIENT (Postfix XCLIENT_README): the original client's attributes, then a new
    /// greeting and EHLO with the client's HELO name. Sent only when they differ from what
    /// this connection already carries.
    async fn xclient(&self, cx: &Cx, conn: &mut Conn) -> Result<(), Fail> {
        let svc = &*cx.svc;
        let t = self.settings.timeout;
        let Some(offered) = conn.caps.xclient.clone() else {
            // As qpsmtpd: asked for XCLIENT and the downstream does not offer it. The
            // downstream's policy would see us as the client: not what the admin configured.
            return Err(Fail::Setup(
                "XCLIENT asked for but not offered (4.3.5)".into(),
            ));
        };
        let attrs = xclient_attrs(cx, &offered);
        let key = attrs.join(" ");
        if conn.xclient_sent.as_deref() == Some(key.as_str()) {
            return Ok(());
        }
        for line in split_attrs("XCLIENT", &attrs) {
            let r = conn.command(svc, t, &line).await?;
            if r.code != 220 {
                return Err(Fail::Setup(format!("XCLIENT {}", r.brief())));
            }
        }
        let helo = cx.conn.hello_host();
        let helo = if is_helo_token(helo) { helo } else { svc.me() };
        self.hello(cx, conn, Some(helo)).await?;
        conn.xclient_sent = Some(key);
        Ok(())
    }

    /// XFORWARD (Postfix XFORWARD_README): the client's attributes for the downstream's logs,
    /// for the next transaction only. Skipped (logged) if not offered.
    async fn xforward(&self, cx: &Cx, txn: &Transaction, conn: &mut Conn) -> Result<(), Fail> {
        let Some(offered) = conn.caps.xforward.clone() else {
            self.common.log(
                cx,
                Level::Debug,
                format_args!("downstream does not offer XFORWARD"),
            );
            return Ok(());
        };
        let attrs = xforward_attrs(cx, txn, &offered);
        for line in split_attrs("XFORWARD", &attrs) {
            let r = conn.command(&*cx.svc, self.settings.timeout, &line).await?;
            if r.code != 250 {
                return Err(Fail::Setup(format!("XFORWARD {}", r.brief())));
            }
        }
        Ok(())
    }

    /// The added headers, then the message, dot-stuffed, CRLF, and the final dot.
    async fn send_message(&self, cx: &Cx, txn: &Transaction, conn: &mut Conn) -> Result<(), Fail> {
        let svc = &*cx.svc;
        let t = self.settings.timeout;
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        stuffer.push(txn.added_headers.as_bytes(), &mut out);
        match &txn.body.spool {
            None => {
                for chunk in txn.body.mem.chunks(CHUNK) {
                    stuffer.push(chunk, &mut out);
                    if out.len() >= CHUNK {
                        out = conn.write(svc, t, out).await?;
                        out.clear();
                    }
                }
            }
            Some(spool) => {
                let file = spool
                    .file
                    .try_clone()
                    .map_err(|e| Fail::Setup(format!("spool file: {e}")))?;
                let mut file = Some(file);
                let mut buf = vec![0u8; CHUNK];
                let mut offset = 0u64;
                loop {
                    let f = file
                        .take()
                        .ok_or_else(|| Fail::Setup("spool file lost".into()))?;
                    let job = blocking(svc, move || {
                        let mut b = buf;
                        let r = loop {
                            match f.read_at(&mut b, offset) {
                                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                                r => break r,
                            }
                        };
                        (f, b, r)
                    });
                    let Some((f, b, r)) = job.await else {
                        return Err(Fail::Setup("spool read job failed".into()));
                    };
                    file = Some(f);
                    buf = b;
                    let got = r.map_err(|e| Fail::Setup(format!("reading the spool file: {e}")))?;
                    if got == 0 {
                        break;
                    }
                    offset += got as u64;
                    stuffer.push(&buf[..got], &mut out);
                    if out.len() >= CHUNK {
                        out = conn.write(svc, t, out).await?;
                        out.clear();
                    }
                }
            }
        }
        stuffer.finish(&mut out);
        conn.write(svc, t, out).await?;
        Ok(())
    }
}

/// Deny/DenySoft with the downstream's text, by its class (anything not 5xx is temporary).
fn deny_for(r: &Reply) -> Outcome {
    let text = Some(Cow::Owned(r.text()));
    match r.class() {
        5 => Outcome::Deny(text),
        _ => Outcome::DenySoft(text),
    }
}

/// The reply's text with `prefix` after its enhanced code and `suffix` on its first line.
fn prefixed(r: &Reply, prefix: &str, suffix: &str) -> String {
    let text = r.text();
    let (first, rest) = match text.split_once('\n') {
        Some((f, rest)) => (f.to_string(), Some(rest.to_string())),
        None => (text.clone(), None),
    };
    let mut out = match enhanced_code(&first) {
        Some(e) => format!("{e} {prefix}{}{suffix}", first[e.len()..].trim_start()),
        None => format!("{prefix}{first}{suffix}"),
    };
    if let Some(rest) = rest {
        out.push('\n');
        out.push_str(&rest);
    }
    out
}

/// `MAIL FROM:<..>` with the parameters the downstream understands.
fn mail_command(txn: &Transaction, caps: &Caps) -> String {
    let mut c = format!("MAIL FROM:<{}>", txn.sender.as_str());
    let p = &txn.mail_params;
    if caps.size {
        c.push_str(&format!(" SIZE={}", txn.message_len()));
    }
    if caps.eightbitmime && p.body == BodyType::EightBitMime {
        c.push_str(" BODY=8BITMIME");
    }
    if caps.smtputf8 && p.smtputf8 {
        c.push_str(" SMTPUTF8");
    }
    if caps.dsn {
        match p.ret {
            Some(Ret::Full) => c.push_str(" RET=FULL"),
            Some(Ret::Hdrs) => c.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &p.envid {
            c.push_str(" ENVID=");
            c.push_str(envid);
        }
    }
    c
}

/// `RCPT TO:<..>` with DSN parameters when the downstream offers DSN.
fn rcpt_command(r: &ringsmtpd_plugin_api::Recipient, caps: &Caps) -> String {
    let mut c = format!("RCPT TO:<{}>", r.addr.as_str());
    if caps.dsn {
        for w in r.params.words() {
            c.push(' ');
            c.push_str(&w);
        }
    }
    c
}

/// xtext (RFC 3461 §4): `+` and `=` and anything outside `!`..`~` as `+HH`.
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn addr_attr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("IPV6:{v6}"),
        },
    }
}

fn is_helo_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The client's NAME, ADDR and PORT, those `has` says were offered: the first attributes of
/// XCLIENT and XFORWARD alike.
fn peer_attrs(c: &Connection, has: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v = Vec::new();
    if has("NAME") {
        let name = c
            .remote_host
            .as_deref()
            .filter(|h| is_helo_token(h))
            .unwrap_or("[UNAVAILABLE]");
        v.push(format!("NAME={}", xtext(name)));
    }
    if has("ADDR") {
        v.push(format!("ADDR={}", xtext(&addr_attr(c.remote.ip()))));
    }
    if has("PORT") {
        v.push(format!("PORT={}", c.remote.port()));
    }
    v
}

/// `PROTO=ESMTP` or `PROTO=SMTP`, once the client said hello.
fn proto_attr(c: &Connection) -> Option<String> {
    let proto = if c.is_esmtp() { "ESMTP" } else { "SMTP" };
    c.hello.is_some().then(|| format!("PROTO={proto}"))
}

/// XCLIENT attributes the downstream offered, from our connection (Postfix XCLIENT_README).
pub fn xclient_attrs(cx: &Cx, offered: &[String]) -> Vec<String> {
    let c = &cx.conn;
    let has = |a: &str| offered.iter().any(|o| o == a);
    let mut v = peer_attrs(c, has);
    if has("HELO") {
        let helo = c.hello_host();
        let helo = if is_helo_token(helo) {
            helo
        } else {
            "[UNAVAILABLE]"
        };
        v.push(format!("HELO={}", xtext(helo)));
    }
    if has("PROTO") {
        v.extend(proto_attr(c));
    }
    if has("LOGIN") {
        if let Some(auth) = &c.auth {
            v.push(format!("LOGIN={}", xtext(&auth.user)));
        }
    }
    if has("DESTADDR") {
        v.push(format!("DESTADDR={}", xtext(&addr_attr(c.local.ip()))));
    }
    if has("DESTPORT") {
        v.push(format!("DESTPORT={}", c.local.port()));
    }
    v
}

/// XFORWARD attributes the downstream offered (Postfix XFORWARD_README).
pub fn xforward_attrs(cx: &Cx, txn: &Transaction, offered: &[String]) -> Vec<String> {
    let c = &cx.conn;
    let has = |a: &str| offered.iter().any(|o| o == a);
    let mut v = peer_attrs(c, has);
    if has("PROTO") {
        v.extend(proto_attr(c));
    }
    if has("HELO") && is_helo_token(c.hello_host()) {
        v.push(format!("HELO={}", xtext(c.hello_host())));
    }
    if has("IDENT") && !txn.id.is_empty() {
        v.push(format!("IDENT={}", xtext(&txn.id)));
    }
    if has("SOURCE") {
        let local = c.remote.ip().is_loopback();
        v.push(format!("SOURCE={}", if local { "LOCAL" } else { "REMOTE" }));
    }
    v
}

/// `VERB a=1 b=2 ...` lines of at most [`MAX_ATTR_LINE`] octets.
fn split_attrs(verb: &str, attrs: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::from(verb);
    for a in attrs {
        if cur.len() > verb.len() && cur.len() + 1 + a.len() > MAX_ATTR_LINE {
            lines.push(std::mem::replace(&mut cur, String::from(verb)));
        }
        cur.push(' ');
        cur.push_str(a);
    }
    if cur.len() > verb.len() {
        lines.push(cur);
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Dot-stuffing.

/// Turns a message into DATA's payload (RFC 5321 §4.5.2): a `.` doubled at the start of each
/// line, LF alone made CRLF, a final CRLF added if missing, then `.` CRLF. Works on chunks.
#[derive(Debug)]
pub struct DotStuffer {
    at_line_start: bool,
    prev_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer {
            at_line_start: true,
            prev_cr: false,
        }
    }
}

impl DotStuffer {
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(&first) = input.first() {
            if self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    let line = &input[..i];
                    out.extend_from_slice(line);
                    let cr = match line.last() {
                        Some(&b) => b == b'\r',
                        None => self.prev_cr,
                    };
                    if !cr {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    self.at_line_start = true;
                    self.prev_cr = false;
                    input = &input[i + 1..];
                }
                None => {
                    out.extend_from_slice(input);
                    self.prev_cr = input.last() == Some(&b'\r');
                    self.at_line_start = false;
                    input = &[];
                }
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            if !self.prev_cr {
                out.push(b'\r');
            }
            out.push(b'\n');
        }
        out.extend_from_slice(b".\r\n");
        self.at_line_start = true;
        self.prev_cr = false;
    }
}

/// Test helpers shared by the smtp-forward and lmtp tests: services with real timers and
/// non-blocking sockets, and a scripted SMTP/LMTP server on std threads.
#[cfg(test)]
pub(crate) mod fake {
    use std::cell::RefCell;
    use std::future::Future;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::pin::Pin;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};
    use std::task::Poll;
    use std::time::{Duration, Instant};

    use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
    use ringsmtpd_plugin_api::testing;
    use ringsmtpd_plugin_api::{
        Connection, Cx, Hello, HelloKind, Level, Plugin, Services, TlsInfo, Transaction,
    };

    /// Services with a real clock: `sleep` waits, sockets are non-blocking and polled.
    #[derive(Default)]
    pub struct TestSvc {
        pub logs: RefCell<Vec<String>>,
    }

    impl TestSvc {
        pub fn logged(&self, needle: &str) -> bool {
            self.logs.borrow().iter().any(|l| l.contains(needle))
        }
    }

    impl Services for TestSvc {
        fn me(&self) -> &str {
            "mx.example.test"
        }
        fn log(&self, level: Level, _conn: u64, _source: &str, msg: std::fmt::Arguments<'_>) {
            self.logs.borrow_mut().push(format!("{level:?} {msg}"));
        }
        fn log_enabled(&self, _level: Level) -> bool {
            true
        }
        fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
            std::thread::spawn(job);
        }
        fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
            let deadline = Instant::now() + dur;
            Box::pin(std::future::poll_fn(move |cx| {
                if Instant::now() >= deadline {
                    return Poll::Ready(());
                }
                std::thread::sleep(Duration::from_micros(200));
                cx.waker().wake_by_ref();
                Poll::Pending
            }))
        }
        fn connect(&self, to: &Endpoint, timeout: Duration) -> ConnectFuture {
            let s: std::io::Result<Box<dyn Stream>> = match to {
                Endpoint::Tcp(a) => TcpStream::connect_timeout(a, timeout).and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(Box::new(PollStream {
                        sock: Sock::Tcp(s),
                        tls: false,
                    }) as Box<dyn Stream>)
                }),
                Endpoint::Unix(p) => std::os::unix::net::UnixStream::connect(p).and_then(|s| {
                    s.set_nonblocking(true)?;
                    Ok(Box::new(PollStream {
                        sock: Sock::Unix(s),
                        tls: false,
                    }) as Box<dyn Stream>)
                }),
            };
            Box::pin(std::future::ready(s))
        }
    }

    enum Sock {
        Tcp(TcpStream),
        Unix(std::os::unix::net::UnixStream),
    }

    impl Sock {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            match self {
                Sock::Tcp(s) => s.read(b),
                Sock::Unix(s) => s.read(b),
            }
        }
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            match self {
                Sock::Tcp(s) => s.write(b),
                Sock::Unix(s) => s.write(b),
            }
        }
    }

    /// A non-blocking socket polled by the test executor. `start_tls` pretends: the bytes stay
    /// plain, `tls()` reports TLS (the real handshake is tested in the server's net.rs).
    pub struct PollStream {
        sock: Sock,
        tls: bool,
    }

    impl Stream for PollStream {
        fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize> {
            let mut buf = Some(buf);
            Box::pin(std::future::poll_fn(move |cx| {
                let mut b = buf.take().unwrap_or_default();
                let len = b.len();
                b.resize(len + 4096, 0);
                match self.sock.read(&mut b[len..]) {
                    Ok(n) => {
                        b.truncate(len + n);
                        Poll::Ready((Ok(n), b))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        b.truncate(len);
                        buf = Some(b);
                        std::thread::sleep(Duration::from_micros(200));
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Err(e) => {
                        b.truncate(len);
                        Poll::Ready((Err(e), b))
                    }
                }
            }))
        }
        fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
            let mut done = 0;
            let mut buf = Some(buf);
            Box::pin(std::future::poll_fn(move |cx| {
                let b = buf.take().unwrap_or_default();
                while done < b.len() {
                    match self.sock.write(&b[done..]) {
                        Ok(0) => {
                            return Poll::Ready((Err(std::io::ErrorKind::WriteZero.into()), b))
                        }
                        Ok(n) => done += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            buf = Some(b);
                            std::thread::sleep(Duration::from_micros(200));
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err(e) => return Poll::Ready((Err(e), b)),
                    }
                }
                Poll::Ready((Ok(()), b))
            }))
        }
        fn start_tls(
            self: Box<Self>,
            _server_name: String,
            _verify: TlsVerify,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Stream>>>>> {
            Box::pin(std::future::ready(Ok(Box::new(PollStream {
                sock: self.sock,
                tls: true,
            }) as Box<dyn Stream>)))
        }
        fn tls(&self) -> Option<TlsInfo> {
            self.tls.then(|| TlsInfo {
                protocol: "TLSv1.3".into(),
                cipher: "FAKE".into(),
            })
        }
    }

    /// How the fake server answers.
    #[derive(Clone)]
    pub struct Script {
        pub lmtp: bool,
        pub greeting: String,
        pub caps: Vec<String>,
        /// Replaces the EHLO/LHLO reply (e.g. "502 5.5.1 no").
        pub ehlo: Option<String>,
        pub mail: String,
        /// Replies to RCPT by address; others get 250.
        pub rcpt: Vec<(String, String)>,
        pub data: String,
        /// After the dot: SMTP uses the first; LMTP one per accepted recipient (250 if short).
        pub dot: Vec<String>,
        /// Close the connection after this many message bytes.
        pub drop_in_data: Option<usize>,
        /// LMTP: close after this many per-recipient replies.
        pub drop_after_replies: Option<usize>,
        pub dot_delay: Duration,
        /// Wait before answering MAIL: lets a pipelined batch arrive, to see it was pipelined.
        pub mail_delay: Duration,
        pub xclient: String,
        /// Close the connection after each message.
        pub close_after_each: bool,
    }

    impl Script {
        pub fn smtp() -> Script {
            Script {
                lmtp: false,
                greeting: "220 fake.test ESMTP".into(),
                caps: vec![
                    "PIPELINING".into(),
                    "SIZE 10240000".into(),
                    "8BITMIME".into(),
                ],
                ehlo: None,
                mail: "250 2.1.0 Ok".into(),
                rcpt: Vec::new(),
                data: "354 End data with <CR><LF>.<CR><LF>".into(),
                dot: vec!["250 2.0.0 Ok: queued as ABC123".into()],
                drop_in_data: None,
                drop_after_replies: None,
                dot_delay: Duration::ZERO,
                mail_delay: Duration::from_millis(50),
                xclient: "220 fake.test ESMTP again".into(),
                close_after_each: false,
            }
        }
        pub fn lmtp() -> Script {
            Script {
                lmtp: true,
                caps: vec!["PIPELINING".into(), "ENHANCEDSTATUSCODES".into()],
                dot: Vec::new(),
                ..Script::smtp()
            }
        }
    }

    /// What the fake server saw.
    #[derive(Default, Debug)]
    pub struct Seen {
        pub conns: usize,
        /// Every command line, in order, across connections.
        pub commands: Vec<String>,
        /// Each message's DATA payload as received (still dot-stuffed, with the final dot).
        pub messages: Vec<Vec<u8>>,
        /// For each MAIL: whether the DATA command had already arrived before its reply.
        pub pipelined: Vec<bool>,
    }

    pub struct FakeServer {
        pub addr: SocketAddr,
        pub seen: Arc<Mutex<Seen>>,
    }

    impl FakeServer {
        pub fn start(script: Script) -> FakeServer {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Seen::default()));
            let s2 = seen.clone();
            std::thread::spawn(move || {
                for sock in listener.incoming() {
                    let Ok(sock) = sock else { return };
                    s2.lock().unwrap().conns += 1;
                    let (script, seen) = (script.clone(), s2.clone());
                    std::thread::spawn(move || serve(sock, &script, &seen));
                }
            });
            FakeServer { addr, seen }
        }

        pub fn commands(&self) -> Vec<String> {
            self.seen.lock().unwrap().commands.clone()
        }
        pub fn messages(&self) -> Vec<Vec<u8>> {
            self.seen.lock().unwrap().messages.clone()
        }
        pub fn conns(&self) -> usize {
            self.seen.lock().unwrap().conns
        }
        pub fn pipelined(&self) -> Vec<bool> {
            self.seen.lock().unwrap().pipelined.clone()
        }
    }

    fn serve(sock: TcpStream, sc: &Script, seen: &Mutex<Seen>) {
        let _ = sock.set_read_timeout(Some(Duration::from_secs(20)));
        let mut w = sock.try_clone().unwrap();
        let mut r = BufReader::new(sock);
        let send = |w: &mut TcpStream, text: &str| {
            let _ = w.write_all(text.replace('\n', "\r\n").as_bytes());
            let _ = w.write_all(b"\r\n");
        };
        send(&mut w, &sc.greeting);
        let mut accepted = 0usize;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let cmd = line.trim_end_matches(['\r', '\n']).to_string();
            seen.lock().unwrap().commands.push(cmd.clone());
            let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" | "LHLO" | "HELO" => {
                    if let Some(e) = &sc.ehlo {
                        if verb != "HELO" {
                            send(&mut w, e);
                            continue;
                        }
                    }
                    let mut lines = vec!["fake.test".to_string()];
                    if verb != "HELO" {
                        lines.extend(sc.caps.iter().cloned());
                    }
                    let n = lines.len();
                    let text: Vec<String> = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                        .collect();
                    send(&mut w, &text.join("\n"));
                }
                "MAIL" => {
                    accepted = 0;
                    std::thread::sleep(sc.mail_delay);
                    let mut peek = [0u8; 4096];
                    let _ = r.get_ref().set_nonblocking(true);
                    let n = r.get_ref().peek(&mut peek).unwrap_or(0);
                    let _ = r.get_ref().set_nonblocking(false);
                    let ahead = [r.buffer(), &peek[..n]].concat();
                    let piped = String::from_utf8_lossy(&ahead).contains("DATA\r\n");
                    seen.lock().unwrap().pipelined.push(piped);
                    send(&mut w, &sc.mail);
                }
                "RCPT" => {
                    let addr = cmd.split(['<', '>']).nth(1).unwrap_or("").to_string();
                    let reply = sc
                        .rcpt
                        .iter()
                        .find(|(a, _)| *a == addr)
                        .map_or("250 2.1.5 Ok".to_string(), |(_, r)| r.clone());
                    if reply.starts_with('2') {
                        accepted += 1;
                    }
                    send(&mut w, &reply);
                }
                "DATA" => {
                    if accepted == 0 {
                        send(&mut w, "554 5.5.1 Error: no valid recipients");
                        continue;
                    }
                    send(&mut w, &sc.data);
                    if !sc.data.starts_with("354") {
                        continue;
                    }
                    let mut msg = Vec::new();
                    loop {
                        let mut l = Vec::new();
                        match r.read_until(b'\n', &mut l) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        msg.extend_from_slice(&l);
                        if sc.drop_in_data.is_some_and(|n| msg.len() >= n) {
                            return; // drops both halves of the socket
                        }
                        if l == b".\r\n" {
                            break;
                        }
                    }
                    seen.lock().unwrap().messages.push(msg);
                    std::thread::sleep(sc.dot_delay);
                    if sc.lmtp {
                        for i in 0..accepted {
                            if sc.drop_after_replies == Some(i) {
                                return;
                            }
                            let reply = sc
                                .dot
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| "250 2.0.0 Ok".into());
                            send(&mut w, &reply);
                        }
                    } else {
                        send(&mut w, &sc.dot[0]);
                    }
                    if sc.close_after_each {
                        return;
                    }
                }
                "RSET" | "NOOP" | "XFORWARD" => send(&mut w, "250 2.0.0 Ok"),
                "STARTTLS" => send(&mut w, "220 2.0.0 Ready to start TLS"),
                "XCLIENT" => send(&mut w, &sc.xclient),
                "QUIT" => {
                    send(&mut w, "221 2.0.0 Bye");
                    return;
                }
                _ => send(&mut w, "502 5.5.2 Error: command not recognized"),
            }
        }
    }

    /// A context for a client 192.0.2.1:4242 that said `EHLO client.example`, with `svc`.
    pub fn context(svc: &Rc<TestSvc>) -> Cx {
        let mut conn = Connection::new(
            7,
            "192.0.2.1:4242".parse().unwrap(),
            "198.51.100.1:25".parse().unwrap(),
        );
        conn.hello = Some(Hello {
            kind: HelloKind::Ehlo,
            host: "client.example".into(),
        });
        Cx::new(conn, svc.clone())
    }

    /// A transaction from a@example.org to `rcpts` with this body and one added header.
    pub fn txn(rcpts: &[&str], body: &[u8]) -> Transaction {
        let mut t = testing::txn_from("<a@example.org>");
        t.recipients = rcpts
            .iter()
            .map(|r| testing::rcpt(&format!("<{r}>")))
            .collect();
        t.id = "7.1".into();
        t.added_headers = "Received: from client.example\r\n".into();
        t.body.mem = body.to_vec();
        t.body.len = body.len() as u64;
        t
    }

    /// Runs the queue hook.
    pub fn queue(
        p: &dyn Plugin,
        cx: &mut Cx,
        t: &mut Transaction,
    ) -> ringsmtpd_plugin_api::Outcome {
        testing::run(p.queue(cx, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(data: &[u8]) -> Result<Vec<(u16, bool, String)>, String> {
        data.split_inclusive(|&b| b == b'\n')
            .map(|l| parse_reply_line(l).map(|(c, last, t)| (c, last, t.to_string())))
            .collect()
    }

    #[test]
    fn reply_lines_are_parsed_strictly() {
        let ok = parse_all(b"250-mx.test\r\n250-PIPELINING\r\n250 SIZE 100\r\n").unwrap();
        assert_eq!(ok[0], (250, false, "mx.test".into()));
        assert_eq!(ok[2], (250, true, "SIZE 100".into()));
        assert_eq!(parse_reply_line(b"354\r\n").unwrap(), (354, true, ""));
        for bad in [
            &b"250 ok\n"[..],
            b"25 ok\r\n",
            b"2x0 ok\r\n",
            b"250_ok\r\n",
            b"199 ok\r\n",
            b"600 ok\r\n",
            b"250 a\x01b\r\n",
            b"250 \xff\r\n",
        ] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reply_text_keeps_one_enhanced_code_of_the_right_class() {
        let r = Reply {
            code: 250,
            lines: vec!["2.0.0 first".into(), "2.0.0 queued as X".into()],
        };
        assert_eq!(r.text(), "2.0.0 first\nqueued as X");
        let odd = Reply {
            code: 450,
            lines: vec!["5.1.1 mismatched".into()],
        };
        assert_eq!(odd.text(), "4.0.0 5.1.1 mismatched");
        let plain = Reply {
            code: 550,
            lines: vec!["no such user".into()],
        };
        assert_eq!(plain.text(), "no such user");
        assert_eq!(
            prefixed(&odd, "<x@y>: ", " (z)"),
            "4.0.0 <x@y>: 5.1.1 mismatched (z)"
        );
        assert_eq!(prefixed(&plain, "<x@y>: ", ""), "<x@y>: no such user");
    }

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(
            stuff(&[b".leading\r\n..two\r\nmid.dle\r\n.\r\n"]),
            b"..leading\r\n...two\r\nmid.dle\r\n..\r\n.\r\n"
        );
        // LF alone becomes CRLF; a missing final line end is added.
        assert_eq!(stuff(&[b"a\nb"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[b""]), b".\r\n");
        // Chunk boundaries: CR|LF split, a dot right after a boundary newline, a trailing CR.
        assert_eq!(
            stuff(&[b"x\r", b"\n", b".y\r\n.", b"z\r"]),
            b"x\r\n..y\r\n..z\r\n.\r\n"
        );
        assert_eq!(stuff(&[b"a\r\n", b"\n"]), b"a\r\n\r\n.\r\n");
    }

    #[test]
    fn xtext_and_attribute_lines() {
        assert_eq!(xtext("a+b=c d\u{e9}"), "a+2Bb+3Dc+20d+C3+A9");
        let attrs: Vec<String> = (0..60).map(|i| format!("NAME{i}=value")).collect();
        let lines = split_attrs("XCLIENT", &attrs);
        assert!(lines.len() > 1);
        assert!(lines
            .iter()
            .all(|l| l.len() <= MAX_ATTR_LINE && l.starts_with("XCLIENT ")));
        assert_eq!(
            lines
                .iter()
                .map(|l| l.split(' ').count() - 1)
                .sum::<usize>(),
            60
        );
        assert!(split_attrs("XFORWARD", &[]).is_empty());
        assert_eq!(
            addr_attr("2001:db8::1".parse().unwrap()),
            "IPV6:2001:db8::1"
        );
        assert_eq!(addr_attr("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1");
    }

    /// The settings `read` takes from `args` once the common arguments are out.
    fn settings(
        read: fn(Vec<&str>) -> Result<Settings, String>,
        args: &[&str],
    ) -> Result<Settings, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        read(CommonArgs::extract(&args, CommonArgs::DEFAULT)?.1)
    }

    fn smtp(args: &[&str]) -> Result<Settings, String> {
        settings(Settings::smtp, args)
    }

    fn lmtp(args: &[&str]) -> Result<Settings, String> {
        settings(Settings::lmtp, args)
    }

    #[test]
    fn smtp_forward_argument_forms() {
        let s = smtp(&["10.2.2.2"]).unwrap();
        assert_eq!(s.target, Target::Addr("10.2.2.2:25".parse().unwrap()));
        assert!(!s.xclient && s.tls == TlsMode::Off && s.pool == 4);
        let s = smtp(&["10.2.2.2", "9025", "xclient"]).unwrap();
        assert_eq!(s.target, Target::Addr("10.2.2.2:9025".parse().unwrap()));
        assert!(s.xclient);
        let s = smtp(&["Mail.Example.COM", "xforward", "loglevel", "7"]).unwrap();
        assert_eq!(s.target, Target::Name("mail.example.com".into(), 25));
        assert!(s.xforward);
        let s = smtp(&["::1", "2525"]).unwrap();
        assert_eq!(s.target, Target::Addr("[::1]:2525".parse().unwrap()));
        assert_eq!(
            smtp(&["h", "tls"]).unwrap().tls,
            TlsMode::May(TlsVerify::None)
        );
        assert_eq!(
            smtp(&["h", "tls", "require"]).unwrap().tls,
            TlsMode::Require(TlsVerify::System)
        );
        assert_eq!(
            smtp(&["h", "tls", "may", "tls_verify", "system"])
                .unwrap()
                .tls,
            TlsMode::May(TlsVerify::System)
        );
        let s = smtp(&[
            "h",
            "tls",
            "require",
            "tls_verify",
            "cafile:/etc/hostname",
            "tls_name",
            "mx.x",
        ])
        .unwrap();
        assert_eq!(
            s.tls,
            TlsMode::Require(TlsVerify::CaFile("/etc/hostname".into()))
        );
        assert_eq!(s.tls_name, "mx.x");
        let s = smtp(&[
            "h",
            "timeout",
            "5",
            "connect_timeout",
            "2",
            "data_timeout",
            "60",
            "pool",
            "0",
            "pool_idle",
            "3",
            "pool_uses",
            "7",
        ])
        .unwrap();
        assert_eq!(
            (
                s.timeout,
                s.connect_timeout,
                s.data_timeout,
                s.pool,
                s.pool_idle,
                s.pool_uses
            ),
            (
                Duration::from_secs(5),
                Duration::from_secs(2),
                Duration::from_secs(60),
                0,
                Duration::from_secs(3),
                7
            )
        );
    }

    #[test]
    fn smtp_forward_bad_arguments() {
        for (args, want) in [
            (&[][..], "host is required"),
            (&["bad/host"], "bad host"),
            (&["h", "0"], "bad port"),
            (&["h", "70000"], "bad port"),
            (&["h", "25", "frobnicate"], "unknown argument 'frobnicate'"),
            (&["h", "tls_verify", "none"], "needs `tls may`"),
            (
                &["h", "tls", "tls_verify", "sometimes"],
                "tls_verify must be",
            ),
            (&["h", "tls", "tls_verify", "cafile:"], "tls_verify must be"),
            (
                &["h", "tls", "tls_verify", "cafile:/nonexistent/ca.pem"],
                "is not a file",
            ),
            (&["h", "timeout"], "needs seconds"),
            (&["h", "timeout", "0"], "seconds between 0 and 3600"),
            (&["h", "pool", "x"], "pool must be"),
            (&["h", "pool_uses", "0"], "pool_uses must be"),
            (&["h", "reject_type", "x"], "reject_type must be"),
        ] {
            let e = smtp(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn lmtp_argument_forms() {
        let s = lmtp(&["127.0.0.1:24"]).unwrap();
        assert_eq!(s.proto, Proto::Lmtp);
        assert_eq!(s.target, Target::Addr("127.0.0.1:24".parse().unwrap()));
        let s = lmtp(&["[::1]:2424", "pool", "2"]).unwrap();
        assert_eq!(s.target, Target::Addr("[::1]:2424".parse().unwrap()));
        let s = lmtp(&["/var/run/dovecot/lmtp"]).unwrap();
        assert_eq!(s.target, Target::Unix("/var/run/dovecot/lmtp".into()));
        assert_eq!(s.tls_name, "localhost");
        let s = lmtp(&["store.example:24", "xforward"]).unwrap();
        assert_eq!(s.target, Target::Name("store.example".into(), 24));
        for (args, want) in [
            (&[][..], "LMTP server is required"),
            (&["127.0.0.1"], "neither host:port"),
            (&["relative/socket"], "neither host:port"),
            (&["h:"], "neither host:port"),
            (&["h:x"], "bad port"),
            (&["h:24", "xclient"], "xclient is an SMTP extension"),
        ] {
            let e = lmtp(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
