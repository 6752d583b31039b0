//! # queue/exim-bsmtp — hand each message to Exim as batched SMTP
//!
//! ## Synopsis
//!
//! ```text
//! queue/exim-bsmtp [[exim_path] <path>] [timeout <seconds>] [loglevel N]
//! queue/exim-bsmtp
//! queue/exim-bsmtp exim_path /usr/sbin/exim4
//! queue/exim-bsmtp /usr/local/sbin/exim
//! ```
//!
//! ## Description
//!
//! Runs `<exim> -bS` once per message and writes it batched SMTP on its standard input
//! (Exim's specification, "Batched SMTP input"):
//!
//! ```text
//! MAIL FROM:<sender>
//! RCPT TO:<recipient>          (one per recipient)
//! DATA
//! <the added headers and the message, LF line endings, a leading "." doubled>
//! .
//! QUIT
//! ```
//!
//! Exim answers nothing while all goes well and exits 0 once the message is in its spool
//! (Exim fsyncs its spool files); only then does the client get `250 Queued! <Message-ID>`.
//! On an error Exim writes the SMTP reply it would have sent (`501 domain missing or
//! malformed`, then lines saying where) to its standard output, abandons the batch and exits
//! non-zero. That reply is relayed: its 4xx or 5xx code and text, `421` becoming `451` (the
//! client is not being disconnected). A non-zero exit without such a line, a crash, or no
//! exit within `timeout` (Exim's process group is then killed) gives `451 4.3.0`.
//!
//! If the spool file cannot be read while the message is being written, the final `.` is
//! never written: Exim sees the end of its input inside DATA and queues nothing.
//!
//! Exim takes the sender from `MAIL FROM` only if the server's user is in Exim's
//! `trusted_users` (root always is); otherwise it uses the server's user as the sender.
//! ESMTP parameters (SIZE, BODY, SMTPUTF8, DSN) are not passed on: BSMTP has no EHLO.
//!
//! Differences from qpsmtpd: qpsmtpd also sends `HELO <hostname>`, writes the batch to a
//! temporary file first, returns `DENY` even for a 4xx from Exim and `DECLINED` for other
//! failures, waits forever for Exim, and passes CRLF line endings through.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `exim_path <path>` or `<path>` | the first of `/usr/sbin/exim4`, `/usr/sbin/exim`, `/usr/sbin/rsmtp`, `/usr/bin/exim` that exists | the Exim binary (or a wrapper that adds options such as `-C` or `-odq`); `-bS` is added. Must be an absolute path to an executable file when the plugin is built. |
//! | `timeout <seconds>` | `25` | the whole exchange, 1–3600 s; keep it below `plugin_timeout` (default 30). |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `queue`. Exim runs from the slow helpers' pool (`ringsmtpd_plugin_api::helper`, apart from
//! the blocking pool that Maildir fsyncs use), never on a worker; each message holds a helper
//! thread and a watchdog thread while Exim runs, at most `timeout`. Exim's output goes to
//! an in-memory file, so its background delivery process, which keeps that output open, never
//! holds the reply back.
//!
//! ## Notes
//!
//! None read or written.
//!
//! ## Standards
//!
//! Exim's specification, chapter "SMTP processing", "Batched SMTP input"; RFC 5321 §4.5.2
//! (transparency: the doubled leading dot), §6.1.
//!
//! ## Security
//!
//! Exim runs as the server's user with its environment; Exim's own setuid handling applies.
//! Addresses are parsed SMTP paths: no CR, LF or `>` can break a BSMTP line.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::local::{
    check_executable, for_each_chunk, is_enhanced, run_child, txn_message_id, ChildResult,
    ChildSpec, FeedError, Handoff, Message, ToLf, CHUNK,
};
use ringsmtpd_plugin_api::args::parse_timeout;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Outcome, Plugin, PluginInit, Reply, Step,
    Transaction,
};

/// Where Exim is on Debian (`exim4`), in a source install (`exim`), or as Exim's BSMTP alias.
const DEFAULT_PATHS: &[&str] = &[
    "/usr/sbin/exim4",
    "/usr/sbin/exim",
    "/usr/sbin/rsmtp",
    "/usr/bin/exim",
];

/// The default `timeout`: below the engine's default `plugin_timeout` of 30 s.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

/// The `queue/exim-bsmtp` plugin.
pub struct EximBsmtp {
    common: Common,
    exim: PathBuf,
    timeout: Duration,
}

/// Builds `queue/exim-bsmtp` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init, DEFAULT_PATHS)?))
}

/// [`new`] with the default search list passed in, for tests.
fn build(init: &PluginInit<'_>, defaults: &[&str]) -> Result<EximBsmtp, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut exim: Option<PathBuf> = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg {
            "exim_path" | "timeout" => {
                let v = it
                    .next()
                    .ok_or_else(|| init.error(format!("argument '{arg}' needs a value")))?;
                if arg == "timeout" {
                    timeout = parse_timeout(v).map_err(|e| init.error(e))?;
                } else if exim.is_some() {
                    return Err(init.error("exim_path given twice"));
                } else {
                    exim = Some(absolute(v).map_err(|e| init.error(e))?);
                }
            }
            path if exim.is_none() && path.starts_with('/') => exim = Some(PathBuf::from(path)),
            other => return Err(init.unknown(other)),
        }
    }
    let exim = match exim {
        Some(p) => p,
        None => defaults
            .iter()
            .map(PathBuf::from)
            .find(|p| check_executable(p).is_ok())
            .ok_or_else(|| {
                init.error(format!(
                    "no Exim found at {}: give its path with exim_path",
                    defaults.join(", ")
                ))
            })?,
    };
    check_executable(&exim).map_err(|e| init.error(e))?;
    Ok(EximBsmtp {
        common,
        exim,
        timeout,
    })
}

fn absolute(s: &str) -> Result<PathBuf, String> {
    if s.starts_with('/') {
        Ok(PathBuf::from(s))
    } else {
        Err(format!("exim_path must be absolute, not '{s}'"))
    }
}

impl Plugin for EximBsmtp {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(async move {
            let job = Job {
                exim: self.exim.clone(),
                timeout: self.timeout,
                envelope: envelope(txn),
            };
            let handoff = Handoff {
                common: &self.common,
                program: &format_args!("{} -bS", self.exim.display()),
                timeout: self.timeout,
                verdict,
                panicked: Reply::new(451, "4.3.0", "Queue error (internal)"),
                cannot_run: Reply::new(451, "4.3.0", "Queue error (cannot run exim)"),
            };
            if let Err(refused) = handoff.run(cx, txn, move |msg| job.run(msg)).await {
                return refused;
            }
            let text = match txn_message_id(&txn.added_headers, &txn.body) {
                Some(id) => format!("Queued! {id}"),
                None => "Queued!".to_string(),
            };
            Outcome::Ok(Some(Cow::Owned(text)))
        })
    }
}

/// The BSMTP lines before the message.
fn envelope(txn: &Transaction) -> Vec<u8> {
    let mut env = format!("MAIL FROM:<{}>\n", txn.sender.as_str()).into_bytes();
    for r in &txn.recipients {
        env.extend_from_slice(format!("RCPT TO:<{}>\n", r.addr.as_str()).as_bytes());
    }
    env.extend_from_slice(b"DATA\n");
    env
}

/// `None` if Exim took the message; else the reply.
fn verdict(r: &ChildResult) -> Option<Reply> {
    if r.timed_out {
        return Some(Reply::new(451, "4.3.0", "Queue error (exim timed out)"));
    }
    let reported = exim_reply(&r.output);
    match (r.status.code(), reported) {
        (Some(0), None) if r.feed_error.is_none() => None,
        (_, Some(reply)) => Some(reply),
        (None, None) => Some(Reply::new(451, "4.3.0", "Queue error (exim crashed)")),
        (Some(_), None) => Some(Reply::new(451, "4.3.0", "Queue error (exim failed)")),
    }
}

/// The first `NNN text` line of Exim's output (its BSMTP error report), as our reply.
fn exim_reply(output: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(output);
    text.lines().find_map(|line| {
        let line = line.trim_end();
        let (code, rest) = line.split_once(' ')?;
        if code.len() != 3 {
            return None;
        }
        let code: u16 = code.parse().ok().filter(|c| (400..600).contains(c))?;
        let code = if code == 421 { 451 } else { code };
        let rest: String = rest.chars().filter(|c| !c.is_control()).take(400).collect();
        let (enhanced, text) = match rest.split_once(' ') {
            Some((e, t)) if is_enhanced(e, code) => (e.to_string(), t.to_string()),
            _ => (
                if code >= 500 { "5.3.0" } else { "4.3.0" }.to_string(),
                rest.clone(),
            ),
        };
        Some(Reply {
            code,
            enhanced: Some(Cow::Owned(enhanced)),
            lines: vec![Cow::Owned(text)],
            disconnect: false,
        })
    })
}

/// Doubles a `.` at the start of every line (RFC 5321 §4.5.2); remembers whether the last
/// byte written ended a line.
struct DotStuff<W: Write> {
    inner: W,
    at_line_start: bool,
}

impl<W: Write> Write for DotStuff<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let len = data.len();
        while !data.is_empty() {
            if self.at_line_start && data[0] == b'.' {
                self.inner.write_all(b".")?;
            }
            let end = memchr::memchr(b'\n', data).map_or(data.len(), |i| i + 1);
            self.inner.write_all(&data[..end])?;
            self.at_line_start = data[end - 1] == b'\n';
            data = &data[end..];
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the helper thread does for one message. Owns everything it touches.
struct Job {
    exim: PathBuf,
    timeout: Duration,
    envelope: Vec<u8>,
}

impl Job {
    fn run(&self, msg: &Message) -> io::Result<ChildResult> {
        let spec = ChildSpec {
            program: Path::new(&self.exim),
            args: &["-bS"],
            timeout: self.timeout,
            fd1_input: false,
        };
        run_child(&spec, |stdin, _| {
            let mut out = BufWriter::with_capacity(CHUNK, stdin);
            out.write_all(&self.envelope).map_err(FeedError::Sink)?;
            let mut data = DotStuff {
                inner: out,
                at_line_start: true,
            };
            let mut lf = ToLf::default();
            for_each_chunk(msg.added_headers.as_bytes(), &msg.body, |chunk| {
                lf.write(&mut data, chunk)
            })?;
            lf.finish(&mut data).map_err(FeedError::Sink)?;
            let mut out = data.inner;
            if !data.at_line_start {
                out.write_all(b"\n").map_err(FeedError::Sink)?;
            }
            out.write_all(b".\nQUIT\n").map_err(FeedError::Sink)?;
            out.flush().map_err(FeedError::Sink)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::test_util::{queue, txn, unreadable_spool};
    use ringsmtpd_plugin_api::testing::{self, executable, spool, TempDir};
    use std::fs;
    use std::time::Instant;

    /// A TEST PROGRAM standing in for Exim (the real one is tested end to end): it checks it
    /// was called with `-bS`, saves its standard input to `input` in its directory, and then
    /// runs `tail` (shell code: print an error report, exit with a code, hang).
    fn fake_exim(dir: &Path, tail: &str) -> PathBuf {
        let path = dir.join("exim");
        let script = format!(
            "#!/bin/sh\n# Fake exim for ringsmtpd's tests.\n[ \"$1\" = -bS ] || exit 64\ncat > {}/input\n{tail}\n",
            dir.display()
        );
        executable(&path, &script);
        path
    }

    fn build_with(args: &[&str], defaults: &[&str]) -> Result<EximBsmtp, ConfigError> {
        let line = format!("queue/exim-bsmtp {}", args.join(" "));
        testing::build(|init| build(init, defaults), &line, &[])
    }

    fn plugin(dir: &Path, tail: &str) -> EximBsmtp {
        let exim = fake_exim(dir, tail);
        build_with(&["exim_path", exim.to_str().unwrap()], &[]).unwrap()
    }

    const MESSAGE: &str =
        "Subject: hi\r\nMessage-ID: <abc@example.org>\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n";

    #[test]
    fn bsmtp_batch_byte_for_byte_then_250() {
        let d = TempDir::new("ok");
        let p = plugin(d.path(), "exit 0");
        let mut t = txn(
            "a@example.org",
            &["b@example.com", "c@example.net"],
            MESSAGE,
        );
        assert_eq!(queue(&p, &mut t), Outcome::ok("Queued! <abc@example.org>"));
        assert_eq!(
            fs::read_to_string(d.path().join("input")).unwrap(),
            "MAIL FROM:<a@example.org>\nRCPT TO:<b@example.com>\nRCPT TO:<c@example.net>\nDATA\n\
             Received: from x\n by y; now\nSubject: hi\nMessage-ID: <abc@example.org>\n\n\
             ..leading dot\n...two\n..\nend\n.\nQUIT\n"
        );
        assert_eq!(t.body.mem, MESSAGE.as_bytes());
    }

    #[test]
    fn spooled_message_and_null_sender() {
        let d = TempDir::new("spool");
        let p = plugin(d.path(), "exit 0");
        let mut t = txn("", &["b@example.com"], MESSAGE);
        // Dots at the start of lines on both sides of a read boundary.
        let mut big = String::from("Subject: big\r\n\r\n");
        while big.len() < CHUNK - 1 {
            big.push('x');
        }
        big.push_str("\r\n.dot at the boundary\r\n");
        for _ in 0..2000 {
            big.push_str(".line\r\nplain\r\n");
        }
        spool(&mut t.body, &d.path().join("spool"), big.as_bytes());
        t.added_headers.clear();
        assert_eq!(queue(&p, &mut t), Outcome::ok("Queued!"));
        let input = fs::read_to_string(d.path().join("input")).unwrap();
        let expected_data: String = big
            .replace("\r\n", "\n")
            .split_inclusive('\n')
            .map(|l| {
                if l.starts_with('.') {
                    format!(".{l}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert_eq!(
            input,
            format!("MAIL FROM:<>\nRCPT TO:<b@example.com>\nDATA\n{expected_data}.\nQUIT\n")
        );
    }

    #[test]
    fn exim_error_reports_and_exit_codes() {
        let cases: &[(&str, u16, &str, &str)] = &[
            (
                "printf '501 domain missing or malformed\\nTransaction started in line 0\\nError detected in line 2\\n'; echo 'An error was detected' >&2; exit 2",
                501,
                "5.3.0",
                "domain missing or malformed",
            ),
            (
                "printf '421 Lost incoming connection\\nError detected in line 7\\n'; exit 2",
                451,
                "4.3.0",
                "Lost incoming connection",
            ),
            (
                "printf '550 5.7.1 Administrative prohibition\\n'; exit 1",
                550,
                "5.7.1",
                "Administrative prohibition",
            ),
            ("echo 'some noise' >&2; exit 1", 451, "4.3.0", "Queue error (exim failed)"),
            ("kill -KILL $$", 451, "4.3.0", "Queue error (exim crashed)"),
            // Exit 0 with an error report is still an error.
            ("echo '452 spool full'; exit 0", 452, "4.3.0", "spool full"),
        ];
        for (i, &(tail, code, enhanced, text)) in cases.iter().enumerate() {
            let d = TempDir::new(&format!("err{i}"));
            let p = plugin(d.path(), tail);
            let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
            assert_eq!(
                queue(&p, &mut t),
                Outcome::Done(Some(Reply::new(code, enhanced, text))),
                "{tail}"
            );
        }
    }

    #[test]
    fn hung_exim_is_killed_and_unreadable_spool_never_ends_data() {
        let d = TempDir::new("hang");
        let mut p = plugin(d.path(), "sleep 60");
        p.timeout = Duration::from_millis(500);
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        let started = Instant::now();
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(
                451,
                "4.3.0",
                "Queue error (exim timed out)"
            )))
        );
        assert!(started.elapsed() < Duration::from_secs(20));

        let d = TempDir::new("badspool");
        let p = plugin(d.path(), "exit 0");
        t.body.spool = unreadable_spool(d.path());
        // Exim would report the EOF inside DATA; even this fake, which exits 0, gets no 250.
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(451, "4.3.0", "Queue error (exim failed)")))
        );
        let input = fs::read_to_string(d.path().join("input")).unwrap();
        assert!(
            input.ends_with("DATA\nReceived: from x\n by y; now\n"),
            "{input:?}"
        );
        t.body.spool = None;
    }

    #[test]
    fn arguments_and_errors() {
        let d = TempDir::new("args");
        let exim = fake_exim(d.path(), "exit 0");
        let exim_s = exim.to_str().unwrap();
        let p = build_with(&[exim_s, "timeout", "9"], &[]).unwrap();
        assert_eq!(
            (p.exim.as_path(), p.timeout),
            (exim.as_path(), Duration::from_secs(9))
        );
        let p = build_with(&["exim_path", exim_s, "loglevel", "2"], &[]).unwrap();
        assert_eq!(
            (p.exim.as_path(), p.timeout),
            (exim.as_path(), DEFAULT_TIMEOUT)
        );
        // The first default that exists.
        let p = build_with(&[], &["/nonexistent/exim4", exim_s]).unwrap();
        assert_eq!(p.exim, exim);
        let e = build_with(&[], &["/nonexistent/exim4"]).err().unwrap();
        assert!(
            e.reason.contains("no Exim found at /nonexistent/exim4"),
            "{e}"
        );
        for (args, needle) in [
            (&["exim_path"][..], "needs a value"),
            (&["exim_path", "exim4"], "must be absolute"),
            (&["exim_path", exim_s, "exim_path", exim_s], "given twice"),
            (&[exim_s, "other"], "unknown argument 'other'"),
            (&["relative"], "unknown argument 'relative'"),
            (&["/etc/passwd"], "not an executable"),
            (&[exim_s, "timeout", "-1"], "timeout must be"),
        ] {
            let e = build_with(args, &[]).err().unwrap();
            assert!(e.reason.contains(needle), "{args:?}: {e}");
            assert!(e.reason.starts_with("queue/exim-bsmtp: "), "{e}");
        }
    }

    #[test]
    fn dot_stuffing_across_writes() {
        let mut d = DotStuff {
            inner: Vec::new(),
            at_line_start: true,
        };
        for chunk in [&b".a\n"[..], b".", b"b\n", b"c.\n", b"", b"..\n"] {
            d.write_all(chunk).unwrap();
        }
        assert_eq!(d.inner, b"..a\n..b\nc.\n...\n");
        assert!(d.at_line_start);
        assert!(exim_reply(b"Transaction started in line 0\n").is_none());
        assert!(exim_reply(b"2500 x\n").is_none());
    }
}
