//! One monoio runtime: the I/O driver (`--driver`: io_uring or epoll) and a runtime with timers
//! and a blocking pool, as each worker thread (and `--stdio`, and tests) runs one.

use std::future::Future;
use std::io;

/// Threads per worker for blocking jobs (file I/O, fsync; child programs that may take seconds
/// go to the slow helpers' pool instead, `services.rs`).
pub const BLOCKING_THREADS: usize = 4;

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

/// The ring of a worker. One thread owns it, submits to it and reaps it (monoio's
/// thread-per-core model), which is what these flags promise the kernel:
/// - `SINGLE_ISSUER`: only the creating thread submits; the kernel skips some locking.
/// - `DEFER_TASKRUN`: completion work (the recv that runs once a socket is readable) is queued
///   until this thread next waits for completions, instead of interrupting it
///   (task_work with a signal-like notification) while it runs sessions. monoio's loop waits
///   whenever it has no ready task, so completions are reaped in batches at that point.
/// - `COOP_TASKRUN`: no inter-processor interrupt to run completion work early.
fn tuned_ring() -> io_uring::Builder {
    let mut ring = io_uring::IoUring::builder();
    ring.setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun();
    ring
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
        Driver::Uring => {
            let build = |ring| {
                RuntimeBuilder::<IoUringDriver>::new()
                    .uring_builder(ring)
                    .enable_timer()
                    .attach_thread_pool(pool())
                    .build()
            };
            // A kernel older than 6.1 refuses the flags (EINVAL): a plain ring then.
            let mut rt = match build(tuned_ring()) {
                Ok(rt) => rt,
                Err(_) => build(io_uring::IoUring::builder())?,
            };
            rt.block_on(f())
        }
        _ => RuntimeBuilder::<LegacyDriver>::new()
            .enable_timer()
            .attach_thread_pool(pool())
            .build()?
            .block_on(f()),
    })
}
