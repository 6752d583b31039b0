//! The client state machine against in-process fake SMTP servers on free loopback ports:
//! well-behaved ones (counts add up, every message arrives once), refusing ones, and broken
//! ones (closes mid-DATA, never answers, garbage, 421) that must be counted, never hung on.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smtp_loadtest::config::{parse_range, Body, ProxyVersion};
use smtp_loadtest::schedule::RateSchedule;
use smtp_loadtest::slices::COLUMNS;

mod common;
use common::{fake_config as config, run_bounded as go};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    NoPipelining,
    RejectRcpt,
    /// 550 to MAIL, then hang up (a `reject_type disconnect` plugin).
    RejectMailAndClose,
    Reply421OnMail,
    CloseMidData,
    Silent,
    Garbage,
    /// `421 4.3.2` instead of the banner, then close (a server at its connection limit).
    Banner421,
}

#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    message_ids: Vec<String>,
    proxy_lines: Vec<Vec<u8>>,
    peers: Vec<SocketAddr>,
}

/// Starts a fake server; its threads end on their own (read timeouts, bounded sleeps).
fn fake(mode: Mode, proxy: bool) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let seen = s2.clone();
            std::thread::spawn(move || {
                let _ = session(conn, mode, proxy, &seen);
            });
        }
    });
    (addr, seen)
}

fn session(conn: TcpStream, mode: Mode, proxy: bool, seen: &Mutex<Seen>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    // One write per reply line: without this, Nagle and delayed ACKs add 40 ms stalls.
    conn.set_nodelay(true)?;
    seen.lock().unwrap().peers.push(conn.peer_addr()?);
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    if proxy {
        let mut head = [0u8; 12];
        r.fill_buf()?;
        let buf = r.buffer();
        if buf.starts_with(b"PROXY ") {
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line)?;
            seen.lock().unwrap().proxy_lines.push(line);
        } else {
            std::io::Read::read_exact(&mut r, &mut head)?;
            let mut rest = [0u8; 4];
            std::io::Read::read_exact(&mut r, &mut rest)?;
            let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut r, &mut body)?;
            let mut all = head.to_vec();
            all.extend_from_slice(&rest);
            all.extend_from_slice(&body);
            seen.lock().unwrap().proxy_lines.push(all);
        }
    }
    match mode {
        Mode::Silent => {
            // Accept, say nothing, hold the connection a while, then go.
            std::thread::sleep(Duration::from_secs(8));
            return Ok(());
        }
        Mode::Garbage => {
            w.write_all(b"hello there\r\n")?;
            std::thread::sleep(Duration::from_millis(200));
            return Ok(());
        }
        Mode::Banner421 => {
            w.write_all(b"421 4.3.2 fake Too many connections\r\n")?;
            return Ok(());
        }
        _ => w.write_all(b"220 fake ESMTP\r\n")?,
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                if mode == Mode::NoPipelining {
                    w.write_all(b"250-fake\r\n250 SIZE 1000000\r\n")?
                } else {
                    w.write_all(b"250-fake\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")?
                }
            }
            "MAIL" => match mode {
                Mode::RejectMailAndClose => {
                    w.write_all(b"550 5.7.1 go away\r\n")?;
                    return Ok(());
                }
                Mode::Reply421OnMail => {
                    w.write_all(b"421 4.3.2 shutting down\r\n")?;
                    return Ok(());
                }
                _ => w.write_all(b"250 ok\r\n")?,
            },
            "RCPT" => {
                if mode == Mode::RejectRcpt {
                    w.write_all(b"550 5.1.1 no such user\r\n")?
                } else {
                    w.write_all(b"250 ok\r\n")?
                }
            }
            "DATA" => {
                if mode == Mode::RejectRcpt {
                    w.write_all(b"554 5.5.1 no valid recipients\r\n")?;
                    continue;
                }
                w.write_all(b"354 go\r\n")?;
                if mode == Mode::CloseMidData {
                    let mut first = String::new();
                    r.read_line(&mut first)?;
                    return Ok(());
                }
                let mut msg = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    msg.push_str(&l);
                }
                let mut s = seen.lock().unwrap();
                for l in msg.lines() {
                    if let Some(v) = l.strip_prefix("X-Loadtest-Seq: ") {
                        s.seqs.push(v.trim().parse().unwrap());
                    }
                    if let Some(v) = l.strip_prefix("Message-ID: ") {
                        s.message_ids.push(v.to_string());
                    }
                }
                drop(s);
                w.write_all(b"250 2.0.0 queued\r\n")?;
            }
            "RSET" | "NOOP" => w.write_all(b"250 ok\r\n")?,
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"500 what\r\n")?,
        }
    }
}

#[test]
fn good_server_every_message_arrives_once() {
    for pipelining in [true, false] {
        let (addr, seen) = fake(Mode::Good, false);
        let mut c = config(addr);
        c.messages = Some(200);
        c.per_session = 7;
        c.rcpts = 3;
        c.pipelining = pipelining;
        let r = go(&c);
        let s = &r.stats;
        assert_eq!(
            (s.attempted, s.accepted, s.failed, s.conn_errors()),
            (200, 200, 0, 0)
        );
        let seen = seen.lock().unwrap();
        let seqs: BTreeSet<u64> = seen.seqs.iter().copied().collect();
        assert_eq!(seen.seqs.len(), 200);
        assert_eq!(seqs, (1..=200).collect());
        let ids: BTreeSet<&String> = seen.message_ids.iter().collect();
        assert_eq!(ids.len(), 200, "Message-IDs are unique");
        // 200 messages at 7 per session: at least 29 sessions; each got 220 and 221.
        assert!(s.sessions >= 29);
        assert_eq!(s.codes[220], s.sessions);
        assert_eq!(s.codes[221], s.sessions);
        assert_eq!(s.codes[354], 200);
        assert_eq!(s.hist(smtp_loadtest::stats::Phase::Rcpt).len(), 600);
        assert_eq!(s.hist(smtp_loadtest::stats::Phase::Message).len(), 200);
        let text = smtp_loadtest::output::table(&r);
        assert!(text.contains("messages attempted"), "{text}");
        let j = smtp_loadtest::output::json(&r);
        assert_eq!(j["messages"]["accepted"], 200);
        assert_eq!(j["messages"]["balanced"], true);
        // The per-second slices add up to the totals.
        let col = |name: &str| COLUMNS.iter().position(|c| *c == name).unwrap();
        let sum = |name: &str| -> u64 {
            j["slices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row[col(name)].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            (sum("sent"), sum("accepted"), sum("latency_count")),
            (200, 200, 200)
        );
        assert_eq!((sum("refused_421"), sum("conn_errors")), (0, 0));
        assert!(smtp_loadtest::output::svg(&r).starts_with("<svg"));
    }
}

#[test]
fn server_without_pipelining_gets_one_command_at_a_time() {
    let (addr, seen) = fake(Mode::NoPipelining, false);
    let mut c = config(addr);
    c.messages = Some(30);
    let r = go(&c);
    assert_eq!(r.stats.accepted, 30);
    assert!(r.stats.no_pipelining > 0);
    assert_eq!(seen.lock().unwrap().seqs.len(), 30);
}

#[test]
fn messages_dir_samples() {
    let dir = std::env::temp_dir().join(format!("loadtest-samples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.eml"),
        "Subject: a\nMessage-ID: <old@x>\n\n.leading dot\nbody\n",
    )
    .unwrap();
    std::fs::write(dir.join("b.eml"), "Subject: b\r\n\r\nsecond\r\n").unwrap();
    let (addr, seen) = fake(Mode::Good, false);
    let mut c = config(addr);
    c.messages = Some(10);
    c.body = Body::Dir(dir.clone());
    let r = go(&c);
    assert_eq!(r.stats.accepted, 10);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.message_ids.len(),
        10,
        "the sample's own Message-ID is replaced"
    );
    assert!(seen
        .message_ids
        .iter()
        .all(|m| m.contains("@smtp-loadtest>")));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn refused_recipients_are_rejections() {
    for pipelining in [true, false] {
        let (addr, _) = fake(Mode::RejectRcpt, false);
        let mut c = config(addr);
        c.messages = Some(40);
        c.per_session = 10;
        c.rcpts = 2;
        c.pipelining = pipelining;
        let r = go(&c);
        let s = &r.stats;
        assert_eq!(
            (s.attempted, s.rejected_5xx, s.accepted, s.failed),
            (40, 40, 0, 0)
        );
        assert_eq!(s.rcpt_rejected, 80);
        assert_eq!(s.conn_errors(), 0);
    }
}

#[test]
fn refusal_then_hangup_counts_the_refusal_and_the_lost_connection() {
    for pipelining in [true, false] {
        let (addr, _) = fake(Mode::RejectMailAndClose, false);
        let mut c = config(addr);
        c.messages = Some(12);
        c.per_session = 5;
        c.pipelining = pipelining;
        let r = go(&c);
        let s = &r.stats;
        assert_eq!(
            (s.attempted, s.rejected_5xx, s.failed),
            (12, 12, 0),
            "pipelining {pipelining}"
        );
        assert_eq!(s.conn_dropped, 12);
    }
}

#[test]
fn reply_421_is_a_temporary_rejection_and_a_lost_connection() {
    let (addr, _) = fake(Mode::Reply421OnMail, false);
    let mut c = config(addr);
    c.messages = Some(9);
    c.per_session = 3;
    let r = go(&c);
    let s = &r.stats;
    assert_eq!((s.attempted, s.rejected_4xx, s.failed), (9, 9, 0));
    assert_eq!(s.conn_dropped, 9);
    assert!(s
        .errors
        .keys()
        .any(|(st, k)| *st == "message" && k.contains("421")));
}

#[test]
fn server_closing_mid_data_fails_messages_and_the_run_ends() {
    let (addr, _) = fake(Mode::CloseMidData, false);
    let mut c = config(addr);
    c.messages = Some(25);
    c.per_session = 5;
    let r = go(&c);
    let s = &r.stats;
    assert_eq!((s.attempted, s.failed, s.accepted), (25, 25, 0));
    assert_eq!(s.conn_dropped, 25);
    assert!(s.errors.keys().all(|(stage, _)| *stage == "message"));
}

#[test]
fn server_that_never_answers_times_out_and_the_run_ends() {
    let (addr, _) = fake(Mode::Silent, false);
    let mut c = config(addr);
    c.duration = Some(Duration::from_secs(60));
    c.timeout = Duration::from_millis(300);
    c.max_failures = 2;
    let t = Instant::now();
    let r = go(&c);
    // 4 slots x 2 tries x 0.3 s, in parallel, plus a short back-off: far below the 60 s.
    assert!(
        t.elapsed() < Duration::from_secs(45),
        "took {:?}",
        t.elapsed()
    );
    let s = &r.stats;
    assert_eq!(s.attempted, 0);
    assert_eq!(s.conn_failed, 8);
    assert_eq!(s.slots_gave_up, 4);
    assert_eq!(s.errors[&("banner", "timeout".to_string())], 8);
}

#[test]
fn garbage_banner_is_a_protocol_error() {
    let (addr, _) = fake(Mode::Garbage, false);
    let mut c = config(addr);
    c.messages = Some(5);
    c.max_failures = 1;
    let r = go(&c);
    assert_eq!(r.stats.attempted, 0);
    assert_eq!(
        r.stats.errors[&("banner", "malformed reply".to_string())],
        4
    );
}

#[test]
fn banner_421_is_counted_as_a_refused_connection_per_second() {
    let (addr, _) = fake(Mode::Banner421, false);
    let mut c = config(addr);
    c.messages = Some(5);
    c.connections = 1;
    c.max_failures = 3;
    let r = go(&c);
    assert_eq!((r.stats.attempted, r.stats.conn_failed), (0, 3));
    assert_eq!(r.stats.slices.refused_421(), 3);
    let j = smtp_loadtest::output::json(&r);
    assert_eq!(j["connections"]["refused_421"], 3);
    let at = COLUMNS.iter().position(|c| *c == "conn_errors").unwrap();
    let other: u64 = j["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[at].as_u64().unwrap())
        .sum();
    assert_eq!(other, 0, "a 421 is not counted twice");
    assert!(smtp_loadtest::output::table(&r).contains("of which refused 421"));
}

#[test]
fn deferred_refusals_are_given_up_not_retried() {
    let (addr, _) = fake(Mode::Banner421, false);
    let mut c = config(addr);
    c.rate = Some(RateSchedule::parse("50:0.2").unwrap()); // 10 messages
    c.duration = Some(Duration::from_secs(1));
    c.connections = 2;
    c.max_failures = 1;
    c.defer_refused = true;
    let r = go(&c);
    assert_eq!(
        r.stats.slots_gave_up, 0,
        "a 421 is an answer, not a failure"
    );
    assert_eq!(r.stats.attempted, 0);
    assert_eq!(
        r.stats.slices.refused_421(),
        10,
        "each message tried once, then deferred"
    );
}

#[test]
fn nothing_listening_is_counted_not_retried_forever() {
    // Bind and drop to find a port with nobody on it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config(addr);
    c.messages = Some(5);
    c.max_failures = 3;
    let r = go(&c);
    assert_eq!(r.stats.conn_failed, 12);
    assert_eq!(r.stats.errors[&("connect", "refused".to_string())], 12);
}

#[test]
fn open_loop_rate_is_kept_and_bounded() {
    let (addr, _) = fake(Mode::Good, false);
    let mut c = config(addr);
    c.rate = Some(RateSchedule::parse("200").unwrap());
    c.duration = Some(Duration::from_secs(1));
    c.per_session = 0;
    let t = Instant::now();
    let r = go(&c);
    // Messages due in [0, 1 s) at 200/s: never more than 200; fewer when a loaded machine
    // left some waiting at the deadline (the run is bounded first), so no lower bound.
    assert!(
        (1..=200).contains(&r.stats.attempted),
        "{}",
        r.stats.attempted
    );
    assert_eq!(r.stats.accepted, r.stats.attempted);
    assert!(t.elapsed() >= Duration::from_millis(990));
    assert!(t.elapsed() < Duration::from_secs(60));
}

#[test]
fn proxy_headers_and_source_addresses() {
    for version in [ProxyVersion::V1, ProxyVersion::V2] {
        let (addr, seen) = fake(Mode::Good, true);
        let mut c = config(addr);
        c.messages = Some(6);
        c.proxy = Some(version);
        c.source_range = Some(parse_range("192.0.2.10-192.0.2.12").unwrap());
        let r = go(&c);
        assert_eq!(r.stats.accepted, 6);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.proxy_lines.len(), 6);
        if version == ProxyVersion::V1 {
            let first: BTreeSet<String> = seen
                .proxy_lines
                .iter()
                .map(|l| {
                    String::from_utf8_lossy(l)
                        .split(' ')
                        .nth(2)
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(
                first,
                ["192.0.2.10", "192.0.2.11", "192.0.2.12"]
                    .map(String::from)
                    .into()
            );
        } else {
            assert!(seen
                .proxy_lines
                .iter()
                .all(|l| l.len() == 28 && l[16..19] == [192, 0, 2]));
        }
    }
    // Without PROXY the sockets are bound to the range.
    let (addr, seen) = fake(Mode::Good, false);
    let mut c = config(addr);
    c.messages = Some(6);
    c.source_range = Some(parse_range("127.0.0.2-127.0.0.4").unwrap());
    let r = go(&c);
    assert_eq!(r.stats.accepted, 6);
    let ips: BTreeSet<String> = seen
        .lock()
        .unwrap()
        .peers
        .iter()
        .map(|p| p.ip().to_string())
        .collect();
    assert_eq!(
        ips,
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .map(String::from)
            .into()
    );
}

#[test]
fn idle_mode_holds_connections_then_quits() {
    let (addr, seen) = fake(Mode::Good, false);
    let mut c = config(addr);
    c.idle = true;
    c.connections = 6;
    c.duration = Some(Duration::from_millis(700));
    let t = Instant::now();
    let r = go(&c);
    assert!(t.elapsed() >= Duration::from_millis(690));
    assert_eq!((r.stats.sessions, r.stats.attempted), (6, 0));
    assert_eq!(r.stats.codes[221], 6);
    assert!(seen.lock().unwrap().seqs.is_empty());
}

#[test]
fn accepted_list_names_exactly_the_messages_answered_250() {
    // Every message accepted: the list is every sequence number the server saw, once.
    let (addr, seen) = fake(Mode::Good, false);
    let mut c = config(addr);
    c.messages = Some(60);
    c.per_session = 4;
    c.accepted_log = Some("unused-by-run".into());
    let r = go(&c);
    let listed: Vec<u64> = smtp_loadtest::output::accepted(&r)
        .lines()
        .map(|l| {
            assert_eq!(l.len(), smtp_loadtest::config::SEQ_DIGITS, "{l:?}");
            l.parse().unwrap()
        })
        .collect();
    let mut received = seen.lock().unwrap().seqs.clone();
    received.sort_unstable();
    assert_eq!(listed, received);
    assert_eq!(listed, (1..=60).collect::<Vec<u64>>());

    // A server that closes in the middle of DATA answers nothing with 250: an empty list.
    let (addr, _) = fake(Mode::CloseMidData, false);
    let mut c = config(addr);
    c.messages = Some(10);
    c.accepted_log = Some("unused-by-run".into());
    let r = go(&c);
    assert_eq!(r.stats.failed, 10);
    assert_eq!(smtp_loadtest::output::accepted(&r), "");
}

#[test]
fn late_messages_are_counted_and_skipped_with_skip_late() {
    // One connection slot cannot run 20,000 sessions a second: most of the 1,000 messages
    // find it busy at their time.
    for skip in [false, true] {
        let (addr, _) = fake(Mode::Good, false);
        let mut c = config(addr);
        c.rate = Some(RateSchedule::parse("20000:0.05").unwrap());
        c.duration = Some(Duration::from_secs(30));
        c.connections = 1;
        c.skip_late = skip.then_some(Duration::from_millis(1));
        let r = go(&c);
        let s = &r.stats;
        assert_eq!(s.accepted, s.attempted, "skip {skip}");
        if skip {
            assert!(s.slices.skipped() > 0, "late messages are skipped");
            assert_eq!(
                s.attempted + s.slices.skipped(),
                1000,
                "every message is sent or skipped"
            );
        } else {
            assert_eq!(
                (s.attempted, s.slices.skipped()),
                (1000, 0),
                "all sent late"
            );
            assert!(s.slices.late() > 0, "and counted as late");
        }
        let j = smtp_loadtest::output::json(&r);
        assert_eq!(j["messages"]["skipped"], s.slices.skipped());
        assert_eq!(j["messages"]["late"], s.slices.late());
    }
}

#[test]
fn a_connect_that_times_out_is_deferred() {
    use socket2::{Domain, Socket, Type};
    // A listener that never accepts, its queue (backlog 0: one connection) already full:
    // the kernel drops the next SYNs and connects time out.
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let _queued = TcpStream::connect(addr).unwrap();
    let mut c = config(addr);
    c.rate = Some(RateSchedule::parse("20:0.2").unwrap()); // 4 messages
    c.duration = Some(Duration::from_secs(5));
    c.connections = 1;
    c.max_failures = 1;
    c.connect_timeout = Duration::from_millis(200);
    c.defer_refused = true;
    let r = go(&c);
    assert_eq!(r.stats.slots_gave_up, 0, "a connect timeout is deferred");
    assert_eq!(
        r.stats.slices.connect_timeouts(),
        4,
        "each message tried once"
    );
    assert_eq!(r.stats.attempted, 0);
    let j = smtp_loadtest::output::json(&r);
    assert_eq!(j["connections"]["connect_timeouts"], 4);
}
