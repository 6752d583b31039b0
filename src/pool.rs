//! A small thread pool with a fixed ceiling ([`Pool`]): threads start on demand up to `max`,
//! jobs beyond that wait in its queue. Two uses:
//!
//! - each worker's pool for **slow helpers** (`Services::spawn_helper`: checkpassword and
//!   queue programs, which may take seconds each), kept apart from the worker's blocking pool
//!   so that a flood of them waits here and never delays a Maildir or spool fsync there;
//! - the process-wide **spool reaper** (`spool.rs`), which unlinks spool files off the
//!   workers, since `Body`'s `Drop` cannot await.
//!
//! Threads are started by the first jobs, so after the privilege drop; they end when the
//! pool is dropped and its queue is empty.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// A thread pool of at most `max` threads with an unbounded queue.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Wakes an idle thread (a job came, or the pool closed).
    work: Condvar,
    /// Wakes [`Pool::wait_idle`] (a job finished).
    done: Condvar,
    max: usize,
    name: String,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    /// Jobs queued or running.
    pending: usize,
    closed: bool,
}

impl Pool {
    /// A pool of at most `max` threads (at least one) named `name`.
    pub fn new(name: &str, max: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                work: Condvar::new(),
                done: Condvar::new(),
                max: max.max(1),
                name: name.to_string(),
            }),
        }
    }

    /// Queues `job`; starts a thread for it when none is idle and the ceiling allows. Never
    /// blocks beyond the queue's lock. If no thread can be started at all, the job is
    /// dropped (a [`ringsmtpd_plugin_api::blocking`] caller then sees `None`).
    pub fn spawn(&self, job: Job) {
        let mut st = lock(&self.inner.state);
        st.queue.push_back(job);
        st.pending += 1;
        if st.idle > 0 {
            drop(st);
            self.inner.work.notify_one();
            return;
        }
        if st.threads >= self.inner.max {
            return; // a busy thread takes it when done
        }
        st.threads += 1;
        drop(st);
        let inner = self.inner.clone();
        let started = std::thread::Builder::new()
            .name(self.inner.name.clone())
            .spawn(move || run(&inner));
        if started.is_err() {
            let mut st = lock(&self.inner.state);
            st.threads -= 1;
            if st.threads == 0 {
                let lost = st.queue.len();
                st.queue.clear();
                st.pending -= lost;
                drop(st);
                self.inner.done.notify_all();
            }
        }
    }

    /// Waits until every job queued so far has run, at most `timeout`; false on timeout.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.inner.state);
        while st.pending > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .inner
                .done
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        lock(&self.inner.state).closed = true;
        self.inner.work.notify_all();
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One pool thread: runs jobs until the pool is closed and its queue empty.
fn run(inner: &Inner) {
    let mut st = lock(&inner.state);
    loop {
        if let Some(job) = st.queue.pop_front() {
            drop(st);
            // A panicking job drops its result channel, which its caller sees; the thread
            // carries on with the next.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            st = lock(&inner.state);
            st.pending -= 1;
            inner.done.notify_all();
            continue;
        }
        if st.closed {
            st.threads -= 1;
            return;
        }
        st.idle += 1;
        st = inner.work.wait(st).unwrap_or_else(|p| p.into_inner());
        st.idle -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn never_more_threads_than_the_ceiling_and_every_job_runs() {
        let pool = Pool::new("test-pool", 2);
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate_rx));
        let (ran_tx, ran_rx) = mpsc::channel();
        for i in 0..6 {
            let (gate, ran) = (gate.clone(), ran_tx.clone());
            pool.spawn(Box::new(move || {
                let _ = gate.lock().unwrap().recv();
                ran.send((i, std::thread::current().id())).unwrap();
            }));
        }
        assert!(lock(&pool.inner.state).threads <= 2);
        for _ in 0..6 {
            gate_tx.send(()).unwrap();
        }
        let ran: Vec<_> = (0..6).map(|_| ran_rx.recv().unwrap()).collect();
        let mut ids: Vec<_> = ran.iter().map(|(_, t)| *t).collect();
        ids.sort_by_key(|t| format!("{t:?}"));
        ids.dedup();
        assert!(ids.len() <= 2, "{ids:?}");
        assert!(pool.wait_idle(Duration::from_secs(30)));
        // A panicking job does not take its thread's later jobs with it.
        pool.spawn(Box::new(|| panic!("job panics")));
        let (tx, rx) = mpsc::channel();
        pool.spawn(Box::new(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv().unwrap(), 7);
    }
}
