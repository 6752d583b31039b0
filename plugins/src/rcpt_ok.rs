//! # rcpt_ok — accept recipients in the domains we receive mail for
//!
//! ## Synopsis
//!
//! ```text
//! rcpt_ok [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! Put it **last** among the recipient plugins: it accepts (`OK`) what it knows, and a plugin
//! after it never runs for those recipients.
//!
//! ## Description
//!
//! qmail's rcpthosts check, as qpsmtpd's `rcpt_ok` does it. A recipient is accepted if
//!
//! 1. the client is immune (`shared::is_immune`: a relay client, or a whitelisted host or
//!    sender) — a relay client may send anywhere;
//! 2. it is the bare `postmaster` (RFC 5321 §4.5.1 requires it);
//! 3. its domain, compared case-insensitively, is this host's name (`me`, config file or the
//!    server's default) or listed in `rcpthosts` or `morercpthosts`. An entry `.example.com`
//!    matches every subdomain (`mx.example.com`, `a.b.example.com`) but not `example.com`
//!    itself; an entry `example.com` matches only `example.com`. An address literal matches
//!    only if listed literally (`[192.0.2.1]`, `[IPv6:2001:db8::1]`): we do not compare it with
//!    our own addresses.
//!
//! Anything else is refused with `5.7.1 Relaying denied` (the engine answers 550), or as
//! `reject`/`reject_type` say. `postmaster@<local domain>` needs no rule of its own: its
//! domain is local.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log and decline (the engine then answers 450 if no other plugin accepts); `naughty`: mark the connection and decline |
//! | `reject_type` | `perm` | `perm` 550 5.7.1, `temp` 450 4.7.1, `disconnect`/`temp_disconnect` the same and close |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! Read once when the plugin is built (start and reload); every line is checked, and a line
//! that is not a domain, `.domain` or `[address literal]` stops the server with `file:line`.
//!
//! | file | meaning |
//! |---|---|
//! | `me` | this host's name(s): local |
//! | `rcpthosts` | local domains, `.domain` for all subdomains |
//! | `morercpthosts` | more of the same (qmail's overflow list). **We read the plain text file**, not `morercpthosts.cdb` as qpsmtpd does: there is no cdb reader here. qmail's `qmail-newmrh` builds the cdb from this text file, so it is normally there. Plain entries match exactly, as in qpsmtpd; a `.domain` entry matches subdomains, as in qmail (qpsmtpd's exact cdb lookup could never match it). |
//!
//! Differences from qpsmtpd: bare `abuse` (qpsmtpd also accepts it) is not a recipient the
//! address parser lets through; bad config lines are errors instead of never matching.
//!
//! ## Hooks
//!
//! `rcpt`.
//!
//! ## Notes
//!
//! Reads conn note `WhitelistHost` and txn note `WhitelistSender` (through `is_immune`) and
//! `relay_client`. Writes `Naughty` with `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §3.6.2 (relaying is the server's choice), §4.5.1 (postmaster), §2.4 (domains are
//! case-insensitive), §4.1.3 (address literals); RFC 3463 §3.8 (X.7.1, delivery not
//! authorized); RFC 5321 §4.2.3 (550 for policy refusals).
//!
//! ## Security
//!
//! This plugin is what keeps the server from being an open relay. Without it (or another plugin
//! that accepts recipients) every RCPT gets 450: failing closed. `.example.com` does not cover
//! `evilexample.com`: the leading dot is part of the suffix compared.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Recipient, RejectType, Step, Transaction,
};

/// The recipient domains this server accepts mail for.
pub struct RcptOk {
    common: Common,
    /// Exact domains and address literals, lowercased.
    exact: HashSet<String>,
    /// `.domain` entries, lowercased, with their leading dot.
    suffixes: Vec<String>,
}

/// Builds `rcpt_ok` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let mut plugin = RcptOk {
        common: init.common_only(CommonArgs::DEFAULT)?,
        exact: HashSet::new(),
        suffixes: Vec::new(),
    };
    // `me` is the core's file, checked there: take its lines as they are.
    for line in init.config.lines("me")?.unwrap_or_default() {
        plugin.exact.insert(line.text.to_lowercase());
    }
    for file in ["rcpthosts", "morercpthosts"] {
        for line in init.config.lines(file)?.unwrap_or_default() {
            plugin.add_entry(&line)?;
        }
    }
    Ok(Box::new(plugin))
}

impl RcptOk {
    fn add_entry(&mut self, line: &ConfigLine) -> Result<(), ConfigError> {
        check_entry(&line.text).map_err(|why| {
            line.error(format!(
                "'{}' is not a domain, .domain or [address literal]: {why}",
                line.text
            ))
        })?;
        let entry = line.text.to_lowercase();
        if entry.starts_with('.') {
            self.suffixes.push(entry);
        } else {
            self.exact.insert(entry);
        }
        Ok(())
    }

    /// True if `domain` (any case) is one we receive mail for.
    fn is_local(&self, cx: &Cx, domain: &str) -> bool {
        if domain.is_empty() {
            return false;
        }
        if domain.eq_ignore_ascii_case(cx.svc.me()) {
            return true;
        }
        // Lowercase ASCII domains (at most 255 bytes: the parser's limit) on the stack: no
        // allocation per recipient. U-label domains (SMTPUTF8) take the allocating path.
        let mut buf = [0u8; 256];
        let lowered: std::borrow::Cow<'_, str> = match buf.get_mut(..domain.len()) {
            Some(dst) if domain.is_ascii() => {
                dst.copy_from_slice(domain.as_bytes());
                dst.make_ascii_lowercase();
                std::str::from_utf8(dst).map_or_else(|_| domain.to_lowercase().into(), Into::into)
            }
            _ => domain.to_lowercase().into(),
        };
        let domain = &*lowered;
        self.exact.contains(domain) || self.suffixes.iter().any(|s| domain.ends_with(s.as_str()))
    }
}

impl Plugin for RcptOk {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Rcpt])
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("pass: immune, {}", rcpt.addr));
            return Step::Ready(Outcome::Ok(None));
        }
        if rcpt.addr.is_bare_postmaster() {
            self.common
                .log(cx, Level::Info, format_args!("pass: bare postmaster"));
            return Step::Ready(Outcome::Ok(None));
        }
        let domain = rcpt.addr.domain();
        if self.is_local(cx, domain) {
            self.common
                .log(cx, Level::Info, format_args!("pass: {domain} is local"));
            return Step::Ready(Outcome::Ok(None));
        }
        // The enhanced code must agree with the reply class the engine picks (RFC 3463 §2).
        let text = match self.common.args.reject_type {
            RejectType::Perm | RejectType::Disconnect => "5.7.1 Relaying denied",
            RejectType::Temp | RejectType::TempDisconnect => "4.7.1 Relaying denied",
        };
        self.common
            .fail(cx, format_args!("{} is not local", rcpt.addr), text)
    }
}

/// Checks one `rcpthosts`/`morercpthosts` entry: a domain (RFC 5321 §4.1.2 `Domain`, with
/// U-labels allowed for SMTPUTF8), the same with a leading dot, or an address literal.
fn check_entry(entry: &str) -> Result<(), &'static str> {
    if let Some(inner) = entry.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("address literal without ']'")?;
        let ok = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                inner[5..].parse::<Ipv6Addr>().is_ok()
            }
            _ => inner.parse::<Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(())
        } else {
            Err("bad address literal")
        };
    }
    let domain = entry.strip_prefix('.').unwrap_or(entry);
    if domain.is_empty() {
        return Err("empty");
    }
    if domain.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
        if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
            return Err("only letters, digits, '-' and '.' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::WhitelistHost;
    use ringsmtpd_plugin_api::testing::{self, cx, run};

    fn recipient(text: &str) -> Recipient {
        testing::rcpt(&format!("<{text}>"))
    }

    fn build(args: &[&str], files: &[(&str, &str)]) -> Result<Box<dyn Plugin>, ConfigError> {
        testing::build(new, &format!("rcpt_ok {}", args.join(" ")), files)
    }

    fn check(plugin: &dyn Plugin, to: &str) -> Outcome {
        let (mut cx, _svc) = cx("192.0.2.1:4242");
        let mut txn = Transaction::default();
        run(plugin.rcpt(&mut cx, &mut txn, &recipient(to)))
    }

    const FILES: &[(&str, &str)] = &[
        ("me", "mail.example.org\n"),
        (
            "rcpthosts",
            "# local\nexample.com\n.sub.example.net\n[192.0.2.25]\n",
        ),
        ("morercpthosts", "example.info\n"),
    ];

    fn is_ok(o: &Outcome) -> bool {
        matches!(o, Outcome::Ok(_))
    }

    #[test]
    fn local_domain_any_case() {
        let p = build(&[], FILES).unwrap();
        assert!(is_ok(&check(&*p, "user@example.com")));
        assert!(is_ok(&check(&*p, "User@EXAMPLE.Com")));
    }

    #[test]
    fn leading_dot_matches_subdomains_only() {
        let p = build(&[], FILES).unwrap();
        assert!(is_ok(&check(&*p, "a@mx.sub.example.net")));
        assert!(is_ok(&check(&*p, "a@a.b.SUB.example.net")));
        assert!(!is_ok(&check(&*p, "a@sub.example.net")));
        assert!(!is_ok(&check(&*p, "a@evilsub.example.net")));
    }

    #[test]
    fn plain_entry_is_exact() {
        let p = build(&[], FILES).unwrap();
        assert!(!is_ok(&check(&*p, "a@mx.example.com")));
        assert!(!is_ok(&check(&*p, "a@example.com.evil.test")));
        assert!(!is_ok(&check(&*p, "a@xexample.com")));
    }

    #[test]
    fn morercpthosts_and_me() {
        let p = build(&[], FILES).unwrap();
        assert!(is_ok(&check(&*p, "a@example.info")));
        assert!(is_ok(&check(&*p, "a@Mail.Example.org")));
        // The server's own name (testing::cx's `me`) even without a `me` file.
        let p = build(&[], &[]).unwrap();
        assert!(is_ok(&check(&*p, "a@mx.example.test")));
    }

    #[test]
    fn address_literal_listed_literally() {
        let p = build(&[], FILES).unwrap();
        assert!(is_ok(&check(&*p, "a@[192.0.2.25]")));
        assert!(!is_ok(&check(&*p, "a@[192.0.2.26]")));
    }

    #[test]
    fn postmaster_without_any_config() {
        let p = build(&[], &[]).unwrap();
        assert!(is_ok(&check(&*p, "postmaster")));
        assert!(is_ok(&check(&*p, "PostMaster")));
        assert!(!is_ok(&check(&*p, "postmaster@example.com")));
        let p = build(&[], FILES).unwrap();
        assert!(is_ok(&check(&*p, "postmaster@example.com")));
    }

    #[test]
    fn relay_client_and_whitelisted_host_may_relay() {
        let p = build(&[], FILES).unwrap();
        let mut txn = Transaction::default();
        let far = recipient("a@far.example");
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        assert!(is_ok(&run(p.rcpt(&mut c, &mut txn, &far))));
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        assert!(is_ok(&run(p.rcpt(&mut c, &mut txn, &far))));
    }

    #[test]
    fn non_local_is_relaying_denied() {
        let p = build(&[], FILES).unwrap();
        let o = check(&*p, "a@far.example");
        assert_eq!(o, Outcome::deny("5.7.1 Relaying denied"));
        let p = build(&["reject_type", "temp"], FILES).unwrap();
        assert_eq!(
            check(&*p, "a@far.example"),
            Outcome::deny_soft("4.7.1 Relaying denied")
        );
        let p = build(&["reject", "0"], FILES).unwrap();
        assert_eq!(check(&*p, "a@far.example"), Outcome::Declined);
    }

    #[test]
    fn bad_rcpthosts_line_names_file_and_line() {
        let err = build(&[], &[("rcpthosts", "example.com\n# c\n*.example.net\n")])
            .err()
            .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("rcpthosts", 3));
        assert!(err.to_string().starts_with("rcpthosts:3: "), "{err}");
        for bad in ["a..b", "-a.b", "a b", "[1.2.3]", "[IPv6:zz]", ".", "a_b.c"] {
            assert!(check_entry(bad).is_err(), "{bad}");
        }
        for good in [
            "a.b",
            ".a.b",
            "[10.0.0.1]",
            "[IPv6:2001:db8::1]",
            "bücher.example",
            "x1-2.y",
        ] {
            assert!(check_entry(good).is_ok(), "{good}");
        }
        let err = build(&[], &[("morercpthosts", "ok.example\nnot ok\n")])
            .err()
            .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("morercpthosts", 2));
    }

    #[test]
    fn unknown_argument_is_an_error() {
        assert!(build(&["bogus"], &[]).is_err());
        assert!(build(&["reject"], &[]).is_err());
    }
}
