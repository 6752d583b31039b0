//! The DNS client: lookups per second through the whole client (batcher, sockets, ID table,
//! reply validation, hickory-proto parsing) against the in-process fake server on loopback,
//! and the cost of a cache hit.
//!
//! `cargo bench --bench dns`. The fake server runs on its own thread with std sockets, so on a
//! 2-core machine the client and the server share the cores: the figure is a floor for the
//! client, not a measure of a DNS server. See docs/dns.md for the figures.
//!
//! With `DNS_BENCH_SERVER=IP:PORT` the throughput bench also runs against that server (e.g. the
//! knot of `python3 tests/dns/server.py serve`), asking `N.0.0.127.dnsbl.test` names.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringsmtpd::dns::fake::{FakeServer, Mode};
use ringsmtpd::dns::{QType, Resolver, ResolverConfig};
use ringsmtpd::runtime::{run_on, Driver};

/// Lookups in flight at once in the throughput bench: a few hundred connections' worth of
/// DNSBL questions, all distinct (no coalescing, no cache).
const WINDOW: usize = 256;

fn client(srv: std::net::SocketAddr, cache: usize) -> Resolver {
    Resolver::new(ResolverConfig {
        timeout: Duration::from_secs(2),
        retries: 0,
        cache_size: cache,
        ..ResolverConfig::new(vec![srv])
    })
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.example.test")).collect()
}

fn bench(c: &mut Criterion) {
    let srv = FakeServer::start(Mode::Normal).expect("fake DNS server");
    let names = names(WINDOW);
    let mut targets = vec![
        ("fake_uring", Driver::Auto, srv.addr, names.clone()),
        ("fake_epoll", Driver::Epoll, srv.addr, names.clone()),
    ];
    if let Some(addr) = std::env::var("DNS_BENCH_SERVER")
        .ok()
        .and_then(|a| a.parse().ok())
    {
        let dnsbl = (0..WINDOW)
            .map(|i| format!("{}.{}.0.127.dnsbl.test", i % 250 + 1, i / 250))
            .collect();
        targets.push(("server_uring", Driver::Auto, addr, dnsbl));
    }

    for (label, driver, addr, names) in targets {
        let mut g = c.benchmark_group("dns_lookups");
        g.throughput(Throughput::Elements(WINDOW as u64));
        g.sample_size(20);
        g.measurement_time(Duration::from_secs(5));
        g.bench_function(format!("{WINDOW}_distinct_in_flight_{label}"), |b| {
            b.iter_custom(|iters| {
                run_on(driver, || async {
                    let r = client(addr, 0);
                    let t0 = Instant::now();
                    for _ in 0..iters {
                        let lookups: Vec<_> = names.iter().map(|n| r.query(n, QType::A)).collect();
                        for l in lookups {
                            black_box(l.await.expect("answer"));
                        }
                    }
                    let took = t0.elapsed();
                    let s = r.stats();
                    assert_eq!(s.timeouts, 0, "{s:?}");
                    took
                })
                .expect("runtime")
            })
        });
        g.finish();
    }

    let mut g = c.benchmark_group("dns_cache");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hit", |b| {
        b.iter_custom(|iters| {
            run_on(Driver::Auto, || async {
                let r = client(srv.addr, 10_000);
                for n in &names {
                    r.query(n, QType::A).await.expect("answer");
                }
                let t0 = Instant::now();
                for i in 0..iters {
                    let name = &names[i as usize % names.len()];
                    black_box(r.query(black_box(name), QType::A).now());
                }
                t0.elapsed()
            })
            .expect("runtime")
        })
    });
    g.bench_function("hit_via_plugin_api", |b| {
        b.iter_custom(|iters| {
            run_on(Driver::Auto, || async {
                let r = client(srv.addr, 10_000);
                for n in &names {
                    r.query(n, QType::A).await.expect("answer");
                }
                let t0 = Instant::now();
                for i in 0..iters {
                    let name = &names[i as usize % names.len()];
                    black_box(r.lookup(black_box(name), QType::A).await.expect("hit"));
                }
                t0.elapsed()
            })
            .expect("runtime")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
