//! # dmarc — apply the From domain's DMARC policy (RFC 7489)
//!
//! ## Synopsis
//!
//! ```text
//! dmarc [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N] [timeout SECONDS] [report_dir DIR] [reporting 0|1]
//! ```
//!
//! List it after `sender_permitted_from` and `dkim` (qpsmtpd's advice too), with those two
//! set not to refuse on their own (`sender_permitted_from` at level 0 to 2, `dkim reject 0`)
//! if DMARC is to decide.
//!
//! ## Description
//!
//! DMARC asks whether the domain in the message's `From:` (the Author Domain) is
//! authenticated: by SPF (the MAIL FROM domain passed) or by DKIM (a signature with that
//! `d=` passed), with the domain *aligned* to the Author Domain. If neither is, the domain's
//! published policy says what to do: nothing, quarantine or reject.
//!
//! **Author Domain** (§6.6.1): the domain of the addresses in the one `From:` field
//! (display names, comments, quoted strings and groups understood; see `from.rs`). No
//! `From:`, several `From:` fields, addresses of several domains, or no usable domain (a
//! literal, non-ASCII, an empty label) make `permerror`, and the message is refused as
//! `reject` says (qpsmtpd refused a missing or unparseable From; §6.6.1 says such mail is
//! typically rejected). A header section too large for the core to keep in memory (256 KiB)
//! without a `From:` in what was kept is `permerror` and never refused.
//!
//! **Policy discovery** (§6.6.3). As soon as the header section is in (`data_headers_end`,
//! while the body is still arriving), the TXT questions for `_dmarc.<Author Domain>` and, for
//! a subdomain, `_dmarc.<organizational domain>` leave together through the worker's DNS
//! client. At `data_post_headers` (after SPF and DKIM have run) the answers are awaited for
//! what is left of `timeout` seconds. Records not starting with `v=DMARC1` are discarded; if
//! the Author Domain has none, the organizational domain's record is used, and its `sp`
//! (if any) applies to the subdomain. The record is parsed strictly (`record.rs`: `v=DMARC1`
//! first, `p` required; a bad `p` or `sp` reads as `p=none` only when `rua` is valid, §6.6.3
//! step 6; other bad values fall back to their defaults with a log line).
//!
//! The **organizational domain** (§3.2) comes from the public suffix list compiled into the
//! build (the `psl` crate, ICANN and private sections, as Mail::DMARC reads it): nothing is
//! fetched at run time. A newer list comes with a rebuild (`cargo update -p psl`). A name
//! under a suffix the list does not know takes its last label as the suffix
//! (`mail.example.test` → `example.test`).
//!
//! **Alignment** (§3.1): SPF counts when `sender_permitted_from` found `pass` for the MAIL
//! FROM identity (for a null sender, its HELO identity, which RFC 7208 §2.4 makes the MAIL
//! FROM identity); DKIM counts for each signature `dkim` verified as `pass`. Strict
//! (`adkim=s`, `aspf=s`): the domain equals the Author Domain; relaxed (the default): both
//! have the same organizational domain. One aligned pass is a DMARC pass.
//!
//! **Policy** (§6.6.4): a failing message gets `p` (or `sp`), applied to `pct` percent of
//! messages: each message draws a number from 0 to 99 seeded from its transaction id, the
//! time and a per-process random key; at or above `pct` it gets the next policy down
//! (`reject` → `quarantine` → `none`).
//!
//! | result | when | what happens |
//! |---|---|---|
//! | `pass` | SPF or DKIM aligned | accepted |
//! | `fail`, disposition `none` | not aligned, `p=none` (or sampled down to none) | accepted |
//! | `fail`, disposition `quarantine` | not aligned, `p=quarantine`, or `p=reject` sampled out by `pct` | accepted with `X-DMARC-Quarantine: yes (header.from=<domain>)` on top, for the delivery agent to file as spam (qpsmtpd 0.94 refused it instead; there is no quarantine in an SMTP receiver) |
//! | `fail`, disposition `reject` | not aligned, `p=reject` | refused at `data_post` with `550 5.7.1 failed DMARC policy` (qpsmtpd's text), as `reject` and `reject_type` say |
//! | `none` | no DMARC record for the domain or its organizational domain | accepted |
//! | `temperror` | the lookup timed out, SERVFAIL, REFUSED, no resolver | accepted: **a DNS failure never refuses mail** |
//! | `permerror` | a record that cannot be applied (see above), more than one record | accepted |
//! | `permerror` | no usable From (see above) | refused as `reject` says, with qpsmtpd's texts (`empty from address, null sender?`, `unparseable from header`) or `multiple From headers`, `From header with several domains` |
//!
//! Every checked message gets an Authentication-Results clause (RFC 8601, RFC 7489 §11.2):
//! `dmarc=<result> (p=<p>[ sp=<sp>] dis=<disposition>) header.from=<domain>` when a policy
//! was found, else `dmarc=<result> (<why>) header.from=<domain>`. `dis` is what the policy
//! asks for this message after `pct`.
//!
//! Not done: refusing mail whose Author Domain does not exist in DNS (qpsmtpd HEAD and
//! Mail::DMARC do; RFC 7489 leaves it to local policy, and `resolvable_fromhost` checks the
//! sender's domain), evaluating each domain of a multi-domain From (refused instead), and
//! sending reports (below).
//!
//! **Aggregate reports** (§7.2) are not sent. With `report_dir`, every message whose domain
//! publishes a policy adds one tab-separated line to `<report_dir>/dmarc-YYYY-MM-DD.tsv`
//! (UTC day; fields in `report.rs`: time, client IP, Author Domain, envelope domains, where
//! the policy was found, the published policy and `rua`, the disposition applied, aligned
//! DKIM and SPF, the reason, every DKIM signature and the SPF result), written on the
//! blocking pool. An operator who wants to send reports groups a day's lines by policy
//! domain and then by client IP, disposition and results (each line counts 1), writes the
//! XML of RFC 7489 Appendix C, and mails it to the `rua` addresses (for example from a
//! daily cron job); old files are theirs to remove.
//!
//! Not checked: relay clients, authenticated clients and whitelisted hosts or senders
//! (`is_immune`), as qpsmtpd skipped relay clients.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject` | `1` | `0`: log only; `1`: refuse `p=reject` failures and unusable From; `naughty`: leave it to `naughty` |
//! | `reject_type` | `perm` | `perm` (550), `temp` (452), `disconnect`, `temp_disconnect` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//! | `timeout` | `10` | seconds from the questions leaving to giving up on them (`temperror`); keep it below `plugin_timeout` (a ringsmtpd addition) |
//! | `report_dir` | | directory of the daily report data files; must exist (a ringsmtpd addition) |
//! | `reporting` | `1` | qpsmtpd's switch: `0` writes no report data even with `report_dir`; `1` needs `report_dir` |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_headers_end` (ask DNS), `data_post_headers` (decide, A-R clause, quarantine
//! header, report data), `data_post` (refuse).
//!
//! ## Notes
//!
//! Reads the txn notes `SpfCheck` (from `sender_permitted_from`) and `shared::DkimResults`
//! (from `dkim`), and `is_immune`'s notes. Writes a clause of `shared::AuthResults` and the
//! txn note [`DmarcCheck`] (result, Author Domain, policy, verdict) for later plugins.
//!
//! ## Standards
//!
//! RFC 7489 (DMARC: §3.1 alignment, §3.2 organizational domain, §6.3 and §6.4 the record,
//! §6.6 the receiver's steps, §7.2 aggregate data), RFC 8601 (Authentication-Results, the
//! `dmarc` method and `header.from`), RFC 5322 §3.6.2 and RFC 6854 (From), RFC 7208 §2.4
//! (the null sender's SPF identity).
//!
//! ## Security
//!
//! The From field and DNS answers are hostile. The From value is read up to 8 KiB and 100
//! mailboxes, and its domain must be a DNS name of letters, digits, `-` and `_` before it
//! is asked about or written anywhere; records are at most 2048 bytes, 16 TXT records per
//! answer are looked at, and `rua` is kept as at most 512 printable characters. The wait for DNS is bounded by
//! `timeout`; a DNS failure is `temperror`, never a refusal. Report lines are printable
//! ASCII without tabs, at most 8,414 bytes, written off the worker thread.

mod from;
pub mod policy;
pub mod record;
mod report;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::time::Duration;

use ringsmtpd_plugin_api::args::{key_values, parse_timeout};
use ringsmtpd_plugin_api::dns::{DnsError, DnsLookup, DnsResult, QType};
use ringsmtpd_plugin_api::dnsutil::{client_ip, within, Deadline, Timer};
use ringsmtpd_plugin_api::shared::{is_immune, AuthResults, DkimResults};
use ringsmtpd_plugin_api::{
    blocking, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Reject, RejectType, Reply, Step, Transaction,
};

use crate::sender_permitted_from::eval::SpfResult;
use crate::sender_permitted_from::{Identity, SpfCheck};
use from::{author_domain, FromError};
use policy::{evaluate, org_domain, roll, Authenticated, DmarcResult, Found, Verdict};
use record::{parse, Parsed, Policy};
use report::Row;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// TXT records looked at per answer at most.
const MAX_TXT: usize = 16;
/// qpsmtpd's reply text for a `p=reject` failure.
const FAILED: &str = "failed DMARC policy";

pub struct Dmarc {
    common: Common,
    timeout: Duration,
    report_dir: Option<PathBuf>,
    /// Keys for the per-message `pct` draw (random per process).
    seed: RandomState,
}

/// Builds `dmarc` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut timeout = DEFAULT_TIMEOUT;
    let (mut report_dir, mut reporting) = (None, None);
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match key {
            "timeout" => timeout = parse_timeout(value).map_err(|e| init.error(e))?,
            "report_dir" => {
                let dir = PathBuf::from(value);
                if !dir.is_dir() {
                    let msg = format!("report_dir '{value}' is not a directory");
                    return Err(init.error(msg));
                }
                report_dir = Some(dir);
            }
            "reporting" => {
                reporting = Some(match value {
                    "0" => false,
                    "1" => true,
                    v => return Err(init.error(format!("reporting must be 0 or 1, not '{v}'"))),
                })
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let report_dir = match (reporting, report_dir) {
        (Some(false), _) => None,
        (Some(true), None) => return Err(init.error("reporting 1 needs report_dir DIR")),
        (_, dir) => dir,
    };
    Ok(Box::new(Dmarc {
        common,
        timeout,
        report_dir,
        seed: RandomState::new(),
    }))
}

/// The DMARC check of a transaction (txn note), for `data_post` and later plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: DmarcResult,
    /// The Author Domain, when there is a usable one.
    pub from_domain: Option<String>,
    /// The policy record and where it was found.
    pub found: Option<Found>,
    /// Alignment and disposition, when a policy was found and applied.
    pub verdict: Option<Verdict>,
    /// Why there is no verdict (`none`, `temperror`, `permerror`).
    pub why: Option<&'static str>,
    /// The reply text when `data_post` refuses the message.
    pub refuse: Option<&'static str>,
}

impl DmarcCheck {
    /// The Authentication-Results clause.
    fn clause(&self) -> String {
        let mut c = format!("dmarc={}", self.result);
        match (&self.found, &self.verdict, self.why) {
            (Some(found), Some(v), _) => {
                c.push_str(&format!(" (p={}", found.record.p.as_str()));
                if let Some(sp) = found.record.sp {
                    c.push_str(&format!(" sp={}", sp.as_str()));
                }
                c.push_str(&format!(" dis={})", v.disposition.as_str()));
            }
            (_, _, Some(why)) => c.push_str(&format!(" ({why})")),
            _ => {}
        }
        if let Some(d) = &self.from_domain {
            c.push_str(&format!(" header.from={d}"));
        }
        c
    }
}

/// The questions asked at `data_headers_end` (private txn note).
struct Asked {
    from: Result<String, FromError>,
    own: Option<DnsLookup>,
    /// The organizational domain and its question, for a subdomain.
    org: Option<(String, DnsLookup)>,
    deadline: Deadline,
}

/// What policy discovery found (§6.6.3).
enum Discovery {
    Found(Found),
    NoPolicy,
    TempError(&'static str),
    PermError(&'static str),
}

/// The DMARC records in one answer, or why there is no answer.
fn records(answer: DnsResult) -> Result<Vec<Parsed>, Discovery> {
    match answer {
        Ok(a) => Ok(a
            .txt()
            .take(MAX_TXT)
            .map(parse)
            .filter(|p| *p != Parsed::NotDmarc)
            .collect()),
        // A name too long to ask about cannot hold a record.
        Err(DnsError::BadName) => Ok(Vec::new()),
        Err(DnsError::Timeout) => Err(Discovery::TempError("policy lookup timed out")),
        Err(_) => Err(Discovery::TempError("policy lookup failed")),
    }
}

/// Steps 1 to 5 of §6.6.3 on the answers to the questions in `asked`.
async fn discover(from: &str, asked: &mut Asked, timer: &mut Timer) -> Discovery {
    let Some(own) = asked.own.as_mut() else {
        return Discovery::NoPolicy;
    };
    let mut found = match records(within(own, timer).await) {
        Ok(r) => r,
        Err(d) => return d,
    };
    let mut at = (from.to_string(), false);
    if found.is_empty() {
        if let Some((org, lookup)) = asked.org.as_mut() {
            found = match records(within(lookup, timer).await) {
                Ok(r) => r,
                Err(d) => return d,
            };
            at = (org.clone(), true);
        }
    }
    match found.len() {
        0 => Discovery::NoPolicy,
        1 => match found.pop() {
            Some(Parsed::Ok(record)) => Discovery::Found(Found {
                record,
                domain: at.0,
                subdomain: at.1,
            }),
            Some(Parsed::Bad(why)) => Discovery::PermError(why),
            _ => Discovery::NoPolicy,
        },
        _ => Discovery::PermError("multiple DMARC records"),
    }
}

impl Dmarc {
    /// Reads the Author Domain and sends the policy questions.
    fn ask(&self, cx: &Cx, txn: &Transaction) -> Asked {
        let body = &txn.body;
        let from = match author_domain(body.header_bytes()) {
            // The core kept only part of a huge header section: From may be further on.
            Err(FromError::Missing) if body.header_end.is_none() && body.spool.is_some() => {
                Err(FromError::Unread)
            }
            other => other,
        };
        let (own, org) = match &from {
            Ok(d) => {
                let own = cx.svc.dns_query(&format!("_dmarc.{d}"), QType::Txt);
                let org = org_domain(d);
                let org = (org != d).then(|| {
                    let lookup = cx.svc.dns_query(&format!("_dmarc.{org}"), QType::Txt);
                    (org.to_string(), lookup)
                });
                (Some(own), org)
            }
            Err(_) => (None, None),
        };
        Asked {
            from,
            own,
            org,
            deadline: Deadline::start(&*cx.svc, self.timeout),
        }
    }

    fn skip(&self, cx: &Cx, txn: &Transaction) -> bool {
        is_immune(cx, Some(txn)) || cx.conn.auth.is_some()
    }

    /// The whole check, once SPF and DKIM have run.
    async fn check(&self, cx: &mut Cx, txn: &Transaction, mut asked: Asked) -> DmarcCheck {
        let from = match asked.from.clone() {
            Ok(d) => d,
            Err(e) => {
                self.common
                    .log(cx, Level::Notice, format_args!("permerror, {}", e.why()));
                return DmarcCheck {
                    result: DmarcResult::PermError,
                    from_domain: None,
                    found: None,
                    verdict: None,
                    why: Some(e.why()),
                    refuse: e.refused().then_some(e.reply()),
                };
            }
        };
        let mut timer = asked.deadline.timer(&*cx.svc);
        let (result, why) = match discover(&from, &mut asked, &mut timer).await {
            Discovery::Found(found) => return self.apply(cx, txn, from, found),
            Discovery::NoPolicy => (DmarcResult::None, "no policy"),
            Discovery::TempError(why) => (DmarcResult::TempError, why),
            Discovery::PermError(why) => (DmarcResult::PermError, why),
        };
        let level = match result {
            DmarcResult::None => Level::Info,
            _ => Level::Notice,
        };
        let what = match result {
            DmarcResult::None => "skip",
            r => r.as_str(),
        };
        self.common
            .log(cx, level, format_args!("{what}, {why}, header.from={from}"));
        DmarcCheck {
            result,
            from_domain: Some(from),
            found: None,
            verdict: None,
            why: Some(why),
            refuse: None,
        }
    }

    /// Alignment and policy for a domain that has one.
    fn apply(&self, cx: &mut Cx, txn: &Transaction, from: String, found: Found) -> DmarcCheck {
        for warning in &found.record.warnings {
            let d = &found.domain;
            self.common
                .log(cx, Level::Notice, format_args!("record of {d}: {warning}"));
        }
        let spf = txn
            .notes
            .get::<SpfCheck>()
            .filter(|s| s.verdict.result == SpfResult::Pass)
            .map(|s| s.domain.trim_end_matches('.').to_ascii_lowercase());
        let dkim: Vec<String> = txn.notes.get::<DkimResults>().map_or(Vec::new(), |r| {
            r.0.iter()
                .filter(|s| s.result == "pass")
                .map(|s| s.domain.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        });
        let auth = Authenticated {
            spf: spf.as_deref(),
            dkim: dkim.iter().map(String::as_str).collect(),
        };
        let seed = self.seed.hash_one((&txn.id, cx.svc.now(), &from));
        let verdict = evaluate(&from, &found, &auth, roll(seed));
        let mut line = format!(
            "{}, p={} dis={}, header.from={from}",
            verdict.result,
            found.policy().as_str(),
            verdict.disposition.as_str()
        );
        if verdict.spf_aligned {
            line.push_str(", spf aligned");
        }
        if let Some(d) = &verdict.dkim_aligned {
            line.push_str(&format!(", dkim aligned d={d}"));
        }
        if verdict.sampled_out {
            line.push_str(&format!(", sampled out by pct={}", found.record.pct));
        }
        self.common.log(cx, Level::Info, format_args!("{line}"));
        DmarcCheck {
            result: verdict.result,
            from_domain: Some(from),
            refuse: (verdict.disposition == Policy::Reject).then_some(FAILED),
            found: Some(found),
            verdict: Some(verdict),
            why: None,
        }
    }

    /// The report row of a checked message with a policy.
    fn row(&self, cx: &Cx, txn: &Transaction, check: &DmarcCheck) -> Option<Row> {
        let (found, verdict) = (check.found.as_ref()?, check.verdict.as_ref()?);
        let rec = &found.record;
        let local = verdict.disposition == Policy::Reject && self.common.args.reject == Reject::No;
        let spf = txn.notes.get::<SpfCheck>().map(|s| {
            let scope = match s.identity {
                Identity::MailFrom => "mfrom",
                Identity::Helo => "helo",
            };
            (scope, s.domain.clone(), s.verdict.result.as_str())
        });
        let dkim = txn.notes.get::<DkimResults>().map_or(Vec::new(), |r| {
            r.0.iter()
                .map(|s| (s.domain.clone(), s.selector.clone(), s.result))
                .collect()
        });
        Some(Row {
            time: Some(cx.svc.now()),
            source_ip: client_ip(cx).to_string(),
            header_from: check.from_domain.clone().unwrap_or_default(),
            envelope_from: txn.sender.domain().to_string(),
            envelope_to: txn
                .recipients
                .first()
                .map_or(String::new(), |r| r.addr.domain().to_string()),
            policy_domain: found.domain.clone(),
            published: format!(
                "p={},sp={},adkim={},aspf={},pct={}",
                rec.p.as_str(),
                rec.sp.map_or("-", Policy::as_str),
                rec.adkim.as_str(),
                rec.aspf.as_str(),
                rec.pct
            ),
            rua: rec.rua.clone(),
            disposition: match local {
                true => "none",
                false => verdict.disposition.as_str(),
            },
            dkim_aligned: verdict.dkim_aligned.is_some(),
            spf_aligned: verdict.spf_aligned,
            reason: match (local, verdict.sampled_out) {
                (true, _) => "local_policy",
                (_, true) => "sampled_out",
                _ => "",
            },
            dkim,
            spf,
        })
    }

    /// Appends the row to today's report file, on the blocking pool.
    async fn record(&self, cx: &Cx, row: Row) {
        let Some(dir) = &self.report_dir else {
            return;
        };
        let path = row.path(dir);
        let line = row.line();
        let shown = path.display().to_string();
        match blocking(&*cx.svc, move || report::append(&path, &line)).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                let msg = format_args!("cannot write report data to {shown}: {e}");
                self.common.log(cx, Level::Error, msg);
            }
            None => {
                let msg = format_args!("writing report data to {shown} failed");
                self.common.log(cx, Level::Error, msg);
            }
        }
    }

    /// Refuses as `reject` and `reject_type` say: `550 5.7.1 <text>` for good.
    fn refuse(&self, cx: &mut Cx, text: &'static str) -> Outcome {
        let permanent = match self.common.args.reject_type {
            RejectType::Perm => Some(false),
            RejectType::Disconnect => Some(true),
            RejectType::Temp | RejectType::TempDisconnect => None,
        };
        match (self.common.args.reject, permanent) {
            (Reject::Yes, Some(disconnect)) => {
                self.common
                    .log(cx, Level::Info, format_args!("reject, {text}"));
                Outcome::Done(Some(Reply {
                    code: 550,
                    enhanced: Some(Cow::Borrowed("5.7.1")),
                    lines: vec![Cow::Borrowed(text)],
                    disconnect,
                }))
            }
            (Reject::Yes, None) => self.common.reject(cx, format!("4.7.1 {text}")),
            _ => self.common.reject(cx, format!("5.7.1 {text}")),
        }
    }
}

impl Plugin for Dmarc {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataHeadersEnd, Hook::DataPostHeaders, Hook::DataPost])
    }

    fn data_headers_end<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        // Ask now, while the body is still coming; a header section not all in memory waits
        // for data_post_headers.
        if txn.body.header_end.is_some() && !self.skip(cx, txn) {
            let asked = self.ask(cx, txn);
            txn.notes.set(asked);
        }
        Step::DECLINED
    }

    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.skip(cx, txn) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip, relay, authenticated or whitelisted client"),
            );
            return Step::DECLINED;
        }
        let asked = match txn.notes.take::<Asked>() {
            Some(asked) => asked,
            None => self.ask(cx, txn),
        };
        Step::pending(async move {
            let check = self.check(cx, txn, asked).await;
            if let Some(row) = self.row(cx, txn, &check) {
                self.record(cx, row).await;
            }
            let quarantine = check
                .verdict
                .as_ref()
                .is_some_and(|v| v.disposition == Policy::Quarantine);
            if let (true, Some(d)) = (quarantine, &check.from_domain) {
                txn.prepend_header("X-DMARC-Quarantine", &format!("yes (header.from={d})"));
            }
            txn.notes
                .get_or_insert_with(AuthResults::default)
                .0
                .push(check.clause());
            txn.notes.set(check);
            Outcome::Declined
        })
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        match txn.notes.get::<DmarcCheck>().and_then(|c| c.refuse) {
            Some(text) => Step::Ready(self.refuse(cx, text)),
            None => Step::DECLINED,
        }
    }
}
