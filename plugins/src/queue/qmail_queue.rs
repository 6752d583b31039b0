//! # queue/qmail-queue — hand each message to qmail's `qmail-queue`
//!
//! ## Synopsis
//!
//! ```text
//! queue/qmail-queue [<path>] [timeout <seconds>] [loglevel N]
//! queue/qmail-queue
//! queue/qmail-queue /var/qmail/bin/qmail-scanner-queue
//! ```
//!
//! ## Description
//!
//! Runs `qmail-queue` (or a replacement that speaks its protocol: qmail-scanner, simscan,
//! spamdyke's wrappers) once per message, the way qmail-smtpd does
//! (<https://cr.yp.to/qmail.html>, qmail-queue(8)):
//!
//! - the message on the child's **fd 0**: the header fields the core and plugins added
//!   (Received, Authentication-Results, ...), then the message as received, with LF line
//!   endings (qmail's format);
//! - the envelope on the child's **fd 1**, after fd 0 is closed: `F<sender>\0`, then
//!   `T<recipient>\0` for each recipient, then one more `\0` (`F\0` for the null sender `<>`);
//! - its exit code is the answer. `0` means the message is in qmail's queue (qmail-queue
//!   fsyncs it before exiting), and only then does the client get `250 Queued! <time> qp
//!   <pid> <Message-ID>`.
//!
//! Other exit codes become the reply qmail-smtpd gives for them (qmail's `qmail.c`):
//!
//! | exit code | reply |
//! |---|---|
//! | 11 (115) | `554 5.1.3 envelope address too long for qq` |
//! | 31 | `554 5.3.0 mail server permanently rejected message` |
//! | 51 | `451 4.3.0 qq out of memory` |
//! | 52 | `451 4.3.0 qq timeout` |
//! | 53 | `451 4.3.0 qq write error or disk full` |
//! | 54 | `451 4.3.0 qq read error` |
//! | 55 | `451 4.3.0 qq unable to read configuration` |
//! | 56 | `451 4.3.0 qq trouble making network connection` |
//! | 61 | `451 4.3.0 qq trouble in home directory` |
//! | 62–66 | `451 4.3.0 qq trouble creating files in queue` |
//! | 71 | `451 4.3.0 mail server temporarily rejected message` |
//! | 72 | `451 4.4.1 connection to mail server timed out` |
//! | 73 | `451 4.4.1 connection to mail server rejected` |
//! | 74 | `451 4.4.2 communication with mail server failed` |
//! | 81, 91 | `451 4.3.0 qq internal bug` |
//! | 120 | `451 4.3.0 unable to exec qq` |
//! | other 11–40 | `554 5.3.0 qq permanent problem` |
//! | any other | `451 4.3.0 qq temporary problem` |
//! | killed by a signal | `451 4.3.0 qq crashed` |
//! | 0, but the message or envelope could not be written | `451 4.3.0 qq read error` |
//! | not finished within `timeout` | `451 4.3.0 qq timeout` (the child's process group is killed) |
//! | cannot be started | `451 4.3.0 unable to exec qq` |
//!
//! If the spool file cannot be read while the message is being written, the envelope is
//! never written: qmail-queue sees end-of-file before the envelope's final `\0` and aborts
//! without queueing (as its manual says), so a truncated message is never queued.
//!
//! Differences from qpsmtpd: qpsmtpd returns `DECLINED` for every failure (then 451 from
//! the core, or the next queue plugin) and cannot tell permanent from temporary failures;
//! it waits forever for a child that hangs; it does not convert CRLF to LF.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<path>` | `$QMAIL/bin/qmail-queue`, `QMAIL` defaulting to `/var/qmail` | the program; must be an absolute path to an executable file when the plugin is built. The environment variable `QMAILQUEUE`, if set, overrides it (as in qpsmtpd and qmail's own patches). |
//! | `timeout <seconds>` | `25` | the whole exchange, 1–3600 s. Keep it below `plugin_timeout` (default 30): past that the engine answers 4xx itself and the child runs on unsupervised until this timeout kills it. |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `queue`. The child runs from the slow helpers' pool (`ringsmtpd_plugin_api::helper`, apart
//! from the blocking pool that Maildir fsyncs use), never on a worker: the worker awaits the
//! result. Each message holds one helper thread (and a watchdog thread) for as long as the
//! child runs, at most `timeout`.
//!
//! ## Notes
//!
//! None read or written.
//!
//! ## Standards
//!
//! qmail-queue(8); RFC 5321 §6.1 (a 250 takes responsibility for the message); RFC 3463
//! (the enhanced codes, as qmail-smtpd gives them in its texts).
//!
//! ## Security
//!
//! The child inherits the server's user and environment (qmail-queue is normally setuid
//! `qmailq`). Envelope addresses are parsed SMTP paths: they contain no `\0`. The child runs
//! in a process group of its own, so a timeout kills any helper it started too.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::local::{
    check_executable, for_each_chunk, run_child, txn_message_id, ChildResult, ChildSpec, FeedError,
    Handoff, Message, ToLf, CHUNK,
};
use ringsmtpd_plugin_api::args::parse_timeout;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Outcome, Plugin, PluginInit, Reply, Step,
    Transaction,
};

/// The default `timeout`: below the engine's default `plugin_timeout` of 30 s, so the plugin,
/// not the engine, decides the reply and the child is killed before the client is answered.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);

/// The `queue/qmail-queue` plugin.
pub struct QmailQueue {
    common: Common,
    program: PathBuf,
    timeout: Duration,
}

/// Builds `queue/qmail-queue` from its config line and the environment (`QMAILQUEUE`, `QMAIL`).
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let plugin = build(
        init,
        std::env::var_os("QMAILQUEUE"),
        std::env::var_os("QMAIL"),
    )?;
    Ok(Box::new(plugin))
}

/// [`new`] with the environment passed in, for tests.
fn build(
    init: &PluginInit<'_>,
    qmailqueue: Option<OsString>,
    qmail: Option<OsString>,
) -> Result<QmailQueue, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut program: Option<PathBuf> = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut it = rest.into_iter();
    while let Some(arg) = it.next() {
        match arg {
            "timeout" => {
                let v = it
                    .next()
                    .ok_or_else(|| init.error("argument 'timeout' needs a value"))?;
                timeout = parse_timeout(v).map_err(|e| init.error(e))?;
            }
            path if program.is_none() && path.starts_with('/') => {
                program = Some(PathBuf::from(path));
            }
            other if program.is_none() => {
                return Err(init.error(format!(
                    "the qmail-queue path must be absolute, not '{other}'"
                )))
            }
            other => return Err(init.unknown(other)),
        }
    }
    let program = match qmailqueue.filter(|v| !v.is_empty()) {
        Some(env) => {
            let p = PathBuf::from(env);
            if !p.is_absolute() {
                return Err(init.error(format!(
                    "QMAILQUEUE must be an absolute path, not '{}'",
                    p.display()
                )));
            }
            p
        }
        None => program.unwrap_or_else(|| {
            let home = qmail
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| OsString::from("/var/qmail"));
            Path::new(&home).join("bin/qmail-queue")
        }),
    };
    check_executable(&program).map_err(|e| init.error(e))?;
    Ok(QmailQueue {
        common,
        program,
        timeout,
    })
}

impl Plugin for QmailQueue {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }

    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(async move {
            let job = Job {
                program: self.program.clone(),
                timeout: self.timeout,
                envelope: envelope(txn),
            };
            let handoff = Handoff {
                common: &self.common,
                program: &self.program.display(),
                timeout: self.timeout,
                verdict,
                panicked: reply(451, "4.3.0", "qq temporary problem"),
                cannot_run: reply(451, "4.3.0", "unable to exec qq"),
            };
            let result = match handoff.run(cx, txn, move |msg| job.run(msg)).await {
                Ok(result) => result,
                Err(refused) => return refused,
            };
            let secs = cx
                .svc
                .now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            let id = txn_message_id(&txn.added_headers, &txn.body).unwrap_or_default();
            Outcome::Ok(Some(Cow::Owned(
                format!("Queued! {secs} qp {} {id}", result.pid)
                    .trim_end()
                    .to_string(),
            )))
        })
    }
}

/// `F<sender>\0T<rcpt>\0...T<rcpt>\0\0` (qmail-queue(8)).
fn envelope(txn: &Transaction) -> Vec<u8> {
    let mut env = Vec::with_capacity(
        4 + txn.sender.as_str().len()
            + txn
                .recipients
                .iter()
                .map(|r| r.addr.as_str().len() + 2)
                .sum::<usize>(),
    );
    env.push(b'F');
    env.extend_from_slice(txn.sender.as_str().as_bytes());
    env.push(0);
    for r in &txn.recipients {
        env.push(b'T');
        env.extend_from_slice(r.addr.as_str().as_bytes());
        env.push(0);
    }
    env.push(0);
    env
}

fn reply(code: u16, enhanced: &'static str, text: &'static str) -> Reply {
    Reply::new(code, enhanced, text)
}

/// `None` if the message is queued; else the reply, as qmail-smtpd gives it.
fn verdict(r: &ChildResult) -> Option<Reply> {
    if r.timed_out {
        return Some(reply(451, "4.3.0", "qq timeout"));
    }
    let Some(code) = r.status.code() else {
        return Some(reply(451, "4.3.0", "qq crashed"));
    };
    if code == 0 && r.feed_error.is_none() {
        return None;
    }
    Some(match code {
        // Exit 0 although we could not write everything: never trust it (qmail's flagerr).
        0 => reply(451, "4.3.0", "qq read error"),
        _ => exit_code_reply(code),
    })
}

/// qmail's `qmail_close` table, as qmail-smtpd answers it (`D` texts with 554, `Z` with 451).
fn exit_code_reply(code: i32) -> Reply {
    match code {
        11 | 115 => reply(554, "5.1.3", "envelope address too long for qq"),
        31 => reply(554, "5.3.0", "mail server permanently rejected message"),
        51 => reply(451, "4.3.0", "qq out of memory"),
        52 => reply(451, "4.3.0", "qq timeout"),
        53 => reply(451, "4.3.0", "qq write error or disk full"),
        54 => reply(451, "4.3.0", "qq read error"),
        55 => reply(451, "4.3.0", "qq unable to read configuration"),
        56 => reply(451, "4.3.0", "qq trouble making network connection"),
        61 => reply(451, "4.3.0", "qq trouble in home directory"),
        62..=66 => reply(451, "4.3.0", "qq trouble creating files in queue"),
        71 => reply(451, "4.3.0", "mail server temporarily rejected message"),
        72 => reply(451, "4.4.1", "connection to mail server timed out"),
        73 => reply(451, "4.4.1", "connection to mail server rejected"),
        74 => reply(451, "4.4.2", "communication with mail server failed"),
        81 | 91 => reply(451, "4.3.0", "qq internal bug"),
        120 => reply(451, "4.3.0", "unable to exec qq"),
        11..=40 => reply(554, "5.3.0", "qq permanent problem"),
        _ => reply(451, "4.3.0", "qq temporary problem"),
    }
}

/// What the helper thread does for one message. Owns everything it touches.
struct Job {
    program: PathBuf,
    timeout: Duration,
    envelope: Vec<u8>,
}

impl Job {
    fn run(&self, msg: &Message) -> std::io::Result<ChildResult> {
        let spec = ChildSpec {
            program: &self.program,
            args: &[],
            timeout: self.timeout,
            fd1_input: true,
        };
        run_child(&spec, |stdin, fd1| {
            let mut out = BufWriter::with_capacity(CHUNK, stdin);
            let mut lf = ToLf::default();
            for_each_chunk(msg.added_headers.as_bytes(), &msg.body, |chunk| {
                lf.write(&mut out, chunk)
            })?;
            lf.finish(&mut out).map_err(FeedError::Sink)?;
            out.flush().map_err(FeedError::Sink)?;
            // Close fd 0 first: qmail-queue reads the message to its end, then the envelope.
            drop(out);
            let mut fd1 = fd1.ok_or_else(|| FeedError::Sink(std::io::ErrorKind::Other.into()))?;
            fd1.write_all(&self.envelope).map_err(FeedError::Sink)
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

    /// A TEST PROGRAM, not qmail: no qmail package exists here. It implements qmail-queue's
    /// documented fd protocol (qmail-queue(8)): reads the message from fd 0 to its end, then
    /// the envelope from fd 1; an envelope that does not end in `\0\0` after `F...\0` and at
    /// least one `T...\0` exits 91 (qmail's "envelope format error") without queueing. It
    /// "queues" by writing `message` and `envelope` into its directory, then exits with
    /// `exit_code` (or sleeps for a minute if `exit_code` is `None`: a hung qmail-queue).
    fn fake_qmail_queue(dir: &Path, exit_code: Option<i32>) -> PathBuf {
        let path = dir.join("qmail-queue");
        let tail = match exit_code {
            Some(code) => format!("sys.exit({code})"),
            None => "time.sleep(60)".to_string(),
        };
        let script = format!(
            r#"#!/usr/bin/env python3
# Fake qmail-queue for ringsmtpd's tests (not qmail): fd 0 = message, fd 1 = envelope.
import os, re, sys, time
msg = os.fdopen(0, "rb").read()
env = os.fdopen(1, "rb").read()
if not re.fullmatch(rb"F[^\0]*\0(T[^\0]+\0)+\0", env, re.S):
    sys.exit(91)
d = {dir:?}
open(os.path.join(d, "message"), "wb").write(msg)
open(os.path.join(d, "envelope"), "wb").write(env)
{tail}
"#
        );
        executable(&path, &script);
        path
    }

    fn build_with(
        args: &[&str],
        qmailqueue: Option<&str>,
        qmail: Option<&str>,
    ) -> Result<QmailQueue, ConfigError> {
        let line = format!("queue/qmail-queue {}", args.join(" "));
        let env = |v: Option<&str>| v.map(OsString::from);
        testing::build(|init| build(init, env(qmailqueue), env(qmail)), &line, &[])
    }

    const MESSAGE: &str = "Subject: hi\r\nMessage-ID: <abc@example.org>\r\n\r\nline 1\r\n.dot\r\n";

    fn plugin(dir: &Path, exit_code: Option<i32>) -> QmailQueue {
        let program = fake_qmail_queue(dir, exit_code);
        build_with(&[program.to_str().unwrap()], None, None).unwrap()
    }

    #[test]
    fn message_on_fd0_envelope_on_fd1_then_250() {
        let d = TempDir::new("ok");
        let p = plugin(d.path(), Some(0));
        let mut t = txn(
            "a@example.org",
            &["b@example.com", "c@example.net"],
            MESSAGE,
        );
        let o = queue(&p, &mut t);
        match &o {
            Outcome::Ok(Some(m)) => {
                assert!(m.starts_with("Queued! "), "{m}");
                assert!(m.contains(" qp "), "{m}");
                assert!(m.ends_with(" <abc@example.org>"), "{m}");
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(
            fs::read(d.path().join("message")).unwrap(),
            b"Received: from x\n by y; now\nSubject: hi\nMessage-ID: <abc@example.org>\n\nline 1\n.dot\n"
        );
        assert_eq!(
            fs::read(d.path().join("envelope")).unwrap(),
            b"Fa@example.org\0Tb@example.com\0Tc@example.net\0\0"
        );
        // The transaction got its message back.
        assert_eq!(t.body.mem, MESSAGE.as_bytes());
        assert!(t.added_headers.starts_with("Received:"));
    }

    #[test]
    fn null_sender_and_spooled_message() {
        let d = TempDir::new("spool");
        let p = plugin(d.path(), Some(0));
        let mut t = txn("", &["b@example.com"], MESSAGE);
        let mut big = String::from("Subject: big\r\n\r\n");
        while big.len() < 3 * CHUNK {
            big.push_str("0123456789abcdef\r\n");
        }
        spool(&mut t.body, &d.path().join("spool-file"), big.as_bytes());
        let o = queue(&p, &mut t);
        assert!(matches!(o, Outcome::Ok(_)), "{o:?}");
        assert_eq!(
            fs::read(d.path().join("envelope")).unwrap(),
            b"F\0Tb@example.com\0\0"
        );
        let msg = fs::read(d.path().join("message")).unwrap();
        let expected = format!(
            "Received: from x\n by y; now\n{}",
            big.replace("\r\n", "\n")
        );
        assert_eq!(msg.len(), expected.len());
        assert!(msg == expected.as_bytes());
        assert!(t.body.spool.is_some());
    }

    #[test]
    fn every_documented_exit_code_gives_qmail_smtpds_reply() {
        let cases: &[(i32, u16, &str, &str)] = &[
            (11, 554, "5.1.3", "envelope address too long for qq"),
            (31, 554, "5.3.0", "mail server permanently rejected message"),
            (51, 451, "4.3.0", "qq out of memory"),
            (52, 451, "4.3.0", "qq timeout"),
            (53, 451, "4.3.0", "qq write error or disk full"),
            (54, 451, "4.3.0", "qq read error"),
            (55, 451, "4.3.0", "qq unable to read configuration"),
            (56, 451, "4.3.0", "qq trouble making network connection"),
            (61, 451, "4.3.0", "qq trouble in home directory"),
            (62, 451, "4.3.0", "qq trouble creating files in queue"),
            (63, 451, "4.3.0", "qq trouble creating files in queue"),
            (64, 451, "4.3.0", "qq trouble creating files in queue"),
            (65, 451, "4.3.0", "qq trouble creating files in queue"),
            (66, 451, "4.3.0", "qq trouble creating files in queue"),
            (71, 451, "4.3.0", "mail server temporarily rejected message"),
            (72, 451, "4.4.1", "connection to mail server timed out"),
            (73, 451, "4.4.1", "connection to mail server rejected"),
            (74, 451, "4.4.2", "communication with mail server failed"),
            (81, 451, "4.3.0", "qq internal bug"),
            (91, 451, "4.3.0", "qq internal bug"),
            (20, 554, "5.3.0", "qq permanent problem"),
            (100, 451, "4.3.0", "qq temporary problem"),
        ];
        let d = TempDir::new("codes");
        for &(code, smtp, enhanced, text) in cases {
            let sub = d.path().join(code.to_string());
            fs::create_dir(&sub).unwrap();
            let p = plugin(&sub, Some(code));
            let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
            let o = queue(&p, &mut t);
            assert_eq!(
                o,
                Outcome::Done(Some(Reply::new(smtp, enhanced, text))),
                "exit code {code}"
            );
            // The fake really got the whole protocol (it writes only after a valid envelope).
            assert!(sub.join("envelope").exists(), "exit code {code}");
        }
        // The mapping of the codes the fake cannot easily produce.
        assert_eq!(exit_code_reply(115).code, 554);
        assert_eq!(exit_code_reply(120).lines, vec!["unable to exec qq"]);
    }

    #[test]
    fn hung_qmail_queue_is_killed_at_the_timeout() {
        let d = TempDir::new("hang");
        let mut p = plugin(d.path(), None);
        p.timeout = Duration::from_millis(500);
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        let started = Instant::now();
        let o = queue(&p, &mut t);
        assert_eq!(
            o,
            Outcome::Done(Some(Reply::new(451, "4.3.0", "qq timeout")))
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(t.body.mem, MESSAGE.as_bytes());
    }

    #[test]
    fn child_that_dies_or_crashes_is_never_a_250() {
        let d = TempDir::new("die");
        // Exits at once without reading a large message: EPIPE for us, its code for the client.
        let early = d.path().join("early");
        executable(&early, "#!/bin/sh\nexit 53\n");
        let p = build_with(&[early.to_str().unwrap()], None, None).unwrap();
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        t.body.mem = vec![b'x'; 1 << 20];
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(
                451,
                "4.3.0",
                "qq write error or disk full"
            )))
        );
        // Exits 0 without reading anything: we could not write, so 0 is not believed.
        let liar = d.path().join("liar");
        executable(&liar, "#!/bin/sh\nexit 0\n");
        let p = build_with(&[liar.to_str().unwrap()], None, None).unwrap();
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(451, "4.3.0", "qq read error")))
        );
        // Killed by a signal.
        let crash = d.path().join("crash");
        executable(&crash, "#!/bin/sh\ncat >/dev/null\nkill -SEGV $$\n");
        let p = build_with(&[crash.to_str().unwrap()], None, None).unwrap();
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(451, "4.3.0", "qq crashed")))
        );
        // Removed after the plugin was built: cannot exec.
        fs::remove_file(&crash).unwrap();
        assert_eq!(
            queue(&p, &mut t),
            Outcome::Done(Some(Reply::new(451, "4.3.0", "unable to exec qq")))
        );
    }

    #[test]
    fn unreadable_spool_never_completes_the_envelope() {
        let d = TempDir::new("badspool");
        let p = plugin(d.path(), Some(0));
        let mut t = txn("a@example.org", &["b@example.com"], MESSAGE);
        t.body.spool = unreadable_spool(d.path());
        let o = queue(&p, &mut t);
        // The fake saw an envelope without its final \0 and exited 91: nothing queued.
        assert_eq!(
            o,
            Outcome::Done(Some(Reply::new(451, "4.3.0", "qq internal bug")))
        );
        assert!(!d.path().join("message").exists());
        t.body.spool = None;
    }

    #[test]
    fn path_argument_environment_and_errors() {
        let d = TempDir::new("args");
        let prog = fake_qmail_queue(d.path(), Some(0));
        let prog_s = prog.to_str().unwrap();
        // QMAIL gives the default path.
        let home = d.path().join("qmail");
        fs::create_dir_all(home.join("bin")).unwrap();
        fs::copy(&prog, home.join("bin/qmail-queue")).unwrap();
        let p = build_with(&[], None, Some(home.to_str().unwrap())).unwrap();
        assert_eq!(p.program, home.join("bin/qmail-queue"));
        assert_eq!(p.timeout, DEFAULT_TIMEOUT);
        // Without QMAIL: /var/qmail, which is not here.
        let e = build_with(&[], None, None).err().unwrap();
        assert!(e.reason.contains("/var/qmail/bin/qmail-queue"), "{e}");
        // An argument, overridden by QMAILQUEUE.
        let p = build_with(&["/nonexistent/qq"], Some(prog_s), None).unwrap();
        assert_eq!(p.program, prog);
        let p = build_with(&[prog_s, "timeout", "7", "loglevel", "3"], None, None).unwrap();
        assert_eq!(
            (p.program.as_path(), p.timeout),
            (prog.as_path(), Duration::from_secs(7))
        );
        // Errors, each naming the plugin line.
        for (args, env, needle) in [
            (&["relative/qq"][..], None, "must be absolute"),
            (&[prog_s, "extra"], None, "unknown argument 'extra'"),
            (&[prog_s, "timeout"], None, "needs a value"),
            (&[prog_s, "timeout", "0"], None, "timeout must be"),
            (&["/etc/passwd"], None, "not an executable"),
            (&[], Some("relative"), "QMAILQUEUE must be an absolute path"),
            (&[prog_s, "reject"], None, "needs a value"),
        ] {
            let e = build_with(args, env, None).err().unwrap();
            assert!(e.reason.contains(needle), "{args:?}: {e}");
            assert_eq!(e.file, "plugins");
            assert!(e.reason.starts_with("queue/qmail-queue: "), "{e}");
        }
    }

    #[test]
    fn envelope_format() {
        let t = txn("a@b.example", &["c@d.example", "postmaster"], MESSAGE);
        assert_eq!(envelope(&t), b"Fa@b.example\0Tc@d.example\0Tpostmaster\0\0");
    }
}
