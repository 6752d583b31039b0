//! # dnsbl — refuse clients whose IP address is on a DNS blocklist
//!
//! ## Synopsis
//!
//! ```text
//! dnsbl [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [timeout SECONDS] [loglevel N]
//! dnsbl disconnect                       # qpsmtpd's legacy single argument
//! ```
//!
//! ## Description
//!
//! "Start early, decide late", as qpsmtpd's async `dnsbl` and its 0.3x–0.8x sync version
//! did: at `connect` the questions for every zone of `dnsbl_zones` leave at once and the
//! plugin answers `DECLINED` straight away, so the banner is not delayed. The answers are
//! awaited at the first `RCPT`, by then normally long finished, and the verdict is kept for
//! the rest of the connection.
//!
//! For each zone the client address is reversed (`2.0.0.192.zone`, IPv6 as 32 nibbles,
//! RFC 5782 §2.1, §2.4) and looked up as an A record. A zone without a message of its own is
//! also asked for TXT, whose text becomes the reply. The client is listed when an A record
//! answers that is a listing code: inside `127.0.0.0/8`, but not `127.0.0.1` and not
//! `127.255.255.0/24`, which blocklists use to say "query refused" or "bad resolver"
//! (Spamhaus, URIBL). An address outside `127/8` is logged as a wildcarded or dead zone and
//! ignored: an expired blocklist domain that answers everything must not block the world.
//! A zone line may name the exact A records it counts (`zone:127.0.0.2,127.0.0.4 ...`).
//!
//! The reply text: each line of `dnsbl_rejectmsg`, then the zone's message (with `%IP%`
//! replaced), or else its TXT record (control characters removed), or else
//! `Blocked by <zone>`, prefixed `5.7.1` (the engine answers 550, or 450 `4.7.1` for the
//! temporary types).
//!
//! Exempt: a client that is immune (`shared::is_immune`: a relay client, e.g. after AUTH, or a
//! whitelisted host such as `dns_whitelist_soft` marks), one listed in `dnsbl_allow`, and the
//! recipients `postmaster`, `abuse`, `mailer-daemon` and `root` (any domain), so a blocked
//! sender can still reach the people who can unblock it (qpsmtpd's list).
//!
//! `RBLSMTPD`, read from the environment at start, works as with qmail's `rblsmtpd`: unset, the
//! checks run; set but empty, no checks run; `-text` refuses every recipient permanently with
//! `text`; any other value refuses temporarily with it (`%IP%` replaced). qpsmtpd refused
//! permanently in both cases (its docs call the dash "the exception"); we follow `rblsmtpd`.
//!
//! DNS failures (timeout, SERVFAIL, REFUSED) count as "not listed" and are logged, once per
//! zone and connection: a blocklist outage never stops mail, and never hangs a session, since
//! the wait at `RCPT` ends at most `timeout` seconds after `connect`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: the answers are awaited already at `connect` (delaying the banner by the DNS time, as qpsmtpd does) and the connection is marked for the `naughty` plugin |
//! | `reject_type` | `perm` | `perm` 550, `temp` 450, `disconnect`/`temp_disconnect` the same and close. A lone `disconnect` argument (qpsmtpd's legacy form) is `reject_type disconnect` |
//! | `timeout` | `10` | seconds after `connect` past which unanswered zones count as not listed (qpsmtpd: 30; keep it below the engine's `plugin_timeout`) |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! Read when the plugin is built (start and reload); a bad line stops the server with
//! `file:line`.
//!
//! | file | format |
//! |---|---|
//! | `dnsbl_zones` | `zone` or `zone:message`; `%IP%` in the message is the client address. `zone:A[,A...] message` counts only those A records (a ringsmtpd addition: qpsmtpd took everything after the colon as the message). No zones: the plugin does nothing |
//! | `dnsbl_allow` | client addresses never checked: `192.0.2.1`, a prefix of whole octets `172.16.33.` (qpsmtpd's form, the dot optional), or a CIDR `10.0.0.0/8`, `2001:db8::/32` |
//! | `dnsbl_rejectmsg` | lines put before the listing text in the reply (multi-line reply) |
//!
//! ## Hooks
//!
//! `connect` (start the lookups; with `reject naughty`, also decide), `rcpt` (decide).
//!
//! ## Notes
//!
//! Reads `relay_client`, conn note `WhitelistHost`, txn note `WhitelistSender`
//! (`is_immune`). Writes conn note [`DnsblListed`] when the client is listed (for other
//! plugins), `Naughty` with `reject naughty` (and removes its own `Naughty` again when a
//! special recipient arrives, as qpsmtpd does), and a private note with the lookups in flight.
//!
//! ## Standards
//!
//! RFC 5782 (DNS blacklists: query form, 127.0.0.2 listing codes, TXT), RFC 5321 §4.5.1
//! (postmaster must be reachable), RFC 3463 (X.7.1).
//!
//! ## Security
//!
//! The TXT text comes from the network: it is cut to 256 printable ASCII characters before it
//! reaches a reply. Lookups go to the configured resolver only; a spoofed answer could list
//! or unlist a client, which is why DNS answers are matched by ID and question in the client.

use std::net::Ipv4Addr;
use std::time::Duration;

use ringsmtpd_plugin_api::args::lines_text;
use ringsmtpd_plugin_api::cidr::{IpForms, IpList};
use ringsmtpd_plugin_api::dns::reversed_ip;
use ringsmtpd_plugin_api::dnsutil::{
    blocklist_args, check_zone, clean_text, client_ip, is_listing_code, Deadline, ZoneQuery,
};
use ringsmtpd_plugin_api::shared::{is_immune, Naughty};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Recipient, Reject, RejectType, Step, Transaction,
};

/// qpsmtpd's default was 30 s; the engine's `plugin_timeout` is 30 s too, and the wait must
/// end before it, or the client would get the engine's 4xx instead of "not listed".
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One `dnsbl_zones` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Zone {
    zone: String,
    /// The text after the colon, if any (qpsmtpd: "query A, answer with this").
    message: Option<String>,
    /// Only these A records count (`zone:127.0.0.2,127.0.0.3 ...`); empty: any listing code.
    codes: Vec<Ipv4Addr>,
}

/// The client is on a blocklist, or `RBLSMTPD` blocks it (conn note, for other plugins too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsblListed {
    /// The zone that lists the client; `None` when `RBLSMTPD` blocks it.
    pub zone: Option<String>,
    /// The reply text, without `dnsbl_rejectmsg`.
    pub text: String,
    /// `RBLSMTPD` without a leading `-`: refuse temporarily.
    pub temporary: bool,
}

/// The questions of this connection, sent at `connect` (private conn note).
struct InFlight {
    deadline: Deadline,
    /// One per zone, in the order of `dnsbl_zones`.
    queries: Vec<ZoneQuery>,
}

/// The verdict is known (private conn note); `DnsblListed` says whether listed.
struct Decided;

pub struct Dnsbl {
    common: Common,
    timeout: Duration,
    zones: Vec<Zone>,
    allow: IpList,
    rejectmsg: Vec<String>,
    /// `RBLSMTPD` as it was at start.
    rblsmtpd: Option<String>,
}

/// Builds `dnsbl` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let rblsmtpd = std::env::var("RBLSMTPD").ok();
    Ok(Box::new(Dnsbl::new(init, rblsmtpd)?))
}

fn parse_zone(line: &ConfigLine) -> Result<Zone, ConfigError> {
    let (zone, rest) = match line.text.split_once(':') {
        Some((z, r)) => (z.trim(), Some(r.trim())),
        None => (line.text.trim(), None),
    };
    check_zone(zone).map_err(|why| {
        line.error(format!(
            "'{zone}' is not a DNS zone: {why} (form: zone[:message])"
        ))
    })?;
    let mut codes = Vec::new();
    let mut message = rest.map(str::to_string);
    if let Some(rest) = rest {
        let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let parsed: Result<Vec<Ipv4Addr>, _> = first.split(',').map(str::parse).collect();
        if let Ok(list) = parsed {
            if let Some(bad) = list.iter().find(|a| a.octets()[0] != 127) {
                return Err(line.error(format!(
                    "{bad}: blocklists answer inside 127.0.0.0/8 (RFC 5782 §2.1)"
                )));
            }
            codes = list;
            message = Some(after.trim().to_string());
        }
    }
    Ok(Zone {
        zone: zone.trim_end_matches('.').to_ascii_lowercase(),
        message: message.filter(|m| !m.is_empty()),
        codes,
    })
}

impl Dnsbl {
    fn new(init: &PluginInit<'_>, rblsmtpd: Option<String>) -> Result<Dnsbl, ConfigError> {
        let (mut common, rest) = init.common(CommonArgs::DEFAULT)?;
        let timeout = blocklist_args(init, &mut common, &rest, DEFAULT_TIMEOUT)?;
        let mut zones = Vec::new();
        for line in init.config.lines("dnsbl_zones")?.unwrap_or_default() {
            zones.push(parse_zone(&line)?);
        }
        let mut allow = IpList::default();
        for line in init.config.lines("dnsbl_allow")?.unwrap_or_default() {
            // qpsmtpd's prefixes end in a dot, and so may a whole address (`192.0.2.1.`).
            let text = match line.text.strip_suffix('.') {
                Some(ip) if ip.parse::<Ipv4Addr>().is_ok() => ip,
                _ => &line.text,
            };
            allow
                .add(text, IpForms::Fragment)
                .map_err(|e| line.error(e))?;
        }
        let rejectmsg = lines_text(init.config, "dnsbl_rejectmsg")?;
        Ok(Dnsbl {
            common,
            timeout,
            zones,
            allow,
            rejectmsg,
            rblsmtpd,
        })
    }

    /// Sends every question; returns `None` if this connection is not checked.
    fn start(&self, cx: &mut Cx) -> Option<InFlight> {
        let ip = client_ip(cx);
        if is_immune(cx, None) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return None;
        }
        if let Some(net) = self.allow.find(ip) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip, {ip} is in dnsbl_allow ({net})"),
            );
            return None;
        }
        if self.zones.is_empty() {
            self.common
                .log(cx, Level::Debug, format_args!("skip, no zones"));
            return None;
        }
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let queries = (self.zones.iter())
            .map(|z| ZoneQuery::send(&*cx.svc, &reversed_ip(ip, &z.zone), z.message.is_none()))
            .collect();
        Some(InFlight { deadline, queries })
    }

    /// Awaits the lookups (if any are in flight) and records the verdict.
    async fn resolve(&self, cx: &mut Cx) {
        let Some(mut flight) = cx.conn.notes.take::<InFlight>() else {
            return;
        };
        cx.conn.notes.set(Decided);
        let mut timer = flight.deadline.timer(&*cx.svc);
        let ip = client_ip(cx);
        for (zone, query) in self.zones.iter().zip(&mut flight.queries) {
            let answer = query.answer(cx, &self.common, &zone.zone, &mut timer).await;
            let mut codes = Vec::new();
            for &addr in &answer.a {
                if !is_listing_code(addr) {
                    self.common.log(
                        cx,
                        Level::Warn,
                        format_args!("{}: ignoring answer {addr}: not a listing code", zone.zone),
                    );
                } else if zone.codes.is_empty() || zone.codes.contains(&addr) {
                    codes.push(addr);
                }
            }
            // A zone queried for TXT (no message of its own) also lists by TXT alone, as
            // qpsmtpd's TXT-only zones did, but not when its A answer was an error code.
            let txt_only = zone.codes.is_empty() && answer.a.is_empty() && answer.txt.is_some();
            if codes.is_empty() && !txt_only {
                continue;
            }
            let text = match (&zone.message, answer.txt) {
                (Some(m), _) => m.replace("%IP%", &ip.to_string()),
                (None, Some(t)) => t,
                (None, None) => format!("Blocked by {}", zone.zone),
            };
            self.common.log(
                cx,
                Level::Info,
                format_args!("fail, {ip} listed in {}: {text}", zone.zone),
            );
            cx.conn.notes.set(DnsblListed {
                zone: Some(zone.zone.clone()),
                text,
                temporary: false,
            });
            return;
        }
        self.common
            .log(cx, Level::Info, format_args!("pass, {ip} not listed"));
    }

    /// Awaits the verdict; refuses a listed client.
    fn decide<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(async move {
            self.resolve(cx).await;
            match cx.conn.notes.get::<DnsblListed>().cloned() {
                Some(listed) => self.refuse(cx, &listed),
                None => Outcome::Declined,
            }
        })
    }

    /// The outcome for a listed client.
    fn refuse(&self, cx: &mut Cx, listed: &DnsblListed) -> Outcome {
        let mut text = String::from("5.7.1 ");
        for line in &self.rejectmsg {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&listed.text);
        if !listed.temporary {
            return self.common.reject(cx, text);
        }
        let mut common = self.common.clone();
        common.args.reject_type = match common.args.reject_type {
            RejectType::Perm | RejectType::Temp => RejectType::Temp,
            RejectType::Disconnect | RejectType::TempDisconnect => RejectType::TempDisconnect,
        };
        common.reject(cx, text)
    }
}

impl Plugin for Dnsbl {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Connect, Hook::Rcpt])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        match self.rblsmtpd.as_deref() {
            Some("") => {
                self.common.log(
                    cx,
                    Level::Info,
                    format_args!("skip, RBLSMTPD set but empty"),
                );
                return Step::DECLINED;
            }
            Some(value) => {
                let (temporary, text) = match value.strip_prefix('-') {
                    Some(t) => (false, t),
                    None => (true, value),
                };
                let text = clean_text(&text.replace("%IP%", &client_ip(cx).to_string()));
                self.common
                    .log(cx, Level::Info, format_args!("RBLSMTPD=\"{value}\""));
                cx.conn.notes.set(DnsblListed {
                    zone: None,
                    text,
                    temporary,
                });
                cx.conn.notes.set(Decided);
            }
            None => match self.start(cx) {
                Some(flight) => cx.conn.notes.set(flight),
                None => return Step::DECLINED,
            },
        }
        if self.common.args.reject != Reject::Naughty {
            // The banner leaves now; the answers are awaited at RCPT.
            return Step::DECLINED;
        }
        // qpsmtpd: "when reject naughty is set, DNS queries are processed during connect",
        // so the `naughty` plugin can act at any hook after this one.
        self.decide(cx)
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        if !cx.conn.notes.contains::<InFlight>() && !cx.conn.notes.contains::<Decided>() {
            return Step::DECLINED; // not checked on this connection
        }
        let user = rcpt.addr.local();
        if ["postmaster", "abuse", "mailer-daemon", "root"]
            .iter()
            .any(|u| user.eq_ignore_ascii_case(u))
        {
            self.common.log(
                cx,
                Level::Warn,
                format_args!("skip, don't blacklist special account: {user}"),
            );
            if cx
                .conn
                .notes
                .get::<Naughty>()
                .is_some_and(|n| n.plugin == self.common.name)
            {
                cx.conn.notes.take::<Naughty>();
            }
            return Step::DECLINED;
        }
        if is_immune(cx, Some(txn)) || self.common.args.reject == Reject::Naughty {
            return Step::DECLINED;
        }
        self.decide(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::{DnsError, DnsLookup, QType};
    use ringsmtpd_plugin_api::shared::{WhitelistHost, WhitelistSender};
    use ringsmtpd_plugin_api::testing::records::{a, txt};
    use ringsmtpd_plugin_api::testing::{
        build, build_err, cx, rcpt, run, txn_from, Case, FakeServices,
    };
    use std::rc::Rc;

    const ZONES: &str =
        "# blocklists\nbl.example\nmsg.example:Listed, see http://msg.example/?%IP%\n";

    fn plugin(args: &[&str], files: &[(&str, &str)], rbl: Option<&str>) -> Dnsbl {
        let line = format!("dnsbl {}", args.join(" "));
        build(
            |init| Dnsbl::new(init, rbl.map(str::to_string)),
            &line,
            files,
        )
        .expect("test plugin")
    }

    /// Connect, then one RCPT to `to`; the outcomes of both.
    fn session(p: &Dnsbl, cx: &mut Cx, to: &str) -> (Outcome, Outcome) {
        let c = run(p.connect(cx));
        let mut txn = txn_from("<s@sender.example>");
        let r = run(p.rcpt(cx, &mut txn, &rcpt(&format!("<{to}>"))));
        (c, r)
    }

    fn listed(svc: &FakeServices, name: &str) {
        svc.answer(name, QType::A, vec![a("127.0.0.2")]);
    }

    /// A client at 192.0.2.1 that `zone` lists (127.0.0.2).
    fn listed_client(zone: &str) -> (Cx, Rc<FakeServices>) {
        let (c, svc) = cx("192.0.2.1:4242");
        listed(&svc, &format!("1.2.0.192.{zone}"));
        (c, svc)
    }

    /// The RCPT outcome for a client that `zone` lists.
    fn refused(p: &Dnsbl, zone: &str) -> Outcome {
        let (mut c, _) = listed_client(zone);
        session(p, &mut c, "u@example.com").1
    }

    #[test]
    fn connect_only_starts_lookups_and_declines() {
        let p = plugin(&[], &[("dnsbl_zones", ZONES)], None);
        let (mut c, svc) = listed_client("bl.example");
        // Ready(Declined): the banner is not delayed.
        assert!(matches!(p.connect(&mut c), Step::Ready(Outcome::Declined)));
        let asked = svc.asked.borrow().clone();
        assert_eq!(
            asked,
            vec![
                ("1.2.0.192.bl.example".to_string(), QType::A),
                ("1.2.0.192.bl.example".to_string(), QType::Txt),
                ("1.2.0.192.msg.example".to_string(), QType::A),
            ],
            "all zones at once; TXT only where the zone has no message"
        );
        let mut txn = Transaction::default();
        let o = run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>")));
        assert_eq!(o.msg(), Some("5.7.1 Blocked by bl.example"));
        assert!(matches!(o, Outcome::Deny(_)));
        // Decided once: a second RCPT asks nothing more.
        let n = svc.asked.borrow().len();
        let o2 = run(p.rcpt(&mut c, &mut txn, &rcpt("<v@example.com>")));
        assert_eq!(o, o2);
        assert_eq!(svc.asked.borrow().len(), n);
        assert!(c.conn.notes.get::<DnsblListed>().is_some());
    }

    #[test]
    fn unlisted_client_passes() {
        let p = plugin(&[], &[("dnsbl_zones", ZONES)], None);
        let (mut c, svc) = cx("192.0.2.1:4242");
        assert_eq!(session(&p, &mut c, "u@example.com").1, Outcome::Declined);
        assert!(svc.logged("pass, 192.0.2.1 not listed"));
    }

    #[test]
    fn txt_record_is_the_reply_and_is_cleaned() {
        let p = plugin(&[], &[("dnsbl_zones", ZONES)], None);
        let (mut c, svc) = listed_client("bl.example");
        svc.answer(
            "1.2.0.192.bl.example",
            QType::Txt,
            vec![txt("Listed\r\nsee http://x/")],
        );
        let (_, r) = session(&p, &mut c, "u@example.com");
        assert_eq!(r.msg(), Some("5.7.1 Listed??see http://x/"));
    }

    #[test]
    fn zone_message_with_ip() {
        let p = plugin(&[], &[("dnsbl_zones", ZONES)], None);
        let r = refused(&p, "msg.example");
        assert_eq!(
            r.msg(),
            Some("5.7.1 Listed, see http://msg.example/?192.0.2.1")
        );
    }

    #[test]
    fn a_record_codes_filter() {
        let zones = "codes.example:127.0.0.4,127.0.0.5 Code %IP%\n";
        let p = plugin(&[], &[("dnsbl_zones", zones)], None);
        let (mut c, svc) = cx("192.0.2.1:4242");
        svc.answer("1.2.0.192.codes.example", QType::A, vec![a("127.0.0.2")]);
        assert_eq!(session(&p, &mut c, "u@example.com").1, Outcome::Declined);
        let (mut c, svc) = cx("192.0.2.1:4242");
        svc.answer(
            "1.2.0.192.codes.example",
            QType::A,
            vec![a("127.0.0.2"), a("127.0.0.5")],
        );
        assert_eq!(
            session(&p, &mut c, "u@example.com").1.msg(),
            Some("5.7.1 Code 192.0.2.1")
        );
        // A codes only: no TXT asked.
        assert!(!svc.asked.borrow().iter().any(|(_, t)| *t == QType::Txt));
        assert_eq!(p.zones[0].codes.len(), 2);
    }

    #[test]
    fn error_codes_and_wildcards_are_not_listings() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\n")], None);
        for answer in ["127.255.255.254", "127.0.0.1", "198.51.100.7"] {
            let (mut c, svc) = cx("192.0.2.1:4242");
            svc.answer("1.2.0.192.bl.example", QType::A, vec![a(answer)]);
            assert_eq!(
                session(&p, &mut c, "u@example.com").1,
                Outcome::Declined,
                "{answer}"
            );
            assert!(svc.logged("not a listing code"));
        }
    }

    #[test]
    fn txt_only_listing_counts() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\n")], None);
        let (mut c, svc) = cx("192.0.2.1:4242");
        svc.answer(
            "1.2.0.192.bl.example",
            QType::Txt,
            vec![txt("listed by TXT")],
        );
        assert_eq!(
            session(&p, &mut c, "u@example.com").1.msg(),
            Some("5.7.1 listed by TXT")
        );
    }

    #[test]
    fn ipv6_and_mapped_clients() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\n")], None);
        let (mut c, svc) = cx("[2001:db8::1]:25");
        let name = reversed_ip("2001:db8::1".parse().unwrap(), "bl.example");
        listed(&svc, &name);
        assert!(matches!(
            session(&p, &mut c, "u@example.com").1,
            Outcome::Deny(_)
        ));
        // A dual-stack listener sees ::ffff:192.0.2.1: the IPv4 name is asked.
        let (mut c, svc) = cx("[::ffff:192.0.2.1]:25");
        listed(&svc, "1.2.0.192.bl.example");
        assert!(matches!(
            session(&p, &mut c, "u@example.com").1,
            Outcome::Deny(_)
        ));
    }

    #[test]
    fn dns_failures_are_not_listed_and_logged() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\nbl2.example\n")], None);
        for err in [
            DnsError::Timeout,
            DnsError::ServFail,
            DnsError::Refused,
            DnsError::NoResolver,
        ] {
            let (mut c, svc) = cx("192.0.2.1:4242");
            svc.fail("1.2.0.192.bl.example", QType::A, err);
            svc.fail("1.2.0.192.bl.example", QType::Txt, err);
            assert_eq!(session(&p, &mut c, "u@example.com").1, Outcome::Declined);
            assert!(svc.logged(&format!("bl.example: {err}, counted as not listed")));
        }
        // One zone failing does not hide another zone's listing.
        let (mut c, svc) = cx("192.0.2.1:4242");
        svc.fail("1.2.0.192.bl.example", QType::A, DnsError::ServFail);
        listed(&svc, "1.2.0.192.bl2.example");
        assert!(matches!(
            session(&p, &mut c, "u@example.com").1,
            Outcome::Deny(_)
        ));
    }

    #[test]
    fn a_lookup_that_never_answers_ends_at_the_deadline() {
        let p = plugin(
            &["timeout", "0.01"],
            &[("dnsbl_zones", "bl.example\n")],
            None,
        );
        let (mut c, _svc) = cx("192.0.2.1:4242");
        c.conn.notes.set(InFlight {
            deadline: Deadline::start(&*c.svc, p.timeout),
            queries: vec![ZoneQuery::new(
                DnsLookup::new(std::future::pending()),
                Some(DnsLookup::new(std::future::pending())),
            )],
        });
        let mut txn = Transaction::default();
        let o = run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>")));
        assert_eq!(o, Outcome::Declined);
    }

    #[test]
    fn special_recipients_are_exempt() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\n")], None);
        for to in [
            "postmaster",
            "Postmaster@example.com",
            "abuse@example.com",
            "mailer-daemon@x.example",
            "root@example.com",
        ] {
            let (mut c, _) = listed_client("bl.example");
            assert_eq!(session(&p, &mut c, to).1, Outcome::Declined, "{to}");
        }
    }

    #[test]
    fn immune_clients_are_exempt() {
        let p = plugin(&[], &[("dnsbl_zones", "bl.example\n")], None);
        // Relay client already at connect: nothing is even asked.
        let (mut c, svc) = cx("192.0.2.1:4242");
        c.conn.relay_client = true;
        assert_eq!(
            session(&p, &mut c, "u@example.com"),
            (Outcome::Declined, Outcome::Declined)
        );
        assert!(svc.asked.borrow().is_empty());
        // Relay client after AUTH (set after connect), or whitelisted host / sender.
        for how in 0..3 {
            let (mut c, _) = listed_client("bl.example");
            run(p.connect(&mut c));
            let mut txn = Transaction::default();
            match how {
                0 => c.conn.relay_client = true,
                1 => c.conn.notes.set(WhitelistHost("dnswl".into())),
                _ => txn.notes.set(WhitelistSender("x".into())),
            }
            let o = run(p.rcpt(&mut c, &mut txn, &rcpt("<u@example.com>")));
            assert_eq!(o, Outcome::Declined, "case {how}");
        }
    }

    #[test]
    fn dnsbl_allow_forms() {
        let allow = "192.0.2.1\n172.16.33.\n10\n198.51.100.0/24\n2001:db8::/32\n";
        let p = plugin(
            &[],
            &[("dnsbl_zones", "bl.example\n"), ("dnsbl_allow", allow)],
            None,
        );
        for ip in [
            "192.0.2.1:1",
            "172.16.33.9:1",
            "10.1.2.3:1",
            "198.51.100.77:1",
            "[2001:db8::5]:1",
            "[::ffff:192.0.2.1]:1",
        ] {
            let (mut c, svc) = cx(ip);
            run(p.connect(&mut c));
            assert!(svc.asked.borrow().is_empty(), "{ip} should be allowed");
        }
        for ip in [
            "192.0.2.2:1",
            "172.16.34.1:1",
            "11.0.0.1:1",
            "198.51.101.1:1",
            "[2001:db9::1]:1",
        ] {
            let (mut c, svc) = cx(ip);
            run(p.connect(&mut c));
            assert!(!svc.asked.borrow().is_empty(), "{ip} should be checked");
        }
    }

    #[test]
    fn rejectmsg_lines_come_first() {
        let files = [
            ("dnsbl_zones", "bl.example\n"),
            ("dnsbl_rejectmsg", "Ask your ISP.\nLine two\n"),
        ];
        let p = plugin(&[], &files, None);
        let r = refused(&p, "bl.example");
        assert_eq!(
            r.msg(),
            Some("5.7.1 Ask your ISP.\nLine two\nBlocked by bl.example")
        );
    }

    #[test]
    fn rblsmtpd_forms() {
        let zones = [("dnsbl_zones", "bl.example\n")];
        // Empty: nothing checked, even a listed client passes.
        let p = plugin(&[], &zones, Some(""));
        let (mut c, svc) = listed_client("bl.example");
        assert_eq!(session(&p, &mut c, "u@example.com").1, Outcome::Declined);
        assert!(svc.asked.borrow().is_empty());
        // "-text": permanent, dash removed, %IP% replaced; no DNS.
        let p = plugin(&[], &zones, Some("-Go away %IP%"));
        let (mut c, svc) = cx("192.0.2.1:4242");
        let (conn, r) = session(&p, &mut c, "u@example.com");
        assert_eq!(conn, Outcome::Declined);
        assert_eq!(r, Outcome::Deny(Some("5.7.1 Go away 192.0.2.1".into())));
        assert!(svc.asked.borrow().is_empty());
        // "text": temporary, as rblsmtpd.
        let p = plugin(&[], &zones, Some("Try later"));
        let (mut c, _) = cx("192.0.2.1:4242");
        assert_eq!(
            session(&p, &mut c, "u@example.com").1,
            Outcome::DenySoft(Some("5.7.1 Try later".into()))
        );
        let p = plugin(&["reject_type", "disconnect"], &zones, Some("Try later"));
        let (mut c, _) = cx("192.0.2.1:4242");
        assert!(matches!(
            session(&p, &mut c, "u@example.com").1,
            Outcome::DenySoftDisconnect(_)
        ));
    }

    #[test]
    fn reject_and_reject_type_args() {
        let zones = [("dnsbl_zones", "bl.example\n")];
        let cases: [Case; 5] = [
            (&["reject_type", "temp"], |o| {
                matches!(o, Outcome::DenySoft(_))
            }),
            (&["reject_type", "disconnect"], |o| {
                matches!(o, Outcome::DenyDisconnect(_))
            }),
            (&["disconnect"], |o| matches!(o, Outcome::DenyDisconnect(_))),
            (&["reject_type", "temp_disconnect"], |o| {
                matches!(o, Outcome::DenySoftDisconnect(_))
            }),
            (&["reject", "0"], |o| *o == Outcome::Declined),
        ];
        for (args, ok) in cases {
            let p = plugin(args, &zones, None);
            let r = refused(&p, "bl.example");
            assert!(ok(&r), "{args:?}: {r:?}");
        }
    }

    #[test]
    fn reject_naughty_decides_at_connect() {
        let p = plugin(
            &["reject", "naughty"],
            &[("dnsbl_zones", "bl.example\n")],
            None,
        );
        let (mut c, _) = listed_client("bl.example");
        assert!(matches!(p.connect(&mut c), Step::Pending(_)));
        let (mut c, _) = listed_client("bl.example");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert_eq!(
            c.conn.notes.get::<Naughty>().map(|n| n.plugin.as_str()),
            Some("dnsbl")
        );
        let mut txn = Transaction::default();
        assert_eq!(
            run(p.rcpt(&mut c, &mut txn, &rcpt("<u@x.example>"))),
            Outcome::Declined
        );
        assert!(c.conn.notes.contains::<Naughty>());
        // A special recipient forgives this plugin's mark (qpsmtpd clears the note).
        assert_eq!(
            run(p.rcpt(&mut c, &mut txn, &rcpt("<abuse@x.example>"))),
            Outcome::Declined
        );
        assert!(!c.conn.notes.contains::<Naughty>());
    }

    #[test]
    fn no_zones_no_lookups() {
        let p = plugin(&[], &[], None);
        let (mut c, svc) = cx("192.0.2.1:4242");
        assert_eq!(
            session(&p, &mut c, "u@example.com"),
            (Outcome::Declined, Outcome::Declined)
        );
        assert!(svc.asked.borrow().is_empty());
    }

    #[test]
    fn bad_config_lines_name_file_and_line() {
        let cases = [
            ("dnsbl_zones", "ok.example\n\nbad zone with spaces\n", 3),
            ("dnsbl_zones", "a..b\n", 1),
            ("dnsbl_zones", "ok.example:10.0.0.1 not loopback\n", 1),
            ("dnsbl_allow", "192.0.2.1\n# c\n300.1.\n", 3),
            ("dnsbl_allow", "10.0.0.0/33\n", 1),
            ("dnsbl_allow", "example.com\n", 1),
        ];
        for (file, text, line) in cases {
            let err = build_err(new, "dnsbl", &[(file, text)]);
            assert_eq!((err.file.as_str(), err.line), (file, line), "{err}");
        }
    }

    #[test]
    fn bad_arguments() {
        for args in [
            &["timeout"][..],
            &["timeout", "0"],
            &["timeout", "x"],
            &["bogus", "1"],
            &["nonsense"],
            &["reject", "7"],
        ] {
            build_err(new, &format!("dnsbl {}", args.join(" ")), &[]);
        }
        assert!(build(new, "dnsbl timeout 2.5 loglevel -1", &[]).is_ok());
    }
}
