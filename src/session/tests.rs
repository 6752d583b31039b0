//! Session tests without sockets: a scripted transport feeds bytes, the replies are parsed
//! and checked for code and enhanced code.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringsmtpd_plugin_api::testing::MemConfig;
use ringsmtpd_plugin_api::{
    Connection, Cx, Hook, HookSet, MailParams, Outcome, Plugin, Recipient, Step, Transaction,
};

use super::script::Script;
use super::{End, Env, Session};
use crate::config::Settings;
use crate::hooks::Chains;
use crate::runtime::{self, Driver};
use crate::services::WorkerServices;
use crate::shutdown::Shutdown;

/// What the capture queue saw of one message.
#[derive(Debug, Clone, Default)]
struct Captured {
    sender: String,
    mail_params: MailParams,
    rcpts: Vec<Recipient>,
    added_headers: String,
    body: Vec<u8>,
    spooled: bool,
    /// `txn.body.header_bytes()`: what header checks see.
    header: Vec<u8>,
}

/// A queue plugin that keeps every message in memory.
struct Capture(Rc<RefCell<Vec<Captured>>>);

impl Plugin for Capture {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }
    fn queue<'a>(&'a self, _cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let body = match &txn.body.spool {
            Some(s) => std::fs::read(&s.path).unwrap_or_default(),
            None => txn.body.mem.clone(),
        };
        self.0.borrow_mut().push(Captured {
            sender: txn.sender.as_str().to_string(),
            mail_params: txn.mail_params.clone(),
            rcpts: txn.recipients.clone(),
            added_headers: txn.added_headers.clone(),
            body,
            spooled: txn.body.spool.is_some(),
            header: txn.body.header_bytes().to_vec(),
        });
        Step::Ready(Outcome::ok("2.0.0 Captured"))
    }
}

/// A plugin answering `outcome` at `hook`.
struct Answer(Hook, Outcome);

impl Plugin for Answer {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[self.0])
    }
    fn connect<'a>(&'a self, _cx: &'a mut Cx) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
    fn mail<'a>(&'a self, _: &'a mut Cx, _: &'a mut Transaction) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
    fn rcpt<'a>(&'a self, _: &'a mut Cx, _: &'a mut Transaction, _: &'a Recipient) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
    fn data<'a>(&'a self, _: &'a mut Cx, _: &'a mut Transaction) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
    fn data_post<'a>(&'a self, _: &'a mut Cx, _: &'a mut Transaction) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
    fn quit<'a>(&'a self, _: &'a mut Cx) -> Step<'a> {
        Step::Ready(self.1.clone())
    }
}

struct Harness {
    files: Vec<(&'static str, String)>,
    plugins: Vec<(&'static str, Box<dyn Plugin>)>,
    captured: Rc<RefCell<Vec<Captured>>>,
    hang: bool,
    shutdown_before: bool,
    /// Where the transport writes (a test may watch it during the session).
    output: Option<Rc<RefCell<Vec<u8>>>>,
    /// The client's address.
    remote: &'static str,
    /// The worker's counters the session writes to.
    metrics: Arc<crate::metrics::WorkerMetrics>,
}

/// The outcome of a scripted session.
struct Run {
    replies: Vec<(u16, String, String)>,
    raw: String,
    end: End,
    writes: usize,
    captured: Vec<Captured>,
    marks: Vec<usize>,
}

impl Run {
    /// The codes of all replies (one per reply, multi-line replies count once).
    fn codes(&self) -> Vec<u16> {
        self.replies.iter().map(|r| r.0).collect()
    }
    fn reply(&self, i: usize) -> (u16, &str, &str) {
        let r = &self.replies[i];
        (r.0, r.1.as_str(), r.2.as_str())
    }
}

impl Harness {
    /// rcpt_ok for example.test, a capture queue.
    fn new() -> Harness {
        let captured = Rc::new(RefCell::new(Vec::new()));
        let cfg = MemConfig::new(&[("rcpthosts", "example.test\n"), ("me", "mx.example.test\n")]);
        let origin = ringsmtpd_plugin_api::testing::origin("rcpt_ok");
        let init = ringsmtpd_plugin_api::PluginInit {
            name: "rcpt_ok",
            args: &[],
            config: &cfg,
            origin: &origin,
        };
        let rcpt_ok =
            ringsmtpd_plugins::find("rcpt_ok").expect("rcpt_ok exists")(&init).expect("builds");
        Harness {
            files: vec![("me", "mx.example.test".into())],
            plugins: vec![
                ("rcpt_ok", rcpt_ok),
                ("capture", Box::new(Capture(captured.clone()))),
            ],
            captured,
            hang: false,
            shutdown_before: false,
            output: None,
            remote: "192.0.2.1:4321",
            metrics: Arc::default(),
        }
    }

    fn bare() -> Harness {
        Harness {
            plugins: Vec::new(),
            ..Harness::new()
        }
    }

    fn file(mut self, name: &'static str, value: &str) -> Harness {
        self.files.push((name, value.to_string()));
        self
    }

    fn plugin(mut self, name: &'static str, p: Box<dyn Plugin>) -> Harness {
        self.plugins.insert(0, (name, p));
        self
    }

    fn named(mut self, line: &'static str) -> Harness {
        let mut words = line.split_whitespace();
        let name = words.next().expect("plugin name");
        let args: Vec<String> = words.map(str::to_string).collect();
        let cfg = MemConfig::default();
        let origin = ringsmtpd_plugin_api::testing::origin(line);
        let init = ringsmtpd_plugin_api::PluginInit {
            name,
            args: &args,
            config: &cfg,
            origin: &origin,
        };
        let p = ringsmtpd_plugins::find(name).expect("known plugin")(&init).expect("builds");
        self.plugins.insert(0, (name, p));
        self
    }

    fn run(self, chunks: &[&[u8]]) -> Run {
        let files: Vec<(&str, &str)> = self.files.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let settings = Settings::load(&MemConfig::new(&files)).expect("test settings");
        let out = self.output.clone().unwrap_or_default();
        let writes = Rc::new(RefCell::new(0));
        let marks = Rc::new(RefCell::new(Vec::with_capacity(chunks.len() + 8)));
        out.borrow_mut().reserve(1 << 20);
        let on_read = {
            let marks = marks.clone();
            move || {
                marks
                    .borrow_mut()
                    .push(ringsmtpd_plugin_api::testing::allocations())
            }
        };
        let script = Script {
            input: chunks.iter().map(|c| c.to_vec()).collect(),
            hang_at_end: self.hang,
            out: out.clone(),
            writes: writes.clone(),
            on_read: Some(Box::new(on_read)),
        };
        let plugins = self.plugins;
        let shutdown_before = self.shutdown_before;
        let remote = self.remote;
        let metrics = self.metrics.clone();
        let end = runtime::run_on(Driver::Epoll, move || async move {
            let mut chains = Chains::from_instances(plugins, settings.plugin_timeout);
            chains.attach_metrics(&metrics);
            let svc = Rc::new(WorkerServices::new(settings.me.clone()));
            let shutdown = Rc::new(Shutdown::default());
            if shutdown_before {
                shutdown.trigger();
            }
            let env = Rc::new(Env {
                settings: Arc::new(settings),
                tls: None,
                auth: super::AuthPolicy::load(&MemConfig::new(&files)).expect("auth policy"),
                metrics,
                dns: None,
                chains,
                svc,
                shutdown,
            });
            let conn = Connection::new(7, remote.parse().unwrap(), "127.0.0.1:25".parse().unwrap());
            Session::new(env, script, conn, &[]).run().await
        })
        .expect("runtime");
        let raw = String::from_utf8_lossy(&out.borrow()).into_owned();
        let mut replies = Vec::new();
        for line in raw.split("\r\n").filter(|l| !l.is_empty()) {
            let code: u16 = line[..3].parse().expect("reply code");
            let rest = &line[4..];
            let (enh, text) = match rest.split_once(' ') {
                Some((e, t)) if e.split('.').count() == 3 && e.as_bytes()[0].is_ascii_digit() => {
                    (e, t)
                }
                _ => ("", rest),
            };
            if line.as_bytes()[3] == b' ' {
                replies.push((code, enh.to_string(), text.to_string()));
            }
        }
        let writes = *writes.borrow();
        let captured = self.captured.borrow().clone();
        let marks = marks.borrow().clone();
        Run {
            replies,
            raw,
            end,
            writes,
            captured,
            marks,
        }
    }
}

const EHLO: &[u8] = b"EHLO client.example.org\r\n";
const MAIL: &[u8] = b"MAIL FROM:<a@example.org>\r\n";
const RCPT: &[u8] = b"RCPT TO:<u@example.test>\r\n";

#[test]
fn banner_and_quit() {
    let r = Harness::new().run(&[b"QUIT\r\n"]);
    assert_eq!(r.codes(), vec![220, 221]);
    assert_eq!(r.reply(1).1, "2.0.0");
    assert!(r.raw.starts_with("220 mx.example.test ESMTP"));
    assert_eq!(r.end, End::Quit);
}

/// A queue plugin that relays (it carries the DSN parameters downstream) and accepts.
struct DsnRelay;

impl Plugin for DsnRelay {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Queue])
    }
    fn queue<'a>(&'a self, _cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        Step::Ready(Outcome::Ok(None))
    }
    fn carries_dsn(&self) -> bool {
        true
    }
}

#[test]
fn dsn_is_offered_only_when_every_queue_plugin_carries_it() {
    let offers_dsn = |h: Harness| {
        let r = h.run(&[EHLO]);
        r.raw.contains("250-DSN\r\n") || r.raw.contains("250 DSN\r\n")
    };
    assert!(!offers_dsn(Harness::new()), "delivered here: no DSN");
    let mut relay_only = Harness::new().plugin("relay", Box::new(DsnRelay));
    relay_only.plugins.retain(|(name, _)| *name != "capture");
    assert!(offers_dsn(relay_only), "every queue plugin relays DSN");
    assert!(
        !offers_dsn(Harness::new().plugin("relay", Box::new(DsnRelay))),
        "one queue plugin that delivers here withdraws the offer"
    );
}

#[test]
fn ehlo_advertises_extensions_and_may_be_repeated() {
    let r = Harness::new().run(&[EHLO, EHLO, b"HELO x\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250]);
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SIZE 52428800",
        "ENHANCEDSTATUSCODES",
        "SMTPUTF8",
        "CHUNKING",
    ] {
        assert!(
            r.raw.contains(&format!("250-{ext}\r\n")) || r.raw.contains(&format!("250 {ext}\r\n")),
            "{ext}"
        );
    }
    assert!(r
        .raw
        .contains("250 mx.example.test Hi unknown [192.0.2.1]; I am so happy"));
}

#[test]
fn a_whole_transaction_pipelined_is_answered_in_one_write() {
    let batch = [
        EHLO,
        MAIL,
        RCPT,
        b"RCPT TO:<v@example.test>\r\n",
        b"DATA\r\n",
    ]
    .concat();
    let r = Harness::new().run(&[&batch, b"Subject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 250, 354, 250, 221]);
    assert_eq!(r.reply(2).1, "2.1.0");
    assert_eq!(r.reply(3).1, "2.1.5");
    assert_eq!(r.reply(6), (250, "2.0.0", "Captured"));
    // banner; the batch up to 354; message reply + 221 (pipelined after the dot).
    assert_eq!(r.writes, 3);
    let m = &r.captured[0];
    assert_eq!(m.sender, "a@example.org");
    assert_eq!(m.rcpts.len(), 2);
    assert_eq!(m.body, b"Subject: hi\r\n\r\n.dot\r\nbody\r\n");
    assert!(m
        .added_headers
        .starts_with("Authentication-Results: mx.example.test; auth=none\r\n"));
    assert!(m.added_headers.contains("Received: from unknown (HELO client.example.org) (192.0.2.1)\r\n\tby mx.example.test (ringsmtpd/"));
    assert!(m.added_headers.contains(" with ESMTP; "));
}

#[test]
fn sequence_errors() {
    let r = Harness::new().run(&[
        MAIL,
        EHLO,
        RCPT,
        b"DATA\r\n",
        MAIL,
        MAIL,
        b"DATA\r\n",
        b"BDAT 3 LAST\r\nabc",
        b"RSET\r\n",
    ]);
    assert_eq!(
        r.codes(),
        vec![220, 503, 250, 503, 503, 250, 503, 503, 503, 250]
    );
    assert_eq!(r.reply(1), (503, "5.5.1", "please say hello first ..."));
    assert_eq!(r.reply(3).2, "Use MAIL before RCPT");
    assert_eq!(r.reply(4).2, "MAIL first");
    assert_eq!(r.reply(6).2, "Error: nested MAIL command");
    assert_eq!(r.reply(7).2, "RCPT first");
    assert_eq!(r.reply(8).2, "RCPT first"); // BDAT without recipients; its 3 bytes skipped
}

#[test]
fn recipients_local_foreign_and_undecided() {
    let r = Harness::new().run(&[
        EHLO,
        MAIL,
        RCPT,
        b"RCPT TO:<x@elsewhere.org>\r\n",
        b"RCPT TO:<postmaster>\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 550, 250]);
    assert_eq!(r.reply(4).1, "5.7.1");
    // Nobody decides: never an open relay.
    let r = Harness::bare().run(&[EHLO, MAIL, RCPT]);
    assert_eq!(
        r.reply(3),
        (450, "4.7.1", "No plugin decided if relaying is allowed")
    );
}

#[test]
fn no_queue_plugin_is_a_temporary_failure() {
    let mut h = Harness::new();
    h.plugins.retain(|(name, _)| *name != "capture");
    let r = h.run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n"]);
    assert_eq!(
        r.replies.last().unwrap(),
        &(
            451,
            "4.3.0".into(),
            "Queuing declined or disabled; try again later".into()
        )
    );
}

#[test]
fn size_declared_and_actual() {
    let h = Harness::new().file("databytes", "100");
    let r = h.run(&[
        EHLO,
        b"MAIL FROM:<a@example.org> SIZE=101\r\n",
        b"MAIL FROM:<a@example.org> SIZE=100\r\n",
        RCPT,
        b"DATA\r\n",
        &[b"x".repeat(150).as_slice(), b"\r\n.\r\nNOOP\r\n"].concat(),
    ]);
    assert_eq!(r.codes(), vec![220, 250, 552, 250, 250, 354, 552, 250]);
    assert_eq!(r.reply(2).1, "5.3.4");
    assert_eq!(r.reply(6), (552, "5.3.4", "Message too big!"));
    assert!(r.captured.is_empty());
}

#[test]
fn bare_newlines_are_refused_and_close() {
    let r = Harness::new().run(&[b"EHLO x\n", b"QUIT\r\n"]);
    assert_eq!(r.codes(), vec![220, 521]);
    assert_eq!(r.reply(1).1, "5.5.2");
    assert_eq!(r.end, End::BareNewline);
    // A bare CR inside a command line is refused the same way; the hidden MAIL never runs.
    let r = Harness::new().run(&[EHLO, b"NOOP\rMAIL FROM:<evil@x>\r\nNOOP\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 521]);
    assert_eq!(r.end, End::BareNewline);
    // The smuggling probe: "\n.\r\n" does not end DATA, it ends the session, nothing queued.
    let r = Harness::new().run(&[
        EHLO,
        MAIL,
        RCPT,
        b"DATA\r\n",
        b"Subject: x\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x>\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 354, 521]);
    assert!(r.captured.is_empty());
}

#[test]
fn normalize_mode_accepts_bare_lf_but_never_as_end_of_data() {
    let h = Harness::new().file("bare_newline", "accept-normalize");
    let r = h.run(&[
        b"EHLO x\n",
        MAIL,
        RCPT,
        b"DATA\r\n",
        b"a\nb\n.\r\nstill data\r\n.\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 354, 250]);
    assert_eq!(r.captured[0].body, b"a\r\nb\r\n.\r\nstill data\r\n");
}

#[test]
fn long_lines() {
    let long = [b"NOOP ".as_slice(), &b"x".repeat(600), b"\r\n"].concat();
    let r = Harness::new().run(&[&long[..300], &long[300..], b"NOOP\r\n"]);
    assert_eq!(r.codes(), vec![220, 500, 250]);
    assert_eq!(r.reply(1).1, "5.5.2");
}

#[test]
fn too_many_recipients() {
    let h = Harness::new().file("max_rcpts", "2");
    let r = h.run(&[EHLO, MAIL, RCPT, RCPT, RCPT]);
    assert_eq!(r.reply(5), (452, "4.5.3", "Too many recipients"));
}

#[test]
fn small_verbs() {
    let r = Harness::new().run(&[
        EHLO,
        b"NOOP\r\n",
        b"VRFY u\r\n",
        b"HELP\r\n",
        b"RSET\r\n",
        b"QUIT\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 252, 214, 250, 221]);
    assert_eq!(r.reply(3).1, "2.1.5");
    assert!(r.raw.contains("214-2.0.0 This is ringsmtpd"));
}

#[test]
fn unknown_commands_count_and_end_the_session() {
    let h = Harness::new().file("max_unrecognized", "3");
    let r = h.run(&[
        b"FOO\r\n",
        b"STARTTLS\r\n",
        b"EXPN x\r\n",
        b"BAR\r\n",
        b"NOOP\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 500, 500, 500, 421]);
    assert_eq!(r.reply(1).1, "5.5.1");
    assert_eq!(r.end, End::TooManyErrors);
    // Any error reply counts toward max_errors.
    let h = Harness::new().file("max_errors", "2");
    let r = h.run(&[MAIL, b"RCPT TO:<x>\r\n", b"NOOP\r\n"]);
    assert_eq!(r.codes(), vec![220, 503, 503, 421]);
}

#[test]
fn esmtp_parameters_need_ehlo_and_are_carried() {
    let r = Harness::new().run(&[b"HELO x\r\n", b"MAIL FROM:<a@b.org> BODY=8BITMIME\r\n"]);
    assert_eq!(r.reply(2).0, 555);
    let r = Harness::new().run(&[
        EHLO,
        b"MAIL FROM:<a@b.org> RET=HDRS ENVID=abc+2B1 BODY=8BITMIME\r\n",
        b"RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.test\r\n",
        b"RCPT TO:<u@example.test> NOTIFY=BOGUS\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 501, 354, 250]);
    let m = &r.captured[0];
    assert_eq!(m.mail_params.envid.as_deref(), Some("abc+2B1"));
    assert!(m.rcpts[0].params.notify.success && m.rcpts[0].params.notify.failure);
    assert_eq!(
        m.rcpts[0].params.orcpt.as_deref(),
        Some("rfc822;u@example.test")
    );
}

#[test]
fn smtputf8_addresses_and_protocol_token() {
    let r = Harness::new().run(&[
        EHLO,
        "MAIL FROM:<jörg@exämple.org>\r\n".as_bytes(),
        "MAIL FROM:<jörg@exämple.org> SMTPUTF8\r\n".as_bytes(),
        "RCPT TO:<ü@example.test>\r\n".as_bytes(),
        b"DATA\r\n",
        b"x\r\n.\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 501, 250, 250, 354, 250]);
    assert!(r.captured[0].added_headers.contains(" with UTF8SMTP; "));
}

#[test]
fn bdat_chunks() {
    let r = Harness::new().run(&[
        EHLO,
        MAIL,
        RCPT,
        // The CRLF of the empty line is split across the two chunks.
        b"BDAT 13\r\nSubject: a\r\n\r",
        b"BDAT 7 LAST\r\n\nbody\r\nQUIT\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 250, 250, 221]);
    assert_eq!(r.reply(4).2, "13 octets received");
    assert_eq!(r.captured[0].body, b"Subject: a\r\n\r\nbody\r\n");
}

#[test]
fn dot_stuffing_and_empty_message() {
    let r = Harness::new().run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b".\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 354, 250]);
    assert_eq!(r.captured[0].body, b"");
}

#[test]
fn big_messages_spool_to_disk() {
    let dir = std::env::temp_dir().join(format!("ringsmtpd-spool-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = Harness::new()
        .file("size_threshold", "1000")
        .file("spool_dir", dir.to_str().unwrap());
    let body: Vec<u8> = (0..500)
        .flat_map(|i| format!("line {i:04} of the message\r\n").into_bytes())
        .collect();
    let data = [b"Subject: big\r\n\r\n".as_slice(), &body, b".\r\n"].concat();
    let chunks: Vec<&[u8]> = data.chunks(777).collect();
    let mut script = vec![EHLO, MAIL, RCPT, b"DATA\r\n"];
    script.extend(chunks);
    let r = h.run(&script);
    assert_eq!(r.replies.last().unwrap().0, 250);
    let m = &r.captured[0];
    assert!(m.spooled);
    assert_eq!(m.body, [b"Subject: big\r\n\r\n".as_slice(), &body].concat());
    // The spool file is removed with the transaction.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_message_spooled_inside_its_header_keeps_the_whole_header_in_memory() {
    let dir = std::env::temp_dir().join(format!("ringsmtpd-spool-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = Harness::new()
        .file("size_threshold", "10")
        .file("spool_dir", dir.to_str().unwrap());
    let header = "From: a@example.org\r\nSubject: spooled early\r\nX-Third: field\r\n\r\n";
    let message = format!("{header}body line\r\n");
    let data = format!("{message}.\r\n");
    let mut script = vec![EHLO, MAIL, RCPT, b"DATA\r\n"];
    script.extend(data.as_bytes().chunks(16)); // the header arrives in several reads
    let r = h.run(&script);
    assert_eq!(r.replies.last().unwrap().0, 250, "{}", r.raw);
    let m = &r.captured[0];
    assert!(m.spooled);
    assert_eq!(m.body, message.as_bytes());
    assert_eq!(String::from_utf8_lossy(&m.header), header);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn eof_in_data_delivers_nothing() {
    let r = Harness::new().run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b"Subject: cut\r\n\r\nhalf"]);
    assert_eq!(r.end, End::ClientClosed);
    assert!(r.captured.is_empty());
}

#[test]
fn idle_client_times_out_with_421() {
    let h = Harness {
        hang: true,
        ..Harness::new().file("timeout", "1")
    };
    let r = h.run(&[EHLO]);
    assert_eq!(r.reply(2).0, 421);
    assert_eq!(r.reply(2).1, "4.4.2");
    assert_eq!(r.end, End::Timeout);
}

#[test]
fn shutdown_answers_421_at_the_next_command() {
    let h = Harness {
        shutdown_before: true,
        ..Harness::new()
    };
    let r = h.run(&[EHLO]);
    assert_eq!(r.codes(), vec![220, 421]);
    assert_eq!(r.reply(1).1, "4.3.2");
    assert_eq!(r.end, End::Shutdown);
}

#[test]
fn deny_outcomes_follow_the_table() {
    let cases: Vec<(Hook, Outcome, Vec<u16>)> = vec![
        (Hook::Connect, Outcome::Deny(None), vec![550]),
        (Hook::Connect, Outcome::DenySoft(None), vec![450]),
        (Hook::Mail, Outcome::Deny(None), vec![220, 250, 550]),
        (Hook::Mail, Outcome::DenySoft(None), vec![220, 250, 450]),
        (
            Hook::Mail,
            Outcome::DenySoftDisconnect(None),
            vec![220, 250, 421],
        ),
        (
            Hook::Rcpt,
            Outcome::DenyDisconnect(None),
            vec![220, 250, 250, 550],
        ),
        (
            Hook::Data,
            Outcome::Deny(None),
            vec![220, 250, 250, 250, 554],
        ),
        (
            Hook::Data,
            Outcome::DenySoft(None),
            vec![220, 250, 250, 250, 451],
        ),
        (
            Hook::DataPost,
            Outcome::Deny(None),
            vec![220, 250, 250, 250, 354, 552],
        ),
        (
            Hook::DataPost,
            Outcome::deny_soft("4.7.0 try later"),
            vec![220, 250, 250, 250, 354, 452],
        ),
    ];
    for (hook, outcome, want) in cases {
        let h = Harness::new().plugin("answer", Box::new(Answer(hook, outcome.clone())));
        let r = h.run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n"]);
        let got: Vec<u16> = r.codes().into_iter().take(want.len()).collect();
        assert_eq!(got, want, "{hook} {outcome:?}: {}", r.raw);
        assert!(
            r.captured.is_empty(),
            "{hook}: nothing is queued after a deny"
        );
    }
    let r = Harness::new()
        .plugin(
            "answer",
            Box::new(Answer(Hook::Rcpt, Outcome::deny_soft("4.7.1 greylisted"))),
        )
        .run(&[EHLO, MAIL, RCPT]);
    assert_eq!(r.reply(3), (450, "4.7.1", "greylisted"));
}

#[test]
fn a_panicking_plugin_costs_its_session_a_4xx_only() {
    let r = Harness::new()
        .named("misbehave panic rcpt")
        .run(&[EHLO, MAIL, RCPT, b"NOOP\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 250, 450, 250]);
    assert_eq!(r.reply(3).1, "4.3.0");
}

#[test]
fn a_plugin_past_its_timeout_gives_4xx() {
    let h = Harness::new()
        .file("plugin_timeout", "1")
        .named("misbehave sleep mail 30");
    let r = h.run(&[EHLO, MAIL, b"NOOP\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 450, 250]);
    assert_eq!(r.reply(2).1, "4.4.3");
}

/// The null chain (rcpt_ok + queue/discard), one message per read: after the first few
/// messages, no heap allocation happens between one read and the next. Counted by a counting
/// allocator, so this is deterministic (docs/architecture.md, The session loop: buffers are reused, nothing is allocated per command).
#[test]
fn no_allocation_per_message_after_the_first() {
    let mut h = Harness::new().named("queue/discard").file("loglevel", "4");
    h.plugins.retain(|(name, _)| *name != "capture");
    let message = [MAIL, RCPT, b"DATA\r\n", b"Subject: x\r\n\r\nhello\r\n.\r\n"].concat();
    let mut script: Vec<&[u8]> = vec![EHLO];
    script.extend(std::iter::repeat_n(message.as_slice(), 40));
    let r = h.run(&script);
    assert_eq!(
        r.codes().iter().filter(|c| **c == 250).count(),
        1 + 3 * 40,
        "{}",
        r.raw
    );
    let per_read: Vec<usize> = r.marks.windows(2).map(|w| w[1] - w[0]).collect();
    // Reads 0..3: banner, EHLO and the first messages grow the buffers. After that, 36
    // messages cost no allocation each: at most an occasional amortized growth of a buffer
    // shared by all (a log line or the timer wheel doubling), so far fewer than one per message.
    let steady: usize = per_read[4..40].iter().sum();
    assert!(
        steady <= 4,
        "{steady} allocations for 36 messages; between reads: {per_read:?}"
    );
}

/// What an idle connection keeps is its task, `incoming::serve`'s future with the idle wait
/// (`Session::run`), and its boxed `Session`; the busy state, the buffers and the
/// transaction are lent by the worker only while busy (`recycle.rs`). Before that design the
/// task was 7,424 bytes and the session 1,288 (plus 1.5 KiB of buffers), 10.9 KiB of RSS per
/// idle connection in all (docs/benchmarks.md).
#[test]
#[allow(unreachable_code, unused_variables)]
fn an_idle_session_keeps_little() {
    use crate::transport::Conn;
    use std::mem::size_of;
    /// The size of the future `f` would return, without calling it.
    fn future<F>(_: &dyn Fn() -> F) -> usize {
        size_of::<F>()
    }
    let serve = future(&|| crate::incoming::serve(todo!(), 0, todo!(), todo!(), todo!(), todo!()));
    let run = future(&|| Session::<Conn>::run(todo!()));
    let busy = future(&|| Session::<Conn>::busy(todo!(), super::Wake::Input));
    let session = size_of::<Session<Conn>>();
    eprintln!(
        "task (serve) {serve} B, run {run} B, Session {session} B; lent while busy: {busy} B"
    );
    assert!(session <= 768, "Session<Conn> is {session} bytes");
    assert!(serve <= 2048, "the connection's task is {serve} bytes");
    assert!(
        busy > serve,
        "the busy state ({busy} B) is what the idle task leaves out"
    );

    let settings = Settings::load(&MemConfig::new(&[])).unwrap();
    let chains = Chains::from_instances(Vec::new(), settings.plugin_timeout);
    let svc = Rc::new(WorkerServices::new(settings.me.clone()));
    let shutdown = Rc::new(Shutdown::default());
    let env = Rc::new(Env {
        settings: Arc::new(settings),
        tls: None,
        auth: super::AuthPolicy::default(),
        metrics: Arc::default(),
        dns: None,
        chains,
        svc,
        shutdown,
    });
    let conn = Connection::new(
        7,
        "192.0.2.1:4321".parse().unwrap(),
        "127.0.0.1:25".parse().unwrap(),
    );
    let io = crate::transport::Stdio {
        timeout: Duration::from_secs(1),
    };
    let session = Session::new(env, io, conn, &[]);
    assert_eq!(
        session.rbuf.capacity() + session.wbuf.capacity(),
        0,
        "no buffers before busy"
    );
}

/// Adds angle brackets in `mail_pre`/`rcpt_pre`, as `dont_require_anglebrackets` does;
/// refuses a path containing "bad".
struct Brackets;

impl Plugin for Brackets {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::MailPre, Hook::RcptPre])
    }
    fn mail_pre<'a>(&'a self, _: &'a mut Cx, path: &'a str, _: &'a str) -> Step<'a> {
        Step::Ready(bracket(path))
    }
    fn rcpt_pre<'a>(&'a self, _: &'a mut Cx, path: &'a str, _: &'a str) -> Step<'a> {
        Step::Ready(bracket(path))
    }
}

fn bracket(path: &str) -> Outcome {
    if path.contains("bad") {
        Outcome::Deny(None)
    } else if path.starts_with('<') {
        Outcome::Declined
    } else {
        Outcome::Ok(Some(format!("<{path}>").into()))
    }
}

#[test]
fn pre_hooks_rewrite_or_refuse_the_path() {
    let h = Harness::new().plugin("brackets", Box::new(Brackets));
    let r = h.run(&[
        EHLO,
        b"MAIL FROM:a@example.org SIZE=10\r\n",
        b"RCPT TO:u@example.test\r\n",
        b"RCPT TO:<bad@example.test>\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 501, 354, 250]);
    assert_eq!(r.reply(4).1, "5.5.4");
    assert_eq!(r.captured[0].sender, "a@example.org");
    assert_eq!(r.captured[0].mail_params.size, Some(10));
    assert_eq!(r.captured[0].rcpts.len(), 1);
}

#[test]
fn done_outcomes() {
    use ringsmtpd_plugin_api::Reply;
    // DONE without a reply after DATA never becomes a 250: nothing was queued.
    let h = Harness::new().plugin(
        "answer",
        Box::new(Answer(Hook::DataPost, Outcome::Done(None))),
    );
    let r = h.run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n"]);
    assert_eq!(r.replies.last().unwrap().0, 451);
    assert!(r.captured.is_empty());
    // DONE with a 2xx reply at connect replaces the banner; the session goes on.
    let banner = Outcome::Done(Some(Reply::new(220, "2.0.0", "custom banner")));
    let r = Harness::new()
        .plugin("answer", Box::new(Answer(Hook::Connect, banner)))
        .run(&[EHLO]);
    assert_eq!(r.codes(), vec![220, 250]);
    assert_eq!(r.reply(0).2, "custom banner");
    // DONE with a reply at QUIT: that reply, then the connection closes.
    let bye = Outcome::Done(Some(Reply::new(221, "2.0.0", "see you")));
    let r = Harness::new()
        .plugin("answer", Box::new(Answer(Hook::Quit, bye)))
        .run(&[b"QUIT\r\n", EHLO]);
    assert_eq!(r.codes(), vec![220, 221]);
    assert_eq!(r.reply(1).2, "see you");
    assert_eq!(r.end, End::Quit);
}

/// Records, at queue_post, the sender and how many replies the client had been sent.
struct QueuePost(Rc<RefCell<Vec<(String, usize)>>>, Rc<RefCell<Vec<u8>>>);

impl Plugin for QueuePost {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::QueuePost])
    }
    fn queue_post<'a>(&'a self, _: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let sent = self.1.borrow().windows(2).filter(|w| w == b"\r\n").count();
        self.0
            .borrow_mut()
            .push((txn.sender.as_str().to_string(), sent));
        Step::Ready(Outcome::Declined)
    }
}

#[test]
fn queue_post_runs_after_the_250_with_the_transaction_intact() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let out = Rc::new(RefCell::new(Vec::new()));
    let h = Harness::new().plugin("post", Box::new(QueuePost(seen.clone(), out.clone())));
    let h = Harness {
        output: Some(out),
        ..h
    };
    let r = h.run(&[EHLO, MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\nQUIT\r\n"]);
    assert_eq!(r.codes(), vec![220, 250, 250, 250, 354, 250, 221]);
    let seen = seen.borrow();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "a@example.org");
    // Every line up to and including the 250 for the message was already written.
    let lines_before_250 = r
        .raw
        .split("\r\n")
        .position(|l| l.starts_with("250 2.0.0 Captured"))
        .unwrap()
        + 1;
    assert_eq!(seen[0].1, lines_before_250);
}

/// An auth backend knowing one user, "u" with password "pw", for every mechanism.
struct OneUser;

impl Plugin for OneUser {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }
    fn auth<'a>(
        &'a self,
        _: &'a mut Cx,
        req: &'a ringsmtpd_plugin_api::auth::AuthRequest,
    ) -> Step<'a> {
        Step::Ready(if req.user == "u" && req.matches_password("pw") {
            Outcome::Ok(None)
        } else {
            Outcome::Deny(None)
        })
    }
    fn auth_mechanisms(&self) -> &'static [ringsmtpd_plugin_api::auth::Mechanism] {
        &ringsmtpd_plugin_api::auth::Mechanism::ALL
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn auth_harness(remote: &'static str) -> Harness {
    let h = Harness::new()
        .plugin("one_user", Box::new(OneUser))
        .file("tls_before_auth", "0");
    Harness { remote, ..h }
}

#[test]
fn auth_plain_and_login_then_relay() {
    let plain = format!("AUTH PLAIN {}\r\n", b64("\0u\0pw"));
    let r = auth_harness("192.0.2.11:1").run(&[
        EHLO,
        plain.as_bytes(),
        b"MAIL FROM:<u@example.org> AUTH=<>\r\n",
        b"RCPT TO:<someone@elsewhere.org>\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\n",
    ]);
    assert!(
        r.raw.contains("250 AUTH PLAIN LOGIN CRAM-MD5\r\n"),
        "{}",
        r.raw
    );
    assert_eq!(r.codes(), vec![220, 250, 235, 250, 250, 354, 250]);
    assert_eq!(r.reply(2).1, "2.7.0");
    assert!(r.captured[0].added_headers.contains(" with ESMTPA; "));
    assert!(r.captured[0]
        .added_headers
        .contains("auth=pass (PLAIN) smtp.auth=u"));

    let (user, pass) = (format!("{}\r\n", b64("u")), format!("{}\r\n", b64("pw")));
    let r = auth_harness("192.0.2.12:1").run(&[
        EHLO,
        b"AUTH LOGIN\r\n",
        user.as_bytes(),
        pass.as_bytes(),
        b"AUTH PLAIN\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 334, 334, 235, 503]);
    assert_eq!(r.reply(2).2, "VXNlcm5hbWU6");
    assert_eq!(r.reply(3).2, "UGFzc3dvcmQ6");
}

#[test]
fn auth_failures_cancel_and_limits() {
    let bad = format!("AUTH PLAIN {}\r\n", b64("\0u\0wrong"));
    let h = auth_harness("192.0.2.13:1").file("auth_max_failures", "2");
    let r = h.run(&[
        EHLO,
        b"AUTH PLAIN\r\n",
        b"*\r\n",
        b"AUTH PLAIN !!!\r\n",
        bad.as_bytes(),
        bad.as_bytes(),
        b"NOOP\r\n",
    ]);
    assert_eq!(r.codes(), vec![220, 250, 334, 501, 501, 535, 535, 421]);
    assert_eq!(r.reply(3).1, "5.7.0"); // canceled
    assert_eq!(r.reply(5).1, "5.7.8");
    assert_eq!(r.end, End::TooManyErrors);
    // The same IP is refused at once for a while, on any connection.
    let good = format!("AUTH PLAIN {}\r\n", b64("\0u\0pw"));
    let r = auth_harness("192.0.2.13:2")
        .file("auth_max_failures", "2")
        .run(&[EHLO, good.as_bytes()]);
    assert_eq!(r.reply(2).0, 454);
}

#[test]
fn auth_needs_tls_by_default_and_a_backend() {
    let plain = format!("AUTH PLAIN {}\r\n", b64("\0u\0pw"));
    let h = Harness {
        remote: "192.0.2.14:1",
        ..Harness::new().plugin("one_user", Box::new(OneUser))
    };
    let r = h.run(&[EHLO, plain.as_bytes()]);
    assert!(
        !r.raw.contains("AUTH"),
        "not offered without TLS: {}",
        r.raw
    );
    assert_eq!(
        r.reply(2),
        (
            538,
            "5.7.11",
            "Encryption required for requested authentication mechanism"
        )
    );
    // No backend: AUTH is an unknown command, as in qpsmtpd.
    let r = Harness::new()
        .file("tls_before_auth", "0")
        .run(&[EHLO, plain.as_bytes()]);
    assert_eq!(r.reply(2).0, 500);
    // HELO clients cannot AUTH.
    let r = auth_harness("192.0.2.15:1").run(&[b"HELO x\r\n", plain.as_bytes()]);
    assert_eq!(r.reply(2).0, 503);
}

#[test]
fn metrics_count_a_known_load_exactly() {
    use std::sync::atomic::Ordering::Relaxed;
    let h = Harness::new();
    let metrics = h.metrics.clone();
    let msg = [MAIL, RCPT, b"DATA\r\n", b"x\r\n.\r\n"].concat();
    let r = h.run(&[
        EHLO,
        &msg,
        &msg,
        MAIL,
        b"RCPT TO:<x@elsewhere.org>\r\n",
        b"RCPT TO:<u@example.test>\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\nQUIT\r\n",
    ]);
    assert_eq!(r.end, End::Quit);
    assert_eq!(metrics.connections_total.load(Relaxed), 1);
    assert_eq!(metrics.connections_open.load(Relaxed), 0);
    assert_eq!(metrics.messages[0].load(Relaxed), 3);
    let text_of = |m: &crate::metrics::WorkerMetrics| {
        let rcpt = m.plugin("rcpt_ok", Hook::Rcpt);
        let queue = m.plugin("capture", Hook::Queue);
        (
            format!("{:?}", rcpt.latency_count()),
            format!("{:?}", queue.latency_count()),
        )
    };
    assert_eq!(text_of(&metrics), ("4".into(), "3".into()));
}

mod auth_results;
