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
            latency,
        }
    }
}

/// The seconds of a run, made as events arrive.
#[derive(Clone, Default)]
pub struct Slices(Vec<Slice>);

/// The JSON columns of [`Slices::rows`].
pub const COLUMNS: [&str; 11] = [
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
    pub fn rows(&self) -> Vec<[u64; 11]> {
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
                ]
            })
            .collect()
    }

    /// Connections refused with 421 over the run.
    pub fn refused_421(&self) -> u64 {
        self.0.iter().map(|s| s.refused_421).sum()
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
        let mut b = Slices::default();
        b.at(2).latency.record(50_000).unwrap();
        b.at(2).accepted = 2;
        a.merge(&b);
        let rows = a.rows();
        assert_eq!(rows.len(), 3, "seconds without events are rows of zeros");
        assert_eq!(rows[1], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let r = rows[2];
        assert_eq!((r[0], r[2], r[5], r[10]), (2, 2, 3, 2));
        assert!(r[7] >= 990 && r[7] <= 1010, "p50 {}", r[7]);
        assert!(r[8] >= 49_500, "p99 {}", r[8]);
        assert_eq!(a.refused_421(), 3);
        a.at(100_000).sent += 1;
        assert_eq!(a.len(), MAX_SLICES, "bounded");
    }
}
