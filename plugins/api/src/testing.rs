//! The plugin test kit: build a plugin from its `config/plugins` line and files in memory
//! ([`build`]), fake services without a runtime ([`FakeServices`], [`cx`]), a tiny executor
//! for `Step`s ([`run`]) and a temporary directory ([`TempDir`]). No sockets unless a test
//! starts its own peer, no threads besides the blocking job's own.
//!
//! ```ignore
//! let p = build(new, "badmailfrom reject 0", &[("badmailfrom", "spammer@example.com\n")])?;
//! let (mut cx, svc) = cx("192.0.2.1:4242");
//! assert_eq!(run(p.mail(&mut cx, &mut txn)), Outcome::Declined);
//! assert!(svc.logged("fail, log only"));
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::auth::{AuthRequest, Mechanism, Secret};
use crate::context::{Body, Connection, Cx, Level, Services, SpoolFile, Transaction};
use crate::dns::{DnsAnswer, DnsError, DnsLookup, DnsResult, QType, Record};
use crate::envelope::{Address, RcptParams, Recipient};
use crate::hook::Hook;
use crate::net::{ConnectFuture, Endpoint, IoFuture, Stream, TlsVerify};
use crate::outcome::{Outcome, Step};
use crate::plugin::{take_default_reached, LogRecord, Plugin};
use crate::plugin::{ConfigError, ConfigLine, ConfigSource, PluginInit};

/// Services for tests: logs are kept for assertions, blocking jobs run on a new thread,
/// timers fire at once, DNS answers come from `dns` (questions are recorded in `asked`).
#[derive(Default)]
pub struct FakeServices {
    pub me: String,
    pub logs: RefCell<Vec<(Level, String, String)>>,
    /// Canned DNS results by (lowercased name, type); a missing entry answers NXDOMAIN.
    pub dns: RefCell<HashMap<(String, QType), DnsResult>>,
    pub asked: RefCell<Vec<(String, QType)>>,
    /// Every endpoint a plugin connected to, in order.
    pub connects: RefCell<Vec<Endpoint>>,
    /// When set, every connection succeeds to a peer that never answers (its reads never
    /// complete), so only a timeout can end the exchange: timers fire at once here.
    pub mute_peers: Cell<bool>,
}

impl FakeServices {
    pub fn new(me: &str) -> Rc<FakeServices> {
        Rc::new(FakeServices {
            me: me.to_string(),
            ..FakeServices::default()
        })
    }

    /// Answers `name`/`qtype` with these records from now on.
    pub fn answer(&self, name: &str, qtype: QType, records: Vec<Record>) {
        let answer = DnsAnswer {
            nxdomain: false,
            records,
            ttl: 300,
        };
        self.dns
            .borrow_mut()
            .insert((name.to_ascii_lowercase(), qtype), Ok(Rc::new(answer)));
    }

    /// Fails `name`/`qtype` with `error` from now on.
    pub fn fail(&self, name: &str, qtype: QType, error: DnsError) {
        self.dns
            .borrow_mut()
            .insert((name.to_ascii_lowercase(), qtype), Err(error));
    }

    /// True if some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .borrow()
            .iter()
            .any(|(_, _, m)| m.contains(needle))
    }
}

impl Services for FakeServices {
    fn me(&self) -> &str {
        &self.me
    }
    fn log(&self, level: Level, _conn: u64, source: &str, msg: std::fmt::Arguments<'_>) {
        self.logs
            .borrow_mut()
            .push((level, source.to_string(), msg.to_string()));
    }
    fn log_enabled(&self, _level: Level) -> bool {
        true
    }
    fn spawn_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        std::thread::spawn(job);
    }
    fn sleep(&self, _dur: Duration) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(std::future::ready(()))
    }
    /// Real (blocking) sockets: tests run their fake servers on threads.
    fn connect(&self, to: &Endpoint, timeout: Duration) -> ConnectFuture {
        self.connects.borrow_mut().push(to.clone());
        if self.mute_peers.get() {
            return Box::pin(std::future::ready(Ok(Box::new(Mute) as Box<dyn Stream>)));
        }
        let stream: std::io::Result<Box<dyn Stream>> = match to {
            Endpoint::Tcp(addr) => std::net::TcpStream::connect_timeout(addr, timeout)
                .map(|s| Box::new(BlockingStream(s)) as Box<dyn Stream>),
            Endpoint::Unix(path) => std::os::unix::net::UnixStream::connect(path)
                .map(|s| Box::new(BlockingStream(s)) as Box<dyn Stream>),
        };
        Box::pin(std::future::ready(stream))
    }
    fn dns_query(&self, name: &str, qtype: QType) -> DnsLookup {
        let key = (name.trim_end_matches('.').to_ascii_lowercase(), qtype);
        self.asked.borrow_mut().push(key.clone());
        let nx = DnsAnswer {
            nxdomain: true,
            records: Vec::new(),
            ttl: 300,
        };
        let result = self
            .dns
            .borrow()
            .get(&key)
            .cloned()
            .unwrap_or(Ok(Rc::new(nx)));
        DnsLookup::ready(result)
    }
}

/// A context for a client at `remote` (e.g. `"192.0.2.1:4242"`), talking to `me`.
pub fn cx(remote: &str) -> (Cx, Rc<FakeServices>) {
    let svc = FakeServices::new("mx.example.test");
    let remote: SocketAddr = remote.parse().expect("test address");
    let local: SocketAddr = "127.0.0.1:25".parse().expect("static address");
    (Cx::new(Connection::new(1, remote, local), svc.clone()), svc)
}

/// A blocking socket as a [`Stream`], for tests (no TLS).
pub struct BlockingStream<S>(pub S);

impl<S: std::io::Read + std::io::Write + 'static> Stream for BlockingStream<S> {
    fn read(&mut self, mut buf: Vec<u8>) -> IoFuture<'_, usize> {
        let len = buf.len();
        buf.resize(len + 16 * 1024, 0);
        let res = self.0.read(&mut buf[len..]);
        buf.truncate(len + *res.as_ref().unwrap_or(&0));
        Box::pin(std::future::ready((res, buf)))
    }
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        let res = self.0.write_all(&buf);
        Box::pin(std::future::ready((res, buf)))
    }
    fn start_tls(
        self: Box<Self>,
        _server_name: String,
        _verify: TlsVerify,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Stream>>>>> {
        Box::pin(std::future::ready(Err(
            std::io::ErrorKind::Unsupported.into()
        )))
    }
}

/// A peer that accepts writes and never answers.
pub struct Mute;

impl Stream for Mute {
    fn read(&mut self, _buf: Vec<u8>) -> IoFuture<'_, usize> {
        Box::pin(std::future::pending())
    }
    fn write_all(&mut self, buf: Vec<u8>) -> IoFuture<'_, ()> {
        Box::pin(std::future::ready((Ok(()), buf)))
    }
    fn start_tls(
        self: Box<Self>,
        _server_name: String,
        _verify: TlsVerify,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Stream>>>>> {
        Box::pin(std::future::ready(Err(
            std::io::ErrorKind::Unsupported.into()
        )))
    }
}

struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on this thread.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut task_cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut task_cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// The outcome of a step, waiting for it if it is pending.
pub fn run(step: Step<'_>) -> Outcome {
    match step {
        Step::Ready(o) => o,
        Step::Pending(fut) => block_on(fut),
    }
}

/// A config directory in memory: file name -> contents (as the file would hold them).
#[derive(Default)]
pub struct MemConfig {
    pub files: HashMap<String, String>,
}

impl MemConfig {
    pub fn new(files: &[(&str, &str)]) -> MemConfig {
        MemConfig {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

impl ConfigSource for MemConfig {
    fn lines(&self, name: &str) -> Result<Option<Vec<ConfigLine>>, ConfigError> {
        Ok(self.files.get(name).map(|text| {
            text.lines()
                .enumerate()
                .map(|(i, l)| (i, l.trim()))
                .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
                .map(|(i, l)| ConfigLine {
                    text: l.to_string(),
                    file: name.to_string(),
                    line: i as u32 + 1,
                })
                .collect()
        }))
    }
}

/// The `config/plugins` line a test plugin is built from.
pub fn origin(line: &str) -> ConfigLine {
    ConfigLine {
        text: line.to_string(),
        file: "plugins".to_string(),
        line: 1,
    }
}

/// Builds a plugin with `new` from its `config/plugins` line (`"badmailfrom reject 0"`: the
/// first word is the instance name) and config files in memory (name, contents). `new` may be
/// the registered factory or a constructor that returns the concrete type.
pub fn build<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let mut words = line.split_whitespace();
    let name = words
        .next()
        .expect("a plugin line starts with the plugin's name");
    build_args(new, name, &words.collect::<Vec<_>>(), files)
}

/// The error of a [`build`] that must fail.
pub fn build_err<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
) -> ConfigError {
    match build(new, line, files) {
        Ok(_) => panic!("'{line}' built, but must not"),
        Err(e) => e,
    }
}

/// A fresh directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory; `tag` goes into its name to tell tests apart.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ringsmtpd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a test directory");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory, as a string (for a plugin argument).
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A transaction whose sender is `from`, a MAIL path as the client writes it (`<a@b.example>`,
/// `<>`; UTF-8 allowed, as after SMTPUTF8).
pub fn txn_from(from: &str) -> crate::Transaction {
    let mut txn = crate::Transaction::default();
    txn.sender = crate::address::parse_path(from, true, true).expect("test sender");
    txn
}

/// A recipient `to`, a RCPT path as the client writes it (`<a@b.example>`, `<postmaster>`;
/// UTF-8 allowed, as after SMTPUTF8).
pub fn rcpt(to: &str) -> crate::Recipient {
    crate::Recipient {
        addr: crate::address::parse_path(to, false, true).expect("test recipient"),
        params: Default::default(),
    }
}

/// Plugin arguments and a check of the outcome they must give, for tables of cases.
pub type Case = (&'static [&'static str], fn(&Outcome) -> bool);

/// DNS records for [`FakeServices::answer`].
pub mod records {
    use crate::dns::Record;

    pub fn a(s: &str) -> Record {
        Record::A(s.parse().expect("test IPv4"))
    }

    pub fn aaaa(s: &str) -> Record {
        Record::Aaaa(s.parse().expect("test IPv6"))
    }

    pub fn txt(s: &str) -> Record {
        Record::Txt(s.to_string())
    }

    pub fn ptr(s: &str) -> Record {
        Record::Ptr(s.to_string())
    }

    pub fn mx(preference: u16, exchange: &str) -> Record {
        Record::Mx {
            preference,
            exchange: exchange.to_string(),
        }
    }
}

/// The outcome of `p`'s `mail` hook for the sender `from`, on a new connection.
pub fn mail_outcome(p: &dyn crate::Plugin, from: &str) -> Outcome {
    let (mut c, _) = cx("192.0.2.1:1");
    run(p.mail(&mut c, &mut txn_from(from)))
}

/// The outcome of `p`'s `rcpt` hook for the recipient `to`, on a new connection and
/// transaction.
pub fn rcpt_outcome(p: &dyn crate::Plugin, to: &str) -> Outcome {
    let (mut c, _) = cx("192.0.2.1:1");
    run(p.rcpt(&mut c, &mut crate::Transaction::default(), &rcpt(to)))
}

/// How a failing check came out under each `reject` form (see [`reject_forms`]).
#[derive(Debug)]
pub struct RejectForms {
    /// With `reject 0`.
    pub log_only: Outcome,
    /// With `reject_type temp`.
    pub temp: Outcome,
    /// With `reject naughty`.
    pub naughty: Outcome,
    /// The message `reject naughty` left in the connection note `Naughty`, if any.
    pub naughty_msg: Option<String>,
}

/// Runs a failing check under `reject 0`, `reject_type temp` and `reject naughty`: `line` is
/// the plugin's config line without them, `fire` runs the hook that fails on a new
/// connection.
pub fn reject_forms<P: crate::Plugin + ?Sized>(
    new: impl Fn(&PluginInit<'_>) -> Result<Box<P>, ConfigError>,
    line: &str,
    files: &[(&str, &str)],
    fire: impl Fn(&P, &mut Cx) -> Outcome,
) -> RejectForms {
    let outcome = |extra: &str| {
        let p = build(&new, &format!("{line} {extra}"), files).expect("the plugin builds");
        let (mut c, _) = cx("192.0.2.1:1");
        let outcome = fire(&p, &mut c);
        let note = c.conn.notes.get::<crate::shared::Naughty>();
        (outcome, note.map(|n| n.msg.clone()))
    };
    let (naughty, naughty_msg) = outcome("reject naughty");
    RejectForms {
        log_only: outcome("reject 0").0,
        temp: outcome("reject_type temp").0,
        naughty,
        naughty_msg,
    }
}

/// Asserts that `line` does not build with each of `cases` (the contents of the config file
/// `file`, the number of the line the error must name).
pub fn assert_bad_lines<T>(
    new: impl Fn(&PluginInit<'_>) -> Result<T, ConfigError>,
    line: &str,
    file: &str,
    cases: &[(&str, u32)],
) {
    for &(text, n) in cases {
        let e = build_err(&new, line, &[(file, text)]);
        assert_eq!((e.file.as_str(), e.line), (file, n), "{text:?}: {e}");
    }
}

/// Puts `message` (header, empty line, body, as received) into `txn`'s body, in memory.
pub fn set_message(txn: &mut crate::Transaction, message: &str) {
    txn.body.mem = message.as_bytes().to_vec();
    txn.body.len = message.len() as u64;
    txn.body.header_end = message.find("\r\n\r\n").map(|i| i + 4);
}

/// Asserts that `name` does not build with each of `cases` (its arguments, one word each: a
/// word may hold a space here), and that each error names the plugin's line and the plugin.
pub fn assert_bad_args<T>(
    new: impl Fn(&PluginInit<'_>) -> Result<T, ConfigError>,
    name: &str,
    cases: &[&[&str]],
) {
    let config = MemConfig::default();
    for case in cases {
        let args: Vec<String> = case.iter().map(|s| s.to_string()).collect();
        let init = PluginInit {
            name,
            args: &args,
            config: &config,
            origin: &origin(name),
        };
        let Err(e) = new(&init) else {
            panic!("{name} {case:?} built, but must not");
        };
        let e = e.to_string();
        assert!(
            e.starts_with(&format!("plugins:1: {name}: ")),
            "{case:?}: {e}"
        );
    }
}

impl TempDir {
    /// Writes `contents` to the file `name` in the directory and returns its path (as
    /// [`TempDir::join`]).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks a plugin implements but leaves out of its hook set.

/// The hooks `plugin` implements but leaves out of [`Plugin::hooks`], where the engine would
/// never call them. Every hook not listed is called once with sample arguments (the `Step` is
/// dropped unpolled); a call that does not reach the trait's default method, or panics, is an
/// override and is reported.
pub fn unlisted_overrides(plugin: &dyn Plugin) -> Vec<Hook> {
    let listed = plugin.hooks();
    Hook::ALL
        .into_iter()
        .filter(|&hook| !listed.contains(hook) && !reaches_default(plugin, hook))
        .collect()
}

fn reaches_default(plugin: &dyn Plugin, hook: Hook) -> bool {
    take_default_reached();
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        call_with_samples(plugin, hook, &Samples::default())
    }));
    called.is_ok() && take_default_reached()
}

/// The values hook arguments borrow in [`unlisted_overrides`].
struct Samples {
    recipient: Recipient,
    outcome: Outcome,
    auth: AuthRequest,
}

impl Default for Samples {
    fn default() -> Samples {
        Samples {
            recipient: Recipient {
                addr: Address::default(),
                params: RcptParams::default(),
            },
            outcome: Outcome::Declined,
            auth: AuthRequest {
                mechanism: Mechanism::Plain,
                user: "user".to_string(),
                secret: Secret::Password("password".to_string()),
            },
        }
    }
}

/// A sample value for a hook argument of this type.
trait Sample<'s> {
    fn sample(samples: &'s Samples) -> Self;
}

impl<'s> Sample<'s> for &'s str {
    fn sample(_: &'s Samples) -> Self {
        ""
    }
}

impl<'s> Sample<'s> for &'s Recipient {
    fn sample(samples: &'s Samples) -> Self {
        &samples.recipient
    }
}

impl<'s> Sample<'s> for Hook {
    fn sample(_: &'s Samples) -> Self {
        Hook::Rcpt
    }
}

impl<'s> Sample<'s> for &'s Outcome {
    fn sample(samples: &'s Samples) -> Self {
        &samples.outcome
    }
}

impl<'s> Sample<'s> for &'s AuthRequest {
    fn sample(samples: &'s Samples) -> Self {
        &samples.auth
    }
}

/// `call_with_samples`, which calls any hook, from the hook list.
macro_rules! hook_caller {
    (
        hooks: [$($hooks:tt)*]
        chained: [$(
            $(#[$doc:meta])* $hook:ident $name:literal
            fn $method:ident(cx $(, $txn:ident)? $(; $($arg:ident: $ty:ty),+)?);
        )*]
    ) => {
        /// Calls `hook` of `plugin` with sample arguments and drops the step unpolled.
        fn call_with_samples(plugin: &dyn Plugin, hook: Hook, samples: &Samples) {
            let (mut cx, _svc) = cx("192.0.2.1:4242");
            let mut txn = Transaction::default();
            match hook {
                $(Hook::$hook => {
                    $(let $txn = &mut txn;)?
                    $($(let $arg = Sample::sample(samples);)+)?
                    drop(plugin.$method(&mut cx, $($txn,)? $($($arg,)+)?));
                })*
                Hook::Logging => {
                    let msg = format_args!("sample");
                    let record = LogRecord {
                        level: Level::Info,
                        conn: cx.conn.id,
                        source: "core",
                        msg: &msg,
                    };
                    plugin.logging(&record);
                }
            }
        }
    };
}

crate::for_each_hook!(hook_caller);

/// An AUTH attempt with a clear password (PLAIN or LOGIN) for `user`.
pub fn password_attempt(mechanism: Mechanism, user: &str, password: &str) -> AuthRequest {
    AuthRequest {
        mechanism,
        user: user.to_string(),
        secret: Secret::Password(password.to_string()),
    }
}

/// A CRAM-MD5 attempt for `user`: `digest` (hex) answers `challenge`.
pub fn cram_md5_attempt(user: &str, challenge: &str, digest: &str) -> AuthRequest {
    AuthRequest {
        mechanism: Mechanism::CramMd5,
        user: user.to_string(),
        secret: Secret::CramMd5 {
            challenge: challenge.to_string(),
            digest: digest.to_string(),
        },
    }
}

/// Runs `req` through `p`'s `auth` hook for a client at 192.0.2.1: its outcome and the lines
/// logged on the way.
pub fn auth_run(p: &dyn Plugin, req: &AuthRequest) -> (Outcome, Vec<String>) {
    let (mut c, svc) = cx("192.0.2.1:1");
    let out = run(p.auth(&mut c, req));
    let logs = svc
        .logs
        .borrow()
        .iter()
        .map(|(_, _, m)| m.clone())
        .collect();
    (out, logs)
}

/// [`auth_run`] for a [`password_attempt`].
pub fn auth_attempt(
    p: &dyn Plugin,
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> (Outcome, Vec<String>) {
    auth_run(p, &password_attempt(mechanism, user, password))
}

/// Spools `message` into `body` as the engine does for a large one: the whole message in the
/// file `path`, its header section in memory.
pub fn spool(body: &mut Body, path: &Path, message: &[u8]) {
    std::fs::write(path, message).expect("write the spool file");
    let headers = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    body.mem = message[..headers].to_vec();
    body.header_end = Some(headers);
    body.len = message.len() as u64;
    body.spool = Some(SpoolFile {
        path: path.to_path_buf(),
        file: std::fs::File::open(path).expect("open the spool file"),
    });
}

/// Writes the program `text` (starting with its `#!` line) to `path`, executable (mode 0755):
/// a stand-in for a real program that a plugin runs.
pub fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the test program");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the test program executable");
}

/// As [`build`], with the instance name and the arguments given apart: an argument may then
/// hold a blank (which no `config/plugins` line can give), to test that a plugin refuses it.
pub fn build_args<T>(
    new: impl FnOnce(&PluginInit<'_>) -> Result<T, ConfigError>,
    name: &str,
    args: &[&str],
    files: &[(&str, &str)],
) -> Result<T, ConfigError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = MemConfig::new(files);
    new(&PluginInit {
        name,
        args: &args,
        config: &config,
        origin: &origin(&format!("{name} {}", args.join(" "))),
    })
}

/// The peer of a plugin's network client: a TCP server on 127.0.0.1 whose `serve` answers
/// each connection on a thread of its own and records there what the test wants to see.
pub struct FakePeer<T> {
    pub port: u16,
    seen: Arc<Mutex<Vec<T>>>,
    active: Arc<AtomicUsize>,
}

impl<T: Send + 'static> FakePeer<T> {
    /// Listens on a free port; `serve` gets each connection and the record to add to.
    pub fn start(serve: impl Fn(TcpStream, &Mutex<Vec<T>>) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let port = listener.local_addr().expect("a bound test port").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let active = Arc::new(AtomicUsize::new(0));
        let (serve, log, count) = (Arc::new(serve), seen.clone(), active.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                let (serve, log, served) = (serve.clone(), log.clone(), Served(count.clone()));
                std::thread::spawn(move || {
                    let _served = served;
                    serve(conn, &log)
                });
            }
        });
        FakePeer { port, seen, active }
    }

    /// What was recorded since the last call, once every connection has ended (5 s at the
    /// most: a client may close without waiting for the last answer).
    pub fn take(&self) -> Vec<T> {
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Counts a connection as served when its thread ends, even by a panic.
struct Served(Arc<AtomicUsize>);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
