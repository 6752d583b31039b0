//! What happened in each second of a run, for plots of an overload run's phases: messages
//! sent, accepted, rejected and failed, connections refused with 421 and other connection
//! errors, and the latency of the messages accepted in that second (MAIL sent, or the
//! scheduled time in open loop, to the 250). Events land in the second they happened in
//! (a message's answer, not its start).

use hdrhistogram::Histogram;

use crate::hist::histogram;

/// Seconds kept: a run lasts at most 10 minutes; later events go to the last second.
const MAX_SLICES: usize = 601;

#[derive(Clone)]
pub struct Slice {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Connections refused with 421 before the session (banner or EHLO): the server's
    /// connection limit.
    pub refused_421: u64,
    /// Other connection errors: failed connects, resets, closes, timeouts.
    pub conn_errors: u64,
    /// Open loop: messages a generator connection started more than [`LATE`] after their
    /// scheduled time, because none was free then (the generator's own queue, not the
    /// server's); their latency still counts from the scheduled time.
    pub late: u64,
    /// Open loop with `--skip-late`: messages not sent at all, because no generator
    /// connection was free to start them in time.
    pub skipped: u64,
    /// Connects that did not complete within `--connect-timeout` (a full listen queue drops
    /// SYNs); also counted in `conn_errors`.
    pub connect_timeouts: u64,
    /// Latency of the messages accepted in this second, µs, two significant digits.
    pub latency: Histogram<u64>,
}

impl Default for Slice {
    fn default() -> Slice {
        let latency = histogram(2);
        Slice {
            sent: 0,
            accepted: 0,
            rejected: 0,
            failed: 0,
            refused_421: 0,
            conn_errors: 0,
            late: 0,
            skipped: 0,
            connect_timeouts: 0,
            latency,
        }
    }
}

/// The seconds of a run, made as events arrive.
#[derive(Clone, Default)]
pub struct Slices(Vec<Slice>);

/// A message that starts later than this after its scheduled time waited for a free generator
/// connection (a free one sleeps until the time and wakes within a timer tick).
pub const LATE: std::time::Duration = std::time::Duration::from_millis(10);

/// The JSON columns of [`Slices::rows`]; new ones go at the end (scripts index by name, older
/// ones by position).
pub const COLUMNS: [&str; 14] = [
    "t_s",
    "sent",
    "accepted",
    "rejected",
    "failed",
    "refused_421",
    "conn_errors",
    "p50_us",
    "p99_us",
    "max_us",
    "latency_count",
    "late",
    "skipped",
    "connect_timeouts",
];

impl Slices {
    /// Second `i` of the run.
    pub fn at(&mut self, i: u64) -> &mut Slice {
        let i = usize::try_from(i).unwrap_or(usize::MAX).min(MAX_SLICES - 1);
        if self.0.len() <= i {
            self.0.resize_with(i + 1, Slice::default);
        }
        &mut self.0[i]
    }

    pub fn merge(&mut self, o: &Slices) {
        for (i, s) in o.0.iter().enumerate() {
            let m = self.at(i as u64);
            m.sent += s.sent;
            m.accepted += s.accepted;
            m.rejected += s.rejected;
            m.failed += s.failed;
            m.refused_421 += s.refused_421;
            m.conn_errors += s.conn_errors;
            m.late += s.late;
            m.skipped += s.skipped;
            m.connect_timeouts += s.connect_timeouts;
            // Same bounds on both sides: add cannot fail.
            let _ = m.latency.add(&s.latency);
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One row per second, in [`COLUMNS`] order (latencies 0 when nothing was accepted).
    pub fn rows(&self) -> Vec<[u64; 14]> {
        self.0
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let h = &s.latency;
                let q = |q| {
                    if h.is_empty() {
                        0
                    } else {
                        h.value_at_quantile(q)
                    }
                };
                [
                    i as u64,
                    s.sent,
                    s.accepted,
                    s.rejected,
                    s.failed,
                    s.refused_421,
                    s.conn_errors,
                    q(0.5),
                    q(0.99),
                    h.max(),
                    h.len(),
                    s.late,
                    s.skipped,
                    s.connect_timeouts,
                ]
            })
            .collect()
    }

    /// Connections refused with 421 over the run.
    pub fn refused_421(&self) -> u64 {
        self.0.iter().map(|s| s.refused_421).sum()
    }

    /// Messages started late (no free generator connection at their time) over the run.
    pub fn late(&self) -> u64 {
        self.0.iter().map(|s| s.late).sum()
    }

    /// Messages skipped by `--skip-late` over the run.
    pub fn skipped(&self) -> u64 {
        self.0.iter().map(|s| s.skipped).sum()
    }

    /// Connects that timed out over the run.
    pub fn connect_timeouts(&self) -> u64 {
        self.0.iter().map(|s| s.connect_timeouts).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_per_second_and_merge() {
        let mut a = Slices::default();
        a.at(0).sent = 2;
        a.at(2).refused_421 = 3;
        a.at(2).latency.record(1000).unwrap();
        a.at(2).late = 4;
        let mut b = Slices::default();
        b.at(2).latency.record(50_000).unwrap();
        b.at(2).accepted = 2;
        b.at(2).skipped = 5;
        b.at(2).connect_timeouts = 6;
        a.merge(&b);
        let rows = a.rows();
        assert_eq!(rows.len(), 3, "seconds without events are rows of zeros");
        assert_eq!(rows[1], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let r = rows[2];
        assert_eq!((r[0], r[2], r[5], r[10]), (2, 2, 3, 2));
        assert_eq!(
            (r[11], r[12], r[13]),
            (4, 5, 6),
            "late, skipped, connect_timeouts"
        );
        assert_eq!((a.late(), a.skipped(), a.connect_timeouts()), (4, 5, 6));
        assert!(r[7] >= 990 && r[7] <= 1010, "p50 {}", r[7]);
        assert!(r[8] >= 49_500, "p99 {}", r[8]);
        assert_eq!(a.refused_421(), 3);
        a.at(100_000).sent += 1;
        assert_eq!(a.len(), MAX_SLICES, "bounded");
    }
}
