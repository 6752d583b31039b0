//! smtp-loadtest against real servers on free loopback ports: the ringsmtpd release binary
//! (null chain: `rcpt_ok` + `queue/discard`) and Postfix's `smtp-sink`. The counts must add
//! up (attempted = 250s + rejects + errors), and a server that dies mid-run is reported.
//!
//! Needs: `cargo build --release -p ringsmtpd` (or RINGSMTPD_BIN=path) and `smtp-sink`
//! (Debian: `apt-get install postfix`). A missing one fails the test with that message.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use smtp_loadtest::config::{parse_range, Config, ProxyVersion};
use smtp_loadtest::Report;

mod common;
use common::run_balanced as go;

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ringsmtpd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RINGSMTPD_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "RINGSMTPD_BIN={} does not exist: build it with `cargo build --release -p ringsmtpd`",
            p.display()
        );
        return p;
    }
    let candidates: Vec<PathBuf> = [
        std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("release/ringsmtpd")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/ringsmtpd")),
    ]
    .into_iter()
    .flatten()
    .collect();
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "the ringsmtpd release binary is missing (looked at {candidates:?}): build it with \
         `cargo build --release -p ringsmtpd`, or set RINGSMTPD_BIN"
    );
}

fn smtp_sink_bin() -> PathBuf {
    let p = PathBuf::from("/usr/sbin/smtp-sink");
    assert!(
        p.is_file(),
        "smtp-sink is missing: install Postfix (apt-get install postfix; it ships /usr/sbin/smtp-sink)"
    );
    p
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until something accepts on `addr` (bounded).
fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("server exited before listening: {status}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server not listening on {addr} after 15 s");
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// ringsmtpd with the null chain on `listen` (e.g. "127.0.0.1:2525" or "... proxy").
fn start_ringsmtpd(dir: &Path, listen: &str, addr: SocketAddr) -> Server {
    let cfg = dir.join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("plugins"), "rcpt_ok\nqueue/discard\n").unwrap();
    std::fs::write(cfg.join("rcpthosts"), "example.com\n").unwrap();
    std::fs::write(cfg.join("me"), "loadtest.test\n").unwrap();
    std::fs::write(cfg.join("loglevel"), "4\n").unwrap();
    std::fs::write(
        cfg.join("spool_dir"),
        format!("{}\n", dir.join("spool").display()),
    )
    .unwrap();
    // Started as root, ringsmtpd refuses to run without a `user` to drop to: stay root here.
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::fs::write(cfg.join("user"), "root\n").unwrap();
    }
    let mut child = Command::new(ringsmtpd_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", listen, "--threads", "1"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ringsmtpd");
    wait_listening(addr, &mut child);
    Server(child)
}

fn start_smtp_sink(addr: SocketAddr, extra: &[&str]) -> Server {
    let mut cmd = Command::new(smtp_sink_bin());
    // smtp-sink insists on -u when run as root; stay root (no privilege games in a test).
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let mut child = cmd
        .args(["-m", "1000"])
        .args(extra)
        .arg(addr.to_string())
        .arg("256")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start smtp-sink");
    wait_listening(addr, &mut child);
    Server(child)
}

fn config(addr: SocketAddr) -> Config {
    let mut c = Config::new(addr);
    c.threads = 1;
    c.connections = 8;
    c.quiet = true;
    c.timeout = Duration::from_secs(10);
    c
}

/// Sends 1000 messages to `server` at `addr` with these settings and asserts that every one
/// was accepted, no connection failed and the server offered PIPELINING; returns the report.
fn all_of_1000_accepted(
    server: &str,
    addr: SocketAddr,
    pipelining: bool,
    per_session: u32,
    rcpts: u32,
) -> Report {
    let mut c = config(addr);
    c.messages = Some(1000);
    c.pipelining = pipelining;
    c.per_session = per_session;
    c.rcpts = rcpts;
    let r = go(&c);
    let s = &r.stats;
    assert_eq!(
        (s.attempted, s.accepted, s.failed),
        (1000, 1000, 0),
        "{:?}",
        s.errors
    );
    assert_eq!(s.conn_errors(), 0, "{:?}", s.errors);
    assert_eq!(s.no_pipelining, 0, "{server} offers PIPELINING");
    r
}

#[test]
fn ringsmtpd_null_chain_counts_add_up() {
    let dir = temp_dir("ringsmtpd");
    let addr = free_addr();
    let _server = start_ringsmtpd(&dir, &addr.to_string(), addr);
    for (pipelining, per_session, rcpts) in [(true, 10, 2), (false, 1, 1), (true, 1, 5)] {
        let r = all_of_1000_accepted("ringsmtpd", addr, pipelining, per_session, rcpts);
        let s = &r.stats;
        assert_eq!(s.codes[354], 1000);
        assert_eq!(s.codes[250], 1000 * (2 + rcpts as u64) + s.sessions);
    }
    // Recipients outside rcpthosts: 550 from rcpt_ok, each message a rejection.
    let mut c = config(addr);
    c.messages = Some(200);
    c.per_session = 20;
    c.to_domain = "elsewhere.test".into();
    let r = go(&c);
    assert_eq!((r.stats.rejected_5xx, r.stats.accepted), (200, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ringsmtpd_behind_proxy_protocol() {
    let dir = temp_dir("ringsmtpd-proxy");
    let addr = free_addr();
    let _server = start_ringsmtpd(&dir, &format!("{addr} proxy"), addr);
    for v in [ProxyVersion::V1, ProxyVersion::V2] {
        let mut c = config(addr);
        c.messages = Some(300);
        c.per_session = 3;
        c.proxy = Some(v);
        c.source_range = Some(parse_range("127.0.0.2-127.0.0.250").unwrap());
        let r = go(&c);
        assert_eq!(r.stats.accepted, 300, "{v:?}: {:?}", r.stats.errors);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ringsmtpd_killed_mid_run_is_reported_not_hung_on() {
    let dir = temp_dir("ringsmtpd-kill");
    let addr = free_addr();
    let mut server = start_ringsmtpd(&dir, &addr.to_string(), addr);
    let mut c = config(addr);
    c.duration = Some(Duration::from_secs(20));
    c.per_session = 0;
    c.timeout = Duration::from_secs(2);
    c.max_failures = 3;
    let t = Instant::now();
    let runner = std::thread::spawn(move || go(&c));
    std::thread::sleep(Duration::from_millis(800));
    let _ = server.0.kill();
    let r = runner.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    let s = &r.stats;
    assert!(s.accepted > 0);
    // Every in-flight message failed, and every slot then failed to reconnect and gave up.
    assert!(s.failed <= c_connections() as u64);
    assert!(s.conn_dropped > 0, "{:?}", s.errors);
    assert_eq!(s.slots_gave_up, c_connections() as u64);
    assert!(s.errors.contains_key(&("connect", "refused".to_string())));
    let _ = std::fs::remove_dir_all(&dir);
}

fn c_connections() -> usize {
    8
}

#[test]
fn the_binary_prints_balanced_json() {
    let dir = temp_dir("ringsmtpd-cli");
    let addr = free_addr();
    let _server = start_ringsmtpd(&dir, &addr.to_string(), addr);
    let svg = dir.join("plot.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-loadtest"))
        .args([
            "--target",
            &addr.to_string(),
            "--messages",
            "500",
            "--connections",
            "4",
        ])
        .args([
            "--threads",
            "1",
            "--per-session",
            "5",
            "--json",
            "--quiet",
            "--svg",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["messages"]["attempted"], 500);
    assert_eq!(j["messages"]["accepted"], 500);
    assert_eq!(j["messages"]["balanced"], true);
    assert!(j["phases"]["dataend"]["p99_us"].as_u64().unwrap() > 0);
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("Latency by percentile"));
    // Refusals of the rules: exit status 2, no traffic.
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-loadtest"))
        .args(["--target", "192.0.2.1:25", "--messages", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback"));
    let out = Command::new(env!("CARGO_BIN_EXE_smtp-loadtest"))
        .args(["--target", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn smtp_sink_counts_add_up() {
    let addr = free_addr();
    let _sink = start_smtp_sink(addr, &[]);
    for (pipelining, per_session, rcpts) in [(true, 5, 3), (false, 1, 1)] {
        all_of_1000_accepted("smtp-sink", addr, pipelining, per_session, rcpts);
    }
}

#[test]
fn smtp_sink_refusing_and_hanging_up() {
    // -r RCPT: every recipient gets a soft 450.
    let addr = free_addr();
    let _sink = start_smtp_sink(addr, &["-r", "RCPT"]);
    let mut c = config(addr);
    c.messages = Some(100);
    c.per_session = 10;
    let r = go(&c);
    assert_eq!((r.stats.rejected_4xx, r.stats.accepted), (100, 0));
    // -q .: hang up, without a reply, after the final dot.
    let addr = free_addr();
    let _sink = start_smtp_sink(addr, &["-q", "."]);
    let mut c = config(addr);
    c.messages = Some(50);
    c.per_session = 5;
    let r = go(&c);
    let s = &r.stats;
    assert_eq!((s.failed, s.accepted), (50, 0));
    assert_eq!(s.conn_dropped, 50);
    assert!(
        s.errors.keys().all(|(stage, _)| *stage == "message"),
        "{:?}",
        s.errors
    );
}
