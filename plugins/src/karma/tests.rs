use std::rc::Rc;
use std::time::Duration;

use super::*;
use ringsmtpd_plugin_api::shared::{DkimResult, WhitelistHost};
use ringsmtpd_plugin_api::testing::{
    assert_bad_args, build as build_plugin, build_err, rcpt, run, store_client, txn_from,
    unlisted_overrides, FakeServices, STORE_T0,
};
use ringsmtpd_plugin_api::AuthInfo;

const T0: u64 = STORE_T0;

fn plugin(line: &str) -> Box<dyn Plugin> {
    build_plugin(new, line, &[]).unwrap()
}

/// A new connection from `ip`, on the services (store, clock) of `svc` or new ones.
fn client(ip: &str, shared: Option<&Rc<FakeServices>>) -> (Cx, Rc<FakeServices>) {
    store_client(&format!("{ip}:4000"), shared)
}

/// A connection that another plugin refuses `denies` times, then ends.
fn session(p: &dyn Plugin, c: &mut Cx, denies: usize) -> Outcome {
    let at_connect = run(p.connect(c));
    for _ in 0..denies {
        run(p.deny(c, "rcpt_ok", Hook::Rcpt, &Outcome::deny("no")));
    }
    run(p.disconnect(c));
    at_connect
}

fn boxed(o: &Outcome) -> bool {
    matches!(o, Outcome::DenyDisconnect(Some(m)) if m.starts_with("You were naughty. You cannot connect for"))
}

#[test]
fn a_naughty_connection_boxes_the_client_until_the_penalty_ends() {
    let p = plugin("karma reject connect");
    let (mut c, svc) = client("192.0.2.1", None);
    assert_eq!(session(&*p, &mut c, 3), Outcome::Declined);
    assert!(
        svc.logged("negative, sent to penalty box for 1 days"),
        "{:?}",
        svc.logs.borrow()
    );
    let (mut again, _) = client("192.0.2.1", Some(&svc));
    let o = run(p.connect(&mut again));
    assert_eq!(
        o,
        Outcome::DenyDisconnect(Some(
            "You were naughty. You cannot connect for 1.00 more days.".into()
        ))
    );
    // another IP is not boxed; the box ends after penalty_days
    let (mut other, _) = client("192.0.2.2", Some(&svc));
    assert_eq!(run(p.connect(&mut other)), Outcome::Declined);
    svc.advance(Duration::from_secs(43_200));
    let (mut half, _) = client("192.0.2.1", Some(&svc));
    let o = run(p.connect(&mut half));
    assert!(
        matches!(&o, Outcome::DenyDisconnect(Some(m)) if m.contains("0.50 more days")),
        "{o:?}"
    );
    svc.advance(Duration::from_secs(43_200));
    let (mut later, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut later)), Outcome::Declined);
    // the history stays: -1, and connects counts every connection
    assert_eq!(
        later.conn.notes.get::<Karma>(),
        Some(&Karma {
            history: -1,
            score: 0
        })
    );
    let mut b = Batch::new();
    let keys = Keys::new("192.0.2.1".parse().unwrap()).unwrap();
    let slots = Record::read(&mut b, &keys);
    let rec = Record::from_replies(
        &svc.store_table().apply(&b, (T0 + 86_400) * 1000).unwrap(),
        slots,
    );
    assert_eq!((rec.naughty, rec.nice, rec.connects), (1, 0, 4));
}

#[test]
fn strikes_negative_and_nice_connections() {
    // two strikes are neutral with the default strikes 3
    let p = plugin("karma reject 1");
    let (mut c, svc) = client("192.0.2.1", None);
    session(&*p, &mut c, 2);
    assert!(svc.logged("neutral (score -2"));
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(session(&*p, &mut c, 0), Outcome::Declined);

    // strikes 1: one refusal is naughty; negative 2 tolerates the first naughty connection
    let p = plugin("karma strikes 1 negative 2");
    let (mut c, svc) = client("192.0.2.1", None);
    session(&*p, &mut c, 1);
    assert!(svc.logged("negative (score -1, history -1)"));
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    session(&*p, &mut c, 1);
    assert!(svc.logged("sent to penalty box"));

    // a nice connection (a DKIM pass, strikes 1) raises the history, which offsets a naughty one
    let p = plugin("karma strikes 1 reject connect");
    let (mut c, svc) = client("192.0.2.9", None);
    run(p.connect(&mut c));
    let mut txn = txn_from("<a@example.org>");
    txn.notes.set(DkimResults(vec![DkimResult {
        domain: "example.org".into(),
        selector: "s".into(),
        result: "pass",
    }]));
    run(p.reset_transaction(&mut c, &mut txn));
    run(p.disconnect(&mut c));
    assert!(svc.logged("positive (score 1, history 1)"));
    let (mut c, _) = client("192.0.2.9", Some(&svc));
    assert_eq!(session(&*p, &mut c, 1), Outcome::Declined);
    assert!(svc.logged("negative (score -1, history 0)"));
    let (mut c, _) = client("192.0.2.9", Some(&svc));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
}

#[test]
fn notes_of_other_plugins_adjust_the_score() {
    let p = plugin("karma");
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    let mut txn = txn_from("<a@shop.example.info>");
    run(p.mail(&mut c, &mut txn));
    assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, -4);
    txn.notes.set(SpamVerdict {
        scanner: "rspamd",
        score: 20.0,
        threshold: 15.0,
        is_spam: true,
        action: Some("reject"),
    });
    run(p.reset_transaction(&mut c, &mut txn));
    assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, -5);
    // karma's own refusals do not count
    run(p.deny(&mut c, "karma", Hook::Data, &Outcome::deny("x")));
    assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, -5);
    // a score below -4 is refused at DATA: by default through the naughty mark
    assert_eq!(run(p.data(&mut c, &mut txn)), Outcome::Declined);
    assert_eq!(
        c.conn.notes.get::<Naughty>().unwrap().msg,
        "very bad karma: -5"
    );

    let p = plugin("karma reject 1 reject_type temp");
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    Karma::adjust(&mut c, -5);
    assert_eq!(
        run(p.data(&mut c, &mut txn)),
        Outcome::DenySoft(Some("very bad karma: -5".into()))
    );

    // karma_tlds replaces the built-in list; an empty file turns it off
    let p = build_plugin(new, "karma", &[("karma_tlds", "example 2\n")]).unwrap();
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    run(p.mail(&mut c, &mut txn_from("<a@shop.example.info>")));
    run(p.mail(&mut c, &mut txn_from("<a@b.EXAMPLE>")));
    assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, -2);
    let p = build_plugin(new, "karma", &[("karma_tlds", "")]).unwrap();
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    run(p.mail(&mut c, &mut txn_from("<a@shop.example.info>")));
    assert_eq!(c.conn.notes.get::<Karma>().unwrap().score, 0);
}

#[test]
fn one_recipient_per_message_without_good_karma() {
    let p = plugin("karma");
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    let mut txn = txn_from("<a@example.org>");
    let to = rcpt("<x@example.test>");
    assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
    txn.recipients.push(to.clone());
    assert_eq!(
        run(p.rcpt(&mut c, &mut txn, &to)),
        Outcome::Done(Some(Reply::new(
            452,
            "4.5.3",
            "too many recipients for karma 0 (h: 0)"
        )))
    );
    Karma::adjust(&mut c, 1);
    assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
    let p = plugin("karma reject 0");
    let (mut c, _) = client("192.0.2.1", None);
    run(p.connect(&mut c));
    assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
}

#[test]
fn immune_clients_are_neither_judged_nor_recorded() {
    let p = plugin("karma reject connect");
    let (mut c, svc) = client("192.0.2.1", None);
    c.conn.relay_client = true;
    assert_eq!(session(&*p, &mut c, 5), Outcome::Declined);
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    c.conn.notes.set(WhitelistHost("listed".into()));
    session(&*p, &mut c, 5);
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    run(p.connect(&mut c));
    c.conn.auth = Some(AuthInfo {
        user: "u".into(),
        mechanism: "PLAIN".into(),
    });
    run(p.deny(&mut c, "x", Hook::Rcpt, &Outcome::deny("no")));
    run(p.deny(&mut c, "x", Hook::Rcpt, &Outcome::deny("no")));
    run(p.deny(&mut c, "x", Hook::Rcpt, &Outcome::deny("no")));
    run(p.disconnect(&mut c));
    assert_eq!(svc.store_calls.get(), 1, "only the unjudged connect's read");
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
}

#[test]
fn the_naughty_mark_and_reject_modes() {
    // default reject naughty: the box marks the connection for the naughty plugin
    let p = plugin("karma");
    let (mut c, svc) = client("192.0.2.1", None);
    c.conn.notes.set(Naughty {
        plugin: "dnsbl".into(),
        msg: "listed".into(),
    });
    run(p.connect(&mut c));
    c.conn.notes.set(Naughty {
        plugin: "dnsbl".into(),
        msg: "listed".into(),
    });
    run(p.disconnect(&mut c));
    assert!(svc.logged("sent to penalty box"));
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    let mark = c.conn.notes.get::<Naughty>().expect("marked");
    assert!(mark.msg.starts_with("You were naughty."), "{mark:?}");
    // reject 0 logs only
    let p = plugin("karma reject 0");
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    assert!(!c.conn.notes.contains::<Naughty>());
    // zombie is naughty; reject_type perm refuses without closing
    let p = plugin("karma reject zombie");
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    run(p.connect(&mut c));
    assert!(c.conn.notes.contains::<Naughty>());
    let p = plugin("karma reject 1 reject_type perm");
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert!(matches!(run(p.connect(&mut c)), Outcome::Deny(Some(_))));
    assert!(boxed(&run(plugin("karma reject connect").connect(&mut c))));
}

#[test]
fn the_bonus_for_clients_never_nice() {
    let p = plugin("karma strikes 1 penalty_days 0.5");
    let (mut c, svc) = client("192.0.2.1", None);
    for _ in 0..7 {
        session(&*p, &mut c, 1);
        let (next, _) = client("192.0.2.1", Some(&svc));
        c = next;
    }
    // the seventh naughty connection: history -7, so 0.5 + 7 days
    assert!(
        svc.logged("sent to penalty box for 7.5 days, penalty box bonus"),
        "{:?}",
        svc.logs.borrow()
    );
}

#[test]
fn a_failing_store_lets_clients_through_and_logs_once() {
    let p = plugin("karma reject connect");
    let (mut c, svc) = client("192.0.2.1", None);
    session(&*p, &mut c, 3);
    *svc.store_fails.borrow_mut() = Some(StoreError::Unavailable("connection refused".into()));
    for _ in 0..4 {
        let (mut c, _) = client("192.0.2.1", Some(&svc));
        assert_eq!(session(&*p, &mut c, 3), Outcome::Declined);
    }
    assert_eq!(svc.logged_count("connection refused"), 1);
    assert!(svc.logged("letting clients through unjudged"));
    *svc.store_fails.borrow_mut() = None;
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert!(boxed(&run(p.connect(&mut c))));
}

#[test]
fn arguments() {
    assert_bad_args(
        new,
        "karma",
        &[
            &["reject", "2"],
            &["reject"],
            &["negative", "0"],
            &["negative", "x"],
            &["strikes", "-1"],
            &["penalty_days", "0"],
            &["penalty_days", "soon"],
            &["history_days", "0"],
            &["colour", "blue"],
            &["negative"],
        ],
    );
    assert!(build_plugin(
        new,
        "karma db_dir /var/lib/qpsmtpd/karma nfslock 1 loglevel 7",
        &[]
    )
    .is_ok());
    let bad = build_err(new, "karma", &[("karma_tlds", "info\n")]);
    assert!(bad.to_string().starts_with("karma_tlds:1"), "{bad}");
    let bad = build_err(new, "karma", &[("karma_tlds", "info -3\n")]);
    assert!(bad.to_string().starts_with("karma_tlds:1"), "{bad}");
    assert_eq!(unlisted_overrides(&*plugin("karma")), []);
}
