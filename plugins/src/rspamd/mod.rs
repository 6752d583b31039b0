//! # rspamd — scan each message with rspamd
//!
//! ## Synopsis
//!
//! ```text
//! rspamd [host IP] [port N] [socket PATH] [timeout SECONDS] [on_error defer|accept]
//!        [defer_on_error 1|0]
//!        [reject_spam 1|0] [soft_reject 1|0] [greylist 1|0] [rewrite_subject 1|0]
//!        [subject_prefix TEXT] [header_status 1|0] [header_score 1|0] [header_bar 1|0]
//!        [header_report 1|0] [milter_headers 1|0] [dkim 1|0] [smtp_message 1|0]
//!        [check_authenticated 1|0] [check_private_ip 1|0] [pass_all 1|0] [max_scans N]
//!        [loglevel N]
//! rspamd
//! rspamd socket /run/rspamd/normal.sock timeout 20 on_error accept
//! ```
//!
//! ## Description
//!
//! At `data_post`, sends the message to rspamd's normal worker (`POST /checkv2`, HTTP/1.1) with
//! the envelope as request headers: `IP` (the client), `Helo`, `Hostname` (its reverse DNS
//! name, when known), `From` (the MAIL address, empty for `<>`), one `Rcpt` per recipient,
//! `User` (the SMTP AUTH user), `Queue-Id` (the transaction id), and `Pass: all` with
//! `pass_all 1`. The message goes as it will be queued (the header fields added so far, then
//! the message), with a `Content-Length`; a spooled message is streamed from its spool file a
//! chunk at a time, never loaded whole. rspamd's `action` decides:
//!
//! | action | outcome |
//! |---|---|
//! | `reject` | `550 5.7.1` with rspamd's `messages.smtp_message` (cleaned; `smtp_message 0`: ours); with `reject_spam 0`, `X-Spam: Yes` and accepted |
//! | `soft reject` | `451 4.7.1 Try again later` (`soft_reject 0`: accepted as `add header`) |
//! | `greylist` | `451 4.7.1 Greylisted, try again later` (`greylist 0`: accepted) |
//! | `rewrite subject` | the Subject replaced by rspamd's `subject` (cleaned), or by `subject_prefix` and the old Subject when rspamd sent none; `X-Spam: Yes`; accepted (`rewrite_subject 0`: as `add header`) |
//! | `add header` | `X-Spam: Yes`, accepted |
//! | `no action` | accepted |
//!
//! Every scanned message then gets, as configured: `X-Spam-Status: Yes|No, score=S
//! required=R action=A`, `X-Rspamd-Score`, `X-Rspamd-Bar` (one `+` per point above 0, `-` per
//! point below, `/` for 0; at most 50), `X-Rspamd-Report` (the symbols with their scores,
//! highest first, folded), and the header fields of rspamd's `milter` block:
//! `milter.add_headers` added, `milter.remove_headers` removed (all fields of that name for 0,
//! the n-th for n > 0, the n-th from the end for n < 0). With `dkim 1`, the `DKIM-Signature`
//! fields rspamd's DKIM signing made (`dkim-signature`) are added.
//!
//! When rspamd cannot be reached, times out, answers something other than `200`, or answers
//! with JSON that does not parse, the error policy decides: `on_error defer` (the default)
//! answers `451 4.7.1` so the client tries again (an unscanned message is never accepted);
//! `on_error accept` accepts it with `X-Rspamd-Unscanned: not scanned, rspamd error`. Either
//! way one log line at `error` says why and how long it took, e.g. `error, deferred (25.001s):
//! no answer from 127.0.0.1:11333 within the timeout (25s)`.
//!
//! Every scan logs one line with rspamd's action, its score and the time spent, e.g.
//! `add header: score 7.20/15.00 (0.042s)`.
//!
//! Messages from relay clients and authenticated clients are not scanned unless
//! `check_authenticated 1`; clients at private, loopback and link-local addresses are not
//! scanned unless `check_private_ip 1` (Haraka's defaults).
//!
//! Haraka's `rspamd.ini` in this plugin's words: `host`/`port` and `unix_socket` are `host`,
//! `port` and `socket`; `timeout`; `reject.spam` is `reject_spam`; `soft_reject.enabled` is
//! `soft_reject`; `rewrite_subject.enabled` is `rewrite_subject`; `subject` is
//! `subject_prefix` (one word: a `config/plugins` argument has no blanks); `header.bar`,
//! `header.report`, `header.score` are `header_bar`, `header_report`, `header_score` (the
//! header names are fixed); `spambar` is always `+`/`-`/`/`; `check.authenticated` and
//! `check.private_ip` are `check_authenticated` and `check_private_ip`; `dkim.enabled` is
//! `dkim`; `smtp_message.enabled` is `smtp_message`; `defer.error` and `defer.timeout` are
//! `on_error` (defer by default here: operators asked Haraka for that).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `host IP` | `127.0.0.1` | rspamd's address (an IP address: no DNS lookup on the way) |
//! | `port N` | `11333` | the normal worker's port |
//! | `socket PATH` | | a unix socket instead of host and port |
//! | `timeout SECONDS` | `25` | for the whole scan, waiting for a slot included; keep it below `plugin_timeout` (30 by default) |
//! | `on_error defer\|accept` | `defer` | the error policy, above; `defer_on_error 1\|0`, as the other scanners spell it, does the same |
//! | `reject_spam`, `soft_reject`, `greylist`, `rewrite_subject` | `1` | act on that action |
//! | `subject_prefix TEXT` | `***SPAM***` | for a `rewrite subject` without rspamd's `subject` |
//! | `header_status`, `header_score`, `header_bar`, `header_report` | `1` | add that header |
//! | `milter_headers` | `1` | apply rspamd's `milter.add_headers`/`remove_headers` |
//! | `dkim` | `0` | add rspamd's DKIM signatures |
//! | `smtp_message` | `1` | use rspamd's reply text for `reject` |
//! | `check_authenticated`, `check_private_ip` | `0` | scan those clients too |
//! | `pass_all` | `0` | send `Pass: all` (rspamd runs every rule, no early exit) |
//! | `max_scans N` | `16` | scans in flight per worker thread; the next sessions wait their turn in a queue (first come, first served), within `timeout` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! Sets the transaction note [`shared::SpamVerdict`](ringsmtpd_plugin_api::shared::SpamVerdict)
//! (shared with `spamassassin`): score, the `reject` score as threshold, spam or not (the
//! actions `add header`, `rewrite subject`, `soft reject`, `reject`) and the action, for
//! later plugins (karma).
//!
//! The connection, the deadline, the slots per worker, the message in chunks and the error
//! policy are those of the other scanner clients (`spamassassin`, `virus/clamdscan`:
//! `plugins/src/helpers/scanner.rs`); this plugin adds the HTTP exchange and the JSON answer.
//!
//! Not done yet: connections are not pooled (one connection per scan, `Connection: close`),
//! and there are no metrics of its own (the core's per-plugin outcome counts and latency
//! histogram cover `data_post`; the log line gives the time spent). Removing header fields
//! and rewriting the Subject go through the plugin API's header edits
//! (`ringsmtpd_plugin_api::header_edit`): `remove_headers` counts the fields as rspamd saw
//! them (this server's Received first) and runs before this plugin adds its own; the new
//! Subject replaces the first one where it stands. A spooled message gets a new spool file
//! written on the blocking pool; a header section larger than the core keeps in memory is
//! left alone (logged).
//!
//! ## Standards
//!
//! RFC 9112 (HTTP/1.1 messages: Content-Length, chunked coding), rspamd's protocol
//! (`/checkv2`, its request headers and JSON answer), RFC 5322 (header fields).
//!
//! ## Security
//!
//! rspamd's answer is hostile input: its header section is at most 16 KiB, its body at most
//! 1 MiB, parsed strictly as JSON (unknown fields ignored). Every text from it that reaches a
//! reply or a header is cleaned to printable ASCII (no CR, LF or NUL, so it cannot add a header
//! or a reply line) and bounded; header names from it must be valid field names. The envelope
//! values sent to rspamd have control characters replaced. Log lines escape what they quote.

mod client;
mod reply;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use ringsmtpd_plugin_api::args::{key_values, parse_flag};
use ringsmtpd_plugin_api::header_edit::{Edit, Which};
use ringsmtpd_plugin_api::net::Endpoint;
use ringsmtpd_plugin_api::shared::SpamVerdict;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reply,
    Step, Transaction,
};

use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::{edit_headers, Scanner, ScannerArgs};
use client::exchange;
use reply::{Action, Verdict};

const DEFAULT_PORT: u16 = 11333;
/// rspamd is built for many scans at once: more than the other scanners' default.
const DEFAULT_MAX_SCANS: usize = 16;
/// The field added when the message was accepted unscanned.
const UNSCANNED_HEADER: &str = "X-Rspamd-Unscanned";

/// Builds the plugin from its `config/plugins` line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(Rspamd::new(init)?))
}

pub struct Rspamd {
    common: Common,
    scanner: Scanner,
    reject_spam: bool,
    soft_reject: bool,
    greylist: bool,
    rewrite_subject: bool,
    subject_prefix: String,
    header_status: bool,
    header_score: bool,
    header_bar: bool,
    header_report: bool,
    milter_headers: bool,
    dkim: bool,
    smtp_message: bool,
    check_authenticated: bool,
    check_private_ip: bool,
    pass_all: bool,
}

impl Rspamd {
    pub fn new(init: &PluginInit<'_>) -> Result<Rspamd, ConfigError> {
        let (common, rest) = init.common(CommonArgs::DEFAULT)?;
        let mut args = ScannerArgs {
            max_scans: DEFAULT_MAX_SCANS,
            ..ScannerArgs::default()
        };
        let mut p = Rspamd {
            common,
            scanner: Scanner::new(
                Endpoint::Unix(PathBuf::new()),
                args,
                scan_metrics!("rspamd"),
            ),
            reject_spam: true,
            soft_reject: true,
            greylist: true,
            rewrite_subject: true,
            subject_prefix: "***SPAM***".to_string(),
            header_status: true,
            header_score: true,
            header_bar: true,
            header_report: true,
            milter_headers: true,
            dkim: false,
            smtp_message: true,
            check_authenticated: false,
            check_private_ip: false,
            pass_all: false,
        };
        let (mut host, mut port, mut socket) = (IpAddr::from([127, 0, 0, 1]), DEFAULT_PORT, None);
        for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
            if args.take(key, value).map_err(|e| init.error(e))? {
                continue;
            }
            let flag = || parse_flag(key, value).map_err(|e| init.error(e));
            match key {
                "host" => {
                    host = value.parse().map_err(|_| {
                        init.error(format!("host must be an IP address, not '{value}'"))
                    })?
                }
                "port" => {
                    port = value
                        .parse()
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(|| init.error(format!("bad port '{value}'")))?
                }
                "socket" => socket = Some(PathBuf::from(value)),
                "on_error" => {
                    args.defer_on_error = match value {
                        "defer" => true,
                        "accept" => false,
                        _ => {
                            return Err(init
                                .error(format!("on_error must be defer or accept, not '{value}'")))
                        }
                    }
                }
                "subject_prefix" => p.subject_prefix = reply::clean(value, 100),
                "reject_spam" => p.reject_spam = flag()?,
                "soft_reject" => p.soft_reject = flag()?,
                "greylist" => p.greylist = flag()?,
                "rewrite_subject" => p.rewrite_subject = flag()?,
                "header_status" => p.header_status = flag()?,
                "header_score" => p.header_score = flag()?,
                "header_bar" => p.header_bar = flag()?,
                "header_report" => p.header_report = flag()?,
                "milter_headers" => p.milter_headers = flag()?,
                "dkim" => p.dkim = flag()?,
                "smtp_message" => p.smtp_message = flag()?,
                "check_authenticated" => p.check_authenticated = flag()?,
                "check_private_ip" => p.check_private_ip = flag()?,
                "pass_all" => p.pass_all = flag()?,
                _ => return Err(init.unknown(key)),
            }
        }
        let to = match socket {
            Some(path) => Endpoint::Unix(path),
            None => Endpoint::Tcp(SocketAddr::new(host, port)),
        };
        p.scanner = Scanner::new(to, args, p.scanner.metrics);
        Ok(p)
    }

    /// Why this message is not scanned, if it is not.
    fn skip_reason(&self, cx: &Cx) -> Option<&'static str> {
        if !self.check_authenticated && cx.conn.auth.is_some() {
            return Some("authenticated client");
        }
        if !self.check_authenticated && cx.conn.relay_client {
            return Some("relay client");
        }
        if !self.check_private_ip && is_private(cx.conn.remote.ip()) {
            return Some("private IP");
        }
        None
    }

    /// The request line and header fields, up to the empty line, for a message of `len`
    /// bytes (the added header fields and the message, as they are queued and sent).
    fn request_head(&self, cx: &Cx, txn: &Transaction, len: u64) -> Vec<u8> {
        let mut h = String::with_capacity(512);
        let _ = write!(
            h,
            "POST /checkv2 HTTP/1.1\r\nHost: rspamd\r\nConnection: close\r\nContent-Length: {len}\r\n"
        );
        let mut field = |name: &str, value: &str| {
            h.push_str(name);
            h.push_str(": ");
            h.extend(value.chars().map(|c| if c.is_control() { ' ' } else { c }));
            h.push_str("\r\n");
        };
        field("IP", &cx.conn.remote.ip().to_string());
        if let Some(hello) = &cx.conn.hello {
            field("Helo", &hello.host);
        }
        if let Some(host) = &cx.conn.remote_host {
            field("Hostname", host);
        }
        match txn.sender.is_null() {
            true => field("From", "<>"),
            false => field("From", txn.sender.as_str()),
        }
        for r in &txn.recipients {
            field("Rcpt", r.addr.as_str());
        }
        if let Some(auth) = &cx.conn.auth {
            field("User", &auth.user);
        }
        if !txn.id.is_empty() {
            field("Queue-Id", &txn.id);
        }
        if self.pass_all {
            field("Pass", "all");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    async fn scan(&self, cx: &mut Cx, txn: &mut Transaction) -> Outcome {
        let started = Instant::now();
        let svc = cx.svc.clone();
        let answer = {
            let (svc, txn) = (&*svc, &*txn);
            let head = self.request_head(cx, txn, txn.message_len());
            self.scanner
                .call(svc, move |stream| exchange(svc, stream, head, txn))
                .await
        };
        let spent = started.elapsed();
        let v = match answer.and_then(|body| reply::parse(&body)) {
            Ok(v) => v,
            Err(why) => {
                return self.scanner.args.on_error(
                    &self.common,
                    cx,
                    txn,
                    UNSCANNED_HEADER,
                    &why,
                    spent,
                )
            }
        };
        self.common.log(
            cx,
            Level::Info,
            format_args!(
                "{}: score {:.2}/{:.2} ({:.3}s)",
                v.action.name(),
                v.score,
                v.required,
                spent.as_secs_f64()
            ),
        );
        SpamVerdict {
            scanner: "rspamd",
            score: v.score,
            threshold: v.required,
            is_spam: v.action.is_spam(),
            action: Some(v.action.name()),
        }
        .record(&mut txn.notes);
        if v.action.is_spam() {
            self.scanner.metrics.found();
        }
        self.decide(cx, txn, &v).await
    }

    /// The outcome for rspamd's verdict; headers for an accepted message.
    async fn decide(&self, cx: &Cx, txn: &mut Transaction, v: &Verdict) -> Outcome {
        match v.action {
            Action::Reject if self.reject_spam => {
                let text: Cow<'static, str> = match (&v.smtp_message, self.smtp_message) {
                    (Some(m), true) => Cow::Owned(m.clone()),
                    _ => Cow::Borrowed("Message rejected as spam"),
                };
                return Outcome::Done(Some(Reply::new(550, "5.7.1", text)));
            }
            Action::SoftReject if self.soft_reject => {
                return Outcome::Done(Some(Reply::new(451, "4.7.1", "Try again later")));
            }
            Action::Greylist if self.greylist => {
                return Outcome::Done(Some(Reply::new(
                    451,
                    "4.7.1",
                    "Greylisted, try again later",
                )));
            }
            _ => {}
        }
        let spam = v.action.is_spam();
        // rspamd's removals first: they are meant for the fields the message came with, not
        // for the ones added below.
        self.edit_fields(cx, txn, v).await;
        self.add_headers(txn, v, spam);
        if self.milter_headers {
            for (name, value) in &v.add_headers {
                txn.append_header(name, value);
            }
        }
        Outcome::Declined
    }

    /// rspamd's `milter.remove_headers`, and the new Subject of `rewrite subject`.
    async fn edit_fields(&self, cx: &Cx, txn: &mut Transaction, v: &Verdict) {
        let mut edits = Vec::new();
        if self.milter_headers {
            edits.extend(
                v.remove_headers
                    .iter()
                    .map(|(name, n)| Edit::remove(name, Which::from_signed(*n))),
            );
        }
        if v.action == Action::RewriteSubject && self.rewrite_subject {
            edits.push(Edit::change("Subject", 1, &self.new_subject(txn, v)));
        }
        edit_headers(&self.common, cx, txn, &edits).await;
    }

    /// rspamd's Subject, or `subject_prefix` and the old one.
    fn new_subject(&self, txn: &Transaction, v: &Verdict) -> String {
        if let Some(s) = &v.subject {
            return s.clone();
        }
        let old = ringsmtpd_plugin_api::headers::first(txn.body.header_bytes(), "subject")
            .map(|f| reply::clean(&f.value(), 900))
            .unwrap_or_default();
        format!("{} {old}", self.subject_prefix).trim().to_string()
    }

    fn add_headers(&self, txn: &mut Transaction, v: &Verdict, spam: bool) {
        if self.dkim {
            for sig in &v.dkim_signatures {
                txn.prepend_header("DKIM-Signature", sig);
            }
        }
        if spam {
            txn.append_header("X-Spam", "Yes");
        }
        if self.header_status {
            let status = format!(
                "{}, score={:.2} required={:.2} action={}",
                if spam { "Yes" } else { "No" },
                v.score,
                v.required,
                v.action.name().replace(' ', "_")
            );
            txn.append_header("X-Spam-Status", &status);
        }
        if self.header_score {
            txn.append_header("X-Rspamd-Score", &format!("{:.2}", v.score));
        }
        if self.header_bar {
            txn.append_header("X-Rspamd-Bar", &bar(v.score));
        }
        if self.header_report && !v.symbols.is_empty() {
            let items: Vec<String> = v
                .symbols
                .iter()
                .map(|(name, score)| format!("{name}({score:.2})"))
                .collect();
            let lines: Vec<&str> = items.iter().map(String::as_str).collect();
            let mut field = String::new();
            ringsmtpd_plugin_api::headers::write_folded_field(
                &mut field,
                "X-Rspamd-Report",
                &lines,
            );
            txn.added_headers.push_str(&field);
        }
    }
}

impl Plugin for Rspamd {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if let Some(why) = self.skip_reason(cx) {
            self.common
                .log(cx, Level::Info, format_args!("skip: {why}"));
            return Step::DECLINED;
        }
        Step::pending(self.scan(cx, txn))
    }
}

/// rspamd's score as a bar: `+` per point above 0, `-` per point below, `/` for 0.
fn bar(score: f64) -> String {
    let n = score.abs().min(50.0) as usize;
    match score {
        s if s >= 1.0 => "+".repeat(n),
        s if s <= -1.0 => "-".repeat(n),
        _ => "/".to_string(),
    }
}

/// Private, loopback, link-local and unique-local addresses.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}
