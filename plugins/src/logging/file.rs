//! # logging/file — log to a file (a new one per period) or to a command
//!
//! ## Synopsis
//!
//! ```text
//! logging/file [loglevel <level>] [reopen] [nosplit] [tsformat <format>] <path>
//! logging/file loglevel LOGINFO /var/log/ringsmtpd.log
//! logging/file /var/log/ringsmtpd.log.%Y-%m-%d
//! logging/file loglevel LOGCRIT reopen |/usr/local/sbin/page-sysadmin
//! logging/file:1 loglevel LOGDEBUG tsformat %FT%T /var/log/ringsmtpd-debug.log
//! ```
//!
//! In `config/logging`; `:N` instances log to several files at once.
//!
//! ## Description
//!
//! qpsmtpd's `logging/file`. Each line at or below the level is written as
//!
//! ```text
//! <time in tsformat> <host>[<pid>]: <level> <conn> <source>: <msg>
//! ```
//!
//! `<host>` is config `me` (else the kernel's host name). Control characters in messages are
//! escaped (`\x0a`). The file is opened for appending and created (mode `0640`, less the
//! umask) if missing; its directory must exist.
//!
//! **strftime paths.** `<path>` may hold strftime conversions (`%Y`, `%m`, `%d`, `%H`, ... in
//! local time); the path is worked out again for each line, so `log.%Y-%m-%d` starts a new
//! file at midnight. `%i` is a session id (`<unix time>-<pid>-<conn id>` of the connection,
//! `parent` for lines not about one): with it, every connection gets its own file. `%%` is a
//! `%`. Arguments are split on whitespace, so the words after the options are joined with one
//! space to make the path, as in qpsmtpd.
//!
//! **Pipes.** A path starting with `|` is a command run with `/bin/sh -c`; lines go to its
//! standard input, its output is discarded (in `--stdio` mode stdout is the SMTP session),
//! its stderr is the server's. If it exits, it is started again for the next line. strftime
//! and `%i` apply to the command too.
//!
//! **Writes never happen on a worker.** The line is formatted on the worker and copied into a
//! buffer; a background thread per path pattern and process, shared by all workers and
//! config generations, opens, writes and closes (see `logging/sink.rs`). When the disk or the
//! command falls behind and the 1 MiB buffer is full, lines are dropped and counted, and the
//! count is logged once the writer catches up. Open or write errors go to stderr, at most
//! once a minute, with the number of lines lost. Files not written to for a minute are
//! closed (except the last one used).
//!
//! **Rotation.** On SIGHUP the server builds new plugin instances; building a `logging/file`
//! whose path pattern is already open makes the writer close and reopen it before its next
//! line. So logrotate's `create` mode works with `postrotate kill -HUP <pid>`: after the
//! rename the old name is reopened, and new lines (from old sessions too) go to the new file.
//! `copytruncate` works without a signal (the file is opened for appending).
//!
//! ## Arguments
//!
//! Options come first, in any order; the first word that is not an option starts the path.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel <level>` | `4` (LOGWARN) | the highest level written: `0`-`7` or a name (`LOGINFO`, `info`) |
//! | `nosplit` | off | each connection's lines all go to the file chosen at its first line, even when the strftime path changes meanwhile |
//! | `reopen` | off | close and reopen the output at each connection's first line: a pipe command runs once per connection (an alert per session, e.g. with `loglevel LOGCRIT`) |
//! | `tsformat <format>` | `%a %b %d %T %Y` | strftime format of the time at the start of each line (no spaces: arguments are split on whitespace) |
//! | `<path>` | required | the file, or `\|command` |
//!
//! `reject` and `reject_type` are refused. A bad level, an unknown `%` conversion in the path
//! or the format, a missing path or a path whose directory does not exist is an error at the
//! plugin's line in `config/logging`.
//!
//! ## Config files
//!
//! `me` (the host name in lines).
//!
//! ## Hooks
//!
//! `logging` (returns `DECLINED`: the next logging plugin sees the line too, as in qpsmtpd).
//! With `nosplit`, `reopen` or `%i` also `connect` and `post-connection`, to keep each
//! connection's file and session id (all `DECLINED`).
//!
//! ## Notes
//!
//! None.
//!
//! ## Differences from qpsmtpd
//!
//! qpsmtpd's line is `<time> <host>[<pid>]: <msg>`, with neither level nor connection; ours
//! adds them. qpsmtpd's `%i` is `<time>-<pid>-<counter>`; ours ends with the connection id
//! that every other log line shows. qpsmtpd reopened a file only when its name changed; here a
//! reload reopens it too (qpsmtpd needed a restart after logrotate). qpsmtpd let a pipe
//! command inherit stdout. Bad arguments are errors here (qpsmtpd warned and logged nothing).
//!
//! ## Security
//!
//! The path and command come from the config only; nothing from the network reaches them
//! (`%i` is built from numbers). The command runs as the server's user.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::{
    ConfigError, Cx, Hook, HookSet, Level, LogRecord, Outcome, Plugin, PluginInit, Step,
};

use super::sink::{self, Batch, ErrorReport, Output, Sink};
use super::Strftime;

/// qpsmtpd's default `tsformat`: what Perl's scalar `localtime` prints.
const DEFAULT_TSFORMAT: &str = "%a %b %d %T %Y";

/// Files unused this long are closed (the last one used stays open).
const IDLE_CLOSE: Duration = Duration::from_secs(60);

/// At most this many outputs open at once (`%i` opens one per connection).
const MAX_OPEN: usize = 32;

/// Bytes per write call: large enough for few system calls, small enough to stay a bounded
/// slice of the batch.
const RUN_BYTES: usize = 64 * 1024;

/// The `logging/file` plugin.
pub struct LogFile {
    level: Level,
    nosplit: bool,
    reopen: bool,
    ts: Strftime,
    path: PathPattern,
    /// `host[pid]: `, fixed at construction.
    prefix: String,
    pid: u32,
    sink: Arc<Sink>,
    /// Per connection, with `nosplit`, `reopen` or `%i`.
    conns: RefCell<HashMap<u64, ConnState>>,
    /// The path for lines with no connection state, by second.
    current: RefCell<(i64, Option<Arc<str>>)>,
    line: RefCell<String>,
}

struct ConnState {
    /// `%i`.
    session: String,
    /// The path in use and the second it was worked out for.
    path: Option<(i64, Arc<str>)>,
    /// `reopen`: not yet reopened for this connection.
    reopen_pending: bool,
}

/// The `<path>` argument: a fixed path, or one with strftime conversions and `%i`.
struct PathPattern {
    text: String,
    pipe: bool,
    /// Has `%` conversions: worked out per second.
    timed: bool,
    /// Has `%i`: worked out per connection.
    session: bool,
    /// The path when it has no conversions.
    fixed: Option<Arc<str>>,
}

impl PathPattern {
    fn parse(text: &str) -> Result<PathPattern, String> {
        let pipe = text.trim_start().starts_with('|');
        let text = if pipe {
            text.trim_start()[1..].to_string()
        } else {
            text.to_string()
        };
        if text.trim().is_empty() {
            return Err("the path (or |command) is empty".into());
        }
        let session = has_session(&text);
        // Validate with a stand-in session id: the rest must be valid strftime.
        let probe = substitute_session(&text, "0");
        Strftime::new(&probe).map_err(|_| format!("bad strftime conversion in path '{text}'"))?;
        let timed = probe.contains('%');
        let fixed = (!timed && !session).then(|| Arc::from(text.as_str()));
        Ok(PathPattern {
            text,
            pipe,
            timed,
            session,
            fixed,
        })
    }

    /// The path at time `secs` for session `session`.
    fn expand(&self, secs: i64, session: &str) -> Arc<str> {
        if let Some(f) = &self.fixed {
            return f.clone();
        }
        let with_session = if self.session {
            substitute_session(&self.text, session)
        } else {
            self.text.clone()
        };
        let mut out = String::with_capacity(with_session.len() + 16);
        super::format_time(&with_session, secs, 0, &mut out);
        Arc::from(out.as_str())
    }
}

/// True if `text` has a `%i` conversion (`%%i` is a literal `%i`).
fn has_session(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '%' && chars.next() == Some('i') {
            return true;
        }
    }
    false
}

/// `text` with each `%i` replaced by `session`; other conversions (and `%%`) left for strftime.
fn substitute_session(text: &str, session: &str) -> String {
    let mut out = String::with_capacity(text.len() + session.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') => out.push_str(session),
            Some(next) => {
                out.push('%');
                out.push(next);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Builds `logging/file` from its config line; starts (or joins) the writer for its path.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(LogFile::from_init(init)?))
}

impl LogFile {
    fn from_init(init: &PluginInit<'_>) -> Result<LogFile, ConfigError> {
        let mut level = Level::Warn;
        let mut nosplit = false;
        let mut reopen = false;
        let mut tsformat = DEFAULT_TSFORMAT.to_string();
        let mut i = 0;
        let args = init.args;
        while i < args.len() {
            let key = args[i].to_ascii_lowercase();
            match key.as_str() {
                "loglevel" | "tsformat" => {
                    let value = args
                        .get(i + 1)
                        .ok_or_else(|| init.error(format!("'{key}' needs a value")))?;
                    if key == "loglevel" {
                        level = super::parse_level(init, "loglevel", value)?;
                    } else {
                        tsformat = value.clone();
                    }
                    i += 2;
                }
                "nosplit" => {
                    nosplit = true;
                    i += 1;
                }
                "reopen" => {
                    reopen = true;
                    i += 1;
                }
                "reject" | "reject_type" => return Err(super::no_reject(init, &args[i])),
                _ => break,
            }
        }
        let output = args[i..].join(" ");
        if output.is_empty() {
            return Err(init.error("a path or |command is required"));
        }
        let ts = Strftime::new(&tsformat).map_err(|e| init.error(format!("tsformat: {e}")))?;
        let path = PathPattern::parse(&output).map_err(|e| init.error(e))?;
        if !path.pipe {
            let (secs, _) = super::now();
            let now_path = path.expand(secs, "parent");
            let dir = match Path::new(&*now_path).parent() {
                Some(d) if d.as_os_str().is_empty() => Path::new("."),
                Some(d) => d,
                None => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(init.error(format!(
                    "directory '{}' of the log file does not exist",
                    dir.display()
                )));
            }
        }
        let pid = std::process::id();
        let host = super::host_name(init);
        let key = format!("file:{}{}", if path.pipe { "|" } else { "" }, path.text);
        let out_host = host.clone();
        let pipe = path.pipe;
        let sink = sink::shared(&key, move || Box::new(FileOut::new(pipe, out_host, pid)))
            .map_err(|e| init.error(format!("cannot start the log writer: {e}")))?;
        Ok(LogFile {
            level,
            nosplit,
            reopen,
            ts,
            path,
            prefix: format!("{host}[{pid}]: "),
            pid,
            sink,
            conns: RefCell::new(HashMap::new()),
            current: RefCell::new((i64::MIN, None)),
            line: RefCell::new(String::new()),
        })
    }
}

impl LogFile {
    /// Per-connection state is needed.
    fn per_conn(&self) -> bool {
        self.nosplit || self.reopen || self.path.session
    }

    /// The path (and whether to reopen it first) for a line of `conn` at `secs`.
    fn route(&self, conn: u64, secs: i64) -> (Arc<str>, bool) {
        if let Some(fixed) = &self.path.fixed {
            if !self.reopen {
                return (fixed.clone(), false);
            }
        }
        // `try_borrow`: the logging hook must never panic, even if called from within a hook.
        let mut conns = self.conns.try_borrow_mut().ok();
        if let Some(st) = conns.as_mut().and_then(|c| c.get_mut(&conn)) {
            let reopen = std::mem::take(&mut st.reopen_pending);
            let path = match &st.path {
                Some((_, p)) if self.nosplit => p.clone(),
                Some((s, p)) if *s == secs || !self.path.timed => p.clone(),
                _ => {
                    let p = self.path.expand(secs, &st.session);
                    st.path = Some((secs, p.clone()));
                    p
                }
            };
            return (path, reopen);
        }
        let Ok(mut cur) = self.current.try_borrow_mut() else {
            return (self.path.expand(secs, "parent"), false);
        };
        match &cur.1 {
            Some(p) if cur.0 == secs || !self.path.timed => (p.clone(), false),
            _ => {
                let p = self.path.expand(secs, "parent");
                *cur = (secs, Some(p.clone()));
                (p, false)
            }
        }
    }

    /// The `logging` hook at a given time (tests pass their own).
    fn log_at(&self, record: &LogRecord<'_>, secs: i64, nanos: u32) -> Outcome {
        if record.level > self.level {
            return Outcome::Declined;
        }
        let (path, reopen) = self.route(record.conn, secs);
        let Ok(mut line) = self.line.try_borrow_mut() else {
            return Outcome::Declined;
        };
        line.clear();
        self.ts.render(secs, nanos, &mut line);
        line.push(' ');
        line.push_str(&self.prefix);
        super::write_body(&mut line, record);
        line.push('\n');
        self.sink.push(line.as_bytes(), Some(&path), reopen);
        Outcome::Declined
    }
}

impl Plugin for LogFile {
    fn hooks(&self) -> HookSet {
        let hooks = HookSet::of(&[Hook::Logging]);
        if self.per_conn() {
            hooks.with(Hook::Connect).with(Hook::PostConnection)
        } else {
            hooks
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let (secs, _) = super::now();
        let mut session = String::new();
        let _ = write!(session, "{secs}-{}-{:x}", self.pid, cx.conn.id);
        self.conns.borrow_mut().insert(
            cx.conn.id,
            ConnState {
                session,
                path: None,
                reopen_pending: self.reopen,
            },
        );
        Step::DECLINED
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.conns.borrow_mut().remove(&cx.conn.id);
        Step::DECLINED
    }

    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        if record.level > self.level {
            return Outcome::Declined;
        }
        let (secs, nanos) = super::now();
        self.log_at(record, secs, nanos)
    }
}

// ---------------------------------------------------------------------------------------------
// The writer side (runs on the sink's thread only).

enum Dest {
    File(std::fs::File),
    Pipe(Child, ChildStdin),
}

impl Dest {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Dest::File(f) => f.write_all(bytes),
            Dest::Pipe(_, stdin) => stdin.write_all(bytes),
        }
    }

    /// Closes; a command gets EOF and is waited for on a thread of its own, so a slow command
    /// does not hold up the log.
    fn close(self) {
        if let Dest::Pipe(mut child, stdin) = self {
            drop(stdin);
            let _ = std::thread::Builder::new()
                .name("log pipe reap".into())
                .spawn(move || child.wait());
        }
    }
}

struct Open {
    path: Arc<str>,
    dest: Dest,
    used: Instant,
}

/// The files (or commands) of one path pattern.
struct FileOut {
    pipe: bool,
    open: Vec<Open>,
    errors: ErrorReport,
    host: String,
    pid: u32,
    /// The path written last, for notices.
    last: Option<Arc<str>>,
}

impl FileOut {
    fn new(pipe: bool, host: String, pid: u32) -> FileOut {
        FileOut {
            pipe,
            open: Vec::new(),
            errors: ErrorReport::new("logging/file"),
            host,
            pid,
            last: None,
        }
    }

    fn close(&mut self, path: &str) {
        if let Some(i) = self.open.iter().position(|o| &*o.path == path) {
            self.open.swap_remove(i).dest.close();
        }
    }

    /// The open output for `path`, opening it (and closing the least used if too many).
    fn get(&mut self, path: &Arc<str>) -> io::Result<&mut Open> {
        if let Some(i) = self.open.iter().position(|o| o.path == *path) {
            self.open[i].used = Instant::now();
            return Ok(&mut self.open[i]);
        }
        if self.open.len() >= MAX_OPEN {
            if let Some(i) = (0..self.open.len()).min_by_key(|&i| self.open[i].used) {
                self.open.swap_remove(i).dest.close();
            }
        }
        let dest = if self.pipe {
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(&**path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()?;
            let stdin = child
                .stdin
                .take()
                .ok_or_else(|| io::Error::other("no stdin for the command"))?;
            Dest::Pipe(child, stdin)
        } else {
            Dest::File(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o640)
                    .open(&**path)?,
            )
        };
        self.open.push(Open {
            path: path.clone(),
            dest,
            used: Instant::now(),
        });
        let last = self.open.len() - 1;
        Ok(&mut self.open[last])
    }

    fn write_run(&mut self, path: &Arc<str>, bytes: &[u8], reopen: bool) -> Result<(), String> {
        if reopen {
            self.close(path);
        }
        let what = if self.pipe { "command" } else { "file" };
        let open = self
            .get(path)
            .map_err(|e| format!("cannot open {what} {path}: {e}"))?;
        match open.dest.write_all(bytes) {
            Ok(()) => Ok(()),
            Err(e) => {
                // A command that exited, a file on a full disk: close; the next line reopens.
                self.close(path);
                Err(format!("cannot write to {what} {path}: {e}"))
            }
        }
    }

    fn close_idle(&mut self) {
        let last = self.last.clone();
        let mut i = 0;
        while i < self.open.len() {
            let keep = self.open[i].used.elapsed() < IDLE_CLOSE
                || last.as_ref().is_some_and(|l| *l == self.open[i].path);
            if keep {
                i += 1;
            } else {
                self.open.swap_remove(i).dest.close();
            }
        }
    }
}

impl Output for FileOut {
    fn write(&mut self, batch: &Batch) {
        for run in batch.runs(RUN_BYTES) {
            let Some(path) = run.path else { continue };
            if let Err(e) = self.write_run(path, run.bytes, run.reopen) {
                self.errors.fail(&e, run.lines);
            }
            self.last = Some(path.clone());
        }
        self.close_idle();
    }

    fn reload(&mut self) {
        // Files are reopened by name at their next line (logrotate). A command keeps running:
        // it has no name to rotate, and restarting it would lose what it buffers.
        if !self.pipe {
            for o in self.open.drain(..) {
                o.dest.close();
            }
        }
    }

    fn notice(&mut self, text: &str) {
        let Some(path) = self.last.clone() else {
            self.errors.fail(text, 0);
            return;
        };
        let mut line = String::new();
        let (secs, _) = super::now();
        super::format_time(DEFAULT_TSFORMAT, secs, 0, &mut line);
        let _ = writeln!(
            line,
            " {}[{}]: warn logging/file: {text}",
            self.host, self.pid
        );
        if let Err(e) = self.write_run(&path, line.as_bytes(), false) {
            self.errors.fail(&e, 1);
        }
    }
}

impl Drop for FileOut {
    fn drop(&mut self) {
        for o in self.open.drain(..) {
            o.dest.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::test_util::{build, record, ME};
    use ringsmtpd_plugin_api::testing::{build_args, TempDir};
    use ringsmtpd_plugin_api::testing::{cx, run};
    use std::fs;

    fn flush(p: &dyn Plugin) {
        // The plugin is a LogFile; flush every writer of the process (cheap in tests).
        let _ = p;
        assert!(crate::logging::flush_all(Duration::from_secs(5)));
    }

    fn read(path: &str) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    /// Builds a LogFile (not boxed), for the tests that look inside or call `log_at`.
    fn build_file(args: &[&str]) -> LogFile {
        build_args(LogFile::from_init, "logging/file", args, ME).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn writes_lines_with_time_host_pid() {
        let d = TempDir::new("file");
        let path = d.join("mail.log");
        let p = build(
            new,
            "logging/file",
            &["loglevel", "LOGINFO", "tsformat", "%Y", &path],
        )
        .unwrap();
        assert!(
            !p.hooks().contains(Hook::Connect),
            "no per-connection state needed"
        );
        record(Level::Info, 0x5, "rcpt_ok", "hello\nworld", |r| {
            p.logging(r)
        });
        record(Level::Debug, 0x5, "rcpt_ok", "too verbose", |r| {
            p.logging(r)
        });
        flush(&*p);
        let text = read(&path);
        let pid = std::process::id();
        let year = chrono::Local::now().format("%Y").to_string();
        assert_eq!(
            text,
            format!("{year} mx.example.test[{pid}]: info 5 rcpt_ok: hello\\x0aworld\n")
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{mode:o}");
    }

    #[test]
    fn default_level_and_tsformat() {
        let d = TempDir::new("defaults");
        let path = d.join("x.log");
        let f = build_file(&[&path]);
        // 2001-09-09T01:46:40Z; the default format is Perl's scalar localtime.
        record(Level::Warn, 1, "p", "kept", |r| {
            f.log_at(r, 1_000_000_000, 0)
        });
        record(Level::Notice, 1, "p", "dropped", |r| {
            f.log_at(r, 1_000_000_000, 0)
        });
        flush(&f);
        let text = read(&path);
        let mut ts = String::new();
        crate::logging::format_time("%a %b %d %T %Y", 1_000_000_000, 0, &mut ts);
        assert!(
            text.starts_with(&format!("{ts} mx.example.test[")),
            "{text}"
        );
        assert!(text.ends_with("]: warn 1 p: kept\n"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn strftime_path_splits_by_period_unless_nosplit() {
        let d = TempDir::new("split");
        let pattern = d.join("log.%s");
        // Without nosplit: a connection's lines follow the clock.
        let f = build_file(&[&pattern]);
        let (mut c, _svc) = cx("192.0.2.1:1");
        run(f.connect(&mut c)); // no per-conn state without nosplit/reopen/%i
        record(Level::Warn, c.conn.id, "a", "one", |r| f.log_at(r, 100, 0));
        record(Level::Warn, c.conn.id, "a", "two", |r| f.log_at(r, 101, 0));
        flush(&f);
        assert!(read(&d.join("log.100")).contains("a: one"));
        assert!(read(&d.join("log.101")).contains("a: two"));

        // With nosplit: the connection stays in the file of its first line; others move on.
        let f = build_file(&["nosplit", &pattern]);
        assert!(f.hooks().contains(Hook::Connect) && f.hooks().contains(Hook::PostConnection));
        let (mut c, _svc) = cx("192.0.2.1:2");
        run(f.connect(&mut c));
        let conn = c.conn.id;
        record(Level::Warn, conn, "b", "first", |r| f.log_at(r, 200, 0));
        record(Level::Warn, conn, "b", "second", |r| f.log_at(r, 201, 0));
        record(Level::Warn, 0, "core", "server", |r| f.log_at(r, 201, 0));
        flush(&f);
        let first = read(&d.join("log.200"));
        assert!(
            first.contains("b: first") && first.contains("b: second"),
            "{first}"
        );
        assert!(read(&d.join("log.201")).contains("core: server"));
        run(f.post_connection(&mut c));
        assert!(f.conns.borrow().is_empty());
    }

    #[test]
    fn session_id_gives_a_file_per_connection() {
        let d = TempDir::new("session");
        let pattern = d.join("s-%i.log");
        let f = build_file(&[&pattern]);
        assert!(f.hooks().contains(Hook::Connect));
        let (mut a, _s1) = cx("192.0.2.1:1");
        a.conn.id = 0xa1;
        let (mut b, _s2) = cx("192.0.2.2:1");
        b.conn.id = 0xb2;
        run(f.connect(&mut a));
        run(f.connect(&mut b));
        record(Level::Warn, 0xa1, "x", "for a", |r| f.logging(r));
        record(Level::Warn, 0xb2, "x", "for b", |r| f.logging(r));
        record(Level::Warn, 0, "core", "for parent", |r| f.logging(r));
        flush(&f);
        let mut names: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        let pid = std::process::id();
        assert!(names.iter().any(|n| n == "s-parent.log"));
        let a_name = names
            .iter()
            .find(|n| n.ends_with(&format!("-{pid}-a1.log")))
            .expect("a's file");
        assert!(read(&d.join(a_name)).contains("x: for a"));
        assert!(!read(&d.join(a_name)).contains("for b"));
    }

    #[test]
    fn logrotate_rename_then_reload_reopens() {
        let d = TempDir::new("rotate");
        let path = d.join("mail.log");
        let old = build(new, "logging/file", &[&path]).unwrap();
        record(Level::Warn, 1, "p", "before rotation", |r| old.logging(r));
        flush(&*old);
        // logrotate renames the file ...
        fs::rename(&path, d.join("mail.log.1")).unwrap();
        record(Level::Warn, 1, "p", "after rename, before HUP", |r| {
            old.logging(r)
        });
        flush(&*old);
        // ... and sends SIGHUP: the server builds new instances from the reloaded config.
        let new_instance = build(new, "logging/file", &[&path]).unwrap();
        record(Level::Warn, 2, "p", "new session", |r| {
            new_instance.logging(r)
        });
        record(Level::Warn, 1, "p", "old session", |r| old.logging(r));
        flush(&*new_instance);
        let rotated = read(&d.join("mail.log.1"));
        let current = read(&path);
        assert!(rotated.contains("before rotation") && rotated.contains("before HUP"));
        assert!(!rotated.contains("session"), "{rotated}");
        assert!(
            current.contains("new session") && current.contains("old session"),
            "{current}"
        );
        assert!(!current.contains("before"), "{current}");
    }

    #[test]
    fn pipe_to_a_command_and_reopen_per_connection() {
        let d = TempDir::new("pipe");
        let out = d.join("out");
        let cmd = format!("|echo start >> {out}; cat >> {out}");
        let args: Vec<&str> = ["loglevel", "LOGCRIT", "reopen"]
            .into_iter()
            .chain(cmd.split(' '))
            .collect();
        let f = build_file(&args);
        assert!(f.path.pipe);
        let (mut a, _s) = cx("192.0.2.1:1");
        a.conn.id = 1;
        run(f.connect(&mut a));
        record(Level::Crit, 1, "p", "alert one", |r| f.logging(r));
        record(Level::Crit, 1, "p", "alert two", |r| f.logging(r));
        record(Level::Error, 1, "p", "not critical", |r| f.logging(r));
        flush(&f);
        let (mut b, _s) = cx("192.0.2.1:2");
        b.conn.id = 2;
        run(f.connect(&mut b));
        record(Level::Crit, 2, "p", "alert three", |r| f.logging(r));
        flush(&f);
        // The commands run on their own; give them a moment (the reopen closed the first).
        let t0 = Instant::now();
        loop {
            let text = read(&out);
            let all = ["alert one", "alert two", "alert three"];
            if text.matches("start").count() == 2 && all.iter().all(|a| text.contains(a)) {
                assert!(!text.contains("not critical"));
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn unwritable_path_loses_lines_without_blocking() {
        let d = TempDir::new("unwritable");
        let path = d.join("log");
        let f = build_file(&[&path]);
        fs::create_dir(&path).unwrap(); // a directory where the file should be
        let t0 = Instant::now();
        for _ in 0..100 {
            record(Level::Warn, 1, "p", "lost", |r| f.logging(r));
        }
        // A blocked write would hang; any bound catches that (no speed verdict).
        assert!(t0.elapsed() < Duration::from_secs(10));
        flush(&f);
        assert!(Path::new(&path).is_dir());
    }

    #[test]
    fn arguments() {
        let d = TempDir::new("args");
        let p = d.join("a.log");
        let f = build_file(&[
            "LOGLEVEL", "6", "NoSplit", "reopen", "tsformat", "%FT%T", &p,
        ]);
        assert_eq!(f.level, Level::Info);
        assert!(f.nosplit && f.reopen);
        // Words after the first non-option make the path, joined with spaces.
        let f = build_file(&[&d.join("with"), "space.log"]);
        assert_eq!(f.path.text, d.join("with space.log"));
        let err = |args: &[&str]| build(new, "logging/file", args).err().unwrap().to_string();
        assert!(err(&[]).contains("a path or |command is required"));
        assert!(err(&["loglevel"]).contains("'loglevel' needs a value"));
        assert!(err(&["loglevel", "11", &p]).contains("loglevel must be"));
        assert!(err(&["tsformat", "%Q", &p]).contains("tsformat: bad strftime"));
        assert!(err(&[&d.join("x.%Q")]).contains("bad strftime conversion"));
        assert!(err(&["/no/such/dir/x.log"]).contains("directory '/no/such/dir'"));
        assert!(err(&["reject", "1", &p]).contains("does not apply"));
        assert!(err(&["|"]).contains("empty"));
        let e = build(new, "logging/file", &[]).err().unwrap();
        assert_eq!((e.file.as_str(), e.line), ("plugins", 1));
        // A relative path in the current directory is fine.
        assert!(PathPattern::parse("x.log").is_ok());
    }

    #[test]
    fn path_patterns() {
        assert!(has_session("a%ib"));
        assert!(!has_session("a%%ib"));
        assert_eq!(substitute_session("%i/%%i/%Y", "S"), "S/%%i/%Y");
        let p = PathPattern::parse("/l/%Y/%i").unwrap();
        assert!(p.timed && p.session && p.fixed.is_none());
        let mut year = String::new();
        crate::logging::format_time("%Y", 1_000_000_000, 0, &mut year);
        assert_eq!(&*p.expand(1_000_000_000, "S"), format!("/l/{year}/S"));
        let p = PathPattern::parse("/l/plain").unwrap();
        assert_eq!(p.fixed.as_deref(), Some("/l/plain"));
        let p = PathPattern::parse(" |cat").unwrap();
        assert!(p.pipe && p.text == "cat");
        // `%%` alone is a literal percent: fixed after strftime, but still "timed" (cheap).
        let p = PathPattern::parse("/l/100%%").unwrap();
        assert_eq!(&*p.expand(0, "S"), "/l/100%");
    }
}
