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
#[cfg(test)]
mod testalloc;
pub mod tls;
pub mod transport;
pub mod worker;
