//! Parallel file fsyncs on threads that stay (`queue/maildir`'s per-file syncs of a batch).
//!
//! A batch's files are fsync'd at the same time, not one after the other: concurrent fsyncs
//! share the filesystem's journal commits and the disk's cache flushes, where in a row each
//! waits for its own. The threads that run them are kept for the process's life, started as a
//! batch first needs them (at most [`THREADS`]): a thread per fsync started per batch cost a
//! `clone3` and a dozen more syscalls (stack mmap, signal stack, rseq...) per file, more CPU
//! than the rest of the delivery.
//!
//! The caller hands over its files and gets each back with its result, so no descriptor is
//! used after its owner closed it; the caller helps too (it fsyncs files itself while the
//! helpers take theirs), so a batch finishes even if no helper thread can be started. Wake-ups
//! are counted: one per helper with a task to take, and one for the caller, by the last file.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::lock;

/// Most helper threads (the caller fsyncs too).
pub(crate) const THREADS: usize = 15;

/// One file to fsync, and the batch its result goes to.
struct Task {
    index: usize,
    file: File,
    batch: Arc<Batch>,
}

/// The results of one caller's files; the caller is woken once, by the last one.
struct Batch {
    state: Mutex<BatchState>,
    done: Condvar,
}

struct BatchState {
    results: Vec<Option<(File, io::Result<()>)>>,
    left: usize,
}

struct Pool {
    tasks: VecDeque<Task>,
    /// Helper threads started / waiting for a task now.
    threads: usize,
    idle: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    tasks: VecDeque::new(),
    threads: 0,
    idle: 0,
});
static WORK: Condvar = Condvar::new();

fn pool() -> MutexGuard<'static, Pool> {
    lock(&POOL)
}

/// fsyncs every file, in parallel; returns them with their results, in the order given.
pub(crate) fn fsync_all(files: Vec<File>) -> Vec<(File, io::Result<()>)> {
    let n = files.len();
    if n <= 1 {
        return files
            .into_iter()
            .map(|f| {
                let r = f.sync_all();
                (f, r)
            })
            .collect();
    }
    let batch = Arc::new(Batch {
        state: Mutex::new(BatchState {
            results: (0..n).map(|_| None).collect(),
            left: n,
        }),
        done: Condvar::new(),
    });
    {
        let mut p = pool();
        for (index, file) in files.into_iter().enumerate() {
            p.tasks.push_back(Task {
                index,
                file,
                batch: Arc::clone(&batch),
            });
        }
        // Enough idle helpers for the others' share: new ones started, up to THREADS in all.
        let wanted = (n - 1).min(THREADS);
        while p.idle < wanted && p.threads < THREADS && spawn_helper() {
            p.threads += 1;
            p.idle += 1;
        }
        drop(p);
        // One helper woken per task it can take (not all of them: each woken helper takes the
        // pool's lock, and with nothing left goes back to sleep, for nothing).
        for _ in 0..wanted {
            WORK.notify_one();
        }
    }
    // The caller takes tasks as well, until none are queued; then waits for the helpers'.
    while let Some(task) = next_task() {
        run(task);
    }
    let mut st = lock(&batch.state);
    while st.left > 0 {
        st = batch.done.wait(st).unwrap_or_else(|e| e.into_inner());
    }
    std::mem::take(&mut st.results)
        .into_iter()
        .flatten()
        .collect()
}

fn next_task() -> Option<Task> {
    pool().tasks.pop_front()
}

fn run(task: Task) {
    let result = task.file.sync_all();
    let mut st = lock(&task.batch.state);
    st.results[task.index] = Some((task.file, result));
    st.left -= 1;
    if st.left == 0 {
        task.batch.done.notify_one();
    }
}

fn spawn_helper() -> bool {
    std::thread::Builder::new()
        .name("maildir-fsync".into())
        .spawn(helper)
        .is_ok()
}

/// A helper thread: runs tasks as they come, forever.
fn helper() {
    let mut p = pool();
    loop {
        match p.tasks.pop_front() {
            Some(task) => {
                p.idle -= 1;
                drop(p);
                run(task);
                p = pool();
                p.idle += 1;
            }
            None => p = WORK.wait(p).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::TempDir;
    use std::io::Write;

    #[test]
    fn every_file_comes_back_synced_in_order_and_threads_are_kept() {
        let d = TempDir::new("fsync-pool");
        let make = |i: usize| {
            let mut f = File::create(d.path().join(format!("f{i}"))).unwrap();
            writeln!(f, "{i}").unwrap();
            f
        };
        for round in 0..3 {
            let files: Vec<File> = (0..20).map(make).collect();
            let inodes: Vec<u64> = files
                .iter()
                .map(|f| std::os::unix::fs::MetadataExt::ino(&f.metadata().unwrap()))
                .collect();
            let back = fsync_all(files);
            assert_eq!(back.len(), 20, "round {round}");
            for ((f, r), ino) in back.iter().zip(&inodes) {
                r.as_ref().unwrap();
                assert_eq!(
                    std::os::unix::fs::MetadataExt::ino(&f.metadata().unwrap()),
                    *ino
                );
            }
        }
        // Threads are started once and kept: never more than THREADS, whatever the rounds.
        let threads = pool().threads;
        assert!((1..=THREADS).contains(&threads), "{threads}");
    }

    #[test]
    fn a_failed_fsync_is_reported_for_its_file_only() {
        // fsync of a socket fails (EINVAL); a regular file's succeeds.
        let d = TempDir::new("fsync-pool-fail");
        let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(sock));
        let good = File::create(d.path().join("ok")).unwrap();
        let back = fsync_all(vec![good, pipe]);
        assert!(back[0].1.is_ok());
        assert!(back[1].1.is_err());
    }
}
