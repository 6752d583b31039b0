//! STARTTLS and AUTH PLAIN against in-process fake servers on free loopback ports (rustls on
//! the server side, a test CA from `ringsmtpd::tls::generate`): sessions counted, the
//! credentials the server received, and every way it can fail (handshake refused, extension
//! not offered, password refused, plaintext injected after the 220) counted as a connection
//! error of its stage, never hung on.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use smtp_loadtest::config::{parse_args, Config, TlsOptions, TlsVerifyOpt};
use smtp_loadtest::stats::Phase;
use smtp_loadtest::Report;

mod common;
use common::{fake_config, run_bounded as go};

const USER: &str = "good@example.com";
const PASS: &str = "s3cret:pass";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Good,
    /// EHLO does not list STARTTLS.
    NoStarttls,
    /// 220 to STARTTLS followed at once by a plaintext reply (command injection).
    Injects,
}

#[derive(Default)]
struct Seen {
    handshakes: usize,
    /// Decoded AUTH PLAIN responses, and whether each came over TLS.
    auths: Vec<(String, bool)>,
    /// Messages received over TLS, and in the clear.
    tls_messages: usize,
    plain_messages: usize,
}

/// The test CA and server certificate (for "mx.test"), made once per test binary.
fn certs() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("loadtest-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ringsmtpd::tls::generate(&dir, "mx.test", 2).unwrap();
        dir
    })
}

fn server_config() -> Arc<ServerConfig> {
    let dir = certs();
    let pem = std::fs::read(dir.join("qpsmtpd-server.crt")).unwrap();
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .unwrap();
    let pem = std::fs::read(dir.join("qpsmtpd-server.key")).unwrap();
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

/// Starts a fake server; its threads end on their own (read timeouts).
fn fake(mode: Mode) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let config = server_config();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (seen, config) = (s2.clone(), config.clone());
            std::thread::spawn(move || {
                let _ = session(conn, mode, config, &seen);
            });
        }
    });
    (addr, seen)
}

enum Next {
    Done,
    StartTls,
}

fn session(
    conn: TcpStream,
    mode: Mode,
    config: Arc<ServerConfig>,
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_nodelay(true)?;
    let mut r = BufReader::new(conn);
    r.get_mut().write_all(b"220 fake ESMTP\r\n")?;
    if let Next::Done = serve(&mut r, mode, false, seen)? {
        return Ok(());
    }
    if !r.buffer().is_empty() {
        return Ok(()); // the client pipelined past STARTTLS
    }
    let tcp = r.into_inner();
    let mut tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    seen.lock().unwrap().handshakes += 1;
    serve(&mut BufReader::new(tls), mode, true, seen)?;
    Ok(())
}

/// Answers commands until QUIT, EOF, or (in the clear) STARTTLS.
fn serve<S: Read + Write>(
    r: &mut BufReader<S>,
    mode: Mode,
    tls: bool,
    seen: &Mutex<Seen>,
) -> std::io::Result<Next> {
    use base64::Engine as _;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(Next::Done);
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let w = r.get_mut();
        match verb.as_str() {
            "EHLO" if tls || mode == Mode::NoStarttls => {
                w.write_all(b"250-fake\r\n250-PIPELINING\r\n250 AUTH LOGIN PLAIN\r\n")?
            }
            "EHLO" => w.write_all(b"250-fake\r\n250-PIPELINING\r\n250 STARTTLS\r\n")?,
            "STAR" if !tls => {
                if mode == Mode::Injects {
                    w.write_all(b"220 go ahead\r\n250 injected\r\n")?;
                    std::thread::sleep(Duration::from_millis(100));
                    return Ok(Next::Done);
                }
                w.write_all(b"220 go ahead\r\n")?;
                return Ok(Next::StartTls);
            }
            "AUTH" => {
                let token = line.trim_end().strip_prefix("AUTH PLAIN ").unwrap_or("");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(token)
                    .unwrap_or_default();
                let got = String::from_utf8_lossy(&raw).into_owned();
                let ok = got == format!("\0{USER}\0{PASS}");
                seen.lock().unwrap().auths.push((got, tls));
                if ok {
                    w.write_all(b"235 2.7.0 ok\r\n")?
                } else {
                    w.write_all(b"535 5.7.8 no\r\n")?
                }
            }
            "MAIL" | "RCPT" | "RSET" => w.write_all(b"250 ok\r\n")?,
            "DATA" => {
                w.write_all(b"354 go\r\n")?;
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 {
                        return Ok(Next::Done);
                    }
                    if l == ".\r\n" {
                        break;
                    }
                }
                {
                    let mut s = seen.lock().unwrap();
                    if tls {
                        s.tls_messages += 1;
                    } else {
                        s.plain_messages += 1;
                    }
                }
                r.get_mut().write_all(b"250 2.0.0 queued\r\n")?;
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(Next::Done);
            }
            _ => w.write_all(b"500 what\r\n")?,
        }
    }
}

fn config(addr: SocketAddr, verify: TlsVerifyOpt, name: &str) -> Config {
    let mut c = fake_config(addr);
    c.max_failures = 2;
    c.tls = Some(TlsOptions {
        verify,
        name: Some(name.into()),
        resume: false,
    });
    c.auth_plain = Some((USER.into(), PASS.into()));
    c
}

fn ca() -> TlsVerifyOpt {
    TlsVerifyOpt::CaFile(certs().join("qpsmtpd-ca.crt"))
}

#[test]
fn starttls_then_auth_on_every_session() {
    for verify in [ca(), TlsVerifyOpt::None] {
        let (addr, seen) = fake(Mode::Good);
        let mut c = config(addr, verify, "mx.test");
        c.messages = Some(40);
        c.per_session = 2;
        let r = go(&c);
        let s = &r.stats;
        assert_eq!((s.accepted, s.conn_errors()), (40, 0), "{:?}", s.errors);
        // 40 messages at 2 a session: 20 sessions, one more when the budget ends mid-session.
        let n = s.sessions;
        assert!((20..=24).contains(&n), "{n} sessions");
        assert_eq!((s.tls_sessions, s.auth_ok), (n, n));
        assert_eq!(s.tls_kinds.values().sum::<u64>(), n);
        assert!(
            s.tls_kinds.keys().all(|k| k.starts_with("TLSv1.")),
            "{:?}",
            s.tls_kinds
        );
        assert_eq!(s.hist(Phase::Tls).len(), n);
        assert_eq!(s.hist(Phase::Auth).len(), n);
        // The 220 banner and the 220 to STARTTLS; 235 once a session.
        assert_eq!((s.codes[220], s.codes[235]), (2 * n, n));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.handshakes as u64, n);
        assert_eq!((seen.tls_messages, seen.plain_messages), (40, 0));
        assert_eq!(seen.auths.len() as u64, n);
        let want = format!("\0{USER}\0{PASS}");
        assert!(seen.auths.iter().all(|(a, tls)| *a == want && *tls));
        let text = smtp_loadtest::output::table(&r);
        assert!(text.contains(&format!("TLS sessions {n:>21}")), "{text}");
        assert!(
            text.contains(&format!("sessions authenticated {n:>11}")),
            "{text}"
        );
        let j = smtp_loadtest::output::json(&r);
        assert_eq!(j["connections"]["tls_sessions"], n);
        assert_eq!(j["connections"]["authenticated"], n);
        assert_eq!(j["phases"]["tls"]["count"], n);
    }
}

#[test]
fn failed_handshakes_are_connection_errors() {
    // The certificate names mx.test; asking for another name fails the check.
    let (addr, seen) = fake(Mode::Good);
    let mut c = config(addr, ca(), "other.test");
    c.messages = Some(10);
    let r = go(&c);
    let s = &r.stats;
    assert_eq!((s.attempted, s.sessions, s.tls_sessions), (0, 0, 0));
    assert_eq!(s.conn_failed, 8, "4 slots, 2 failures each");
    let (key, n) = s.errors.iter().next().unwrap();
    assert_eq!((key.0, *n), ("starttls", 8));
    assert!(key.1.starts_with("handshake: "), "{key:?}");
    assert!(text_has(&r, "starttls: handshake: "));
    assert_eq!(seen.lock().unwrap().plain_messages, 0);
}

#[test]
fn missing_extensions_and_refused_passwords_are_counted() {
    // No STARTTLS offered: nothing is sent in the clear.
    let (addr, seen) = fake(Mode::NoStarttls);
    let mut c = config(addr, TlsVerifyOpt::None, "mx.test");
    c.messages = Some(10);
    let r = go(&c);
    assert_eq!((r.stats.attempted, r.stats.conn_failed), (0, 8));
    assert_eq!(
        r.stats.errors[&("starttls", "STARTTLS not offered".to_string())],
        8
    );
    assert_eq!(seen.lock().unwrap().plain_messages, 0);

    // AUTH without STARTTLS against the same server (it offers AUTH in the clear): a wrong
    // password is a connection error at the auth stage.
    let mut c = config(addr, TlsVerifyOpt::None, "mx.test");
    c.tls = None;
    c.auth_plain = Some((USER.into(), "wrong".into()));
    c.messages = Some(10);
    let r = go(&c);
    assert_eq!((r.stats.attempted, r.stats.auth_ok), (0, 0));
    assert_eq!(r.stats.errors[&("auth", "refused with 535".to_string())], 8);
    assert_eq!(seen.lock().unwrap().auths.len(), 8);
}

#[test]
fn plaintext_after_the_starttls_reply_is_refused() {
    let (addr, seen) = fake(Mode::Injects);
    let mut c = config(addr, TlsVerifyOpt::None, "mx.test");
    c.messages = Some(10);
    let r = go(&c);
    assert_eq!((r.stats.attempted, r.stats.tls_sessions), (0, 0));
    assert_eq!(
        r.stats.errors[&(
            "starttls",
            "plaintext after the 220 to STARTTLS".to_string()
        )],
        8
    );
    assert_eq!(seen.lock().unwrap().handshakes, 0);
}

#[test]
fn command_line() {
    let args = |s: &str| parse_args(s.split_whitespace().map(String::from));
    let c = args("-n 1 --starttls --tls-verify /x/ca.pem --tls-name mx.test --auth-plain a@b:p:q")
        .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.verify, TlsVerifyOpt::CaFile("/x/ca.pem".into()));
    assert_eq!(tls.name.as_deref(), Some("mx.test"));
    assert!(!tls.resume);
    assert_eq!(c.auth_plain, Some(("a@b".into(), "p:q".into())));
    assert_eq!(
        args("-n 1 --starttls").unwrap().tls.unwrap().verify,
        TlsVerifyOpt::None
    );
    assert!(args("-n 1").unwrap().tls.is_none());
    assert!(args("-n 1 --tls-verify none")
        .unwrap_err()
        .contains("needs --starttls"));
    assert!(args("-n 1 --auth-plain nocolon").is_err());
    assert!(args("-n 1 --auth-plain :p").is_err());
    let file = certs().join("auth");
    std::fs::write(&file, "u@d:pw\nignored\n").unwrap();
    let c = args(&format!("-n 1 --auth-plain-file {}", file.display())).unwrap();
    assert_eq!(c.auth_plain, Some(("u@d".into(), "pw".into())));
    assert!(args("-n 1 --auth-plain-file /nonexistent/x").is_err());
}

fn text_has(r: &Report, needle: &str) -> bool {
    smtp_loadtest::output::table(r).contains(needle)
}
