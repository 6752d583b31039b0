//! # uribl — look up the hosts named in a message body in URI blocklists
//!
//! ## Synopsis
//!
//! ```text
//! uribl [action add-header|deny|denysoft|log] [timeout SECONDS] [scan-headers 0|1] [checkip yes|no]
//!       [max_bytes N] [max_lookups N] [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `data_post` the message is scanned for host names and addresses, which are then looked
//! up in every zone of `uribl_zones` (SURBL, URIBL, Spamhaus DBL...) at once, as qpsmtpd's
//! `uribl` did (its async variant too).
//!
//! **Scanning.** The MIME structure is followed as the message streams by
//! (`ringsmtpd_plugin_api::mime`, RFC 2045, RFC 2046): `multipart/*` parts and `message/rfc822`
//! messages are entered (8 levels deep at most, 500 parts; an enclosed message that is itself
//! base64 or quoted-printable encoded, which RFC 2046 §5.2.1 forbids, is skipped), `text/*`
//! parts (and a message without `Content-Type`) are decoded from base64 or quoted-printable
//! and scanned; other parts (images, archives) are skipped. In the text, percent-escapes
//! (`%2E`) and HTML character references (`&#46;`, `&#x2e;`) are undone first, since
//! spammers use them to hide host names. Found are:
//!
//! - the host of every URI with a scheme (`http://user@host:port/...`, any scheme of 3 to 16
//!   characters, as qpsmtpd's `\w{3,16}:/+`), including addresses written as a dotted quad
//!   with octal or hex parts (`http://0x7f.1.1.1/`) or as one big integer
//!   (`http://3232235777/`) when `checkip` is on;
//! - host names without a scheme: `www.` names first, then any other dotted name whose last
//!   label is alphabetic (`example.com`, an e-mail address's domain), except names that end
//!   in a common file extension (`logo.png`, `index.html`). qpsmtpd matched the same things
//!   against a 2017 list of top-level domains; a list that ages is not kept here.
//!
//! For a host name, its registered domain is looked up (`example.com`; `example.co.uk`
//! when the second-level label is a registry's such as `co`, `com`, `org`, `ac`, `gov` under
//! a two-letter TLD) and the full name if it differs. qpsmtpd looked up every level in
//! between as well, which costs lookups without finding more in today's lists. An address is
//! looked up reversed (`4.3.2.1.zone`); private, loopback and link-local addresses are not.
//! Names under a domain in `uribl_whitelist_domains` are not looked up.
//!
//! **Bounds.** At most `max_bytes` of the message are read (spooled messages are read on the
//! blocking pool, never on the worker), and at most `max_lookups` DNS questions are asked
//! (names × zones): names from URIs come first, so padding a message with junk names does
//! not push the real links out.
//!
//! **Verdict.** A name is listed in a zone when an A record answers that is a listing code
//! (in `127.0.0.0/8`, but not `127.0.0.1`, URIBL's "query refused", nor `127.255.255.0/24`,
//! Spamhaus' error codes) and, ANDed with the zone's mask, is not zero (composite lists such
//! as `multi.surbl.org` set one bit per list). For each listed name the TXT record is fetched
//! for the description `<name> in <zone>: <TXT or A>`. Then each zone's action: `add-header`
//! puts `X-URIBL-Match: <description>` on top of the message, `log` only logs, `deny`
//! refuses the message (552 `5.7.1 <description>`), `denysoft` defers it (452). A `deny`
//! wins over `denysoft`.
//!
//! DNS failures (timeout, SERVFAIL) count as "not listed" and are logged; the whole check
//! ends at most `timeout` seconds after its questions left.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `action` | `add-header` | default action of zones without their own: `add-header`, `deny`, `denysoft`, `log` |
//! | `timeout` | `10` | seconds to wait for the answers (qpsmtpd: 30; keep it below `plugin_timeout`) |
//! | `scan-headers` | `0` | `1`/`yes`: scan the message's header section too (qpsmtpd's `check-headers` is accepted too) |
//! | `checkip` | `yes` | `no`: do not look up addresses from URIs (some lists answer "listed" for any address) |
//! | `max_bytes` | `1048576` | bytes of the message scanned at most (a ringsmtpd addition) |
//! | `max_lookups` | `100` | DNS questions per message at most, names × zones (a ringsmtpd addition) |
//! | `loglevel` | | qpsmtpd's per-plugin log level (`reject`, `reject_type` accepted, no effect: `action` decides) |
//!
//! ## Config files
//!
//! | file | format |
//! |---|---|
//! | `uribl_zones` | `zone [mask[,mask...]] [action]`: masks are integers ORed together (a negative one, or none, means every list of the zone), action as the argument. A malformed line stops the server with `file:line` (qpsmtpd logged it and disabled the plugin). No zones: the plugin does nothing |
//! | `uribl_whitelist_domains` | domains never looked up, with their subdomains |
//!
//! ## Hooks
//!
//! `data_post`.
//!
//! ## Notes
//!
//! Reads `is_immune`'s notes (immune clients are not checked). Adds `X-URIBL-Match` headers.
//!
//! ## Standards
//!
//! RFC 5782 §2.3 (domain-based lists), RFC 2045 §6.7, §6.8 (quoted-printable, base64: "any
//! characters outside of the base64 alphabet are to be ignored"), RFC 2046 §5.1 (multipart),
//! RFC 3986 §3.2 (authority), RFC 3463 (X.7.1).
//!
//! ## Security
//!
//! The message is hostile input: every loop is bounded by the bytes read (`max_bytes`), the
//! MIME depth and part count are capped, and the decoders accept anything without panicking.
//! The cost in DNS is capped by `max_lookups`. TXT text is cut to 256 printable ASCII
//! characters before it goes into a header or reply. A message may name hosts in order to make
//! us look them up (a DNS "callback"); the questions go to the blocklist zones only, never to
//! the hosts' own servers.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::ControlFlow;
use std::time::Duration;

use memchr::memmem;
use ringsmtpd_plugin_api::args::{key_values, parse_count, parse_flag, parse_timeout};
use ringsmtpd_plugin_api::dns::{reversed_ip, DnsLookup, QType};
use ringsmtpd_plugin_api::dnsutil::{check_zone, clean_text, is_listing_code, within, Deadline};
use ringsmtpd_plugin_api::mime::{read_message, Entity, Visitor, Walker};
use ringsmtpd_plugin_api::shared::is_immune;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Step, Transaction,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spam puts its links near the top; 1 MiB covers any text part of a normal message and
/// bounds the scan at a few milliseconds of one core.
const DEFAULT_MAX_BYTES: usize = 1 << 20;
/// SpamAssassin's URIDNSBL looks up 20 domains; with a handful of zones, 100 questions
/// cover that while keeping a message from costing the resolver more than a few packets.
const DEFAULT_MAX_LOOKUPS: usize = 100;
/// Distinct names kept per tier while scanning: bounds memory on a message full of names.
const MAX_FOUND: usize = 2000;

/// What to do when a zone lists a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    AddHeader,
    Deny,
    DenySoft,
    Log,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "add-header" => Action::AddHeader,
            "deny" => Action::Deny,
            "denysoft" => Action::DenySoft,
            "log" => Action::Log,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Zone {
    zone: String,
    mask: u32,
    action: Action,
}

/// qpsmtpd's default mask: every list bit of a composite zone.
const ALL_LISTS: u32 = 0x00ff_ffff;

pub struct Uribl {
    common: Common,
    action: Action,
    timeout: Duration,
    scan_headers: bool,
    checkip: bool,
    max_bytes: usize,
    max_lookups: usize,
    zones: Vec<Zone>,
    whitelist: Vec<String>,
}

/// Builds `uribl` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut p = Uribl {
        common,
        action: Action::AddHeader,
        timeout: DEFAULT_TIMEOUT,
        scan_headers: false,
        checkip: true,
        max_bytes: DEFAULT_MAX_BYTES,
        max_lookups: DEFAULT_MAX_LOOKUPS,
        zones: Vec::new(),
        whitelist: Vec::new(),
    };
    for (key, value) in key_values(&rest).map_err(|e| init.error(e))? {
        let r = match key {
            "action" => Action::parse(value).map(|a| p.action = a).ok_or_else(|| {
                format!("action must be add-header, deny, denysoft or log, not '{value}'")
            }),
            "timeout" => parse_timeout(value).map(|t| p.timeout = t),
            "scan-headers" | "check-headers" => parse_flag(key, value).map(|f| p.scan_headers = f),
            "checkip" => parse_flag(key, value).map(|f| p.checkip = f),
            "max_bytes" => parse_count(key, value).map(|n| p.max_bytes = n),
            "max_lookups" => parse_count(key, value).map(|n| p.max_lookups = n),
            _ => Err(format!("unknown argument '{key}'")),
        };
        r.map_err(|e| init.error(e))?;
    }
    for line in init.config.lines("uribl_zones")?.unwrap_or_default() {
        let zone = parse_zone(&line, p.action)?;
        p.zones.push(zone);
    }
    for line in init
        .config
        .lines("uribl_whitelist_domains")?
        .unwrap_or_default()
    {
        let d = line.text.trim_start_matches('.');
        check_zone(d)
            .map_err(|why| line.error(format!("'{}' is not a domain: {why}", line.text)))?;
        p.whitelist
            .push(d.trim_end_matches('.').to_ascii_lowercase());
    }
    Ok(Box::new(p))
}

fn parse_zone(line: &ConfigLine, default: Action) -> Result<Zone, ConfigError> {
    let mut cols = line.text.split_whitespace();
    let zone = cols.next().unwrap_or_default();
    check_zone(zone).map_err(|why| line.error(format!("'{zone}' is not a DNS zone: {why}")))?;
    let mut mask = 0u32;
    let mut action = default;
    match cols.next() {
        None => mask = ALL_LISTS,
        Some(masks) => {
            for m in masks.split(',') {
                let v: i64 = m.parse().map_err(|_| {
                    line.error(format!(
                        "malformed mask '{m}' for {zone} (form: zone [mask,...] [action])"
                    ))
                })?;
                mask |= if v < 0 {
                    ALL_LISTS
                } else {
                    (v as u64 & 0xffff_ffff) as u32
                };
            }
            if let Some(a) = cols.next() {
                action = Action::parse(a)
                    .ok_or_else(|| line.error(format!("unknown action '{a}' for {zone}")))?;
            }
        }
    }
    if let Some(extra) = cols.next() {
        return Err(line.error(format!("unexpected '{extra}' after the action")));
    }
    if mask == 0 {
        mask = ALL_LISTS; // qpsmtpd: `$z[1] ||= 0x00ffffff`
    }
    Ok(Zone {
        zone: zone.trim_end_matches('.').to_ascii_lowercase(),
        mask,
        action,
    })
}

/// One listed name.
struct Hit {
    name: String,
    zone: usize,
    a: Ipv4Addr,
    txt: Option<String>,
}

impl Uribl {
    fn whitelisted(&self, host: &str) -> bool {
        self.whitelist.iter().any(|w| {
            host == w
                || (host.len() > w.len()
                    && host.ends_with(w.as_str())
                    && host.as_bytes()[host.len() - w.len() - 1] == b'.')
        })
    }

    /// The names to look up, most telling first, within `max_lookups`.
    fn plan(&self, cx: &Cx, found: &Found) -> Vec<String> {
        let max_names = (self.max_lookups / self.zones.len().max(1)).max(1);
        let mut names: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |n: String, names: &mut Vec<String>| {
            if names.len() < max_names && seen.insert(n.clone()) {
                names.push(n);
            }
        };
        for target in found.strong.iter().chain(&found.weak) {
            match target {
                Target::Ip(ip) => {
                    if self.checkip {
                        push(reversed_ip(IpAddr::V4(*ip), ""), &mut names);
                    }
                }
                Target::Host(host) => {
                    if self.whitelisted(host) {
                        self.common.log(
                            cx,
                            Level::Debug,
                            format_args!("skipping whitelisted URI domain '{host}'"),
                        );
                        continue;
                    }
                    let reg = registered_domain(host);
                    push(reg.to_string(), &mut names);
                    if reg != host {
                        push(host.clone(), &mut names);
                    }
                }
            }
            if names.len() >= max_names {
                break;
            }
        }
        names
    }

    async fn lookup(&self, cx: &mut Cx, names: &[String]) -> Vec<Hit> {
        let deadline = Deadline::start(&*cx.svc, self.timeout);
        let mut queries: Vec<(usize, usize, DnsLookup)> = Vec::new();
        for (n, name) in names.iter().enumerate() {
            for (z, zone) in self.zones.iter().enumerate() {
                queries.push((
                    n,
                    z,
                    cx.svc.dns_query(&format!("{name}.{}", zone.zone), QType::A),
                ));
            }
        }
        let mut timer = deadline.timer(&*cx.svc);
        let mut hits = Vec::new();
        let mut failed = 0usize;
        for (n, z, lookup) in &mut queries {
            match within(lookup, &mut timer).await {
                Ok(answer) => {
                    let mask = self.zones[*z].mask;
                    let hit = answer
                        .ipv4()
                        .find(|a| is_listing_code(*a) && u32::from(*a) & mask != 0);
                    if let Some(a) = hit {
                        hits.push(Hit {
                            name: names[*n].clone(),
                            zone: *z,
                            a,
                            txt: None,
                        });
                    }
                }
                Err(_) => failed += 1,
            }
        }
        if failed > 0 {
            self.common.log(
                cx,
                Level::Warn,
                format_args!(
                    "{failed} of {} lookups failed or timed out, counted as not listed",
                    queries.len()
                ),
            );
        }
        // The description's TXT, for listed names only (rare: no second round for clean mail).
        let mut txts: Vec<DnsLookup> = hits
            .iter()
            .map(|h| {
                cx.svc.dns_query(
                    &format!("{}.{}", h.name, self.zones[h.zone].zone),
                    QType::Txt,
                )
            })
            .collect();
        for (hit, l) in hits.iter_mut().zip(&mut txts) {
            hit.txt = within(l, &mut timer)
                .await
                .ok()
                .and_then(|a| a.txt().next().map(clean_text));
        }
        self.common.log(
            cx,
            Level::Info,
            format_args!(
                "{} lookups finished ({} matches)",
                queries.len(),
                hits.len()
            ),
        );
        hits
    }

    fn verdict(&self, cx: &mut Cx, txn: &mut Transaction, hits: Vec<Hit>) -> Outcome {
        let mut deny: Option<String> = None;
        let mut soft: Option<String> = None;
        for hit in hits {
            let zone = &self.zones[hit.zone];
            let desc = format!(
                "{} in {}: {}",
                hit.name,
                zone.zone,
                hit.txt.unwrap_or_else(|| hit.a.to_string())
            );
            self.common.log(cx, Level::Warn, format_args!("{desc}"));
            match zone.action {
                Action::AddHeader => txn.prepend_header("X-URIBL-Match", &desc),
                Action::Log => {}
                Action::Deny => {
                    deny.get_or_insert(desc);
                }
                Action::DenySoft => {
                    soft.get_or_insert(desc);
                }
            }
        }
        match (deny, soft) {
            (Some(d), _) => Outcome::Deny(Some(Cow::Owned(format!("5.7.1 {d}")))),
            (None, Some(s)) => Outcome::DenySoft(Some(Cow::Owned(format!("4.7.1 {s}")))),
            (None, None) => Outcome::Declined,
        }
    }
}

impl Plugin for Uribl {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::DataPost])
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if self.zones.is_empty() {
            return Step::DECLINED;
        }
        if is_immune(cx, Some(txn)) {
            self.common
                .log(cx, Level::Info, format_args!("skip, immune"));
            return Step::DECLINED;
        }
        Step::pending(async move {
            let feed = |w: &mut Walker<Scan>, chunk: &[u8]| {
                w.feed(chunk);
                ControlFlow::Continue(())
            };
            let max = self.max_bytes as u64;
            let found =
                match read_message(&*cx.svc, &txn.body, max, walker(self.scan_headers), feed).await
                {
                    Ok(w) => w.finish().found,
                    Err(e) => {
                        // Not a reason to refuse mail: the check is advisory.
                        self.common.log(
                            cx,
                            Level::Error,
                            format_args!("skip, cannot read the spooled message: {e}"),
                        );
                        return Outcome::Declined;
                    }
                };
            let names = self.plan(cx, &found);
            if names.is_empty() {
                self.common
                    .log(cx, Level::Info, format_args!("pass, no URIs found in mail"));
                return Outcome::Declined;
            }
            let hits = self.lookup(cx, &names).await;
            self.verdict(cx, txn, hits)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Finding host names in a message.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Host(String),
    Ip(Ipv4Addr),
}

/// What a scan found, each list in order of first appearance.
#[derive(Debug, Default)]
struct Found {
    /// Hosts of URIs with a scheme, and `www.` names: looked up first.
    strong: Vec<Target>,
    /// Other dotted names (bare domains, e-mail domains).
    weak: Vec<Target>,
    seen_strong: HashSet<Target>,
    seen_weak: HashSet<Target>,
}

impl Found {
    fn add(&mut self, t: Target, strong: bool) {
        let (list, seen) = if strong {
            (&mut self.strong, &mut self.seen_strong)
        } else {
            if self.seen_strong.contains(&t) {
                return;
            }
            (&mut self.weak, &mut self.seen_weak)
        };
        if list.len() < MAX_FOUND && seen.insert(t.clone()) {
            list.push(t);
        }
    }
}

/// Collects the hosts of a message as the MIME walker reports its entities.
#[derive(Default)]
struct Scan {
    found: Found,
    scan_headers: bool,
    /// The decoded text of the current text part.
    text: Vec<u8>,
}

impl Visitor for Scan {
    fn entity(&mut self, e: &Entity<'_>) -> bool {
        if e.is_message && self.scan_headers {
            scan(&mut self.found, &normalize(e.head));
        }
        // A multipart without a boundary is read as text.
        e.media.is_empty() || e.media.starts_with("text/") || e.media.starts_with("multipart/")
    }

    fn data(&mut self, decoded: &[u8]) {
        self.text.extend_from_slice(decoded);
    }

    fn end(&mut self) {
        scan(&mut self.found, &normalize(&self.text));
        self.text.clear();
    }
}

fn walker(scan_headers: bool) -> Walker<Scan> {
    Walker::new(Scan {
        scan_headers,
        ..Scan::default()
    })
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Undoes the escapes spammers hide host names with: `%2E`, `&#46;`, `&#x2e;`.
fn normalize(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                text.get(i + 1).and_then(|&c| hex(c)),
                text.get(i + 2).and_then(|&c| hex(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        } else if b == b'&' && text.get(i + 1) == Some(&b'#') {
            let (radix, start) = match text.get(i + 2) {
                Some(b'x' | b'X') => (16, i + 3),
                _ => (10, i + 2),
            };
            let digits = text[start..]
                .iter()
                .take(7)
                .take_while(|c| (**c as char).is_digit(radix))
                .count();
            if digits > 0 {
                let s = std::str::from_utf8(&text[start..start + digits]).unwrap_or("");
                if let Some(c) = u32::from_str_radix(s, radix).ok().and_then(char::from_u32) {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    i = start + digits;
                    if text.get(i) == Some(&b';') {
                        i += 1;
                    }
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'.'
}

/// Ends a URI's authority (RFC 3986 §3.2), or the junk around it in mail.
fn ends_authority(b: u8) -> bool {
    b.is_ascii_whitespace() || b >= 0x80 || b"/?#\"'<>()\\,;{}|^`".contains(&b)
}

/// File extensions that look like a top-level domain in a bare name (`logo.png`) but are
/// none; URIs with a scheme are taken whatever their last label.
const NOT_TLDS: &[&str] = &[
    "htm", "html", "shtml", "php", "asp", "aspx", "jsp", "js", "css", "png", "jpg", "jpeg", "gif",
    "svg", "bmp", "tif", "tiff", "pdf", "txt", "json", "xml", "cgi", "exe", "dll", "doc", "docx",
    "xls", "xlsx", "ppt", "pptx", "csv", "gz", "tgz", "rar", "eml", "ics", "vcf",
];

/// Scans decoded text for hosts.
fn scan(found: &mut Found, t: &[u8]) {
    // URIs with a scheme: `scheme:/+[userinfo@]host`.
    for p in memmem::find_iter(t, b":/") {
        let start = t[..p]
            .iter()
            .rposition(|&b| !(b.is_ascii_alphanumeric() || b"_+.-".contains(&b)))
            .map_or(0, |i| i + 1);
        if !(3..=16).contains(&(p - start)) {
            continue;
        }
        let mut i = p + 1;
        while t.get(i) == Some(&b'/') {
            i += 1;
        }
        let end = t[i..]
            .iter()
            .position(|&b| ends_authority(b))
            .map_or(t.len(), |n| i + n);
        let auth = &t[i..end];
        let host = match auth.iter().rposition(|&b| b == b'@') {
            Some(at) => &auth[at + 1..],
            None => auth,
        };
        let len = host.iter().take_while(|&&b| is_host_char(b)).count();
        uri_host(found, &host[..len]);
    }
    // Bare names.
    let mut i = 0;
    while i < t.len() {
        if !is_host_char(t[i]) {
            i += 1;
            continue;
        }
        let s = i;
        while i < t.len() && is_host_char(t[i]) {
            i += 1;
        }
        // Not a path segment (`/img/logo.png`), an identifier (`a_b.c`) or a URI's host again.
        if s > 0 && matches!(t[s - 1], b'/' | b'_' | b'\\' | b'$') {
            continue;
        }
        let token = &t[s..i];
        if !token.contains(&b'.') {
            continue;
        }
        if let Some(name) = domain(token) {
            let www = name.starts_with("www.");
            let tld = name.rsplit('.').next().unwrap_or("");
            if www || !NOT_TLDS.contains(&tld) {
                found.add(Target::Host(name), www);
            }
        }
    }
}

/// The host of a URI with a scheme: an address (decimal integer, dotted quad with octal or
/// hex parts) or a name.
fn uri_host(found: &mut Found, host: &[u8]) {
    let host = trim_dots(host);
    if host.is_empty() {
        return;
    }
    if host.len() >= 7 && host.iter().all(u8::is_ascii_digit) {
        if let Some(n) = std::str::from_utf8(host)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        {
            ip_target(found, Ipv4Addr::from(n));
        }
        return;
    }
    let quad: Vec<Option<u8>> = host.split(|&b| b == b'.').map(octet).collect();
    if quad.len() == 4 && quad.iter().all(Option::is_some) {
        let o: Vec<u8> = quad.into_iter().flatten().collect();
        ip_target(found, Ipv4Addr::new(o[0], o[1], o[2], o[3]));
        return;
    }
    if let Some(name) = domain(host) {
        found.add(Target::Host(name), true);
    }
}

fn ip_target(found: &mut Found, ip: Ipv4Addr) {
    if !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast())
    {
        found.add(Target::Ip(ip), true);
    }
}

/// One part of a dotted quad as browsers read it: `0x7f` hex, `0177` octal, `127` decimal.
fn octet(part: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(part).ok()?;
    let v = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u32::from_str_radix(h, 16).ok()?
    } else if s.len() > 1 && s.starts_with('0') {
        u32::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse().ok()?
    };
    u8::try_from(v).ok()
}

fn trim_dots(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|&c| c != b'.' && c != b'-')
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|&c| c != b'.' && c != b'-')
        .map_or(s, |i| i + 1);
    &b[s..e.max(s)]
}

/// A host name as looked up: lowercased; at least two labels of letters, digits and `-`,
/// at most 63 bytes each and 253 in all; the last label alphabetic (or an IDN `xn--` one).
fn domain(token: &[u8]) -> Option<String> {
    let token = trim_dots(token);
    if token.len() > 253 {
        return None;
    }
    let name = std::str::from_utf8(token).ok()?.to_ascii_lowercase();
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return None;
    }
    let tld = labels[labels.len() - 1];
    let tld_ok = (tld.len() >= 2
        && tld.len() <= 24
        && tld.bytes().all(|b| b.is_ascii_alphabetic()))
        || (tld.starts_with("xn--") && tld.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    tld_ok.then_some(name)
}

/// Second-level labels that registries sell names under (`example.co.uk`, `example.com.au`).
const REGISTRY_SLDS: &[&str] = &[
    "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go", "gob", "ltd", "plc", "mil",
    "nic", "sch", "gen", "biz", "info", "nom", "web", "int",
];

/// The registered domain of a host, as URI blocklists list it: the last two labels, or three
/// under a registry's second level in a two-letter TLD.
fn registered_domain(host: &str) -> &str {
    let labels: Vec<&str> = host.split('.').collect();
    let n = labels.len();
    let keep = if n >= 3 && labels[n - 1].len() == 2 && REGISTRY_SLDS.contains(&labels[n - 2]) {
        3
    } else {
        2
    };
    if n <= keep {
        return host;
    }
    let skip: usize = labels[..n - keep].iter().map(|l| l.len() + 1).sum();
    &host[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::dns::DnsError;
    use ringsmtpd_plugin_api::shared::WhitelistHost;
    use ringsmtpd_plugin_api::testing::records::*;
    use ringsmtpd_plugin_api::testing::{build, cx, origin, run, txn_from, FakeServices, TempDir};
    use ringsmtpd_plugin_api::SpoolFile;

    const ZONES: &str = "# composite\nmulti.uribl.example 2,8 deny\ndbl.example\n";

    fn plugin(args: &[&str], zones: &str) -> Box<dyn Plugin> {
        build(
            new,
            &format!("uribl {}", args.join(" ")),
            &[
                ("uribl_zones", zones),
                ("uribl_whitelist_domains", "trusted.example\n"),
            ],
        )
        .expect("test plugin")
    }

    fn message(body: &str) -> Transaction {
        let mut txn = txn_from("<s@example.org>");
        let text = body.replace('\n', "\r\n");
        txn.body.header_end = text.find("\r\n\r\n").map(|p| p + 4);
        txn.body.len = text.len() as u64;
        txn.body.mem = text.into_bytes();
        txn
    }

    fn check(
        p: &dyn Plugin,
        txn: &mut Transaction,
        setup: impl FnOnce(&FakeServices),
    ) -> (Outcome, Vec<(String, QType)>) {
        let (mut c, svc) = cx("192.0.2.1:1");
        setup(&svc);
        let o = run(p.data_post(&mut c, txn));
        let asked = svc.asked.borrow().clone();
        (o, asked)
    }

    fn hosts(found: &Found) -> Vec<String> {
        found
            .strong
            .iter()
            .chain(&found.weak)
            .map(|t| match t {
                Target::Host(h) => h.clone(),
                Target::Ip(ip) => ip.to_string(),
            })
            .collect()
    }

    /// Scans a whole message in memory (header section first).
    fn extract(message: &[u8], scan_headers: bool) -> Found {
        let mut w = walker(scan_headers);
        w.feed(message);
        w.finish().found
    }

    fn names_in(text: &str) -> Vec<String> {
        hosts(&extract(text.replace('\n', "\r\n").as_bytes(), false))
    }

    #[test]
    fn finds_uri_hosts_and_bare_names() {
        let got = names_in(
            "Subject: see http://header.example/\n\nGo to HTTP://User:pw@Spam.Example:8080/x?y and \
             www.shop.example.net, mail me at joe@mail.example.org.\n\
             <a href=\"https://link.example/path/logo.png\">x</a> index.html file.txt\n",
        );
        assert_eq!(
            got,
            vec![
                "spam.example",
                "link.example",
                "www.shop.example.net",
                "mail.example.org"
            ]
        );
        // scan-headers: the header section too.
        let found = extract(b"Subject: http://header.example/\r\n\r\nbody", true);
        assert_eq!(hosts(&found), vec!["header.example"]);
    }

    #[test]
    fn finds_obfuscated_addresses_and_names() {
        let got = names_in(
            "\nhttp://0x7f.0.0.1/ http://0xcb.0.0x71.3/ http://0313.0.0161.02/ http://3405803777/ \
             http://203.0.113.9:80/ http://10.1.1.1/ spam&#46;example &#x77;ww.hidden.example \
             h%74tp://pct%2Eexample/\n",
        );
        let want = [
            "203.0.113.3",
            "203.0.113.2",
            "203.0.113.1",
            "203.0.113.9",
            "pct.example",
            "www.hidden.example",
            "spam.example",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn decodes_mime_parts() {
        let b64 = "VmlzaXQgaHR0cDovL2I2NC5leGFtcGxlLyBub3cK"; // "Visit http://b64.example/ now\n"
        let msg = format!(
            "Content-Type: multipart/mixed;\n boundary=\"outer\"\n\npreamble http://preamble.example/\n\
             --outer\nContent-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n\
             See http://qp.exa=\nmple/ and http://x=2Eqp.example/\n\
             --outer\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\n{b64}\n\
             --outer\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\naHR0cDovL2ltYWdlLmV4YW1wbGUv\n\
             --outer\nContent-Type: message/rfc822\n\nSubject: inner\n\nhttp://inner.example/\n\
             --outer--\nepilogue http://epilogue.example/\n"
        );
        assert_eq!(
            names_in(&msg),
            vec!["qp.example", "x.qp.example", "b64.example", "inner.example"]
        );
    }

    #[test]
    fn mime_bombs_are_bounded() {
        let mut msg = String::new();
        for i in 0..50 {
            msg.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
            ));
        }
        msg.push_str("\nhttp://deep.example/\n");
        assert!(
            names_in(&msg).is_empty(),
            "deeper than MAX_DEPTH is not scanned"
        );
        // Many names: bounded memory.
        let many: String = (0..5000)
            .map(|i| format!("http://h{i}.example/ "))
            .collect();
        let many = format!("\r\n{many}");
        assert_eq!(extract(many.as_bytes(), false).strong.len(), MAX_FOUND);
    }

    #[test]
    fn decoders() {
        assert_eq!(
            normalize(b"a%2eb&#46;c&#x2E;d&#65 %zz &#;"),
            b"a.b.c.dA %zz &#;"
        );
        assert_eq!(normalize("&#128512;".as_bytes()), "\u{1F600}".as_bytes());
        assert_eq!(octet(b"0x7f"), Some(127));
        assert_eq!(octet(b"0377"), Some(255));
        assert_eq!(octet(b"256"), None);
        assert_eq!(octet(b"08"), None);
    }

    #[test]
    fn registered_domains() {
        assert_eq!(registered_domain("a.b.spam.example"), "spam.example");
        assert_eq!(registered_domain("www.shop.co.uk"), "shop.co.uk");
        assert_eq!(registered_domain("x.example.com.au"), "example.com.au");
        assert_eq!(registered_domain("example.ca"), "example.ca");
        assert_eq!(registered_domain("co.uk"), "co.uk");
    }

    #[test]
    fn lookups_and_actions() {
        let p = plugin(&[], ZONES);
        let mut txn = message("Subject: x\n\nhttp://www.spam.example/ http://clean.example/\n");
        let (o, asked) = check(&*p, &mut txn, |s| {
            s.answer(
                "spam.example.multi.uribl.example",
                QType::A,
                vec![a("127.0.0.2")],
            );
            s.answer(
                "spam.example.multi.uribl.example",
                QType::Txt,
                vec![txt("Blocked, see http://uribl/")],
            );
        });
        assert_eq!(
            o,
            Outcome::Deny(Some(
                "5.7.1 spam.example in multi.uribl.example: Blocked, see http://uribl/".into()
            ))
        );
        let a_names: Vec<&str> = asked
            .iter()
            .filter(|(_, t)| *t == QType::A)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            a_names,
            vec![
                "spam.example.multi.uribl.example",
                "spam.example.dbl.example",
                "www.spam.example.multi.uribl.example",
                "www.spam.example.dbl.example",
                "clean.example.multi.uribl.example",
                "clean.example.dbl.example",
            ]
        );
        // TXT only for the listed name.
        assert_eq!(asked.iter().filter(|(_, t)| *t == QType::Txt).count(), 1);
    }

    #[test]
    fn mask_selects_lists() {
        let p = plugin(&[], ZONES);
        // Bit 4 is not in the mask 2,8: not a match.
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, _) = check(&*p, &mut txn, |s| {
            s.answer(
                "spam.example.multi.uribl.example",
                QType::A,
                vec![a("127.0.0.4")],
            )
        });
        assert_eq!(o, Outcome::Declined);
        // 127.0.0.10 = bits 2 and 8.
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, _) = check(&*p, &mut txn, |s| {
            s.answer(
                "spam.example.multi.uribl.example",
                QType::A,
                vec![a("127.0.0.10")],
            )
        });
        assert_eq!(
            o.msg(),
            Some("5.7.1 spam.example in multi.uribl.example: 127.0.0.10")
        );
        // Error codes never match.
        for code in ["127.0.0.1", "127.255.255.254", "192.0.2.1"] {
            let mut txn = message("\nhttp://spam.example/\n");
            let (o, _) = check(&*p, &mut txn, |s| {
                s.answer("spam.example.dbl.example", QType::A, vec![a(code)])
            });
            assert_eq!(o, Outcome::Declined, "{code}");
        }
    }

    #[test]
    fn add_header_log_and_denysoft() {
        let zones = "dbl.example\nlog.example -1 log\nsoft.example 0 denysoft\n";
        let p = plugin(&[], zones);
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, _) = check(&*p, &mut txn, |s| {
            s.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")]);
            s.answer("spam.example.log.example", QType::A, vec![a("127.0.0.2")]);
        });
        assert_eq!(o, Outcome::Declined);
        assert_eq!(
            txn.added_headers,
            "X-URIBL-Match: spam.example in dbl.example: 127.0.1.2\r\n"
        );
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, _) = check(&*p, &mut txn, |s| {
            s.answer("spam.example.soft.example", QType::A, vec![a("127.0.0.2")])
        });
        assert_eq!(
            o,
            Outcome::DenySoft(Some("4.7.1 spam.example in soft.example: 127.0.0.2".into()))
        );
        // The action argument is the default of zones without their own.
        let p = plugin(&["action", "deny"], "dbl.example\n");
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, _) = check(&*p, &mut txn, |s| {
            s.answer("spam.example.dbl.example", QType::A, vec![a("127.0.1.2")])
        });
        assert!(matches!(o, Outcome::Deny(_)));
    }

    #[test]
    fn ip_lookups_and_checkip() {
        let p = plugin(&[], "dbl.example\n");
        let mut txn = message("\nhttp://203.0.113.7/x\n");
        let (o, asked) = check(&*p, &mut txn, |s| {
            s.answer("7.113.0.203.dbl.example", QType::A, vec![a("127.0.0.2")])
        });
        assert!(matches!(o, Outcome::Declined)); // add-header
        assert_eq!(asked[0].0, "7.113.0.203.dbl.example");
        assert!(txn
            .added_headers
            .starts_with("X-URIBL-Match: 7.113.0.203 in dbl.example"));
        let p = plugin(&["checkip", "no"], "dbl.example\n");
        let mut txn = message("\nhttp://203.0.113.7/x\n");
        let (_, asked) = check(&*p, &mut txn, |_| {});
        assert!(asked.is_empty());
    }

    #[test]
    fn whitelist_immunity_and_failures() {
        let p = plugin(&["action", "deny"], "dbl.example\n");
        let mut txn =
            message("\nhttp://www.trusted.example/ http://trusted.example/ nottrusted.example\n");
        let (_, asked) = check(&*p, &mut txn, |_| {});
        assert_eq!(
            asked,
            vec![("nottrusted.example.dbl.example".to_string(), QType::A)]
        );
        // Immune client: nothing scanned.
        let (mut c, svc) = cx("192.0.2.1:1");
        c.conn.notes.set(WhitelistHost("x".into()));
        let mut txn = message("\nhttp://spam.example/\n");
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        assert!(svc.asked.borrow().is_empty());
        // DNS failures: not listed, logged.
        for err in [DnsError::Timeout, DnsError::ServFail] {
            let (mut c, svc) = cx("192.0.2.1:1");
            svc.fail("spam.example.dbl.example", QType::A, err);
            let mut txn = message("\nhttp://spam.example/\n");
            assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
            assert!(svc.logged("1 of 1 lookups failed or timed out"));
        }
        // No URIs: nothing asked.
        let mut txn = message("Subject: hi\n\nhello there\n");
        let (o, asked) = check(&*p, &mut txn, |_| {});
        assert_eq!((o, asked.len()), (Outcome::Declined, 0));
    }

    #[test]
    fn bounds_on_bytes_and_lookups() {
        let p = plugin(
            &["max_lookups", "4", "max_bytes", "60"],
            "a.example\nb.example\n",
        );
        let body: String = (0..20).map(|i| format!("http://h{i}.example/ ")).collect();
        let mut txn = message(&format!("\n{body}"));
        let (_, asked) = check(&*p, &mut txn, |_| {});
        assert_eq!(asked.len(), 4, "max_lookups: names x zones");
        // max_bytes: a name past the limit is not seen.
        let p = plugin(&["max_bytes", "30"], "a.example\n");
        let mut txn = message("\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx http://late.example/\n");
        let (_, asked) = check(&*p, &mut txn, |_| {});
        assert!(asked.is_empty());
    }

    #[test]
    fn spooled_message_is_read_off_the_worker() {
        let dir = TempDir::new("uribl");
        let path = dir.path().join("spool");
        std::fs::write(&path, b"Subject: x\r\n\r\nhttp://spooled.example/\r\n").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mut txn = txn_from("<s@example.org>");
        txn.body.mem = b"Subject: x\r\n\r\n".to_vec();
        txn.body.spool = Some(SpoolFile {
            path: path.clone(),
            file,
        });
        let p = plugin(&["action", "deny"], "dbl.example\n");
        let (o, asked) = check(&*p, &mut txn, |s| {
            s.answer(
                "spooled.example.dbl.example",
                QType::A,
                vec![a("127.0.1.2")],
            )
        });
        assert!(matches!(o, Outcome::Deny(_)), "{o:?} {asked:?}");
    }

    #[test]
    fn arguments_and_config_errors() {
        for args in [
            &["action", "reject"][..],
            &["checkip", "maybe"],
            &["scan-headers"],
            &["max_lookups", "0"],
            &["max_bytes", "x"],
            &["timeout", "-2"],
            &["other", "1"],
        ] {
            assert!(
                build(new, &format!("uribl {}", args.join(" ")), &[]).is_err(),
                "{args:?}"
            );
        }
        assert!(build(
            new,
            "uribl check-headers 1 scan-headers yes checkip no",
            &[]
        )
        .is_ok());
        for (file, text, line) in [
            ("uribl_zones", "ok.example\nbad.example 2,x deny\n", 2),
            ("uribl_zones", "ok.example 2 explode\n", 1),
            ("uribl_zones", "ok.example 2 deny extra\n", 1),
            ("uribl_zones", "bad zone!\n", 1),
            ("uribl_whitelist_domains", "ok.example\nnot a domain\n", 2),
        ] {
            let err = build(new, "uribl", &[(file, text)]).err().expect(text);
            assert_eq!((err.file.as_str(), err.line), (file, line), "{err}");
        }
        // A negative mask means every list of the zone.
        let zone = parse_zone(&origin("z.example -1,4"), Action::Log).unwrap();
        assert_eq!((zone.mask, zone.action), (ALL_LISTS, Action::Log));
        // No zones: nothing done.
        let p = build(new, "uribl", &[]).unwrap();
        let mut txn = message("\nhttp://spam.example/\n");
        let (o, asked) = check(&*p, &mut txn, |_| {});
        assert_eq!((o, asked.len()), (Outcome::Declined, 0));
    }
}
