//! `check_host()` (RFC 7208 §4) on the worker's DNS client.
//!
//! Every answer is hostile: records are parsed strictly and bounded ([`super::record`]), at
//! most 10 DNS-querying terms and 2 void lookups per check (§4.6.4), at most 10 MX and PTR
//! names followed, names checked before they are asked. A DNS error or timeout is
//! `temperror`, never a verdict.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::rc::Rc;

use ringsmtpd_plugin_api::dns::{ptr_name, DnsAnswer, DnsError, QType, Record as Rr};
use ringsmtpd_plugin_api::dnsutil::{within, Timer};
use ringsmtpd_plugin_api::Services;

use super::macros::{escape, Kind, MacroString, Values};
use super::record::{is_spf1, Mechanism, Qualifier, Record};

/// DNS-querying terms per check (§4.6.4).
pub const MAX_LOOKUPS: u32 = 10;
/// Lookups answered with nothing (NODATA or NXDOMAIN) per check (§4.6.4).
pub const MAX_VOIDS: u32 = 2;
/// MX hosts and PTR names followed (§4.6.4).
pub const MAX_NAMES: usize = 10;

/// The result of a check (§2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpfResult {
    None,
    Neutral,
    Pass,
    Fail,
    SoftFail,
    TempError,
    PermError,
}

impl SpfResult {
    pub fn as_str(self) -> &'static str {
        match self {
            SpfResult::None => "none",
            SpfResult::Neutral => "neutral",
            SpfResult::Pass => "pass",
            SpfResult::Fail => "fail",
            SpfResult::SoftFail => "softfail",
            SpfResult::TempError => "temperror",
            SpfResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for SpfResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a check found: the result, the domain's explanation for a `fail` (from `exp=`, when
/// it expanded), and why (the matching term or the error), as printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: SpfResult,
    pub explanation: Option<String>,
    pub why: String,
    /// The term that matched, as written (printable ASCII), if one did.
    pub mechanism: Option<String>,
}

/// The identity being checked and the facts about the session.
#[derive(Debug, Clone)]
pub struct Request {
    /// The client address (an IPv4-mapped IPv6 address is checked as IPv4).
    pub ip: IpAddr,
    /// The MAIL FROM address, or empty for the HELO identity or `<>`.
    pub sender: String,
    /// The HELO/EHLO name.
    pub helo: String,
    /// This host's name (`%{r}`).
    pub receiver: String,
    /// Seconds since the epoch (`%{t}`).
    pub now: u64,
}

enum Stop {
    Temp(String),
    Perm(String),
}

/// What one record (and what it redirects to) gave, before explanations.
struct Found {
    result: SpfResult,
    why: String,
    explanation: Option<String>,
    mechanism: Option<String>,
}

struct Checker<'a> {
    svc: &'a dyn Services,
    timer: &'a mut Timer,
    ip: IpAddr,
    sender: String,
    local: String,
    sender_domain: String,
    helo: String,
    receiver: String,
    now: u64,
    lookups: u32,
    voids: u32,
    /// `%{p}` by domain, worked out once per check: each costs up to 11 lookups.
    validated: Vec<(String, String)>,
}

/// The check for `req`: the MAIL FROM identity, or `postmaster@<helo>` (the HELO identity)
/// when the sender is empty. Lookups not answered when `timer` fires are `temperror`.
pub async fn check(svc: &dyn Services, timer: &mut Timer, req: &Request) -> Verdict {
    let ip = req.ip.to_canonical();
    let helo = req.helo.trim_end_matches('.').to_string();
    let sender = if req.sender.is_empty() {
        format!("postmaster@{helo}")
    } else if !req.sender.contains('@') {
        format!("postmaster@{}", req.sender)
    } else {
        req.sender.clone()
    };
    let (local, domain) = match sender.rsplit_once('@') {
        Some(("", d)) => ("postmaster".to_string(), d.to_string()),
        Some((l, d)) => (l.to_string(), d.to_string()),
        None => ("postmaster".to_string(), sender.clone()),
    };
    let domain = domain.trim_end_matches('.').to_string();
    let sender = format!("{local}@{domain}");
    let mut c = Checker {
        svc,
        timer,
        ip,
        sender,
        local,
        sender_domain: domain.clone(),
        helo,
        receiver: req.receiver.clone(),
        now: req.now,
        lookups: 0,
        voids: 0,
        validated: Vec::new(),
    };
    match c.check_host(domain, true).await {
        Ok(found) => Verdict {
            result: found.result,
            explanation: found.explanation,
            why: found.why,
            mechanism: found.mechanism,
        },
        Err(Stop::Temp(why)) => Verdict {
            result: SpfResult::TempError,
            explanation: None,
            why,
            mechanism: None,
        },
        Err(Stop::Perm(why)) => Verdict {
            result: SpfResult::PermError,
            explanation: None,
            why,
            mechanism: None,
        },
    }
}

/// A name that may be asked: at most 253 bytes, labels of 1 to 63 bytes, printable ASCII
/// (spaces included: `%_` makes them, and DNS labels may hold any octet), and more than one
/// label (§4.3).
pub fn valid_domain(d: &str) -> bool {
    let d = d.strip_suffix('.').unwrap_or(d);
    !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| !l.is_empty() && l.len() <= 63)
        && d.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Does `ip` fall into `net/len` (same family)?
fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

type Boxed<'f, T> = Pin<Box<dyn Future<Output = T> + 'f>>;

impl Checker<'_> {
    fn values<'v>(&'v self, domain: &'v str, validated: &'v str) -> Values<'v> {
        Values {
            sender: &self.sender,
            local: &self.local,
            sender_domain: &self.sender_domain,
            domain,
            ip: self.ip,
            helo: &self.helo,
            receiver: &self.receiver,
            validated,
            now: self.now,
        }
    }

    async fn query(&mut self, name: &str, qtype: QType) -> Result<Rc<DnsAnswer>, Stop> {
        let mut lookup = self.svc.dns_query(name, qtype);
        match within(&mut lookup, self.timer).await {
            Ok(answer) => Ok(answer),
            // A name the resolver will not ask cannot exist.
            Err(DnsError::BadName) => Ok(Rc::new(DnsAnswer {
                nxdomain: true,
                ..DnsAnswer::default()
            })),
            Err(e) => Err(Stop::Temp(format!("{qtype:?} {}: {e}", escape(name)))),
        }
    }

    fn count_lookup(&mut self) -> Result<(), Stop> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(Stop::Perm(format!("more than {MAX_LOOKUPS} DNS lookups")));
        }
        Ok(())
    }

    fn count_void(&mut self) -> Result<(), Stop> {
        self.voids += 1;
        if self.voids > MAX_VOIDS {
            return Err(Stop::Perm(format!("more than {MAX_VOIDS} void lookups")));
        }
        Ok(())
    }

    fn addr_type(&self) -> QType {
        match self.ip {
            IpAddr::V4(_) => QType::A,
            IpAddr::V6(_) => QType::Aaaa,
        }
    }

    /// Expands a domain-spec and cuts it to 253 bytes from the left (§7.3).
    async fn target(&mut self, spec: &MacroString, domain: &str) -> Result<String, Stop> {
        let validated = if spec.uses_p() {
            self.validated_name(domain).await?
        } else {
            String::new()
        };
        let mut name = spec.expand(&self.values(domain, &validated));
        if name.ends_with('.') {
            name.pop();
        }
        while name.len() > 253 {
            match name.find('.') {
                Some(dot) => name.drain(..=dot),
                None => return Ok(String::new()),
            };
        }
        Ok(name)
    }

    /// check_host(): the record of `domain`, evaluated.
    fn check_host(&mut self, domain: String, explain: bool) -> Boxed<'_, Result<Found, Stop>> {
        Box::pin(async move {
            let domain = domain.trim_end_matches('.').to_string();
            if !valid_domain(&domain) {
                return Ok(Found {
                    result: SpfResult::None,
                    why: format!("'{}' is not a domain name", escape(&domain)),
                    explanation: None,
                    mechanism: None,
                });
            }
            let answer = self.query(&domain, QType::Txt).await?;
            let records: Vec<&str> = answer.txt().filter(|t| is_spf1(t)).collect();
            let none = |why: String| Found {
                result: SpfResult::None,
                why,
                explanation: None,
                mechanism: None,
            };
            let txt = match records.as_slice() {
                [] => return Ok(none(format!("no SPF record at {domain}"))),
                [one] => one.to_string(),
                _ => return Err(Stop::Perm(format!("several SPF records at {domain}"))),
            };
            let record = Record::parse(&txt).map_err(|e| Stop::Perm(format!("{domain}: {e}")))?;
            self.evaluate(&domain, &record, explain).await
        })
    }

    async fn evaluate(
        &mut self,
        domain: &str,
        record: &Record,
        explain: bool,
    ) -> Result<Found, Stop> {
        for d in &record.directives {
            if d.mechanism.counts() {
                self.count_lookup()?;
            }
            if self.matches(&d.mechanism, domain).await? {
                let result = match d.qualifier {
                    Qualifier::Pass => SpfResult::Pass,
                    Qualifier::Fail => SpfResult::Fail,
                    Qualifier::SoftFail => SpfResult::SoftFail,
                    Qualifier::Neutral => SpfResult::Neutral,
                };
                let explanation = match (result, explain, &record.exp) {
                    (SpfResult::Fail, true, Some(exp)) => self.explain(exp, domain).await,
                    _ => None,
                };
                return Ok(Found {
                    result,
                    why: format!("{} matched {}", domain, escape(&d.text)),
                    explanation,
                    mechanism: Some(escape(&d.text)),
                });
            }
        }
        if let Some(redirect) = &record.redirect {
            self.count_lookup()?;
            let target = self.target(redirect, domain).await?;
            let found = self.check_host(target.clone(), explain).await?;
            if found.result == SpfResult::None {
                return Err(Stop::Perm(format!(
                    "redirect to '{}' without an SPF record",
                    escape(&target)
                )));
            }
            return Ok(found);
        }
        Ok(Found {
            result: SpfResult::Neutral,
            why: format!("no term of {domain} matched"),
            explanation: None,
            mechanism: None,
        })
    }

    /// The `exp=` text (§6.2): any problem leaves no explanation.
    async fn explain(&mut self, exp: &MacroString, domain: &str) -> Option<String> {
        let name = self.target(exp, domain).await.ok()?;
        if !valid_domain(&name) {
            return None;
        }
        let answer = self.query(&name, QType::Txt).await.ok()?;
        let mut txt = answer.txt();
        let (Some(text), None) = (txt.next(), txt.next()) else {
            return None;
        };
        let text = MacroString::parse(text, Kind::Explain).ok()?;
        let validated = if text.uses_p() {
            self.validated_name(domain).await.ok()?
        } else {
            String::new()
        };
        let out = text.expand(&self.values(domain, &validated));
        Some(escape(&out))
    }

    fn matches<'f>(
        &'f mut self,
        m: &'f Mechanism,
        domain: &'f str,
    ) -> Boxed<'f, Result<bool, Stop>> {
        Box::pin(async move {
            Ok(match m {
                Mechanism::All => true,
                Mechanism::Ip4(net, len) => in_net(self.ip, IpAddr::V4(*net), *len),
                Mechanism::Ip6(net, len) => in_net(self.ip, IpAddr::V6(*net), *len),
                Mechanism::Include(spec) => {
                    let target = self.target(spec, domain).await?;
                    let found = self.check_host(target.clone(), false).await?;
                    match found.result {
                        SpfResult::Pass => true,
                        SpfResult::None => {
                            return Err(Stop::Perm(format!(
                                "include of '{}' without an SPF record",
                                escape(&target)
                            )))
                        }
                        _ => false,
                    }
                }
                Mechanism::A {
                    domain: spec,
                    v4,
                    v6,
                } => {
                    let target = self.target_or(spec.as_ref(), domain).await?;
                    self.a_matches(&target, *v4, *v6, true).await?
                }
                Mechanism::Mx {
                    domain: spec,
                    v4,
                    v6,
                } => {
                    let target = self.target_or(spec.as_ref(), domain).await?;
                    self.mx_matches(&target, *v4, *v6).await?
                }
                Mechanism::Ptr(spec) => {
                    let target = self.target_or(spec.as_ref(), domain).await?;
                    let names = self.validated_names(&target, true).await?;
                    names.iter().any(|n| is_within(n, &target))
                }
                Mechanism::Exists(spec) => {
                    let target = self.target(spec, domain).await?;
                    if !valid_domain(&target) {
                        self.count_void()?;
                        return Ok(false);
                    }
                    let answer = self.query(&target, QType::A).await?;
                    let found = answer.ipv4().next().is_some();
                    if !found {
                        self.count_void()?;
                    }
                    found
                }
            })
        })
    }

    async fn target_or(
        &mut self,
        spec: Option<&MacroString>,
        domain: &str,
    ) -> Result<String, Stop> {
        match spec {
            Some(spec) => self.target(spec, domain).await,
            None => Ok(domain.to_string()),
        }
    }

    fn prefix(&self, v4: u8, v6: u8) -> u8 {
        match self.ip {
            IpAddr::V4(_) => v4,
            IpAddr::V6(_) => v6,
        }
    }

    /// `a`: one of `name`'s addresses (of the client's family) covers the client.
    async fn a_matches(&mut self, name: &str, v4: u8, v6: u8, void: bool) -> Result<bool, Stop> {
        if !valid_domain(name) {
            if void {
                self.count_void()?;
            }
            return Ok(false);
        }
        let answer = self.query(name, self.addr_type()).await?;
        let len = self.prefix(v4, v6);
        let mut any = false;
        for ip in answer.ips() {
            any = true;
            if in_net(self.ip, ip, len) {
                return Ok(true);
            }
        }
        if !any && void {
            self.count_void()?;
        }
        Ok(false)
    }

    /// `mx`: one of `name`'s first 10 mail hosts has an address covering the client.
    async fn mx_matches(&mut self, name: &str, v4: u8, v6: u8) -> Result<bool, Stop> {
        if !valid_domain(name) {
            self.count_void()?;
            return Ok(false);
        }
        let answer = self.query(name, QType::Mx).await?;
        let mut hosts: Vec<(u16, &str)> = answer.mx().collect();
        if hosts.is_empty() {
            self.count_void()?;
            return Ok(false);
        }
        if hosts.len() > MAX_NAMES {
            return Err(Stop::Perm(format!(
                "{name} has more than {MAX_NAMES} MX records"
            )));
        }
        hosts.sort_by_key(|(p, _)| *p);
        let qtype = self.addr_type();
        // Every host's question leaves at once.
        let mut lookups: Vec<_> = hosts
            .iter()
            .map(|(_, h)| h.trim_end_matches('.'))
            .filter(|h| valid_domain(h))
            .map(|h| self.svc.dns_query(h, qtype))
            .collect();
        let len = self.prefix(v4, v6);
        for lookup in &mut lookups {
            match within(lookup, self.timer).await {
                Ok(answer) => {
                    if answer.ips().any(|ip| in_net(self.ip, ip, len)) {
                        return Ok(true);
                    }
                }
                Err(DnsError::BadName) => {}
                Err(e) => return Err(Stop::Temp(format!("MX host of {name}: {e}"))),
            }
        }
        Ok(false)
    }

    /// The client's PTR names (at most 10) whose addresses include the client (§5.5). A DNS
    /// error on the PTR lookup leaves no name (the `ptr` mechanism does not match); for the
    /// mechanism (`count_void`), an empty answer counts as a void lookup.
    async fn validated_names(
        &mut self,
        target: &str,
        count_void: bool,
    ) -> Result<Vec<String>, Stop> {
        let Ok(answer) = self.query(&ptr_name(self.ip), QType::Ptr).await else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = answer
            .records
            .iter()
            .filter_map(|r| match r {
                Rr::Ptr(n) => Some(n.trim_end_matches('.').to_ascii_lowercase()),
                _ => None,
            })
            .collect();
        if names.is_empty() && count_void {
            self.count_void()?;
        }
        names.truncate(MAX_NAMES);
        // Names under the target first, so they are the ones validated.
        names.sort_by_key(|n| !is_within(n, target));
        let qtype = self.addr_type();
        let mut lookups: Vec<_> = names
            .iter()
            .map(|n| valid_domain(n).then(|| self.svc.dns_query(n, qtype)))
            .collect();
        let mut valid = Vec::new();
        for (name, lookup) in names.iter().zip(&mut lookups) {
            let Some(lookup) = lookup else { continue };
            // An error on one name skips that name (§5.5).
            if let Ok(answer) = within(lookup, self.timer).await {
                if answer.ips().any(|ip| ip == self.ip) {
                    valid.push(name.clone());
                }
            }
        }
        Ok(valid)
    }

    /// `%{p}` (§7.3): a validated name, one under `domain` if any, else `unknown`.
    async fn validated_name(&mut self, domain: &str) -> Result<String, Stop> {
        if let Some((_, name)) = self.validated.iter().find(|(d, _)| d == domain) {
            return Ok(name.clone());
        }
        let names = self.validated_names(domain, false).await?;
        let name = names
            .iter()
            .find(|n| is_within(n, domain))
            .or(names.first())
            .cloned()
            .unwrap_or_else(|| "unknown".into());
        self.validated.push((domain.to_string(), name.clone()));
        Ok(name)
    }
}

/// `name` is `domain` or under it (case-insensitive).
fn is_within(name: &str, domain: &str) -> bool {
    let name = name.trim_end_matches('.').as_bytes();
    let domain = domain.trim_end_matches('.').as_bytes();
    if name.len() < domain.len() {
        return false;
    }
    let (head, tail) = name.split_at(name.len() - domain.len());
    tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with(b"."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dnsutil::Deadline;
    use ringsmtpd_plugin_api::testing::records::{a, ptr, txt};
    use ringsmtpd_plugin_api::testing::{block_on, FakeServices};
    use std::time::Duration;

    fn run(svc: &Rc<FakeServices>, ip: &str, sender: &str) -> Verdict {
        let dyn_svc: Rc<dyn Services> = svc.clone();
        let mut timer = Deadline::start(&*dyn_svc, Duration::from_secs(5)).timer(&*dyn_svc);
        let req = Request {
            ip: ip.parse().unwrap(),
            sender: sender.into(),
            helo: "helo.example.org".into(),
            receiver: "mx.example.test".into(),
            now: 0,
        };
        block_on(check(&*dyn_svc, &mut timer, &req))
    }

    #[test]
    fn mapped_clients_are_ipv4_and_helo_is_postmaster() {
        let svc = FakeServices::new("mx");
        svc.answer(
            "example.com",
            QType::Txt,
            vec![txt("v=spf1 ip4:192.0.2.0/24 -all")],
        );
        assert_eq!(
            run(&svc, "::ffff:192.0.2.9", "a@example.com").result,
            SpfResult::Pass
        );
        assert_eq!(
            run(&svc, "2001:db8::1", "a@example.com").result,
            SpfResult::Fail
        );
        svc.answer(
            "helo.example.org",
            QType::Txt,
            vec![txt("v=spf1 exists:%{l}.%{d} -all")],
        );
        svc.answer(
            "postmaster.helo.example.org",
            QType::A,
            vec![a("127.0.0.2")],
        );
        assert_eq!(run(&svc, "192.0.2.1", "").result, SpfResult::Pass);
    }

    #[test]
    fn dns_errors_are_temperror() {
        for e in [DnsError::Timeout, DnsError::ServFail, DnsError::Refused] {
            let svc = FakeServices::new("mx");
            svc.answer(
                "example.com",
                QType::Txt,
                vec![txt("v=spf1 a:h.example.com -all")],
            );
            svc.fail("h.example.com", QType::A, e);
            let v = run(&svc, "192.0.2.1", "a@example.com");
            assert_eq!(v.result, SpfResult::TempError, "{e:?}");
            assert!(v.why.contains("h.example.com"), "{}", v.why);
            svc.fail("example.com", QType::Txt, e);
            assert_eq!(
                run(&svc, "192.0.2.1", "a@example.com").result,
                SpfResult::TempError
            );
        }
    }

    #[test]
    fn lookups_are_bounded() {
        let svc = FakeServices::new("mx");
        // An include loop stops at the 10-lookup limit.
        svc.answer(
            "loop.example",
            QType::Txt,
            vec![txt("v=spf1 include:loop.example")],
        );
        let v = run(&svc, "192.0.2.1", "a@loop.example");
        assert_eq!(v.result, SpfResult::PermError);
        assert_eq!(svc.asked.borrow().len(), 11);
        // A third void lookup is a permerror.
        let svc = FakeServices::new("mx");
        svc.answer(
            "v.example",
            QType::Txt,
            vec![txt(
                "v=spf1 a:n1.v.example a:n2.v.example a:n3.v.example +all",
            )],
        );
        let v = run(&svc, "192.0.2.1", "a@v.example");
        assert_eq!(
            (v.result, v.why.as_str()),
            (SpfResult::PermError, "more than 2 void lookups")
        );
    }

    #[test]
    fn p_macro_is_worked_out_once() {
        let svc = FakeServices::new("mx");
        svc.answer(
            "p.example",
            QType::Txt,
            vec![txt(
                "v=spf1 exists:%{p}.a.p.example exists:%{p}.b.p.example ?all",
            )],
        );
        svc.answer(
            "1.2.0.192.in-addr.arpa",
            QType::Ptr,
            vec![ptr("h.p.example")],
        );
        svc.answer("h.p.example", QType::A, vec![a("192.0.2.1")]);
        svc.answer("h.p.example.b.p.example", QType::A, vec![a("127.0.0.2")]);
        let v = run(&svc, "192.0.2.1", "a@p.example");
        assert_eq!(v.result, SpfResult::Pass);
        let ptrs = svc
            .asked
            .borrow()
            .iter()
            .filter(|(_, t)| *t == QType::Ptr)
            .count();
        assert_eq!(ptrs, 1);
    }

    #[test]
    fn hostile_names_never_panic() {
        let svc = FakeServices::new("mx");
        svc.answer(
            "h.example",
            QType::Txt,
            vec![txt(
                "v=spf1 ptr:\u{e9}.example mx:%{l}.example -all exp=%{l}.example",
            )],
        );
        svc.answer("h.example", QType::Mx, vec![]);
        for sender in [
            "\u{e9}\u{e9}@h.example",
            "@h.example",
            "x@",
            "@",
            "\u{0}@h.example",
        ] {
            let v = run(&svc, "192.0.2.1", sender);
            assert!(
                v.why.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{:?}",
                v.why
            );
        }
        assert!(!is_within("\u{e9}x.example", "x.example"));
        assert!(is_within("A.Example", "example") && !is_within("bexample", "example"));
    }
}
