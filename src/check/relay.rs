//! Open relay: a chain that accepts recipients in any domain from clients on the Internet.
//!
//! How the plugins decide: `rcpt_ok` accepts any recipient from an *immune* client (a relay
//! client, a whitelisted host, a whitelisted sender) and otherwise only local domains (`me`,
//! `rcpthosts`, `morercpthosts`); `relay only 1` accepts any recipient from a relay client.
//! Who is a relay client is `relay`'s decision: `RELAYCLIENT` in the environment (everyone),
//! else `relayclients`/`morerelayclients` minus `norelayclients`. `whitelist` makes hosts
//! (`whitelisthosts`) and senders (`whitelistsenders`) immune; `dns_whitelist_soft` makes the
//! hosts a DNS zone lists immune. An authenticated client is a relay client too, which is what
//! submission is for. So the dangerous combinations, each with an accepting plugin, are:
//!
//! | combination | severity |
//! |---|---|
//! | `relay` with `RELAYCLIENT` set (not `--stdio`) | error |
//! | `relay` with a `relayclients`/`morerelayclients` line that covers addresses on the Internet | error |
//! | `whitelist` with a `whitelisthosts` line that covers addresses on the Internet | error |
//! | `whitelist` with `whitelistsenders` (a sender is forged at will) | warning |
//! | `dns_whitelist_soft` (a third party's zone decides who relays) | warning |
//! | a `rcpthosts`/`morercpthosts` entry `.tld` (every domain under a top-level domain) | warning |
//! | `auth/auth_checkpassword checkpw /bin/true` (every password is right, and an authenticated client relays) | error |
//!
//! "Covers addresses on the Internet" is tested with the addresses of big public resolvers
//! ([`PROBES`]): no site lists them as its own clients, and every network wide enough to be a
//! mistake (`0.0.0.0/0`, `8.`, `128.0.0.0/1`, `::/0`, `2000::/3`) holds one of them.

use std::net::IpAddr;
use std::path::Path;

use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::{ConfigLine, ConfigSource};

use crate::config::PluginLine;

use super::names::plugin_of;
use super::{Env, Finding, Severity};

/// Addresses of public resolvers (Google, Cloudflare, Quad9, OpenDNS), spread over the space.
const PROBES: &[&str] = &[
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "208.67.222.222",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
];

pub(super) fn check(
    lines: &[PluginLine],
    cfg: &dyn ConfigSource,
    env: &Env,
    out: &mut Vec<Finding>,
) {
    let find = |plugin: &str| lines.iter().find(|l| plugin_of(l.base_name()) == plugin);
    let relay = find("relay");
    let only = relay.is_some_and(|l| l.args.windows(2).any(|w| w[0] == "only" && w[1] == "1"));
    // What accepts every recipient of a relay client.
    let acceptor = match (find("rcpt_ok"), only) {
        (Some(_), _) => "rcpt_ok",
        (None, true) => "relay only 1",
        (None, false) => return, // nothing accepts a foreign domain: RCPT gets 450 or 550
    };
    let open = |who: &str| {
        format!(
            "{who}, and {acceptor} accepts every recipient in any domain from such a client: \
             an open relay"
        )
    };
    if let Some(line) = relay {
        if env.relayclient && !env.stdio {
            out.push(Finding::at_line(
                Severity::Error,
                line,
                format!(
                    "{}. Unset RELAYCLIENT in the server's environment: it is for --stdio under \
                     tcpserver, whose tcprules set it for trusted clients only",
                    open("RELAYCLIENT is set, so relay makes every client a relay client")
                ),
            ));
        }
        let mut deny = IpList::default();
        for l in lines_of(cfg, "norelayclients") {
            let _ = deny.add(&l.text, IpForms::Prefix); // its errors are the plugin's to report
        }
        for file in ["relayclients", "morerelayclients"] {
            for l in lines_of(cfg, file) {
                if let Some(probe) = covers(&l, IpForms::Prefix, &deny) {
                    out.push(at(
                        Severity::Error,
                        &l,
                        format!(
                            "{}. List only your own networks here (192.0.2.0/24, 10.)",
                            open(&format!(
                                "'{}' makes clients on the Internet ({probe} among them) relay \
                                 clients",
                                l.text
                            ))
                        ),
                    ));
                }
            }
        }
    }
    if find("whitelist").is_some() && acceptor == "rcpt_ok" {
        for l in lines_of(cfg, "whitelisthosts") {
            if let Some(probe) = covers(&l, IpForms::Fragment, &IpList::default()) {
                out.push(at(
                    Severity::Error,
                    &l,
                    format!(
                        "{}. List only hosts you trust here",
                        open(&format!(
                            "'{}' whitelists clients on the Internet ({probe} among them)",
                            l.text
                        ))
                    ),
                ));
            }
        }
        if let Some(l) = lines_of(cfg, "whitelistsenders").first() {
            out.push(at(
                Severity::Warning,
                l,
                "a client whose MAIL FROM names a sender listed here may send to any domain \
                 (rcpt_ok accepts every recipient of a whitelisted sender), and anyone can write \
                 any sender: whitelist the client's address in whitelisthosts instead",
            ));
        }
    }
    if let Some(line) = find("dns_whitelist_soft").filter(|_| acceptor == "rcpt_ok") {
        out.push(Finding::at_line(
            Severity::Warning,
            line,
            "a host the DNS whitelist zones list may send to any domain (rcpt_ok accepts every \
             recipient from a whitelisted host): whoever runs those zones decides who relays \
             through this server. Use it only with zones you run",
        ));
    }
    for line in lines
        .iter()
        .filter(|l| l.base_name() == "auth/auth_checkpassword")
    {
        let checkpw = line
            .args
            .windows(2)
            .find(|w| w[0] == "checkpw")
            .map(|w| &w[1]);
        if checkpw.is_some_and(|p| always_succeeds(p)) {
            out.push(Finding::at_line(
                Severity::Error,
                line,
                format!(
                    "{}. checkpw is the password checker (vchkpw, checkpassword); `true` is the                      program it runs after a right password",
                    open("checkpw always exits 0, so every user name and password is accepted")
                ),
            ));
        }
    }
    if find("rcpt_ok").is_some() {
        for file in ["rcpthosts", "morercpthosts"] {
            for l in lines_of(cfg, file) {
                let entry = l.text.trim_end_matches('.');
                if entry.starts_with('.') && !entry[1..].contains('.') {
                    out.push(at(
                        Severity::Warning,
                        &l,
                        format!(
                            "'{}' accepts mail for every domain under the top-level domain \
                             {entry}: list your own domains (example.com, .example.com)",
                            l.text
                        ),
                    ));
                }
            }
        }
    }
}

/// The values of config file `name` (none if it is missing or does not load: the snapshot
/// reports that).
fn lines_of(cfg: &dyn ConfigSource, name: &str) -> Vec<ConfigLine> {
    cfg.lines(name).ok().flatten().unwrap_or_default()
}

/// True if `program` is `true(1)`, directly or through a link (`/bin/true`, `/usr/bin/true`).
fn always_succeeds(program: &str) -> bool {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.into());
    [Path::new(program), real.as_path()]
        .iter()
        .any(|p| p.file_name().is_some_and(|n| n == "true"))
}

/// The first probe address the network on `line` holds and `except` does not.
fn covers(line: &ConfigLine, forms: IpForms, except: &IpList) -> Option<IpAddr> {
    let mut list = IpList::default();
    list.add(&line.text, forms).ok()?;
    PROBES
        .iter()
        .filter_map(|p| p.parse::<IpAddr>().ok())
        .find(|ip| list.contains(*ip) && !except.contains(*ip))
}

fn at(severity: Severity, line: &ConfigLine, message: impl Into<String>) -> Finding {
    Finding::new(severity, format!("{}:{}", line.file, line.line), message)
}
