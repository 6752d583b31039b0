//! # relay — decide which clients may relay
//!
//! ## Synopsis
//!
//! ```text
//! relay [only 0|1] [reject 0|1|naughty] [reject_type perm|temp|...] [loglevel N]
//! ```
//!
//! Put it before the `rcpt_*` plugins (and before `earlytalker` if relay clients should not
//! wait for their greeting).
//!
//! ## Description
//!
//! At `connect` this plugin sets the connection's `relay_client` flag, which `rcpt_ok` (and
//! every plugin through `is_immune`) reads: a relay client may send to any domain. The order,
//! first match wins:
//!
//! 1. the client's IP is in `norelayclients`: **not** a relay client, whatever follows;
//! 2. the environment variable `RELAYCLIENT` is set (to anything, even empty — as tcpserver
//!    and qmail-smtpd use it): a relay client;
//! 3. the IP is in `relayclients` or `morerelayclients`, or it is `::1`: a relay client.
//!
//! With `only 1` the plugin also answers every `RCPT`: `OK` (accepted, no later rcpt plugin
//! runs) for a relay client, `550 5.7.1 relaying denied` for anyone else. That is for a
//! submission-only server that must never be an inbound MX.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `only 0\|1` | `0` | relay-only mode, see above |
//! | `reject 0\|1\|naughty`, `reject_type` | `1`, `perm` | how `only 1` refuses a recipient |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! Read when the plugin is built (start and reload); a line that is not one of these forms
//! stops the server with `file:line`. `RELAYCLIENT` is read then too.
//!
//! | file | meaning |
//! |---|---|
//! | `relayclients` | clients that may relay |
//! | `morerelayclients` | more of them (qpsmtpd reads `morerelayclients.cdb`; we read the plain text file, like `rcpt_ok` does for `morercpthosts`) |
//! | `norelayclients` | clients that may not, even if listed above (a gateway inside a relay network) |
//!
//! Each line is one of:
//!
//! | form | example | matches |
//! |---|---|---|
//! | an IPv4 or IPv6 address, any notation | `127.0.0.1`, `2001:DB8::1`, `2001:0db8:0:0:0:0:0:1` | that address |
//! | a network, `IP/len` | `10.1.0.0/24`, `2001:db8:e431:ae06::/64` | the addresses in it |
//! | qmail's IPv4 prefix: whole octets and a trailing dot | `192.168.`, `10.` | `192.168.0.0/16`, `10.0.0.0/8` |
//! | an IPv6 prefix: whole groups and a trailing colon | `2001:db8:e431:ae06:` | `2001:db8:e431:ae06::/64` |
//! | an IPv6 prefix of the expanded address, without the colon | `2001:0DB8`, `2001:0db` | hex digit by hex digit: `2001:0db8::/32`, `2001:0db0::/28` |
//!
//! Differences from qpsmtpd: all three files take all forms (qpsmtpd took networks only in
//! `relayclients`); a prefix without its trailing dot (`192.168`) is an error, not a line
//! that never matches; a network with host bits set (`2001:DB8::1/32`, from qpsmtpd's sample)
//! means its network, as in qpsmtpd; IPv6 comparisons ignore case. `::1` is always a relay
//! client unless `norelayclients` lists it, as qpsmtpd hard-codes it.
//!
//! ## Hooks
//!
//! `connect`; `rcpt` with `only 1`.
//!
//! ## Notes
//!
//! Writes `relay_client` (true or false). Writes `Naughty` with `only 1` and `reject naughty`.
//!
//! ## Standards
//!
//! RFC 5321 §3.6.2 and §7.1 (relaying is a matter of local policy); RFC 6409 (message
//! submission) for what `only 1` is for.
//!
//! ## Security
//!
//! A relay client can send mail anywhere through this server: list only your own networks.
//! `RELAYCLIENT` in the server's environment makes **every** client a relay client; it is
//! meant for `--stdio` under tcpserver, where tcprules set it per connection. The address
//! checked is the socket's peer, or the client a trusted PROXY header names.

use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Recipient, Step, Transaction,
};

/// The `relay` plugin.
pub struct Relay {
    common: Common,
    only: bool,
    /// `RELAYCLIENT` was set when the plugin was built.
    env: bool,
    allow: IpList,
    deny: IpList,
}

/// Builds `relay` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(
        init,
        std::env::var_os("RELAYCLIENT").is_some(),
    )?))
}

fn build(init: &PluginInit<'_>, env: bool) -> Result<Relay, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut only = false;
    let mut it = rest.iter();
    while let Some(&key) = it.next() {
        match key {
            "only" => {
                only = match it.next().copied() {
                    Some("1") => true,
                    Some("0") => false,
                    v => return Err(init.error(format!("only must be 0 or 1, not {v:?}"))),
                }
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let mut allow = IpList::default();
    let mut deny = IpList::default();
    for file in ["relayclients", "morerelayclients", "norelayclients"] {
        let list = if file == "norelayclients" {
            &mut deny
        } else {
            &mut allow
        };
        args::parse_lines(init, file, |text| list.add(text, IpForms::Prefix))?;
    }
    Ok(Relay {
        common,
        only,
        env,
        allow,
        deny,
    })
}

impl Plugin for Relay {
    fn hooks(&self) -> HookSet {
        if self.only {
            HookSet::of(&[Hook::Connect, Hook::Rcpt])
        } else {
            HookSet::of(&[Hook::Connect])
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let ip = cx.conn.remote.ip();
        if self.deny.contains(ip) {
            cx.conn.relay_client = false;
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail, {ip} is in norelayclients"),
            );
        } else if self.env {
            cx.conn.relay_client = true;
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, enabled by RELAYCLIENT"),
            );
        } else if self.allow.contains(ip) || ip == std::net::Ipv6Addr::LOCALHOST {
            cx.conn.relay_client = true;
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass, {ip} is a relay client"),
            );
        } else {
            self.common
                .log(cx, Level::Info, format_args!("skip, no match for {ip}"));
        }
        Step::DECLINED
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        _txn: &'a mut Transaction,
        _rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !self.only {
            return Step::DECLINED;
        }
        if cx.conn.relay_client {
            return Step::Ready(Outcome::Ok(None));
        }
        Step::Ready(self.common.reject(cx, "5.7.1 relaying denied"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{self, cx, run};

    fn build_with(args: &[&str], files: &[(&str, &str)], env: bool) -> Result<Relay, ConfigError> {
        let line = format!("relay {}", args.join(" "));
        testing::build(|init| build(init, env), &line, files)
    }

    /// Runs `connect` for a client at `ip` and returns its relay flag.
    fn relays(p: &Relay, ip: &str) -> bool {
        let addr = if ip.contains(':') {
            format!("[{ip}]:25")
        } else {
            format!("{ip}:25")
        };
        let (mut c, _) = cx(&addr);
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        c.conn.relay_client
    }

    const FILES: &[(&str, &str)] = &[
        (
            "relayclients",
            "# sample\n127.0.0.1\n 192.0. \n10.1.0.0/24\n2001:0DB8\n2001:DB8::1/32\n",
        ),
        ("morerelayclients", "198.51.100.7\n203.0.113.\n2001:db9:aa:"),
        ("norelayclients", "192.0.2.66\n10.1.0.128/25\n"),
    ];

    #[test]
    fn relayclients_forms() {
        let p = build_with(&[], FILES, false).unwrap();
        assert!(relays(&p, "127.0.0.1"));
        assert!(!relays(&p, "127.0.0.2"));
        assert!(relays(&p, "192.0.2.1"));
        assert!(relays(&p, "192.0.99.1"));
        assert!(!relays(&p, "192.1.2.1"));
        assert!(relays(&p, "10.1.0.5"));
        assert!(!relays(&p, "10.1.1.5"));
        assert!(relays(&p, "2001:db8::77"));
        assert!(!relays(&p, "2001:db7::77"));
    }

    #[test]
    fn morerelayclients_forms() {
        let p = build_with(&[], FILES, false).unwrap();
        assert!(relays(&p, "198.51.100.7"));
        assert!(!relays(&p, "198.51.100.8"));
        assert!(relays(&p, "203.0.113.200"));
        assert!(relays(&p, "2001:db9:aa::1"));
        assert!(!relays(&p, "2001:db9:ab::1"));
    }

    #[test]
    fn norelayclients_wins() {
        let p = build_with(&[], FILES, false).unwrap();
        assert!(!relays(&p, "192.0.2.66"));
        assert!(relays(&p, "192.0.2.65"));
        assert!(!relays(&p, "10.1.0.200"));
        // It also clears a flag set earlier (by an earlier instance, say), and beats the env.
        let p = build_with(&[], FILES, true).unwrap();
        let (mut c, _) = cx("192.0.2.66:25");
        c.conn.relay_client = true;
        run(p.connect(&mut c));
        assert!(!c.conn.relay_client);
    }

    #[test]
    fn relayclient_env() {
        let p = build_with(&[], &[], true).unwrap();
        assert!(relays(&p, "203.0.113.9"));
        let p = build_with(&[], &[], false).unwrap();
        assert!(!relays(&p, "203.0.113.9"));
    }

    #[test]
    fn ipv6_localhost_always() {
        let p = build_with(&[], &[], false).unwrap();
        assert!(relays(&p, "::1"));
        assert!(!relays(&p, "127.0.0.1"));
        let p = build_with(&[], &[("norelayclients", "::1\n")], false).unwrap();
        assert!(!relays(&p, "::1"));
    }

    #[test]
    fn only_mode() {
        let p = build_with(&["only", "1"], FILES, false).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect, Hook::Rcpt]));
        let rcpt = testing::rcpt("<a@far.example>");
        let mut txn = Transaction::default();
        let (mut c, _) = cx("127.0.0.1:1");
        run(p.connect(&mut c));
        assert_eq!(run(p.rcpt(&mut c, &mut txn, &rcpt)), Outcome::Ok(None));
        let (mut c, _) = cx("198.18.0.1:1");
        run(p.connect(&mut c));
        assert_eq!(
            run(p.rcpt(&mut c, &mut txn, &rcpt)),
            Outcome::deny("5.7.1 relaying denied")
        );
        let p = build_with(&["only", "1", "reject_type", "temp"], &[], false).unwrap();
        assert!(matches!(
            run(p.rcpt(&mut c, &mut txn, &rcpt)),
            Outcome::DenySoft(_)
        ));
        let p = build_with(&["only", "0"], &[], false).unwrap();
        assert_eq!(p.hooks(), HookSet::of(&[Hook::Connect]));
        assert_eq!(run(p.rcpt(&mut c, &mut txn, &rcpt)), Outcome::Declined);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (file, text, line) in [
            ("relayclients", "127.0.0.1\n192.168\n", 2),
            ("morerelayclients", "# x\nexample.com\n", 2),
            ("norelayclients", "10.0.0.0/40\n", 1),
            ("relayclients", "2001:zz:\n", 1),
        ] {
            let e = build_with(&[], &[(file, text)], false).err().unwrap();
            assert_eq!((e.file.as_str(), e.line), (file, line), "{text:?}: {e}");
        }
    }

    #[test]
    fn bad_arguments() {
        for bad in [&["only"][..], &["only", "yes"], &["open", "1"]] {
            assert!(build_with(bad, &[], false).is_err(), "{bad:?}");
        }
    }
}
