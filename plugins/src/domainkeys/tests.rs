//! Tests with messages signed by `openssl dgst -sha1 -sign` (a 1024-bit test key made with
//! `openssl genpkey`; the canonical data built by a separate script), and hostile input.

use super::*;
use ringsmtpd_plugin_api::testing::records::txt;
use ringsmtpd_plugin_api::testing::FakeServices;
use ringsmtpd_plugin_api::testing::{build, build_err, cx, run, set_message, spool, TempDir};
use std::rc::Rc;

/// The test key's SubjectPublicKeyInfo.
const PUBLIC: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQD6KNrDdZbKmw6lEdx0yNqcYgpY0vaY9kZr354jQvzH+NMpg971V8Upz6OS/oOkZ4M5CjgH3MXyMYAEvLqhqzyH3b8wniSagJVXBgp1/Kjn42pj3rkb5dSoyJ/RzJM0K4yNfk20XkpicQDlQKQGXRBFIbJPVd2z6+fomFJrMcvFnwIDAQAB";
const KEY_NAME: &str = "sel._domainkey.football.example.com";

/// c=simple, no h=: every field after the signature and the body (its trailing empty lines
/// are not signed). The Received field above the signature is not signed.
const SIMPLE_MESSAGE: &str = "Received: from x by y\r\n\
DomainKey-Signature: a=rsa-sha1; s=sel; d=football.example.com; c=simple; q=dns;\r\n\
\x20 b=dQmeFLr1eqpcuP6CjjkKI5yVlheEmlvSIglvDW8FuZie5EpseuVNWM1eg6LX+nBt1hCrwNYCjl+IvjX3v61WZ\r\n\
\x20 Mt7Y0QdBKk6DWWadjO3C2bjyWqREQtyvqnVnn7t6Ts1xrfqRzMhP/GAPDQVUs88YTBV4XZhblbysQFEWA+PvBk=;\r\n\
From: Joe SixPack <joe@football.example.com>\r\n\
To: Suzie <suzie@shopping.example.net>\r\n\
Subject: Is dinner ready?\r\n\
Date: Fri, 11 Jul 2003 21:00:37 -0700\r\n\
\r\n\
Hi.\r\n\
\r\n\
We lost the game.  Are you hungry yet?\r\n\
\r\n\
Joe.\r\n\
\r\n\
\r\n";

/// c=nofws, h=from:subject: signed as below, then re-spaced and re-folded in transit.
const NOFWS_MESSAGE: &str =
    "DomainKey-Signature: a=rsa-sha1; s=sel; d=football.example.com; c=nofws; h=from:subject;\r\n\
\x20 b=4jVnMMTkyPptx0rN1Xh6s1bVVxoEMeASlSL/s6fpy4K1tQapwi+4hJy9Td2lhqRmdUMaT1NIdaS+byQR5bfO60e2\r\n\
\x20 AVXKuOhrUFLukNiHOSVMd8XSwtYx/6aDX6uwMTu69Oibm6f7DYQ0lVg13JjIeM7NczH8hskWdQUA8g74alE=\r\n\
From:  joe@football.example.com\r\n\
Subject: nofws and\r\n\
\tfolded\r\n\
X-Unsigned: changed in transit\r\n\
\r\n\
A line with  space.\r\n\
\r\n\
end\r\n";

fn key_record(extra: &str) -> String {
    format!("k=rsa; {extra}p={PUBLIC}")
}

fn with_key(svc: &FakeServices) {
    svc.answer(KEY_NAME, QType::Txt, vec![txt(&key_record(""))]);
}

struct Run {
    clauses: Vec<String>,
    outcome: Outcome,
    svc: Rc<FakeServices>,
}

fn check_stored(line: &str, message: &str, spooled: bool, prepare: impl Fn(&FakeServices)) -> Run {
    let p = build(new, line, &[]).unwrap();
    let (mut c, svc) = cx("192.0.2.1:4242");
    prepare(&svc);
    let mut txn = Transaction::default();
    let dir = TempDir::new("domainkeys");
    match spooled {
        true => spool(&mut txn.body, &dir.path().join("msg"), message.as_bytes()),
        false => set_message(&mut txn, message),
    }
    assert_eq!(
        run(p.data_post_headers(&mut c, &mut txn)),
        Outcome::Declined
    );
    let clauses = (txn.notes.get::<AuthResults>()).map_or(Vec::new(), |a| a.0.clone());
    let outcome = run(p.data_post(&mut c, &mut txn));
    Run {
        clauses,
        outcome,
        svc,
    }
}

fn check(message: &str, prepare: impl Fn(&FakeServices)) -> Run {
    check_stored("domainkeys", message, false, prepare)
}

const PASS: &str =
    "domainkeys=pass header.d=football.example.com header.from=joe@football.example.com";

#[test]
fn simple_and_nofws_signatures_pass_in_memory_and_spooled() {
    for spooled in [false, true] {
        let r = check_stored("domainkeys", SIMPLE_MESSAGE, spooled, with_key);
        assert_eq!(r.clauses, [PASS]);
        assert_eq!(r.outcome, Outcome::Declined);
        assert!(r.svc.logged("pass, d=football.example.com"));
        let r = check_stored("domainkeys", NOFWS_MESSAGE, spooled, with_key);
        assert_eq!(r.clauses, [PASS]);
    }
    // Fields above the signature are not signed; empty lines added at the end are ignored.
    let m = SIMPLE_MESSAGE.replace("from x by y", "from elsewhere") + "\r\n\r\n";
    assert_eq!(check(&m, with_key).clauses, [PASS]);
    let m = NOFWS_MESSAGE.replace("X-Unsigned: changed in transit", "X-Unsigned: again");
    assert_eq!(check(&m, with_key).clauses, [PASS]);
}

#[test]
fn a_changed_body_or_signed_field_fails() {
    let fail = "domainkeys=fail (signature did not verify) header.d=football.example.com header.from=joe@football.example.com";
    for (from, to) in [
        ("Are you hungry", "Are you thirsty"),
        ("Subject: Is dinner ready?", "Subject: Is dinner ready!"),
        ("Joe.\r\n", "Joe.\r\nP.S. appended\r\n"),
        ("To: Suzie", "To:  Suzie"), // simple: white space counts
    ] {
        let m = SIMPLE_MESSAGE.replace(from, to);
        let r = check(&m, with_key);
        assert_eq!(r.clauses, [fail], "{to}");
        // The sender's domain publishes no policy: reported, not refused (qpsmtpd).
        assert_eq!(r.outcome, Outcome::Declined);
    }
    let m = NOFWS_MESSAGE.replace("end", "the end");
    assert_eq!(check(&m, with_key).clauses, [fail]);
}

#[test]
fn a_failure_is_refused_only_when_the_domain_signs_all_its_mail() {
    let m = SIMPLE_MESSAGE.replace("hungry", "angry");
    let policy = |record: &'static str| {
        move |svc: &FakeServices| {
            with_key(svc);
            svc.answer(
                "_domainkey.football.example.com",
                QType::Txt,
                vec![txt(record)],
            );
        }
    };
    let r = check(&m, policy("o=-"));
    assert_eq!(
        r.outcome,
        Outcome::Deny(Some("5.7.1 DomainKeys signature validation failed".into()))
    );
    for record in ["o=~", "o=-; t=y"] {
        assert_eq!(
            check(&m, policy(record)).outcome,
            Outcome::Declined,
            "{record}"
        );
    }
    // warn_only and reject 0 never refuse; reject_type temp defers.
    for line in ["domainkeys warn_only 1", "domainkeys reject 0"] {
        let r = check_stored(line, &m, false, policy("o=-"));
        assert_eq!(r.outcome, Outcome::Declined, "{line}");
    }
    let r = check_stored("domainkeys reject_type temp", &m, false, policy("o=-"));
    assert!(matches!(r.outcome, Outcome::DenySoft(_)), "{:?}", r.outcome);
    // A key in testing mode: never refused.
    let testing = |svc: &FakeServices| {
        svc.answer(KEY_NAME, QType::Txt, vec![txt(&key_record("t=y; "))]);
        svc.answer(
            "_domainkey.football.example.com",
            QType::Txt,
            vec![txt("o=-")],
        );
    };
    assert_eq!(check(&m, testing).outcome, Outcome::Declined);
    // The policy lookup times out: not refused.
    let silent = |svc: &FakeServices| {
        with_key(svc);
        svc.fail(
            "_domainkey.football.example.com",
            QType::Txt,
            DnsError::Timeout,
        );
    };
    assert_eq!(check(&m, silent).outcome, Outcome::Declined);
}

#[test]
fn dns_errors_are_temperror_and_never_refuse() {
    for error in [DnsError::Timeout, DnsError::ServFail] {
        let r = check(SIMPLE_MESSAGE, |svc: &FakeServices| {
            svc.fail(KEY_NAME, QType::Txt, error);
            svc.answer(
                "_domainkey.football.example.com",
                QType::Txt,
                vec![txt("o=-")],
            );
        });
        assert!(
            r.clauses[0].starts_with("domainkeys=temperror (key lookup"),
            "{:?}",
            r.clauses
        );
        assert_eq!(r.outcome, Outcome::Declined);
    }
    // No key at all.
    let r = check(SIMPLE_MESSAGE, |_: &FakeServices| {});
    assert!(
        r.clauses[0].starts_with("domainkeys=permerror ("),
        "{:?}",
        r.clauses
    );
}

#[test]
fn unusable_keys_and_signatures_are_permerror() {
    let cases: &[(&str, String, &str)] = &[
        ("revoked", "k=rsa; p=".into(), "key revoked (empty p=)"),
        (
            "junk",
            "k=rsa; p=!!!".into(),
            "key record: p= is not base64",
        ),
        (
            "ed25519",
            format!("k=ed25519; p={PUBLIC}"),
            "key record: key type k= does not match a=",
        ),
        (
            "granularity",
            key_record("g=bob; "),
            "g= does not cover the sender",
        ),
    ];
    for (what, record, why) in cases {
        let r = check(SIMPLE_MESSAGE, |svc: &FakeServices| {
            svc.answer(KEY_NAME, QType::Txt, vec![txt(record)])
        });
        assert_eq!(
            r.clauses,
            [format!("domainkeys=permerror ({why}) header.d=football.example.com header.from=joe@football.example.com")],
            "{what}"
        );
    }
    let matching =
        |svc: &FakeServices| svc.answer(KEY_NAME, QType::Txt, vec![txt(&key_record("g=j*e; "))]);
    assert_eq!(check(SIMPLE_MESSAGE, matching).clauses, [PASS]);
    let m = SIMPLE_MESSAGE;
    for (from, to, why) in [
        (
            "a=rsa-sha1",
            "a=rsa-sha256",
            "unknown algorithm a= (only rsa-sha1)",
        ),
        ("c=simple", "c=relaxed", "unknown canonicalization c="),
        (
            "From: Joe SixPack <joe@football.example.com>",
            "From: a@x.example, b@y.example",
            "no single sending mailbox (Sender or From)",
        ),
    ] {
        let r = check(&m.replace(from, to), with_key);
        assert!(
            r.clauses[0].starts_with(&format!("domainkeys=permerror ({why})")),
            "{:?}",
            r.clauses
        );
    }
    // The sender's field above the signature is not signed; a foreign d= fails.
    let moved = m
        .replace("From: Joe SixPack <joe@football.example.com>\r\n", "")
        .replace("Received:", "From: joe@football.example.com\r\nReceived:");
    let r = check(&moved, with_key);
    assert!(
        r.clauses[0].starts_with("domainkeys=permerror (the sender's field is not signed)"),
        "{:?}",
        r.clauses
    );
    let r = check(
        &m.replace("joe@football.example.com", "joe@evil.example"),
        with_key,
    );
    assert!(
        r.clauses[0].starts_with("domainkeys=fail (d= is not the sender's domain)"),
        "{:?}",
        r.clauses
    );
    // Sender: wins over From:.
    let sender = m.replace("To: Suzie", "Sender: list@lists.example.org\r\nTo: Suzie");
    let r = check(&sender, with_key);
    assert!(r.clauses[0].starts_with("domainkeys=fail (d= is not the sender's domain) header.d=football.example.com header.from=list@lists.example.org"), "{:?}", r.clauses);
}

#[test]
fn thousands_of_signatures_cost_three_lookups() {
    let junk =
        "DomainKey-Signature: a=rsa-sha1; s=x; d=football.example.com; b=AAAA\r\n".repeat(2000);
    let m = format!("{junk}{}", SIMPLE_MESSAGE);
    let r = check(&m, with_key);
    assert_eq!(r.clauses.len(), 4, "{:?}", r.clauses);
    assert_eq!(
        r.clauses[3],
        "domainkeys=policy (1998 more signatures not verified)"
    );
    assert_eq!(r.svc.asked.borrow().len(), 3);
    assert_eq!(r.outcome, Outcome::Declined);
    // Hostile text is cleaned before it reaches the header.
    let m = SIMPLE_MESSAGE.replace("d=football.example.com;", "d=foot\"ball;");
    let r = check(&m, with_key);
    assert!(
        r.clauses[0].starts_with("domainkeys=permerror (bad or missing d=) header.d=foot?ball "),
        "{:?}",
        r.clauses
    );
}

#[test]
fn unsigned_immune_and_arguments() {
    let r = check("From: a@b.example\r\n\r\nhi\r\n", with_key);
    assert!(r.clauses.is_empty());
    assert!(r.svc.logged("skip, unsigned"));
    assert!(r.svc.asked.borrow().is_empty());
    for bad in [
        "domainkeys warn_only 2",
        "domainkeys frobnicate 1",
        "domainkeys timeout x",
    ] {
        let _ = build_err(new, bad, &[]); // panics if it builds
    }
    let p = build(new, "domainkeys", &[]).unwrap();
    let (mut c, _) = cx("192.0.2.1:1");
    c.conn.relay_client = true;
    let mut txn = Transaction::default();
    set_message(&mut txn, SIMPLE_MESSAGE);
    assert_eq!(
        run(p.data_post_headers(&mut c, &mut txn)),
        Outcome::Declined
    );
    assert!(txn.notes.get::<AuthResults>().is_none());
}

#[test]
fn a_body_over_the_limit_is_not_verified() {
    let big = format!(
        "{}{}",
        SIMPLE_MESSAGE,
        "x\r\n".repeat((MAX_BODY / 3 + 10) as usize)
    );
    let r = check(&big, with_key);
    assert!(
        r.clauses[0].starts_with("domainkeys=policy (message too large to verify)"),
        "{:?}",
        r.clauses
    );
}

#[test]
fn granularity_patterns() {
    assert!(granularity_ok("", "joe"));
    assert!(granularity_ok("*", "joe"));
    assert!(granularity_ok("joe", "joe"));
    assert!(!granularity_ok("joe", "jo"));
    assert!(granularity_ok("j*", "joe"));
    assert!(granularity_ok("*e", "joe"));
    assert!(!granularity_ok("jo*oe", "joe"));
}
