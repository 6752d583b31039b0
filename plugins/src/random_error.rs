//! # random_error — fail a given share of sessions at random (fault injection)
//!
//! **For testing clients and downstream systems**: it refuses good mail on purpose.
//!
//! ## Synopsis
//!
//! ```text
//! random_error [PERCENT] [loglevel N]
//! random_error 5
//! ```
//!
//! ## Description
//!
//! At each of `connect`, `helo`/`ehlo`, `mail`, `rcpt`, `data` and `data_post`, fails with
//! probability `x`, chosen so that a message passing the six steps fails at one of them with
//! probability PERCENT / 100 (qpsmtpd's formula: `(1 - x)^6 = 1 - PERCENT/100`). A failure is
//! `DENYSOFT_DISCONNECT` two times in five and `DENYSOFT` three times in five, with the text
//! `4.3.0 random failure`; the engine turns it into the hook's 4xx (450 at connect, 421 or 450
//! at MAIL/RCPT, 451 at DATA, 452 after the data), closing the connection for the disconnect
//! kind. A well-behaved client retries later.
//!
//! The rate can be changed per connection: at `connect` this plugin writes the connection note
//! `RandomFailPercent` (qpsmtpd's `random_fail_%`) with PERCENT, and every later hook reads
//! it, so a plugin listed after this one may overwrite it (a test harness can make one
//! client's sessions always fail). Values are clamped to 0..=100.
//!
//! Randomness comes from a small generator (xorshift64*) per plugin instance, that is per
//! worker: no lock, no system call per draw. It is seeded from the process's random hash keys
//! and the clock. It is not, and need not be, cryptographic.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `PERCENT` | `1` | the share of messages to fail, a decimal number up to 100. `0` or a negative number: never fail (qpsmtpd took `0` as the default 1) |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject` and `reject_type` are accepted and have no effect |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `connect`, `helo`, `ehlo`, `mail`, `rcpt`, `data`, `data_post`.
//!
//! ## Notes
//!
//! Writes and reads the connection note `RandomFailPercent`.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.5 (4xx means try again), §4.5.4.1 (clients retry); RFC 3463 (X.3.0, mail
//! system status).
//!
//! ## Security
//!
//! Anyone who connects meets the failures; nothing else changes. Never leave it in a
//! production `config/plugins` with a rate you would not accept from a real fault.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use crate::matchers::same_at;

/// The failure rate of `random_error` for this connection, in percent (qpsmtpd conn note
/// `random_fail_%`). Written at `connect`; a later plugin may overwrite it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFailPercent(pub f64);

/// The steps a message passes, for qpsmtpd's per-step probability.
const STEPS: f64 = 6.0;

/// The `random_error` plugin.
pub struct RandomError {
    common: Common,
    percent: f64,
    /// xorshift64* state; never 0.
    state: Cell<u64>,
}

/// Builds `random_error` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init, seed())?))
}

fn build(init: &PluginInit<'_>, seed: u64) -> Result<RandomError, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let percent = match rest.as_slice() {
        [] => 1.0,
        [p] => match p.parse::<f64>() {
            Ok(v) if v.is_finite() && v <= 100.0 => v,
            _ => return Err(init.error(format!("PERCENT must be a number up to 100, not '{p}'"))),
        },
        [_, extra, ..] => return Err(init.unknown(extra)),
    };
    Ok(RandomError {
        common,
        percent,
        state: Cell::new(seed | 1),
    })
}

/// A seed from the process's random hash keys (from the OS), the clock and the thread.
fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    h.write_u64(nanos);
    h.write(format!("{:?}", std::thread::current().id()).as_bytes());
    h.finish()
}

impl RandomError {
    /// A uniform number in [0, 1) (xorshift64*, Vigna 2016).
    fn uniform(&self) -> f64 {
        let mut x = self.state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn maybe_fail(&self, cx: &Cx, hook: Hook) -> Step<'static> {
        let percent = cx
            .conn
            .notes
            .get::<RandomFailPercent>()
            .map_or(self.percent, |p| p.0);
        let p = if percent.is_nan() {
            0.0
        } else {
            percent.clamp(0.0, 100.0) / 100.0
        };
        let pass = (1.0 - p).powf(1.0 / STEPS);
        if self.uniform() < pass {
            return Step::DECLINED;
        }
        let outcome = if self.uniform() * 5.0 < 2.0 {
            Outcome::DenySoftDisconnect(Some("4.3.0 random failure".into()))
        } else {
            Outcome::deny_soft("4.3.0 random failure")
        };
        let name = outcome.name();
        self.common.log(
            cx,
            Level::Info,
            format_args!("{name} at {hook} ({percent}%)"),
        );
        Step::Ready(outcome)
    }
}

impl Plugin for RandomError {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Helo,
            Hook::Ehlo,
            Hook::Mail,
            Hook::Rcpt,
            Hook::Data,
            Hook::DataPost,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        cx.conn.notes.set(RandomFailPercent(self.percent));
        self.maybe_fail(cx, Hook::Connect)
    }
    same_at!(maybe_fail: helo, ehlo, mail, rcpt, data, data_post);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, assert_bad_args, cx, run};
    use ringsmtpd_plugin_api::Transaction;

    fn plugin(args: &[&str]) -> Result<RandomError, ConfigError> {
        let line = format!("random_error {}", args.join(" "));
        testing::build(|init| build(init, 0x1234_5678_9abc_def0), &line, &[])
    }

    /// (failures, of which disconnects) over `n` helo calls.
    fn failures(p: &RandomError, c: &mut Cx, n: usize) -> (usize, usize) {
        let (mut fail, mut disc) = (0, 0);
        for _ in 0..n {
            match run(p.helo(c, "h")) {
                Outcome::Declined => {}
                Outcome::DenySoft(Some(m)) => {
                    assert_eq!(m, "4.3.0 random failure");
                    fail += 1
                }
                Outcome::DenySoftDisconnect(_) => {
                    fail += 1;
                    disc += 1
                }
                other => panic!("{other:?}"),
            }
        }
        (fail, disc)
    }

    #[test]
    fn hundred_percent_always_fails_two_fifths_disconnect() {
        let p = plugin(&["100"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert!(run(p.connect(&mut c)).is_deny());
        let (fail, disc) = failures(&p, &mut c, 10_000);
        assert_eq!(fail, 10_000);
        assert!((3_700..4_300).contains(&disc), "{disc}");
    }

    #[test]
    fn rate_per_step_follows_qpsmtpd_formula() {
        // 50% per message over six steps: 1 - 0.5^(1/6) = 10.9% per step.
        let p = plugin(&["50"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        run(p.connect(&mut c));
        let (fail, _) = failures(&p, &mut c, 50_000);
        assert!((5_000..5_900).contains(&fail), "{fail}");
        // The default, 1%: 0.17% per step.
        let p = plugin(&[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:2");
        run(p.connect(&mut c));
        let (fail, _) = failures(&p, &mut c, 100_000);
        assert!(fail > 0, "{fail}");
        assert!(fail < 600, "{fail}");
    }

    #[test]
    fn zero_and_negative_never_fail() {
        for arg in ["0", "-5"] {
            let p = plugin(&[arg]).unwrap();
            let (mut c, _) = cx("192.0.2.1:1");
            assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
            assert_eq!(failures(&p, &mut c, 10_000), (0, 0));
        }
    }

    #[test]
    fn connection_note_overrides_the_rate() {
        let p = plugin(&["0"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert_eq!(c.conn.notes.get(), Some(&RandomFailPercent(0.0)));
        c.conn.notes.set(RandomFailPercent(100.0));
        let mut txn = Transaction::default();
        assert!(run(p.mail(&mut c, &mut txn)).is_deny());
        assert!(run(p.data(&mut c, &mut txn)).is_deny());
        assert!(run(p.data_post(&mut c, &mut txn)).is_deny());
        assert!(run(p.ehlo(&mut c, "h")).is_deny());
        // Out of range values are clamped.
        c.conn.notes.set(RandomFailPercent(1e9));
        assert!(run(p.data(&mut c, &mut txn)).is_deny());
        c.conn.notes.set(RandomFailPercent(f64::NAN));
        assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::Declined);
    }

    #[test]
    fn generator_is_uniform_enough() {
        let p = plugin(&[]).unwrap();
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let u = p.uniform();
            assert!((0.0..1.0).contains(&u));
            buckets[(u * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (9_500..10_500).contains(b)),
            "{buckets:?}"
        );
        assert_ne!(seed(), 0);
    }

    #[test]
    fn bad_arguments() {
        let bad = [&["x"][..], &["101"], &["1", "2"], &["inf"], &["NaN"]];
        assert_bad_args(new, "random_error", &bad);
        assert_eq!(plugin(&["2.5"]).unwrap().percent, 2.5);
    }
}
