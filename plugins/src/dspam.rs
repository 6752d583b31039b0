//! # dspam — classify the message with the DSPAM statistical filter
//!
//! ## Synopsis
//!
//! ```text
//! dspam [dspam_bin PATH] [reject PROBABILITY|agree|0] [reject_type perm|temp|disconnect]
//!       [autolearn naughty|karma|spamassassin|any] [timeout SECONDS] [max_scans N]
//!       [defer_on_error yes|no] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` runs `dspam --user USER --mode=tum --process --deliver=summary --stdout`
//! with the message on its standard input, and reads dspam's summary line:
//!
//! ```text
//! user@example.com; result="Spam"; class="Spam"; probability=1.0000; confidence=1.00; signature=4f8d...
//! ```
//!
//! USER is the recipient's address (lower case) when there is one recipient, so that
//! per-user data applies; with several, the account the server runs as (dspam must then
//! `Trust` that account). An address that could be taken for an option or holds anything but
//! letters, digits and `.@_+=-` is not passed: the server's account is used instead.
//!
//! The message then gets `X-DSPAM-Result: RESULT, probability=P, confidence=C` and
//! `X-DSPAM-Signature: SIGNATURE` (the signature is what retraining later needs: set dspam's
//! `Preference "signatureLocation=headers"`). Then:
//!
//! - `reject 0`: never refused (`skip, reject disabled`).
//! - `reject agree`: refused only when dspam says Spam and `spamassassin` (earlier in
//!   `config/plugins`) said spam too; otherwise through.
//! - `reject P` (default 1): refused when dspam's class is not Innocent, its probability is
//!   at least P and its confidence is 1 (qpsmtpd's POD; its code wanted the probability above
//!   P, which `reject 1` never is).
//!
//! A refusal is `dspam says, no spam please` in the form `reject_type` says (perm: 5xx, the
//! default; temp: 4xx; disconnect). Relay clients and whitelisted hosts or senders are not
//! classified (qpsmtpd's `is_immune`), nor messages over 500,000 bytes.
//!
//! `autolearn naughty` (or `any`): a message from a connection marked naughty by an earlier
//! plugin that dspam took for Innocent is retrained as spam, with `dspam --user USER
//! --mode=toe --source=error --class=spam --deliver=summary --stdout`; a failed retraining is
//! logged and changes nothing else.
//!
//! dspam runs off the worker, on the slow helpers' pool, killed with its process group at
//! `timeout` (which bounds classification and retraining together); at most `max_scans` run at
//! once per worker, the others wait in a queue. When dspam cannot run, exits with an error,
//! is killed, or prints no summary line in the form above: `defer_on_error yes` (the default)
//! answers `451 4.7.1`; `no` lets the message through with `X-DSPAM-Result: not scanned,
//! dspam error`. Every run logs one line with its result and the time spent.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `dspam_bin PATH` | `/usr/local/bin/dspam` | the program |
//! | `reject P\|agree\|0` | `1` | see above; P from 0 to 1 |
//! | `reject_type perm\|temp\|disconnect` | `perm` | the form of a refusal |
//! | `autolearn naughty\|karma\|spamassassin\|any` | | retraining, see above and Notes |
//! | `timeout SECONDS` | `25` | the whole hook, queueing and retraining included; keep it below `plugin_timeout` (30) |
//! | `max_scans N` | `8` | dspam runs in flight per worker; more wait in a queue |
//! | `defer_on_error yes\|no` | `yes` | the error policy |
//! | `loglevel N` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None (dspam's own `dspam.conf`: see qpsmtpd's notes; the signature must go in the headers).
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! **Tested with a stand-in program only**: dspam is not in Debian (nor in this project's
//! test machines); the tests run a small shell script that reads the message from its standard
//! input and prints summary lines in dspam's format. Check the plugin against a real dspam
//! before relying on it.
//!
//! Differences from qpsmtpd: `autolearn karma` and `autolearn spamassassin` are accepted but
//! learn nothing yet: the karma score and spamassassin's own autolearn verdict are not kept in
//! notes this plugin can read (only `naughty` is, so `any` learns from naughty connections).
//! qpsmtpd let the message through when dspam gave no answer; here that is the error policy.
//! An `X-DSPAM-Result` field the client sent is not removed (qpsmtpd replaced it): ours comes
//! after it. qpsmtpd prepended `X-Envelope-From`; here dspam reads the message as received.
//! The classification is not kept in a transaction note.
//!
//! ## Standards
//!
//! None.
//!
//! ## Security
//!
//! dspam's output is hostile input: only its first 16 KiB are read; the summary line must
//! match the form above exactly (result and class are letters, probability and confidence
//! numbers from 0 to 1, the signature letters, digits and `,/=+-`, or `N/A`) before anything
//! from it reaches a header or the log. The recipient address reaches dspam as one argument,
//! never through a shell, and only in the safe form above.

use std::cell::OnceCell;
use std::time::Instant;

use ringsmtpd_plugin_api::args::{key_values, take_own};
use ringsmtpd_plugin_api::shared::{Naughty, SpamVerdict};
use ringsmtpd_plugin_api::{
    blocking, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Step, Transaction,
};

use crate::helpers::command_scanner::{CommandScanner, Input, Ran};
use crate::helpers::scan_metrics::scan_metrics;
use crate::helpers::scanner::{self, ScannerArgs};
use crate::queue::local::output_for_log;

const DEFAULT_PROGRAM: &str = "/usr/local/bin/dspam";
/// qpsmtpd's limit, bytes.
const MAX_SIZE: u64 = 500_000;
const RESULT: &str = "X-DSPAM-Result";
const SIGNATURE: &str = "X-DSPAM-Signature";
const REFUSAL: &str = "dspam says, no spam please";

/// `reject`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reject {
    Off,
    Agree,
    /// Refuse at or above this probability.
    Above(f64),
}

/// `autolearn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Learn {
    None,
    Naughty,
    /// `karma` or `spamassassin`: nothing to learn from yet (see Notes).
    Unavailable,
    Any,
}

/// The `dspam` plugin.
pub struct Dspam {
    common: Common,
    scanner: CommandScanner,
    reject: Reject,
    learn: Learn,
    /// The server's account name, looked up once (off the worker).
    own_user: OnceCell<String>,
}

/// Builds `dspam` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build_plugin(init)?))
}

fn build_plugin(init: &PluginInit<'_>) -> Result<Dspam, ConfigError> {
    // `reject` takes a probability here, which the common `reject 0|1|naughty` does not.
    let (own, others) = take_own(init.args, &["reject"]).map_err(|e| init.error(e))?;
    let mut reject = Reject::Above(1.0);
    for (_, value) in own {
        reject = match value {
            "agree" => Reject::Agree,
            v => match v.parse::<f64>() {
                Ok(0.0) => Reject::Off,
                Ok(p) if (0.0..=1.0).contains(&p) => Reject::Above(p),
                _ => {
                    return Err(init.error(format!(
                        "reject must be a probability from 0 to 1 or agree, not '{v}'"
                    )))
                }
            },
        };
    }
    let (common_args, rest) =
        CommonArgs::extract(&others, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    let common = Common::new(init.name, common_args);
    let mut args = ScannerArgs::default();
    let mut program = DEFAULT_PROGRAM;
    let mut learn = Learn::None;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        if args.take(key, value).map_err(|e| init.error(e))? {
            continue;
        }
        match key {
            "dspam_bin" => program = value,
            "autolearn" => {
                learn = match value {
                    "naughty" => Learn::Naughty,
                    "karma" | "spamassassin" => Learn::Unavailable,
                    "any" => Learn::Any,
                    v => {
                        return Err(init.error(format!(
                            "autolearn must be naughty, karma, spamassassin or any, not '{v}'"
                        )))
                    }
                }
            }
            _ => return Err(init.unknown(key)),
        }
    }
    Ok(Dspam {
        common,
        scanner: CommandScanner::new(program, args, scan_metrics!("dspam"))
            .map_err(|e| init.error(e))?,
        reject,
        learn,
        own_user: OnceCell::new(),
    })
}

/// dspam's summary line.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    result: String,
    class: String,
    probability: f64,
    confidence: f64,
    signature: String,
}

impl Plugin for Dspam {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if scanner::immune(&self.common, cx, txn)
            || scanner::too_big(&self.common, cx, txn, MAX_SIZE, "the limit of")
        {
            return Step::DECLINED;
        }
        Step::pending(async move {
            let start = Instant::now();
            let deadline = start + self.scanner.args.timeout;
            let svc = cx.svc.clone();
            let user = match self.user(cx, txn).await {
                Ok(user) => user,
                Err(e) => {
                    return self.scanner.args.on_error(
                        &self.common,
                        cx,
                        txn,
                        RESULT,
                        &e,
                        start.elapsed(),
                    )
                }
            };
            let argv = [
                "--user",
                user.as_str(),
                "--mode=tum",
                "--process",
                "--deliver=summary",
                "--stdout",
            ];
            let answer = self
                .scanner
                .run_until(&svc, txn, &argv, Input::Stdin, deadline)
                .await
                .and_then(|ran| summary(&ran));
            let spent = start.elapsed();
            let d = match answer {
                Ok(d) => d,
                Err(e) => {
                    return self
                        .scanner
                        .args
                        .on_error(&self.common, cx, txn, RESULT, &e, spent)
                }
            };
            txn.append_header(
                RESULT,
                &format!(
                    "{}, probability={:.4}, confidence={:.2}",
                    d.result, d.probability, d.confidence
                ),
            );
            txn.append_header(SIGNATURE, &d.signature);
            let secs = spent.as_secs_f64();
            let status = format!("{}, {:.2} c. ({secs:.3}s)", d.class, d.confidence);
            if d.class == "Spam" {
                self.scanner.metrics.found();
            }
            let outcome = self.decide(cx, txn, &d, &status);
            if self.learns_naughty()
                && cx.conn.notes.contains::<Naughty>()
                && d.result == "Innocent"
            {
                self.train_as_spam(cx, txn, &user, deadline).await;
            }
            outcome
        })
    }
}

impl Dspam {
    fn learns_naughty(&self) -> bool {
        matches!(self.learn, Learn::Naughty | Learn::Any)
    }

    /// The recipient when there is one and it is safe as an argument; else this account.
    async fn user(&self, cx: &Cx, txn: &Transaction) -> Result<String, String> {
        if let [only] = txn.recipients.as_slice() {
            let addr = only.addr.as_str().to_ascii_lowercase();
            if safe_user(&addr) {
                return Ok(addr);
            }
            self.common.log(
                cx,
                Level::Info,
                format_args!("recipient not usable as a dspam user, using this account's"),
            );
        }
        if let Some(user) = self.own_user.get() {
            return Ok(user.clone());
        }
        let uid = rustix::process::geteuid().as_raw();
        let found = blocking(&*cx.svc, move || {
            account_name(
                &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
                uid,
            )
        })
        .await
        .flatten()
        .ok_or_else(|| format!("no account name for uid {uid} in /etc/passwd"))?;
        Ok(self.own_user.get_or_init(|| found).clone())
    }

    /// qpsmtpd's `log_and_return`.
    fn decide(&self, cx: &mut Cx, txn: &Transaction, d: &Summary, status: &str) -> Outcome {
        let pass = |why: std::fmt::Arguments<'_>| {
            self.common.log(cx, Level::Info, why);
            Outcome::Declined
        };
        match self.reject {
            Reject::Off => pass(format_args!("skip, reject disabled ({status})")),
            Reject::Agree => match txn.notes.get::<SpamVerdict>() {
                None => pass(format_args!(
                    "pass, cannot agree, SA results missing ({status})"
                )),
                Some(sa) if sa.is_spam && d.class == "Spam" => {
                    self.common
                        .log(cx, Level::Info, format_args!("fail, agree, {status}"));
                    self.common.args.deny(Some(REFUSAL.into()))
                }
                Some(_) => pass(format_args!("pass, no agreement on spam, {status}")),
            },
            Reject::Above(_) if d.class == "Innocent" => pass(format_args!("pass, {status}")),
            Reject::Above(p) if d.probability < p => pass(format_args!(
                "pass, {} probability is too low ({} < {p}), {status}",
                d.class, d.probability
            )),
            Reject::Above(_) if d.confidence != 1.0 => pass(format_args!(
                "pass, {} confidence is too low, {status}",
                d.class
            )),
            Reject::Above(_) => {
                self.common
                    .log(cx, Level::Info, format_args!("fail, {status}"));
                self.common.args.deny(Some(REFUSAL.into()))
            }
        }
    }

    /// Retrains the message as spam; the outcome is only logged.
    async fn train_as_spam(&self, cx: &Cx, txn: &Transaction, user: &str, deadline: Instant) {
        let argv = [
            "--user",
            user,
            "--mode=toe",
            "--source=error",
            "--class=spam",
            "--deliver=summary",
            "--stdout",
        ];
        let svc = cx.svc.clone();
        match self
            .scanner
            .run_until(&svc, txn, &argv, Input::Stdin, deadline)
            .await
            .and_then(|ran| summary(&ran))
        {
            Ok(d) => self.common.log(
                cx,
                Level::Info,
                format_args!(
                    "autolearn, naughty message trained as spam (now {})",
                    d.result
                ),
            ),
            Err(e) => self
                .common
                .log(cx, Level::Error, format_args!("autolearn failed: {e}")),
        }
    }
}

/// A recipient address dspam can take as a user name: not an option, no odd characters.
fn safe_user(addr: &str) -> bool {
    !addr.is_empty()
        && addr.len() <= 256
        && !addr.starts_with('-')
        && addr
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".@_+=-".contains(c))
}

/// The name of `uid` in an `/etc/passwd` text.
fn account_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let uid_field = f.nth(1)?;
        (uid_field.parse::<u32>().ok()? == uid && safe_user(name)).then(|| name.to_string())
    })
}

/// dspam's exit code and its summary line (the first line that has `; result=`).
fn summary(ran: &Ran) -> Result<Summary, String> {
    let text = ran.text();
    if ran.code != Some(0) {
        return Err(format!(
            "dspam failed ({}): {}",
            ran.how(),
            output_for_log(&ran.output)
        ));
    }
    let line = text
        .lines()
        .find(|l| l.contains("; result="))
        .ok_or_else(|| {
            format!(
                "no summary line from dspam: {}",
                output_for_log(&ran.output)
            )
        })?;
    parse_summary(line).ok_or_else(|| {
        format!(
            "dspam's summary line is not in its form: {}",
            output_for_log(line.as_bytes())
        )
    })
}

/// `USER; result="R"; class="C"; probability=P; confidence=C; signature=S`.
fn parse_summary(line: &str) -> Option<Summary> {
    let mut fields = line.trim_end().split("; ");
    fields.next()?; // the user
    let mut value = |key: &str| {
        let (k, v) = fields.next()?.split_once('=')?;
        (k == key).then_some(v)
    };
    let word = |v: &str| {
        let w = v.strip_prefix('"')?.strip_suffix('"')?;
        (!w.is_empty() && w.len() <= 32 && w.chars().all(|c| c.is_ascii_alphabetic()))
            .then(|| w.to_string())
    };
    let share = |v: &str| {
        let n = v.parse::<f64>().ok()?;
        (v.len() <= 12 && (0.0..=1.0).contains(&n)).then_some(n)
    };
    let result = word(value("result")?)?;
    let class = word(value("class")?)?;
    let probability = share(value("probability")?)?;
    let confidence = share(value("confidence")?)?;
    let signature = value("signature")?;
    let sig_ok = !signature.is_empty()
        && signature.len() <= 128
        && signature
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ",/=+-".contains(c));
    if !sig_ok || fields.next().is_some() {
        return None;
    }
    Some(Summary {
        result,
        class,
        probability,
        confidence,
        signature: signature.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::helpers::scanner::test_kit::reply_of;
    use crate::virus::verdict::test_kit::stand_in;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, rcpt, run, set_message, TempDir};

    const MESSAGE: &str = "Subject: cheap pills\r\n\r\nbuy now\r\n";

    /// A stand-in dspam: records its arguments and standard input in the directory, then
    /// prints the summary line for `result`/`class` with probability `p`, confidence `c`.
    fn dspam(result: &str, p: &str, c: &str) -> (TempDir, String) {
        stand_in(
            "dspam",
            &format!(
                "d=$(dirname \"$0\"); echo \"$*\" >> \"$d/args\"; cat > \"$d/input\"\n\
                 echo \"dspam: warming up\" >&2\n\
                 echo \"$2; result=\\\"{result}\\\"; class=\\\"{result}\\\"; probability={p}; \
                 confidence={c}; signature=4f8dae6a446008399211546\""
            ),
        )
    }

    fn plugin(program: &str, more: &str) -> Dspam {
        build(
            build_plugin,
            &format!("dspam dspam_bin {program} {more}"),
            &[],
        )
        .unwrap()
    }

    struct Scan {
        out: Outcome,
        headers: String,
        logs: Vec<String>,
    }

    fn scan_with(p: &Dspam, rcpts: &[&str], setup: impl FnOnce(&mut Cx, &mut Transaction)) -> Scan {
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        for r in rcpts {
            txn.recipients.push(rcpt(&format!("<{r}>")));
        }
        setup(&mut c, &mut txn);
        let out = run(p.data_post(&mut c, &mut txn));
        let logs = svc.logs.borrow().iter().map(|l| l.2.clone()).collect();
        Scan {
            out,
            headers: txn.added_headers,
            logs,
        }
    }

    fn scan(p: &Dspam) -> Scan {
        scan_with(p, &["User@Example.com"], |_, _| {})
    }

    fn args_seen(dir: &TempDir) -> String {
        std::fs::read_to_string(dir.path().join("args")).unwrap_or_default()
    }

    #[test]
    fn spam_is_refused_with_headers_and_the_message_on_stdin() {
        let (d, p) = dspam("Spam", "1.0000", "1.00");
        let s = scan(&plugin(&p, ""));
        assert_eq!(s.out, Outcome::Deny(Some(REFUSAL.into())));
        assert!(s.headers.contains(
            "X-DSPAM-Result: Spam, probability=1.0000, confidence=1.00\r\n\
             X-DSPAM-Signature: 4f8dae6a446008399211546\r\n"
        ));
        assert!(
            s.logs
                .iter()
                .any(|l| l.starts_with("fail, Spam, 1.00 c. (")),
            "{:?}",
            s.logs
        );
        assert_eq!(
            args_seen(&d),
            "--user user@example.com --mode=tum --process --deliver=summary --stdout\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("input")).unwrap(),
            MESSAGE
        );
        // reject_type temp: a 4xx.
        let s = scan(&plugin(&p, "reject_type temp"));
        assert_eq!(s.out, Outcome::DenySoft(Some(REFUSAL.into())));
    }

    #[test]
    fn thresholds_innocent_and_relay_clients_pass() {
        let (_d, p) = dspam("Innocent", "0.0023", "1.00");
        let s = scan(&plugin(&p, ""));
        assert_eq!(s.out, Outcome::Declined);
        assert!(s
            .headers
            .contains("X-DSPAM-Result: Innocent, probability=0.0023, confidence=1.00"));
        let (_d, p) = dspam("Spam", "0.9000", "1.00");
        assert_eq!(
            scan(&plugin(&p, "")).out,
            Outcome::Declined,
            "0.9 < reject 1"
        );
        assert_eq!(
            scan(&plugin(&p, "reject .85")).out,
            Outcome::Deny(Some(REFUSAL.into()))
        );
        let s = scan(&plugin(&p, "reject 0"));
        assert_eq!(s.out, Outcome::Declined);
        assert!(s
            .logs
            .iter()
            .any(|l| l.starts_with("skip, reject disabled")));
        let (_d, p) = dspam("Spam", "1.0000", "0.80");
        assert_eq!(
            scan(&plugin(&p, "reject 0.5")).out,
            Outcome::Declined,
            "confidence < 1"
        );
        // A relay client is not even classified.
        let (d, p) = dspam("Spam", "1.0000", "1.00");
        let s = scan_with(&plugin(&p, ""), &["a@b.example"], |c, _| {
            c.conn.relay_client = true
        });
        assert_eq!(s.out, Outcome::Declined);
        assert_eq!(args_seen(&d), "");
    }

    #[test]
    fn agree_needs_spamassassin() {
        let (_d, p) = dspam("Spam", "1.0000", "1.00");
        let p = plugin(&p, "reject agree");
        let s = scan(&p);
        assert_eq!(s.out, Outcome::Declined);
        assert!(s.logs.iter().any(|l| l.contains("SA results missing")));
        let sa = |is_spam| SpamVerdict {
            scanner: "spamassassin",
            score: 9.0,
            threshold: 5.0,
            is_spam,
            action: None,
        };
        let s = scan_with(&p, &["a@b.example"], |_, t| t.notes.set(sa(true)));
        assert_eq!(s.out, Outcome::Deny(Some(REFUSAL.into())));
        let s = scan_with(&p, &["a@b.example"], |_, t| t.notes.set(sa(false)));
        assert_eq!(s.out, Outcome::Declined);
    }

    #[test]
    fn naughty_innocent_is_retrained_as_spam() {
        let (d, p) = dspam("Innocent", "0.1000", "1.00");
        let naughty = |c: &mut Cx, _: &mut Transaction| {
            c.conn.notes.set(Naughty {
                plugin: "dnsbl".into(),
                msg: "listed".into(),
            })
        };
        let s = scan_with(&plugin(&p, "autolearn naughty"), &["a@b.example"], naughty);
        assert_eq!(s.out, Outcome::Declined);
        let args = args_seen(&d);
        assert_eq!(
            args.lines().nth(1),
            Some("--user a@b.example --mode=toe --source=error --class=spam --deliver=summary --stdout"),
            "{args}"
        );
        assert!(s
            .logs
            .iter()
            .any(|l| l.starts_with("autolearn, naughty message trained")));
        // Without autolearn, or without the naughty mark: one run only.
        let (d, p) = dspam("Innocent", "0.1000", "1.00");
        scan_with(&plugin(&p, ""), &["a@b.example"], naughty);
        scan(&plugin(&p, "autolearn any"));
        assert_eq!(args_seen(&d).lines().count(), 2);
    }

    #[test]
    fn users_for_several_or_unsafe_recipients_are_this_account() {
        let (d, p) = dspam("Innocent", "0.1000", "1.00");
        let p = plugin(&p, "");
        scan_with(&p, &["a@b.example", "c@d.example"], |_, _| {});
        scan_with(&p, &["--help@b.example"], |_, _| {});
        let uid = rustix::process::geteuid().as_raw();
        let me = account_name(&std::fs::read_to_string("/etc/passwd").unwrap(), uid).unwrap();
        for line in args_seen(&d).lines() {
            assert!(
                line.starts_with(&format!("--user {me} --mode=tum")),
                "{line}"
            );
        }
        assert_eq!(
            account_name("root:x:0:0::/root:/bin/sh\nmail:x:8:8::/:/bin/false\n", 8),
            Some("mail".into())
        );
        assert_eq!(account_name("-x:x:8:8::/:\n", 8), None);
    }

    #[test]
    fn failures_and_garbage_defer() {
        for (body, why) in [
            ("exit 3", "exit code 3"),
            ("echo 'nothing to see'", "no summary line"),
            (
                "echo 'u; result=\"Spam\"; class=\"Spam\"; probability=7; confidence=1.00; signature=x'",
                "not in its form",
            ),
            (
                "printf 'u; result=\"Sp\\033am\"; class=\"Spam\"; probability=1; confidence=1; signature=x\\n'",
                "not in its form",
            ),
            (
                "echo 'u; result=\"Spam\"; class=\"Spam\"; probability=1; confidence=1; signature=a\rX-Injected: 1'",
                "not in its form",
            ),
            ("sleep 30", "ran past the timeout"),
        ] {
            let (_d, p) = stand_in("dspam", &format!("cat >/dev/null; {body}"));
            let s = scan(&plugin(&p, "timeout 1"));
            assert_eq!(reply_of(&s.out).0, 451, "{why}");
            assert!(!s.headers.contains("X-DSPAM"), "{why}: {}", s.headers);
            assert!(s.logs.iter().any(|l| l.starts_with("error, deferred") && l.contains(why)), "{why}: {:?}", s.logs);
            assert!(s.logs.iter().all(|l| !l.contains('\u{1b}') && !l.contains('\r')));
        }
        let (_d, p) = stand_in("dspam", "exit 1");
        let s = scan(&plugin(&p, "defer_on_error no"));
        assert_eq!(s.out, Outcome::Declined);
        assert!(s
            .headers
            .contains("X-DSPAM-Result: not scanned, dspam error"));
    }

    #[test]
    fn arguments() {
        let p: Dspam = build(build_plugin, "dspam", &[]).unwrap();
        assert_eq!(p.scanner.program.to_str(), Some(DEFAULT_PROGRAM));
        assert_eq!(p.reject, Reject::Above(1.0));
        assert_eq!(p.learn, Learn::None);
        let p: Dspam = build(
            build_plugin,
            "dspam reject .95 reject_type disconnect loglevel 6 autolearn karma",
            &[],
        )
        .unwrap();
        assert_eq!(p.reject, Reject::Above(0.95));
        assert_eq!(p.learn, Learn::Unavailable);
        for (args, why) in [
            ("reject 2", "probability"),
            ("reject", "needs a value"),
            ("autolearn sometimes", "autolearn must be"),
            ("reject_type maybe", "reject_type"),
            ("dspam_bin dspam", "absolute"),
            ("frob 1", "unknown argument"),
        ] {
            let e = build_err(build_plugin, &format!("dspam {args}"), &[]);
            assert!(e.to_string().contains(why), "{args}: {e}");
        }
    }
}
