//! Helpers for plugins that ask DNS (blocklists, iprev, HELO and sender checks): the client
//! address as blocklists want it, a deadline shared by many lookups, blocklist answers, DNS
//! name checks. The lookups themselves are [`Services::dns_query`]; the records and errors
//! are in [`crate::dns`].
//!
//! "Start early, decide late": send every question at once, keep the [`Deadline`] in a note,
//! and await the answers when the verdict is needed:
//!
//! ```ignore
//! let deadline = Deadline::start(&*cx.svc, self.timeout);
//! let query = ZoneQuery::send(&*cx.svc, &reversed_ip(client_ip(cx), zone), true);
//! // later, at the hook that decides:
//! let mut timer = deadline.timer(&*cx.svc);
//! let answer = query.answer(cx, &self.common, zone, &mut timer).await;
//! if answer.listed(is_listing_code) { ... }
//! ```

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crate::args::timeout_only;
use crate::common::{Common, RejectType};
use crate::context::{Cx, Level, Services};
use crate::dns::{DnsError, DnsLookup, DnsResult, QType};
use crate::plugin::{ConfigError, PluginInit};

/// The client address, with an IPv4-mapped IPv6 address (a dual-stack listener's view of an
/// IPv4 client) turned back into IPv4: blocklists and PTR lookups need the real family.
pub fn client_ip(cx: &Cx) -> IpAddr {
    cx.conn.remote.ip().to_canonical()
}

/// When a plugin stops waiting for DNS: `limit` after the questions were sent.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    started: SystemTime,
    limit: Duration,
}

impl Deadline {
    pub fn start(svc: &dyn Services, limit: Duration) -> Deadline {
        Deadline {
            started: svc.now(),
            limit,
        }
    }

    /// A timer for the time left (zero if it has passed: answers already in are still used).
    pub fn timer(&self, svc: &dyn Services) -> Timer {
        let spent = svc.now().duration_since(self.started).unwrap_or_default();
        Timer(Some(svc.sleep(self.limit.saturating_sub(spent))))
    }
}

/// A deadline timer that may be polled again after it fired (a finished future may not be).
pub struct Timer(Option<Pin<Box<dyn Future<Output = ()>>>>);

impl Timer {
    fn expired(&mut self, task: &mut Context<'_>) -> bool {
        match self.0.as_mut() {
            None => true,
            Some(sleep) => {
                let fired = sleep.as_mut().poll(task).is_ready();
                if fired {
                    self.0 = None;
                }
                fired
            }
        }
    }
}

/// Awaits a lookup until `timer` fires; a lookup already answered wins over an expired timer.
/// A lookup cut off by the timer reads as [`DnsError::Timeout`].
pub async fn within(lookup: &mut DnsLookup, timer: &mut Timer) -> DnsResult {
    std::future::poll_fn(|task| {
        if let Poll::Ready(r) = Pin::new(&mut *lookup).poll(task) {
            return Poll::Ready(r);
        }
        if timer.expired(task) {
            return Poll::Ready(Err(DnsError::Timeout));
        }
        Poll::Pending
    })
    .await
}

/// The questions for one name in a DNS list (`2.0.0.192.zone`, `example.com.zone`): A, and
/// TXT when the list's text is wanted.
pub struct ZoneQuery {
    a: DnsLookup,
    txt: Option<DnsLookup>,
}

/// What a DNS list answered for a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneAnswer {
    /// Every A record (listing codes or not); empty on an error.
    pub a: Vec<Ipv4Addr>,
    /// The first TXT record, cleaned ([`clean_text`]); `None` if not asked or on an error.
    pub txt: Option<String>,
    /// Why the A question failed (a timeout included): the name counts as not listed.
    pub error: Option<DnsError>,
}

impl ZoneQuery {
    /// From lookups already sent (A, and TXT if wanted).
    pub fn new(a: DnsLookup, txt: Option<DnsLookup>) -> ZoneQuery {
        ZoneQuery { a, txt }
    }

    /// Sends the questions for `name`.
    pub fn send(svc: &dyn Services, name: &str, txt: bool) -> ZoneQuery {
        let a = svc.dns_query(name, QType::A);
        ZoneQuery::new(a, txt.then(|| svc.dns_query(name, QType::Txt)))
    }

    /// Awaits the answers until `timer` fires. A failed A question is logged for the plugin
    /// (`<zone>: <error>, counted as not listed`).
    pub async fn answer(
        &mut self,
        cx: &Cx,
        common: &Common,
        zone: &str,
        timer: &mut Timer,
    ) -> ZoneAnswer {
        let (a, error) = match within(&mut self.a, timer).await {
            Ok(answer) => (answer.ipv4().collect(), None),
            Err(e) => {
                let msg = format_args!("{zone}: {e}, counted as not listed");
                common.log(cx, Level::Warn, msg);
                (Vec::new(), Some(e))
            }
        };
        let txt = match self.txt.as_mut() {
            Some(l) => within(l, timer)
                .await
                .ok()
                .and_then(|ans| ans.txt().next().map(clean_text)),
            None => None,
        };
        ZoneAnswer { a, txt, error }
    }
}

impl ZoneAnswer {
    /// Listed: an A record that `counts`, or a TXT record alone (qpsmtpd's TXT zones), but
    /// not when an A record answered that does not count (an error code).
    pub fn listed(&self, counts: impl Fn(Ipv4Addr) -> bool) -> bool {
        self.a.iter().any(|&a| counts(a)) || (self.a.is_empty() && self.txt.is_some())
    }
}

/// True for an A record that a DNS blocklist uses to say "listed": inside 127.0.0.0/8
/// (RFC 5782 §2.1), except 127.0.0.1 (URIBL's "query refused"; RFC 5782 §5 keeps it unlisted)
/// and 127.255.255.0/24 (Spamhaus' error codes: public resolver, typo'd zone, over quota).
pub fn is_listing_code(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 127 && a != Ipv4Addr::new(127, 0, 0, 1) && !(o[1] == 255 && o[2] == 255)
}

/// Text from DNS for a reply or header: printable ASCII only, at most 256 characters.
pub fn clean_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(256)
        .map(|c| match c.is_ascii_graphic() || c == ' ' {
            true => c,
            false => '?',
        })
        .collect();
    out.truncate(out.trim_end().len());
    out
}

/// Checks a DNS zone or host name: labels of letters, digits, `-` and `_`, at most 63 bytes
/// each, 253 in all; a trailing dot is allowed.
pub fn check_zone(zone: &str) -> Result<(), &'static str> {
    let zone = zone.strip_suffix('.').unwrap_or(zone);
    if zone.is_empty() {
        return Err("empty");
    }
    if zone.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in zone.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-', '_' and '.' are allowed");
        }
    }
    Ok(())
}

/// The arguments of a blocklist plugin (`dnsbl`, `rhsbl`) after the common ones: `timeout
/// SECONDS`, or qpsmtpd's single legacy positional argument, the reject type
/// (`dnsbl disconnect`), which goes into `common`.
pub fn blocklist_args(
    init: &PluginInit<'_>,
    common: &mut Common,
    rest: &[&str],
    default: Duration,
) -> Result<Duration, ConfigError> {
    let [single] = rest else {
        return timeout_only(init, rest, default);
    };
    common.args.reject_type = match single.to_ascii_lowercase().as_str() {
        "disconnect" => RejectType::Disconnect,
        "perm" | "deny" => RejectType::Perm,
        "temp" | "soft" | "denysoft" => RejectType::Temp,
        "temp_disconnect" => RejectType::TempDisconnect,
        _ => return Err(init.unknown(single)),
    };
    Ok(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, build, build_err, FakeServices};
    use crate::CommonArgs;
    use std::rc::Rc;

    #[test]
    fn within_prefers_a_finished_lookup() {
        let svc: Rc<dyn Services> = FakeServices::new("mx");
        let mut timer = Deadline::start(&*svc, Duration::ZERO).timer(&*svc);
        let mut done = DnsLookup::ready(Err(DnsError::Refused));
        assert_eq!(
            block_on(within(&mut done, &mut timer)),
            Err(DnsError::Refused)
        );
        let mut never = DnsLookup::new(std::future::pending());
        assert_eq!(
            block_on(within(&mut never, &mut timer)),
            Err(DnsError::Timeout)
        );
    }

    #[test]
    fn zone_answers() {
        use crate::testing::records::{a, txt};
        let (cx, svc) = crate::testing::cx("192.0.2.1:1");
        let common = Common::new("p", CommonArgs::DEFAULT);
        svc.answer("x.bl", QType::A, vec![a("127.0.0.2")]);
        svc.answer("x.bl", QType::Txt, vec![txt("see\r\nx")]);
        svc.fail("y.bl", QType::A, DnsError::ServFail);
        let mut timer = Deadline::start(&*cx.svc, Duration::ZERO).timer(&*cx.svc);
        let mut ask = |name, txt| {
            let mut query = ZoneQuery::send(&*cx.svc, name, txt);
            block_on(query.answer(&cx, &common, "bl", &mut timer))
        };
        let x = ask("x.bl", true);
        assert_eq!(x.txt.as_deref(), Some("see??x"));
        assert!(x.listed(is_listing_code) && !x.listed(|_| false));
        let y = ask("y.bl", false);
        assert_eq!(y.error, Some(DnsError::ServFail));
        assert!(!y.listed(is_listing_code));
        assert_eq!(svc.asked.borrow().len(), 3);
        assert!(svc.logged("bl: DNS SERVFAIL, counted as not listed"));
    }

    #[test]
    fn codes_text_and_zones() {
        assert!(is_listing_code(Ipv4Addr::new(127, 0, 0, 2)));
        assert!(!is_listing_code(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(!is_listing_code(Ipv4Addr::new(127, 255, 255, 252)));
        assert!(!is_listing_code(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(clean_text("a\u{7}b\u{e9}c  "), "a?b?c");
        assert_eq!(clean_text(&"x".repeat(300)).len(), 256);
        assert!(check_zone("bl.example.").is_ok() && check_zone("_dmarc.example").is_ok());
        for bad in ["", "a..b", "a b", &"x".repeat(64), &["a"; 130].join(".")] {
            assert!(check_zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn blocklist_arguments() {
        let parse = |init: &PluginInit<'_>| {
            let (mut common, rest) = init.common(CommonArgs::DEFAULT)?;
            let t = blocklist_args(init, &mut common, &rest, Duration::from_secs(10))?;
            Ok((common.args.reject_type, t))
        };
        assert_eq!(
            build(parse, "dnsbl Disconnect", &[]).unwrap(),
            (RejectType::Disconnect, Duration::from_secs(10))
        );
        assert_eq!(
            build(parse, "dnsbl timeout 2 reject_type temp", &[]).unwrap(),
            (RejectType::Temp, Duration::from_secs(2))
        );
        for bad in [
            "dnsbl nonsense",
            "dnsbl timeout",
            "dnsbl bogus 1",
            "dnsbl timeout 0",
        ] {
            build_err(parse, bad, &[]);
        }
    }
}
