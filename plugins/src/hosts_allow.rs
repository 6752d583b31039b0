//! # hosts_allow — limit connections per IP, allow or refuse clients by address
//!
//! ## Synopsis
//!
//! ```text
//! hosts_allow [max_conn_ip N] [reject 0|1|naughty] [reject_type temp|perm|...] [loglevel N]
//! ```
//!
//! Put it first: it runs before the greeting, and a refused client costs nothing more.
//!
//! ## Description
//!
//! Two checks, in this order, before anything else happens on a connection:
//!
//! 1. **Concurrent connections per IP.** With `max_conn_ip N` (N > 0), a connection that would
//!    make more than N open connections from its client IP is refused with `451 4.7.1 too many
//!    connections from <ip>, try again later` and closed. The count
//!    ([`Connection::concurrent`](ringsmtpd_plugin_api::Connection)) is kept by the engine
//!    across all worker threads and all listeners of the process and includes this connection;
//!    it is exact, whichever worker the kernel handed the connection to. (qpsmtpd took the
//!    limit from `qpsmtpd-forkserver -m` / `qpsmtpd-prefork --max-from-ip` and counted its
//!    children; ringsmtpd has no such option, so the limit is this plugin's argument.)
//! 2. **Rules** from the `hosts_allow` file, first match wins; no match declines (the client
//!    is let in, and later plugins decide).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `max_conn_ip N` | `0` | the most concurrent connections from one IP; `0` means no limit |
//! | `reject 0\|1\|naughty` | `1` | for the connection limit: `0` logs only, `naughty` marks the connection for the `naughty` plugin |
//! | `reject_type` | `temp` | for the connection limit: `temp` 451, `perm` 550; the connection is closed either way (pre-connection refusals always close) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! `hosts_allow`, read when the plugin is built (start and reload). One rule per line:
//!
//! ```text
//! IP[/len]   RETURNCODE   [message...]
//! 192.0.2.4        DECLINED
//! 192.0.2.0/24     DENY      Sorry, known spam only source
//! 2001:db8::/32    DENYSOFT  Try again later
//! ```
//!
//! `IP` is an IPv4 or IPv6 address; `/len` makes it a network (host bits are ignored, so
//! `192.0.2.9/24` means `192.0.2.0/24`). `RETURNCODE` is one of qpsmtpd's names: `OK` (let in,
//! and skip the other pre-connection plugins), `DECLINED` (let in, use to exempt an address
//! from a later, wider rule), `DENY` / `DENY_DISCONNECT` (`DENYHARD`) (550 and close),
//! `DENYSOFT` / `DENYSOFT_DISCONNECT` (451 and close). The message, if any, replaces the
//! default reply text of a deny. Differences from qpsmtpd: IPv6 rules work (qpsmtpd's matched
//! IPv4 only); a network with host bits set matches its network (qpsmtpd's never matched); a
//! line without a valid code, or with `DONE`, stops the server with `hosts_allow:LINE` instead
//! of being skipped or read as `DECLINED`. The karma-based limit adjustment needs a `karma`
//! plugin, which does not exist here.
//!
//! ## Hooks
//!
//! `pre-connection`.
//!
//! ## Notes
//!
//! Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §3.1 and §4.2.3 (421/451 and 554/550 at connection opening); RFC 3463 X.7.1.
//!
//! ## Security
//!
//! The limit stops one host from taking all the server's connections; it counts the address
//! the connection comes from (or the one a trusted PROXY header names). Hosts behind one NAT
//! share a count: do not set the limit too low for them. Loopback is limited like any other
//! address unless a rule exempts it — a `DECLINED` rule cannot, since the limit is checked
//! first.

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::cidr::{Cidr, IpForms};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, RejectType, Step,
};

use crate::matchers::Verdict;

/// The `hosts_allow` plugin.
pub struct HostsAllow {
    common: Common,
    max_conn_ip: u32,
    rules: Vec<(Cidr, Verdict)>,
}

/// Builds `hosts_allow` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs {
        reject_type: RejectType::Temp,
        ..CommonArgs::DEFAULT
    })?;
    let mut max_conn_ip = 0;
    let mut it = rest.iter();
    while let Some(&key) = it.next() {
        if key != "max_conn_ip" {
            return Err(init.unknown(key));
        }
        let value = it
            .next()
            .ok_or_else(|| init.error("max_conn_ip needs a value"))?;
        max_conn_ip = match value.parse::<u32>() {
            Ok(n) if !value.starts_with('+') => n,
            _ => return Err(init.error(format!("max_conn_ip must be a number, not '{value}'"))),
        };
    }
    let rules = args::parse_lines(init, "hosts_allow", |text| {
        let (ip, verdict) = Verdict::parse(text, "IP[/len]")?;
        Ok((Cidr::parse(ip, IpForms::Cidr)?, verdict))
    })?;
    Ok(Box::new(HostsAllow {
        common,
        max_conn_ip,
        rules,
    }))
}

impl Plugin for HostsAllow {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::PreConnection])
    }

    fn pre_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let ip = cx.conn.remote.ip();
        let n = cx.conn.concurrent;
        if self.max_conn_ip > 0 && n > self.max_conn_ip {
            let what = format_args!(
                "too many connections from {ip} ({n} > {})",
                self.max_conn_ip
            );
            let text = format!("too many connections from {ip}, try again later");
            return self.common.fail(cx, what, text);
        }
        if let Some((_, verdict)) = self.rules.iter().find(|(net, _)| net.contains(ip)) {
            let what = format_args!("{ip} matches a rule");
            return Step::Ready(verdict.apply(&self.common, cx, what));
        }
        self.common.log(cx, Level::Debug, format_args!("pass"));
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::Naughty;
    use ringsmtpd_plugin_api::testing::{assert_bad_lines, build, cx, run};
    use ringsmtpd_plugin_api::Outcome;

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<Box<dyn Plugin>, ConfigError> {
        build(new, &format!("hosts_allow {}", args.join(" ")), files)
    }

    fn check(p: &dyn Plugin, remote: &str, concurrent: u32) -> (Outcome, Cx) {
        let (mut c, _) = cx(remote);
        c.conn.concurrent = concurrent;
        (run(p.pre_connection(&mut c)), c)
    }

    #[test]
    fn connection_limit() {
        let p = build_with(&["max_conn_ip", "3"], &[]).unwrap();
        assert_eq!(check(&*p, "192.0.2.1:1", 1).0, Outcome::Declined);
        assert_eq!(check(&*p, "192.0.2.1:1", 3).0, Outcome::Declined);
        let (o, _) = check(&*p, "192.0.2.1:1", 4);
        assert_eq!(
            o,
            Outcome::DenySoft(Some(
                "too many connections from 192.0.2.1, try again later".into()
            ))
        );
        let (o, _) = check(&*p, "[2001:db8::5]:1", 4);
        assert_eq!(
            o.msg(),
            Some("too many connections from 2001:db8::5, try again later")
        );
    }

    #[test]
    fn no_limit_by_default_or_with_zero() {
        for args in [&[][..], &["max_conn_ip", "0"]] {
            let p = build_with(args, &[]).unwrap();
            assert_eq!(check(&*p, "192.0.2.1:1", 10_000).0, Outcome::Declined);
        }
    }

    #[test]
    fn limit_reject_forms() {
        let p = build_with(&["max_conn_ip", "1", "reject_type", "perm"], &[]).unwrap();
        assert!(matches!(check(&*p, "192.0.2.1:1", 2).0, Outcome::Deny(_)));
        let p = build_with(&["max_conn_ip", "1", "reject", "0"], &[]).unwrap();
        assert_eq!(check(&*p, "192.0.2.1:1", 2).0, Outcome::Declined);
        let p = build_with(&["max_conn_ip", "1", "reject", "naughty"], &[]).unwrap();
        let (o, c) = check(&*p, "192.0.2.1:1", 2);
        assert_eq!(o, Outcome::Declined);
        assert!(c
            .conn
            .notes
            .get::<Naughty>()
            .unwrap()
            .msg
            .contains("too many"));
    }

    const RULES: &str = "# rules\n\
        192.0.2.4        DECLINED\n\
        192.0.2.0/24     DENY   Sorry, known spam only source\n\
        198.51.100.7     OK\n\
        2001:db8::/32    DENYSOFT  Try later\n\
        203.0.113.0/24   deny_disconnect\n\
        10.0.0.0/8       DENYHARD\n\
        10.0.0.0/8       DENYSOFT_DISCONNECT never reached\n";

    #[test]
    fn rules_first_match_wins() {
        let p = build_with(&[], &[("hosts_allow", RULES)]).unwrap();
        assert_eq!(check(&*p, "192.0.2.4:1", 1).0, Outcome::Declined);
        assert_eq!(
            check(&*p, "192.0.2.5:1", 1).0,
            Outcome::Deny(Some("Sorry, known spam only source".into()))
        );
        assert_eq!(check(&*p, "198.51.100.7:1", 1).0, Outcome::Ok(None));
        assert_eq!(check(&*p, "198.51.100.8:1", 1).0, Outcome::Declined);
        assert_eq!(
            check(&*p, "[2001:db8:1::1]:1", 1).0,
            Outcome::DenySoft(Some("Try later".into()))
        );
        assert_eq!(check(&*p, "[2001:db9::1]:1", 1).0, Outcome::Declined);
        assert_eq!(
            check(&*p, "203.0.113.1:1", 1).0,
            Outcome::DenyDisconnect(None)
        );
        assert_eq!(check(&*p, "10.1.1.1:1", 1).0, Outcome::DenyDisconnect(None));
    }

    #[test]
    fn limit_checked_before_rules() {
        let p = build_with(&["max_conn_ip", "2"], &[("hosts_allow", "192.0.2.4 OK\n")]).unwrap();
        assert!(matches!(
            check(&*p, "192.0.2.4:1", 3).0,
            Outcome::DenySoft(_)
        ));
        assert_eq!(check(&*p, "192.0.2.4:1", 2).0, Outcome::Ok(None));
    }

    #[test]
    fn bad_rules_name_file_and_line() {
        assert_bad_lines(
            new,
            "hosts_allow",
            "hosts_allow",
            &[
                ("192.0.2.1 DENY\n192.0.2.2\n", 2),
                ("# c\n\n192.0.2.0/33 DENY\n", 3),
                ("192.0.2. DENY\n", 1),
                ("192.0.2.1 MAYBE\n", 1),
                ("192.0.2.1 DONE\n", 1),
                ("host.example DENY\n", 1),
            ],
        );
    }

    #[test]
    fn bad_arguments() {
        for bad in [
            &["max_conn_ip"][..],
            &["max_conn_ip", "-1"],
            &["max_conn_ip", "x"],
            &["other", "1"],
        ] {
            assert!(build_with(bad, &[]).is_err(), "{bad:?}");
        }
    }
}
