//! # rhsbl — refuse senders whose domain is on a right-hand-side blocklist
//!
//! ## Synopsis
//!
//! ```text
//! rhsbl [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [timeout SECONDS] [loglevel N]
//! rhsbl disconnect                       # qpsmtpd's legacy single argument
//! ```
//!
//! ## Description
//!
//! The domain of the envelope sender is looked up in every zone of `rhsbl_zones`
//! (`<domain>.<zone>`, RFC 5782 §2.3): the questions leave at `MAIL` (which answers at once),
//! the answers are awaited at the first `RCPT` of the transaction, as qpsmtpd's async
//! `rhsbl` and its 0.8x sync version did ("MTAs get confused when you reject mail during
//! MAIL FROM"). A zone without a message of its own is also asked for TXT.
//!
//! Listed means an A record that is a listing code (in `127.0.0.0/8`, but not `127.0.0.1` or
//! `127.255.255.0/24`: see `dnsbl`), or, for a zone without a message, a TXT record. Every
//! `RCPT` of the transaction is then refused with
//! `5.7.1 Mail from <domain> rejected because it <message>`, where the message is the zone's,
//! or its TXT text, or `is listed in <zone>`.
//!
//! Not checked: the null sender `<>`, an address literal, an immune client or sender
//! (`shared::is_immune`). qpsmtpd once had a commented-out HELO check; it never shipped, and
//! there is none here.
//!
//! DNS failures (timeout, SERVFAIL) count as "not listed" and are logged; the wait at `RCPT`
//! ends at most `timeout` seconds after `MAIL`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: answers are awaited at `MAIL` and the connection is marked for the `naughty` plugin |
//! | `reject_type` | `perm` | `perm` 550, `temp` 450, `disconnect`/`temp_disconnect`; a lone `disconnect` argument is qpsmtpd's legacy form |
//! | `timeout` | `10` | seconds after `MAIL` past which unanswered zones count as not listed |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `rhsbl_zones` | `zone [message]`, separated by whitespace (qpsmtpd's form). A bad zone name stops the server with `file:line`. No zones: the plugin does nothing |
//!
//! ## Hooks
//!
//! `mail` (start), `rcpt` (decide).
//!
//! ## Notes
//!
//! Reads `is_immune`'s notes. Writes txn note [`RhsblListed`] when the sender domain is listed,
//! `Naughty` with `reject naughty`, and a private txn note with the lookups in flight.
//!
//! ## Standards
//!
//! RFC 5782 §2.3 (domain-based lists), RFC 5321 §4.1.1.2, RFC 3463 (X.7.1).
//!
//! ## Security
//!
//! The sender domain is the client's text: names that are not valid DNS names are not looked
//! up. TXT text is cut to 256 printable ASCII characters before it reaches a reply.

use std::time::Duration;

use ringsmtpd_plugin_api::dnsutil::{
    blocklist_args, check_zone, is_listing_code, Deadline, ZoneQuery,
};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Reject, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

struct Zone {
    zone: String,
    message: Option<String>,
}

/// The sender domain is listed (txn note, for other plugins too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RhsblListed {
    pub domain: String,
    pub zone: String,
    pub text: String,
}

/// Lookups in flight for this transaction (private txn note).
struct InFlight {
    domain: String,
    deadline: Deadline,
    /// One per zone, in the order of `rhsbl_zones`.
    queries: Vec<ZoneQuery>,
}

/// Decided for this transaction (private txn note).
struct Decided;

pub struct Rhsbl {
    common: Common,
    timeout: Duration,
    zones: Vec<Zone>,
}

/// Builds `rhsbl` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (mut common, rest) = init.common(CommonArgs::DEFAULT)?;
    let timeout = blocklist_args(init, &mut common, &rest, DEFAULT_TIMEOUT)?;
    let mut zones = Vec::new();
    for line in init.config.lines("rhsbl_zones")?.unwrap_or_default() {
        let (zone, message) = match line.text.split_once(char::is_whitespace) {
            Some((z, m)) => (z, Some(m.trim().to_string())),
            None => (line.text.as_str(), None),
        };
        check_zone(zone).map_err(|why| {
            line.error(format!(
                "'{zone}' is not a DNS zone: {why} (form: zone [message])"
            ))
        })?;
        zones.push(Zone {
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            message: message.filter(|m| !m.is_empty()),
        });
    }
    Ok(Box::new(Rhsbl {
        common,
        timeout,
        zones,
    }))
}

impl Rhsbl {
    async fn resolve(&self, cx: &mut Cx, txn: &mut Transaction) {
        let Some(mut flight) = txn.notes.take::<InFlight>() else {
            return;
        };
        txn.notes.set(Decided);
        let mut timer = flight.deadline.timer(&*cx.svc);
        let domain = flight.domain;
        for (zone, query) in self.zones.iter().zip(&mut flight.queries) {
            let answer = query.answer(cx, &self.common, &zone.zone, &mut timer).await;
            if !answer.listed(is_listing_code) {
                continue;
            }
            let text = match (&zone.message, answer.txt) {
                (Some(m), _) => m.clone(),
                (None, Some(t)) => t,
                (None, None) => format!("is listed in {}", zone.zone),
            };
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail, {domain} listed in {}: {text}", zone.zone),
            );
            txn.notes.set(RhsblListed {
                domain,
                zone: zone.zone.clone(),
                text,
            });
            return;
        }
        self.common
            .log(cx, Level::Info, format_args!("pass, {domain} not listed"));
    }

    fn refuse(&self, cx: &mut Cx, txn: &Transaction) -> Outcome {
        match txn.notes.get::<RhsblListed>() {
            Some(l) => {
                let text = format!(
                    "5.7.1 Mail from {} rejected because it {}",
                    l.domain, l.text
                );
                self.common.reject(cx, text)
            }
            None => Outcome::Declined,
        }
    }
}

impl Plugin for Rhsbl {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail, Hook::Rcpt])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.zones.is_empty() {
            return Step::DECLINED;
        }
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        if txn.sender.is_null() {
            self.common
                .log(cx, Level::Info, format_args!("pass, null sender"));
            return Step::DECLINED;
        }
        let domain = txn
            .sender
            .domain()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.starts_with('[') || check_zone(&domain).is_err() {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip, '{domain}' is not a DNS name"),
            );
            return Step::DECLINED;
        }
        let queries = (self.zones.iter())
            .map(|z| {
                let name = format!("{domain}.{}", z.zone);
                ZoneQuery::send(&*cx.svc, &name, z.message.is_none())
            })
            .collect();
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        txn.notes.set(InFlight {
            domain,
            deadline,
            queries,
        });
        if self.common.args.reject != Reject::Naughty {
            return Step::DECLINED;
        }
        // The `naughty` plugin may act at any later hook: decide now.
        Step::pending(async move {
            self.resolve(cx, txn).await;
            self.refuse(cx, txn)
        })
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        _rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !txn.notes.contains::<InFlight>() && !txn.notes.contains::<Decided>() {
            return Step::DECLINED;
        }
        if is_immune(cx, Some(txn)) || self.common.args.reject == Reject::Naughty {
            return Step::DECLINED;
        }
        Step::pending(async move {
            self.resolve(cx, txn).await;
            self.refuse(cx, txn)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::{DnsError, QType};
    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistSender};
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, rcpt, run, txn_from, Case};

    const ZONES: &str = "dbl.example\nmsg.example does not accept bounces\n";

    fn plugin(args: &[&str]) -> Box<dyn Plugin> {
        build(
            new,
            &format!("rhsbl {}", args.join(" ")),
            &[("rhsbl_zones", ZONES)],
        )
        .expect("test plugin")
    }

    /// MAIL from `from`, then RCPT: (mail outcome, rcpt outcome).
    fn session(p: &dyn Plugin, c: &mut Cx, from: &str) -> (Outcome, Outcome) {
        let mut txn = txn_from(&format!("<{from}>"));
        let m = run(p.mail(c, &mut txn));
        let r = run(p.rcpt(c, &mut txn, &rcpt("<u@example.com>")));
        (m, r)
    }

    #[test]
    fn starts_at_mail_decides_at_rcpt() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
        let mut txn = txn_from("<x@Spam.Example>");
        assert!(matches!(
            p.mail(&mut c, &mut txn),
            Step::Ready(Outcome::Declined)
        ));
        assert_eq!(
            svc.asked.borrow().clone(),
            vec![
                ("spam.example.dbl.example".to_string(), QType::A),
                ("spam.example.dbl.example".to_string(), QType::Txt),
                ("spam.example.msg.example".to_string(), QType::A),
            ]
        );
        let r = run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>")));
        assert_eq!(
            r.msg(),
            Some("5.7.1 Mail from spam.example rejected because it is listed in dbl.example")
        );
        assert!(txn.notes.get::<RhsblListed>().is_some());
    }

    #[test]
    fn zone_message_and_txt() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("spam.example.msg.example", QType::A, vec![a("127.0.0.2")]);
        let (_, r) = session(&*p, &mut c, "x@spam.example");
        assert_eq!(
            r.msg(),
            Some("5.7.1 Mail from spam.example rejected because it does not accept bounces")
        );
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "spam.example.dbl.example",
            QType::Txt,
            vec![txt("is a spam domain")],
        );
        let (_, r) = session(&*p, &mut c, "x@spam.example");
        assert_eq!(
            r.msg(),
            Some("5.7.1 Mail from spam.example rejected because it is a spam domain")
        );
    }

    #[test]
    fn unlisted_null_literal_and_immune_pass() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(
            session(&*p, &mut c, "x@good.example"),
            (Outcome::Declined, Outcome::Declined)
        );
        assert!(svc.logged("pass, good.example not listed"));
        for from in ["", "x@[192.0.2.9]"] {
            let (mut c, svc) = cx("192.0.2.1:1");
            assert_eq!(session(&*p, &mut c, from).1, Outcome::Declined);
            assert!(svc.asked.borrow().is_empty(), "{from}");
        }
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
        c.conn.relay_client = true;
        assert_eq!(session(&*p, &mut c, "x@spam.example").1, Outcome::Declined);
        // Whitelisted sender after MAIL (a later plugin): still exempt at RCPT.
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
        let mut txn = txn_from("<x@spam.example>");
        run(p.mail(&mut c, &mut txn));
        txn.notes.set(WhitelistSender("x".into()));
        assert_eq!(
            run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>"))),
            Outcome::Declined
        );
    }

    #[test]
    fn dns_failures_are_not_listed() {
        let p = plugin(&[]);
        for err in [DnsError::Timeout, DnsError::ServFail] {
            let (mut c, svc) = cx("192.0.2.1:1");
            svc.fail("spam.example.dbl.example", QType::A, err);
            svc.fail("spam.example.msg.example", QType::A, err);
            assert_eq!(session(&*p, &mut c, "x@spam.example").1, Outcome::Declined);
            assert!(svc.logged("counted as not listed"));
        }
    }

    #[test]
    fn error_codes_are_not_listings() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "spam.example.msg.example",
            QType::A,
            vec![a("127.255.255.254")],
        );
        assert_eq!(session(&*p, &mut c, "x@spam.example").1, Outcome::Declined);
    }

    #[test]
    fn reject_args() {
        let cases: [Case; 4] = [
            (&["disconnect"], |o| matches!(o, Outcome::DenyDisconnect(_))),
            (&["reject_type", "temp"], |o| {
                matches!(o, Outcome::DenySoft(_))
            }),
            (&["reject", "0"], |o| *o == Outcome::Declined),
            (&["timeout", "3"], |o| matches!(o, Outcome::Deny(_))),
        ];
        for (args, ok) in cases {
            let p = plugin(args);
            let (mut c, svc) = cx("192.0.2.1:1");
            svc.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
            let (_, r) = session(&*p, &mut c, "x@spam.example");
            assert!(ok(&r), "{args:?} {r:?}");
        }
        // naughty: decided at MAIL.
        let p = plugin(&["reject", "naughty"]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
        let (m, r) = session(&*p, &mut c, "x@spam.example");
        assert_eq!((m, r), (Outcome::Declined, Outcome::Declined));
        assert!(c.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn config_errors() {
        let err = build(
            new,
            "rhsbl",
            &[("rhsbl_zones", "ok.example\nbad..zone msg\n")],
        )
        .err()
        .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("rhsbl_zones", 2));
        for args in [&["bogus"][..], &["timeout", "-1"], &["x", "y"]] {
            assert!(
                build(new, &format!("rhsbl {}", args.join(" ")), &[]).is_err(),
                "{args:?}"
            );
        }
        // No zones: nothing asked.
        let p = build(new, "rhsbl", &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(
            session(&*p, &mut c, "x@spam.example"),
            (Outcome::Declined, Outcome::Declined)
        );
        assert!(svc.asked.borrow().is_empty());
    }
}
