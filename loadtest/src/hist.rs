//! The latency histograms' shape, shared by the whole run's (`stats.rs`) and each second's
//! (`slices.rs`): microseconds from 1 µs to 1 hour.

use hdrhistogram::Histogram;

/// The largest latency a histogram holds, µs (1 hour); longer ones are clamped to it.
pub const HIST_MAX_US: u64 = 3_600_000_000;

/// An empty histogram of 1 µs to [`HIST_MAX_US`] at `sigfig` significant digits (1 to 5).
pub fn histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants hdrhistogram accepts (low >= 1, high >= 2 * low); the
    // fallback only exists to avoid an unwrap.
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig.clamp(1, 5)).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("hdrhistogram rejects sigfig 3"))
    })
}
