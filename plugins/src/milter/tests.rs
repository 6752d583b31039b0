//! The plugin against a scripted fake milter speaking the protocol on a loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;

use ringsmtpd_plugin_api::address::parse_path;
use ringsmtpd_plugin_api::testing::{build, build_err, cx, run, FakePeer};
use ringsmtpd_plugin_api::{Outcome, Plugin, Recipient, Transaction};

use super::proto::{self, action, step};

fn packet(cmd: u8, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(cmd);
    v.extend_from_slice(data);
    v
}

fn optneg(actions: u32, steps: u32) -> Vec<u8> {
    let mut d = Vec::new();
    for v in [6, actions, steps] {
        d.extend_from_slice(&u32::to_be_bytes(v));
    }
    packet(b'O', &d)
}

/// A reply that makes the fake close the connection.
const CLOSE: &[u8] = b"close";

/// What the fake answers to a command: the packets to send back (none: no reply).
type Script = fn(u8, &[u8]) -> Vec<Vec<u8>>;

/// A milter that records every command (letter and data) and answers as `script` says.
fn fake(script: Script) -> FakePeer<(u8, Vec<u8>)> {
    FakePeer::start(move |mut s: TcpStream, seen| loop {
        let mut len = [0; 4];
        if s.read_exact(&mut len).is_err() {
            return;
        }
        let mut p = vec![0; u32::from_be_bytes(len) as usize];
        if s.read_exact(&mut p).is_err() || p.is_empty() {
            return;
        }
        let (cmd, data) = (p[0], p[1..].to_vec());
        seen.lock().unwrap().push((cmd, data.clone()));
        if cmd == b'Q' {
            return;
        }
        for r in script(cmd, &data) {
            if r == CLOSE || s.write_all(&r).is_err() {
                return;
            }
        }
    })
}

fn rcpt(a: &str) -> Recipient {
    Recipient {
        addr: parse_path(a, false, false).unwrap(),
        params: Default::default(),
    }
}

const MESSAGE: &[u8] =
    b"From: a@example.org\r\nSubject: hi\r\n there\r\nX-Old: 1\r\n\r\nbody line\r\n";

fn txn() -> Transaction {
    let mut t = Transaction::default();
    t.id = "1.1".into();
    t.sender = parse_path("<a@example.org>", true, false).unwrap();
    t.recipients.push(rcpt("<u@example.test>"));
    t.body.mem = MESSAGE.to_vec();
    t.body.len = MESSAGE.len() as u64;
    t.body.header_end = Some(MESSAGE.len() - 11);
    t
}

/// Runs a whole session; returns the data_post outcome, the transaction and what the milter saw.
fn session(script: Script, extra: &str) -> (Outcome, Outcome, Transaction, Vec<(u8, Vec<u8>)>) {
    let peer = fake(script);
    let p = build(
        super::new,
        &format!("milter test 127.0.0.1:{} {extra}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _svc) = cx("192.0.2.1:4242");
    let mut t = txn();
    let mut first = run(p.connect(&mut cx));
    for o in [
        run(p.helo(&mut cx, "client.example")),
        run(p.mail(&mut cx, &mut t)),
        run(p.rcpt(&mut cx, &mut t, &rcpt("<u@example.test>"))),
        run(p.data(&mut cx, &mut t)),
    ] {
        if first == Outcome::Declined {
            first = o;
        }
    }
    let eom = run(p.data_post(&mut cx, &mut t));
    let _ = run(p.reset_transaction(&mut cx, &mut t));
    let _ = run(p.disconnect(&mut cx));
    (first, eom, t, peer.take())
}

fn continue_all(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
    match cmd {
        b'O' => vec![optneg(action::ADDHDRS | action::CHGHDRS, 0)],
        b'D' | b'A' => vec![],
        b'E' => vec![
            packet(b'p', b""),
            packet(b'h', b"X-Milter\0 checked\n\tfolded\r\nX-Evil: 1\0"),
            packet(b'm', b"\0\0\0\x01Subject\0 changed\0"),
            packet(b'm', b"\0\0\0\x01X-Old\0\0"),
            packet(b'i', b"\0\0\0\0X-First\0yes\0"),
            packet(b'a', b""),
        ],
        _ => vec![packet(b'c', b"")],
    }
}

#[test]
fn main_flow_sends_every_stage_and_applies_header_changes() {
    let (first, eom, t, seen) = session(continue_all, "");
    assert_eq!((first, eom), (Outcome::Declined, Outcome::Declined));
    let cmds: Vec<u8> = seen
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != b'D')
        .collect();
    assert_eq!(cmds, b"OCHMRTLLLNBEQ".to_vec());
    let find = |c: u8| seen.iter().find(|(x, _)| *x == c).unwrap().1.clone();
    assert_eq!(find(b'C'), b"[192.0.2.1]\x004\x10\x92192.0.2.1\0".to_vec());
    assert_eq!(find(b'M'), b"<a@example.org>\0".to_vec());
    assert_eq!(find(b'B'), b"body line\r\n".to_vec());
    // The folded Subject goes with LF folds, without the leading space.
    assert!(seen.contains(&(b'L', b"Subject\0hi\n there\0".to_vec())));
    // Macros: the connect stage's client address, the MAIL stage's queue id.
    assert!(seen.iter().any(|(c, d)| *c == b'D'
        && d.starts_with(b"C")
        && d.windows(24).any(|w| w == b"{client_addr}\x00192.0.2.1\0")));
    assert!(seen
        .iter()
        .any(|(c, d)| *c == b'D' && d.starts_with(b"Mi\x001.1\0")));
    // The injected line stays inside the added field; the folds are CRLF TAB.
    assert_eq!(
        t.added_headers,
        "X-First: yes\r\nX-Milter: checked\r\n\tfolded\r\n\tX-Evil: 1\r\n"
    );
    let msg = std::str::from_utf8(&t.body.mem).unwrap();
    assert_eq!(
        msg,
        "From: a@example.org\r\nSubject: changed\r\n\r\nbody line\r\n"
    );
    assert_eq!(t.body.len as usize, msg.len());
    assert_eq!(t.body.header_end, Some(msg.len() - 11));
}

#[test]
fn reject_tempfail_and_reply_code() {
    fn reject_rcpt(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' | b'A' => vec![],
            b'R' => vec![packet(b'r', b"")],
            b'E' => vec![packet(b't', b"")],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (first, eom, _, _) = session(reject_rcpt, "");
    assert_eq!(first, Outcome::Deny(None));
    assert_eq!(eom, Outcome::DenySoft(None));

    fn reply_code(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' | b'A' => vec![],
            b'E' => vec![packet(b'y', b"554-5.7.1 spam\r\n554 5.7.1 go\x1b away\0")],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (_, eom, _, _) = session(reply_code, "");
    let Outcome::Done(Some(r)) = eom else {
        panic!("{eom:?}")
    };
    assert_eq!((r.code, r.enhanced.as_deref()), (554, Some("5.7.1")));
    assert_eq!(r.lines, ["spam", "go? away"]);
}

#[test]
fn no_reply_flags_and_skipped_steps_are_honoured() {
    fn quiet(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        let nr = step::NR_CONN
            | step::NR_HELO
            | step::NR_MAIL
            | step::NR_RCPT
            | step::NR_DATA
            | step::NR_HDR
            | step::NR_EOH
            | step::NR_BODY;
        match cmd {
            b'O' => vec![optneg(0, nr | step::NOHELO | step::NOBODY)],
            b'E' => vec![packet(b'c', b"")],
            _ => vec![],
        }
    }
    let (first, eom, _, seen) = session(quiet, "");
    assert_eq!((first, eom), (Outcome::Declined, Outcome::Declined));
    let cmds: Vec<u8> = seen
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != b'D')
        .collect();
    assert_eq!(cmds, b"OCMRTLLLNEQ".to_vec());
}

#[test]
fn misbehaving_milters_get_the_default_action() {
    fn unnegotiated(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(action::ADDHDRS, 0)],
            b'D' | b'A' => vec![],
            b'E' => vec![packet(b'+', b"<x@example.net>\0"), packet(b'c', b"")],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (_, eom, t, _) = session(unnegotiated, "");
    assert!(matches!(eom, Outcome::DenySoft(Some(_))), "{eom:?}");
    assert_eq!(t.recipients.len(), 1);

    fn unknown(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' => vec![],
            _ => vec![packet(b'Z', b"")],
        }
    }
    let (first, eom, _, seen) = session(unknown, "default_action reject");
    assert!(matches!(first, Outcome::Deny(Some(_))), "{first:?}");
    assert!(matches!(eom, Outcome::Deny(Some(_))));
    // The connection was dropped at the first error: nothing more was sent.
    assert_eq!(seen.iter().filter(|(c, _)| *c != b'D').count(), 2);

    fn bad_version(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![packet(b'O', &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0])],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (first, eom, _, _) = session(bad_version, "default_action accept");
    assert_eq!((first, eom), (Outcome::Declined, Outcome::Declined));

    fn oversized(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' => vec![],
            _ => vec![vec![0x7f, 0, 0, 0, b'c']],
        }
    }
    let (first, _, _, _) = session(oversized, "");
    assert!(matches!(first, Outcome::DenySoft(Some(_))));

    // Closes mid-message: a reply cut short, then EOF.
    fn closes(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' => vec![],
            b'B' => vec![vec![0, 0, 0, 9, b'h', b'X'], CLOSE.to_vec()],
            _ => vec![packet(b'c', b"")],
        }
    }
    let peer = fake(closes);
    let p = build(
        super::new,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, svc) = cx("192.0.2.1:4242");
    let mut t = txn();
    assert_eq!(run(p.connect(&mut cx)), Outcome::Declined);
    assert_eq!(run(p.mail(&mut cx, &mut t)), Outcome::Declined);
    assert!(matches!(
        run(p.data_post(&mut cx, &mut t)),
        Outcome::DenySoft(Some(_))
    ));
    assert!(svc.logged("default action Tempfail"));
    assert!(matches!(
        run(p.rcpt(&mut cx, &mut t, &rcpt("<v@example.test>"))),
        Outcome::DenySoft(Some(_))
    ));
}

#[test]
fn a_down_or_silent_milter_gets_the_default_action() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = build(super::new, &format!("milter test 127.0.0.1:{port}"), &[]).unwrap();
    let (mut cx, svc) = cx("192.0.2.1:4242");
    assert!(matches!(
        run(p.connect(&mut cx)),
        Outcome::DenySoft(Some(_))
    ));
    assert!(matches!(
        run(p.helo(&mut cx, "x")),
        Outcome::DenySoft(Some(_))
    ));
    assert_eq!(svc.connects.borrow().len(), 1);

    let p = build(
        super::new,
        "milter test 127.0.0.1:9 default_action reject",
        &[],
    )
    .unwrap();
    let (mut cx, svc) = ringsmtpd_plugin_api::testing::cx("192.0.2.1:4242");
    svc.mute_peers.set(true);
    assert!(matches!(run(p.connect(&mut cx)), Outcome::Deny(Some(_))));
    assert!(svc.logged("no answer within"));
}

#[test]
fn discard_and_envelope_changes() {
    fn discard(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' | b'A' => vec![],
            b'E' => vec![packet(b'd', b"")],
            _ => vec![packet(b'c', b"")],
        }
    }
    let peer = fake(discard);
    let p = build(
        super::new,
        &format!("milter test inet:{}@127.0.0.1", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = cx("192.0.2.1:4242");
    let mut t = txn();
    run(p.connect(&mut cx));
    run(p.mail(&mut cx, &mut t));
    assert_eq!(run(p.queue(&mut cx, &mut t)), Outcome::Declined);
    assert_eq!(run(p.data_post(&mut cx, &mut t)), Outcome::Declined);
    assert!(matches!(
        run(p.queue(&mut cx, &mut t)),
        Outcome::Ok(Some(_))
    ));

    // A discard at RCPT discards the message too.
    fn discard_rcpt(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(0, 0)],
            b'D' | b'A' => vec![],
            b'R' => vec![packet(b'd', b"")],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (_, _, mut t, seen) = session(discard_rcpt, "");
    assert!(matches!(
        run(p.queue(&mut cx, &mut t)),
        Outcome::Ok(Some(_))
    ));
    assert!(
        !seen.iter().any(|(c, _)| *c == b'E'),
        "the message went to the milter"
    );

    fn envelope(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
        match cmd {
            b'O' => vec![optneg(proto::OFFERED_ACTIONS, 0)],
            b'D' | b'A' => vec![],
            b'E' => vec![
                packet(b'+', b"<new@example.net>\0"),
                packet(b'-', b"u@example.test\0"),
                packet(b'e', b"<bounce@example.org>\0"),
                packet(b'b', b"new\nbody\r\n"),
                packet(b'q', b"suspicious\r\nX-Bad: 1\0"),
                packet(b'c', b""),
            ],
            _ => vec![packet(b'c', b"")],
        }
    }
    let (_, eom, t, _) = session(envelope, "");
    assert_eq!(eom, Outcome::Declined);
    let rcpts: Vec<&str> = t.recipients.iter().map(|r| r.addr.as_str()).collect();
    assert_eq!(rcpts, ["new@example.net"]);
    assert_eq!(t.sender.as_str(), "bounce@example.org");
    assert!(t.body.mem.ends_with(b"\r\n\r\nnew\r\nbody\r\n"));
    assert_eq!(
        t.added_headers,
        "X-Quarantine: suspicious\r\n\tX-Bad: 1\r\n"
    );
}

#[test]
fn arguments() {
    let e = build_err(super::new, "milter test", &[]);
    assert!(e.to_string().contains("usage: milter NAME ADDRESS"), "{e}");
    let e = build_err(super::new, "milter test 127.0.0.1:0", &[]);
    assert!(e.to_string().contains("port"), "{e}");
    let e = build_err(super::new, "milter test unix:relative", &[]);
    assert!(e.to_string().contains("absolute"), "{e}");
    let e = build_err(
        super::new,
        "milter test 127.0.0.1:25 default_action maybe",
        &[],
    );
    assert!(e.to_string().contains("default_action"), "{e}");
    let e = build_err(super::new, "milter test 127.0.0.1:25 timeout", &[]);
    assert!(e.to_string().contains("needs a value"), "{e}");
    let e = build_err(super::new, "milter test 127.0.0.1:25 color blue", &[]);
    assert!(e.to_string().contains("unknown argument 'color'"), "{e}");
    for ok in [
        "inet:8891@localhost",
        "[::1]:8891",
        "unix:/run/milter.sock",
        "milter.example:10",
        "5513",
    ] {
        assert!(
            build(super::new, &format!("milter test {ok}"), &[]).is_ok(),
            "{ok}"
        );
    }
}

fn continue_plain(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
    match cmd {
        b'O' => vec![optneg(0, 0)],
        b'D' | b'A' => vec![],
        _ => vec![packet(b'c', b"")],
    }
}

#[test]
fn a_spooled_body_is_streamed_in_bounded_packets() {
    use ringsmtpd_plugin_api::testing::TempDir;
    let dir = TempDir::new("milter-spool");
    let head = b"Subject: big\r\n\r\n";
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let path = dir.join("msg");
    std::fs::write(&path, [&head[..], &body].concat()).unwrap();
    let peer = fake(continue_plain);
    let p = build(
        super::new,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = cx("192.0.2.1:4242");
    let mut t = txn();
    t.body.mem = head.to_vec(); // a spooled message keeps only its header section in memory
    t.body.header_end = Some(head.len());
    t.body.len = (head.len() + body.len()) as u64;
    t.body.spool = Some(ringsmtpd_plugin_api::SpoolFile {
        file: std::fs::File::open(&path).unwrap(),
        path: path.into(),
    });
    run(p.connect(&mut cx));
    run(p.mail(&mut cx, &mut t));
    assert_eq!(run(p.data_post(&mut cx, &mut t)), Outcome::Declined);
    run(p.disconnect(&mut cx));
    let chunks: Vec<Vec<u8>> = peer
        .take()
        .into_iter()
        .filter(|(c, _)| *c == b'B')
        .map(|(_, d)| d)
        .collect();
    assert_eq!(chunks.len(), 4);
    assert!(chunks.iter().all(|c| c.len() <= proto::BODY_CHUNK));
    assert_eq!(chunks.concat(), body);
}

fn edit_headers(cmd: u8, _: &[u8]) -> Vec<Vec<u8>> {
    match cmd {
        b'O' => vec![optneg(action::ADDHDRS | action::CHGHDRS, 0)],
        b'D' | b'A' => vec![],
        b'E' => vec![
            packet(b'm', b"\0\0\0\x01Subject\0 changed\r\nBcc: x\0"),
            packet(b'm', b"\0\0\0\x01X-Old\0\0"),
            packet(b'i', b"\0\0\0\x02X-Second\0yes\0"),
            packet(b'a', b""),
        ],
        _ => vec![packet(b'c', b"")],
    }
}

#[test]
fn header_changes_on_a_spooled_message_rewrite_its_spool_file() {
    use ringsmtpd_plugin_api::testing::{spool, TempDir};
    let dir = TempDir::new("milter-edit");
    let head = "X-Old: 1\r\nSubject: big\r\n\r\n";
    let body = "x".repeat(200_000);
    let path = dir.path().join("msg");
    let peer = fake(edit_headers);
    let p = build(
        super::new,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = cx("192.0.2.1:4242");
    let mut t = txn();
    spool(&mut t.body, &path, format!("{head}{body}").as_bytes());
    // A field ringsmtpd added is not the milter's "Subject 1": the message's is.
    t.added_headers = "Subject: ours\r\n".into();
    run(p.connect(&mut cx));
    run(p.mail(&mut cx, &mut t));
    assert_eq!(run(p.data_post(&mut cx, &mut t)), Outcome::Declined);
    run(p.disconnect(&mut cx));
    assert_eq!(t.added_headers, "Subject: ours\r\n");
    // The CR LF in the new value became a fold: no Bcc field. X-Second is the 3rd field.
    let want = format!("Subject: changed\r\n\tBcc: x\r\nX-Second: yes\r\n\r\n{body}");
    let got = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        got.split_once("\r\n\r\n").unwrap().0,
        want.split_once("\r\n\r\n").unwrap().0
    );
    assert!(got == want, "the body is intact");
    assert_eq!(t.body.len as usize, want.len());
    assert_eq!(t.body.mem, &want.as_bytes()[..t.body.header_end.unwrap()]);
    t.body.spool = None; // the TempDir removes the file
}

#[test]
fn one_connection_per_session_and_abort_on_reset() {
    let peer = fake(continue_plain);
    let p = build(
        super::new,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, svc) = cx("192.0.2.1:4242");
    run(p.connect(&mut cx));
    // A transaction reset before DATA: abort.
    let mut t = txn();
    run(p.mail(&mut cx, &mut t));
    run(p.reset_transaction(&mut cx, &mut t));
    // A whole transaction: no abort after the end of message.
    let mut t = txn();
    run(p.mail(&mut cx, &mut t));
    run(p.rcpt(&mut cx, &mut t, &rcpt("<u@example.test>")));
    assert_eq!(run(p.data_post(&mut cx, &mut t)), Outcome::Declined);
    run(p.reset_transaction(&mut cx, &mut t));
    run(p.disconnect(&mut cx));
    assert_eq!(svc.connects.borrow().len(), 1);
    let cmds: Vec<u8> = peer
        .take()
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| *c != b'D')
        .collect();
    assert_eq!(cmds, b"OCMAMRLLLNBEQ".to_vec());
}

#[test]
fn addresses() {
    use super::{parse_address, Address};
    use crate::helpers::backend::Host;
    let local = Host::Ip("127.0.0.1".parse().unwrap());
    assert_eq!(parse_address("5513"), Ok(Address::Tcp(local.clone(), 5513)));
    assert_eq!(
        parse_address("inet:8891@127.0.0.1"),
        Ok(Address::Tcp(local.clone(), 8891))
    );
    assert_eq!(parse_address("localhost:25"), Ok(Address::Tcp(local, 25)));
    assert_eq!(
        parse_address("[::1]:11332"),
        Ok(Address::Tcp(Host::Ip("::1".parse().unwrap()), 11332))
    );
    assert_eq!(
        parse_address("unix:/run/m.sock"),
        Ok(Address::Unix("/run/m.sock".into()))
    );
    assert!(parse_address("inet:8891").is_err());
    assert!(parse_address("host").is_err());
    assert!(parse_address("99999").is_err());
}

#[test]
fn a_hook_cut_short_leaves_the_default_action() {
    let peer = fake(continue_plain);
    let m = build(
        super::build,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = cx("192.0.2.1:4242");
    let mut t = txn();
    assert_eq!(run(m.connect(&mut cx)), Outcome::Declined);
    // What a hook holds while it waits; plugin_timeout drops it with the hook's future.
    let held = m.take(&mut cx);
    assert!(matches!(held, Some(super::State::Live { .. })));
    drop(held);
    assert!(matches!(
        run(m.mail(&mut cx, &mut t)),
        Outcome::DenySoft(Some(_))
    ));
}
