//! Listening sockets: one SO_REUSEPORT socket per worker per listen address (the kernel spreads
//! connections between them), and the check that no other process holds a port already.

use std::io;
use std::net::SocketAddr;

use crate::config::ListenSpec;

/// Pending connections on the metrics listener (listen(2) backlog).
const METRICS_BACKLOG: u32 = 1024;

/// Binds one listener socket for `spec`, with a listen queue of `backlog` connections
/// (config `listen_backlog`; the kernel caps it at `net.core.somaxconn`). SO_REUSEPORT lets
/// every worker (and, with `--join`, another process) bind the same address; the kernel
/// balances connections between them.
pub fn bind(spec: &ListenSpec, backlog: u32) -> io::Result<std::net::TcpListener> {
    let sock = bind_with(spec.addr, backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A blocking listener on `addr` with SO_REUSEPORT, as [`bind`]'s: the metrics listener, which
/// a process started with `--join` shares (and keeps once the old process has drained).
pub fn bind_shared(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    bind_with(addr, METRICS_BACKLOG)
}

fn bind_with(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `*` binds 0.0.0.0 and [::] separately; without V6ONLY the second would collide.
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(sock.into())
}

/// A worker's listener, and a second descriptor of the same socket that stops it.
///
/// Dropping a monoio listener does not close its socket at once: the pending accept (an
/// io_uring operation holding a reference to the socket) is cancelled and the close is queued
/// on the ring, and with `DEFER_TASKRUN` (src/runtime.rs) both run only when the worker next
/// waits on its ring, which a stopping worker may never do. Until then the socket stays in the
/// port's SO_REUSEPORT group and the kernel still routes new connections to it, to be reset
/// when the process is gone (an upgrade with `--join` would lose them). [`Listening::stop`]
/// takes the socket out of the group synchronously instead.
pub struct Listening {
    pub listener: monoio::net::TcpListener,
    pub stopper: std::net::TcpListener,
}

impl Listening {
    /// Stops listening now: `shutdown(SHUT_RD)` on a listening socket moves it to CLOSE (Linux
    /// `inet_shutdown`), which unhashes it from the port, whatever still holds the socket;
    /// a pending accept then ends with an error.
    pub fn stop(&self) {
        let _ = socket2::SockRef::from(&self.stopper).shutdown(std::net::Shutdown::Read);
    }
}

/// Fails if another process already listens on `addr`. monoio's own bind enables
/// SO_REUSEPORT, so a second daemon would otherwise silently share the port.
pub fn check_free(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?; // TIME_WAIT leftovers are no conflict
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{run_on, Driver};

    /// (connections waiting in `l`'s accept queue, its backlog), from TCP_INFO: on a
    /// listening socket Linux reports them in `tcpi_unacked` and `tcpi_sacked`.
    fn queue(l: &std::net::TcpListener) -> (u32, u32) {
        use std::os::fd::AsRawFd;
        // SAFETY: tcp_info is plain data (integers only): all zeroes is a valid value.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `info` and
        // updates `len`; the fd is `l`'s, open for the whole call.
        let r = unsafe {
            libc::getsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "TCP_INFO: {}", io::Error::last_os_error());
        (info.tcpi_unacked, info.tcpi_sacked)
    }

    #[test]
    fn the_listen_queue_is_listen_backlog_long() {
        let spec = ListenSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            proxy: false,
            tls: false,
        };
        let l = bind(&spec, 7).unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(queue(&l), (0, 7), "backlog 7, nobody waiting");
        let _clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        assert_eq!(queue(&l).0, 3, "three waiting to be accepted");
        let default = bind(&spec, crate::config::DEFAULT_LISTEN_BACKLOG).unwrap();
        // The kernel caps a backlog at net.core.somaxconn.
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(u32::MAX);
        assert_eq!(queue(&default).1, 1024.min(somaxconn));
    }

    /// The upgrade with `--join` in small: two sockets share a port; the first, with an accept
    /// pending on its worker's ring, is stopped and dropped while its worker does not wait on
    /// the ring again. Every connection made afterwards must reach the second socket.
    #[test]
    fn a_stopped_listener_leaves_the_port_to_the_other_at_once() {
        let first = bind_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = bind_shared(addr).unwrap();
        second.set_nonblocking(true).unwrap();
        first.set_nonblocking(true).unwrap();
        let accepted = run_on(Driver::Auto, || async move {
            let listening = Listening {
                stopper: first.try_clone().unwrap(),
                listener: monoio::net::TcpListener::from_std(first).unwrap(),
            };
            monoio::select! {
                biased;
                _ = listening.listener.accept() => panic!("nobody connected yet"),
                _ = std::future::ready(()) => {}
            }
            listening.stop();
            drop(listening);
            // Still on the worker, which has not waited on its ring since.
            const CONNECTIONS: usize = 20;
            let clients: Vec<_> = (0..CONNECTIONS)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let mut accepted = 0;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while accepted < CONNECTIONS && std::time::Instant::now() < deadline {
                match second.accept() {
                    Ok(_) => accepted += 1,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
            drop(clients);
            accepted
        })
        .unwrap();
        assert_eq!(
            accepted, 20,
            "connections were routed to the stopped listener"
        );
    }
}
