//! `smtp-loadtest`, ringsmtpd's bundled SMTP load generator, as a library: the binary is a
//! thin wrapper, and the tests drive [`run::run`] directly.
//!
//! Thread-per-core like the server: each worker thread runs a monoio runtime (io_uring where
//! the kernel allows it) with its share of the connection slots; counters are per worker and
//! merged at the end. See `docs/benchmarks.md` for how the numbers are used.

pub mod client;
pub mod config;
pub mod conn;
pub mod hist;
pub mod message;
pub mod output;
pub mod proto;
pub mod run;
pub mod schedule;
pub mod slices;
pub mod stats;

pub use config::{parse_args, Config};
pub use run::{run, Report};
