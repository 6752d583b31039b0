//! # limit — connection, recipient and message limits per client and sender
//!
//! ## Synopsis
//!
//! ```text
//! limit [concurrency N] [concurrency_ttl S] [rate_conn N/PERIOD] [recipients N]
//!       [message_recipients N] [rate_msg_host N/PERIOD] [rate_msg_sender N/PERIOD]
//!       [rate_rcpt_host N/PERIOD] [rate_rcpt_sender N/PERIOD] [exempt_immune 0|1]
//!       [ipv6_prefix BITS] [loglevel N]
//! ```
//!
//! ## Description
//!
//! Limits in the manner of Haraka's `limit` plugin (qpsmtpd has none), counted in the server's
//! state store (config `state_store`): with the embedded store the counts hold across every
//! worker of the process; with Redis, across every process and host sharing it.
//!
//! - **Connections at once** per client (`concurrency`): one connection more than the limit
//!   gets `421 4.7.0 Too many connections from you, try again later` and is closed.
//! - **Connections per time** per client (`rate_conn`): the same `421 4.7.0` and close.
//! - **Recipients per connection** (`recipients`, every `RCPT` attempt counts, accepted or
//!   not): `450 4.7.1`. **Recipients per message** (`message_recipients`): `452 4.5.3`, and
//!   the client sends the rest in another transaction (RFC 5321 §4.5.3.1.10).
//! - **Messages per time** per client and per sender (`rate_msg_host`, `rate_msg_sender`,
//!   checked at `MAIL`) and **recipients per time** per client and per sender
//!   (`rate_rcpt_host`, `rate_rcpt_sender`, at `RCPT`): `450 4.7.1 Too many messages (or
//!   recipients) from you (or this sender), try again later`.
//!
//! These are the codes Postfix's anvil limits give (`421 4.7.0` for connection counts and
//! rates, `450 4.7.1` for message and recipient rates): temporary, so a real MTA retries
//! later. Every attempt counts, refused ones too, so a client that keeps hammering stays
//! refused; one that waits gets through again once its rate has fallen under the limit.
//!
//! Relay clients and whitelisted hosts and senders (`relay`, `whitelist`,
//! `dns_whitelist_soft`; the authenticated) skip every limit, unless `exempt_immune 0`.
//!
//! ## Arguments
//!
//! A rate is `N/PERIOD`: at most N in any PERIOD, in seconds or with a unit `s`, `m`, `h`,
//! `d` (`50/5m`); a bare `N` is per minute; `0` turns the limit off. Every limit is off
//! until set, and at least one must be.
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `concurrency N` | off | connections open at once per client |
//! | `concurrency_ttl S` | `600` | seconds a connection's count surely lives (60 to 30 days; see Notes) |
//! | `rate_conn N/PERIOD` | off | connections per client per period |
//! | `recipients N` | off | `RCPT` attempts per connection |
//! | `message_recipients N` | off | recipients per message (the core's `max_rcpts` applies to every client; this one spares relay clients) |
//! | `rate_msg_host N/PERIOD` | off | messages (`MAIL` commands) per client per period |
//! | `rate_msg_sender N/PERIOD` | off | messages per envelope sender (lowercased; not the null sender) per period |
//! | `rate_rcpt_host N/PERIOD` | off | recipients per client per period |
//! | `rate_rcpt_sender N/PERIOD` | off | recipients per envelope sender per period |
//! | `exempt_immune 0\|1` | `1` | relay clients and whitelisted hosts and senders skip every limit; `0` limits them too |
//! | `ipv6_prefix BITS` | `64` | an IPv6 client is counted with its /BITS network (one host usually has a whole /64); IPv4 clients one address each |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! `limit`: `key value` lines, the same keys as the arguments (`concurrency 5`,
//! `rate_rcpt_host 100/1h`); arguments on the plugin line win.
//!
//! ## Hooks
//!
//! `connect` (`concurrency`, `rate_conn`), `mail` (`rate_msg_*`), `rcpt` (`recipients`,
//! `message_recipients`, `rate_rcpt_*`), `post-connection` (takes the connection's
//! concurrency count back).
//!
//! List `limit` after `relay` and the whitelist plugins (so their notes exist when it
//! checks) and before `rcpt_ok` and the other plugins that accept recipients: a plugin that
//! answers `OK` at `RCPT` ends the chain before `limit` counts.
//!
//! ## Notes
//!
//! **Windows.** A rate is a sliding-window estimate: the count of the current window (of
//! PERIOD seconds) plus the previous window's count weighted by its part still inside the
//! last PERIOD seconds. A plain fixed window would let a client send twice the limit across
//! a window's edge; the estimate costs one read more in the same round trip. Each hook that
//! checks anything makes one round trip to the store, whatever the number of limits, and
//! shares it with `karma` (connect) and `greylisting` (MAIL or RCPT): the batches are planned
//! (the API's `store::ahead`). A planned count is made before the hook runs, so an event
//! another plugin refused first is still counted in the rates; a connection counted that way
//! is still taken back at `post-connection`.
//!
//! **Connections at once** are counted by store keys per `concurrency_ttl` window: a
//! connection adds one to the key of the window it opened in, and its `post-connection`
//! takes that one back exactly once (a connection note says it was counted; a connection
//! refused before `limit` counted it takes nothing back; one counted by a plan is noted by
//! the plan). The check adds this window's and
//! the previous window's keys. `post-connection` runs at every end of a session: QUIT, a
//! client that vanishes, a timeout, a refusal, and the 421 of a server shutting down. What it
//! cannot cover is a process killed (`kill -9`, a crash), a session still open when the
//! shutdown's `shutdown_timeout` cuts it, and a store that fails at the decrement: such a
//! count leaks, and stops counting when its window is two windows old, so **a leaked count
//! lasts at most 2 × `concurrency_ttl`** (20 minutes by default). The same bound makes a
//! connection open longer than `concurrency_ttl` uncounted after, at the latest,
//! 2 × `concurrency_ttl`, so it should stay well above the sessions you expect to last (the
//! core's `timeout` bounds each command, not a session).
//!
//! **Store down.** Every limit fails open: the check is skipped and the mail goes on, one log
//! line per minute for the whole process (the plugin API's `FailureLog`), never a hang
//! (the store's own timeout, then the plugin's `plugin_timeout`).
//!
//! **Metrics.** `ringsmtpd_plugin_events_total{plugin="limit",event=...}` counts each limit's
//! refusals (`concurrency`, `rate_conn`, `recipients`, `message_recipients`, `rate_msg_host`,
//! `rate_msg_sender`, `rate_rcpt_host`, `rate_rcpt_sender`) and the checks skipped because the
//! store failed (`store_error`).
//!
//! Store keys: `limit` / the limit's name / the client's address (or network) or the sender /
//! the window's number, each part length-prefixed (the plugin API's `store` module).
//!
//! Differences from Haraka's plugin: no `[concurrency_history]`-style limits from karma, no
//! delay before the disconnect (`disconnect_delay`, tarpitting), no per-host override lines
//! (`127=0`: exempt such clients with `relay` or `whitelist`), no `unrecognized_commands` and
//! `errors` limits (`count_unrecognized_commands` and the core's error count do that), no
//! outbound limits.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.5 and §4.5.4.1 (4yz replies are temporary, the client retries),
//! §4.5.3.1.10 (452 for too many recipients), §3.8 (421 and the server closes); RFC 3463 X.7.0
//! and X.7.1 (security or policy status), X.5.3 (too many recipients).
//!
//! ## Security
//!
//! The sender is whatever the client says: it goes into store keys length-prefixed, so no
//! address can end a key early or land on another sender's or limit's counter, and into log
//! lines escaped. A client can spend other senders' allowance by naming them as its sender
//! (the per-sender limits count claims, not proof; pair them with SPF or AUTH). A client that
//! can make the store fail gets past the limits while it fails (fail open, logged).

mod settings;
mod window;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::time::UNIX_EPOCH;

use ringsmtpd_plugin_api::args::{self, key_values};
use ringsmtpd_plugin_api::cidr::Cidr;
use ringsmtpd_plugin_api::metrics::Events;
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::store::{Ahead, Batch, FailureLog, Key, StoreError};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Reply, Step, Transaction,
};

use settings::{Rate, Settings};
use window::Counter;

/// The `limit` plugin.
pub struct Limit {
    common: Common,
    cfg: Settings,
}

/// What the plugin counts for the metrics listener, in the order of [`EVENT_NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Concurrency,
    RateConn,
    Recipients,
    MessageRecipients,
    RateMsgHost,
    RateMsgSender,
    RateRcptHost,
    RateRcptSender,
    StoreError,
}

const EVENT_NAMES: [&str; 9] = [
    "concurrency",
    "rate_conn",
    "recipients",
    "message_recipients",
    "rate_msg_host",
    "rate_msg_sender",
    "rate_rcpt_host",
    "rate_rcpt_sender",
    "store_error",
];

static COUNTS: [AtomicU64; EVENT_NAMES.len()] = [const { AtomicU64::new(0) }; EVENT_NAMES.len()];
static EVENTS: Events = Events::new("limit", &EVENT_NAMES, &COUNTS);

/// Store failures, logged once a minute for the whole process.
static FAILURES: FailureLog = FailureLog::new();

impl Event {
    fn name(self) -> &'static str {
        EVENT_NAMES[self as usize]
    }
}

/// Connection note: this connection is counted in the concurrency key of its window;
/// `post-connection` takes the note and the count back, so once.
struct Counted(Key);

/// Connection note: `RCPT` attempts on this connection.
struct RcptAttempts(u64);

/// Builds `limit` from its config line and the config file `limit`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut cfg = Settings::default();
    args::parse_lines(init, "limit", |text| {
        let (key, value) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        cfg.apply(key, value.trim())
    })?;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        cfg.apply(key, value).map_err(|e| init.error(e))?;
    }
    if !cfg.any() {
        return Err(init.error(
            "no limit is set: give one of concurrency, rate_conn, recipients, \
             message_recipients, rate_msg_host, rate_msg_sender, rate_rcpt_host, rate_rcpt_sender",
        ));
    }
    EVENTS.register();
    Ok(Box::new(Limit { common, cfg }))
}

/// Seconds since the Unix epoch on the store's clock (one reading per hook: see
/// [`Cx::store_now`]).
fn now_secs(cx: &Cx) -> u64 {
    cx.store_now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a store failure skips at connect, MAIL and RCPT.
const NOT_CHECKED: &str = "limits not checked, letting the client through";

/// The refusal of the connection limits (421, then the connection is closed).
const TOO_MANY_CONNECTIONS: &str = "Too many connections from you, try again later";

/// A refusal: the reply, and the connection closed after it for connection limits.
fn refusal(
    code: u16,
    enhanced: &'static str,
    text: impl Into<Cow<'static, str>>,
    close: bool,
) -> Outcome {
    let mut reply = Reply::new(code, enhanced, text);
    reply.disconnect = close;
    Outcome::Done(Some(reply))
}

/// A rate a hook counts: which limit, its setting (`None`: off), and whose count (`None`: not
/// counted, as the null sender for the per-sender limits).
type Wanted<'a> = (Event, Option<Rate>, Option<&'a [u8]>);

/// A rate counter of a hook's batch: which limit, whose count (for the log line), its counter.
type Check = (Event, Rate, String, Counter);

impl Limit {
    /// True if the client (and sender) skip the limits.
    fn exempt(&self, cx: &Cx, txn: Option<&Transaction>) -> bool {
        self.cfg.exempt_immune && is_immune(cx, txn)
    }

    /// The client as counted: its address, or its network for IPv6.
    fn client(&self, cx: &Cx) -> String {
        match cx.conn.remote.ip().to_canonical() {
            ip @ IpAddr::V4(_) => ip.to_string(),
            ip @ IpAddr::V6(_) => Cidr::new(ip, self.cfg.ipv6_prefix).to_string(),
        }
    }

    /// Adds each rate's counter to the batch.
    fn rates(b: &mut Batch, now: u64, rates: &[Wanted<'_>]) -> Result<Vec<Check>, StoreError> {
        let mut checks = Vec::new();
        for &(event, rate, subject) in rates {
            if let (Some(rate), Some(subject)) = (rate, subject) {
                let c = window::count(b, event.name(), subject, rate.period, now)?;
                let of = String::from_utf8_lossy(subject).into_owned();
                checks.push((event, rate, of, c));
            }
        }
        Ok(checks)
    }

    /// The fail policy of every limit: let the client through, logged once per interval;
    /// `what` says what was skipped.
    fn store_failed(&self, cx: &Cx, e: &StoreError, what: &str) -> Outcome {
        EVENTS.add(Event::StoreError as usize);
        if let Some(quiet) = FAILURES.should_log() {
            self.common.log(
                cx,
                Level::Warn,
                format_args!("{e}; {what} ({quiet} more failures since the last line)"),
            );
        }
        Outcome::Declined
    }

    /// Logs and counts a refusal by `event`.
    fn refused(&self, cx: &Cx, event: Event, count: u64, max: u64, of: &str) {
        EVENTS.add(event as usize);
        let what = event.name();
        self.common.log(
            cx,
            Level::Info,
            format_args!("fail: {what} {count} > {max} for {of}"),
        );
    }

    /// The counters of `connect`: the concurrency count, then the connection rate.
    fn connect_batch(
        &self,
        b: &mut Batch,
        client: &str,
        now: u64,
    ) -> Result<(Option<Counter>, Vec<Check>), StoreError> {
        let conc = match self.cfg.concurrency {
            0 => None,
            _ => Some(window::count(
                b,
                Event::Concurrency.name(),
                client.as_bytes(),
                self.cfg.concurrency_ttl,
                now,
            )?),
        };
        let rates = [(Event::RateConn, self.cfg.rate_conn, Some(client.as_bytes()))];
        Ok((conc, Self::rates(b, now, &rates)?))
    }

    async fn connect_check(&self, cx: &mut Cx) -> Outcome {
        if self.exempt(cx, None) {
            return Outcome::Declined;
        }
        let client = self.client(cx);
        let mut b = Batch::new();
        let (conc, rates) = match self.connect_batch(&mut b, &client, now_secs(cx)) {
            Ok(c) => c,
            Err(e) => return self.store_failed(cx, &e, NOT_CHECKED),
        };
        let replies = match cx.store_planned(b).await {
            Ok(r) => r,
            Err(e) => {
                // A plan noted the count (see `store_ahead`): it did not happen.
                cx.conn.notes.take::<Counted>();
                return self.store_failed(cx, &e, NOT_CHECKED);
            }
        };
        if let Some(c) = conc {
            cx.conn.notes.set(Counted(c.key.clone()));
            let open = c.sum(&replies);
            if open > self.cfg.concurrency {
                self.refused(cx, Event::Concurrency, open, self.cfg.concurrency, &client);
                return refusal(421, "4.7.0", TOO_MANY_CONNECTIONS, true);
            }
        }
        for (event, rate, of, c) in rates {
            let n = c.sliding(&replies);
            if n > rate.max {
                self.refused(cx, event, n, rate.max, &of);
                return refusal(421, "4.7.0", TOO_MANY_CONNECTIONS, true);
            }
        }
        Outcome::Declined
    }

    /// True if this recipient is one too many for the connection (`recipients`).
    fn too_many_attempts(&self, attempts: u64) -> bool {
        self.cfg.recipients > 0 && attempts > self.cfg.recipients
    }

    /// True if the message has all the recipients it may have (`message_recipients`).
    fn message_full(&self, accepted: u64) -> bool {
        self.cfg.message_recipients > 0 && accepted >= self.cfg.message_recipients
    }

    async fn rcpt_check(&self, cx: &mut Cx, txn: &mut Transaction) -> Outcome {
        if self.exempt(cx, Some(txn)) {
            return Outcome::Declined;
        }
        let attempts = {
            let n = cx.conn.notes.get_or_insert_with(|| RcptAttempts(0));
            n.0 = n.0.saturating_add(1);
            n.0
        };
        if self.too_many_attempts(attempts) {
            let client = self.client(cx);
            let max = self.cfg.recipients;
            self.refused(cx, Event::Recipients, attempts, max, &client);
            let text = "Too many recipients on this connection, try again later";
            return refusal(450, "4.7.1", text, false);
        }
        let accepted = txn.recipients.len() as u64;
        if self.message_full(accepted) {
            let client = self.client(cx);
            let max = self.cfg.message_recipients;
            self.refused(cx, Event::MessageRecipients, accepted + 1, max, &client);
            return refusal(452, "4.5.3", "Too many recipients", false);
        }
        self.rate_check(cx, txn, Hook::Rcpt).await
    }

    /// The rates of `mail` or `rcpt` in a batch: per client and per sender (the null sender
    /// has no per-sender count: bounces are not one sender).
    fn envelope_batch(
        &self,
        cx: &Cx,
        txn: &Transaction,
        hook: Hook,
    ) -> Result<(Batch, Vec<Check>), StoreError> {
        let (host, sender) = match hook {
            Hook::Mail => (
                (Event::RateMsgHost, self.cfg.rate_msg_host),
                (Event::RateMsgSender, self.cfg.rate_msg_sender),
            ),
            _ => (
                (Event::RateRcptHost, self.cfg.rate_rcpt_host),
                (Event::RateRcptSender, self.cfg.rate_rcpt_sender),
            ),
        };
        let client = self.client(cx);
        let from = (!txn.sender.is_null()).then(|| txn.sender.as_str().to_lowercase());
        let rates = [
            (host.0, host.1, Some(client.as_bytes())),
            (sender.0, sender.1, from.as_deref().map(str::as_bytes)),
        ];
        let mut b = Batch::new();
        let checks = Self::rates(&mut b, now_secs(cx), &rates)?;
        Ok((b, checks))
    }

    /// Counts this `mail` or `rcpt` in each of its rates (one round trip) and refuses at the
    /// first that is over its limit.
    async fn rate_check(&self, cx: &mut Cx, txn: &Transaction, hook: Hook) -> Outcome {
        let (b, checks) = match self.envelope_batch(cx, txn, hook) {
            Ok(c) => c,
            Err(e) => return self.store_failed(cx, &e, NOT_CHECKED),
        };
        if checks.is_empty() {
            return Outcome::Declined;
        }
        let replies = match cx.store_planned(b).await {
            Ok(r) => r,
            Err(e) => return self.store_failed(cx, &e, NOT_CHECKED),
        };
        let what = if hook == Hook::Mail {
            "messages"
        } else {
            "recipients"
        };
        for (event, rate, of, c) in checks {
            let n = c.sliding(&replies);
            if n > rate.max {
                let whom = match event {
                    Event::RateMsgSender | Event::RateRcptSender => "this sender",
                    _ => "you",
                };
                self.refused(cx, event, n, rate.max, &of);
                let text = format!("Too many {what} from {whom}, try again later");
                return refusal(450, "4.7.1", text, false);
            }
        }
        Outcome::Declined
    }

    /// Takes the connection's concurrency count back, once.
    async fn release(&self, cx: &mut Cx, key: Key) -> Outcome {
        let mut b = Batch::new();
        b.incr(key, -1, Some(window::expiry(self.cfg.concurrency_ttl)));
        if let Err(e) = cx.svc.store(b).await {
            let what = "a connection count not given back (it lapses within 2 x concurrency_ttl)";
            self.store_failed(cx, &e, what);
        }
        Outcome::Declined
    }
}

impl Plugin for Limit {
    fn hooks(&self) -> HookSet {
        let mut hooks = vec![];
        if self.cfg.connect_limits() {
            hooks.push(Hook::Connect);
        }
        if self.cfg.concurrency > 0 {
            hooks.push(Hook::PostConnection);
        }
        if self.cfg.mail_limits() {
            hooks.push(Hook::Mail);
        }
        if self.cfg.rcpt_limits() {
            hooks.push(Hook::Rcpt);
        }
        HookSet::of(&hooks)
    }

    fn store_hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Connect, Hook::Mail, Hook::Rcpt])
    }

    /// The batch of `connect`, `mail` or `rcpt`, as its hook will build it. At connect the
    /// concurrency count is noted now, as the plan makes it: `post-connection` gives it back
    /// even when an earlier plugin ends the connection before this hook runs.
    fn store_ahead(&self, cx: &mut Cx, at: &Ahead<'_>) -> Option<Batch> {
        match at.hook {
            Hook::Connect if self.cfg.connect_limits() && !self.exempt(cx, None) => {
                let mut b = Batch::new();
                let client = self.client(cx);
                let (conc, _) = self.connect_batch(&mut b, &client, now_secs(cx)).ok()?;
                if let Some(c) = conc {
                    cx.conn.notes.set(Counted(c.key));
                }
                Some(b)
            }
            Hook::Mail | Hook::Rcpt => {
                let txn = at.txn?;
                let on = match at.hook {
                    Hook::Mail => self.cfg.mail_limits(),
                    _ => self.cfg.rcpt_limits(),
                };
                if !on || self.exempt(cx, Some(txn)) {
                    return None;
                }
                if at.hook == Hook::Rcpt {
                    let attempts = cx.conn.notes.get::<RcptAttempts>().map_or(0, |n| n.0);
                    let accepted = txn.recipients.len() as u64;
                    if self.too_many_attempts(attempts.saturating_add(1))
                        || self.message_full(accepted)
                    {
                        return None;
                    }
                }
                let (b, checks) = self.envelope_batch(cx, txn, at.hook).ok()?;
                (!checks.is_empty()).then_some(b)
            }
            _ => None,
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        if !self.cfg.connect_limits() {
            return Step::DECLINED;
        }
        Step::pending(self.connect_check(cx))
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if !self.cfg.mail_limits() {
            return Step::DECLINED;
        }
        if self.exempt(cx, Some(txn)) {
            return Step::DECLINED;
        }
        Step::pending(self.rate_check(cx, txn, Hook::Mail))
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        _rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !self.cfg.rcpt_limits() {
            return Step::DECLINED;
        }
        Step::pending(self.rcpt_check(cx, txn))
    }

    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        match cx.conn.notes.take::<Counted>() {
            Some(Counted(key)) => Step::pending(self.release(cx, key)),
            None => Step::DECLINED,
        }
    }
}

#[cfg(test)]
mod tests;
