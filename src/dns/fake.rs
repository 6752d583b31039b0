//! An in-process fake DNS server for tests and benchmarks: UDP and TCP on one free loopback
//! port, on its own threads with std sockets (independent of the runtime under test), replies
//! built with hickory-proto. Not part of the server; public only so `bench/dns.rs` can use it.
//!
//! What it answers depends on the first label of the question's name:
//!
//! | first label   | reply                                                                  |
//! |---------------|------------------------------------------------------------------------|
//! | `nx…`         | NXDOMAIN with an SOA (TTL 60, MINIMUM 30): negative TTL 30             |
//! | `nodata…`     | NOERROR, no records, SOA as above                                      |
//! | `servfail…`   | SERVFAIL                                                               |
//! | `refused…`    | REFUSED                                                                |
//! | `silent…`     | nothing                                                                |
//! | `slow…`       | the normal answer after [`SLOW`]                                       |
//! | `big…`        | UDP: an empty reply with TC set; TCP: 60 TXT records (over 1232 bytes) |
//! | `spoof…`      | first three forged replies (wrong ID; wrong question; right ID and    |
//! |               | question from another port), all saying 6.6.6.6, then the real one     |
//! | `ttl1…`       | the normal answer with TTL 1                                           |
//! | anything else | A 192.0.2.1, AAAA 2001:db8::1, MX 10 mx.example.test, TXT "hello",    |
//! |               | PTR host.example.test, TTL 300                                         |
//!
//! A server started with [`Mode::ServFail`] or [`Mode::Silent`] answers every question so.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The delay of `slow…` names.
pub const SLOW: Duration = Duration::from_millis(300);

/// Queries whose (ID, port, payload) are kept for inspection; a benchmark sends millions.
const MAX_RECORDED: usize = 100_000;

/// How the whole server behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// By name, as in the module table.
    Normal,
    /// SERVFAIL to everything.
    ServFail,
    /// Never answers.
    Silent,
}

/// What the server saw.
#[derive(Default)]
pub struct Seen {
    pub udp: AtomicU64,
    pub tcp: AtomicU64,
    /// (query ID, client source port, EDNS payload or 0) of the first 100,000 UDP queries.
    pub queries: Mutex<Vec<(u16, u16, u16)>>,
}

/// A running fake server; stops when dropped.
pub struct FakeServer {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start(mode: Mode) -> std::io::Result<FakeServer> {
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        // Room for a benchmark's burst of queries (best effort: capped by rmem_max).
        let _ = socket2::SockRef::from(&udp).set_recv_buffer_size(4 << 20);
        udp.set_read_timeout(Some(Duration::from_millis(20)))?;
        tcp.set_nonblocking(true)?;
        let seen = Arc::new(Seen::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                serve_udp(udp, mode, &seen, &stop)
            }));
        }
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                serve_tcp(tcp, mode, &seen, &stop)
            }));
        }
        Ok(FakeServer {
            addr,
            seen,
            stop,
            threads,
        })
    }

    /// UDP queries received so far.
    pub fn udp(&self) -> u64 {
        self.seen.udp.load(Ordering::SeqCst)
    }

    /// TCP queries received so far.
    pub fn tcp(&self) -> u64 {
        self.seen.tcp.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same free loopback port.
fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        match TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

fn serve_udp(sock: UdpSocket, mode: Mode, seen: &Seen, stop: &AtomicBool) {
    let other = UdpSocket::bind("127.0.0.1:0").ok();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        seen.udp.fetch_add(1, Ordering::SeqCst);
        let payload = query.edns.as_ref().map_or(0, |e| e.max_payload());
        if let Ok(mut q) = seen.queries.lock() {
            if q.len() < MAX_RECORDED {
                q.push((query.metadata.id, from.port(), payload));
            }
        }
        let label = first_label(&query);
        if mode == Mode::Silent || label.starts_with("silent") {
            continue;
        }
        if label.starts_with("slow") {
            std::thread::sleep(SLOW);
        }
        if mode == Mode::Normal && label.starts_with("spoof") {
            for forged in forgeries(&query) {
                if let Ok(bytes) = forged.0.to_vec() {
                    let via = if forged.1 {
                        other.as_ref()
                    } else {
                        Some(&sock)
                    };
                    if let Some(via) = via {
                        let _ = via.send_to(&bytes, from);
                    }
                }
            }
        }
        let mut reply = answer(&query, mode, label.starts_with("big"));
        if label.starts_with("big") {
            reply.answers.clear();
            reply.metadata.truncation = true;
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = sock.send_to(&bytes, from);
        }
    }
}

fn serve_tcp(listener: TcpListener, mode: Mode, seen: &Seen, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = tcp_one(&mut s, mode, seen);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn tcp_one(s: &mut TcpStream, mode: Mode, seen: &Seen) -> std::io::Result<()> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut body)?;
    let query = Message::from_vec(&body).map_err(std::io::Error::other)?;
    seen.tcp.fetch_add(1, Ordering::SeqCst);
    if mode == Mode::Silent {
        return Ok(());
    }
    let bytes = answer(&query, mode, true)
        .to_vec()
        .map_err(std::io::Error::other)?;
    let n = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    s.write_all(&n.to_be_bytes())?;
    s.write_all(&bytes)
}

fn first_label(m: &Message) -> String {
    m.queries
        .first()
        .and_then(|q| q.name().iter().next())
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .unwrap_or_default()
}

fn soa(name: &Name) -> Record {
    let zone = name.base_name();
    let data = SOA::new(zone.clone(), zone.clone(), 1, 3600, 600, 86400, 30);
    Record::from_rdata(zone, 60, RData::SOA(data))
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|_| Name::root())
}

/// The reply to `query` (`big`: the large TXT set of `big…` names).
pub fn answer(query: &Message, mode: Mode, big: bool) -> Message {
    let mut m = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(query.queries.iter().cloned());
    let Some(q) = query.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    let label = first_label(query);
    let qname = q.name().clone();
    let code = if mode == Mode::ServFail || label.starts_with("servfail") {
        ResponseCode::ServFail
    } else if label.starts_with("refused") {
        ResponseCode::Refused
    } else if label.starts_with("nx") {
        m.add_authority(soa(&qname));
        ResponseCode::NXDomain
    } else if label.starts_with("nodata") {
        m.add_authority(soa(&qname));
        ResponseCode::NoError
    } else {
        let ttl = if label.starts_with("ttl1") { 1 } else { 300 };
        let rr = |data| Record::from_rdata(qname.clone(), ttl, data);
        match q.query_type() {
            RecordType::A => m.add_answer(rr(RData::A(A(Ipv4Addr::new(192, 0, 2, 1))))),
            RecordType::AAAA => m.add_answer(rr(RData::AAAA(AAAA(Ipv6Addr::new(
                0x2001, 0xdb8, 0, 0, 0, 0, 0, 1,
            ))))),
            RecordType::MX => m.add_answer(rr(RData::MX(MX::new(10, name("mx.example.test."))))),
            RecordType::PTR => m.add_answer(rr(RData::PTR(PTR(name("host.example.test."))))),
            RecordType::TXT if big => {
                for i in 0..60 {
                    let text = format!("record {i:02} of a set too large for one UDP reply");
                    m.add_answer(rr(RData::TXT(TXT::new(vec![text]))));
                }
                &mut m
            }
            RecordType::TXT => m.add_answer(rr(RData::TXT(TXT::new(vec!["hello".into()])))),
            _ => &mut m,
        };
        ResponseCode::NoError
    };
    m.metadata.response_code = code;
    m
}

/// The forged replies of `spoof…` names, each with "send from another port?".
fn forgeries(query: &Message) -> Vec<(Message, bool)> {
    let Some(q) = query.queries.first() else {
        return Vec::new();
    };
    let evil = |id: u16, qname: Name| {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.add_query(Query::query(qname.clone(), q.query_type()));
        m.add_answer(Record::from_rdata(
            qname,
            86400,
            RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
        ));
        m
    };
    let id = query.metadata.id;
    let other = name("victim.example.test.");
    vec![
        (evil(id.wrapping_add(1), q.name().clone()), false),
        (evil(id, other), false),
        (evil(id, q.name().clone()), true),
    ]
}
