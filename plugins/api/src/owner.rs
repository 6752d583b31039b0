//! Who owns what the server creates before it drops root.
//!
//! A server started as root builds its plugins (and creates their directories) first, then
//! drops to the account of the config file `user` (docs/deploy.md). Before building them the
//! core names that account here ([`set_run_as`]); a plugin that creates a directory or file
//! it will write to after the drop calls [`created`] on it, which gives it to that account,
//! and [`require`] on what must stay usable, which the core checks right after the drop (a
//! clear error at start, not a 4xx at the first message). Once dropped (and in every process
//! that never was root: tests, `--stdio`, an ordinary user) both do nothing.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What the process must be able to do with a path after the drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read a file (or list a directory).
    Read,
    /// Create and remove entries in a directory, write a file.
    Write,
}

/// `uid << 32 | gid` of the account the server drops to, or [`NONE`].
static RUN_AS: AtomicU64 = AtomicU64::new(NONE);
const NONE: u64 = u64::MAX;

/// The paths [`require`]d before the drop.
static REQUIRED: Mutex<Vec<(PathBuf, Access)>> = Mutex::new(Vec::new());

/// The core, before it builds the plugins as root: the server will drop to `uid`:`gid`.
/// `None` once dropped (or when it will not drop).
pub fn set_run_as(account: Option<(u32, u32)>) {
    let v = account.map_or(NONE, |(u, g)| u64::from(u) << 32 | u64::from(g));
    RUN_AS.store(v, Ordering::SeqCst);
}

/// The account the server will drop to, while it still has to.
pub fn run_as() -> Option<(u32, u32)> {
    match RUN_AS.load(Ordering::SeqCst) {
        NONE => None,
        v => Some(((v >> 32) as u32, v as u32)),
    }
}

/// `path` was just created by this process: before the drop, give it to the account the
/// server drops to (owner and group), so it stays writable afterwards. Call it on every
/// directory a `create_dir_all` made, not only the last one.
pub fn created(path: &Path) -> io::Result<()> {
    match run_as() {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// Creates `path` and its missing parents like `std::fs::create_dir_all`, and gives each
/// directory it created to the account the server drops to ([`created`]).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.as_os_str().is_empty() || path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => created(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `path` must allow `access` after the drop: the core checks it then, and refuses to start
/// with a message naming the path, its owner and the account if it does not.
pub fn require(path: &Path, access: Access) {
    if run_as().is_some() {
        let mut list = REQUIRED.lock().unwrap_or_else(|p| p.into_inner());
        if !list.iter().any(|(p, a)| p == path && *a == access) {
            list.push((path.to_path_buf(), access));
        }
    }
}

/// The core, right after the drop: what plugins [`require`]d (the list is emptied).
pub fn take_required() -> Vec<(PathBuf, Access)> {
    std::mem::take(&mut *REQUIRED.lock().unwrap_or_else(|p| p.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test, as the state is process-wide.
    #[test]
    fn records_only_before_the_drop_and_chowns_to_the_account() {
        let d = crate::testing::TempDir::new("owner");
        let own = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(p).unwrap();
            (m.uid(), m.gid())
        };
        // Not dropping: nothing recorded, directories made as usual.
        set_run_as(None);
        require(&d.path().join("x"), Access::Write);
        create_dir_all(&d.path().join("a/b")).unwrap();
        assert!(d.path().join("a/b").is_dir());
        assert!(take_required().is_empty());
        // Dropping to ourselves (any process may chown to its own ids): every new directory
        // is given to the account; an existing one is left alone.
        let me = own(d.path());
        set_run_as(Some(me));
        create_dir_all(&d.path().join("a/c/d")).unwrap();
        assert_eq!(own(&d.path().join("a/c")), me);
        assert_eq!(own(&d.path().join("a/c/d")), me);
        require(&d.path().join("a/c"), Access::Write);
        require(&d.path().join("a/c"), Access::Write);
        assert_eq!(take_required(), vec![(d.path().join("a/c"), Access::Write)]);
        // Another account: chown fails unless we are root, and says so.
        set_run_as(Some((me.0.wrapping_add(1), me.1)));
        let e = created(&d.path().join("a/c/d"));
        assert_eq!(e.is_ok(), me.0 == 0, "{e:?}");
        set_run_as(None);
        assert!(created(&d.path().join("missing")).is_ok());
    }
}
