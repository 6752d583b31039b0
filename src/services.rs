//! The worker's implementation of the plugin API's [`Services`]: logging, timers on the
//! worker's runtime, the blocking thread pool, the slow helpers' own bounded pool, DNS,
//! outbound connections, the state store.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use ringsmtpd_plugin_api::dns::DnsLookup;
use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint};
use ringsmtpd_plugin_api::{Level, LogRecord, Outcome, Plugin, Services};

/// Threads per worker for slow helpers (checkpassword, qmail-queue, exim): as many as the
/// blocking pool has, and separate from it, so a burst of helpers that each take seconds
/// queues here while Maildir and spool fsyncs still find every blocking thread free.
const HELPER_THREADS: usize = 4;

pub struct WorkerServices {
    pub me: String,
    /// The plugins of `config/logging` (qpsmtpd's `logging` hook); empty: the built-in logger.
    loggers: RefCell<Vec<Rc<dyn Plugin>>>,
    /// Set while a logging plugin runs, so a log call from inside it cannot recurse.
    in_logger: Cell<bool>,
    /// The worker's DNS client ([`WorkerServices::set_resolver`]); none: `NoResolver`.
    dns: std::cell::OnceCell<crate::dns::Resolver>,
    /// The slow helpers' pool ([`Services::spawn_helper`]).
    helpers: crate::pool::Pool,
    /// The state store ([`WorkerServices::set_store`]); none: `Unavailable`.
    store: std::cell::OnceCell<crate::store::StoreClient>,
}

impl WorkerServices {
    pub fn new(me: String) -> WorkerServices {
        WorkerServices {
            me,
            loggers: RefCell::default(),
            in_logger: Cell::new(false),
            dns: std::cell::OnceCell::new(),
            helpers: crate::pool::Pool::new("ringsmtpd-helper", HELPER_THREADS),
            store: std::cell::OnceCell::new(),
        }
    }

    /// Gives plugins this DNS client (once; later calls are ignored).
    pub fn set_resolver(&self, resolver: crate::dns::Resolver) {
        let _ = self.dns.set(resolver);
    }

    /// Gives plugins this state store client (once; later calls are ignored).
    pub fn set_store(&self, store: crate::store::StoreClient) {
        let _ = self.store.set(store);
    }

    /// The DNS client, if one was set.
    pub fn resolver(&self) -> Option<&crate::dns::Resolver> {
        self.dns.get()
    }

    /// Routes log lines through these logging plugins from now on.
    pub fn set_loggers(&self, loggers: Vec<Rc<dyn Plugin>>) {
        *self.loggers.borrow_mut() = loggers;
    }
}

impl Services for WorkerServices {
    fn me(&self) -> &str {
        &self.me
    }

    fn log(&self, level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
        let loggers = self.loggers.borrow();
        if loggers.is_empty() || self.in_logger.replace(true) {
            crate::log::write(level, conn, source, msg);
            return;
        }
        let record = LogRecord {
            level,
            conn,
            source,
            msg: &msg,
        };
        // In order until one says OK (qpsmtpd's chain rule); each filters by its own level.
        for logger in loggers.iter() {
            // A panicking logger must not take the worker down, nor leave `in_logger` set.
            let call = std::panic::AssertUnwindSafe(|| logger.logging(&record));
            match std::panic::catch_unwind(call) {
                Ok(Outcome::Ok(_)) => break,
                Ok(_) => {}
                Err(_) => crate::log::write(
                    Level::Crit,
                    conn,
                    source,
                    format_args!("a logging plugin panicked on: {msg}"),
                ),
            }
        }
        self.in_logger.set(false);
    }

    fn log_enabled(&self, level: Level) -> bool {
        // Logging plugins keep their own thresholds (`loglevel` args), so they see every line.
        !self.loggers.borrow().is_empty() || crate::log::enabled(level)
    }

    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        // The runtime has a thread pool attached (runtime.rs); the job reports back itself.
        drop(monoio::spawn_blocking(job));
    }

    fn spawn_helper(&self, job: Box<dyn FnOnce() + Send>) {
        self.helpers.spawn(job);
    }

    fn connect(&self, to: &Endpoint, timeout: Duration) -> ConnectFuture {
        crate::net::connect(to, timeout)
    }

    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(monoio::time::sleep(dur))
    }

    fn store(
        &self,
        batch: ringsmtpd_plugin_api::store::Batch,
    ) -> ringsmtpd_plugin_api::store::StoreFuture {
        match self.store.get() {
            Some(s) => s.send(batch),
            None => crate::store::StoreClient::None.send(batch),
        }
    }

    fn dns_query(&self, name: &str, qtype: ringsmtpd_plugin_api::dns::QType) -> DnsLookup {
        match self.dns.get() {
            Some(r) => r.lookup(name, qtype),
            None => DnsLookup::ready(Err(ringsmtpd_plugin_api::dns::DnsError::NoResolver)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{run_on, Driver, BLOCKING_THREADS};
    use ringsmtpd_plugin_api::{blocking, helper};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};

    /// Slow checkpassword stand-ins (each holds its thread until released) fill the helpers'
    /// pool and queue behind it, more of them than both pools have threads; a delivery's
    /// write and fsync on the blocking pool still completes meanwhile. Were the helpers on the
    /// blocking pool, the delivery would wait for a release that comes only after it (the
    /// deadline only bounds that hang).
    #[test]
    fn slow_helpers_never_take_the_threads_a_delivery_needs() {
        let dir = ringsmtpd_plugin_api::testing::TempDir::new("helpers");
        let file = dir.path().join("message");
        let run = run_on(Driver::Epoll, || async move {
            let svc: Rc<dyn Services> = Rc::new(WorkerServices::new("mx.test".into()));
            let (release, gate) = mpsc::channel::<()>();
            let gate = Arc::new(Mutex::new(gate));
            let running = Arc::new(AtomicUsize::new(0));
            let n = 2 * (HELPER_THREADS + BLOCKING_THREADS);
            let mut helpers = Vec::new();
            for _ in 0..n {
                let (svc, gate, running) = (svc.clone(), gate.clone(), running.clone());
                helpers.push(monoio::spawn(async move {
                    helper(&*svc, move || {
                        running.fetch_add(1, Ordering::SeqCst);
                        let _ = gate.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    })
                    .await
                }));
            }
            let mut waited = 0;
            while running.load(Ordering::SeqCst) < HELPER_THREADS {
                assert!(waited < 3000, "the helpers did not start");
                monoio::time::sleep(Duration::from_millis(10)).await;
                waited += 1;
            }
            let delivery = blocking(&*svc, move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&file)?;
                f.write_all(b"Subject: hi\n\nhello\n")?;
                f.sync_all()
            });
            let delivered = monoio::time::timeout(Duration::from_secs(60), delivery).await;
            let delivered = delivered.expect("the delivery waited for the helpers' release");
            assert!(matches!(delivered, Some(Ok(()))), "{delivered:?}");
            // Never more helpers at once than the pool's ceiling: the rest are queued.
            assert_eq!(running.load(Ordering::SeqCst), HELPER_THREADS);
            for _ in 0..n {
                release.send(()).unwrap();
            }
            for h in helpers {
                assert_eq!(h.await, Some(()));
            }
            running.load(Ordering::SeqCst)
        });
        assert_eq!(run.unwrap(), 2 * (HELPER_THREADS + BLOCKING_THREADS));
    }
}
