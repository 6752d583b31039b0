//! [`FakePeer`]: the server a plugin's network client talks to in a test.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The peer of a plugin's network client: a TCP server on 127.0.0.1 whose `serve` answers
/// each connection on a thread of its own and records there what the test wants to see.
pub struct FakePeer<T> {
    pub port: u16,
    seen: Arc<Mutex<Vec<T>>>,
    active: Arc<AtomicUsize>,
}

impl<T: Send + 'static> FakePeer<T> {
    /// Listens on a free port; `serve` gets each connection and the record to add to.
    pub fn start(serve: impl Fn(TcpStream, &Mutex<Vec<T>>) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let port = listener.local_addr().expect("a bound test port").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let (serve, log, count) = (Arc::new(serve), seen.clone(), active.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (serve, log, served) = (serve.clone(), log.clone(), Served(count.clone()));
                std::thread::spawn(move || {
                    let _served = served;
                    serve(conn, &log)
                });
            }
        });
        FakePeer { port, seen, active }
    }

    /// What was recorded since the last call, once every connection has ended (5 s at the
    /// most: a client may close without waiting for the last answer).
    pub fn take(&self) -> Vec<T> {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counts a connection as served when its thread ends, even by a panic.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
