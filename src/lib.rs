//! ringsmtpd: an SMTP receiver with qpsmtpd's plugin engine on a thread-per-core io_uring
//! runtime. See README.md for the map of this crate.

pub mod admission;
pub mod affinity;
pub mod catch;
pub mod check;
pub mod config;
pub mod control;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod incoming;
pub mod karma_tool;
pub mod listener;
#[macro_use]
pub mod log;
pub mod metrics;
pub mod net;
pub mod peers;
pub mod pool;
pub mod privileges;
pub mod proto;
pub mod runtime;
pub mod services;
pub mod session;
pub mod shutdown;
pub mod snapshot;
pub mod spool;
pub mod store;
pub mod tls;
pub mod transport;
pub mod worker;

/// The unit tests count allocations (proving paths allocate nothing).
#[cfg(test)]
#[global_allocator]
static ALLOC: ringsmtpd_plugin_api::testing::CountingAlloc =
    ringsmtpd_plugin_api::testing::CountingAlloc;
