//! Threads and listeners: one monoio runtime per worker thread, one SO_REUSEPORT listener per
//! worker per listen address (the kernel spreads connections), reload and shutdown fan-out.
//!
//! Cross-thread state is only [`Control`]: the current config snapshot behind a lock that is
//! taken once per reload per worker (never per connection: workers compare a generation
//! counter), and the shutdown signal.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::{ConfigError, Connection, Level};

use crate::config::{plugin_lines, ConfigDir, ListenSpec, PluginLine, Settings};
use crate::hooks::Chains;
use crate::metrics::WorkerMetrics;
use crate::peers::PeerCounts;
use crate::proto::proxy;
use crate::services::WorkerServices;
use crate::session::{AuthPolicy, Env, Session};
use crate::tls::{TlsSetup, TlsStream};
use crate::transport::Conn;

/// How long a load balancer may take to send its PROXY header: it sends it at once.
const PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest PROXY header accepted (v2 header plus a generous TLV area).
const PROXY_MAX: usize = 16 + 1536;
/// Threads per worker for blocking jobs (fsync, child processes).
const BLOCKING_THREADS: usize = 4;
/// Pending connections per listener (listen(2) backlog).
const BACKLOG: i32 = 1024;

/// The I/O driver of the workers (`--driver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    Uring,
    Epoll,
}

impl Driver {
    /// What `Auto` resolves to on this machine.
    pub fn resolve(self) -> Driver {
        match self {
            Driver::Auto if monoio::utils::detect_uring() => Driver::Uring,
            Driver::Auto => Driver::Epoll,
            d => d,
        }
    }
}

/// A validated configuration: settings, plugin lines (`config/logging` first, then
/// `config/plugins`, as qpsmtpd loads them), the TLS setup, and the directory they came from.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub plugins: Vec<PluginLine>,
    /// From the `tls` line of `config/plugins`: TLS is built into the core, configured the
    /// way qpsmtpd's `tls` plugin is.
    pub tls: Option<TlsSetup>,
    pub auth: AuthPolicy,
    /// Where the metrics listener goes (config `metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
    pub config: Arc<ConfigDir>,
}

impl Snapshot {
    /// Loads and validates `dir`: every file parses, the certificates load and every plugin
    /// builds (once, here, so a bad config is refused before any worker sees it).
    pub fn load(dir: &Path) -> Result<(Snapshot, Chains), ConfigError> {
        let config = Arc::new(ConfigDir::new(dir));
        let settings = Settings::load(&*config)?;
        // Created here, so a reload that moves it works too.
        std::fs::create_dir_all(&settings.spool_dir).map_err(|e| ConfigError {
            file: format!("{}/spool_dir", dir.display()),
            line: 0,
            reason: format!("{}: {e}", settings.spool_dir.display()),
        })?;
        let mut plugins = plugin_lines(&*config, "logging")?;
        plugins.extend(plugin_lines(&*config, "plugins")?);
        let mut tls = None;
        for line in plugins.iter().filter(|l| l.base_name() == "tls") {
            if tls.is_some() {
                return Err(line.origin.error("tls: configured twice"));
            }
            tls = Some(TlsSetup::load(line, &*config)?);
        }
        plugins.retain(|l| l.base_name() != "tls");
        if tls.is_none() {
            if let Some(spec) = settings.listen.iter().find(|s| s.tls) {
                let reason = format!(
                    "listener {} is marked tls, but config/plugins has no tls line",
                    spec.addr
                );
                return Err(ConfigError {
                    file: format!("{}/listen", dir.display()),
                    line: 0,
                    reason,
                });
            }
        }
        let auth = AuthPolicy::load(&*config)?;
        let metrics = crate::metrics::listen_addr(&*config)?;
        let settings = Arc::new(settings);
        let snapshot = Snapshot {
            settings,
            plugins,
            tls,
            auth,
            metrics,
            config,
        };
        let chains = snapshot.chains()?;
        Ok((snapshot, chains))
    }

    /// The plugin chains for one worker.
    fn chains(&self) -> Result<Chains, ConfigError> {
        let timeout = self.settings.plugin_timeout;
        Chains::build(
            &self.plugins,
            &*self.config,
            ringsmtpd_plugins::find,
            timeout,
        )
    }
}

/// What the main thread shares with the workers.
pub struct Control {
    current: RwLock<Arc<Snapshot>>,
    /// Connections per client IP, shared by all workers.
    pub peers: Arc<PeerCounts>,
    generation: AtomicU64,
    stop: Mutex<Vec<futures_channel::oneshot::Sender<()>>>,
}

impl Control {
    pub fn new(snapshot: Snapshot) -> Arc<Control> {
        Arc::new(Control {
            current: RwLock::new(Arc::new(snapshot)),
            peers: PeerCounts::new(),
            generation: AtomicU64::new(0),
            stop: Mutex::new(Vec::new()),
        })
    }

    /// Publishes a new snapshot; workers pick it up at their next accepted connection.
    pub fn replace(&self, snapshot: Snapshot) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tells every worker to stop accepting and drain.
    pub fn shutdown(&self) {
        for tx in self
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = tx.send(());
        }
    }
}

/// A worker-local shutdown flag that sessions can wait on.
///
/// Each waiting future owns one slot and frees it when dropped (every read of every session
/// waits on this), so the list holds only the sessions waiting now: no growth with the
/// sessions served, no scan per poll.
#[derive(Default)]
pub struct Shutdown {
    set: Cell<bool>,
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Shutdown {
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    pub fn trigger(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for w in wakers {
            w.wake();
        }
    }

    /// Resolves once the flag is set.
    pub fn wait(&self) -> ShutdownWait<'_> {
        ShutdownWait {
            shutdown: self,
            slot: None,
        }
    }

    /// Slots in use (for tests).
    pub fn waiting(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// The future of [`Shutdown::wait`].
pub struct ShutdownWait<'a> {
    shutdown: &'a Shutdown,
    slot: Option<usize>,
}

impl Future for ShutdownWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shutdown.set.get() {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let mut slots = self.shutdown.slots.borrow_mut();
        match self.slot {
            Some(i) => slots[i] = Some(waker),
            None => {
                let i = match self.shutdown.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(waker);
                        i
                    }
                    None => {
                        slots.push(Some(waker));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for ShutdownWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let Some(slot) = self.shutdown.slots.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.shutdown.free.borrow_mut().push(i);
        }
    }
}

/// Binds one listener socket for `spec`. SO_REUSEPORT lets every worker (and, with `--join`,
/// another process) bind the same address; the kernel balances connections between them.
pub fn bind(spec: &ListenSpec) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(spec.addr);
    let sock = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if spec.addr.is_ipv6() {
        // `*` binds 0.0.0.0 and [::] separately; without V6ONLY the second would collide.
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&spec.addr.into())?;
    sock.listen(BACKLOG)?;
    Ok(sock.into())
}

/// Fails if another process already listens on `addr`. monoio's own bind enables
/// SO_REUSEPORT, so a second daemon would otherwise silently share the port.
pub fn check_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?; // TIME_WAIT leftovers are no conflict
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(1)?;
    Ok(())
}

/// Builds a runtime for `driver` with timers and a blocking pool, and runs `f` on it.
pub fn run_on<F, Fut>(driver: Driver, f: F) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    use monoio::blocking::DefaultThreadPool;
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let pool = || Box::new(DefaultThreadPool::new(BLOCKING_THREADS));
    Ok(match driver.resolve() {
        Driver::Uring => RuntimeBuilder::<IoUringDriver>::new()
            .enable_timer()
            .attach_thread_pool(pool())
            .build()?
            .block_on(f()),
        _ => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .attach_thread_pool(pool())
            .build()?
            .block_on(f()),
    })
}

/// Starts `threads` workers on `listeners` (one socket per worker per listen address, bound
/// by the caller). Returns the join handles.
pub fn start(
    control: &Arc<Control>,
    driver: Driver,
    listeners: Vec<Vec<(std::net::TcpListener, ListenSpec)>>,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let workers = listeners.len();
    for (id, socks) in listeners.into_iter().enumerate() {
        let (tx, rx) = futures_channel::oneshot::channel();
        control
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        let worker_control = control.clone();
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ringsmtpd-w{id}"))
            .spawn(move || {
                let started = ready.clone();
                let run = run_on(driver, || {
                    worker(id as u16, worker_control, socks, rx, started)
                });
                if let Err(e) = run {
                    let _ = ready.send(Err(format!("worker {id}: cannot build its runtime: {e}")));
                }
            });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                control.shutdown();
                return Err(format!("cannot start worker {id}: {e}"));
            }
        }
    }
    drop(ready_tx);
    // Every worker must be serving before the server says it listens: a worker that failed
    // would leave its share of the SO_REUSEPORT sockets unanswered.
    for _ in 0..workers {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stop_all(control, handles, e)),
            Err(_) => return Err(stop_all(control, handles, "a worker did not start".into())),
        }
    }
    Ok(handles)
}

/// Stops the workers that did start and returns `why`.
fn stop_all(control: &Control, handles: Vec<std::thread::JoinHandle<()>>, why: String) -> String {
    control.shutdown();
    for h in handles {
        let _ = h.join();
    }
    why
}

/// The per-worker environment, rebuilt when the config generation changes.
struct WorkerEnv {
    id: u16,
    control: Arc<Control>,
    shutdown: Rc<Shutdown>,
    current: RefCell<(u64, Rc<Env>)>,
    next_conn: Cell<u64>,
    active: Cell<usize>,
    /// This worker's counters, kept across reloads.
    metrics: Arc<WorkerMetrics>,
}

impl WorkerEnv {
    /// The env for a new connection; rebuilds the chains after a reload.
    fn env(&self) -> Rc<Env> {
        let gen = self.control.generation.load(Ordering::Acquire);
        if self.current.borrow().0 != gen {
            let snap = self.control.snapshot();
            match make_env(&snap, self.shutdown.clone(), self.metrics.clone()) {
                Ok(env) => *self.current.borrow_mut() = (gen, Rc::new(env)),
                Err(e) => {
                    crate::log!(
                        Level::Error,
                        0,
                        "core",
                        "worker {}: reload failed: {e}",
                        self.id
                    );
                    self.current.borrow_mut().0 = gen; // keep the old chains; do not retry
                }
            }
        }
        self.current.borrow().1.clone()
    }

    fn conn_id(&self) -> u64 {
        let n = self.next_conn.get() + 1;
        self.next_conn.set(n);
        (u64::from(self.id) + 1) << 40 | n
    }
}

/// A worker's environment from a snapshot: its own plugin instances, its services.
pub fn make_env(
    snap: &Snapshot,
    shutdown: Rc<Shutdown>,
    metrics: Arc<WorkerMetrics>,
) -> Result<Env, ConfigError> {
    Ok(env_with(snap, snap.chains()?, shutdown, metrics))
}

/// The environment around chains already built (`--stdio` reuses the ones `load` checked).
pub fn env_with(
    snap: &Snapshot,
    mut chains: Chains,
    shutdown: Rc<Shutdown>,
    metrics: Arc<WorkerMetrics>,
) -> Env {
    chains.attach_metrics(&metrics);
    let svc = Rc::new(WorkerServices::new(snap.settings.me.clone()));
    svc.set_loggers(chains.loggers());
    // One DNS client per worker (per reload: a new config gets a fresh client and cache).
    svc.set_resolver(crate::dns::Resolver::new(
        crate::dns::ResolverConfig::from_settings(&snap.settings),
    ));
    let dns = svc.resolver().cloned();
    Env {
        settings: snap.settings.clone(),
        tls: snap.tls.clone(),
        auth: snap.auth,
        metrics,
        dns,
        chains,
        svc,
        shutdown,
    }
}

async fn worker(
    id: u16,
    control: Arc<Control>,
    socks: Vec<(std::net::TcpListener, ListenSpec)>,
    stop: futures_channel::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let shutdown = Rc::new(Shutdown::default());
    let snap = control.snapshot();
    let gen = control.generation.load(Ordering::Acquire);
    let metrics = crate::metrics::register();
    let env = match make_env(&snap, shutdown.clone(), metrics.clone()) {
        Ok(env) => Rc::new(env),
        Err(e) => {
            let _ = ready.send(Err(format!("worker {id}: {e}")));
            return;
        }
    };
    let w = Rc::new(WorkerEnv {
        id,
        control,
        shutdown: shutdown.clone(),
        current: RefCell::new((gen, env)),
        next_conn: Cell::new(0),
        active: Cell::new(0),
        metrics,
    });
    {
        let shutdown = shutdown.clone();
        monoio::spawn(async move {
            let _ = stop.await; // a dropped sender (main thread gone) also stops the worker
            shutdown.trigger();
        });
    }
    for (sock, spec) in socks {
        let listener = match monoio::net::TcpListener::from_std(sock) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("worker {id}: listener {}: {e}", spec.addr)));
                return;
            }
        };
        monoio::spawn(accept_loop(w.clone(), listener, spec));
    }
    let _ = ready.send(Ok(()));
    {
        // The DNS client's counters are worker-local: copy them out for the scraper.
        let w = w.clone();
        monoio::spawn(async move {
            while !w.shutdown.is_set() {
                monoio::time::sleep(Duration::from_secs(1)).await;
                let env = w.current.borrow().1.clone();
                if let Some(dns) = &env.dns {
                    w.metrics.publish_dns(&dns.stats());
                }
            }
        });
    }
    shutdown.wait().await;
    // Drain: sessions answer 421 at their next command; those inside DATA may finish.
    let deadline = Instant::now() + w.current.borrow().1.settings.shutdown_timeout;
    while w.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if w.active.get() > 0 {
        crate::log!(
            Level::Warn,
            0,
            "core",
            "worker {id}: {} sessions cut at shutdown",
            w.active.get()
        );
    }
}

async fn accept_loop(w: Rc<WorkerEnv>, listener: monoio::net::TcpListener, spec: ListenSpec) {
    loop {
        let accepted = monoio::select! {
            a = listener.accept() => a,
            _ = w.shutdown.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let w2 = w.clone();
                let spec = spec.clone();
                w.active.set(w.active.get() + 1);
                monoio::spawn(async move {
                    let guard = ActiveGuard(w2.clone());
                    let task = Box::pin(serve(w2.clone(), stream, peer, spec));
                    if CatchUnwind(task).await.is_err() {
                        crate::log!(
                            Level::Crit,
                            0,
                            "core",
                            "session from {peer} panicked; closed"
                        );
                    }
                    drop(guard);
                });
            }
            Err(e) => {
                // EMFILE and friends: log, back off briefly instead of spinning.
                crate::log!(Level::Error, 0, "core", "accept on {}: {e}", spec.addr);
                monoio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct ActiveGuard(Rc<WorkerEnv>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}

async fn serve(
    w: Rc<WorkerEnv>,
    mut stream: monoio::net::TcpStream,
    peer: SocketAddr,
    spec: ListenSpec,
) {
    let env = w.env();
    let id = w.conn_id();
    let local = stream.local_addr().unwrap_or(spec.addr);
    let _ = stream.set_nodelay(true);
    let (remote, local, early) = if spec.proxy {
        match read_proxy(&mut stream, &w.shutdown).await {
            Ok((hdr, early)) => (
                hdr.source.unwrap_or(peer),
                hdr.destination.unwrap_or(local),
                early,
            ),
            Err(why) => {
                crate::log!(
                    Level::Warn,
                    id,
                    "core",
                    "PROXY header from {peer} refused: {why}"
                );
                return; // close without a word: the peer is not a load balancer we know
            }
        }
    } else {
        (peer, local, Vec::new())
    };
    let mut conn = Connection::new(id, remote, local);
    let (_counted, concurrent) = w.control.peers.enter(remote.ip());
    conn.concurrent = concurrent;
    let (io, early) = if spec.tls {
        // Implicit TLS (RFC 8314): the handshake comes before the banner.
        let Some(setup) = env.tls.clone() else {
            crate::log!(
                Level::Error,
                id,
                "core",
                "{} is a tls listener, but TLS is not configured",
                spec.addr
            );
            return;
        };
        let handshake = TlsStream::accept(stream, setup.config, early);
        match monoio::time::timeout(
            crate::tls::handshake_timeout(env.settings.timeout),
            handshake,
        )
        .await
        {
            Ok(Ok(tls)) => {
                conn.tls = Some(tls.info());
                (Conn::Tls(Box::new(tls)), Vec::new())
            }
            Ok(Err(e)) => {
                crate::log!(
                    Level::Info,
                    id,
                    "core",
                    "TLS handshake with {remote} failed: {e}"
                );
                return;
            }
            Err(_) => {
                crate::log!(
                    Level::Info,
                    id,
                    "core",
                    "TLS handshake with {remote} timed out"
                );
                return;
            }
        }
    } else {
        (Conn::Plain(stream), early)
    };
    Session::new(env, io, conn, &early).run().await;
}

/// Reads and parses a PROXY v1/v2 header; returns it and any bytes that followed it.
async fn read_proxy(
    stream: &mut monoio::net::TcpStream,
    shutdown: &Shutdown,
) -> Result<(proxy::ProxyHeader, Vec<u8>), String> {
    use crate::transport::Transport;
    let mut buf = Vec::with_capacity(PROXY_MAX);
    let deadline = Instant::now() + PROXY_TIMEOUT;
    loop {
        match proxy::parse(&buf) {
            Ok(Some((hdr, used))) => return Ok((hdr, buf[used..].to_vec())),
            Ok(None) if buf.len() >= PROXY_MAX => return Err("header too long".into()),
            Ok(None) => {}
            Err(e) => return Err(e.0.to_string()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = monoio::time::timeout(left, stream.read(buf));
        // A peer that never sends its header must not hold up a shutdown.
        let result = monoio::select! {
            r = read => r,
            _ = shutdown.wait() => return Err("server shutting down".into()),
        };
        match result {
            Ok((Ok(0), _)) => return Err("closed before the header".into()),
            Ok((Ok(_), b)) => buf = b,
            Ok((Err(e), _)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        }
    }
}

/// Polls a future, turning a panic into `Err(())`, so one broken session cannot take its
/// worker thread (and every other connection on it) down.
pub struct CatchUnwind<F>(pub F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;
    fn poll(mut self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Pin::new(fut).poll(task))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every read of every session waits on the shutdown flag: finished waits must leave
    /// nothing behind (the benchmark once showed memory and CPU growing per session served).
    #[test]
    fn shutdown_waits_leave_no_trace_and_all_wake() {
        let sd = Rc::new(Shutdown::default());
        let sd2 = sd.clone();
        run_on(Driver::Epoll, move || async move {
            for _ in 0..1000 {
                let _ = monoio::time::timeout(Duration::from_micros(10), sd2.wait()).await;
            }
            assert_eq!(sd2.waiting(), 0);
            assert!(sd2.slots.borrow().len() <= 1, "slots are reused");
            let (a, b) = (sd2.clone(), sd2.clone());
            let ta = monoio::spawn(async move { a.wait().await });
            let tb = monoio::spawn(async move { b.wait().await });
            monoio::time::sleep(Duration::from_millis(5)).await;
            assert_eq!(sd2.waiting(), 2);
            sd2.trigger();
            ta.await;
            tb.await;
            assert_eq!(sd2.waiting(), 0);
        })
        .unwrap();
        assert!(sd.is_set());
    }
}
