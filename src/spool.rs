//! The spool directory's files (messages above `size_threshold`), kept off the workers:
//! [`create`] opens a new one on the blocking pool, the process-wide reaper ([`install_reaper`])
//! closes and unlinks the ones a `Body` lets go of, and [`clean`] removes, at start, what a
//! crashed process left behind.
//!
//! A spool file is named `<pid>.<connection id>.<transaction number>`. It lives as long as its
//! message's `Body`; a process killed meanwhile (kill -9, a power cut) leaves it behind, and
//! the next start removes every such file whose process is gone, so the garbage is bounded by
//! the messages in flight at one crash.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use ringsmtpd_plugin_api::{Services, SpoolFile};

use crate::pool::Pool;

/// Threads that unlink spool files: one is plenty (an unlink is short); two keep one slow
/// unlink (a busy disk) from holding up the others.
const REAPER_THREADS: usize = 2;

/// The spool file's name for transaction `txn_id` (`<conn>.<n>`) of connection `conn`.
pub fn name(conn: u64, txn_id: &str) -> String {
    format!(
        "{}.{conn}.{}",
        std::process::id(),
        txn_id.rsplit('.').next().unwrap_or("0")
    )
}

/// Creates the spool file `path` (mode 0600, never an existing one) on the blocking pool.
/// If the caller is gone by the time it exists (its session ended), the job removes it.
pub async fn create(svc: &dyn Services, path: PathBuf) -> io::Result<File> {
    let (tx, rx) = futures_channel::oneshot::channel::<io::Result<File>>();
    svc.spawn_blocking(Box::new(move || {
        let opened = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        if let Err(Ok(_)) = tx.send(opened) {
            let _ = std::fs::remove_file(&path);
        }
    }));
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the spool job failed")))
}

fn reaper() -> &'static Pool {
    static REAPER: OnceLock<Pool> = OnceLock::new();
    REAPER.get_or_init(|| Pool::new("spool-unlink", REAPER_THREADS))
}

/// From now on, spool files a `Body` lets go of are closed and unlinked by the reaper's
/// threads (started at the first one, after the privilege drop), not on the worker.
pub fn install_reaper() {
    ringsmtpd_plugin_api::set_spool_remover(Box::new(|spool: SpoolFile| {
        reaper().spawn(Box::new(move || {
            let SpoolFile { path, file } = spool;
            drop(file);
            let _ = std::fs::remove_file(path);
        }));
    }));
}

/// Waits (at most `timeout`) until the reaper has removed every file handed to it: at exit,
/// so a clean stop leaves an empty spool.
pub fn flush(timeout: Duration) -> bool {
    reaper().wait_idle(timeout)
}

/// Removes the spool files in `dir` whose process no longer runs (or is this one: at start
/// it has none yet): what a crash left. Files of a live process (another ringsmtpd sharing
/// the directory with `--join`, a `--stdio` session) and names of another form are left
/// alone. Returns how many it removed.
pub fn clean(dir: &Path) -> io::Result<usize> {
    let me = std::process::id();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(spool_pid) else {
            continue;
        };
        if (pid == me || !alive(pid)) && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The pid of a spool file name `<pid>.<conn>.<n>` (all three decimal), or of the rewrite of
/// one that a header edit had under way (`<pid>.<conn>.<n>.edit`, see the plugin API's
/// `header_edit`), else `None`.
fn spool_pid(name: &str) -> Option<u32> {
    let name = name.strip_suffix(".edit").unwrap_or(name);
    let mut parts = name.split('.');
    let pid = parts.next()?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (conn, n) = (parts.next()?, parts.next()?);
    if parts.next().is_some() || !all_digits(pid) || !all_digits(conn) || !all_digits(n) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Whether process `pid` exists (signal 0: no signal is sent; EPERM means it exists).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::TempDir;

    #[test]
    fn names_and_their_pids() {
        let n = name(7 << 40 | 3, "1099511627779.2");
        assert_eq!(n, format!("{}.{}.2", std::process::id(), 7u64 << 40 | 3));
        assert_eq!(spool_pid(&n), Some(std::process::id()));
        assert_eq!(spool_pid(&format!("{n}.edit")), Some(std::process::id()));
        for other in [
            "x.1.2",
            "1.2",
            "1.2.3.4",
            "0.1.2",
            "1..2",
            "Maildir",
            ".1.2.3",
            "1.2.3.edit.edit",
            "1.2.edit",
            "1.2.3.tmp",
        ] {
            assert_eq!(spool_pid(other), None, "{other}");
        }
    }

    #[test]
    fn clean_removes_files_of_dead_processes_and_ours_only() {
        let d = TempDir::new("spool-clean");
        // A process that has exited (and been reaped): its pid is free now.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = 1; // init, always there
        let me = std::process::id();
        for f in [
            format!("{dead}.1.1"),
            format!("{me}.5.1"),
            format!("{me}.5.2.edit"),
            format!("{live}.1.1"),
            "notes.txt".to_string(),
        ] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        // (A new process may have taken `dead`'s pid since: then its file stays, rightly.)
        let removed = clean(d.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert!(!left.contains(&format!("{me}.5.1")), "{left:?}");
        assert!(!left.contains(&format!("{me}.5.2.edit")), "{left:?}");
        assert!(left.contains(&format!("{live}.1.1")) && left.contains(&"notes.txt".to_string()));
        assert_eq!(removed + left.len(), 5, "{left:?}");
        assert_eq!(alive(dead), left.contains(&format!("{dead}.1.1")));
    }
}
