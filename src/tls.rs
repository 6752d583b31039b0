//! TLS: the server configuration (from qpsmtpd's `tls` plugin line and files) and a TLS byte
//! stream over rustls with owned buffers, for STARTTLS (RFC 3207) and implicit TLS on
//! listeners marked `tls` (RFC 8314).
//!
//! The stream is written here on rustls' `ServerConnection` directly rather than through
//! monoio-rustls, because the session must know the negotiated protocol, cipher and SNI name
//! (for Received, RFC 3848, and for plugins), which monoio-rustls does not expose, and taking
//! its stream apart after the handshake could lose application data a TLS 1.3 client sends
//! right behind its Finished message.
//!
//! Config, as qpsmtpd's `tls` plugin: the `config/plugins` line `tls [cert [key [ca]]]`
//! (defaults `ssl/qpsmtpd-server.crt`, `ssl/qpsmtpd-server.key`, `ssl/qpsmtpd-ca.crt`, relative
//! to the working directory), `tls_protocols` (which of TLSv1.2, TLSv1.3; OpenSSL-style
//! strings such as `SSLv23:!SSLv2:!SSLv3` mean both), `tls_ciphers` (`HIGH`, the default, means
//! every suite rustls offers; otherwise a `:`-separated list of IANA or OpenSSL suite names),
//! and `tls_sni` (lines `hostname cert key`: more certificates, chosen by the client's SNI).
//! Certificates are read when the config is loaded, so SIGHUP reloads them for new
//! connections while running ones keep theirs.

use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use ringsmtpd_plugin_api::{ConfigError, ConfigLine, ConfigSource, TlsInfo};
use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ConnectionCommon, ServerConfig, ServerConnection, SideData, SupportedCipherSuite,
    SupportedProtocolVersion,
};

use crate::config::PluginLine;

/// Largest TLS record plus header: the most one `read_tls` needs at once.
const RAW_READ: usize = 16 * 1024 + 512;

/// How long a client may take to complete a TLS handshake: long enough for a slow link,
/// short enough that a client which never finishes does not hold its connection for the whole
/// idle `timeout`. A shorter idle `timeout` bounds it too.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The handshake limit under the idle timeout `idle`.
pub fn handshake_timeout(idle: std::time::Duration) -> std::time::Duration {
    HANDSHAKE_TIMEOUT.min(idle)
}

/// The TLS setup of one config snapshot.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<ServerConfig>,
    /// Each certificate offered, the default first, then one per `tls_sni` line, for `--check`.
    pub leaves: Vec<Leaf>,
}

/// A certificate the server offers, for `--check` (expiry, names).
#[derive(Clone)]
pub struct Leaf {
    /// The certificate file.
    pub file: PathBuf,
    /// The `tls_sni` host name it serves; `None` for the default certificate.
    pub sni: Option<String>,
    pub cert: CertificateDer<'static>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSetup(..)")
    }
}

impl TlsSetup {
    /// Builds the server config from the `tls` plugin line and the tls_* files.
    pub fn load(line: &PluginLine, cfg: &dyn ConfigSource) -> Result<TlsSetup, ConfigError> {
        let origin = &line.origin;
        let mut args = line.args.iter().filter(|a| !a.is_empty());
        let cert = PathBuf::from(args.next().map_or("ssl/qpsmtpd-server.crt", String::as_str));
        let key = PathBuf::from(args.next().map_or("ssl/qpsmtpd-server.key", String::as_str));
        // The CA file is the issuer chain qpsmtpd sends; appended to the chain if present.
        let ca = args.next().map(PathBuf::from);
        if args.next().is_some() {
            return Err(origin.error("tls: arguments are [cert [key [ca]]]"));
        }
        let mut chain = read_certs(&cert).map_err(|e| origin.error(format!("tls: {e}")))?;
        match ca {
            Some(ca) => {
                chain.extend(read_certs(&ca).map_err(|e| origin.error(format!("tls: {e}")))?)
            }
            None => {
                let default_ca = Path::new("ssl/qpsmtpd-ca.crt");
                if default_ca.exists() && cert == Path::new("ssl/qpsmtpd-server.crt") {
                    chain.extend(
                        read_certs(default_ca).map_err(|e| origin.error(format!("tls: {e}")))?,
                    );
                }
            }
        }
        // `read_certs` never returns an empty chain: [0] is the leaf.
        let mut leaves = vec![Leaf {
            file: cert.clone(),
            sni: None,
            cert: chain[0].clone(),
        }];
        let default = certified_key(chain, &key).map_err(|e| origin.error(format!("tls: {e}")))?;
        let mut resolver = SniResolver {
            default: Arc::new(default),
            by_name: Vec::new(),
        };
        for l in cfg.lines("tls_sni")?.unwrap_or_default() {
            let parts: Vec<&str> = l.text.split_whitespace().collect();
            let [name, cert, key] = parts[..] else {
                return Err(l.error("expected `hostname cert key`"));
            };
            let chain = read_certs(Path::new(cert)).map_err(|e| l.error(e))?;
            leaves.push(Leaf {
                file: cert.into(),
                sni: Some(name.to_ascii_lowercase()),
                cert: chain[0].clone(),
            });
            let ck = certified_key(chain, Path::new(key)).map_err(|e| l.error(e))?;
            resolver
                .by_name
                .push((name.to_ascii_lowercase(), Arc::new(ck)));
        }
        let versions = protocols(cfg.first("tls_protocols")?)?;
        let suites = ciphers(cfg.first("tls_ciphers")?)?;
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: suites,
            ..provider::default_provider()
        };
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&versions)
            .map_err(|e| {
                origin.error(format!(
                    "tls: {e} (check tls_ciphers against tls_protocols)"
                ))
            })?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        Ok(TlsSetup {
            config: Arc::new(config),
            leaves,
        })
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn certified_key(chain: Vec<CertificateDer<'static>>, key: &Path) -> Result<CertifiedKey, String> {
    let pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("{}: {e}", key.display()))?
        .ok_or_else(|| format!("{}: no private key in the file", key.display()))?;
    let signing = provider::default_provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| format!("{}: key does not match the certificate: {e}", key.display()))?;
    Ok(ck)
}

/// `tls_protocols`: TLS 1.2 and 1.3 are all rustls speaks; older names are accepted (so a
/// qpsmtpd file loads) and ignored, since those protocols are never offered.
fn protocols(
    line: Option<ConfigLine>,
) -> Result<Vec<&'static SupportedProtocolVersion>, ConfigError> {
    let Some(line) = line else {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    };
    let (mut v12, mut v13, mut named) = (false, false, false);
    for tok in line.text.split([':', ' ', ',']).filter(|t| !t.is_empty()) {
        let (neg, name) = match tok.strip_prefix('!') {
            Some(n) => (true, n),
            None => (false, tok),
        };
        match name.to_ascii_lowercase().as_str() {
            "tlsv1.2" | "tlsv1_2" => (v12, named) = (!neg, true),
            "tlsv1.3" | "tlsv1_3" => (v13, named) = (!neg, true),
            "sslv23" | "sslv2" | "sslv3" | "tlsv1" | "tlsv1.1" | "tlsv1_1" | "all" => {}
            _ => return Err(line.error(format!("unknown protocol '{tok}'"))),
        }
    }
    if !named {
        (v12, v13) = (true, true);
    }
    let mut out = Vec::new();
    if v13 {
        out.push(&rustls::version::TLS13);
    }
    if v12 {
        out.push(&rustls::version::TLS12);
    }
    if out.is_empty() {
        return Err(line.error("no protocol left: TLSv1.2 and TLSv1.3 are both disabled"));
    }
    Ok(out)
}

/// `tls_ciphers`: `HIGH`/`DEFAULT`/`ALL` (or absent) keeps rustls' suites, which are all
/// strong; otherwise a list of names, IANA (`TLS13_AES_256_GCM_SHA384`) or OpenSSL
/// (`ECDHE-RSA-AES256-GCM-SHA384`, `TLS_AES_256_GCM_SHA384`).
fn ciphers(line: Option<ConfigLine>) -> Result<Vec<SupportedCipherSuite>, ConfigError> {
    let all = provider::default_provider().cipher_suites;
    let Some(line) = line else { return Ok(all) };
    let mut out = Vec::new();
    for tok in line.text.split([':', ' ', ',']).filter(|t| !t.is_empty()) {
        let upper = tok.trim_start_matches('+').to_ascii_uppercase();
        if matches!(upper.as_str(), "HIGH" | "DEFAULT" | "ALL" | "SECURE") {
            return Ok(all);
        }
        if upper.starts_with('!') || upper.starts_with('-') {
            continue; // exclusions of weak classes: rustls has none of them
        }
        let want = canonical_suite_name(&upper);
        match all.iter().find(|s| format!("{:?}", s.suite()) == want) {
            Some(s) => out.push(*s),
            None => return Err(line.error(format!("unknown or unsupported cipher suite '{tok}'"))),
        }
    }
    if out.is_empty() {
        return Err(line.error("no cipher suite left"));
    }
    Ok(out)
}

/// Maps OpenSSL names to the IANA names rustls prints.
fn canonical_suite_name(name: &str) -> String {
    let n = name.replace('-', "_");
    if let Some(rest) = n.strip_prefix("TLS_") {
        if !rest.starts_with("ECDHE") {
            return format!("TLS13_{rest}"); // TLS_AES_256_GCM_SHA384 (TLS 1.3)
        }
    }
    if n.starts_with("TLS13_") || n.starts_with("TLS_ECDHE") {
        return n;
    }
    // OpenSSL TLS 1.2 form: ECDHE_RSA_AES256_GCM_SHA384 -> TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    let n = n
        .replace("AES128", "AES_128")
        .replace("AES256", "AES_256")
        .replace("CHACHA20_POLY1305", "CHACHA20_POLY1305_SHA256");
    let n = n.trim_end_matches("_SHA256_SHA256").to_string();
    match n.find("_AES").or_else(|| n.find("_CHACHA")) {
        Some(i) => format!("TLS_{}_WITH{}", &n[..i], &n[i..]).replace("SHA256_SHA256", "SHA256"),
        None => n,
    }
}

/// Picks the certificate for the SNI name (exact, then `*.` wildcard), else the default.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(self.default.clone());
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        self.by_name
            .iter()
            .find(|(n, _)| *n == name)
            .or_else(|| {
                self.by_name
                    .iter()
                    .find(|(n, _)| Some(n) == wildcard.as_ref())
            })
            .map(|(_, ck)| ck.clone())
            .or_else(|| Some(self.default.clone()))
    }
}

/// TLS over a monoio stream `S` with owned buffers, for either side: `C` is rustls'
/// `ServerConnection` (the server's [`TlsStream`]) or `ClientConnection` (plugins' STARTTLS to a
/// downstream, in net.rs).
pub struct TlsIo<S, C> {
    io: S,
    tls: C,
    /// TLS bytes read from the socket, not yet given to rustls (from `raw_pos`).
    raw_in: Vec<u8>,
    raw_pos: usize,
    /// TLS bytes rustls produced, to be written.
    raw_out: Vec<u8>,
}

/// The server side over a client's TCP connection.
pub type TlsStream = TlsIo<monoio::net::TcpStream, ServerConnection>;

impl TlsStream {
    /// Runs the server handshake on `tcp`; `prefix` holds TLS bytes already read (after a
    /// PROXY header). The caller bounds it with a timeout.
    pub async fn accept(
        tcp: monoio::net::TcpStream,
        config: Arc<ServerConfig>,
        prefix: Vec<u8>,
    ) -> io::Result<TlsStream> {
        let tls = ServerConnection::new(config).map_err(io::Error::other)?;
        TlsIo::handshake(tcp, tls, prefix).await
    }

    /// The SNI name the client asked for.
    pub fn server_name(&self) -> Option<&str> {
        self.tls.server_name()
    }
}

impl<S, C, SD> TlsIo<S, C>
where
    S: AsyncReadRent + AsyncWriteRent,
    C: DerefMut + Deref<Target = ConnectionCommon<SD>>,
    SD: SideData,
{
    /// Runs the handshake of `tls` over `io`, starting with the TLS bytes in `prefix`.
    pub async fn handshake(io: S, tls: C, prefix: Vec<u8>) -> io::Result<TlsIo<S, C>> {
        let mut raw_in = prefix;
        raw_in.reserve(RAW_READ);
        let mut s = TlsIo {
            io,
            tls,
            raw_in,
            raw_pos: 0,
            raw_out: Vec::new(),
        };
        s.feed()?;
        while s.tls.is_handshaking() {
            s.send_pending().await?;
            if !s.tls.is_handshaking() {
                break;
            }
            if s.receive().await? == 0 {
                let msg = "connection closed during the TLS handshake";
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
            }
        }
        s.send_pending().await?;
        Ok(s)
    }

    /// What was negotiated, for Received (RFC 3848) and plugins.
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
                // Queue the alert; the caller's next write (or drop) ends the connection.
                let _ = self.tls.write_tls(&mut self.raw_out);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Reads plaintext into the spare capacity of `buf`. `Ok(0)`: the peer sent close_notify
    /// (or closed the connection).
    pub async fn read_plain(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            let len = buf.len();
            let room = (buf.capacity() - len).max(1024);
            buf.resize(len + room, 0);
            let got = self.tls.reader().read(&mut buf[len..]);
            match got {
                Ok(n) => {
                    buf.truncate(len + n);
                    return (Ok(n), buf);
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

    /// Writes all of `buf` as plaintext.
    pub async fn write_plain(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        if let Err(e) = self.tls.writer().write_all(&buf) {
            return (Err(e), buf);
        }
        let res = self.send_pending().await;
        (res, buf)
    }
}

/// Creates a self-signed CA and a server certificate it signs, as qpsmtpd's `tls_cert`:
/// `<dir>/qpsmtpd-ca.crt`, `qpsmtpd-ca.key`, `qpsmtpd-server.crt`, `qpsmtpd-server.key`.
pub fn generate(dir: &Path, host: &str, days: u32) -> Result<Vec<PathBuf>, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = time_now();
    let not_after = now + std::time::Duration::from_secs(u64::from(days) * 86_400);
    let err = |e: rcgen::Error| e.to_string();

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca.distinguished_name
        .push(DnType::CommonName, format!("{host} ringsmtpd CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = now.into();
    ca.not_after = not_after.into();
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(err)?;

    let mut server = CertificateParams::new(vec![host.to_string()]).map_err(err)?;
    server.distinguished_name.push(DnType::CommonName, host);
    server.not_before = now.into();
    server.not_after = not_after.into();
    let server_key = KeyPair::generate().map_err(err)?;
    let server_cert = server
        .signed_by(&server_key, &ca_cert, &ca_key)
        .map_err(err)?;

    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = [
        ("qpsmtpd-ca.crt", ca_cert.pem(), 0o644),
        ("qpsmtpd-ca.key", ca_key.serialize_pem(), 0o600),
        ("qpsmtpd-server.crt", server_cert.pem(), 0o644),
        ("qpsmtpd-server.key", server_key.serialize_pem(), 0o600),
    ];
    let mut written = Vec::new();
    for (name, pem, mode) in files {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(pem.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn time_now() -> std::time::SystemTime {
    std::time::SystemTime::now() - std::time::Duration::from_secs(3600) // tolerate clock skew
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, text: &str) -> Option<ConfigLine> {
        Some(ConfigLine {
            text: text.into(),
            file: name.into(),
            line: 1,
        })
    }

    #[test]
    fn protocol_strings() {
        assert_eq!(protocols(None).unwrap().len(), 2);
        assert_eq!(
            protocols(line("tls_protocols", "SSLv23:!SSLv2:!SSLv3"))
                .unwrap()
                .len(),
            2
        );
        let only13 = protocols(line("tls_protocols", "TLSv1.3")).unwrap();
        assert_eq!(only13.len(), 1);
        assert_eq!(only13[0].version, rustls::ProtocolVersion::TLSv1_3);
        assert!(protocols(line("tls_protocols", "!TLSv1.2:!TLSv1.3")).is_err());
        let e = protocols(line("tls_protocols", "TLSv9")).unwrap_err();
        assert_eq!(e.to_string(), "tls_protocols:1: unknown protocol 'TLSv9'");
    }

    #[test]
    fn cipher_names() {
        let all = ciphers(None).unwrap().len();
        assert_eq!(ciphers(line("tls_ciphers", "HIGH")).unwrap().len(), all);
        let c = ciphers(line(
            "tls_ciphers",
            "TLS_AES_256_GCM_SHA384:ECDHE-RSA-AES256-GCM-SHA384",
        ))
        .unwrap();
        let names: Vec<String> = c.iter().map(|s| format!("{:?}", s.suite())).collect();
        assert_eq!(
            names,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"
            ]
        );
        let c = ciphers(line("tls_ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305")).unwrap();
        assert_eq!(
            format!("{:?}", c[0].suite()),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert!(ciphers(line("tls_ciphers", "RC4-MD5")).is_err());
    }

    #[test]
    fn generated_certificates_load() {
        let dir = std::env::temp_dir().join(format!("ringsmtpd-tls-{}", std::process::id()));
        let files = generate(&dir, "mx.example.test", 30).unwrap();
        assert_eq!(files.len(), 4);
        let origin = ConfigLine {
            text: "tls".into(),
            file: "plugins".into(),
            line: 3,
        };
        let cert = dir.join("qpsmtpd-server.crt").display().to_string();
        let key = dir.join("qpsmtpd-server.key").display().to_string();
        let ca = dir.join("qpsmtpd-ca.crt").display().to_string();
        let pl = PluginLine {
            name: "tls".into(),
            args: vec![cert, key, ca],
            origin: origin.clone(),
        };
        let cfg = ringsmtpd_plugin_api::testing::MemConfig::default();
        assert!(TlsSetup::load(&pl, &cfg).is_ok());
        // A key that does not belong to the certificate is refused with the plugins line.
        let other = dir.join("qpsmtpd-ca.key").display().to_string();
        let bad = PluginLine {
            args: vec![pl.args[0].clone(), other],
            ..pl.clone()
        };
        let e = TlsSetup::load(&bad, &cfg).unwrap_err();
        assert!(e.to_string().starts_with("plugins:3: tls: "), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
