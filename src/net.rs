//! Outbound connections for plugins: the worker's side of `ringsmtpd_plugin_api::net`.
//! Connections run on the worker's runtime (io_uring or epoll), so a plugin waiting on a
//! downstream MTA or a scanner never blocks its core.
//!
//! Client TLS ([`Stream::start_tls`], STARTTLS to a downstream MTA, RFC 3207) runs rustls'
//! `ClientConnection` over the plain stream with owned buffers, as the server side in
//! `tls.rs` does. The certificate check follows [`TlsVerify`]:
//!
//! - `System`: the OS trust store (`/etc/ssl/certs`, through rustls-native-certs; Debian's
//!   `ca-certificates` package), and the name given.
//! - `CaFile(path)`: only the CA certificates in that PEM file, and the name given.
//! - `None`: no check at all (opportunistic TLS, RFC 7435 §1.3: protects against passive
//!   eavesdropping only). The handshake signatures are still verified, so the session keys
//!   belong to whoever holds the certificate's key, whoever that is.
//!
//! Trust stores are read off the worker (a short-lived thread; they are files) and kept for
//! [`ROOTS_TTL`], so a changed CA file is picked up within minutes without a restart, and
//! no handshake waits on the disk.

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
use ringsmtpd_plugin_api::TlsInfo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// Opens `to` within `timeout`.
pub fn connect(to: &Endpoint, timeout: Duration) -> ConnectFuture {
    let to = to.clone();
    Box::pin(async move {
        let open = async {
            Ok::<Box<dyn Stream>, io::Error>(match &to {
                Endpoint::Tcp(addr) => {
                    let s = monoio::net::TcpStream::connect_addr(*addr).await?;
                    let _ = s.set_nodelay(true);
                    Box::new(Plain(s))
                }
                Endpoint::Unix(path) => {
                    Box::new(Plain(monoio::net::UnixStream::connect(path).await?))
                }
            })
        };
        match monoio::time::timeout(timeout, open).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {to} timed out"),
            )),
        }
    })
}

/// A plain TCP or Unix stream.
pub struct Plain<S>(pub S);

impl<S: AsyncReadRent + monoio::io::AsyncWriteRent + 'static> Stream for Plain<S> {
    fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(async move {
            let len = buf.len();
            let (res, slice) = self.0.read(buf.slice_mut(len..)).await;
            (res, slice.into_inner())
        })
    }

    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(async move {
            let (res, buf) = AsyncWriteRentExt::write_all(&mut self.0, buf).await;
            (res.map(|_| ()), buf)
        })
    }

    fn start_tls(
        self: Box<Self>,
        server_name: String,
        verify: TlsVerify,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Box<dyn Stream>>>>> {
        Box::pin(async move {
            let config = client_config(&verify).await?;
            let tls = TlsClient::connect(self.0, config, &server_name).await?;
            Ok(Box::new(tls) as Box<dyn Stream>)
        })
    }
}

/// Largest TLS record plus header: the most one `read_tls` needs at once.
const RAW_READ: usize = 16 * 1024 + 512;

/// How long a trust store read from disk is used before it is read again.
pub const ROOTS_TTL: Duration = Duration::from_secs(300);

/// Client configs by verification mode, with when they were built.
type ConfigCache = Mutex<Vec<(TlsVerify, Instant, Arc<ClientConfig>)>>;

fn cache() -> &'static ConfigCache {
    static CACHE: std::sync::OnceLock<ConfigCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

/// The rustls client config for `verify`: from the cache, or built (on a helper thread when it
/// reads files, so the worker never blocks on the disk).
async fn client_config(verify: &TlsVerify) -> io::Result<Arc<ClientConfig>> {
    if let Ok(c) = cache().lock() {
        if let Some((_, at, config)) = c.iter().find(|(v, _, _)| v == verify) {
            if at.elapsed() < ROOTS_TTL || *verify == TlsVerify::None {
                return Ok(config.clone());
            }
        }
    }
    let config = match verify {
        TlsVerify::None => build_config(verify)?,
        _ => {
            let (tx, rx) = futures_channel::oneshot::channel();
            let v = verify.clone();
            std::thread::Builder::new()
                .name("tls-roots".into())
                .spawn(move || {
                    let _ = tx.send(build_config(&v));
                })?;
            rx.await
                .map_err(|_| io::Error::other("loading the TLS trust store failed"))??
        }
    };
    let config = Arc::new(config);
    if let Ok(mut c) = cache().lock() {
        c.retain(|(v, _, _)| v != verify);
        c.push((verify.clone(), Instant::now(), config.clone()));
    }
    Ok(config)
}

/// Builds a client config; reads the trust store for `System` and `CaFile`.
pub fn build_config(verify: &TlsVerify) -> io::Result<ClientConfig> {
    let provider = Arc::new(provider::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let builder = match verify {
        TlsVerify::None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider))),
        TlsVerify::System => {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string());
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no trusted root certificates on this system ({why})"),
                ));
            }
            builder.with_root_certificates(roots)
        }
        TlsVerify::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let certs: Result<Vec<CertificateDer<'static>>, _> =
                rustls_pemfile::certs(&mut pem.as_slice()).collect();
            let certs = certs.map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?;
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: no CA certificate in the file", path.display()),
                ));
            }
            builder.with_root_certificates(roots)
        }
    };
    Ok(builder.with_no_client_auth())
}

/// Accepts any certificate (opportunistic TLS, RFC 7435), but still checks that the peer
/// signed the handshake with the key of the certificate it sent.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client stream over a plain stream, with owned buffers.
pub struct TlsClient<S> {
    io: S,
    tls: ClientConnection,
    /// TLS bytes read from the socket, not yet given to rustls (from `raw_pos`).
    raw_in: Vec<u8>,
    raw_pos: usize,
    /// TLS bytes rustls produced, to be written.
    raw_out: Vec<u8>,
}

impl<S: AsyncReadRent + AsyncWriteRent> TlsClient<S> {
    /// Runs the client handshake for `server_name` (a host name or an IP address). The caller
    /// bounds it with a timeout.
    pub async fn connect(
        io: S,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsClient<S>> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{server_name}' is not a valid TLS server name"),
            )
        })?;
        let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut s = TlsClient {
            io,
            tls,
            raw_in: Vec::with_capacity(RAW_READ),
            raw_pos: 0,
            raw_out: Vec::new(),
        };
        while s.tls.is_handshaking() {
            s.send_pending().await?;
            if !s.tls.is_handshaking() {
                break;
            }
            if s.receive().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        s.send_pending().await?;
        Ok(s)
    }

    /// What was negotiated.
    pub fn info(&self) -> TlsInfo {
        let protocol = match self.tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => "TLS".to_string(),
        };
        let cipher = self
            .tls
            .negotiated_cipher_suite()
            .map_or_else(String::new, |s| format!("{:?}", s.suite()));
        TlsInfo { protocol, cipher }
    }

    /// Writes every TLS byte rustls has queued.
    async fn send_pending(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.raw_out)?;
        }
        if self.raw_out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.raw_out);
        let (res, mut out) = AsyncWriteRentExt::write_all(&mut self.io, out).await;
        out.clear();
        self.raw_out = out;
        res.map(|_| ())
    }

    /// Reads TLS bytes from the socket and feeds rustls. Returns the bytes read (0: EOF).
    async fn receive(&mut self) -> io::Result<usize> {
        if self.raw_pos >= self.raw_in.len() {
            self.raw_in.clear();
            self.raw_pos = 0;
        }
        if self.raw_pos == 0 && self.raw_in.len() < RAW_READ {
            let mut buf = std::mem::take(&mut self.raw_in);
            buf.reserve(RAW_READ - buf.len());
            let len = buf.len();
            let (res, slice) = self.io.read(buf.slice_mut(len..)).await;
            self.raw_in = slice.into_inner();
            if res? == 0 {
                return Ok(0);
            }
        }
        let n = self.raw_in.len() - self.raw_pos;
        self.feed()?;
        Ok(n)
    }

    /// Gives buffered TLS bytes to rustls and processes them.
    fn feed(&mut self) -> io::Result<()> {
        while self.raw_pos < self.raw_in.len() {
            let mut rd = &self.raw_in[self.raw_pos..];
            let before = rd.len();
            let n = self.tls.read_tls(&mut rd)?;
            self.raw_pos += before - rd.len();
            if let Err(e) = self.tls.process_new_packets() {
                // Queue the alert for the peer; the connection is unusable from here.
                let _ = self.tls.write_tls(&mut self.raw_out);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn read_plain(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            let len = buf.len();
            let room = (buf.capacity() - len).max(1024);
            buf.resize(len + room, 0);
            let got = self.tls.reader().read(&mut buf[len..]);
            match got {
                Ok(n) => {
                    buf.truncate(len + n);
                    return (Ok(n), buf); // 0: the server sent close_notify
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(len),
                Err(e) => {
                    buf.truncate(len);
                    return (Err(e), buf);
                }
            }
            // Key updates and alerts may need an answer before more data comes.
            if let Err(e) = self.send_pending().await {
                return (Err(e), buf);
            }
            match self.receive().await {
                Ok(0) => return (Ok(0), buf),
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }
}

impl<S: AsyncReadRent + AsyncWriteRent + 'static> Stream for TlsClient<S> {
    fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(self.read_plain(buf))
    }

    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.tls.writer().write_all(&buf) {
                return (Err(e), buf);
            }
            let res = self.send_pending().await;
            (res, buf)
        })
    }

    fn start_tls(
        self: Box<Self>,
        _server_name: String,
        _verify: TlsVerify,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Box<dyn Stream>>>>> {
        Box::pin(std::future::ready(Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TLS is already on",
        ))))
    }

    fn tls(&self) -> Option<TlsInfo> {
        Some(self.info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A CA and a server certificate for `host` in a fresh directory.
    fn certs(tag: &str, host: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ringsmtpd-net-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::tls::generate(&dir, host, 30).unwrap();
        dir
    }

    /// A blocking rustls server on a thread: handshake, read one line, answer it upper-cased.
    fn tls_echo_server(
        dir: &std::path::Path,
    ) -> (std::net::SocketAddr, std::thread::JoinHandle<String>) {
        let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(
            &mut std::fs::read(dir.join("qpsmtpd-server.crt"))
                .unwrap()
                .as_slice(),
        )
        .collect::<Result<_, _>>()
        .unwrap();
        let key = rustls_pemfile::private_key(
            &mut std::fs::read(dir.join("qpsmtpd-server.key"))
                .unwrap()
                .as_slice(),
        )
        .unwrap()
        .unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                match tls.read(&mut byte) {
                    Ok(1) => {
                        line.push(byte[0]);
                        if byte[0] == b'\n' {
                            break;
                        }
                    }
                    _ => return String::from_utf8_lossy(&line).into_owned(),
                }
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let _ = tls.write_all(text.to_uppercase().as_bytes());
            let _ = tls.flush();
            text
        });
        (addr, handle)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    async fn round_trip(
        addr: std::net::SocketAddr,
        name: &str,
        verify: TlsVerify,
    ) -> io::Result<String> {
        let plain = connect(&Endpoint::Tcp(addr), Duration::from_secs(5)).await?;
        let mut s = plain.start_tls(name.to_string(), verify).await?;
        assert!(s.tls().is_some_and(|t| t.protocol.starts_with("TLSv1.")));
        let (res, _) = s.write_all(b"hello tls\r\n".to_vec()).await;
        res?;
        let mut buf = Vec::new();
        let end = ringsmtpd_plugin_api::net::read_line(&mut *s, &mut buf, 0, 1000).await?;
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    #[test]
    fn client_tls_verified_against_a_ca_file() {
        let dir = certs("cafile", "downstream.test");
        let (addr, server) = tls_echo_server(&dir);
        let got = block_on(round_trip(
            addr,
            "downstream.test",
            TlsVerify::CaFile(dir.join("qpsmtpd-ca.crt")),
        ));
        assert_eq!(got.unwrap(), "HELLO TLS\r\n");
        assert_eq!(server.join().unwrap(), "hello tls\r\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_tls_refuses_a_wrong_name_or_an_unknown_ca() {
        let dir = certs("wrong", "downstream.test");
        // The right CA but another name: refused.
        let (addr, server) = tls_echo_server(&dir);
        let err = block_on(round_trip(
            addr,
            "other.test",
            TlsVerify::CaFile(dir.join("qpsmtpd-ca.crt")),
        ))
        .unwrap_err();
        assert!(
            err.to_string().to_lowercase().contains("certificate"),
            "{err}"
        );
        let _ = server.join();
        // The system roots do not know our private CA.
        let (addr, server) = tls_echo_server(&dir);
        if let Err(e) = block_on(round_trip(addr, "downstream.test", TlsVerify::System)) {
            assert!(
                e.to_string().contains("certificate") || e.kind() == io::ErrorKind::NotFound,
                "{e}"
            );
        } else {
            panic!("a private CA passed the system roots");
        }
        let _ = server.join();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_tls_without_verification_encrypts_anyway() {
        let dir = certs("none", "downstream.test");
        let (addr, server) = tls_echo_server(&dir);
        let got = block_on(round_trip(addr, "127.0.0.1", TlsVerify::None));
        assert_eq!(got.unwrap(), "HELLO TLS\r\n");
        let _ = server.join();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_ca_file_is_an_error_not_a_panic() {
        let missing = TlsVerify::CaFile("/nonexistent/ca.pem".into());
        let e = build_config(&missing).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let path =
            std::env::temp_dir().join(format!("ringsmtpd-net-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = build_config(&TlsVerify::CaFile(path.clone())).unwrap_err();
        assert!(e.to_string().contains("no CA certificate"), "{e}");
        let _ = std::fs::remove_file(&path);
    }
}
