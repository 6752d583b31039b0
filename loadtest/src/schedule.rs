//! Open-loop rates (`--rate`): one rate for the whole run, or a schedule of steps
//! `RATE:SECS,RATE:SECS,...` (an overload run: the capacity, twice it, then half), and when
//! each message is due. Messages are due at even intervals within a step; a backlog a slow
//! server leaves at the end of a step carries over into the next, as it would for real clients.

use std::time::Duration;

/// Steps of (messages per second, seconds); a single `--rate N` is one endless step.
#[derive(Clone, Debug, PartialEq)]
pub struct RateSchedule {
    steps: Vec<(f64, f64)>,
}

/// The most steps a schedule may have.
const MAX_STEPS: usize = 100;

impl RateSchedule {
    /// `N` (one rate, the whole run) or `N:SECS,N:SECS,...`.
    pub fn parse(s: &str) -> Result<RateSchedule, String> {
        let bad = || {
            format!(
                "--rate takes messages per second, or steps RATE:SECS,RATE:SECS,... (not '{s}')"
            )
        };
        if !s.contains(':') {
            let r: f64 = s.parse().map_err(|_| bad())?;
            return RateSchedule::checked(vec![(r, f64::INFINITY)]);
        }
        let mut steps = Vec::new();
        for part in s.split(',') {
            let (r, secs) = part.split_once(':').ok_or_else(bad)?;
            let r: f64 = r.trim().parse().map_err(|_| bad())?;
            let secs: f64 = secs.trim().parse().map_err(|_| bad())?;
            if !(secs > 0.0 && secs <= 600.0) {
                return Err(format!(
                    "--rate: a step lasts above 0 and at most 600 s, not {secs}"
                ));
            }
            steps.push((r, secs));
        }
        RateSchedule::checked(steps)
    }

    fn checked(steps: Vec<(f64, f64)>) -> Result<RateSchedule, String> {
        if steps.is_empty() || steps.len() > MAX_STEPS {
            return Err(format!("--rate: 1 to {MAX_STEPS} steps"));
        }
        if steps.iter().any(|&(r, _)| !(r > 0.0 && r <= 10_000_000.0)) {
            return Err("--rate must be above 0 and at most 10000000".into());
        }
        Ok(RateSchedule { steps })
    }

    /// The rate of a single-rate run; `None` for a schedule of steps.
    pub fn single(&self) -> Option<f64> {
        match self.steps[..] {
            [(r, secs)] if secs.is_infinite() => Some(r),
            _ => None,
        }
    }

    /// The steps, (messages per second, seconds); an endless step has infinite seconds.
    pub fn steps(&self) -> &[(f64, f64)] {
        &self.steps
    }

    /// How long the schedule lasts (`None`: endless).
    pub fn total(&self) -> Option<Duration> {
        let s: f64 = self.steps.iter().map(|&(_, secs)| secs).sum();
        s.is_finite().then(|| Duration::from_secs_f64(s))
    }

    /// When message `n` (0-based) is due, in seconds after the start; `None` once the
    /// schedule has no room for it.
    pub fn due(&self, n: u64) -> Option<f64> {
        let (mut start, mut before) = (0.0, 0u64);
        for &(rate, secs) in &self.steps {
            let here = rate * secs; // messages in this step (infinite for an endless step)
            if ((n - before) as f64) < here {
                return Some(start + (n - before) as f64 / rate);
            }
            start += secs;
            before += here.ceil() as u64;
        }
        None
    }

    /// "500 msg/s" or "500 msg/s for 10 s, 1000 msg/s for 20 s".
    pub fn describe(&self) -> String {
        if let Some(r) = self.single() {
            return format!("{r} msg/s");
        }
        let parts: Vec<String> = self
            .steps
            .iter()
            .map(|(r, s)| format!("{r} msg/s for {s} s"))
            .collect();
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_rate_is_endless_and_even() {
        let r = RateSchedule::parse("4").unwrap();
        assert_eq!(r.single(), Some(4.0));
        assert_eq!(r.total(), None);
        assert_eq!(r.due(0), Some(0.0));
        assert_eq!(r.due(10), Some(2.5));
    }

    #[test]
    fn steps_follow_each_other() {
        let r = RateSchedule::parse("10:1,100:0.5,2:2").unwrap();
        assert_eq!(r.single(), None);
        assert_eq!(r.total(), Some(Duration::from_secs_f64(3.5)));
        assert_eq!(r.due(9), Some(0.9), "the last of the first step's 10");
        assert_eq!(r.due(10), Some(1.0), "the second step starts at 1 s");
        assert_eq!(r.due(59), Some(1.0 + 49.0 / 100.0));
        assert_eq!(r.due(60), Some(1.5), "the third step, at 2/s");
        assert_eq!(r.due(63), Some(3.0));
        assert_eq!(r.due(64), None, "nothing after the schedule");
        assert_eq!(
            r.describe(),
            "10 msg/s for 1 s, 100 msg/s for 0.5 s, 2 msg/s for 2 s"
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for s in [
            "", "0", "-1", "x", "10:", "10:0", "10:601", "10:1,,", "10:1,0:1", ":5",
        ] {
            assert!(RateSchedule::parse(s).is_err(), "{s:?}");
        }
    }
}
