//! Live metrics in Prometheus' text format, served by an optional HTTP listener (config file
//! `metrics`: one `ADDR:PORT`; absent, nothing listens).
//!
//! Counters are per worker: each worker owns its [`WorkerMetrics`] and only it writes there,
//! with relaxed atomics (no lock, no shared cache line between workers on the per-message
//! path). A scrape sums all workers. Plugin counters are looked up once, when a worker builds
//! its chains, so a hook call costs two clock reads and a few atomic adds.
//! The events plugins count themselves (the plugin API's `metrics` module: which limit refused)
//! are process-wide counters of the plugin's, listed here once registered.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ringsmtpd_plugin_api::{ConfigError, ConfigSource, Hook, Outcome};

/// Histogram bucket bounds in seconds (Prometheus `le`), from 100 µs to 30 s.
const BOUNDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0,
];

/// A latency histogram: one counter per bucket (not cumulative; summed when written).
#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }
}

/// The outcome names, in `Outcome` order.
const OUTCOMES: [&str; 7] = [
    "DECLINED",
    "OK",
    "DENY",
    "DENYSOFT",
    "DENY_DISCONNECT",
    "DENYSOFT_DISCONNECT",
    "DONE",
];

fn outcome_index(o: &Outcome) -> usize {
    match o {
        Outcome::Declined => 0,
        Outcome::Ok(_) => 1,
        Outcome::Deny(_) => 2,
        Outcome::DenySoft(_) => 3,
        Outcome::DenyDisconnect(_) => 4,
        Outcome::DenySoftDisconnect(_) => 5,
        Outcome::Done(_) => 6,
    }
}

/// One plugin at one hook.
#[derive(Default)]
pub struct PluginStats {
    outcomes: [AtomicU64; 7],
    /// Timeouts and panics (counted besides the DENYSOFT they become).
    failures: AtomicU64,
    pub latency: Histogram,
}

impl PluginStats {
    pub fn record(&self, outcome: &Outcome, took: Duration) {
        self.outcomes[outcome_index(outcome)].fetch_add(1, Relaxed);
        self.latency.record(took);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    /// Calls recorded.
    pub fn latency_count(&self) -> u64 {
        self.latency.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Calls that ended with `outcome`'s kind.
    pub fn outcome_count(&self, outcome: &Outcome) -> u64 {
        self.outcomes[outcome_index(outcome)].load(Relaxed)
    }
}

/// The DNS client counters exported, by name (`ringsmtpd_dns_<name>_total`).
const DNS_COUNTERS: [&str; 8] = [
    "lookups",
    "cache_hits",
    "coalesced",
    "queries_sent",
    "tcp_queries",
    "timeouts",
    "failures",
    "dropped_spoofed",
];

/// One worker's counters.
#[derive(Default)]
pub struct WorkerMetrics {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicI64,
    /// Connections over `max_connections`, answered 421 and closed.
    pub connections_refused: AtomicU64,
    /// Final replies to messages (after DATA/BDAT LAST), by class 2xx, 4xx, 5xx.
    pub messages: [AtomicU64; 3],
    /// From the end of DATA to the queue's answer.
    pub queue_latency: Histogram,
    /// The worker's DNS client counters, copied from it once a second (see `DNS_COUNTERS`).
    dns: [AtomicU64; DNS_COUNTERS.len()],
    /// Per (plugin, hook); the map is touched only when chains are built.
    plugins: Mutex<BTreeMap<(String, &'static str), Arc<PluginStats>>>,
}

impl WorkerMetrics {
    /// The counters of `plugin` at `hook` (created on first use; reloads reuse them).
    pub fn plugin(&self, plugin: &str, hook: Hook) -> Arc<PluginStats> {
        let mut map = self.plugins.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((plugin.to_string(), hook.name()))
            .or_default()
            .clone()
    }

    /// Publishes the worker's DNS client counters (they are worker-local, so the worker copies
    /// them here for the scraper). A reload starts a new client: its counters start again,
    /// which Prometheus treats as a counter reset.
    pub fn publish_dns(&self, s: &crate::dns::DnsStats) {
        let values = [
            s.lookups,
            s.cache_hits,
            s.coalesced,
            s.queries_sent,
            s.tcp_queries,
            s.timeouts,
            s.failures,
            s.dropped_spoofed,
        ];
        for (slot, v) in self.dns.iter().zip(values) {
            slot.store(v, Relaxed);
        }
    }

    /// Counts a message's final reply.
    pub fn message(&self, code: u16) {
        let class = match code / 100 {
            2 => 0,
            4 => 1,
            _ => 2,
        };
        self.messages[class].fetch_add(1, Relaxed);
    }
}

fn registry() -> &'static Mutex<Vec<Arc<WorkerMetrics>>> {
    static R: OnceLock<Mutex<Vec<Arc<WorkerMetrics>>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

/// A new worker's counters, registered for scrapes.
pub fn register() -> Arc<WorkerMetrics> {
    let m = Arc::new(WorkerMetrics::default());
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(m.clone());
    m
}

/// The `metrics` config file: where the HTTP listener goes, if anywhere.
pub fn listen_addr(cfg: &dyn ConfigSource) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(line) = cfg.first("metrics")? else {
        return Ok(None);
    };
    let addr: SocketAddr = line
        .text
        .parse()
        .map_err(|_| line.error("expected ADDR:PORT, e.g. 127.0.0.1:9125"))?;
    Ok(Some(addr))
}

/// Starts the HTTP listener on its own thread (off the workers: a slow scraper never delays
/// mail). Answers `GET /metrics` (and `/`) with the text format; anything else 404.
///
/// Like the SMTP listeners, the socket has SO_REUSEPORT: a new process started with `--join`
/// for an upgrade binds it beside the draining one (scrapes reach either until the old one
/// exits). Without `join`, a port another process holds is an error.
pub fn serve(addr: SocketAddr, join: bool) -> std::io::Result<()> {
    if !join {
        crate::listener::check_free(addr)?;
    }
    let listener = crate::listener::bind_shared(addr)?;
    std::thread::Builder::new().name("ringsmtpd-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 2048];
            let n = conn.read(&mut req).unwrap_or(0);
            let head = String::from_utf8_lossy(&req[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = if head.starts_with("GET ") && (path == "/metrics" || path == "/") {
                ("200 OK", render())
            } else {
                ("404 Not Found", "not found\n".to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}

/// Each worker's connections accepted so far, in no particular order.
pub fn connections_by_worker() -> Vec<u64> {
    let workers = registry().lock().unwrap_or_else(|p| p.into_inner());
    workers
        .iter()
        .map(|w| w.connections_total.load(Relaxed))
        .collect()
}

/// All workers' counters, summed, in Prometheus' text exposition format.
pub fn render() -> String {
    let workers: Vec<Arc<WorkerMetrics>> =
        registry().lock().unwrap_or_else(|p| p.into_inner()).clone();
    let sum = |f: &dyn Fn(&WorkerMetrics) -> u64| workers.iter().map(|w| f(w)).sum::<u64>();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP ringsmtpd_connections_total Connections accepted.\n# TYPE ringsmtpd_connections_total counter");
    let _ = writeln!(
        out,
        "ringsmtpd_connections_total {}",
        sum(&|w| w.connections_total.load(Relaxed))
    );
    let open: i64 = workers
        .iter()
        .map(|w| w.connections_open.load(Relaxed))
        .sum();
    let _ = writeln!(out, "# HELP ringsmtpd_connections_open Connections open now.\n# TYPE ringsmtpd_connections_open gauge");
    let _ = writeln!(out, "ringsmtpd_connections_open {open}");
    let _ = writeln!(out, "# HELP ringsmtpd_connections_refused_total Connections over max_connections, answered 421 4.3.2.\n# TYPE ringsmtpd_connections_refused_total counter");
    let _ = writeln!(
        out,
        "ringsmtpd_connections_refused_total {}",
        sum(&|w| w.connections_refused.load(Relaxed))
    );
    let _ = writeln!(out, "# HELP ringsmtpd_messages_total Final replies to messages, by class.\n# TYPE ringsmtpd_messages_total counter");
    for (i, class) in ["2xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "ringsmtpd_messages_total{{class=\"{class}\"}} {}",
            sum(&|w| w.messages[i].load(Relaxed))
        );
    }
    for (i, name) in DNS_COUNTERS.iter().enumerate() {
        let _ = writeln!(out, "# TYPE ringsmtpd_dns_{name}_total counter");
        let _ = writeln!(
            out,
            "ringsmtpd_dns_{name}_total {}",
            sum(&|w| w.dns[i].load(Relaxed))
        );
    }
    let _ = writeln!(out, "# HELP ringsmtpd_queue_duration_seconds From the end of DATA to the queue's answer.\n# TYPE ringsmtpd_queue_duration_seconds histogram");
    histogram(
        &mut out,
        "ringsmtpd_queue_duration_seconds",
        "",
        workers.iter().map(|w| &w.queue_latency),
    );

    // Plugin stats, merged by (plugin, hook) across workers and reloads.
    let mut merged: BTreeMap<(String, &'static str), Vec<Arc<PluginStats>>> = BTreeMap::new();
    for w in &workers {
        for (k, v) in w.plugins.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            merged.entry(k.clone()).or_default().push(v.clone());
        }
    }
    let _ = writeln!(out, "# HELP ringsmtpd_plugin_outcomes_total Hook outcomes per plugin.\n# TYPE ringsmtpd_plugin_outcomes_total counter");
    for ((plugin, hook), stats) in &merged {
        for (i, name) in OUTCOMES.iter().enumerate() {
            let n: u64 = stats.iter().map(|s| s.outcomes[i].load(Relaxed)).sum();
            if n > 0 {
                let _ = writeln!(out, "ringsmtpd_plugin_outcomes_total{{plugin=\"{}\",hook=\"{hook}\",outcome=\"{name}\"}} {n}", escape(plugin));
            }
        }
    }
    let _ = writeln!(out, "# HELP ringsmtpd_plugin_failures_total Plugin timeouts and panics.\n# TYPE ringsmtpd_plugin_failures_total counter");
    for ((plugin, hook), stats) in &merged {
        let n: u64 = stats.iter().map(|s| s.failures.load(Relaxed)).sum();
        let _ = writeln!(
            out,
            "ringsmtpd_plugin_failures_total{{plugin=\"{}\",hook=\"{hook}\"}} {n}",
            escape(plugin)
        );
    }
    let _ = writeln!(out, "# HELP ringsmtpd_plugin_duration_seconds Time per hook call.\n# TYPE ringsmtpd_plugin_duration_seconds histogram");
    for ((plugin, hook), stats) in &merged {
        let labels = format!("plugin=\"{}\",hook=\"{hook}\",", escape(plugin));
        histogram(
            &mut out,
            "ringsmtpd_plugin_duration_seconds",
            &labels,
            stats.iter().map(|s| &s.latency),
        );
    }
    // The family only once a plugin that counts events is loaded (an empty one is noise).
    let events = ringsmtpd_plugin_api::metrics::registered();
    if !events.is_empty() {
        let _ = writeln!(out, "# HELP ringsmtpd_plugin_events_total What a plugin's own checks did (which limit refused).\n# TYPE ringsmtpd_plugin_events_total counter");
    }
    for events in events {
        for (event, n) in events.values() {
            let _ = writeln!(
                out,
                "ringsmtpd_plugin_events_total{{plugin=\"{}\",event=\"{}\"}} {n}",
                escape(events.plugin()),
                escape(event)
            );
        }
    }
    out
}

fn histogram<'a>(
    out: &mut String,
    name: &str,
    labels: &str,
    hs: impl Iterator<Item = &'a Histogram> + Clone,
) {
    let mut cumulative = 0u64;
    for (i, bound) in BOUNDS.iter().enumerate() {
        cumulative += hs.clone().map(|h| h.buckets[i].load(Relaxed)).sum::<u64>();
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
    }
    cumulative += hs
        .clone()
        .map(|h| h.buckets[BOUNDS.len()].load(Relaxed))
        .sum::<u64>();
    let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {cumulative}");
    let sum_us: u64 = hs.map(|h| h.sum_us.load(Relaxed)).sum();
    let _ = writeln!(
        out,
        "{name}_sum{{{}}} {}",
        labels.trim_end_matches(','),
        sum_us as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "{name}_count{{{}}} {cumulative}",
        labels.trim_end_matches(',')
    );
}

/// A label value: backslash, quote and newline escaped (Prometheus text format).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_across_workers() {
        let (a, b) = (register(), register());
        a.connections_total.fetch_add(2, Relaxed);
        b.connections_total.fetch_add(3, Relaxed);
        a.message(250);
        b.message(451);
        let pa = a.plugin("rcpt_ok", Hook::Rcpt);
        let pb = b.plugin("rcpt_ok", Hook::Rcpt);
        pa.record(&Outcome::Ok(None), Duration::from_micros(50));
        pb.record(&Outcome::Ok(None), Duration::from_millis(2));
        pb.record(&Outcome::Deny(None), Duration::from_secs(60));
        let text = render();
        // Other tests register workers too; check only what this test's plugin name adds up to.
        assert!(text.contains("ringsmtpd_plugin_outcomes_total{plugin=\"rcpt_ok\",hook=\"rcpt\",outcome=\"OK\"} 2"), "{text}");
        assert!(text.contains(
            "ringsmtpd_plugin_outcomes_total{plugin=\"rcpt_ok\",hook=\"rcpt\",outcome=\"DENY\"} 1"
        ));
        assert!(text.contains("ringsmtpd_plugin_duration_seconds_bucket{plugin=\"rcpt_ok\",hook=\"rcpt\",le=\"0.0001\"} 1"));
        assert!(text.contains("ringsmtpd_plugin_duration_seconds_bucket{plugin=\"rcpt_ok\",hook=\"rcpt\",le=\"0.005\"} 2"));
        assert!(text.contains(
            "ringsmtpd_plugin_duration_seconds_count{plugin=\"rcpt_ok\",hook=\"rcpt\"} 3"
        ));
    }

    #[test]
    fn plugin_events_are_rendered() {
        use ringsmtpd_plugin_api::metrics::Events;
        use std::sync::atomic::AtomicU64;
        static COUNTS: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
        static EVENTS: Events = Events::new("render-test", &["a", "b\"c"], &COUNTS);
        EVENTS.register();
        EVENTS.add(0);
        let text = render();
        assert!(
            text.contains("ringsmtpd_plugin_events_total{plugin=\"render-test\",event=\"a\"} 1")
        );
        assert!(text
            .contains("ringsmtpd_plugin_events_total{plugin=\"render-test\",event=\"b\\\"c\"} 0"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
