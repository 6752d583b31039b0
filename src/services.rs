//! The worker's implementation of the plugin API's [`Services`]: logging, timers on the
//! worker's runtime, and the blocking thread pool.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ringsmtpd_plugin_api::{Level, Services};

pub struct WorkerServices {
    pub me: String,
}

impl Services for WorkerServices {
    fn me(&self) -> &str {
        &self.me
    }

    fn log(&self, level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
        crate::log::write(level, conn, source, msg);
    }

    fn log_enabled(&self, level: Level) -> bool {
        crate::log::enabled(level)
    }

    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        // The runtime has a thread pool attached (runtime.rs); the job reports back itself.
        drop(monoio::spawn_blocking(job));
    }

    fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(monoio::time::sleep(dur))
    }
}
