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
