//! # sender_permitted_from — SPF (RFC 7208)
//!
//! ## Synopsis
//!
//! ```text
//! sender_permitted_from [reject 0..6] [timeout SECONDS] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `MAIL` the plugin evaluates the sender's SPF policy (RFC 7208 `check_host()`, written
//! here: [`record`] parses a record into terms, [`macros`] expands macro strings, [`eval`]
//! evaluates, every lookup through the worker's DNS client), and refuses the sender as the
//! `reject` level says. For the null sender `<>` it checks the HELO identity
//! (`postmaster@<helo>`, RFC 7208 §2.3), where qpsmtpd skipped the check.
//!
//! At `data_post_headers` it adds a `Received-SPF` header (RFC 7208 §9.1) and an
//! `spf=<result> smtp.mailfrom=<domain>` (or `smtp.helo=<helo>`) clause for the
//! Authentication-Results header.
//!
//! | `reject` | what is refused (qpsmtpd's levels) |
//! |---|---|
//! | `0` (default) | nothing: log, header and A-R only |
//! | `1` | nothing (annotate only) |
//! | `2` | as 1, and `fail` and `temperror` are deferred (4xx) |
//! | `3` | `fail` refused (5xx), `softfail` and `temperror` deferred |
//! | `4` | `fail` and `softfail` refused; `permerror` and `temperror` deferred |
//! | `5` | as 4, and `neutral` refused |
//! | `6` | as 5, and `none` and `permerror` refused |
//!
//! Refusals say `550 5.7.23 SPF - fail: <why>` (RFC 7372 X.7.23, SPF validation failed) and
//! deferrals `450 4.7.23 ...`; errors (`temperror`, `permerror`) use X.7.24. `<why>` is the
//! domain's `exp=` explanation when it gave one, else ours. A `temperror` (a DNS timeout,
//! SERVFAIL, or no answer within `timeout`) is never refused permanently.
//!
//! Not checked: relay clients and whitelisted hosts or senders (`is_immune`), authenticated
//! clients, and a null sender before any HELO.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0..6` | `spfbehavior`, else `0` | the level above |
//! | `spf_deny 1\|2` | | qpsmtpd's old form: `reject 3` and `reject 4` |
//! | `timeout` | `10` | seconds for the whole evaluation; lookups not answered by then make a `temperror` (keep it below `plugin_timeout`) |
//! | `reject_type` | | `disconnect` or `temp_disconnect` close the connection after a refusal or a deferral; whether a result is refused or deferred is the level's to say |
//! | `no_dmarc_policy` | | accepted and ignored (qpsmtpd's switch for its `dmarc` plugin) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `spfbehavior` | the level, when the line has no `reject` (qpsmtpd's file) |
//!
//! ## Hooks
//!
//! `mail`, `data_post_headers`.
//!
//! ## Notes
//!
//! Writes txn note [`SpfCheck`] (qpsmtpd's `spfquery`/`dmarc_spf`: the identity, its domain
//! and the verdict) and a clause of `shared::AuthResults`. Reads `is_immune`'s notes.
//!
//! ## Standards
//!
//! RFC 7208 (SPF; the RFC 7208 test suite runs in `cargo test`: every case passes but one,
//! whose expected explanation writes IPv6 nibbles in uppercase where §7.4's example has them
//! in lowercase), RFC 7372 (X.7.23, X.7.24), RFC 8601 (the `spf` method, `smtp.mailfrom`,
//! `smtp.helo`).
//!
//! ## Security
//!
//! Every DNS answer is hostile: a record is parsed strictly (at most 4096 bytes, 256 terms),
//! at most 10 DNS-querying terms and 2 void lookups per check, 10 MX and PTR names followed,
//! names checked before they are asked, and the whole check bounded by `timeout`. Text from
//! DNS or the client reaches a reply, a header or a log line as printable ASCII only.

pub mod eval;
pub mod macros;
pub mod record;

#[cfg(test)]
mod suite;

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use ringsmtpd_plugin_api::args::{key_values, parse_timeout};
use ringsmtpd_plugin_api::dnsutil::{client_ip, Deadline};
use ringsmtpd_plugin_api::shared::{is_immune, AuthResults};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    RejectType, Step, Transaction,
};

use eval::{check, Request, SpfResult, Verdict};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest `<why>` put in a reply or a header.
const MAX_WHY: usize = 200;

/// Which identity was checked (RFC 7208 §2.3, §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    MailFrom,
    Helo,
}

/// The SPF check of a transaction (txn note): the identity, its domain, the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpfCheck {
    pub identity: Identity,
    /// The domain checked: the sender's, or the HELO name.
    pub domain: String,
    /// The address checked (`postmaster@<helo>` for the HELO identity).
    pub sender: String,
    pub helo: String,
    pub ip: IpAddr,
    pub verdict: Verdict,
}

pub struct SenderPermittedFrom {
    common: Common,
    level: u8,
    timeout: Duration,
}

fn level(value: &str) -> Result<u8, String> {
    match value.trim().parse::<u8>() {
        Ok(n) if n <= 6 => Ok(n),
        _ => Err(format!("reject must be a level from 0 to 6, not '{value}'")),
    }
}

/// Builds `sender_permitted_from` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    // `reject` is a level here, not the common 0|1|naughty: take it out first.
    let mut reject = None;
    let mut others = Vec::new();
    let mut it = init.args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            key @ ("reject" | "spf_deny") => {
                let value = it
                    .next()
                    .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?;
                reject = Some(match (key, value.as_str()) {
                    ("reject", v) => level(v).map_err(|e| init.error(e))?,
                    (_, "1") => 3,
                    (_, "2") => 4,
                    (_, v) => return Err(init.error(format!("spf_deny must be 1 or 2, not '{v}'"))),
                });
            }
            _ => others.push(arg.clone()),
        }
    }
    let (args, rest) =
        CommonArgs::extract(&others, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    let common = Common::new(init.name, args);
    let mut timeout = DEFAULT_TIMEOUT;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match key {
            "timeout" => timeout = parse_timeout(value).map_err(|e| init.error(e))?,
            "no_dmarc_policy" => {}
            _ => return Err(init.unknown(key)),
        }
    }
    let level = match reject {
        Some(n) => n,
        None => match init.config.first("spfbehavior")? {
            Some(line) => level(&line.text).map_err(|e| line.error(e))?,
            None => 0,
        },
    };
    Ok(Box::new(SenderPermittedFrom {
        common,
        level,
        timeout,
    }))
}

/// Keeps printable ASCII (`?` for the rest), at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// A header value: a dot-atom as it is, anything else as a quoted-string (RFC 5322 §3.2).
fn header_value(s: &str) -> String {
    let atom = !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    if atom {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in printable(s, 256).chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Text for a header comment: printable ASCII without parentheses or backslashes.
fn comment(s: &str) -> String {
    printable(s, MAX_WHY).replace(['(', ')', '\\'], "?")
}

impl SenderPermittedFrom {
    /// The outcome for a verdict at this plugin's level (the table in the module docs).
    fn verdict(&self, cx: &mut Cx, spf: &SpfCheck) -> Outcome {
        let v = &spf.verdict;
        let why = match &v.explanation {
            Some(e) => printable(e, MAX_WHY),
            None => match v.result {
                SpfResult::Fail | SpfResult::SoftFail | SpfResult::Neutral => format!(
                    "{} does not designate {} as permitted sender",
                    printable(&spf.domain, 100),
                    spf.ip
                ),
                _ => printable(&v.why, MAX_WHY),
            },
        };
        let l = self.level;
        // (refuse for good, defer, enhanced code's detail)
        let (deny, defer, detail) = match v.result {
            SpfResult::Pass => (false, false, 23),
            SpfResult::Fail => (l >= 3, l == 2, 23),
            SpfResult::SoftFail => (l >= 4, l == 3, 23),
            SpfResult::Neutral => (l >= 5, false, 23),
            SpfResult::None => (l >= 6, false, 23),
            SpfResult::PermError => (l >= 6, l == 4 || l == 5, 24),
            SpfResult::TempError => (false, l >= 2, 24),
        };
        let result = v.result;
        let disconnect = matches!(
            self.common.args.reject_type,
            RejectType::Disconnect | RejectType::TempDisconnect
        );
        let (what, class, outcome): (_, _, fn(_) -> Outcome) = match (deny, defer, disconnect) {
            (true, _, false) => ("fail", 5, Outcome::Deny),
            (true, _, true) => ("fail", 5, Outcome::DenyDisconnect),
            (_, true, false) => ("defer", 4, Outcome::DenySoft),
            (_, true, true) => ("defer", 4, Outcome::DenySoftDisconnect),
            _ => ("", 0, |_| Outcome::Declined),
        };
        if class > 0 {
            self.common
                .log(cx, Level::Info, format_args!("{what}, {result}, {}", v.why));
            let text = format!("{class}.7.{detail} SPF - {result}: {why}");
            return outcome(Some(Cow::Owned(text)));
        }
        let what = if result == SpfResult::Pass {
            "pass"
        } else {
            "skip, tolerated"
        };
        self.common
            .log(cx, Level::Info, format_args!("{what}, {result}, {}", v.why));
        Outcome::Declined
    }
}

impl Plugin for SenderPermittedFrom {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail, Hook::DataPostHeaders])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if is_immune(cx, Some(txn)) || cx.conn.auth.is_some() {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip, relay or authenticated client"),
            );
            return Step::DECLINED;
        }
        let helo = cx.conn.hello_host().trim_end_matches('.').to_string();
        let (identity, sender, domain) = if txn.sender.is_null() {
            if helo.is_empty() {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("skip, null sender before HELO"),
                );
                return Step::DECLINED;
            }
            (Identity::Helo, format!("postmaster@{helo}"), helo.clone())
        } else {
            let domain = txn
                .sender
                .domain()
                .trim_end_matches('.')
                .to_ascii_lowercase();
            (Identity::MailFrom, txn.sender.as_str().to_string(), domain)
        };
        let ip = client_ip(cx);
        let req = Request {
            ip,
            sender: match identity {
                Identity::Helo => String::new(),
                Identity::MailFrom => sender.clone(),
            },
            helo: helo.clone(),
            receiver: cx.svc.me().to_string(),
            now: cx
                .svc
                .now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        Step::pending(async move {
            let svc = cx.svc.clone();
            let mut timer = Deadline::start(&*svc, self.timeout).timer(&*svc);
            let verdict = check(&*svc, &mut timer, &req).await;
            let spf = SpfCheck {
                identity,
                domain,
                sender,
                helo,
                ip,
                verdict,
            };
            let outcome = self.verdict(cx, &spf);
            txn.notes.set(spf);
            outcome
        })
    }

    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let Some(spf) = txn.notes.get::<SpfCheck>() else {
            return Step::DECLINED;
        };
        let me = header_value(cx.svc.me());
        let result = spf.verdict.result;
        let says = match result {
            SpfResult::Pass => "designates {ip} as permitted sender",
            SpfResult::Fail | SpfResult::SoftFail => "does not designate {ip} as permitted sender",
            SpfResult::Neutral => "neither permits nor denies {ip}",
            SpfResult::None => "publishes no SPF policy",
            SpfResult::TempError => "could not be checked: temporary error",
            SpfResult::PermError => "could not be checked: bad policy",
        }
        .replace("{ip}", &spf.ip.to_string());
        let helo = if spf.helo.is_empty() {
            "unknown"
        } else {
            &spf.helo
        };
        let mut text = format!(
            "{result} ({me}: domain of {} {says}) client-ip={}; envelope-from={}; helo={}; \
             receiver={me}; identity={}",
            comment(&spf.domain),
            spf.ip,
            header_value(&spf.sender),
            header_value(helo),
            match spf.identity {
                Identity::MailFrom => "mailfrom",
                Identity::Helo => "helo",
            },
        );
        match (&spf.verdict.mechanism, result) {
            (Some(term), _) => text.push_str(&format!("; mechanism={}", header_value(term))),
            (None, SpfResult::TempError | SpfResult::PermError) => {
                let problem = printable(&spf.verdict.why, MAX_WHY);
                text.push_str(&format!("; problem={}", header_value(&problem)));
            }
            _ => {}
        }
        let clause = match spf.identity {
            Identity::MailFrom => {
                format!("spf={result} smtp.mailfrom={}", header_value(&spf.domain))
            }
            Identity::Helo => format!("spf={result} smtp.helo={}", header_value(&spf.helo)),
        };
        txn.prepend_header("Received-SPF", &text);
        txn.notes
            .get_or_insert_with(AuthResults::default)
            .0
            .push(clause);
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::{DnsError, QType};
    use ringsmtpd_plugin_api::shared::WhitelistHost;
    use ringsmtpd_plugin_api::testing::records::txt;
    use ringsmtpd_plugin_api::testing::{build, build_err, cx, run, txn_from, FakeServices};
    use ringsmtpd_plugin_api::{AuthInfo, Hello, HelloKind};

    /// A zone where `<result>.example` gives that result for 192.0.2.1.
    fn zone(svc: &FakeServices) {
        for (name, record) in [
            ("pass.example", "v=spf1 ip4:192.0.2.0/24 -all"),
            ("fail.example", "v=spf1 -all"),
            ("softfail.example", "v=spf1 ~all"),
            ("neutral.example", "v=spf1 ?all"),
            ("permerror.example", "v=spf1 ip4:192.0.2.300 -all"),
            ("helo.example", "v=spf1 a:mx.helo.example -all"),
        ] {
            svc.answer(name, QType::Txt, vec![txt(record)]);
        }
        svc.answer("none.example", QType::Txt, vec![txt("not spf")]);
        svc.fail("temperror.example", QType::Txt, DnsError::Timeout);
    }

    fn mail(line: &str, from: &str, setup: impl FnOnce(&mut Cx)) -> (Outcome, Transaction, Cx) {
        let p = build(new, line, &[]).expect("test plugin");
        let (mut c, svc) = cx("192.0.2.1:1");
        zone(&svc);
        c.conn.hello = Some(Hello {
            kind: HelloKind::Ehlo,
            host: "helo.example".into(),
        });
        setup(&mut c);
        let mut txn = txn_from(from);
        let o = run(p.mail(&mut c, &mut txn));
        run(p.data_post_headers(&mut c, &mut txn));
        (o, txn, c)
    }

    /// D: refused, S: deferred, -: accepted.
    fn kind(o: &Outcome) -> char {
        match o {
            Outcome::Declined => '-',
            Outcome::Deny(_) => 'D',
            Outcome::DenySoft(_) => 'S',
            _ => '?',
        }
    }

    #[test]
    fn reject_levels_as_qpsmtpd() {
        // Per result, the outcome at levels 0 to 6.
        for (result, want) in [
            ("pass", "-------"),
            ("fail", "--SDDDD"),
            ("softfail", "---SDDD"),
            ("neutral", "-----DD"),
            ("none", "------D"),
            ("permerror", "----SSD"),
            ("temperror", "--SSSSS"),
        ] {
            let got: String = (0..=6)
                .map(|l| {
                    let line = format!("sender_permitted_from reject {l}");
                    let (o, txn, _) = mail(&line, &format!("<a@{result}.example>"), |_| {});
                    assert_eq!(
                        txn.notes.get::<SpfCheck>().unwrap().verdict.result.as_str(),
                        result
                    );
                    kind(&o)
                })
                .collect();
            assert_eq!(got, want, "{result}");
        }
    }

    #[test]
    fn reply_texts_carry_rfc7372_codes() {
        let (o, _, _) = mail("sender_permitted_from reject 3", "<a@fail.example>", |_| {});
        assert_eq!(
            o.msg(),
            Some(
                "5.7.23 SPF - fail: fail.example does not designate 192.0.2.1 as permitted sender"
            )
        );
        let (o, _, _) = mail(
            "sender_permitted_from reject 6",
            "<a@temperror.example>",
            |_| {},
        );
        let msg = o.msg().unwrap();
        assert!(msg.starts_with("4.7.24 SPF - temperror: "), "{msg}");
        let (o, _, _) = mail(
            "sender_permitted_from reject 6",
            "<a@permerror.example>",
            |_| {},
        );
        assert!(o.msg().unwrap().starts_with("5.7.24 SPF - permerror: "));
        let (o, _, _) = mail(
            "sender_permitted_from reject 3 reject_type disconnect",
            "<a@fail.example>",
            |_| {},
        );
        assert!(matches!(o, Outcome::DenyDisconnect(_)));
    }

    #[test]
    fn explanation_from_dns_is_sanitised() {
        let p = build(new, "sender_permitted_from reject 3", &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "x.example",
            QType::Txt,
            vec![txt("v=spf1 -all exp=why.x.example")],
        );
        // Control characters make the explanation invalid (RFC 7208 §6.2): ours is used.
        svc.answer(
            "why.x.example",
            QType::Txt,
            vec![txt("go away\r\nX-Evil: 1\0")],
        );
        let mut txn = txn_from("<a@x.example>");
        let o = run(p.mail(&mut c, &mut txn));
        let msg = o.msg().unwrap();
        assert_eq!(
            msg,
            "5.7.23 SPF - fail: x.example does not designate 192.0.2.1 as permitted sender"
        );
        run(p.data_post_headers(&mut c, &mut txn));
        assert!(!txn
            .added_headers
            .trim_end_matches("\r\n")
            .contains(['\r', '\n', '\0']));
        // A valid one is expanded and used.
        svc.answer(
            "why.x.example",
            QType::Txt,
            vec![txt("%{i} may not send for %{o}")],
        );
        let mut txn = txn_from("<a@x.example>");
        let o = run(p.mail(&mut c, &mut txn));
        assert_eq!(
            o.msg(),
            Some("5.7.23 SPF - fail: 192.0.2.1 may not send for x.example")
        );
    }

    #[test]
    fn header_and_auth_results() {
        let (o, txn, _) = mail("sender_permitted_from reject 3", "<a@pass.example>", |_| {});
        assert_eq!(o, Outcome::Declined);
        let h = &txn.added_headers;
        assert!(
            h.starts_with("Received-SPF: pass (mx.example.test: domain of pass.example designates 192.0.2.1 as permitted sender) "),
            "{h}"
        );
        assert!(
            h.ends_with(" client-ip=192.0.2.1; envelope-from=\"a@pass.example\"; helo=helo.example; receiver=mx.example.test; identity=mailfrom; mechanism=\"ip4:192.0.2.0/24\"\r\n"),
            "{h}"
        );
        assert_eq!(
            txn.notes.get::<AuthResults>().unwrap().0,
            vec!["spf=pass smtp.mailfrom=pass.example".to_string()]
        );
        let (_, txn, _) = mail("sender_permitted_from", "<a@temperror.example>", |_| {});
        let h = &txn.added_headers;
        assert!(h.starts_with("Received-SPF: temperror (mx.example.test: domain of temperror.example could not be checked: temporary error) "), "{h}");
        assert!(
            h.ends_with("; problem=\"Txt temperror.example: DNS timeout\"\r\n"),
            "{h}"
        );
        // The null sender: the HELO identity.
        let (o, txn, _) = mail("sender_permitted_from reject 3", "<>", |_| {});
        assert!(matches!(o, Outcome::Deny(_)), "{o:?}");
        assert!(txn
            .added_headers
            .contains("envelope-from=\"postmaster@helo.example\";"));
        assert!(txn.added_headers.contains("identity=helo"));
        assert_eq!(
            txn.notes.get::<AuthResults>().unwrap().0,
            vec!["spf=fail smtp.helo=helo.example".to_string()]
        );
    }

    #[test]
    fn header_values_are_quoted_and_cleaned() {
        assert_eq!(header_value("mx-1.c.example"), "mx-1.c.example");
        assert_eq!(header_value("a.b@c.example"), "\"a.b@c.example\"");
        assert_eq!(header_value("\"a b\"@c"), "\"\\\"a b\\\"@c\"");
        assert_eq!(header_value("a\r\nb\0"), "\"a??b?\"");
        assert_eq!(header_value(""), "\"\"");
        assert_eq!(comment("x (y) \\ \r\n"), "x ?y? ? ??");
    }

    #[test]
    fn skipped_clients() {
        type Setup = fn(&mut Cx);
        let cases: [(Setup, &str); 4] = [
            (|c| c.conn.relay_client = true, "<a@fail.example>"),
            (
                |c| {
                    c.conn.auth = Some(AuthInfo {
                        user: "u".into(),
                        mechanism: "PLAIN".into(),
                    })
                },
                "<a@fail.example>",
            ),
            (
                |c| c.conn.notes.set(WhitelistHost("x".into())),
                "<a@fail.example>",
            ),
            (|c| c.conn.hello = None, "<>"),
        ];
        for (setup, from) in cases {
            let (o, txn, _) = mail("sender_permitted_from reject 6", from, setup);
            assert_eq!(o, Outcome::Declined);
            assert!(txn.added_headers.is_empty() && !txn.notes.contains::<SpfCheck>());
        }
    }

    #[test]
    fn arguments() {
        let level_of = |line: &str, files: &[(&str, &str)]| -> String {
            (["fail", "softfail"])
                .iter()
                .map(|r| {
                    let p = build(new, line, files).unwrap();
                    let (mut c, svc) = cx("192.0.2.1:1");
                    zone(&svc);
                    kind(&run(
                        p.mail(&mut c, &mut txn_from(&format!("<a@{r}.example>")))
                    ))
                })
                .collect()
        };
        assert_eq!(level_of("sender_permitted_from", &[]), "--");
        assert_eq!(
            level_of("sender_permitted_from", &[("spfbehavior", "4\n")]),
            "DD"
        );
        assert_eq!(
            level_of("sender_permitted_from reject 2", &[("spfbehavior", "4\n")]),
            "S-"
        );
        assert_eq!(level_of("sender_permitted_from spf_deny 1", &[]), "DS");
        assert_eq!(
            level_of(
                "sender_permitted_from timeout 2 loglevel 6 no_dmarc_policy 1",
                &[]
            ),
            "--"
        );
        for bad in [
            "sender_permitted_from reject 7",
            "sender_permitted_from reject naughty",
            "sender_permitted_from reject",
            "sender_permitted_from spf_deny 3",
            "sender_permitted_from timeout 0",
            "sender_permitted_from strict 1",
        ] {
            build_err(new, bad, &[]);
        }
        let e = build_err(new, "sender_permitted_from", &[("spfbehavior", "x\n")]);
        assert_eq!(
            e.to_string(),
            "spfbehavior:1: reject must be a level from 0 to 6, not 'x'"
        );
    }
}
