//! A virtual clock for the timeout tests: services whose timers fire when the clock has passed
//! their end, and milter connections on which a scripted [`silence`] moves the clock on, so a
//! test tells "answered within the timeout" from "did not" without waiting or timing anything.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
use ringsmtpd_plugin_api::testing::FakeServices;
use ringsmtpd_plugin_api::{Connection, Cx, Level, Services};

/// The command letter of the marker packet; no milter reply has it.
const SILENCE: u8 = b'~';

/// A scripted reply that is a silence of `secs` seconds of the virtual clock, then the
/// script goes on.
pub(super) fn silence(secs: u32) -> Vec<u8> {
    let mut p = 5u32.to_be_bytes().to_vec();
    p.push(SILENCE);
    p.extend_from_slice(&secs.to_be_bytes());
    p
}

/// [`FakeServices`] with a virtual clock.
pub(super) struct Clocked {
    pub(super) fake: Rc<FakeServices>,
    now: Rc<Cell<Duration>>,
}

/// A client's context on [`Clocked`] services.
pub(super) fn clocked_client() -> (Cx, Rc<Clocked>) {
    let svc = Rc::new(Clocked {
        fake: FakeServices::new("mx.example.test"),
        now: Rc::new(Cell::new(Duration::ZERO)),
    });
    let conn = Connection::new(
        1,
        "192.0.2.1:4242".parse().expect("test address"),
        "127.0.0.1:25".parse().expect("test address"),
    );
    (Cx::new(conn, svc.clone()), svc)
}

impl Services for Clocked {
    fn me(&self) -> &str {
        self.fake.me()
    }
    fn log(&self, level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
        self.fake.log(level, conn, source, msg)
    }
    fn log_enabled(&self, level: Level) -> bool {
        self.fake.log_enabled(level)
    }
    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        self.fake.spawn_blocking(job)
    }
    fn now(&self) -> SystemTime {
        self.fake.now()
    }
    /// Fires once the virtual clock has passed its end (the stream wakes the task when it
    /// moves the clock).
    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        let (now, end) = (self.now.clone(), self.now.get() + dur);
        Box::pin(std::future::poll_fn(move |_| {
            if now.get() >= end {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }))
    }
    fn connect(&self, to: &Endpoint, timeout: Duration) -> ConnectFuture {
        let inner = self.fake.connect(to, timeout);
        let now = self.now.clone();
        Box::pin(async move {
            let inner = inner.await?;
            Ok(Box::new(Silences {
                inner,
                pending: Vec::new(),
                now,
            }) as Box<dyn Stream>)
        })
    }
}

/// A milter connection that takes the silence markers out of what the milter sends.
struct Silences {
    inner: Box<dyn Stream>,
    /// Received and not handed on yet.
    pending: Vec<u8>,
    now: Rc<Cell<Duration>>,
}

impl Silences {
    /// How many bytes come before the next marker, and whether a marker is next.
    fn before_marker(&self) -> (usize, bool) {
        let p = &self.pending;
        let mut at = 0;
        while at + 5 <= p.len() {
            if p[at + 4] == SILENCE {
                return (at, true);
            }
            let len = u32::from_be_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]) as usize;
            at = at.saturating_add(4 + len);
        }
        (p.len(), false)
    }
}

impl Stream for Silences {
    fn read(&mut self, mut buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(async move {
            loop {
                match self.before_marker() {
                    (0, true) if self.pending.len() >= 9 => {
                        let secs = u32::from_be_bytes([
                            self.pending[5],
                            self.pending[6],
                            self.pending[7],
                            self.pending[8],
                        ]);
                        self.pending.drain(..9);
                        self.now
                            .set(self.now.get() + Duration::from_secs(secs.into()));
                        yield_once().await;
                    }
                    (0, _) => {
                        let (res, got) = self.inner.read(std::mem::take(&mut self.pending)).await;
                        self.pending = got;
                        match res {
                            Ok(0) => return (Ok(0), buf),
                            Ok(_) => {}
                            Err(e) => return (Err(e), buf),
                        }
                    }
                    (n, _) => {
                        buf.extend(self.pending.drain(..n));
                        return (Ok(n), buf);
                    }
                }
            }
        })
    }
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        self.inner.write_all(buf)
    }
    fn start_tls(self: Box<Self>, _server_name: String, _verify: TlsVerify) -> ConnectFuture {
        Box::pin(std::future::ready(Err(
            std::io::ErrorKind::Unsupported.into()
        )))
    }
}

/// Lets the other futures of the task (the timer) be polled once.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|task| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            task.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
