//! # spamassassin — score the message with SpamAssassin's spamd
//!
//! ## Synopsis
//!
//! ```text
//! spamassassin [spamd_socket HOST:PORT|/path] [spamd_user NAME] [reject SCORE]
//!              [reject_type perm|temp|disconnect|temp_disconnect] [headers none]
//!              [leave_old_headers drop|rename|keep] [munge_subject_threshold SCORE]
//!              [subject_prefix TEXT] [relayclient skip] [size_limit BYTES]
//!              [timeout SECONDS] [max_scans N] [defer_on_error 0|1] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` the message goes to spamd (SpamAssassin's daemon) with the `HEADERS`
//! command of the SPAMC/1.5 protocol, streamed from memory or from the spool file in 64 KiB
//! pieces, after the header fields this server added (Received: spamd's network tests read
//! it). spamd answers with its verdict (`Spam: True ; 15.2 / 5.0`) and the message's header
//! section as SpamAssassin rewrote it.
//!
//! - The `X-Spam-*` fields of that header section (`X-Spam-Status`, `X-Spam-Flag`,
//!   `X-Spam-Level`, `X-Spam-Checker-Version`, `X-Spam-Report`, whatever the SpamAssassin
//!   configuration adds with `add_header`) are added to the message, unfolded, through the
//!   header API; `X-Spam-Prev-Subject` is not. `headers none` adds none.
//! - Fields of those names (and `X-Spam-User`) that the message already had, another
//!   server's verdict or the sender's forgery, are renamed (`X-Spam-Status` becomes
//!   `X-Old-Spam-Status`, put at the top: `leave_old_headers rename`, qpsmtpd's default),
//!   removed (`drop`) or left (`keep`). With `headers none` they are left, as in qpsmtpd.
//! - With `munge_subject_threshold SCORE`, a message scoring above both that score and
//!   spamd's own threshold gets its Subject replaced by `subject_prefix`, a space and the old
//!   Subject (a Subject is added if it had none); not with `headers none`.
//! - The score, spamd's threshold and its verdict are kept in the transaction note
//!   `SpamVerdict` (qpsmtpd's note `spamassassin`; shared with `rspamd`) for karma.
//! - With `reject SCORE`, a score at or above it is refused: `550 5.7.1 Spam score S exceeds
//!   the threshold T` (the form `reject_type` says: `temp` gives 451 4.7.1, the disconnect
//!   forms close the connection after the reply).
//! - Relay clients and whitelisted hosts or senders are not scanned (qpsmtpd's `is_immune`);
//!   nor is a message over `size_limit` (a log line says so).
//!
//! Every scan logs one line with its result and the time spent, e.g.
//! `pass, Ham 1.2 < 7 (0.154s)` or `fail, Spam 1000.0 >= 7 (0.171s)`.
//!
//! The `spamd_user` is sent as spamd's `User`. With `spamd_user vpopmail` (qpsmtpd's
//! per-user preferences), a message with one recipient is scored as that recipient; with
//! several, as `vpopmail`, and an `X-Spam-User: vpopmail, N recipients` field says why the
//! per-user preferences were not used.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `spamd_socket` | `127.0.0.1:783` | spamd's TCP address (`IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`) or unix socket (an absolute path) |
//! | `spamd_user` | none | the user spamd scores as (`vpopmail`: see above) |
//! | `reject SCORE` | never | refuse at or above this score (qpsmtpd's `reject_threshold` is taken too) |
//! | `reject_type` | `perm` | how a refusal is sent |
//! | `headers none` | headers added | add no `X-Spam-*` field |
//! | `leave_old_headers drop\|rename\|keep` | `rename` | what becomes of `X-Spam-*` fields the message came with |
//! | `munge_subject_threshold SCORE` | never | prefix the Subject above this score |
//! | `subject_prefix TEXT` | the config file `subject_prefix`, else `*** SPAM ***` | the prefix (one word as an argument; the config file may hold blanks) |
//! | `relayclient skip` | | relay clients are skipped in any case, as in qpsmtpd 0.94 |
//! | `size_limit BYTES` | `500000` | larger messages are not scanned (qpsmtpd hard-coded 500,000) |
//! | `timeout SECONDS` | `25` | the whole call, queueing included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | scans in flight per worker; more wait in a queue |
//! | `defer_on_error 0\|1` | `1` | see below |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! When spamd cannot be reached, is silent past `timeout`, or answers anything but a
//! well-formed reply (a status other than 0, a missing or malformed `Spam` line, a body
//! shorter than its `Content-length`, lines or bodies over their limits): with
//! `defer_on_error 1` the message is refused with `451 4.7.1` (the sender retries; no
//! unscanned message is accepted), with `0` it is accepted with `X-Spam-Checked: not
//! scanned, spamassassin error`. Either way one `error` line says why. qpsmtpd accepted the
//! message without a word in the reply; the default here is to defer, as Haraka's users
//! asked.
//!
//! ## Config files
//!
//! `subject_prefix`: the Subject prefix when the argument is not given (its first line), as
//! qpsmtpd read it.
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! Renaming, removing and the new Subject go through the plugin API's header edits: on a
//! spooled message the spool file is rewritten on the blocking pool, only when there is
//! something to change; a header section longer than the core keeps in memory is left as it
//! is (a `warn` line says so). Our fields are added above the message's own header section,
//! so they come first. `userprefs` is not an argument here (qpsmtpd has none; per-user
//! preferences are `spamd_user vpopmail`).
//!
//! Large and odd messages (tests/e2e/test_scanner_bad_input.py): a 50 MB message is over
//! `size_limit` and delivered unscanned with a `skip, too big` line; below the limit a
//! message is streamed whatever its shape (10,000 MIME parts are spamd's business); while a
//! scan waits on spamd, the worker serves its other sessions.
//!
//! Metrics: the core's per-plugin series count the scans and their time
//! (`ringsmtpd_plugin_outcomes_total{hook="data_post"}`, `ringsmtpd_plugin_duration_seconds`);
//! a refusal and a deferral are both `DONE` there, so the kind of result (clean, found,
//! error) is in the log line only, with the time spent.
//!
//! ## Standards
//!
//! SpamAssassin's SPAMC/1.5 protocol (`spamd/PROTOCOL` in its sources).
//!
//! ## Security
//!
//! spamd's reply is hostile input: the status line and each reply header are read with a
//! 1 KiB limit, at most 32 reply headers, a body of at most 1 MiB and exactly its
//! `Content-length`, the score must be a finite decimal number; at most 32 `X-Spam-*` fields
//! of 4 KiB each are copied, through the header API (CR, LF and NUL cannot start a field of
//! their own). The `spamd_user` and the recipient sent as `User` cannot hold spaces or
//! control characters, so they cannot add a request header.

use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::args::key_values;
use ringsmtpd_plugin_api::header_edit::{Edit, NewField, Which};
use ringsmtpd_plugin_api::headers::{fields, Field};
use ringsmtpd_plugin_api::net::{read_line, Stream};
use ringsmtpd_plugin_api::shared::SpamVerdict;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    RejectType, Reply, Step, Transaction,
};

use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::{self, edit_headers, parse_socket, BodyChunks, Scanner, ScannerArgs};

/// spamd's default port on this host.
const DEFAULT_SOCKET: &str = "127.0.0.1:783";
/// qpsmtpd's Subject prefix.
const DEFAULT_SUBJECT_PREFIX: &str = "*** SPAM ***";
/// qpsmtpd's hard-coded limit.
const DEFAULT_SIZE_LIMIT: u64 = 500_000;
/// The longest status line or reply header read.
const MAX_LINE: usize = 1024;
/// Reply headers read at most.
const MAX_REPLY_HEADERS: usize = 32;
/// The longest reply body (a header section) accepted.
const MAX_BODY: usize = 1024 * 1024;
/// `X-Spam-*` fields copied at most, and the longest value copied.
const MAX_FIELDS: usize = 32;
const MAX_VALUE: usize = 4096;
/// The field added when the message was accepted unscanned.
const UNSCANNED_HEADER: &str = "X-Spam-Checked";

/// The `spamassassin` plugin.
pub struct SpamAssassin {
    common: Common,
    scanner: Scanner,
    user: Option<String>,
    reject: Option<f64>,
    headers: bool,
    old_headers: OldHeaders,
    /// `munge_subject_threshold`, and the prefix put before the Subject above it.
    munge: Option<(f64, String)>,
    size_limit: u64,
}

/// What `leave_old_headers` does with the fields of the names this plugin adds that the
/// message came with: another server's verdict, which cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OldHeaders {
    Drop,
    /// `X-Spam-Status` becomes `X-Old-Spam-Status` (qpsmtpd's default).
    Rename,
    Keep,
}

/// Builds `spamassassin` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<SpamAssassin, ConfigError> {
    // `reject` is a score here, not the common 0|1|naughty: take it out first.
    let mut reject = None;
    let mut others = Vec::new();
    let mut it = init.args.iter();
    while let Some(arg) = it.next() {
        if arg == "reject" || arg == "reject_threshold" {
            let v = it
                .next()
                .ok_or_else(|| init.error(format!("argument '{arg}' needs a value")))?;
            reject = Some(parse_score(v).map_err(|e| init.error(e))?);
        } else {
            others.push(arg.clone());
        }
    }
    let defaults = CommonArgs {
        reject_type: RejectType::Perm,
        ..CommonArgs::DEFAULT
    };
    let (args, rest) = CommonArgs::extract(&others, defaults).map_err(|e| init.error(e))?;
    let common = Common::new(init.name, args);
    let mut scanner_args = ScannerArgs::default();
    let mut socket = parse_socket(DEFAULT_SOCKET).map_err(|e| init.error(e))?;
    let mut user = None;
    let mut headers = true;
    let mut old_headers = OldHeaders::Rename;
    let mut munge = None;
    let mut prefix = None;
    let mut size_limit = DEFAULT_SIZE_LIMIT;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        if scanner_args.take(key, value).map_err(|e| init.error(e))? {
            continue;
        }
        match key {
            "spamd_socket" => socket = parse_socket(value).map_err(|e| init.error(e))?,
            "spamd_user" => {
                if !is_user_name(value) {
                    return Err(init.error(format!("spamd_user '{value}' is not a user name")));
                }
                user = Some(value.to_string());
            }
            "headers" if value == "none" => headers = false,
            "headers" => return Err(init.error("headers takes only 'none'")),
            "leave_old_headers" => {
                old_headers = match value.to_ascii_lowercase().as_str() {
                    "drop" => OldHeaders::Drop,
                    "rename" => OldHeaders::Rename,
                    "keep" => OldHeaders::Keep,
                    _ => return Err(init.error("leave_old_headers takes drop, rename or keep")),
                }
            }
            "munge_subject_threshold" => {
                munge = Some(parse_score(value).map_err(|e| init.error(e))?)
            }
            "subject_prefix" => prefix = Some(value.to_string()),
            "relayclient" if value == "skip" => {}
            "relayclient" => return Err(init.error("relayclient takes only 'skip'")),
            "size_limit" => {
                size_limit = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| init.error(format!("size_limit '{value}' is not a size")))?
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let prefix = match prefix {
        Some(p) => p,
        None => match init.config.first("subject_prefix")? {
            Some(line) => line.text.trim().to_string(),
            None => DEFAULT_SUBJECT_PREFIX.to_string(),
        },
    };
    Ok(SpamAssassin {
        common,
        scanner: Scanner::new(socket, scanner_args, scan_metrics!("spamassassin")),
        user,
        reject,
        headers,
        old_headers,
        munge: munge.map(|threshold| (threshold, prefix)),
        size_limit,
    })
}

/// A score: a finite decimal number.
fn parse_score(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && s.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b)) => {
            Ok(v)
        }
        _ => Err(format!("'{s}' is not a score")),
    }
}

/// A name spamd may get as `User`: printable ASCII without spaces, at most 256 bytes.
fn is_user_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic())
}

/// What spamd said.
#[derive(Debug, Clone, PartialEq)]
struct Verdict {
    score: SpamVerdict,
    /// The `X-Spam-*` fields to add, unfolded.
    fields: Vec<(String, String)>,
}

impl Plugin for SpamAssassin {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if scanner::immune(&self.common, cx, txn)
            || scanner::too_big(&self.common, cx, txn, self.size_limit, "size_limit")
        {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let start = Instant::now();
            let (user, user_note) = self.user_for(txn);
            let svc = cx.svc.clone();
            let answer = {
                let txn = &*txn;
                let svc = &*svc;
                let user = user.as_deref();
                self.scanner
                    .call(svc, move |stream| ask(svc, stream, txn, user))
                    .await
            };
            let spent = start.elapsed();
            match answer {
                Ok(verdict) => {
                    if self.headers {
                        self.mark(cx, txn, &verdict, user_note).await;
                    }
                    self.judge(cx, txn, verdict, spent)
                }
                Err(e) => {
                    self.scanner
                        .args
                        .on_error(&self.common, cx, txn, UNSCANNED_HEADER, &e, spent)
                }
            }
        })
    }
}

impl SpamAssassin {
    /// The `User` to send: `spamd_user`, or under `vpopmail` the only recipient; and with
    /// several recipients, the `X-Spam-User` value that says why they were not used.
    fn user_for(&self, txn: &Transaction) -> (Option<String>, Option<String>) {
        let Some(user) = self.user.as_deref() else {
            return (None, None);
        };
        if user != "vpopmail" {
            return (Some(user.to_string()), None);
        }
        match txn.recipients.as_slice() {
            [one] => {
                let addr = one.addr.as_str();
                (
                    Some(if is_user_name(addr) { addr } else { user }.to_string()),
                    None,
                )
            }
            many => (
                Some(user.to_string()),
                Some(format!("{user}, {} recipients", many.len())),
            ),
        }
    }

    /// The header work of a scan: the old fields of the names about to be added dropped or
    /// renamed, the Subject munged, then spamd's fields (and `X-Spam-User`) added.
    async fn mark(&self, cx: &Cx, txn: &mut Transaction, v: &Verdict, user_note: Option<String>) {
        let mut edits = Vec::new();
        if self.old_headers != OldHeaders::Keep {
            let mut names: Vec<&str> = v.fields.iter().map(|(n, _)| n.as_str()).collect();
            names.push("X-Spam-User");
            for (i, name) in names.iter().enumerate() {
                if !names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
                    edits.extend(self.old_fields(txn, name));
                }
            }
        }
        if let Some((threshold, prefix)) = &self.munge {
            let SpamVerdict {
                score,
                threshold: required,
                ..
            } = v.score;
            if score > required && score > *threshold {
                let old = first_value(txn, "Subject").unwrap_or_default();
                edits.push(Edit::change(
                    "Subject",
                    1,
                    format!("{prefix} {old}").trim_end(),
                ));
            }
        }
        edit_headers(&self.common, cx, txn, &edits).await;
        for (name, value) in &v.fields {
            txn.append_header(name, value);
        }
        if let Some(note) = user_note {
            txn.append_header("X-Spam-User", &note);
        }
    }

    /// The edits that drop or rename the fields called `name` the message has.
    fn old_fields(&self, txn: &Transaction, name: &str) -> Vec<Edit> {
        let values: Vec<String> = all_fields(txn)
            .filter(|f| f.is(name))
            .map(|f| f.value().into_owned())
            .collect();
        if values.is_empty() {
            return Vec::new();
        }
        let mut edits = Vec::new();
        if self.old_headers == OldHeaders::Rename {
            let old_name = match name.get(..2) {
                Some(x) if x.eq_ignore_ascii_case("X-") => format!("X-Old-{}", &name[2..]),
                _ => format!("Old-{name}"),
            };
            edits.extend(
                values
                    .iter()
                    .map(|v| Edit::Prepend(NewField::new(&old_name, v))),
            );
        }
        edits.push(Edit::remove(name, Which::All));
        edits
    }

    /// Keeps the note and refuses at the threshold.
    fn judge(&self, cx: &mut Cx, txn: &mut Transaction, v: Verdict, spent: Duration) -> Outcome {
        v.score.record(&mut txn.notes);
        let SpamVerdict { score, is_spam, .. } = v.score;
        if is_spam {
            self.scanner.metrics.found();
        }
        let kind = if is_spam { "Spam" } else { "Ham" };
        let secs = spent.as_secs_f64();
        match self.reject {
            Some(limit) if score >= limit => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("fail, {kind} {score:.1} >= {limit} ({secs:.3}s)"),
                );
                let text = format!("Spam score {score:.1} exceeds the threshold {limit}");
                let (code, enhanced, disconnect) = match self.common.args.reject_type {
                    RejectType::Perm => (550, "5.7.1", false),
                    RejectType::Disconnect => (550, "5.7.1", true),
                    RejectType::Temp => (451, "4.7.1", false),
                    RejectType::TempDisconnect => (421, "4.7.1", true),
                };
                let mut reply = Reply::new(code, enhanced, text);
                reply.disconnect = disconnect;
                Outcome::Done(Some(reply))
            }
            Some(limit) => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("pass, {kind} {score:.1} < {limit} ({secs:.3}s)"),
                );
                Outcome::Declined
            }
            None => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("pass, {kind} {score:.1}, reject disabled ({secs:.3}s)"),
                );
                Outcome::Declined
            }
        }
    }
}

/// Every header field the message will be queued with: the added ones, then its own.
fn all_fields(txn: &Transaction) -> impl Iterator<Item = Field<'_>> {
    fields(txn.added_headers.as_bytes())
        .chain(fields(txn.body.header_bytes()))
        .flatten()
}

/// The value of the first field called `name`, unfolded.
fn first_value(txn: &Transaction, name: &str) -> Option<String> {
    all_fields(txn)
        .find(|f| f.is(name))
        .map(|f| f.value().into_owned())
}

/// One SPAMC `HEADERS` exchange on `stream`.
async fn ask(
    svc: &dyn ringsmtpd_plugin_api::Services,
    mut stream: Box<dyn Stream>,
    txn: &Transaction,
    user: Option<&str>,
) -> Result<Verdict, String> {
    let mut chunks = BodyChunks::new(txn).map_err(|e| format!("cannot read the message: {e}"))?;
    let mut head = format!(
        "HEADERS SPAMC/1.5\r\nContent-length: {}\r\n",
        chunks.total()
    );
    if let Some(user) = user {
        head.push_str("User: ");
        head.push_str(user);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let (res, mut buf) = stream.write_all(head.into_bytes()).await;
    res.map_err(|e| format!("cannot send to spamd: {e}"))?;
    loop {
        buf = chunks
            .next(svc, buf)
            .await
            .map_err(|e| format!("cannot read the message: {e}"))?;
        if buf.is_empty() {
            break;
        }
        let (res, b) = stream.write_all(buf).await;
        res.map_err(|e| format!("cannot send to spamd: {e}"))?;
        buf = b;
    }
    read_reply(&mut *stream).await
}

/// Reads and checks spamd's reply: status line, headers, then exactly `Content-length` bytes.
async fn read_reply(stream: &mut dyn Stream) -> Result<Verdict, String> {
    let mut buf = Vec::with_capacity(4096);
    let eof = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "spamd closed the connection mid-reply".to_string(),
        _ => format!("reading spamd's reply: {e}"),
    };
    let end = read_line(stream, &mut buf, 0, MAX_LINE)
        .await
        .map_err(eof)?;
    check_status(&buf[..end])?;
    let mut at = end;
    let mut length = None;
    let mut verdict = None;
    for n in 0.. {
        if n > MAX_REPLY_HEADERS {
            return Err("spamd's reply has too many headers".into());
        }
        let end = read_line(stream, &mut buf, at, MAX_LINE)
            .await
            .map_err(eof)?;
        let line = trim_eol(&buf[at..end]);
        at = end;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| "spamd sent a non-UTF-8 header")?;
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("malformed spamd reply header '{line}'"))?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let len = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|l| *l <= MAX_BODY);
                length = Some(len.ok_or_else(|| format!("bad spamd Content-length '{value}'"))?);
            }
            "spam" => verdict = Some(parse_spam(value.trim())?),
            _ => {}
        }
    }
    let score = verdict.ok_or("spamd's reply has no Spam header")?;
    let length = length.ok_or("spamd's reply has no Content-length")?;
    while buf.len() - at < length {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
        let (res, b) = stream.read(std::mem::take(&mut buf)).await;
        buf = b;
        if res.map_err(eof)? == 0 {
            return Err(format!(
                "spamd's reply ends after {} of its {length} bytes",
                buf.len() - at
            ));
        }
    }
    let section = &buf[at..at + length];
    Ok(Verdict {
        score,
        fields: spam_fields(section),
    })
}

/// `SPAMD/1.1 0 EX_OK`: anything else is an error.
fn check_status(line: &[u8]) -> Result<(), String> {
    let line = String::from_utf8_lossy(trim_eol(line));
    let mut words = line.splitn(3, ' ');
    let proto = words.next().unwrap_or_default();
    let code = words.next().unwrap_or_default();
    let version_ok = proto.strip_prefix("SPAMD/").is_some_and(|v| {
        v.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    });
    if !version_ok {
        return Err(format!("spamd's status line '{line}' is malformed"));
    }
    if code != "0" {
        return Err(format!("spamd refused the request: '{line}'"));
    }
    Ok(())
}

/// `True ; 15.2 / 5.0` (also `Yes`/`No`, as older spamd wrote).
fn parse_spam(value: &str) -> Result<SpamVerdict, String> {
    let bad = || format!("malformed spamd Spam header '{value}'");
    let (flag, scores) = value.split_once(';').ok_or_else(bad)?;
    let is_spam = match flag.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => true,
        "false" | "no" => false,
        _ => return Err(bad()),
    };
    let (score, required) = scores.split_once('/').ok_or_else(bad)?;
    let score = parse_score(score.trim()).map_err(|_| bad())?;
    let required = parse_score(required.trim()).map_err(|_| bad())?;
    Ok(SpamVerdict {
        scanner: "spamassassin",
        score,
        threshold: required,
        is_spam,
        action: None,
    })
}

/// The `X-Spam-*` fields of a header section, unfolded (not `X-Spam-Prev-Subject`), bounded.
fn spam_fields(section: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for field in fields(section).flatten() {
        let name = field.name();
        let is_spam = name.len() > 7 && name[..7].eq_ignore_ascii_case("X-Spam-");
        if !is_spam || name.eq_ignore_ascii_case("X-Spam-Prev-Subject") {
            continue;
        }
        if out.len() == MAX_FIELDS {
            break;
        }
        let value = field.value();
        let mut value: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if value.len() > MAX_VALUE {
            let mut cut = MAX_VALUE;
            while !value.is_char_boundary(cut) {
                cut -= 1;
            }
            value.truncate(cut);
        }
        out.push((name.to_string(), value));
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::{closed_port, reply_of};
    use ringsmtpd_plugin_api::net::Endpoint;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, rcpt, run, set_message, FakePeer};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::sync::Mutex;

    const MESSAGE: &str = "Subject: hi\r\nX-Spam-Status: No, forged\r\n\r\nhello\r\n";

    /// The request spamd got: its header lines and the message.
    #[derive(Debug, Clone)]
    struct Request {
        head: Vec<String>,
        message: Vec<u8>,
    }

    /// A spamd that reads one request and answers `reply`.
    fn spamd(reply: &'static [u8]) -> FakePeer<Request> {
        FakePeer::start(move |conn: TcpStream, seen: &Mutex<Vec<Request>>| {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut head = Vec::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end().to_string();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("Content-length: ") {
                    len = v.parse().unwrap();
                }
                head.push(line);
            }
            let mut message = vec![0; len];
            r.read_exact(&mut message).unwrap();
            seen.lock().unwrap().push(Request { head, message });
            let _ = (&conn).write_all(reply);
        })
    }

    fn plugin(args: &str) -> SpamAssassin {
        build(build_plugin, &format!("spamassassin {args}"), &[]).unwrap()
    }

    /// Runs `data_post` on MESSAGE with two recipients; the outcome, the added headers, the
    /// note, and the logs.
    fn scan(p: &SpamAssassin) -> (Outcome, String, Option<SpamVerdict>, Vec<String>) {
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        txn.added_headers = "Received: from a by b\r\n".into();
        txn.recipients = vec![rcpt("<a@example.test>"), rcpt("<b@example.test>")];
        set_message(&mut txn, MESSAGE);
        let out = run(p.data_post(&mut c, &mut txn));
        let logs = svc.logs.borrow().iter().map(|l| l.2.clone()).collect();
        (
            out,
            txn.added_headers,
            txn.notes.get::<SpamVerdict>().copied(),
            logs,
        )
    }

    /// A well-formed reply: `Spam: {spam}` and the header section `section`.
    fn ok_reply(spam: &str, section: &str) -> &'static [u8] {
        let r = format!(
            "SPAMD/1.1 0 EX_OK\r\nContent-length: {}\r\nSpam: {spam}\r\n\r\n{section}",
            section.len()
        );
        Box::leak(r.into_bytes().into_boxed_slice())
    }

    const SPAM_SECTION: &str = "Subject: hi\r\nX-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=1000.0 required=5.0\r\n\ttests=GTUBE\r\nX-Spam-Prev-Subject: x\r\n\r\n";

    fn spam() -> &'static [u8] {
        ok_reply("True ; 1000.0 / 5.0", SPAM_SECTION)
    }

    #[test]
    fn spam_over_the_threshold_is_refused_with_its_score() {
        let peer = spamd(spam());
        let p = plugin(&format!(
            "reject 7 spamd_socket 127.0.0.1:{} spamd_user mail",
            peer.port
        ));
        let metric = |event| crate::helpers::scan_metrics::count("spamassassin", event);
        let (scans, found) = (metric("scans"), metric("found"));
        let (out, headers, note, logs) = scan(&p);
        assert!(metric("scans") > scans && metric("found") > found);
        let (code, enhanced, text) = reply_of(&out);
        assert_eq!((code, enhanced.as_str()), (550, "5.7.1"));
        assert!(text.contains("1000.0"), "{text}");
        assert_eq!(
            note,
            Some(SpamVerdict {
                scanner: "spamassassin",
                score: 1000.0,
                threshold: 5.0,
                is_spam: true,
                action: None,
            })
        );
        // spamd's fields are added unfolded; Prev-Subject and the others are not.
        assert!(headers.contains("X-Spam-Flag: YES\r\n"), "{headers}");
        assert!(
            headers.contains("X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE\r\n"),
            "{headers}"
        );
        assert!(!headers.contains("Prev-Subject") && !headers.contains("Subject: hi"));
        assert!(
            logs.iter().any(|l| l.starts_with("fail, Spam 1000.0 >= 7")),
            "{logs:?}"
        );
        let req = peer.take().pop().unwrap();
        assert_eq!(req.head[0], "HEADERS SPAMC/1.5");
        assert!(req.head.contains(&"User: mail".to_string()));
        // Our Received first, then the message as received.
        let sent = format!("Received: from a by b\r\n{MESSAGE}");
        assert_eq!(req.message, sent.as_bytes());
    }

    #[test]
    fn ham_passes_with_its_headers_and_reject_type_temp_defers() {
        let peer = spamd(ok_reply(
            "False ; 1.5 / 5.0",
            "X-Spam-Status: No, score=1.5\r\n\tdata\x00evil\r\n\r\n",
        ));
        let p = plugin(&format!("reject 7 spamd_socket 127.0.0.1:{}", peer.port));
        let (out, headers, note, _) = scan(&p);
        assert_eq!(out, Outcome::Declined);
        // A NUL from spamd never reaches the message.
        assert!(
            headers.contains("X-Spam-Status: No, score=1.5 data evil\r\n"),
            "{headers:?}"
        );
        assert!(!note.unwrap().is_spam);
        // No User without spamd_user.
        assert!(!peer.take()[0].head.iter().any(|h| h.starts_with("User")));

        let peer = spamd(spam());
        let p = plugin(&format!(
            "reject 7 reject_type temp headers none spamd_socket 127.0.0.1:{}",
            peer.port
        ));
        let (out, headers, _, _) = scan(&p);
        assert_eq!(reply_of(&out).0, 451);
        assert_eq!(
            headers, "Received: from a by b\r\n",
            "headers none adds nothing"
        );
    }

    #[test]
    fn vpopmail_scores_several_recipients_as_itself_and_says_so() {
        let peer = spamd(spam());
        let p = plugin(&format!(
            "spamd_user vpopmail spamd_socket 127.0.0.1:{}",
            peer.port
        ));
        let (out, headers, _, logs) = scan(&p);
        assert_eq!(out, Outcome::Declined, "no reject threshold");
        assert!(headers.contains("X-Spam-User: vpopmail, 2 recipients\r\n"));
        assert!(logs.iter().any(|l| l.contains("reject disabled")));
        assert!(peer.take()[0].head.contains(&"User: vpopmail".to_string()));
    }

    /// Each bad reply defers with 451 4.7.1 and logs why.
    #[test]
    fn malformed_and_truncated_replies_defer() {
        let cases: &[(&'static [u8], &str)] = &[
            (b"HTTP/1.1 200 OK\r\n\r\n", "malformed"),
            (b"SPAMD/1.1 76 Bad header line\r\n\r\n", "refused the request"),
            (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", "no Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\nContent-length: 0\r\n\r\n", "malformed spamd Spam"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5\r\nContent-length: 0\r\n\r\n", "malformed spamd Spam"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\n\r\n", "no Content-length"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\nContent-length: 99999999\r\n\r\n", "bad spamd Content-length"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9 / 5\r\nContent-length: 50\r\n\r\nX-Spam-Flag: YES\r\n", "ends after 18 of its 50"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True", "closed the connection mid-reply"),
            (b"", "closed the connection mid-reply"),
        ];
        for (reply, why) in cases {
            let peer = spamd(reply);
            let p = plugin(&format!("reject 5 spamd_socket 127.0.0.1:{}", peer.port));
            let (out, headers, note, logs) = scan(&p);
            let (code, enhanced, _) = reply_of(&out);
            assert_eq!((code, enhanced.as_str()), (451, "4.7.1"), "{why}");
            assert!(note.is_none());
            assert!(!headers.contains("X-Spam"), "{why}");
            assert!(
                logs.iter()
                    .any(|l| l.starts_with("error, deferred") && l.contains(why)),
                "{why}: {logs:?}"
            );
        }
        // A line without end is cut at its limit.
        let long: &'static [u8] = Box::leak(
            format!("SPAMD/1.1 0 {}", "x".repeat(5000))
                .into_bytes()
                .into_boxed_slice(),
        );
        let peer = spamd(long);
        let (out, _, _, logs) = scan(&plugin(&format!("spamd_socket 127.0.0.1:{}", peer.port)));
        assert_eq!(reply_of(&out).0, 451);
        assert!(logs.iter().any(|l| l.contains("line too long")), "{logs:?}");
    }

    #[test]
    fn a_refused_connection_defers_or_accepts_with_a_header() {
        let port = closed_port();
        let errors = crate::helpers::scan_metrics::count("spamassassin", "errors");
        let (out, _, _, logs) = scan(&plugin(&format!("spamd_socket 127.0.0.1:{port}")));
        assert!(crate::helpers::scan_metrics::count("spamassassin", "errors") > errors);
        assert_eq!(
            reply_of(&out),
            (
                451,
                "4.7.1".into(),
                "Unable to scan the message now, please try again later".into()
            )
        );
        assert!(
            logs.iter().any(|l| l.contains("cannot connect")),
            "{logs:?}"
        );

        let p = plugin(&format!("spamd_socket 127.0.0.1:{port} defer_on_error 0"));
        let (out, headers, _, logs) = scan(&p);
        assert_eq!(out, Outcome::Declined);
        assert!(headers.contains("X-Spam-Checked: not scanned, spamassassin error\r\n"));
        assert!(logs
            .iter()
            .any(|l| l.starts_with("error, accepted unscanned")));
    }

    #[test]
    fn a_silent_spamd_meets_the_deadline() {
        let p = plugin("spamd_socket 127.0.0.1:783 timeout 3");
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.mute_peers.set(true);
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        let out = run(p.data_post(&mut c, &mut txn));
        assert_eq!(reply_of(&out).0, 451);
        assert!(svc.logged("within the timeout (3s)"));
    }

    #[test]
    fn skipped_when_too_large_or_immune() {
        // No spamd listens: a scan would defer.
        let p = plugin("spamd_socket 127.0.0.1:1 size_limit 10");
        let (out, _, _, logs) = scan(&p);
        assert_eq!(out, Outcome::Declined);
        assert!(logs.iter().any(|l| l.contains("skip, too big")), "{logs:?}");

        let p = plugin("spamd_socket 127.0.0.1:1 relayclient skip");
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        assert!(svc.logged("skip, immune"));
        assert!(svc.connects.borrow().is_empty());
    }

    /// Scans `txn` (MESSAGE in memory, or spooled) against a spamd answering `reply`; the
    /// outcome and the header section as queued (added fields, then the message's own).
    fn scan_headers(args: &str, reply: &'static [u8], spooled: bool) -> (Outcome, String) {
        let peer = spamd(reply);
        let p = plugin(&format!("spamd_socket 127.0.0.1:{} {args}", peer.port));
        let (mut c, svc) = cx("192.0.2.1:1");
        let dir = ringsmtpd_plugin_api::testing::TempDir::new("spamassassin-headers");
        let mut txn = Transaction::default();
        txn.added_headers = "Received: from a by b\r\n".into();
        let message = format!("X-Spam-Flag: YES\r\n{MESSAGE}");
        if spooled {
            ringsmtpd_plugin_api::testing::spool(
                &mut txn.body,
                &dir.path().join("spool"),
                message.as_bytes(),
            );
        } else {
            set_message(&mut txn, &message);
        }
        // A spool file is read on another thread: the deadline must not fire at once.
        svc.timers_never_fire.set(spooled);
        let out = run(p.data_post(&mut c, &mut txn));
        assert!(!svc.logged("left as they were"), "{:?}", svc.logs.borrow());
        let queued = match &txn.body.spool {
            Some(s) => std::fs::read_to_string(&s.path).unwrap(),
            None => String::from_utf8(txn.body.mem.clone()).unwrap(),
        };
        assert!(queued.ends_with("\r\n\r\nhello\r\n"), "the body is intact");
        assert_eq!(txn.body.len as usize, queued.len());
        txn.body.spool = None; // the TempDir removes the file
        let head = queued.split_once("\r\n\r\n").unwrap().0.to_string();
        (out, format!("{}{head}\r\n", txn.added_headers))
    }

    #[test]
    fn old_spam_fields_are_renamed_by_default_dropped_or_kept() {
        for spooled in [false, true] {
            let (out, h) = scan_headers("", spam(), spooled);
            assert_eq!(out, Outcome::Declined);
            // The client's X-Spam-Flag and X-Spam-Status are renamed, ours are added.
            assert_eq!(
                h,
                "X-Old-Spam-Status: No, forged\r\nX-Old-Spam-Flag: YES\r\n\
                 Received: from a by b\r\nX-Spam-Flag: YES\r\n\
                 X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE\r\nSubject: hi\r\n",
                "spooled: {spooled}"
            );
            let (_, h) = scan_headers("leave_old_headers drop", spam(), spooled);
            assert_eq!(
                h,
                "Received: from a by b\r\nX-Spam-Flag: YES\r\n\
                 X-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE\r\nSubject: hi\r\n"
            );
            let (_, h) = scan_headers("leave_old_headers keep", spam(), spooled);
            assert!(
                h.ends_with("X-Spam-Flag: YES\r\nSubject: hi\r\nX-Spam-Status: No, forged\r\n"),
                "{h}"
            );
            // headers none: nothing added, nothing touched.
            let (_, h) = scan_headers("headers none", spam(), spooled);
            assert_eq!(
                h,
                format!(
                    "Received: from a by b\r\nX-Spam-Flag: YES\r\n{}",
                    MESSAGE.split("\r\n\r\n").next().unwrap().to_string() + "\r\n"
                )
            );
        }
    }

    #[test]
    fn the_subject_is_munged_above_both_thresholds() {
        for spooled in [false, true] {
            let (_, h) = scan_headers(
                "munge_subject_threshold 8 subject_prefix [SPAM]",
                spam(),
                spooled,
            );
            assert!(h.contains("\r\nSubject: [SPAM] hi\r\n"), "{h}");
            assert_eq!(h.matches("Subject").count(), 1, "{h}");
        }
        // Under the threshold, under spamd's own, or with headers none: untouched.
        let ham = ok_reply("False ; 9.0 / 10.0", "X-Spam-Status: No\r\n\r\n");
        for (args, reply) in [
            ("munge_subject_threshold 1001", spam()),
            ("munge_subject_threshold 8", ham),
            ("munge_subject_threshold 8 headers none", spam()),
        ] {
            let (_, h) = scan_headers(args, reply, false);
            assert!(h.contains("\r\nSubject: hi\r\n"), "{args}: {h}");
        }
        // A hostile old Subject cannot add a field through the new one.
        let peer = spamd(spam());
        let p = plugin(&format!(
            "spamd_socket 127.0.0.1:{} munge_subject_threshold 8",
            peer.port
        ));
        let (mut c, _) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        txn.added_headers = "Subject: hi\u{0}Bcc: x\r\n".into();
        set_message(&mut txn, "From: a\r\n\r\nbody\r\n");
        run(p.data_post(&mut c, &mut txn));
        assert!(
            txn.added_headers
                .starts_with("Subject: *** SPAM *** hi Bcc: x\r\n"),
            "{}",
            txn.added_headers
        );
    }

    #[test]
    fn arguments() {
        let p = plugin("reject_threshold 12.5 spamd_socket /run/spamd.sock leave_old_headers keep");
        assert_eq!(p.reject, Some(12.5));
        assert_eq!((p.old_headers, &p.munge), (OldHeaders::Keep, &None));
        let q = plugin("munge_subject_threshold 8 subject_prefix [SPAM]");
        assert_eq!(q.old_headers, OldHeaders::Rename, "qpsmtpd's default");
        assert_eq!(q.munge, Some((8.0, "[SPAM]".to_string())));
        // Without the argument: the config file (which may hold blanks), then qpsmtpd's.
        let q: SpamAssassin = build(
            build_plugin,
            "spamassassin munge_subject_threshold 5",
            &[("subject_prefix", "[ probably spam ]\n")],
        )
        .unwrap();
        assert_eq!(q.munge, Some((5.0, "[ probably spam ]".to_string())));
        let q = plugin("munge_subject_threshold 5");
        assert_eq!(q.munge, Some((5.0, "*** SPAM ***".to_string())));
        assert_eq!(p.scanner.endpoint, Endpoint::Unix("/run/spamd.sock".into()));
        assert_eq!(p.size_limit, 500_000);
        let bad = [
            ("reject x", "not a score"),
            ("reject", "needs a value"),
            ("munge_subject_threshold x", "not a score"),
            ("leave_old_headers forget", "drop, rename or keep"),
            ("headers all", "only 'none'"),
            ("relayclient scan", "only 'skip'"),
            ("spamd_socket spamd:783", "neither"),
            ("spamd_user a\u{1}b", "not a user name"),
            ("size_limit 0", "not a size"),
            ("frobnicate 1", "unknown argument"),
            ("timeout 0", "timeout"),
        ];
        for (args, why) in bad {
            let e = build_err(build_plugin, &format!("spamassassin {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }

    #[test]
    fn spam_header_forms() {
        assert_eq!(
            parse_spam("Yes ; -1.5 / 5"),
            Ok(SpamVerdict {
                scanner: "spamassassin",
                score: -1.5,
                threshold: 5.0,
                is_spam: true,
                action: None,
            })
        );
        for bad in [
            "True ; 1",
            "True 1 / 5",
            "True ; 1e5 / 5",
            "True ; inf / 5",
            " ; 1 / 5",
        ] {
            assert!(parse_spam(bad).is_err(), "{bad}");
        }
    }
}
