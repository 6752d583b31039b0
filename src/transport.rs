//! The byte stream a session speaks over: a monoio TCP or TLS stream on the workers, or
//! stdin/stdout in `--stdio` mode (under tcpserver or inetd, one process per connection like
//! qmail-smtpd).
//!
//! Buffers are owned and passed in and out (monoio's "rent" model): a read owns its buffer
//! until it completes. An idle session therefore does not read: it waits with
//! [`Transport::wait_readable`], which needs no buffer, and reads once bytes are there.

use std::future::Future;
use std::io;
use std::rc::Rc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::tls::TlsStream;

pub trait Transport {
    /// True if [`Transport::start_tls`] can work here (a plain TCP connection).
    fn can_start_tls(&self) -> bool {
        false
    }

    /// Runs the TLS handshake on this connection (STARTTLS, RFC 3207) and continues over TLS.
    fn start_tls(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> impl Future<Output = io::Result<ringsmtpd_plugin_api::TlsInfo>> {
        let _ = config;
        async { Err(io::ErrorKind::Unsupported.into()) }
    }

    /// A check, without consuming or waiting, for bytes the client sent that are not read
    /// yet (for `earlytalker`). `None` where the transport cannot tell.
    fn input_probe(&self) -> Option<Rc<dyn Fn() -> bool>> {
        None
    }

    /// Waits until a read would not wait: bytes, EOF or an error are there. It holds no buffer
    /// while it waits. It may wake early (the read that follows then waits as usual); where the
    /// transport cannot tell (TLS may hold decrypted bytes, stdio polls in `read`), it returns
    /// at once.
    fn wait_readable(&mut self) -> impl Future<Output = ()> {
        std::future::ready(())
    }

    /// Reads what is there now into the spare capacity of `buf`, without waiting (after
    /// [`Transport::wait_readable`]: one system call instead of a read submitted to the ring
    /// and a second wake-up). `None`: nothing there, or the transport cannot tell; then
    /// [`Transport::read`].
    fn read_now(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        let _ = buf;
        None
    }

    /// Reads into the spare capacity of `buf`, after its current contents. `Ok(0)` is EOF.
    fn read(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<usize>, Vec<u8>)>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: Vec<u8>) -> impl Future<Output = (io::Result<()>, Vec<u8>)>;
}

impl Transport for monoio::net::TcpStream {
    fn input_probe(&self) -> Option<Rc<dyn Fn() -> bool>> {
        use std::os::fd::AsRawFd;
        let fd = self.as_raw_fd();
        Some(Rc::new(move || {
            let mut byte = 0u8;
            // SAFETY: `recv` writes at most 1 byte into `byte`, which lives across the call.
            // MSG_PEEK leaves the byte in the socket, MSG_DONTWAIT never blocks. If the fd was
            // closed meanwhile, the call fails (EBADF) or peeks another socket: a wrong answer
            // at worst, never memory unsafety.
            let n = unsafe {
                libc::recv(
                    fd,
                    (&mut byte as *mut u8).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            n > 0
        }))
    }

    async fn wait_readable(&mut self) {
        // io_uring: one POLL_ADD. epoll: `relaxed = false` checks with poll(2) first, because
        // monoio's readiness flag stays set after a read that did not drain the socket; a
        // stale flag would return at once and the read would then wait holding its buffer.
        // An error is left for the read to report.
        let _ = monoio::net::TcpStream::readable(self, false).await;
    }

    fn read_now(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        use std::os::fd::AsRawFd;
        let spare = buf.spare_capacity_mut();
        // SAFETY: `recv` writes at most `spare.len()` bytes into the vector's spare capacity,
        // which is allocated and not aliased while `buf` is borrowed mutably here.
        // MSG_DONTWAIT never blocks. Only the `n` bytes the kernel wrote are then declared
        // initialised (`set_len`), and `n <= spare.len()`. Bypassing monoio is sound for both
        // drivers: on epoll its readiness flag stays set, so its next read tries the socket
        // first and clears the flag on EAGAIN; `wait_readable` checks with poll(2) anyway.
        let n = unsafe {
            libc::recv(
                self.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => None,
                _ => Some(Err(e)),
            };
        }
        let n = n as usize;
        // SAFETY: see above: the kernel initialised `n <= spare.len()` bytes after `len`.
        unsafe { buf.set_len(buf.len() + n) };
        Some(Ok(n))
    }

    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let len = buf.len();
        let (res, slice) = AsyncReadRent::read(self, buf.slice_mut(len..)).await;
        (res, slice.into_inner())
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, buf) = AsyncWriteRentExt::write_all(self, buf).await;
        (res.map(|_| ()), buf)
    }
}

/// stdin/stdout of a process started per connection. Reads block the thread, which is the
/// whole point of this mode: one process, one client. The idle timeout is enforced with
/// `poll(2)` before each read, since a blocked read cannot be cancelled.
pub struct Stdio {
    pub timeout: std::time::Duration,
}

impl Transport for Stdio {
    fn input_probe(&self) -> Option<Rc<dyn Fn() -> bool>> {
        Some(Rc::new(|| {
            let mut fds = libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack, count 1, timeout 0 (never blocks).
            unsafe { libc::poll(&mut fds, 1, 0) > 0 && fds.revents & libc::POLLIN != 0 }
        }))
    }

    async fn read(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut fds = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is one valid, initialised pollfd that lives across the call, and the
        // count passed is 1.
        let ready = unsafe { libc::poll(&mut fds, 1, ms) };
        if ready == 0 {
            return (Err(io::ErrorKind::TimedOut.into()), buf);
        }
        if ready < 0 {
            return (Err(io::Error::last_os_error()), buf);
        }
        use std::io::Read;
        let len = buf.len();
        let room = (buf.capacity() - len).max(4096);
        buf.resize(len + room, 0);
        let res = io::stdin().lock().read(&mut buf[len..]);
        buf.truncate(len + *res.as_ref().unwrap_or(&0));
        (res, buf)
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        use std::io::Write;
        let mut out = io::stdout().lock();
        let res = out.write_all(&buf).and_then(|_| out.flush());
        (res, buf)
    }
}

impl Transport for TlsStream {
    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.read_plain(buf).await
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.write_plain(buf).await
    }
}

/// A client connection on a worker: plain TCP, or TLS after STARTTLS or on a `tls` listener.
pub enum Conn {
    Plain(monoio::net::TcpStream),
    Tls(Box<TlsStream>),
    /// Only while a handshake is running, or after one failed.
    Broken,
}

impl Transport for Conn {
    fn input_probe(&self) -> Option<Rc<dyn Fn() -> bool>> {
        match self {
            Conn::Plain(s) => s.input_probe(),
            Conn::Tls(_) | Conn::Broken => None,
        }
    }

    fn can_start_tls(&self) -> bool {
        matches!(self, Conn::Plain(_))
    }

    async fn start_tls(
        &mut self,
        config: std::sync::Arc<rustls::ServerConfig>,
    ) -> io::Result<ringsmtpd_plugin_api::TlsInfo> {
        let Conn::Plain(tcp) = std::mem::replace(self, Conn::Broken) else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        let tls = TlsStream::accept(tcp, config, Vec::new()).await?;
        let info = tls.info();
        *self = Conn::Tls(Box::new(tls));
        Ok(info)
    }

    async fn wait_readable(&mut self) {
        match self {
            Conn::Plain(s) => Transport::wait_readable(s).await,
            Conn::Tls(_) | Conn::Broken => {}
        }
    }

    fn read_now(&mut self, buf: &mut Vec<u8>) -> Option<io::Result<usize>> {
        match self {
            Conn::Plain(s) => s.read_now(buf),
            Conn::Tls(_) | Conn::Broken => None,
        }
    }

    async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Conn::Plain(s) => Transport::read(s, buf).await,
            Conn::Tls(s) => Transport::read(&mut **s, buf).await,
            Conn::Broken => (Err(io::ErrorKind::NotConnected.into()), buf),
        }
    }

    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Conn::Plain(s) => Transport::write_all(s, buf).await,
            Conn::Tls(s) => Transport::write_all(&mut **s, buf).await,
            Conn::Broken => (Err(io::ErrorKind::NotConnected.into()), buf),
        }
    }
}
