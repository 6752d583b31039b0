//! Outbound connections for plugins: a downstream MTA (smtp-forward, LMTP, Postfix's cleanup
//! socket), spamd, clamd, a milter, LDAP, IMAP. The worker opens them on its own runtime, so
//! a plugin waiting on one never blocks a core.
//!
//! [`Services::connect`](crate::Services::connect) gives a [`Stream`]: owned buffers in and
//! out, as the worker's own sockets (monoio's "rent" model).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

/// Where to connect. Host names are resolved by the plugin first (see [`crate::dns`]), so the
/// DNS policy (timeouts, errors) stays the plugin's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The future of a stream operation: the result and the buffer back.
pub type IoFuture<'a, T> = Pin<Box<dyn Future<Output = (io::Result<T>, Vec<u8>)> + 'a>>;

/// How a TLS client checks the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TlsVerify {
    /// Against the system's trusted roots and `server_name`.
    System,
    /// Against the CA certificates in this PEM file and `server_name`.
    CaFile(PathBuf),
    /// No check (opportunistic TLS, RFC 7435: encrypts, does not authenticate).
    None,
}

/// A connected byte stream.
pub trait Stream {
    /// Reads into the spare capacity of `buf`, after its contents. `Ok(0)` is EOF.
    fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize>;
    /// Writes all of `buf`.
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()>;
    /// Continues over TLS as a client (STARTTLS to a downstream, after its 220).
    fn start_tls(self: Box<Self>, server_name: String, verify: TlsVerify) -> ConnectFuture;
    /// The TLS protocol and cipher, once TLS is on.
    fn tls(&self) -> Option<crate::TlsInfo> {
        None
    }
}

/// A stream to come: the future of [`Services::connect`](crate::Services::connect) and of
/// [`Stream::start_tls`].
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn Stream>>>>>;

/// Reads until `buf` holds a complete line ending in LF after `from`; returns the end of that
/// line (just past the LF). Fails on EOF, and past `max` bytes (a peer that never ends its
/// line must not grow the buffer without bound).
pub async fn read_line(
    stream: &mut dyn Stream,
    buf: &mut Vec<u8>,
    from: usize,
    max: usize,
) -> io::Result<usize> {
    loop {
        if let Some(i) = buf
            .get(from..)
            .and_then(|b| b.iter().position(|&c| c == b'\n'))
        {
            return Ok(from + i + 1);
        }
        if buf.len() - from >= max {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let (res, b) = stream.read(std::mem::take(buf)).await;
        *buf = b;
        if res? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}
