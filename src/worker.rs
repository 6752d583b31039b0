//! The worker threads: each runs one monoio runtime with its own plugin instances, accepts on
//! its listeners, rebuilds its environment when the config generation changes (reload), and
//! drains its sessions at shutdown.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::{ConfigError, Level};

use crate::catch::CatchUnwind;
use crate::config::ListenSpec;
use crate::control::Control;
use crate::hooks::Chains;
use crate::incoming;
use crate::metrics::WorkerMetrics;
use crate::runtime::{run_on, Driver};
use crate::services::WorkerServices;
use crate::session::Env;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;

/// At shutdown, how long sessions carry on as usual once the listeners are closed, before
/// they are told `421` at their next command (idle ones at once). A client in the middle of
/// its conversation (EHLO, a transaction, QUIT: a few round trips) reaches its end instead
/// of a 421, so an upgrade with `--join` defers nothing; an idle client waits this long more
/// for its 421. Never longer than `shutdown_timeout`.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Starts `threads` workers on `listeners` (one socket per worker per listen address, bound
/// by the caller). Returns the join handles.
pub fn start(
    control: &Arc<Control>,
    driver: Driver,
    listeners: Vec<Vec<(std::net::TcpListener, ListenSpec)>>,
    placement: Option<crate::affinity::Placement>,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let workers = listeners.len();
    for (id, socks) in listeners.into_iter().enumerate() {
        let rx = control.stop_signal();
        let worker_control = control.clone();
        let ready = ready_tx.clone();
        let cpu = placement.as_ref().map(|p| p.cpus[id]);
        let steer = placement.as_ref().is_some_and(|p| p.steer);
        // One worker watches how steering spreads the connections (`affinity::BalanceWatch`).
        let watch = steer && id == 0 && workers > 1;
        let spawned = std::thread::Builder::new()
            .name(format!("ringsmtpd-w{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    place(id, cpu, steer, &socks);
                }
                let started = ready.clone();
                let run = run_on(driver, || {
                    worker(id as u16, worker_control, socks, rx, started, watch)
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

/// Pins the calling worker thread to `cpu` and, with `steer`, marks its listeners as the ones
/// for connections received on that CPU (`crate::affinity`). A failure is logged: the worker
/// serves unpinned.
fn place(id: usize, cpu: usize, steer: bool, socks: &[(std::net::TcpListener, ListenSpec)]) {
    if let Err(e) = crate::affinity::pin_current(cpu) {
        crate::log!(
            Level::Warn,
            0,
            "core",
            "worker {id}: cannot pin to CPU {cpu}: {e}"
        );
        return;
    }
    for (sock, spec) in socks.iter().filter(|_| steer) {
        if let Err(e) = crate::affinity::steer(sock, cpu) {
            crate::log!(
                Level::Warn,
                0,
                "core",
                "worker {id}: {}: SO_INCOMING_CPU {cpu}: {e}",
                spec.addr
            );
        }
    }
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
    /// Set when the server stops: the accept loops end (the listeners close).
    shutdown: Rc<Shutdown>,
    /// Set [`DRAIN_GRACE`] later (or when no session is left): the sessions' flag, in their
    /// [`Env`]; they answer 421 at their next command.
    closing: Rc<Shutdown>,
    current: RefCell<(u64, Rc<Env>)>,
    /// Connections the process admits at once (`max_connections`, resolved with the env).
    limit: Cell<usize>,
    next_conn: Cell<u64>,
    active: Cell<usize>,
    /// This worker's counters, kept across reloads.
    metrics: Arc<WorkerMetrics>,
}

impl WorkerEnv {
    /// The env for a new connection; rebuilds the chains after a reload.
    fn env(&self) -> Rc<Env> {
        let gen = self.control.generation();
        if self.current.borrow().0 != gen {
            let snap = self.control.snapshot();
            match make_env(&snap, self.closing.clone(), self.metrics.clone()) {
                Ok(env) => {
                    self.limit
                        .set(crate::admission::limit(env.settings.max_connections));
                    *self.current.borrow_mut() = (gen, Rc::new(env));
                }
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
    svc.set_resolver(crate::dns::Resolver::new(snap.settings.resolver_config()));
    let dns = svc.resolver().cloned();
    svc.set_store(crate::store::StoreClient::new(&snap.settings.store));
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
    watch_balance: bool,
) {
    let shutdown = Rc::new(Shutdown::default());
    let closing = Rc::new(Shutdown::default());
    let snap = control.snapshot();
    let gen = control.generation();
    let metrics = crate::metrics::register();
    let env = match make_env(&snap, closing.clone(), metrics.clone()) {
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
        closing: closing.clone(),
        limit: Cell::new(crate::admission::limit(env.settings.max_connections)),
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
        let listener = sock.try_clone().and_then(|stopper| {
            Ok(crate::listener::Listening {
                listener: monoio::net::TcpListener::from_std(sock)?,
                stopper,
            })
        });
        let listener = match listener {
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
        let mut balance = watch_balance.then(crate::affinity::BalanceWatch::default);
        monoio::spawn(async move {
            while !w.shutdown.is_set() {
                monoio::time::sleep(Duration::from_secs(1)).await;
                let env = w.current.borrow().1.clone();
                if let Some(dns) = &env.dns {
                    w.metrics.publish_dns(&dns.stats());
                }
                if let Some(n) = w.control.admission.pending_log(Instant::now()) {
                    log_refusals(n, w.limit.get());
                }
                if let Some(b) = balance.as_mut() {
                    if let Some((share, n)) = b.observe(&crate::metrics::connections_by_worker()) {
                        log_funnelled(share, n);
                    }
                }
            }
        });
    }
    shutdown.wait().await;
    // Drain. The accept loops end (their listeners close): no new connection. First the grace,
    // in which the sessions carry on; then they answer 421 at their next command, and those
    // inside DATA may finish until the deadline.
    let started = Instant::now();
    let timeout = w.current.borrow().1.settings.shutdown_timeout;
    wait_sessions(&w, started + DRAIN_GRACE.min(timeout)).await;
    closing.trigger();
    wait_sessions(&w, started + timeout).await;
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

/// Waits until no session is left or `until`.
async fn wait_sessions(w: &WorkerEnv, until: Instant) {
    while w.active.get() > 0 && Instant::now() < until {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_loop(w: Rc<WorkerEnv>, listening: crate::listener::Listening, spec: ListenSpec) {
    let mut budget = crate::admission::RefusalBudget::default();
    // Set while refusing has spent its budget: until then nothing is refused, and a connection
    // is accepted only when a place is free (the kernel's queue holds the others).
    let mut paused: Option<Instant> = None;
    loop {
        if let Some(until) = paused.filter(|&t| Instant::now() < t) {
            if w.control.admission.open() >= w.limit.get() {
                let next = until.min(Instant::now() + crate::admission::PAUSE_POLL);
                monoio::select! {
                    _ = monoio::time::sleep_until(monoio::time::Instant::from_std(next)) => {}
                    _ = w.shutdown.wait() => {
                        listening.stop();
                        return;
                    }
                }
                continue;
            }
        }
        let accepted = monoio::select! {
            a = listening.listener.accept() => a,
            _ = w.shutdown.wait() => {
                listening.stop();
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let env = w.env();
                let ticket = match w.control.admission.enter(w.limit.get()) {
                    Ok(ticket) => ticket,
                    Err(refused) => {
                        let started = crate::admission::Mark::now();
                        let reply = crate::admission::refusal_reply(env.svc.me());
                        refuse(&w, stream, &reply, refused.log_count);
                        if paused.is_none_or(|t| Instant::now() >= t) {
                            paused = shed(&w, &listening, &reply, &mut budget, started);
                        }
                        continue;
                    }
                };
                let w2 = w.clone();
                let spec = spec.clone();
                w.active.set(w.active.get() + 1);
                monoio::spawn(async move {
                    let guard = ActiveGuard(w2.clone());
                    let (id, peers) = (w2.conn_id(), &w2.control.peers);
                    let task = Box::pin(incoming::serve(env, id, peers, stream, peer, &spec));
                    if CatchUnwind(task).await.is_err() {
                        crate::log!(
                            Level::Crit,
                            0,
                            "core",
                            "session from {peer} panicked; closed"
                        );
                    }
                    drop(guard);
                    drop(ticket);
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

/// A connection over `max_connections`: `reply` (`421 4.3.2`) and close, at once (see
/// [`crate::admission::answer_and_close`]); `log_count` is the refusals a log line due now
/// reports.
fn refuse(w: &WorkerEnv, stream: monoio::net::TcpStream, reply: &[u8], log_count: Option<u64>) {
    w.metrics
        .connections_refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(n) = log_count {
        log_refusals(n, w.limit.get());
    }
    crate::admission::answer_and_close(stream, reply);
}

/// Right after a refusal: the other connections waiting on this listener refused (`reply`) in one batch
/// ([`crate::admission::refuse_waiting`]), and the CPU time since `started` charged to
/// `budget`. Returns until when refusing pauses, if the budget is spent.
fn shed(
    w: &WorkerEnv,
    listening: &crate::listener::Listening,
    reply: &[u8],
    budget: &mut crate::admission::RefusalBudget,
    started: crate::admission::Mark,
) -> Option<Instant> {
    use crate::admission::{refuse_waiting, REFUSE_BATCH};
    let admission = &w.control.admission;
    let n = refuse_waiting(
        &listening.stopper,
        admission,
        w.limit.get(),
        reply,
        REFUSE_BATCH,
    );
    if n > 0 {
        w.metrics
            .connections_refused
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if let Some(count) = admission.count_refused(n, Instant::now()).log_count {
            log_refusals(count, w.limit.get());
        }
    }
    budget.spend(started, crate::admission::thread_cpu())
}

fn log_funnelled(share: f64, n: u64) {
    crate::log!(
        Level::Warn,
        0,
        "core",
        "cpu_affinity steer: one worker took {:.0}% of the last {n} connections: they arrive on one CPU (a network card with one receive queue and no RPS, or local clients on one core), so the other workers idle; set cpu_affinity off to spread them",
        share * 100.0
    );
}

fn log_refusals(n: u64, limit: usize) {
    crate::log!(
        Level::Warn,
        0,
        "core",
        "connection limit reached (max_connections {limit}): {n} connection(s) refused with 421 4.3.2 since the last report"
    );
}

struct ActiveGuard(Rc<WorkerEnv>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.set(self.0.active.get().saturating_sub(1));
    }
}
