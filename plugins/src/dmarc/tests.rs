//! The plugin's hooks on fake DNS.

use std::borrow::Cow;
use std::net::IpAddr;

use ringsmtpd_plugin_api::dns::{DnsError, QType};
use ringsmtpd_plugin_api::shared::{AuthResults, DkimResult, DkimResults, Naughty};
use ringsmtpd_plugin_api::testing::records::txt;
use ringsmtpd_plugin_api::testing::{
    build, build_err, cx, rcpt, run, set_message, spool, txn_from, FakeServices, TempDir,
};
use ringsmtpd_plugin_api::{Outcome, Reply};

use super::*;
use crate::sender_permitted_from::eval::Verdict as SpfVerdict;

const IP: &str = "192.0.2.1";

/// What SPF and DKIM said about a message.
#[derive(Clone, Copy, Default)]
struct Auth {
    /// (MAIL FROM domain, result)
    spf: Option<(&'static str, SpfResult)>,
    /// (d=, result)
    dkim: &'static [(&'static str, &'static str)],
}

const NONE: Auth = Auth {
    spf: None,
    dkim: &[],
};

fn spf_pass(domain: &'static str) -> Auth {
    Auth {
        spf: Some((domain, SpfResult::Pass)),
        dkim: &[],
    }
}

/// The outcome of one message through the three hooks.
struct Run {
    clause: Option<String>,
    outcome: Outcome,
    added: String,
    check: Option<DmarcCheck>,
    svc: std::rc::Rc<FakeServices>,
    naughty: bool,
}

fn message(from_lines: &str) -> String {
    format!("{from_lines}To: rcpt@rcpt.test\r\nSubject: hi\r\n\r\nbody\r\n")
}

fn check_with(
    line: &str,
    header: &str,
    auth: Auth,
    zone: &[(&str, Result<&str, DnsError>)],
    relay: bool,
) -> Run {
    let p = build(new, line, &[]).unwrap();
    let (mut c, svc) = cx(&format!("{IP}:4242"));
    c.conn.relay_client = relay;
    for (name, answer) in zone {
        match answer {
            Ok(record) => svc.answer(name, QType::Txt, vec![txt(record)]),
            Err(e) => svc.fail(name, QType::Txt, *e),
        }
    }
    let mut t = txn_from("<bounce@mfrom.test>");
    t.id = "1.1".into();
    t.recipients.push(rcpt("<rcpt@rcpt.test>"));
    set_message(&mut t, &message(header));
    if let Some((domain, result)) = auth.spf {
        t.notes.set(SpfCheck {
            identity: Identity::MailFrom,
            domain: domain.to_string(),
            sender: format!("bounce@{domain}"),
            helo: "helo.test".into(),
            ip: IP.parse::<IpAddr>().unwrap(),
            verdict: SpfVerdict {
                result,
                explanation: None,
                why: String::new(),
                mechanism: None,
            },
        });
    }
    if !auth.dkim.is_empty() {
        let sigs = auth.dkim.iter().map(|(d, r)| DkimResult {
            domain: d.to_string(),
            selector: "sel".into(),
            result: r,
        });
        t.notes.set(DkimResults(sigs.collect()));
    }
    assert_eq!(run(p.data_headers_end(&mut c, &mut t)), Outcome::Declined);
    assert_eq!(run(p.data_post_headers(&mut c, &mut t)), Outcome::Declined);
    let clause = t.notes.get::<AuthResults>().map(|a| {
        assert_eq!(a.0.len(), 1);
        a.0[0].clone()
    });
    let outcome = run(p.data_post(&mut c, &mut t));
    Run {
        clause,
        outcome,
        added: t.added_headers.clone(),
        check: t.notes.get::<DmarcCheck>().cloned(),
        svc,
        naughty: c.conn.notes.contains::<Naughty>(),
    }
}

fn check(header: &str, auth: Auth, zone: &[(&str, Result<&str, DnsError>)]) -> Run {
    check_with("dmarc", header, auth, zone, false)
}

fn refused(text: &'static str) -> Outcome {
    Outcome::Done(Some(Reply {
        code: 550,
        enhanced: Some(Cow::Borrowed("5.7.1")),
        lines: vec![Cow::Borrowed(text)],
        disconnect: false,
    }))
}

const REJECT: &[(&str, Result<&str, DnsError>)] = &[(
    "_dmarc.example.com",
    Ok("v=DMARC1; p=reject; rua=mailto:agg@example.com"),
)];

#[test]
fn aligned_spf_passes() {
    let r = check(
        "From: Joe <joe@example.com>\r\n",
        spf_pass("bounces.example.com"),
        REJECT,
    );
    assert_eq!(
        r.clause.as_deref(),
        Some("dmarc=pass (p=reject dis=none) header.from=example.com")
    );
    assert_eq!(r.outcome, Outcome::Declined);
    assert!(r
        .svc
        .logged("pass, p=reject dis=none, header.from=example.com, spf aligned"));
    assert_eq!(r.added, "");
}

#[test]
fn aligned_dkim_passes_alone() {
    let auth = Auth {
        spf: Some(("mfrom.test", SpfResult::Pass)),
        dkim: &[("other.test", "pass"), ("Example.COM", "pass")],
    };
    let r = check("From: joe@example.com\r\n", auth, REJECT);
    assert_eq!(r.outcome, Outcome::Declined);
    let v = r.check.unwrap().verdict.unwrap();
    assert_eq!(
        (v.spf_aligned, v.dkim_aligned.as_deref()),
        (false, Some("example.com"))
    );
}

#[test]
fn unaligned_or_failed_is_refused_under_p_reject() {
    for auth in [
        NONE,
        spf_pass("mfrom.test"),
        Auth {
            spf: Some(("example.com", SpfResult::SoftFail)),
            dkim: &[("example.com", "fail"), ("example.com", "temperror")],
        },
    ] {
        let r = check("From: joe@example.com\r\n", auth, REJECT);
        assert_eq!(
            r.clause.as_deref(),
            Some("dmarc=fail (p=reject dis=reject) header.from=example.com")
        );
        assert_eq!(r.outcome, refused("failed DMARC policy"));
    }
}

#[test]
fn reject_and_reject_type_as_in_qpsmtpd() {
    let from = "From: joe@example.com\r\n";
    let r = check_with("dmarc reject 0", from, NONE, REJECT, false);
    assert_eq!(r.outcome, Outcome::Declined);
    assert!(r.svc.logged("fail, log only: 5.7.1 failed DMARC policy"));
    let r = check_with("dmarc reject naughty", from, NONE, REJECT, false);
    assert_eq!((r.outcome, r.naughty), (Outcome::Declined, true));
    let r = check_with("dmarc reject_type temp", from, NONE, REJECT, false);
    assert_eq!(
        r.outcome,
        Outcome::DenySoft(Some("4.7.1 failed DMARC policy".into()))
    );
    let r = check_with("dmarc reject_type disconnect", from, NONE, REJECT, false);
    let Outcome::Done(Some(reply)) = r.outcome else {
        panic!("not refused")
    };
    assert_eq!((reply.code, reply.disconnect), (550, true));
}

#[test]
fn quarantine_accepts_with_a_header() {
    let zone = &[("_dmarc.example.com", Ok("v=DMARC1; p=quarantine"))];
    let r = check("From: joe@example.com\r\n", NONE, zone);
    assert_eq!(r.outcome, Outcome::Declined);
    assert_eq!(
        r.added,
        "X-DMARC-Quarantine: yes (header.from=example.com)\r\n"
    );
    assert_eq!(
        r.clause.as_deref(),
        Some("dmarc=fail (p=quarantine dis=quarantine) header.from=example.com")
    );
    assert_eq!(
        r.check.unwrap().verdict.unwrap().disposition,
        Policy::Quarantine
    );
}

#[test]
fn strict_spf_alignment() {
    let zone = &[("_dmarc.example.com", Ok("v=DMARC1; p=reject; aspf=s"))];
    let r = check(
        "From: joe@example.com\r\n",
        spf_pass("bounces.example.com"),
        zone,
    );
    assert_eq!(r.outcome, refused("failed DMARC policy"));
    let r = check("From: joe@example.com\r\n", spf_pass("example.com"), zone);
    assert_eq!(r.outcome, Outcome::Declined);
}

#[test]
fn a_subdomain_falls_back_to_the_org_domain_and_its_sp() {
    let zone = &[(
        "_dmarc.example.com",
        Ok("v=DMARC1; p=reject; sp=quarantine"),
    )];
    let r = check("From: joe@mail.news.example.com\r\n", NONE, zone);
    assert_eq!(
        r.clause.as_deref(),
        Some(
            "dmarc=fail (p=reject sp=quarantine dis=quarantine) header.from=mail.news.example.com"
        )
    );
    assert_eq!(r.outcome, Outcome::Declined);
    let found = r.check.unwrap().found.unwrap();
    assert_eq!(
        (found.domain.as_str(), found.subdomain),
        ("example.com", true)
    );
    // Both questions left at data_headers_end.
    let asked = r.svc.asked.borrow();
    assert!(asked.contains(&("_dmarc.mail.news.example.com".into(), QType::Txt)));
    assert!(asked.contains(&("_dmarc.example.com".into(), QType::Txt)));
    drop(asked);
    // The subdomain's own record wins over the org domain's.
    let zone = &[
        ("_dmarc.example.com", Ok("v=DMARC1; p=reject; sp=reject")),
        ("_dmarc.news.example.com", Ok("v=DMARC1; p=none")),
    ];
    let r = check("From: joe@news.example.com\r\n", NONE, zone);
    assert_eq!(r.outcome, Outcome::Declined);
    assert_eq!(
        r.clause.as_deref(),
        Some("dmarc=fail (p=none dis=none) header.from=news.example.com")
    );
    // Without sp, p applies to subdomains.
    let r = check("From: joe@news.example.com\r\n", NONE, REJECT);
    assert_eq!(r.outcome, refused("failed DMARC policy"));
    // Relaxed alignment across the organizational domain.
    let r = check(
        "From: joe@news.example.com\r\n",
        spf_pass("example.com"),
        REJECT,
    );
    assert_eq!(r.outcome, Outcome::Declined);
}

#[test]
fn pct_0_and_100() {
    for n in 0..20 {
        let from = format!("From: joe{n}@example.com\r\n");
        let zone = &[("_dmarc.example.com", Ok("v=DMARC1; p=reject; pct=0"))];
        let r = check(&from, NONE, zone);
        assert_eq!(r.outcome, Outcome::Declined);
        assert_eq!(
            r.clause.as_deref(),
            Some("dmarc=fail (p=reject dis=quarantine) header.from=example.com")
        );
        assert!(r.added.starts_with("X-DMARC-Quarantine"));
        let zone = &[("_dmarc.example.com", Ok("v=DMARC1; p=reject; pct=100"))];
        assert_eq!(
            check(&from, NONE, zone).outcome,
            refused("failed DMARC policy")
        );
    }
}

#[test]
fn no_policy_is_none() {
    let r = check("From: joe@example.com\r\n", NONE, &[]);
    assert_eq!(
        r.clause.as_deref(),
        Some("dmarc=none (no policy) header.from=example.com")
    );
    assert_eq!(r.outcome, Outcome::Declined);
    assert!(r.svc.logged("skip, no policy, header.from=example.com"));
    // Other TXT records are not policies.
    let zone = &[("_dmarc.example.com", Ok("v=spf1 -all"))];
    let r = check("From: joe@example.com\r\n", NONE, zone);
    assert_eq!(r.check.unwrap().result, DmarcResult::None);
}

#[test]
fn malformed_records_are_permerror_and_never_refused() {
    for (record, why) in [
        ("v=DMARC1; p=block", "invalid p="),
        ("v=DMARC1; sp=reject", "no p="),
        ("v=DMARC1; p=reject; p=none", "a tag appears twice"),
    ] {
        let zone = &[("_dmarc.example.com", Ok(record))];
        let r = check("From: joe@example.com\r\n", NONE, zone);
        assert_eq!(
            r.clause,
            Some(format!("dmarc=permerror ({why}) header.from=example.com")),
            "{record}"
        );
        assert_eq!(r.outcome, Outcome::Declined);
    }
    // Two records at one name (§6.6.3 step 5).
    let p = build(new, "dmarc", &[]).unwrap();
    let (mut c, svc) = cx("192.0.2.1:1");
    svc.answer(
        "_dmarc.example.com",
        QType::Txt,
        vec![txt("v=DMARC1; p=reject"), txt("v=DMARC1; p=none")],
    );
    let mut t = Transaction::default();
    set_message(&mut t, &message("From: a@example.com\r\n"));
    run(p.data_post_headers(&mut c, &mut t));
    assert_eq!(
        t.notes.get::<AuthResults>().unwrap().0,
        ["dmarc=permerror (multiple DMARC records) header.from=example.com"]
    );
    assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
    // Bad values are defaulted and logged.
    let zone = &[("_dmarc.example.com", Ok("v=DMARC1; p=reject; pct=500"))];
    let r = check("From: joe@example.com\r\n", NONE, zone);
    assert_eq!(r.outcome, refused("failed DMARC policy"));
    assert!(r.svc.logged("record of example.com: bad pct=, 100 used"));
}

#[test]
fn dns_failures_are_temperror_and_never_refused() {
    for (zone, why) in [
        (
            vec![("_dmarc.example.com", Err(DnsError::ServFail))],
            "policy lookup failed",
        ),
        (
            vec![("_dmarc.example.com", Err(DnsError::Timeout))],
            "policy lookup timed out",
        ),
        // The subdomain has no record; its org domain's lookup fails.
        (
            vec![("_dmarc.example.com", Err(DnsError::Refused))],
            "policy lookup failed",
        ),
    ] {
        for from in ["joe@example.com", "joe@sub.example.com"] {
            for line in ["dmarc", "dmarc reject 1 reject_type disconnect"] {
                let r = check_with(line, &format!("From: {from}\r\n"), NONE, &zone, false);
                let domain = from.split('@').nth(1).unwrap();
                assert_eq!(
                    r.clause,
                    Some(format!("dmarc=temperror ({why}) header.from={domain}"))
                );
                assert_eq!(r.outcome, Outcome::Declined, "{from} {line}");
            }
        }
    }
    // A failure for the subdomain's own name is a temperror even if the org domain has a policy.
    let zone = &[
        ("_dmarc.sub.example.com", Err(DnsError::ServFail)),
        ("_dmarc.example.com", Ok("v=DMARC1; p=reject")),
    ];
    let r = check("From: joe@sub.example.com\r\n", NONE, zone);
    assert_eq!(r.check.unwrap().result, DmarcResult::TempError);
    assert_eq!(r.outcome, Outcome::Declined);
}

#[test]
fn unusable_from_is_permerror_and_refused() {
    for (header, why, reply) in [
        ("", "no From header", "empty from address, null sender?"),
        (
            "From: a@example.com\r\nFrom: b@example.com\r\n",
            "multiple From headers",
            "multiple From headers",
        ),
        (
            "From: a@example.com, b@evil.test\r\n",
            "From header with several domains",
            "From header with several domains",
        ),
        (
            "From: undisclosed\r\n",
            "unparseable From header",
            "unparseable from header",
        ),
    ] {
        let r = check(header, spf_pass("example.com"), REJECT);
        assert_eq!(r.clause, Some(format!("dmarc=permerror ({why})")));
        assert_eq!(r.outcome, refused(reply));
        assert!(r.svc.asked.borrow().is_empty());
        let r = check_with("dmarc reject 0", header, NONE, REJECT, false);
        assert_eq!(r.outcome, Outcome::Declined);
    }
}

#[test]
fn a_header_section_too_big_for_memory_is_not_refused() {
    let p = build(new, "dmarc", &[]).unwrap();
    let (mut c, _) = cx("192.0.2.1:1");
    let dir = TempDir::new("dmarc");
    let mut t = Transaction::default();
    let head = "Received: from a\r\nX-Long: ";
    let whole = format!("{head}x\r\nFrom: joe@example.com\r\n\r\nbody\r\n");
    spool(&mut t.body, &dir.path().join("spool"), whole.as_bytes());
    t.body.mem = head.as_bytes().to_vec();
    t.body.header_end = None;
    run(p.data_headers_end(&mut c, &mut t));
    run(p.data_post_headers(&mut c, &mut t));
    assert_eq!(
        t.notes.get::<AuthResults>().unwrap().0,
        ["dmarc=permerror (no From header in the first 256 KiB)"]
    );
    assert_eq!(run(p.data_post(&mut c, &mut t)), Outcome::Declined);
}

#[test]
fn the_questions_leave_before_the_body_is_in() {
    let p = build(new, "dmarc", &[]).unwrap();
    let (mut c, svc) = cx("192.0.2.1:1");
    let mut t = Transaction::default();
    set_message(&mut t, &message("From: joe@mail.example.com\r\n"));
    assert_eq!(run(p.data_headers_end(&mut c, &mut t)), Outcome::Declined);
    assert_eq!(
        *svc.asked.borrow(),
        [
            ("_dmarc.mail.example.com".to_string(), QType::Txt),
            ("_dmarc.example.com".to_string(), QType::Txt)
        ]
    );
    // data_post_headers awaits those answers and asks nothing more.
    run(p.data_post_headers(&mut c, &mut t));
    assert_eq!(svc.asked.borrow().len(), 2);
    assert_eq!(
        t.notes.get::<AuthResults>().unwrap().0,
        ["dmarc=none (no policy) header.from=mail.example.com"]
    );
}

#[test]
fn immune_clients_are_not_checked() {
    let r = check_with("dmarc", "From: joe@example.com\r\n", NONE, REJECT, true);
    assert_eq!((r.clause, r.outcome), (None, Outcome::Declined));
    assert!(r.svc.asked.borrow().is_empty());
}

#[test]
fn report_data_goes_to_a_file_per_day() {
    let dir = TempDir::new("dmarc-report");
    let line = format!("dmarc report_dir {}", dir.path().display());
    let auth = Auth {
        spf: Some(("mfrom.test", SpfResult::Pass)),
        dkim: &[("example.com", "fail")],
    };
    let r = check_with(&line, "From: joe@example.com\r\n", auth, REJECT, false);
    assert_eq!(r.outcome, refused("failed DMARC policy"));
    // No policy, no row.
    check_with(&line, "From: joe@nopolicy.test\r\n", NONE, REJECT, false);
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("dmarc-20") && name.ends_with(".tsv"),
        "{name}"
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    assert_eq!(text.lines().count(), 1);
    assert_eq!(
        &fields[1..],
        [
            IP,
            "example.com",
            "mfrom.test",
            "rcpt.test",
            "example.com",
            "p=reject,sp=-,adkim=r,aspf=r,pct=100",
            "mailto:agg@example.com",
            "reject",
            "fail",
            "fail",
            "-",
            "example.com:sel:fail",
            "mfrom:mfrom.test:pass",
        ]
    );
    // reject 0: the policy is not applied, and the row says why.
    let line = format!("dmarc reject 0 report_dir {}", dir.path().display());
    check_with(&line, "From: joe@example.com\r\n", NONE, REJECT, false);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let last: Vec<&str> = text.lines().last().unwrap().split('\t').collect();
    assert_eq!((last[8], last[11]), ("none", "local_policy"));
    // reporting 0 turns it off.
    let line = format!("dmarc reporting 0 report_dir {}", dir.path().display());
    check_with(&line, "From: joe@example.com\r\n", NONE, REJECT, false);
    assert_eq!(
        std::fs::read_to_string(&files[0]).unwrap().lines().count(),
        2
    );
}

#[test]
fn bad_arguments() {
    for (args, error) in [
        ("reporting 1", "reporting 1 needs report_dir DIR"),
        ("reporting yes", "reporting must be 0 or 1, not 'yes'"),
        (
            "report_dir /nonexistent/dmarc",
            "report_dir '/nonexistent/dmarc' is not a directory",
        ),
        ("strict 1", "unknown argument 'strict'"),
        ("timeout", "argument 'timeout' needs a value"),
    ] {
        let e = build_err(new, &format!("dmarc {args}"), &[]).to_string();
        assert!(e.ends_with(error), "{args}: {e}");
    }
}
