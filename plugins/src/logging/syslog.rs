//! # logging/syslog — log to syslog
//!
//! ## Synopsis
//!
//! ```text
//! logging/syslog [loglevel <l>] [priority <p>] [ident <str>] [facility <f>] [logsock <s>] [format 3164|5424]
//! logging/syslog loglevel LOGINFO priority LOG_NOTICE
//! logging/syslog facility local3 logsock udp:loghost.example:514 format 5424
//! ```
//!
//! In `config/logging`.
//!
//! ## Description
//!
//! qpsmtpd's `logging/syslog`: each line at or below `loglevel` is sent to the syslog daemon
//! as one datagram, at the syslog severity of its level (LOGINFO → `info`, LOGWARN →
//! `warning`, ...) or at `priority` if given, in `facility`. The message is
//! `<conn> <source>: <msg>` (`conn` in hex, left out for lines not about a connection),
//! control characters escaped (`\x0a`).
//!
//! Datagrams are sent by a background thread per destination and process, never by the
//! worker: the worker copies the line into a 1 MiB buffer (see `logging/sink.rs`). If the
//! daemon is slow and the buffer fills, lines are dropped and counted, and the count is sent
//! once it drains. If the socket fails (the daemon restarted), the writer reconnects and sends
//! again once; lines it cannot send are counted on stderr, at most once a minute. A reload
//! (SIGHUP) reconnects. libc's `syslog(3)` is not used: it writes on the caller's thread.
//!
//! **Formats.** `3164` (default): RFC 3164 as glibc writes it,
//! `<PRI>Mmm dd hh:mm:ss ident[pid]: msg` on a unix socket and with this host's name after the
//! time over UDP. `5424`: RFC 5424, `<PRI>1 2025-01-16T10:00:00+01:00 host ident pid - - msg`.
//! Times are local (3164) or local with offset (5424), to the second. A message is cut to
//! 8 KiB on a unix socket and to 2048 bytes over UDP (RFC 5424 §6.1: what every receiver
//! takes).
//!
//! ## Arguments
//!
//! Pairs of `key value`, as in qpsmtpd.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel <l>` | `4` (LOGWARN) | the highest level sent: `0`-`7` or a name (`LOGINFO`) |
//! | `priority <p>` | the line's level | send every line at this severity: `0`-`7` or `LOG_EMERG` ... `LOG_DEBUG` (`LOG_ERR`, `LOG_WARNING` as in syslog.h) |
//! | `ident <str>` | `ringsmtpd` | the tag (letters, digits, `_`, `-`, `.`) |
//! | `facility <f>` | `mail` | `kern`, `user`, `mail`, `daemon`, `auth`, `syslog`, `lpr`, `news`, `uucp`, `cron`, `authpriv`, `ftp`, `local0`-`local7`, with or without `LOG_`, any case |
//! | `logsock <s>` | `unix` | where to send, a comma-separated list tried in order until one connects: `unix` or `native` (`/dev/log`), an absolute path (a unix datagram socket), `udp` (`localhost:514`), `udp:HOST[:PORT]` (`udp:[::1]:514` for IPv6) |
//! | `format 3164\|5424` | `3164` | the datagram format (not in qpsmtpd) |
//!
//! `reject` and `reject_type` are refused. qpsmtpd's `tcp`, `stream`, `pipe` and `console`
//! socket types are refused with an error naming what is supported.
//!
//! ## Config files
//!
//! `me` (the host name in UDP and RFC 5424 datagrams).
//!
//! ## Hooks
//!
//! `logging` (returns `DECLINED`, as qpsmtpd's).
//!
//! ## Notes
//!
//! None.
//!
//! ## Differences from qpsmtpd
//!
//! The default ident is `ringsmtpd` (qpsmtpd: `qpsmtpd`; set `ident qpsmtpd` to keep log
//! filters working). Messages carry the connection id and source. Bad values are errors
//! (qpsmtpd ignored a bad `ident` or `facility`).
//!
//! ## Standards
//!
//! RFC 3164 (BSD syslog), RFC 5424 (syslog protocol) §6, RFC 5426 (syslog over UDP).
//!
//! ## Security
//!
//! Escaping keeps a client's text from forging lines; a UDP destination is unauthenticated and
//! unencrypted (RFC 5426 §5): use it on a trusted network.

use std::fmt::Write as _;
use std::io;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use ringsmtpd_plugin_api::{
    ConfigError, Hook, HookSet, Level, LogRecord, Outcome, Plugin, PluginInit,
};

use super::sink::{self, Batch, ErrorReport, Output};
use super::Lines;

/// Message bytes at most per datagram on a unix socket.
const MAX_UNIX: usize = 8 * 1024;
/// Message bytes at most per UDP datagram (RFC 5424 §6.1).
const MAX_UDP: usize = 2048;
/// How long a send may wait for a full socket before the batch is given up.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// The datagram format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc3164,
    Rfc5424,
}

/// A place to send to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Unix(PathBuf),
    Udp(String, u16),
}

/// The `logging/syslog` plugin.
pub struct Syslog {
    /// Severity override (`priority`).
    priority: Option<u8>,
    facility: u8,
    lines: Lines,
}

/// Builds `logging/syslog` from its config line; starts (or joins) the writer for its socket.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let args = init.args;
    if args.len() % 2 == 1 {
        return Err(init.error(format!(
            "arguments come in pairs (key value); '{}' has no value",
            args[args.len() - 1]
        )));
    }
    let mut level = Level::Warn;
    let mut priority = None;
    let mut ident = "ringsmtpd".to_string();
    let mut facility = 2u8; // mail
    let mut logsock = "unix".to_string();
    let mut format = Format::Rfc3164;
    for pair in args.chunks(2) {
        let (key, value) = (pair[0].as_str(), pair[1].as_str());
        match key.to_ascii_lowercase().as_str() {
            "loglevel" => level = super::parse_level(init, "loglevel", value)?,
            "priority" => priority = Some(super::parse_level(init, "priority", value)? as u8),
            "ident" => {
                let ok = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !ok {
                    return Err(init.error(format!(
                        "ident must be letters, digits, '_', '-', '.', not '{value}'"
                    )));
                }
                ident = value.to_string();
            }
            "facility" => {
                facility = parse_facility(value).ok_or_else(|| {
                    init.error(format!(
                        "unknown facility '{value}' (mail, daemon, local0-local7, ...)"
                    ))
                })?
            }
            "logsock" => {
                parse_logsock(value).map_err(|e| init.error(e))?;
                logsock = value.to_string();
            }
            "format" => {
                format = match value {
                    "3164" => Format::Rfc3164,
                    "5424" => Format::Rfc5424,
                    _ => {
                        return Err(
                            init.error(format!("format must be 3164 or 5424, not '{value}'"))
                        )
                    }
                }
            }
            "reject" | "reject_type" => return Err(super::no_reject(init, key)),
            _ => return Err(init.unknown(key)),
        }
    }
    let targets = parse_logsock(&logsock).map_err(|e| init.error(e))?;
    let host = super::host_name(init);
    let key = format!("syslog:{logsock}|{ident}|{format:?}|{host}");
    let sink = sink::shared(&key, move || {
        Box::new(SyslogOut::new(targets, ident, host, format, facility))
    })
    .map_err(|e| init.error(format!("cannot start the log writer: {e}")))?;
    Ok(Box::new(Syslog {
        priority,
        facility,
        lines: Lines::new(level, sink),
    }))
}

/// A facility name or number (syslog.h codes).
fn parse_facility(value: &str) -> Option<u8> {
    let lower = value.to_ascii_lowercase();
    let name = lower.strip_prefix("log_").unwrap_or(&lower);
    if let Ok(n) = name.parse::<u8>() {
        return (n <= 23 && name.bytes().all(|b| b.is_ascii_digit())).then_some(n);
    }
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" | "security" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        _ => match name.strip_prefix("local")?.parse::<u8>() {
            Ok(n) if n <= 7 && name.len() == 6 => 16 + n,
            _ => return None,
        },
    })
}

/// `logsock`: a comma-separated list of places.
fn parse_logsock(value: &str) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let target = match part {
            "unix" | "native" => Target::Unix(PathBuf::from("/dev/log")),
            "udp" => Target::Udp("localhost".into(), 514),
            p if p.starts_with('/') => Target::Unix(PathBuf::from(p)),
            p if p.starts_with("udp:") => parse_udp(&p[4..])?,
            p => {
                return Err(format!(
                    "logsock '{p}' is not supported: use unix, a socket path, udp or \
                     udp:host[:port]"
                ))
            }
        };
        targets.push(target);
    }
    Ok(targets)
}

/// `HOST[:PORT]`, `[IPV6][:PORT]`.
fn parse_udp(s: &str) -> Result<Target, String> {
    let bad = || format!("bad logsock 'udp:{s}': use udp:host[:port] or udp:[ipv6][:port]");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port = match port {
        None => 514,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(bad()),
        },
    };
    Ok(Target::Udp(host.to_string(), port))
}

impl Plugin for Syslog {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Logging])
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        self.lines.write(record, |line| {
            let severity = self.priority.unwrap_or(record.level as u8);
            let pri = u16::from(self.facility) * 8 + u16::from(severity);
            let (secs, _) = super::now();
            // `<pri> <secs> <message>`: the writer builds the header for the socket it has.
            let _ = write!(line, "{pri} {secs} ");
            if record.conn != 0 {
                let _ = write!(line, "{:x} ", record.conn);
            }
            super::write_source_msg(line, record);
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The writer side (runs on the sink's thread only).

enum Conn {
    Unix(UnixDatagram),
    Udp(UdpSocket),
}

impl Conn {
    fn send(&self, datagram: &[u8]) -> io::Result<()> {
        let n = match self {
            Conn::Unix(s) => s.send(datagram)?,
            Conn::Udp(s) => s.send(datagram)?,
        };
        if n == datagram.len() {
            Ok(())
        } else {
            Err(io::Error::other("datagram truncated"))
        }
    }
}

struct SyslogOut {
    targets: Vec<Target>,
    conn: Option<Conn>,
    ident: String,
    host: String,
    pid: u32,
    format: Format,
    facility: u8,
    errors: ErrorReport,
    datagram: Vec<u8>,
    /// The header time of the last second, for the connected kind.
    ts: (i64, String),
}

impl SyslogOut {
    fn new(
        targets: Vec<Target>,
        ident: String,
        host: String,
        format: Format,
        facility: u8,
    ) -> SyslogOut {
        SyslogOut {
            targets,
            conn: None,
            ident,
            host,
            pid: std::process::id(),
            format,
            facility,
            errors: ErrorReport::new("logging/syslog"),
            datagram: Vec::new(),
            ts: (i64::MIN, String::new()),
        }
    }

    /// Connects to the first target that takes it.
    fn connect(&mut self) -> Result<(), String> {
        let mut last = String::from("no logsock");
        for t in &self.targets {
            let res = match t {
                Target::Unix(path) => UnixDatagram::unbound().and_then(|s| {
                    s.connect(path)?;
                    s.set_write_timeout(Some(SEND_TIMEOUT))?;
                    Ok(Conn::Unix(s))
                }),
                Target::Udp(host, port) => {
                    (host.as_str(), *port)
                        .to_socket_addrs()
                        .and_then(|mut addrs| {
                            let addr =
                                addrs.next().ok_or_else(|| io::Error::other("no address"))?;
                            let local = if addr.is_ipv4() {
                                "0.0.0.0:0"
                            } else {
                                "[::]:0"
                            };
                            let s = UdpSocket::bind(local)?;
                            s.connect(addr)?;
                            s.set_write_timeout(Some(SEND_TIMEOUT))?;
                            Ok(Conn::Udp(s))
                        })
                }
            };
            match res {
                Ok(c) => {
                    self.conn = Some(c);
                    return Ok(());
                }
                Err(e) => last = format!("cannot connect to {}: {e}", describe(t)),
            }
        }
        Err(last)
    }

    /// Builds the datagram for a queued line (`<pri> <secs> <message>`).
    fn build(&mut self, line: &[u8]) -> Option<()> {
        let text = std::str::from_utf8(line).ok()?;
        let (pri, rest) = text.split_once(' ')?;
        let (secs, msg) = rest.split_once(' ')?;
        let secs: i64 = secs.parse().ok()?;
        let udp = matches!(self.conn, Some(Conn::Udp(_)));
        if self.ts.0 != secs {
            self.ts.1.clear();
            let fmt = match self.format {
                Format::Rfc3164 => "%b %e %H:%M:%S",
                Format::Rfc5424 => "%Y-%m-%dT%H:%M:%S%:z",
            };
            super::format_time(fmt, secs, 0, &mut self.ts.1);
            self.ts.0 = secs;
        }
        let mut head = String::with_capacity(64);
        match self.format {
            Format::Rfc3164 if udp => {
                let _ = write!(
                    head,
                    "<{pri}>{} {} {}[{}]: ",
                    self.ts.1, self.host, self.ident, self.pid
                );
            }
            Format::Rfc3164 => {
                let _ = write!(head, "<{pri}>{} {}[{}]: ", self.ts.1, self.ident, self.pid);
            }
            Format::Rfc5424 => {
                let _ = write!(
                    head,
                    "<{pri}>1 {} {} {} {} - - ",
                    self.ts.1, self.host, self.ident, self.pid
                );
            }
        }
        let max = if udp { MAX_UDP } else { MAX_UNIX };
        let mut end = msg.len().min(max);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        self.datagram.clear();
        self.datagram.extend_from_slice(head.as_bytes());
        self.datagram.extend_from_slice(&msg.as_bytes()[..end]);
        Some(())
    }

    /// Sends the built datagram, reconnecting once on failure.
    fn send(&mut self) -> Result<(), String> {
        if self.conn.is_none() {
            self.connect()?;
        }
        if let Some(c) = &self.conn {
            if c.send(&self.datagram).is_ok() {
                return Ok(());
            }
        }
        // The daemon restarted, or the socket is full: one new connection, one more try.
        self.conn = None;
        self.connect()?;
        match &self.conn {
            Some(c) => c
                .send(&self.datagram)
                .map_err(|e| format!("cannot send: {e}")),
            None => Err("not connected".into()),
        }
    }
}

fn describe(t: &Target) -> String {
    match t {
        Target::Unix(p) => p.display().to_string(),
        Target::Udp(h, p) => format!("udp {h}:{p}"),
    }
}

impl Output for SyslogOut {
    fn write(&mut self, batch: &Batch) {
        let total = batch.recs.len() as u64;
        for (i, (line, _)) in batch.lines().enumerate() {
            if self.conn.is_none() {
                // Connect first, so the header fits the socket kind.
                if let Err(e) = self.connect() {
                    self.errors.fail(&e, total - i as u64);
                    return;
                }
            }
            if self.build(line).is_none() {
                continue; // not produced by this plugin: cannot happen
            }
            if let Err(e) = self.send() {
                // Give up the rest of the batch rather than wait a timeout per line.
                self.errors.fail(&e, total - i as u64);
                return;
            }
        }
    }

    fn reload(&mut self) {
        self.conn = None;
    }

    fn notice(&mut self, text: &str) {
        let (secs, _) = super::now();
        let pri = u16::from(self.facility) * 8 + Level::Warn as u16;
        let line = format!("{pri} {secs} logging/syslog: {text}");
        if self.conn.is_none() && self.connect().is_err() {
            self.errors.fail(text, 0);
            return;
        }
        if self.build(line.as_bytes()).is_some() && self.send().is_err() {
            self.errors.fail(text, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::test_util::{build, record};
    use ringsmtpd_plugin_api::testing::TempDir;

    fn recv_unix(sock: &UnixDatagram) -> String {
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).expect("a datagram within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn bind(d: &TempDir, name: &str) -> (UnixDatagram, String) {
        let path = d.join(name);
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, path)
    }

    #[test]
    fn rfc3164_on_a_unix_socket() {
        let d = TempDir::new("syslog");
        let (sock, path) = bind(&d, "log.sock");
        let p = build(
            new,
            "logging/syslog",
            &["loglevel", "LOGINFO", "logsock", &path],
        )
        .unwrap();
        record(Level::Info, 0x1f, "relay", "hello\nthere", |r| p.logging(r));
        record(Level::Debug, 0x1f, "relay", "too verbose", |r| p.logging(r));
        record(Level::Error, 0, "core", "server", |r| p.logging(r));
        let pid = std::process::id();
        let first = recv_unix(&sock);
        // mail (2) * 8 + info (6) = 22; glibc's local form: no host name.
        assert!(first.starts_with("<22>"), "{first}");
        assert!(
            first.ends_with(&format!(" ringsmtpd[{pid}]: 1f relay: hello\\x0athere")),
            "{first}"
        );
        // "<22>Mmm dd hh:mm:ss " is 20 bytes.
        let ts = &first[4..19];
        assert_eq!(ts.as_bytes()[3], b' ', "{ts}");
        assert_eq!(&ts[9..10], ":");
        let second = recv_unix(&sock);
        assert!(second.starts_with("<19>"), "mail.err: {second}");
        assert!(
            second.ends_with(&format!("ringsmtpd[{pid}]: core: server")),
            "{second}"
        );
    }

    #[test]
    fn priority_facility_ident_and_rfc5424() {
        let d = TempDir::new("syslog5424");
        let (sock, path) = bind(&d, "s");
        let p = build(
            new,
            "logging/syslog",
            &[
                "priority",
                "LOG_NOTICE",
                "facility",
                "LOG_LOCAL3",
                "ident",
                "qpsmtpd",
                "logsock",
                &path,
                "format",
                "5424",
                "loglevel",
                "7",
            ],
        )
        .unwrap();
        record(Level::Debug, 2, "p", "m", |r| p.logging(r));
        let got = recv_unix(&sock);
        // local3 (19) * 8 + notice (5) = 157.
        assert!(got.starts_with("<157>1 "), "{got}");
        let pid = std::process::id();
        assert!(
            got.ends_with(&format!(" mx.example.test qpsmtpd {pid} - - 2 p: m")),
            "{got}"
        );
        // 2025-01-16T10:00:00+01:00
        let ts = got.split(' ').nth(1).unwrap();
        assert_eq!(ts.len(), 25, "{ts}");
        assert_eq!(&ts[10..11], "T");
    }

    #[test]
    fn udp_with_host_and_length_limit() {
        let recv = UdpSocket::bind("127.0.0.1:0").unwrap();
        recv.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = recv.local_addr().unwrap().port();
        let target = format!("udp:127.0.0.1:{port}");
        let p = build(new, "logging/syslog", &["logsock", &target]).unwrap();
        let long = "y".repeat(5000);
        record(Level::Warn, 0, "core", &long, |r| p.logging(r));
        let mut buf = vec![0u8; 65536];
        let n = recv.recv(&mut buf).unwrap();
        let got = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(got.starts_with("<20>"), "{}", &got[..40]);
        let pid = std::process::id();
        assert!(got.contains(&format!(" mx.example.test ringsmtpd[{pid}]: core: yyy")));
        let head = got.find("core:").unwrap();
        assert_eq!(got.len() - head, MAX_UDP);
    }

    #[test]
    fn fallback_list_and_reconnect_after_daemon_restart() {
        let d = TempDir::new("syslogre");
        let missing = d.join("missing.sock");
        let (sock, path) = bind(&d, "real.sock");
        let list = format!("{missing},{path}");
        let p = build(
            new,
            "logging/syslog",
            &["logsock", &list, "ident", "restart-test"],
        )
        .unwrap();
        record(Level::Warn, 0, "core", "one", |r| p.logging(r));
        assert!(recv_unix(&sock).ends_with("core: one"));
        // The daemon restarts: its socket goes away and comes back under the same name.
        drop(sock);
        std::fs::remove_file(&path).unwrap();
        let (sock, _) = bind(&d, "real.sock");
        record(Level::Warn, 0, "core", "two", |r| p.logging(r));
        assert!(recv_unix(&sock).ends_with("core: two"));
    }

    #[test]
    fn no_daemon_loses_lines_without_blocking() {
        let d = TempDir::new("syslognone");
        let path = d.join("nobody.sock");
        let p = build(
            new,
            "logging/syslog",
            &["logsock", &path, "ident", "nobody"],
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        for _ in 0..1000 {
            record(Level::Warn, 0, "core", "lost", |r| p.logging(r));
        }
        assert!(t0.elapsed() < Duration::from_secs(10)); // a block would hang, not slow
        assert!(crate::logging::flush_all(Duration::from_secs(5)));
    }

    #[test]
    fn arguments() {
        let err = |args: &[&str]| {
            build(new, "logging/syslog", args)
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(&["loglevel"]).contains("come in pairs"));
        assert!(err(&["loglevel", "x"]).contains("loglevel must be"));
        assert!(err(&["priority", "LOG_LOUD"]).contains("priority must be"));
        assert!(err(&["ident", "a b"]).contains("ident must be"));
        assert!(err(&["ident", "a/b"]).contains("ident must be"));
        assert!(err(&["facility", "local8"]).contains("unknown facility"));
        assert!(err(&["logsock", "tcp"]).contains("'tcp' is not supported"));
        assert!(err(&["logsock", "udp:host:port"]).contains("bad logsock"));
        assert!(err(&["logsock", "udp:[::1"]).contains("bad logsock"));
        assert!(err(&["format", "rfc"]).contains("format must be"));
        assert!(err(&["reject", "1"]).contains("does not apply"));
        assert!(err(&["colour", "red"]).contains("unknown argument 'colour'"));
        assert!(err(&["x"]).starts_with("plugins:1: logging/syslog:"));
        assert_eq!(parse_facility("MAIL"), Some(2));
        assert_eq!(parse_facility("log_local7"), Some(23));
        assert_eq!(parse_facility("local"), None);
        assert_eq!(parse_facility("local10"), None);
        assert_eq!(parse_facility("23"), Some(23));
        assert_eq!(parse_facility("24"), None);
        assert_eq!(
            parse_logsock("unix,udp,udp:log.example,udp:[::1]:515,/run/s").unwrap(),
            vec![
                Target::Unix("/dev/log".into()),
                Target::Udp("localhost".into(), 514),
                Target::Udp("log.example".into(), 514),
                Target::Udp("::1".into(), 515),
                Target::Unix("/run/s".into()),
            ]
        );
        // The default needs no socket at build time (the daemon may start later).
        assert!(build(new, "logging/syslog", &[]).is_ok());
    }
}
