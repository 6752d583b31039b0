//! Entry points for the fuzz targets in `fuzz/` (docs/fuzzing.md): each takes arbitrary bytes,
//! runs one of the parsers that read what a client, a proxy or a DNS server sends, and panics
//! if an invariant the parser promises does not hold. They are ordinary functions: the corpus
//! replay (`cargo test -p ringsmtpd-fuzz`) and libFuzzer call the same code.
//!
//! Where a target needs a setting (a policy, a line limit, where the input is cut into
//! reads), the first byte of the input chooses it, so the fuzzer explores those too.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism};
use ringsmtpd_plugin_api::dns::QType;
use ringsmtpd_plugin_api::testing::MemConfig;
use ringsmtpd_plugin_api::{
    Connection, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use crate::config::Settings;
use crate::hooks::Chains;
use crate::proto::bdat::ChunkScanner;
use crate::proto::command::{self, Command};
use crate::proto::data::{BareNewline, DataReceiver, DataStatus};
use crate::proto::line::{Line, Lines};
use crate::proto::{params, proxy};
use crate::services::WorkerServices;
use crate::session::script::Script;
use crate::session::{AuthPolicy, Env, Session};
use crate::shutdown::Shutdown;

/// The settings byte: bit 0 picks the bare-newline policy, bit 1 the RFC line limit (998) or
/// a small one (the rest of the byte + 1) so over-long lines are common.
fn setup(byte: u8) -> (BareNewline, usize) {
    let policy = if byte & 1 == 0 {
        BareNewline::Reject
    } else {
        BareNewline::Normalize
    };
    let max_line = if byte & 2 == 0 {
        998
    } else {
        usize::from(byte >> 2) + 1
    };
    (policy, max_line)
}

/// Command framing and parsing, as the session reads a pipelined batch: every line of the
/// input through [`Lines`], each command line through [`command::parse`], and the path and
/// parameters of MAIL and RCPT through their parsers.
pub fn command(data: &[u8]) {
    let Some((&first, mut input)) = data.split_first() else {
        return;
    };
    let (policy, _) = setup(first);
    let max_line = if first & 2 == 0 { 512 } else { 64 };
    let mut lines = Lines::new(policy, max_line);
    while let Some((line, used)) = lines.next(input) {
        assert!(
            used > 0 && used <= input.len(),
            "line framing consumed {used}"
        );
        input = &input[used..];
        let Line::Command(line) = line else { continue };
        match command::parse(line) {
            Ok(Command::Mail { path, params }) => {
                let _ = ringsmtpd_plugin_api::address::parse_path(path, true, first & 4 != 0);
                let _ = params::parse_mail_params(params);
            }
            Ok(Command::Rcpt { path, params }) => {
                let _ = ringsmtpd_plugin_api::address::parse_path(path, false, first & 4 != 0);
                let _ = params::parse_rcpt_params(params);
            }
            Ok(_) => {}
            Err(e) => assert!((500..=555).contains(&e.code), "syntax error {}", e.code),
        }
    }
    if input.len() >= max_line {
        let dropped = lines.overflow(input);
        assert!(dropped <= input.len());
    }
}

/// ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2): any text, refused with 501 or 555 only.
pub fn esmtp_params(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for code in [
        params::parse_mail_params(text).err().map(|e| e.code),
        params::parse_rcpt_params(text).err().map(|e| e.code),
    ]
    .into_iter()
    .flatten()
    {
        assert!(code == 501 || code == 555, "parameter error {code}");
    }
}

/// What a whole feed of DATA input became: output, bytes consumed, and how it ended.
#[derive(Debug, PartialEq)]
struct Fed {
    out: Vec<u8>,
    used: usize,
    status: DataStatus,
}

/// Feeds `parts` one after another as reads, going on after each `LineTooLong` report as the
/// session does, until the data ends, a bare newline fails it, or the input runs out.
fn feed_data(policy: BareNewline, max_line: usize, parts: &[&[u8]]) -> Fed {
    let mut rx = DataReceiver::new(policy, max_line);
    let mut out = Vec::new();
    let mut used = 0;
    for part in parts {
        let mut at = 0;
        loop {
            let (n, status) = rx.feed(&part[at..], &mut out);
            assert!(n <= part.len() - at, "consumed {n} of {}", part.len() - at);
            at += n;
            used += n;
            match status {
                DataStatus::LineTooLong => continue,
                DataStatus::NeedMore => {
                    assert_eq!(at, part.len(), "NeedMore left input unread");
                    break;
                }
                status => {
                    return Fed { out, used, status };
                }
            }
        }
    }
    assert_eq!(rx.emitted(), out.len() as u64);
    Fed {
        out,
        used,
        status: DataStatus::NeedMore,
    }
}

/// The DATA receiver (dot-unstuffing, the end of data, bare CR/LF): the input in one read and
/// cut in two at a point the second byte chooses must give the same message and the same end
/// (a chunk boundary anywhere, even inside CRLF or CRLF.CRLF, changes nothing). A finished
/// message never holds a bare CR or LF under `reject`.
pub fn data_receiver(data: &[u8]) {
    let [first, cut, input @ ..] = data else {
        return;
    };
    let (policy, max_line) = setup(*first);
    let whole = feed_data(policy, max_line, &[input]);
    let at = usize::from(*cut) * input.len() / 255;
    let (a, b) = input.split_at(at);
    let split = feed_data(policy, max_line, &[a, b]);
    assert_eq!(whole.status, split.status, "end differs when cut at {at}");
    if whole.status != DataStatus::BareNewline {
        assert_eq!(whole, split, "message differs when cut at {at}");
    }
    if whole.status == DataStatus::Done {
        assert_line_ends_are_crlf(&whole.out);
    }
}

/// Every CR in `msg` is followed by LF and every LF preceded by CR.
fn assert_line_ends_are_crlf(msg: &[u8]) {
    for (i, &b) in msg.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(msg.get(i + 1), Some(&b'\n'), "bare CR at {i}"),
            b'\n' => assert!(i > 0 && msg[i - 1] == b'\r', "bare LF at {i}"),
            _ => {}
        }
    }
}

/// Pushes `chunks` through a BDAT scanner and finishes: the output, or that a bare newline
/// refused the message.
fn scan_chunks(policy: BareNewline, max_line: usize, chunks: &[&[u8]]) -> Option<Vec<u8>> {
    let mut scanner = ChunkScanner::new(policy, max_line);
    let mut out = Vec::new();
    for chunk in chunks {
        match scanner.push(chunk, &mut out) {
            Ok(()) | Err(DataStatus::LineTooLong) => {}
            Err(_) => return None,
        }
    }
    match scanner.finish(&mut out) {
        Ok(()) | Err(DataStatus::LineTooLong) => {}
        Err(_) => return None,
    }
    assert_eq!(scanner.emitted(), out.len() as u64);
    Some(out)
}

/// The BDAT receiver (RFC 3030): content cut into chunks anywhere gives the same message, or
/// the same refusal, as one chunk; an accepted message has only CRLF line ends.
pub fn bdat_receiver(data: &[u8]) {
    let [first, cut, input @ ..] = data else {
        return;
    };
    let (policy, max_line) = setup(*first);
    let whole = scan_chunks(policy, max_line, &[input]);
    let step = usize::from(*cut) + 1;
    let chunks: Vec<&[u8]> = input.chunks(step).collect();
    let split = scan_chunks(policy, max_line, &chunks);
    assert_eq!(whole, split, "chunks of {step} differ from one chunk");
    if let Some(msg) = whole {
        assert_line_ends_are_crlf(&msg);
    }
}

/// The PROXY protocol v1/v2 header parser: what it consumes is within the input, and every
/// prefix of a header it accepts is "need more bytes" (a proxy's header may arrive in pieces).
pub fn proxy_header(data: &[u8]) {
    if let Ok(Some((header, used))) = proxy::parse(data) {
        assert!(used <= data.len(), "consumed {used} of {}", data.len());
        assert_eq!(header.source.is_some(), header.destination.is_some());
        for n in 0..used {
            assert!(
                matches!(proxy::parse(&data[..n]), Ok(None)),
                "prefix of {n} bytes of an accepted header is not 'need more'"
            );
        }
    }
}

/// What a stream of length-framed replies became, read as a connection reads it: each reply
/// with the bytes it took, then the refusal that closed the connection (which drops what it
/// holds: `left` is 0), or how many bytes were left waiting for more.
#[derive(Debug, PartialEq)]
pub struct ReplyStream<R, E> {
    pub replies: Vec<(R, usize)>,
    pub error: Option<E>,
    pub left: usize,
}

/// Feeds `parts` one after another into a buffer, as a connection accumulates its reads, and
/// after each parses replies from the front of the buffer with `parse` until one needs more
/// bytes or is refused (the connection then closes: later parts are never read). A reply
/// takes at least one byte and never more than the buffer holds.
pub fn read_replies<R, E>(
    parse: impl Fn(&[u8]) -> Result<Option<(R, usize)>, E>,
    parts: &[&[u8]],
) -> ReplyStream<R, E> {
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    for part in parts {
        buf.extend_from_slice(part);
        loop {
            match parse(&buf) {
                Ok(Some((reply, used))) => {
                    assert!(
                        used > 0 && used <= buf.len(),
                        "took {used} of {}",
                        buf.len()
                    );
                    buf.drain(..used);
                    replies.push((reply, used));
                }
                Ok(None) => break,
                Err(e) => {
                    return ReplyStream {
                        replies,
                        error: Some(e),
                        left: 0,
                    }
                }
            }
        }
    }
    ReplyStream {
        replies,
        error: None,
        left: buf.len(),
    }
}

/// Reads `input` as one read and cut in two at a point `cut` (0..=255) picks: the same replies,
/// the same refusal, the same bytes left (a read boundary anywhere changes nothing). Returns
/// the stream read whole.
pub fn read_replies_cut_anywhere<R, E>(
    parse: impl Fn(&[u8]) -> Result<Option<(R, usize)>, E>,
    input: &[u8],
    cut: u8,
) -> ReplyStream<R, E>
where
    R: std::fmt::Debug + PartialEq,
    E: std::fmt::Debug + PartialEq,
{
    let whole = read_replies(&parse, &[input]);
    let at = usize::from(cut) * input.len() / 255;
    let (a, b) = input.split_at(at);
    let split = read_replies(&parse, &[a, b]);
    assert_eq!(whole, split, "replies differ when the input is cut at {at}");
    whole
}

/// The Redis store backend's RESP2 reader (`src/store/resp.rs`) over what a server sends: the
/// replies read whole and cut in two at a point the first byte picks are the same; every value
/// is within the bounds (a line of at most `MAX_LINE` bytes, a bulk string of at most
/// `MAX_BULK`); an array (the only nesting in RESP2) is always refused; and "need more" only
/// ever waits for a line of at most `MAX_LINE` bytes or for the body of a bulk string whose
/// announced length is within `MAX_BULK`.
pub fn resp_reply(data: &[u8]) {
    use crate::store::resp::{self, Value, MAX_BULK, MAX_LINE};
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let stream = read_replies_cut_anywhere(resp::parse, input, cut);
    let mut at = 0;
    for (value, used) in &stream.replies {
        let start = input[at];
        at += used;
        match value {
            Value::Simple(s) | Value::Error(s) => {
                assert!(s.len() <= MAX_LINE, "line of {} bytes", s.len());
                assert!(!s.contains(&b'\n'), "LF in a line");
                assert_eq!(*used, s.len() + 3);
            }
            // `:-01` and `$-01` (the null bulk) are accepted: the reader takes any digits.
            Value::Int(_) | Value::Bulk(None) => assert!(*used <= MAX_LINE + 2),
            Value::Bulk(Some(b)) => {
                assert!(b.len() <= MAX_BULK, "bulk of {} bytes", b.len());
                assert!(*used <= MAX_LINE + 2 + b.len() + 2);
            }
        }
        assert_ne!(start, b'*', "an array was accepted");
    }
    let rest = &input[at..];
    if stream.error.is_some() {
        return;
    }
    assert_eq!(stream.left, rest.len(), "bytes left waiting");
    match rest.iter().position(|&b| b == b'\n') {
        None => assert!(
            rest.len() <= MAX_LINE + 1,
            "waits on a {}-byte line",
            rest.len()
        ),
        Some(lf) => {
            // Only a bulk string's body is waited for, and only one within the bounds.
            let header = rest[..lf].strip_suffix(b"\r").expect("line ends in CRLF");
            let len: i64 = std::str::from_utf8(header.strip_prefix(b"$").expect("a bulk"))
                .ok()
                .and_then(|n| n.parse().ok())
                .expect("a bulk length");
            let len = usize::try_from(len).expect("a bulk length of 0 or more");
            assert!(
                len <= MAX_BULK && rest.len() < lf + 1 + len + 2,
                "waits on {len}"
            );
        }
    }
}

/// The embedded store's files (`src/store/file.rs`), as a damaged disk or a crash leaves them:
/// the first byte picks a snapshot or a log. A snapshot that loads saves and loads back to
/// the same entries; a log's intact part replays alone to the same table with nothing torn,
/// and what it reports intact is never longer than what it read.
pub fn store_files(data: &[u8]) {
    use crate::store::file::{self, Replayed};
    use ringsmtpd_plugin_api::store::Table;
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let entries = |t: &Table| {
        let mut v: Vec<_> = t
            .live_entries(0)
            .into_iter()
            .map(|(k, e)| (k.as_bytes().to_vec(), e.value.clone(), e.expires))
            .collect();
        v.sort();
        v
    };
    let mut table = Table::new(64);
    if pick & 1 == 0 {
        let Ok(generation) = file::decode(input, &mut table, 0) else {
            return;
        };
        let mut back = Table::new(64);
        let again = file::decode(&file::encode(&table, 0, generation), &mut back, 0);
        assert_eq!(again, Ok(generation));
        assert_eq!(entries(&back), entries(&table));
        return;
    }
    let generation = u64::from(pick >> 1);
    let Ok(Replayed::Applied { records, valid, .. }) =
        file::replay(input, &mut table, 0, generation)
    else {
        return;
    };
    assert!(valid <= input.len(), "intact {valid} of {}", input.len());
    let mut alone = Table::new(64);
    assert_eq!(
        file::replay(&input[..valid], &mut alone, 0, generation),
        Ok(Replayed::Applied {
            records,
            valid,
            torn: None
        })
    );
    assert_eq!(entries(&alone), entries(&table));
}

/// The DNS client's reply reader: the bytes a server sends, decoded (hickory-proto), checked
/// against our question and interpreted (CNAME chains, TTLs, negative caching). The first byte
/// picks the query type; the question is `fuzz.example.test`.
pub fn dns_reply(data: &[u8]) {
    use crate::dns::wire;
    const TYPES: [QType; 7] = [
        QType::A,
        QType::Aaaa,
        QType::Mx,
        QType::Txt,
        QType::Ptr,
        QType::Cname,
        QType::Ns,
    ];
    let Some((&first, packet)) = data.split_first() else {
        return;
    };
    let qtype = TYPES[usize::from(first) % TYPES.len()];
    let q = wire::question("fuzz.example.test", qtype).expect("a valid question");
    let Ok(msg) = hickory_proto::op::Message::from_vec(packet) else {
        return;
    };
    let _ = wire::is_reply_to(&msg, msg.metadata.id, &q);
    // The client interprets only replies to its question; interpreting every message explores
    // more of the interpreter, which must hold up to anything.
    if let wire::Verdict::Answer(a) = wire::interpret(&msg, &q) {
        assert!(a.ttl <= wire::MAX_POSITIVE_TTL.max(wire::MAX_NEGATIVE_TTL));
    }
}

/// The worker a fuzzed session runs on, made once per fuzzing thread as a real worker is: one
/// runtime, and one `Env` per bare-newline policy that all its sessions share.
struct Worker {
    runtime: monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>,
    envs: [Option<Rc<Env>>; 2],
}

thread_local! {
    static WORKER: RefCell<Option<Worker>> = const { RefCell::new(None) };
}

/// An auth backend for the fuzzed session: user `u` with password `pw` (any mechanism, CRAM-MD5
/// too) is accepted; anything else is a temporary failure, which the session answers at once
/// (a refusal would wait on the anti-guessing timer, seconds per input).
struct FuzzAuth;

impl Plugin for FuzzAuth {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }
    fn auth<'a>(&'a self, _: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        Step::Ready(if req.user == "u" && req.matches_password("pw") {
            Outcome::Ok(None)
        } else {
            Outcome::DenySoft(None)
        })
    }
    fn auth_mechanisms(&self) -> &'static [Mechanism] {
        &Mechanism::ALL
    }
}

/// The worker's `Env` for a policy: AUTH without TLS (`FuzzAuth`), `rcpt_ok` for
/// example.test, then `queue/discard`.
fn session_env(bare: &str) -> Env {
    let files = [
        ("me", "mx.example.test"),
        ("rcpthosts", "example.test"),
        ("bare_newline", bare),
        ("databytes", "100000"),
        ("timeout", "5"),
        ("tls_before_auth", "0"),
    ];
    let cfg = MemConfig::new(&files);
    let settings = Settings::load(&cfg).expect("fuzz settings");
    let plugin = |name: &str| {
        let origin = ringsmtpd_plugin_api::testing::origin(name);
        let init = PluginInit {
            name,
            args: &[],
            config: &cfg,
            origin: &origin,
        };
        ringsmtpd_plugins::find(name).expect("known plugin")(&init).expect("plugin builds")
    };
    let plugins: Vec<(&str, Box<dyn Plugin>)> = vec![
        ("fuzz_auth", Box::new(FuzzAuth)),
        ("rcpt_ok", plugin("rcpt_ok")),
        ("queue/discard", plugin("queue/discard")),
    ];
    Env {
        chains: Chains::from_instances(plugins, settings.plugin_timeout),
        settings: Arc::new(settings),
        tls: None,
        auth: AuthPolicy::load(&cfg).expect("auth policy"),
        metrics: Arc::default(),
        dns: None,
        svc: Rc::new(WorkerServices::new("mx.example.test".into())),
        shutdown: Rc::new(Shutdown::default()),
    }
}

/// A whole session on a scripted transport (no sockets): the banner, then the input as the
/// client's reads, then EOF. The plugins are an auth backend (AUTH PLAIN, LOGIN, CRAM-MD5 over
/// plain text), `rcpt_ok` for example.test and `queue/discard`, so a message can go all the way. The first byte: bit 0 the bare-newline policy, bits 1..=6
/// the size of each read (0: the whole input in one read). Every reply is a well-formed SMTP
/// reply line.
pub fn session(data: &[u8]) {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    crate::log::set_level(Level::Emerg);
    let policy = usize::from(first & 1);
    let step = usize::from((first >> 1) & 0x3f);
    let reads: Vec<Vec<u8>> = if step == 0 {
        vec![input.to_vec()]
    } else {
        input.chunks(step).map(<[u8]>::to_vec).collect()
    };
    let out = Rc::new(RefCell::new(Vec::new()));
    let script = Script {
        input: reads.into(),
        out: out.clone(),
        ..Script::default()
    };
    WORKER.with(|worker| {
        let mut worker = worker.borrow_mut();
        let worker = worker.get_or_insert_with(|| Worker {
            runtime: monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .attach_thread_pool(Box::new(monoio::blocking::DefaultThreadPool::new(2)))
                .build()
                .expect("runtime"),
            envs: [None, None],
        });
        let Worker { runtime, envs } = worker;
        runtime.block_on(async {
            let env = envs[policy]
                .get_or_insert_with(|| Rc::new(session_env(["reject", "accept-normalize"][policy])))
                .clone();
            let conn = Connection::new(
                1,
                ([192, 0, 2, 1], 4321).into(),
                ([127, 0, 0, 1], 25).into(),
            );
            Session::new(env, script, conn, &[]).run().await
        });
    });
    let out = out.borrow();
    assert!(out.ends_with(b"\r\n"), "output ends inside a reply line");
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(
            line.len() >= 5
                && line[..3].iter().all(u8::is_ascii_digit)
                && matches!(line[3], b' ' | b'-')
                && line.ends_with(b"\r"),
            "malformed reply line {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(
            !line[..line.len() - 1]
                .iter()
                .any(|&b| b < 0x20 && b != b'\t'),
            "control character in a reply: {:?}",
            String::from_utf8_lossy(line)
        );
        assert!(
            line.len() <= 512,
            "reply line over 512 bytes (RFC 5321 §4.5.3.1.5)"
        );
    }
}
