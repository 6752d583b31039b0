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

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use ringsmtpd_plugin_api::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
use ringsmtpd_plugin_api::TlsInfo;

use crate::tls::TlsIo;
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
            let tls = tls_connect(self.0, config, &server_name).await?;
            Ok(Box::new(tls) as Box<dyn Stream>)
        })
    }
}

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

/// A TLS client stream over a plain stream: the engine shared with the server side.
pub type TlsClient<S> = TlsIo<S, ClientConnection>;

/// Runs the client handshake over `io` for `server_name` (a host name or an IP address). The
/// caller bounds it with a timeout.
pub async fn tls_connect<S: AsyncReadRent + AsyncWriteRent>(
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
    TlsIo::handshake(io, tls, Vec::new()).await
}

impl<S: AsyncReadRent + AsyncWriteRent + 'static> Stream for TlsClient<S> {
    fn read(&mut self, buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(self.read_plain(buf))
    }

    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(self.write_plain(buf))
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
    use std::io::{Read, Write};

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
