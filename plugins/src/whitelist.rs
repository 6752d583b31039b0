//! # whitelist — exempt hosts, HELO names, senders and recipients from later checks
//!
//! ## Synopsis
//!
//! ```text
//! whitelist [per_recipient 0|1] [merge 0|1] [loglevel N]
//! ```
//!
//! List it **before** the plugins it should exempt clients from.
//!
//! ## Description
//!
//! qpsmtpd's `whitelist` (the "soft" one): a match answers `OK` at that hook, which ends the
//! hook's chain — the plugins after this one do not run for that step — and leaves a note that
//! later plugins may consult at later steps. A match at one step does not exempt the others
//! (a whitelisted host is not thereby a relay client), except through `is_immune`, which
//! plugins such as `rcpt_ok` and `earlytalker` honour for hosts and senders.
//!
//! | step | file | matches | note | effect of `OK` |
//! |---|---|---|---|---|
//! | `connect` | `whitelisthosts` | the client IP | conn `WhitelistHost` | no later `connect` plugin runs; `is_immune` is true from now on |
//! | `connect` | (env `WHITELISTCLIENT` set) | every client | conn [`WhitelistClient`] | no later `connect` plugin runs |
//! | `helo`/`ehlo` | `whitelisthelo` | the HELO name, any case | conn [`WhitelistHelo`] | no later `helo` plugin runs |
//! | `mail` | `whitelistsenders` | `user@host` or `host` of the sender, any case | txn `WhitelistSender` | the sender is accepted; `is_immune` is true for this transaction |
//! | `rcpt` | `whitelistrcpt` | `user@host` or `host` of the recipient, any case | txn [`WhitelistRcpt`] (a count) | **the recipient is accepted** |
//!
//! With `per_recipient 1` all four checks move to `rcpt` (host, HELO, sender, recipient, in
//! that order): nothing is exempted before a recipient is known, and any match accepts that
//! recipient. qpsmtpd meant this for per-user whitelist files (its `user_config` hook); there
//! are none here, so the global files apply to every recipient and `merge` (merge per-user
//! lists with the global ones, default `1`) is accepted for compatibility and changes nothing.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `per_recipient 0\|1` | `0` | defer every check to `rcpt`, see above |
//! | `merge 0\|1` | `1` | accepted, no effect (see above) |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect: this plugin never refuses |
//!
//! ## Config files
//!
//! Read when the plugin is built (start and reload); `WHITELISTCLIENT` too. A bad line stops
//! the server with `file:line`.
//!
//! | file | lines |
//! |---|---|
//! | `whitelisthosts` | an IP address, a network `IP/len`, or a start of an address in whole octets or groups: `192.0.2.`, `10.1` (= `10.1.`), `2001:db8:` |
//! | `whitelisthelo` | a HELO name |
//! | `whitelistsenders` | `user@host` or `host` |
//! | `whitelistrcpt` | `user@host` or `host` |
//!
//! Differences from qpsmtpd: a fragment in `whitelisthosts` matches whole octets (`10.1` covers
//! `10.1.2.3`, not `10.10.2.3`, which qpsmtpd's string prefix also matched); lines with
//! whitespace are errors.
//!
//! ## Hooks
//!
//! `connect`, `helo`, `ehlo`, `mail`, `rcpt`; only `rcpt` with `per_recipient 1`.
//!
//! ## Notes
//!
//! Writes conn notes `WhitelistHost`, [`WhitelistClient`], [`WhitelistHelo`]; txn notes
//! `WhitelistSender`, [`WhitelistRcpt`].
//!
//! ## Standards
//!
//! RFC 5321 §2.4 and §4.1.2 (domains are case-insensitive; local parts are compared
//! case-insensitively here, as qpsmtpd does).
//!
//! ## Security
//!
//! A whitelisted sender is an exemption anyone can claim: the envelope sender is not
//! authenticated. Prefer host entries for partners with fixed addresses. `whitelistrcpt`
//! accepts the recipient even if it is not local: listing a foreign domain makes this server
//! relay for it. A HELO name proves nothing either.

use std::collections::HashSet;
use std::net::IpAddr;

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::shared::{WhitelistHost, WhitelistSender};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Step, Transaction,
};

use crate::matchers::lower_parts;

/// Conn note: `WHITELISTCLIENT` was set (qpsmtpd conn note `whitelistclient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WhitelistClient;

/// Conn note: the HELO name is whitelisted (qpsmtpd conn note `whitelisthelo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhitelistHelo(pub String);

/// Txn note: how many recipients of this transaction were whitelisted (qpsmtpd txn note
/// `whitelistrcpt`; greylisting skips a transaction whose recipients all are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WhitelistRcpt(pub u32);

/// The `whitelist` plugin.
pub struct Whitelist {
    common: Common,
    per_recipient: bool,
    /// `WHITELISTCLIENT` was set when the plugin was built.
    env: bool,
    hosts: IpList,
    helos: HashSet<String>,
    senders: HashSet<String>,
    rcpts: HashSet<String>,
}

/// Builds `whitelist` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(
        init,
        std::env::var_os("WHITELISTCLIENT").is_some(),
    )?))
}

fn flag(init: &PluginInit<'_>, key: &str, value: Option<&&str>) -> Result<bool, ConfigError> {
    match value.copied() {
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        v => Err(init.error(format!("{key} must be 0 or 1, not {v:?}"))),
    }
}

fn build(init: &PluginInit<'_>, env: bool) -> Result<Whitelist, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut per_recipient = false;
    let mut it = rest.iter();
    while let Some(&key) = it.next() {
        match key {
            "per_recipient" => per_recipient = flag(init, key, it.next())?,
            "merge" => {
                flag(init, key, it.next())?;
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let mut hosts = IpList::default();
    args::parse_lines(init, "whitelisthosts", |text| {
        hosts.add(text, IpForms::Fragment)
    })?;
    let names = |file: &str, check: fn(&str) -> bool, what: &str| {
        let names = args::parse_lines(init, file, |text| {
            if text.contains(char::is_whitespace) || !check(text) {
                return Err(format!("'{text}' is not {what}"));
            }
            Ok(text.to_lowercase())
        })?;
        Ok::<HashSet<String>, ConfigError>(names.into_iter().collect())
    };
    let helo_ok: fn(&str) -> bool = |_| true;
    let addr_ok: fn(&str) -> bool = |t| {
        let parts: Vec<&str> = t.split('@').collect();
        match parts.as_slice() {
            [host] => !host.is_empty(),
            [user, host] => !user.is_empty() && !host.is_empty(),
            _ => false,
        }
    };
    Ok(Whitelist {
        common,
        per_recipient,
        env,
        hosts,
        helos: names("whitelisthelo", helo_ok, "a HELO name")?,
        senders: names("whitelistsenders", addr_ok, "user@host or host")?,
        rcpts: names("whitelistrcpt", addr_ok, "user@host or host")?,
    })
}

impl Whitelist {
    fn check_host(&self, cx: &mut Cx) -> Outcome {
        if self.env {
            cx.conn.notes.set(WhitelistClient);
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, WHITELISTCLIENT is set"),
            );
            return Outcome::Ok(None);
        }
        let ip: IpAddr = cx.conn.remote.ip();
        if self.hosts.contains(ip) {
            cx.conn.notes.set(WhitelistHost(ip.to_string()));
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, {ip} is a whitelisted host"),
            );
            return Outcome::Ok(None);
        }
        Outcome::Declined
    }

    fn check_helo(&self, cx: &mut Cx, host: &str) -> Outcome {
        if !host.is_empty() && self.helos.contains(&host.to_lowercase()) {
            cx.conn.notes.set(WhitelistHelo(host.to_string()));
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, HELO {host} is whitelisted"),
            );
            return Outcome::Ok(None);
        }
        Outcome::Declined
    }

    fn listed(set: &HashSet<String>, addr: &ringsmtpd_plugin_api::Address) -> bool {
        match lower_parts(addr) {
            Some((full, host)) => set.contains(&full) || set.contains(&host),
            None => false,
        }
    }

    fn check_sender(&self, cx: &Cx, txn: &mut Transaction) -> Outcome {
        if Self::listed(&self.senders, &txn.sender) {
            txn.notes
                .set(WhitelistSender(txn.sender.as_str().to_string()));
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, sender {} is whitelisted", txn.sender),
            );
            return Outcome::Ok(None);
        }
        Outcome::Declined
    }

    fn check_rcpt(&self, cx: &Cx, txn: &mut Transaction, rcpt: &Recipient) -> Outcome {
        if Self::listed(&self.rcpts, &rcpt.addr) {
            txn.notes.get_or_insert_with(WhitelistRcpt::default).0 += 1;
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, recipient {} is whitelisted", rcpt.addr),
            );
            return Outcome::Ok(None);
        }
        Outcome::Declined
    }
}

impl Plugin for Whitelist {
    fn hooks(&self) -> HookSet {
        if self.per_recipient {
            HookSet::of(&[Hook::Rcpt])
        } else {
            HookSet::of(&[
                Hook::Connect,
                Hook::Helo,
                Hook::Ehlo,
                Hook::Mail,
                Hook::Rcpt,
            ])
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::Ready(self.check_host(cx))
    }

    fn helo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        Step::Ready(self.check_helo(cx, host))
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        Step::Ready(self.check_helo(cx, host))
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::Ready(self.check_sender(cx, txn))
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !self.per_recipient {
            return Step::Ready(self.check_rcpt(cx, txn, rcpt));
        }
        let mut outcome = self.check_host(cx);
        if outcome == Outcome::Declined {
            let helo = cx.conn.hello_host().to_string();
            outcome = self.check_helo(cx, &helo);
        }
        if outcome == Outcome::Declined {
            outcome = self.check_sender(cx, txn);
        }
        if outcome == Outcome::Declined {
            outcome = self.check_rcpt(cx, txn, rcpt);
        }
        Step::Ready(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::is_immune;
    use ringsmtpd_plugin_api::testing::{self, cx, run};
    use ringsmtpd_plugin_api::{Hello, HelloKind};

    fn build_with(
        args: &[&str],
        files: &[(&str, &str)],
        env: bool,
    ) -> Result<Whitelist, ConfigError> {
        let line = format!("whitelist {}", args.join(" "));
        testing::build(|init| build(init, env), &line, files)
    }

    const FILES: &[(&str, &str)] = &[
        (
            "whitelisthosts",
            "192.0.2.7\n10.1\n198.51.100.0/24\n2001:db8:",
        ),
        ("whitelisthelo", "Partner.Example\n"),
        ("whitelistsenders", "Boss@Example.com\ntrusted.example\n"),
        ("whitelistrcpt", "abuse@example.net\nopen.example\n"),
    ];

    fn rcpt(a: &str) -> Recipient {
        testing::rcpt(&format!("<{a}>"))
    }

    fn txn_from(sender: &str) -> Transaction {
        testing::txn_from(&format!("<{sender}>"))
    }

    fn host_ok(p: &Whitelist, remote: &str) -> bool {
        let (mut c, _) = cx(remote);
        let o = run(p.connect(&mut c));
        assert_eq!(
            o == Outcome::Ok(None),
            c.conn.notes.contains::<WhitelistHost>()
        );
        assert_eq!(o == Outcome::Ok(None), is_immune(&c, None));
        o == Outcome::Ok(None)
    }

    #[test]
    fn hosts() {
        let p = build_with(&[], FILES, false).unwrap();
        assert!(host_ok(&p, "192.0.2.7:1"));
        assert!(!host_ok(&p, "192.0.2.8:1"));
        assert!(host_ok(&p, "10.1.200.3:1"));
        assert!(!host_ok(&p, "10.10.200.3:1"));
        assert!(host_ok(&p, "198.51.100.99:1"));
        assert!(host_ok(&p, "[2001:db8::5]:1"));
        assert!(!host_ok(&p, "[2001:db9::5]:1"));
    }

    #[test]
    fn whitelistclient_env() {
        let p = build_with(&[], &[], true).unwrap();
        let (mut c, _) = cx("203.0.113.1:1");
        assert_eq!(run(p.connect(&mut c)), Outcome::Ok(None));
        assert!(c.conn.notes.contains::<WhitelistClient>());
        // qpsmtpd's whitelistclient note is not whitelisthost: not immune.
        assert!(!is_immune(&c, None));
    }

    #[test]
    fn helo() {
        let p = build_with(&[], FILES, false).unwrap();
        let (mut c, _) = cx("203.0.113.1:1");
        assert_eq!(run(p.helo(&mut c, "partner.example")), Outcome::Ok(None));
        assert_eq!(
            c.conn.notes.get::<WhitelistHelo>().unwrap().0,
            "partner.example"
        );
        let (mut c, _) = cx("203.0.113.1:1");
        assert_eq!(run(p.ehlo(&mut c, "PARTNER.EXAMPLE")), Outcome::Ok(None));
        assert_eq!(run(p.ehlo(&mut c, "other.example")), Outcome::Declined);
        let (mut c, _) = cx("203.0.113.1:1");
        assert_eq!(
            run(p.helo(&mut c, "sub.partner.example")),
            Outcome::Declined
        );
        assert!(!c.conn.notes.contains::<WhitelistHelo>());
    }

    #[test]
    fn senders() {
        let p = build_with(&[], FILES, false).unwrap();
        let (mut c, _) = cx("203.0.113.1:1");
        for (from, ok) in [
            ("boss@example.com", true),
            ("BOSS@EXAMPLE.COM", true),
            ("other@example.com", false),
            ("anyone@Trusted.Example", true),
            ("x@sub.trusted.example", false),
        ] {
            let mut t = txn_from(from);
            let o = run(p.mail(&mut c, &mut t));
            assert_eq!(o == Outcome::Ok(None), ok, "{from}");
            assert_eq!(t.notes.contains::<WhitelistSender>(), ok, "{from}");
            assert_eq!(is_immune(&c, Some(&t)), ok, "{from}");
        }
        let mut t = Transaction::default(); // <>
        assert_eq!(run(p.mail(&mut c, &mut t)), Outcome::Declined);
    }

    #[test]
    fn recipients_counted() {
        let p = build_with(&[], FILES, false).unwrap();
        let (mut c, _) = cx("203.0.113.1:1");
        let mut t = txn_from("a@b.example");
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &rcpt("Abuse@Example.net"))),
            Outcome::Ok(None)
        );
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &rcpt("x@open.example"))),
            Outcome::Ok(None)
        );
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &rcpt("x@closed.example"))),
            Outcome::Declined
        );
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &rcpt("postmaster"))),
            Outcome::Declined
        );
        assert_eq!(t.notes.get::<WhitelistRcpt>(), Some(&WhitelistRcpt(2)));
    }

    #[test]
    fn per_recipient_defers_everything_to_rcpt() {
        let p = build_with(&["per_recipient", "1", "merge", "0"], FILES, false).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Rcpt]));
        let far = rcpt("x@far.example");
        // A whitelisted host: its recipients are accepted, and the host note is set at rcpt.
        let (mut c, _) = cx("192.0.2.7:1");
        let mut t = txn_from("a@b.example");
        assert_eq!(run(p.rcpt(&mut c, &mut t, &far)), Outcome::Ok(None));
        assert!(c.conn.notes.contains::<WhitelistHost>());
        // A whitelisted HELO.
        let (mut c, _) = cx("203.0.113.1:1");
        c.conn.hello = Some(Hello {
            kind: HelloKind::Ehlo,
            host: "partner.example".into(),
        });
        assert_eq!(run(p.rcpt(&mut c, &mut t, &far)), Outcome::Ok(None));
        // A whitelisted sender.
        let (mut c, _) = cx("203.0.113.1:1");
        let mut t = txn_from("boss@example.com");
        assert_eq!(run(p.rcpt(&mut c, &mut t, &far)), Outcome::Ok(None));
        assert!(t.notes.contains::<WhitelistSender>());
        // Nothing matches.
        let mut t = txn_from("a@b.example");
        assert_eq!(run(p.rcpt(&mut c, &mut t, &far)), Outcome::Declined);
        assert_eq!(
            run(p.rcpt(&mut c, &mut t, &rcpt("q@open.example"))),
            Outcome::Ok(None)
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (file, text, line) in [
            ("whitelisthosts", "192.0.2.1\nexample.com\n", 2),
            ("whitelisthosts", "300.1\n", 1),
            ("whitelisthelo", "ok.example\nbad name\n", 2),
            ("whitelistsenders", "a@b@c\n", 1),
            ("whitelistrcpt", "# c\n@host\n", 2),
        ] {
            let e = build_with(&[], &[(file, text)], false).err().unwrap();
            assert_eq!((e.file.as_str(), e.line), (file, line), "{text:?}: {e}");
        }
    }

    #[test]
    fn arguments() {
        assert!(!build_with(&[], &[], false).unwrap().per_recipient);
        assert!(
            build_with(&["per_recipient", "1"], &[], false)
                .unwrap()
                .per_recipient
        );
        assert!(build_with(&["reject", "0", "merge", "1"], &[], false).is_ok());
        for bad in [&["per_recipient"][..], &["merge", "2"], &["strict", "1"]] {
            assert!(build_with(bad, &[], false).is_err(), "{bad:?}");
        }
    }
}
