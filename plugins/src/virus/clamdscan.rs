//! # virus/clamdscan — scan the message with ClamAV's clamd
//!
//! ## Synopsis
//!
//! ```text
//! virus/clamdscan [clamd_socket /path] [clamd_host IP] [clamd_port PORT]
//!                 [deny_viruses yes|no] [defer_on_error yes|no] [max_size KIB]
//!                 [scan_all 0|1] [timeout SECONDS] [max_scans N] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` the message (the header fields this server added, then the message as
//! received) is streamed to clamd with `zINSTREAM`: pieces of at most 64 KiB, each after its
//! length as 4 bytes in network order, read from memory or piece by piece from the spool file
//! (never the whole message in memory), and a zero length at the end. clamd answers
//! `stream: OK`, `stream: NAME FOUND` or `... ERROR`.
//!
//! - Clean: `X-Virus-Found: No` and `X-Virus-Checked: by clamd on <me>` are added.
//! - A virus, with `deny_viruses yes` (the default): `552 5.7.0 Virus found: NAME`, and a log
//!   line with the name. With `deny_viruses no`: `X-Virus-Found: Yes` and
//!   `X-Virus-Details: NAME` are added and the message goes on.
//! - A message over `max_size` KiB is not scanned: a log line says so and
//!   `X-Virus-Checked: skipped, over max_size (N KiB) on <me>` is added. Keep `max_size`
//!   below clamd's `StreamMaxLength` (25 MB by default): clamd refuses a longer stream with
//!   an error, which the error policy then handles.
//! - With `scan_all 0`, only messages whose top Content-Type is `multipart/*` with a boundary
//!   are scanned (a virus needs an attachment); `scan_all 1`, the default, scans every message.
//! - A connection marked naughty by an earlier plugin is not scanned: it is refused later.
//!
//! Every scan logs one line with its result and the time spent, e.g. `pass, clean (0.012s)`
//! or `fail, found virus Eicar-Signature (0.015s)`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `clamd_socket` | `/var/run/clamav/clamd.ctl` | clamd's unix socket (an absolute path), or `IP:PORT` |
//! | `clamd_host` | `127.0.0.1` | clamd's IP address, with `clamd_port` |
//! | `clamd_port` | | clamd's TCP port; when given, TCP is used instead of `clamd_socket` |
//! | `deny_viruses yes\|no` | `yes` | refuse a message with a virus, or mark it with headers |
//! | `defer_on_error yes\|no` | `yes` | see below |
//! | `max_size KIB` | `1024` | larger messages are not scanned |
//! | `scan_all 0\|1` | `1` | `0`: scan only multipart messages |
//! | `timeout SECONDS` | `25` | the whole call, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! When clamd cannot be reached, is silent past `timeout`, answers `... ERROR` or anything
//! that is not one of its three replies: with `defer_on_error yes` (the default here) the
//! message is refused with `451 4.7.1` and the sender retries; with `no` it is accepted with
//! `X-Virus-Checked: not scanned, virus/clamdscan error`. Either way an `error` line says
//! why. qpsmtpd's default was to accept; a scanner outage must not let unscanned mail in
//! unnoticed, so the default is to defer.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! qpsmtpd asked clamd to read its spool file by path (`SCAN`), which needs clamd to have
//! access to the spool directory, and sent the message in one piece over TCP; here the message
//! is always streamed, so clamd needs no file access and may run on another host. qpsmtpd's
//! `PING` and `VERSION` before each scan are not sent: the scan itself says whether clamd is
//! up, and the `X-Virus-Checked` field names `clamd` instead of its version.
//!
//! Large and odd messages (tests/e2e/test_scanner_bad_input.py): a 50 MB message is over
//! the default `max_size`, skipped with its header and a `skip, too big` line; with
//! `max_size` above it and clamd's `StreamMaxLength`, `MaxFileSize` and `MaxScanSize` raised,
//! it is streamed whole in 64 KiB pieces and a virus in its last bytes is found; with
//! `max_size` above `StreamMaxLength`, clamd cuts the stream off and the error policy defers
//! (451). A message with 10,000 MIME parts is one stream like any other. While a scan waits
//! on clamd, the worker serves its other sessions.
//!
//! Metrics: the core's per-plugin series count the scans and their time
//! (`ringsmtpd_plugin_outcomes_total{hook="data_post"}`, `ringsmtpd_plugin_duration_seconds`);
//! a refusal and a deferral are both `DONE` there, so the kind of result (clean, found,
//! error) is in the log line only, with the time spent.
//!
//! ## Standards
//!
//! clamd's protocol (`clamd(8)`: `zINSTREAM`, NUL-terminated replies).
//!
//! ## Security
//!
//! clamd's reply is hostile input: at most 1 KiB, up to its NUL, in one of the three forms;
//! the virus name keeps letters, digits and `._-:/+!@#`, anything else becomes `?`, at most
//! 128 characters, before it reaches the reply, a header (through the header API) or the log.

use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::args::{key_values, parse_flag};
use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::shared::Naughty;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reply,
    Services, Step, Transaction,
};

use super::{clean_name, is_multipart};
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::{parse_socket, BodyChunks, Scanner, ScannerArgs};

/// ClamAV::Client's default socket.
const DEFAULT_SOCKET: &str = "/var/run/clamav/clamd.ctl";
/// qpsmtpd's default `max_size`, KiB.
const DEFAULT_MAX_SIZE: u64 = 1024;
/// The longest reply read.
const MAX_REPLY: usize = 1024;
/// The field added when the message was accepted unscanned.
const CHECKED: &str = "X-Virus-Checked";

/// The `virus/clamdscan` plugin.
pub struct ClamdScan {
    common: Common,
    scanner: Scanner,
    deny: bool,
    /// Bytes.
    max_size: u64,
    scan_all: bool,
}

/// Builds `virus/clamdscan` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<ClamdScan, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut args = ScannerArgs::default();
    let mut socket = None;
    let mut host = "127.0.0.1".to_string();
    let mut port = None;
    let mut deny = true;
    let mut max_kib = DEFAULT_MAX_SIZE;
    let mut scan_all = true;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        if args.take(key, value).map_err(|e| init.error(e))? {
            continue;
        }
        match key {
            "clamd_socket" => socket = Some(parse_socket(value).map_err(|e| init.error(e))?),
            "clamd_host" => {
                value.parse::<std::net::IpAddr>().map_err(|_| {
                    init.error(format!("clamd_host '{value}' is not an IP address"))
                })?;
                host = value.to_string();
            }
            "clamd_port" => {
                port = Some(
                    value
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| init.error(format!("clamd_port '{value}' is not a port")))?,
                )
            }
            "deny_viruses" => deny = parse_flag(key, value).map_err(|e| init.error(e))?,
            "max_size" => {
                max_kib = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=4 * 1024 * 1024).contains(n))
                    .ok_or_else(|| init.error(format!("max_size '{value}' is not a size in KiB")))?
            }
            "scan_all" => scan_all = parse_flag(key, value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    let endpoint = match (port, socket) {
        (Some(port), _) => {
            let ip: std::net::IpAddr = host.parse().map_err(|_| init.error("bad clamd_host"))?;
            Endpoint::Tcp(std::net::SocketAddr::new(ip, port))
        }
        (None, Some(socket)) => socket,
        (None, None) => Endpoint::Unix(DEFAULT_SOCKET.into()),
    };
    Ok(ClamdScan {
        common,
        scanner: Scanner::new(endpoint, args, scan_metrics!("virus/clamdscan")),
        deny,
        max_size: max_kib * 1024,
        scan_all,
    })
}

/// What clamd found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Clean,
    Virus(String),
}

impl Plugin for ClamdScan {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if cx.conn.notes.contains::<Naughty>() {
            self.common
                .log(cx, Level::Info, format_args!("skip, naughty"));
            return Step::DECLINED;
        }
        let size = txn.message_len();
        if size > self.max_size {
            let kib = self.max_size / 1024;
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip, too big ({size} bytes > max_size {kib} KiB)"),
            );
            let me = cx.svc.me().to_string();
            txn.append_header(
                CHECKED,
                &format!("skipped, over max_size ({kib} KiB) on {me}"),
            );
            return Step::DECLINED;
        }
        if !self.scan_all && !is_multipart(txn) {
            self.common
                .log(cx, Level::Info, format_args!("skip, not multipart"));
            return Step::DECLINED;
        }
        Step::pending(async move {
            let start = Instant::now();
            let svc = cx.svc.clone();
            let answer = {
                let txn = &*txn;
                let svc = &*svc;
                self.scanner
                    .call(svc, move |stream| ask(svc, stream, txn))
                    .await
            };
            let spent = start.elapsed();
            match answer {
                Ok(found) => self.judge(cx, txn, found, spent),
                Err(e) => self
                    .scanner
                    .args
                    .on_error(&self.common, cx, txn, CHECKED, &e, spent),
            }
        })
    }
}

impl ClamdScan {
    fn judge(&self, cx: &mut Cx, txn: &mut Transaction, found: Found, spent: Duration) -> Outcome {
        if matches!(found, Found::Virus(_)) {
            self.scanner.metrics.found();
        }
        let secs = spent.as_secs_f64();
        match found {
            Found::Clean => {
                self.common
                    .log(cx, Level::Info, format_args!("pass, clean ({secs:.3}s)"));
                txn.append_header("X-Virus-Found", "No");
                let me = cx.svc.me().to_string();
                txn.append_header(CHECKED, &format!("by clamd on {me}"));
                Outcome::Declined
            }
            Found::Virus(name) => {
                self.common.log(
                    cx,
                    Level::Notice,
                    format_args!("fail, found virus {name} ({secs:.3}s)"),
                );
                if self.deny {
                    return Outcome::Done(Some(Reply::new(
                        552,
                        "5.7.0",
                        format!("Virus found: {name}"),
                    )));
                }
                txn.append_header("X-Virus-Found", "Yes");
                txn.append_header("X-Virus-Details", &name);
                Outcome::Declined
            }
        }
    }
}

/// One `zINSTREAM` exchange on `stream`.
async fn ask(
    svc: &dyn Services,
    mut stream: Box<dyn Stream>,
    txn: &Transaction,
) -> Result<Found, String> {
    let sent = |e: std::io::Error| format!("cannot send to clamd: {e}");
    let mut chunks = BodyChunks::new(txn).map_err(|e| format!("cannot read the message: {e}"))?;
    let (res, mut prefix) = stream.write_all(b"zINSTREAM\0".to_vec()).await;
    res.map_err(sent)?;
    let mut buf = Vec::new();
    loop {
        buf = chunks
            .next(svc, buf)
            .await
            .map_err(|e| format!("cannot read the message: {e}"))?;
        prefix.clear();
        // A chunk is at most 64 KiB: its length fits in 4 bytes.
        prefix.extend_from_slice(&(buf.len() as u32).to_be_bytes());
        let (res, p) = stream.write_all(prefix).await;
        prefix = p;
        res.map_err(sent)?;
        if buf.is_empty() {
            break;
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        res.map_err(sent)?;
    }
    let reply = read_reply(&mut *stream).await?;
    parse_reply(&reply)
}

/// clamd's reply up to its NUL (or the end of the connection after some bytes), bounded.
async fn read_reply(stream: &mut dyn Stream) -> Result<Vec<u8>, String> {
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() >= MAX_REPLY {
            return Err("clamd's reply is too long".into());
        }
        if buf.capacity() - buf.len() < 256 {
            buf.reserve(512);
        }
        let (res, b) = stream.read(std::mem::take(&mut buf)).await;
        buf = b;
        match res {
            Ok(0) => {
                return Err(format!(
                    "clamd closed the connection mid-reply ('{}')",
                    String::from_utf8_lossy(&buf).escape_debug()
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("reading clamd's reply: {e}")),
        }
    }
}

/// `stream: OK`, `stream: NAME FOUND`; `... ERROR` and anything else are errors.
fn parse_reply(reply: &[u8]) -> Result<Found, String> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\r', '\n']);
    if let Some(rest) = text.strip_prefix("stream: ") {
        if rest == "OK" {
            return Ok(Found::Clean);
        }
        if let Some(name) = rest.strip_suffix(" FOUND") {
            let name = clean_name(name);
            if !name.is_empty() {
                return Ok(Found::Virus(name));
            }
        }
    }
    let shown: String = clean_name(text);
    if text.ends_with(" ERROR") {
        return Err(format!("clamd: {shown}"));
    }
    Err(format!("clamd's reply '{shown}' is not one it sends"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::{closed_port, reply_of};
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run, set_message, FakePeer};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;

    const MESSAGE: &str = "Subject: hi\r\n\r\nhello\r\n";

    /// A clamd that reads one zINSTREAM request, records the stream, and answers `reply`.
    fn clamd(reply: &'static [u8]) -> FakePeer<Vec<u8>> {
        FakePeer::start(move |mut conn: TcpStream, seen: &Mutex<Vec<Vec<u8>>>| {
            let mut cmd = [0u8; 10];
            if conn.read_exact(&mut cmd).is_err() || &cmd != b"zINSTREAM\0" {
                return;
            }
            let mut data = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if conn.read_exact(&mut len).is_err() {
                    return;
                }
                let len = u32::from_be_bytes(len) as usize;
                if len == 0 {
                    break;
                }
                let mut chunk = vec![0; len];
                if conn.read_exact(&mut chunk).is_err() {
                    return;
                }
                data.extend_from_slice(&chunk);
            }
            seen.lock().unwrap().push(data);
            let _ = conn.write_all(reply);
        })
    }

    fn plugin(args: &str) -> ClamdScan {
        build(build_plugin, &format!("virus/clamdscan {args}"), &[]).unwrap()
    }

    fn scan_message(p: &ClamdScan, message: &str) -> (Outcome, String, Vec<String>) {
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        txn.added_headers = "Received: from a by b\r\n".into();
        set_message(&mut txn, message);
        let out = run(p.data_post(&mut c, &mut txn));
        let logs = svc.logs.borrow().iter().map(|l| l.2.clone()).collect();
        (out, txn.added_headers, logs)
    }

    fn scan(p: &ClamdScan) -> (Outcome, String, Vec<String>) {
        scan_message(p, MESSAGE)
    }

    #[test]
    fn clean_messages_pass_with_headers_and_the_stream_is_the_message() {
        let peer = clamd(b"stream: OK\0");
        let p = plugin(&format!("clamd_port {}", peer.port));
        let (out, headers, logs) = scan(&p);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Found: No\r\n"), "{headers}");
        assert!(headers.contains("X-Virus-Checked: by clamd on mx.example.test\r\n"));
        assert!(
            logs.iter().any(|l| l.starts_with("pass, clean (")),
            "{logs:?}"
        );
        let sent = peer.take().pop().unwrap();
        assert_eq!(
            sent,
            format!("Received: from a by b\r\n{MESSAGE}").as_bytes()
        );
    }

    #[test]
    fn a_virus_is_refused_with_its_name_or_marked() {
        let peer = clamd(b"stream: Eicar-Signature FOUND\0");
        let p = plugin(&format!("clamd_host 127.0.0.1 clamd_port {}", peer.port));
        let (out, _, logs) = scan(&p);
        assert_eq!(
            reply_of(&out),
            (552, "5.7.0".into(), "Virus found: Eicar-Signature".into())
        );
        assert!(logs
            .iter()
            .any(|l| l.starts_with("fail, found virus Eicar-Signature")));

        let peer = clamd(b"stream: Evil\r\nX-Injected: 1\x1b[31m FOUND\0");
        let p = plugin(&format!("clamd_port {} deny_viruses no", peer.port));
        let (out, headers, logs) = scan(&p);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Found: Yes\r\n"));
        // The name is cleaned before it reaches the header and the log.
        assert!(
            headers.contains("X-Virus-Details: Evil??X-Injected: 1??31m\r\n"),
            "{headers:?}"
        );
        assert!(!headers.contains("\r\nX-Injected"));
        assert!(logs
            .iter()
            .all(|l| !l.contains('\u{1b}') && !l.contains('\n')));
    }

    #[test]
    fn errors_malformed_and_truncated_replies_defer() {
        let cases: &[(&'static [u8], &str)] = &[
            (
                b"INSTREAM size limit exceeded. ERROR\0",
                "clamd: INSTREAM size limit exceeded. ERROR",
            ),
            (b"stream: maybe\0", "is not one it sends"),
            (b"stream:  FOUND\0", "is not one it sends"),
            (b"stream: O", "closed the connection mid-reply"),
            (b"", "closed the connection mid-reply"),
        ];
        for (reply, why) in cases {
            let peer = clamd(reply);
            let (out, headers, logs) = scan(&plugin(&format!("clamd_port {}", peer.port)));
            assert_eq!(reply_of(&out).0, 451, "{why}");
            assert_eq!(reply_of(&out).1, "4.7.1");
            assert!(!headers.contains("X-Virus"), "{why}");
            assert!(
                logs.iter()
                    .any(|l| l.starts_with("error, deferred") && l.contains(why)),
                "{why}: {logs:?}"
            );
        }
        let long: &'static [u8] = Box::leak(vec![b'x'; 5000].into_boxed_slice());
        let peer = clamd(long);
        let (out, _, logs) = scan(&plugin(&format!("clamd_port {}", peer.port)));
        assert_eq!(reply_of(&out).0, 451);
        assert!(logs.iter().any(|l| l.contains("too long")));
    }

    #[test]
    fn refused_and_silent_clamd() {
        let port = closed_port();
        let (out, _, logs) = scan(&plugin(&format!("clamd_port {port}")));
        assert_eq!(reply_of(&out).0, 451);
        assert!(logs.iter().any(|l| l.contains("cannot connect")));
        let (out, headers, _) = scan(&plugin(&format!("clamd_port {port} defer_on_error no")));
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: not scanned, virus/clamdscan error\r\n"));

        let p = plugin("clamd_port 3310 timeout 2");
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.mute_peers.set(true);
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        assert_eq!(reply_of(&run(p.data_post(&mut c, &mut txn))).0, 451);
        assert!(svc.logged("within the timeout (2s)"));
    }

    #[test]
    fn skips_big_non_multipart_and_naughty() {
        // Nothing listens on port 1: a scan would defer.
        let big = format!("Subject: x\r\n\r\n{}", "a".repeat(2000));
        let (out, headers, logs) = scan_message(&plugin("clamd_port 1 max_size 1"), &big);
        assert_eq!(out, Outcome::Declined);
        assert!(
            headers.contains("X-Virus-Checked: skipped, over max_size (1 KiB) on mx.example.test")
        );
        assert!(logs.iter().any(|l| l.starts_with("skip, too big")));

        let (out, _, logs) = scan(&plugin("clamd_port 1 scan_all 0"));
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l == "skip, not multipart"));
        let multi = "Content-Type: multipart/mixed;\r\n boundary=\"b\"\r\n\r\n--b--\r\n";
        let (out, _, _) = scan_message(&plugin("clamd_port 1 scan_all 0"), multi);
        assert_eq!(reply_of(&out).0, 451, "a multipart message is scanned");

        let p = plugin("clamd_port 1");
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.notes.set(Naughty {
            plugin: "dnsbl".into(),
            msg: "listed".into(),
        });
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        assert!(svc.connects.borrow().is_empty());
    }

    #[test]
    fn arguments() {
        let p = plugin("clamd_socket /run/clamd.sock");
        assert_eq!(p.scanner.endpoint, Endpoint::Unix("/run/clamd.sock".into()));
        let p = plugin("clamd_socket /run/clamd.sock clamd_host ::1 clamd_port 3310");
        assert_eq!(
            p.scanner.endpoint,
            Endpoint::Tcp("[::1]:3310".parse().unwrap())
        );
        let p = plugin("");
        assert_eq!(p.scanner.endpoint, Endpoint::Unix(DEFAULT_SOCKET.into()));
        assert!(p.deny && p.scan_all && p.scanner.args.defer_on_error);
        assert_eq!(p.max_size, 1024 * 1024);
        for (args, why) in [
            ("clamd_host clamd.example", "not an IP"),
            ("clamd_port 0", "not a port"),
            ("deny_viruses maybe", "yes or no"),
            ("max_size 0", "not a size"),
            ("clamd_socket relative", "neither"),
            ("frob 1", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("virus/clamdscan {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
