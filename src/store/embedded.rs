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
//! Persistence ([`super::file`]): every [`SAVE_EVERY`], the keys changed since the last save
//! are appended to `DIR/store.log` and fdatasync'd; when the log has grown past the last
//! snapshot (and [`COMPACT_AT`]), the whole table is written to `DIR/store.db` instead and a
//! new log started. Both are written by a short-lived writer thread, so the disk never holds
//! up a batch; what changes while it writes waits for the next interval. The process's stop
//! saves too; a crash loses at most the last interval or two. Both files are read at start: a
//! damaged snapshot or log header stops the start with the file's name and how to rebuild
//! (move it aside: the store starts empty); a log cut short by a crash is read up to its
//! last whole record, said in one log line, and truncated there.
//!
//! Bounded: at most `max_entries`; a full table drops expired entries, then the oldest
//! written, and the thread logs how many it dropped.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use futures_channel::oneshot;
use ringsmtpd_plugin_api::owner::{self, Access};
use ringsmtpd_plugin_api::store::{unix_ms, Batch, Replies, StoreError, StoreFuture, Table};
use ringsmtpd_plugin_api::Level;

use super::file;

/// How often the changes are saved.
pub const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The snapshot's file name inside the store directory.
pub const FILE_NAME: &str = "store.db";

/// The log's file name inside the store directory.
pub const LOG_NAME: &str = "store.log";

/// The log is compacted into a new snapshot once it is longer than this and than the last
/// snapshot.
pub const COMPACT_AT: u64 = 1 << 20;

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
    /// Reads `dir/store.db` and its log if they exist and starts the store thread, holding
    /// the directory's shared lock ([`lock_dir`]) until it stops. The directory is created now
    /// (given to the account the server drops to, which must be able to write it; without
    /// dropping root, a directory that cannot be created is left to the first save to report),
    /// the files at the first save.
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
        let loaded = read(dir, max_entries)?;
        let log_len = loaded.trim_log()?;
        let saver = Saver::new(dir, loaded.generation, log_len, loaded.snapshot_len);
        let (path, table) = (loaded.path, loaded.table);
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("state-store".into())
            .spawn(move || run(rx, table, saver, lock))
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

/// Reads `dir/store.db` and `dir/store.log` if they exist (missing files are an empty
/// store); a damaged file is an error that names it and says how to start over. Writes
/// nothing (`--check` calls it).
pub fn load(dir: &Path, max_entries: usize) -> Result<(PathBuf, Table), String> {
    read(dir, max_entries).map(|l| (l.path, l.table))
}

/// Applies `change` to the store in `dir` while no server has it open (the directory's
/// exclusive lock: [`lock_dir`]), and saves what it changed as a new snapshot with a new, empty
/// log. `ringsmtpd karma` reads and edits the embedded store with it.
pub fn edit<R>(
    dir: &Path,
    max_entries: usize,
    change: impl FnOnce(&mut Table) -> Result<R, String>,
) -> Result<R, String> {
    let _lock = lock_dir(dir, Lock::Exclusive)?;
    let loaded = read(dir, max_entries)?;
    let mut table = loaded.table;
    let result = change(&mut table)?;
    if table.has_changes() {
        let generation = loaded.generation + 1;
        let data = file::encode(&table, unix_ms(SystemTime::now()), generation);
        file::save(&loaded.path, &data)
            .and_then(|()| file::save(&loaded.log, &file::log_header(generation)))
            .map_err(|e| format!("state store {}: {e}", dir.display()))?;
    }
    Ok(result)
}

/// What the files held at start.
struct Loaded {
    path: PathBuf,
    table: Table,
    generation: u64,
    snapshot_len: u64,
    log: PathBuf,
    /// The log's intact length and, if it was cut short, why; none when there is no log of
    /// this snapshot's generation.
    log_intact: Option<(u64, Option<String>)>,
}

impl Loaded {
    /// Cuts a log that a crash left with a partial record back to its last whole one (with
    /// a log line), so new records follow it; its length, if there is a log to append to.
    fn trim_log(&self) -> Result<Option<u64>, String> {
        let Some((len, torn)) = &self.log_intact else {
            return Ok(None);
        };
        if let Some(why) = torn {
            crate::log!(
                Level::Warn,
                0,
                "state",
                "state store log {}: {why}; read up to there, the rest dropped \
                 (a save cut short by a crash)",
                self.log.display()
            );
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.log)
                .and_then(|f| f.set_len(*len))
                .map_err(|e| format!("state store {}: {e}", self.log.display()))?;
        }
        Ok(Some(*len))
    }
}

fn read(dir: &Path, max_entries: usize) -> Result<Loaded, String> {
    let path = dir.join(FILE_NAME);
    let log = dir.join(LOG_NAME);
    let damaged = |file: &Path, why: String| {
        format!(
            "state store {} is damaged ({why}); move it aside (mv {0} {0}.bad) \
             to start with an empty store",
            file.display()
        )
    };
    let now = unix_ms(SystemTime::now());
    let mut table = Table::new(max_entries);
    let (generation, snapshot_len) = match read_file(&path)? {
        Some(bytes) => (
            file::decode(&bytes, &mut table, now).map_err(|why| damaged(&path, why))?,
            bytes.len() as u64,
        ),
        None => (0, 0),
    };
    let log_intact = match read_file(&log)? {
        None => None,
        Some(bytes) => match file::replay(&bytes, &mut table, now, generation)
            .map_err(|why| damaged(&log, why))?
        {
            file::Replayed::Stale => None,
            file::Replayed::Applied { valid, torn, .. } => Some((valid as u64, torn)),
        },
    };
    Ok(Loaded {
        path,
        table,
        generation,
        snapshot_len,
        log,
        log_intact,
    })
}

/// The file's bytes; none if it does not exist.
fn read_file(path: &Path) -> Result<Option<Vec<u8>>, String> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("state store {}: {e}", path.display())),
    }
}

fn gone() -> StoreError {
    StoreError::Unavailable("the store thread has stopped".into())
}

/// The store thread; `lock` (the directory's shared lock) is released once the last save is
/// done, before `close` returns.
fn run(rx: mpsc::Receiver<Msg>, mut table: Table, mut saver: Saver, lock: Option<std::fs::File>) {
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

/// Writes the changes out: encoded on the store thread (memory only, quick), written and
/// fsync'd on a writer thread of its own, so batches are not held up by the disk. One write at
/// a time; the last one, at close, is waited for.
struct Saver {
    snapshot: PathBuf,
    log: PathBuf,
    last: Instant,
    /// The snapshot's generation on disk (the next one is one more).
    generation: u64,
    snapshot_len: u64,
    /// The log's length; none when there is no log to append to (none yet, or a write failed
    /// and its end is unknown): the next save writes a snapshot.
    log_len: Option<u64>,
    /// Changes were taken from the table but not written (a write failed): the next save
    /// writes a snapshot even if nothing else changed.
    unsaved: bool,
    writing: Option<std::thread::JoinHandle<std::io::Result<Written>>>,
    /// The last write failed: log once per failing streak.
    failed: bool,
}

/// What a finished write did.
enum Written {
    Appended(u64),
    Compacted { generation: u64, snapshot_len: u64 },
}

type Write = Box<dyn FnOnce() -> std::io::Result<Written> + Send>;

impl Saver {
    fn new(dir: &Path, generation: u64, log_len: Option<u64>, snapshot_len: u64) -> Saver {
        Saver {
            snapshot: dir.join(FILE_NAME),
            log: dir.join(LOG_NAME),
            last: Instant::now(),
            generation,
            snapshot_len,
            log_len,
            unsaved: false,
            writing: None,
            failed: false,
        }
    }

    /// Starts a write if something changed and no write is running; `last` waits for it
    /// (and for the one running).
    fn save(&mut self, table: &mut Table, last: bool) {
        self.last = Instant::now();
        if let Some(w) = self.writing.take() {
            if !w.is_finished() && !last {
                self.writing = Some(w); // still writing: the changes wait for the next interval
                return;
            }
            self.finished(w.join());
        }
        let Some(write) = self.next_write(table) else {
            return;
        };
        self.unsaved = true; // until the write says it is done
        if last {
            self.finished(Ok(write()));
            return;
        }
        match std::thread::Builder::new()
            .name("state-save".into())
            .spawn(write)
        {
            Ok(handle) => self.writing = Some(handle),
            Err(e) => self.finished(Ok(Err(e))), // no thread now: a snapshot next interval
        }
    }

    /// The write the table's changes call for: a snapshot and a new log when there is no
    /// log to append to or it has grown too long, else the changes appended to the log.
    fn next_write(&self, table: &mut Table) -> Option<Write> {
        let compact = match self.log_len {
            None => self.unsaved || table.has_changes(),
            Some(len) => table.has_changes() && len > COMPACT_AT.max(self.snapshot_len),
        };
        if compact {
            let generation = self.generation + 1;
            let data = file::encode(table, unix_ms(SystemTime::now()), generation);
            table.take_changes(); // all in the snapshot
            let (snapshot, log) = (self.snapshot.clone(), self.log.clone());
            return Some(Box::new(move || {
                file::save(&snapshot, &data)?;
                file::save(&log, &file::log_header(generation))?;
                Ok(Written::Compacted {
                    generation,
                    snapshot_len: data.len() as u64,
                })
            }));
        }
        if !table.has_changes() {
            return None;
        }
        let data = file::encode_changes(&table.take_changes());
        let log = self.log.clone();
        Some(Box::new(move || {
            file::append(&log, &data)?;
            Ok(Written::Appended(data.len() as u64))
        }))
    }

    /// Takes note of a finished write.
    fn finished(&mut self, result: std::thread::Result<std::io::Result<Written>>) {
        let result = result.unwrap_or_else(|_| Err(std::io::Error::other("the writer panicked")));
        match result {
            Ok(Written::Appended(n)) => {
                self.log_len = self.log_len.map(|len| len + n);
            }
            Ok(Written::Compacted {
                generation,
                snapshot_len,
            }) => {
                self.generation = generation;
                self.snapshot_len = snapshot_len;
                self.log_len = Some(file::LOG_HEADER as u64);
            }
            Err(e) => {
                self.log_len = None;
                if !std::mem::replace(&mut self.failed, true) {
                    crate::log!(
                        Level::Error,
                        0,
                        "state",
                        "saving the state store in {} failed: {e}; retried every interval",
                        self.snapshot.parent().unwrap_or(Path::new(".")).display()
                    );
                }
                return;
            }
        }
        self.unsaved = false;
        self.failed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::store::{Key, MAX_BATCH, MAX_VALUE};
    use ringsmtpd_plugin_api::testing::{block_on, TempDir};
    use std::io::Write;

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

    /// Waits (a bound on a hang, not a measure: saves come every SAVE_EVERY) until `done`.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn len(path: &Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    fn set(store: &Embedded, k: &str, v: impl Into<Vec<u8>>) {
        let mut b = Batch::new();
        b.set(key(k), v, None);
        block_on(store.send(b)).unwrap();
    }

    fn value(dir: &Path, k: &str) -> Option<Vec<u8>> {
        let (_, mut table) = load(dir, 10_000).unwrap();
        let mut b = Batch::new();
        let slot = b.get(key(k));
        table
            .apply(&b, unix_ms(SystemTime::now()))
            .unwrap()
            .value(slot)
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn changes_are_appended_to_the_log_not_rewritten_whole() {
        let dir = TempDir::new("store");
        let (snapshot, log) = (dir.path().join(FILE_NAME), dir.path().join(LOG_NAME));
        let store = Embedded::open(dir.path(), 10_000).unwrap();
        for chunk in (0..1000).collect::<Vec<_>>().chunks(MAX_BATCH) {
            let mut b = Batch::new();
            for i in chunk {
                b.set(key(&format!("k{i}")), "v", None);
            }
            block_on(store.send(b)).unwrap();
        }
        // the first save has no log to append to: a snapshot and an empty log
        wait_for("saved a snapshot", || len(&log) == file::LOG_HEADER as u64);
        let whole = std::fs::read(&snapshot).unwrap();
        assert!(whole.len() > 20_000, "{}", whole.len());

        set(&store, "k7", "changed");
        wait_for("appended", || len(&log) > file::LOG_HEADER as u64);
        let grown = len(&log) - file::LOG_HEADER as u64;
        assert!(grown < 100, "one change appended {grown} bytes");
        assert_eq!(
            std::fs::read(&snapshot).unwrap(),
            whole,
            "snapshot rewritten"
        );
        // read while the store runs, as after a crash: the log is in
        assert_eq!(value(dir.path(), "k7"), Some(b"changed".to_vec()));
        store.close(Duration::from_secs(10));
    }

    #[test]
    fn a_log_cut_short_is_read_up_to_its_last_record_and_trimmed() {
        let dir = TempDir::new("store");
        let log = dir.path().join(LOG_NAME);
        let store = Embedded::open(dir.path(), 100).unwrap();
        set(&store, "a", "1");
        wait_for("saved a snapshot", || len(&log) == file::LOG_HEADER as u64);
        set(&store, "b", "2");
        store.close(Duration::from_secs(10));
        let intact = len(&log);
        assert!(intact > file::LOG_HEADER as u64);

        // a crash while appending left half a record
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[0, 0, 0, 40, b'S', 1, 2]).unwrap();
        drop(f);
        assert_eq!(value(dir.path(), "b"), Some(b"2".to_vec()));

        let again = Embedded::open(dir.path(), 100).unwrap();
        assert_eq!(len(&log), intact, "not trimmed");
        set(&again, "c", "3");
        again.close(Duration::from_secs(10));
        // appended after the trim, so readable
        assert_eq!(value(dir.path(), "c"), Some(b"3".to_vec()));
        assert_eq!(value(dir.path(), "a"), Some(b"1".to_vec()));
    }

    #[test]
    fn a_long_log_is_compacted_into_a_new_snapshot() {
        let dir = TempDir::new("store");
        let (snapshot, log) = (dir.path().join(FILE_NAME), dir.path().join(LOG_NAME));
        let store = Embedded::open(dir.path(), 100).unwrap();
        set(&store, "first", "1");
        wait_for("saved a snapshot", || len(&log) == file::LOG_HEADER as u64);
        let generation =
            |path: &Path| file::decode(&std::fs::read(path).unwrap(), &mut Table::new(100), 0);
        assert_eq!(generation(&snapshot), Ok(1));
        // one value rewritten until the log passes COMPACT_AT: each save appends its
        // current value, the snapshot would hold it once
        let big = vec![b'x'; MAX_VALUE - 16];
        let mut compacted = false;
        for _ in 0..200 {
            set(&store, "big", big.clone());
            std::thread::sleep(SAVE_EVERY / 4);
            if generation(&snapshot) == Ok(2) {
                compacted = true;
                break;
            }
        }
        assert!(compacted, "never compacted; log is {} bytes", len(&log));
        assert!(len(&log) < COMPACT_AT);
        store.close(Duration::from_secs(10));
        assert_eq!(value(dir.path(), "big"), Some(big));
        assert_eq!(value(dir.path(), "first"), Some(b"1".to_vec()));
    }
}
