//! From an accepted socket to a session: the PROXY header on `proxy` listeners (the client
//! address comes from the load balancer), the connection count per client IP, and the
//! handshake on implicit TLS listeners (RFC 8314), before the banner.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsmtpd_plugin_api::{Connection, Level};

use crate::config::ListenSpec;
use crate::peers::{PeerCounts, PeerGuard};
use crate::proto::proxy;
use crate::session::{End, Env, Session};
use crate::shutdown::Shutdown;
use crate::tls::TlsStream;
use crate::transport::Conn;

/// How long a load balancer may take to send its PROXY header: it sends it at once.
const PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest PROXY header accepted (v2 header plus a generous TLV area).
const PROXY_MAX: usize = 16 + 1536;

/// Serves connection `id` from `peer`, accepted on `spec`, with `env`.
pub async fn serve(
    env: Rc<Env>,
    id: u64,
    peers: &Arc<PeerCounts>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    spec: &ListenSpec,
) {
    // The setup (PROXY header, TLS handshake) runs boxed and is freed before the session
    // starts: its state is not kept for the session's life (an idle session is this future).
    let setup = Box::pin(setup(&env, id, peers, stream, peer, spec));
    let Some((io, conn, early, counted)) = setup.await else {
        return;
    };
    let session = session(env, io, conn, early);
    session.await;
    drop(counted);
}

/// The session's future, made outside `serve` so that `serve` keeps no place for the
/// `Session` value it is made from (only for the future that owns it).
fn session(env: Rc<Env>, io: Conn, conn: Connection, early: Vec<u8>) -> impl Future<Output = End> {
    Session::new(env, io, conn, &early).run()
}

/// From an accepted socket to what a session starts with: the transport, the connection, the
/// bytes read after a PROXY header, the count of this client's connections. `None`: closed.
async fn setup(
    env: &Rc<Env>,
    id: u64,
    peers: &Arc<PeerCounts>,
    mut stream: monoio::net::TcpStream,
    peer: SocketAddr,
    spec: &ListenSpec,
) -> Option<(Conn, Connection, Vec<u8>, PeerGuard)> {
    let local = stream.local_addr().unwrap_or(spec.addr);
    let _ = stream.set_nodelay(true);
    let (remote, local, early) = if spec.proxy {
        match read_proxy(&mut stream, &env.shutdown).await {
            Ok((hdr, early)) => (
                hdr.source.unwrap_or(peer),
                hdr.destination.unwrap_or(local),
                early,
            ),
            Err(why) => {
                crate::log!(
                    Level::Warn,
                    id,
                    "core",
                    "PROXY header from {peer} refused: {why}"
                );
                return None; // close without a word: the peer is not a load balancer we know
            }
        }
    } else {
        (peer, local, Vec::new())
    };
    let mut conn = Connection::new(id, remote, local);
    let (counted, concurrent) = peers.enter(remote.ip());
    conn.concurrent = concurrent;
    let (io, early) = if spec.tls {
        // Implicit TLS (RFC 8314): the handshake comes before the banner.
        let Some(setup) = env.tls.clone() else {
            crate::log!(
                Level::Error,
                id,
                "core",
                "{} is a tls listener, but TLS is not configured",
                spec.addr
            );
            return None;
        };
        let handshake = TlsStream::accept(stream, setup.config, early);
        match monoio::time::timeout(
            crate::tls::handshake_timeout(env.settings.timeout),
            handshake,
        )
        .await
        {
            Ok(Ok(tls)) => {
                conn.tls = Some(tls.info());
                (Conn::Tls(Box::new(tls)), Vec::new())
            }
            Ok(Err(e)) => {
                crate::log!(
                    Level::Info,
                    id,
                    "core",
                    "TLS handshake with {remote} failed: {e}"
                );
                return None;
            }
            Err(_) => {
                crate::log!(
                    Level::Info,
                    id,
                    "core",
                    "TLS handshake with {remote} timed out"
                );
                return None;
            }
        }
    } else {
        (Conn::Plain(stream), early)
    };
    Some((io, conn, early, counted))
}

/// Reads and parses a PROXY v1/v2 header; returns it and any bytes that followed it.
async fn read_proxy(
    stream: &mut monoio::net::TcpStream,
    shutdown: &Shutdown,
) -> Result<(proxy::ProxyHeader, Vec<u8>), String> {
    use crate::transport::Transport;
    let mut buf = Vec::with_capacity(PROXY_MAX);
    let deadline = Instant::now() + PROXY_TIMEOUT;
    loop {
        match proxy::parse(&buf) {
            Ok(Some((hdr, used))) => return Ok((hdr, buf[used..].to_vec())),
            Ok(None) if buf.len() >= PROXY_MAX => return Err("header too long".into()),
            Ok(None) => {}
            Err(e) => return Err(e.0.to_string()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let read = monoio::time::timeout(left, stream.read(buf));
        // A peer that never sends its header must not hold up a shutdown.
        let result = monoio::select! {
            r = read => r,
            _ = shutdown.wait() => return Err("server shutting down".into()),
        };
        match result {
            Ok((Ok(0), _)) => return Err("closed before the header".into()),
            Ok((Ok(_), b)) => buf = b,
            Ok((Err(e), _)) => return Err(e.to_string()),
            Err(_) => return Err("timed out".into()),
        }
    }
}
