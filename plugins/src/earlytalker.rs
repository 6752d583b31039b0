//! # earlytalker — refuse clients that talk before the greeting
//!
//! ## Synopsis
//!
//! ```text
//! earlytalker [wait N] [check-at CONNECT|DATA]... [defer-reject [0|1]] [action deny|denysoft|log]
//!             [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! ## Description
//!
//! A well-behaved SMTP client waits for the server's greeting before it says anything
//! (RFC 5321 §3.1, §4.3.1); spam engines that pipeline a whole conversation blind do not. At
//! `connect` this plugin holds the greeting for `wait` seconds and then looks whether the
//! client has sent anything ([`Cx::client_has_sent`]: it peeks, it consumes nothing). If it
//! has, the connection is refused (`550` and disconnect with the defaults) or marked, as the
//! arguments say. With `check-at DATA` it does the same after `DATA`, before the `354`: a
//! client must wait for the 354 before it sends the message (RFC 5321 §4.1.1.4; RFC 2920 §3.1
//! makes DATA the last command of a pipelined group).
//!
//! **The wait costs no thread.** The hook returns a continuation that sleeps on the worker's
//! timer (`Services::sleep`) and yields the worker to other sessions meanwhile; 1,000 clients
//! waiting for their banner are 1,000 small futures on the workers, not 1,000 blocked threads
//! (qpsmtpd's `select()` held a whole process per waiting client).
//!
//! Immune clients (`shared::is_immune`: a relay client, or a whitelisted host — so `relay` and
//! `whitelist` must come first in `config/plugins` for this to apply) are not delayed at all.
//!
//! With `defer-reject` a client that talked early still gets the greeting; its `MAIL` is refused
//! instead (in the form `reject`/`reject_type` say). Without it, the refusal happens at once.
//!
//! ## Arguments
//!
//! qpsmtpd's arguments come in pairs; `defer-reject` may also stand alone (meaning `1`).
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `wait N` | `1` | seconds to wait (fractions allowed, `0.5`); `0` only peeks. Must be shorter than the server's `plugin_timeout` (30 s by default), which bounds every hook |
//! | `check-at CONNECT\|DATA` | `CONNECT` | when to check; repeat the argument to check at both |
//! | `defer-reject 0\|1` | `0` | `1`: greet the early talker anyway and refuse its `MAIL` |
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection (conn note `Naughty`) for the `naughty` plugin |
//! | `reject_type` | `perm` | `perm`: 550 at connect (554 at DATA, 550 at MAIL); `temp`: 450 (451, 450) |
//! | `action deny\|denysoft\|log` | | qpsmtpd's old argument: `deny` is `reject 1`, `denysoft` is `reject 1 reject_type temp`, `log` is `reject 0`; explicit `reject`/`reject_type` win |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! Differences from qpsmtpd: qpsmtpd's POD says `reject_type` defaults to `temp`, its code says
//! `perm` (and `temp` whenever `defer-reject` is given, by a numeric comparison of strings); here
//! it is `perm`, and `temp` only with `action denysoft`. The `earlytalker_wait` and
//! `karma_history` notes qpsmtpd consults do not exist here (no karma plugin yet). Unknown or
//! odd arguments are errors instead of log lines.
//!
//! ## Config files
//!
//! `plugin_timeout` (the core's) is read to check `wait` against it.
//!
//! ## Hooks
//!
//! `connect` (with `check-at CONNECT`), `data` (with `check-at DATA`), `mail` (with
//! `defer-reject`).
//!
//! ## Notes
//!
//! Writes conn note [`TalkedEarly`] when a client talked early (qpsmtpd's conn note
//! `earlytalker`), and `Naughty` with `reject naughty`. Reads `relay_client`, `WhitelistHost`.
//!
//! ## Standards
//!
//! RFC 5321 §4.3.1 (the client waits for the greeting), §4.1.1.4 and RFC 2920 §3.1 (the
//! client waits for the 354), §4.5.3.2.1 (clients wait 5 minutes for the greeting, so a short
//! `wait` costs a legitimate client nothing).
//!
//! ## Security
//!
//! The check is a heuristic: it only catches clients that send blindly. A `wait` close to a
//! client's greeting timeout loses mail; the default of 1 s is far below any. A client that
//! connects many times only costs a timer each, never a thread.

use std::time::Duration;

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reject,
    RejectType, Step, Transaction,
};

/// Conn note: the client talked before our greeting (or before our 354).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalkedEarly;

/// The server's default `plugin_timeout` in seconds (the core's `DEFAULT_PLUGIN_TIMEOUT`).
const DEFAULT_PLUGIN_TIMEOUT: f64 = 30.0;

const CONNECT_MSG: &str = "Connecting host started transmitting before SMTP greeting";
const DATA_MSG: &str = "Client started transmitting before the DATA reply";

/// The `earlytalker` plugin.
pub struct Earlytalker {
    common: Common,
    wait: Duration,
    at_connect: bool,
    at_data: bool,
    defer: bool,
}

/// Builds `earlytalker` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<Earlytalker, ConfigError> {
    let given = |key: &str| init.args.iter().any(|a| a == key);
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut p = Earlytalker {
        common,
        wait: Duration::from_secs(1),
        at_connect: false,
        at_data: false,
        defer: false,
    };
    let mut action: Option<String> = None;
    let mut wait_secs = 1.0f64;
    let mut it = rest.iter().peekable();
    while let Some(&key) = it.next() {
        if key == "defer-reject" {
            p.defer = match it.peek() {
                Some(&&"0") => {
                    it.next();
                    false
                }
                Some(&&"1") => {
                    it.next();
                    true
                }
                _ => true,
            };
            continue;
        }
        let Some(&value) = it.next() else {
            return Err(init.error(format!("argument '{key}' needs a value")));
        };
        match key {
            "wait" => {
                wait_secs = match value.parse::<f64>() {
                    Ok(w) if w.is_finite() && w >= 0.0 && !value.starts_with('+') => w,
                    _ => {
                        return Err(init.error(format!("wait must be seconds >= 0, not '{value}'")))
                    }
                }
            }
            "check-at" => match value.to_ascii_uppercase().as_str() {
                "CONNECT" => p.at_connect = true,
                "DATA" => p.at_data = true,
                _ => {
                    return Err(
                        init.error(format!("check-at must be CONNECT or DATA, not '{value}'"))
                    )
                }
            },
            "action" => {
                let v = value.to_ascii_lowercase();
                if !matches!(v.as_str(), "deny" | "denysoft" | "log") {
                    return Err(init.error(format!(
                        "action must be deny, denysoft or log, not '{value}'"
                    )));
                }
                action = Some(v);
            }
            _ => return Err(init.unknown(key)),
        }
    }
    if !p.at_connect && !p.at_data {
        p.at_connect = true;
    }
    if let Some(action) = action {
        if !given("reject") {
            p.common.args.reject = if action.starts_with("deny") {
                Reject::Yes
            } else {
                Reject::No
            };
        }
        if !given("reject_type") && action == "denysoft" {
            p.common.args.reject_type = RejectType::Temp;
        }
    }
    let limit = match init.config.first("plugin_timeout")? {
        Some(line) => line
            .text
            .parse::<f64>()
            .map_err(|_| line.error(format!("'{}' is not a number of seconds", line.text)))?,
        None => DEFAULT_PLUGIN_TIMEOUT,
    };
    if wait_secs >= limit {
        return Err(init.error(format!(
            "wait {wait_secs} must be shorter than plugin_timeout ({limit} s), which would end it"
        )));
    }
    p.wait = Duration::from_secs_f64(wait_secs);
    Ok(p)
}

impl Earlytalker {
    /// Waits `wait`, then decides. Ready (no timer, no allocation) when there is nothing to wait.
    fn check<'a>(&'a self, cx: &'a mut Cx, at: &'static str, msg: &'static str) -> Step<'a> {
        if is_immune(cx, None) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        if self.wait.is_zero() {
            return Step::Ready(self.decide(cx, at, msg));
        }
        Step::pending(async move {
            cx.svc.sleep(self.wait).await;
            self.decide(cx, at, msg)
        })
    }

    fn decide(&self, cx: &mut Cx, at: &'static str, msg: &'static str) -> Outcome {
        if !cx.client_has_sent() {
            self.common
                .log(cx, Level::Info, format_args!("pass, not spontaneous"));
            return Outcome::Declined;
        }
        cx.conn.notes.set(TalkedEarly);
        if at == "connect" && self.defer {
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail, remote talked before our greeting; refusing MAIL later"),
            );
            return Outcome::Declined;
        }
        self.common.log(
            cx,
            Level::Info,
            format_args!("fail, remote started talking before our {at} reply"),
        );
        self.common.reject(cx, msg)
    }
}

impl Plugin for Earlytalker {
    fn hooks(&self) -> HookSet {
        let mut set = HookSet::EMPTY;
        if self.at_connect {
            set = set.with(Hook::Connect);
        }
        if self.at_data {
            set = set.with(Hook::Data);
        }
        if self.defer {
            set = set.with(Hook::Mail);
        }
        set
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        self.check(cx, "connect", CONNECT_MSG)
    }

    fn data<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        self.check(cx, "DATA", DATA_MSG)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        if !self.defer || !cx.conn.notes.contains::<TalkedEarly>() {
            return Step::DECLINED;
        }
        Step::Ready(self.common.reject(cx, CONNECT_MSG))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::future::Future;
    use std::pin::Pin;
    use std::rc::Rc;

    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistHost};
    use ringsmtpd_plugin_api::testing::{self, cx, run, FakeServices};
    use ringsmtpd_plugin_api::Services;

    /// Services that record the sleeps asked for (FakeServices' timers fire at once).
    struct Timed {
        inner: Rc<FakeServices>,
        slept: RefCell<Vec<Duration>>,
    }

    impl Services for Timed {
        fn me(&self) -> &str {
            self.inner.me()
        }
        fn log(&self, level: Level, conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
            self.inner.log(level, conn, source, msg)
        }
        fn log_enabled(&self, level: Level) -> bool {
            self.inner.log_enabled(level)
        }
        fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
            self.inner.spawn_blocking(job)
        }
        fn sleep(&self, dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
            self.slept.borrow_mut().push(dur);
            self.inner.sleep(dur)
        }
    }

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<Earlytalker, ConfigError> {
        testing::build(build, &format!("earlytalker {}", args.join(" ")), files)
    }

    fn plugin(args: &[&str]) -> Earlytalker {
        build_with(args, &[]).unwrap()
    }

    /// A context whose client has (or has not) sent early, with sleeps recorded.
    fn client(talked: bool) -> (Cx, Rc<Timed>) {
        let (mut c, fake) = cx("192.0.2.9:5555");
        let timed = Rc::new(Timed {
            inner: fake,
            slept: RefCell::new(Vec::new()),
        });
        c.svc = timed.clone();
        c.input_probe = Some(Rc::new(move || talked));
        (c, timed)
    }

    #[test]
    fn defaults_wait_one_second_at_connect_and_deny() {
        let p = plugin(&[]);
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect]));
        let (mut c, t) = client(true);
        let step = p.connect(&mut c);
        assert!(
            matches!(step, Step::Pending(_)),
            "the wait must be a continuation"
        );
        let o = run(step);
        assert_eq!(o, Outcome::deny(CONNECT_MSG));
        assert_eq!(*t.slept.borrow(), vec![Duration::from_secs(1)]);
        assert!(c.conn.notes.contains::<TalkedEarly>());
    }

    #[test]
    fn patient_client_passes() {
        let p = plugin(&[]);
        let (mut c, t) = client(false);
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert_eq!(t.slept.borrow().len(), 1);
        assert!(!c.conn.notes.contains::<TalkedEarly>());
        // No probe at all (stdio, tests): nothing was sent as far as we can tell.
        let (mut c, _) = cx("192.0.2.9:5555");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    }

    #[test]
    fn wait_argument() {
        let p = plugin(&["wait", "0.25"]);
        let (mut c, t) = client(true);
        run(p.connect(&mut c));
        assert_eq!(*t.slept.borrow(), vec![Duration::from_millis(250)]);
        // wait 0: a Ready answer, no timer.
        let p = plugin(&["wait", "0"]);
        let (mut c, t) = client(true);
        let step = p.connect(&mut c);
        assert!(matches!(step, Step::Ready(Outcome::Deny(_))), "{step:?}");
        assert!(t.slept.borrow().is_empty());
    }

    #[test]
    fn wait_must_fit_the_plugin_timeout() {
        let e = build_with(&["wait", "30"], &[]).err().unwrap();
        assert!(e.reason.contains("plugin_timeout"), "{e}");
        assert!(build_with(&["wait", "29"], &[]).is_ok());
        assert!(build_with(&["wait", "5"], &[("plugin_timeout", "5\n")]).is_err());
        assert!(build_with(&["wait", "4"], &[("plugin_timeout", "5\n")]).is_ok());
        let e = build_with(&[], &[("plugin_timeout", "soon\n")])
            .err()
            .unwrap();
        assert_eq!((e.file.as_str(), e.line), ("plugin_timeout", 1));
    }

    #[test]
    fn immune_clients_are_not_delayed() {
        let p = plugin(&[]);
        let (mut c, t) = client(true);
        c.conn.relay_client = true;
        assert!(matches!(p.connect(&mut c), Step::Ready(Outcome::Declined)));
        let (mut c, _) = client(true);
        c.conn.notes.set(WhitelistHost("192.0.2.9".into()));
        assert!(matches!(p.connect(&mut c), Step::Ready(Outcome::Declined)));
        assert!(t.slept.borrow().is_empty());
    }

    #[test]
    fn reject_forms() {
        let (mut c, _) = client(true);
        let p = plugin(&["reject_type", "temp"]);
        assert_eq!(run(p.connect(&mut c)), Outcome::deny_soft(CONNECT_MSG));
        let p = plugin(&["reject", "0"]);
        let (mut c, _) = client(true);
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert!(
            c.conn.notes.contains::<TalkedEarly>(),
            "log-only still notes it"
        );
        let p = plugin(&["reject", "naughty"]);
        let (mut c, _) = client(true);
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        let n = c.conn.notes.get::<Naughty>().unwrap();
        assert_eq!(
            (n.plugin.as_str(), n.msg.as_str()),
            ("earlytalker", CONNECT_MSG)
        );
        let p = plugin(&["reject_type", "disconnect"]);
        let (mut c, _) = client(true);
        assert!(matches!(run(p.connect(&mut c)), Outcome::DenyDisconnect(_)));
    }

    #[test]
    fn defer_reject_greets_then_refuses_mail() {
        for args in [
            &["defer-reject"][..],
            &["defer-reject", "1"],
            &["defer-reject", "1", "wait", "2"],
        ] {
            let p = plugin(args);
            assert_eq!(
                p.hooks(),
                HookSet::of(&[Hook::Connect, Hook::Mail]),
                "{args:?}"
            );
            let (mut c, _) = client(true);
            assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
            let mut txn = Transaction::default();
            assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::deny(CONNECT_MSG));
            // A patient client's MAIL passes.
            let (mut c, _) = client(false);
            assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
            assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        }
        let p = plugin(&["defer-reject", "0"]);
        assert!(!p.defer);
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect]));
    }

    #[test]
    fn check_at_data() {
        let p = plugin(&["check-at", "DATA"]);
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Data]));
        let (mut c, t) = client(true);
        let mut txn = Transaction::default();
        assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::deny(DATA_MSG));
        assert_eq!(t.slept.borrow().len(), 1);
        let (mut c, _) = client(false);
        assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::Declined);
        let p = plugin(&["check-at", "connect", "check-at", "data"]);
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect, Hook::Data]));
        // defer-reject does not defer the DATA check (as qpsmtpd).
        let p = plugin(&["check-at", "DATA", "defer-reject", "1"]);
        let (mut c, _) = client(true);
        assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::deny(DATA_MSG));
    }

    #[test]
    fn legacy_action() {
        let p = plugin(&["action", "log"]);
        assert_eq!(p.common.args.reject, Reject::No);
        let p = plugin(&["action", "denysoft"]);
        assert_eq!(
            (p.common.args.reject, p.common.args.reject_type),
            (Reject::Yes, RejectType::Temp)
        );
        let p = plugin(&["action", "deny"]);
        assert_eq!(
            (p.common.args.reject, p.common.args.reject_type),
            (Reject::Yes, RejectType::Perm)
        );
        // Explicit arguments win over action.
        let p = plugin(&[
            "action",
            "log",
            "reject",
            "1",
            "action",
            "denysoft",
            "reject_type",
            "perm",
        ]);
        assert_eq!(
            (p.common.args.reject, p.common.args.reject_type),
            (Reject::Yes, RejectType::Perm)
        );
    }

    #[test]
    fn bad_arguments() {
        for bad in [
            &["wait"][..],
            &["wait", "-1"],
            &["wait", "soon"],
            &["wait", "inf"],
            &["check-at", "HELO"],
            &["action", "maybe"],
            &["bogus", "1"],
            &["reject", "2"],
        ] {
            assert!(build_with(bad, &[]).is_err(), "{bad:?}");
        }
    }
}
