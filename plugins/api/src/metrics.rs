//! Counters a plugin keeps beside the outcomes the engine counts per hook: which of its
//! checks acted (the `limit` plugin's `rate_rcpt_host` against its `concurrency`). The
//! metrics listener (config `metrics`) exports every registered set as
//! `ringsmtpd_plugin_events_total{plugin="NAME",event="EVENT"}`.
//!
//! ```ignore
//! static COUNTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
//! static EVENTS: Events = Events::new("limit", &["concurrency", "store_error"], &COUNTS);
//! EVENTS.register();  // in the plugin's constructor: the series exist from the start
//! EVENTS.add(0);      // when the event happens
//! ```
//!
//! The counts are process-wide atomics shared by every worker: meant for events that are
//! rare next to messages (refusals, store errors), not for something counted on every
//! command, which would bounce one cache line between the cores.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// One plugin's named counters, in a `static` of the plugin's.
pub struct Events {
    plugin: &'static str,
    names: &'static [&'static str],
    counts: &'static [AtomicU64],
    registered: AtomicBool,
}

static REGISTRY: Mutex<Vec<&'static Events>> = Mutex::new(Vec::new());

impl Events {
    /// `names[i]` is counted in `counts[i]`; the two have the same length.
    pub const fn new(
        plugin: &'static str,
        names: &'static [&'static str],
        counts: &'static [AtomicU64],
    ) -> Events {
        assert!(names.len() == counts.len(), "one count per event name");
        Events {
            plugin,
            names,
            counts,
            registered: AtomicBool::new(false),
        }
    }

    /// Lists the set for the metrics listener (once; later calls do nothing).
    pub fn register(&'static self) {
        if !self.registered.swap(true, Relaxed) {
            REGISTRY
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self);
        }
    }

    /// Counts one event `i` (an index into the names; out of range: ignored).
    pub fn add(&self, i: usize) {
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The plugin's name, as the `plugin` label.
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// (event name, count) pairs, in the order of the names.
    pub fn values(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.names
            .iter()
            .zip(self.counts)
            .map(|(n, c)| (*n, c.load(Relaxed)))
    }
}

/// Every registered set, in registration order.
pub fn registered() -> Vec<&'static Events> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    static COUNTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
    static EVENTS: Events = Events::new("test-events", &["one", "two"], &COUNTS);

    #[test]
    fn registered_once_and_counted_by_name() {
        EVENTS.register();
        EVENTS.register();
        EVENTS.add(1);
        EVENTS.add(1);
        EVENTS.add(7);
        let mine: Vec<_> = registered()
            .into_iter()
            .filter(|e| e.plugin() == "test-events")
            .collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            mine[0].values().collect::<Vec<_>>(),
            [("one", 0), ("two", 2)]
        );
    }
}
