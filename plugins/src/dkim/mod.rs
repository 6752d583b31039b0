//! # dkim — verify DKIM signatures; sign the mail of relay and authenticated clients
//!
//! ## Synopsis
//!
//! ```text
//! dkim [reject 0|1|naughty] [reject_type perm|temp|disconnect] [loglevel N] [timeout SECONDS]
//! ```
//!
//! ## Description
//!
//! Mail from relay clients (`relay`) and authenticated clients (AUTH) is
//! **signed** with its domain's key from `config/dkim/` (see **Signing** below), and not
//! verified, as qpsmtpd does. All other mail is **verified**.
//!
//! Every `DKIM-Signature` of an incoming message is verified (RFC 6376 §6), at most
//! [`MAX_SIGNATURES`] (10) of them, top to bottom: real mail carries one to three (the
//! author's domain, a mailing list, an ESP); the rest get one log line and one
//! `dkim=policy (N more signatures not verified)` clause, so a message with thousands of
//! signatures costs no more than one with ten.
//!
//! **When.** At `data_post_headers` the signatures are parsed, the key questions
//! (`<s>._domainkey.<d>` TXT) for all of them leave at once through the worker's DNS client,
//! the body is hashed as it streams by (a spooled message on the blocking pool, in 64 KiB
//! chunks, never loaded whole; the core keeps the header section in memory and refuses one
//! over 256 KiB with 552 5.3.4, so it is never read twice; given a body without its header
//! section in memory, the plugin reads it from the spool file, up to 1 MiB), then the answers
//! are awaited for at most `timeout` seconds from when the questions left. Each signature's
//! result goes into the `shared::AuthResults` note, so the core's Authentication-Results
//! header carries them. That hook cannot refuse mail (qpsmtpd HEAD's rule), so the verdict is
//! kept in a transaction note and applied at `data_post`, qpsmtpd's hook for this plugin.
//!
//! **Results** (RFC 8601 §2.7.1), one clause per signature:
//! `dkim=<result> [(<reason>)] header.d=<d> header.i=<i> header.b=<first 8 characters of b=>`
//! (RFC 6008). Values come from the signature, cleaned: printable ASCII without blanks, `;`,
//! `(`, `)`, `"` or `\` (others become `?`), at most 256 characters. Reasons are fixed texts,
//! never text from the message or DNS.
//!
//! | result | when |
//! |---|---|
//! | `pass` | the body hash and the signature verify |
//! | `fail` | the body hash or the signature does not verify (a changed body or signed header), or `l=` is longer than the body |
//! | `policy` | the signature verifies but its `l=` covers only part of the body: the appended content is not signed (reason `l= covers only part of the body`); also the summary clause for signatures over the limit |
//! | `permerror` | a malformed signature (missing required tag, duplicate tag, bad base64, `h=` without `From`, `i=` outside `d=`, unknown algorithm or canonicalization, `rsa-sha1`, which RFC 8301 §3.1 says MUST NOT be considered valid), expired (`x=` passed), no key (NXDOMAIN, no TXT record), an unusable key record (wrong `k=` for `a=`, `h=` without sha256, `s=` without email, not a key, RSA outside 1024–4096 bits), a revoked key (`p=` empty), `i=` in a subdomain under a key with `t=s` |
//! | `temperror` | the key lookup timed out or failed (SERVFAIL, REFUSED, no resolver), or the spooled message could not be read |
//! | `permerror` (one clause, nothing verified) | the header section is over 1 MiB (only when it had to be read from the spool file) |
//! | `none` | no DKIM-Signature at all (one `dkim=none` clause) |
//!
//! **Verdict** (at `data_post`, as qpsmtpd's `handle_sig_fail`): a message with a `fail`
//! signature and no `pass` one is refused as `reject` and `reject_type` say (default: `552
//! 5.7.20 DKIM signature invalid`), unless its key has `t=y` (testing: RFC 6376 §3.6.1 says
//! such mail must not be treated differently from unsigned mail). Nothing else refuses:
//! `permerror`, `policy` and `none` are logged and reported, and **`temperror` never refuses
//! a message** (qpsmtpd deferred it with 4xx; a DNS outage here costs no mail). qpsmtpd also
//! refused unsigned or badly signed mail whose domain published an ADSP "sign-all" policy;
//! ADSP (RFC 5617) is historic and is not looked up: DMARC (`dmarc`) is its successor.
//!
//! When a signature passes, `X-DKIM-Authentication: domain: <d>, selector: <s>, result: pass`
//! is added on top of the message, as qpsmtpd did.
//!
//! ### Signing
//!
//! **Which key.** The domain of the first address in the From field, else (no From domain,
//! or no key for it) the envelope sender's domain, as qpsmtpd (which used only the latter;
//! From comes first here because DMARC aligns with From). A domain without a key directory
//! uses its nearest parent's (`mail.example.org` signs with `example.org`'s key, `d=example.org`:
//! relaxed alignment passes), down to two labels. A domain directory that is a symbolic link
//! to another's (`ln -s example.org client.com`) signs with that key **as that domain**
//! (`d=example.org`), as in qpsmtpd. Mail for which no key is found is passed on unsigned,
//! with one log line (`skip, no key for <from domain> or <sender domain>`).
//!
//! **The signature.** `c=relaxed/relaxed`, `a=rsa-sha256` or `a=ed25519-sha256` (from the key),
//! `d=`, `s=` (the `selector` file), `t=` (now), no `x=`, `l=` or `i=`, the body hash over the
//! whole body, streamed (a spooled message on the blocking pool, in 64 KiB chunks, never
//! loaded whole), and `h=` listing each of these fields once per instance present: From
//! (**oversigned**: listed once more than it occurs, so a From added later breaks the
//! signature instead of being shown as the author), Sender, Reply-To, Subject, Date,
//! Message-ID, To, Cc, In-Reply-To, References, MIME-Version, Content-Type,
//! Content-Transfer-Encoding, Content-ID, Content-Description, Content-Disposition, the
//! Resent-* fields and the List-* fields (RFC 6376 §5.4.1), 256 names at most (the bottom
//! instances of a field repeated beyond that). Received, Return-Path and other fields are not
//! signed; a message without a From field is not signed at all. The RSA signature is computed on the blocking pool (about a
//! millisecond for 2048 bits); Ed25519 on the worker. The field is prepended (qpsmtpd's
//! `header->add(.., 0)`), folded to 78 columns, `b=` on lines of its own. A message the
//! plugin cannot read (spool error) or sign is passed on unsigned, with a log line.
//!
//! **Keys.** `ringsmtpd dkim-keygen DOMAIN SELECTOR [--ed25519] [--bits N] [--force] [--config
//! DIR]` writes a new key (RSA 2048 bits by default, 1024 to 4096 with `--bits`; Ed25519 with
//! `--ed25519`) to `DIR/dkim/DOMAIN/private` (mode 0600), its `selector`, and `dns`, the zone
//! file line to publish, which it also prints:
//!
//! ```text
//! sel1._domainkey.example.org. IN TXT ( "v=DKIM1; k=rsa; p=MIIBIjANBgkqh...(255 bytes)"
//!     "...rest of the key" )
//! ```
//!
//! It refuses to replace an existing key without `--force` (rotate under a new selector:
//! publish the new record before the new key signs). Keys written by `openssl genrsa`
//! (PKCS#1 or PKCS#8 PEM), `opendkim-genkey` or `openssl genpkey -algorithm ed25519` work
//! as they are.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject` | `1` | `0`: log only; `1`: refuse a failed signature; `naughty`: leave it to `naughty` |
//! | `reject_type` | `perm` | `perm`, `temp`, `disconnect`, `temp_disconnect` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//! | `timeout` | `10` | seconds to wait for the key answers (a ringsmtpd addition; keep it below `plugin_timeout`) |
//!
//! ## Config files
//!
//! Signing reads qpsmtpd's layout, once, when the config loads (start and SIGHUP):
//!
//! | file | content |
//! |---|---|
//! | `config/dkim/DOMAIN/private` | the private key, PEM: RSA 1024–4096 bits (`RSA PRIVATE KEY` or `PRIVATE KEY`) or Ed25519 (`PRIVATE KEY`, RFC 8463); unencrypted |
//! | `config/dkim/DOMAIN/selector` | the selector, first line |
//! | `config/dkim/DOMAIN` as a symbolic link | sign DOMAIN's mail with the target directory's key and domain |
//!
//! Other files (`public`, `dns`, qpsmtpd's `dkim_key_gen.sh`) and names starting with a dot
//! are ignored. A directory without `config/dkim/` signs nothing. A domain directory with a
//! missing or unreadable `selector` or `private`, a key that does not parse, an RSA key
//! outside 1024–4096 bits, or a `private` readable or writable by others (or writable by its
//! group) is a config error naming the file: the server does not start, a reload is
//! refused.
//!
//! ## Hooks
//!
//! `data_post_headers` (sign, or verify and report), `data_post` (refuse).
//!
//! ## Notes
//!
//! Relay and authenticated clients (`relay_client`, AUTH) are signed, not checked; reads
//! `is_immune`'s notes: whitelisted hosts or senders are not checked either.
//! Writes the transaction's `shared::AuthResults` (one `dkim=` clause per signature),
//! `shared::DkimResults` (each signature's result, domain and selector, for `dmarc`) and a
//! private transaction note with the verdict for `data_post`.
//!
//! ## Standards
//!
//! RFC 6376 (DKIM: §3.2 tag lists, §3.4 canonicalization, §3.5 the signature, §3.6.1 key
//! records, §3.7 hashes, §5 signing, §6.1 verification, §8.15 oversigning), RFC 8301
//! (rsa-sha1 and keys below 1024 bits are not valid), RFC 8463 (Ed25519-SHA256), RFC 8601
//! (Authentication-Results), RFC 6008 (`header.b`), RFC 7372 (X.7.20), RFC 8017 (PKCS #1),
//! RFC 5958 (PKCS #8 keys), RFC 7468 (PEM).
//!
//! ## Security
//!
//! Signatures, key records and messages are hostile input. Tag lists are parsed strictly and
//! bounded (64 tags, 256 names in `h=`); base64 with junk is refused; DER in keys is read
//! with bounds checks; RSA keys above 4096 bits are refused (verification cost), below 1024
//! refused (RFC 8301). Signatures verified per message are capped at 10, each costs one DNS
//! question, one pass over the header fields it names, and one RSA or Ed25519 check; the body
//! is read once however many signatures there are (one hasher per distinct canonicalization
//! and `l=`). `l=` is never a plain pass for appended content. Text from signatures is
//! cleaned before it reaches a log line or a header. Nothing here panics on input; a DNS
//! failure is `temperror`, which never refuses mail.
//!
//! Private keys: refused unless only their owner (and group, for reading) may access them, as
//! OpenDKIM's `RequireSafeKeys`; read once at config load, never logged. RSA signing uses
//! ring (constant time) for 2048 bits and more; ring takes nothing smaller, so 1024–2047-bit
//! keys are signed by the `rsa` crate with blinding (prefer 2048). Signing applies only to
//! relay and authenticated clients, and a signature's domain is a key directory's name, never
//! text from the message; the From domain only selects the key. Any relay or authenticated
//! client can have its mail signed for any domain with a key here (as in qpsmtpd): where
//! users must not send as each other's domains, refuse such senders before this plugin.

mod canon;
pub mod key;
pub mod keygen;
mod keys;
mod private;
mod sign;
pub mod signature;
pub(crate) mod verify;

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::time::{Duration, UNIX_EPOCH};

use memchr::memmem;
use ringsmtpd_plugin_api::args::{key_values, parse_timeout};
use ringsmtpd_plugin_api::dns::{DnsError, DnsLookup, DnsResult, QType};
use ringsmtpd_plugin_api::dnsutil::{within, Deadline, Timer};
use ringsmtpd_plugin_api::mime::{read_message, read_message_from};
use ringsmtpd_plugin_api::shared::{is_immune, AuthResults, DkimResult, DkimResults};
use ringsmtpd_plugin_api::{
    Body, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Services, Step, Transaction,
};

use canon::BodyHasher;
use signature::{Ident, Signature};
use verify::{HeaderIndex, Verdict};

/// Signatures verified per message at most.
pub const MAX_SIGNATURES: usize = 10;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Key records tried per answer at most (a name should hold one).
const MAX_KEY_RECORDS: usize = 4;

pub struct Dkim {
    common: Common,
    timeout: Duration,
    /// The signing keys (`config/dkim/`).
    keys: keys::KeyDir,
}

/// Builds `dkim` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut timeout = DEFAULT_TIMEOUT;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match key {
            "timeout" => timeout = parse_timeout(value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    let keys = match init.config.dir() {
        Some(dir) => keys::KeyDir::load(&dir.join("dkim"))?,
        None => keys::KeyDir::default(),
    };
    Ok(Box::new(Dkim {
        common,
        timeout,
        keys,
    }))
}

/// The result of one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    verdict: Verdict,
    reason: Option<&'static str>,
    ident: Ident,
    /// `s=`, cleaned (empty if unknown).
    selector: String,
    /// The key is in testing mode (`t=y`).
    testing: bool,
}

/// What `data_post_headers` found, for `data_post` (private: no other plugin reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Checked {
    reports: Vec<Report>,
    /// Signatures over [`MAX_SIGNATURES`], not verified.
    skipped: usize,
    /// The header section could not be read: nothing was verified.
    unchecked: Option<(Verdict, &'static str)>,
}

impl Checked {
    /// Refuse: a failed signature (not in testing mode) and none that passed.
    fn refuse(&self) -> bool {
        let pass = self.reports.iter().any(|r| r.verdict == Verdict::Pass);
        let fail = self
            .reports
            .iter()
            .any(|r| r.verdict == Verdict::Fail && !r.testing);
        fail && !pass
    }
}

/// A signature on its way: parsed, its data canonicalized, its key asked for.
struct Pending {
    sig: Signature,
    data: Vec<u8>,
    lookup: DnsLookup,
    hasher: usize,
}

enum Entry {
    Done(Report),
    Pending(Box<Pending>),
}

impl Dkim {
    async fn check(&self, cx: &mut Cx, txn: &Transaction) -> Checked {
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let (header, body_at) = match header_section(&*cx.svc, &txn.body).await {
            Ok(h) => h,
            Err((verdict, why)) => {
                self.common
                    .log(cx, Level::Error, format_args!("{verdict}, {why}"));
                return Checked {
                    reports: Vec::new(),
                    skipped: 0,
                    unchecked: Some((verdict, why)),
                };
            }
        };
        let index = HeaderIndex::new(&header);
        let mut entries = Vec::new();
        let mut hashers: Vec<BodyHasher> = Vec::new();
        let mut skipped = 0;
        for (n, (_, field)) in index.signatures().enumerate() {
            if n >= MAX_SIGNATURES {
                skipped += 1;
                continue;
            }
            let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
            let sig = match signature::parse(&field[colon + 1..]) {
                Ok(sig) => sig,
                Err(bad) => {
                    entries.push(Entry::Done(Report {
                        verdict: Verdict::PermError,
                        reason: Some(bad.why),
                        ident: bad.ident,
                        selector: String::new(),
                        testing: false,
                    }));
                    continue;
                }
            };
            let name = format!("{}._domainkey.{}", sig.selector, sig.domain);
            let lookup = cx.svc.dns_query(&name, QType::Txt);
            let hasher = match hashers
                .iter()
                .position(|h| h.is(sig.body_canon, sig.length))
            {
                Some(i) => i,
                None => {
                    hashers.push(BodyHasher::new(sig.body_canon, sig.length));
                    hashers.len() - 1
                }
            };
            let data = index.signed_data(&sig, field);
            entries.push(Entry::Pending(Box::new(Pending {
                sig,
                data,
                lookup,
                hasher,
            })));
        }
        if skipped > 0 {
            self.common.log(
                cx,
                Level::Warn,
                format_args!("{skipped} more signatures not verified (limit {MAX_SIGNATURES})"),
            );
        }
        // The questions are out: hash the body meanwhile.
        let hashes = if hashers.is_empty() {
            Ok(Vec::new())
        } else {
            self.body_hashes(cx, txn, body_at, hashers).await
        };
        let mut timer = deadline.timer(&*cx.svc);
        let now = cx
            .svc
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut reports = Vec::with_capacity(entries.len());
        for entry in entries {
            let report = match entry {
                Entry::Done(r) => r,
                Entry::Pending(p) => {
                    let hash = hashes.as_ref().map(|h| &h[p.hasher]).ok();
                    self.finish(*p, hash, now, &mut timer).await
                }
            };
            self.log_report(cx, &report);
            reports.push(report);
        }
        Checked {
            reports,
            skipped,
            unchecked: None,
        }
    }

    /// Streams the body (after the header section) through every hasher: the hash and the
    /// canonical length for each.
    async fn body_hashes(
        &self,
        cx: &Cx,
        txn: &Transaction,
        skip: u64,
        hashers: Vec<BodyHasher>,
    ) -> Result<Vec<(Vec<u8>, u64)>, ()> {
        let body = &txn.body;
        let feed = |hashers: &mut Vec<BodyHasher>, chunk: &[u8]| {
            for h in hashers.iter_mut() {
                h.feed(chunk);
            }
        };
        match read_message_from(&*cx.svc, body, skip, hashers, feed).await {
            Ok(hashers) => Ok(hashers.into_iter().map(BodyHasher::finish).collect()),
            Err(e) => {
                let msg = format_args!("temperror, cannot read the spooled message: {e}");
                self.common.log(cx, Level::Error, msg);
                Err(())
            }
        }
    }

    /// The result of a signature whose key was asked for.
    async fn finish(
        &self,
        mut p: Pending,
        body: Option<&(Vec<u8>, u64)>,
        now: u64,
        timer: &mut Timer,
    ) -> Report {
        let answer = within(&mut p.lookup, timer).await;
        let mut testing = false;
        let (verdict, reason) = evaluate(&p, answer, body, now, &mut testing);
        Report {
            verdict,
            reason,
            ident: p.sig.ident,
            selector: p.sig.selector,
            testing,
        }
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
                "{}, d={} s={} i={} b={}{}{}",
                r.verdict,
                r.ident.d,
                r.selector,
                r.ident.i,
                r.ident.b,
                r.reason.map_or(String::new(), |why| format!(": {why}")),
                if r.testing { " (testing key)" } else { "" },
            ),
        );
    }
}

/// The bytes of a header section read from a spool file at most.
const MAX_HEADER: u64 = 1 << 20;

/// The header section (with its empty line) and the offset of the body. The core keeps the
/// header section in memory up to 256 KiB, also when it started spooling before the empty
/// line came; a longer one leaves `header_end` unset with only part of it in memory, and it
/// is read from the spool file here.
async fn header_section<'b>(
    svc: &dyn Services,
    body: &'b Body,
) -> Result<(Cow<'b, [u8]>, u64), (Verdict, &'static str)> {
    if let Some(end) = body.header_end {
        return Ok((Cow::Borrowed(body.header_bytes()), end as u64));
    }
    if body.spool.is_none() {
        // No empty line: all header, no body.
        return Ok((Cow::Borrowed(&body.mem), body.len));
    }
    let collect = |buf: &mut Vec<u8>, chunk: &[u8]| {
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(chunk);
        match buf.starts_with(b"\r\n") || memmem::find(&buf[from..], b"\r\n\r\n").is_some() {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    };
    let mut buf = read_message(svc, body, MAX_HEADER, Vec::new(), collect)
        .await
        .map_err(|_| (Verdict::TempError, "cannot read the spooled message"))?;
    let end = match buf.starts_with(b"\r\n") {
        true => Some(2),
        false => memmem::find(&buf, b"\r\n\r\n").map(|i| i + 4),
    };
    match end {
        Some(end) => {
            buf.truncate(end);
            Ok((Cow::Owned(buf), end as u64))
        }
        None if (buf.len() as u64) < MAX_HEADER => {
            let len = buf.len() as u64;
            Ok((Cow::Owned(buf), len))
        }
        None => Err((Verdict::PermError, "header section larger than 1 MiB")),
    }
}

/// The result and reason of a signature, given its key's answer and the body's hash and
/// canonical length (`None`: the message could not be read). `testing`: the key has `t=y`.
fn evaluate(
    p: &Pending,
    answer: DnsResult,
    body: Option<&(Vec<u8>, u64)>,
    now: u64,
    testing: &mut bool,
) -> (Verdict, Option<&'static str>) {
    let sig = &p.sig;
    let answer = match answer {
        Ok(answer) => answer,
        Err(DnsError::BadName) => return (Verdict::PermError, Some("bad key name")),
        Err(DnsError::Timeout) => return (Verdict::TempError, Some("key lookup timed out")),
        Err(_) => return (Verdict::TempError, Some("key lookup failed")),
    };
    let Some((hash, body_len)) = body else {
        return (Verdict::TempError, Some("message unreadable"));
    };
    if sig.expires.is_some_and(|x| x < now) {
        return (Verdict::PermError, Some("signature expired"));
    }
    if answer.nxdomain {
        return (Verdict::PermError, Some("no key"));
    }
    let mut key = Err("no key record");
    for record in answer.txt().take(MAX_KEY_RECORDS) {
        key = key::parse(record, sig.algorithm);
        if key.is_ok() {
            break;
        }
    }
    let key = match key {
        Ok(k) => k,
        Err(why) => return (Verdict::PermError, Some(why)),
    };
    *testing = key.testing;
    if key.strict && !verify::strict_identity_ok(sig) {
        return (Verdict::PermError, Some("i= is a subdomain, key has t=s"));
    }
    if sig.length.is_some_and(|l| l > *body_len) {
        return (Verdict::Fail, Some("l= is longer than the body"));
    }
    if hash.as_slice() != sig.bh.as_slice() {
        return (Verdict::Fail, Some("body hash did not verify"));
    }
    if !verify::check(sig, &key, &p.data) {
        return (Verdict::Fail, Some("signature did not verify"));
    }
    if sig.length.is_some_and(|l| l < *body_len) {
        return (Verdict::Policy, Some("l= covers only part of the body"));
    }
    (Verdict::Pass, None)
}

/// The Authentication-Results clause of a report.
fn clause(r: &Report) -> String {
    let mut c = format!("dkim={}", r.verdict);
    if let Some(why) = r.reason {
        c.push_str(&format!(" ({why})"));
    }
    for (prop, value) in [
        ("header.d", &r.ident.d),
        ("header.i", &r.ident.i),
        ("header.b", &r.ident.b),
    ] {
        if !value.is_empty() {
            c.push_str(&format!(" {prop}={value}"));
        }
    }
    c
}

impl Plugin for Dkim {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPostHeaders, Hook::DataPost])
    }

    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        // Relay and authenticated clients' mail is signed, not verified (as qpsmtpd).
        if cx.conn.relay_client || cx.conn.auth.is_some() {
            return Step::pending(async move {
                self.sign(cx, txn).await;
                Outcome::Declined
            });
        }
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        Step::pending(async move {
            let checked = self.check(cx, txn).await;
            let mut clauses: Vec<String> = checked.reports.iter().map(clause).collect();
            if let Some((verdict, why)) = checked.unchecked {
                clauses.push(format!("dkim={verdict} ({why})"));
            }
            if checked.skipped > 0 {
                let n = checked.skipped;
                clauses.push(format!("dkim=policy ({n} more signatures not verified)"));
            }
            if clauses.is_empty() {
                self.common
                    .log(cx, Level::Info, format_args!("none, no signature"));
                clauses.push("dkim=none".to_string());
            }
            if let Some(r) = checked.reports.iter().find(|r| r.verdict == Verdict::Pass) {
                let value = format!(
                    "domain: {}, selector: {}, result: pass",
                    r.ident.d, r.selector
                );
                txn.prepend_header("X-DKIM-Authentication", &value);
            }
            txn.notes
                .get_or_insert_with(AuthResults::default)
                .0
                .extend(clauses);
            let results = checked.reports.iter().map(|r| DkimResult {
                domain: r.ident.d.clone(),
                selector: r.selector.clone(),
                result: r.verdict.word(),
            });
            txn.notes.set(DkimResults(results.collect()));
            txn.notes.set(checked);
            Outcome::Declined
        })
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let Some(checked) = txn.notes.take::<Checked>() else {
            return Step::DECLINED;
        };
        if !checked.refuse() {
            return Step::DECLINED;
        }
        self.common.fail(
            cx,
            format_args!("DKIM signature invalid"),
            "5.7.20 DKIM signature invalid",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use ringsmtpd_plugin_api::testing::records::txt;
    use ringsmtpd_plugin_api::testing::FakeServices;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run, set_message, spool, TempDir};
    use std::rc::Rc;

    /// RFC 8463 Appendix A.3: the message signed with Ed25519 and RSA (lines end in CRLF).
    const RFC8463_SIGNED: &str = "\
DKIM-Signature: v=1; a=ed25519-sha256; c=simple/simple; \r
 d=football.example.com; i=@football.example.com; \r
 q=dns/txt; s=brisbane; t=1518460054; h=from : to : \r
 subject : date : message-id : from : subject : date; \r
 bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; \r
 b=9/dsDChY0YMTtD5Eyw3wx7x22BlSJP7M5ECbJ7GWrR45nXlTCGb8l0YB\r
 o0wBLR++X5LqmsxXaOYLLJe46l10AQ==\r
DKIM-Signature: v=1; a=rsa-sha256; c=simple/simple; \r
 d=football.example.com; i=@football.example.com; \r
 q=dns/txt; s=test; t=1527915362; h=from : to : subject : \r
 date : message-id : from : subject : date; \r
 bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; \r
 b=icKcLSEZYXJ95flvWE8FT6hl5iqd8MC/LEKYH0QjsqYy6MO/4pgVNCZH\r
 l/RAXAuADxE/40Fg7uTlxwwD1hjN2Ple6J//cJfslBdDOq6zTVbne1dqtl\r
 NOat7iamJ1AfRqyG+ja7a2AZsrpUuJ7VA6O+0zRYPqpwMEkEFIzI9i/Xk=\r
From: Joe SixPack <joe@football.example.com>\r
To: Suzie Q <suzie@shopping.example.net>\r
Subject: Is dinner ready?\r
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r
Message-ID: <20030712040037.46341.5F8J@football.example.com>\r
\r
Hi.\r
\r
We lost the game.  Are you hungry yet?\r
\r
Joe.\r
";
    /// RFC 8463 Appendix A.2: the key records.
    const ED_NAME: &str = "brisbane._domainkey.football.example.com";
    const ED_RECORD: &str = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
    const RSA_NAME: &str = "test._domainkey.football.example.com";
    /// RFC 8463 Appendix A.1: the Ed25519 private key (its seed), for the signatures the
    /// tests make themselves.
    const ED_SEED: &str = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=";

    fn rsa_record() -> String {
        format!("v=DKIM1; k=rsa; p={}", key::tests::RSA1024)
    }

    fn services_with_keys(svc: &FakeServices) {
        svc.answer(ED_NAME, QType::Txt, vec![txt(ED_RECORD)]);
        svc.answer(RSA_NAME, QType::Txt, vec![txt(&rsa_record())]);
    }

    /// Runs both hooks on `message` with `prepare` setting up DNS: the A-R clauses, the
    /// data_post outcome, the added headers and the log.
    pub(super) struct Run {
        pub(super) clauses: Vec<String>,
        pub(super) outcome: Outcome,
        pub(super) added: String,
        pub(super) svc: Rc<FakeServices>,
    }

    /// Where the message under test is.
    #[derive(Clone, Copy)]
    pub(super) enum Stored {
        Memory,
        /// In a spool file, its header section in memory (`testing::spool`).
        Spooled,
        /// In a spool file that the core started before the header section ended: only the
        /// first N bytes in memory, `header_end` unset.
        SpooledEarly(usize),
    }

    pub(super) fn check_with(
        line: &str,
        message: &[u8],
        stored: Stored,
        prepare: impl Fn(&FakeServices),
    ) -> Run {
        let p = build(new, line, &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:4242");
        prepare(&svc);
        let mut txn = Transaction::default();
        let dir = TempDir::new("dkim");
        match stored {
            Stored::Memory => set_message(&mut txn, std::str::from_utf8(message).unwrap()),
            Stored::Spooled => spool(&mut txn.body, &dir.path().join("msg"), message),
            Stored::SpooledEarly(n) => {
                spool(&mut txn.body, &dir.path().join("msg"), message);
                txn.body.mem = message[..n.min(message.len())].to_vec();
                txn.body.header_end = None;
            }
        }
        assert_eq!(
            run(p.data_post_headers(&mut c, &mut txn)),
            Outcome::Declined
        );
        let clauses = txn
            .notes
            .get::<AuthResults>()
            .map(|a| a.0.clone())
            .unwrap_or_default();
        let outcome = run(p.data_post(&mut c, &mut txn));
        Run {
            clauses,
            outcome,
            added: txn.added_headers.clone(),
            svc,
        }
    }

    fn check(message: &str, prepare: impl Fn(&FakeServices)) -> Run {
        check_with("dkim", message.as_bytes(), Stored::Memory, prepare)
    }

    #[test]
    fn rfc8463_both_signatures_pass() {
        let r = check(RFC8463_SIGNED, services_with_keys);
        assert_eq!(
            r.clauses,
            [
                "dkim=pass header.d=football.example.com header.i=@football.example.com header.b=9/dsDChY",
                "dkim=pass header.d=football.example.com header.i=@football.example.com header.b=icKcLSEZ",
            ]
        );
        assert_eq!(r.outcome, Outcome::Declined);
        assert_eq!(
            r.added,
            "X-DKIM-Authentication: domain: football.example.com, selector: brisbane, result: pass\r\n"
        );
        assert!(r.svc.logged("pass, d=football.example.com s=brisbane"));
        let asked = r.svc.asked.borrow();
        assert_eq!(asked.len(), 2);
        assert!(asked.contains(&(RSA_NAME.to_string(), QType::Txt)));
    }

    #[test]
    fn rfc8463_from_the_shared_vectors() {
        // The files next to the checkout (LF line ends; the core stores CRLF).
        let dir = std::env::var("RINGSMTPD_DKIM_VECTORS").unwrap_or_else(|_| {
            let near = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/testdata/dkim/rfc8463"
            );
            match std::path::Path::new(near).is_dir() {
                true => near.to_string(),
                false => "/work/shared/testdata/dkim/rfc8463".to_string(),
            }
        });
        let read = |name: &str| {
            std::fs::read_to_string(format!("{dir}/{name}"))
                .unwrap_or_else(|e| panic!("the DKIM test vectors are missing: {dir}/{name}: {e}"))
        };
        let message = read("rfc8463-appendixA.signed.eml")
            .replace("\r\n", "\n")
            .replace('\n', "\r\n");
        let trimmed = message.trim_end_matches("\r\n").to_string() + "\r\n";
        assert_eq!(
            trimmed, RFC8463_SIGNED,
            "the vectors differ from the RFC text embedded here"
        );
        let zone = read("zone.txt");
        let r = check(&message, |svc| {
            for line in zone.lines() {
                let mut cols = line.splitn(3, ' ');
                let (Some(name), Some("TXT"), Some(value)) =
                    (cols.next(), cols.next(), cols.next())
                else {
                    panic!("zone.txt: {line}")
                };
                let name = name.trim_end_matches('.');
                svc.answer(name, QType::Txt, vec![txt(value.trim_matches('"'))]);
            }
        });
        assert_eq!(r.clauses.len(), 2);
        assert!(
            r.clauses.iter().all(|c| c.starts_with("dkim=pass ")),
            "{:?}",
            r.clauses
        );
    }

    #[test]
    fn spooled_message_verifies_the_same() {
        let mem = check_with(
            "dkim",
            RFC8463_SIGNED.as_bytes(),
            Stored::Memory,
            services_with_keys,
        );
        let spooled = check_with(
            "dkim",
            RFC8463_SIGNED.as_bytes(),
            Stored::Spooled,
            services_with_keys,
        );
        assert_eq!(mem.clauses, spooled.clauses);
        assert!(spooled.clauses.iter().all(|c| c.starts_with("dkim=pass ")));
        let changed = RFC8463_SIGNED.replace("Joe.", "Jim.");
        let spooled = check_with(
            "dkim",
            changed.as_bytes(),
            Stored::Spooled,
            services_with_keys,
        );
        assert!(spooled
            .clauses
            .iter()
            .all(|c| c.starts_with("dkim=fail (body hash did not verify)")));
        // Spooled before the header section ended: the header is read from the file.
        for n in [0, 100, 1024] {
            let early = Stored::SpooledEarly(n);
            let r = check_with("dkim", RFC8463_SIGNED.as_bytes(), early, services_with_keys);
            assert_eq!(r.clauses, mem.clauses, "{n}");
        }
        // No empty line at all: everything is header, the body is empty.
        let cut = signed_without_body();
        let r = check_with("dkim", cut.as_bytes(), Stored::SpooledEarly(10), ed_only);
        assert!(r.clauses[0].starts_with("dkim=pass "), "{:?}", r.clauses);
        // A header section over 1 MiB is not read whole.
        let big = format!("X-Big: {}\r\n{RFC8463_SIGNED}", "y".repeat(1 << 20));
        let r = check_with(
            "dkim",
            big.as_bytes(),
            Stored::SpooledEarly(10),
            services_with_keys,
        );
        assert_eq!(
            r.clauses,
            ["dkim=permerror (header section larger than 1 MiB)"]
        );
        assert_eq!(r.outcome, Outcome::Declined);
    }

    #[test]
    fn changed_body_or_header_fails_and_is_refused() {
        let r = check(
            &RFC8463_SIGNED.replace("hungry", "angry"),
            services_with_keys,
        );
        assert_eq!(r.clauses.len(), 2);
        for c in &r.clauses {
            assert!(
                c.starts_with("dkim=fail (body hash did not verify) header.d=football.example.com"),
                "{c}"
            );
        }
        assert_eq!(r.outcome, Outcome::deny("5.7.20 DKIM signature invalid"));
        assert_eq!(r.added, "");
        let r = check(
            &RFC8463_SIGNED.replace("dinner ready", "lunch ready"),
            services_with_keys,
        );
        for c in &r.clauses {
            assert!(
                c.starts_with("dkim=fail (signature did not verify) "),
                "{c}"
            );
        }
        assert!(r.outcome.is_deny());
        // An unsigned header may change; an added blank line at the end is ignored (simple).
        let extra = RFC8463_SIGNED.replace("Message-ID:", "X-Extra: yes\r\nMessage-ID:") + "\r\n";
        let r = check(&extra, services_with_keys);
        assert!(
            r.clauses.iter().all(|c| c.starts_with("dkim=pass ")),
            "{:?}",
            r.clauses
        );
        // reject 0 logs only.
        let r = check_with(
            "dkim reject 0",
            RFC8463_SIGNED.replace("Joe.", "J.").as_bytes(),
            Stored::Memory,
            services_with_keys,
        );
        assert_eq!(r.outcome, Outcome::Declined);
        assert!(r
            .svc
            .logged("fail, log only: 5.7.20 DKIM signature invalid"));
    }

    #[test]
    fn one_pass_wins_over_a_fail() {
        let r = check(RFC8463_SIGNED, |svc| {
            svc.answer(ED_NAME, QType::Txt, vec![txt(ED_RECORD)]);
            // The RSA signature checked against another key: fails.
            let other = ED_RECORD.replace("11qY", "21qY");
            svc.answer(RSA_NAME, QType::Txt, vec![txt(&other)]);
        });
        assert!(r.clauses[0].starts_with("dkim=pass "));
        assert!(
            r.clauses[1].starts_with("dkim=permerror (key record: key type k= does not match a=)")
        );
        assert_eq!(r.outcome, Outcome::Declined);
    }

    #[test]
    fn dns_failures_are_temperror_and_never_refuse() {
        let r = check(RFC8463_SIGNED, |svc| {
            svc.fail(ED_NAME, QType::Txt, DnsError::Timeout);
            svc.fail(RSA_NAME, QType::Txt, DnsError::ServFail);
        });
        assert_eq!(
            r.clauses,
            [
                "dkim=temperror (key lookup timed out) header.d=football.example.com header.i=@football.example.com header.b=9/dsDChY",
                "dkim=temperror (key lookup failed) header.d=football.example.com header.i=@football.example.com header.b=icKcLSEZ",
            ]
        );
        assert_eq!(r.outcome, Outcome::Declined);
        // Even with a changed body: no key, no verdict.
        let r = check(&RFC8463_SIGNED.replace("Joe.", "J."), |svc| {
            svc.fail(ED_NAME, QType::Txt, DnsError::Timeout);
            svc.fail(RSA_NAME, QType::Txt, DnsError::Timeout);
        });
        assert_eq!(r.outcome, Outcome::Declined);
    }

    #[test]
    fn a_lookup_that_never_answers_times_out() {
        struct Silent(Rc<FakeServices>);
        impl ringsmtpd_plugin_api::Services for Silent {
            fn me(&self) -> &str {
                "mx"
            }
            fn log(&self, l: Level, c: u64, s: &str, m: std::fmt::Arguments<'_>) {
                self.0.log(l, c, s, m)
            }
            fn log_enabled(&self, _: Level) -> bool {
                true
            }
            fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
                self.0.spawn_blocking(job)
            }
            fn sleep(
                &self,
                d: Duration,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
                self.0.sleep(d)
            }
            fn dns_query(&self, _: &str, _: QType) -> DnsLookup {
                DnsLookup::new(std::future::pending())
            }
        }
        let p = build(new, "dkim timeout 1", &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        c.svc = Rc::new(Silent(svc.clone()));
        let mut txn = Transaction::default();
        set_message(&mut txn, RFC8463_SIGNED);
        run(p.data_post_headers(&mut c, &mut txn));
        let clauses = &txn.notes.get::<AuthResults>().unwrap().0;
        assert!(clauses
            .iter()
            .all(|c| c.starts_with("dkim=temperror (key lookup timed out)")));
        let results = &txn.notes.get::<DkimResults>().unwrap().0;
        assert_eq!(results.len(), 2);
        let seen: Vec<_> = results
            .iter()
            .map(|r| (r.result, &*r.domain, &*r.selector))
            .collect();
        assert_eq!(
            seen,
            [
                ("temperror", "football.example.com", "brisbane"),
                ("temperror", "football.example.com", "test")
            ]
        );
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
    }

    #[test]
    fn bad_key_records() {
        let cases: &[(&str, &str)] = &[
            (
                "v=DKIM1; k=ed25519; p=",
                "dkim=permerror (key revoked (empty p=))",
            ),
            (
                "v=DKIM1; k=rsa; p=MIGfMA0G",
                "dkim=permerror (key record: key type k= does not match a=)",
            ),
            (
                "k=ed25519; p=MIGfMA0G",
                "dkim=permerror (key record: not a 32-byte ed25519 key)",
            ),
            (
                "v=spf1 -all",
                "dkim=permerror (key record: bad v= (must be DKIM1, first))",
            ),
            (
                "k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=; t=s",
                "dkim=pass",
            ),
            (
                "k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=; t=y",
                "dkim=pass",
            ),
        ];
        for (record, want) in cases {
            let r = check(RFC8463_SIGNED, |svc| {
                svc.answer(ED_NAME, QType::Txt, vec![txt(record)]);
            });
            assert!(r.clauses[0].starts_with(want), "{record}: {}", r.clauses[0]);
            assert!(
                r.clauses[1].starts_with("dkim=permerror (no key) "),
                "{}",
                r.clauses[1]
            );
            assert_eq!(r.outcome, Outcome::Declined);
        }
        // No TXT record at all (NODATA), then junk before the real record.
        let r = check(RFC8463_SIGNED, |svc| {
            svc.answer(ED_NAME, QType::Txt, vec![])
        });
        assert!(r.clauses[0].starts_with("dkim=permerror (no key record) "));
        let r = check(RFC8463_SIGNED, |svc| {
            svc.answer(ED_NAME, QType::Txt, vec![txt("junk"), txt(ED_RECORD)])
        });
        assert!(r.clauses[0].starts_with("dkim=pass "));
        // A 4096-bit RSA key is taken (and this signature is not made with it).
        let mut n = vec![0x00, 0xc5];
        n.extend([0x5a; 511]);
        let mut rsa = vec![0x30, 0x82, 0x02, 0x0a, 0x02, 0x82, 0x02, 0x01];
        rsa.extend(&n);
        rsa.extend([0x02, 0x03, 1, 0, 1]);
        let record = format!("k=rsa; p={}", signature::base64_encode(&rsa));
        let r = check(RFC8463_SIGNED, |svc| {
            svc.answer(RSA_NAME, QType::Txt, vec![txt(&record)])
        });
        assert!(
            r.clauses[1].starts_with("dkim=fail (signature did not verify) "),
            "{}",
            r.clauses[1]
        );
    }

    /// Signs `message` (header section, CRLF, body) with the RFC 8463 Ed25519 key, with the
    /// tags `tags` (without `b=` and `bh=`), and puts the field on top.
    fn sign(message: &str, tags: &str, canon_body: canon::Canon, length: Option<u64>) -> String {
        let seed = signature::base64(ED_SEED).unwrap();
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        assert_eq!(
            signature::base64_encode(pair.public_key().as_ref()),
            "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
        );
        let ed = |data: &[u8]| {
            let hash = ring::digest::digest(&ring::digest::SHA256, data);
            pair.sign(hash.as_ref()).as_ref().to_vec()
        };
        sign_with(&ed, message, tags, canon_body, length)
    }

    /// As [`sign`], with `signer` making `b=` from the data to sign.
    fn sign_with(
        signer: &dyn Fn(&[u8]) -> Vec<u8>,
        message: &str,
        tags: &str,
        canon_body: canon::Canon,
        length: Option<u64>,
    ) -> String {
        let split = message.find("\r\n\r\n").unwrap() + 4;
        let mut bh = BodyHasher::new(canon_body, length);
        bh.feed(&message.as_bytes()[split..]);
        let bh = signature::base64_encode(&bh.finish().0);
        let field = format!("DKIM-Signature: {tags}; bh={bh};\r\n b=");
        let signed = format!("{field}\r\n{message}");
        let s = signature::parse(format!("{tags}; bh={bh}; b=AAAA").as_bytes()).unwrap();
        let index = HeaderIndex::new(signed.as_bytes());
        let data = index.signed_data(&s, field.as_bytes());
        let b = signature::base64_encode(&signer(&data));
        format!("{field}{b}\r\n{message}")
    }

    /// A 4096-bit RSA key made for these tests (openssl genpkey), PKCS#8, and its public key
    /// as a SubjectPublicKeyInfo.
    const RSA4096_PKCS8: &str = concat!(
        "MIIJQgIBADANBgkqhkiG9w0BAQEFAASCCSwwggkoAgEAAoICAQDd4yIVnCPAkxhy0K9fYryDG/p2LgdoRe174q1+",
        "Zc7OeNf4ScRzTcU1oCqdzzlFjhobHGl1WpW2hw4KFEkfiGItOg90gQbfdAZKQSAvqPddgfNqqCMjtwoozzT7vje3",
        "R9iiN7LvRigtPKlHhsutOywfhNVWNGNK0nVbXOBogZ+fltjVU//wRRWgex1ByqOCzeynq0g+WEf7g2C8vK8EY/xC",
        "PF1Tq3+ngKQuQSka52MPwfzx7JZ1+/cN53onJ9YLX29ZJF8YqyszWga1Tz26hYZGx8WZMavK3phTUYbiNkNnL+tA",
        "OpyyyREnJy5XoN+NBEZquEh/z5uyEy6vqIFQFencfsf01BwsxqYErt2zSIps2xEcoaAWjTYT0gRNo5DYXAPF5IPV",
        "rvQZm06g3MfUcWVoxASXr6htomWju6H/7US2lBA61/j7++eIYg/iPdduU+4SZt0LRp0ZMDwTI3zKp2KzfybKEs94",
        "RixlMZaKHGzxKmLh/cFlklssX0dtVsJNNZDYq22Jf8QWM58i9uUoMsozHA2zOOe5fiUuLV42R37mOV+x1jyx/0hm",
        "4RbM2DbZs7lSYNrRiOvVR9QL4tAEut6rL2+g545ZgiUQfvLDOAHvkUZ1NoHhyGI/IbdX4/Lu14N2Cc2QKi9Xil1y",
        "17I5+cXX4ab8qt3AC7BIql8NIWVLmQIDAQABAoICAEyUN+7CYTp06fKyYFxozMvpK5N/BlJwE+r2TE973pi27z7D",
        "YtgyppX/7cViQA9n4E2sDB+TAGmrCebjomsOHGgkijH42ADl38ff2zZnt9vfXj3YwqvwX8K+5LffqgYI91ThKVHY",
        "YkRek8PaW1AxxGQqaaCjWwN3SEacctzOo+Ml4jcaExJ/HVwyMWJECBO8c2lYvYm62TkOWiQ5cKPwyB6qC8G1Rkzu",
        "ontORNwCsNc+6cgrEbCtodH8KlX6My7gpKLc4S834CSMdRU9QH4v2Cx0hRd+o55UHblfwVAwTyn9SVF1CSDRMSjU",
        "pnNa09ys9YqeiHMIGWGnqiy42Mxli7zHrBIKDXkozi+3kfzzLJlmBv5UBbKw4cygrQhrGmdnBsgCe4gWmSJTVlac",
        "c8XN6TVPo4gvNqfIkPFcmDzFPztccs27kMAsN/BnnwqIwEpNYyd+WviXjwb0WtzBmlAPX93y6UguC0u1F9md6F/1",
        "kXIb9RSA1yraxWNXx5HOWm4wbqUPeDwIglU8oVpRRcZfoAAgfBwcbdluOsfMdCJUZP8ZpXr0uppVmDZKfanADJgK",
        "mbbKx4ZTbVgDzONtVMh7XNCzz8MosMygn/5OAWNO1FGNoJ4OkgCjMTOjtsEJRQKvQitCG5cXV3Uoy6tYKd3FX7Q3",
        "uQyZ3aZiWpUcksuS1Nu7AoIBAQD3Fkvsg6pRC8lBHWHnB6r380HcCIxuAZHTPId/7Cykm2aySoeozrXruMYVkao+",
        "DVXvIug507ZOu2gi10bRhxnY7Byo3ZHdd3mc/3/IYdme1xh1l9cPyHTb8nBvGM/f4rjkb1ygEKPBMmg5zx62YiNh",
        "OuAc7R8XrPzJm0VlZEo59gFodfHTqZnPR/v4zLBXOrW45FDSomcgoQW5cPaUuPqq5AeMnSWJfayo2n+tRX9lokMT",
        "+Wr+iFJBu33HOr2P/T7fo4kaQLlTG247jXblMzL+NSisPzzN+k8WA4UlQFPzOwxu+Q1e3KiVeKEPmmAYS4nDC9fa",
        "VM6TLrHChBxdq97rAoIBAQDl5CF5yWbVkLgOSp66ONZsLNpQMxmFrg8k908pPfmtQNNll0R1bHw/IzO/O8xjSaPw",
        "GQ/Aom9onjVDjy4CHFO89K5w82KXuNIgWHw4qPtTw+tXh8cssxPmQSVLSJlffg//irPn4hJ0JsKtKIxC9Pr8aJEN",
        "0SY3rJJeJBC90OKKdYCXZywvwJPGlMTeR3cZuKgi4J/bUW2YjhnIJtOpEdwFUTiMh6k0vvDbF9wgCKlX4J1sMbrl",
        "O2mFuH7HzElSbEG1bGjVvcvmqYg1d20h45YFDnv9R9H1wv/6HAszHaceMxg1AgfEOdcMYYbxLm/vMKPLEy4+W6I/",
        "yRv/+yCwnUaLAoIBAQDLJEitnh5T3aXL5BVOtS4qBpP6DAkwlBfJHLWmRYz6lE0dfksETVaiA1rP9t+JfrtNDVzx",
        "1g7HsipOosE1mKZ2gsCZUPkQpJ6WpjTvkQszHVKds4V8E2mIP02S+UpGnoc2QBxd+PA48XFhPdjZR9wgnyAMiCMM",
        "+wsl0YN/dbHU711+/aEhTQoIsf0GM3szbDBlX0jXs++nkts6+BWydlaYUzulrrlizbE7bdCUq1OvQnV1oZUGyRsf",
        "sb8aIkAhdqrPgQtCSz5ShnXdflPm4m4lM51J5//ctNN6nNBFrRqYGc8CGb6VZEMyCGgahOhGcSxE8KK5fQoNVdGN",
        "w8HyfVCbAoIBAAc3LtnMuX6QiUZhjzPXHtvMWJnV0MJCYVVOsdxghpqqgzgYFFz/J7Mvnqss7FBdeljJ4JWyQ37s",
        "IE3bi50jWHmA0IzZBsouUeIUBOoeW60YZCWeLGE5ybEbcFk5kR7PLR9fMiBgFyYwJUIcGLLtT4dmnM7rNqDeuMVd",
        "qmzaxpGD+KJH6boh+EFuX/N+GL3k7toRZNMUbjUwmJyQo2oWFmrQTs8SXvw51gN6bz1OKEqK0UYZFX2mbLx2uvv4",
        "bIC6xyEzouK6j1DRF2ZeNj2vEAFeoAOmIm/tS+2EvdE/6APppKPdSXMeQaKw2PRu+bJvO2TfWD86zw/jdw6EylTg",
        "ytsCggEAJ82t6WGYPPuRQuOEjd8azmTSdiW5SnHgyBwRCHGU+XwYs75gsb8YMr7dAUlxZlmZT/kd1+GIZo7NRkOE",
        "VQh535KKqmR/wYH4tTVWnjKkTFcWIcg18mY8It7PuHEhJ/sce0DjpnxE4U+E6shZ0UkWwiZYiIa7Vsa1BVbzXvdp",
        "Ike3G2/qfDewRcJAYZhv0O6KbLL3BRw7A0e8O5v7KK8c2z19ph0v9qTRo3cMS611x9U0KyzrQ+lqKz5XeOFwfh3o",
        "YOO6iyqhYAHgs8OyiDZgFG5U+24WZfsiqQvBrnk40HJ2f3/euT70qFiW70Ale7ba6imHALeFxyg6T6ctG9+5CA==",
    );
    const RSA4096_SPKI: &str = concat!(
        "MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEA3eMiFZwjwJMYctCvX2K8gxv6di4HaEXte+KtfmXOznjX",
        "+EnEc03FNaAqnc85RY4aGxxpdVqVtocOChRJH4hiLToPdIEG33QGSkEgL6j3XYHzaqgjI7cKKM80+743t0fYojey",
        "70YoLTypR4bLrTssH4TVVjRjStJ1W1zgaIGfn5bY1VP/8EUVoHsdQcqjgs3sp6tIPlhH+4NgvLyvBGP8QjxdU6t/",
        "p4CkLkEpGudjD8H88eyWdfv3Ded6JyfWC19vWSRfGKsrM1oGtU89uoWGRsfFmTGryt6YU1GG4jZDZy/rQDqcsskR",
        "JycuV6DfjQRGarhIf8+bshMur6iBUBXp3H7H9NQcLMamBK7ds0iKbNsRHKGgFo02E9IETaOQ2FwDxeSD1a70GZtO",
        "oNzH1HFlaMQEl6+obaJlo7uh/+1EtpQQOtf4+/vniGIP4j3XblPuEmbdC0adGTA8EyN8yqdis38myhLPeEYsZTGW",
        "ihxs8Spi4f3BZZJbLF9HbVbCTTWQ2KttiX/EFjOfIvblKDLKMxwNszjnuX4lLi1eNkd+5jlfsdY8sf9IZuEWzNg2",
        "2bO5UmDa0Yjr1UfUC+LQBLreqy9voOeOWYIlEH7ywzgB75FGdTaB4chiPyG3V+Py7teDdgnNkCovV4pdcteyOfnF",
        "1+Gm/KrdwAuwSKpfDSFlS5kCAwEAAQ==",
    );

    /// A message signed by dkimpy 1.1.4 (Debian python3-dkim, an independent implementation)
    /// with the 4096-bit test key: relaxed/relaxed, simple/relaxed, relaxed/simple, and
    /// relaxed/relaxed with `l=` (the whole body), over folded fields, blanks at line ends,
    /// runs of blanks and trailing empty lines; then (on top) relaxed/relaxed Ed25519 with the
    /// RFC 8463 key over the signed message.
    const DKIMPY_SIGNED: &str = concat!(
        "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n",
        " d=football.example.com; i=@football.example.com; q=dns/txt;\r\n",
        " s=brisbane; t=1796420830; h=from : to : subject;\r\n",
        " bh=swaW3Ni9/XDvGPCLMYSnQYyOika79cJEalo3KfjlXHM=;\r\n",
        " b=i/0E+G/D77kZr16QbTTE5NG/jF6oy990KzzRJrVONYPUoxQtA5NIISk/SPVFmwFdEwXqC\r\n",
        " iOQqYK68cGLjqI0BA==\r\n",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\r\n",
        " i=@example.org; q=dns/txt; s=big; t=1796420815; h=from : to : subject\r\n",
        " : date : message-id : subject;\r\n",
        " bh=swaW3Ni9/XDvGPCLMYSnQYyOika79cJEalo3KfjlXHM=;\r\n",
        " b=slSY7entuWmofiTND0niHvGpQXdXARvkL1x3hmEa4Cz0z63zEQ44uMN8asEZLMVQR6U5n\r\n",
        " tZdBMYK2Ic25wwifeY3UHGI/fcX6MU2px68uGoxI5E79E0kOtDNdwUJ7U3BARweyC4JNiUt\r\n",
        " WNm9rFlgXYEWkUb44xQ++10wYjdNVc+l0JnXpXo0ml8xz4uuENGAefzgdkciB/jlsN17cXR\r\n",
        " QfOamxDzjPTBSaXpSh0F1zHTX44H04ru29CVV1o0TVXQltdq7QA0G7uwtS4DtSQfCTxYdX4\r\n",
        " d2TxwrJehN8rwTlRgxyhTCp2ivKCQsVKcyUo9NfCF+p9a7rbbf8KSCfBVNuO7DzqR/pDKJ3\r\n",
        " ibc5FkWUNSc7iuqmTdR15AkTmoG6BXpv57VijU6EZrkDTlBqqnY4V+KpzgJiphVjQ5j06TX\r\n",
        " VdFrB8AmiwfhRcQzmojkGdGb2F5/G0xdoXnMDPqxfwpcvgAuP+2xanG0WxNfLOpzBKhQYH3\r\n",
        " 7N2xqNPKrw93E32dXkA706kcjOBhjZxdiN+N5S1UrPVnbkU+E8+wqFEo3YSas3qjPw7FQhn\r\n",
        " QYZsJnudX7alJH89A7sasEoElpkuvB8unM270qhpYV4uz992jXO26uaF5MWENOCaOq6Gk8N\r\n",
        " CUhoJBImc6QivQQa9HkMUybrmDqUjiaIrcHaN7xL4q8qGQ=\r\n",
        "DKIM-Signature: v=1; a=rsa-sha256; c=simple/relaxed; d=example.org;\r\n",
        " i=@example.org; q=dns/txt; s=big; t=1796420815; h=from : to : subject\r\n",
        " : date : message-id : subject;\r\n",
        " bh=swaW3Ni9/XDvGPCLMYSnQYyOika79cJEalo3KfjlXHM=;\r\n",
        " b=2tbQIMIggXc4ccpmX5kqQ6amRXjk3/8Zu+RxB0JH0IJ0O4GNw10TlcdpXGcbVJl2MqxfY\r\n",
        " 9xFxvzTQHH+tsa45RZqzc8tVwNYWsiqBLZmNG+nfGNLOd7ja9HuaKSWjirsjmtKUgVmBxhh\r\n",
        " rZwwxBcX86DgQuNLCcr47/vkKpUGokqwg7r+avBkM3nrvr4XxjC+NU2cDWOsckXUEdtMxr3\r\n",
        " IUfPinlBSs0rveqRGTBbVle+Um4x1Ney6Gry8L+DpaFBhyaLTHyktgeXfaCYy94a3GD5Szp\r\n",
        " 91H+ovEnf/bI47t8s4HHzWmV1DJ3TZP6/I69R9/p+ogCylIvvp0BnUjE2XljyQF6cpo/huV\r\n",
        " 8x2pYj656XJzncGApXQMlrPTPIkRHrtCUVBHbQBKVb73vG31/TWCBcLfcEGAtu4WcKqhBQE\r\n",
        " +iI5SPdDHthzQytnrYbf1g/rmgNSDs1l99LSDtEs8CassEVVGx3kbH/8sk4hW382frU7cBM\r\n",
        " TdJeSQ0q7OcgBTPsMN/IuI7QX/w6kiEzyrSEVr5NJcN8eMld2Q6BykkcruVeHP3FQOTBRSQ\r\n",
        " r9jSeBZGAW/roPdW4CtXfsOJAXvxFfzzbPMxoKg+Wk9AlW7AhUe5f+THv7C4m5gGzUb67PF\r\n",
        " bGJ8qsBZo0GGawBPKFnXP1alfRguACDas1+5u8HcV+KooA=\r\n",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.org;\r\n",
        " i=@example.org; q=dns/txt; s=big; t=1796420815; h=from : to : subject\r\n",
        " : date : message-id : subject;\r\n",
        " bh=PZlpYjtVNkhZnqsB7sWzkSz7t8+9NYtX/aWh1YfXvkE=;\r\n",
        " b=kFS0fYs0Stxpe2Uvc80lSMRm5q5S1RsmIl0LJRf3jkEd8udBZ9sPC1UOmgaRXQNPPfcMw\r\n",
        " MJrmPuCo6pzRMlHjgZ7BMzwH9nuANStHBcbYvaBpb1F36Daj567Ls/ShrgAW3gpyVWqAvAB\r\n",
        " ZVP/M3yYwialYmgC07pWTx4YWlkEU9UBDtXMk/iHxurhhGhhNA2gJkuhgKfxpUcKCvdEayZ\r\n",
        " ZggC/AHcOJ/XoAmxz1Ay00A5j1x0ZQ3jA7vASbC7mzwnIzzSjAx7tceYTtOYOMSFbeP0bbH\r\n",
        " PJDPWM3dYlvvqrhF17TfZZOS9EUwArKWeOmhfse9JnN9701Aazrcko/jfBPfchMppC3jHmv\r\n",
        " S/emuadjvll4i/O1AwRIE/h9aSNPU/8TKCph9J0ShF1UZ5UevrxLDvGgvN/DAhIUIF2cfk9\r\n",
        " QSkwbV3+Tba9ZnnU5Su/gxi22Gi/dA/dZT9Bm71mcpcOoK+6SGonZxdb8fn22zf69hBketa\r\n",
        " 3QqsDefXr/nc3BCh2bRB4DYq6x8dlh41+kHQt8n7jUDRaQz2f4MuyVqkBSM9/NrzPuwOtL6\r\n",
        " tyGRgvfQGi+P/dYI0i1YpotwPzVUBR5dIkKSr7oq/V0I/qc1MgJ0RH2Nd9xGcqu8mrdtSDA\r\n",
        " n3HrQrDpXw3jglmhb8fZqwWKwPifM+TuhTBotRR6gLzsQw=\r\n",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\r\n",
        " i=@example.org; l=48; q=dns/txt; s=big; t=1796420815; h=from :\r\n",
        " subject; bh=swaW3Ni9/XDvGPCLMYSnQYyOika79cJEalo3KfjlXHM=;\r\n",
        " b=OJaHU17nj9+VALeRrN5F9+MkTC5oO+1ilLhXLKaBixRvcGB9iuTai1qKwDFFIhKVFNTpR\r\n",
        " 7bt5/AVwg2egi2C2oi1yJ/sY/eiPaqA+g2n6ZOW5re2E+1/ywiNpr34lCcccQLKQRhtrqeU\r\n",
        " tYQ3eVSc/ajlIslATUQOkOy1BKXUm1T6fmbs1x5DG6l+HeECHIPsH2xL8vB3+w543Z7K99d\r\n",
        " 5Pucf0y3+x1n6IK8ftv0t/FohXLinvz00kGJfp/Kn67Vmr2u8BVDKKo8apvPBbAbeTZC01V\r\n",
        " fOi55HKYyi9fiXYqlgM06/eL8ZC6pilN7oMab8QE979XBvjG5C1B1nX17qIcjF1WaACYBBO\r\n",
        " 3OYqRN2JSp0SfPwFRKrnuo55NIE2P/9hMiBLZR+4nJDzzaJTn0ADcUPelmDcVDhR1Y2ZM7K\r\n",
        " CorvAhAfogQdyHsfAiymAAYAqMPgpFJ4p6/BdYDw2FJ7wyLjf8XbLCdZWJF1alaFWW+eaMN\r\n",
        " 3bc6wIqA8WVS1WxE0wHHgxN+5D6dbgEcAz3hBj7CBNQ6t8D3P4wb2776/ryDUo4XFfhgMl9\r\n",
        " AnqQBBOBzarLnOe3P0VUKc0F7f+5wXdwajOHKK8FPYUJABMHDbCX4nx2p0OP7yd1baSJUlt\r\n",
        " 3MStbC3L0h6tVyjp7nljI8A5dDfYN7ctJCx39/207S3NjI=\r\n",
        "Received: from x by y; Fri, 4 Dec 2026 10:00:00 +0000\r\n",
        "From:   \"Joe Q.\" <joe@example.org>  \r\n",
        "To: a@example.net,\r\n",
        "\t b@example.net\r\n",
        "Subject: \t folded\r\n",
        "   subject  line \r\n",
        "Date: Fri, 4 Dec 2026 10:00:00 +0000\r\n",
        "Message-ID: <1@example.org>\r\n",
        "\r\n",
        "  leading blanks\r\n",
        "trailing blanks \t \r\n",
        "\r\n",
        "inner  \t  runs\r\n",
        "\r\n",
        "\r\n",
        "\r\n",
    );

    #[test]
    fn dkimpy_signatures_pass() {
        let keys = |svc: &FakeServices| {
            let record = format!("v=DKIM1; k=rsa; p={RSA4096_SPKI}");
            svc.answer("big._domainkey.example.org", QType::Txt, vec![txt(&record)]);
        };
        let keys = |svc: &FakeServices| {
            keys(svc);
            ed_only(svc);
        };
        let r = check(DKIMPY_SIGNED, keys);
        assert_eq!(r.clauses.len(), 5);
        assert!(r.clauses[0].starts_with("dkim=pass header.d=football.example.com "));
        let pass = |c: &String| c.starts_with("dkim=pass header.d=example.org ");
        assert!(r.clauses[1..].iter().all(pass), "{:?}", r.clauses);
        // Appended content: the l= signature is policy, the others fail.
        let r = check(&format!("{DKIMPY_SIGNED}P.S. appended\r\n"), keys);
        let fail = |c: &String| c.starts_with("dkim=fail (body hash did not verify) ");
        assert!(r.clauses[..4].iter().all(fail), "{:?}", r.clauses);
        assert!(r.clauses[4].starts_with("dkim=policy (l= covers only part of the body) "));
        assert!(r.outcome.is_deny(), "failed signatures and none passed");
        // Relaxed header canonicalization tolerates re-folding; simple does not.
        let refolded = DKIMPY_SIGNED.replace(
            "Subject: \t folded\r\n   subject  line \r\n",
            "Subject: folded subject line\r\n",
        );
        let r = check(&refolded, keys);
        let words: Vec<&str> = r
            .clauses
            .iter()
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            words,
            [
                "dkim=pass",
                "dkim=pass",
                "dkim=fail",
                "dkim=pass",
                "dkim=pass"
            ]
        );
    }

    #[test]
    fn rsa_4096_relaxed_signature_passes() {
        use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
        let der = signature::base64(RSA4096_PKCS8).unwrap();
        let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let rsa = |data: &[u8]| {
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, data, &mut out).unwrap();
            out
        };
        let tags = "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=big; h=from:subject:to";
        let msg = sign_with(&rsa, PLAIN, tags, canon::Canon::Relaxed, None);
        let keys = |svc: &FakeServices| {
            let record = format!("v=DKIM1; k=rsa; p={RSA4096_SPKI}");
            svc.answer("big._domainkey.example.org", QType::Txt, vec![txt(&record)]);
        };
        let r = check(&msg, keys);
        assert!(
            r.clauses[0].starts_with("dkim=pass header.d=example.org "),
            "{:?}",
            r.clauses
        );
        let moved = msg.replace("Subject:  Hello \r\n  world", "SUBJECT: Hello world");
        assert!(check(&moved, keys).clauses[0].starts_with("dkim=pass "));
        let r = check(&msg.replace("Subject:  Hello", "Subject: Bye"), keys);
        assert!(r.clauses[0].starts_with("dkim=fail (signature did not verify) "));
    }

    /// A signed message with no empty line after its header section (so no body).
    fn signed_without_body() -> String {
        let tags = format!("{TAGS}; h=from");
        let message = "From: a@football.example.com\r\n\r\n";
        let msg = sign(message, &tags, canon::Canon::Simple, None);
        msg.trim_end_matches("\r\n").to_string() + "\r\n"
    }

    const PLAIN: &str = "From: a@football.example.com\r\nTo: b@example.net\r\nSubject:  Hello \r\n  world\r\n\r\nBody  text \r\n\r\n";
    const TAGS: &str = "v=1; a=ed25519-sha256; d=football.example.com; s=brisbane";

    fn ed_only(svc: &FakeServices) {
        svc.answer(ED_NAME, QType::Txt, vec![txt(ED_RECORD)]);
    }

    #[test]
    fn relaxed_signatures_survive_whitespace_changes() {
        let tags = format!("{TAGS}; c=relaxed/relaxed; h=From:Subject:To");
        let msg = sign(PLAIN, &tags, canon::Canon::Relaxed, None);
        assert!(check(&msg, ed_only).clauses[0].starts_with("dkim=pass "));
        let moved = msg
            .replace("Subject:  Hello \r\n  world", "subject: Hello world")
            .replace("Body  text", "Body text");
        let r = check(&moved, ed_only);
        assert!(r.clauses[0].starts_with("dkim=pass "), "{:?}", r.clauses);
        // A simple/simple signature does not.
        let tags = format!("{TAGS}; h=From:Subject:To");
        let msg = sign(PLAIN, &tags, canon::Canon::Simple, None);
        assert!(check(&msg, ed_only).clauses[0].starts_with("dkim=pass "));
        let r = check(&msg.replace("Body  text", "Body text"), ed_only);
        assert!(r.clauses[0].starts_with("dkim=fail (body hash did not verify) "));
    }

    #[test]
    fn strict_keys_refuse_subdomain_identities() {
        let tags = format!("{TAGS}; i=joe@news.football.example.com; h=from");
        let msg = sign(PLAIN, &tags, canon::Canon::Simple, None);
        assert!(check(&msg, ed_only).clauses[0].starts_with("dkim=pass "));
        let strict = |svc: &FakeServices| {
            let record = format!("{ED_RECORD}; t=s");
            svc.answer(ED_NAME, QType::Txt, vec![txt(&record)]);
        };
        let r = check(&msg, strict);
        assert!(
            r.clauses[0].starts_with("dkim=permerror (i= is a subdomain, key has t=s) "),
            "{}",
            r.clauses[0]
        );
        assert!(r.clauses[0].contains(" header.i=joe@news.football.example.com "));
    }

    #[test]
    fn body_length_limits() {
        let tags = format!("{TAGS}; c=simple/simple; h=from:to; l=11");
        let msg = sign(PLAIN, &tags, canon::Canon::Simple, Some(11));
        // l= covers part of the body: never a plain pass.
        let r = check(&msg, ed_only);
        assert_eq!(
            r.clauses[0],
            format!(
                "dkim=policy (l= covers only part of the body) header.d=football.example.com header.i=@football.example.com header.b={}",
                &msg[msg.find(" b=").unwrap() + 3..][..8]
            )
        );
        assert_eq!(r.outcome, Outcome::Declined);
        assert_eq!(r.added, "", "no pass header for a partial signature");
        // Appended content: still policy, not pass.
        let appended = msg.clone() + "Click here: http://evil.example/\r\n";
        assert!(check(&appended, ed_only).clauses[0].starts_with("dkim=policy "));
        // Content inside the signed part changed: fail.
        assert!(
            check(&msg.replace("Body  text", "Bod   text"), ed_only).clauses[0]
                .starts_with("dkim=fail ")
        );
        // l= exactly the body length: pass.
        let whole = "Body  text \r\n".len() as u64;
        let tags = format!("{TAGS}; h=from; l={whole}");
        let msg = sign(PLAIN, &tags, canon::Canon::Simple, Some(whole));
        assert!(check(&msg, ed_only).clauses[0].starts_with("dkim=pass "));
        // l= beyond the body (it was cut): fail.
        let tags = format!("{TAGS}; h=from; l=500");
        let msg = sign(PLAIN, &tags, canon::Canon::Simple, Some(500));
        assert!(
            check(&msg, ed_only).clauses[0].starts_with("dkim=fail (l= is longer than the body) ")
        );
    }

    #[test]
    fn malformed_signatures_are_permerror() {
        let cases: &[(&str, &str)] = &[
            (
                "h=from : to : \r\n subject : date : message-id : from",
                "h=to",
            ),
            (
                "d=football.example.com; i=@football.example.com",
                "d=football.example.com; i=@evil.example",
            ),
            ("a=ed25519-sha256", "a=rsa-sha1"),
            ("a=ed25519-sha256", "a=ed25519-sha256; a=rsa-sha256"),
            (
                "bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=",
                "bh=4bLNXImK9drULn%%mePzZNEBleUanJCX5PIsDIFoH4KTQ=",
            ),
            ("v=1; ", ""),
            ("t=1518460054", "t=1518460054; x=1518460055"),
        ];
        let first = RFC8463_SIGNED.find("DKIM-Signature: v=1; a=rsa").unwrap();
        let ed_only_msg = format!(
            "{}{}",
            &RFC8463_SIGNED[..first],
            &RFC8463_SIGNED[RFC8463_SIGNED.find("From: Joe").unwrap()..]
        );
        for (from, to) in cases {
            let msg = ed_only_msg.replacen(from, to, 1);
            assert_ne!(msg, ed_only_msg, "{from}");
            let r = check(&msg, services_with_keys);
            assert_eq!(r.clauses.len(), 1);
            assert!(
                r.clauses[0].starts_with("dkim=permerror ("),
                "{to}: {}",
                r.clauses[0]
            );
            // A tag list that does not parse names nothing (no header.d from a broken list).
            let names_d = r.clauses[0].contains(" header.d=football.example.com");
            assert_eq!(
                names_d,
                !r.clauses[0].contains("(duplicate tag)"),
                "{}",
                r.clauses[0]
            );
            assert_eq!(r.outcome, Outcome::Declined);
        }
        // Hostile text in i= reaches neither the header nor the log as is.
        let msg = ed_only_msg.replacen("i=@football", "i=\"x\r\n y\"(z)\\@football", 1);
        let r = check(&msg, services_with_keys);
        assert_eq!(
            r.clauses[0],
            "dkim=fail (signature did not verify) header.d=football.example.com \
             header.i=?x???y??z??@football.example.com header.b=9/dsDChY"
        );
        assert!(r.svc.logged("i=?x???y??z??@football.example.com"));
        for (_, _, line) in r.svc.logs.borrow().iter() {
            assert!(!line.contains(['\r', '\n', '"']), "{line:?}");
        }
    }

    #[test]
    fn thousands_of_signatures_are_bounded() {
        let tags = format!("{TAGS}; h=from");
        let signed = sign(PLAIN, &tags, canon::Canon::Simple, None);
        let field_end = signed.find("From: a@").unwrap();
        let field = &signed[..field_end];
        let msg = format!("{}{signed}", field.repeat(2999));
        let r = check(&msg, ed_only);
        assert_eq!(r.clauses.len(), MAX_SIGNATURES + 1);
        assert!(r.clauses[..MAX_SIGNATURES]
            .iter()
            .all(|c| c.starts_with("dkim=pass ")));
        assert_eq!(
            r.clauses[MAX_SIGNATURES],
            "dkim=policy (2990 more signatures not verified)"
        );
        assert!(r.svc.logged("2990 more signatures not verified (limit 10)"));
        assert_eq!(r.svc.asked.borrow().len(), MAX_SIGNATURES);
    }

    #[test]
    fn unsigned_and_immune() {
        let r = check(PLAIN, |_| {});
        assert_eq!(r.clauses, ["dkim=none"]);
        assert_eq!(r.outcome, Outcome::Declined);
        assert!(r.svc.asked.borrow().is_empty());
        // A relay client is not checked; without a key, not signed either.
        let p = build(new, "dkim", &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        let mut txn = Transaction::default();
        set_message(&mut txn, &RFC8463_SIGNED.replace("Joe.", "J."));
        assert_eq!(
            run(p.data_post_headers(&mut c, &mut txn)),
            Outcome::Declined
        );
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        assert!(txn.notes.get::<AuthResults>().is_none());
        assert!(svc.logged("skip, no key for football.example.com"));
        assert_eq!(txn.added_headers, "");
    }

    #[test]
    fn huge_header_field_and_no_body() {
        let junk = format!(
            "DKIM-Signature: v=1; a=ed25519-sha256; z={}\r\n",
            "x".repeat(1 << 20)
        );
        let r = check(&format!("{junk}{PLAIN}"), ed_only);
        assert!(
            r.clauses[0].starts_with("dkim=permerror ("),
            "{}",
            &r.clauses[0][..60]
        );
        // A message without a body section verifies against the empty body.
        let cut = signed_without_body();
        assert!(
            check(&cut, ed_only).clauses[0].starts_with("dkim=pass "),
            "{cut:?}"
        );
    }

    #[test]
    fn arguments() {
        assert!(build(
            new,
            "dkim reject 0 reject_type temp loglevel 4 timeout 3",
            &[]
        )
        .is_ok());
        let e = build_err(new, "dkim sign 1", &[]);
        assert_eq!(e.to_string(), "plugins:1: dkim: unknown argument 'sign'");
        build_err(new, "dkim timeout 0", &[]);
        build_err(new, "dkim timeout", &[]);
    }

    #[test]
    fn reject_forms_and_testing_keys() {
        let changed = RFC8463_SIGNED.replace("Joe.", "J.");
        let r = check_with(
            "dkim reject_type temp",
            changed.as_bytes(),
            Stored::Memory,
            services_with_keys,
        );
        assert_eq!(
            r.outcome,
            Outcome::DenySoft(Some("5.7.20 DKIM signature invalid".into()))
        );
        // A key in testing mode: reported, not refused.
        let r = check(&changed, |svc| {
            svc.answer(ED_NAME, QType::Txt, vec![txt(&format!("{ED_RECORD}; t=y"))]);
        });
        assert!(r.clauses[0].starts_with("dkim=fail "));
        assert_eq!(r.outcome, Outcome::Declined);
        assert!(r.svc.logged("(testing key)"));
    }
}
