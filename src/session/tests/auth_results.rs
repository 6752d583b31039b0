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
