//! # fcrdns — forward-confirmed reverse DNS (iprev) of the client
//!
//! ## Synopsis
//!
//! ```text
//! fcrdns [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [timeout SECONDS] [loglevel N]
//! ```
//!
//! ## Description
//!
//! The `iprev` check of RFC 8601 §3: the PTR names of the client address are looked up, then
//! the addresses of each name; the client passes when one of those is its own address.
//!
//! - `connect` sends the PTR question and answers at once: the banner is not delayed.
//! - `HELO`/`EHLO` awaits the PTR answer, asks for the addresses of up to 10 of its names
//!   (A for an IPv4 client, AAAA for an IPv6 one: only the client's family can match) and
//!   awaits those. On a pass the connection's `remote_host` becomes the confirmed name, so the
//!   greeting (`Hi <name>`) and the `Received` header show it; otherwise it is left as it was.
//! - `MAIL` adds the result to the transaction's Authentication-Results
//!   (`iprev=pass policy.iprev=192.0.2.1 (mail.example.com)`), and, with `reject 1`, refuses a
//!   client that failed. `data_post_headers` adds it if `MAIL` did not (an earlier plugin
//!   decided at `MAIL` and stopped the chain), once per transaction. `MAIL` comes after `AUTH`, so an authenticated client (a relay
//!   client: immune) is never refused.
//!
//! Results (RFC 8601 §2.7.3): `pass`; `fail` (names found, none has the address, or a name
//! does not exist); `permerror` (no PTR: NXDOMAIN or no PTR record); `temperror` (a DNS error
//! or timeout on the way, with no pass). Only `fail` and `permerror` are refused; `temperror`
//! is logged and let through (a resolver outage must not stop mail).
//!
//! qpsmtpd also counted an address in the same /24 as a pass; iprev as RFC 8601 defines it
//! needs the exact address, and so does this plugin. Loopback clients and immune clients are
//! not checked (no Authentication-Results clause), as in qpsmtpd.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `0` | `0`: only the header and logs; `1`: refuse `fail`/`permerror` at `MAIL`; `naughty`: mark the connection |
//! | `reject_type` | `temp` | as qpsmtpd's code forces (its POD says `disconnect`): 450 `4.7.25` at MAIL; `perm` 550 `5.7.25` |
//! | `timeout` | `5` | seconds after `connect` past which unanswered lookups give `temperror` |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `connect`, `helo`, `ehlo`, `mail`, `data_post_headers`.
//!
//! ## Notes
//!
//! Writes conn note [`Iprev`] (the result, for other plugins), `cx.conn.remote_host` on a pass,
//! txn note `AuthResults` (one `iprev` clause per transaction: the core reads that note per
//! transaction), `Naughty` with `reject naughty`. Reads `is_immune`'s notes.
//!
//! ## Standards
//!
//! RFC 8601 §2.7.3 and §3 (iprev), RFC 1912 §2.1 (every host should have matching PTR and
//! A records), RFC 7372 §3.3 (X.7.25 "Reverse DNS validation failed"), RFC 3596 §2.5
//! (ip6.arpa).
//!
//! ## Security
//!
//! PTR names come from whoever controls the client's reverse zone: a name is trusted (and
//! shown as `remote_host`) only once its forward lookup returns the client address. At most
//! 10 names are followed, so a PTR set with hundreds of names costs no more.

use std::net::IpAddr;
use std::time::Duration;

use ringsmtpd_plugin_api::args::timeout_only;
use ringsmtpd_plugin_api::dns::{ptr_name, DnsLookup, QType};
use ringsmtpd_plugin_api::dnsutil::{check_zone, client_ip, within, Deadline, Timer};
use ringsmtpd_plugin_api::shared::{is_immune, AuthResults};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Reject,
    RejectType, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The names of a PTR set followed at most: RFC 7208 §4.6.4 uses the same bound for SPF's
/// PTR processing, for the same reason (a PTR set is the client's to make as large as it likes).
const MAX_NAMES: usize = 10;

/// The iprev result of the connection (conn note, for other plugins too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Iprev {
    /// Confirmed: this PTR name resolves to the client address.
    Pass(String),
    Fail,
    PermError,
    TempError,
}

impl Iprev {
    fn word(&self) -> &'static str {
        match self {
            Iprev::Pass(_) => "pass",
            Iprev::Fail => "fail",
            Iprev::PermError => "permerror",
            Iprev::TempError => "temperror",
        }
    }
}

/// This transaction has the `iprev` clause (private txn note).
struct ClauseAdded;

/// The PTR question sent at connect (private conn note).
struct Started {
    deadline: Deadline,
    ptr: DnsLookup,
}

pub struct Fcrdns {
    common: Common,
    timeout: Duration,
}

/// Builds `fcrdns` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let defaults = CommonArgs {
        reject: Reject::No,
        reject_type: RejectType::Temp,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = init.common(defaults)?;
    let timeout = timeout_only(init, &rest, DEFAULT_TIMEOUT)?;
    Ok(Box::new(Fcrdns { common, timeout }))
}

impl Fcrdns {
    /// Finishes the check if it is still running; records [`Iprev`] and `remote_host`.
    async fn resolve(&self, cx: &mut Cx) {
        let Some(mut started) = cx.conn.notes.take::<Started>() else {
            return;
        };
        let ip = client_ip(cx);
        let mut timer = started.deadline.timer(&*cx.svc);
        let result = match within(&mut started.ptr, &mut timer).await {
            Err(e) => {
                self.common
                    .log(cx, Level::Info, format_args!("temperror, PTR of {ip}: {e}"));
                Iprev::TempError
            }
            Ok(answer) => {
                let names: Vec<String> = answer
                    .names()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                    .take(MAX_NAMES)
                    .collect();
                if names.is_empty() {
                    self.common
                        .log(cx, Level::Info, format_args!("permerror, no PTR for {ip}"));
                    Iprev::PermError
                } else {
                    self.confirm(cx, ip, names, &mut timer).await
                }
            }
        };
        if let Iprev::Pass(name) = &result {
            cx.conn.remote_host = Some(name.clone());
        }
        cx.conn.notes.set(result);
    }

    /// Adds this connection's `iprev` clause to the transaction's Authentication-Results,
    /// once; returns the result.
    fn add_clause(&self, cx: &Cx, txn: &mut Transaction) -> Option<Iprev> {
        let result = cx.conn.notes.get::<Iprev>()?.clone();
        if txn.notes.contains::<ClauseAdded>() {
            return Some(result);
        }
        let ip = client_ip(cx);
        let clause = match &result {
            Iprev::Pass(name) => format!("iprev=pass policy.iprev={ip} ({name})"),
            other => format!("iprev={} policy.iprev={ip}", other.word()),
        };
        txn.notes
            .get_or_insert_with(AuthResults::default)
            .0
            .push(clause);
        txn.notes.set(ClauseAdded);
        Some(result)
    }

    async fn confirm(
        &self,
        cx: &mut Cx,
        ip: IpAddr,
        names: Vec<String>,
        timer: &mut Timer,
    ) -> Iprev {
        let qtype = if ip.is_ipv4() { QType::A } else { QType::Aaaa };
        // All forward questions leave together; answers are read in PTR order.
        let mut lookups: Vec<(String, Option<DnsLookup>)> = names
            .into_iter()
            .map(|n| {
                let lookup = check_zone(&n).is_ok().then(|| cx.svc.dns_query(&n, qtype));
                (n, lookup)
            })
            .collect();
        let mut temp = false;
        for (name, lookup) in &mut lookups {
            let Some(lookup) = lookup else {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("PTR name '{name}' is not a host name"),
                );
                continue;
            };
            match within(lookup, timer).await {
                Ok(answer) if answer.ips().any(|a| a.to_canonical() == ip) => {
                    self.common
                        .log(cx, Level::Info, format_args!("pass, {ip} is {name}"));
                    return Iprev::Pass(name.clone());
                }
                Ok(_) => {}
                Err(e) => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("forward lookup of {name}: {e}"),
                    );
                    temp = true;
                }
            }
        }
        if temp {
            Iprev::TempError
        } else {
            let names: Vec<&str> = lookups.iter().map(|(n, _)| n.as_str()).collect();
            self.common.log(
                cx,
                Level::Info,
                format_args!(
                    "fail, no PTR name of {ip} resolves to it: {}",
                    names.join(", ")
                ),
            );
            Iprev::Fail
        }
    }
}

impl Plugin for Fcrdns {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Helo,
            Hook::Ehlo,
            Hook::Mail,
            Hook::DataPostHeaders,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let ip = client_ip(cx);
        if ip.is_loopback() {
            self.common
                .log(cx, Level::Info, format_args!("skip, localhost"));
            return Step::DECLINED;
        }
        if is_immune(cx, None) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let ptr = cx.svc.dns_query(&ptr_name(ip), QType::Ptr);
        cx.conn.notes.set(Started { deadline, ptr });
        Step::DECLINED
    }

    fn helo<'a>(&'a self, cx: &'a mut Cx, _host: &'a str) -> Step<'a> {
        if !cx.conn.notes.contains::<Started>() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            self.resolve(cx).await;
            Outcome::Declined
        })
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.helo(cx, host)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if !cx.conn.notes.contains::<Started>() && !cx.conn.notes.contains::<Iprev>() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            self.resolve(cx).await;
            let Some(result) = self.add_clause(cx, txn) else {
                return Outcome::Declined;
            };
            if !matches!(result, Iprev::Fail | Iprev::PermError) || is_immune(cx, Some(txn)) {
                return Outcome::Declined;
            }
            let ip = client_ip(cx);
            let text = format!(
                "5.7.25 Reverse DNS validation failed for {ip} (iprev={})",
                result.word()
            );
            self.common.reject(cx, text)
        })
    }

    /// Again here, in case an earlier plugin decided at `mail` and this plugin's `mail` did not
    /// run: the header must not depend on the order of `config/plugins`.
    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if !cx.conn.notes.contains::<Started>() && !cx.conn.notes.contains::<Iprev>() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            self.resolve(cx).await;
            self.add_clause(cx, txn);
            Outcome::Declined
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::DnsError;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, run, txn_from, Case, FakeServices};
    use ringsmtpd_plugin_api::Plugin;

    fn plugin(args: &[&str]) -> Box<dyn Plugin> {
        build(new, &format!("fcrdns {}", args.join(" ")), &[]).expect("test plugin")
    }

    /// connect, EHLO, MAIL: the MAIL outcome and the transaction.
    fn session(p: &dyn Plugin, c: &mut Cx) -> (Outcome, Transaction) {
        assert!(matches!(p.connect(c), Step::Ready(Outcome::Declined)));
        assert_eq!(run(p.ehlo(c, "client.example")), Outcome::Declined);
        let mut txn = txn_from("<s@example.org>");
        let o = run(p.mail(c, &mut txn));
        (o, txn)
    }

    fn clauses(txn: &Transaction) -> Vec<String> {
        txn.notes
            .get::<AuthResults>()
            .map(|a| a.0.clone())
            .unwrap_or_default()
    }

    fn good_v4(svc: &FakeServices) {
        svc.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("other.example."), ptr("Mail.Example.COM.")],
        );
        svc.answer("other.example", QType::A, vec![a("198.51.100.1")]);
        svc.answer("mail.example.com", QType::A, vec![a("192.0.2.1")]);
    }

    #[test]
    fn pass_sets_remote_host_and_auth_results() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        good_v4(&svc);
        let (o, txn) = session(&*p, &mut c);
        assert_eq!(o, Outcome::Declined);
        assert_eq!(c.conn.remote_host.as_deref(), Some("mail.example.com"));
        assert_eq!(
            clauses(&txn),
            vec!["iprev=pass policy.iprev=192.0.2.1 (mail.example.com)"]
        );
        assert_eq!(
            c.conn.notes.get::<Iprev>(),
            Some(&Iprev::Pass("mail.example.com".into()))
        );
        // A second transaction gets its own clause, once.
        let mut txn2 = txn_from("<s@example.org>");
        run(p.mail(&mut c, &mut txn2));
        assert_eq!(clauses(&txn2).len(), 1);
        // Only A was asked for an IPv4 client, the PTR once.
        let asked = svc.asked.borrow();
        assert_eq!(asked.iter().filter(|(_, t)| *t == QType::Ptr).count(), 1);
        assert!(asked.iter().all(|(_, t)| *t != QType::Aaaa));
    }

    #[test]
    fn ipv6_client_uses_aaaa() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("[2001:db8::25]:1");
        let ip: IpAddr = "2001:db8::25".parse().unwrap();
        svc.answer(&ptr_name(ip), QType::Ptr, vec![ptr("v6.example.")]);
        svc.answer("v6.example", QType::Aaaa, vec![aaaa("2001:db8::25")]);
        let (_, txn) = session(&*p, &mut c);
        assert_eq!(
            clauses(&txn),
            vec!["iprev=pass policy.iprev=2001:db8::25 (v6.example)"]
        );
    }

    #[test]
    fn fail_permerror_temperror() {
        // Names, but none resolves to the client (same /24 is not enough for iprev).
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("pool.example")],
        );
        svc.answer("pool.example", QType::A, vec![a("192.0.2.2")]);
        let (_, txn) = session(&*plugin(&[]), &mut c);
        assert_eq!(clauses(&txn), vec!["iprev=fail policy.iprev=192.0.2.1"]);
        assert_eq!(c.conn.remote_host, None);
        // Name does not exist: fail too.
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("gone.example")],
        );
        let (_, txn) = session(&*plugin(&[]), &mut c);
        assert_eq!(clauses(&txn), vec!["iprev=fail policy.iprev=192.0.2.1"]);
        // No PTR: permerror.
        let (mut c, _) = cx("192.0.2.1:1");
        let (_, txn) = session(&*plugin(&[]), &mut c);
        assert_eq!(
            clauses(&txn),
            vec!["iprev=permerror policy.iprev=192.0.2.1"]
        );
        // DNS errors: temperror, never refused.
        for (ptr_err, fwd_err) in [
            (Some(DnsError::ServFail), None),
            (Some(DnsError::Timeout), None),
            (None, Some(DnsError::ServFail)),
        ] {
            let (mut c, svc) = cx("192.0.2.1:1");
            match ptr_err {
                Some(e) => svc.fail("1.2.0.192.in-addr.arpa", QType::Ptr, e),
                None => svc.answer("1.2.0.192.in-addr.arpa", QType::Ptr, vec![ptr("x.example")]),
            }
            if let Some(e) = fwd_err {
                svc.fail("x.example", QType::A, e);
            }
            let (o, txn) = session(&*plugin(&["reject", "1"]), &mut c);
            assert_eq!(
                clauses(&txn),
                vec!["iprev=temperror policy.iprev=192.0.2.1"]
            );
            assert_eq!(o, Outcome::Declined);
        }
    }

    #[test]
    fn reject_args() {
        let cases: [Case; 4] = [
            (&[], |o| *o == Outcome::Declined),
            (&["reject", "1"], |o| matches!(o, Outcome::DenySoft(_))),
            (&["reject", "1", "reject_type", "perm"], |o| {
                matches!(o, Outcome::Deny(_))
            }),
            (
                &["reject", "1", "reject_type", "disconnect", "timeout", "2"],
                |o| matches!(o, Outcome::DenyDisconnect(_)),
            ),
        ];
        for (args, ok) in cases {
            let (mut c, _) = cx("192.0.2.1:1");
            let (o, _) = session(&*plugin(args), &mut c);
            assert!(ok(&o), "{args:?}: {o:?}");
            if !args.is_empty() {
                assert_eq!(
                    o.msg(),
                    Some("5.7.25 Reverse DNS validation failed for 192.0.2.1 (iprev=permerror)")
                );
            }
        }
        let (mut c, _) = cx("192.0.2.1:1");
        let (o, _) = session(&*plugin(&["reject", "naughty"]), &mut c);
        assert_eq!(o, Outcome::Declined);
        assert!(c.conn.notes.contains::<Naughty>());
        // Authenticated (relay client) by MAIL: not refused, clause still added.
        let p = plugin(&["reject", "1"]);
        let (mut c, _) = cx("192.0.2.1:1");
        run(p.connect(&mut c));
        c.conn.relay_client = true;
        let mut txn = txn_from("<s@example.org>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        assert_eq!(clauses(&txn).len(), 1);
    }

    #[test]
    fn loopback_and_immune_skip() {
        let p = plugin(&["reject", "1"]);
        for (addr, relay) in [
            ("127.0.0.1:1", false),
            ("[::1]:1", false),
            ("192.0.2.1:1", true),
        ] {
            let (mut c, svc) = cx(addr);
            c.conn.relay_client = relay;
            let (o, txn) = session(&*p, &mut c);
            assert_eq!(o, Outcome::Declined);
            assert!(svc.asked.borrow().is_empty());
            assert!(clauses(&txn).is_empty());
        }
    }

    #[test]
    fn mail_without_helo_still_resolves_and_names_are_bounded() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        let many: Vec<_> = (0..50).map(|i| ptr(&format!("h{i}.example"))).collect();
        svc.answer("1.2.0.192.in-addr.arpa", QType::Ptr, many);
        run(p.connect(&mut c));
        let mut txn = txn_from("<s@example.org>");
        run(p.mail(&mut c, &mut txn));
        assert_eq!(clauses(&txn), vec!["iprev=fail policy.iprev=192.0.2.1"]);
        assert_eq!(
            svc.asked
                .borrow()
                .iter()
                .filter(|(_, t)| *t == QType::A)
                .count(),
            MAX_NAMES
        );
    }

    #[test]
    fn clause_added_once_even_when_mail_was_skipped() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        good_v4(&svc);
        run(p.connect(&mut c));
        // Another plugin decided at MAIL: only data_post_headers runs.
        let mut txn = txn_from("<s@example.org>");
        assert_eq!(
            run(p.data_post_headers(&mut c, &mut txn)),
            Outcome::Declined
        );
        assert_eq!(
            clauses(&txn),
            vec!["iprev=pass policy.iprev=192.0.2.1 (mail.example.com)"]
        );
        // Both ran: still one clause.
        let mut txn = txn_from("<s@example.org>");
        run(p.mail(&mut c, &mut txn));
        run(p.data_post_headers(&mut c, &mut txn));
        assert_eq!(clauses(&txn).len(), 1);
    }

    #[test]
    fn bad_arguments() {
        for args in [
            &["timeout"][..],
            &["timeout", "0"],
            &["reject", "x"],
            &["what", "1"],
        ] {
            assert!(
                build(new, &format!("fcrdns {}", args.join(" ")), &[]).is_err(),
                "{args:?}"
            );
        }
    }
}
