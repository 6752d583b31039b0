use super::*;
use ringsmtpd_plugin_api::shared::{WhitelistHost, WhitelistSender};
use ringsmtpd_plugin_api::testing::{
    assert_bad_args, build, build_err, cx, cx_sharing, rcpt, run, txn_from, unlisted_overrides,
    FakeServices,
};
use std::rc::Rc;
use std::time::Duration;

fn plugin(line: &str) -> Box<dyn Plugin> {
    build(new, line, &[]).unwrap()
}

/// A client at `ip`, sharing the store and the clock of `shared` (an earlier client's), or
/// with services of its own on a fake clock at the start of a minute.
fn client(ip: &str, shared: Option<&Rc<FakeServices>>) -> (Cx, Rc<FakeServices>) {
    let remote = format!("{ip}:4000");
    if let Some(svc) = shared {
        return (cx_sharing(&remote, svc), svc.clone());
    }
    let (cx, svc) = cx(&remote);
    svc.set_clock(UNIX_EPOCH + Duration::from_secs(1_700_000_040));
    (cx, svc)
}

fn is_refusal(o: &Outcome, code: u16, enhanced: &str, close: bool) -> bool {
    matches!(o, Outcome::Done(Some(r)) if r.code == code
        && r.enhanced.as_deref() == Some(enhanced) && r.disconnect == close)
}

fn event(e: Event) -> u64 {
    COUNTS[e as usize].load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn one_connection_over_concurrency_is_closed_and_each_end_gives_its_place_back() {
    let p = plugin("limit concurrency 3");
    let (mut first, svc) = client("192.0.2.1", None);
    assert_eq!(run(p.connect(&mut first)), Outcome::Declined);
    let mut open: Vec<Cx> = (0..2).map(|_| client("192.0.2.1", Some(&svc)).0).collect();
    for c in &mut open {
        assert_eq!(run(p.connect(c)), Outcome::Declined);
    }
    let before = event(Event::Concurrency);
    let (mut fourth, _) = client("192.0.2.1", Some(&svc));
    let refused = run(p.connect(&mut fourth));
    assert!(is_refusal(&refused, 421, "4.7.0", true), "{refused:?}");
    assert!(event(Event::Concurrency) > before);
    assert!(svc.logged("fail: concurrency 4 > 3 for 192.0.2.1"));
    // another client has its own count
    let (mut other, _) = client("192.0.2.2", Some(&svc));
    assert_eq!(run(p.connect(&mut other)), Outcome::Declined);

    // the refused connection and one other end: two places free, each given back once
    assert_eq!(run(p.post_connection(&mut fourth)), Outcome::Declined);
    assert_eq!(run(p.post_connection(&mut first)), Outcome::Declined);
    let calls = svc.store_calls.get();
    assert_eq!(run(p.post_connection(&mut first)), Outcome::Declined);
    assert_eq!(
        svc.store_calls.get(),
        calls,
        "a second end gives nothing back"
    );
    let (mut again, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut again)), Outcome::Declined);
    let (mut over, _) = client("192.0.2.1", Some(&svc));
    assert!(is_refusal(&run(p.connect(&mut over)), 421, "4.7.0", true));
}

#[test]
fn a_leaked_count_lasts_at_most_two_windows() {
    let p = plugin("limit concurrency 1 concurrency_ttl 600");
    let (mut leaked, svc) = client("192.0.2.1", None);
    assert_eq!(run(p.connect(&mut leaked)), Outcome::Declined);
    // never ended (a killed process): the client is refused for now...
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert!(is_refusal(&run(p.connect(&mut c)), 421, "4.7.0", true));
    run(p.post_connection(&mut c));
    svc.advance(Duration::from_secs(700));
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert!(is_refusal(&run(p.connect(&mut c)), 421, "4.7.0", true));
    run(p.post_connection(&mut c));
    // ...and counted no more two windows after the one it was made in
    svc.advance(Duration::from_secs(600));
    let (mut c, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
}

#[test]
fn connection_rate_refuses_then_recovers() {
    let p = plugin("limit rate_conn 2/60");
    let (mut c, svc) = client("192.0.2.1", None);
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    let third = run(p.connect(&mut c));
    assert!(is_refusal(&third, 421, "4.7.0", true), "{third:?}");
    // no concurrency limit: nothing to give back
    assert!(!p.hooks().contains(Hook::PostConnection));
    svc.advance(Duration::from_secs(120));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
}

#[test]
fn recipients_per_connection_and_per_message() {
    let p = plugin("limit recipients 3 message_recipients 2");
    let (mut c, svc) = client("192.0.2.1", None);
    let to = rcpt("<x@example.test>");
    let mut txn = txn_from("<a@example.org>");
    assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
    txn.recipients.push(to.clone());
    assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
    txn.recipients.push(to.clone());
    let per_message = run(p.rcpt(&mut c, &mut txn, &to));
    assert!(
        is_refusal(&per_message, 452, "4.5.3", false),
        "{per_message:?}"
    );
    // a new transaction on the same connection: the 4th attempt is over the connection's 3
    let mut next = txn_from("<a@example.org>");
    let per_conn = run(p.rcpt(&mut c, &mut next, &to));
    assert!(is_refusal(&per_conn, 450, "4.7.1", false), "{per_conn:?}");
    assert_eq!(
        svc.store_calls.get(),
        0,
        "counted on the connection, not in the store"
    );
    // a new connection starts again
    let (mut fresh, _) = client("192.0.2.1", Some(&svc));
    assert_eq!(run(p.rcpt(&mut fresh, &mut next, &to)), Outcome::Declined);
}

#[test]
fn recipient_rates_per_client_and_per_sender() {
    let p = plugin("limit rate_rcpt_host 3/1h rate_rcpt_sender 2/1h");
    let (mut c, svc) = client("192.0.2.1", None);
    let to = rcpt("<x@example.test>");
    let mut a = txn_from("<a@example.org>");
    assert_eq!(run(p.rcpt(&mut c, &mut a, &to)), Outcome::Declined);
    assert_eq!(svc.store_calls.get(), 1, "both rates in one round trip");
    // the same sender in another case, from another client: the sender's limit
    let (mut d, _) = client("198.51.100.7", Some(&svc));
    let mut upper = txn_from("<A@Example.ORG>");
    assert_eq!(run(p.rcpt(&mut d, &mut upper, &to)), Outcome::Declined);
    let by_sender = run(p.rcpt(&mut d, &mut upper, &to));
    assert_eq!(
        by_sender,
        Outcome::Done(Some(Reply::new(
            450,
            "4.7.1",
            "Too many recipients from this sender, try again later"
        )))
    );
    // other senders from the first client: its own limit of 3 (1 so far)
    let mut b = txn_from("<b@example.org>");
    assert_eq!(run(p.rcpt(&mut c, &mut b, &to)), Outcome::Declined);
    let mut bounce = txn_from("<>");
    assert_eq!(run(p.rcpt(&mut c, &mut bounce, &to)), Outcome::Declined);
    let by_host = run(p.rcpt(&mut c, &mut bounce, &to));
    assert_eq!(
        by_host,
        Outcome::Done(Some(Reply::new(
            450,
            "4.7.1",
            "Too many recipients from you, try again later"
        )))
    );
    assert!(svc.logged("fail: rate_rcpt_sender 3 > 2 for a@example.org"));
    assert!(svc.logged("fail: rate_rcpt_host 4 > 3 for 192.0.2.1"));
}

#[test]
fn message_rates_at_mail_and_the_null_sender() {
    let p = plugin("limit rate_msg_host 3/10m rate_msg_sender 1/10m");
    let (mut c, svc) = client("192.0.2.1", None);
    assert_eq!(
        run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
    let again = run(p.mail(&mut c, &mut txn_from("<a@example.org>")));
    assert!(is_refusal(&again, 450, "4.7.1", false), "{again:?}");
    // bounces are not one sender: only the client's rate counts them
    assert_eq!(run(p.mail(&mut c, &mut txn_from("<>"))), Outcome::Declined);
    let over = run(p.mail(&mut c, &mut txn_from("<>")));
    assert!(matches!(&over, Outcome::Done(Some(r)) if r.lines[0].contains("messages from you")));
    // the sliding window: the old counts fade, then the client is through again
    svc.advance(Duration::from_secs(20 * 60));
    assert_eq!(
        run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
}

#[test]
fn ipv6_clients_count_per_network() {
    let p = plugin("limit rate_msg_host 1/1h");
    let (mut c, svc) = client("[2001:db8::1]", None);
    assert_eq!(
        run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
    let (mut same_net, _) = client("[2001:db8::ffff]", Some(&svc));
    let o = run(p.mail(&mut same_net, &mut txn_from("<a@example.org>")));
    assert!(is_refusal(&o, 450, "4.7.1", false), "{o:?}");
    assert!(svc.logged("for 2001:db8::/64"));
    let (mut other_net, _) = client("[2001:db8:0:1::1]", Some(&svc));
    assert_eq!(
        run(p.mail(&mut other_net, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
    // an IPv4 client behind a mapped address counts as itself
    let (mut mapped, _) = client("[::ffff:192.0.2.9]", Some(&svc));
    assert_eq!(
        run(p.mail(&mut mapped, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
    let (mut plain, _) = client("192.0.2.9", Some(&svc));
    let o = run(p.mail(&mut plain, &mut txn_from("<a@example.org>")));
    assert!(is_refusal(&o, 450, "4.7.1", false), "{o:?}");
}

#[test]
fn immune_clients_skip_unless_told() {
    let p = plugin("limit concurrency 1 rate_msg_host 1/1h rate_rcpt_sender 1/1h");
    let (mut c, svc) = client("192.0.2.1", None);
    c.conn.relay_client = true;
    for _ in 0..3 {
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        assert_eq!(
            run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
            Outcome::Declined
        );
    }
    assert_eq!(run(p.post_connection(&mut c)), Outcome::Declined);
    c.conn.relay_client = false;
    c.conn.notes.set(WhitelistHost("listed".into()));
    assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
    let (mut d, _) = client("192.0.2.2", Some(&svc));
    let mut txn = txn_from("<a@example.org>");
    txn.notes.set(WhitelistSender("listed".into()));
    let to = rcpt("<x@example.test>");
    for _ in 0..3 {
        assert_eq!(run(p.rcpt(&mut d, &mut txn, &to)), Outcome::Declined);
    }
    assert_eq!(svc.store_calls.get(), 0);

    let p = plugin("limit rate_msg_host 1/1h exempt_immune 0");
    let (mut relay, svc) = client("192.0.2.1", None);
    relay.conn.relay_client = true;
    assert_eq!(
        run(p.mail(&mut relay, &mut txn_from("<a@example.org>"))),
        Outcome::Declined
    );
    let o = run(p.mail(&mut relay, &mut txn_from("<a@example.org>")));
    assert!(is_refusal(&o, 450, "4.7.1", false), "{o:?}");
    assert_eq!(svc.store_calls.get(), 2);
}

#[test]
fn a_failing_store_lets_everything_through_and_logs_once() {
    let p = plugin("limit concurrency 1 rate_msg_host 1/1h rate_rcpt_host 1/1h");
    let (mut c, svc) = client("192.0.2.1", None);
    *svc.store_fails.borrow_mut() = Some(StoreError::Unavailable("connection refused".into()));
    let before = event(Event::StoreError);
    let to = rcpt("<x@example.test>");
    for _ in 0..4 {
        assert_eq!(run(p.connect(&mut c)), Outcome::Declined);
        let mut txn = txn_from("<a@example.org>");
        assert_eq!(run(p.mail(&mut c, &mut txn)), Outcome::Declined);
        assert_eq!(run(p.rcpt(&mut c, &mut txn, &to)), Outcome::Declined);
    }
    // nothing was counted, so nothing is given back
    let calls = svc.store_calls.get();
    assert_eq!(run(p.post_connection(&mut c)), Outcome::Declined);
    assert_eq!(svc.store_calls.get(), calls);
    assert!(event(Event::StoreError) >= before + 12);
    let lines = svc
        .logs
        .borrow()
        .iter()
        .filter(|(_, _, m)| m.contains("connection refused"))
        .count();
    assert_eq!(lines, 1);
    assert!(svc.logged("limits not checked, letting the client through"));
    // counted while the store was up, given back while it is down: logged, not fatal
    *svc.store_fails.borrow_mut() = None;
    let (mut d, _) = client("192.0.2.3", Some(&svc));
    assert_eq!(run(p.connect(&mut d)), Outcome::Declined);
    *svc.store_fails.borrow_mut() = Some(StoreError::Timeout);
    assert_eq!(run(p.post_connection(&mut d)), Outcome::Declined);
}

#[test]
fn hostile_senders_stay_inside_their_key() {
    let p = plugin("limit rate_msg_sender 1/1h");
    let (mut c, svc) = client("192.0.2.1", None);
    // a sender whose bytes look like another key's tail, and RESP characters
    for from in [
        "<\"x\\r\\n*3$3\"@example.org>",
        "<a@example.org>",
        "<\"4:rate\"@example.org>",
    ] {
        assert_eq!(
            run(p.mail(&mut c, &mut txn_from(from))),
            Outcome::Declined,
            "{from}"
        );
    }
    assert_eq!(svc.store_table().len(), 3);
}

#[test]
fn arguments_and_the_config_file() {
    assert_bad_args(
        new,
        "limit",
        &[
            &["concurrency", "x"],
            &["concurrency", "-1"],
            &["concurrency_ttl", "5"],
            &["rate_conn", "5/"],
            &["rate_rcpt_host", "1/1y"],
            &["exempt_immune", "maybe"],
            &["ipv6_prefix", "0"],
            &["ipv6_prefix", "129"],
            &["colour", "blue"],
            &["concurrency"],
        ],
    );
    let none = build_err(new, "limit", &[]).to_string();
    assert!(none.contains("no limit is set"), "{none}");
    let off = build_err(new, "limit rate_conn 0", &[]).to_string();
    assert!(off.contains("no limit is set"), "{off}");
    // the file's settings, the plugin line winning
    let files = [("limit", "rate_msg_host 1/1h\nconcurrency 10\n")];
    let p = build(new, "limit rate_msg_host 2/1h", &files).unwrap();
    let (mut c, _) = client("192.0.2.1", None);
    for _ in 0..2 {
        assert_eq!(
            run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
            Outcome::Declined
        );
    }
    assert!(is_refusal(
        &run(p.mail(&mut c, &mut txn_from("<a@example.org>"))),
        450,
        "4.7.1",
        false
    ));
    assert!(p.hooks().contains(Hook::Connect) && p.hooks().contains(Hook::PostConnection));
    let bad = build_err(
        new,
        "limit",
        &[("limit", "concurrency 3\nrate_conn lots\n")],
    );
    assert!(bad.to_string().starts_with("limit:2"), "{bad}");
    // each setting lists only the hooks it acts on
    let all = "limit concurrency 1 rate_msg_host 1 rate_rcpt_sender 1";
    assert!(unlisted_overrides(&*plugin(all)).is_empty());
    assert_eq!(
        unlisted_overrides(&*plugin("limit recipients 5")),
        [Hook::Connect, Hook::Mail, Hook::PostConnection]
    );
}
