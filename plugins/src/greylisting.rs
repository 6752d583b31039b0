//! # greylisting — delay mail from unknown senders
//!
//! ## Synopsis
//!
//! ```text
//! greylisting [remote_ip 0|1] [sender 0|1] [recipient 0|1] [per_recipient 0|1] [deny_late 0|1]
//!             [black_timeout S] [grey_timeout S] [white_timeout S] [reject 0|1]
//!             [on_store_error pass|defer] [p0f KEY,VALUE,...] [geoip CC,CC,...] [loglevel N]
//! ```
//!
//! ## Description
//!
//! Greylisting (RFC 6647) as qpsmtpd's plugin does it: the first attempt of an unknown
//! *triplet* (the client IP, and optionally the sender and the recipient) gets a temporary
//! failure. A real MTA retries; spamware that fires and forgets does not. A retry within
//! `black_timeout` of the first attempt is deferred again; a retry after it, and before
//! `grey_timeout`, passes and whitelists the triplet for `white_timeout`, renewed by every
//! delivery. A triplet whose first attempt is older than `grey_timeout` without a retry
//! starts over.
//!
//! The refusal is `451 4.7.1 Greylisted, try again in N seconds` at `MAIL` (or at `RCPT` with
//! `recipient`/`per_recipient`), or `451 4.7.1` at `DATA` with `deny_late`.
//!
//! Relay clients, whitelisted hosts and senders (`relay`, `whitelist`, `dns_whitelist_soft`),
//! clients with a positive karma history (the `karma` plugin, listed before this one) and the
//! networks of `greylist_exclude_files` are never greylisted.
//!
//! The triplets live in the server's state store (config `state_store`: the embedded store,
//! or Redis shared by several processes and hosts), not in a file of the plugin's own.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `remote_ip 0\|1` | `1` | the client IP is part of the triplet |
//! | `sender 0\|1` | `0` | the envelope sender (lowercased) is part of the triplet |
//! | `recipient 0\|1` | `0` | the recipient (lowercased) is part of the triplet; the check runs at `RCPT` |
//! | `per_recipient 0\|1` | `0` | check at `RCPT`, once per recipient (qpsmtpd's per-recipient configs are not supported: the same settings apply to every recipient) |
//! | `deny_late 0\|1` | `0` | defer at `DATA` instead of `MAIL`/`RCPT`, so every recipient is logged |
//! | `black_timeout S` | `3000` (50 min) | seconds a new triplet is deferred |
//! | `grey_timeout S` | `12000` (3 h 20 min) | seconds after its first attempt a triplet may pass by retrying |
//! | `white_timeout S` | `3110400` (36 days) | seconds a passed triplet stays whitelisted after its last delivery |
//! | `reject 0\|1` | `1` | `0`: record and log, never defer (to seed the store) |
//! | `mode denysoft\|testonly\|off` | | qpsmtpd's older form of `reject`: `testonly` is `reject 0`, `off` turns the plugin off |
//! | `on_store_error pass\|defer` | `pass` | when the state store fails (down, timeout): let the mail through, or defer it with `451 4.3.0`; either way logged once a minute for the whole process, not per message |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//! | `db_dir PATH`, `nfslock`, `per_recipient_db`, `upgrade` | | accepted and ignored: the store is the server's (`state_store`) |
//! | `redis HOST:PORT` | | refused: write `redis HOST:PORT` in the core config file `state_store`, so every plugin shares it |
//! | `p0f KEY,VALUE,...` | | greylist only clients whose `ident/p0f` fingerprint matches one of the pairs: `genre,REGEX` (the OS, `Windows 7 or 8`), `detail,REGEX` (the OS flavor), `link,REGEX` (the link type), `distance,N` (more than N hops away), `uptime,N` (up for less than N minutes); regexes are case-insensitive. A client without a fingerprint is not greylisted (qpsmtpd's rule) |
//! | `geoip CC,CC,...` | | never greylist clients `ident/geoip` places in one of these countries (ISO codes, any case) |
//!
//! At least one of `remote_ip`, `sender` and `recipient` must be on.
//!
//! ## Config files
//!
//! `denysoft_greylist`: `key value` lines, the same keys as the arguments; arguments on the
//! plugin line win.
//!
//! `greylist_exclude_files`: names of config files, one per line; each of those lists client
//! addresses or networks (`192.0.2.0/24`, `2001:db8::/32`), one per line, never greylisted
//! (ringsmtpd's reading; qpsmtpd 0.94 has no such file).
//!
//! ## Hooks
//!
//! `mail` (the check, without `recipient`/`per_recipient`), `rcpt` (the check, with them),
//! `data` (the deferred refusal of `deny_late`, and of the null sender at `RCPT`, which
//! qpsmtpd never refuses there so address probes work).
//!
//! ## Notes
//!
//! Reads `relay_client`, `WhitelistHost`, `WhitelistSender` (through `is_immune`), `Karma`
//! (its `history`), `P0f` (written by `ident/p0f`, with `p0f`) and `GeoIp` (written by
//! `ident/geoip`, with `geoip`): those plugins must come before `greylisting` in
//! `config/plugins`. Keeps its deferred refusal in a transaction note of its own.
//!
//! Store keys: `greylisting` / `grey` or `white` / the triplet's parts, length-prefixed (see
//! the plugin API's `store` module). One batch per check, one round trip: a whitelisted
//! triplet's renewal, a new triplet's record and a retry's timestamp are read and written
//! together; only the retry that whitelists a triplet takes a second round trip. The batch is
//! planned (the API's `store::ahead`): with `limit` at the same hook, both share the round
//! trip, and greylisting's batch is applied even when `limit` refuses first (a first attempt
//! is recorded).
//!
//! Differences from qpsmtpd 0.94: the refusal at `MAIL`/`RCPT` is `451 4.7.1` (the code
//! greylisting servers commonly give; qpsmtpd's DENYSOFT gave 450 there), with the seconds left;
//! `deny_late` also moves a refusal at `RCPT` to `DATA`; a triplet not retried within
//! `grey_timeout` starts over (0.94 let such a late retry through without whitelisting it);
//! the renewal of a whitelisted triplet may leave a grey record that expires by itself after
//! `grey_timeout` (the price of one round trip per check).
//!
//! ## Standards
//!
//! RFC 6647 (greylisting); RFC 5321 §4.2.5 and §4.5.4.1 (451 is temporary, the client
//! retries); RFC 3463 X.7.1 (delivery not authorized, for now).
//!
//! ## Security
//!
//! The sender and recipient are whatever the client says: they go into store keys
//! length-prefixed, so no address can end a key early or collide with another triplet, and
//! in log lines escaped. The core refuses paths beyond RFC 5321's 256 octets, so a key always
//! fits the store's 2 KiB; one that did not would be deferred, not let through. With `on_store_error pass` an attacker who can make
//! the store fail gets past greylisting, nothing more; `defer` trades that for refusing all
//! unknown mail while the store is down.

use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use ringsmtpd_plugin_api::args::{key_values, parse_flag};
use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::shared::{is_immune, GeoIp, Karma, P0f};
use ringsmtpd_plugin_api::store::{Ahead, Batch, FailureLog, Key, Slot, StoreError};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Reject, Reply, Step, Transaction,
};

use crate::ident::p0f::P0fMatch;

const NAMESPACE: &str = "greylisting";

/// The `greylisting` plugin.
pub struct Greylisting {
    common: Common,
    cfg: Settings,
    exclude: IpList,
}

/// Store failures, logged once a minute for the whole process.
static FAILURES: FailureLog = FailureLog::new();

#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    remote_ip: bool,
    sender: bool,
    recipient: bool,
    per_recipient: bool,
    deny_late: bool,
    black: Duration,
    grey: Duration,
    white: Duration,
    reject: bool,
    off: bool,
    defer_on_error: bool,
    /// `p0f`: greylist only clients whose fingerprint matches.
    p0f: Option<P0fMatch>,
    /// `geoip`: countries never greylisted, upper case.
    geoip: Vec<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            remote_ip: true,
            sender: false,
            recipient: false,
            per_recipient: false,
            deny_late: false,
            black: Duration::from_secs(50 * 60),
            grey: Duration::from_secs(3 * 3600 + 20 * 60),
            white: Duration::from_secs(36 * 24 * 3600),
            reject: true,
            off: false,
            defer_on_error: false,
            p0f: None,
            geoip: Vec::new(),
        }
    }
}

impl Settings {
    /// Applies one `key value` setting (from the plugin line or `denysoft_greylist`).
    fn apply(&mut self, key: &str, value: &str) -> Result<(), String> {
        let secs = |v: &str| match v.parse::<u64>() {
            Ok(n) if n <= 10 * 365 * 86_400 => Ok(Duration::from_secs(n)),
            _ => Err(format!("{key} must be seconds, not '{v}'")),
        };
        match key {
            "remote_ip" => self.remote_ip = parse_flag(key, value)?,
            "sender" => self.sender = parse_flag(key, value)?,
            "recipient" => self.recipient = parse_flag(key, value)?,
            "per_recipient" => self.per_recipient = parse_flag(key, value)?,
            "deny_late" => self.deny_late = parse_flag(key, value)?,
            "black_timeout" => self.black = secs(value)?,
            "grey_timeout" => self.grey = secs(value)?,
            "white_timeout" => self.white = secs(value)?,
            "reject" => self.reject = parse_flag(key, value)?,
            "mode" => match value {
                "denysoft" => self.reject = true,
                "testonly" => self.reject = false,
                "off" => self.off = true,
                _ => {
                    return Err(format!(
                        "mode must be denysoft, testonly or off, not '{value}'"
                    ))
                }
            },
            "on_store_error" => {
                self.defer_on_error = match value {
                    "pass" => false,
                    "defer" => true,
                    _ => {
                        return Err(format!(
                            "on_store_error must be pass or defer, not '{value}'"
                        ))
                    }
                }
            }
            "db_dir" | "nfslock" | "per_recipient_db" | "upgrade" => {}
            "redis" => {
                return Err(
                    "the store is the server's: write 'redis HOST:PORT' in the config \
                            file state_store instead"
                        .into(),
                )
            }
            "p0f" => self.p0f = Some(P0fMatch::parse(value)?),
            "geoip" => {
                self.geoip = value
                    .split(',')
                    .map(|c| match c.trim() {
                        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
                            Ok(c.to_ascii_uppercase())
                        }
                        _ => Err(format!("geoip takes country codes (DE,AT), not '{value}'")),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown argument '{key}'")),
        }
        Ok(())
    }

    fn at_rcpt(&self) -> bool {
        self.recipient || self.per_recipient
    }
}

/// Builds `greylisting` from its config line and files.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut cfg = Settings::default();
    for line in init.config.lines("denysoft_greylist")?.unwrap_or_default() {
        let (key, value) = line
            .text
            .split_once(char::is_whitespace)
            .unwrap_or((&line.text, ""));
        cfg.apply(key, value.trim()).map_err(|e| line.error(e))?;
    }
    match common.args.reject {
        Reject::Yes if init.args.iter().any(|a| a == "reject") => cfg.reject = true,
        Reject::Yes => {}
        Reject::No => cfg.reject = false,
        Reject::Naughty => return Err(init.error("reject must be 0 or 1")),
    }
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        cfg.apply(key, value).map_err(|e| init.error(e))?;
    }
    if !(cfg.remote_ip || cfg.sender || cfg.recipient) {
        return Err(init.error("turn on one of remote_ip, sender or recipient"));
    }
    if cfg.grey <= cfg.black {
        return Err(init.error("grey_timeout must be longer than black_timeout"));
    }
    let mut exclude = IpList::default();
    for file in init
        .config
        .lines("greylist_exclude_files")?
        .unwrap_or_default()
    {
        let Some(lines) = init.config.lines(&file.text)? else {
            return Err(file.error(format!("config file '{}' is missing", file.text)));
        };
        for l in lines {
            exclude
                .add(&l.text, IpForms::Cidr)
                .map_err(|e| l.error(e))?;
        }
    }
    Ok(Box::new(Greylisting {
        common,
        cfg,
        exclude,
    }))
}

/// A deferral waiting for `DATA` (`deny_late`, or the null sender at `RCPT`).
struct LateDefer(String);

/// A check's batch: the triplet's keys, the time it was built at, and its slots.
struct Lookup {
    grey: Key,
    white: Key,
    now: u64,
    renewed: Slot,
    created: Slot,
    first: Slot,
}

/// What the store said about a triplet.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// Defer; the seconds until a retry can pass.
    Defer(u64),
}

impl Greylisting {
    /// Why `p0f` or `geoip` exempt this client, if they do.
    fn exempt_by_ident(&self, cx: &Cx) -> Option<String> {
        if let Some(m) = &self.cfg.p0f {
            match cx.conn.notes.get::<P0f>() {
                None => return Some("no p0f fingerprint".into()),
                Some(fp) if !m.matches(fp) => {
                    return Some(format!("p0f fingerprint {} does not match", fp.genre()))
                }
                Some(_) => {}
            }
        }
        let country = cx.conn.notes.get::<GeoIp>()?.country.as_deref()?;
        self.cfg
            .geoip
            .iter()
            .any(|c| c == country)
            .then(|| format!("geoip country {country}"))
    }

    /// Why the check is skipped for this client or transaction, and at which level to say so.
    fn skip(&self, cx: &Cx, txn: &Transaction) -> Option<(Level, String)> {
        if self.cfg.off || is_immune(cx, Some(txn)) {
            return Some((Level::Debug, "immune".into()));
        }
        if let Some(k) = cx.conn.notes.get::<Karma>().filter(|k| k.history > 0) {
            return Some((Level::Info, format!("good karma (history {})", k.history)));
        }
        let ip = cx.conn.remote.ip().to_canonical();
        if self.exclude.contains(ip) {
            return Some((Level::Info, format!("{ip} is excluded")));
        }
        self.exempt_by_ident(cx).map(|why| (Level::Info, why))
    }

    /// The check for `rcpt` (at `RCPT`) or the whole transaction (at `MAIL`).
    async fn check(&self, cx: &mut Cx, txn: &mut Transaction, rcpt: Option<&Recipient>) -> Outcome {
        if let Some((level, why)) = self.skip(cx, txn) {
            self.common.log(cx, level, format_args!("skip: {why}"));
            return Outcome::Declined;
        }
        let verdict = match self.lookup_batch(cx, txn, rcpt) {
            Ok((batch, lookup)) => self.lookup(cx, batch, lookup).await,
            Err(e) => Err(e),
        };
        let wait = match verdict {
            Ok(Verdict::Pass) => return Outcome::Declined,
            Ok(Verdict::Defer(wait)) => wait,
            Err(StoreError::KeyTooLong) => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("fail: addresses too long for a key"),
                );
                self.cfg.black.as_secs()
            }
            Err(e) => return self.store_failed(cx, &e),
        };
        if !self.cfg.reject {
            self.common
                .log(cx, Level::Info, format_args!("fail, log only (reject 0)"));
            return Outcome::Declined;
        }
        let text = format!("Greylisted, try again in {wait} seconds");
        if self.cfg.deny_late || (rcpt.is_some() && txn.sender.is_null()) {
            txn.notes.set(LateDefer(text));
            return Outcome::Declined;
        }
        Outcome::Done(Some(Reply::new(451, "4.7.1", text)))
    }

    /// The store keys of the triplet: (grey record, white record).
    fn keys(
        &self,
        ip: IpAddr,
        txn: &Transaction,
        rcpt: Option<&Recipient>,
    ) -> Result<(Key, Key), StoreError> {
        let ip = ip.to_string();
        let sender = txn.sender.as_str().to_lowercase();
        let to = rcpt.map(|r| r.addr.as_str().to_lowercase());
        let mut parts: Vec<&[u8]> = vec![b""];
        if self.cfg.remote_ip {
            parts.push(ip.as_bytes());
        }
        if self.cfg.sender {
            parts.push(sender.as_bytes());
        }
        if let (true, Some(to)) = (self.cfg.recipient, &to) {
            parts.push(to.as_bytes());
        }
        parts[0] = b"grey";
        let grey = Key::new(NAMESPACE, &parts)?;
        parts[0] = b"white";
        let white = Key::new(NAMESPACE, &parts)?;
        Ok((grey, white))
    }

    /// The one batch of a check (also its store plan): renew a white record, or record a
    /// first attempt, or read it.
    fn lookup_batch(
        &self,
        cx: &Cx,
        txn: &Transaction,
        rcpt: Option<&Recipient>,
    ) -> Result<(Batch, Lookup), StoreError> {
        let (grey, white) = self.keys(cx.conn.remote.ip().to_canonical(), txn, rcpt)?;
        let now = cx
            .store_now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut b = Batch::new();
        let renewed = b.expire(white.clone(), self.cfg.white);
        let created = b.set_nx(grey.clone(), now.to_string(), Some(self.cfg.grey));
        let first = b.get(grey.clone());
        let lookup = Lookup {
            grey,
            white,
            now,
            renewed,
            created,
            first,
        };
        Ok((b, lookup))
    }

    /// Sends the check's batch (answered from the hook's plan when there is one) and reads the
    /// verdict; a retry after `black_timeout` costs a second round trip to whitelist it.
    async fn lookup(&self, cx: &mut Cx, b: Batch, l: Lookup) -> Result<Verdict, StoreError> {
        let r = cx.store_planned(b).await?;
        if r.existed(l.renewed) {
            self.common
                .log(cx, Level::Info, format_args!("pass: white"));
            return Ok(Verdict::Pass);
        }
        if r.stored(l.created) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail: initial DENYSOFT, unknown"),
            );
            return Ok(Verdict::Defer(self.cfg.black.as_secs()));
        }
        let now = l.now;
        let since = r
            .value(l.first)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|first| now.saturating_sub(first));
        let black = self.cfg.black.as_secs();
        match since {
            Some(age) if age < black => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("fail: black DENYSOFT, {age} s after the first attempt"),
                );
                Ok(Verdict::Defer(black - age))
            }
            Some(_) => {
                let mut b = Batch::new();
                b.set(l.white, now.to_string(), Some(self.cfg.white));
                b.del(l.grey);
                if let Err(e) = cx.svc.store(b).await {
                    // The retry passes anyway; the next one will be grey again.
                    self.common.log(
                        cx,
                        Level::Warn,
                        format_args!("pass, but whitelisting failed: {e}"),
                    );
                } else {
                    self.common
                        .log(cx, Level::Info, format_args!("pass: updated grey->white"));
                }
                Ok(Verdict::Pass)
            }
            None => {
                // Expired or damaged between our operations: start over.
                let mut b = Batch::new();
                b.set(l.grey, now.to_string(), Some(self.cfg.grey));
                cx.svc.store(b).await?;
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("fail: initial DENYSOFT, record renewed"),
                );
                Ok(Verdict::Defer(black))
            }
        }
    }

    /// The fail policy: pass (default) or defer, logged once per interval.
    fn store_failed(&self, cx: &mut Cx, e: &StoreError) -> Outcome {
        let policy = if self.cfg.defer_on_error {
            "deferring"
        } else {
            "letting mail through"
        };
        if let Some(quiet) = FAILURES.should_log() {
            self.common.log(
                cx,
                Level::Warn,
                format_args!("{e}; {policy} ({quiet} more failures since the last line)"),
            );
        }
        if self.cfg.defer_on_error {
            Outcome::Done(Some(Reply::new(
                451,
                "4.3.0",
                "Temporary failure, try again later",
            )))
        } else {
            Outcome::Declined
        }
    }
}

impl Plugin for Greylisting {
    fn hooks(&self) -> HookSet {
        let check = if self.cfg.at_rcpt() {
            Hook::Rcpt
        } else {
            Hook::Mail
        };
        HookSet::of(&[check, Hook::Data])
    }

    fn store_hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail, Hook::Rcpt])
    }

    fn store_ahead(&self, cx: &mut Cx, at: &Ahead<'_>) -> Option<Batch> {
        let txn = at.txn?;
        let rcpt = match at.hook {
            Hook::Mail if !self.cfg.at_rcpt() => None,
            Hook::Rcpt if self.cfg.at_rcpt() => Some(at.rcpt?),
            _ => return None,
        };
        if self.skip(cx, txn).is_some() {
            return None;
        }
        self.lookup_batch(cx, txn, rcpt)
            .ok()
            .map(|(batch, _)| batch)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.cfg.at_rcpt() {
            return Step::DECLINED;
        }
        Step::pending(self.check(cx, txn, None))
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !self.cfg.at_rcpt() {
            return Step::DECLINED;
        }
        Step::pending(self.check(cx, txn, Some(rcpt)))
    }

    fn data<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        match txn.notes.take::<LateDefer>() {
            Some(LateDefer(text)) => {
                self.common
                    .log(cx, Level::Info, format_args!("fail: deferred at DATA"));
                Step::Ready(Outcome::DenySoft(Some(text.into())))
            }
            None => Step::DECLINED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::WhitelistHost;
    use ringsmtpd_plugin_api::testing::{
        assert_bad_args, build, build_err, rcpt, run, store_client, txn_from, unlisted_overrides,
        FakeServices,
    };
    use std::rc::Rc;

    const MIN: Duration = Duration::from_secs(60);

    fn plugin(line: &str) -> Box<dyn Plugin> {
        build(new, line, &[]).unwrap()
    }

    /// A client at `ip` on new services, or those of an earlier client (the same store and clock).
    fn client(ip: &str, shared: Option<&Rc<FakeServices>>) -> (Cx, Rc<FakeServices>) {
        store_client(&format!("{ip}:4000"), shared)
    }

    fn mail(p: &dyn Plugin, cx: &mut Cx, from: &str) -> Outcome {
        run(p.mail(cx, &mut txn_from(from)))
    }

    fn is_greylisted(o: &Outcome) -> bool {
        matches!(o, Outcome::Done(Some(r)) if r.code == 451
            && r.enhanced.as_deref() == Some("4.7.1")
            && r.lines[0].starts_with("Greylisted, try again in"))
    }

    #[test]
    fn first_attempt_deferred_retry_after_black_passes_then_white() {
        let p = plugin("greylisting black_timeout 300 grey_timeout 3600 white_timeout 86400");
        let (mut c, svc) = client("192.0.2.1", None);
        let first = mail(&*p, &mut c, "<a@example.org>");
        assert!(is_greylisted(&first), "{first:?}");
        assert_eq!(
            first,
            Outcome::Done(Some(Reply::new(
                451,
                "4.7.1",
                "Greylisted, try again in 300 seconds"
            )))
        );
        svc.advance(MIN);
        let early = mail(&*p, &mut c, "<a@example.org>");
        assert_eq!(
            early,
            Outcome::Done(Some(Reply::new(
                451,
                "4.7.1",
                "Greylisted, try again in 240 seconds"
            )))
        );
        // another client is a new triplet
        let (mut other, _) = client("192.0.2.2", Some(&svc));
        assert!(is_greylisted(&mail(&*p, &mut other, "<a@example.org>")));
        let fake = &svc;
        fake.advance(5 * MIN);
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(fake.logged("pass: updated grey->white"));
        // whitelisted: any sender, one round trip, and the whitelist is renewed each time
        for _ in 0..3 {
            fake.advance(Duration::from_secs(80_000));
            let calls = fake.store_calls.get();
            assert_eq!(mail(&*p, &mut c, "<b@example.net>"), Outcome::Declined);
            assert_eq!(fake.store_calls.get(), calls + 1);
        }
        assert!(fake.logged("pass: white"));
        // a whitelisting not renewed within white_timeout lapses
        fake.advance(Duration::from_secs(86_400));
        assert!(is_greylisted(&mail(&*p, &mut c, "<b@example.net>")));
    }

    #[test]
    fn a_retry_after_grey_timeout_starts_over() {
        let p = plugin("greylisting black_timeout 60 grey_timeout 600");
        let (mut c, svc) = client("192.0.2.1", None);
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));
        svc.advance(Duration::from_secs(601));
        let again = mail(&*p, &mut c, "<a@example.org>");
        assert_eq!(
            again,
            Outcome::Done(Some(Reply::new(
                451,
                "4.7.1",
                "Greylisted, try again in 60 seconds"
            )))
        );
        svc.advance(Duration::from_secs(61));
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
    }

    #[test]
    fn the_triplet_holds_what_the_arguments_say() {
        let p = plugin("greylisting sender 1 black_timeout 60");
        let (mut c, svc) = client("192.0.2.1", None);
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));
        svc.advance(2 * MIN);
        // same IP, other sender: new; same sender in another case: the same triplet
        assert!(is_greylisted(&mail(&*p, &mut c, "<b@example.org>")));
        assert_eq!(mail(&*p, &mut c, "<A@Example.ORG>"), Outcome::Declined);

        // with recipient, the check runs per recipient at RCPT
        let p = plugin("greylisting recipient 1 remote_ip 0 black_timeout 60");
        assert!(p.hooks().contains(Hook::Rcpt) && !p.hooks().contains(Hook::Mail));
        let (mut c, svc) = client("192.0.2.1", None);
        let mut txn = txn_from("<a@example.org>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        let to = rcpt("<x@example.test>");
        assert!(is_greylisted(&run(p.rcpt(&mut c, &mut txn, &to))));
        svc.advance(2 * MIN);
        let (mut elsewhere, _) = client("198.51.100.9", Some(&svc));
        // remote_ip 0: the retry from another address is the same triplet
        assert_eq!(
            run(p.rcpt(&mut elsewhere, &mut txn, &to)),
            Outcome::Declined
        );
    }

    #[test]
    fn deny_late_and_the_null_sender_defer_at_data() {
        let p = plugin("greylisting deny_late 1");
        let (mut c, _) = client("192.0.2.1", None);
        let mut txn = txn_from("<a@example.org>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        let at_data = run(p.data(&mut c, &mut txn));
        assert!(
            matches!(&at_data, Outcome::DenySoft(Some(m)) if m.starts_with("Greylisted")),
            "{at_data:?}"
        );
        assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::Declined);

        let p = plugin("greylisting recipient 1");
        let mut bounce = txn_from("<>");
        let to = rcpt("<x@example.test>");
        assert_eq!(run(p.rcpt(&mut c, &mut bounce, &to)), Outcome::Declined);
        assert!(matches!(
            run(p.data(&mut c, &mut bounce)),
            Outcome::DenySoft(_)
        ));
    }

    #[test]
    fn immune_and_excluded_clients_are_skipped() {
        let p = plugin("greylisting");
        let (mut c, svc) = client("192.0.2.1", None);
        c.conn.relay_client = true;
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        c.conn.relay_client = false;
        c.conn.notes.set(WhitelistHost("listed".into()));
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        c.conn.notes = Default::default();
        c.conn.notes.set(Karma {
            history: 1,
            score: 0,
        });
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(svc.logged("skip: good karma (history 1)"));
        assert_eq!(svc.store_calls.get(), 0);
        c.conn.notes.set(Karma {
            history: 0,
            score: 5,
        });
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));

        let files = [
            ("greylist_exclude_files", "greylist_exclude_nets\n"),
            ("greylist_exclude_nets", "198.51.100.0/24\n2001:db8::/32\n"),
        ];
        let p = build(new, "greylisting", &files).unwrap();
        let (mut c, svc) = client("198.51.100.7", None);
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        let (mut v6, _) = client("[2001:db8::1]", None);
        assert_eq!(mail(&*p, &mut v6, "<a@example.org>"), Outcome::Declined);
        assert_eq!(svc.store_calls.get(), 0);
        let (mut other, _) = client("198.51.101.7", None);
        assert!(is_greylisted(&mail(&*p, &mut other, "<a@example.org>")));
        let missing = build_err(new, "greylisting", &[("greylist_exclude_files", "nope\n")]);
        assert!(
            missing.to_string().contains("'nope' is missing"),
            "{missing}"
        );
    }

    #[test]
    fn a_failing_store_passes_by_default_and_logs_once() {
        let p = plugin("greylisting");
        let (mut c, svc) = client("192.0.2.1", None);
        *svc.store_fails.borrow_mut() = Some(StoreError::Unavailable("connection refused".into()));
        for _ in 0..5 {
            assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        }
        assert_eq!(svc.logged_count("connection refused"), 1);
        assert!(svc.logged("letting mail through"));

        let p = plugin("greylisting on_store_error defer");
        *svc.store_fails.borrow_mut() = Some(StoreError::Timeout);
        assert_eq!(
            mail(&*p, &mut c, "<a@example.org>"),
            Outcome::Done(Some(Reply::new(
                451,
                "4.3.0",
                "Temporary failure, try again later"
            )))
        );
    }

    #[test]
    fn reject_0_records_without_deferring() {
        let p = plugin("greylisting reject 0 black_timeout 60");
        let (mut c, svc) = client("192.0.2.1", None);
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(svc.logged("log only"));
        svc.advance(2 * MIN);
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(svc.logged("pass: updated grey->white"));
        // the config file's settings, overridden by the plugin line
        let files = [("denysoft_greylist", "reject 0\nmode testonly\n")];
        let p = build(new, "greylisting reject 1", &files).unwrap();
        let (mut c, _) = client("192.0.2.9", None);
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));
        let p = build(new, "greylisting", &[("denysoft_greylist", "mode off\n")]).unwrap();
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
    }

    /// qpsmtpd's `p0f` argument: only clients whose fingerprint matches are greylisted.
    #[test]
    fn p0f_greylists_only_matching_fingerprints() {
        let p = plugin("greylisting p0f genre,windows,distance,10");
        let fingerprint = |os: &str, distance: u16| P0f {
            os_name: os.into(),
            os_flavor: "7 or 8".into(),
            distance: Some(distance),
            ..P0f::default()
        };
        let (mut c, svc) = client("192.0.2.9", None);
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(svc.logged("skip: no p0f fingerprint"));
        c.conn.notes.set(fingerprint("Linux", 3));
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
        assert!(svc.logged("does not match"));
        c.conn.notes.set(fingerprint("Windows", 3));
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));
        let (mut c, _) = client("192.0.2.10", Some(&svc));
        c.conn.notes.set(fingerprint("Linux", 11));
        assert!(
            is_greylisted(&mail(&*p, &mut c, "<a@example.org>")),
            "distance > 10"
        );
        let p = plugin("greylisting p0f link,dsl,uptime,60");
        let (mut c, _) = client("192.0.2.11", Some(&svc));
        c.conn.notes.set(P0f {
            link: "DSL".into(),
            ..P0f::default()
        });
        assert!(is_greylisted(&mail(&*p, &mut c, "<a@example.org>")));
        let (mut c, _) = client("192.0.2.12", Some(&svc));
        c.conn.notes.set(P0f {
            uptime_min: Some(600),
            ..P0f::default()
        });
        assert_eq!(mail(&*p, &mut c, "<a@example.org>"), Outcome::Declined);
    }

    /// qpsmtpd's `geoip` argument: the listed countries are never greylisted.
    #[test]
    fn geoip_exempts_the_listed_countries() {
        let p = build(
            new,
            "greylisting",
            &[(
                "denysoft_greylist",
                "geoip de,AT
",
            )],
        )
        .unwrap();
        let from = |country: Option<&str>| {
            let (mut c, _) = client("192.0.2.9", None);
            if let Some(cc) = country {
                c.conn.notes.set(GeoIp {
                    country: Some(cc.into()),
                    ..GeoIp::default()
                });
            }
            mail(&*p, &mut c, "<a@example.org>")
        };
        assert_eq!(from(Some("DE")), Outcome::Declined);
        assert_eq!(from(Some("AT")), Outcome::Declined);
        assert!(is_greylisted(&from(Some("US"))));
        assert!(is_greylisted(&from(None)), "no country, greylisted");
    }

    #[test]
    fn arguments() {
        assert_bad_args(
            new,
            "greylisting",
            &[
                &["redis", "127.0.0.1:6379"],
                &["p0f", "genre"],
                &["p0f", "os,windows"],
                &["p0f", "genre,("],
                &["p0f", "distance,far"],
                &["geoip", "USA"],
                &["geoip", "US,,DE"],
                &["remote_ip", "0"],
                &["black_timeout", "x"],
                &["black_timeout", "600", "grey_timeout", "60"],
                &["reject", "naughty"],
                &["mode", "sometimes"],
                &["on_store_error", "shrug"],
                &["colour", "blue"],
                &["sender"],
            ],
        );
        let e = build_err(new, "greylisting redis 127.0.0.1:6379", &[]).to_string();
        assert!(e.contains("state_store"), "{e}");
        let e = build_err(new, "greylisting p0f colour,blue", &[]).to_string();
        assert!(e.contains("unknown key 'colour'"), "{e}");
        assert!(build(
            new,
            "greylisting db_dir /var/lib/qpsmtpd/greylisting nfslock 1",
            &[]
        )
        .is_ok());
        let bad_file = build_err(
            new,
            "greylisting",
            &[("denysoft_greylist", "white_timeout soon\n")],
        );
        assert!(
            bad_file.to_string().starts_with("denysoft_greylist:1"),
            "{bad_file}"
        );
        // each form lists the hooks it acts on (mail or rcpt, and data)
        assert_eq!(unlisted_overrides(&*plugin("greylisting")), [Hook::Rcpt]);
        assert_eq!(
            unlisted_overrides(&*plugin("greylisting per_recipient 1")),
            [Hook::Mail]
        );
    }
}
