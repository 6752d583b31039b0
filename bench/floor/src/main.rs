//! floor: an SMTP null responder that does the least work per message, to measure how cheap
//! a server can be under Postfix's smtp-source on this machine (bench/io_uring_cycles.md).
//!
//!     floor --listen 127.0.0.1:2525 [--backend epoll|uring] [--threads N]
//!           [--placement off|pin|steer] [uring feature switches, see `Uring`]
//!
//! One thread per CPU (or `--threads`), each with its own SO_REUSEPORT listener; `pin` binds
//! thread i to the i-th allowed CPU, `steer` also sets SO_INCOMING_CPU on its listener (as
//! ringsmtpd's `cpu_affinity`). Prints `listening ADDR` once every listener is bound (so
//! `--listen 127.0.0.1:0` can be used), then serves until killed. Not a server: no timeouts,
//! no limits but the buffers' bounds; a client that lets its replies fill the socket's send
//! buffer is dropped.

mod bufring;
mod epoll;
mod smtp;
mod uring;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::exit;

use socket2::{Domain, Socket, Type};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Placement {
    Off,
    Pin,
    Steer,
}

/// The io_uring back end's features, each with a switch to turn it off.
#[derive(Clone, Copy, Debug)]
pub struct Uring {
    /// One accept SQE serves every connection (`--accept single`: one per connection).
    pub multishot_accept: bool,
    /// How connections are read (`--recv multi|single|poll-first`).
    pub recv: Recv,
    /// Successful sends post no completion (`--no-skip`).
    pub skip_success: bool,
    /// Connections are direct descriptors in the ring's file table (`--no-fixed`: plain fds).
    pub fixed_files: bool,
    /// SINGLE_ISSUER | DEFER_TASKRUN ring setup (`--no-defer`: neither).
    pub defer_taskrun: bool,
    /// io_uring_enter through a registered ring descriptor (`--no-ring-fd`).
    pub ring_fd: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Recv {
    /// One multishot recv per connection, armed until the connection ends.
    Multi,
    /// A recv per read, armed again after each.
    Single,
    /// As `Single`, with IORING_RECVSEND_POLL_FIRST: arm the poll without trying the read
    /// first (the client is waiting for our reply, so the socket is empty when we ask).
    PollFirst,
}

struct Options {
    listen: SocketAddr,
    threads: Option<usize>,
    uring: Option<Uring>,
    placement: Placement,
}

const USAGE: &str = "usage: floor --listen ADDR [--backend epoll|uring] [--threads N] \
[--placement off|pin|steer] [--accept multi|single] [--recv multi|single|poll-first] \
[--no-skip] [--no-fixed] [--no-defer] [--no-ring-fd]";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut listen = None;
    let mut threads = None;
    let mut backend = "uring".to_string();
    let mut placement = Placement::Steer;
    let mut u = Uring {
        multishot_accept: true,
        recv: Recv::Multi,
        skip_success: true,
        fixed_files: true,
        defer_taskrun: true,
        ring_fd: true,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--listen" => {
                let v = value()?;
                listen = Some(v.parse().map_err(|e| format!("--listen {v}: {e}"))?);
            }
            "--threads" => {
                let v = value()?;
                threads = Some(v.parse().ok().filter(|&n| n > 0).ok_or("--threads: a count")?);
            }
            "--backend" => backend = value()?,
            "--placement" => {
                placement = match value()?.as_str() {
                    "off" => Placement::Off,
                    "pin" => Placement::Pin,
                    "steer" => Placement::Steer,
                    v => return Err(format!("--placement {v}")),
                }
            }
            "--accept" => {
                u.multishot_accept = match value()?.as_str() {
                    "multi" => true,
                    "single" => false,
                    v => return Err(format!("--accept {v}")),
                }
            }
            "--recv" => {
                u.recv = match value()?.as_str() {
                    "multi" => Recv::Multi,
                    "single" => Recv::Single,
                    "poll-first" => Recv::PollFirst,
                    v => return Err(format!("--recv {v}")),
                }
            }
            "--no-skip" => u.skip_success = false,
            "--no-fixed" => u.fixed_files = false,
            "--no-defer" => u.defer_taskrun = false,
            "--no-ring-fd" => u.ring_fd = false,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let uring = match backend.as_str() {
        "uring" => Some(u),
        "epoll" => None,
        v => return Err(format!("--backend {v}")),
    };
    let listen = listen.ok_or("--listen is required")?;
    Ok(Options { listen, threads, uring, placement })
}

/// A listening socket on `addr` in the port's SO_REUSEPORT group, steered to `cpu`.
fn listener(addr: SocketAddr, cpu: Option<usize>) -> io::Result<TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if let Some(cpu) = cpu {
        sock.set_cpu_affinity(cpu)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(4096)?;
    Ok(sock.into())
}

fn main() {
    let o = parse(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("floor: {e}\n{USAGE}");
        exit(2)
    });
    // The CPUs this process may run on (sched_getaffinity), ascending, as ringsmtpd's.
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_else(|| {
            eprintln!("floor: sched_getaffinity failed");
            exit(1)
        })
        .into_iter()
        .map(|c| c.id)
        .collect();
    let threads = o.threads.unwrap_or(cpus.len().max(1));
    // As ringsmtpd: nothing is pinned when there are fewer CPUs than threads.
    let placed = o.placement != Placement::Off && cpus.len() >= threads;
    let cpu_of = |i: usize| placed.then(|| cpus[i]);
    let mut addr = o.listen;
    let mut listeners = Vec::new();
    for i in 0..threads {
        let steer = cpu_of(i).filter(|_| o.placement == Placement::Steer);
        let l = listener(addr, steer).unwrap_or_else(|e| {
            eprintln!("floor: listen on {addr}: {e}");
            exit(1)
        });
        addr = l.local_addr().expect("a bound socket has an address"); // port 0: the one bound
        listeners.push(l);
    }
    println!("listening {addr}");
    let _ = io::stdout().flush();
    let workers: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let cpu = cpu_of(i);
            let uring = o.uring;
            std::thread::spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        eprintln!("floor: cannot pin worker {i} to CPU {cpu}");
                        exit(1)
                    }
                }
                let r = match uring {
                    Some(features) => uring::serve(l, features),
                    None => epoll::serve(l),
                };
                if let Err(e) = r {
                    eprintln!("floor: worker {i}: {e}");
                    exit(1)
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
