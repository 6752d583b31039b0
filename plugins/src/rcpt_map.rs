//! # rcpt_map — decide the recipients of one domain from a map file
//!
//! ## Synopsis
//!
//! ```text
//! rcpt_map domain NAME file PATH [default CODE[=MSG]] [loglevel N]
//! rcpt_map domain example.org file /etc/ringsmtpd/map_example_org default DENY=No_such_user.
//! ```
//!
//! ## Description
//!
//! For recipients in `domain` (compared without regard to case) only: the recipient's
//! `user@host`, lowercased, is looked up in the map file. A listed address gets its line's
//! return code and message; an address not listed gets the `default`. Recipients in other
//! domains, and the bare `postmaster`, are declined (the next rcpt plugin decides).
//!
//! Return codes: `OK` accepts the recipient (no later rcpt plugin runs); `DECLINED` passes it
//! on; `DENY` (550), `DENYSOFT` (450), `DENY_DISCONNECT` (550 and close),
//! `DENYSOFT_DISCONNECT` (421 and close) refuse it with the message.
//!
//! **The map is re-read when it changes**, without a reload of the server: at a recipient of
//! the domain, at most once every 5 seconds per worker, the file's modification time and size
//! are checked — on the blocking thread pool, never on the worker — and a changed file is read
//! and parsed there too. A changed file with a bad line, or an empty one, is logged
//! (`file:line`) and the old map is kept: a typo in production does not open or close the
//! domain. (qpsmtpd checked the time at every connection, on the connection's process.)
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `domain NAME` | required | the domain this map is for |
//! | `file PATH` | required | the map file. A relative path is taken from the server's working directory (as in qpsmtpd): give an absolute one |
//! | `default CODE[=MSG]` | `DENY=No_such_user.` | for addresses not in the map; `_` in MSG stands for a space (arguments cannot contain spaces) |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect: the map says what to do |
//!
//! ## Config files
//!
//! The map file (not in the config directory; see `file`). One address per line, a return
//! code, and an optional message (the default message is `No such user.`, sent with the
//! enhanced code 5.1.1):
//!
//! ```text
//! # map_example_org
//! me@example.org      OK
//! you@example.org     OK
//! info@example.org    DENY      User not found.
//! sales@example.org   DENYSOFT  Mailbox being moved, try tomorrow
//! ```
//!
//! Codes are qpsmtpd's names, any case. At start (and reload) a missing or empty file, a line
//! without a code, an unknown code, `DONE` (which would leave the client without an answer) or
//! an address outside `domain` stops the server with `PATH:LINE`. Differences from qpsmtpd:
//! entries are compared without regard to case (qpsmtpd lowercased the recipient but not the
//! entries, so an entry with a capital letter never matched); each `rcpt_map:N` instance has
//! its own map (qpsmtpd's instances shared one by accident).
//!
//! ## Hooks
//!
//! `rcpt`.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.3 (550 mailbox unavailable, 450); RFC 3463 X.1.1 (bad destination mailbox).
//!
//! ## Security
//!
//! An `OK` line accepts the recipient outright; the file should be writable only by the
//! administrator. The file is read with the server's privileges.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ringsmtpd_plugin_api::{
    blocking, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Recipient, Step, Transaction,
};

use crate::matchers::{lower_parts, Code, Verdict};

/// How often a worker checks the map file for changes, at most.
const RECHECK: Duration = Duration::from_secs(5);
/// The message of a refusal without one (qpsmtpd's), with RFC 3463's "bad destination mailbox".
const NO_SUCH_USER: &str = "5.1.1 No such user.";

type Map = HashMap<String, Verdict>;

/// What identifies a version of the file: modification time and size.
type Stamp = (Option<SystemTime>, u64);

/// The `rcpt_map` plugin.
pub struct RcptMap {
    common: Common,
    domain: String,
    path: PathBuf,
    default: (Code, String),
    map: RefCell<Map>,
    stamp: Cell<Option<Stamp>>,
    next_check: Cell<Instant>,
    recheck: Duration,
}

/// Builds `rcpt_map` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<RcptMap, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let (mut domain, mut file, mut default) = (None, None, None);
    let mut it = rest.iter();
    while let Some(&key) = it.next() {
        let value = it
            .next()
            .copied()
            .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?;
        match key {
            "domain" => domain = Some(value.to_lowercase()),
            "file" => file = Some(PathBuf::from(value)),
            "default" => {
                let (code, msg) = match value.split_once('=') {
                    Some((c, m)) => (c, Some(m)),
                    None => (value, None),
                };
                let code = Code::parse(code).map_err(|e| init.error(format!("default: {e}")))?;
                let msg = match msg {
                    Some(m) if !m.is_empty() => m.replace('_', " "),
                    _ => NO_SUCH_USER.to_string(),
                };
                default = Some((code, msg));
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let domain = domain.ok_or_else(|| init.error("no domain given (domain NAME)"))?;
    let path = file.ok_or_else(|| init.error("no map file given (file PATH)"))?;
    let (stamp, map) = load(&path, &domain)?;
    Ok(RcptMap {
        common,
        domain,
        path,
        default: default.unwrap_or((Code::Deny, NO_SUCH_USER.to_string())),
        map: RefCell::new(map),
        stamp: Cell::new(Some(stamp)),
        next_check: Cell::new(Instant::now() + RECHECK),
        recheck: RECHECK,
    })
}

/// Reads and parses the map file; an empty map is an error.
fn load(path: &Path, domain: &str) -> Result<(Stamp, Map), ConfigError> {
    let file = path.display().to_string();
    let whole = |reason: String| ConfigError {
        file: file.clone(),
        line: 0,
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read the map: {e}")))?;
    let text =
        std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read the map: {e}")))?;
    let map = parse(&text, &file, domain)?;
    if map.is_empty() {
        return Err(whole("the map has no entries".into()));
    }
    Ok(((meta.modified().ok(), meta.len()), map))
}

fn parse(text: &str, file: &str, domain: &str) -> Result<Map, ConfigError> {
    let mut map = Map::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |reason: String| ConfigError {
            file: file.to_string(),
            line: i as u32 + 1,
            reason,
        };
        let (addr, verdict) = Verdict::parse(line, "ADDRESS").map_err(error)?;
        let addr = addr.to_lowercase();
        match addr.rsplit_once('@') {
            Some((user, host)) if !user.is_empty() && host == domain => {}
            _ => return Err(error(format!("'{addr}' is not an address in {domain}"))),
        }
        map.insert(addr, verdict);
    }
    Ok(map)
}

/// The result of a check for changes, on the blocking pool.
enum Reload {
    Unchanged,
    New(Stamp, Map),
    Failed(Option<Stamp>, ConfigError),
}

fn reload(path: &Path, domain: &str, old: Option<Stamp>) -> Reload {
    let stamp = std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len()));
    if stamp.is_some() && stamp == old {
        return Reload::Unchanged;
    }
    match load(path, domain) {
        Ok((stamp, map)) => Reload::New(stamp, map),
        Err(e) => Reload::Failed(stamp, e),
    }
}

impl RcptMap {
    fn decide(&self, cx: &Cx, to: &str) -> Outcome {
        let map = self.map.borrow();
        let (code, msg, listed) = match map.get(to) {
            Some(v) => (v.code, v.msg.as_deref().unwrap_or(NO_SUCH_USER), "listed"),
            None => (self.default.0, self.default.1.as_str(), "default"),
        };
        self.common
            .log(cx, Level::Info, format_args!("{to}: {code:?} ({listed})"));
        code.outcome(Some(msg))
    }

    async fn refresh(&self, cx: &Cx) {
        let (path, domain, old) = (self.path.clone(), self.domain.clone(), self.stamp.get());
        match blocking(&*cx.svc, move || reload(&path, &domain, old)).await {
            Some(Reload::Unchanged) => {}
            Some(Reload::New(stamp, map)) => {
                self.common.log(
                    cx,
                    Level::Notice,
                    format_args!("re-read {} ({} entries)", self.path.display(), map.len()),
                );
                *self.map.borrow_mut() = map;
                self.stamp.set(Some(stamp));
            }
            Some(Reload::Failed(stamp, e)) => {
                // Logged once per version of the file: the stamp moves on, the map stays.
                self.stamp.set(stamp);
                self.common.log(
                    cx,
                    Level::Error,
                    format_args!("changed map refused, old map kept: {e}"),
                );
            }
            None => self.common.log(
                cx,
                Level::Error,
                format_args!("map re-read job panicked; old map kept"),
            ),
        }
    }
}

impl Plugin for RcptMap {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Rcpt])
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        _txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        let Some((to, host)) = lower_parts(&rcpt.addr) else {
            return Step::DECLINED;
        };
        if host != self.domain {
            return Step::DECLINED;
        }
        let now = Instant::now();
        if now < self.next_check.get() {
            return Step::Ready(self.decide(cx, &to));
        }
        // Set before waiting, so the other sessions of this worker go on with the current map
        // instead of starting checks of their own.
        self.next_check.set(now + self.recheck);
        Step::pending(async move {
            self.refresh(cx).await;
            self.decide(cx, &to)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, rcpt, rcpt_outcome, run, TempDir};

    fn build_with(args: &[&str]) -> Result<RcptMap, ConfigError> {
        testing::build(build, &format!("rcpt_map {}", args.join(" ")), &[])
    }

    /// A map file in a directory of its own, removed on drop.
    struct TempMap {
        _dir: TempDir,
        path: String,
    }

    impl TempMap {
        fn new(tag: &str, text: &str) -> TempMap {
            let _dir = TempDir::new(&format!("rcpt_map-{tag}"));
            let path = _dir.write("map", text);
            TempMap { _dir, path }
        }
        fn path(&self) -> &str {
            &self.path
        }
    }

    const MAP: &str = "# map_example_org\n\
        me@example.org           OK\n\
        You@Example.org          ok\n\
        info@example.org         DENY     User not found.\n\
        sales@example.org        DENYSOFT Mailbox being moved\n\
        old@example.org          DENY\n\
        pass@example.org         DECLINED\n";

    fn check(p: &RcptMap, to: &str) -> Outcome {
        rcpt_outcome(p, to)
    }

    #[test]
    fn lookups_and_default() {
        let m = TempMap::new("lookups", MAP);
        let p = build_with(&["domain", "Example.ORG", "file", m.path()]).unwrap();
        assert_eq!(check(&p, "<me@example.org>"), Outcome::Ok(None));
        assert_eq!(check(&p, "<ME@EXAMPLE.org>"), Outcome::Ok(None));
        assert_eq!(check(&p, "<you@example.org>"), Outcome::Ok(None));
        assert_eq!(
            check(&p, "<info@example.org>"),
            Outcome::Deny(Some("User not found.".into()))
        );
        assert_eq!(
            check(&p, "<sales@example.org>"),
            Outcome::DenySoft(Some("Mailbox being moved".into()))
        );
        assert_eq!(
            check(&p, "<old@example.org>"),
            Outcome::Deny(Some(NO_SUCH_USER.into()))
        );
        assert_eq!(check(&p, "<pass@example.org>"), Outcome::Declined);
        assert_eq!(
            check(&p, "<nobody@example.org>"),
            Outcome::Deny(Some(NO_SUCH_USER.into()))
        );
        // Other domains and the bare postmaster are not this map's business.
        assert_eq!(check(&p, "<nobody@example.com>"), Outcome::Declined);
        assert_eq!(check(&p, "<nobody@sub.example.org>"), Outcome::Declined);
        assert_eq!(check(&p, "<postmaster>"), Outcome::Declined);
    }

    #[test]
    fn default_argument() {
        let m = TempMap::new("default", MAP);
        let p = build_with(&[
            "domain",
            "example.org",
            "file",
            m.path(),
            "default",
            "DENYSOFT=Try_again_later",
        ])
        .unwrap();
        assert_eq!(
            check(&p, "<nobody@example.org>"),
            Outcome::DenySoft(Some("Try again later".into()))
        );
        let p = build_with(&[
            "domain",
            "example.org",
            "file",
            m.path(),
            "default",
            "DECLINED",
        ])
        .unwrap();
        assert_eq!(check(&p, "<nobody@example.org>"), Outcome::Declined);
        let p =
            build_with(&["domain", "example.org", "file", m.path(), "default", "DENY"]).unwrap();
        assert_eq!(
            check(&p, "<nobody@example.org>"),
            Outcome::Deny(Some(NO_SUCH_USER.into()))
        );
        for bad in ["DONE", "MAYBE=x", "=x"] {
            assert!(
                build_with(&["domain", "example.org", "file", m.path(), "default", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn rereads_a_changed_map_off_the_worker() {
        let m = TempMap::new("reread", MAP);
        let mut p = build_with(&["domain", "example.org", "file", m.path()]).unwrap();
        p.recheck = Duration::ZERO;
        p.next_check.set(Instant::now());
        assert_eq!(
            check(&p, "<new@example.org>"),
            Outcome::Deny(Some(NO_SUCH_USER.into()))
        );
        // A new version (different size, so the change is seen even within one mtime tick).
        std::fs::write(m.path(), "new@example.org OK\n").unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        let r = rcpt("<new@example.org>");
        let step = p.rcpt(&mut c, &mut t, &r);
        assert!(
            matches!(step, Step::Pending(_)),
            "the check runs on the blocking pool"
        );
        assert_eq!(run(step), Outcome::Ok(None));
        assert!(svc.logged("re-read"), "{:?}", svc.logs.borrow());
        assert_eq!(
            check(&p, "<me@example.org>"),
            Outcome::Deny(Some(NO_SUCH_USER.into()))
        );
        // A broken version is refused and the map kept.
        std::fs::write(m.path(), "new@example.org OK\nbroken@example.org\n").unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(run(p.rcpt(&mut c, &mut t, &r)), Outcome::Ok(None));
        assert!(svc.logged(":2: "), "{:?}", svc.logs.borrow());
        // An emptied file too.
        std::fs::write(m.path(), "# nothing\n").unwrap();
        assert_eq!(check(&p, "<new@example.org>"), Outcome::Ok(None));
        // And a vanished one.
        std::fs::remove_file(m.path()).unwrap();
        assert_eq!(check(&p, "<new@example.org>"), Outcome::Ok(None));
    }

    #[test]
    fn not_rechecked_within_the_interval() {
        let m = TempMap::new("interval", MAP);
        let p = build_with(&["domain", "example.org", "file", m.path()]).unwrap();
        std::fs::write(m.path(), "nobody@example.org OK\n").unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        let r = rcpt("<nobody@example.org>");
        // Just built: the next check is RECHECK away, so the answer is Ready from the old map.
        assert!(matches!(
            p.rcpt(&mut c, &mut t, &r),
            Step::Ready(Outcome::Deny(_))
        ));
    }

    #[test]
    fn bad_map_lines_name_file_and_line() {
        for (tag, text, line) in [
            ("noc", "me@example.org OK\nyou@example.org\n", 2),
            ("code", "# c\n\nme@example.org MAYBE\n", 3),
            ("done", "me@example.org DONE\n", 1),
            ("dom", "me@example.com OK\n", 1),
            ("user", "@example.org OK\n", 1),
            ("empty", "# nothing here\n", 0),
        ] {
            let m = TempMap::new(tag, text);
            let e = build_with(&["domain", "example.org", "file", m.path()])
                .err()
                .unwrap();
            assert_eq!((e.file.as_str(), e.line), (m.path(), line), "{text:?}: {e}");
        }
    }

    #[test]
    fn arguments() {
        let m = TempMap::new("args", MAP);
        assert!(build_with(&["file", m.path()])
            .err()
            .unwrap()
            .reason
            .contains("domain"));
        assert!(build_with(&["domain", "example.org"])
            .err()
            .unwrap()
            .reason
            .contains("file"));
        assert!(build_with(&["domain", "example.org", "file"]).is_err());
        assert!(build_with(&["domain", "example.org", "file", m.path(), "colour", "red"]).is_err());
        let e = build_with(&["domain", "example.org", "file", "/nonexistent/map"])
            .err()
            .unwrap();
        assert_eq!((e.file.as_str(), e.line), ("/nonexistent/map", 0));
        assert!(build_with(&["domain", "example.org", "file", m.path(), "loglevel", "7"]).is_ok());
    }
}
