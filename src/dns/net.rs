//! The I/O pieces of the resolver: UDP sockets with random source ports, random query IDs,
//! the wake-up flag of the sender task, a join for a batch of sends, and the TCP exchange.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use hickory_proto::op::Message;
use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use ringsmtpd_plugin_api::dns::DnsError;

/// Receive buffer per socket: room for any UDP reply to our 1232-byte EDNS payload and for
/// servers that ignore it (a longer datagram is cut, fails to parse, and is dropped).
pub const RECV_BUF: usize = 4096;
/// SO_RCVBUF asked for each socket: a burst of thousands of answers (a batch of DNSBL
/// lookups) must not overflow the kernel's default ~200 KB queue.
const SOCKET_RCVBUF: usize = 1 << 20;

/// One UDP socket of the pool. Bound to port 0, so the kernel picks a random ephemeral port.
pub struct Sock {
    /// Unique per resolver: part of the pending-table key, so an ID reused on another socket
    /// is another entry.
    pub serial: u32,
    pub udp: monoio::net::udp::UdpSocket,
    /// Queries awaiting an answer on this socket.
    pub pending: Cell<usize>,
    /// Queries sent from this socket so far (for rotation).
    pub sent: Cell<u32>,
    /// Out of the pool: takes no new queries, closes once `pending` is 0.
    pub retired: Cell<bool>,
    /// Ends the receive task.
    pub stop: Notify,
}

impl Sock {
    /// A new socket of the family of `upstream`.
    pub fn bind(serial: u32, upstream: SocketAddr) -> io::Result<Sock> {
        use socket2::{Domain, Protocol, Socket, Type};
        let (domain, local) = match upstream {
            SocketAddr::V4(_) => (
                Domain::IPV4,
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0),
            ),
            SocketAddr::V6(_) => (
                Domain::IPV6,
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
            ),
        };
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
        if upstream.is_ipv6() {
            s.set_only_v6(true)?;
        }
        let _ = s.set_recv_buffer_size(SOCKET_RCVBUF); // best effort: capped by rmem_max
        s.set_nonblocking(true)?;
        s.bind(&local.into())?;
        let udp = monoio::net::udp::UdpSocket::from_std(s.into())?;
        Ok(Sock {
            serial,
            udp,
            pending: Cell::new(0),
            sent: Cell::new(0),
            retired: Cell::new(false),
            stop: Notify::default(),
        })
    }

    /// One query fewer pending; a retired socket with none left stops its receive task.
    pub fn done(&self) {
        self.pending.set(self.pending.get().saturating_sub(1));
        if self.retired.get() && self.pending.get() == 0 {
            self.stop.close();
        }
    }
}

/// A wake-up flag for one task: `notify` sets it and wakes the task, `wait` resolves once it
/// is set (and clears it); `close` makes every later `wait` resolve with `true`.
#[derive(Default)]
pub struct Notify {
    flag: Cell<bool>,
    closed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub fn notify(&self) {
        if !self.flag.replace(true) {
            if let Some(w) = self.waker.borrow_mut().take() {
                w.wake();
            }
        }
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.flag.set(false);
        self.notify();
    }

    /// Resolves to `true` once closed, `false` when notified.
    pub fn wait(&self) -> impl Future<Output = bool> + '_ {
        std::future::poll_fn(move |cx| {
            if self.closed.get() {
                return Poll::Ready(true);
            }
            if self.flag.replace(false) {
                return Poll::Ready(false);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Unpredictable 16-bit numbers (query IDs, socket choice) straight from the kernel's CSPRNG,
/// fetched 512 bytes at a time: one getrandom(2) call per 256 IDs. An off-path attacker must
/// guess the ID (16 bits) and the source port of a live query; a non-cryptographic generator
/// would let one who sees a few IDs predict the next.
pub struct Random {
    buf: [u8; 512],
    pos: usize,
    /// Fallback state should getrandom ever fail (it does not on Linux >= 3.17).
    fallback: u64,
}

impl Random {
    pub fn new() -> Random {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64) << 32;
        Random {
            buf: [0; 512],
            pos: 512,
            fallback: seed | 1,
        }
    }

    pub fn u16(&mut self) -> u16 {
        if self.pos + 2 > self.buf.len() {
            if getrandom::getrandom(&mut self.buf).is_err() {
                for chunk in self.buf.chunks_mut(8) {
                    // SplitMix64: only reached if the kernel refuses random bytes.
                    self.fallback = self.fallback.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut z = self.fallback;
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                    z ^= z >> 31;
                    chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
                }
            }
            self.pos = 0;
        }
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        v
    }
}

/// Polls every future of `futs` together (each is polled once before any waits, so a batch
/// of sends becomes a batch of io_uring submissions) and returns their outputs in order.
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx: &mut Context<'_>| {
        let mut done = true;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The largest DNS message (the TCP length prefix is 16 bits, RFC 1035 §4.2.2).
const MAX_TCP_MESSAGE: usize = 65_535;
/// The smallest: a header.
const DNS_HEADER: usize = 12;

/// Sends `query` to `upstream` over TCP with the 2-byte length prefix of RFC 1035 §4.2.2
/// (RFC 7766) and reads one reply, all before `deadline`. The caller checks that the reply
/// answers its question.
pub async fn tcp_exchange(
    upstream: SocketAddr,
    query: &[u8],
    deadline: Instant,
) -> Result<Message, DnsError> {
    let len = u16::try_from(query.len()).map_err(|_| DnsError::BadName)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    let exchange = async move {
        let mut stream = monoio::net::TcpStream::connect(upstream)
            .await
            .map_err(|_| DnsError::Refused)?;
        let (r, _) = stream.write_all(out).await;
        r.map_err(|_| DnsError::Refused)?;
        let (r, head) = stream.read_exact(vec![0u8; 2].into_boxed_slice()).await;
        r.map_err(|_| DnsError::Refused)?;
        let n = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if !(DNS_HEADER..=MAX_TCP_MESSAGE).contains(&n) {
            return Err(DnsError::Refused);
        }
        let (r, body) = stream.read_exact(vec![0u8; n].into_boxed_slice()).await;
        r.map_err(|_| DnsError::Refused)?;
        Message::from_vec(&body).map_err(|_| DnsError::Refused)
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, exchange).await {
        Ok(r) => r,
        Err(_) => Err(DnsError::Timeout),
    }
}
