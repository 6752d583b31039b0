//! Helpers shared by the queue plugins that hand the message to something on this host
//! (`queue/maildir`, `queue/qmail-queue`, `queue/postfix-queue`, `queue/exim-bsmtp`):
//! reading the message as queued (added headers, then the body from memory or its spool file),
//! CRLF to LF, the Message-ID for the reply, and running a child program under a deadline.
//!
//! Everything here blocks: call it on the blocking pool for file work (`queue/maildir`'s
//! `group_commit`) or through [`with_message`] on the helpers' pool for a child program, never
//! on a worker.

use std::fmt;
use std::fs::File;
use std::io::{self, PipeWriter, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use ringsmtpd_plugin_api::{
    helper, Body, Common, Cx, Level, Outcome, Reply, Services, Transaction,
};

/// Read size when streaming a spooled message: large enough that a syscall moves a lot of
/// bytes, small enough to be nothing next to the message itself.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The longest Message-ID shown in a reply; a reply line has 512 octets (RFC 5321 §4.5.3.1.5).
const MAX_ID_IN_REPLY: usize = 200;

/// How much of a child's stdout/stderr is kept for the log and for parsing.
const MAX_CHILD_OUTPUT: usize = 16 * 1024;

/// Which side of a copy failed.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// Reading the spool file (our side).
    Spool(io::Error),
    /// Writing to the destination (the file, the child, the socket).
    Sink(io::Error),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Spool(e) => write!(f, "reading the spool file: {e}"),
            FeedError::Sink(e) => write!(f, "writing: {e}"),
        }
    }
}

/// A transaction's message as queued: the header fields added in the session, then the body.
pub(crate) struct Message {
    pub added_headers: String,
    pub body: Body,
}

impl Message {
    /// Moves the message out of `txn` (no copy), for a job on another thread.
    pub(crate) fn take(txn: &mut Transaction) -> Message {
        Message {
            added_headers: std::mem::take(&mut txn.added_headers),
            body: std::mem::take(&mut txn.body),
        }
    }

    /// Puts it back once the job is done.
    pub(crate) fn restore(self, txn: &mut Transaction) {
        txn.added_headers = self.added_headers;
        txn.body = self.body;
    }
}

/// Runs `job` on the slow helpers' own bounded pool (a child process, qmail-queue or exim,
/// may take seconds and must not hold the threads the Maildir fsyncs need) with the message
/// of `txn`, moved out for it and put back after it (no copy). `None` if the job panicked:
/// the message went with it, and the transaction is over anyway.
pub(crate) async fn with_message<R: Send + 'static>(
    svc: &dyn Services,
    txn: &mut Transaction,
    job: impl FnOnce(&Message) -> R + Send + 'static,
) -> Option<R> {
    let msg = Message::take(txn);
    let work = move || {
        let result = job(&msg);
        (msg, result)
    };
    let (msg, result) = helper(svc, work).await?;
    msg.restore(txn);
    Some(result)
}

/// How a plugin that queues through a local program (`queue/qmail-queue`, `queue/exim-bsmtp`)
/// runs it and answers: the `queue` hook's part those plugins share.
pub(crate) struct Handoff<'a> {
    pub common: &'a Common,
    /// The program as the log names it.
    pub program: &'a dyn fmt::Display,
    pub timeout: Duration,
    /// `None` when the program took the message, else the reply that refuses it.
    pub verdict: fn(&ChildResult) -> Option<Reply>,
    /// The reply when the job panicked.
    pub panicked: Reply,
    /// The reply when the program could not be started.
    pub cannot_run: Reply,
}

impl Handoff<'_> {
    /// Refuses a transaction without recipients; else runs `job` with the message (see
    /// [`with_message`]), logs the outcome once, and gives back the program's result when it
    /// took the message, or the outcome that refuses it.
    pub(crate) async fn run(
        self,
        cx: &mut Cx,
        txn: &mut Transaction,
        job: impl FnOnce(&Message) -> io::Result<ChildResult> + Send + 'static,
    ) -> Result<ChildResult, Outcome> {
        if txn.recipients.is_empty() {
            return Err(Outcome::deny_soft("4.3.0 Queue error (no recipients)"));
        }
        let program = self.program;
        let Some(result) = with_message(&*cx.svc, txn, job).await else {
            let panicked = format_args!("the job running {program} panicked");
            self.common.log(cx, Level::Crit, panicked);
            return Err(Outcome::Done(Some(self.panicked)));
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let failed = format_args!("cannot run {program}: {e}");
                self.common.log(cx, Level::Error, failed);
                return Err(Outcome::Done(Some(self.cannot_run)));
            }
        };
        let refused = (self.verdict)(&result);
        let bytes = txn.message_len();
        let common = self.common;
        result.log(common, cx, program, refused.as_ref(), self.timeout, bytes);
        match refused {
            None => Ok(result),
            Some(r) => Err(Outcome::Done(Some(r))),
        }
    }
}

/// Calls `sink` with the message as queued, in order and in chunks: `added` (the header fields
/// the core and plugins added), then the body, from memory or read from its spool file with
/// positional reads (the spool file's own offset is left alone).
pub(crate) fn for_each_chunk(
    added: &[u8],
    body: &Body,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<(), FeedError> {
    if !added.is_empty() {
        sink(added).map_err(FeedError::Sink)?;
    }
    let Some(spool) = &body.spool else {
        return sink(&body.mem).map_err(FeedError::Sink);
    };
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match spool.file.read_at(&mut buf, offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FeedError::Spool(e)),
        };
        sink(&buf[..n]).map_err(FeedError::Sink)?;
        offset += n as u64;
    }
}

/// Streams bytes with every CRLF turned into LF; a CR not followed by LF is kept. A CR at
/// the end of one chunk waits for the next. (Maildir, qmail and exim's BSMTP want LF.)
#[derive(Default)]
pub(crate) struct ToLf {
    pending_cr: bool,
}

impl ToLf {
    pub(crate) fn write(&mut self, out: &mut impl Write, mut data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.pending_cr {
            self.pending_cr = false;
            if data.first() != Some(&b'\n') {
                out.write_all(b"\r")?;
            }
            // Else the LF is written with the rest.
        }
        while let Some(i) = memchr::memchr(b'\r', data) {
            match data.get(i + 1) {
                Some(b'\n') => {
                    out.write_all(&data[..i])?;
                    data = &data[i + 1..];
                }
                Some(_) => {
                    out.write_all(&data[..=i])?;
                    data = &data[i + 1..];
                }
                None => {
                    out.write_all(&data[..i])?;
                    self.pending_cr = true;
                    return Ok(());
                }
            }
        }
        out.write_all(data)
    }

    pub(crate) fn finish(&mut self, out: &mut impl Write) -> io::Result<()> {
        if std::mem::take(&mut self.pending_cr) {
            out.write_all(b"\r")?;
        }
        Ok(())
    }
}

/// The first Message-ID in a header section, unfolded, printable ASCII only, for a reply.
pub(crate) fn message_id(headers: &[u8]) -> Option<String> {
    let mut lines = headers
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .peekable();
    while let Some(line) = lines.next() {
        if line.is_empty() {
            return None;
        }
        let name = b"message-id:";
        if line.len() < name.len() || !line[..name.len()].eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value: Vec<u8> = line[name.len()..].to_vec();
        while let Some(next) =
            lines.next_if(|l| l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        {
            value.extend_from_slice(next);
        }
        let id: String = value
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| {
                w.iter()
                    .filter(|b| b.is_ascii_graphic())
                    .map(|&b| b as char)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ");
        if id.is_empty() {
            return None;
        }
        let mut end = id.len().min(MAX_ID_IN_REPLY);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        return Some(id[..end].to_string());
    }
    None
}

/// The message's Message-ID: among the added headers first, then in the message's own.
pub(crate) fn txn_message_id(added: &str, body: &Body) -> Option<String> {
    message_id(added.as_bytes()).or_else(|| message_id(body.header_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Child processes.

/// How to run a child.
pub(crate) struct ChildSpec<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    /// The whole exchange (writing, the child's work, its exit) must end within this; then the
    /// child's process group is killed.
    pub timeout: Duration,
    /// Give the child a pipe to *read* on fd 1 (qmail-queue's envelope). Otherwise fd 1 is
    /// captured with fd 2.
    pub fd1_input: bool,
}

/// How a child ended.
#[derive(Debug)]
pub(crate) struct ChildResult {
    pub pid: u32,
    pub status: ExitStatus,
    /// The deadline passed and the child's process group was killed.
    pub timed_out: bool,
    /// Set if not all input reached the child.
    pub feed_error: Option<FeedError>,
    /// What the child wrote to fd 2 (and fd 1, unless it is an input), the first 16 KiB.
    pub output: Vec<u8>,
}

impl ChildResult {
    /// Logs how this run of `program` (as the log shows it: `/usr/sbin/exim -bS`) ended for
    /// a message of `bytes`: queued, at info; or `refused` with that reply, at error, with why
    /// (the kill at `timeout` or the exit, the input that did not reach the child, what the
    /// child said).
    pub(crate) fn log(
        &self,
        common: &Common,
        cx: &Cx,
        program: &dyn fmt::Display,
        refused: Option<&Reply>,
        timeout: Duration,
        bytes: u64,
    ) {
        let pid = self.pid;
        let Some(r) = refused else {
            let queued = format_args!("queued by {program} (pid {pid}, {bytes} bytes)");
            return common.log(cx, Level::Info, queued);
        };
        let mut why = match (self.timed_out, self.status.code()) {
            (true, _) => format!("killed after {timeout:?}"),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => format!("{}", self.status),
        };
        if let Some(e) = &self.feed_error {
            why.push_str(&format!(", {e}"));
        }
        if !self.output.is_empty() {
            why.push_str(&format!(", output: {}", output_for_log(&self.output)));
        }
        let (code, text) = (r.code, r.lines.join(" "));
        common.log(
            cx,
            Level::Error,
            format_args!("{program} failed ({why}): {code} {text}"),
        );
    }
}

/// Runs `spec.program` in a process group of its own, gives `feed` its stdin (and the fd 1
/// pipe with `fd1_input`) to write and close, and waits for the exit. A watchdog thread kills the
/// process group at the deadline, whatever the feeder or the child is doing, so this always
/// returns within about `spec.timeout`. `Err` means the child could not be started.
///
/// The child's output goes to an anonymous memory file, not a pipe: nothing can block on it,
/// and a grandchild that keeps it open (exim's background delivery does) cannot hold us.
pub(crate) fn run_child(
    spec: &ChildSpec<'_>,
    feed: impl FnOnce(ChildStdin, Option<PipeWriter>) -> Result<(), FeedError>,
) -> io::Result<ChildResult> {
    let output = output_file();
    let mut cmd = Command::new(spec.program);
    cmd.args(spec.args)
        .stdin(Stdio::piped())
        .stderr(child_output(&output)?)
        .process_group(0);
    let mut fd1 = None;
    if spec.fd1_input {
        let (reader, writer) = io::pipe()?;
        cmd.stdout(Stdio::from(reader));
        fd1 = Some(writer);
    } else {
        cmd.stdout(child_output(&output)?);
    }
    let mut spawned = cmd.spawn();
    for _ in 0..5 {
        // ETXTBSY: the program was just written and another thread's fork still holds the
        // file open for writing until its exec. Brief; try again.
        match &spawned {
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::TXTBSY.raw_os_error()) => {
                std::thread::sleep(Duration::from_millis(20));
                spawned = cmd.spawn();
            }
            _ => break,
        }
    }
    // `cmd` holds our copy of the read end of the fd 1 pipe: drop it, so a child that dies
    // gives the feeder EPIPE instead of a write that blocks forever.
    drop(cmd);
    let mut child = spawned?;
    let pid = child.id();
    let Some(stdin) = child.stdin.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("no stdin pipe"));
    };

    let watch = Watch::default();
    let (feed_error, exited) = std::thread::scope(|s| {
        s.spawn(|| watch.guard(pid, spec.timeout));
        // `feed` owns the pipes: they are closed when it returns (or earlier, by it).
        let fed = feed(stdin, fd1);
        // Wait for the exit without reaping: the pid (and process group id) stays the child's
        // until `child.wait()` below, so the watchdog can never signal a recycled pid.
        let exited = wait_exit_keep_zombie(pid);
        watch.finish();
        (fed.err(), exited)
    });
    if exited.is_err() {
        // waitid failed (it should not): make sure `wait` cannot block forever.
        let _ = child.kill();
    }
    let status = child.wait()?;
    Ok(ChildResult {
        pid,
        status,
        timed_out: watch.killed(),
        feed_error,
        output: output.map(|f| read_output(&f)).unwrap_or_default(),
    })
}

/// The watchdog's state: `done` once the child exited, `killed` if the watchdog fired first.
#[derive(Default)]
struct Watch {
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Watch {
    /// Runs on the watchdog thread: waits for `finish` or the deadline, then kills.
    fn guard(&self, pid: u32, timeout: Duration) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut state, _) = self
            .cv
            .wait_timeout_while(state, timeout, |(done, _)| !*done)
            .unwrap_or_else(|e| e.into_inner());
        if !state.0 {
            state.1 = true;
            if let Some(pgid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                // The whole group: a shell wrapper's children go too.
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
        }
    }

    fn finish(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0 = true;
        self.cv.notify_all();
    }

    fn killed(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// `waitid(P_PID, pid, WEXITED | WNOWAIT)`: blocks until the child has exited, leaves it a
/// zombie for `Child::wait` to reap.
fn wait_exit_keep_zombie(pid: u32) -> io::Result<()> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::other("bad pid"))?;
    loop {
        match waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// An anonymous in-memory file for the child's output; `None` if the kernel has no memfd
/// (the output is then thrown away).
fn output_file() -> Option<File> {
    rustix::fs::memfd_create("ringsmtpd-child-output", rustix::fs::MemfdFlags::CLOEXEC)
        .ok()
        .map(File::from)
}

fn child_output(file: &Option<File>) -> io::Result<Stdio> {
    Ok(match file {
        Some(f) => Stdio::from(f.try_clone()?),
        None => Stdio::null(),
    })
}

fn read_output(file: &File) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_CHILD_OUTPUT];
    let mut len = 0;
    while len < buf.len() {
        match file.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    buf.truncate(len);
    buf
}

/// A child's output for a log line: printable, one line, bounded.
pub(crate) fn output_for_log(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut s: String = text
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    s.retain(|c| !c.is_control());
    if s.len() > 1000 {
        let mut end = 1000;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// True if `e` is an enhanced status code (RFC 3463: `class.subject.detail`) of the class of
/// reply `code`.
pub(crate) fn is_enhanced(e: &str, code: u16) -> bool {
    let parts: Vec<&str> = e.split('.').collect();
    parts.len() == 3
        && parts[0] == (code / 100).to_string()
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Checks at construction that `path` names an executable regular file.
pub(crate) fn check_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!("{} is not an executable file", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;

    #[test]
    fn to_lf_across_chunks() {
        let mut out = Vec::new();
        let mut lf = ToLf::default();
        for chunk in [&b"a\r"[..], b"\nb\r", b"c\r", b"", b"\n\r"] {
            lf.write(&mut out, chunk).unwrap();
        }
        lf.finish(&mut out).unwrap();
        assert_eq!(out, b"a\nb\rc\n\r");
    }

    #[test]
    fn message_id_parsing() {
        assert_eq!(
            message_id(b"A: b\r\nMessage-Id:\r\n <x@y>\r\n\r\n"),
            Some("<x@y>".into())
        );
        assert_eq!(message_id(b"A: b\r\n\r\nMessage-ID: <body@y>\r\n"), None);
        assert_eq!(
            message_id(b"message-id: <a\x01b@c>\r\n"),
            Some("<ab@c>".into())
        );
        assert_eq!(message_id(b"Message-ID:   \r\n"), None);
    }

    #[test]
    fn chunks_from_memory_and_spool() {
        let mut body = Body::default();
        body.mem = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let mut got = Vec::new();
        for_each_chunk(b"Received: y\r\n", &body, |c| {
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, b"Received: y\r\nSubject: x\r\n\r\nbody\r\n");

        let path = std::env::temp_dir().join(format!("ringsmtpd-local-{}", std::process::id()));
        let big: Vec<u8> = (0..CHUNK * 2 + 17).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(&path, &big).unwrap();
        body.spool = Some(ringsmtpd_plugin_api::SpoolFile {
            path: path.clone(),
            file: File::open(&path).unwrap(),
        });
        let mut got = Vec::new();
        let mut calls = 0;
        for_each_chunk(b"", &body, |c| {
            calls += 1;
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, big);
        assert_eq!(calls, 3);
        // A failing sink is reported as the sink's error.
        let e = for_each_chunk(b"x", &body, |_| Err(io::ErrorKind::BrokenPipe.into()));
        assert!(matches!(e, Err(FeedError::Sink(_))));
        drop(body); // removes the spool file
        assert!(!path.exists());
    }

    fn sh(script: &str, timeout: Duration, fd1_input: bool) -> ChildResult {
        let spec = ChildSpec {
            program: Path::new("/bin/sh"),
            args: &["-c", script],
            timeout,
            fd1_input,
        };
        run_child(&spec, |mut stdin, fd1| {
            stdin.write_all(b"message\n").map_err(FeedError::Sink)?;
            drop(stdin);
            if let Some(mut w) = fd1 {
                w.write_all(b"envelope").map_err(FeedError::Sink)?;
            }
            Ok(())
        })
        .unwrap()
    }

    #[test]
    fn child_gets_both_inputs_and_output_is_captured() {
        // fd 0 and fd 1 are both inputs; the child reports on fd 2.
        let r = sh(
            "cat >&2; cat <&1 >&2; exit 7",
            Duration::from_secs(20),
            true,
        );
        assert_eq!(r.status.code(), Some(7));
        assert!(!r.timed_out);
        assert!(r.feed_error.is_none());
        assert_eq!(r.output, b"message\nenvelope");
        // Without fd1_input, stdout is captured too.
        let r = sh("cat; echo err >&2", Duration::from_secs(20), false);
        assert_eq!(r.status.code(), Some(0));
        assert_eq!(r.output, b"message\nerr\n");
    }

    #[test]
    fn hanging_child_and_its_children_are_killed_at_the_deadline() {
        let started = Instant::now();
        // The shell's own child keeps the pipes open: only a group kill frees the feeder.
        let r = sh("sleep 30; sleep 30", Duration::from_millis(300), true);
        assert!(r.timed_out);
        assert_eq!(r.status.signal(), Some(9));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );

        // A child that never reads: the feeder blocks on a full pipe until the kill.
        let spec = ChildSpec {
            program: Path::new("/bin/sh"),
            args: &["-c", "sleep 30"],
            timeout: Duration::from_millis(300),
            fd1_input: false,
        };
        let started = Instant::now();
        let r = run_child(&spec, |mut stdin, _| {
            let big = vec![b'x'; 1 << 20];
            stdin.write_all(&big).map_err(FeedError::Sink)
        })
        .unwrap();
        assert!(r.timed_out);
        assert!(matches!(r.feed_error, Some(FeedError::Sink(_))));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn child_that_exits_early_gives_a_feed_error_not_a_hang() {
        let spec = ChildSpec {
            program: Path::new("/bin/sh"),
            args: &["-c", "exit 3"],
            timeout: Duration::from_secs(20),
            fd1_input: true,
        };
        let r = run_child(&spec, |mut stdin, _| {
            let big = vec![b'x'; 1 << 20];
            stdin.write_all(&big).map_err(FeedError::Sink)
        })
        .unwrap();
        assert_eq!(r.status.code(), Some(3));
        assert!(!r.timed_out);
        assert!(matches!(r.feed_error, Some(FeedError::Sink(_))));
    }

    #[test]
    fn missing_program_is_a_start_error() {
        let spec = ChildSpec {
            program: Path::new("/nonexistent/qq"),
            args: &[],
            timeout: Duration::from_secs(1),
            fd1_input: true,
        };
        assert!(run_child(&spec, |_, _| Ok(())).is_err());
    }

    #[test]
    fn output_is_bounded_and_flattened() {
        assert_eq!(output_for_log(b"a\r\n\r\n b \n\x07c"), "a | b | c");
        let long = vec![b'x'; 5000];
        assert!(output_for_log(&long).len() < 1100);
        let mut f = output_file().unwrap();
        f.write_all(&vec![b'y'; MAX_CHILD_OUTPUT + 10]).unwrap();
        assert_eq!(read_output(&f).len(), MAX_CHILD_OUTPUT);
    }

    #[test]
    fn helpers_for_arguments() {
        assert!(check_executable(Path::new("/bin/sh")).is_ok());
        assert!(check_executable(Path::new("/etc/passwd")).is_err());
        assert!(check_executable(Path::new("/nonexistent")).is_err());
    }
}
