//! The content scanners' counters, one set per plugin, exported by the metrics listener as
//! `ringsmtpd_plugin_events_total{plugin="NAME",event="EVENT"}` (plugin API `metrics`):
//!
//! - `scans`: calls to the scanner (a daemon exchange or a program run), and of those
//!   `errors` (no answer in time, a refused connection, an answer that does not parse: the
//!   error policy applied) and `found` (the scanner said spam, or named a virus);
//! - how long each call took, waiting for a slot included, as one count per range:
//!   `took_0-100ms`, `took_100ms-1s`, `took_1-5s`, `took_5-25s`, `took_over_25s`. The ranges
//!   are disjoint, not Prometheus's cumulative `le` buckets: their sum is `scans`, and a
//!   dashboard adds them up for "at most N".
//!
//! Process-wide atomics: a few per scanned message, next to a scan that costs milliseconds.
//!
//! ```ignore
//! let metrics = scan_metrics!("spamassassin"); // in the plugin's constructor
//! metrics.took(started.elapsed(), result.is_ok());
//! metrics.found();
//! ```

use std::time::Duration;

use ringsmtpd_plugin_api::metrics::Events;

/// The event names, in the order of [`ScanMetrics`]'s counts.
pub(crate) const EVENT_NAMES: [&str; 8] = [
    "scans",
    "errors",
    "found",
    "took_0-100ms",
    "took_100ms-1s",
    "took_1-5s",
    "took_5-25s",
    "took_over_25s",
];

const SCANS: usize = 0;
const ERRORS: usize = 1;
const FOUND: usize = 2;
const TOOK: usize = 3;
/// The upper ends of the time ranges but the last.
const RANGES: [Duration; 4] = [
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(25),
];

/// A plugin's scan counters (a `static` of its own: [`scan_metrics!`]).
#[derive(Clone, Copy)]
pub(crate) struct ScanMetrics(pub &'static Events);

impl ScanMetrics {
    /// One call that took `spent`; `ok` false: it failed.
    pub(crate) fn took(&self, spent: Duration, ok: bool) {
        self.0.add(SCANS);
        if !ok {
            self.0.add(ERRORS);
        }
        let range = RANGES
            .iter()
            .position(|&end| spent <= end)
            .unwrap_or(RANGES.len());
        self.0.add(TOOK + range);
    }

    /// The scanner said spam, or named a virus.
    pub(crate) fn found(&self) {
        self.0.add(FOUND);
    }
}

/// The [`ScanMetrics`] of plugin `$name` (a string literal): its statics, registered with the
/// metrics listener on first use.
macro_rules! scan_metrics {
    ($name:literal) => {{
        use std::sync::atomic::AtomicU64;
        use $crate::helpers::scan_metrics::{ScanMetrics, EVENT_NAMES};
        static COUNTS: [AtomicU64; EVENT_NAMES.len()] =
            [const { AtomicU64::new(0) }; EVENT_NAMES.len()];
        static EVENTS: ringsmtpd_plugin_api::metrics::Events =
            ringsmtpd_plugin_api::metrics::Events::new($name, &EVENT_NAMES, &COUNTS);
        EVENTS.register();
        ScanMetrics(&EVENTS)
    }};
}
pub(crate) use scan_metrics;

/// The count of `event` of `plugin`'s scan metrics (0 before its first use), for tests. The
/// counts are process-wide: a test compares before and after its own scan.
#[cfg(test)]
pub(crate) fn count(plugin: &str, event: &str) -> u64 {
    ringsmtpd_plugin_api::metrics::registered()
        .iter()
        .filter(|e| e.plugin() == plugin)
        .flat_map(|e| e.values())
        .find(|(name, _)| *name == event)
        .map_or(0, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_errors_and_time_ranges_are_counted() {
        let m = scan_metrics!("scan_metrics_test");
        m.took(Duration::from_millis(5), true);
        m.took(Duration::from_millis(100), true); // an end belongs to its range
        m.took(Duration::from_secs(3), false);
        m.took(Duration::from_secs(30), false);
        m.found();
        let got: Vec<(&str, u64)> = m.0.values().collect();
        assert_eq!(
            got,
            vec![
                ("scans", 4),
                ("errors", 2),
                ("found", 1),
                ("took_0-100ms", 2),
                ("took_100ms-1s", 0),
                ("took_1-5s", 1),
                ("took_5-25s", 0),
                ("took_over_25s", 1),
            ]
        );
        assert!(ringsmtpd_plugin_api::metrics::registered()
            .iter()
            .any(|e| e.plugin() == "scan_metrics_test"));
    }
}
