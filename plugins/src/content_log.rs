//! # content_log — append every message, with its envelope, to an archive file
//!
//! ## Synopsis
//!
//! ```text
//! content_log [loglevel N]
//! ```
//!
//! and in the config directory, optionally:
//!
//! ```text
//! content_log_enabled   true          # true|1|yes, false|0|no; default true
//! content_log_file      mail/%Y%m%d   # strftime pattern, local time; default mail/%Y%m%d
//! ```
//!
//! ## Description
//!
//! At `data_post`, appends the message to the file named by `content_log_file` expanded with
//! strftime in local time at the moment of writing (the default gives one file per day,
//! `mail/20261121`, relative to the server's working directory). For debugging other plugins
//! or keeping an archive. The file is an **mbox** in the `mboxrd` form, so mail tools can
//! read it and split it back into messages (qpsmtpd wrote the bare messages one after the
//! other, with no envelope and nothing to split them by):
//!
//! ```text
//! From sender@example.org Sat Nov 21 05:23:55 2026     ("MAILER-DAEMON" for <>; UTC)
//! Return-Path: <sender@example.org>
//! X-Envelope-To: <rcpt1@example.com>                  (one per recipient, envelope order)
//! X-Envelope-To: <rcpt2@example.com>
//! Received: ...                                        (the headers the server added)
//! <the message as received, LF line ends, ">From " quoting per mboxrd>
//! <an empty line>
//! ```
//!
//! **It never delays, refuses or fails a message.** The hook copies what the write needs (the
//! envelope, the added headers, and the message itself: the bytes when it is in memory, a
//! duplicate of the spool file's descriptor when it is on disk), hands the write to the
//! blocking thread pool, and declines at once; the message goes on to the queue while the
//! archive is written. Each write takes an exclusive `flock` on the file, so writes from
//! all workers (and other processes that lock the same way, e.g. mutt) never interleave. The
//! file is created with mode 0600 (it holds people's mail); its directory must exist.
//!
//! Errors (a missing directory, a full disk) cannot be logged by the write job itself, which
//! runs off the worker; it leaves them for the plugin, which logs them at `error` with the
//! next message or the next closed connection on that worker. At most 16 writes per worker
//! may be in flight: past that (a very slow or hung disk) a message is **not archived** and
//! an error says so, rather than letting copies pile up in memory or delaying mail.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect |
//!
//! ## Config files
//!
//! Read when the plugin is built (start and reload). A bad value stops the server with
//! `file:line`.
//!
//! | file | meaning |
//! |---|---|
//! | `content_log_enabled` | first line: `true`, `1`, `yes` (any case) enable; `false`, `0`, `no` disable; anything else is an error (qpsmtpd silently disabled the plugin). Missing: enabled |
//! | `content_log_file` | first line: the path pattern, with chrono's strftime conversions (`%Y %m %d %H %M %S %j %a %b` ...); an unknown conversion is an error. Missing: `mail/%Y%m%d` |
//!
//! ## Hooks
//!
//! `data_post` (starts the write, declines), `post-connection` (logs errors of earlier
//! writes). None when disabled.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! mbox, `mboxrd` variant (RFC 4155 describes the family and the `From ` separator line);
//! RFC 5321 §4.4 (Return-Path carries the reverse path).
//!
//! ## Security
//!
//! The archive holds full messages: keep its directory private. The file name comes from the
//! configuration only, never from the message. Envelope addresses are parsed and carry no
//! CR/LF, so they cannot forge separator lines; a `From ` line in a message is quoted.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::format::{Item, StrftimeItems};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Plugin, PluginInit,
    Step, Transaction,
};

const DEFAULT_PATTERN: &str = "mail/%Y%m%d";
/// Writes in flight per worker before messages are skipped.
const MAX_PENDING: usize = 16;
/// Errors kept for logging; more are counted, not kept.
const MAX_ERRORS: usize = 32;

/// The `content_log` plugin.
pub struct ContentLog {
    common: Common,
    enabled: bool,
    pattern: String,
    shared: Arc<Shared>,
}

/// State shared with the write jobs on the blocking pool.
#[derive(Default)]
struct Shared {
    pending: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn push_error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < MAX_ERRORS {
            errors.push(e);
        }
    }

    fn take_errors(&self) -> Vec<String> {
        std::mem::take(&mut *self.errors.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Builds `content_log` from its config line and files.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<ContentLog, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!(
            "unknown argument '{extra}' (the settings are the files content_log_enabled and \
             content_log_file)"
        )));
    }
    let enabled = match init.config.first("content_log_enabled")? {
        None => true,
        Some(line) => parse_enabled(&line)?,
    };
    let pattern = match init.config.first("content_log_file")? {
        None => DEFAULT_PATTERN.to_string(),
        Some(line) => {
            check_pattern(&line)?;
            line.text
        }
    };
    Ok(ContentLog {
        common,
        enabled,
        pattern,
        shared: Arc::new(Shared::default()),
    })
}

fn parse_enabled(line: &ConfigLine) -> Result<bool, ConfigError> {
    match line.text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(line.error(format!("'{other}' is not true, 1, yes, false, 0 or no"))),
    }
}

fn check_pattern(line: &ConfigLine) -> Result<(), ConfigError> {
    if StrftimeItems::new(&line.text).any(|i| matches!(i, Item::Error)) {
        return Err(line.error(format!(
            "'{}' has a % conversion strftime does not know (write %% for a %)",
            line.text
        )));
    }
    Ok(())
}

/// The message text, as the write job reads it.
enum Message {
    Memory(Vec<u8>),
    /// A duplicate of the spool file's descriptor (the path may be gone by the time the job
    /// runs) and the message's length. Read with positional reads: the shared file offset is
    /// left alone.
    Spool(File, u64),
}

/// Everything one archive entry needs, owned, to move to the blocking pool.
struct Entry {
    sender: String,
    recipients: Vec<String>,
    added_headers: String,
    message: Message,
}

/// Reads `len` bytes of `file` from offset 0 with `read_at`.
struct AtReader {
    file: File,
    pos: u64,
    len: u64,
}

impl Read for AtReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Writes one mboxrd entry. Lines of `added` and the message lose their CR; a line that is
/// `>*From ` gets one more `>`.
fn write_entry(out: &mut impl Write, entry: &Entry, message: &mut impl BufRead) -> io::Result<()> {
    let from = if entry.sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        entry.sender.as_str()
    };
    let stamp = chrono::Utc::now().format("%a %b %e %H:%M:%S %Y");
    writeln!(out, "From {from} {stamp}")?;
    writeln!(out, "Return-Path: <{}>", entry.sender)?;
    for r in &entry.recipients {
        writeln!(out, "X-Envelope-To: <{r}>")?;
    }
    let mut added = entry.added_headers.as_bytes();
    copy_lines(out, &mut added)?;
    copy_lines(out, message)?;
    out.write_all(b"\n")
}

fn copy_lines(out: &mut impl Write, input: &mut impl BufRead) -> io::Result<()> {
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let mut body = line.as_slice();
        let had_lf = body.last() == Some(&b'\n');
        if had_lf {
            body = &body[..body.len() - 1];
        }
        if body.last() == Some(&b'\r') {
            body = &body[..body.len() - 1];
        }
        let quotes = body.iter().take_while(|&&b| b == b'>').count();
        if body[quotes..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(body)?;
        out.write_all(b"\n")?;
    }
}

/// The write job: runs on the blocking pool.
fn append(pattern: &str, entry: Entry) -> Result<(), String> {
    let mut path = String::new();
    // The pattern was checked when the plugin was built; a formatting error is still only an
    // error, never a panic.
    write!(path, "{}", chrono::Local::now().format(pattern))
        .map_err(|_| format!("cannot expand the file name pattern '{pattern}'"))?;
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    file.lock()
        .map_err(|e| format!("cannot lock {path}: {e}"))?;
    let result = (|| {
        let mut out = BufWriter::with_capacity(64 * 1024, &file);
        match &entry.message {
            Message::Memory(bytes) => write_entry(&mut out, &entry, &mut bytes.as_slice())?,
            Message::Spool(spool, len) => {
                let reader = AtReader {
                    file: spool.try_clone()?,
                    pos: 0,
                    len: *len,
                };
                write_entry(
                    &mut out,
                    &entry,
                    &mut BufReader::with_capacity(64 * 1024, reader),
                )?
            }
        }
        out.flush()
    })();
    let _ = file.unlock();
    result.map_err(|e| format!("cannot write {path}: {e}"))
}

/// Decrements the in-flight count when the job ends, however it ends.
struct PendingGuard(Arc<Shared>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ContentLog {
    fn log_errors(&self, cx: &Cx) {
        for e in self.shared.take_errors() {
            self.common.log(cx, Level::Error, format_args!("{e}"));
        }
    }

    fn entry(&self, txn: &Transaction) -> io::Result<Entry> {
        let message = match &txn.body.spool {
            Some(spool) => Message::Spool(spool.file.try_clone()?, txn.body.len),
            None => Message::Memory(txn.body.mem.clone()),
        };
        Ok(Entry {
            sender: txn.sender.as_str().to_string(),
            recipients: txn
                .recipients
                .iter()
                .map(|r| r.addr.as_str().to_string())
                .collect(),
            added_headers: txn.added_headers.clone(),
            message,
        })
    }
}

impl Plugin for ContentLog {
    fn hooks(&self) -> HookSet {
        if self.enabled {
            HookSet::of(&[Hook::DataPost, Hook::PostConnection])
        } else {
            HookSet::EMPTY
        }
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        self.log_errors(cx);
        if self.shared.pending.load(Ordering::Acquire) >= MAX_PENDING {
            self.common.log(
                cx,
                Level::Error,
                format_args!(
                    "{MAX_PENDING} writes still pending, message {} not archived",
                    txn.id
                ),
            );
            return Step::DECLINED;
        }
        let entry = match self.entry(txn) {
            Ok(entry) => entry,
            Err(e) => {
                self.common.log(
                    cx,
                    Level::Error,
                    format_args!("message {} not archived: {e}", txn.id),
                );
                return Step::DECLINED;
            }
        };
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        let guard = PendingGuard(self.shared.clone());
        let pattern = self.pattern.clone();
        let id = txn.id.clone();
        cx.svc.spawn_blocking(Box::new(move || {
            if let Err(e) = append(&pattern, entry) {
                guard
                    .0
                    .push_error(format!("message {id} not archived: {e}"));
            }
            drop(guard);
        }));
        self.common.log(
            cx,
            Level::Debug,
            format_args!("archiving message {}", txn.id),
        );
        Step::DECLINED
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.log_errors(cx);
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, rcpt, run, txn_from, TempDir};
    use ringsmtpd_plugin_api::{Outcome, SpoolFile};
    use std::time::{Duration, Instant};

    fn build_with(files: &[(&str, &str)]) -> Result<ContentLog, ConfigError> {
        testing::build(build, "content_log", files)
    }

    fn txn(sender: &str, rcpts: &[&str], message: &str) -> Transaction {
        let mut t = txn_from(sender);
        t.id = "1.1".into();
        t.recipients.extend(rcpts.iter().map(|r| rcpt(r)));
        t.added_headers = "Received: from x\r\n\tby y; now\r\n".into();
        t.body.mem = message.as_bytes().to_vec();
        t.body.len = message.len() as u64;
        t
    }

    fn wait_idle(p: &ContentLog) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.shared.pending.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "write never finished");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    const MSG: &str = "Subject: hi\r\n\r\nline 1\r\nFrom here\r\n>From there\r\nend\r\n";

    #[test]
    fn appends_mboxrd_entries_with_the_envelope() {
        let d = TempDir::new("content_log-append");
        let pattern = d.join("log-%Y");
        let p = build_with(&[("content_log_file", &pattern)]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = txn("<s@x.test>", &["<a@y.test>", "<b@y.test>"], MSG);
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
        let mut t = txn("<>", &["<a@y.test>"], "Subject: bounce\r\n\r\nx\r\n");
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
        wait_idle(&p);
        let file = d.join(&format!("log-{}", chrono::Local::now().format("%Y")));
        let text = std::fs::read_to_string(&file).unwrap();
        // Two entries, each starting with a separator line; the jobs may finish in either
        // order.
        let separators = text.lines().filter(|l| l.starts_with("From ")).count();
        assert_eq!(separators, 2, "{text}");
        assert!(text.starts_with("From "), "{text}");
        assert!(text.contains("From s@x.test "), "{text}");
        assert!(text.contains(
            "Return-Path: <s@x.test>\nX-Envelope-To: <a@y.test>\nX-Envelope-To: <b@y.test>\n\
             Received: from x\n\tby y; now\nSubject: hi\n\nline 1\n>From here\n>>From there\nend\n\n"
        ), "{text}");
        assert!(text.contains("From MAILER-DAEMON "), "{text}");
        assert!(
            text.contains("Return-Path: <>\nX-Envelope-To: <a@y.test>\n"),
            "{text}"
        );
        assert!(!text.contains('\r'));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn spooled_message_is_read_from_the_descriptor() {
        let d = TempDir::new("content_log-spool");
        let p = build_with(&[("content_log_file", &d.join("log"))]).unwrap();
        let spool_path = d.path().join("spool");
        let big = format!("Subject: big\r\n\r\n{}", "0123456789\r\n".repeat(20_000));
        std::fs::write(&spool_path, &big).unwrap();
        let file = File::open(&spool_path).unwrap();
        let mut t = txn("<s@x.test>", &["<a@y.test>"], "Subject: big\r\n\r\n");
        t.body.len = big.len() as u64;
        t.body.spool = Some(SpoolFile {
            path: spool_path.clone(),
            file,
        });
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
        // The transaction (and its spool file) may be gone before the job runs.
        drop(t);
        assert!(!spool_path.exists());
        wait_idle(&p);
        let text = std::fs::read_to_string(d.join("log")).unwrap();
        assert_eq!(text.matches("0123456789\n").count(), 20_000);
    }

    #[test]
    fn write_errors_are_logged_later_and_never_refuse() {
        let d = TempDir::new("content_log-errors");
        let p = build_with(&[("content_log_file", &d.join("no/such/dir/log"))]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut t = txn("<s@x.test>", &["<a@y.test>"], MSG);
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
        wait_idle(&p);
        assert!(!svc.logged("not archived"));
        assert_eq!(run(p.post_connection(&mut c)), Outcome::Declined);
        assert!(
            svc.logged("message 1.1 not archived: cannot open"),
            "{:?}",
            svc.logs
        );
        assert!(p.shared.take_errors().is_empty());
    }

    #[test]
    fn too_many_pending_writes_skip_the_message() {
        let d = TempDir::new("content_log-pending");
        let p = build_with(&[("content_log_file", &d.join("log"))]).unwrap();
        p.shared.pending.store(MAX_PENDING, Ordering::Release);
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut t = txn("<s@x.test>", &["<a@y.test>"], MSG);
        assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
        assert!(svc.logged("writes still pending, message 1.1 not archived"));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!std::path::Path::new(&d.join("log")).exists());
    }

    #[test]
    fn enabled_file() {
        for (value, on) in [
            ("true", true),
            ("YES", true),
            ("1", true),
            ("false", false),
            ("No", false),
            ("0", false),
        ] {
            let p = build_with(&[("content_log_enabled", value)]).unwrap();
            assert_eq!(p.hooks().contains(Hook::DataPost), on, "{value}");
            assert_eq!(p.hooks() == HookSet::EMPTY, !on, "{value}");
        }
        assert!(build_with(&[]).unwrap().enabled);
        let err = build_with(&[("content_log_enabled", "# c\n\nasdf\n")])
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "content_log_enabled:3: 'asdf' is not true, 1, yes, false, 0 or no"
        );
    }

    #[test]
    fn file_pattern() {
        assert_eq!(build_with(&[]).unwrap().pattern, "mail/%Y%m%d");
        let p = build_with(&[("content_log_file", "/var/log/mail/%Y-%m-%d_%H%M")]).unwrap();
        assert_eq!(p.pattern, "/var/log/mail/%Y-%m-%d_%H%M");
        let err = build_with(&[("content_log_file", "\n/x/%Q\n")])
            .err()
            .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("content_log_file", 2));
        assert!(build_with(&[("content_log_file", "/x/100%")]).is_err());
        assert!(build_with(&[("content_log_file", "/x/100%%")]).is_ok());
    }

    #[test]
    fn arguments() {
        assert!(testing::build(new, "content_log loglevel -1", &[]).is_ok());
        assert_bad_args(new, "content_log", &[&["mail/%Y"], &["loglevel"]]);
    }

    #[test]
    fn mboxrd_quoting() {
        let mut out = Vec::new();
        let mut input: &[u8] = b"From a\r\n>From b\r\n>>From c\r\nFromage\r\n >From d\r\nlast";
        copy_lines(&mut out, &mut input).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            ">From a\n>>From b\n>>>From c\nFromage\n >From d\nlast\n"
        );
    }
}
