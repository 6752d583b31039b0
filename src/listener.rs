//! Listening sockets: one SO_REUSEPORT socket per worker per listen address (the kernel spreads
//! connections between them), and the check that no other process holds a port already.

use std::io;
use std::net::SocketAddr;

use crate::config::ListenSpec;

/// Pending connections per listener (listen(2) backlog).
const BACKLOG: i32 = 1024;

/// Binds one listener socket for `spec`. SO_REUSEPORT lets every worker (and, with `--join`,
/// another process) bind the same address; the kernel balances connections between them.
pub fn bind(spec: &ListenSpec) -> io::Result<std::net::TcpListener> {
    let sock = bind_shared(spec.addr)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A blocking listener on `addr` with SO_REUSEPORT, as [`bind`]'s: the metrics listener, which
/// a process started with `--join` shares (and keeps once the old process has drained).
pub fn bind_shared(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // `*` binds 0.0.0.0 and [::] separately; without V6ONLY the second would collide.
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
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
