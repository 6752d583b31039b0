//! The plugin against a scripted fake milter speaking the protocol on a loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ringsmtpd_plugin_api::address::parse_path;
use ringsmtpd_plugin_api::testing::{build, build_err, cx, rcpt, run, FakePeer, FakeServices};
use ringsmtpd_plugin_api::{Cx, Outcome, Plugin, Transaction};

use super::proto::{self, action, step};

mod clock;
use clock::{clocked_client, silence};

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

/// What the fake records when the plugin closes the connection without `QUIT`.
const EOF: u8 = 0;

/// What a fake milter answers to one command: the packets to send (none: no reply), or
/// `None` for the usual answer ([`usual`]).
type Answer = Option<Vec<Vec<u8>>>;

/// The usual answers: a negotiation of no action and no step, nothing to macros and aborts,
/// `continue` to the rest.
fn usual(cmd: u8) -> Vec<Vec<u8>> {
    match cmd {
        b'O' => vec![optneg(0, 0)],
        b'D' | b'A' => vec![],
        _ => vec![packet(b'c', b"")],
    }
}

type Seen = Vec<(u8, Vec<u8>)>;

/// A milter that records every command (letter and data) and answers as `script` says for
/// its `n`-th connection (from 0), the command and its data.
fn fake(
    script: impl Fn(usize, u8, &[u8]) -> Answer + Send + Sync + 'static,
) -> FakePeer<(u8, Vec<u8>)> {
    let connections = AtomicUsize::new(0);
    FakePeer::start(move |mut s: TcpStream, seen| {
        let n = connections.fetch_add(1, Ordering::SeqCst);
        loop {
            let mut len = [0; 4];
            if s.read_exact(&mut len).is_err() {
                seen.lock().unwrap().push((EOF, Vec::new()));
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
            for r in script(n, cmd, &data).unwrap_or_else(|| usual(cmd)) {
                if r == CLOSE || s.write_all(&r).is_err() {
                    return;
                }
            }
        }
    })
}

/// The letters of the commands seen, without the macros.
fn letters(seen: &Seen) -> Vec<u8> {
    seen.iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != b'D')
        .collect()
}

/// A `milter test 127.0.0.1:PORT EXTRA` plugin talking to `peer`.
fn plugin(peer: &FakePeer<(u8, Vec<u8>)>, extra: &str) -> Box<dyn Plugin> {
    build(
        super::new,
        &format!("milter test 127.0.0.1:{} {extra}", peer.port),
        &[],
    )
    .unwrap()
}

/// A client's context and its services.
fn client() -> (Cx, Rc<FakeServices>) {
    cx("192.0.2.1:4242")
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

/// What one whole SMTP session gave.
struct Run {
    /// The first outcome before the end of message that was not `Declined`.
    first: Outcome,
    /// The end of message's.
    eom: Outcome,
    txn: Transaction,
    svc: Rc<FakeServices>,
}

/// The outcomes of a whole session of `p` on `cx`: connect, HELO, MAIL, RCPT, DATA and end
/// of message (then RSET and QUIT).
fn stages(p: &dyn Plugin, cx: &mut Cx, t: &mut Transaction) -> Vec<Outcome> {
    let outcomes = vec![
        run(p.connect(cx)),
        run(p.helo(cx, "client.example")),
        run(p.mail(cx, t)),
        run(p.rcpt(cx, t, &rcpt("<u@example.test>"))),
        run(p.data(cx, t)),
        run(p.data_post(cx, t)),
    ];
    let _ = run(p.reset_transaction(cx, t));
    let _ = run(p.disconnect(cx));
    outcomes
}

/// A whole session of `p` ([`stages`]).
fn whole(p: &dyn Plugin) -> Run {
    let (mut cx, svc) = client();
    let mut t = txn();
    let mut o = stages(p, &mut cx, &mut t);
    let eom = o.pop().unwrap();
    Run {
        first: o
            .into_iter()
            .find(|o| *o != Outcome::Declined)
            .unwrap_or(Outcome::Declined),
        eom,
        txn: t,
        svc,
    }
}

/// A script that negotiates `actions` and answers the end of message with `replies`.
fn at_eom(
    actions: u32,
    replies: Vec<Vec<u8>>,
) -> impl Fn(usize, u8, &[u8]) -> Answer + Send + Sync + 'static {
    move |_, cmd, _| match cmd {
        b'O' => Some(vec![optneg(actions, 0)]),
        b'E' => Some(replies.clone()),
        _ => None,
    }
}

/// A whole session against a fake milter running `script`, and what the milter saw.
fn session(
    script: impl Fn(usize, u8, &[u8]) -> Answer + Send + Sync + 'static,
    extra: &str,
) -> (Run, Seen) {
    let peer = fake(script);
    let r = whole(&*plugin(&peer, extra));
    (r, peer.take())
}

#[test]
fn main_flow_sends_every_stage_and_applies_header_changes() {
    let (r, seen) = session(
        at_eom(
            action::ADDHDRS | action::CHGHDRS,
            vec![
                packet(b'p', b""),
                packet(b'h', b"X-Milter\0 checked\n\tfolded\r\nX-Evil: 1\0"),
                packet(b'm', b"\0\0\0\x01Subject\0 changed\0"),
                packet(b'm', b"\0\0\0\x01X-Old\0\0"),
                packet(b'i', b"\0\0\0\0X-First\0yes\0"),
                packet(b'a', b""),
            ],
        ),
        "",
    );
    assert_eq!((r.first, r.eom), (Outcome::Declined, Outcome::Declined));
    assert_eq!(letters(&seen), b"OCHMRTLLLNBEQ".to_vec());
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
    let t = r.txn;
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
    let (r, _) = session(
        |_, cmd, _| match cmd {
            b'R' => Some(vec![packet(b'r', b"")]),
            b'E' => Some(vec![packet(b't', b"")]),
            _ => None,
        },
        "",
    );
    assert_eq!(r.first, Outcome::Deny(None));
    assert_eq!(r.eom, Outcome::DenySoft(None));

    let (r, _) = session(
        |_, cmd, _| {
            (cmd == b'E').then(|| vec![packet(b'y', b"554-5.7.1 spam\r\n554 5.7.1 go\x1b away\0")])
        },
        "",
    );
    let Outcome::Done(Some(reply)) = r.eom else {
        panic!("{:?}", r.eom)
    };
    assert_eq!(
        (reply.code, reply.enhanced.as_deref()),
        (554, Some("5.7.1"))
    );
    assert_eq!(reply.lines, ["spam", "go? away"]);
}

#[test]
fn no_reply_flags_and_skipped_steps_are_honoured() {
    let (r, seen) = session(
        |_, cmd, _| {
            let nr = step::NR_CONN
                | step::NR_HELO
                | step::NR_MAIL
                | step::NR_RCPT
                | step::NR_DATA
                | step::NR_HDR
                | step::NR_EOH
                | step::NR_BODY;
            Some(match cmd {
                b'O' => vec![optneg(0, nr | step::NOHELO | step::NOBODY)],
                b'E' => vec![packet(b'c', b"")],
                _ => vec![],
            })
        },
        "",
    );
    assert_eq!((r.first, r.eom), (Outcome::Declined, Outcome::Declined));
    assert_eq!(letters(&seen), b"OCMRTLLLNEQ".to_vec());
}

#[test]
fn misbehaving_milters_get_the_default_action() {
    let (r, _) = session(
        at_eom(
            action::ADDHDRS,
            vec![packet(b'+', b"<x@example.net>\0"), packet(b'c', b"")],
        ),
        "",
    );
    assert!(matches!(r.eom, Outcome::DenySoft(Some(_))), "{:?}", r.eom);
    assert_eq!(r.txn.recipients.len(), 1);
    assert!(r
        .svc
        .logged("sent add-recipient without negotiating action 0x4"));

    let (r, seen) = session(
        |_, cmd, _| (cmd != b'O' && cmd != b'D').then(|| vec![packet(b'Z', b"")]),
        "default_action reject",
    );
    assert!(matches!(r.first, Outcome::Deny(Some(_))), "{:?}", r.first);
    assert!(matches!(r.eom, Outcome::Deny(Some(_))));
    // The connection was dropped at the first error: nothing more was sent.
    assert_eq!(letters(&seen), [b'O', b'C', EOF]);

    let (r, _) = session(
        |_, cmd, _| {
            (cmd == b'O').then(|| vec![packet(b'O', &[0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0])])
        },
        "default_action accept",
    );
    assert_eq!((r.first, r.eom), (Outcome::Declined, Outcome::Declined));

    let (r, _) = session(
        |_, cmd, _| (cmd != b'O' && cmd != b'D').then(|| vec![vec![0x7f, 0, 0, 0, b'c']]),
        "",
    );
    assert!(matches!(r.first, Outcome::DenySoft(Some(_))));

    // Closes mid-message: a reply cut short, then EOF.
    let peer =
        fake(|_, cmd, _| (cmd == b'B').then(|| vec![vec![0, 0, 0, 9, b'h', b'X'], CLOSE.to_vec()]));
    let p = plugin(&peer, "");
    let (mut cx, svc) = client();
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
    let (mut cx, svc) = client();
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
    let (mut cx, svc) = client();
    svc.mute_peers.set(true);
    assert!(matches!(run(p.connect(&mut cx)), Outcome::Deny(Some(_))));
    assert!(svc.logged("no answer within"));
}

#[test]
fn discard_and_envelope_changes() {
    let peer = fake(|_, cmd, _| (cmd == b'E').then(|| vec![packet(b'd', b"")]));
    let p = build(
        super::new,
        &format!("milter test inet:{}@127.0.0.1", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = client();
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
    let (mut r, seen) = session(
        |_, cmd, _| (cmd == b'R').then(|| vec![packet(b'd', b"")]),
        "",
    );
    assert!(matches!(
        run(p.queue(&mut cx, &mut r.txn)),
        Outcome::Ok(Some(_))
    ));
    assert!(
        !seen.iter().any(|(c, _)| *c == b'E'),
        "the message went to the milter"
    );

    let (r, _) = session(
        at_eom(
            proto::OFFERED_ACTIONS,
            vec![
                packet(b'+', b"<new@example.net>\0"),
                packet(b'-', b"u@example.test\0"),
                packet(b'e', b"<bounce@example.org>\0"),
                packet(b'b', b"new\nbody\r\n"),
                packet(b'q', b"suspicious\r\nX-Bad: 1\0"),
                packet(b'c', b""),
            ],
        ),
        "",
    );
    assert_eq!(r.eom, Outcome::Declined);
    let t = r.txn;
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

#[test]
fn a_spooled_body_is_streamed_in_bounded_packets() {
    use ringsmtpd_plugin_api::testing::{spool, TempDir};
    let dir = TempDir::new("milter-spool");
    let head = b"Subject: big\r\n\r\n";
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let peer = fake(|_, _, _| None);
    let p = plugin(&peer, "");
    let (mut cx, _) = client();
    let mut t = txn();
    spool(
        &mut t.body,
        dir.join("msg").as_ref(),
        &[&head[..], &body].concat(),
    );
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

/// A milter that may add and change headers, and at the end of message changes two fields
/// (one value with a CR LF in it), deletes one and inserts one.
fn edit_headers(_: usize, cmd: u8, _: &[u8]) -> Answer {
    match cmd {
        b'O' => Some(vec![optneg(action::ADDHDRS | action::CHGHDRS, 0)]),
        b'E' => Some(vec![
            packet(b'm', b"\0\0\0\x01Subject\0 changed\r\nBcc: x\0"),
            packet(b'm', b"\0\0\0\x01X-Old\0\0"),
            packet(b'i', b"\0\0\0\x02X-Second\0yes\0"),
            packet(b'a', b""),
        ]),
        _ => None,
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
    let p = plugin(&peer, "");
    let (mut cx, _) = client();
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
    let peer = fake(|_, _, _| None);
    let p = plugin(&peer, "");
    let (mut cx, svc) = client();
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
    assert_eq!(letters(&peer.take()), b"OCMAMRLLLNBEQ".to_vec());
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
    let peer = fake(|_, _, _| None);
    let m = build(
        super::build,
        &format!("milter test 127.0.0.1:{}", peer.port),
        &[],
    )
    .unwrap();
    let (mut cx, _) = client();
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

#[test]
fn progress_restarts_the_wait() {
    // eom_timeout 20: two silences of 15 s, each after a progress, are within it.
    let peer = fake(|_, cmd, _| {
        (cmd == b'E').then(|| {
            let p = packet(b'p', b"");
            vec![p.clone(), silence(15), p, silence(15), packet(b'c', b"")]
        })
    });
    let p = plugin(&peer, "eom_timeout 20");
    let (mut cx, svc) = clocked_client();
    let o = stages(&*p, &mut cx, &mut txn());
    assert!(o.iter().all(|o| *o == Outcome::Declined), "{o:?}");
    assert!(svc.fake.logs.borrow().is_empty());

    // The same 30 s without a progress between: no answer within 20 s.
    let peer =
        fake(|_, cmd, _| (cmd == b'E').then(|| vec![silence(15), silence(15), packet(b'c', b"")]));
    let p = plugin(&peer, "eom_timeout 20");
    let (mut cx, svc) = clocked_client();
    let o = stages(&*p, &mut cx, &mut txn());
    assert!(matches!(o[5], Outcome::DenySoft(Some(_))), "{o:?}");
    assert!(svc.fake.logged("no answer within 20s"));
}

/// The default action's outcome, as the plugin gives it.
fn default_outcome(action: &str) -> fn(&Outcome) -> bool {
    match action {
        "accept" => |o| *o == Outcome::Declined,
        "tempfail" => |o| matches!(o, Outcome::DenySoft(Some(m)) if m.starts_with("4.7.1")),
        _ => |o| matches!(o, Outcome::Deny(Some(m)) if m.starts_with("5.7.1")),
    }
}

/// A milter that answers `bad` to the command `at` on its first connection only, having
/// negotiated `actions`: under each default action, the stage `stage` (0 connect ... 5 end of
/// message) and every later one get that action's outcome, one line saying `why` is logged,
/// the connection is dropped (the milter sees it close) and not opened again in the session,
/// and the next session opens a new one that works.
fn assert_failure_handled(at: u8, bad: Vec<Vec<u8>>, actions: u32, stage: usize, why: &str) {
    for action in ["accept", "tempfail", "reject"] {
        let bad = bad.clone();
        let peer = fake(move |n, cmd, _| match cmd {
            b'O' => Some(vec![optneg(actions, 0)]),
            c if c == at && n == 0 => Some(bad.clone()),
            _ => None,
        });
        let p = plugin(&peer, &format!("default_action {action}"));
        let (mut cx, svc) = clocked_client();
        let o = stages(&*p, &mut cx, &mut txn());
        let expected = default_outcome(action);
        for (i, o) in o.iter().enumerate() {
            if i < stage {
                assert_eq!(*o, Outcome::Declined, "{why}, {action}: stage {i}");
            } else {
                assert!(expected(o), "{why}, {action}: stage {i} gave {o:?}");
            }
        }
        let logs = svc.fake.logs.borrow();
        assert_eq!(logs.len(), 1, "{why}, {action}: {logs:?}");
        assert!(logs[0].2.contains(why), "{why}, {action}: {logs:?}");
        assert!(logs[0].2.contains("default action"), "{logs:?}");
        assert_eq!(svc.fake.connects.borrow().len(), 1, "{why}, {action}");
        let seen = peer.take();
        let sent = letters(&seen);
        let after_bad = &sent[sent.iter().position(|&c| c == at).unwrap() + 1..];
        assert!(
            after_bad.is_empty() || after_bad == [EOF],
            "{why}, {action}: sent {after_bad:?} after the failure"
        );
        // The next session: a new connection, a milter that behaves.
        let (mut cx, svc) = client();
        let o = stages(&*p, &mut cx, &mut txn());
        assert!(
            o.iter().all(|o| *o == Outcome::Declined),
            "{why}, {action}: {o:?}"
        );
        assert_eq!(svc.connects.borrow().len(), 1);
        assert_eq!(letters(&peer.take())[0], b'O');
    }
}

#[test]
fn bad_input_gets_the_default_action() {
    // An unknown reply.
    assert_failure_handled(b'R', vec![packet(b'Z', b"")], 0, 3, "unknown reply 0x5a");
    // A packet longer than its declared length: a continue with three bytes more.
    assert_failure_handled(
        b'M',
        vec![vec![0, 0, 0, 1, b'c', b'x', b'y', b'z']],
        0,
        2,
        "sent 3 bytes after its answer",
    );
    // A packet over 64 MiB.
    assert_failure_handled(
        b'H',
        vec![vec![4, 0, 0, 1, b'c']],
        0,
        1,
        "packet of 67108865 bytes",
    );
    // Closes mid-message: a reply cut short, then EOF.
    assert_failure_handled(
        b'B',
        vec![vec![0, 0, 0, 9, b'h', b'X'], CLOSE.to_vec()],
        0,
        5,
        "closed the connection",
    );
    // Never answers.
    assert_failure_handled(b'T', vec![silence(3600)], 0, 4, "no answer within 20s");
    // A modification it did not negotiate.
    assert_failure_handled(
        b'E',
        vec![packet(b'+', b"<x@example.net>\0"), packet(b'c', b"")],
        action::ADDHDRS,
        5,
        "sent add-recipient without negotiating action 0x4",
    );
}

/// The macros sent for the stage whose command letter is `stage`.
fn macros_at(seen: &Seen, stage: u8) -> Vec<(String, String)> {
    let Some((_, d)) = seen
        .iter()
        .find(|(c, d)| *c == b'D' && d.first() == Some(&stage))
    else {
        return Vec::new();
    };
    let strings: Vec<String> = d[1..]
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    strings
        .chunks_exact(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

fn names(m: &[(String, String)]) -> Vec<&str> {
    m.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn macros_of_each_stage_and_esmtp_arguments() {
    use ringsmtpd_plugin_api::{AuthInfo, BodyType, Notify, TlsInfo};
    let peer = fake(|_, _, _| None);
    let p = plugin(&peer, "");
    let (mut cx, _) = client();
    cx.conn.tls = Some(TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS_AES_256_GCM_SHA384".into(),
    });
    cx.conn.auth = Some(AuthInfo {
        user: "joe".into(),
        mechanism: "PLAIN".into(),
    });
    let mut t = txn();
    t.mail_params.size = Some(1234);
    t.mail_params.body = BodyType::EightBitMime;
    t.mail_params.envid = Some("QQ+2B1".into());
    let mut r = rcpt("<u@example.test>");
    r.params.notify = Notify {
        success: true,
        failure: true,
        ..Notify::default()
    };
    r.params.orcpt = Some("rfc822;u@example.test".into());
    run(p.connect(&mut cx));
    run(p.ehlo(&mut cx, "client.example"));
    run(p.mail(&mut cx, &mut t));
    run(p.rcpt(&mut cx, &mut t, &r));
    run(p.data(&mut cx, &mut t));
    run(p.data_post(&mut cx, &mut t));
    run(p.disconnect(&mut cx));
    let seen = peer.take();
    let connect = macros_at(&seen, b'C');
    for n in [
        "j",
        "{daemon_name}",
        "{daemon_addr}",
        "v",
        "_",
        "{client_addr}",
        "{client_name}",
    ] {
        assert!(names(&connect).contains(&n), "{n} in {connect:?}");
    }
    assert!(connect.contains(&("j".into(), "mx.example.test".into())));
    assert_eq!(
        macros_at(&seen, b'H'),
        [
            ("{tls_version}".into(), "TLSv1.3".into()),
            ("{cipher}".into(), "TLS_AES_256_GCM_SHA384".into())
        ]
    );
    let mail = macros_at(&seen, b'M');
    assert_eq!(
        names(&mail),
        [
            "i",
            "{auth_type}",
            "{auth_authen}",
            "{mail_addr}",
            "{mail_host}",
            "{mail_mailer}"
        ]
    );
    assert!(mail.contains(&("{auth_authen}".into(), "joe".into())));
    assert!(mail.contains(&("{mail_addr}".into(), "a@example.org".into())));
    let rcpt_macros = macros_at(&seen, b'R');
    assert_eq!(
        names(&rcpt_macros),
        ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]
    );
    assert!(rcpt_macros.contains(&("{rcpt_addr}".into(), "u@example.test".into())));
    for stage in [b'T', b'N', b'E'] {
        assert_eq!(macros_at(&seen, stage), [("i".into(), "1.1".into())]);
    }
    // The ESMTP arguments follow the path.
    let find = |c: u8| seen.iter().find(|(x, _)| *x == c).unwrap().1.clone();
    assert_eq!(
        find(b'M'),
        b"<a@example.org>\0SIZE=1234\0BODY=8BITMIME\0ENVID=QQ+2B1\0".to_vec()
    );
    assert_eq!(
        find(b'R'),
        b"<u@example.test>\0NOTIFY=SUCCESS,FAILURE\0ORCPT=rfc822;u@example.test\0".to_vec()
    );
}

#[test]
fn a_symbol_list_narrows_the_macros() {
    // SMFIF_SETSYMLIST: at MAIL only {mail_addr}, at connect only j.
    let (_, seen) = session(
        |_, cmd, _| {
            (cmd == b'O').then(|| {
                let mut d = Vec::new();
                for v in [6, action::SETSYMLIST, 0, 2] {
                    d.extend_from_slice(&u32::to_be_bytes(v));
                }
                d.extend_from_slice(b"{mail_addr}\0");
                d.extend_from_slice(&0u32.to_be_bytes());
                d.extend_from_slice(b"j\0");
                vec![packet(b'O', &d)]
            })
        },
        "",
    );
    assert_eq!(names(&macros_at(&seen, b'M')), ["{mail_addr}"]);
    assert_eq!(names(&macros_at(&seen, b'C')), ["j"]);
    assert_eq!(
        names(&macros_at(&seen, b'R')),
        ["i", "{rcpt_addr}", "{rcpt_host}", "{rcpt_mailer}"]
    );
}

#[test]
fn unknown_commands_go_to_the_milter() {
    let peer = fake(|_, cmd, data| match (cmd, data) {
        (b'U', b"XYZZY magic words\0") => Some(vec![packet(b'y', b"502 5.5.1 no magic here\0")]),
        (b'U', _) => Some(vec![packet(b'a', b"")]),
        _ => None,
    });
    let p = plugin(&peer, "");
    let (mut cx, _) = client();
    run(p.connect(&mut cx));
    let Outcome::Done(Some(r)) = run(p.unrecognized_command(&mut cx, "xyzzy", "magic words"))
    else {
        panic!("no reply code")
    };
    assert_eq!((r.code, &r.lines[..]), (502, &["no magic here".into()][..]));
    // An accept answers this command only: the milter still sees HELO.
    assert_eq!(
        run(p.unrecognized_command(&mut cx, "plugh", "")),
        Outcome::Declined
    );
    assert_eq!(run(p.helo(&mut cx, "client.example")), Outcome::Declined);
    run(p.disconnect(&mut cx));
    let seen = peer.take();
    assert_eq!(letters(&seen), b"OCUUHQ".to_vec());
    assert!(seen.contains(&(b'U', b"PLUGH\0".to_vec())));

    // Not sent when the milter asked not to see them, nor to a version 2 milter.
    for neg in [optneg(0, step::NOUNKNOWN), {
        let mut v2 = optneg(0, 0);
        v2[8] = 2;
        v2
    }] {
        let peer = fake(move |_, cmd, _| match cmd {
            b'O' => Some(vec![neg.clone()]),
            b'U' => Some(vec![packet(b'r', b"")]),
            _ => None,
        });
        let p = plugin(&peer, "");
        let (mut cx, _) = client();
        run(p.connect(&mut cx));
        assert_eq!(
            run(p.unrecognized_command(&mut cx, "xyzzy", "")),
            Outcome::Declined
        );
        run(p.disconnect(&mut cx));
        assert_eq!(letters(&peer.take()), b"OCQ".to_vec());
    }
}

#[test]
fn rejected_recipients_are_shown_when_negotiated() {
    use ringsmtpd_plugin_api::Hook;
    let script = |steps: u32| move |_, cmd, _: &[u8]| (cmd == b'O').then(|| vec![optneg(0, steps)]);
    let peer = fake(script(step::RCPT_REJ));
    let p = plugin(&peer, "");
    let (mut cx, _) = client();
    let mut t = txn();
    run(p.connect(&mut cx));
    run(p.mail(&mut cx, &mut t));
    // A plugin after the milter refuses <bad@...> at rcpt: the milter sees it as rejected.
    let refusal = Outcome::Deny(Some("5.1.1 no such user".into()));
    run(p.rcpt_pre(&mut cx, "<bad@example.test>", "NOTIFY=NEVER"));
    assert_eq!(
        run(p.deny(&mut cx, "rcpt_ok", Hook::RcptPre, &refusal)),
        Outcome::Declined
    );
    // A recipient the milter saw and a later plugin refused is not shown again.
    run(p.rcpt_pre(&mut cx, "<u@example.test>", ""));
    run(p.rcpt(&mut cx, &mut t, &rcpt("<u@example.test>")));
    run(p.deny(&mut cx, "other", Hook::Rcpt, &refusal));
    run(p.disconnect(&mut cx));
    let seen = peer.take();
    assert_eq!(letters(&seen), b"OCMRRQ".to_vec());
    assert!(seen.contains(&(b'R', b"<bad@example.test>\0NOTIFY=NEVER\0".to_vec())));
    assert_eq!(
        macros_at(&seen, b'R'),
        [
            ("i".into(), "1.1".into()),
            ("{rcpt_addr}".into(), "no such user".into()),
            ("{rcpt_host}".into(), "5.1.1".into()),
            ("{rcpt_mailer}".into(), "error".into()),
        ]
    );

    // Not negotiated, or no recipient wanted at all: a refused recipient is not shown.
    for steps in [0, step::RCPT_REJ | step::NORCPT] {
        let peer = fake(script(steps));
        let p = plugin(&peer, "");
        let (mut cx, _) = client();
        run(p.connect(&mut cx));
        run(p.mail(&mut cx, &mut t));
        run(p.rcpt_pre(&mut cx, "<bad@example.test>", ""));
        run(p.deny(&mut cx, "rcpt_ok", Hook::Rcpt, &refusal));
        run(p.disconnect(&mut cx));
        assert_eq!(letters(&peer.take()), b"OCMQ".to_vec(), "steps 0x{steps:x}");
    }
}
