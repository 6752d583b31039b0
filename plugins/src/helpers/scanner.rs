//! The shape the content-scanner clients share (DESIGN.md §11 "Scanner clients"):
//! `spamassassin` (spamd), `virus/clamdscan` (clamd) and `rspamd` (its HTTP exchange).
//!
//! - [`ScannerArgs`]: the arguments every scanner takes: `timeout` (one deadline for the whole
//!   call, queueing included, kept below the core's `plugin_timeout`), `max_scans` (scans in
//!   flight per worker; the rest wait in a FIFO queue, not on a thread) and `defer_on_error`
//!   (the error policy: defer with 451 4.7.1, the default, or accept with a header saying the
//!   message was not scanned).
//! - [`Scanner::call`]: waits for a slot, then runs the exchange, both under the deadline.
//! - [`BodyChunks`]: the message (our added header fields, then the message as received) in
//!   chunks of at most [`mime::CHUNK`] bytes: a spooled message is read piece by piece on the
//!   blocking pool, so it is never whole in memory and a worker never reads a file.
//! - [`parse_socket`]: `HOST:PORT` or `/path/to/socket`.
//! - [`edit_headers`]: a scanner's header edits through the header API, logged.
//! - [`immune`] and [`too_big`]: the skips the scanners share, each logged once.
//!
//! It lives here rather than in the plugin API because its arguments and replies are those of
//! qpsmtpd's scanner plugins; a third-party plugin has the same pieces in the API (`net`,
//! `mime::read_message`, `blocking`).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use ringsmtpd_plugin_api::args::{parse_count, parse_flag, parse_timeout};
use ringsmtpd_plugin_api::header_edit::Edit;
use ringsmtpd_plugin_api::mime::CHUNK;
use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{blocking, Common, Cx, Level, Outcome, Reply, Services, Transaction};

use super::deadline::within;
use super::scan_metrics::ScanMetrics;

/// Below the core's default `plugin_timeout` (30 s), so the plugin, not the core, decides
/// what a slow scanner means.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);
/// Scans in flight per worker by default.
pub(crate) const DEFAULT_MAX_SCANS: usize = 8;

/// The arguments every scanner client takes, besides its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScannerArgs {
    pub timeout: Duration,
    pub max_scans: usize,
    pub defer_on_error: bool,
}

impl Default for ScannerArgs {
    fn default() -> Self {
        ScannerArgs {
            timeout: DEFAULT_TIMEOUT,
            max_scans: DEFAULT_MAX_SCANS,
            defer_on_error: true,
        }
    }
}

impl ScannerArgs {
    /// Takes `key value` if it is one of the scanner arguments; false if `key` is another one.
    pub(crate) fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        match key {
            "timeout" => self.timeout = parse_timeout(value)?,
            "max_scans" => self.max_scans = parse_count(key, value)?,
            "defer_on_error" => self.defer_on_error = parse_flag(key, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// `HOST:PORT` (an IP address, `[IPv6]`, or `localhost`) or an absolute path to a unix
/// socket. Host names are not resolved: a scanner runs on this host or next to it.
pub(crate) fn parse_socket(s: &str) -> Result<Endpoint, String> {
    if s.starts_with('/') {
        return Ok(Endpoint::Unix(PathBuf::from(s)));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(Endpoint::Tcp(addr));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(Endpoint::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
    }
    Err(format!(
        "socket '{s}' is neither IP:PORT, [IPv6]:PORT, localhost:PORT nor /path/to/socket"
    ))
}

/// A scanner: where it is, the deadline, the error policy, the per-worker slots and the
/// plugin's counters.
pub(crate) struct Scanner {
    pub endpoint: Endpoint,
    pub args: ScannerArgs,
    pub metrics: ScanMetrics,
    slots: Slots,
}

impl Scanner {
    pub(crate) fn new(endpoint: Endpoint, args: ScannerArgs, metrics: ScanMetrics) -> Scanner {
        Scanner {
            endpoint,
            args,
            metrics,
            slots: Slots::new(args.max_scans),
        }
    }

    /// Waits for a free slot, connects and runs `exchange` on the stream, all within the
    /// deadline, and counts the call ([`ScanMetrics::took`]). The error says what went wrong
    /// (for the log line, escaped by the logger).
    pub(crate) async fn call<'a, T, F, Fut>(
        &'a self,
        svc: &'a dyn Services,
        exchange: F,
    ) -> Result<T, String>
    where
        F: FnOnce(Box<dyn Stream>) -> Fut + 'a,
        Fut: Future<Output = Result<T, String>> + 'a,
    {
        let timeout = self.args.timeout;
        let queued = Cell::new(true);
        let work = async {
            let _slot = self.slots.acquire().await;
            queued.set(false);
            let stream = svc
                .connect(&self.endpoint, timeout)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint))?;
            exchange(stream).await
        };
        let secs = timeout.as_secs_f64();
        let started = Instant::now();
        let result = within(svc, timeout, work).await.unwrap_or_else(|| {
            Err(match queued.get() {
                true => format!(
                    "no free scan slot within the timeout ({secs}s): {} in flight, {} more waiting",
                    self.args.max_scans - self.slots.free.get(),
                    // This call is still in the queue.
                    self.slots.waiting.borrow().len().saturating_sub(1),
                ),
                false => format!(
                    "no answer from {} within the timeout ({secs}s)",
                    self.endpoint
                ),
            })
        });
        self.metrics.took(started.elapsed(), result.is_ok());
        result
    }

    /// A slot, held until dropped: tests fill the slots with it.
    #[cfg(test)]
    pub(crate) async fn hold_slot(&self) -> Slot<'_> {
        self.slots.acquire().await
    }
}

impl ScannerArgs {
    /// The outcome for a scan that failed (`error`, after `spent`): logged once, then 451
    /// 4.7.1 under `defer_on_error 1`, or accepted with `header: not scanned` under 0.
    pub(crate) fn on_error(
        &self,
        common: &Common,
        cx: &Cx,
        txn: &mut Transaction,
        header: &str,
        error: &str,
        spent: Duration,
    ) -> Outcome {
        let secs = spent.as_secs_f64();
        if self.defer_on_error {
            common.log(
                cx,
                Level::Error,
                format_args!("error, deferred ({secs:.3}s): {error}"),
            );
            Outcome::Done(Some(Reply::new(
                451,
                "4.7.1",
                "Unable to scan the message now, please try again later",
            )))
        } else {
            common.log(
                cx,
                Level::Error,
                format_args!("error, accepted unscanned ({secs:.3}s): {error}"),
            );
            txn.append_header(header, &format!("not scanned, {} error", common.name));
            Outcome::Declined
        }
    }
}

/// Applies a scanner's header `edits` (removed, renamed, changed fields: the header API) and
/// logs the result: how many at `debug`, why none at `warn` (the message goes on unchanged).
pub(crate) async fn edit_headers(common: &Common, cx: &Cx, txn: &mut Transaction, edits: &[Edit]) {
    if edits.is_empty() {
        return;
    }
    match txn.edit_headers(&*cx.svc, edits).await {
        Ok(n) => common.log(
            cx,
            Level::Debug,
            format_args!("{n} header fields removed, renamed or changed"),
        ),
        Err(e) => common.log(
            cx,
            Level::Warn,
            format_args!("header fields left as they were: {e}"),
        ),
    }
}

/// At most N holders at a time on this worker; the others wait in arrival order.
pub(crate) struct Slots {
    free: Cell<usize>,
    waiting: RefCell<VecDeque<oneshot::Sender<()>>>,
}

impl Slots {
    pub(crate) fn new(n: usize) -> Slots {
        Slots {
            free: Cell::new(n),
            waiting: RefCell::new(VecDeque::new()),
        }
    }

    pub(crate) async fn acquire(&self) -> Slot<'_> {
        if self.free.get() > 0 {
            self.free.set(self.free.get() - 1);
            return Slot(self);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().push_back(tx);
        let mut waiter = Waiter {
            slots: self,
            rx,
            done: false,
        };
        // The sender lives in `waiting` until a slot is handed over, and `Slots` outlives
        // this future: `Canceled` cannot happen.
        let _ = (&mut waiter.rx).await;
        waiter.done = true;
        Slot(self)
    }

    /// Hands the slot to the first waiter still waiting, or frees it.
    fn release(&self) {
        loop {
            let next = self.waiting.borrow_mut().pop_front();
            match next {
                Some(tx) => {
                    if tx.send(()).is_ok() {
                        return;
                    }
                }
                None => {
                    self.free.set(self.free.get() + 1);
                    return;
                }
            }
        }
    }
}

/// A held slot, given back on drop.
pub(crate) struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A queued acquirer. Dropped while waiting (its call timed out): if a slot was handed to it
/// meanwhile, the slot is passed on, so no slot is ever lost.
struct Waiter<'a> {
    slots: &'a Slots,
    rx: oneshot::Receiver<()>,
    /// The slot was received and is now held by a [`Slot`].
    done: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.rx.close();
        if let Ok(Some(())) = self.rx.try_recv() {
            self.slots.release();
        }
    }
}

/// The message for a scanner, in chunks: `added` (the header fields this server added, such
/// as Received), then the message as received, memory or spool.
pub(crate) struct BodyChunks<'a> {
    added: &'a [u8],
    mem: &'a [u8],
    spool: Option<Arc<File>>,
    /// Bytes of the message (after `added`) handed out so far.
    at: u64,
    len: u64,
    added_done: bool,
}

impl<'a> BodyChunks<'a> {
    pub(crate) fn new(txn: &'a Transaction) -> io::Result<BodyChunks<'a>> {
        let body = &txn.body;
        let spool = match &body.spool {
            Some(s) => Some(Arc::new(s.file.try_clone()?)),
            None => None,
        };
        Ok(BodyChunks {
            added: txn.added_headers.as_bytes(),
            mem: &body.mem,
            len: if spool.is_some() {
                body.len
            } else {
                body.mem.len() as u64
            },
            spool,
            at: 0,
            added_done: false,
        })
    }

    /// The total size handed out: added headers plus the message.
    pub(crate) fn total(&self) -> u64 {
        self.added.len() as u64 + self.len
    }

    /// The next piece (`buf` cleared and filled, at most [`CHUNK`] bytes); empty at the end.
    pub(crate) async fn next(
        &mut self,
        svc: &dyn Services,
        mut buf: Vec<u8>,
    ) -> io::Result<Vec<u8>> {
        buf.clear();
        if !self.added_done {
            self.added_done = true;
            if !self.added.is_empty() {
                buf.extend_from_slice(self.added);
                return Ok(buf);
            }
        }
        let want = (self.len - self.at).min(CHUNK as u64) as usize;
        if want == 0 {
            return Ok(buf);
        }
        match &self.spool {
            None => {
                let from = self.at as usize;
                buf.extend_from_slice(&self.mem[from..from + want]);
            }
            Some(file) => {
                let (file, at) = (file.clone(), self.at);
                buf.resize(want, 0);
                buf = blocking(svc, move || read_exact_at(&file, buf, at))
                    .await
                    .unwrap_or_else(|| Err(io::Error::other("the read job panicked")))?;
            }
        }
        self.at += want as u64;
        Ok(buf)
    }
}

/// Fills `buf` from `file` at `at`; a file shorter than its recorded size is an error.
fn read_exact_at(file: &File, mut buf: Vec<u8>, at: u64) -> io::Result<Vec<u8>> {
    file.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// True (logged `skip, immune`) for a client whose mail is not scanned: a relay client or a
/// whitelisted host or sender (qpsmtpd's `is_immune`).
pub(crate) fn immune(common: &Common, cx: &Cx, txn: &Transaction) -> bool {
    if !is_immune(cx, Some(txn)) {
        return false;
    }
    common.log(cx, Level::Info, format_args!("skip, immune"));
    true
}

/// True (logged `skip, too big`) if the message is over `max` bytes, the limit `setting`
/// names: not scanned.
pub(crate) fn too_big(
    common: &Common,
    cx: &Cx,
    txn: &Transaction,
    max: u64,
    setting: &str,
) -> bool {
    let size = txn.message_len();
    if size <= max {
        return false;
    }
    common.log(
        cx,
        Level::Info,
        format_args!("skip, too big ({size} bytes > {setting} {max} bytes)"),
    );
    true
}

/// What the scanner plugins' tests share.
#[cfg(test)]
pub(crate) mod test_kit {
    use ringsmtpd_plugin_api::Outcome;

    /// The code, enhanced code and text of a plugin's own reply; panics on any other outcome.
    pub(crate) fn reply_of(out: &Outcome) -> (u16, String, String) {
        match out {
            Outcome::Done(Some(r)) => (
                r.code,
                r.enhanced.as_deref().unwrap_or_default().to_string(),
                r.lines.join(" "),
            ),
            other => panic!("not a reply: {other:?}"),
        }
    }

    /// A loopback port nobody listens on (bound, then closed).
    pub(crate) fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        l.local_addr().expect("a bound test port").port()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{block_on, FakeServices};
    use std::rc::Rc;

    #[test]
    fn sockets() {
        assert_eq!(
            parse_socket("127.0.0.1:783"),
            Ok(Endpoint::Tcp("127.0.0.1:783".parse().unwrap()))
        );
        assert_eq!(
            parse_socket("[::1]:3310"),
            Ok(Endpoint::Tcp("[::1]:3310".parse().unwrap()))
        );
        assert_eq!(
            parse_socket("localhost:783"),
            Ok(Endpoint::Tcp("127.0.0.1:783".parse().unwrap()))
        );
        assert_eq!(
            parse_socket("/run/spamd.sock"),
            Ok(Endpoint::Unix("/run/spamd.sock".into()))
        );
        for bad in [
            "spamd.example:783",
            "127.0.0.1",
            "run/x.sock",
            "localhost:x",
            "",
        ] {
            assert!(parse_socket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scanner_arguments() {
        let mut a = ScannerArgs::default();
        assert_eq!(a.take("timeout", "3"), Ok(true));
        assert_eq!(a.take("max_scans", "2"), Ok(true));
        assert_eq!(a.take("defer_on_error", "0"), Ok(true));
        assert_eq!(a.take("spamd_user", "x"), Ok(false));
        assert_eq!(a.timeout, Duration::from_secs(3));
        assert_eq!(a.max_scans, 2);
        assert!(!a.defer_on_error);
        assert!(a.take("max_scans", "0").is_err());
        assert!(a.take("defer_on_error", "maybe").is_err());
    }

    #[test]
    fn slots_queue_in_order_and_are_never_lost() {
        let slots = Slots::new(1);
        let first = block_on(slots.acquire());
        assert_eq!(slots.free.get(), 0);
        // Two waiters queue; the first gives up (its call timed out) before its turn.
        let mut a = Box::pin(slots.acquire());
        let mut b = Box::pin(slots.acquire());
        let waker = std::task::Waker::noop();
        let mut task = std::task::Context::from_waker(waker);
        assert!(a.as_mut().poll(&mut task).is_pending());
        assert!(b.as_mut().poll(&mut task).is_pending());
        drop(a);
        drop(first);
        // The slot skipped the one that left and went to `b`.
        let held = match b.as_mut().poll(&mut task) {
            std::task::Poll::Ready(slot) => slot,
            std::task::Poll::Pending => panic!("the slot was not handed over"),
        };
        assert_eq!(slots.free.get(), 0);
        drop(held);
        assert_eq!(slots.free.get(), 1);
        // A waiter dropped after the hand-over but before it ran passes the slot on.
        let first = block_on(slots.acquire());
        let mut c = Box::pin(slots.acquire());
        assert!(c.as_mut().poll(&mut task).is_pending());
        drop(first);
        drop(c);
        assert_eq!(slots.free.get(), 1);
    }

    #[test]
    fn chunks_give_added_headers_then_the_spooled_message() {
        let svc = FakeServices::new("mx.test");
        let dir = ringsmtpd_plugin_api::testing::TempDir::new("scanner-chunks");
        let path = dir.path().join("spool");
        let message: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &message).unwrap();
        let mut txn = Transaction::default();
        txn.added_headers = "Received: x\r\n".into();
        txn.body.len = message.len() as u64;
        txn.body.spool = Some(ringsmtpd_plugin_api::SpoolFile {
            file: File::open(&path).unwrap(),
            path: path.clone(),
        });
        let mut chunks = BodyChunks::new(&txn).unwrap();
        assert_eq!(chunks.total(), 13 + message.len() as u64);
        let mut all = Vec::new();
        let mut sizes = Vec::new();
        let svc: Rc<dyn Services> = svc;
        loop {
            let c = block_on(chunks.next(&*svc, Vec::new())).unwrap();
            if c.is_empty() {
                break;
            }
            sizes.push(c.len());
            all.extend_from_slice(&c);
        }
        assert_eq!(sizes, [13, CHUNK, CHUNK, 10]);
        assert_eq!(&all[..13], b"Received: x\r\n");
        assert_eq!(&all[13..], &message[..]);
        // A spool file shorter than the recorded size is an error, not a short scan.
        txn.body.len += 1;
        let mut chunks = BodyChunks::new(&txn).unwrap();
        let mut err = None;
        for _ in 0..5 {
            match block_on(chunks.next(&*svc, Vec::new())) {
                Ok(c) if c.is_empty() => break,
                Ok(_) => {}
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(err.is_some());
        txn.body.spool = None; // the TempDir removes the file
    }
}
