//! What both integration test files (fake_server.rs, real_servers.rs) share.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
