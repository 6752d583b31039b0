//! ringsmtpd: an SMTP receiver with qpsmtpd's plugin engine on a thread-per-core io_uring
//! runtime. See README.md for the map of this crate.

pub mod catch;
pub mod config;
pub mod control;
pub mod dns;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod incoming;
pub mod listener;
#[macro_use]
pub mod log;
pub mod metrics;
pub mod net;
pub mod peers;
pub mod proto;
pub mod runtime;
pub mod services;
pub mod session;
pub mod shutdown;
pub mod snapshot;
#[cfg(test)]
mod testalloc;
pub mod tls;
pub mod transport;
pub mod worker;
