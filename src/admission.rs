//! Admission: the process-wide limit on open connections (config `max_connections`). A
//! connection over the limit is answered `421 4.3.2` and closed at once, before any session
//! state, PROXY header or plugin: under overload the server keeps serving the connections it
//! has, with bounded memory and file descriptors, and tells the others to come back later
//! (RFC 5321 §3.8: a server that must refuse service answers 421 and closes). Refusals are
//! counted (`ringsmtpd_connections_refused_total`) and logged once per [`LOG_INTERVAL`] with
//! the count since the last line, never once per connection.
//!
//! A refusal is not free (an accept, a send and a close: on loopback about 40% of a null-chain
//! session's CPU, bench/overload), and under a flood unbounded refusals starve the sessions
//! admitted. So a worker that refuses one connection refuses the others already waiting on
//! that listener in the same batch ([`refuse_waiting`]: plain `accept(2)` calls, no ring
//! operation or task per connection): a client is served or told 421 at once instead of
//! waiting for the same 421 behind hundreds of others. And refusing has a budget
//! ([`RefusalBudget`]): once a worker's refusals have taken a quarter of the CPU time it used
//! lately, it stops refusing on that listener for the rest of a short window (10 ms) and
//! accepts only into places that free up; what arrives meanwhile waits in the kernel's queue
//! (`listen_backlog`), and beyond that the kernel drops the SYNs, which costs the server
//! nothing (the client retries or gives up, as with any full server).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// At most one "connection limit reached" log line per interval (per process).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// File descriptors kept free of connections when `max_connections` is not set: listeners,
/// spool files, backend connections, the state store, the blocking pool's files.
const FD_RESERVE: u64 = 256;

/// The limit when no `max_connections` file is given and the open-file limit cannot be read.
const FALLBACK_LIMIT: usize = 1000;

/// Open connections of the process and the refusals not yet logged.
#[derive(Default)]
pub struct Admission {
    open: AtomicUsize,
    /// Refusals since the last log line.
    unlogged: AtomicU64,
    /// When the last log line was written (`None`: never).
    last_log: Mutex<Option<Instant>>,
}

/// One admitted connection's place in the count; leaving is dropping it.
pub struct Ticket(Arc<Admission>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A refusal: how many refusals the log line due now reports (`None`: no line due yet).
pub struct Refused {
    pub log_count: Option<u64>,
}

impl Admission {
    pub fn new() -> Arc<Admission> {
        Arc::new(Admission::default())
    }

    /// Admits a connection if fewer than `limit` are open, else counts a refusal.
    pub fn enter(self: &Arc<Self>, limit: usize) -> Result<Ticket, Refused> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before < limit {
            return Ok(Ticket(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        Err(self.refused(Instant::now()))
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn refused(&self, now: Instant) -> Refused {
        self.count_refused(1, now)
    }

    /// Counts `n` refusals made outside [`Admission::enter`] (a batch of
    /// [`refuse_waiting`]).
    pub fn count_refused(&self, n: u64, now: Instant) -> Refused {
        self.unlogged.fetch_add(n, Ordering::AcqRel);
        Refused {
            log_count: self.due(now),
        }
    }

    /// The refusals a log line due at `now` reports: the workers call this once a second, so
    /// the count of a burst that ended is logged without waiting for the next refusal.
    pub fn pending_log(&self, now: Instant) -> Option<u64> {
        if self.unlogged.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.due(now)
    }

    fn due(&self, now: Instant) -> Option<u64> {
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|t| now.saturating_duration_since(t) >= LOG_INTERVAL);
        if !due {
            return None;
        }
        let n = self.unlogged.swap(0, Ordering::AcqRel);
        if n == 0 {
            return None;
        }
        *last = Some(now);
        Some(n)
    }
}

/// The limit to apply: `max_connections` when set, else the process's open-file limit less
/// [`FD_RESERVE`] (so that accept never fails with EMFILE while sessions still need files),
/// at least 1.
pub fn limit(configured: Option<usize>) -> usize {
    if let Some(n) = configured {
        return n;
    }
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a pointer to a live, properly aligned
    // local of that type and keeps no reference to it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return FALLBACK_LIMIT;
    }
    let cur = rl.rlim_cur; // RLIM_INFINITY is u64::MAX: clamped below
    usize::try_from(cur.saturating_sub(FD_RESERVE).clamp(1, 1 << 24)).unwrap_or(FALLBACK_LIMIT)
}

/// The reply to a connection over the limit, with this host's name.
pub fn refusal_reply(me: &str) -> Vec<u8> {
    let mut out = Vec::new();
    crate::proto::reply::write(
        &mut out,
        421,
        "4.3.2",
        &format!("{me} Too many connections, try again later"),
    );
    out
}

/// The window [`RefusalBudget`] measures refusals in.
pub const BUDGET_WINDOW: Duration = Duration::from_millis(10);

/// Refusals may take this part of the CPU time a worker's thread uses: a quarter, so that
/// three quarters stay with the sessions it admitted however many clients knock.
const BUDGET_SHARE: f64 = 0.25;

/// The least refusals may take per window, whatever the thread did before (after an idle
/// spell, when its sessions are all idle): 5% of a window.
const MIN_BUDGET: Duration = Duration::from_micros(500);

/// While refusing is paused, how often a worker at the limit looks for a free place (a
/// session that ended, here or on another worker) to accept the next connection into.
pub const PAUSE_POLL: Duration = Duration::from_millis(1);

/// Connections one [`refuse_waiting`] batch refuses at most, so that the sessions' own
/// events are not held up behind a long batch.
pub const REFUSE_BATCH: usize = 64;

/// When a refusal batch started: the clock, and the CPU time the worker's thread had used.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    pub at: Instant,
    pub cpu: Duration,
}

impl Mark {
    pub fn now() -> Mark {
        Mark {
            at: Instant::now(),
            cpu: thread_cpu(),
        }
    }
}

/// The CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a pointer to a live, properly aligned
    // local of that type and keeps no reference to it.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// A worker's CPU time spent refusing on one listener, per [`BUDGET_WINDOW`]: at most
/// [`BUDGET_SHARE`] of the CPU time its thread used in the window before (at least
/// [`MIN_BUDGET`]). CPU time, not the clock: on a busy host, or under a CPU quota, the worker
/// gets less than the whole window, and a quarter of the clock could be all of its CPU.
#[derive(Default)]
pub struct RefusalBudget {
    /// The current window: when it began, and the thread's CPU time then.
    window: Option<Mark>,
    allowed: Duration,
    spent: Duration,
}

impl RefusalBudget {
    /// Counts a refusal batch that began at `start` and ended with the thread's CPU time at
    /// `cpu_end`. Returns until when refusing on the listener pauses, if this window's budget
    /// is spent (the end of the window).
    pub fn spend(&mut self, start: Mark, cpu_end: Duration) -> Option<Instant> {
        let window = match self.window {
            Some(w) if start.at < w.at + BUDGET_WINDOW => w,
            previous => {
                // The thread's CPU time per window since the previous window began (spread
                // over the gap when refusals paused for a while).
                let used = previous.map_or(Duration::ZERO, |w| {
                    let wall = start.at.saturating_duration_since(w.at).max(BUDGET_WINDOW);
                    start
                        .cpu
                        .saturating_sub(w.cpu)
                        .mul_f64(BUDGET_WINDOW.as_secs_f64() / wall.as_secs_f64())
                });
                self.allowed = used.mul_f64(BUDGET_SHARE).max(MIN_BUDGET);
                self.spent = Duration::ZERO;
                self.window = Some(start);
                start
            }
        };
        self.spent += cpu_end.saturating_sub(start.cpu);
        (self.spent >= self.allowed).then_some(window.at + BUDGET_WINDOW)
    }
}

/// Refuses, in one batch, the connections waiting in `listener`'s accept queue while the
/// process is at `limit`: each taken with a plain `accept(2)` (no ring operation, no task, no
/// wake-up per connection), answered `reply` and closed as
/// [`answer_and_close`] does. Stops at an empty queue, after `max` connections, or as soon as
/// a place is free (the next connection is served). The listener may be in blocking mode
/// (monoio's io_uring driver makes it so): each accept follows a `poll(2)` that does not wait,
/// and only this worker accepts on its socket, so an accept never blocks. Returns how many it
/// refused; the caller counts them.
pub fn refuse_waiting(
    listener: &std::net::TcpListener,
    admission: &Admission,
    limit: usize,
    reply: &[u8],
    max: usize,
) -> u64 {
    let mut n = 0;
    while n < max as u64 && admission.open() >= limit && waiting(listener) {
        match listener.accept() {
            Ok((stream, _)) => {
                answer_and_close(stream, reply);
                n += 1;
            }
            Err(_) => break, // the client gave up meanwhile, or an error the ring will see
        }
    }
    n
}

/// Whether a connection waits in `listener`'s accept queue now (a `poll(2)` that does not
/// wait).
fn waiting(listener: &std::net::TcpListener) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one live, properly initialised pollfd and the count passed is 1; the
    // fd is the listener's, open for the whole call. A timeout of 0 never blocks.
    let r = unsafe { libc::poll(&mut pfd, 1, 0) };
    r == 1 && pfd.revents & libc::POLLIN != 0
}

/// What is read and dropped from a refused client at most (its PROXY header, a pipelined EHLO).
const DRAIN_BYTES: usize = 4096;

/// Answers a refused connection and closes it, at once and without a task, a timer or an
/// io_uring operation: under overload a refusal must cost far less than a session, or
/// refusing starves the sessions admitted. The reply goes out with one non-blocking send (a
/// fresh socket's send buffer is empty); what the client already sent (a load balancer's
/// PROXY header) is read and dropped without waiting, because closing a socket with unread
/// bytes sends a reset that can destroy the 421 before the client reads it. Dropping the
/// stream closes it.
pub fn answer_and_close(stream: impl std::os::fd::AsRawFd, reply: &[u8]) {
    let fd = stream.as_raw_fd();
    // SAFETY: `fd` is the open socket `stream` owns for the whole call; `reply` is a live
    // slice and send reads at most `reply.len()` bytes of it. MSG_DONTWAIT: never blocks.
    let _ = unsafe {
        libc::send(
            fd,
            reply.as_ptr().cast(),
            reply.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    let mut buf = [0u8; 512];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        // SAFETY: as above; recv writes at most `buf.len()` bytes into the live local `buf`.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n <= 0 {
            break; // nothing more now (EAGAIN), closed by the client, or an error
        }
        drained += n as usize;
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_on_drop() {
        let a = Admission::new();
        let t1 = a.enter(2).ok().expect("first");
        let _t2 = a.enter(2).ok().expect("second");
        assert!(a.enter(2).is_err(), "third over a limit of 2");
        assert_eq!(a.open(), 2, "a refusal leaves the count as it was");
        drop(t1);
        assert_eq!(a.open(), 1);
        assert!(
            a.enter(2).is_ok(),
            "a place freed by a closed connection is reused"
        );
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_their_count() {
        let a = Admission::default();
        let t0 = Instant::now();
        assert_eq!(
            a.refused(t0).log_count,
            Some(1),
            "the first refusal is logged at once"
        );
        for _ in 0..5 {
            assert_eq!(a.refused(t0 + Duration::from_secs(1)).log_count, None);
        }
        let later = t0 + LOG_INTERVAL + Duration::from_secs(1);
        assert_eq!(
            a.refused(later).log_count,
            Some(6),
            "the next line reports every refusal since the last one"
        );
        assert_eq!(a.refused(later).log_count, None);
        assert_eq!(a.pending_log(later), None, "not due yet");
        let flush = later + LOG_INTERVAL;
        assert_eq!(
            a.pending_log(flush),
            Some(1),
            "a burst that ended is logged by the periodic flush"
        );
        assert_eq!(a.pending_log(flush + LOG_INTERVAL), None, "nothing left");
    }

    #[test]
    fn limit_is_the_configured_one_or_below_the_file_limit() {
        assert_eq!(limit(Some(7)), 7);
        let auto = limit(None);
        assert!(auto >= 1);
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `limit`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
        assert!(
            (auto as u64) < rl.rlim_cur.max(2),
            "leaves fds for the rest"
        );
    }

    #[test]
    fn refusals_get_a_quarter_of_the_cpu_the_worker_used() {
        let mut b = RefusalBudget::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        let mark = |at: Duration, cpu: Duration| Mark { at: t0 + at, cpu };
        // First window: nothing known of the thread yet, the least budget (0.5 ms).
        assert_eq!(b.spend(mark(ms(0), ms(100)), ms(100) + us(300)), None);
        assert_eq!(
            b.spend(mark(ms(1), ms(101)), ms(101) + us(300)),
            Some(t0 + BUDGET_WINDOW),
            "0.6 ms of 0.5: pause until the window ends"
        );
        // The thread used 8 ms of CPU in the first window: 2 ms for refusals in the next.
        assert_eq!(b.spend(mark(ms(10), ms(108)), ms(109)), None);
        assert_eq!(
            b.spend(mark(ms(12), ms(110)), ms(111)),
            Some(t0 + ms(20)),
            "2 ms of 2 spent"
        );
        // A thread that got 3 ms of CPU a window (a CPU quota): 0.75 ms, not a quarter of
        // the clock's 10 ms.
        assert_eq!(b.spend(mark(ms(20), ms(111)), ms(111) + us(700)), None);
        assert_eq!(
            b.spend(mark(ms(21), ms(112)), ms(112) + us(100)),
            Some(t0 + ms(30))
        );
        // After an idle second (2 ms of CPU in it): the least budget again.
        assert_eq!(
            b.spend(mark(ms(1030), ms(113)), ms(113) + us(600)),
            Some(t0 + ms(1040))
        );
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let before = thread_cpu();
        let mut x = 0u64;
        while thread_cpu() == before {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(thread_cpu() > before, "{x}");
    }

    /// `n` clients connected to a fresh listener in blocking mode (as monoio's io_uring
    /// driver leaves a worker's), waiting in its accept queue.
    fn queued(n: usize) -> (std::net::TcpListener, Vec<std::net::TcpStream>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let clients = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        (l, clients)
    }

    #[test]
    fn at_the_limit_the_waiting_connections_are_refused_in_one_batch() {
        use std::io::Read;
        let a = Admission::new();
        let _held = a.enter(1).ok().expect("the one place");
        let (l, clients) = queued(5);
        let reply = refusal_reply("mx.example");
        // On a thread of its own: an accept that blocked on the empty queue would hang it,
        // and the test fails instead of hanging.
        let (tx, rx) = std::sync::mpsc::channel();
        let (l, reply2, a2) = (l.try_clone().unwrap(), reply.clone(), a.clone());
        std::thread::spawn(move || {
            let counts = [3, 64, 64].map(|max| refuse_waiting(&l, &a2, 1, &reply2, max));
            let _ = tx.send(counts);
        });
        let counts = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("refuse_waiting blocked on an empty queue");
        assert_eq!(counts, [3, 2, 0], "at most `max`, then the rest, then none");
        for mut c in clients {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, reply, "each client read the 421, then the close");
        }
        assert_eq!(a.open(), 1, "refusals take no place");
    }

    #[test]
    fn with_a_free_place_nothing_is_refused() {
        let a = Admission::new();
        let (l, _clients) = queued(2);
        l.set_nonblocking(true).unwrap();
        let reply = refusal_reply("mx.example");
        assert_eq!(refuse_waiting(&l, &a, 1, &reply, 64), 0);
        let mut waiting = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while waiting < 2 && std::time::Instant::now() < deadline {
            match l.accept() {
                Ok(_) => waiting += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        assert_eq!(waiting, 2, "both still waited to be served");
    }

    #[test]
    fn a_batch_counts_its_refusals_for_the_log() {
        let a = Admission::default();
        let t0 = Instant::now();
        assert_eq!(a.count_refused(7, t0).log_count, Some(7));
    }

    #[test]
    fn refusal_reply_is_421_4_3_2() {
        let r = refusal_reply("mx.example");
        assert_eq!(
            r,
            b"421 4.3.2 mx.example Too many connections, try again later\r\n"
        );
    }
}
