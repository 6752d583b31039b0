//! # dns_whitelist_soft — mark clients listed on a DNS whitelist as immune
//!
//! ## Synopsis
//!
//! ```text
//! dns_whitelist_soft [timeout SECONDS] [loglevel N]
//! ```
//!
//! Put it **before** the plugins whose checks a whitelisted client should skip (`dnsbl`,
//! `rhsbl`, `helo`, `resolvable_fromhost`, `fcrdns`, `rcpt_ok`...).
//!
//! ## Description
//!
//! At `connect` the client address is looked up (reversed, as for a blocklist) in every zone
//! of `whitelist_zones`, A and TXT at once, and the plugin answers `DECLINED` at once: the
//! banner is not delayed. The answers are awaited at the first of `HELO`/`EHLO`, `MAIL` or
//! `RCPT` (normally long in by then), so plugins at all those hooks see the result; qpsmtpd
//! looked only at `RCPT`.
//!
//! Listed means a TXT record, or an A record that is a listing code: inside `127.0.0.0/8`,
//! but not `127.0.0.1`, `127.255.255.0/24` (error codes, see `dnsbl`) or `127.0.0.255`
//! (dnswl.org's "query refused"): a whitelist that answers "over quota" must not make every
//! client immune. A listed client gets the conn note `WhitelistHost` (qpsmtpd's
//! `whitelisthost`) with the TXT text, or the zone name; `shared::is_immune` is then true and
//! the plugins that honour it skip their checks. The plugin never rejects.
//!
//! DNS failures (timeout, SERVFAIL) count as "not listed" and are logged; the wait ends at most
//! `timeout` seconds after `connect`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `timeout` | `10` | seconds after `connect` past which unanswered zones count as not listed |
//! | `loglevel` | | qpsmtpd's per-plugin log level (`reject`, `reject_type` accepted, no effect) |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `whitelist_zones` | `zone [comment]`, one per line. A bad zone name stops the server with `file:line` |
//!
//! ## Hooks
//!
//! `connect` (start), `helo`, `ehlo`, `mail`, `rcpt` (the first one decides).
//!
//! ## Notes
//!
//! Writes conn note `WhitelistHost`; a private conn note with the lookups in flight.
//!
//! ## Standards
//!
//! RFC 5782 (DNS whitelists use the blocklist query form, §2.1, §2.4).
//!
//! ## Security
//!
//! A whitelisted client skips every check that honours `is_immune`, including recipient
//! relaying in `rcpt_ok`: list only zones you trust as much as `relayclients`. A spoofed DNS
//! answer would grant immunity, which is why answers are matched by ID and question in the
//! DNS client. The TXT text is cut to 256 printable ASCII characters.

use std::time::Duration;

use ringsmtpd_plugin_api::args::timeout_only;
use ringsmtpd_plugin_api::dns::reversed_ip;
use ringsmtpd_plugin_api::dnsutil::{check_zone, client_ip, is_listing_code, Deadline, ZoneQuery};
use ringsmtpd_plugin_api::shared::WhitelistHost;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Lookups in flight (private conn note).
struct InFlight {
    deadline: Deadline,
    /// One per zone, in the order of `whitelist_zones`.
    queries: Vec<ZoneQuery>,
}

pub struct DnsWhitelistSoft {
    common: Common,
    timeout: Duration,
    zones: Vec<String>,
}

/// Builds `dns_whitelist_soft` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let timeout = timeout_only(init, &rest, DEFAULT_TIMEOUT)?;
    let mut zones = Vec::new();
    for line in init.config.lines("whitelist_zones")?.unwrap_or_default() {
        let zone = line.text.split_whitespace().next().unwrap_or_default();
        check_zone(zone).map_err(|why| line.error(format!("'{zone}' is not a DNS zone: {why}")))?;
        zones.push(zone.trim_end_matches('.').to_ascii_lowercase());
    }
    Ok(Box::new(DnsWhitelistSoft {
        common,
        timeout,
        zones,
    }))
}

impl DnsWhitelistSoft {
    /// Awaits the answers if they are still in flight; every hook but `connect` comes here.
    fn decide<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        if !cx.conn.notes.contains::<InFlight>() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            self.resolve(cx).await;
            Outcome::Declined
        })
    }

    async fn resolve(&self, cx: &mut Cx) {
        let Some(mut flight) = cx.conn.notes.take::<InFlight>() else {
            return;
        };
        let ip = client_ip(cx);
        let mut timer = flight.deadline.timer(&*cx.svc);
        for (zone, query) in self.zones.iter().zip(&mut flight.queries) {
            let answer = query.answer(cx, &self.common, zone, &mut timer).await;
            // x.x.x.255: the list's own error codes.
            if answer.listed(|a| is_listing_code(a) && a.octets()[3] != 255) {
                let why = answer.txt.unwrap_or_else(|| zone.clone());
                self.common.log(
                    cx,
                    Level::Notice,
                    format_args!("Host {ip} is whitelisted: {why}"),
                );
                cx.conn.notes.set(WhitelistHost(why));
                return;
            }
        }
        self.common
            .log(cx, Level::Debug, format_args!("{ip} not whitelisted"));
    }
}

impl Plugin for DnsWhitelistSoft {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Helo,
            Hook::Ehlo,
            Hook::Mail,
            Hook::Rcpt,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        if self.zones.is_empty() {
            return Step::DECLINED;
        }
        let ip = client_ip(cx);
        let queries = (self.zones.iter())
            .map(|zone| ZoneQuery::send(&*cx.svc, &reversed_ip(ip, zone), true))
            .collect();
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        cx.conn.notes.set(InFlight { deadline, queries });
        Step::DECLINED
    }

    fn helo<'a>(&'a self, cx: &'a mut Cx, _host: &'a str) -> Step<'a> {
        self.decide(cx)
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, _host: &'a str) -> Step<'a> {
        self.decide(cx)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        self.decide(cx)
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        _txn: &'a mut Transaction,
        _rcpt: &'a Recipient,
    ) -> Step<'a> {
        self.decide(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::{DnsError, QType};
    use ringsmtpd_plugin_api::shared::is_immune;
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, rcpt, run, txn_from};

    const ZONES: &str = "# trusted\nwl.example  the good list\nwl2.example\n";

    fn plugin(args: &[&str]) -> Box<dyn Plugin> {
        build(
            new,
            &format!("dns_whitelist_soft {}", args.join(" ")),
            &[("whitelist_zones", ZONES)],
        )
        .unwrap()
    }

    #[test]
    fn connect_starts_all_zones_and_helo_decides() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("1.2.0.192.wl2.example", QType::A, vec![a("127.0.10.2")]);
        assert!(matches!(p.connect(&mut c), Step::Ready(Outcome::Declined)));
        assert_eq!(svc.asked.borrow().len(), 4);
        assert!(!is_immune(&c, None));
        assert_eq!(run(p.ehlo(&mut c, "mx.example")), Outcome::Declined);
        assert_eq!(
            c.conn.notes.get::<WhitelistHost>(),
            Some(&WhitelistHost("wl2.example".into()))
        );
        assert!(is_immune(&c, None));
        // Decided: later hooks are free.
        assert!(matches!(
            p.helo(&mut c, "x"),
            Step::Ready(Outcome::Declined)
        ));
    }

    #[test]
    fn txt_text_and_later_hooks() {
        let p = plugin(&[]);
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer(
            "1.2.0.192.wl.example",
            QType::Txt,
            vec![txt("trusted sender\r\n")],
        );
        run(p.connect(&mut c));
        let mut txn = txn_from("<a@b.example>");
        run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>")));
        assert_eq!(
            c.conn.notes.get::<WhitelistHost>().map(|w| w.0.as_str()),
            Some("trusted sender??")
        );
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("1.2.0.192.wl.example", QType::A, vec![a("127.0.0.2")]);
        run(p.connect(&mut c));
        run(p.mail(&mut c, &mut txn));
        assert!(c.conn.notes.contains::<WhitelistHost>());
    }

    #[test]
    fn error_codes_and_failures_do_not_whitelist() {
        let p = plugin(&[]);
        for code in ["127.0.0.255", "127.255.255.254", "127.0.0.1", "203.0.113.1"] {
            let (mut c, svc) = cx("192.0.2.1:1");
            svc.answer("1.2.0.192.wl.example", QType::A, vec![a(code)]);
            svc.answer(
                "1.2.0.192.wl.example",
                QType::Txt,
                vec![txt("query refused")],
            );
            run(p.connect(&mut c));
            run(p.helo(&mut c, "x.example"));
            assert!(!c.conn.notes.contains::<WhitelistHost>(), "{code}");
        }
        for err in [DnsError::Timeout, DnsError::ServFail] {
            let (mut c, svc) = cx("192.0.2.1:1");
            svc.fail("1.2.0.192.wl.example", QType::A, err);
            svc.fail("1.2.0.192.wl.example", QType::Txt, err);
            run(p.connect(&mut c));
            assert_eq!(run(p.helo(&mut c, "x.example")), Outcome::Declined);
            assert!(!c.conn.notes.contains::<WhitelistHost>());
            assert!(svc.logged("counted as not listed"));
        }
    }

    #[test]
    fn arguments_and_config() {
        assert!(build(new, "dns_whitelist_soft timeout 2 reject 0", &[]).is_ok());
        assert!(build(new, "dns_whitelist_soft timeout", &[]).is_err());
        assert!(build(new, "dns_whitelist_soft bogus 1", &[]).is_err());
        let err = build(
            new,
            "dns_whitelist_soft",
            &[("whitelist_zones", "ok.example\nno_good!\n")],
        )
        .err()
        .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("whitelist_zones", 2));
        // No zones: nothing asked, nothing awaited.
        let p = build(new, "dns_whitelist_soft", &[]).unwrap();
        let (mut c, svc) = cx("192.0.2.1:1");
        run(p.connect(&mut c));
        assert!(matches!(
            p.helo(&mut c, "x"),
            Step::Ready(Outcome::Declined)
        ));
        assert!(svc.asked.borrow().is_empty());
    }
}
