//! Command line: parse, validate, refuse anything unbounded or aimed off this machine.
//!
//! Two rules are enforced here rather than documented: every run is bounded (a message count
//! or a duration, and never more than [`MAX_DURATION`]), and every target is a loopback address
//! unless `--allow-host` names it. A load generator that can be pointed at anything by a typo
//! is a denial-of-service tool; this one is a benchmark.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::schedule::RateSchedule;

/// The longest run allowed, whatever the options say: a forgotten run stops by itself.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Message sequence numbers are written with this many digits (`X-Loadtest-Seq`), so every
/// message of a given `--size` has exactly that size.
pub const SEQ_DIGITS: usize = 10;
/// Largest `--messages`: what fits in [`SEQ_DIGITS`].
pub const MAX_MESSAGES: u64 = 9_999_999_999;
/// Largest generated message (`--size`); sample files have their own cap in `message.rs`.
pub const MAX_SIZE: usize = 64 << 20;
/// Most recipients per message: beyond RFC 5321's 100-recipient minimum, enough to probe a
/// server's `max_rcpts` limit.
pub const MAX_RCPTS: u32 = 1000;
/// Most connections: each is a file descriptor here and one on the server.
pub const MAX_CONNECTIONS: usize = 200_000;

pub const USAGE: &str = "\
usage: smtp-loadtest [options] (--messages N | --duration SECS | both)

Drives SMTP servers on this machine (loopback) and reports throughput, per-phase latency
(hdrhistogram) and reply codes. Every run is bounded: --messages and/or --duration, and never
longer than 10 minutes.

target
  --target ADDR:PORT    server to drive (repeatable; connections spread round-robin).
                        Default 127.0.0.1:2525. Only loopback (127.0.0.0/8, ::1, localhost)
                        unless --allow-host names the address.
  --allow-host ADDR     permit this non-loopback IP address as a target (a test host you own)
load
  --threads N           worker threads, one monoio runtime each (default: available cores)
  --driver D            auto | uring | epoll (default auto)
  --connections N       concurrent connections (default 10)
  --messages N          total messages to attempt
  --duration SECS       stop starting messages after SECS (max 600)
  --per-session N       messages per connection before QUIT (default 1; 0 = no limit)
  --rcpts N             recipients per message (default 1)
  --size BYTES          generated message size, e.g. 1024, 1k, 100k, 1m (default 1k); the
                        headers alone take about 280 bytes
  --messages-dir DIR    use the *.eml files in DIR instead (round-robin); their Message-ID
                        is replaced
  --pipelining on|off   RFC 2920: MAIL, RCPTs and DATA in one write (default on; off also
                        when the server does not offer PIPELINING)
  --rate N              open loop: start N messages/s in total, latency measured from each
                        message's scheduled time (coordinated omission counted). Default:
                        closed loop (each connection sends as fast as replies come).
                        Steps RATE:SECS,RATE:SECS,... change the rate over the run (an
                        overload run: 500:10,1000:20,250:20); they set --duration
  --idle                hold the connections open after EHLO until --duration ends, send no
                        mail (to measure a server's memory per idle connection); prints
                        'smtp-loadtest: idle: N connections open' on stderr when they are up
envelope
  --from ADDR           MAIL FROM address (default loadtest@loadtest.example)
  --to DOMAIN           recipient domain: rcptN@DOMAIN (default example.com)
  --helo NAME           EHLO name (default loadtest.example)
TLS and AUTH
  --starttls            STARTTLS (RFC 3207) after EHLO, then EHLO again, on every session; a
                        server that does not offer it, or a failed handshake, is a connection
                        error (stage 'starttls'). Full handshakes: no session resumption
  --tls-verify V        none (default: encrypt, check nothing) or a PEM file of CA
                        certificates the server's certificate must chain to
  --tls-name NAME       the name sent as SNI and checked in the certificate (default: the
                        target's IP address)
  --tls-resume          let sessions resume earlier TLS sessions (tickets/IDs), as a client
                        with a session cache does
  --auth-plain USER:PASS
                        AUTH PLAIN (RFC 4616) after EHLO (after STARTTLS with --starttls);
                        anything but 235 is a connection error (stage 'auth')
  --auth-plain-file F   the same, USER:PASS from the first line of file F (keeps the password
                        off the command line)
source address
  --proxy v1|v2         send a PROXY protocol header first (the server must expect one)
  --source-range A-B    client addresses, e.g. 127.0.0.2-127.0.0.250, used round-robin:
                        written into the PROXY header with --proxy (any address), else the
                        socket is bound to them (loopback addresses only)
limits
  --timeout SECS        wait at most this long for any reply (default 30)
  --connect-timeout S   wait at most this long for a connection (default 10)
  --max-failures N      a connection slot gives up after N consecutive connection failures
                        (default 5); the run ends when every slot has given up
  --defer-refused       a message whose connection is refused with 421 (a server at its
                        connection limit) or does not connect within --connect-timeout (a
                        full listen queue) is given up, as a client that defers it for
                        minutes would, not retried in this run; these do not count as
                        failures toward --max-failures
  --skip-late SECS      open loop: a message no connection slot is free to start within SECS
                        of its scheduled time is not sent (counted as skipped): the slots
                        model independent clients, not a queue of the generator's own
output
  --json                print the report as JSON on stdout instead of the table
  --svg FILE            write latency-by-percentile and throughput-over-time plots
  --accepted FILE       write the X-Loadtest-Seq of every message answered 250 to its final
                        dot, one a line, ascending (to check each arrived exactly once)
  --quiet               no progress line
  --help, --version

Exit status: 0 the run happened (see the report for errors), 1 nothing got through (every
connection failed), 2 bad options.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    Auto,
    Uring,
    Epoll,
}

/// How the server's certificate is checked after STARTTLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsVerifyOpt {
    /// Encrypt, check nothing (the handshake's signatures are still verified).
    None,
    /// The certificate must chain to a CA in this PEM file and name `--tls-name`.
    CaFile(PathBuf),
}

/// `--starttls` and its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub verify: TlsVerifyOpt,
    /// SNI and the name checked; `None`: the target's IP address.
    pub name: Option<String>,
    /// Allow session resumption.
    pub resume: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Generated messages of exactly this many bytes (headers included, final dot excluded).
    Size(usize),
    /// Sample messages from this directory.
    Dir(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub targets: Vec<SocketAddr>,
    pub threads: usize,
    pub driver: Driver,
    pub connections: usize,
    pub messages: Option<u64>,
    pub duration: Option<Duration>,
    /// 0 = no limit.
    pub per_session: u32,
    pub rcpts: u32,
    pub body: Body,
    pub pipelining: bool,
    /// `--rate`: open loop, at one rate or a schedule of steps.
    pub rate: Option<RateSchedule>,
    pub idle: bool,
    pub proxy: Option<ProxyVersion>,
    pub source_range: Option<(IpAddr, IpAddr)>,
    pub from: String,
    pub to_domain: String,
    pub helo: String,
    /// `--starttls`.
    pub tls: Option<TlsOptions>,
    /// `--auth-plain`: user name and password.
    pub auth_plain: Option<(String, String)>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_failures: u32,
    /// `--defer-refused`: a message whose connection is refused with 421 is given up (a real
    /// client defers it for minutes), not retried in this run.
    pub defer_refused: bool,
    /// `--skip-late`: in open loop, a message no slot could start within this long after its
    /// scheduled time is skipped, not sent late.
    pub skip_late: Option<Duration>,
    pub json: bool,
    pub svg: Option<PathBuf>,
    /// `--accepted FILE`: where the sequence numbers of the messages that got 250 go.
    pub accepted_log: Option<PathBuf>,
    pub quiet: bool,
}

impl Config {
    /// A config for `target` with every default; tests and embedders change fields and call
    /// [`Config::validate`].
    pub fn new(target: SocketAddr) -> Config {
        Config {
            targets: vec![target],
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            driver: Driver::Auto,
            connections: 10,
            messages: None,
            duration: None,
            per_session: 1,
            rcpts: 1,
            body: Body::Size(1024),
            pipelining: true,
            rate: None,
            idle: false,
            proxy: None,
            source_range: None,
            from: "loadtest@loadtest.example".into(),
            to_domain: "example.com".into(),
            helo: "loadtest.example".into(),
            tls: None,
            auth_plain: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_failures: 5,
            defer_refused: false,
            skip_late: None,
            json: false,
            svg: None,
            accepted_log: None,
            quiet: false,
        }
    }

    /// Checks the rules that do not depend on how the config was made.
    pub fn validate(&self, allowed: &[IpAddr]) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("no --target".into());
        }
        for t in &self.targets {
            if !is_loopback(t.ip()) && !allowed.contains(&t.ip()) {
                return Err(format!(
                    "refusing target {t}: not a loopback address (name it with --allow-host {} \
                     if it is a test host you own)",
                    t.ip()
                ));
            }
            if t.port() == 0 {
                return Err(format!("target {t}: port 0"));
            }
        }
        if self.idle {
            if self.duration.is_none() {
                return Err("--idle needs --duration (how long to hold the connections)".into());
            }
            if self.messages.is_some() || self.rate.is_some() {
                return Err("--idle sends no mail: drop --messages/--rate".into());
            }
        } else if self.messages.is_none() && self.duration.is_none() {
            return Err("unbounded run refused: give --messages N and/or --duration SECS".into());
        }
        if let Some(d) = self.duration {
            if d > MAX_DURATION || d.is_zero() {
                return Err(format!(
                    "--duration must be above 0 and at most {} s",
                    MAX_DURATION.as_secs()
                ));
            }
        }
        if let Some(m) = self.messages {
            if m == 0 || m > MAX_MESSAGES {
                return Err(format!("--messages must be 1..={MAX_MESSAGES}"));
            }
        }
        if !(1..=1024).contains(&self.threads) {
            return Err("--threads must be 1..=1024".into());
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if !(1..=MAX_RCPTS).contains(&self.rcpts) {
            return Err(format!("--rcpts must be 1..={MAX_RCPTS}"));
        }
        if let Body::Size(s) = self.body {
            if !(64..=MAX_SIZE).contains(&s) {
                return Err(format!(
                    "--size must be 64..={MAX_SIZE} bytes (room for the headers)"
                ));
            }
        }
        if let Some((a, b)) = self.source_range {
            if a.is_ipv4() != b.is_ipv4() {
                return Err("--source-range: both ends must be the same family".into());
            }
            if ip_to_u128(a) > ip_to_u128(b) {
                return Err("--source-range: first address is above the last".into());
            }
            if self.proxy.is_none() && (!is_loopback(a) || !is_loopback(b)) {
                return Err(
                    "--source-range without --proxy binds the sockets: loopback addresses only"
                        .into(),
                );
            }
            for t in &self.targets {
                if t.is_ipv4() != a.is_ipv4() {
                    return Err(format!(
                        "--source-range is {} but target {t} is not",
                        if a.is_ipv4() { "IPv4" } else { "IPv6" }
                    ));
                }
            }
        }
        for (what, s) in [
            ("--from", &self.from),
            ("--to", &self.to_domain),
            ("--helo", &self.helo),
        ] {
            if s.is_empty() || s.len() > 200 || !s.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "{what}: printable ASCII without spaces, 1-200 bytes"
                ));
            }
            if s.contains(['<', '>']) {
                return Err(format!("{what}: no angle brackets"));
            }
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err("timeouts must be above 0".into());
        }
        if self.defer_refused && self.rate.is_none() {
            return Err(
                "--defer-refused needs --rate (in closed loop nothing paces the next try)".into(),
            );
        }
        if self.skip_late.is_some() && self.rate.is_none() {
            return Err("--skip-late needs --rate (only open loop schedules messages)".into());
        }
        if self.max_failures == 0 {
            return Err("--max-failures must be at least 1".into());
        }
        Ok(())
    }

    /// The hard stop: the end of `--duration`, else [`MAX_DURATION`].
    pub fn time_limit(&self) -> Duration {
        self.duration.unwrap_or(MAX_DURATION).min(MAX_DURATION)
    }
}

/// 127.0.0.0/8, ::1, and IPv4-mapped 127.x.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The `n`th address of the range, wrapping round.
pub fn nth_in_range((a, b): (IpAddr, IpAddr), n: u64) -> IpAddr {
    let lo = ip_to_u128(a);
    let span = ip_to_u128(b) - lo + 1;
    let x = lo + (n as u128) % span;
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(x as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(x)),
    }
}

/// Parses the command line (without the program name).
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let mut cfg = Config::new(SocketAddr::from(([127, 0, 0, 1], 2525)));
    let mut targets = Vec::new();
    let mut allowed = Vec::new();
    let mut starttls = false;
    let mut tls = TlsOptions {
        verify: TlsVerifyOpt::None,
        name: None,
        resume: false,
    };
    let mut tls_set = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // `--name=value` is accepted as well as `--name value`.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name.as_str() {
            "--target" | "-t" => targets.push(parse_target(&value()?)?),
            "--allow-host" => allowed.push(
                value()?
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .map_err(|_| "--allow-host takes an IP address")?,
            ),
            "--threads" | "-j" => cfg.threads = parse_num(&value()?, "--threads")?,
            "--driver" => {
                cfg.driver = match value()?.as_str() {
                    "auto" => Driver::Auto,
                    "uring" | "io_uring" => Driver::Uring,
                    "epoll" | "legacy" => Driver::Epoll,
                    d => return Err(format!("--driver: unknown '{d}' (auto, uring, epoll)")),
                }
            }
            "--connections" | "-c" => cfg.connections = parse_num(&value()?, "--connections")?,
            "--messages" | "-n" => cfg.messages = Some(parse_num(&value()?, "--messages")?),
            "--duration" | "-d" => cfg.duration = Some(parse_secs(&value()?, "--duration")?),
            "--per-session" => cfg.per_session = parse_num(&value()?, "--per-session")?,
            "--rcpts" => cfg.rcpts = parse_num(&value()?, "--rcpts")?,
            "--size" | "-s" => cfg.body = Body::Size(parse_size(&value()?)?),
            "--messages-dir" => cfg.body = Body::Dir(value()?.into()),
            "--pipelining" => {
                cfg.pipelining = match value()?.as_str() {
                    "on" | "yes" | "1" => true,
                    "off" | "no" | "0" => false,
                    v => return Err(format!("--pipelining: on or off, not '{v}'")),
                }
            }
            "--rate" => cfg.rate = Some(RateSchedule::parse(&value()?)?),
            "--idle" => cfg.idle = true,
            "--proxy" => {
                cfg.proxy = Some(match value()?.as_str() {
                    "v1" | "1" => ProxyVersion::V1,
                    "v2" | "2" => ProxyVersion::V2,
                    v => return Err(format!("--proxy: v1 or v2, not '{v}'")),
                })
            }
            "--source-range" => cfg.source_range = Some(parse_range(&value()?)?),
            "--from" => cfg.from = value()?,
            "--to" => cfg.to_domain = value()?,
            "--helo" => cfg.helo = value()?,
            "--timeout" => cfg.timeout = parse_secs(&value()?, "--timeout")?,
            "--connect-timeout" => {
                cfg.connect_timeout = parse_secs(&value()?, "--connect-timeout")?
            }
            "--max-failures" => cfg.max_failures = parse_num(&value()?, "--max-failures")?,
            "--defer-refused" => cfg.defer_refused = true,
            "--skip-late" => cfg.skip_late = Some(parse_secs(&value()?, "--skip-late")?),
            "--json" => cfg.json = true,
            "--svg" => cfg.svg = Some(value()?.into()),
            "--accepted" => cfg.accepted_log = Some(value()?.into()),
            "--quiet" | "-q" => cfg.quiet = true,
            "--starttls" => starttls = true,
            "--tls-verify" => {
                tls.verify = match value()?.as_str() {
                    "none" => TlsVerifyOpt::None,
                    "" => return Err("--tls-verify: none or a CA file".into()),
                    path => TlsVerifyOpt::CaFile(path.into()),
                };
                tls_set.push("--tls-verify");
            }
            "--tls-name" => {
                tls.name = Some(value()?);
                tls_set.push("--tls-name");
            }
            "--tls-resume" => {
                tls.resume = true;
                tls_set.push("--tls-resume");
            }
            "--auth-plain" => cfg.auth_plain = Some(parse_user_pass(&value()?, "--auth-plain")?),
            "--auth-plain-file" => {
                let path = value()?;
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("--auth-plain-file {path}: {e}"))?;
                let line = text.lines().next().unwrap_or("");
                cfg.auth_plain = Some(parse_user_pass(line, &format!("--auth-plain-file {path}"))?);
            }
            other => return Err(format!("unknown option '{other}' (see --help)")),
        }
    }
    if !targets.is_empty() {
        cfg.targets = targets;
    }
    if cfg.duration.is_none() {
        // A schedule of steps bounds the run by itself.
        cfg.duration = cfg.rate.as_ref().and_then(RateSchedule::total);
    }
    if starttls {
        cfg.tls = Some(tls);
    } else if let Some(opt) = tls_set.first() {
        return Err(format!("{opt} needs --starttls"));
    }
    cfg.validate(&allowed)?;
    Ok(cfg)
}

/// `USER:PASS` (the first `:` ends the user name): both non-empty, no CR, LF or NUL.
fn parse_user_pass(s: &str, what: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((u, p))
            if !u.is_empty()
                && !p.is_empty()
                && !s.contains(['\r', '\n', '\0'])
                && u.len() + p.len() <= 1000 =>
        {
            Ok((u.to_string(), p.to_string()))
        }
        _ => Err(format!(
            "{what}: USER:PASS, both non-empty, at most 1000 bytes, no CR, LF or NUL"
        )),
    }
}

/// `ADDR:PORT`, `[v6]:PORT` or `localhost:PORT`. No other host names: resolving would let a
/// name point anywhere, and the address rule is about where packets go.
pub fn parse_target(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--target {s}: bad port"))?;
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "--target {s}: expected IP:PORT, [IPv6]:PORT or localhost:PORT (no host names)"
    ))
}

fn parse_num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.replace('_', "")
        .parse()
        .map_err(|_| format!("{what} takes a whole number, not '{s}'"))
}

fn parse_secs(s: &str, what: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{what} takes seconds, not '{s}'"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
        return Err(format!("{what}: out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `1024`, `1k`, `100K`, `1m` (binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (digits, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("--size: '{s}' is not a size (1024, 1k, 100k, 1m)"))?;
    n.checked_mul(mul)
        .ok_or_else(|| format!("--size: '{s}' too large"))
}

/// `A-B` or a single address.
pub fn parse_range(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let bad = || format!("--source-range: '{s}' is not ADDR-ADDR");
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: IpAddr = a
        .trim()
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| bad())?;
    let b: IpAddr = b
        .trim()
        .trim_matches(['[', ']'])
        .parse()
        .map_err(|_| bad())?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Config, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn unbounded_runs_are_refused() {
        assert!(args("--connections 5").unwrap_err().contains("unbounded"));
        assert!(args("--duration 601").is_err());
        assert!(args("--duration 600").is_ok());
        assert!(args("--messages 10").is_ok());
        assert!(args("--idle --connections 3").is_err());
        assert!(args("--idle --duration 2").is_ok());
    }

    #[test]
    fn non_loopback_targets_need_allow_host() {
        assert!(args("--messages 1 --target 127.0.0.5:25").is_ok());
        assert!(args("--messages 1 --target [::1]:25").is_ok());
        assert!(args("--messages 1 --target localhost:25").is_ok());
        let e = args("--messages 1 --target 10.0.0.1:25").unwrap_err();
        assert!(e.contains("not a loopback"), "{e}");
        assert!(args("--messages 1 --target 192.0.2.7:25 --allow-host 192.0.2.7").is_ok());
        assert!(args("--messages 1 --target 192.0.2.8:25 --allow-host 192.0.2.7").is_err());
        assert!(args("--messages 1 --target mail.example.com:25").is_err());
        // The IPv4-mapped form of a loopback address is loopback; of anything else it is not.
        assert!(args("--messages 1 --target [::ffff:127.0.0.1]:25").is_ok());
        assert!(args("--messages 1 --target [::ffff:8.8.8.8]:25").is_err());
    }

    #[test]
    fn options_parse() {
        let c = args(
            "--target=127.0.0.1:2600 --connections 7 --messages 1_000 --size 100k --rcpts 3 \
             --pipelining off --proxy v2 --source-range 127.0.0.2-127.0.0.250 --rate 500 \
             --per-session 20 --timeout 2.5",
        )
        .unwrap();
        assert_eq!(c.targets, vec!["127.0.0.1:2600".parse().unwrap()]);
        assert_eq!((c.connections, c.messages, c.rcpts), (7, Some(1000), 3));
        assert_eq!(c.body, Body::Size(100 * 1024));
        assert!(!c.pipelining);
        assert_eq!(c.proxy, Some(ProxyVersion::V2));
        assert_eq!(c.rate.as_ref().and_then(RateSchedule::single), Some(500.0));
        let s = args("--rate 100:10,200:20,50:20").unwrap();
        assert_eq!(
            s.duration,
            Some(Duration::from_secs(50)),
            "a schedule bounds the run"
        );
        assert_eq!(c.per_session, 20);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert!(args("--messages 1 --tls-name mx.test")
            .unwrap_err()
            .contains("needs --starttls"));
    }

    #[test]
    fn source_ranges() {
        // Binding needs loopback addresses; a PROXY header may claim any address.
        assert!(args("--messages 1 --source-range 192.0.2.1-192.0.2.9").is_err());
        assert!(args("--messages 1 --proxy v1 --source-range 192.0.2.1-192.0.2.9").is_ok());
        assert!(args("--messages 1 --source-range 127.0.0.9-127.0.0.2").is_err());
        let r = parse_range("127.0.0.2-127.0.0.4").unwrap();
        let got: Vec<_> = (0..4).map(|n| nth_in_range(r, n).to_string()).collect();
        assert_eq!(got, ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]);
    }
}
