//! rspamd against a fake HTTP peer: the request it sends, each action, the headers it adds,
//! hostile answers (malformed, oversized, truncated, chunked, unframed), a silent server and a
//! refused connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;

use ringsmtpd_plugin_api::shared::SpamVerdict;
use ringsmtpd_plugin_api::testing::{
    assert_bad_args, build, cx, rcpt, run, set_message, spool, txn_from, unlisted_overrides,
    FakePeer, FakeServices, TempDir,
};
use ringsmtpd_plugin_api::{AuthInfo, Cx, Outcome, Plugin, Reply, Transaction};

use super::*;

/// One request as the peer read it: the header section and the body.
#[derive(Debug)]
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
            .collect()
    }
}

/// A fake rspamd: reads one request (by its Content-Length), records it, writes `answer`
/// as given (status line, header section and body), and closes.
fn peer(answer: Vec<u8>) -> FakePeer<Request> {
    FakePeer::start(move |conn: TcpStream, seen: &Mutex<Vec<Request>>| {
        let mut reader = BufReader::new(conn.try_clone().expect("clone the socket"));
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().expect("record").push(Request { head, body });
        let mut conn = conn;
        let _ = conn.write_all(&answer);
    })
}

/// An HTTP answer with `json` as its body and a Content-Length.
fn ok_json(json: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    )
    .into_bytes()
}

fn verdict(action: &str, score: f64) -> String {
    format!(
        r#"{{"is_skipped":false,"score":{score},"required_score":15.0,"action":"{action}",
        "symbols":{{"GTUBE":{{"name":"GTUBE","score":{score}}},"R_SPF_NA":{{"name":"R_SPF_NA","score":0.0}}}},
        "unknown_field":[1,2,{{"x":null}}]}}"#
    )
}

const MESSAGE: &str =
    "From: a@example.org\r\nSubject: hello\r\nX-Spam: forged\r\n\r\nbody line\r\n";

fn transaction() -> Transaction {
    let mut txn = txn_from("<a@example.org>");
    txn.recipients.push(rcpt("<b@example.test>"));
    txn.recipients.push(rcpt("<c@example.test>"));
    txn.id = "1.1".to_string();
    txn.added_headers = "Received: from client\r\n".to_string();
    set_message(&mut txn, MESSAGE);
    txn
}

/// Runs `line`'s plugin on a transaction for a client at 192.0.2.1.
fn scan_with(line: &str, txn: &mut Transaction) -> (Outcome, Rc<FakeServices>, Cx) {
    let p = build(Rspamd::new, line, &[]).expect("builds");
    let (mut c, svc) = cx("192.0.2.1:4242");
    // A spool file is read on another thread: the deadline must not fire at once.
    svc.timers_never_fire.set(txn.body.spool.is_some());
    let out = run(p.data_post(&mut c, txn));
    (out, svc, c)
}

/// The plugin on `port` scans [`transaction`]; the outcome, the transaction, what the peer saw.
fn scan(extra: &str, answer: Vec<u8>) -> (Outcome, Transaction, Vec<Request>, Rc<FakeServices>) {
    let peer = peer(answer);
    let mut txn = transaction();
    let (out, svc, _) = scan_with(&format!("rspamd port {} {extra}", peer.port), &mut txn);
    (out, txn, peer.take(), svc)
}

use std::rc::Rc;

fn reply(out: &Outcome) -> (u16, String) {
    match out {
        Outcome::Done(Some(Reply {
            code,
            enhanced,
            lines,
            ..
        })) => (
            *code,
            format!("{} {}", enhanced.as_deref().unwrap_or(""), lines.join("|")),
        ),
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn sends_the_envelope_and_the_message_and_accepts_no_action() {
    let (out, txn, seen, _) = scan("pass_all 1", ok_json(&verdict("no action", -0.5)));
    assert_eq!(out, Outcome::Declined);
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert!(
        r.head.starts_with("POST /checkv2 HTTP/1.1\r\n"),
        "{}",
        r.head
    );
    assert_eq!(r.header("IP"), ["192.0.2.1"]);
    assert_eq!(r.header("From"), ["a@example.org"]);
    assert_eq!(r.header("Rcpt"), ["b@example.test", "c@example.test"]);
    assert_eq!(r.header("Queue-Id"), ["1.1"]);
    assert_eq!(r.header("Pass"), ["all"]);
    assert!(r.header("User").is_empty());
    assert_eq!(
        r.body,
        format!("Received: from client\r\n{MESSAGE}").as_bytes()
    );
    let h = &txn.added_headers;
    assert!(
        h.contains("X-Spam-Status: No, score=-0.50 required=15.00 action=no_action\r\n"),
        "{h}"
    );
    assert!(
        h.contains("X-Rspamd-Score: -0.50\r\n") && h.contains("X-Rspamd-Bar: /\r\n"),
        "{h}"
    );
    assert!(
        h.contains("X-Rspamd-Report: R_SPF_NA(0.00)\r\n\tGTUBE(-0.50)\r\n"),
        "{h}"
    );
    assert!(!h.contains("X-Spam: Yes"), "{h}");
    let note = txn.notes.get::<SpamVerdict>().expect("the note");
    assert_eq!(
        (note.scanner, note.score, note.is_spam, note.action),
        ("rspamd", -0.5, false, Some("no action"))
    );
}

#[test]
fn sends_user_and_bounce_sender() {
    let peer = peer(ok_json(&verdict("no action", 0.0)));
    let p = build(
        Rspamd::new,
        &format!("rspamd port {} check_authenticated 1", peer.port),
        &[],
    )
    .expect("builds");
    let (mut c, _) = cx("192.0.2.1:4242");
    c.conn.auth = Some(AuthInfo {
        user: "alice\r\nEvil: 1".to_string(),
        mechanism: "PLAIN".to_string(),
    });
    let mut txn = transaction();
    txn.sender = ringsmtpd_plugin_api::Address::null();
    assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
    let seen = peer.take();
    assert_eq!(seen[0].header("User"), ["alice  Evil: 1"]);
    assert!(seen[0].header("Evil").is_empty());
    assert_eq!(seen[0].header("From"), ["<>"]);
}

#[test]
fn reject_is_550_with_rspamds_text_cleaned() {
    let json = r#"{"score":1001,"required_score":15,"action":"reject",
        "messages":{"smtp_message":"Gtube pattern\r\n250 ok\u0000"}}"#;
    let (out, txn, _, _) = scan("", ok_json(json));
    assert_eq!(
        reply(&out),
        (550, "5.7.1 Gtube pattern??250 ok?".to_string())
    );
    assert_eq!(
        txn.notes
            .get::<SpamVerdict>()
            .map(|n| (n.action, n.is_spam)),
        Some((Some("reject"), true))
    );
    let (out, _, _, _) = scan("smtp_message 0", ok_json(json));
    assert_eq!(
        reply(&out),
        (550, "5.7.1 Message rejected as spam".to_string())
    );
    // reject_spam 0: accepted, marked.
    let (out, txn, _, _) = scan("reject_spam 0", ok_json(json));
    assert_eq!(out, Outcome::Declined);
    assert!(txn.added_headers.contains("X-Spam: Yes\r\n"));
    assert!(txn
        .added_headers
        .contains("X-Rspamd-Bar: ++++++++++++++++++++++++++++++++++++++++++++++++++\r\n"));
}

#[test]
fn soft_reject_and_greylist_are_451() {
    let (out, _, _, _) = scan("", ok_json(&verdict("soft reject", 9.0)));
    assert_eq!(reply(&out), (451, "4.7.1 Try again later".to_string()));
    let (out, _, _, _) = scan("", ok_json(&verdict("greylist", 5.0)));
    assert_eq!(
        reply(&out),
        (451, "4.7.1 Greylisted, try again later".to_string())
    );
    let (out, txn, _, _) = scan("greylist 0", ok_json(&verdict("greylist", 5.0)));
    assert_eq!(out, Outcome::Declined);
    assert!(txn.added_headers.contains("X-Spam-Status: No,"));
}

#[test]
fn add_header_marks_the_message() {
    let (out, txn, _, _) = scan(
        "header_report 0 header_bar 0",
        ok_json(&verdict("add header", 7.0)),
    );
    assert_eq!(out, Outcome::Declined);
    let h = &txn.added_headers;
    assert!(
        h.contains(
            "X-Spam: Yes\r\nX-Spam-Status: Yes, score=7.00 required=15.00 action=add_header\r\n"
        ),
        "{h}"
    );
    assert!(
        !h.contains("X-Rspamd-Report") && !h.contains("X-Rspamd-Bar"),
        "{h}"
    );
}

#[test]
fn rewrite_subject_replaces_the_subject() {
    let json = r#"{"score":8,"required_score":15,"action":"rewrite subject",
        "subject":"[SPAM] hello\r\nBcc: victim@example.com"}"#;
    let (out, txn, _, _) = scan("", ok_json(json));
    assert_eq!(out, Outcome::Declined);
    // Changed where it was, cleaned: the CR LF cannot start a Bcc field.
    let message = String::from_utf8_lossy(&txn.body.mem).into_owned();
    assert!(
        message.contains("\r\nSubject: [SPAM] hello??Bcc: victim@example.com\r\nX-Spam: forged"),
        "{message}"
    );
    assert!(
        !message.contains("\r\nBcc") && !message.contains("Subject: hello"),
        "{message}"
    );
    assert!(
        !txn.added_headers.contains("Subject"),
        "{}",
        txn.added_headers
    );
    assert_eq!(txn.body.len as usize, message.len());
    assert_eq!(txn.body.header_end, message.find("\r\n\r\n").map(|i| i + 4));
    // Without rspamd's subject: the prefix and the old one.
    let json = r#"{"score":8,"required_score":15,"action":"rewrite subject"}"#;
    let (_, txn, _, _) = scan("subject_prefix [spam]", ok_json(json));
    let message = String::from_utf8_lossy(&txn.body.mem).into_owned();
    assert!(
        message.contains("\r\nSubject: [spam] hello\r\n"),
        "{message}"
    );
}

#[test]
fn milter_headers_are_added_cleaned_and_removed() {
    let json = r#"{"score":1,"required_score":15,"action":"no action","milter":{
        "add_headers":{"X-Virus":"no\r\nX-Injected: 1","X-Two":[{"value":"a","order":1},{"value":"b"}],
                       "X-Obj":{"value":"v","order":0}},
        "remove_headers":{"X-Spam":0}}}"#;
    let (out, txn, _, _) = scan("", ok_json(json));
    assert_eq!(out, Outcome::Declined);
    let h = &txn.added_headers;
    assert!(h.contains("X-Virus: no??X-Injected: 1\r\n"), "{h}");
    assert!(!h.contains("\r\nX-Injected"), "{h}");
    assert!(
        h.contains("X-Two: a\r\nX-Two: b\r\n") && h.contains("X-Obj: v\r\n"),
        "{h}"
    );
    assert!(!String::from_utf8_lossy(&txn.body.mem).contains("X-Spam: forged"));
    // The removal ran before rspamd's and our own fields were added.
    assert!(h.contains("X-Spam-Status: No"), "{h}");
    // A bad header name refuses the whole answer.
    let json = r#"{"score":1,"required_score":15,"action":"no action","milter":{"add_headers":{"X-A:\r\nB":"v"}}}"#;
    let (out, _, _, _) = scan("", ok_json(json));
    assert_eq!(reply(&out).0, 451);
    // milter_headers 0: neither.
    let json = r#"{"score":1,"required_score":15,"action":"no action","milter":{"add_headers":{"X-Virus":"no"},"remove_headers":{"X-Spam":0}}}"#;
    let (_, txn, _, _) = scan("milter_headers 0", ok_json(json));
    assert!(!txn.added_headers.contains("X-Virus"));
    assert!(String::from_utf8_lossy(&txn.body.mem).contains("X-Spam: forged"));
}

#[test]
fn dkim_signatures_only_when_asked() {
    let json = r#"{"score":0,"required_score":15,"action":"no action","dkim-signature":"v=1; a=rsa-sha256; d=example.org\r\n\tb=abc"}"#;
    let (_, txn, _, _) = scan("", ok_json(json));
    assert!(!txn.added_headers.contains("DKIM-Signature"));
    let (_, txn, _, _) = scan("dkim 1", ok_json(json));
    assert!(
        txn.added_headers
            .starts_with("DKIM-Signature: v=1; a=rsa-sha256; d=example.org?? b=abc\r\n"),
        "{}",
        txn.added_headers
    );
}

/// Answers that are errors: each defers (451 4.7.1), and accepts with a header under
/// `on_error accept`.
#[test]
fn hostile_answers_follow_the_error_policy() {
    // Valid JSON made too big with white space: only the bound refuses it.
    let big = format!(
        "{}{}",
        verdict("no action", 0.0),
        " ".repeat(client::MAX_BODY)
    );
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad JSON", ok_json("{\"score\": 1, \"action\": ")),
        ("bad JSON", ok_json("[1,2]")),
        ("bad JSON", ok_json(r#"{"score":1}"#)),
        (
            "unknown action",
            ok_json(r#"{"score":1,"action":"deliver twice"}"#),
        ),
        ("bad JSON", ok_json(r#"{"score":"high","action":"reject"}"#)),
        (
            "over 1048576",
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{big}",
                big.len()
            )
            .into_bytes(),
        ),
        (
            "over 1048576",
            format!("HTTP/1.1 200 OK\r\n\r\n{big}").into_bytes(),
        ),
        (
            "over 1048576",
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            )
            .into_bytes(),
        ),
        (
            "closed in the answer's body",
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"score\":1,".to_vec(),
        ),
        (
            "before the answer's header ended",
            b"HTTP/1.1 200 OK\r\nContent-Len".to_vec(),
        ),
        (
            "HTTP status",
            b"HTTP/1.1 500 Internal error\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ),
        ("bad status line", b"SPAMD/1.1 0 EX_OK\r\n\r\n".to_vec()),
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        ),
        ("before the answer's header ended", Vec::new()),
    ];
    for (what, answer) in cases {
        let (out, txn, _, svc) = scan("", answer.clone());
        assert_eq!(
            reply(&out),
            (
                451,
                "4.7.1 Unable to scan the message now, please try again later".to_string()
            ),
            "{what}"
        );
        assert!(svc.logged("error, deferred ("), "{what}");
        assert!(svc.logged(what), "{what}: {:?}", svc.logs.borrow());
        assert!(txn.notes.get::<SpamVerdict>().is_none(), "{what}");
        let (out, txn, _, _) = scan("on_error accept", answer);
        assert_eq!(out, Outcome::Declined, "{what}");
        assert!(
            txn.added_headers
                .contains("X-Rspamd-Unscanned: not scanned, rspamd error\r\n"),
            "{what}"
        );
        assert!(!txn.added_headers.contains("X-Spam-Status"), "{what}");
    }
}

#[test]
fn chunked_and_unframed_answers_are_read() {
    let json = verdict("add header", 6.0);
    let (a, b) = json.split_at(10);
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let (out, txn, _, _) = scan("", chunked.into_bytes());
    assert_eq!(out, Outcome::Declined);
    assert!(
        txn.added_headers.contains("X-Spam: Yes"),
        "{}",
        txn.added_headers
    );
    let unframed = format!("HTTP/1.0 200 OK\r\n\r\n{json}");
    let (out, txn, _, _) = scan("", unframed.into_bytes());
    assert_eq!(out, Outcome::Declined);
    assert!(
        txn.added_headers.contains("X-Spam: Yes"),
        "{}",
        txn.added_headers
    );
}

#[test]
fn silent_server_times_out_and_defers() {
    let p = build(Rspamd::new, "rspamd port 11333 timeout 5", &[]).expect("builds");
    let (mut c, svc) = cx("192.0.2.1:4242");
    svc.mute_peers.set(true);
    let mut txn = transaction();
    let out = run(p.data_post(&mut c, &mut txn));
    assert_eq!(reply(&out).0, 451);
    assert!(
        svc.logged("no answer from 127.0.0.1:11333 within the timeout (5s)"),
        "{:?}",
        svc.logs.borrow()
    );
}

#[test]
fn refused_connection_defers_or_accepts() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut txn = transaction();
    let (out, svc, _) = scan_with(&format!("rspamd port {port}"), &mut txn);
    assert_eq!(reply(&out).0, 451);
    assert!(svc.logged("cannot connect"));
    let mut txn = transaction();
    let (out, svc, _) = scan_with(&format!("rspamd port {port} on_error accept"), &mut txn);
    assert_eq!(out, Outcome::Declined);
    assert!(
        txn.added_headers
            .contains("X-Rspamd-Unscanned: not scanned, rspamd error"),
        "{}",
        txn.added_headers
    );
    assert!(svc.logged("error, accepted unscanned ("));
    // The scanners' own spelling of the policy works too.
    let mut txn = transaction();
    let (out, _, _) = scan_with(&format!("rspamd port {port} defer_on_error 0"), &mut txn);
    assert_eq!(out, Outcome::Declined);
}

#[test]
fn skips_relay_authenticated_and_private_clients_unless_asked() {
    let p = build(Rspamd::new, "rspamd port 9", &[]).expect("builds");
    let mut txn = transaction();
    let (mut c, svc) = cx("192.0.2.1:1");
    c.conn.relay_client = true;
    assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
    let (mut c2, svc2) = cx("192.0.2.1:1");
    c2.conn.auth = Some(AuthInfo {
        user: "u".into(),
        mechanism: "PLAIN".into(),
    });
    assert_eq!(run(p.data_post(&mut c2, &mut txn)), Outcome::Declined);
    let (mut c3, svc3) = cx("10.1.2.3:1");
    assert_eq!(run(p.data_post(&mut c3, &mut txn)), Outcome::Declined);
    for s in [&svc, &svc2, &svc3] {
        assert!(s.connects.borrow().is_empty());
        assert!(s.logged("skip: "));
    }
    // Asked: scanned (and here, nothing listens: deferred).
    let p = build(Rspamd::new, "rspamd port 9 check_private_ip 1", &[]).expect("builds");
    let (mut c, svc) = cx("127.0.0.1:1");
    assert_eq!(reply(&run(p.data_post(&mut c, &mut txn))).0, 451);
    assert_eq!(svc.connects.borrow().len(), 1);
}

#[test]
fn a_spooled_message_is_streamed_whole() {
    let dir = TempDir::new("rspamd");
    let mut message = MESSAGE.replace("body line\r\n", "");
    for i in 0..20_000 {
        message.push_str(&format!("line {i} of a long message body\r\n"));
    }
    let peer = peer(ok_json(
        r#"{"score":1,"required_score":15,"action":"rewrite subject","subject":"new","milter":{"remove_headers":{"X-Spam":0}}}"#,
    ));
    let mut txn = transaction();
    spool(&mut txn.body, &dir.path().join("spool"), message.as_bytes());
    assert!(message.len() > 3 * 64 * 1024);
    let (out, svc, _) = scan_with(&format!("rspamd port {}", peer.port), &mut txn);
    assert_eq!(out, Outcome::Declined);
    let seen = peer.take();
    assert_eq!(
        seen[0].body,
        format!("Received: from client\r\n{message}").as_bytes()
    );
    // The header edits rewrote the spool file: X-Spam gone, the Subject new, the body intact.
    let spooled = std::fs::read(dir.path().join("spool")).expect("the spool file");
    let expected = message.replace("Subject: hello\r\nX-Spam: forged\r\n", "Subject: new\r\n");
    assert_eq!(String::from_utf8_lossy(&spooled), expected);
    assert_eq!(txn.body.len as usize, expected.len());
    assert_eq!(
        txn.body.mem,
        &expected.as_bytes()[..txn.body.header_end.expect("end")]
    );
    assert!(
        !txn.added_headers.contains("Subject"),
        "{}",
        txn.added_headers
    );
    assert!(!svc.logged("left as they were"));
    // The file the body holds is the new one, readable at its own offsets.
    let spool = txn.body.spool.as_ref().expect("still spooled");
    let mut first = [0u8; 20];
    std::os::unix::fs::FileExt::read_exact_at(&spool.file, &mut first, 0).expect("read");
    assert_eq!(&first, &expected.as_bytes()[..20]);
}

#[test]
fn unix_socket() {
    let dir = TempDir::new("rspamd-unix");
    let path = dir.join("rspamd.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let answer = ok_json(&verdict("add header", 6.0));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while !got.ends_with(b"body line\r\n") {
            let n = conn.read(&mut buf).expect("read");
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(&answer).expect("write");
    });
    let mut txn = transaction();
    let (out, _, _) = scan_with(&format!("rspamd socket {path}"), &mut txn);
    server.join().expect("server");
    assert_eq!(out, Outcome::Declined);
    assert!(txn.added_headers.contains("X-Spam: Yes"));
}

#[test]
fn bad_arguments() {
    assert_bad_args(
        Rspamd::new,
        "rspamd",
        &[
            &["host", "rspamd.example"],
            &["port", "0"],
            &["timeout", "0"],
            &["on_error", "ignore"],
            &["reject_spam", "maybe"],
            &["colour", "blue"],
            &["port"],
            &["max_scans", "0"],
        ],
    );
}

#[test]
fn lists_its_hooks() {
    let p = build(Rspamd::new, "rspamd", &[]).expect("builds");
    assert!(unlisted_overrides(&p).is_empty());
}

#[test]
fn a_scan_waits_for_a_free_slot_within_the_timeout() {
    let peer = peer(ok_json(&verdict("no action", 0.0)));
    let p = build(
        Rspamd::new,
        &format!("rspamd port {} max_scans 1", peer.port),
        &[],
    )
    .expect("builds");
    // Every slot taken (by a scan of another session): the timer (immediate here) ends the wait.
    let held = ringsmtpd_plugin_api::testing::block_on(p.scanner.hold_slot());
    let (mut c, svc) = cx("192.0.2.1:4242");
    let mut txn = transaction();
    assert_eq!(reply(&run(p.data_post(&mut c, &mut txn))).0, 451);
    assert!(
        svc.logged("no free scan slot within the timeout (25s): 1 in flight, 0 more waiting"),
        "{:?}",
        svc.logs.borrow()
    );
    assert!(svc.connects.borrow().is_empty());
    // The slot given back: the next scan goes through.
    drop(held);
    let mut txn = transaction();
    assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
    assert_eq!(peer.take().len(), 1);
}
