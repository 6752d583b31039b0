//! ringsmtpd's built-in plugins, one file each, each documented at its top (qpsmtpd's POD,
//! in Rust). [`registry`] lists them under their qpsmtpd names; [`find`] resolves a
//! `config/plugins` name (with a `:N` instance suffix, or a Debian `check_*` alias).

use std::sync::OnceLock;

use ringsmtpd_plugin_api::Factory;

// issue 6, SMTP AUTH backends:
pub mod auth;
pub mod bogus_bounce;
pub mod connection_time;
pub mod content_log;
pub mod count_unrecognized_commands;
pub mod dns_whitelist_soft;
pub mod dnsbl;
pub mod fcrdns;
pub mod headers;
pub mod helo;
pub mod help;
pub mod loadcheck;
pub mod logging;
pub mod r#loop;
#[cfg(any(test, feature = "test-plugins"))]
pub mod misbehave;
pub mod noop_counter;
pub mod queue;
pub mod random_error;
pub mod rcpt_ok;
pub mod require_auth;
// issue 3, connection and envelope policy:
pub mod badmailfrom;
pub mod badmailfromto;
pub mod badrcptto;
pub mod dont_require_anglebrackets;
pub mod earlytalker;
pub mod hosts_allow;
mod matchers;
pub mod naughty;
pub mod parse_addr_withhelo;
pub mod rcpt_map;
pub mod rcpt_regexp;
pub mod relay;
pub mod resolvable_fromhost;
pub mod rhsbl;
pub mod uribl;
pub mod whitelist;

/// The plugins, under their qpsmtpd names.
const PLUGINS: &[(&str, Factory)] = &[
    ("rcpt_ok", rcpt_ok::new),
    ("require_auth", require_auth::new),
    ("queue/maildir", queue::maildir::new),
    ("queue/discard", queue::discard::new),
    // issue 4, local queues:
    ("queue/qmail-queue", queue::qmail_queue::new),
    ("queue/postfix-queue", queue::postfix_queue::new),
    ("queue/exim-bsmtp", queue::exim_bsmtp::new),
    ("queue/smtp-forward", queue::smtp_forward::new),
    ("queue/lmtp", queue::lmtp::new),
    // issue 3, connection and envelope policy:
    ("earlytalker", earlytalker::new),
    ("hosts_allow", hosts_allow::new),
    ("relay", relay::new),
    ("whitelist", whitelist::new),
    ("badmailfrom", badmailfrom::new),
    ("badmailfromto", badmailfromto::new),
    ("badrcptto", badrcptto::new),
    ("rcpt_map", rcpt_map::new),
    ("rcpt_regexp", rcpt_regexp::new),
    (
        "dont_require_anglebrackets",
        dont_require_anglebrackets::new,
    ),
    ("parse_addr_withhelo", parse_addr_withhelo::new),
    ("naughty", naughty::new),
    ("logging/warn", logging::warn::new),
    ("logging/file", logging::file::new),
    ("logging/syslog", logging::syslog::new),
    ("logging/adaptive", logging::adaptive::new),
    ("logging/devnull", logging::devnull::new),
    ("logging/connection_id", logging::connection_id::new),
    ("logging/transaction_id", logging::transaction_id::new),
    ("dnsbl", dnsbl::new),
    ("rhsbl", rhsbl::new),
    ("dns_whitelist_soft", dns_whitelist_soft::new),
    ("fcrdns", fcrdns::new),
    ("helo", helo::new),
    ("resolvable_fromhost", resolvable_fromhost::new),
    ("uribl", uribl::new),
    (
        "count_unrecognized_commands",
        count_unrecognized_commands::new,
    ),
    ("noop_counter", noop_counter::new),
    ("loadcheck", loadcheck::new),
    ("connection_time", connection_time::new),
    ("random_error", random_error::new),
    ("help", help::new),
    ("bogus_bounce", bogus_bounce::new),
    ("headers", headers::new),
    ("loop", r#loop::new),
    ("content_log", content_log::new),
    // issue 6, SMTP AUTH backends:
    ("auth/auth_flat_file", auth::auth_flat_file::new),
    ("auth/auth_checkpassword", auth::auth_checkpassword::new),
    ("auth/auth_ldap_bind", auth::auth_ldap_bind::new),
    ("auth/auth_imap", auth::auth_imap::new),
    ("auth/authdeny", auth::authdeny::new),
];

/// Plugins for tests only, never in a production build: `misbehave` panics and hangs on
/// purpose. They are registered under `cfg(test)` and with the `test-plugins` feature, which
/// the engine's tests and the e2e suite's `ringsmtpd-test-plugins` binary turn on.
#[cfg(any(test, feature = "test-plugins"))]
const TEST_PLUGINS: &[(&str, Factory)] = &[("misbehave", misbehave::new)];
#[cfg(not(any(test, feature = "test-plugins")))]
const TEST_PLUGINS: &[(&str, Factory)] = &[];

/// Debian 0.94-5's compatibility names (`/usr/share/doc/qpsmtpd/README.check_plugins`): each
/// is a wrapper around the renamed plugin. Debian's default `/etc/qpsmtpd/plugins` still uses
/// them, so they resolve to the same factory, once that plugin exists here.
const ALIASES: &[(&str, &str)] = &[
    ("check_badmailfrom", "badmailfrom"),
    ("check_badrcptto", "badrcptto"),
    ("check_earlytalker", "earlytalker"),
    ("check_loop", "loop"),
    ("check_relay", "relay"),
    ("check_spamhelo", "helo"),
];

/// Every built-in plugin: (qpsmtpd name, factory). Debian's `check_*` aliases (check_badmailfrom
/// -> badmailfrom, etc.) resolve to the same factories where the plugin exists.
pub fn registry() -> &'static [(&'static str, Factory)] {
    static ALL: OnceLock<Vec<(&'static str, Factory)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = [PLUGINS, TEST_PLUGINS].concat();
        for (alias, target) in ALIASES {
            if let Some((_, factory)) = PLUGINS.iter().find(|(name, _)| name == target) {
                all.push((alias, *factory));
            }
        }
        all
    })
}

/// The factory for a `config/plugins` name: strips a `:N` instance suffix, resolves aliases.
pub fn find(name: &str) -> Option<Factory> {
    let base = match name.rsplit_once(':') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    };
    registry()
        .iter()
        .find(|(known, _)| *known == base)
        .map(|(_, factory)| *factory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_resolves_names_and_instances() {
        for (name, _) in PLUGINS {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("rcpt_ok:1").is_some());
        assert!(find("queue/maildir:12").is_some());
        assert!(find("rcpt_ok:").is_none());
        assert!(find("rcpt_ok:x").is_none());
        assert!(find("no_such_plugin").is_none());
    }

    #[test]
    fn aliases_only_for_existing_plugins() {
        for (alias, target) in ALIASES {
            let exists = PLUGINS.iter().any(|(n, _)| n == target);
            assert_eq!(find(alias).is_some(), exists, "{alias}");
        }
        let names: Vec<&str> = registry().iter().map(|(n, _)| *n).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len(), "duplicate names in the registry");
    }
}
