//! # ident/p0f — the client's operating system, from its TCP fingerprint
//!
//! ## Synopsis
//!
//! ```text
//! ident/p0f /run/p0f.sock [local_ip IP] [smite_os REGEX] [add_headers 0|1] [timeout S]
//!           [reject 0|1|naughty] [reject_type perm|temp|disconnect|temp_disconnect] [loglevel N]
//! ```
//!
//! ## Description
//!
//! [p0f](https://lcamtuf.coredump.cx/p0f3/) watches the TCP handshakes on the server's
//! interface and guesses the operating system of each client from how its SYN looks. This
//! plugin asks p0f, through its API socket (p0f v3, `p0f -s /run/p0f.sock`), what it made of
//! the client, when the client connects, and keeps the answer in the connection note `P0f`
//! (OS name and flavor, network distance, link type, uptime) for other plugins:
//! `greylisting p0f genre,windows` greylists only clients p0f takes for Windows.
//!
//! p0f must run on the same host, on the interface the clients' SYNs arrive on, and must be
//! up before the client connects. p0f gets captured packets in batches, up to 250 ms late,
//! so a client it does not know yet when it connects is asked about once more at `MAIL`, at
//! least 0.4 s after the connection was accepted (a `p0f_blocked_operating_systems` match is
//! then refused there). A client p0f still does not know gets "no match" and the plugin
//! declines. So does every failure to ask (p0f down, a timeout, a reply that is not a valid
//! p0f v3 reply): the connection goes on without a fingerprint, with one log line.
//!
//! The plugin asks about the client address the server knows: on a `proxy` listener, the one
//! the PROXY header gave. p0f on this host saw the balancer's SYNs, not the client's, so
//! behind a balancer p0f answers "no match": run p0f where the clients' SYNs arrive, or leave
//! the plugin off there.
//!
//! `smite_os REGEX` lowers the connection's karma by one (qpsmtpd's `adjust_karma(-1)` on the
//! shared note `Karma`, which needs `karma` before `ident/p0f` in `config/plugins`; without it
//! the point is only logged) when the OS (`os_name os_flavor`, e.g. `Windows 7 or 8`) matches,
//! case-insensitively. The config file `p0f_blocked_operating_systems` goes further: a client
//! whose OS matches one of its patterns is refused as `reject` says.
//!
//! With `add_headers 1`, each message gets an `X-P0F` header:
//! `X-P0F: Linux 2.2.x-3.x; distance=0; link=Ethernet or modem`.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | *socket path* (first) | | p0f's API socket (`p0f -s PATH`); required |
//! | `local_ip IP` | | qpsmtpd's address of the server as p0f sees it, for p0f v2's queries; p0f v3 is asked by the client address alone, so it is checked and otherwise unused |
//! | `version 3` | `3` | the p0f API version; only 3 is supported (p0f v2 is long gone from distributions) |
//! | `smite_os REGEX` | | karma -1 for an OS that matches (case-insensitive) |
//! | `add_headers 0\|1` | `0` | add the `X-P0F` header to each message |
//! | `timeout S` | `2` | seconds for the whole question to p0f (connect, ask, answer) |
//! | `reject 0\|1\|naughty` | `1` | what a match in `p0f_blocked_operating_systems` does: log only, refuse, or mark the connection naughty |
//! | `reject_type`, `loglevel` | | the common arguments |
//!
//! ## Config files
//!
//! `p0f_blocked_operating_systems`: regular expressions, one per line, matched
//! case-insensitively against the OS (`os_name os_flavor`); a client that matches one is
//! refused with `550 5.7.1 Your operating system is not welcome here` (or as `reject` and
//! `reject_type` say). qpsmtpd 0.94's plugin reads no such file: this is ringsmtpd's, for
//! operators who refused by OS with older qpsmtpd p0f setups.
//!
//! ## Hooks
//!
//! `connect` (the question to p0f, `smite_os`, the blocked list), `mail` (the question again,
//! for a client p0f did not know yet at `connect`), `data_post` (the header, with
//! `add_headers 1`). List `ident/p0f` before the plugins that read its note.
//!
//! ## Notes
//!
//! Writes the connection note `P0f` (the plugin API's `shared::P0f`; qpsmtpd's `p0f` note with
//! `genre`, `detail`, `distance`, `link`, `uptime`) and lowers `Karma` with `smite_os`. Read by
//! `greylisting`'s `p0f` argument.
//!
//! Differences from qpsmtpd: only the p0f v3 API (`version 2` is refused at start); a reply
//! that is not exactly p0f v3's is discarded, not half-read; the whole question has a
//! deadline.
//!
//! ## Standards
//!
//! p0f v3's API (p0f 3.09b `docs/README`, section "API access"): a 21-byte query (magic
//! `0x50304601`, address type 4 or 6, 16 address bytes) and a 232-byte reply (magic
//! `0x50304602`, status `0x00` bad query, `0x10` OK, `0x20` no match, then counters and six
//! NUL-terminated 32-byte strings), in the host's byte order.
//!
//! ## Security
//!
//! p0f's reply is read as hostile input: exactly 232 bytes (a longer or shorter answer is
//! refused), the right magic and a known status, every string NUL-terminated within its 32
//! bytes and printable ASCII, or the whole reply is discarded. Nothing from it reaches a log
//! line or a header unchecked, and headers go through the header API, which turns control
//! characters into spaces. A client can only influence what p0f guesses (an attacker can
//! shape its SYN to look like any OS): use the fingerprint for scoring and greylisting, and
//! refuse by OS only with care. The socket is p0f's: anyone who can write to it can ask
//! about any address, nothing more.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use regex::{Regex, RegexBuilder};
use ringsmtpd_plugin_api::args::{key_values, parse_flag, parse_timeout};
use ringsmtpd_plugin_api::net::Endpoint;
use ringsmtpd_plugin_api::shared::{Karma, P0f};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
    Transaction,
};

use crate::helpers::deadline::within;

/// The `ident/p0f` plugin.
pub struct P0fPlugin {
    common: Common,
    socket: PathBuf,
    smite_os: Option<Regex>,
    blocked: Vec<Regex>,
    add_headers: bool,
    timeout: Duration,
}

/// The arguments after the socket path (a line that starts with one forgot the path).
const KEYS: &[&str] = &["local_ip", "version", "smite_os", "add_headers", "timeout"];

const BLOCKED_MSG: &str = "Your operating system is not welcome here";

/// Builds `ident/p0f` from its config line and `p0f_blocked_operating_systems`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn pattern(what: &str, text: &str) -> Result<Regex, String> {
    RegexBuilder::new(text)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("{what} is not a regular expression: {e}"))
}

fn build(init: &PluginInit<'_>) -> Result<P0fPlugin, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let Some((socket, rest)) = rest.split_first() else {
        return Err(init.error("the first argument must be p0f's API socket path"));
    };
    if KEYS.contains(socket) {
        return Err(init.error("the first argument must be p0f's API socket path"));
    }
    let mut p = P0fPlugin {
        common,
        socket: PathBuf::from(socket),
        smite_os: None,
        blocked: Vec::new(),
        add_headers: false,
        timeout: Duration::from_secs(2),
    };
    for (key, value) in key_values(rest).map_err(|e| init.error(e))? {
        match key {
            "local_ip" => {
                value.parse::<IpAddr>().map_err(|_| {
                    init.error(format!("local_ip must be an IP address, not '{value}'"))
                })?;
            }
            "version" if value == "3" => {}
            "version" => {
                return Err(init.error(format!(
                    "only p0f v3's API is supported, not version '{value}'"
                )))
            }
            "smite_os" => p.smite_os = Some(pattern("smite_os", value).map_err(|e| init.error(e))?),
            "add_headers" => p.add_headers = parse_flag(key, value).map_err(|e| init.error(e))?,
            "timeout" => p.timeout = parse_timeout(value).map_err(|e| init.error(e))?,
            _ => return Err(init.unknown(key)),
        }
    }
    for line in init
        .config
        .lines("p0f_blocked_operating_systems")?
        .unwrap_or_default()
    {
        p.blocked
            .push(pattern("the line", &line.text).map_err(|e| line.error(e))?);
    }
    Ok(p)
}

/// p0f gets the captured packets from libpcap in batches, up to 250 ms late (its pcap read
/// timeout), so a client that connects and is asked about at once may not be known yet. A
/// "no match" at `connect` is asked again at `MAIL`, once this long after the accept.
const SETTLE: Duration = Duration::from_millis(400);

/// Private note: p0f did not know the client at `connect`; ask again at `MAIL`.
struct AskAgain;

impl P0fPlugin {
    /// Asks p0f about the client and acts on the answer; `first` at `connect`, where a "no
    /// match" is asked again later.
    async fn query(&self, cx: &mut Cx, first: bool) -> Outcome {
        let ip = cx.conn.remote.ip().to_canonical();
        match self.ask(cx, ip).await {
            Ok(Answer::Match(fp)) => self.judge(cx, fp),
            Ok(Answer::NoMatch) if first => {
                self.common.log(
                    cx,
                    Level::Debug,
                    format_args!("no match yet, asking again at MAIL"),
                );
                cx.conn.notes.set(AskAgain);
                Outcome::Declined
            }
            Ok(Answer::NoMatch) => {
                self.common
                    .log(cx, Level::Info, format_args!("skip, no match"));
                Outcome::Declined
            }
            Ok(Answer::BadQuery) => {
                self.common
                    .log(cx, Level::Error, format_args!("skip, p0f says bad query"));
                Outcome::Declined
            }
            Err(e) => {
                self.common.log(cx, Level::Error, format_args!("skip, {e}"));
                Outcome::Declined
            }
        }
    }

    /// Asks p0f about `ip` within the timeout.
    async fn ask(&self, cx: &Cx, ip: IpAddr) -> Result<Answer, String> {
        let exchange = async {
            let endpoint = Endpoint::Unix(self.socket.clone());
            let mut stream = cx
                .svc
                .connect(&endpoint, self.timeout)
                .await
                .map_err(|e| format!("cannot connect to {endpoint}: {e}"))?;
            let (res, _) = stream.write_all(query(ip).to_vec()).await;
            res.map_err(|e| format!("cannot send the query: {e}"))?;
            let mut buf = Vec::with_capacity(REPLY_LEN + 1);
            loop {
                let (res, b) = stream.read(buf).await;
                buf = b;
                let n = res.map_err(|e| format!("cannot read the reply: {e}"))?;
                if buf.len() > REPLY_LEN {
                    return Err(format!("reply longer than {REPLY_LEN} bytes"));
                }
                if buf.len() == REPLY_LEN {
                    break;
                }
                if n == 0 {
                    return Err(format!("reply cut short at {} bytes", buf.len()));
                }
                // Room for one byte more than a reply, so a longer one shows.
                buf.reserve(REPLY_LEN + 1 - buf.len());
            }
            parse_reply(&buf)
        };
        within(&*cx.svc, self.timeout, exchange)
            .await
            .unwrap_or_else(|| Err(format!("no answer within {:?}", self.timeout)))
    }

    fn judge(&self, cx: &mut Cx, fp: P0f) -> Outcome {
        let genre = fp.genre();
        let mut line = genre.clone();
        if let Some(d) = fp.distance {
            line.push_str(&format!(", distance {d}"));
        }
        if let Some(re) = &self.smite_os {
            if re.is_match(&genre) {
                Karma::adjust(cx, -1);
                line.push_str(", karma -1");
            }
        }
        self.common.log(cx, Level::Info, format_args!("{line}"));
        let blocked = self.blocked.iter().any(|re| re.is_match(&genre));
        cx.conn.notes.set(fp);
        if blocked {
            self.common
                .log(cx, Level::Info, format_args!("fail, blocked OS {genre}"));
            return self.common.reject(cx, BLOCKED_MSG);
        }
        Outcome::Declined
    }
}

impl Plugin for P0fPlugin {
    fn hooks(&self) -> HookSet {
        let set = HookSet::of(&[Hook::Connect, Hook::Mail]);
        if self.add_headers {
            set.with(Hook::DataPost)
        } else {
            set
        }
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(self.query(cx, true))
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        if cx.conn.notes.take::<AskAgain>().is_none() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            // p0f may not have been handed the SYN yet: wait until SETTLE after the accept.
            if let Some(left) = SETTLE.checked_sub(cx.conn.started.elapsed()) {
                cx.svc.sleep(left).await;
            }
            self.query(cx, false).await
        })
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if let Some(fp) = cx.conn.notes.get::<P0f>() {
            let mut value = fp.genre();
            if let Some(d) = fp.distance {
                value.push_str(&format!("; distance={d}"));
            }
            if !fp.link.is_empty() {
                value.push_str(&format!("; link={}", fp.link));
            }
            txn.prepend_header("X-P0F", &value);
        }
        Step::DECLINED
    }
}

/// `greylisting`'s `p0f` argument (qpsmtpd's): `key,value` pairs, any of which makes a
/// fingerprint match.
#[derive(Debug, Clone)]
pub(crate) struct P0fMatch {
    text: String,
    rules: Vec<P0fRule>,
}

#[derive(Debug, Clone)]
enum P0fRule {
    Genre(Regex),
    Detail(Regex),
    Link(Regex),
    /// More hops away than this.
    Distance(u16),
    /// Up for less than this many minutes.
    Uptime(u32),
}

impl PartialEq for P0fMatch {
    fn eq(&self, other: &P0fMatch) -> bool {
        self.text == other.text
    }
}
impl Eq for P0fMatch {}

impl P0fMatch {
    pub(crate) fn parse(text: &str) -> Result<P0fMatch, String> {
        let words: Vec<&str> = text.split(',').collect();
        if !words.len().is_multiple_of(2) {
            return Err(format!("p0f takes key,value pairs, not '{text}'"));
        }
        let regex = |v: &str| pattern(&format!("p0f: '{v}'"), v);
        let number = |k: &str, v: &str| format!("p0f: {k} takes a number, not '{v}'");
        let mut rules = Vec::new();
        for pair in words.chunks(2) {
            let (key, value) = (pair[0], pair[1]);
            rules.push(match key {
                "genre" => P0fRule::Genre(regex(value)?),
                "detail" => P0fRule::Detail(regex(value)?),
                "link" => P0fRule::Link(regex(value)?),
                "distance" => P0fRule::Distance(value.parse().map_err(|_| number(key, value))?),
                "uptime" => P0fRule::Uptime(value.parse().map_err(|_| number(key, value))?),
                _ => {
                    return Err(format!(
                        "p0f: unknown key '{key}' (genre, detail, link, distance, uptime)"
                    ))
                }
            });
        }
        Ok(P0fMatch {
            text: text.to_string(),
            rules,
        })
    }

    pub(crate) fn matches(&self, fp: &P0f) -> bool {
        self.rules.iter().any(|rule| match rule {
            P0fRule::Genre(re) => re.is_match(&fp.genre()),
            P0fRule::Detail(re) => re.is_match(&fp.os_flavor),
            P0fRule::Link(re) => re.is_match(&fp.link),
            P0fRule::Distance(n) => fp.distance.is_some_and(|d| d > *n),
            P0fRule::Uptime(n) => fp.uptime_min.is_some_and(|u| u < *n),
        })
    }
}

// ---- p0f v3's API (p0f 3.09b docs/README, "API access") ----

const QUERY_MAGIC: u32 = 0x5030_4601;
const REPLY_MAGIC: u32 = 0x5030_4602;
const STATUS_BADQUERY: u32 = 0x00;
const STATUS_OK: u32 = 0x10;
const STATUS_NOMATCH: u32 = 0x20;
const QUERY_LEN: usize = 21;
const REPLY_LEN: usize = 232;
/// The length of each string field of the reply, its NUL included.
const STR_LEN: usize = 32;

/// What p0f answered.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Match(P0f),
    NoMatch,
    BadQuery,
}

/// The query for `ip`: magic, address type, the address in 16 bytes (IPv4 in the first four).
fn query(ip: IpAddr) -> [u8; QUERY_LEN] {
    let mut q = [0u8; QUERY_LEN];
    q[..4].copy_from_slice(&QUERY_MAGIC.to_ne_bytes());
    match ip {
        IpAddr::V4(v4) => {
            q[4] = 4;
            q[5..9].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            q[4] = 6;
            q[5..21].copy_from_slice(&v6.octets());
        }
    }
    q
}

fn u32_at(b: &[u8; REPLY_LEN], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One string field: NUL-terminated within its 32 bytes, printable ASCII before the NUL.
fn str_at(b: &[u8; REPLY_LEN], at: usize, name: &str) -> Result<String, String> {
    let field = &b[at..at + STR_LEN];
    let end = field
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| format!("{name} is not NUL-terminated"))?;
    let text = &field[..end];
    if !text.iter().all(|c| (0x20..0x7f).contains(c)) {
        return Err(format!("{name} is not printable ASCII"));
    }
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// Parses a whole reply, strictly.
fn parse_reply(bytes: &[u8]) -> Result<Answer, String> {
    let b: &[u8; REPLY_LEN] = bytes
        .try_into()
        .map_err(|_| format!("reply of {} bytes, not {REPLY_LEN}", bytes.len()))?;
    if u32_at(b, 0) != REPLY_MAGIC {
        return Err("bad reply magic".into());
    }
    match u32_at(b, 4) {
        STATUS_OK => {}
        STATUS_NOMATCH => return Ok(Answer::NoMatch),
        STATUS_BADQUERY => return Ok(Answer::BadQuery),
        s => return Err(format!("unknown status {s:#x}")),
    }
    // Offsets: 8..36 seven u32 counters (first_seen, last_seen, total_conn, uptime_min,
    // up_mod_days, last_nat, last_chg), 36 s16 distance, 38 bad_sw, 39 os_match_q, then the
    // strings os_name, os_flavor, http_name, http_flavor, link_type, language.
    let uptime_min = u32_at(b, 20);
    let distance = i16::from_ne_bytes([b[36], b[37]]);
    let os_name = str_at(b, 40, "os_name")?;
    let os_flavor = str_at(b, 72, "os_flavor")?;
    str_at(b, 104, "http_name")?;
    str_at(b, 136, "http_flavor")?;
    let link = str_at(b, 168, "link_type")?;
    str_at(b, 200, "language")?;
    Ok(Answer::Match(P0f {
        os_name,
        os_flavor,
        // -1 is p0f's "unknown"; no real path is thousands of hops long.
        distance: u16::try_from(distance).ok(),
        link,
        uptime_min: (uptime_min > 0).then_some(uptime_min),
    }))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    use ringsmtpd_plugin_api::shared::Karma;
    use ringsmtpd_plugin_api::testing::{self, cx, run, TempDir};
    use ringsmtpd_plugin_api::{Outcome, Reject};

    use super::*;

    /// A p0f v3 reply as p0f writes it (host byte order), with these fields.
    fn reply(status: u32, os: &str, flavor: &str, link: &str, distance: i16) -> Vec<u8> {
        let mut b = vec![0u8; REPLY_LEN];
        b[..4].copy_from_slice(&REPLY_MAGIC.to_ne_bytes());
        b[4..8].copy_from_slice(&status.to_ne_bytes());
        b[20..24].copy_from_slice(&90u32.to_ne_bytes()); // uptime_min
        b[36..38].copy_from_slice(&distance.to_ne_bytes());
        for (at, text) in [(40, os), (72, flavor), (168, link)] {
            b[at..at + text.len()].copy_from_slice(text.as_bytes());
        }
        b
    }

    fn linux() -> Vec<u8> {
        reply(STATUS_OK, "Linux", "2.2.x-3.x", "Ethernet or modem", 0)
    }

    /// A p0f socket in `dir` that answers one query per connection, with `answers` in turn,
    /// and hands the last query back.
    fn fake_p0f(dir: &TempDir, answers: Vec<Vec<u8>>) -> (String, JoinHandle<Vec<u8>>) {
        let path = dir.join("p0f.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let mut q = vec![0u8; QUERY_LEN];
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                s.read_exact(&mut q).unwrap();
                s.write_all(&answer).unwrap();
            }
            q
        });
        (path, server)
    }

    fn plugin(line: &str, files: &[(&str, &str)]) -> P0fPlugin {
        testing::build(build, &format!("ident/p0f {line}"), files).unwrap()
    }

    /// Runs `connect` for a client at 192.0.2.7 against a p0f that answers `answer`.
    fn connect(args: &str, files: &[(&str, &str)], answer: Vec<u8>) -> (Outcome, Cx, Vec<u8>) {
        let dir = TempDir::new("p0f");
        let (path, server) = fake_p0f(&dir, vec![answer]);
        let p = plugin(&format!("{path} {args}"), files);
        let (mut c, _) = cx("192.0.2.7:40000");
        c.conn.notes.set(Karma::default()); // as the `karma` plugin leaves it at connect
        let o = run(p.connect(&mut c));
        (o, c, server.join().unwrap())
    }

    #[test]
    fn the_query_is_magic_type_and_address() {
        let q = query("192.0.2.7".parse().unwrap());
        assert_eq!(&q[..4], &0x5030_4601u32.to_ne_bytes());
        assert_eq!(q[4], 4);
        assert_eq!(&q[5..9], &[192, 0, 2, 7]);
        assert!(q[9..].iter().all(|&b| b == 0));
        let q = query("2001:db8::1".parse().unwrap());
        assert_eq!(q[4], 6);
        assert_eq!(&q[5..7], &[0x20, 0x01]);
        assert_eq!(q[20], 1);
    }

    #[test]
    fn a_match_becomes_the_note() {
        let (o, c, q) = connect("", &[], linux());
        assert_eq!(o, Outcome::Declined);
        assert_eq!(q, query("192.0.2.7".parse().unwrap()));
        let fp = c.conn.notes.get::<P0f>().expect("the p0f note");
        assert_eq!(fp.genre(), "Linux 2.2.x-3.x");
        assert_eq!(fp.distance, Some(0));
        assert_eq!(fp.link, "Ethernet or modem");
        assert_eq!(fp.uptime_min, Some(90));
        assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, 0);
    }

    #[test]
    fn no_match_and_bad_query_decline_without_a_note() {
        for status in [STATUS_NOMATCH, STATUS_BADQUERY] {
            let (o, c, _) = connect("", &[], reply(status, "", "", "", -1));
            assert_eq!(o, Outcome::Declined);
            assert!(!c.conn.notes.contains::<P0f>(), "{status:#x}");
            assert_eq!(
                c.conn.notes.contains::<AskAgain>(),
                status == STATUS_NOMATCH
            );
        }
    }

    /// p0f learns of a SYN late: "no match" at connect, asked again (once) at MAIL.
    #[test]
    fn a_client_unknown_at_connect_is_asked_about_at_mail() {
        let dir = TempDir::new("p0f-late");
        let no_match = reply(STATUS_NOMATCH, "", "", "", -1);
        let files = [("p0f_blocked_operating_systems", "^linux\n")];
        let (path, server) = fake_p0f(&dir, vec![no_match.clone(), linux()]);
        let p = plugin(&path, &files);
        let (mut c, fake) = cx("192.0.2.7:40000");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert!(!c.conn.notes.contains::<P0f>());
        let mut txn = Transaction::default();
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::deny(BLOCKED_MSG));
        assert_eq!(c.conn.notes.get::<P0f>().unwrap().os_name, "Linux");
        server.join().unwrap();
        // Asked once again only: the next MAIL asks nothing.
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        assert_eq!(fake.connects.borrow().len(), 2);
        // Still unknown at MAIL: no match, logged.
        let dir = TempDir::new("p0f-never");
        let (path, server) = fake_p0f(&dir, vec![no_match.clone(), no_match]);
        let p = plugin(&path, &[]);
        let (mut c, fake) = cx("192.0.2.7:40000");
        run(p.connect(&mut c));
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        server.join().unwrap();
        assert!(fake.logged("skip, no match"));
        assert!(!c.conn.notes.contains::<P0f>());
    }

    #[test]
    fn hostile_replies_are_discarded_whole() {
        let mut no_nul = linux();
        no_nul[40..72].fill(b'A');
        let mut control = linux();
        control[170] = b'\r';
        let mut magic = linux();
        magic[0] ^= 1;
        let mut long = linux();
        long.push(0);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("cut short", linux()[..231].to_vec()),
            ("header only", linux()[..8].to_vec()),
            ("one byte more", long),
            ("bad magic", magic),
            ("unknown status", reply(0x11, "Linux", "", "", 0)),
            ("os_name without NUL", no_nul),
            ("CR in link_type", control),
            ("garbage", vec![0xff; REPLY_LEN]),
        ];
        for (what, bytes) in cases {
            assert!(parse_reply(&bytes).is_err(), "{what}");
            let (o, c, _) = connect("", &[], bytes);
            assert_eq!(o, Outcome::Declined, "{what}");
            assert!(!c.conn.notes.contains::<P0f>(), "{what}");
        }
    }

    #[test]
    fn unknown_distance_and_uptime_are_none() {
        let mut b = reply(STATUS_OK, "Windows", "7 or 8", "", -1);
        b[20..24].fill(0);
        let Ok(Answer::Match(fp)) = parse_reply(&b) else {
            panic!("a valid reply")
        };
        assert_eq!((fp.distance, fp.uptime_min), (None, None));
        assert_eq!(fp.genre(), "Windows 7 or 8");
    }

    #[test]
    fn smite_os_lowers_karma_when_the_os_matches() {
        let (_, c, _) = connect("smite_os linux", &[], linux());
        assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, -1);
        let (_, c, _) = connect("smite_os windows", &[], linux());
        assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, 0);
    }

    #[test]
    fn a_blocked_os_is_refused_as_reject_says() {
        let files = [(
            "p0f_blocked_operating_systems",
            "# none of these\n^windows\nlinux 2\\.2\n",
        )];
        let (o, c, _) = connect("", &files, linux());
        assert_eq!(o, Outcome::deny(BLOCKED_MSG));
        assert!(
            c.conn.notes.contains::<P0f>(),
            "the note is kept for later plugins"
        );
        let (o, c, _) = connect("reject naughty", &files, linux());
        assert_eq!(o, Outcome::Declined);
        assert!(c
            .conn
            .notes
            .contains::<ringsmtpd_plugin_api::shared::Naughty>());
        let (o, _, _) = connect(
            "",
            &[("p0f_blocked_operating_systems", "^windows\n")],
            linux(),
        );
        assert_eq!(o, Outcome::Declined);
        assert_eq!(plugin("/p reject 0", &[]).common.args.reject, Reject::No);
    }

    #[test]
    fn p0f_down_or_silent_declines() {
        let p = plugin("/nonexistent/p0f.sock", &[]);
        let (mut c, fake) = cx("192.0.2.7:40000");
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert!(fake.logged("cannot connect"), "{:?}", fake.logs.borrow());
        let (mut c, fake) = cx("192.0.2.7:40000");
        fake.mute_peers.set(true);
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert!(fake.logged("no answer within"), "{:?}", fake.logs.borrow());
        assert!(!c.conn.notes.contains::<P0f>());
    }

    #[test]
    fn the_header_only_with_add_headers() {
        let asks = HookSet::of(&[Hook::Connect, Hook::Mail]);
        assert_eq!(plugin("/p", &[]).hooks(), asks);
        let p = plugin("/p add_headers 1", &[]);
        assert_eq!(p.hooks(), asks.with(Hook::DataPost));
        let (mut c, _) = cx("192.0.2.7:40000");
        let mut txn = Transaction::default();
        run(p.data_post(&mut c, &mut txn));
        assert_eq!(txn.added_headers, "", "no fingerprint, no header");
        let Ok(Answer::Match(fp)) = parse_reply(&linux()) else {
            panic!("a valid reply")
        };
        c.conn.notes.set(fp);
        run(p.data_post(&mut c, &mut txn));
        assert_eq!(
            txn.added_headers,
            "X-P0F: Linux 2.2.x-3.x; distance=0; link=Ethernet or modem\r\n"
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        testing::assert_bad_args(
            build,
            "ident/p0f",
            &[
                &[],
                &["smite_os", "windows"],
                &["/p", "version", "2"],
                &["/p", "local_ip", "not-an-ip"],
                &["/p", "smite_os", "("],
                &["/p", "add_headers", "maybe"],
                &["/p", "timeout", "0"],
                &["/p", "frobnicate", "1"],
                &["/p", "smite_os"],
            ],
        );
        testing::assert_bad_lines(
            |init: &PluginInit<'_>| build(init),
            "ident/p0f /p",
            "p0f_blocked_operating_systems",
            &[("windows\n(unclosed\n", 2)],
        );
        plugin("/p local_ip 203.0.113.5 version 3 timeout 0.5", &[]);
    }
}
