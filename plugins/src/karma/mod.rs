//! # karma — remember naughty and nice clients, and box the naughty ones
//!
//! ## Synopsis
//!
//! ```text
//! karma [negative N] [penalty_days D] [strikes N] [history_days N]
//!       [reject 0|1|connect|naughty|zombie] [reject_type perm|temp|disconnect|temp_disconnect]
//!       [loglevel N]
//! ```
//!
//! ## Description
//!
//! qpsmtpd's karma: every client IP has a history of naughty, nice and total connections.
//! Each connection gets a *score*, lowered by bad signs and raised by good ones (see Notes).
//! When the client disconnects, a score of `-strikes` or less counts as a naughty connection,
//! `strikes` or more as a nice one. After a naughty connection, if the history (nice minus
//! naughty) is `-negative` or lower, the IP goes to the *penalty box* for `penalty_days`;
//! an IP that never was nice and whose history is below -5 gets a day more per naughty
//! connection (qpsmtpd's bonus). While in the box its connections are refused at `connect`:
//!
//! ```text
//! 550 5.7.1 You were naughty. You cannot connect for 0.99 more days.
//! ```
//!
//! (and closed, with the default `reject_type disconnect`). With `reject naughty`, the default
//! as in qpsmtpd, the connection is only marked and the `naughty` plugin refuses it at the
//! step it is told to.
//!
//! Also as qpsmtpd: a client whose history and score are both zero or less may name one
//! recipient per message (the next ones get `452 4.5.3 too many recipients for karma`, which
//! a real MTA retries later; qpsmtpd gave a permanent 550); a connection whose score fell
//! below -4 is refused at `DATA` ("very bad karma"), unless it is already marked naughty.
//! A history above 10 starts each connection at +1.
//!
//! Relay clients, authenticated clients and whitelisted hosts or senders are never judged and
//! never recorded. A connection whose score ends at 0 is not recorded either.
//!
//! The history lives in the server's state store (config `state_store`: the embedded store,
//! or Redis shared by several processes and hosts: the penalty box is then shared too).
//! `ringsmtpd karma` shows, captures and releases entries (qpsmtpd's `karma_tool`).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `negative N` | `1` | how low the history may go before a naughty connection boxes the client |
//! | `penalty_days D` | `1` | days in the penalty box (decimals allowed: `0.5`) |
//! | `strikes N` | `3` | the score at or below `-N` that makes a connection naughty, at or above `N` nice |
//! | `history_days N` | `60` | days an IP's counters are kept after its last connection (ringsmtpd's: the store expires them instead of qpsmtpd's `prune`) |
//! | `reject 0\|1\|connect\|naughty\|zombie` | `naughty` | penalty box and bad karma: `0` log only; `1` or `connect` refuse at once; `naughty` (HEAD qpsmtpd's `zombie`) mark the connection for the `naughty` plugin |
//! | `reject_type` | `disconnect` | the form of a refusal: `perm` 5xx, `temp` 4xx, `disconnect` 5xx and close, `temp_disconnect` 4xx and close |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//! | `db_dir PATH`, `nfslock N` | | accepted and ignored: the history is in the server's store (`state_store`) |
//!
//! The store failing (down, timed out) never refuses a client: karma lets it through unjudged
//! and logs once a minute for the whole process.
//!
//! ## Config files
//!
//! `karma_tlds`: `TLD PENALTY` lines (`info 4`); an envelope sender in such a top-level domain
//! lowers the score by the penalty. Without the file, qpsmtpd's list: `info` and `pw` 4, `tw`
//! and `biz` 3, `cl br fr be jp no se sg` 2. An empty file turns this off.
//!
//! ## Hooks
//!
//! `connect` (read the history, the penalty box), `mail` (`karma_tlds`), `rcpt` (the
//! recipient limit), `data` (very bad karma), `deny` (other plugins' refusals),
//! `reset_transaction` (the message's verdicts), `disconnect` (record the connection).
//!
//! ## Notes
//!
//! Sets the conn note [`shared::Karma`](ringsmtpd_plugin_api::shared::Karma): `history`
//! (qpsmtpd's `karma_history`) and `score` (qpsmtpd's `karma`); other plugins read it
//! (`greylisting` skips a client with a positive history) and may raise or lower the score
//! with `Karma::adjust`, as qpsmtpd's plugins call `adjust_karma`. What karma counts itself,
//! since ringsmtpd's plugins leave their verdicts in notes rather than adjusting karma:
//!
//! | sign | score |
//! |---|---|
//! | another plugin refused something (`deny` hook: a recipient, a sender, the message...) | -1 each |
//! | the connection is marked naughty (conn note `Naughty`) | counts as naughty |
//! | a content scanner (`spamassassin`, `rspamd`) said spam (txn note `SpamVerdict`) | -1 |
//! | a DKIM signature passed (txn note `DkimResults`) | +1 |
//! | the sender's TLD is in `karma_tlds` | minus its penalty |
//! | a history above 10 | +1 |
//!
//! Reads `relay_client`, `WhitelistHost`, `WhitelistSender` (through `is_immune`) and AUTH.
//!
//! Store keys: `karma` / IP / `naughty`, `nice`, `connects` (counters), `penalty` (the end of
//! the box, Unix seconds, expiring then). One round trip at `connect` (read, count the
//! connection), one at `disconnect` for a nice or naughty connection, and one more to box it.
//! The connect batch is planned (the API's `store::ahead`): with `limit` it shares one round
//! trip, and the connection is counted even when a plugin before karma refuses it.
//!
//! Differences from qpsmtpd 0.94: `connects` counts every judged connection (0.94 counted only
//! those with a non-zero score); a naughty connection increments `naughty` (0.94 forgot to);
//! counters expire after `history_days`; the recipient limit defers (452) instead of refusing;
//! `reject 1` and `connect` refuse at `connect` with the box's message.
//!
//! ## Standards
//!
//! RFC 5321 §3.8 and §4.2.3 (closing after a refusal at connect), §4.5.3.1.10 (452 for too
//! many recipients); RFC 3463 X.7.1 (not authorized), X.5.3 (too many recipients).
//!
//! ## Security
//!
//! The key holds the client IP only, as the kernel (or a PROXY header from a trusted
//! balancer) gave it; values read back are parsed strictly, and a damaged one counts as
//! absent. A spoofing client cannot box another IP: TCP needs the handshake. Counting other
//! plugins' refusals lets a client lower its own score only. An attacker who can make the
//! store fail escapes the penalty box while it is down (fail open, as documented).

mod record;
pub mod tool;

pub use record::{Keys, Record};

use std::time::{Duration, UNIX_EPOCH};

use ringsmtpd_plugin_api::args::key_values;
use ringsmtpd_plugin_api::shared::{is_immune, DkimResults, Karma, Naughty, SpamVerdict};
use ringsmtpd_plugin_api::store::{Ahead, Batch, FailureLog, StoreError};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Reject, RejectType, Reply, Step, Transaction,
};

/// Store failures, logged once a minute for the whole process.
static FAILURES: FailureLog = FailureLog::new();

const DAY: u64 = 86_400;

/// The `karma` plugin.
pub struct KarmaPlugin {
    common: Common,
    cfg: Settings,
    /// `karma_tlds`: (`.tld`, penalty).
    tlds: Vec<(String, i64)>,
}

#[derive(Debug, Clone, PartialEq)]
struct Settings {
    negative: i64,
    penalty_days: f64,
    strikes: i64,
    history: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            negative: 1,
            penalty_days: 1.0,
            strikes: 3,
            history: Duration::from_secs(60 * DAY),
        }
    }
}

impl Settings {
    /// Applies one of karma's own `key value` arguments; `None` if `key` is not one.
    fn apply(&mut self, key: &str, value: &str) -> Option<Result<(), String>> {
        let count = |max: i64| match value.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!(
                "{key} must be a number from 1 to {max}, not '{value}'"
            )),
        };
        let result = match key {
            "negative" => count(1000).map(|n| self.negative = n),
            "strikes" => count(1000).map(|n| self.strikes = n),
            "history_days" => {
                count(3650).map(|n| self.history = Duration::from_secs(n.unsigned_abs() * DAY))
            }
            "penalty_days" => match value.parse::<f64>() {
                Ok(d) if d > 0.0 && d <= 3650.0 => {
                    self.penalty_days = d;
                    Ok(())
                }
                _ => Err(format!(
                    "penalty_days must be days above 0 (up to 3650), not '{value}'"
                )),
            },
            _ => return None,
        };
        Some(result)
    }
}

/// qpsmtpd 0.94's built-in spammy TLDs.
const DEFAULT_TLDS: &[(&str, i64)] = &[
    ("info", 4),
    ("pw", 4),
    ("tw", 3),
    ("biz", 3),
    ("cl", 2),
    ("br", 2),
    ("fr", 2),
    ("be", 2),
    ("jp", 2),
    ("no", 2),
    ("se", 2),
    ("sg", 2),
];

/// Builds `karma` from its config line and `karma_tlds`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<KarmaPlugin, ConfigError> {
    // `reject` takes karma's own values (connect, zombie): read it before the common ones.
    let (reject, others) = init.take_arg("reject")?;
    let reject = match reject {
        None | Some("naughty" | "zombie") => Reject::Naughty,
        Some("0") => Reject::No,
        Some("1" | "connect") => Reject::Yes,
        Some(value) => {
            return Err(init.error(format!(
                "reject must be 0, 1, connect, naughty or zombie, not '{value}'"
            )))
        }
    };
    let defaults = CommonArgs {
        reject,
        reject_type: RejectType::Disconnect,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = PluginInit {
        args: &others,
        ..*init
    }
    .common(defaults)?;
    let mut cfg = Settings::default();
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match cfg.apply(key, value) {
            Some(result) => result.map_err(|e| init.error(e))?,
            None if matches!(key, "db_dir" | "nfslock") => {}
            None => return Err(init.unknown(key)),
        }
    }
    let tlds = match init.config.lines("karma_tlds")? {
        None => DEFAULT_TLDS
            .iter()
            .map(|&(tld, n)| (format!(".{tld}"), n))
            .collect(),
        Some(lines) => {
            let mut tlds = Vec::new();
            for line in lines {
                let mut words = line.text.split_whitespace();
                let (Some(tld), Some(n), None) = (words.next(), words.next(), words.next()) else {
                    return Err(line.error("expected 'TLD PENALTY', e.g. 'info 4'"));
                };
                let tld = tld.trim_start_matches('.').to_ascii_lowercase();
                let n = n
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (0..=100).contains(n) && !tld.is_empty())
                    .ok_or_else(|| line.error("expected 'TLD PENALTY', PENALTY from 0 to 100"))?;
                tlds.push((format!(".{tld}"), n));
            }
            tlds
        }
    };
    Ok(KarmaPlugin { common, cfg, tlds })
}

fn unix_now(cx: &Cx) -> u64 {
    cx.svc
        .now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A connection karma judges: not immune, and karma's note set at `connect`.
fn judged(cx: &Cx, txn: Option<&Transaction>) -> bool {
    cx.conn.notes.contains::<Karma>() && judgeable(cx, txn)
}

/// True for a client karma judges once its connect hook has run: not authenticated, not immune.
fn judgeable(cx: &Cx, txn: Option<&Transaction>) -> bool {
    cx.conn.auth.is_none() && !is_immune(cx, txn)
}

fn karma(cx: &Cx) -> Karma {
    cx.conn.notes.get::<Karma>().copied().unwrap_or_default()
}

impl KarmaPlugin {
    /// The batch of `connect` (also its store plan): read the client's record, count the
    /// connection and keep the record for another `history`.
    fn connect_batch(&self, cx: &Cx) -> Result<(Batch, record::Slots), StoreError> {
        let keys = Keys::new(cx.conn.remote.ip())?;
        let keep = self.cfg.history;
        let mut b = Batch::new();
        let slots = Record::read(&mut b, &keys);
        b.incr(keys.connects.clone(), 1, Some(keep));
        b.expire(keys.connects.clone(), keep);
        b.expire(keys.naughty.clone(), keep);
        b.expire(keys.nice.clone(), keep);
        Ok((b, slots))
    }

    async fn connect(&self, cx: &mut Cx) -> Outcome {
        cx.conn.notes.set(Karma::default());
        if !judged(cx, None) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Outcome::Declined;
        }
        let rec = match self.connect_batch(cx) {
            Ok((b, slots)) => match cx.store_planned(b).await {
                Ok(r) => Record::from_replies(&r, slots),
                Err(e) => return self.store_failed(cx, &e),
            },
            Err(e) => return self.store_failed(cx, &e),
        };
        let history = rec.history();
        let score = i64::from(history > 10);
        cx.conn.notes.set(Karma { history, score });
        let summary = format!(
            "{} naughty, {} nice, {} connects",
            rec.naughty,
            rec.nice,
            rec.connects.saturating_add(1)
        );
        let Some(left) = rec.penalty_left(unix_now(cx)) else {
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, no penalty ({summary})"),
            );
            return Outcome::Declined;
        };
        self.common.log(
            cx,
            Level::Info,
            format_args!("fail, in the penalty box ({summary})"),
        );
        let days = (left as f64 / DAY as f64).max(0.01);
        self.common.reject(
            cx,
            format!("You were naughty. You cannot connect for {days:.2} more days."),
        )
    }

    fn mail(&self, cx: &mut Cx, txn: &Transaction) {
        let domain = txn.sender.domain().to_ascii_lowercase();
        for (tld, penalty) in &self.tlds {
            if *penalty > 0 && domain.ends_with(tld.as_str()) {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("penalizing {tld} envelope sender: -{penalty}"),
                );
                Karma::adjust(cx, -penalty);
            }
        }
    }

    /// qpsmtpd's recipient limit for clients with no good karma.
    fn rcpt(&self, cx: &mut Cx, txn: &Transaction) -> Outcome {
        let k = karma(cx);
        if !judged(cx, Some(txn)) || txn.recipients.is_empty() || k.history > 0 || k.score > 0 {
            return Outcome::Declined;
        }
        let text = format!(
            "too many recipients for karma {} (h: {})",
            k.score, k.history
        );
        if self.common.args.reject == Reject::No {
            self.common
                .log(cx, Level::Info, format_args!("fail, log only: {text}"));
            return Outcome::Declined;
        }
        self.common
            .log(cx, Level::Info, format_args!("fail, {text}"));
        Outcome::Done(Some(Reply::new(452, "4.5.3", text)))
    }

    fn data(&self, cx: &mut Cx, txn: &Transaction) -> Outcome {
        let score = karma(cx).score;
        if !judged(cx, Some(txn)) || cx.conn.notes.contains::<Naughty>() || score >= -4 {
            return Outcome::Declined;
        }
        self.common.reject(cx, format!("very bad karma: {score}"))
    }

    /// The message's verdicts, read as the transaction ends.
    fn reset_transaction(&self, cx: &mut Cx, txn: &Transaction) {
        let mut by = 0;
        if txn.notes.get::<SpamVerdict>().is_some_and(|s| s.is_spam) {
            by -= 1;
        }
        if txn
            .notes
            .get::<DkimResults>()
            .is_some_and(|d| d.0.iter().any(|s| s.result == "pass"))
        {
            by += 1;
        }
        if by != 0 {
            self.common
                .log(cx, Level::Debug, format_args!("message verdicts: {by:+}"));
            Karma::adjust(cx, by);
        }
    }

    /// Records the connection as naughty or nice.
    async fn disconnect(&self, cx: &mut Cx) -> Outcome {
        if !judged(cx, None) {
            return Outcome::Declined;
        }
        let mut k = karma(cx);
        let strikes = self.cfg.strikes;
        if cx.conn.notes.contains::<Naughty>() {
            k.score = k.score.min(-strikes);
        }
        if k.score > -strikes && k.score < strikes {
            self.common.log(
                cx,
                Level::Info,
                format_args!("neutral (score {}, history {})", k.score, k.history),
            );
            return Outcome::Declined;
        }
        let keys = match Keys::new(cx.conn.remote.ip()) {
            Ok(keys) => keys,
            Err(e) => return self.store_failed(cx, &e),
        };
        let keep = self.cfg.history;
        let nice = k.score >= strikes;
        let mut b = Batch::new();
        let (counter, other) = if nice {
            (keys.nice.clone(), keys.naughty.clone())
        } else {
            (keys.naughty.clone(), keys.nice.clone())
        };
        let count = b.incr(counter.clone(), 1, Some(keep));
        b.expire(counter, keep);
        let other = b.get(other);
        let r = match cx.svc.store(b).await {
            Ok(r) => r,
            Err(e) => return self.store_failed(cx, &e),
        };
        let other = record::counter(r.value(other));
        if nice {
            self.common.log(
                cx,
                Level::Info,
                format_args!(
                    "positive (score {}, history {})",
                    k.score,
                    r.int(count) - other
                ),
            );
            return Outcome::Declined;
        }
        let history = other.saturating_sub(r.int(count));
        if history > -self.cfg.negative {
            self.common.log(
                cx,
                Level::Info,
                format_args!("negative (score {}, history {history})", k.score),
            );
            return Outcome::Declined;
        }
        let mut days = self.cfg.penalty_days;
        let bonus = other == 0 && history < -5;
        if bonus {
            days += history.unsigned_abs() as f64;
        }
        let now = unix_now(cx);
        let until = now.saturating_add((days * DAY as f64) as u64);
        let ttl = Duration::from_secs(until.saturating_sub(now).max(1));
        let mut b = Batch::new();
        b.set(keys.penalty, until.to_string(), Some(ttl));
        if let Err(e) = cx.svc.store(b).await {
            return self.store_failed(cx, &e);
        }
        self.common.log(
            cx,
            Level::Info,
            format_args!(
                "negative, sent to penalty box for {days} days{} (score {}, history {history})",
                if bonus { ", penalty box bonus" } else { "" },
                k.score
            ),
        );
        Outcome::Declined
    }

    /// Fail open: the client goes on unjudged; logged once per interval.
    fn store_failed(&self, cx: &mut Cx, e: &StoreError) -> Outcome {
        if let Some(quiet) = FAILURES.should_log() {
            self.common.log(
                cx,
                Level::Warn,
                format_args!(
                    "{e}; letting clients through unjudged ({quiet} more failures since the \
                     last line)"
                ),
            );
        }
        Outcome::Declined
    }
}

impl Plugin for KarmaPlugin {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Mail,
            Hook::Rcpt,
            Hook::Data,
            Hook::Deny,
            Hook::ResetTransaction,
            Hook::Disconnect,
        ])
    }

    fn store_hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Connect])
    }

    fn store_ahead(&self, cx: &mut Cx, at: &Ahead<'_>) -> Option<Batch> {
        if at.hook != Hook::Connect || !judgeable(cx, None) {
            return None;
        }
        self.connect_batch(cx).ok().map(|(batch, _)| batch)
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(self.connect(cx))
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if judged(cx, Some(txn)) {
            self.mail(cx, txn);
        }
        Step::DECLINED
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        _rcpt: &'a Recipient,
    ) -> Step<'a> {
        Step::Ready(self.rcpt(cx, txn))
    }

    fn data<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::Ready(self.data(cx, txn))
    }

    fn deny<'a>(
        &'a self,
        cx: &'a mut Cx,
        plugin: &'a str,
        hook: Hook,
        _outcome: &'a Outcome,
    ) -> Step<'a> {
        if plugin != self.common.name {
            self.common.log(
                cx,
                Level::Debug,
                format_args!("-1: {plugin} refused at {}", hook.name()),
            );
            Karma::adjust(cx, -1);
        }
        Step::DECLINED
    }

    fn reset_transaction<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        self.reset_transaction(cx, txn);
        Step::DECLINED
    }

    fn disconnect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(self.disconnect(cx))
    }
}

#[cfg(test)]
mod tests;
