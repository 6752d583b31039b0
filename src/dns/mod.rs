//! The per-worker DNS client: one [`Resolver`] per worker thread, on that worker's monoio
//! runtime, with hickory-proto for the wire format only. See `docs/dns.md` for the design and
//! the figures.
//!
//! - [`Resolver::query`] answers from the cache, or joins an identical question already in
//!   flight (coalescing), or starts a new one; the handle can be stored and awaited later, and
//!   dropping every handle of a question withdraws interest.
//! - Questions raised in one turn of the event loop are queued and sent together by one
//!   sender task (the batcher).
//! - Each try goes to the next upstream, from a random one of a few UDP sockets (random source
//!   ports, rotated), with a random query ID from the kernel's CSPRNG. A reply is believed only
//!   if its source, socket, ID and question match a query in flight; anything else is dropped
//!   and counted ([`DnsStats::dropped_spoofed`]).
//! - A truncated reply (TC) is asked again over TCP; SERVFAIL, REFUSED and silence move on to
//!   the next upstream; after `retries + 1` tries the lookup fails with the worst error seen.
//!   Nothing waits longer than `timeout * (retries + 1)`.
//!
//! Everything here is `!Send`: the resolver lives and dies on its worker.

mod cache;
mod conf;
#[doc(hidden)]
pub mod fake;
mod net;
#[cfg(test)]
mod tests;
pub(crate) mod wire;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use hickory_proto::op::Message;
use ringsmtpd_plugin_api::Level;

pub use conf::{
    default_servers, parse_server, resolv_conf_servers, DEFAULT_DNS_CACHE_SIZE,
    DEFAULT_DNS_RETRIES, DEFAULT_DNS_TIMEOUT, DNS_PORT, FALLBACK_SERVER,
};
pub use ringsmtpd_plugin_api::dns::{DnsAnswer, DnsError, DnsLookup, DnsResult, QType, Record};
pub use wire::{MAX_NEGATIVE_TTL, MAX_POSITIVE_TTL, UDP_PAYLOAD};

use cache::Cache;
use net::{Notify, Random, Sock};
use wire::Question;

/// Questions in flight per worker (distinct (name, type) pairs awaiting an answer; coalesced
/// waiters do not count). A new question beyond this is answered `Err(Refused)` at once,
/// without a packet: memory stays bounded under a torrent of lookups and the plugin applies
/// its soft failure, as for any DNS error. 8192 is ~1,600 connections each with five
/// distinct DNSBL questions outstanding, on one core.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8192;
/// UDP sockets per address family: each has its own random source port, and each try picks
/// one at random, adding ~2 bits to the 16 of the ID that a spoofer must guess.
pub const SOCKETS_PER_FAMILY: usize = 4;
/// A socket is replaced by a fresh one (a new random port) after carrying this many queries,
/// so a port learned by an attacker is soon worthless.
pub const DEFAULT_ROTATE_AFTER: u32 = 4096;

/// What a resolver needs to know. `Settings::resolver_config` takes it from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Upstreams, tried in order: try `n` goes to `servers[n % len]`. Empty: every lookup
    /// answers `Err(NoResolver)`.
    pub servers: Vec<SocketAddr>,
    /// How long one try waits for its answer (UDP, and TCP after truncation).
    pub timeout: Duration,
    /// Tries after the first.
    pub retries: u32,
    /// Answers kept in the cache (0: no cache).
    pub cache_size: usize,
    /// See [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// See [`DEFAULT_ROTATE_AFTER`].
    pub rotate_after: u32,
}

impl ResolverConfig {
    /// `servers` with the default timeout, retries and sizes.
    pub fn new(servers: Vec<SocketAddr>) -> ResolverConfig {
        ResolverConfig {
            servers,
            timeout: DEFAULT_DNS_TIMEOUT,
            retries: DEFAULT_DNS_RETRIES,
            cache_size: DEFAULT_DNS_CACHE_SIZE,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            rotate_after: DEFAULT_ROTATE_AFTER,
        }
    }

    /// The longest a lookup can take before it resolves (to `Err(Timeout)` at worst).
    pub fn budget(&self) -> Duration {
        self.timeout * (self.retries + 1)
    }
}

/// The resolver's counters, for metrics. All but the last two only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Calls to [`Resolver::query`].
    pub lookups: u64,
    /// Lookups answered from the cache, without a packet.
    pub cache_hits: u64,
    /// Lookups that joined an identical question already in flight.
    pub coalesced: u64,
    /// UDP queries sent (first tries and retries).
    pub queries_sent: u64,
    /// Tries after the first of a question.
    pub retries: u64,
    /// Questions asked again over TCP after a truncated UDP reply.
    pub tcp_queries: u64,
    /// Tries that got no answer in time.
    pub try_timeouts: u64,
    /// Lookups that ended in `Err(Timeout)`.
    pub timeouts: u64,
    /// Lookups that ended in another error (SERVFAIL, REFUSED...).
    pub failures: u64,
    /// Replies dropped because they match no query in flight: wrong ID, wrong source address,
    /// wrong question, or late (their query already timed out). Spoofing attempts land here.
    pub dropped_spoofed: u64,
    /// Replies from the right place that do not parse.
    pub dropped_malformed: u64,
    /// Lookups refused because `max_in_flight` questions were in flight.
    pub overloaded: u64,
    /// Times the sender task flushed its queue (one batch each).
    pub batches: u64,
    /// UDP sockets opened (the pool, and its rotations).
    pub sockets_opened: u64,
    /// Sends that failed locally (the try then fails at once).
    pub send_errors: u64,
    /// Questions in flight now (gauge).
    pub in_flight: u64,
    /// Answers in the cache now (gauge).
    pub cache_entries: u64,
}

/// One worker's DNS client. Cheap to clone (one `Rc`); every clone is the same resolver.
///
/// Must be used on the thread of the monoio runtime it was first queried on (it spawns tasks
/// there): one resolver per worker.
#[derive(Clone)]
pub struct Resolver(Rc<Inner>);

impl Resolver {
    /// A resolver; no socket is opened and no task spawned before the first query.
    pub fn new(cfg: ResolverConfig) -> Resolver {
        Resolver(Rc::new_cyclic(|me| Inner {
            me: me.clone(),
            st: RefCell::new(State {
                cache: Cache::new(cfg.cache_size),
                in_flight: HashMap::new(),
                pending: HashMap::new(),
                queue: Vec::new(),
                pools: [Vec::new(), Vec::new()],
                next_serial: 0,
                rng: Random::new(),
                key: String::with_capacity(256),
            }),
            cfg,
            stats: RefCell::new(DnsStats::default()),
            wake: Rc::new(Notify::default()),
            sender_running: Cell::new(false),
        }))
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.0.cfg
    }

    /// Asks (`name`, `qtype`) now; await the handle when the answer is needed. A fresh cached
    /// answer gives a handle that is ready at once. Names are case-insensitive and may end in
    /// a dot; an invalid one gives `Err(BadName)` at once.
    pub fn query(&self, name: &str, qtype: QType) -> Lookup {
        self.0.query(&self.0, name, qtype)
    }

    /// [`Resolver::query`] in the plugin API's handle type.
    pub fn lookup(&self, name: &str, qtype: QType) -> DnsLookup {
        let l = self.query(name, qtype);
        match &l.0 {
            Handle::Ready(r) => DnsLookup::ready(r.clone()),
            Handle::Waiting(_) => DnsLookup::new(l),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> DnsStats {
        let mut s = *self.0.stats.borrow();
        let st = self.0.st.borrow();
        s.in_flight = st.in_flight.len() as u64;
        s.cache_entries = st.cache.len() as u64;
        s
    }
}

/// A lookup: a future of its [`DnsResult`]. Dropping it withdraws this waiter's interest;
/// when no waiter is left, the question is not tried again (an answer to the try under way is
/// still cached).
#[must_use = "a lookup does nothing if its result is never awaited"]
pub struct Lookup(Handle);

enum Handle {
    Ready(DnsResult),
    Waiting(Rc<Flight>),
}

impl Lookup {
    fn ready(r: DnsResult) -> Lookup {
        Lookup(Handle::Ready(r))
    }

    /// The result if it is already known (a cache hit, an error, or a finished question).
    pub fn now(&self) -> Option<DnsResult> {
        match &self.0 {
            Handle::Ready(r) => Some(r.clone()),
            Handle::Waiting(f) => f.result.borrow().clone(),
        }
    }
}

impl Future for Lookup {
    type Output = DnsResult;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<DnsResult> {
        match &self.0 {
            Handle::Ready(r) => Poll::Ready(r.clone()),
            Handle::Waiting(f) => {
                if let Some(r) = f.result.borrow().as_ref() {
                    return Poll::Ready(r.clone());
                }
                let mut wakers = f.wakers.borrow_mut();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Lookup {
    fn drop(&mut self) {
        if let Handle::Waiting(f) = &self.0 {
            f.handles.set(f.handles.get().saturating_sub(1));
        }
    }
}

/// One question in flight, shared by its waiters, its task and its pending tries.
struct Flight {
    /// Type tag + lowercased name: the in-flight and cache key.
    key: String,
    q: Question,
    /// Live [`Lookup`]s waiting for this question.
    handles: Cell<usize>,
    result: RefCell<Option<DnsResult>>,
    wakers: RefCell<Vec<Waker>>,
}

/// A try awaiting its reply, by (socket serial, query ID).
struct Pending {
    flight: Rc<Flight>,
    upstream: SocketAddr,
    tx: oneshot::Sender<Message>,
    _sock: SockUse,
}

/// Counts a pending query on its socket for as long as the entry lives.
struct SockUse(Rc<Sock>);

impl Drop for SockUse {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// A packet for the sender.
struct Packet {
    key: (u32, u16),
    sock: Rc<Sock>,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// A try as its flight task sees it.
struct Try {
    key: (u32, u16),
    upstream: SocketAddr,
    rx: oneshot::Receiver<Message>,
}

struct State {
    cache: Cache,
    in_flight: HashMap<String, Rc<Flight>>,
    pending: HashMap<(u32, u16), Pending>,
    /// Packets raised since the sender last ran.
    queue: Vec<Packet>,
    /// Live sockets, IPv4 and IPv6.
    pools: [Vec<Rc<Sock>>; 2],
    next_serial: u32,
    rng: Random,
    /// Scratch space for the key of a lookup (no allocation on the cache-hit path).
    key: String,
}

struct Inner {
    /// This resolver, for the tasks it spawns (they must not keep it alive).
    me: Weak<Inner>,
    cfg: ResolverConfig,
    st: RefCell<State>,
    stats: RefCell<DnsStats>,
    /// Wakes the sender task.
    wake: Rc<Notify>,
    sender_running: Cell<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only when no flight task is left (they hold the Rc): stop the background tasks.
        self.wake.close();
        for pool in &self.st.get_mut().pools {
            for s in pool {
                s.stop.close();
            }
        }
    }
}

impl Inner {
    fn bump(&self, f: impl FnOnce(&mut DnsStats)) {
        f(&mut self.stats.borrow_mut());
    }

    fn query(&self, this: &Rc<Inner>, name: &str, qtype: QType) -> Lookup {
        self.bump(|s| s.lookups += 1);
        if self.cfg.servers.is_empty() {
            return Lookup::ready(Err(DnsError::NoResolver));
        }
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        if let Err(e) = wire::key_into(name, qtype, &mut st.key) {
            return Lookup::ready(Err(e));
        }
        if let Some(answer) = st.cache.get(&st.key, Instant::now()) {
            self.bump(|s| s.cache_hits += 1);
            return Lookup::ready(Ok(answer));
        }
        if let Some(f) = st.in_flight.get(&st.key) {
            f.handles.set(f.handles.get() + 1);
            self.bump(|s| s.coalesced += 1);
            return Lookup(Handle::Waiting(f.clone()));
        }
        if st.in_flight.len() >= self.cfg.max_in_flight {
            self.bump(|s| s.overloaded += 1);
            return Lookup::ready(Err(DnsError::Refused));
        }
        let q = match wire::question(wire::key_name(&st.key), qtype) {
            Ok(q) => q,
            Err(e) => return Lookup::ready(Err(e)),
        };
        let flight = Rc::new(Flight {
            key: st.key.clone(),
            q,
            handles: Cell::new(1),
            result: RefCell::new(None),
            wakers: RefCell::new(Vec::new()),
        });
        st.in_flight.insert(flight.key.clone(), flight.clone());
        let first = self.start_try(st, &flight, 0);
        monoio::spawn(run_flight(this.clone(), flight.clone(), first));
        self.ensure_sender();
        Lookup(Handle::Waiting(flight))
    }

    /// Registers try `attempt` of `flight` and queues its packet for the sender.
    fn start_try(
        &self,
        st: &mut State,
        flight: &Rc<Flight>,
        attempt: u32,
    ) -> Result<Try, DnsError> {
        let servers = &self.cfg.servers;
        let upstream = servers[attempt as usize % servers.len()];
        let sock = self.socket(st, upstream).map_err(|e| {
            crate::log!(Level::Error, 0, "dns", "cannot open a UDP socket: {e}");
            DnsError::Refused
        })?;
        // A random ID not in use on this socket. Few are (one per try in flight), so this
        // ends at once; the bound only guards against a misconfigured huge max_in_flight.
        let mut id = st.rng.u16();
        let mut draws = 1;
        while st.pending.contains_key(&(sock.serial, id)) {
            if draws == 64 {
                return Err(DnsError::Refused);
            }
            id = st.rng.u16();
            draws += 1;
        }
        let key = (sock.serial, id);
        let (tx, rx) = oneshot::channel();
        sock.pending.set(sock.pending.get() + 1);
        st.pending.insert(
            key,
            Pending {
                flight: flight.clone(),
                upstream,
                tx,
                _sock: SockUse(sock.clone()),
            },
        );
        st.queue.push(Packet {
            key,
            sock,
            to: upstream,
            bytes: wire::with_id(&flight.q, id),
        });
        self.wake.notify();
        Ok(Try { key, upstream, rx })
    }

    /// A socket for `upstream`'s family: a new one while the pool is short, else a random
    /// one. A socket that has carried `rotate_after` queries leaves the pool.
    fn socket(&self, st: &mut State, upstream: SocketAddr) -> std::io::Result<Rc<Sock>> {
        let fam = usize::from(upstream.is_ipv6());
        let sock = if st.pools[fam].len() < SOCKETS_PER_FAMILY {
            st.next_serial = st.next_serial.wrapping_add(1);
            let sock = Rc::new(Sock::bind(st.next_serial, upstream)?);
            self.bump(|s| s.sockets_opened += 1);
            monoio::spawn(receive(self.me.clone(), sock.clone()));
            st.pools[fam].push(sock.clone());
            sock
        } else {
            let i = usize::from(st.rng.u16()) % st.pools[fam].len();
            st.pools[fam][i].clone()
        };
        sock.sent.set(sock.sent.get().saturating_add(1));
        if sock.sent.get() >= self.cfg.rotate_after.max(1) {
            st.pools[fam].retain(|s| !Rc::ptr_eq(s, &sock));
            sock.retired.set(true);
            // Its receive task ends when its last pending query is answered or times out.
        }
        Ok(sock)
    }

    fn ensure_sender(&self) {
        if !self.sender_running.replace(true) {
            monoio::spawn(sender(self.me.clone(), self.wake.clone()));
        }
    }

    /// Hands a datagram from `from` on `sock` to the try it answers, or drops it.
    fn on_datagram(&self, sock: &Sock, bytes: &[u8], from: SocketAddr) {
        let Some(head) = bytes.get(..2) else {
            self.bump(|s| s.dropped_malformed += 1);
            return;
        };
        let id = u16::from_be_bytes([head[0], head[1]]);
        let key = (sock.serial, id);
        let mut st = self.st.borrow_mut();
        let Some(p) = st.pending.get(&key) else {
            drop(st);
            self.bump(|s| s.dropped_spoofed += 1);
            return;
        };
        if p.upstream.ip() != from.ip() || p.upstream.port() != from.port() {
            drop(st);
            self.bump(|s| s.dropped_spoofed += 1);
            return;
        }
        let Ok(msg) = Message::from_vec(bytes) else {
            drop(st);
            self.bump(|s| s.dropped_malformed += 1);
            return;
        };
        if !wire::is_reply_to(&msg, id, &p.flight.q) {
            drop(st);
            self.bump(|s| s.dropped_spoofed += 1);
            return;
        }
        let p = st.pending.remove(&key);
        drop(st);
        if let Some(p) = p {
            // The flight task may have just timed out this try: then the answer is late.
            let _ = p.tx.send(msg);
        }
    }

    /// Removes the pending entry of a try that timed out.
    fn forget(&self, key: (u32, u16)) {
        let p = self.st.borrow_mut().pending.remove(&key);
        drop(p); // outside the borrow: Pending::drop touches only its socket
    }

    /// Ends a question: caches the answer, leaves the in-flight table, wakes the waiters.
    fn finish(&self, flight: &Rc<Flight>, result: DnsResult) {
        {
            let mut st = self.st.borrow_mut();
            if let Ok(answer) = &result {
                st.cache.insert(&flight.key, answer.clone(), Instant::now());
            }
            if st
                .in_flight
                .get(&flight.key)
                .is_some_and(|f| Rc::ptr_eq(f, flight))
            {
                st.in_flight.remove(&flight.key);
            }
        }
        self.bump(|s| match result {
            Err(DnsError::Timeout) => s.timeouts += 1,
            Err(_) => s.failures += 1,
            Ok(_) => {}
        });
        *flight.result.borrow_mut() = Some(result);
        let wakers = std::mem::take(&mut *flight.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

/// Worst error first: SERVFAIL says the most about the name, silence the least.
fn worse(a: Option<DnsError>, b: DnsError) -> DnsError {
    let rank = |e: DnsError| match e {
        DnsError::ServFail => 3,
        DnsError::Refused => 2,
        _ => 1,
    };
    match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    }
}

/// The life of one question: its tries, one after another, until an answer, or the last try,
/// or no waiter is left.
async fn run_flight(inner: Rc<Inner>, flight: Rc<Flight>, first: Result<Try, DnsError>) {
    let tries = inner.cfg.retries.saturating_add(1);
    let mut worst: Option<DnsError> = None;
    let mut first = Some(first);
    for attempt in 0..tries {
        let t = match first.take() {
            Some(t) => t,
            None => {
                if flight.handles.get() == 0 {
                    break; // withdrawn: nobody wants the answer enough to ask again
                }
                inner.bump(|s| s.retries += 1);
                let mut st = inner.st.borrow_mut();
                inner.start_try(&mut st, &flight, attempt)
            }
        };
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                worst = Some(worse(worst, e));
                continue;
            }
        };
        let deadline = Instant::now() + inner.cfg.timeout;
        let msg = match monoio::time::timeout(inner.cfg.timeout, t.rx).await {
            Ok(Ok(msg)) => msg,
            Ok(Err(_)) => {
                // The sender could not send it (its pending entry is gone).
                worst = Some(worse(worst, DnsError::Refused));
                continue;
            }
            Err(_) => {
                inner.forget(t.key);
                inner.bump(|s| s.try_timeouts += 1);
                worst = Some(worse(worst, DnsError::Timeout));
                continue;
            }
        };
        let msg = if msg.metadata.truncation {
            // RFC 7766 §5: a truncated UDP reply is asked again over TCP, same upstream.
            inner.bump(|s| s.tcp_queries += 1);
            let query = wire::with_id(&flight.q, msg.metadata.id);
            match net::tcp_exchange(t.upstream, &query, deadline).await {
                Ok(m) if wire::is_reply_to(&m, msg.metadata.id, &flight.q) => m,
                Ok(_) => {
                    inner.bump(|s| s.dropped_spoofed += 1);
                    worst = Some(worse(worst, DnsError::Refused));
                    continue;
                }
                Err(e) => {
                    if e == DnsError::Timeout {
                        inner.bump(|s| s.try_timeouts += 1);
                    }
                    worst = Some(worse(worst, e));
                    continue;
                }
            }
        } else {
            msg
        };
        match wire::interpret(&msg, &flight.q) {
            wire::Verdict::Answer(a) => {
                inner.finish(&flight, Ok(Rc::new(a)));
                return;
            }
            wire::Verdict::ServFail => worst = Some(worse(worst, DnsError::ServFail)),
            wire::Verdict::Refused => worst = Some(worse(worst, DnsError::Refused)),
        }
    }
    inner.finish(&flight, Err(worst.unwrap_or(DnsError::Timeout)));
}

/// The batcher: waits until packets are queued, then sends everything queued in one go.
///
/// It is woken by the first question of a loop turn and so runs after every task that was
/// ready before it; all the questions those tasks raised are in the queue by then. Its sends
/// are polled together, so on io_uring they become one batch of SQEs handed to the kernel in
/// one `io_uring_enter` when the worker next parks.
async fn sender(inner: Weak<Inner>, wake: Rc<Notify>) {
    loop {
        if wake.wait().await {
            return;
        }
        let batch = {
            let Some(inner) = inner.upgrade() else { return };
            inner.bump(|s| s.batches += 1);
            let mut st = inner.st.borrow_mut();
            std::mem::take(&mut st.queue)
        };
        if batch.is_empty() {
            continue;
        }
        let results = net::join_all(batch.into_iter().map(send_one).collect()).await;
        let Some(inner) = inner.upgrade() else { return };
        let (mut ok, mut failed) = (0, Vec::new());
        for (key, r) in results {
            match r {
                Ok(_) => ok += 1,
                Err(_) => failed.push(key),
            }
        }
        inner.bump(|s| {
            s.queries_sent += ok;
            s.send_errors += failed.len() as u64;
        });
        for key in failed {
            // Dropping the entry's sender tells the flight task at once.
            inner.forget(key);
        }
    }
}

async fn send_one(p: Packet) -> ((u32, u16), std::io::Result<usize>) {
    let (r, _) = p.sock.udp.send_to(p.bytes, p.to).await;
    (p.key, r)
}

/// Reads replies on one socket until the resolver is gone or the socket is retired and idle.
async fn receive(inner: Weak<Inner>, sock: Rc<Sock>) {
    let mut buf: Vec<u8> = Vec::with_capacity(net::RECV_BUF);
    let mut errors = 0u32;
    loop {
        buf.clear();
        let (res, b) = monoio::select! {
            r = sock.udp.recv_from(buf) => r,
            _ = sock.stop.wait() => return,
        };
        buf = b;
        match res {
            Ok((n, from)) => {
                errors = 0;
                let Some(inner) = inner.upgrade() else { return };
                inner.on_datagram(&sock, buf.get(..n).unwrap_or_default(), from);
            }
            Err(e) => {
                // ECANCELED (125) and the like; back off if they repeat, never spin.
                errors += 1;
                if errors > 3 {
                    crate::log!(Level::Warn, 0, "dns", "UDP receive: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}
