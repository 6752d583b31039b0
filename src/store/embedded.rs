//! The embedded state store: one thread per process owns the data; workers send it batches
//! through a channel and await the reply.
//!
//! Why a thread and not a lock: a worker must never block, and a lock shared by every worker
//! would block one while another holds it (and while a save walks the table). With a thread,
//! a worker's send never waits (the channel is unbounded; a batch is bounded by
//! `MAX_BATCH`), and its hook awaits a oneshot reply like any other I/O, so the worker serves
//! other sessions meanwhile. The operations are memory-only and cheap, so one thread keeps
//! up with every worker; every batch is applied whole before the next (a batch is atomic
//! here, unlike with Redis).
//!
//! Persistence: the thread saves the table to `DIR/store.db` ([`super::file`]) at most every
//! [`SAVE_EVERY`] when something changed (written by a short-lived writer thread, so the disk
//! never holds up a batch), and when the process stops; a crash loses at most the last
//! interval or two. The file is read at start; a damaged file stops the start with the
//! file's name and how to rebuild (move it aside: the store starts empty).
//!
//! Bounded: at most `max_entries`; a full table drops expired entries, then the oldest
//! written, and the thread logs how many it dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use futures_channel::oneshot;
use ringsmtpd_plugin_api::owner::{self, Access};
use ringsmtpd_plugin_api::store::{unix_ms, Batch, Replies, StoreError, StoreFuture, Table};
use ringsmtpd_plugin_api::Level;

use super::file;

/// How often a changed table is saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// The file name inside the store directory.
pub const FILE_NAME: &str = "store.db";

enum Msg {
    Batch(Batch, oneshot::Sender<Result<Replies, StoreError>>),
    /// Save now and stop; the reply says it is done.
    Close(mpsc::Sender<()>),
}

/// A worker's (or the main thread's) way to the store thread.
#[derive(Clone)]
pub struct Embedded {
    tx: mpsc::Sender<Msg>,
    path: PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Embedded({})", self.path.display())
    }
}

impl Embedded {
    /// Reads `dir/store.db` if it exists and starts the store thread, holding the directory's
    /// shared lock ([`lock_dir`]) until it stops. The directory is created now (given to the
    /// account the server drops to, which must be able to write it; without dropping root, a
    /// directory that cannot be created is left to the first save to report), the file at the
    /// first save.
    pub fn open(dir: &Path, max_entries: usize) -> Result<Embedded, String> {
        let dropping = owner::run_as().is_some();
        let lock = match owner::create_dir_all(dir) {
            Ok(()) => {
                if dropping {
                    owner::require(dir, Access::Write);
                }
                Some(lock_dir(dir, Lock::Shared)?)
            }
            Err(e) if dropping => return Err(format!("state store {}: {e}", dir.display())),
            // Not fatal for a server that may never store anything (an unwritable working
            // directory under inetd): the first save says why it fails, as it always did.
            Err(_) => None,
        };
        let (path, table) = load(dir, max_entries)?;
        let (tx, rx) = mpsc::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("state-store".into())
            .spawn(move || run(rx, table, thread_path, lock))
            .map_err(|e| format!("state store thread: {e}"))?;
        Ok(Embedded { tx, path })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends a batch; the future resolves when the store thread applied it.
    pub fn send(&self, batch: Batch) -> StoreFuture {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Batch(batch, reply)).is_err() {
            return Box::pin(std::future::ready(Err(gone())));
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(gone())) })
    }

    /// Saves and stops the store thread, waiting up to `wait` for the save.
    pub fn close(&self, wait: Duration) {
        let (done, rx) = mpsc::channel();
        if self.tx.send(Msg::Close(done)).is_ok() {
            let _ = rx.recv_timeout(wait);
        }
    }
}

/// How [`lock_dir`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// A server's store thread, for its whole life: several servers may hold it (`--join`
    /// runs the old and the new process side by side); waits while a tool holds `Exclusive`.
    Shared,
    /// `ringsmtpd karma` editing the file: only when no server has the store open.
    Exclusive,
}

/// Locks the store directory (`flock`), so a tool never edits the file under a running
/// server, whose next save would undo the edit. Held until the returned file is dropped.
pub fn lock_dir(dir: &Path, how: Lock) -> Result<std::fs::File, String> {
    let failed = |e: std::io::Error| format!("state store {}: locking: {e}", dir.display());
    let handle = std::fs::File::open(dir).map_err(failed)?;
    match how {
        Lock::Shared => handle.lock_shared().map_err(failed)?,
        Lock::Exclusive => match handle.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "a running ringsmtpd has the state store {} open; stop it first (its next \
                     save would undo the change), or use Redis (config state_store) to change \
                     entries while servers run",
                    dir.display()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
        },
    }
    Ok(handle)
}

/// Reads `dir/store.db` if it exists (a missing file is an empty store); a damaged file is
/// an error that names it and says how to start over. Writes nothing (`--check` calls it).
pub fn load(dir: &Path, max_entries: usize) -> Result<(PathBuf, Table), String> {
    let path = dir.join(FILE_NAME);
    let mut table = Table::new(max_entries);
    match std::fs::read(&path) {
        Ok(bytes) => {
            file::decode(&bytes, &mut table, unix_ms(SystemTime::now())).map_err(|why| {
                format!(
                    "state store {} is damaged ({why}); move it aside (mv {0} {0}.bad) \
                     to start with an empty store",
                    path.display()
                )
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("state store {}: {e}", path.display())),
    }
    Ok((path, table))
}

fn gone() -> StoreError {
    StoreError::Unavailable("the store thread has stopped".into())
}

/// The store thread; `lock` (the directory's shared lock) is released once the last save is
/// done, before `close` returns.
fn run(rx: mpsc::Receiver<Msg>, mut table: Table, path: PathBuf, lock: Option<std::fs::File>) {
    let mut saver = Saver::new(path);
    loop {
        let wait = SAVE_EVERY.saturating_sub(saver.last.elapsed());
        match rx.recv_timeout(wait.max(Duration::from_millis(10))) {
            Ok(Msg::Batch(batch, reply)) => {
                let result = table.apply(&batch, unix_ms(SystemTime::now()));
                let _ = reply.send(result);
                if let Some(ev) = table.take_evicted() {
                    crate::log!(
                        Level::Warn,
                        0,
                        "state",
                        "store full ({} entries): dropped {} expired and {} oldest entries; \
                         raise max_entries in config/state_store if this repeats",
                        table.max_entries(),
                        ev.expired,
                        ev.oldest
                    );
                }
            }
            Ok(Msg::Close(done)) => {
                saver.save(&mut table, true);
                drop(lock);
                let _ = done.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                saver.save(&mut table, true);
                return;
            }
        }
        if saver.last.elapsed() >= SAVE_EVERY {
            table.purge_expired(unix_ms(SystemTime::now()));
            saver.save(&mut table, false);
        }
    }
}

/// Writes the table out: encoded on the store thread (memory only, quick), written and
/// fsync'd on a writer thread of its own, so batches are not held up by the disk. One write at
/// a time; the last one, at close, is waited for.
struct Saver {
    path: PathBuf,
    last: Instant,
    writing: Option<std::thread::JoinHandle<()>>,
    /// The last write failed: log once per failing streak, and write again next time.
    failed: Arc<AtomicBool>,
}

impl Saver {
    fn new(path: PathBuf) -> Saver {
        Saver {
            path,
            last: Instant::now(),
            writing: None,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts a write if the table changed and no write is running; `last` waits for it.
    fn save(&mut self, table: &mut Table, last: bool) {
        self.last = Instant::now();
        if let Some(w) = self.writing.take() {
            if !w.is_finished() && !last {
                self.writing = Some(w); // still writing: try again next interval
                return;
            }
            let _ = w.join();
        }
        if self.failed.load(Ordering::Relaxed) {
            table.mark_dirty();
        }
        if !table.take_dirty() {
            return;
        }
        let data = file::encode(table, unix_ms(SystemTime::now()));
        let (path, failed) = (self.path.clone(), self.failed.clone());
        let write = move || write(&path, &data, &failed);
        if last {
            write();
            return;
        }
        match std::thread::Builder::new()
            .name("state-save".into())
            .spawn(write)
        {
            Ok(handle) => self.writing = Some(handle),
            Err(_) => table.mark_dirty(), // no thread now: next interval
        }
    }
}

fn write(path: &Path, data: &[u8], failed: &AtomicBool) {
    match file::save(path, data) {
        Ok(()) => failed.store(false, Ordering::Relaxed),
        Err(e) => {
            if !failed.swap(true, Ordering::Relaxed) {
                crate::log!(
                    Level::Error,
                    0,
                    "state",
                    "saving the state store to {} failed: {e}",
                    path.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::Key;
    use ringsmtpd_plugin_api::testing::{block_on, TempDir};

    fn key(s: &str) -> Key {
        Key::new("t", &[s.as_bytes()]).unwrap()
    }

    #[test]
    fn servers_share_the_directory_lock_and_keep_a_tool_out() {
        let dir = TempDir::new("store-lock");
        let state = dir.path().join("state");
        // two processes side by side (`--join`) both open the store
        let old = Embedded::open(&state, 10).unwrap();
        let new = Embedded::open(&state, 10).unwrap();
        let busy = lock_dir(&state, Lock::Exclusive).unwrap_err();
        assert!(busy.contains("a running ringsmtpd"), "{busy}");
        old.close(Duration::from_secs(10));
        assert!(
            lock_dir(&state, Lock::Exclusive).is_err(),
            "the new one still runs"
        );
        new.close(Duration::from_secs(10));
        let tool = lock_dir(&state, Lock::Exclusive).unwrap();
        drop(tool);
    }

    #[test]
    fn survives_a_restart_and_refuses_a_damaged_file() {
        let dir = TempDir::new("store");
        let store = Embedded::open(dir.path(), 100).unwrap();
        let mut b = Batch::new();
        b.set(key("white"), "1", Some(Duration::from_secs(3600)));
        b.set(key("gone"), "1", Some(Duration::from_millis(1)));
        let n = b.incr(key("n"), 5, None);
        assert_eq!(block_on(store.send(b)).unwrap().int(n), 5);
        store.close(Duration::from_secs(10));
        // the thread has stopped: a batch now fails fast
        assert!(matches!(
            block_on(store.send(Batch::new())),
            Err(StoreError::Unavailable(_))
        ));

        // `gone` lived 1 ms: make sure it is over (the save and reload can take less).
        std::thread::sleep(Duration::from_millis(20));
        let again = Embedded::open(dir.path(), 100).unwrap();
        let mut b = Batch::new();
        let white = b.get(key("white"));
        let gone = b.get(key("gone"));
        let n = b.incr(key("n"), 1, None);
        let r = block_on(again.send(b)).unwrap();
        assert_eq!(
            (r.value(white), r.value(gone), r.int(n)),
            (Some(&b"1"[..]), None, 6)
        );
        again.close(Duration::from_secs(10));

        let path = dir.path().join(FILE_NAME);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 9;
        data[last] ^= 0x55;
        std::fs::write(&path, &data).unwrap();
        let err = Embedded::open(dir.path(), 100).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(
            err.contains("damaged") && err.contains("move it aside"),
            "{err}"
        );
        // moved aside, the store starts empty
        std::fs::rename(&path, dir.path().join("store.db.bad")).unwrap();
        let fresh = Embedded::open(dir.path(), 100).unwrap();
        let mut b = Batch::new();
        let white = b.get(key("white"));
        assert_eq!(block_on(fresh.send(b)).unwrap().value(white), None);
        fresh.close(Duration::from_secs(10));
    }

    #[test]
    fn saved_while_running_without_waiting_for_the_stop() {
        let dir = TempDir::new("store");
        let store = Embedded::open(dir.path(), 100).unwrap();
        let mut b = Batch::new();
        b.set(key("k"), "v", None);
        block_on(store.send(b)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut table = Table::new(100);
        // a bound on a hang, not a measure: the save comes after SAVE_EVERY
        while file::decode(&std::fs::read(&path).unwrap_or_default(), &mut table, 0).is_err() {
            assert!(Instant::now() < deadline, "never saved");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut b = Batch::new();
        let k = b.get(key("k"));
        assert_eq!(table.apply(&b, 0).unwrap().value(k), Some(&b"v"[..]));
        store.close(Duration::from_secs(10));
    }

    #[test]
    fn workers_share_one_store() {
        let dir = TempDir::new("store");
        let store = Embedded::open(dir.path(), 100).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mut b = Batch::new();
                        b.incr(key("shared"), 1, None);
                        block_on(s.send(b)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut b = Batch::new();
        let n = b.incr(key("shared"), 0, None);
        assert_eq!(block_on(store.send(b)).unwrap().int(n), 200);
        store.close(Duration::from_secs(10));
    }
}
