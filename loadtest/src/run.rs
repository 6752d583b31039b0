//! A run: one monoio runtime per worker thread (as the server does it), connection slots
//! spread over the workers, and the calling thread sampling progress until all are done.

use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{run_slot, Shared, WorkerCtx};
use crate::config::{Config, Driver};
use crate::conn::client_config;
use crate::message::Messages;
use crate::stats::{Sample, Stats};

/// How often the timeline is sampled (the throughput plot's resolution).
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Everything a run measured.
pub struct Report {
    pub cfg: Config,
    pub stats: Stats,
    /// From the start to the last worker's end.
    pub elapsed: Duration,
    /// From the start to the last message answered (the rate's denominator).
    pub busy: Duration,
    pub timeline: Vec<Sample>,
    pub driver: &'static str,
    pub threads: usize,
    pub interrupted: bool,
    /// The run hit the 10-minute cap before `--messages` was used up.
    pub capped: bool,
    pub run_id: String,
}

impl Report {
    /// Accepted messages per second over the busy time.
    pub fn rate(&self) -> f64 {
        let s = self.busy.as_secs_f64();
        if s > 0.0 {
            self.stats.accepted as f64 / s
        } else {
            0.0
        }
    }
}

/// Runs the load described by `cfg`. `stop` ends it early (SIGINT); the report still comes.
pub fn run(cfg: &Config, stop: Arc<AtomicBool>) -> Result<Report, String> {
    let messages = Arc::new(Messages::new(cfg)?);
    let tls = cfg.tls.as_ref().map(client_config).transpose()?;
    let cfg_arc = Arc::new(cfg.clone());
    let shared = Arc::new(Shared::new(cfg, stop.clone()));
    let threads = cfg.threads.min(cfg.connections).max(1);
    let driver = match cfg.driver {
        Driver::Auto if monoio::utils::detect_uring() => Driver::Uring,
        Driver::Auto => Driver::Epoll,
        d => d,
    };
    let (tx, rx) = mpsc::channel::<Result<Stats, String>>();
    let mut handles = Vec::with_capacity(threads);
    for w in 0..threads {
        let ids: Vec<usize> = (w..cfg.connections).step_by(threads).collect();
        let (cfg, shared, messages, tls, tx) = (
            cfg_arc.clone(),
            shared.clone(),
            messages.clone(),
            tls.clone(),
            tx.clone(),
        );
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{w}"))
            .spawn(move || {
                let r = worker(driver, ids, cfg, shared, messages, tls);
                let _ = tx.send(r);
            })
            .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);

    let progress = !cfg.quiet && std::io::stderr().is_terminal();
    let mut stats = Stats::default();
    let mut timeline = Vec::new();
    let mut errors = Vec::new();
    let mut done = 0;
    let mut next_print = shared.t0 + Duration::from_secs(1);
    let mut idle_announced = false;
    while done < threads {
        match rx.recv_timeout(SAMPLE_EVERY) {
            Ok(Ok(s)) => {
                stats.merge(&s);
                done += 1;
            }
            Ok(Err(e)) => {
                errors.push(e);
                done += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let s = sample(&shared);
        if cfg.idle && !idle_announced {
            let up = shared.idle_open.load(Relaxed) + shared.idle_gave_up.load(Relaxed);
            if up >= cfg.connections {
                idle_announced = true;
                eprintln!(
                    "smtp-loadtest: idle: {} connections open",
                    shared.idle_open.load(Relaxed)
                );
            }
        }
        if progress && Instant::now() >= next_print {
            next_print += Duration::from_secs(1);
            let prev = timeline
                .iter()
                .rev()
                .find(|p: &&Sample| p.t <= s.t - 0.99)
                .copied()
                .unwrap_or_default();
            let dt = (s.t - prev.t).max(0.001);
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[K[{:6.1}s] sent {}  {:.0} msg/s  250: {}  rejected: {}  failed: {}  conn errors: {}",
                s.t,
                s.attempted,
                (s.accepted - prev.accepted) as f64 / dt,
                s.accepted,
                s.rejected,
                s.failed,
                s.conn_errors
            );
            let _ = err.flush();
        }
        timeline.push(s);
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    if cfg.idle && !idle_announced {
        eprintln!(
            "smtp-loadtest: idle: {} connections open",
            shared.idle_open.load(Relaxed)
        );
    }
    for h in handles {
        if h.join().is_err() {
            errors.push("a worker thread panicked".into());
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    let elapsed = shared.t0.elapsed();
    timeline.push(sample(&shared));
    let capped = cfg.duration.is_none()
        && cfg.messages.is_some_and(|m| stats.attempted < m)
        && elapsed >= cfg.time_limit();
    let busy = stats
        .last_answer
        .map_or(elapsed, |t| t.saturating_duration_since(shared.t0));
    Ok(Report {
        cfg: cfg.clone(),
        stats,
        elapsed,
        busy,
        timeline,
        driver: if driver == Driver::Uring {
            "io_uring"
        } else {
            "epoll"
        },
        threads,
        interrupted: stop.load(Relaxed),
        capped,
        run_id: messages.run_id().to_string(),
    })
}

fn sample(shared: &Shared) -> Sample {
    Sample {
        t: shared.t0.elapsed().as_secs_f64(),
        attempted: shared.attempted.load(Relaxed),
        accepted: shared.accepted.load(Relaxed),
        rejected: shared.rejected.load(Relaxed),
        failed: shared.failed.load(Relaxed),
        conn_errors: shared.conn_errors.load(Relaxed),
    }
}

fn worker(
    driver: Driver,
    ids: Vec<usize>,
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    messages: Arc<Messages>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Stats, String> {
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let body = move || async move {
        let ctx = Rc::new(WorkerCtx {
            cfg,
            shared,
            messages,
            stats: RefCell::new(Stats::default()),
            tls,
        });
        let tasks: Vec<_> = ids
            .into_iter()
            .map(|id| monoio::spawn(run_slot(id, ctx.clone())))
            .collect();
        for t in tasks {
            t.await;
        }
        ctx.stats.take()
    };
    // Enough submission entries for every connection of this worker to have a read and a
    // timer in flight.
    let entries = 1024;
    let r = match driver {
        Driver::Uring => RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(body())),
        _ => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .build()
            .map(|mut rt| rt.block_on(body())),
    };
    r.map_err(|e| format!("cannot build the monoio runtime: {e}"))
}
