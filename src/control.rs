//! What the main thread shares with the workers ([`Control`]): the current config snapshot
//! behind a lock that is taken once per reload per worker (never per connection: workers
//! compare a generation counter), the connection counts per client IP and in all, and the stop signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures_channel::oneshot;

use crate::admission::Admission;
use crate::peers::PeerCounts;
use crate::snapshot::Snapshot;

/// What the main thread shares with the workers.
pub struct Control {
    current: RwLock<Arc<Snapshot>>,
    /// Connections per client IP, shared by all workers.
    pub peers: Arc<PeerCounts>,
    /// Connections open in the process, against `max_connections`.
    pub admission: Arc<Admission>,
    generation: AtomicU64,
    stop: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Control {
    pub fn new(snapshot: Snapshot) -> Arc<Control> {
        Arc::new(Control {
            current: RwLock::new(Arc::new(snapshot)),
            peers: PeerCounts::new(),
            admission: Admission::new(),
            generation: AtomicU64::new(0),
            stop: Mutex::new(Vec::new()),
        })
    }

    /// Publishes a new snapshot; workers pick it up at their next accepted connection.
    pub fn replace(&self, snapshot: Snapshot) {
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current snapshot's number: it changes at every [`Control::replace`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A signal for one worker: it fires at [`Control::shutdown`].
    pub fn stop_signal(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
        rx
    }

    /// Tells every worker to stop accepting and drain.
    pub fn shutdown(&self) {
        for tx in self
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = tx.send(());
        }
    }
}
