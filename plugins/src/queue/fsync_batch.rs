//! Group commit for directory fsyncs (`queue/maildir`'s `new/`).
//!
//! A message linked into `new/` is durable once an fsync of `new/` that *started after the
//! link* has completed: an fsync that was already running when the link was made may have
//! written the directory before the new entry existed. Without grouping every delivery pays
//! its own directory fsync; with it, deliveries into the same directory share one:
//!
//! - a caller (its link done) joins the *next* round, one that has not started yet;
//! - if no round is running, the caller starts that round itself at once (it is the leader);
//! - else it waits; when the running round ends, one of the waiters of the next round leads
//!   it, and its fsync serves every caller that joined before it started.
//!
//! So a round's callers all joined before it started, hence linked before it started: the
//! fsync that answers them started after their links (the test `never_answered_by_a_round_that
//! started_before_the_link` checks this on an event log). At most one fsync per directory runs
//! at a time and at most one round waits behind it, so N concurrent deliveries cost about two
//! fsyncs instead of N. The result of a round (and its error) goes to every caller of that
//! round, and only to them: a failed round does not poison the next one, and a later success
//! never answers for an earlier failure (after a failed fsync, Linux may drop the dirty state,
//! so a later fsync succeeding proves nothing about the entries of the failed round).
//!
//! Coordinators are process-wide, one per directory path (`by_path`): workers (and plugin
//! instances) delivering into the same Maildir share one.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use super::by_path::ByPath;

/// The operation a round performs: fsync the directory. Tests substitute their own; the
/// second argument is the round's number (1, 2, ...).
pub(crate) type SyncFn = dyn Fn(&Path, u64) -> io::Result<()> + Send + Sync;

/// fsync on a directory: makes its entries (a new link, a new subdirectory) durable. A fresh
/// descriptor each time: one kept open would keep fsyncing a directory that was removed and
/// recreated under the same name.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The group-commit coordinator of one directory.
pub(crate) struct DirSync {
    path: PathBuf,
    sync: Box<SyncFn>,
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// A round's fsync is running now.
    running: bool,
    /// The round new callers join: not started yet.
    next: Option<Arc<Round>>,
    /// Callers that joined `next`.
    next_waiters: usize,
    /// Rounds started (= fsyncs performed or under way).
    started: u64,
    /// Rounds finished.
    completed: u64,
}

/// One fsync, shared by the callers that joined it; its result, once it has run.
#[derive(Default)]
struct Round {
    result: OnceLock<Result<(), Arc<io::Error>>>,
}

impl DirSync {
    /// A coordinator that fsyncs `path` (not registered: see [`for_dir`]).
    pub(crate) fn new(path: &Path) -> DirSync {
        DirSync::with_sync(path, Box::new(|p, _| sync_dir(p)))
    }

    /// A coordinator whose rounds run `sync` instead of an fsync (tests).
    pub(crate) fn with_sync(path: &Path, sync: Box<SyncFn>) -> DirSync {
        DirSync {
            path: path.to_path_buf(),
            sync,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once an fsync of the directory that started after this call began has
    /// completed: call it after the link/rename into the directory has returned. `Err` if
    /// that fsync failed (every caller of that round gets the error).
    pub(crate) fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        let round = Arc::clone(st.next.get_or_insert_with(Default::default));
        st.next_waiters += 1;
        loop {
            if let Some(result) = round.result.get() {
                return result.clone().map_err(|e| copy_error(&e));
            }
            let ours_is_next = st.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, &round));
            if !st.running && ours_is_next {
                // Lead: the round starts now, after every one of its callers joined.
                st.next = None;
                st.next_waiters = 0;
                st.running = true;
                st.started += 1;
                let number = st.started;
                drop(st);
                let mut lead = Lead {
                    ds: self,
                    round: &round,
                    result: None,
                };
                let result = (self.sync)(&self.path, number);
                lead.result = Some(match &result {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Arc::new(copy_error(e))),
                });
                drop(lead);
                return result;
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Directory fsyncs started so far (tests).
    #[cfg(test)]
    pub(crate) fn fsyncs(&self) -> u64 {
        self.lock().started
    }

    /// Callers waiting for the round that has not started yet (tests).
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.lock().next_waiters
    }
}

/// Ends a round, also if the sync function panicked (its callers then get an error instead of
/// waiting forever).
struct Lead<'a> {
    ds: &'a DirSync,
    round: &'a Round,
    result: Option<Result<(), Arc<io::Error>>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let result = self
            .result
            .take()
            .unwrap_or_else(|| Err(Arc::new(io::Error::other("directory fsync panicked"))));
        let mut st = self.ds.lock();
        let _ = self.round.result.set(result);
        st.running = false;
        st.completed += 1;
        drop(st);
        self.ds.cv.notify_all();
    }
}

/// `io::Error` is not `Clone`: the same OS error (so the same kind), or the same kind and text.
pub(crate) fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The coordinators, one per directory path while someone holds it.
static REGISTRY: ByPath<DirSync> = ByPath::new();

/// The process-wide coordinator of directory `path`.
pub(crate) fn for_dir(path: &Path) -> Arc<DirSync> {
    REGISTRY.get_or_insert_with(path, || DirSync::new(path))
}

/// Makes `ds` the coordinator [`for_dir`] returns for its path while the caller holds it
/// (tests: a substitute sync function under a real delivery).
#[cfg(test)]
pub(crate) fn install(ds: &Arc<DirSync>) {
    REGISTRY.insert(&ds.path.clone(), ds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// What happened, in order, as seen by one mutex: the verdicts read this log.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        /// Caller `id`'s link is done; it calls `sync` next.
        Linked(usize),
        /// Round `n`'s fsync starts / ends.
        Start(u64),
        End(u64),
        /// Caller `id`'s `sync` returned.
        Done(usize),
    }

    type Log = Arc<Mutex<Vec<Ev>>>;

    /// A coordinator whose round `n` logs its start, then waits for the test to send `n` on
    /// the gate (so the test decides when each round ends), logs its end and fails if `fail`
    /// says so. `started` receives each round's number as it starts.
    fn gated(
        log: &Log,
        fail: fn(u64) -> bool,
    ) -> (Arc<DirSync>, mpsc::Sender<u64>, mpsc::Receiver<u64>) {
        let (gate_tx, gate_rx) = mpsc::channel::<u64>();
        let (started_tx, started_rx) = mpsc::channel::<u64>();
        let gate = Mutex::new(gate_rx);
        let started_tx = Mutex::new(started_tx);
        let log = Arc::clone(log);
        let ds = DirSync::with_sync(
            Path::new("/nonexistent/new"),
            Box::new(move |_, n| {
                log.lock().unwrap().push(Ev::Start(n));
                started_tx.lock().unwrap().send(n).unwrap();
                let opened = gate
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(60))
                    .expect("the test opens every round's gate");
                assert_eq!(opened, n, "gates open in round order");
                log.lock().unwrap().push(Ev::End(n));
                if fail(n) {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    Ok(())
                }
            }),
        );
        (Arc::new(ds), gate_tx, started_rx)
    }

    /// Caller `id`: logs its link, syncs, logs its return; the result comes back on the handle.
    fn caller(ds: &Arc<DirSync>, log: &Log, id: usize) -> thread::JoinHandle<io::Result<()>> {
        let (ds, log) = (Arc::clone(ds), Arc::clone(log));
        thread::spawn(move || {
            log.lock().unwrap().push(Ev::Linked(id));
            let r = ds.sync();
            log.lock().unwrap().push(Ev::Done(id));
            r
        })
    }

    /// Until `ds` has `n` callers waiting for the next round (a guard, not a verdict: it only
    /// fails a test that would otherwise hang).
    fn until_waiting(ds: &DirSync, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while ds.waiting() != n {
            assert!(
                Instant::now() < deadline,
                "{} waiting, not {n}",
                ds.waiting()
            );
            thread::yield_now();
        }
    }

    /// For every caller: some round started after its link and ended before its return.
    fn check_log(log: &[Ev]) {
        let pos = |e: Ev| log.iter().position(|x| *x == e);
        for (i, ev) in log.iter().enumerate() {
            let Ev::Linked(id) = *ev else { continue };
            let Some(done) = pos(Ev::Done(id)) else {
                continue;
            };
            let covered = log[i..done].iter().any(|e| match *e {
                Ev::Start(n) => pos(Ev::End(n)).is_some_and(|end| end < done),
                _ => false,
            });
            assert!(
                covered,
                "caller {id} answered without a round started after its link: {log:?}"
            );
        }
    }

    #[test]
    fn never_answered_by_a_round_that_started_before_the_link() {
        let log: Log = Default::default();
        let (ds, gate, started) = gated(&log, |_| false);
        // Caller 0 finds nothing running: it leads round 1 at once.
        let c0 = caller(&ds, &log, 0);
        assert_eq!(started.recv().unwrap(), 1);
        // Callers 1 and 2 link while round 1 runs: round 1 must not answer them.
        let c1 = caller(&ds, &log, 1);
        let c2 = caller(&ds, &log, 2);
        until_waiting(&ds, 2);
        gate.send(1).unwrap();
        c0.join().unwrap().unwrap();
        // Round 2 starts (one of them leads it) and is the one that answers both.
        assert_eq!(started.recv().unwrap(), 2);
        assert!(!log.lock().unwrap().contains(&Ev::Done(1)));
        assert!(!log.lock().unwrap().contains(&Ev::Done(2)));
        // Caller 3 links while round 2 runs: it needs round 3.
        let c3 = caller(&ds, &log, 3);
        until_waiting(&ds, 1);
        gate.send(2).unwrap();
        c1.join().unwrap().unwrap();
        c2.join().unwrap().unwrap();
        assert_eq!(started.recv().unwrap(), 3);
        gate.send(3).unwrap();
        c3.join().unwrap().unwrap();
        let log = log.lock().unwrap().clone();
        check_log(&log);
        // 4 callers, 3 fsyncs; rounds never overlap.
        assert_eq!(ds.fsyncs(), 3);
        let rounds: Vec<Ev> = log
            .iter()
            .copied()
            .filter(|e| matches!(e, Ev::Start(_) | Ev::End(_)))
            .collect();
        assert_eq!(
            rounds,
            [1, 2, 3]
                .iter()
                .flat_map(|&n| [Ev::Start(n), Ev::End(n)])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_failed_round_fails_all_its_callers_and_only_them() {
        let log: Log = Default::default();
        let (ds, gate, started) = gated(&log, |n| n == 2);
        let c0 = caller(&ds, &log, 0);
        assert_eq!(started.recv().unwrap(), 1);
        let waiters: Vec<_> = (1..=5).map(|id| caller(&ds, &log, id)).collect();
        until_waiting(&ds, 5);
        gate.send(1).unwrap();
        c0.join().unwrap().unwrap();
        assert_eq!(started.recv().unwrap(), 2);
        gate.send(2).unwrap();
        for w in waiters {
            let e = w.join().unwrap().unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EIO));
        }
        // The error does not stick: the next caller gets its own round, which succeeds.
        let c6 = caller(&ds, &log, 6);
        assert_eq!(started.recv().unwrap(), 3);
        gate.send(3).unwrap();
        c6.join().unwrap().unwrap();
        check_log(&log.lock().unwrap());
        assert_eq!(ds.fsyncs(), 3);
    }

    #[test]
    fn a_panicking_round_fails_its_callers_instead_of_hanging_them() {
        let ds = Arc::new(DirSync::with_sync(
            Path::new("/nonexistent"),
            Box::new(|_, n| if n == 1 { panic!("boom") } else { Ok(()) }),
        ));
        let d = Arc::clone(&ds);
        assert!(thread::spawn(move || d.sync()).join().is_err());
        assert!(ds.sync().is_ok(), "round 2 runs: round 1 ended");
        assert_eq!(ds.fsyncs(), 2);
    }

    #[test]
    fn real_directory_and_registry() {
        let dir =
            std::env::temp_dir().join(format!("ringsmtpd-fsync-batch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = for_dir(&dir);
        let b = for_dir(&dir);
        assert!(Arc::ptr_eq(&a, &b), "one coordinator per directory");
        a.sync().unwrap();
        b.sync().unwrap();
        assert_eq!(a.fsyncs(), 2);
        drop((a, b));
        assert_eq!(for_dir(&dir).fsyncs(), 0, "freed when unused");
        std::fs::remove_dir(&dir).unwrap();
        let e = for_dir(&dir).sync().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
