//! One Authentication-Results header per message (RFC 8601), never accumulating across the
//! transactions of one connection (qpsmtpd #320), and forged ones claiming our authserv-id.

use ringsmtpd_plugin_api::shared::AuthResults;

use super::*;

/// Adds a connection clause at `connect` (as iprev would) and a transaction clause naming the
/// sender at `mail` and at `data_post_headers` (as SPF and DKIM do).
struct Clauses;

impl Plugin for Clauses {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Connect, Hook::Mail, Hook::DataPostHeaders])
    }
    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let clauses = cx.conn.notes.get_or_insert_with(AuthResults::default);
        clauses.0.push("iprev=pass policy.iprev=192.0.2.1".into());
        Step::DECLINED
    }
    fn mail<'a>(&'a self, _: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let clause = format!("spf=pass smtp.mailfrom={}", txn.sender.domain());
        txn.notes
            .get_or_insert_with(AuthResults::default)
            .0
            .push(clause);
        Step::DECLINED
    }
    fn data_post_headers<'a>(&'a self, _: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let clause = format!("dkim=pass header.d={}", txn.sender.domain());
        txn.notes
            .get_or_insert_with(AuthResults::default)
            .0
            .push(clause);
        Step::DECLINED
    }
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The value of the one Authentication-Results field among `added`, unfolded.
fn auth_results(added: &str) -> String {
    assert_eq!(count(added, "Authentication-Results:"), 1, "{added}");
    let start = added.find("Authentication-Results:").expect("present");
    let end = added[start..]
        .find("\r\nReceived:")
        .expect("Received follows");
    added[start..start + end].replace("\r\n\t", " ")
}

#[test]
fn each_message_of_a_connection_has_one_header_with_only_its_own_clauses() {
    let h = Harness::new().plugin("clauses", Box::new(Clauses));
    let msg = |from: &str| format!("MAIL FROM:<a@{from}>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n");
    let (one, two, three, four) = (
        msg("one.example"),
        "MAIL FROM:<a@two.example>\r\nRCPT TO:<u@example.test>\r\nRSET\r\n",
        msg("three.example"),
        msg("four.example"),
    );
    let r = h.run(&[
        EHLO,
        one.as_bytes(),
        b"Subject: 1\r\n\r\none\r\n.\r\n",
        two.as_bytes(),
        three.as_bytes(),
        b"Subject: 3\r\n\r\nthree\r\n.\r\n",
        four.as_bytes(),
        b"Subject: 4\r\n\r\nfour\r\n.\r\nQUIT\r\n",
    ]);
    assert_eq!(r.captured.len(), 3, "{}", r.raw);
    let expected = ["one.example", "three.example", "four.example"];
    for (m, domain) in r.captured.iter().zip(expected) {
        let ar = auth_results(&m.added_headers);
        assert_eq!(
            ar,
            format!(
                "Authentication-Results: mx.example.test; auth=none; \
                 iprev=pass policy.iprev=192.0.2.1; \
                 spf=pass smtp.mailfrom={domain}; dkim=pass header.d={domain}"
            )
        );
        for other in ["one.", "two.", "three.", "four."] {
            let n = if domain.starts_with(other) { 2 } else { 0 };
            assert_eq!(count(&m.added_headers, other), n, "{}", m.added_headers);
        }
    }
}

#[test]
fn two_messages_on_one_connection_without_reset() {
    let h = Harness::new().plugin("clauses", Box::new(Clauses));
    let msg = [MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n"].concat();
    let r = h.run(&[EHLO, &msg, &msg]);
    assert_eq!(r.captured.len(), 2, "{}", r.raw);
    assert_eq!(
        auth_results(&r.captured[0].added_headers),
        auth_results(&r.captured[1].added_headers)
    );
    assert_eq!(count(&r.captured[1].added_headers, "\tiprev="), 1);
    assert_eq!(
        count(&r.captured[1].added_headers, "\tspf="),
        1,
        "{}",
        r.captured[1].added_headers
    );
}

const FORGED: &str =
    "Authentication-Results: MX.example.test;\r\n\tdkim=pass header.d=bank.example\r\n\
    Authentication-Results: (quoted) \"mx.example.test\"; spf=pass\r\n\
    Authentication-Results: relay.example.org; spf=fail\r\n\
    ARC-Authentication-Results: i=1; mx.example.test; spf=pass\r\n";

/// The message's own header fields (without those the core added) named like `name`.
fn own_fields(m: &Captured, name: &str) -> usize {
    ringsmtpd_plugin_api::headers::fields(&m.body)
        .flatten()
        .filter(|f| f.is(name))
        .count()
}

fn check_renamed(m: &Captured) {
    assert_eq!(own_fields(m, "X-Forged-Authn-Results"), 2, "{:?}", m.body);
    // Another server's field and the ARC set are kept; ours is the only one claiming us.
    assert_eq!(own_fields(m, "Authentication-Results"), 1);
    assert_eq!(own_fields(m, "ARC-Authentication-Results"), 1);
    assert!(String::from_utf8_lossy(&m.body)
        .contains("Authentication-Results: relay.example.org; spf=fail\r\n"));
    assert_eq!(
        count(
            &m.added_headers,
            "Authentication-Results: mx.example.test; auth=none"
        ),
        1
    );
    // What header checks see is renamed too.
    assert_eq!(m.header, &m.body[..m.header.len()]);
}

#[test]
fn forged_authentication_results_are_renamed_in_memory() {
    let body = format!(
        "{FORGED}Subject: forged\r\n\r\nAuthentication-Results: mx.example.test; body text\r\n"
    );
    let data = format!("{body}.\r\n");
    let r = Harness::new().run(&[EHLO, MAIL, RCPT, b"DATA\r\n", data.as_bytes()]);
    assert_eq!(r.replies.last().unwrap().0, 250, "{}", r.raw);
    let m = &r.captured[0];
    assert!(!m.spooled);
    assert_eq!(m.body.len(), body.len(), "renaming moves no byte");
    check_renamed(m);
    assert!(String::from_utf8_lossy(&m.body)
        .ends_with("\r\n\r\nAuthentication-Results: mx.example.test; body text\r\n"));
}

#[test]
fn forged_authentication_results_are_renamed_in_the_spool_file() {
    let dir = std::env::temp_dir().join(format!("ringsmtpd-forged-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Spooling starts inside the header section (threshold 10) and far after it (100).
    for threshold in ["10", "100"] {
        let h = Harness::new()
            .file("size_threshold", threshold)
            .file("spool_dir", dir.to_str().unwrap());
        let filler = "x".repeat(70);
        let body: String = std::iter::once(format!("{FORGED}Subject: spooled\r\n\r\n"))
            .chain((0..40).map(|i| format!("{i:03} {filler}\r\n")))
            .collect();
        let data = format!("{body}.\r\n");
        let mut script = vec![EHLO, MAIL, RCPT, b"DATA\r\n"];
        script.extend(data.as_bytes().chunks(50));
        let r = h.run(&script);
        assert_eq!(r.replies.last().unwrap().0, 250, "{}", r.raw);
        let m = &r.captured[0];
        assert!(m.spooled);
        assert_eq!(m.body.len(), body.len());
        check_renamed(m);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_header_section_longer_than_memory_keeps_is_refused() {
    let dir = std::env::temp_dir().join(format!("ringsmtpd-bighdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = Harness::new()
        .file("size_threshold", "1000")
        .file("spool_dir", dir.to_str().unwrap());
    let line = format!("X-Filler: {}\r\n", "y".repeat(900));
    let header: String = (0..300).map(|_| line.as_str()).collect();
    let data = format!("{header}{FORGED}\r\nbody\r\n.\r\n");
    let mut script = vec![EHLO, MAIL, RCPT, b"DATA\r\n"];
    script.extend(data.as_bytes().chunks(8192));
    let r = h.run(&script);
    assert_eq!(r.replies.last().unwrap().0, 552, "{}", r.raw);
    assert_eq!(r.replies.last().unwrap().1, "5.3.4");
    assert!(r.captured.is_empty());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
