//! # virus/sophie — scan the message with Sophos through the Sophie daemon
//!
//! ## Synopsis
//!
//! ```text
//! virus/sophie [sophie_socket PATH] [deny_viruses yes|no] [max_size KIB]
//!              [timeout SECONDS] [max_scans N] [defer_on_error yes|no] [loglevel N]
//! ```
//!
//! ## Description
//!
//! Sophie is a daemon that scans files with Sophos' SAVI library; it listens on a unix socket
//! and scans the file whose path a client sends. At `data_post`, for a multipart message of
//! at most `max_size` KiB (others are not scanned: a log line says why), the plugin connects
//! to `sophie_socket`, sends the path of the message file and a newline, and reads the
//! answer line (at most 256 bytes):
//!
//! | answer | meaning | outcome |
//! |---|---|---|
//! | `0` | clean | `X-Virus-Checked: Checked by SOPHIE on <me>` added |
//! | `1` or `1:NAME` | virus found | `deny_viruses yes` (the default): `552 5.7.1 Virus found: NAME`; `no`: `X-Virus-Found: Yes`, `X-Virus-Details: NAME` |
//! | `-1...`, anything else, no answer, no daemon, past `timeout` | the scan did not happen | the error policy |
//!
//! The message file is the spool file of a spooled message, or a temporary copy (mode 0600,
//! written and removed off the worker) of a message held in memory: Sophie must be able to
//! read both, so run it as the server's user (or see qpsmtpd's notes on sharing the spool
//! directory through a group). The exchange runs on the worker's own sockets; at most
//! `max_scans` run at once per worker, the others wait in a queue.
//!
//! The error policy: `defer_on_error yes` (the default) answers `451 4.7.1`; `no` lets the
//! message through with `X-Virus-Checked: not scanned, virus/sophie error`. Every scan logs
//! one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `sophie_socket PATH` | `/var/run/sophie` | Sophie's unix socket (or `IP:PORT`) |
//! | `deny_viruses yes\|no` | `yes` | refuse a message with a virus, or mark it with headers |
//! | `max_size KIB` | `128` | larger messages are not scanned |
//! | `timeout SECONDS` | `25` | the whole exchange, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error yes\|no` | `yes` | the error policy |
//! | `loglevel N` | | qpsmtpd's per-plugin log level |
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
//! **Tested with a stand-in daemon only**: Sophie and Sophos' SAVI are proprietary and not
//! available here; the tests run a small server that answers as above. qpsmtpd took every
//! answer that was not a virus as clean (an error answer too) and died when the socket was
//! missing; here those go to the error policy. The daemon reads the message as received
//! (without the header fields this server added).
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! The answer is hostile input: at most 256 bytes, one line, one of the forms above; a virus
//! name is cleaned (letters, digits and `._-:/+!@# `, anything else becomes `?`, at most 128
//! characters) before it reaches the reply, a header or the log.

use std::time::Instant;

use ringsmtpd_plugin_api::args::{key_values, parse_flag};
use ringsmtpd_plugin_api::net::Stream;
use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Step, Transaction,
};

use super::verdict::{judge, kib, not_multipart, viruses, Found, Marks};
use crate::helpers::command_scanner::MessageFile;
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::too_big;
use crate::helpers::scanner::{parse_socket, Scanner, ScannerArgs};
use ringsmtpd_plugin_api::Common;

const DEFAULT_SOCKET: &str = "/var/run/sophie";
/// qpsmtpd's default `max_size`, KiB.
const DEFAULT_MAX_KIB: u64 = 128;
/// The longest answer read (qpsmtpd's `sysread` length).
const MAX_ANSWER: usize = 256;
const MARKS: Marks = Marks::standard("SOPHIE");

/// The `virus/sophie` plugin.
pub struct Sophie {
    common: Common,
    scanner: Scanner,
    deny: bool,
    /// Bytes.
    max_size: u64,
}

/// Builds `virus/sophie` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<Sophie, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut args = ScannerArgs::default();
    let mut socket = parse_socket(DEFAULT_SOCKET).map_err(|e| init.error(e))?;
    let mut deny = true;
    let mut max_kib = DEFAULT_MAX_KIB;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        if args.take(key, value).map_err(|e| init.error(e))? {
            continue;
        }
        match key {
            "sophie_socket" => socket = parse_socket(value).map_err(|e| init.error(e))?,
            "deny_viruses" => deny = parse_flag(key, value).map_err(|e| init.error(e))?,
            "max_size" => max_kib = kib(value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    Ok(Sophie {
        common,
        scanner: Scanner::new(socket, args, scan_metrics!("virus/sophie")),
        deny,
        max_size: max_kib * 1024,
    })
}

impl Plugin for Sophie {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if too_big(&self.common, cx, txn, self.max_size, "max_size")
            || not_multipart(&self.common, cx, txn)
        {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let start = Instant::now();
            let svc = cx.svc.clone();
            let answer = async {
                let file = MessageFile::of(&svc, txn, &std::env::temp_dir()).await?;
                let mut request = file.path.as_os_str().as_encoded_bytes().to_vec();
                if request.contains(&b'\n') {
                    return Err(format!("the message file {:?} has a newline", file.path));
                }
                request.push(b'\n');
                self.scanner
                    .call(&*svc, move |stream| ask(stream, request))
                    .await
            }
            .await;
            let spent = start.elapsed();
            let deny = self.deny;
            match answer {
                Ok(found) => {
                    let found = found.counted(self.scanner.metrics);
                    judge(&self.common, cx, txn, found, &MARKS, |_| deny, spent)
                }
                Err(e) => {
                    self.scanner
                        .args
                        .on_error(&self.common, cx, txn, MARKS.checked, &e, spent)
                }
            }
        })
    }
}

/// Sends the path line, reads the answer line.
async fn ask(mut stream: Box<dyn Stream>, request: Vec<u8>) -> Result<Found, String> {
    let (res, _) = stream.write_all(request).await;
    res.map_err(|e| format!("cannot send to sophie: {e}"))?;
    let mut buf = Vec::with_capacity(MAX_ANSWER);
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(end);
            break;
        }
        if buf.len() >= MAX_ANSWER {
            return Err("sophie's answer is too long".into());
        }
        let (res, b) = stream.read(std::mem::take(&mut buf)).await;
        buf = b;
        match res {
            Ok(0) if buf.is_empty() => {
                return Err("sophie closed the connection without an answer".into())
            }
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("reading sophie's answer: {e}")),
        }
    }
    buf.truncate(MAX_ANSWER);
    parse_answer(&String::from_utf8_lossy(&buf))
}

/// `0`, `1`, `1:NAME`; anything else is an error.
fn parse_answer(answer: &str) -> Result<Found, String> {
    let answer = answer.trim_end_matches('\r');
    if answer == "0" {
        return Ok(Found::Clean);
    }
    if let Some(rest) = answer.strip_prefix('1') {
        if rest.is_empty() || rest.starts_with(':') {
            return Ok(match viruses([rest.trim_start_matches(':')]) {
                Found::Clean => Found::Viruses(vec!["unnamed".into()]),
                found => found,
            });
        }
    }
    let shown: String = super::clean_name(answer);
    if answer.starts_with("-1") {
        return Err(format!("sophie: error '{shown}'"));
    }
    Err(format!("sophie's answer '{shown}' is not one it sends"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::{closed_port, reply_of};
    use crate::virus::verdict::test_kit::{scan, MULTIPART};
    use ringsmtpd_plugin_api::testing::{build, build_err, FakePeer};
    use ringsmtpd_plugin_api::Outcome;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;

    /// A stand-in Sophie: reads the path line, records the file's content, answers `answer`.
    fn sophie(answer: &'static [u8]) -> FakePeer<String> {
        FakePeer::start(move |conn: TcpStream, seen: &Mutex<Vec<String>>| {
            let mut line = String::new();
            if BufReader::new(&conn).read_line(&mut line).is_err() {
                return;
            }
            let content = std::fs::read_to_string(line.trim_end()).unwrap_or_default();
            seen.lock().unwrap().push(content);
            let _ = (&conn).write_all(answer);
        })
    }

    fn plugin(port: u16, more: &str) -> Sophie {
        let line = format!("virus/sophie sophie_socket 127.0.0.1:{port} {more}");
        build(build_plugin, &line, &[]).unwrap()
    }

    #[test]
    fn answers() {
        let peer = sophie(b"0\n");
        let (out, headers, logs) = scan(&plugin(peer.port, ""), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: Checked by SOPHIE on mx.example.test"));
        assert!(logs.iter().any(|l| l.starts_with("pass, clean")));
        // The daemon read the message from the file whose path it was sent.
        assert_eq!(peer.take(), vec![MULTIPART.to_string()]);

        let peer = sophie(b"1:EICAR-AV-Test\n");
        let (out, _, _) = scan(&plugin(peer.port, ""), MULTIPART);
        assert_eq!(
            reply_of(&out),
            (552, "5.7.1".into(), "Virus found: EICAR-AV-Test".into())
        );
        let peer = sophie(b"1:\x1b[31mW32/Evil\r\nX-Injected: 1\n");
        let (out, headers, logs) = scan(&plugin(peer.port, "deny_viruses no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(
            headers.contains("X-Virus-Details: ??31mW32/Evil\r\n"),
            "{headers:?}"
        );
        assert!(!headers.contains("X-Injected"));
        assert!(logs.iter().all(|l| !l.contains('\u{1b}')));
        let peer = sophie(b"1\n");
        let (out, _, _) = scan(&plugin(peer.port, ""), MULTIPART);
        assert_eq!(reply_of(&out).2, "Virus found: unnamed");
    }

    #[test]
    fn errors_defer() {
        for (answer, why) in [
            (
                &b"-1:cannot open file\n"[..],
                "sophie: error '-1:cannot open file'",
            ),
            (b"maybe\n", "is not one it sends"),
            (b"", "without an answer"),
            (&[b'0'; 300][..], "too long"),
        ] {
            let peer = sophie(answer);
            let (out, headers, logs) = scan(&plugin(peer.port, ""), MULTIPART);
            assert_eq!(
                reply_of(&out),
                (
                    451,
                    "4.7.1".into(),
                    "Unable to scan the message now, please try again later".into()
                ),
                "{why}"
            );
            assert!(!headers.contains("X-Virus"));
            assert!(logs.iter().any(|l| l.contains(why)), "{why}: {logs:?}");
        }
        let (out, headers, _) = scan(&plugin(closed_port(), "defer_on_error no"), MULTIPART);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Virus-Checked: not scanned, virus/sophie error"));
        let (out, _, logs) = scan(&plugin(closed_port(), ""), "Subject: x\r\n\r\nhi\r\n");
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l == "skip, not multipart"));
    }

    #[test]
    fn arguments() {
        let p: Sophie = build(build_plugin, "virus/sophie", &[]).unwrap();
        assert_eq!(p.scanner.endpoint, parse_socket(DEFAULT_SOCKET).unwrap());
        assert_eq!(p.max_size, 128 * 1024);
        for (args, why) in [
            ("sophie_socket sophie", "neither"),
            ("max_size x", "not a size"),
            ("frob 1", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("virus/sophie {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
