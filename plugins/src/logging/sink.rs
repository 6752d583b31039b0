//! The background log writer: a bounded buffer the workers copy lines into, and one thread
//! per destination (stderr, a file pattern, a syslog socket) per process that writes them.
//!
//! ## Design
//!
//! A [`Sink`] is a `Mutex<Batch>` plus a writer thread. A worker formats its line into its own
//! buffer, then locks, copies the bytes (`memcpy`) and unlocks; the writer thread swaps the
//! whole batch for its empty spare (double buffering) and writes it with as few system calls
//! as the destination allows, the lock released. So:
//!
//! - the lock is only ever held for a copy or a swap, never across I/O, so a worker waits
//!   at most for another thread's `memcpy` of one line;
//! - no allocation per line once the two buffers have grown (a channel of `String`s would
//!   allocate and free one per line);
//! - the bound is in bytes and lines ([`MAX_PENDING_BYTES`], [`MAX_PENDING_LINES`]): when the
//!   destination is slow and the buffer is full, a line is dropped and counted, and the writer
//!   reports the count (`N log lines dropped`) with its next write. Memory stays at two
//!   buffers whatever happens downstream, and a worker never waits for a disk or a socket;
//! - the writer is woken only when the buffer goes from empty to non-empty, so a burst of
//!   lines costs one wake-up.
//!
//! Sinks are shared process-wide through [`shared`], keyed by destination: every worker and
//! every config generation that logs to the same place uses the same writer, so two writers
//! never race on one file. The registry holds weak references: a sink lives while some plugin
//! instance uses it; the last drop lets the thread write what is left and exit.
//!
//! **Reload.** A reload (SIGHUP) builds new plugin instances. When an instance is built for a
//! destination that already has a sink, the sink is told to reopen (a file is closed and
//! reopened by name, a syslog socket reconnected) before its next write. That is what
//! logrotate's `postrotate kill -HUP` needs: the renamed file is closed, a new one is created.
//! Sessions started before the reload keep their old instances, which share the same sink, so
//! their lines go to the new file too.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Bytes waiting for the writer, at most, per sink. One MiB is some thousands of lines: seconds
/// of a busy server's log, enough to ride out a slow disk without dropping.
pub const MAX_PENDING_BYTES: usize = 1 << 20;
/// Lines waiting for the writer, at most, per sink (bounds the record list too).
pub const MAX_PENDING_LINES: usize = 16 * 1024;
/// A write to a pipe of at most this many bytes is atomic (POSIX `PIPE_BUF` on Linux), so lines
/// written to stderr in runs this big never interleave with other writers' lines.
pub const PIPE_BUF: usize = 4096;

/// Where one line goes, beyond the sink's destination (used by `logging/file`).
#[derive(Debug, Clone)]
pub struct Rec {
    /// End of the line in [`Batch::data`].
    pub end: usize,
    /// The file (or command) for this line, for destinations that vary.
    pub path: Option<Arc<str>>,
    /// Close and reopen `path` before writing this line.
    pub reopen: bool,
}

/// Lines waiting to be written: their bytes back to back, and where each ends.
#[derive(Debug, Default)]
pub struct Batch {
    pub data: Vec<u8>,
    pub recs: Vec<Rec>,
}

/// Consecutive lines that go to the same place and can be written with one call.
pub struct Run<'a> {
    pub bytes: &'a [u8],
    pub lines: u64,
    pub path: Option<&'a Arc<str>>,
    pub reopen: bool,
}

impl Batch {
    /// The lines, each with its record.
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &Rec)> {
        let mut start = 0;
        self.recs.iter().map(move |r| {
            let line = self.data.get(start..r.end).unwrap_or_default();
            start = r.end;
            (line, r)
        })
    }

    /// The lines grouped into runs of at most `max` bytes (one longer line is a run by itself),
    /// each to one path; a line with `reopen` starts a new run.
    pub fn runs(&self, max: usize) -> Vec<Run<'_>> {
        let mut runs: Vec<Run<'_>> = Vec::new();
        let mut start = 0;
        let mut run_start = 0;
        for r in &self.recs {
            let joins = runs.last().is_some_and(|last| {
                !r.reopen && same_path(last.path, r.path.as_ref()) && r.end - run_start <= max
            });
            match runs.last_mut() {
                Some(last) if joins => {
                    last.bytes = self.data.get(run_start..r.end).unwrap_or_default();
                    last.lines += 1;
                }
                _ => {
                    run_start = start;
                    runs.push(Run {
                        bytes: self.data.get(start..r.end).unwrap_or_default(),
                        lines: 1,
                        path: r.path.as_ref(),
                        reopen: r.reopen,
                    });
                }
            }
            start = r.end;
        }
        runs
    }

    fn clear(&mut self) {
        self.data.clear();
        self.recs.clear();
    }
}

fn same_path(a: Option<&Arc<str>>, b: Option<&Arc<str>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
        _ => false,
    }
}

/// A destination, driven by the writer thread only (it may block: that is its job).
pub trait Output: Send {
    /// Writes the lines of `batch`. Failures are the output's to report (rate-limited).
    fn write(&mut self, batch: &Batch);
    /// Reopen files, reconnect sockets: the configuration was reloaded.
    fn reload(&mut self) {}
    /// Writes a line of the logging system itself (`N log lines dropped`).
    fn notice(&mut self, text: &str);
}

struct State {
    pending: Batch,
    /// Lines refused since the writer last took the batch.
    dropped: u64,
    reload: bool,
    closed: bool,
    /// Lines (and reload requests) accepted / handled, for [`Sink::flush`].
    seq_in: u64,
    seq_out: u64,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes [`Sink::flush`] callers.
    done: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves a consistent state (a copy or a swap): go on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bounded buffer and its writer thread. See the module doc.
pub struct Sink {
    shared: Arc<Shared>,
}

impl Sink {
    /// Starts a writer thread for `out`.
    pub fn spawn(name: &str, out: Box<dyn Output>) -> io::Result<Arc<Sink>> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Batch::default(),
                dropped: 0,
                reload: false,
                closed: false,
                seq_in: 0,
                seq_out: 0,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let mut thread_name = format!("log {name}");
        thread_name.truncate(15); // the kernel's limit for thread names
        while !thread_name.is_char_boundary(thread_name.len()) {
            thread_name.pop();
        }
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || writer(thread_shared, out))?;
        Ok(Arc::new(Sink { shared }))
    }

    /// Queues one line (with its terminator, if the destination wants one). Never blocks
    /// beyond a `memcpy` under the lock; false if the buffer is full and the line was dropped.
    pub fn push(&self, line: &[u8], path: Option<&Arc<str>>, reopen: bool) -> bool {
        let mut st = lock(&self.shared.state);
        if st.pending.data.len() + line.len() > MAX_PENDING_BYTES
            || st.pending.recs.len() >= MAX_PENDING_LINES
        {
            st.dropped += 1;
            return false;
        }
        let was_empty = st.pending.recs.is_empty();
        st.pending.data.extend_from_slice(line);
        let end = st.pending.data.len();
        st.pending.recs.push(Rec {
            end,
            path: path.cloned(),
            reopen,
        });
        st.seq_in += 1;
        drop(st);
        if was_empty {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Asks the writer to reopen its destination before its next write.
    pub fn request_reload(&self) {
        let mut st = lock(&self.shared.state);
        st.reload = true;
        st.seq_in += 1;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Waits until everything queued before this call is written (at most `timeout`).
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        let target = st.seq_in;
        while st.seq_out < target {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            st = match self.shared.done.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// The writer thread: waits for lines, swaps buffers, writes, reports drops.
fn writer(shared: Arc<Shared>, mut out: Box<dyn Output>) {
    let mut batch = Batch::default();
    loop {
        let (dropped, reload, closed, seq) = {
            let mut st = lock(&shared.state);
            while st.pending.recs.is_empty() && st.dropped == 0 && !st.reload && !st.closed {
                st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::swap(&mut st.pending, &mut batch);
            (
                std::mem::take(&mut st.dropped),
                std::mem::take(&mut st.reload),
                st.closed && st.pending.recs.is_empty(),
                st.seq_in,
            )
        };
        if reload {
            out.reload();
        }
        if !batch.recs.is_empty() {
            out.write(&batch);
        }
        if dropped > 0 {
            out.notice(&format!(
                "{dropped} log lines dropped: the log writer fell behind"
            ));
        }
        batch.clear();
        lock(&shared.state).seq_out = seq;
        shared.done.notify_all();
        if closed {
            return;
        }
    }
}

type Registry = Mutex<HashMap<String, Weak<Sink>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

/// The process's sink for destination `key`, started with `make` if there is none; an existing
/// one is told to reopen (a new plugin instance means a start or a reload).
pub fn shared(key: &str, make: impl FnOnce() -> Box<dyn Output>) -> io::Result<Arc<Sink>> {
    let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
    reg.retain(|_, w| w.strong_count() > 0);
    if let Some(sink) = reg.get(key).and_then(Weak::upgrade) {
        sink.request_reload();
        return Ok(sink);
    }
    let sink = Sink::spawn(key, make())?;
    reg.insert(key.to_string(), Arc::downgrade(&sink));
    Ok(sink)
}

/// The process's stderr sink.
pub fn stderr() -> io::Result<Arc<Sink>> {
    shared("stderr", || Box::new(StreamOut::new(io::stderr())))
}

/// See [`super::flush_all`].
pub fn flush_all(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let sinks: Vec<Arc<Sink>> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .filter_map(Weak::upgrade)
        .collect();
    sinks.iter().all(|s| {
        let left = deadline.saturating_duration_since(Instant::now());
        s.flush(left)
    })
}

/// A byte stream (stderr; a memory buffer in tests): lines written in runs of at most
/// [`PIPE_BUF`] bytes, so they stay whole when others write to the same pipe.
pub struct StreamOut<W> {
    w: W,
    failed: bool,
}

impl<W: Write + Send> StreamOut<W> {
    pub fn new(w: W) -> StreamOut<W> {
        StreamOut { w, failed: false }
    }
}

impl<W: Write + Send> Output for StreamOut<W> {
    fn write(&mut self, batch: &Batch) {
        for run in batch.runs(PIPE_BUF) {
            // Nowhere to report a broken stderr; go on so a reader that comes back gets lines.
            self.failed = self.w.write_all(run.bytes).is_err();
        }
        let _ = self.w.flush();
    }

    fn notice(&mut self, text: &str) {
        let _ = self
            .w
            .write_all(format!("warn logging: {text}\n").as_bytes());
        let _ = self.w.flush();
    }
}

/// Reports a writer's failures on stderr at most once a minute, with the number of lines lost.
pub struct ErrorReport {
    what: &'static str,
    last: Option<Instant>,
    lost: u64,
}

impl ErrorReport {
    pub fn new(what: &'static str) -> ErrorReport {
        ErrorReport {
            what,
            last: None,
            lost: 0,
        }
    }

    /// `lines` were lost because of `error`.
    pub fn fail(&mut self, error: &str, lines: u64) {
        self.lost += lines;
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        self.last = Some(Instant::now());
        let _ = io::stderr().write_all(
            format!(
                "error {}: {error} ({} log lines lost so far)\n",
                self.what, self.lost
            )
            .as_bytes(),
        );
    }

    /// Lines lost so far.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A `Write` into shared memory, for tests.
    #[derive(Clone, Default)]
    pub struct MemWriter(pub Arc<Mutex<Vec<u8>>>);

    impl Write for MemWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl MemWriter {
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    /// A sink writing into memory, and the memory.
    pub fn mem_sink() -> (Arc<Sink>, MemWriter) {
        let mem = MemWriter::default();
        let sink = Sink::spawn("test", Box::new(StreamOut::new(mem.clone()))).unwrap();
        (sink, mem)
    }

    /// An output that waits for a go-ahead before each batch, and records the calls.
    struct Gated {
        gate: mpsc::Receiver<()>,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Output for Gated {
        fn write(&mut self, batch: &Batch) {
            let _ = self.gate.recv();
            let mut log = self.log.lock().unwrap();
            for (line, _) in batch.lines() {
                log.push(String::from_utf8_lossy(line).into_owned());
            }
        }
        fn reload(&mut self) {
            self.log.lock().unwrap().push("RELOAD".into());
        }
        fn notice(&mut self, text: &str) {
            self.log.lock().unwrap().push(format!("NOTICE {text}"));
        }
    }

    #[test]
    fn lines_arrive_in_order() {
        let (sink, mem) = mem_sink();
        for i in 0..1000 {
            assert!(sink.push(format!("line {i}\n").as_bytes(), None, false));
        }
        assert!(sink.flush(Duration::from_secs(5)));
        let text = mem.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
    }

    #[test]
    fn full_buffer_drops_counts_and_never_blocks() {
        let (go, gate) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink::spawn(
            "gated",
            Box::new(Gated {
                gate,
                log: log.clone(),
            }),
        )
        .unwrap();
        // The writer takes the first line and then waits at the gate: the buffer fills.
        assert!(sink.push(b"first", None, false));
        let t0 = Instant::now();
        while !lock(&sink.shared.state).pending.recs.is_empty() {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "writer never took the line"
            );
            std::thread::yield_now();
        }
        let line = vec![b'x'; 1000];
        let start = Instant::now();
        let mut accepted = 0u64;
        let mut dropped = 0u64;
        for _ in 0..(MAX_PENDING_BYTES / 1000 + 500) {
            if sink.push(&line, None, false) {
                accepted += 1;
            } else {
                dropped += 1;
            }
        }
        // Over a thousand pushes against a stuck writer took no time: nothing waited.
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(accepted, (MAX_PENDING_BYTES / 1000) as u64);
        assert_eq!(dropped, 500);
        assert!(lock(&sink.shared.state).pending.data.len() <= MAX_PENDING_BYTES);
        // The writer recovers: everything accepted is written, then the count is reported.
        go.send(()).unwrap();
        go.send(()).unwrap();
        assert!(sink.flush(Duration::from_secs(5)));
        {
            let log = log.lock().unwrap();
            assert_eq!(
                log.len() as u64,
                1 + accepted + 1,
                "first, accepted, notice"
            );
            assert_eq!(log[0], "first");
            assert_eq!(
                log.last().unwrap(),
                "NOTICE 500 log lines dropped: the log writer fell behind"
            );
        }
        // The count was reported once: the next batch has no notice.
        go.send(()).unwrap();
        assert!(sink.push(b"later", None, false));
        assert!(sink.flush(Duration::from_secs(5)));
        let log = log.lock().unwrap();
        assert_eq!(log.last().unwrap(), "later");
        assert_eq!(log.iter().filter(|l| l.starts_with("NOTICE")).count(), 1);
    }

    #[test]
    fn line_limit_drops_too() {
        let (go, gate) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink::spawn("lines", Box::new(Gated { gate, log })).unwrap();
        let mut ok = 0;
        for _ in 0..MAX_PENDING_LINES + 10 {
            if sink.push(b"", None, false) {
                ok += 1;
            }
        }
        // The writer may have taken one batch already; at most one buffer's worth beyond it.
        assert!(
            (MAX_PENDING_LINES..=2 * MAX_PENDING_LINES).contains(&ok),
            "{ok}"
        );
        assert!(lock(&sink.shared.state).pending.recs.len() <= MAX_PENDING_LINES);
        for _ in 0..3 {
            let _ = go.send(());
        }
        assert!(sink.flush(Duration::from_secs(5)));
    }

    #[test]
    fn reload_and_registry_sharing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (go, gate) = mpsc::channel::<()>();
        drop(go); // never gate: recv fails at once
        let key = format!("test-registry-{}", std::process::id());
        let made = log.clone();
        let a = shared(&key, move || Box::new(Gated { gate, log: made })).unwrap();
        let b = shared(&key, || panic!("an existing sink is reused")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.flush(Duration::from_secs(5)));
        assert_eq!(*log.lock().unwrap(), vec!["RELOAD".to_string()]);
        assert!(b.push(b"x", None, false));
        assert!(flush_all(Duration::from_secs(5)));
        assert_eq!(log.lock().unwrap().len(), 2);
        // Once every user is gone, the key starts a new sink.
        drop((a, b));
        let (_go2, gate2) = mpsc::channel::<()>();
        let log2 = Arc::new(Mutex::new(Vec::new()));
        let fresh = log2.clone();
        let c = shared(&key, move || {
            Box::new(Gated {
                gate: gate2,
                log: fresh,
            })
        })
        .unwrap();
        assert!(
            c.flush(Duration::from_secs(1)),
            "a fresh sink has no reload queued"
        );
        assert!(log2.lock().unwrap().is_empty());
    }

    #[test]
    fn runs_group_by_path_size_and_reopen() {
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let mut batch = Batch::default();
        let mut push = |line: &str, path: &Arc<str>, reopen: bool| {
            batch.data.extend_from_slice(line.as_bytes());
            batch.recs.push(Rec {
                end: batch.data.len(),
                path: Some(path.clone()),
                reopen,
            });
        };
        push("1\n", &a, false);
        push("2\n", &a, false);
        push("3\n", &b, false);
        push("4\n", &b, true);
        push("5\n", &b, false);
        push("66666\n", &b, false);
        let runs = batch.runs(6);
        let got: Vec<(String, u64, String, bool)> = runs
            .iter()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.bytes).into_owned(),
                    r.lines,
                    r.path.map(|p| p.to_string()).unwrap_or_default(),
                    r.reopen,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("1\n2\n".into(), 2, "a".into(), false),
                ("3\n".into(), 1, "b".into(), false),
                ("4\n5\n".into(), 2, "b".into(), true),
                ("66666\n".into(), 1, "b".into(), false),
            ]
        );
    }

    #[test]
    fn writer_exits_after_last_drop_and_writes_the_rest() {
        let (sink, mem) = mem_sink();
        for i in 0..100 {
            sink.push(format!("{i}\n").as_bytes(), None, false);
        }
        drop(sink);
        let t0 = Instant::now();
        while mem.text().lines().count() < 100 {
            assert!(t0.elapsed() < Duration::from_secs(5), "lines lost at close");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
