//! ringsmtpd's built-in plugins, one file each, each documented at its top (qpsmtpd's POD,
//! in Rust). [`registry`] lists them under their qpsmtpd names; [`find`] resolves a
//! `config/plugins` name (with a `:N` instance suffix, or a Debian `check_*` alias); [`help()`]
//! gives its manual page, the header of its source ([`docs`](mod@docs), `docs/plugins/`).

use std::sync::OnceLock;

use ringsmtpd_plugin_api::Factory;

pub mod docs;
mod helpers;

pub mod auth;
pub mod badmailfrom;
pub mod badmailfromto;
pub mod badrcptto;
pub mod bogus_bounce;
pub mod connection_time;
pub mod content_log;
pub mod count_unrecognized_commands;
pub mod dkim;
pub mod dmarc;
pub mod dns_whitelist_soft;
pub mod dnsbl;
pub mod domainkeys;
pub mod dont_require_anglebrackets;
pub mod dspam;
pub mod earlytalker;
pub mod fcrdns;
pub mod greylisting;
pub mod headers;
pub mod helo;
pub mod help;
pub mod hosts_allow;
pub mod ident;
pub mod karma;
pub mod limit;
pub mod loadcheck;
pub mod logging;
pub mod r#loop;
pub mod milter;
#[cfg(any(test, feature = "test-plugins"))]
pub mod misbehave;
pub mod naughty;
pub mod noop_counter;
pub mod parse_addr_withhelo;
pub mod queue;
pub mod random_error;
pub mod rcpt_map;
pub mod rcpt_ok;
pub mod rcpt_regexp;
pub mod relay;
pub mod require_auth;
pub mod resolvable_fromhost;
pub mod rhsbl;
pub mod rspamd;
pub mod sender_permitted_from;
pub mod spamassassin;
pub mod uribl;
pub mod virus;
pub mod whitelist;

/// The plugins, under their qpsmtpd names (as written in `config/plugins`), sorted by name.
/// A name with a slash lives in the folder of its family: `queue/maildir` is
/// `queue/maildir.rs`, `auth/auth_imap` is `auth/auth_imap.rs`.
const PLUGINS: &[(&str, Factory)] = &[
    ("auth/auth_checkpassword", auth::auth_checkpassword::new),
    ("auth/auth_flat_file", auth::auth_flat_file::new),
    ("auth/auth_imap", auth::auth_imap::new),
    ("auth/auth_ldap_bind", auth::auth_ldap_bind::new),
    ("auth/authdeny", auth::authdeny::new),
    ("badmailfrom", badmailfrom::new),
    ("badmailfromto", badmailfromto::new),
    ("badrcptto", badrcptto::new),
    ("bogus_bounce", bogus_bounce::new),
    ("connection_time", connection_time::new),
    ("content_log", content_log::new),
    (
        "count_unrecognized_commands",
        count_unrecognized_commands::new,
    ),
    ("dkim", dkim::new),
    ("dmarc", dmarc::new),
    ("dns_whitelist_soft", dns_whitelist_soft::new),
    ("dnsbl", dnsbl::new),
    ("domainkeys", domainkeys::new),
    (
        "dont_require_anglebrackets",
        dont_require_anglebrackets::new,
    ),
    ("dspam", dspam::new),
    ("earlytalker", earlytalker::new),
    ("fcrdns", fcrdns::new),
    ("greylisting", greylisting::new),
    ("headers", headers::new),
    ("helo", helo::new),
    ("help", help::new),
    ("hosts_allow", hosts_allow::new),
    ("ident/geoip", ident::geoip::new),
    ("ident/p0f", ident::p0f::new),
    ("karma", karma::new),
    ("limit", limit::new),
    ("loadcheck", loadcheck::new),
    ("logging/adaptive", logging::adaptive::new),
    ("logging/connection_id", logging::connection_id::new),
    ("logging/devnull", logging::devnull::new),
    ("logging/file", logging::file::new),
    ("logging/syslog", logging::syslog::new),
    ("logging/transaction_id", logging::transaction_id::new),
    ("logging/warn", logging::warn::new),
    ("loop", r#loop::new),
    ("milter", milter::new),
    ("naughty", naughty::new),
    ("noop_counter", noop_counter::new),
    ("parse_addr_withhelo", parse_addr_withhelo::new),
    ("queue/discard", queue::discard::new),
    ("queue/exim-bsmtp", queue::exim_bsmtp::new),
    ("queue/lmtp", queue::lmtp::new),
    ("queue/maildir", queue::maildir::new),
    ("queue/postfix-queue", queue::postfix_queue::new),
    ("queue/qmail-queue", queue::qmail_queue::new),
    ("queue/smtp-forward", queue::smtp_forward::new),
    ("random_error", random_error::new),
    ("rcpt_map", rcpt_map::new),
    ("rcpt_ok", rcpt_ok::new),
    ("rcpt_regexp", rcpt_regexp::new),
    ("relay", relay::new),
    ("require_auth", require_auth::new),
    ("resolvable_fromhost", resolvable_fromhost::new),
    ("rhsbl", rhsbl::new),
    ("rspamd", rspamd::new),
    ("sender_permitted_from", sender_permitted_from::new),
    ("spamassassin", spamassassin::new),
    ("uribl", uribl::new),
    ("virus/aveclient", virus::aveclient::new),
    ("virus/bitdefender", virus::bitdefender::new),
    ("virus/clamav", virus::clamav::new),
    ("virus/clamdscan", virus::clamdscan::new),
    ("virus/hbedv", virus::hbedv::new),
    ("virus/sophie", virus::sophie::new),
    ("virus/uvscan", virus::uvscan::new),
    ("whitelist", whitelist::new),
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

/// A `config/plugins` name without its `:N` instance suffix.
fn base_name(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// The factory for a `config/plugins` name: strips a `:N` instance suffix, resolves aliases.
pub fn find(name: &str) -> Option<Factory> {
    let base = base_name(name);
    registry()
        .iter()
        .find(|(known, _)| *known == base)
        .map(|(_, factory)| *factory)
}

/// A plugin's manual page (its source header, Markdown; `docs/plugins/NAME.md` without the
/// notice) for a `config/plugins` name: `name:N` and Debian aliases give the plugin's page.
pub fn help(name: &str) -> Option<&'static str> {
    let base = base_name(name);
    let (known, _) = registry().iter().find(|(known, _)| *known == base)?;
    let plugin = ALIASES
        .iter()
        .find(|(alias, _)| alias == known)
        .map_or(*known, |(_, target)| *target);
    docs::header(plugin).map(|(_, text)| text)
}

/// Every plugin of this build (aliases excepted) with its one-line summary, sorted by name.
pub fn docs() -> Vec<(&'static str, &'static str)> {
    let mut all: Vec<_> = [PLUGINS, TEST_PLUGINS]
        .concat()
        .into_iter()
        .map(|(name, _)| {
            let summary = docs::header(name).and_then(|(_, text)| docs::summary(text));
            (name, summary.unwrap_or(""))
        })
        .collect();
    all.sort_unstable();
    all
}

/// Debian's compatibility names this build resolves: (alias, plugin).
pub fn aliases() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALIASES
        .iter()
        .filter(|(_, target)| PLUGINS.iter().any(|(name, _)| name == target))
        .copied()
}

#[cfg(test)]
mod tests {
    use ringsmtpd_plugin_api::testing::{build, unlisted_overrides, TempDir};
    use ringsmtpd_plugin_api::{
        Cx, Hook, HookSet, LogRecord, Outcome, Plugin, Recipient, Step, Transaction,
    };

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
    fn help_resolves_names_instances_and_aliases() {
        let page = help("badmailfrom").unwrap();
        assert!(page.starts_with("# badmailfrom — "), "{page}");
        assert_eq!(help("badmailfrom:2"), Some(page));
        assert_eq!(help("check_badmailfrom"), Some(page));
        assert!(help("queue/exim-bsmtp")
            .unwrap()
            .starts_with("# queue/exim-bsmtp — "));
        assert!(help("queue/maildir:1").is_some());
        assert!(help("no_such_plugin").is_none());
        assert!(help("queue").is_none(), "a family is not a plugin");
        assert!(help("sender_permitted_from/record").is_none());
        let docs = docs();
        assert_eq!(docs.len(), PLUGINS.len() + TEST_PLUGINS.len());
        assert!(
            docs.iter().all(|(_, summary)| !summary.is_empty()),
            "{docs:?}"
        );
        assert!(docs.contains(&(
            "rcpt_ok",
            "accept recipients in the domains we receive mail for"
        )));
        assert!(aliases().any(|a| a == ("check_spamhelo", "helo")));
    }

    #[test]
    fn the_registry_is_sorted_by_config_name() {
        let names: Vec<&str> = PLUGINS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(
            names, sorted,
            "keep PLUGINS sorted: a reader looks a plugin up by name"
        );
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

    /// `config/plugins` lines that build, with the config files they need: at least one per
    /// plugin, and one more for each hook a plugin lists only with some arguments. `{dir}`
    /// stands for a temporary directory that holds a file `rcpt_map`.
    const SAMPLES: &[(&str, &[(&str, &str)])] = &[
        ("rcpt_ok", &[]),
        ("rspamd", &[]),
        ("require_auth", &[]),
        ("queue/maildir {dir}/Maildir", &[]),
        ("queue/discard", &[]),
        ("queue/qmail-queue /bin/true", &[]),
        ("queue/postfix-queue", &[]),
        ("queue/exim-bsmtp exim_path /bin/true", &[]),
        ("queue/smtp-forward 127.0.0.1 2525", &[]),
        ("queue/lmtp 127.0.0.1:24", &[]),
        ("misbehave deny connect", &[]),
        ("misbehave deny helo", &[]),
        ("misbehave deny ehlo", &[]),
        ("misbehave deny mail", &[]),
        ("misbehave deny rcpt", &[]),
        ("misbehave deny data", &[]),
        ("misbehave deny data_post", &[]),
        ("misbehave deny queue", &[]),
        ("earlytalker", &[]),
        ("dkim reject 0 timeout 5", &[]),
        ("dmarc reject 1 timeout 5 report_dir {dir}", &[]),
        ("domainkeys warn_only 1 timeout 5", &[]),
        ("earlytalker check-at DATA defer-reject 1", &[]),
        ("hosts_allow", &[]),
        ("relay", &[]),
        ("relay only 1", &[]),
        ("spamassassin reject 10 spamd_socket /run/spamd.sock", &[]),
        ("virus/aveclient blockonerror 1", &[]),
        ("virus/bitdefender max_size 256", &[]),
        ("virus/clamav action=reject max_size=1048576", &[]),
        ("virus/clamdscan clamd_port 3310 deny_viruses no", &[]),
        ("virus/hbedv", &[("hbedv_deny", "Worm/Sober\\..*\n")]),
        ("virus/sophie deny_viruses no", &[]),
        ("virus/uvscan timeout 20", &[]),
        ("whitelist", &[]),
        ("greylisting", &[]),
        (
            "karma reject connect penalty_days 0.5",
            &[("karma_tlds", "info 4\n")],
        ),
        (
            "greylisting recipient 1 sender 1 deny_late 1",
            &[("denysoft_greylist", "black_timeout 60\n")],
        ),
        (
            "limit concurrency 5 rate_rcpt_host 100/1h",
            &[("limit", "rate_msg_sender 50/5m\nrecipients 20\n")],
        ),
        ("badmailfrom", &[]),
        ("badmailfromto", &[]),
        ("badrcptto", &[]),
        ("rcpt_map domain example.test file {dir}/rcpt_map", &[]),
        ("rcpt_regexp", &[]),
        ("dont_require_anglebrackets", &[]),
        ("dspam reject .95 autolearn naughty", &[]),
        ("parse_addr_withhelo", &[]),
        ("naughty reject connect", &[]),
        ("naughty reject mail", &[]),
        ("naughty reject rcpt", &[]),
        ("naughty reject data", &[]),
        ("logging/warn", &[]),
        ("logging/file {dir}/log", &[]),
        ("logging/file nosplit {dir}/log", &[]),
        ("logging/syslog", &[]),
        ("logging/adaptive", &[]),
        ("logging/devnull", &[]),
        ("logging/connection_id", &[]),
        ("logging/transaction_id", &[]),
        ("dnsbl", &[]),
        ("rhsbl", &[]),
        ("dns_whitelist_soft", &[]),
        ("fcrdns", &[]),
        ("helo", &[]),
        ("resolvable_fromhost", &[]),
        ("sender_permitted_from reject 3", &[]),
        ("uribl", &[]),
        ("count_unrecognized_commands", &[]),
        ("noop_counter", &[]),
        ("loadcheck", &[]),
        ("milter dkim inet:8891@127.0.0.1 default_action accept", &[]),
        ("connection_time", &[]),
        ("random_error", &[]),
        ("help", &[]),
        ("bogus_bounce", &[]),
        ("headers", &[]),
        ("loop", &[]),
        ("content_log", &[]),
        (
            "auth/auth_flat_file",
            &[("flat_auth_pw", "good@example.com:good_pass\n")],
        ),
        (
            "auth/auth_checkpassword checkpw /bin/true true /bin/true",
            &[],
        ),
        ("auth/auth_ldap_bind ldap_base dc=example,dc=com", &[]),
        ("auth/auth_imap 127.0.0.1 143", &[]),
        ("auth/authdeny", &[]),
        // Tests run in the crate's directory: the databases committed for ident/geoip's tests.
        (
            "ident/geoip db_dir src/ident/testdata distance 192.0.2.1",
            &[],
        ),
        ("ident/p0f /run/p0f.sock add_headers 1", &[]),
    ];

    /// The sample lines of `name` (an alias has its plugin's).
    fn samples(
        name: &str,
    ) -> impl Iterator<Item = (String, &'static [(&'static str, &'static str)])> + '_ {
        let base = ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .map_or(name, |(_, target)| *target);
        SAMPLES
            .iter()
            .filter(move |(line, _)| line.split_whitespace().next() == Some(base))
            .map(move |(line, files)| {
                let args = line.split_once(' ').map_or("", |(_, args)| args);
                (format!("{name} {args}"), *files)
            })
    }

    /// Every plugin lists every hook it implements, under one of its sample lines at least:
    /// the engine calls only the listed hooks, so a hook method never listed is dead code
    /// that looks alive.
    #[test]
    fn every_plugin_lists_the_hooks_it_implements() {
        let dir = TempDir::new("registry");
        std::fs::write(dir.path().join("rcpt_map"), "me@example.test OK\n").unwrap();
        let mut problems = Vec::new();
        for (name, factory) in registry() {
            let mut never_listed: Option<Vec<Hook>> = None;
            for (line, files) in samples(name) {
                let line = line.replace("{dir}", &dir.path().to_string_lossy());
                match build(factory, &line, files) {
                    Ok(plugin) => {
                        let unlisted = unlisted_overrides(&*plugin);
                        never_listed = Some(match never_listed {
                            None => unlisted,
                            Some(before) => before
                                .into_iter()
                                .filter(|h| unlisted.contains(h))
                                .collect(),
                        });
                    }
                    Err(e) => problems.push(format!("{name}: '{line}' does not build: {e}")),
                }
            }
            match never_listed {
                None => problems.push(format!("{name}: no sample line in SAMPLES that builds")),
                Some(hooks) if !hooks.is_empty() => problems.push(format!(
                    "{name}: implements {hooks:?}, never in its hooks()"
                )),
                Some(_) => {}
            }
        }
        for (line, _) in SAMPLES {
            let name = line.split_whitespace().next().unwrap_or_default();
            if !registry().iter().any(|(n, _)| *n == name) {
                problems.push(format!("{name}: a sample line for no registered plugin"));
            }
        }
        assert_eq!(problems, Vec::<String>::new());
    }

    /// The check above catches a plugin that overrides a hook it does not list.
    #[test]
    fn unlisted_overrides_are_reported() {
        struct Forgetful;
        impl Plugin for Forgetful {
            fn hooks(&self) -> HookSet {
                HookSet::of(&[Hook::Rcpt])
            }
            fn rcpt<'a>(
                &'a self,
                _: &'a mut Cx,
                _: &'a mut Transaction,
                _: &'a Recipient,
            ) -> Step<'a> {
                Step::DECLINED
            }
            fn mail<'a>(&'a self, _: &'a mut Cx, _: &'a mut Transaction) -> Step<'a> {
                Step::Ready(Outcome::Deny(None))
            }
            fn logging(&self, _: &LogRecord<'_>) -> Outcome {
                Outcome::Ok(None)
            }
        }
        assert_eq!(unlisted_overrides(&Forgetful), [Hook::Mail, Hook::Logging]);
    }
}
