//! The resolver against the in-process fake server ([`super::fake`]) on loopback. Every test
//! runs in its own monoio runtime and under an outer deadline: a bug fails a test, it never
//! hangs one.

use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::fake::{FakeServer, Mode};
use super::*;
use crate::runtime::{run_on, Driver};

/// No test needs more; it only bounds a hang.
const DEADLINE: Duration = Duration::from_secs(20);

fn run<F: std::future::Future<Output = ()>>(driver: Driver, f: impl FnOnce() -> F) {
    run_on(driver, || async move {
        if monoio::time::timeout(DEADLINE, f()).await.is_err() {
            panic!("test did not finish within {DEADLINE:?}");
        }
    })
    .expect("runtime");
}

fn server(mode: Mode) -> FakeServer {
    FakeServer::start(mode).expect("fake DNS server")
}

fn cfg(servers: &[&FakeServer]) -> ResolverConfig {
    ResolverConfig {
        timeout: Duration::from_millis(250),
        retries: 1,
        ..ResolverConfig::new(servers.iter().map(|s| s.addr).collect())
    }
}

fn a192() -> Vec<Record> {
    vec![Record::A(Ipv4Addr::new(192, 0, 2, 1))]
}

#[test]
fn answers_each_type_on_both_drivers() {
    for driver in [Driver::Auto, Driver::Epoll] {
        let srv = server(Mode::Normal);
        run(driver, || async {
            let r = Resolver::new(cfg(&[&srv]));
            let a = r.query("host.example.test", QType::A).await.unwrap();
            assert_eq!((a.nxdomain, a.ttl, a.records.clone()), (false, 300, a192()));
            let mx = r.query("example.test", QType::Mx).await.unwrap();
            assert_eq!(mx.names().collect::<Vec<_>>(), ["mx.example.test"]);
            let txt = r.query("example.test", QType::Txt).await.unwrap();
            assert_eq!(txt.txt().collect::<Vec<_>>(), ["hello"]);
            let ptr = r.query("1.2.0.192.in-addr.arpa", QType::Ptr).await.unwrap();
            assert_eq!(ptr.names().collect::<Vec<_>>(), ["host.example.test"]);
            let v6 = r.query("host.example.test", QType::Aaaa).await.unwrap();
            assert_eq!(v6.ips().count(), 1);
            let s = r.stats();
            assert_eq!((s.queries_sent, s.cache_hits, s.in_flight), (5, 0, 0));
        });
        assert_eq!(srv.udp(), 5);
        // Every query carried EDNS0 with our payload size.
        let seen = srv.seen.queries.lock().unwrap();
        assert!(seen.iter().all(|&(_, _, payload)| payload == UDP_PAYLOAD));
    }
}

#[test]
fn ids_and_source_ports_vary() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        for i in 0..40 {
            r.query(&format!("h{i}.example.test"), QType::A)
                .await
                .unwrap();
        }
    });
    let seen = srv.seen.queries.lock().unwrap();
    let ids: std::collections::HashSet<u16> = seen.iter().map(|q| q.0).collect();
    let ports: std::collections::HashSet<u16> = seen.iter().map(|q| q.1).collect();
    assert!(ids.len() >= 35, "query IDs repeat: {ids:?}");
    assert!(
        ports.len() >= 2,
        "one source port for 40 queries: {ports:?}"
    );
}

#[test]
fn sockets_rotate() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(ResolverConfig {
            rotate_after: 2,
            ..cfg(&[&srv])
        });
        for i in 0..30 {
            r.query(&format!("r{i}.example.test"), QType::A)
                .await
                .unwrap();
        }
        assert!(r.stats().sockets_opened >= 10, "{:?}", r.stats());
    });
    let ports: std::collections::HashSet<u16> = srv
        .seen
        .queries
        .lock()
        .unwrap()
        .iter()
        .map(|q| q.1)
        .collect();
    assert!(ports.len() >= 10, "{ports:?}");
}

#[test]
fn nxdomain_is_cached_negatively() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        let a = r.query("nx.dnsbl.test", QType::A).await.unwrap();
        assert!(a.nxdomain && a.records.is_empty());
        assert_eq!(a.ttl, 30, "min(SOA TTL 60, MINIMUM 30)");
        let again = r.query("NX.dnsbl.test.", QType::A);
        let hit = again.now().expect("a cache hit is ready at once").unwrap();
        assert!(Rc::ptr_eq(&a, &hit));
        let nodata = r.query("nodata.example.test", QType::Aaaa).await.unwrap();
        assert!(!nodata.nxdomain && nodata.records.is_empty() && nodata.ttl == 30);
        r.query("nodata.example.test", QType::Aaaa).await.unwrap();
        assert_eq!(r.stats().cache_hits, 2);
    });
    assert_eq!(srv.udp(), 2);
}

#[test]
fn servfail_moves_to_the_next_upstream() {
    let bad = server(Mode::ServFail);
    let good = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&bad, &good]));
        let a = r.query("host.example.test", QType::A).await.unwrap();
        assert_eq!(a.records, a192());
        assert_eq!(r.stats().retries, 1);
        // Every upstream failing: SERVFAIL, not cached.
        let r = Resolver::new(cfg(&[&bad]));
        assert_eq!(
            r.query("host.example.test", QType::A).await,
            Err(DnsError::ServFail)
        );
        assert_eq!(
            r.query("host.example.test", QType::A).await,
            Err(DnsError::ServFail)
        );
        assert_eq!(r.stats().failures, 2);
        let r = Resolver::new(cfg(&[&good]));
        assert_eq!(
            r.query("refused.example.test", QType::A).await,
            Err(DnsError::Refused)
        );
    });
    assert_eq!((bad.udp(), good.udp()), (1 + 4, 1 + 2));
}

#[test]
fn silence_times_out_within_the_budget() {
    let mute = server(Mode::Silent);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&mute]));
        let budget = r.config().budget();
        let t0 = Instant::now();
        let res = r.query("host.example.test", QType::A).await;
        assert_eq!(res, Err(DnsError::Timeout));
        // Never a hang: the lookup ends after its budget (generous slack for a busy box).
        assert!(t0.elapsed() < budget + Duration::from_secs(5));
        let s = r.stats();
        assert_eq!((s.try_timeouts, s.timeouts, s.in_flight), (2, 1, 0));
    });
    assert_eq!(mute.udp(), 2, "one try and one retry");
}

#[test]
fn nothing_listening_times_out_too() {
    // A port with nobody behind it: ICMP errors are not seen on an unconnected socket.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .unwrap()
        .port();
    run(Driver::Auto, || async move {
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_millis(100),
            retries: 0,
            ..ResolverConfig::new(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        });
        assert_eq!(r.query("a.test", QType::A).await, Err(DnsError::Timeout));
    });
}

#[test]
fn truncated_reply_is_asked_again_over_tcp() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        let a = r.query("big.example.test", QType::Txt).await.unwrap();
        assert_eq!(a.txt().count(), 60);
        assert_eq!(r.stats().tcp_queries, 1);
    });
    assert_eq!((srv.udp(), srv.tcp()), (1, 1));
}

#[test]
fn spoofed_replies_are_dropped() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        let a = r.query("spoof.example.test", QType::A).await.unwrap();
        // The forgeries said 6.6.6.6 for a day; the real answer won.
        assert_eq!((a.records.clone(), a.ttl), (a192(), 300));
        let s = r.stats();
        assert_eq!(s.dropped_spoofed, 3, "{s:?}");
        // Nothing forged reached the cache either (the wrong-question one was for
        // victim.example.test).
        assert_eq!(s.cache_entries, 1);
        let v = r.query("victim.example.test", QType::A).await.unwrap();
        assert_eq!(v.records, a192());
    });
    assert_eq!(srv.udp(), 2, "spoof + victim");
}

#[test]
fn identical_questions_share_one_packet() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_secs(2),
            ..cfg(&[&srv])
        });
        let lookups: Vec<Lookup> = (0..1000)
            .map(|i| {
                let name = if i % 2 == 0 {
                    "slow.example.test"
                } else {
                    "SLOW.Example.Test."
                };
                r.query(name, QType::A)
            })
            .collect();
        assert_eq!(r.stats().in_flight, 1);
        let answers = net::join_all(lookups).await;
        let first = answers[0].clone().unwrap();
        assert!(answers
            .iter()
            .all(|a| Rc::ptr_eq(a.as_ref().unwrap(), &first)));
        let s = r.stats();
        assert_eq!((s.coalesced, s.queries_sent), (999, 1));
    });
    assert_eq!(srv.udp(), 1);
}

#[test]
fn questions_of_one_turn_leave_in_one_batch() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        // Fifty tasks, each asking its own question in the same loop turn.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let r = r.clone();
                monoio::spawn(async move { r.query(&format!("b{i}.example.test"), QType::A).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let s = r.stats();
        assert_eq!((s.queries_sent, s.batches), (50, 1), "{s:?}");
    });
}

#[test]
fn cache_hits_send_nothing_and_ttls_expire() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        let a = r.query("ttl1.example.test", QType::A).await.unwrap();
        assert_eq!(a.ttl, 1);
        let hit = r.query("ttl1.example.test", QType::A).await.unwrap();
        assert!(Rc::ptr_eq(&a, &hit));
        monoio::time::sleep(Duration::from_millis(1100)).await;
        let fresh = r.query("ttl1.example.test", QType::A).await.unwrap();
        assert!(!Rc::ptr_eq(&a, &fresh));
        let s = r.stats();
        assert_eq!((s.cache_hits, s.queries_sent), (1, 2));
    });
    assert_eq!(srv.udp(), 2);
}

#[test]
fn cache_size_is_bounded() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(ResolverConfig {
            cache_size: 5,
            ..cfg(&[&srv])
        });
        for i in 0..20 {
            r.query(&format!("c{i}.example.test"), QType::A)
                .await
                .unwrap();
        }
        assert_eq!(r.stats().cache_entries, 5);
        let off = Resolver::new(ResolverConfig {
            cache_size: 0,
            ..cfg(&[&srv])
        });
        off.query("c0.example.test", QType::A).await.unwrap();
        off.query("c0.example.test", QType::A).await.unwrap();
        assert_eq!(off.stats().cache_hits, 0);
    });
}

#[test]
fn bad_names_and_no_servers_fail_at_once() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        let long = format!("{}.test", "x".repeat(64));
        for bad in [
            "",
            ".",
            "a..b",
            "exa mple.test",
            "ex\u{e4}mple.test",
            long.as_str(),
        ] {
            assert_eq!(
                r.query(bad, QType::A).now(),
                Some(Err(DnsError::BadName)),
                "{bad:?}"
            );
        }
        let none = Resolver::new(ResolverConfig::new(Vec::new()));
        assert_eq!(
            none.query("a.test", QType::A).await,
            Err(DnsError::NoResolver)
        );
    });
    assert_eq!(srv.udp(), 0);
}

#[test]
fn dropping_every_handle_withdraws_but_a_late_answer_is_cached() {
    let srv = server(Mode::Normal);
    let mute = server(Mode::Silent);
    run(Driver::Auto, || async {
        // slow: answered after 300 ms, the try waits 1 s; nobody waits for it any more.
        let r = Resolver::new(ResolverConfig {
            timeout: Duration::from_secs(1),
            ..cfg(&[&srv])
        });
        drop(r.query("slow.example.test", QType::A));
        assert_eq!(r.stats().in_flight, 1, "the try under way stays");
        monoio::time::sleep(super::fake::SLOW + Duration::from_millis(400)).await;
        assert_eq!(r.stats().in_flight, 0);
        assert!(
            r.query("slow.example.test", QType::A).now().is_some(),
            "late answer cached"
        );
        // silent: withdrawn, so no retry after the first try's timeout.
        let r = Resolver::new(ResolverConfig {
            retries: 3,
            timeout: Duration::from_millis(100),
            ..cfg(&[&mute])
        });
        drop(r.query("host.example.test", QType::A));
        monoio::time::sleep(Duration::from_millis(500)).await;
        let s = r.stats();
        assert_eq!((s.in_flight, s.retries, s.queries_sent), (0, 0, 1), "{s:?}");
        // A new waiter re-attaches to a withdrawn question still in flight.
        let r2 = Resolver::new(ResolverConfig {
            timeout: Duration::from_secs(1),
            ..cfg(&[&srv])
        });
        drop(r2.query("slow.example.test", QType::A));
        let again = r2.query("slow.example.test", QType::A).await.unwrap();
        assert_eq!(again.records, a192());
        assert_eq!(r2.stats().coalesced, 1);
    });
    assert_eq!((srv.udp(), mute.udp()), (2, 1));
}

#[test]
fn too_many_questions_in_flight_are_refused() {
    let mute = server(Mode::Silent);
    run(Driver::Auto, || async {
        let r = Resolver::new(ResolverConfig {
            max_in_flight: 10,
            retries: 0,
            timeout: Duration::from_millis(200),
            ..cfg(&[&mute])
        });
        let lookups: Vec<Lookup> = (0..20)
            .map(|i| r.query(&format!("t{i}.example.test"), QType::A))
            .collect();
        let refused = lookups
            .iter()
            .filter(|l| l.now() == Some(Err(DnsError::Refused)))
            .count();
        assert_eq!(refused, 10);
        assert_eq!(r.stats().overloaded, 10);
        let results = net::join_all(lookups).await;
        assert_eq!(
            results
                .iter()
                .filter(|r| **r == Err(DnsError::Timeout))
                .count(),
            10
        );
        // Room again once they are done.
        assert_eq!(r.stats().in_flight, 0);
    });
}

#[test]
fn a_dropped_resolver_stops_its_tasks() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(cfg(&[&srv]));
        r.query("a.example.test", QType::A).await.unwrap();
        let weak = Rc::downgrade(&r.0);
        drop(r);
        // Let the receive and sender tasks see the close and end.
        monoio::time::sleep(Duration::from_millis(20)).await;
        assert!(weak.upgrade().is_none());
    });
}

#[test]
fn worker_services_route_plugin_queries() {
    use ringsmtpd_plugin_api::Services;
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let svc = crate::services::WorkerServices::new("mx.test".into());
        assert_eq!(
            svc.dns_query("a.example.test", QType::A).await,
            Err(DnsError::NoResolver)
        );
        svc.set_resolver(Resolver::new(cfg(&[&srv])));
        let a = svc.dns_query("a.example.test", QType::A).await.unwrap();
        assert_eq!(a.records, a192());
        let hit = svc.dns_query("A.EXAMPLE.TEST", QType::A).await.unwrap();
        assert!(Rc::ptr_eq(&a, &hit));
    });
}

#[test]
fn a_torrent_of_lookups_stays_bounded() {
    let srv = server(Mode::Normal);
    run(Driver::Auto, || async {
        let r = Resolver::new(ResolverConfig {
            max_in_flight: 1000,
            cache_size: 500,
            timeout: Duration::from_secs(5),
            ..cfg(&[&srv])
        });
        for round in 0..4 {
            let lookups: Vec<Lookup> = (0..2000)
                .map(|i| r.query(&format!("t{round}-{i}.example.test"), QType::A))
                .collect();
            let results = net::join_all(lookups).await;
            let ok = results.iter().filter(|r| r.is_ok()).count();
            let refused = results
                .iter()
                .filter(|r| **r == Err(DnsError::Refused))
                .count();
            assert_eq!((ok, refused), (1000, 1000), "round {round}");
            let s = r.stats();
            assert_eq!(s.in_flight, 0);
            assert!(s.cache_entries <= 500, "{s:?}");
        }
        let s = r.stats();
        assert_eq!((s.overloaded, s.timeouts), (4000, 0), "{s:?}");
    });
}
