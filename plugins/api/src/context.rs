//! What a hook sees: the connection ([`Cx`]), the transaction ([`Transaction`]) and the
//! services of its worker ([`Services`]: logging, timers, a thread pool for blocking work,
//! DNS, outbound connections, the state store).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use crate::envelope::{Address, MailParams, Recipient};
use crate::notes::Notes;

/// Log levels, with qpsmtpd's numbers (`LOGDEBUG` 7 ... `LOGEMERG` 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    Emerg = 0,
    Alert = 1,
    Crit = 2,
    Error = 3,
    Warn = 4,
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Level {
    /// The level for a qpsmtpd number or name (`6`, `LOGINFO`, `info`).
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i32>() {
            return Some(Level::from_number(n));
        }
        let name = s.strip_prefix("LOG").unwrap_or(s).to_ascii_lowercase();
        Some(match name.as_str() {
            "emerg" | "radar" => Level::Emerg,
            "alert" => Level::Alert,
            "crit" => Level::Crit,
            "error" | "err" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "notice" => Level::Notice,
            "info" => Level::Info,
            "debug" => Level::Debug,
            _ => return None,
        })
    }

    /// The level for a number, clamped to 0..=7.
    pub fn from_number(n: i32) -> Level {
        match n.clamp(0, 7) {
            0 => Level::Emerg,
            1 => Level::Alert,
            2 => Level::Crit,
            3 => Level::Error,
            4 => Level::Warn,
            5 => Level::Notice,
            6 => Level::Info,
            _ => Level::Debug,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Emerg => "emerg",
            Level::Alert => "alert",
            Level::Crit => "crit",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Notice => "notice",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// What the worker offers a plugin. The server implements it on its runtime; tests use
/// [`crate::testing::FakeServices`].
pub trait Services {
    /// This host's name (config `me`).
    fn me(&self) -> &str;
    /// Writes a log line for connection `conn` from `source` (a plugin name or `core`).
    fn log(&self, level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>);
    /// True if a line at `level` would be written: lets callers skip formatting.
    fn log_enabled(&self, level: Level) -> bool;
    /// Runs `job` on a thread pool off the worker. The job reports back itself (see
    /// [`blocking`], which wraps this with a channel).
    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>);
    /// Runs a slow helper `job` (a child process that may take seconds: checkpassword, a
    /// queue program) on a bounded pool of its own, so helpers never take every thread of the
    /// blocking pool and a Maildir fsync always finds one (see [`helper`]). Default: the
    /// blocking pool.
    fn spawn_helper(&self, job: Box<dyn FnOnce() + Send>) {
        self.spawn_blocking(job)
    }
    /// A timer on the worker's runtime.
    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>>;
    /// The wall clock (a fake clock in tests).
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    /// Opens a connection to `to` on the worker's runtime, within `timeout` (see [`crate::net`]).
    fn connect(&self, to: &crate::net::Endpoint, timeout: Duration) -> crate::net::ConnectFuture {
        let _ = (to, timeout);
        Box::pin(std::future::ready(Err(
            std::io::ErrorKind::Unsupported.into()
        )))
    }
    /// Sends a batch of state store operations: one round trip (see [`crate::store`]).
    fn store(&self, batch: crate::store::Batch) -> crate::store::StoreFuture {
        let _ = batch;
        Box::pin(std::future::ready(Err(
            crate::store::StoreError::Unavailable("no state store".into()),
        )))
    }
    /// Sends a DNS question now; await the handle when the answer is needed (see [`crate::dns`]).
    fn dns_query(&self, name: &str, qtype: crate::dns::QType) -> crate::dns::DnsLookup {
        let _ = (name, qtype);
        crate::dns::DnsLookup::ready(Err(crate::dns::DnsError::NoResolver))
    }
}

/// Runs blocking work (file I/O with fsync, a child process, a blocking client library) on the
/// thread pool and waits for it without blocking the worker. `None` if the job panicked.
pub async fn blocking<R, F>(svc: &dyn Services, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (job, result) = reporting(f);
    svc.spawn_blocking(job);
    result.await.ok()
}

/// [`blocking`] for slow helpers (a child process that may run for seconds): runs `f` on the
/// helpers' own bounded pool ([`Services::spawn_helper`]), where a flood of them waits without
/// holding up the blocking pool's file work. `None` if the job panicked.
pub async fn helper<R, F>(svc: &dyn Services, f: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (job, result) = reporting(f);
    svc.spawn_helper(job);
    result.await.ok()
}

/// `f` as a pool job that sends its result to the returned receiver.
fn reporting<R, F>(
    f: F,
) -> (
    Box<dyn FnOnce() + Send>,
    futures_channel::oneshot::Receiver<R>,
)
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    let (tx, rx) = futures_channel::oneshot::channel();
    let job = Box::new(move || {
        // A panic drops `tx`, which the receiver sees as `Canceled`.
        let _ = tx.send(f());
    });
    (job, rx)
}

/// HELO or EHLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloKind {
    Helo,
    Ehlo,
}

/// What the client said in HELO/EHLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub kind: HelloKind,
    pub host: String,
}

/// The negotiated TLS session (set by the TLS layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    pub protocol: String,
    pub cipher: String,
}

/// The authenticated identity (set by SMTP AUTH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
    pub mechanism: String,
}

/// One client connection: qpsmtpd's `Qpsmtpd::Connection`.
#[derive(Debug)]
pub struct Connection {
    /// Unique per process, shown in every log line of the connection.
    pub id: u64,
    /// The client, as seen on the socket or told by a PROXY header.
    pub remote: SocketAddr,
    /// Our end of the connection.
    pub local: SocketAddr,
    /// The client's reverse DNS name, once known.
    pub remote_host: Option<String>,
    /// The last HELO/EHLO (a client may say EHLO again, RFC 5321 §4.1.4).
    pub hello: Option<Hello>,
    /// The client may relay (set by `relay`, AUTH, ...). `rcpt_ok` accepts any recipient then.
    pub relay_client: bool,
    pub tls: Option<TlsInfo>,
    pub auth: Option<AuthInfo>,
    /// Transactions started on this connection.
    pub transactions: u32,
    /// When the connection was accepted.
    pub started: std::time::Instant,
    /// Connections open from this client IP right now, on all workers and listeners of this
    /// process, this one included (1 where nothing counts them, as in `--stdio`).
    pub concurrent: u32,
    pub notes: Notes,
}

impl Connection {
    pub fn new(id: u64, remote: SocketAddr, local: SocketAddr) -> Connection {
        Connection {
            id,
            remote,
            local,
            remote_host: None,
            hello: None,
            relay_client: false,
            tls: None,
            auth: None,
            transactions: 0,
            started: std::time::Instant::now(),
            concurrent: 1,
            notes: Notes::new(),
        }
    }

    /// The HELO/EHLO host, or "" before it.
    pub fn hello_host(&self) -> &str {
        self.hello.as_ref().map_or("", |h| h.host.as_str())
    }

    /// True once the client said EHLO (it may use ESMTP extensions).
    pub fn is_esmtp(&self) -> bool {
        matches!(
            self.hello,
            Some(Hello {
                kind: HelloKind::Ehlo,
                ..
            })
        )
    }
}

/// The context of a hook call on a connection.
pub struct Cx {
    pub conn: Connection,
    pub svc: Rc<dyn Services>,
    /// Tells whether the client has sent bytes the server has not processed yet (set by the
    /// session; see [`Cx::client_has_sent`]).
    pub input_probe: Option<Rc<dyn Fn() -> bool>>,
    /// The running hook's store plans (see [`crate::store::Ahead`]).
    pub(crate) plans: crate::store::Plans,
}

impl Cx {
    pub fn new(conn: Connection, svc: Rc<dyn Services>) -> Cx {
        Cx {
            conn,
            svc,
            input_probe: None,
            plans: crate::store::Plans::default(),
        }
    }

    /// True if the client has sent something the server has not read or not processed yet:
    /// how `earlytalker` finds clients that talk before the banner (or before the 354). It
    /// looks without consuming or waiting.
    pub fn client_has_sent(&self) -> bool {
        self.input_probe.as_ref().is_some_and(|probe| probe())
    }

    /// Logs a line for this connection.
    pub fn log(&self, level: Level, source: &str, msg: std::fmt::Arguments<'_>) {
        if self.svc.log_enabled(level) {
            self.svc.log(level, self.conn.id, source, msg);
        }
    }
}

/// A message file on disk, for messages larger than `size_threshold`.
#[derive(Debug)]
pub struct SpoolFile {
    pub path: PathBuf,
    pub file: std::fs::File,
}

/// The message as received: dot-unstuffed, CRLF line endings, without the added headers.
///
/// Small messages stay in memory. Above `size_threshold` the message goes to a spool file;
/// the header section is then still kept in memory so header checks stay cheap.
#[derive(Debug, Default)]
pub struct Body {
    /// The whole message, or (when spooled) its header section.
    pub mem: Vec<u8>,
    /// The spool file, when the message went to disk.
    pub spool: Option<SpoolFile>,
    /// Offset just past the empty line ending the header section, once seen.
    pub header_end: Option<usize>,
    /// Size of the whole message in bytes.
    pub len: u64,
}

impl Body {
    /// The whole message, if it is in memory.
    pub fn in_memory(&self) -> Option<&[u8]> {
        match self.spool {
            None => Some(&self.mem),
            Some(_) => None,
        }
    }

    /// The header section, with its final empty line; the whole message if it has no body.
    pub fn header_bytes(&self) -> &[u8] {
        match self.header_end {
            Some(end) => &self.mem[..end.min(self.mem.len())],
            None => &self.mem,
        }
    }

    /// Empties the body, keeping the memory buffer's allocation. The spool file is removed
    /// (off this thread, see [`set_spool_remover`]).
    pub fn clear(&mut self) {
        self.mem.clear();
        if let Some(spool) = self.spool.take() {
            remove_spool(spool);
        }
        self.header_end = None;
        self.len = 0;
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(spool) = self.spool.take() {
            remove_spool(spool);
        }
    }
}

/// Who removes spool files: `Body` is cleared and dropped on worker threads, where an
/// `unlink` (a blocking call) must not run, and `Drop` cannot await.
type SpoolRemover = Box<dyn Fn(SpoolFile) + Send + Sync>;
static SPOOL_REMOVER: std::sync::OnceLock<SpoolRemover> = std::sync::OnceLock::new();

/// The server, once at start: hands every spool file that a [`Body`] lets go of to
/// `remover` (which closes and unlinks it off the worker). Without one (tests, tools) the
/// file is removed on the spot. False if one was set already.
pub fn set_spool_remover(remover: SpoolRemover) -> bool {
    SPOOL_REMOVER.set(remover).is_ok()
}

fn remove_spool(spool: SpoolFile) {
    match SPOOL_REMOVER.get() {
        Some(remove) => remove(spool),
        None => {
            let _ = std::fs::remove_file(&spool.path);
        }
    }
}

/// One mail transaction, from MAIL to the final reply: qpsmtpd's `Qpsmtpd::Transaction`.
#[derive(Debug, Default)]
pub struct Transaction {
    /// `<connection id>.<n>`, for logs and the Message-ID of queues.
    pub id: String,
    pub sender: Address,
    pub mail_params: MailParams,
    pub recipients: Vec<Recipient>,
    pub body: Body,
    /// Header fields to prepend to the message, each ending in CRLF, in final order. The core
    /// writes Received and Authentication-Results here; plugins add theirs with
    /// [`Transaction::prepend_header`] or [`Transaction::append_header`].
    pub added_headers: String,
    pub notes: Notes,
    /// Addresses of earlier recipients, kept for their buffers (see [`Transaction::recycled_address`]).
    spare_addresses: Vec<Address>,
}

impl Transaction {
    /// An empty address whose buffer is reused from an earlier recipient, if any.
    pub fn recycled_address(&mut self) -> Address {
        self.spare_addresses.pop().unwrap_or_default()
    }

    /// Gives an address back for reuse.
    pub fn recycle(&mut self, mut addr: Address) {
        addr.clear();
        self.spare_addresses.push(addr);
    }

    /// Puts `name: value` before every header added so far (qpsmtpd's `header->add(.., 0)`).
    /// The field is written with [`crate::headers::write_field`]: CR, LF and the other control
    /// characters in `value` become spaces, so a value from the network cannot add a header.
    pub fn prepend_header(&mut self, name: &str, value: &str) {
        let mut field = String::new();
        crate::headers::write_field(&mut field, name, value);
        self.added_headers.insert_str(0, &field);
    }

    /// [`Transaction::prepend_header`] for a value folded into `lines`
    /// ([`crate::headers::write_folded_field`]).
    pub fn prepend_folded_header(&mut self, name: &str, lines: &[&str]) {
        let mut field = String::new();
        crate::headers::write_folded_field(&mut field, name, lines);
        self.added_headers.insert_str(0, &field);
    }

    /// Puts `name: value` after the headers added so far, as safely as
    /// [`Transaction::prepend_header`].
    pub fn append_header(&mut self, name: &str, value: &str) {
        crate::headers::write_field(&mut self.added_headers, name, value);
    }

    /// Size of the message as queued: added headers plus the body.
    pub fn message_len(&self) -> u64 {
        self.added_headers.len() as u64 + self.body.len
    }

    /// Empties the transaction for reuse, keeping its allocations.
    pub fn clear(&mut self) {
        self.id.clear();
        self.sender.clear();
        self.mail_params = MailParams::default();
        for r in self.recipients.drain(..) {
            let mut addr = r.addr;
            addr.clear();
            self.spare_addresses.push(addr);
        }
        self.body.clear();
        self.added_headers.clear();
        self.notes.clear();
    }

    /// Frees what an unusually large transaction left behind, for a transaction kept for reuse:
    /// the message buffer and the added headers shrink to at most `bytes` of capacity, and at
    /// most `addresses` spare recipient addresses are kept. Call after [`Transaction::clear`].
    pub fn trim(&mut self, bytes: usize, addresses: usize) {
        self.body.mem.shrink_to(bytes);
        self.added_headers.shrink_to(bytes);
        self.spare_addresses.truncate(addresses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_bounds_what_a_cleared_transaction_keeps() {
        let mut txn = Transaction::default();
        txn.body.mem.resize(100_000, b'x');
        for _ in 0..500 {
            let addr = txn.recycled_address();
            let params = Default::default();
            txn.recipients.push(Recipient { addr, params });
        }
        txn.clear();
        assert_eq!(txn.spare_addresses.len(), 500, "clear keeps them");
        assert!(txn.body.mem.capacity() >= 100_000, "clear keeps the buffer");
        txn.trim(4096, 10);
        assert_eq!(txn.spare_addresses.len(), 10);
        assert!(txn.body.mem.capacity() <= 4096);
    }
}
