//! # resolvable_fromhost — the sender's domain must be able to receive mail
//!
//! ## Synopsis
//!
//! ```text
//! resolvable_fromhost [reject 0|1|naughty] [reject_type temp|perm|disconnect|temp_disconnect] [timeout SECONDS] [loglevel N]
//! ```
//!
//! ## Description
//!
//! A bounce to the envelope sender must be deliverable, so its domain must have a mail
//! server (RFC 5321 §5.1): at `MAIL` the plugin asks for the MX, A and AAAA records of the
//! sender domain at once, then
//!
//! 1. MX records: the domain is resolvable if one of its mail hosts (at most 10, by
//!    preference) has an address outside `invalid_resolvable_fromhost`. The mail hosts'
//!    A and AAAA questions all leave together.
//! 2. A null MX (a single MX record with the root `.` as host, RFC 7505) says the domain
//!    sends no mail it can take bounces for: refused, and permanently (`5.7.27`) even with
//!    `reject_type temp`: asking again will not change a published policy.
//! 3. No MX (the name exists without MX): the domain's own A/AAAA records are its implicit
//!    MX (RFC 5321 §5.1), checked the same way.
//! 4. NXDOMAIN, no address, or only addresses in `invalid_resolvable_fromhost`: refused
//!    with `5.1.8 FQDN required in the envelope sender` (qpsmtpd's text), by default
//!    temporarily (450 `4.1.8`).
//!
//! A DNS error or timeout that leaves no definite answer gives a temporary failure,
//! `4.4.3 Temporary address resolution failure` (451 at MAIL in qpsmtpd; 450 here, as every
//! MAIL deny-soft), unless `reject 0`.
//!
//! Not checked: the null sender `<>` (bounces), an address literal (`user@[192.0.2.1]`:
//! qpsmtpd's `ip` result), and immune clients or senders.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection (DNS errors still answer 4xx, as qpsmtpd) |
//! | `reject_type` | `temp` | `temp` 450, `perm` 550, `disconnect`/`temp_disconnect` the same and close (qpsmtpd: `soft`, accepted too) |
//! | `timeout` | `10` | seconds after `MAIL` past which missing answers count as DNS errors (a ringsmtpd addition; keep it below `plugin_timeout`) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `invalid_resolvable_fromhost` | address blocks a mail host must not be in: `127.0.0.0/8`, `2001:db8::/32` or a single address. qpsmtpd took IPv4 CIDRs only and skipped other lines in silence; a line that is not a CIDR or address stops the server with `file:line` |
//!
//! ## Hooks
//!
//! `mail`.
//!
//! ## Notes
//!
//! Writes txn note [`Fromhost`] (qpsmtpd's `resolvable_fromhost` note: `mx`, `a`, `ip`,
//! `null`, `whitelist` or the failure), `Naughty` with `reject naughty`. Reads `is_immune`'s
//! notes.
//!
//! ## Standards
//!
//! RFC 5321 §5.1 (MX, implicit MX), RFC 7505 (null MX, §4.2 `5.7.27`), RFC 3463 (X.1.8
//! bad sender's system address, X.4.3 directory server failure).
//!
//! ## Security
//!
//! The domain is the client's text: names that are not DNS names are refused without a
//! lookup. At most 10 mail hosts are followed, so a domain with hundreds of MX records costs
//! no more.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use ringsmtpd_plugin_api::args::timeout_only;
use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::dns::{DnsLookup, DnsResult, QType};
use ringsmtpd_plugin_api::dnsutil::{check_zone, within, Deadline, Timer};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reject,
    RejectType, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Mail hosts followed at most: a domain's MX set is the sender's to make as large as it
/// likes; 10 is RFC 7208 §4.6.4's bound for SPF's MX mechanism.
const MAX_MX: usize = 10;

/// What the check found (txn note, qpsmtpd's `resolvable_fromhost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fromhost {
    /// A mail host with a valid address.
    Mx,
    /// No MX, but the domain's own valid address.
    A,
    /// An address literal: not checked.
    Ip,
    /// The null sender.
    Null,
    /// The client or sender is immune.
    Whitelist,
    /// The domain published a null MX (RFC 7505).
    NullMx,
    /// Not resolvable: why.
    Fail(String),
    /// A DNS error left no definite answer.
    TempFail(String),
}

pub struct ResolvableFromhost {
    common: Common,
    timeout: Duration,
    invalid: IpList,
}

/// Builds `resolvable_fromhost` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let defaults = CommonArgs {
        reject: Reject::Yes,
        reject_type: RejectType::Temp,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = init.common(defaults)?;
    let timeout = timeout_only(init, &rest, DEFAULT_TIMEOUT)?;
    let mut invalid = IpList::default();
    for line in init
        .config
        .lines("invalid_resolvable_fromhost")?
        .unwrap_or_default()
    {
        invalid
            .add(&line.text, IpForms::Cidr)
            .map_err(|e| line.error(e))?;
    }
    Ok(Box::new(ResolvableFromhost {
        common,
        timeout,
        invalid,
    }))
}

/// The outcome of following a set of host names to addresses.
enum Hosts {
    /// One has a valid address.
    Valid,
    /// All answered; none has a valid address.
    Invalid,
    /// No valid address, and some lookup failed.
    Unknown(String),
}

impl ResolvableFromhost {
    fn valid(&self, ip: IpAddr) -> bool {
        !self.invalid.contains(ip)
    }

    /// Checks the answers for one host's A and AAAA questions.
    fn addresses(&self, a: &DnsResult, aaaa: &DnsResult) -> Hosts {
        let ips = [a, aaaa]
            .into_iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|ans| ans.ips().collect::<Vec<_>>());
        let mut any = false;
        for ip in ips {
            any = true;
            if self.valid(ip) {
                return Hosts::Valid;
            }
        }
        match (a, aaaa) {
            (Err(e), _) | (_, Err(e)) if !any => Hosts::Unknown(e.to_string()),
            _ => Hosts::Invalid,
        }
    }

    async fn check(&self, cx: &mut Cx, domain: &str) -> Fromhost {
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let mut mx = cx.svc.dns_query(domain, QType::Mx);
        // The implicit MX is asked at once too: one round trip less when there is no MX.
        let mut a = cx.svc.dns_query(domain, QType::A);
        let mut aaaa = cx.svc.dns_query(domain, QType::Aaaa);
        let mut timer = deadline.timer(&*cx.svc);
        let mx = match within(&mut mx, &mut timer).await {
            Err(e) => return Fromhost::TempFail(format!("MX of {domain}: {e}")),
            Ok(ans) => ans,
        };
        if mx.nxdomain {
            return Fromhost::Fail(format!("{domain} does not exist"));
        }
        let mut hosts: Vec<(u16, &str)> = mx.mx().collect();
        if !hosts.is_empty() {
            drop((a, aaaa));
            // RFC 7505 §3: a null MX is the only MX record, and its host is ".".
            if hosts.len() == 1 && matches!(hosts[0].1, "" | ".") {
                return Fromhost::NullMx;
            }
            hosts.sort_by_key(|(pref, _)| *pref);
            hosts.truncate(MAX_MX);
            let names: Vec<String> = hosts
                .iter()
                .map(|(_, h)| h.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            return match self.follow(cx, &names, &mut timer).await {
                Hosts::Valid => Fromhost::Mx,
                Hosts::Invalid => Fromhost::Fail(format!("no valid MX for {domain}")),
                Hosts::Unknown(e) => Fromhost::TempFail(format!("MX hosts of {domain}: {e}")),
            };
        }
        let a = within(&mut a, &mut timer).await;
        let aaaa = within(&mut aaaa, &mut timer).await;
        match self.addresses(&a, &aaaa) {
            Hosts::Valid => Fromhost::A,
            Hosts::Invalid => Fromhost::Fail(format!("{domain} has no MX and no valid address")),
            Hosts::Unknown(e) => Fromhost::TempFail(format!("address of {domain}: {e}")),
        }
    }

    /// Looks up every mail host at once; valid if any has a valid address.
    async fn follow(&self, cx: &mut Cx, names: &[String], timer: &mut Timer) -> Hosts {
        let mut lookups: Vec<Option<(DnsLookup, DnsLookup)>> = Vec::new();
        let mut result = Hosts::Invalid;
        for name in names {
            // An address in place of a host name is a broken MX, but qpsmtpd took it.
            if let Ok(ip) = name.parse::<IpAddr>() {
                if self.valid(ip) {
                    return Hosts::Valid;
                }
                lookups.push(None);
            } else if check_zone(name).is_ok() {
                let a = cx.svc.dns_query(name, QType::A);
                let aaaa = cx.svc.dns_query(name, QType::Aaaa);
                lookups.push(Some((a, aaaa)));
            } else {
                lookups.push(None);
            }
        }
        for (name, l) in names.iter().zip(&mut lookups) {
            let Some((a, aaaa)) = l else { continue };
            let a = within(a, timer).await;
            let aaaa = within(aaaa, timer).await;
            match self.addresses(&a, &aaaa) {
                Hosts::Valid => {
                    self.common
                        .log(cx, Level::Info, format_args!("pass, has MX at {name}"));
                    return Hosts::Valid;
                }
                Hosts::Unknown(e) => result = Hosts::Unknown(e),
                Hosts::Invalid => {}
            }
        }
        result
    }

    fn verdict(&self, cx: &mut Cx, txn: &mut Transaction, result: Fromhost) -> Outcome {
        let outcome = match &result {
            Fromhost::Mx | Fromhost::A => {
                self.common
                    .log(cx, Level::Info, format_args!("pass, {result:?}"));
                Outcome::Declined
            }
            Fromhost::TempFail(why) if self.common.args.reject == Reject::No => {
                self.common
                    .log(cx, Level::Info, format_args!("fail, tolerated, {why}"));
                Outcome::Declined
            }
            Fromhost::TempFail(why) => {
                self.common
                    .log(cx, Level::Info, format_args!("fail, {why}"));
                let text = Some(Cow::Borrowed("4.4.3 Temporary address resolution failure"));
                match self.common.args.reject_type {
                    RejectType::Disconnect | RejectType::TempDisconnect => {
                        Outcome::DenySoftDisconnect(text)
                    }
                    RejectType::Perm | RejectType::Temp => Outcome::DenySoft(text),
                }
            }
            Fromhost::NullMx => {
                let mut common = self.common.clone();
                common.args.reject_type = match common.args.reject_type {
                    RejectType::Temp | RejectType::Perm => RejectType::Perm,
                    RejectType::TempDisconnect | RejectType::Disconnect => RejectType::Disconnect,
                };
                let domain = txn.sender.domain();
                let text =
                    format!("5.7.27 Sender address has null MX: {domain} does not accept mail");
                common.reject(cx, text)
            }
            Fromhost::Fail(why) => {
                self.common
                    .log(cx, Level::Info, format_args!("fail, {why}"));
                let text = "5.1.8 FQDN required in the envelope sender";
                self.common.reject(cx, text)
            }
            Fromhost::Ip | Fromhost::Null | Fromhost::Whitelist => Outcome::Declined,
        };
        txn.notes.set(result);
        outcome
    }
}

impl Plugin for ResolvableFromhost {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Mail])
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if is_immune(cx, Some(txn)) {
            txn.notes.set(Fromhost::Whitelist);
            return Step::DECLINED;
        }
        if txn.sender.is_null() {
            self.common
                .log(cx, Level::Info, format_args!("pass, null sender"));
            txn.notes.set(Fromhost::Null);
            return Step::DECLINED;
        }
        let domain = txn
            .sender
            .domain()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.starts_with('[') {
            self.common
                .log(cx, Level::Info, format_args!("skip, {domain} is an IP"));
            txn.notes.set(Fromhost::Ip);
            return Step::DECLINED;
        }
        if check_zone(&domain).is_err() {
            let result = Fromhost::Fail(format!("'{domain}' is not a DNS name"));
            return Step::Ready(self.verdict(cx, txn, result));
        }
        Step::pending(async move {
            let result = self.check(cx, &domain).await;
            self.verdict(cx, txn, result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::DnsError;
    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistHost};
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, run, txn_from, Case, FakeServices};

    const INVALID: &str = "# include full network block including mask\n127.0.0.0/8 \n0.0.0.0/8\n10.0.0.0/8\n::1/128\n";

    fn plugin(args: &[&str]) -> Box<dyn Plugin> {
        build(
            new,
            &format!("resolvable_fromhost {}", args.join(" ")),
            &[("invalid_resolvable_fromhost", INVALID)],
        )
        .expect("test plugin")
    }

    fn mail(
        p: &dyn Plugin,
        from: &str,
        setup: impl FnOnce(&FakeServices),
    ) -> (Outcome, Transaction) {
        let (mut c, svc) = cx("192.0.2.1:1");
        setup(&svc);
        let mut txn = txn_from(&format!("<{from}>"));
        let o = run(p.mail(&mut c, &mut txn));
        (o, txn)
    }

    fn note(txn: &Transaction) -> Fromhost {
        txn.notes.get::<Fromhost>().cloned().expect("result note")
    }

    #[test]
    fn mx_with_valid_address_passes() {
        let (o, txn) = mail(&*plugin(&[]), "a@Example.COM", |s| {
            s.answer(
                "example.com",
                QType::Mx,
                vec![mx(20, "mx2.example.com."), mx(10, "mx1.example.com.")],
            );
            s.answer("mx1.example.com", QType::A, vec![a("127.0.0.1")]);
            s.answer("mx2.example.com", QType::Aaaa, vec![aaaa("2001:db8::25")]);
        });
        assert_eq!((o, note(&txn)), (Outcome::Declined, Fromhost::Mx));
    }

    #[test]
    fn mx_only_in_invalid_networks_fails() {
        let (o, txn) = mail(&*plugin(&[]), "a@example.com", |s| {
            s.answer("example.com", QType::Mx, vec![mx(10, "mx.example.com")]);
            s.answer(
                "mx.example.com",
                QType::A,
                vec![a("127.0.0.1"), a("10.1.2.3")],
            );
            s.answer("mx.example.com", QType::Aaaa, vec![aaaa("::1")]);
        });
        assert_eq!(
            o,
            Outcome::DenySoft(Some("5.1.8 FQDN required in the envelope sender".into()))
        );
        assert_eq!(
            note(&txn),
            Fromhost::Fail("no valid MX for example.com".into())
        );
        // An MX host that does not exist.
        let (o, _) = mail(&*plugin(&["reject_type", "perm"]), "a@example.com", |s| {
            s.answer("example.com", QType::Mx, vec![mx(10, "gone.example.com")]);
        });
        assert!(matches!(o, Outcome::Deny(_)));
    }

    #[test]
    fn implicit_mx_from_a_and_aaaa() {
        let (o, txn) = mail(&*plugin(&[]), "a@example.net", |s| {
            s.answer("example.net", QType::Mx, vec![]);
            s.answer("example.net", QType::Aaaa, vec![aaaa("2001:db8::1")]);
        });
        assert_eq!((o, note(&txn)), (Outcome::Declined, Fromhost::A));
        let (o, txn) = mail(&*plugin(&[]), "a@example.net", |s| {
            s.answer("example.net", QType::Mx, vec![]);
            s.answer("example.net", QType::A, vec![a("0.0.0.1")]);
        });
        assert!(matches!(o, Outcome::DenySoft(_)));
        assert_eq!(
            note(&txn),
            Fromhost::Fail("example.net has no MX and no valid address".into())
        );
        // MX, A and AAAA leave together.
        let (mut c, svc) = cx("192.0.2.1:1");
        let mut txn = txn_from("<a@example.net>");
        run(plugin(&[]).mail(&mut c, &mut txn));
        let types: Vec<QType> = svc.asked.borrow().iter().map(|(_, t)| *t).collect();
        assert_eq!(types, vec![QType::Mx, QType::A, QType::Aaaa]);
    }

    #[test]
    fn nxdomain_fails() {
        let (o, txn) = mail(&*plugin(&[]), "a@nowhere.example", |_| {});
        assert!(matches!(o, Outcome::DenySoft(_)));
        assert_eq!(
            note(&txn),
            Fromhost::Fail("nowhere.example does not exist".into())
        );
    }

    #[test]
    fn null_mx_is_permanent() {
        for (args, want) in [
            (&[][..], "deny"),
            (&["reject_type", "temp_disconnect"][..], "disconnect"),
        ] {
            let (o, txn) = mail(&*plugin(args), "a@nomail.example", |s| {
                s.answer("nomail.example", QType::Mx, vec![mx(0, ".")]);
            });
            assert_eq!(note(&txn), Fromhost::NullMx);
            assert_eq!(
                o.msg(),
                Some("5.7.27 Sender address has null MX: nomail.example does not accept mail")
            );
            match want {
                "deny" => assert!(matches!(o, Outcome::Deny(_))),
                _ => assert!(matches!(o, Outcome::DenyDisconnect(_))),
            }
        }
    }

    #[test]
    fn dns_errors_are_temporary() {
        let soft = Outcome::DenySoft(Some("4.4.3 Temporary address resolution failure".into()));
        for err in [DnsError::Timeout, DnsError::ServFail] {
            let (o, txn) = mail(&*plugin(&[]), "a@example.com", |s| {
                s.fail("example.com", QType::Mx, err)
            });
            assert_eq!(o, soft);
            assert!(matches!(note(&txn), Fromhost::TempFail(_)));
            // Even with reject_type perm or naughty: a DNS error is never permanent.
            let (o, _) = mail(&*plugin(&["reject_type", "perm"]), "a@example.com", |s| {
                s.fail("example.com", QType::Mx, err)
            });
            assert_eq!(o, soft);
            let (o, _) = mail(&*plugin(&["reject", "naughty"]), "a@example.com", |s| {
                s.fail("example.com", QType::Mx, err)
            });
            assert_eq!(o, soft);
            let (o, _) = mail(&*plugin(&["reject", "0"]), "a@example.com", |s| {
                s.fail("example.com", QType::Mx, err)
            });
            assert_eq!(o, Outcome::Declined);
        }
        // MX host lookups failing, no valid host: temporary.
        let (o, _) = mail(&*plugin(&[]), "a@example.com", |s| {
            s.answer("example.com", QType::Mx, vec![mx(10, "mx.example.com")]);
            s.fail("mx.example.com", QType::A, DnsError::ServFail);
            s.fail("mx.example.com", QType::Aaaa, DnsError::ServFail);
        });
        assert_eq!(o, soft);
        // Implicit MX lookups failing.
        let (o, _) = mail(&*plugin(&[]), "a@example.com", |s| {
            s.answer("example.com", QType::Mx, vec![]);
            s.fail("example.com", QType::A, DnsError::Timeout);
        });
        assert_eq!(o, soft);
        // One failing MX host, another valid: pass.
        let (o, _) = mail(&*plugin(&[]), "a@example.com", |s| {
            s.answer(
                "example.com",
                QType::Mx,
                vec![mx(10, "bad.example.com"), mx(20, "good.example.com")],
            );
            s.fail("bad.example.com", QType::A, DnsError::ServFail);
            s.answer("good.example.com", QType::A, vec![a("192.0.2.25")]);
        });
        assert_eq!(o, Outcome::Declined);
    }

    #[test]
    fn skipped_senders() {
        let p = plugin(&[]);
        let (o, txn) = mail(&*p, "", |_| {});
        assert_eq!((o, note(&txn)), (Outcome::Declined, Fromhost::Null));
        let (o, txn) = mail(&*p, "a@[192.0.2.7]", |_| {});
        assert_eq!((o, note(&txn)), (Outcome::Declined, Fromhost::Ip));
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        let mut txn = txn_from("<a@nowhere.example>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        assert_eq!(note(&txn), Fromhost::Whitelist);
        assert!(svc.asked.borrow().is_empty());
    }

    #[test]
    fn reject_args() {
        let cases: [Case; 4] = [
            (&["reject", "0"], |o| *o == Outcome::Declined),
            (&["reject_type", "perm"], |o| matches!(o, Outcome::Deny(_))),
            (&["reject_type", "disconnect"], |o| {
                matches!(o, Outcome::DenyDisconnect(_))
            }),
            (&["reject_type", "soft", "timeout", "3"], |o| {
                matches!(o, Outcome::DenySoft(_))
            }),
        ];
        for (args, ok) in cases {
            let (o, _) = mail(&*plugin(args), "a@nowhere.example", |_| {});
            assert!(ok(&o), "{args:?}: {o:?}");
        }
        let p = plugin(&["reject", "naughty"]);
        let (mut c, _) = cx("192.0.2.1:1");
        let mut txn = txn_from("<a@nowhere.example>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        assert!(c.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn mx_hosts_are_bounded() {
        let (mut c, svc) = cx("192.0.2.1:1");
        let many: Vec<_> = (0..40)
            .map(|i| mx(i, &format!("mx{i}.example.com")))
            .collect();
        svc.answer("example.com", QType::Mx, many);
        let mut txn = txn_from("<a@example.com>");
        run(plugin(&[]).mail(&mut c, &mut txn));
        assert_eq!(
            svc.asked
                .borrow()
                .iter()
                .filter(|(_, t)| *t == QType::A)
                .count(),
            MAX_MX + 1
        );
    }

    #[test]
    fn config_errors() {
        let err = build(
            new,
            "resolvable_fromhost",
            &[("invalid_resolvable_fromhost", "10.0.0.0/8\n\n10.0.0.0/40\n")],
        )
        .err()
        .unwrap();
        assert_eq!(
            (err.file.as_str(), err.line),
            ("invalid_resolvable_fromhost", 3)
        );
        for args in [&["timeout"][..], &["foo", "bar"], &["reject_type", "maybe"]] {
            assert!(
                build(new, &format!("resolvable_fromhost {}", args.join(" ")), &[]).is_err(),
                "{args:?}"
            );
        }
    }
}
