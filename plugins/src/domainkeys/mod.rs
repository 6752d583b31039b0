//! # domainkeys — verify DomainKeys signatures (RFC 4870, historic)
//!
//! ## Synopsis
//!
//! ```text
//! domainkeys [reject 0|1|naughty] [reject_type perm|temp|disconnect] [warn_only 0|1] [loglevel N] [timeout SECONDS]
//! ```
//!
//! ## Description
//!
//! DomainKeys is DKIM's predecessor, historic since 2007; some senders still add a
//! `DomainKey-Signature`. This plugin checks it as qpsmtpd's `domainkeys` did (there through
//! `Mail::DomainKeys`) and reports the result in the core's Authentication-Results header:
//! `domainkeys=<result> [(<reason>)] header.d=<d> header.from=<sender>` (RFC 8601 §2.7.1 and
//! its method registry). A message without a DomainKey-Signature is skipped, without a clause.
//!
//! **What is checked.** At most [`MAX_SIGNATURES`] (3) signatures, top to bottom (a signer
//! adds one; the rest are logged and reported by one `domainkeys=policy` clause). For each:
//! the tags (`a=rsa-sha1`, `q=dns`, `c=simple` or `nofws`, `s=`, `d=`, `h=`, `b=`); the
//! sending address, from `Sender:` if present, else `From:`, which must be one mailbox in
//! `d=` or a subdomain of it and must be among the signed fields; the key, a TXT record at
//! `<s>._domainkey.<d>` asked through the worker's DNS client (all signatures' questions
//! leave at once), parsed by the `dkim` plugin's key parser (`k=rsa`, `p=`, `t=y`, plus `g=`,
//! the local parts the key may sign for); then RSA-SHA1 over the fields that follow the
//! signature (those `h=` names, if given) and the body, canonicalized as `c=` says.
//!
//! | result | when |
//! |---|---|
//! | `pass` | the signature verifies |
//! | `fail` | it does not (a changed body or signed field), or `d=` is not the sender's domain |
//! | `permerror` | a malformed signature (missing or bad tag, `a=` other than `rsa-sha1`, `q=` other than `dns`, unknown `c=`), no single sending mailbox, the sender's field not signed, no key (NXDOMAIN, no record), an unusable or revoked key, an RSA key outside 1024–4096 bits, `g=` not matching the sender |
//! | `temperror` | the key lookup timed out or failed (SERVFAIL, no resolver), or the spooled message could not be read |
//! | `policy` | the message body is over 4 MiB (not verified), or the summary of signatures past the limit |
//!
//! **Verdict** (at `data_post`, as qpsmtpd): a message whose signature failed, with none that
//! passed and a key not in testing mode (`t=y`), is refused as `reject` and `reject_type`
//! say (default `552 5.7.1 DomainKeys signature validation failed`) only when
//! the sender's domain says it signs all its mail: its policy record `_domainkey.<domain>`
//! has `o=-` and no `t=y` (RFC 4870 §3.6). Otherwise a failure is logged and reported only.
//! `temperror` and `permerror` never refuse, and **a DNS failure never refuses a message**.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject` | `1` | `0`: log only; `1`: refuse as above; `naughty`: leave it to `naughty` |
//! | `reject_type` | `perm` | `perm`, `temp`, `disconnect`, `temp_disconnect` |
//! | `warn_only` | `0` | `1`: never refuse (qpsmtpd's deprecated spelling of `reject 0`) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//! | `timeout` | `10` | seconds to wait for the key and policy answers (a ringsmtpd addition) |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `data_post_headers` (verify, report), `data_post` (refuse). qpsmtpd checked at
//! `data_post`; the result is needed before the core writes Authentication-Results.
//!
//! ## Notes
//!
//! Reads `is_immune`'s notes: relay clients and whitelisted hosts or senders are skipped.
//! Writes the transaction's `shared::AuthResults` (one `domainkeys=` clause per signature)
//! and a private transaction note with the verdict for `data_post`.
//!
//! ## Standards
//!
//! RFC 4870 (DomainKeys: §3.2 the sending domain, §3.3 the signature, §3.4 canonicalization,
//! §3.2.3 key records, §3.6 the sender's policy), RFC 8601 (the `domainkeys` method,
//! `header.d`, `header.from`).
//!
//! ## Security
//!
//! Signatures, key records and messages are hostile input: tag lists are parsed strictly (the
//! `dkim` plugin's parser: 64 tags, junk in base64 refused), `h=` holds 64 names at most, RSA
//! keys below 1024 bits (common for DomainKeys, and forgeable) or above 4096 are refused. At
//! most 3 signatures cost a DNS question and an RSA check each; the body is canonicalized
//! once per `c=` in use, and at most 4 MiB of it is kept (a larger message is not verified),
//! and a check over more than 64 KiB runs on the blocking pool. Text from the message reaches
//! log lines and the header only cleaned (printable ASCII without `;()"\`, 256 characters).

mod canon;
mod signature;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use ring::signature as sig;
use ringsmtpd_plugin_api::args::{key_values, parse_timeout};
use ringsmtpd_plugin_api::dns::{DnsError, DnsLookup, DnsResult, QType};
use ringsmtpd_plugin_api::dnsutil::{within, Deadline};
use ringsmtpd_plugin_api::mime::read_message_from;
use ringsmtpd_plugin_api::shared::{is_immune, AuthResults};
use ringsmtpd_plugin_api::{
    blocking, headers, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Reject, Step, Transaction,
};

use crate::dkim::key::{self, PublicKey};
use crate::dkim::signature::{clean, tag_list, Algorithm};
use crate::dkim::verify::Verdict;
use canon::{BodyCanon, Canon};
use signature::DkSignature;

/// Signatures verified per message at most.
pub const MAX_SIGNATURES: usize = 3;
/// The most of a body canonicalized and checked.
const MAX_BODY: u64 = 4 << 20;
/// Signed data above this size is checked on the blocking pool.
const INLINE_CHECK: usize = 64 << 10;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Key records tried per answer at most.
const MAX_KEY_RECORDS: usize = 4;

pub struct DomainKeys {
    common: Common,
    timeout: Duration,
}

/// Builds `domainkeys` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (mut common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut timeout = DEFAULT_TIMEOUT;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match (key, value) {
            ("timeout", v) => timeout = parse_timeout(v).map_err(|e| init.error(e))?,
            ("warn_only", "0") => {}
            ("warn_only", "1") => common.args.reject = Reject::No,
            ("warn_only", _) => return Err(init.error("warn_only takes 0 or 1")),
            (k, _) => return Err(init.unknown(k)),
        }
    }
    Ok(Box::new(DomainKeys { common, timeout }))
}

/// The result of one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    verdict: Verdict,
    reason: Option<&'static str>,
    /// `d=`, cleaned (empty if unknown).
    domain: String,
    /// The sending address, cleaned (empty if none).
    from: String,
    testing: bool,
}

/// The verdict for `data_post` (private).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refuse;

/// One field or malformed line of the header section: its bytes (no line end) and its
/// lowercased name (`None` for a malformed line).
struct Item<'h> {
    bytes: &'h [u8],
    name: Option<String>,
    value: &'h [u8],
}

fn items(header: &[u8]) -> Vec<Item<'_>> {
    let base = header.as_ptr() as usize;
    headers::fields(header)
        .map(|item| match item {
            Ok(f) => {
                // Both borrow `header`: addresses minus its start are offsets.
                let start = f.name().as_ptr() as usize - base;
                let end = f.raw_value().as_ptr() as usize - base + f.raw_value().len();
                Item {
                    bytes: &header[start..end],
                    name: Some(f.name().to_ascii_lowercase()),
                    value: f.raw_value(),
                }
            }
            Err(m) => Item {
                bytes: m.text,
                name: None,
                value: &[],
            },
        })
        .collect()
}

/// The sending mailbox: `Sender:` if present, else `From:`; its field's index.
struct SenderField {
    index: usize,
    local: String,
    domain: String,
}

fn sender_field(items: &[Item<'_>]) -> Option<SenderField> {
    let find = |name: &str| items.iter().position(|i| i.name.as_deref() == Some(name));
    let index = find("sender").or_else(|| find("from"))?;
    let value = String::from_utf8_lossy(items[index].value);
    let (local, domain) = signature::mailbox(&value)?;
    Some(SenderField {
        index,
        local,
        domain,
    })
}

/// A signature whose key was asked for.
struct Pending {
    sig: DkSignature,
    /// The signed header fields, canonicalized.
    head: Vec<u8>,
    lookup: DnsLookup,
}

enum Entry {
    Done(Report),
    Pending(Box<Pending>),
}

impl DomainKeys {
    /// Checks the signatures; `None` if the message has none.
    async fn check(&self, cx: &mut Cx, txn: &Transaction) -> Option<(Vec<Report>, usize)> {
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let header = txn.body.header_bytes();
        let items = items(header);
        let signatures: Vec<usize> = (items.iter().enumerate())
            .filter(|(_, i)| i.name.as_deref() == Some("domainkey-signature"))
            .map(|(n, _)| n)
            .collect();
        if signatures.is_empty() {
            return None;
        }
        let skipped = signatures.len().saturating_sub(MAX_SIGNATURES);
        let sender = sender_field(&items);
        let from = sender.as_ref().map_or(String::new(), |s| {
            clean(&format!("{}@{}", s.local, s.domain))
        });
        let mut entries = Vec::new();
        for &at in signatures.iter().take(MAX_SIGNATURES) {
            let report = |verdict, why, domain: &str| {
                Entry::Done(Report {
                    verdict,
                    reason: Some(why),
                    domain: clean(domain),
                    from: from.clone(),
                    testing: false,
                })
            };
            let sig = match signature::parse(items[at].value) {
                Ok(s) => s,
                Err(bad) => {
                    entries.push(report(Verdict::PermError, bad.why, &bad.domain));
                    continue;
                }
            };
            let Some(sender) = &sender else {
                let why = "no single sending mailbox (Sender or From)";
                entries.push(report(Verdict::PermError, why, &sig.domain));
                continue;
            };
            let d = &sig.domain;
            if sender.domain != *d && !sender.domain.ends_with(&format!(".{d}")) {
                let why = "d= is not the sender's domain";
                entries.push(report(Verdict::Fail, why, d));
                continue;
            }
            let signed = |n: usize| {
                n > at
                    && match (&sig.headers, &items[n].name) {
                        (None, _) => true,
                        (Some(h), Some(name)) => h.contains(name),
                        (Some(_), None) => false,
                    }
            };
            if !signed(sender.index) {
                let why = "the sender's field is not signed";
                entries.push(report(Verdict::PermError, why, d));
                continue;
            }
            let mut head = Vec::new();
            for (_, item) in items.iter().enumerate().filter(|(n, _)| signed(*n)) {
                canon::push_field(&mut head, sig.canon, item.bytes);
            }
            let name = format!("{}._domainkey.{}", sig.selector, sig.domain);
            let lookup = cx.svc.dns_query(&name, QType::Txt);
            entries.push(Entry::Pending(Box::new(Pending { sig, head, lookup })));
        }
        // The questions are out: canonicalize the body meanwhile, once per `c=` in use.
        let canons: Vec<Canon> = [Canon::Simple, Canon::Nofws]
            .into_iter()
            .filter(|c| {
                entries
                    .iter()
                    .any(|e| matches!(e, Entry::Pending(p) if p.sig.canon == *c))
            })
            .collect();
        let bodies = self.bodies(cx, txn, &canons).await;
        let mut timer = deadline.timer(&*cx.svc);
        let mut reports = Vec::with_capacity(entries.len());
        for entry in entries {
            let report = match entry {
                Entry::Done(r) => r,
                Entry::Pending(mut p) => {
                    let answer = within(&mut p.lookup, &mut timer).await;
                    let body = bodies.get(p.sig.canon);
                    let local = sender.as_ref().map_or("", |s| s.local.as_str());
                    let (verdict, reason, testing) =
                        evaluate(&*cx.svc, &p, answer, body, local).await;
                    Report {
                        verdict,
                        reason,
                        domain: clean(&p.sig.domain),
                        from: from.clone(),
                        testing,
                    }
                }
            };
            self.log_report(cx, &report);
            reports.push(report);
        }
        if skipped > 0 {
            let msg =
                format_args!("{skipped} more signatures not verified (limit {MAX_SIGNATURES})");
            self.common.log(cx, Level::Warn, msg);
        }
        Some((reports, skipped))
    }

    /// The body (the empty line after the header section and what follows), canonicalized
    /// for each of `canons`.
    async fn bodies(&self, cx: &Cx, txn: &Transaction, canons: &[Canon]) -> Body {
        let b = &txn.body;
        let Some(end) = b.header_end else {
            // No empty line: the message is all header.
            return Body::Read(canons.iter().map(|&c| (c, Arc::new(Vec::new()))).collect());
        };
        if b.len.saturating_sub(end as u64) > MAX_BODY {
            return Body::TooLarge;
        }
        if canons.is_empty() {
            return Body::Read(Vec::new());
        }
        let start: Vec<BodyCanon> = canons
            .iter()
            .map(|&c| BodyCanon::new(c, Vec::new(), true))
            .collect();
        let feed = |canons: &mut Vec<BodyCanon>, chunk: &[u8]| {
            for c in canons.iter_mut() {
                c.feed(chunk);
            }
        };
        match read_message_from(&*cx.svc, b, end as u64, start, feed).await {
            Ok(done) => Body::Read(
                canons
                    .iter()
                    .zip(done)
                    .map(|(&c, b)| (c, Arc::new(b.finish())))
                    .collect(),
            ),
            Err(e) => {
                let msg = format_args!("cannot read the spooled message: {e}");
                self.common.log(cx, Level::Error, msg);
                Body::Unreadable
            }
        }
    }

    /// Whether the sending domain says it signs all its mail (`o=-`, not testing).
    async fn signs_all(&self, cx: &Cx, domain: &str) -> bool {
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let mut lookup = cx
            .svc
            .dns_query(&format!("_domainkey.{domain}"), QType::Txt);
        let Ok(answer) = within(&mut lookup, &mut deadline.timer(&*cx.svc)).await else {
            return false; // a DNS failure never refuses
        };
        let record = answer.txt().take(MAX_KEY_RECORDS).find_map(|r| {
            let tags = tag_list(r).ok()?;
            let get = |n: &str| tags.iter().find(|(t, _)| *t == n).map(|(_, v)| *v);
            Some((get("o") == Some("-"), get("t") == Some("y")))
        });
        matches!(record, Some((true, false)))
    }

    fn log_report(&self, cx: &Cx, r: &Report) {
        let level = match r.verdict {
            Verdict::Pass => Level::Info,
            _ => Level::Notice,
        };
        self.common.log(
            cx,
            level,
            format_args!(
                "{}, d={} from={}{}{}",
                r.verdict,
                r.domain,
                r.from,
                r.reason.map_or(String::new(), |why| format!(": {why}")),
                if r.testing { " (testing key)" } else { "" },
            ),
        );
    }
}

/// The canonical bodies.
enum Body {
    Read(Vec<(Canon, Arc<Vec<u8>>)>),
    TooLarge,
    Unreadable,
}

impl Body {
    /// The body in `canon`, or the result a signature gets when there is none.
    fn get(&self, canon: Canon) -> Result<Arc<Vec<u8>>, (Verdict, &'static str)> {
        match self {
            Body::Read(b) => Ok(b
                .iter()
                .find(|(c, _)| *c == canon)
                .map(|(_, b)| b.clone())
                .unwrap_or_default()),
            Body::TooLarge => Err((Verdict::Policy, "message too large to verify")),
            Body::Unreadable => Err((Verdict::TempError, "message unreadable")),
        }
    }
}

/// The result of a signature, its reason and whether its key is in testing mode.
async fn evaluate(
    svc: &dyn ringsmtpd_plugin_api::Services,
    p: &Pending,
    answer: DnsResult,
    body: Result<Arc<Vec<u8>>, (Verdict, &'static str)>,
    local: &str,
) -> (Verdict, Option<&'static str>, bool) {
    let answer = match answer {
        Ok(a) => a,
        Err(DnsError::BadName) => return (Verdict::PermError, Some("bad key name"), false),
        Err(DnsError::Timeout) => return (Verdict::TempError, Some("key lookup timed out"), false),
        Err(_) => return (Verdict::TempError, Some("key lookup failed"), false),
    };
    if answer.nxdomain {
        return (Verdict::PermError, Some("no key"), false);
    }
    let mut key = Err("no key record");
    for record in answer.txt().take(MAX_KEY_RECORDS) {
        key = key::parse(record, Algorithm::RsaSha256).and_then(|k| {
            let tags = tag_list(record)?;
            let g = tags.iter().find(|(t, _)| *t == "g").map(|(_, v)| *v);
            match g.is_none_or(|g| granularity_ok(g, local)) {
                true => Ok(k),
                false => Err("g= does not cover the sender"),
            }
        });
        if key.is_ok() {
            break;
        }
    }
    let key = match key {
        Ok(k) => k,
        Err(why) => return (Verdict::PermError, Some(why), false),
    };
    let testing = key.testing;
    let body = match body {
        Ok(b) => b,
        Err((verdict, why)) => return (verdict, Some(why), testing),
    };
    let PublicKey::Rsa { n, e } = key.key else {
        return (Verdict::PermError, Some("not an RSA key"), testing);
    };
    let mut data = p.head.clone();
    data.extend_from_slice(&body);
    let b = p.sig.b.clone();
    let check = move || {
        sig::RsaPublicKeyComponents { n: &n, e: &e }
            .verify(
                &sig::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                &data,
                &b,
            )
            .is_ok()
    };
    let ok = if p.head.len() + body.len() > INLINE_CHECK {
        blocking(svc, check).await.unwrap_or(false)
    } else {
        check()
    };
    match ok {
        true => (Verdict::Pass, None, testing),
        false => (Verdict::Fail, Some("signature did not verify"), testing),
    }
}

/// `g=` of a key record against the sender's local part: empty or `*` allow any, else the
/// pattern with at most one `*` standing for any text (RFC 4870 §3.2.3).
fn granularity_ok(g: &str, local: &str) -> bool {
    match g.split_once('*') {
        _ if g.is_empty() => true,
        None => g == local,
        Some((pre, post)) => {
            local.len() >= pre.len() + post.len() && local.starts_with(pre) && local.ends_with(post)
        }
    }
}

/// The Authentication-Results clause of a report.
fn clause(r: &Report) -> String {
    let props = [
        ("header.d", r.domain.as_str()),
        ("header.from", r.from.as_str()),
    ];
    AuthResults::clause("domainkeys", r.verdict, r.reason, &props)
}

impl Plugin for DomainKeys {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPostHeaders, Hook::DataPost])
    }

    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        Step::pending(async move {
            let Some((reports, skipped)) = self.check(cx, txn).await else {
                self.common
                    .log(cx, Level::Info, format_args!("skip, unsigned"));
                return Outcome::Declined;
            };
            let mut clauses: Vec<String> = reports.iter().map(clause).collect();
            if skipped > 0 {
                clauses.push(format!(
                    "domainkeys=policy ({skipped} more signatures not verified)"
                ));
            }
            txn.notes
                .get_or_insert_with(AuthResults::default)
                .0
                .extend(clauses);
            let pass = reports.iter().any(|r| r.verdict == Verdict::Pass);
            let failed = reports
                .iter()
                .find(|r| r.verdict == Verdict::Fail && !r.testing);
            if let (false, Some(r)) = (pass, failed) {
                let domain = r.from.rsplit_once('@').map_or("", |(_, d)| d).to_string();
                if !domain.is_empty() && self.signs_all(cx, &domain).await {
                    txn.notes.set(Refuse);
                }
            }
            Outcome::Declined
        })
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if txn.notes.take::<Refuse>().is_none() {
            return Step::DECLINED;
        }
        self.common.fail(
            cx,
            format_args!("signature invalid, the sender's domain signs all its mail"),
            "5.7.1 DomainKeys signature validation failed",
        )
    }
}
