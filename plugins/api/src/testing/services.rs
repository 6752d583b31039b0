//! Services without a runtime ([`FakeServices`], [`cx`]): a fake clock, a state store in
//! memory with a failing mode, stand-in streams, and a tiny executor for `Step`s ([`run`],
//! [`block_on`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, SystemTime};

use crate::context::{Connection, Cx, Level, Services};
use crate::dns::{DnsAnswer, DnsError, DnsLookup, DnsResult, QType, Record};
use crate::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
use crate::outcome::{Outcome, Step};
use crate::store::{unix_ms, Batch, StoreError, StoreFuture, Table};

/// Services for tests: logs are kept for assertions, blocking jobs run on a new thread,
/// timers fire at once (or never: `timers_never_fire`), DNS answers come from `dns` (questions are recorded in `asked`), the
/// state store is a [`Table`] in memory on the test's clock.
#[derive(Default)]
pub struct FakeServices {
    pub me: String,
    pub logs: RefCell<Vec<(Level, String, String)>>,
    /// Canned DNS results by (lowercased name, type); a missing entry answers NXDOMAIN.
    pub dns: RefCell<HashMap<(String, QType), DnsResult>>,
    pub asked: RefCell<Vec<(String, QType)>>,
    /// Every endpoint a plugin connected to, in order.
    pub connects: RefCell<Vec<Endpoint>>,
    /// When set, every connection succeeds to a peer that never answers (its reads never
    /// complete), so only a timeout can end the exchange: timers fire at once here.
    pub mute_peers: Cell<bool>,
    /// When set, timers never fire: work that really waits (a spool file read on a blocking
    /// thread) is not cut short by a deadline firing at once.
    pub timers_never_fire: Cell<bool>,
    /// The clock of [`Services::now`]: the real one until [`FakeServices::set_clock`].
    pub clock: Cell<Option<SystemTime>>,
    /// The state store, in memory, on the fake clock (see [`FakeServices::store_table`]).
    pub store: RefCell<Option<Table>>,
    /// When set, every store batch fails with this error (a store that is down).
    pub store_fails: RefCell<Option<StoreError>>,
    /// Store batches sent (round trips), failed ones included.
    pub store_calls: Cell<usize>,
}

impl FakeServices {
    pub fn new(me: &str) -> Rc<FakeServices> {
        Rc::new(FakeServices {
            me: me.to_string(),
            ..FakeServices::default()
        })
    }

    /// Answers `name`/`qtype` with these records from now on.
    pub fn answer(&self, name: &str, qtype: QType, records: Vec<Record>) {
        let answer = DnsAnswer {
            nxdomain: false,
            records,
            ttl: 300,
        };
        self.dns
            .borrow_mut()
            .insert((name.to_ascii_lowercase(), qtype), Ok(Rc::new(answer)));
    }

    /// Fails `name`/`qtype` with `error` from now on.
    pub fn fail(&self, name: &str, qtype: QType, error: DnsError) {
        self.dns
            .borrow_mut()
            .insert((name.to_ascii_lowercase(), qtype), Err(error));
    }

    /// Stops the clock at `t`; [`FakeServices::advance`] moves it.
    pub fn set_clock(&self, t: SystemTime) {
        self.clock.set(Some(t));
    }

    /// Moves the (stopped) clock forward.
    pub fn advance(&self, by: Duration) {
        let now = self.clock.get().unwrap_or_else(SystemTime::now);
        self.clock.set(Some(now + by));
    }

    /// The store's contents (created empty, 10000 entries at most, on first use).
    pub fn store_table(&self) -> std::cell::RefMut<'_, Table> {
        std::cell::RefMut::map(self.store.borrow_mut(), |t| {
            t.get_or_insert_with(|| Table::new(10_000))
        })
    }

    /// True if some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(_, _, m)| m.contains(needle))
    }

    /// How many log lines contain `needle`.
    pub fn logged_count(&self, needle: &str) -> usize {
        self.logs
            .borrow()
            .iter()
            .filter(|(_, _, m)| m.contains(needle))
            .count()
    }
}

impl Services for FakeServices {
    fn me(&self) -> &str {
        &self.me
    }
    fn log(&self, level: Level, _conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
        self.logs
            .borrow_mut()
            .push((level, source.to_string(), msg.to_string()));
    }
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        std::thread::spawn(job);
    }
    fn now(&self) -> SystemTime {
        self.clock.get().unwrap_or_else(SystemTime::now)
    }
    fn store(&self, batch: Batch) -> StoreFuture {
        self.store_calls.set(self.store_calls.get() + 1);
        let result = match self.store_fails.borrow().clone() {
            Some(e) => Err(e),
            None => self.store_table().apply(&batch, unix_ms(self.now())),
        };
        Box::pin(std::future::ready(result))
    }
    fn sleep(&self, _dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        if self.timers_never_fire.get() {
            return Box::pin(std::future::pending());
        }
        Box::pin(std::future::ready(()))
    }
    /// Real (blocking) sockets: tests run their fake servers on threads.
    fn connect(&self, to: &Endpoint, timeout: Duration) -> ConnectFuture {
        self.connects.borrow_mut().push(to.clone());
        if self.mute_peers.get() {
            return Box::pin(std::future::ready(Ok(Box::new(Mute) as Box<dyn Stream>)));
        }
        let stream: std::io::Result<Box<dyn Stream>> = match to {
            Endpoint::Tcp(addr) => std::net::TcpStream::connect_timeout(addr, timeout)
                .map(|s| Box::new(BlockingStream(s)) as Box<dyn Stream>),
            Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path)
                .map(|s| Box::new(BlockingStream(s)) as Box<dyn Stream>),
        };
        Box::pin(std::future::ready(stream))
    }
    fn dns_query(&self, name: &str, qtype: QType) -> DnsLookup {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), qtype);
        self.asked.borrow_mut().push(key.clone());
        let nx = DnsAnswer {
            nxdomain: true,
            records: Vec::new(),
            ttl: 300,
        };
        let result = self
            .dns
            .borrow()
            .get(&key)
            .cloned()
            .unwrap_or(Ok(Rc::new(nx)));
        DnsLookup::ready(result)
    }
}

/// A context for a client at `remote` (e.g. `"192.0.2.1:4242"`), talking to `me`.
pub fn cx(remote: &str) -> (Cx, Rc<FakeServices>) {
    let svc = FakeServices::new("mx.example.test");
    let remote: SocketAddr = remote.parse().expect("test address");
    let local: SocketAddr = "127.0.0.1:25".parse().expect("static address");
    (Cx::new(Connection::new(1, remote, local), svc.clone()), svc)
}

/// The clock [`store_client`] starts new services at: 2023-11-14 22:13:20 UTC.
pub const STORE_T0: u64 = 1_700_000_000;

/// A client at `remote` for state-store tests: on the services of an earlier connection (the
/// same store and clock: a client coming back, another client of the same server), or on new
/// services whose clock stands still at [`STORE_T0`] until the test advances it.
pub fn store_client(remote: &str, shared: Option<&Rc<FakeServices>>) -> (Cx, Rc<FakeServices>) {
    match shared {
        Some(svc) => (cx_sharing(remote, svc), svc.clone()),
        None => {
            let (cx, svc) = cx(remote);
            svc.set_clock(std::time::UNIX_EPOCH + std::time::Duration::from_secs(STORE_T0));
            (cx, svc)
        }
    }
}

/// A context for another client at `remote` on the same services as an earlier one (`svc`
/// from [`cx`]): the same store, clock and logs, as two connections to one server.
pub fn cx_sharing(remote: &str, svc: &Rc<FakeServices>) -> Cx {
    let remote: SocketAddr = remote.parse().expect("test address");
    let local: SocketAddr = "127.0.0.1:25".parse().expect("static address");
    Cx::new(Connection::new(2, remote, local), svc.clone())
}

/// A blocking socket as a [`Stream`], for tests (no TLS).
pub struct BlockingStream<S>(pub S);

impl<S: std::io::Read + std::io::Write + 'static> Stream for BlockingStream<S> {
    fn read(&mut self, mut buf: Vec<u8>) -> IoFuture<'_, usize> {
        let len = buf.len();
        buf.resize(len + 16 * 1024, 0);
        let res = self.0.read(&mut buf[len..]);
        buf.truncate(len + *res.as_ref().unwrap_or(&0));
        Box::pin(std::future::ready((res, buf)))
    }
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        let res = self.0.write_all(&buf);
        Box::pin(std::future::ready((res, buf)))
    }
    fn start_tls(self: Box<Self>, _server_name: String, _verify: TlsVerify) -> ConnectFuture {
        no_tls()
    }
}

/// The test streams have no TLS: STARTTLS on them fails as unsupported.
fn no_tls() -> ConnectFuture {
    Box::pin(std::future::ready(Err(
        std::io::ErrorKind::Unsupported.into()
    )))
}

/// A peer that accepts writes and never answers.
pub struct Mute;

impl Stream for Mute {
    fn read(&mut self, _buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(std::future::pending())
    }
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(std::future::ready((Ok(()), buf)))
    }
    fn start_tls(self: Box<Self>, _server_name: String, _verify: TlsVerify) -> ConnectFuture {
        no_tls()
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut task_cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut task_cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The outcome of a step, waiting for it if it is pending.
pub fn run(step: Step<'_>) -> Outcome {
    match step {
        Step::Ready(o) => o,
        Step::Pending(fut) => block_on(fut),
    }
}
