//! One shared object per directory path, for the whole process, while someone holds it
//! (`queue/maildir`'s commit path per Maildir, `fsync_batch`'s coordinator per `new/`).
//!
//! The registry holds weak references: workers (and plugin instances) naming the same path
//! get the same object, and one that nobody uses any more is freed (per-recipient Maildirs
//! would otherwise accumulate). Correctness never depends on the sharing: two objects for one
//! directory (another spelling of its path) only share less.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Path -> its object, while someone holds it.
pub(crate) struct ByPath<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    map: BTreeMap<PathBuf, Weak<T>>,
    /// Drop dead entries when the map grows past this.
    prune_at: usize,
}

impl<T> ByPath<T> {
    pub(crate) const fn new() -> ByPath<T> {
        ByPath {
            inner: Mutex::new(Inner {
                map: BTreeMap::new(),
                prune_at: 64,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The object of `path`, made by `make` if nobody holds one.
    pub(crate) fn get_or_insert_with(&self, path: &Path, make: impl FnOnce() -> T) -> Arc<T> {
        let mut inner = self.lock();
        if let Some(t) = inner.map.get(path).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(make());
        inner.insert(path, &t);
        t
    }

    /// Makes `t` the object of `path` while the caller holds it (tests: a substitute).
    #[cfg(test)]
    pub(crate) fn insert(&self, path: &Path, t: &Arc<T>) {
        self.lock().insert(path, t);
    }
}

impl<T> Inner<T> {
    fn insert(&mut self, path: &Path, t: &Arc<T>) {
        self.map.insert(path.to_path_buf(), Arc::downgrade(t));
        if self.map.len() > self.prune_at {
            self.map.retain(|_, w| w.strong_count() > 0);
            self.prune_at = (self.map.len() * 2).max(64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_while_held_freed_after_and_pruned() {
        let reg: ByPath<u32> = ByPath::new();
        let a = reg.get_or_insert_with(Path::new("/a"), || 1);
        let b = reg.get_or_insert_with(Path::new("/a"), || 2);
        assert!(Arc::ptr_eq(&a, &b), "one object per path while held");
        assert_eq!(*reg.get_or_insert_with(Path::new("/b"), || 3), 3);
        drop((a, b));
        assert_eq!(
            *reg.get_or_insert_with(Path::new("/a"), || 4),
            4,
            "freed when unused"
        );
        for i in 0..200 {
            drop(reg.get_or_insert_with(&PathBuf::from(format!("/x{i}")), || i));
        }
        assert!(reg.lock().map.len() <= 130, "dead entries are pruned");
    }
}
