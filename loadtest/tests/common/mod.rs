//! What both integration test files (fake_server.rs, real_servers.rs) share.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smtp_loadtest::config::Config;
use smtp_loadtest::{run, Report};

/// Validates `c`, runs the load to its end and asserts that the counts balance (every attempted
/// message accepted, rejected with 4xx or 5xx, or failed); returns the report.
pub fn run_balanced(c: &Config) -> Report {
    c.validate(&[]).unwrap();
    let r = run(c, Arc::new(AtomicBool::new(false))).unwrap();
    let s = &r.stats;
    assert!(
        s.balanced(),
        "attempted {} != {} + {} + {} + {}",
        s.attempted,
        s.accepted,
        s.rejected_4xx,
        s.rejected_5xx,
        s.failed
    );
    r
}

/// The settings of the fake-server tests (fake_server.rs, starttls.rs): 2 threads, 4
/// connections, short timeouts.
#[allow(dead_code)] // real_servers.rs has its own
pub fn fake_config(addr: SocketAddr) -> Config {
    let mut c = Config::new(addr);
    c.threads = 2;
    c.connections = 4;
    c.quiet = true;
    c.timeout = Duration::from_secs(5);
    c.connect_timeout = Duration::from_secs(2);
    c
}

/// [`run_balanced`], which must also end within 60 s (no fake server hangs a run).
#[allow(dead_code)] // real_servers.rs does not bound its runs
pub fn run_bounded(c: &Config) -> Report {
    let t = Instant::now();
    let r = run_balanced(c);
    assert!(t.elapsed() < Duration::from_secs(60));
    r
}
