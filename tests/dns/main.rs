//! The DNS client against a real DNS server: Knot DNS with the test zones of tests/dns/zones,
//! started on a free loopback port by the Python harness tests/dns/server.py (the same harness
//! the DNS plugin end-to-end tests use). Needs `knotd` (Debian: `apt-get install knot`) and
//! python3; without them these tests fail and say so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use ringsmtpd::dns::{DnsError, QType, Record, Resolver, ResolverConfig};
use ringsmtpd::runtime::{run_on, Driver};

/// Bounds a hang; never a verdict on speed.
const DEADLINE: Duration = Duration::from_secs(60);

/// knotd, a silent port and a spoofing proxy in front of knotd, run by tests/dns/server.py.
struct Harness {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    port: u16,
    silent: u16,
    spoof: u16,
}

impl Harness {
    fn start() -> Harness {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dns/server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e}"));
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse::<u16>().ok())
        };
        let (Some(port), Some(silent), Some(spoof)) =
            (field("port"), field("silent"), field("spoof"))
        else {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.kill();
            panic!(
                "the DNS test harness did not start (needs knotd: apt-get install knot).\n\
                 stdout: {line}\nstderr: {err}"
            );
        };
        Harness {
            child,
            stdin,
            stdout,
            port,
            silent,
            spoof,
        }
    }

    /// Queries knot received since it started: (udp, tcp).
    fn count(&mut self) -> (u64, u64) {
        let stdin = self.stdin.as_mut().expect("harness stdin");
        writeln!(stdin, "count").expect("harness alive");
        stdin.flush().expect("harness alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("harness answers");
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("bad count line {line:?}"))
        };
        (field("udp"), field("tcp"))
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        drop(self.stdin.take()); // end of input: the harness stops knot and exits
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn resolver(ports: &[u16]) -> Resolver {
    Resolver::new(ResolverConfig {
        timeout: Duration::from_secs(1),
        retries: 1,
        ..ResolverConfig::new(ports.iter().map(|&p| Harness::addr(p)).collect())
    })
}

fn run<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    run_on(Driver::Auto, || async move {
        if monoio::time::timeout(DEADLINE, f()).await.is_err() {
            panic!("test did not finish within {DEADLINE:?}");
        }
    })
    .expect("runtime");
}

#[test]
fn knot_blocklist_reverse_and_mail_records() {
    let h = Harness::start();
    run(|| async {
        let r = resolver(&[h.port]);
        // DNSBL: 127.0.0.2 is listed with a reason, 127.0.0.1 is not.
        let listed = r.query("2.0.0.127.dnsbl.test", QType::A).await.unwrap();
        assert_eq!(listed.records, vec![Record::A(Ipv4Addr::new(127, 0, 0, 2))]);
        assert_eq!(listed.ttl, 300);
        let why = r.query("2.0.0.127.dnsbl.test", QType::Txt).await.unwrap();
        assert!(why.txt().any(|t| t.contains("dnsbl.test")), "{why:?}");
        let clean = r.query("1.0.0.127.DNSBL.test", QType::A).await.unwrap();
        assert!(clean.nxdomain && clean.records.is_empty());
        assert_eq!(clean.ttl, 60, "RFC 2308: min(SOA TTL 300, MINIMUM 60)");
        // PTR and forward confirmation.
        let ptr = r.query("1.0.0.127.in-addr.arpa", QType::Ptr).await.unwrap();
        assert_eq!(ptr.names().collect::<Vec<_>>(), ["mail.example.test"]);
        let fwd = r.query("mail.example.test", QType::A).await.unwrap();
        assert_eq!(fwd.ipv4().collect::<Vec<_>>(), [Ipv4Addr::LOCALHOST]);
        // Mail domain records.
        let mx = r.query("example.test", QType::Mx).await.unwrap();
        assert_eq!(
            mx.records,
            vec![Record::Mx {
                preference: 10,
                exchange: "mail.example.test".into()
            }]
        );
        let v6 = r.query("example.test", QType::Aaaa).await.unwrap();
        assert_eq!(v6.records, vec![Record::Aaaa(Ipv6Addr::LOCALHOST)]);
        let spf = r.query("example.test", QType::Txt).await.unwrap();
        assert_eq!(
            spf.txt().collect::<Vec<_>>(),
            ["v=spf1 ip4:127.0.0.0/8 -all"]
        );
        let www = r.query("www.example.test", QType::A).await.unwrap();
        assert_eq!(www.names().collect::<Vec<_>>(), ["mail.example.test"]);
        assert_eq!(www.ipv4().collect::<Vec<_>>(), [Ipv4Addr::LOCALHOST]);
        let nomx = r.query("nomx.example.test", QType::Mx).await.unwrap();
        assert!(!nomx.nxdomain && nomx.records.is_empty(), "NODATA");
        let s = r.stats();
        assert_eq!(
            (s.dropped_spoofed, s.timeouts, s.failures),
            (0, 0, 0),
            "{s:?}"
        );
    });
}

#[test]
fn knot_truncated_answer_is_fetched_over_tcp() {
    let mut h = Harness::start();
    run(|| async {
        let r = resolver(&[h.port]);
        let big = r.query("big.example.test", QType::Txt).await.unwrap();
        assert_eq!(big.txt().count(), 60);
        assert_eq!(r.stats().tcp_queries, 1);
    });
    assert_eq!(
        h.count(),
        (1, 1),
        "one UDP try (truncated), then one TCP query"
    );
}

#[test]
fn knot_servfail_silence_and_next_upstream() {
    let h = Harness::start();
    run(|| async {
        // broken.test is configured without contents: knot answers SERVFAIL.
        let r = resolver(&[h.port]);
        assert_eq!(
            r.query("x.broken.test", QType::A).await,
            Err(DnsError::ServFail)
        );
        // A server that never answers: a timeout after the budget, never a hang.
        let mute = resolver(&[h.silent]);
        assert_eq!(
            mute.query("2.0.0.127.dnsbl.test", QType::A).await,
            Err(DnsError::Timeout)
        );
        // Silent first, knot second: the retry goes to knot.
        let both = resolver(&[h.silent, h.port]);
        let a = both.query("2.0.0.127.dnsbl.test", QType::A).await.unwrap();
        assert_eq!(a.ipv4().count(), 1);
        assert_eq!(both.stats().try_timeouts, 1);
    });
}

#[test]
fn knot_behind_a_spoofer_forgeries_are_dropped() {
    let h = Harness::start();
    run(|| async {
        let r = resolver(&[h.spoof]);
        let a = r.query("2.0.0.127.dnsbl.test", QType::A).await.unwrap();
        assert_eq!(a.records, vec![Record::A(Ipv4Addr::new(127, 0, 0, 2))]);
        let mx = r.query("example.test", QType::Mx).await.unwrap();
        assert_eq!(mx.names().collect::<Vec<_>>(), ["mail.example.test"]);
        // Two forgeries (wrong ID, wrong question) before each real reply.
        assert_eq!(r.stats().dropped_spoofed, 4, "{:?}", r.stats());
    });
}

#[test]
fn knot_counts_one_query_for_1000_concurrent_lookups() {
    let mut h = Harness::start();
    run(|| async {
        let r = resolver(&[h.port]);
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let r = r.clone();
                monoio::spawn(async move { r.query("2.0.0.127.dnsbl.test", QType::A).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap());
        }
        assert!(answers.iter().all(|a| Rc::ptr_eq(a, &answers[0])));
        let s = r.stats();
        assert_eq!((s.queries_sent, s.coalesced), (1, 999), "{s:?}");
        // And later lookups come from the cache.
        for _ in 0..1000 {
            r.query("2.0.0.127.dnsbl.test", QType::A).await.unwrap();
        }
        assert_eq!(r.stats().cache_hits, 1000);
    });
    assert_eq!(h.count(), (1, 0), "exactly one query reached the server");
}
