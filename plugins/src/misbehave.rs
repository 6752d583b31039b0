//! # misbehave — deterministic fault injection, for tests and drills
//!
//! **For tests and drills only, never production**: it panics, hangs or refuses on purpose.
//!
//! ## Synopsis
//!
//! ```text
//! misbehave panic HOOK
//! misbehave sleep HOOK SECONDS
//! misbehave deny HOOK
//! misbehave denysoft HOOK
//! ```
//!
//! One fault per line; more faults are more lines (`misbehave:1 sleep rcpt 30`).
//!
//! ## Description
//!
//! Checks that the engine isolates a broken plugin, as qpsmtpd's `random_error` does, but
//! every time instead of at random, so a test can assert the result:
//!
//! | action | what the hook does | what the engine must do |
//! |---|---|---|
//! | `panic` | panics when called | catch it: 4xx for this session only, a log line naming plugin and hook; other sessions on the core go on |
//! | `sleep` | returns `Pending`, sleeps `SECONDS` on the worker's timer, then declines | its `plugin_timeout` fires first: 4xx; the core stays responsive meanwhile |
//! | `deny` | `DENY` with `5.7.0 misbehave: injected deny` | the hook's 5xx |
//! | `denysoft` | `DENYSOFT` with `4.7.0 misbehave: injected denysoft` | the hook's 4xx |
//!
//! ## Arguments
//!
//! | argument | meaning |
//! |---|---|
//! | action | `panic`, `sleep`, `deny` or `denysoft` |
//! | `HOOK` | `connect`, `helo`, `ehlo`, `mail`, `rcpt`, `data`, `data_post` or `queue` |
//! | `SECONDS` | for `sleep`: a decimal number of seconds, more than 0 and at most 86400 |
//! | `loglevel` | qpsmtpd's per-plugin log level (`reject`, `reject_type` accepted, no effect) |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! The one named by `HOOK`; every other hook is left alone.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! None; RFC 5321 §4.2.5 is what the engine's 4xx answers must respect.
//!
//! ## Security
//!
//! Anyone who can connect can trigger the fault. A `panic` on `connect` makes every session
//! fail; `sleep` holds a session open for the plugin timeout.

use std::time::Duration;

use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use crate::matchers::same_at;

/// The hooks a fault can be put in.
const HOOKS: [Hook; 8] = [
    Hook::Connect,
    Hook::Helo,
    Hook::Ehlo,
    Hook::Mail,
    Hook::Rcpt,
    Hook::Data,
    Hook::DataPost,
    Hook::Queue,
];

/// The longest sleep accepted: longer than any sane plugin timeout, short enough to be a typo
/// catch.
const MAX_SLEEP_SECS: f64 = 86_400.0;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Panic,
    Sleep(Duration),
    Deny,
    DenySoft,
}

/// The `misbehave` plugin: one fault at one hook.
pub struct Misbehave {
    common: Common,
    fault: Fault,
    hook: Hook,
}

/// Builds `misbehave` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let (fault, hook) = parse(&rest).map_err(|e| init.error(e))?;
    Ok(Box::new(Misbehave {
        common,
        fault,
        hook,
    }))
}

fn parse(args: &[&str]) -> Result<(Fault, Hook), String> {
    const USAGE: &str = "usage: panic|deny|denysoft HOOK, or sleep HOOK SECONDS";
    let (action, hook, rest) = match args {
        [action, hook, rest @ ..] => (*action, *hook, rest),
        _ => return Err(USAGE.to_string()),
    };
    let hook = Hook::from_name(hook)
        .filter(|h| HOOKS.contains(h))
        .ok_or_else(|| {
            format!(
                "hook '{hook}' is not one of {}",
                HOOKS
                    .iter()
                    .map(|h| h.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
    let fault = match (action, rest) {
        ("panic", []) => Fault::Panic,
        ("deny", []) => Fault::Deny,
        ("denysoft", []) => Fault::DenySoft,
        ("sleep", [secs]) => {
            let s: f64 = secs
                .parse()
                .map_err(|_| format!("'{secs}' is not a number of seconds"))?;
            if !(s > 0.0 && s <= MAX_SLEEP_SECS) {
                return Err(format!("sleep of {secs} s is not in (0, {MAX_SLEEP_SECS}]"));
            }
            Fault::Sleep(Duration::from_secs_f64(s))
        }
        _ => return Err(USAGE.to_string()),
    };
    Ok((fault, hook))
}

impl Misbehave {
    /// The fault, at the hook it was configured for.
    fn act<'a>(&'a self, cx: &'a mut Cx, hook: Hook) -> Step<'a> {
        if hook != self.hook {
            return Step::DECLINED;
        }
        let fault = self.fault;
        self.common.log(
            cx,
            Level::Warn,
            format_args!("injecting {fault:?} at {hook}"),
        );
        match self.fault {
            Fault::Panic => panic!("misbehave: injected panic at {hook}"),
            Fault::Deny => Step::Ready(Outcome::deny("5.7.0 misbehave: injected deny")),
            Fault::DenySoft => {
                Step::Ready(Outcome::deny_soft("4.7.0 misbehave: injected denysoft"))
            }
            Fault::Sleep(dur) => Step::pending(async move {
                cx.svc.sleep(dur).await;
                Outcome::Declined
            }),
        }
    }
}

impl Plugin for Misbehave {
    fn hooks(&self) -> HookSet {
        HookSet::EMPTY.with(self.hook)
    }

    same_at!(act: connect, helo, ehlo, mail, rcpt, data, data_post, queue);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, rcpt, run};
    use ringsmtpd_plugin_api::Transaction;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    fn build(args: &[&str]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("misbehave {}", args.join(" ")), &[])
    }

    #[test]
    fn arguments_parse() {
        assert_eq!(parse(&["panic", "rcpt"]), Ok((Fault::Panic, Hook::Rcpt)));
        assert_eq!(
            parse(&["deny", "data_post"]),
            Ok((Fault::Deny, Hook::DataPost))
        );
        assert_eq!(
            parse(&["denysoft", "connect"]),
            Ok((Fault::DenySoft, Hook::Connect))
        );
        assert_eq!(
            parse(&["sleep", "queue", "1.5"]),
            Ok((Fault::Sleep(Duration::from_millis(1500)), Hook::Queue))
        );
        for bad in [
            &[][..],
            &["panic"],
            &["panic", "vrfy"],
            &["panic", "nope"],
            &["panic", "rcpt", "3"],
            &["sleep", "rcpt"],
            &["sleep", "rcpt", "0"],
            &["sleep", "rcpt", "-1"],
            &["sleep", "rcpt", "NaN"],
            &["sleep", "rcpt", "1e9"],
            &["explode", "rcpt"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(build(&["deny", "mail", "loglevel", "3"]).is_ok());
        let e = build(&["panic", "nope"]).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("plugins:1: misbehave: hook 'nope'"),
            "{e}"
        );
    }

    #[test]
    fn only_the_named_hook() {
        let p = build(&["deny", "rcpt"]).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Rcpt]));
        let (mut c, _) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        let to = rcpt("<a@b.example>");
        assert_eq!(
            run(p.rcpt(&mut c, &mut txn, &to)),
            Outcome::deny("5.7.0 misbehave: injected deny")
        );
        let p = build(&["denysoft", "ehlo"]).unwrap();
        assert!(matches!(run(p.ehlo(&mut c, "h")), Outcome::DenySoft(_)));
    }

    #[test]
    fn panic_inside_the_hook() {
        let p = build(&["panic", "data"]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        let r = catch_unwind(AssertUnwindSafe(|| run(p.data(&mut c, &mut txn))));
        let err = r.err().unwrap();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(msg, "misbehave: injected panic at data");
        assert!(svc.logged("injecting Panic at data"));
        // Other hooks do not panic.
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    }

    #[test]
    fn sleep_is_pending_then_declines() {
        let p = build(&["sleep", "connect", "30"]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let step = p.connect(&mut c);
        assert!(matches!(step, Step::Pending(_)));
        // The fake timer fires at once.
        assert_eq!(run(step), Outcome::Declined);
    }
}
