//! # helo — check the name a client gives in HELO/EHLO
//!
//! ## Synopsis
//!
//! ```text
//! helo [policy lenient|rfc|strict] [timeout SECONDS] [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! Debian's `check_spamhelo` is an alias of this plugin.
//!
//! ## Description
//!
//! qpsmtpd's HELO test suite. `policy` chooses the tests; they run cheap ones first, and the
//! first that fails decides (refused, by default, with 550 and the connection closed, as
//! qpsmtpd's `reject_type disconnect`):
//!
//! | test | policy | fails when | reply |
//! |---|---|---|---|
//! | `is_in_badhelo` | all | the name is in `badhelo` (exact, any case) or matches a pattern there | `I do not believe you are <name>.` / `Your HELO hostname is not allowed` |
//! | `invalid_localhost` | all | `localhost` from an address that is not loopback | `You are not localhost` |
//! | `is_forged_literal` | all | an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) that is not the client's address | `Forged IPs not accepted here` |
//! | `is_plain_ip` | all | a bare address (`192.0.2.1`): neither a name nor a literal | `Plain IP is invalid HELO hostname (RFC 2821)` |
//! | `is_our_name` | all | our own name (`me`), from an address that is neither loopback nor our own (a ringsmtpd addition: only a forger says it) | `You are not <me>` |
//! | `is_not_fqdn` | rfc, strict | no dot, a character other than letters, digits, `-` and `.`, an empty label (one trailing dot is allowed), or a malformed address literal | `HELO name is not fully qualified. Read RFC 2821` / `HELO name contains invalid FQDN characters. Read RFC 1035` |
//! | `is_address_literal` | strict | any address literal | `RFC 2821 allows an address literal, but we do not` |
//! | `no_forward_dns` | rfc, strict | the name does not exist, or has no A/AAAA record (not for literals) | `HELO hostname does not exist` / `HELO hostname did not resolve` |
//! | `no_reverse_dns` | rfc, strict | the client address has no PTR | `no rDNS for <ip>` |
//! | `no_matching_dns` | strict | neither an address of the name is the client's (or in its /24 or /64), nor a PTR name of the client is the name (or shares its last two labels) | `That HELO hostname fails FCrDNS` |
//!
//! Each reply starts with `5.7.1` (the engine answers 550, or 450 `4.7.1` for the temporary
//! types). The DNS questions (A and AAAA of the name, PTR of the client) leave together,
//! after the cheap tests passed.
//!
//! DNS errors and timeouts make a DNS test pass (logged), never fail: qpsmtpd refused with
//! `error getting reverse DNS` on a SERVFAIL, which turns a resolver hiccup into a
//! permanent refusal. RFC 5321 §4.1.4 forbids refusing a message only because the EHLO name
//! does not match the client's address: `no_matching_dns` (policy `strict`) does exactly
//! that, so use it with `reject 0` or `naughty`, as qpsmtpd's own docs advise.
//!
//! Immune clients (a relay client known at HELO, a whitelisted host) are not checked. An
//! authenticated client is not yet immune at EHLO (AUTH comes after it): with `policy rfc`
//! and users behind dynamic addresses, use `reject naughty`, so AUTH can clear them first.
//!
//! At `data_post` an `X-HELO: <name>` header is put on top of the message (qpsmtpd deletes an
//! existing X-HELO first; the message body is not rewritten here, so a client's own X-HELO
//! stays below ours). Control and non-ASCII characters of the name become `?`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `policy` | `lenient` | which tests run (table above) |
//! | `timeout` | `5` | seconds the DNS tests wait; past it they pass (qpsmtpd's `dns_timeout` is accepted too) |
//! | `reject 0\|1\|naughty` | `1` | `0`: log only; `naughty`: mark the connection |
//! | `reject_type` | `disconnect` | `perm` 550, `temp` 450, `disconnect` 550 and close, `temp_disconnect` 450 and close |
//! | `loglevel` | | qpsmtpd's per-plugin log level |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `badhelo` | one per line: a name, compared exactly (any case); or, when the line holds one of `{}[]()^$\|*+?\!`, a regular expression matched against the lowercased name (qmail's qregex; `!pattern` fails names that do **not** match). Expressions use Rust's `regex` syntax (Perl's without look-around and back-references); one that does not compile stops the server with `file:line`. A line that is an address literal (`[127.0.0.1]`) is compared exactly, not taken as a character class as qpsmtpd did |
//!
//! ## Hooks
//!
//! `helo`, `ehlo`, `data_post`.
//!
//! ## Notes
//!
//! Writes conn note [`HeloDnsMatch`] (qpsmtpd's `helo_forward_match`/`helo_reverse_match`)
//! when DNS tests ran, and `Naughty` with `reject naughty`. Reads `is_immune`'s notes.
//!
//! ## Standards
//!
//! RFC 5321 §4.1.1.1 (HELO/EHLO carry the client's FQDN or an address literal), §4.1.3
//! (address literals), §4.1.4 (a mismatch alone must not refuse); RFC 1035 §2.3.1 (name
//! syntax); RFC 1912 §2.1.
//!
//! ## Security
//!
//! The name is the client's text. It is only compared, looked up when it is a valid DNS
//! name, and sanitised before it goes into a header. Patterns in `badhelo` run on the
//! `regex` crate, whose matching time is linear in the name: no pattern can be made to
//! backtrack for ever.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Duration;

use regex::Regex;
use ringsmtpd_plugin_api::args::{key_values, parse_timeout};
use ringsmtpd_plugin_api::cidr::same_network;
use ringsmtpd_plugin_api::dns::{ptr_name, DnsAnswer, DnsError, QType};
use ringsmtpd_plugin_api::dnsutil::{check_zone, client_ip, within, Deadline};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Reject, RejectType, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What DNS said about the HELO name (conn note: qpsmtpd's `helo_forward_match` and
/// `helo_reverse_match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeloDnsMatch {
    /// An address of the name is the client's (or in its /24, /64).
    pub forward: bool,
    /// A PTR name of the client is the HELO name (or shares its last two labels).
    pub reverse: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Policy {
    Lenient,
    Rfc,
    Strict,
}

enum Bad {
    Exact(String),
    Pattern {
        re: Regex,
        negate: bool,
        src: String,
    },
}

/// A failed test: the reply text and the log text.
struct Failure {
    reply: Cow<'static, str>,
    log: Cow<'static, str>,
}

fn failure(
    reply: impl Into<Cow<'static, str>>,
    log: impl Into<Cow<'static, str>>,
) -> Option<Failure> {
    Some(Failure {
        reply: reply.into(),
        log: log.into(),
    })
}

pub struct Helo {
    common: Common,
    policy: Policy,
    timeout: Duration,
    bad: Vec<Bad>,
}

/// Builds `helo` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let defaults = CommonArgs {
        reject: Reject::Yes,
        reject_type: RejectType::Disconnect,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = init.common(defaults)?;
    let mut policy = Policy::Lenient;
    let mut timeout = DEFAULT_TIMEOUT;
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        match key {
            "policy" => {
                policy = match value {
                    "lenient" => Policy::Lenient,
                    "rfc" => Policy::Rfc,
                    "strict" => Policy::Strict,
                    _ => {
                        return Err(init.error(format!(
                            "policy must be lenient, rfc or strict, not '{value}'"
                        )))
                    }
                }
            }
            "timeout" | "dns_timeout" => {
                timeout = parse_timeout(value).map_err(|e| init.error(e))?
            }
            _ => return Err(init.unknown(key)),
        }
    }
    let mut bad = Vec::new();
    for line in init.config.lines("badhelo")?.unwrap_or_default() {
        bad.push(parse_bad(&line)?);
    }
    Ok(Box::new(Helo {
        common,
        policy,
        timeout,
        bad,
    }))
}

fn parse_bad(line: &ConfigLine) -> Result<Bad, ConfigError> {
    let text = line.text.as_str();
    let is_pattern = text.contains([
        '{', '}', '[', ']', '(', ')', '^', '$', '|', '*', '+', '?', '\\', '!',
    ]);
    if !is_pattern || literal(text).is_some_and(|(_, well_formed)| well_formed) {
        return Ok(Bad::Exact(text.to_ascii_lowercase()));
    }
    let (negate, pattern) = match text.strip_prefix('!') {
        Some(p) => (true, p),
        None => (false, text),
    };
    let re = regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| line.error(format!("bad pattern '{pattern}': {e}")))?;
    Ok(Bad::Pattern {
        re,
        negate,
        src: text.to_string(),
    })
}

/// An address literal's address, and whether it is written as RFC 5321 §4.1.3 wants it
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`). `None`: not a literal, or not an address inside.
fn literal(host: &str) -> Option<(IpAddr, bool)> {
    let inner = host.strip_prefix('[')?.strip_suffix(']')?;
    if inner
        .get(..5)
        .is_some_and(|t| t.eq_ignore_ascii_case("IPv6:"))
    {
        return inner[5..].parse().ok().map(|a| (IpAddr::V6(a), true));
    }
    match inner.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V4(_)) => Some((ip, true)),
        Ok(ip @ IpAddr::V6(_)) => Some((ip, false)), // untagged IPv6
        Err(_) => None,
    }
}

impl Helo {
    /// The tests that need no DNS, in qpsmtpd's order.
    fn cheap(&self, cx: &Cx, host: &str) -> Option<Failure> {
        let ip = client_ip(cx);
        let lower = host.to_ascii_lowercase();
        // is_in_badhelo
        for bad in &self.bad {
            match bad {
                Bad::Exact(name) if *name == lower => {
                    return failure(format!("I do not believe you are {host}."), "in badhelo")
                }
                Bad::Pattern { re, negate, src } if re.is_match(&lower) != *negate => {
                    return failure(
                        "Your HELO hostname is not allowed",
                        format!("badhelo pattern match ({src})"),
                    )
                }
                _ => {}
            }
        }
        // invalid_localhost
        if lower == "localhost" && !ip.is_loopback() {
            return failure("You are not localhost", "invalid localhost");
        }
        let lit = literal(host);
        // is_forged_literal
        if let Some((addr, _)) = lit {
            if addr.to_canonical() != ip {
                return failure("Forged IPs not accepted here", "forged IP literal");
            }
        }
        // is_plain_ip
        if host.parse::<IpAddr>().is_ok() {
            return failure("Plain IP is invalid HELO hostname (RFC 2821)", "plain IP");
        }
        // is_our_name
        let me = cx.svc.me().trim_end_matches('.');
        let local = cx.conn.local.ip().to_canonical();
        if !me.is_empty()
            && lower.trim_end_matches('.') == me.to_ascii_lowercase()
            && !ip.is_loopback()
            && ip != local
        {
            return failure(format!("You are not {me}"), "our own name");
        }
        if self.policy >= Policy::Rfc {
            // is_not_fqdn; one trailing dot (an absolute name) is tolerated, as qpsmtpd did.
            let name = host.strip_suffix('.').unwrap_or(host);
            if host.starts_with('[') {
                if !lit.is_some_and(|(_, well_formed)| well_formed) {
                    return failure(
                        "Invalid address literal. Read RFC 5321 4.1.3",
                        "invalid literal",
                    );
                }
            } else if !name.contains('.') {
                return failure(
                    "HELO name is not fully qualified. Read RFC 2821",
                    "not FQDN",
                );
            } else if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                || name.split('.').any(str::is_empty)
            {
                return failure(
                    "HELO name contains invalid FQDN characters. Read RFC 1035",
                    "invalid FQDN chars",
                );
            }
        }
        if self.policy == Policy::Strict && lit.is_some() {
            // is_address_literal
            return failure(
                "RFC 2821 allows an address literal, but we do not",
                "bracketed IP",
            );
        }
        None
    }

    /// no_forward_dns, no_reverse_dns, no_matching_dns.
    async fn dns_tests(&self, cx: &mut Cx, host: &str) -> Option<Failure> {
        let ip = client_ip(cx);
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let forward_name = (literal(host).is_none() && check_zone(&name).is_ok()).then_some(&name);
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let mut fwd = forward_name.map(|n| {
            (
                cx.svc.dns_query(n, QType::A),
                cx.svc.dns_query(n, QType::Aaaa),
            )
        });
        let mut ptr = cx.svc.dns_query(&ptr_name(ip), QType::Ptr);
        let mut timer = deadline.timer(&*cx.svc);

        // no_forward_dns: Some(matched) when DNS gave a definite answer.
        let mut forward: Option<bool> = None;
        if let Some((a, aaaa)) = fwd.as_mut() {
            let a = within(a, &mut timer).await;
            let aaaa = within(aaaa, &mut timer).await;
            match forward_result(&a, &aaaa) {
                Forward::NoSuchHost => {
                    return failure("HELO hostname does not exist", "no such host")
                }
                Forward::NoAddress => {
                    return failure("HELO hostname did not resolve", "no forward DNS")
                }
                Forward::Unknown(e) => self.common.log(
                    cx,
                    Level::Info,
                    format_args!("skip no_forward_dns, {name}: {e}"),
                ),
                Forward::Addresses(ips) => {
                    forward = Some(ips.iter().any(|a| *a == ip || same_network(*a, ip)))
                }
            }
        }
        // no_reverse_dns
        let mut reverse: Option<bool> = None;
        match within(&mut ptr, &mut timer).await {
            Err(e) => self.common.log(
                cx,
                Level::Info,
                format_args!("skip no_reverse_dns, PTR of {ip}: {e}"),
            ),
            Ok(answer) => {
                let names: Vec<String> = answer
                    .names()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
                    .collect();
                if names.is_empty() {
                    return failure(format!("no rDNS for {ip}"), "no rDNS");
                }
                reverse = Some(names.iter().any(|n| names_match(n, &name)));
            }
        }
        let matched = HeloDnsMatch {
            forward: forward == Some(true),
            reverse: reverse == Some(true),
        };
        cx.conn.notes.set(matched);
        if self.policy == Policy::Strict && !matched.forward && !matched.reverse {
            // no_matching_dns: only on definite answers both ways.
            if forward.is_some() && reverse.is_some() {
                return failure("That HELO hostname fails FCrDNS", "no matching DNS");
            }
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip no_matching_dns, DNS incomplete"),
            );
        }
        None
    }

    fn fail(&self, cx: &mut Cx, host: &str, f: Failure) -> Outcome {
        self.common
            .log(cx, Level::Info, format_args!("fail, {} ({host})", f.log));
        let text = format!("5.7.1 {}", f.reply);
        self.common.reject(cx, text)
    }

    fn check<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        if is_immune(cx, None) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        if let Some(f) = self.cheap(cx, host) {
            return Step::Ready(self.fail(cx, host, f));
        }
        if self.policy == Policy::Lenient {
            self.common.log(cx, Level::Info, format_args!("pass"));
            return Step::DECLINED;
        }
        Step::pending(async move {
            match self.dns_tests(cx, host).await {
                Some(f) => self.fail(cx, host, f),
                None => {
                    self.common.log(cx, Level::Info, format_args!("pass"));
                    Outcome::Declined
                }
            }
        })
    }
}

enum Forward {
    NoSuchHost,
    NoAddress,
    Unknown(DnsError),
    Addresses(Vec<IpAddr>),
}

fn forward_result(
    a: &Result<std::rc::Rc<DnsAnswer>, DnsError>,
    aaaa: &Result<std::rc::Rc<DnsAnswer>, DnsError>,
) -> Forward {
    let ips: Vec<IpAddr> = [a, aaaa]
        .into_iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|ans| ans.ips().collect::<Vec<_>>())
        .collect();
    if !ips.is_empty() {
        return Forward::Addresses(ips);
    }
    let nx = [a, aaaa]
        .into_iter()
        .any(|r| r.as_ref().is_ok_and(|ans| ans.nxdomain));
    if nx {
        return Forward::NoSuchHost;
    }
    match (a, aaaa) {
        (Err(e), _) | (_, Err(e)) => Forward::Unknown(*e),
        _ => Forward::NoAddress,
    }
}

/// qpsmtpd's `check_name_match`: equal, or the same last two labels (`mx1.example.com` and
/// `mx0.example.com`). A one-label PTR name matches nothing.
fn names_match(ptr: &str, helo: &str) -> bool {
    if !ptr.contains('.') {
        return false;
    }
    if ptr == helo {
        return true;
    }
    let last_two = |s: &str| {
        let mut labels = s.rsplit('.');
        (
            labels.next().map(str::to_string),
            labels.next().map(str::to_string),
        )
    };
    let (p, h) = (last_two(ptr), last_two(helo));
    p.1.is_some() && p == h
}

impl Plugin for Helo {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Helo, Hook::Ehlo, Hook::DataPost])
    }

    fn helo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.check(cx, host)
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.check(cx, host)
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let host: String = cx
            .conn
            .hello_host()
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        if !host.is_empty() {
            txn.prepend_header("X-HELO", &host);
        }
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::shared::{Naughty, WhitelistHost};
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, run, Case, FakeServices};
    use ringsmtpd_plugin_api::{Hello, HelloKind};

    const BADHELO: &str = "# never use their own domain\naol.com\nYahoo.com\n^mta[0-9]+\\.spam\\.example$\n!\\.\n[127.0.0.1]\n";

    fn plugin(args: &[&str]) -> Box<dyn Plugin> {
        build(
            new,
            &format!("helo {}", args.join(" ")),
            &[("badhelo", BADHELO)],
        )
        .expect("test plugin")
    }

    fn say(p: &dyn Plugin, from: &str, host: &str, setup: impl FnOnce(&FakeServices)) -> Outcome {
        let (mut c, svc) = cx(from);
        setup(&svc);
        run(p.ehlo(&mut c, host))
    }

    fn reply(o: &Outcome) -> &str {
        o.msg().unwrap_or("")
    }

    /// A client at 192.0.2.1 whose name and PTR agree.
    fn good_dns(s: &FakeServices) {
        s.answer("mail.example.org", QType::A, vec![a("192.0.2.1")]);
        s.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("mail.example.org.")],
        );
    }

    #[test]
    fn badhelo_exact_and_patterns() {
        let p = plugin(&[]);
        let o = say(&*p, "192.0.2.1:1", "AOL.com", |_| {});
        assert_eq!(
            o,
            Outcome::DenyDisconnect(Some("5.7.1 I do not believe you are AOL.com.".into()))
        );
        assert!(matches!(
            say(&*p, "192.0.2.1:1", "yahoo.COM", |_| {}),
            Outcome::DenyDisconnect(_)
        ));
        let o = say(&*p, "192.0.2.1:1", "mta12.spam.example", |_| {});
        assert_eq!(reply(&o), "5.7.1 Your HELO hostname is not allowed");
        // `!\.`: a name without a dot does not match `\.`, so it fails.
        assert_eq!(
            reply(&say(&*p, "192.0.2.1:1", "nodots", |_| {})),
            "5.7.1 Your HELO hostname is not allowed"
        );
        // A literal line is exact, not a character class matching every name with a '1'.
        assert_eq!(
            say(&*p, "192.0.2.1:1", "host1.example.org", |_| {}),
            Outcome::Declined
        );
        assert_eq!(
            say(&*p, "192.0.2.1:1", "aol.com.example", |_| {}),
            Outcome::Declined
        );
    }

    #[test]
    fn lenient_tests() {
        let p = build(new, "helo", &[]).unwrap();
        let cases = [
            ("192.0.2.1:1", "localhost", "5.7.1 You are not localhost"),
            (
                "192.0.2.1:1",
                "[192.0.2.9]",
                "5.7.1 Forged IPs not accepted here",
            ),
            (
                "192.0.2.1:1",
                "[IPv6:2001:db8::1]",
                "5.7.1 Forged IPs not accepted here",
            ),
            (
                "192.0.2.1:1",
                "192.0.2.1",
                "5.7.1 Plain IP is invalid HELO hostname (RFC 2821)",
            ),
            (
                "192.0.2.1:1",
                "2001:db8::1",
                "5.7.1 Plain IP is invalid HELO hostname (RFC 2821)",
            ),
            (
                "192.0.2.1:1",
                "MX.example.test",
                "5.7.1 You are not mx.example.test",
            ),
        ];
        for (from, host, want) in cases {
            assert_eq!(reply(&say(&*p, from, host, |_| {})), want, "{host}");
        }
        for (from, host) in [
            ("127.0.0.1:1", "localhost"),
            ("[::1]:1", "localhost"),
            ("192.0.2.1:1", "[192.0.2.1]"),
            ("[::ffff:192.0.2.1]:1", "[192.0.2.1]"),
            ("[2001:db8::1]:1", "[IPv6:2001:DB8::1]"),
            ("127.0.0.1:1", "mx.example.test"),
            ("192.0.2.1:1", "nodots"),
            ("192.0.2.1:1", "under_score.example"),
        ] {
            assert_eq!(
                say(&*p, from, host, |_| {}),
                Outcome::Declined,
                "{from} {host}"
            );
        }
        // Lenient asks no DNS.
        let (mut c, svc) = cx("192.0.2.1:1");
        assert!(matches!(
            p.helo(&mut c, "a.example"),
            Step::Ready(Outcome::Declined)
        ));
        assert!(svc.asked.borrow().is_empty());
    }

    #[test]
    fn our_own_name_from_our_own_address_is_fine() {
        let p = build(new, "helo", &[]).unwrap();
        // testing::cx's local address is 127.0.0.1:25; a client on the same address is us.
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.local = "192.0.2.1:25".parse().unwrap();
        assert_eq!(run(p.ehlo(&mut c, "mx.example.test")), Outcome::Declined);
    }

    #[test]
    fn rfc_syntax() {
        let p = build(new, "helo policy rfc", &[]).unwrap();
        let cases = [
            (
                "nodots",
                "5.7.1 HELO name is not fully qualified. Read RFC 2821",
            ),
            (
                "under_score.example",
                "5.7.1 HELO name contains invalid FQDN characters. Read RFC 1035",
            ),
            (
                "a..example",
                "5.7.1 HELO name contains invalid FQDN characters. Read RFC 1035",
            ),
            (
                "a.example..",
                "5.7.1 HELO name contains invalid FQDN characters. Read RFC 1035",
            ),
            (
                "nodots.",
                "5.7.1 HELO name is not fully qualified. Read RFC 2821",
            ),
            (
                "[IPv6:nonsense]",
                "5.7.1 Invalid address literal. Read RFC 5321 4.1.3",
            ),
            (
                "[2001:db8::1]",
                "5.7.1 Invalid address literal. Read RFC 5321 4.1.3",
            ),
        ];
        for (host, want) in cases {
            let o = say(&*p, "[2001:db8::1]:1", host, |_| {});
            assert_eq!(reply(&o), want, "{host}");
        }
    }

    #[test]
    fn rfc_dns_tests() {
        let p = build(new, "helo policy rfc", &[]).unwrap();
        assert_eq!(
            say(&*p, "192.0.2.1:1", "mail.example.org", good_dns),
            Outcome::Declined
        );
        let o = say(&*p, "192.0.2.1:1", "mail.example.org.", good_dns);
        assert_eq!(o, Outcome::Declined, "an absolute name is fine");
        // The name does not exist.
        let o = say(&*p, "192.0.2.1:1", "gone.example.org", good_dns);
        assert_eq!(reply(&o), "5.7.1 HELO hostname does not exist");
        // Exists, no address.
        let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
            s.answer("mail.example.org", QType::A, vec![]);
            s.answer("mail.example.org", QType::Aaaa, vec![]);
        });
        assert_eq!(reply(&o), "5.7.1 HELO hostname did not resolve");
        // Resolves, but no PTR for the client.
        let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
            s.answer("mail.example.org", QType::A, vec![a("192.0.2.1")]);
        });
        assert_eq!(reply(&o), "5.7.1 no rDNS for 192.0.2.1");
        // An address literal of the client skips the forward test, not the reverse one.
        let o = say(&*p, "192.0.2.1:1", "[192.0.2.1]", good_dns);
        assert_eq!(o, Outcome::Declined);
        let (mut c, svc) = cx("192.0.2.1:1");
        run(p.ehlo(&mut c, "[192.0.2.1]"));
        assert!(svc.asked.borrow().iter().all(|(_, t)| *t == QType::Ptr));
        // rfc does not require a match.
        let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
            s.answer("mail.example.org", QType::A, vec![a("203.0.113.5")]);
            s.answer(
                "1.2.0.192.in-addr.arpa",
                QType::Ptr,
                vec![ptr("dyn-1.isp.example.")],
            );
        });
        assert_eq!(o, Outcome::Declined);
    }

    #[test]
    fn dns_errors_pass() {
        let p = build(new, "helo policy strict", &[]).unwrap();
        for err in [DnsError::Timeout, DnsError::ServFail] {
            let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
                s.fail("mail.example.org", QType::A, err);
                s.fail("mail.example.org", QType::Aaaa, err);
                s.fail("1.2.0.192.in-addr.arpa", QType::Ptr, err);
            });
            assert_eq!(o, Outcome::Declined, "{err}");
            // One family failing, the other without address: not a definite "no address".
            let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
                s.answer("mail.example.org", QType::A, vec![]);
                s.fail("mail.example.org", QType::Aaaa, err);
                s.answer(
                    "1.2.0.192.in-addr.arpa",
                    QType::Ptr,
                    vec![ptr("other.example.net")],
                );
            });
            assert_eq!(o, Outcome::Declined, "{err}");
        }
    }

    #[test]
    fn strict_tests() {
        let p = build(new, "helo policy strict", &[]).unwrap();
        assert_eq!(
            say(&*p, "192.0.2.1:1", "mail.example.org", good_dns),
            Outcome::Declined
        );
        let o = say(&*p, "192.0.2.1:1", "[192.0.2.1]", good_dns);
        assert_eq!(
            reply(&o),
            "5.7.1 RFC 2821 allows an address literal, but we do not"
        );
        // Neither forward nor reverse match.
        let o = say(&*p, "192.0.2.1:1", "mail.example.org", |s| {
            s.answer("mail.example.org", QType::A, vec![a("203.0.113.5")]);
            s.answer(
                "1.2.0.192.in-addr.arpa",
                QType::Ptr,
                vec![ptr("dyn-1.isp.example.")],
            );
        });
        assert_eq!(reply(&o), "5.7.1 That HELO hostname fails FCrDNS");
        // Same /24 forward, or same last two labels in reverse: a match (qpsmtpd's leniency).
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.answer("mx0.example.org", QType::A, vec![a("192.0.2.77")]);
        svc.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("mx1.example.org.")],
        );
        assert_eq!(run(p.ehlo(&mut c, "mx0.example.org")), Outcome::Declined);
        assert_eq!(
            c.conn.notes.get::<HeloDnsMatch>(),
            Some(&HeloDnsMatch {
                forward: true,
                reverse: true
            })
        );
        let o = say(&*p, "[2001:db8:1:2::5]:1", "v6.example.org", |s| {
            s.answer(
                "v6.example.org",
                QType::Aaaa,
                vec![aaaa("2001:db8:1:2::99")],
            );
            s.answer(
                &ptr_name("2001:db8:1:2::5".parse().unwrap()),
                QType::Ptr,
                vec![ptr("x.other.example")],
            );
        });
        assert_eq!(o, Outcome::Declined);
    }

    #[test]
    fn reject_args_and_immunity() {
        let cases: [Case; 5] = [
            (&[], |o| matches!(o, Outcome::DenyDisconnect(_))),
            (&["reject_type", "perm"], |o| matches!(o, Outcome::Deny(_))),
            (&["reject_type", "temp"], |o| {
                matches!(o, Outcome::DenySoft(_))
            }),
            (&["reject_type", "temp_disconnect"], |o| {
                matches!(o, Outcome::DenySoftDisconnect(_))
            }),
            (&["reject", "0"], |o| *o == Outcome::Declined),
        ];
        for (args, ok) in cases {
            let p = build(new, &format!("helo {}", args.join(" ")), &[]).unwrap();
            let o = say(&*p, "192.0.2.1:1", "localhost", |_| {});
            assert!(ok(&o), "{args:?}: {o:?}");
        }
        let p = build(new, "helo reject naughty", &[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        assert_eq!(run(p.helo(&mut c, "localhost")), Outcome::Declined);
        assert!(c.conn.notes.contains::<Naughty>());
        let p = build(new, "helo", &[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        assert_eq!(run(p.helo(&mut c, "localhost")), Outcome::Declined);
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        assert_eq!(run(p.helo(&mut c, "localhost")), Outcome::Declined);
    }

    #[test]
    fn x_helo_header() {
        let p = build(new, "helo", &[]).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.hello = Some(Hello {
            kind: HelloKind::Ehlo,
            host: "mail.example.org\u{7}é".into(),
        });
        let mut txn = Transaction::default();
        txn.append_header("Received", "from x");
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        assert_eq!(
            txn.added_headers,
            "X-HELO: mail.example.org??\r\nReceived: from x\r\n"
        );
    }

    #[test]
    fn arguments_and_config_errors() {
        for args in [
            &["policy", "loose"][..],
            &["policy"],
            &["timeout", "0"],
            &["bogus", "1"],
            &["reject_type", "x"],
        ] {
            assert!(
                build(new, &format!("helo {}", args.join(" ")), &[]).is_err(),
                "{args:?}"
            );
        }
        assert!(build(new, "helo dns_timeout 3 policy strict", &[]).is_ok());
        let err = build(new, "helo", &[("badhelo", "ok.example\n(unclosed\n")])
            .err()
            .unwrap();
        assert_eq!((err.file.as_str(), err.line), ("badhelo", 2));
        // Perl-only syntax is refused at start, not silently never matching.
        let err = build(new, "helo", &[("badhelo", "^(?!good)\n")])
            .err()
            .unwrap();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn helpers() {
        assert!(names_match("mx1.example.com", "mx0.example.com"));
        assert!(names_match("a.example.com", "a.example.com"));
        assert!(!names_match("localhost", "localhost"));
        assert!(!names_match("a.example.com", "a.example.net"));
        assert_eq!(
            literal("[192.0.2.1]"),
            Some(("192.0.2.1".parse().unwrap(), true))
        );
        assert_eq!(literal("[ipv6:::1]"), Some(("::1".parse().unwrap(), true)));
        assert_eq!(literal("[::1]"), Some(("::1".parse().unwrap(), false)));
        assert_eq!(literal("[1.2.3]"), None);
        assert_eq!(literal("1.2.3.4"), None);
    }
}
