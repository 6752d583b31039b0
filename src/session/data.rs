//! DATA (RFC 5321 §4.1.1.4) and BDAT (RFC 3030), then the end of a message: the
//! `data_post_headers` hook, Received and Authentication-Results, `data_post`, and queueing.
//!
//! The message is kept in memory up to `size_threshold` and spooled to `spool_dir` above it.
//! Past `databytes` the rest is read and dropped, and the client gets 552 after the end.
//! `250` is sent only after a queue plugin said the message is durable (DESIGN.md §6).

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use ringsmtpd_plugin_api::{Hook, Level, Outcome, SpoolFile, Transaction};

use super::respond::{self, Answer, Resolved};
use super::{End, Flow, Session, State};
use crate::config::BareNewlinePolicy;
use crate::hooks::Call;
use crate::proto::bdat::ChunkScanner;
use crate::proto::data::{BareNewline, DataReceiver, DataStatus};
use crate::proto::reply;
use crate::transport::Transport;

/// Why a received message is refused at its end, though it was read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// More than `databytes`.
    TooBig,
    /// The spool file could not be written.
    Spool,
    /// A bare CR or LF inside a BDAT chunk (counted framing, so no ambiguity: refuse the
    /// message, keep the session).
    BareNewline,
    /// A line longer than `data_line_length` inside a BDAT chunk.
    LineTooLong,
    /// A header section longer than what memory keeps of it (`MAX_HEADER_MEM`): its fields
    /// cannot all be checked for forged Authentication-Results (see `forged`).
    HeaderTooLarge,
}

/// The most of a header section kept in memory when the message is spooled before the
/// section ended (a larger one is read from the spool file by whoever needs it whole).
const MAX_HEADER_MEM: u64 = 256 * 1024;

/// Where message bytes go while a message is received: the body's memory buffer, then a
/// spool file once the message outgrows `size_threshold`.
#[derive(Default)]
pub(super) struct Sink {
    /// The spool file as monoio sees it, and the write offset.
    file: Option<(monoio::fs::File, u64)>,
    /// Bytes received since the last spool write (only while spooling).
    stage: Vec<u8>,
    headers_seen: bool,
    refusal: Option<Refusal>,
}

impl Sink {
    /// The buffer the receiver appends to.
    fn target<'a>(&'a mut self, txn: &'a mut Transaction) -> &'a mut Vec<u8> {
        if self.file.is_some() {
            &mut self.stage
        } else {
            &mut txn.body.mem
        }
    }

    /// After bytes were appended: enforce `databytes`, spool when needed.
    async fn settle(
        &mut self,
        st: &State,
        txn: &mut Transaction,
        emitted: u64,
        header_end: Option<u64>,
    ) {
        txn.body.len = emitted;
        self.keep_header_in_memory(txn, header_end);
        if !self.headers_seen {
            if let Some(end) = header_end {
                self.headers_seen = true;
                if end <= txn.body.mem.len() as u64 {
                    txn.body.header_end = Some(end as usize);
                }
            }
        }
        let settings = &st.env.settings;
        if self.refusal.is_some() || (settings.databytes > 0 && emitted > settings.databytes) {
            self.refusal.get_or_insert(Refusal::TooBig);
            // Drop what was kept: an over-size or failed message is read to its end, not stored.
            self.file = None;
            self.stage.clear();
            txn.body.clear();
            txn.body.len = emitted;
            return;
        }
        if self.file.is_none() && txn.body.mem.len() as u64 > settings.size_threshold {
            if let Err(e) = self.start_spool(st, txn) {
                st.cx.log(
                    Level::Error,
                    "core",
                    format_args!("cannot spool message: {e}"),
                );
                self.refusal = Some(Refusal::Spool);
                return;
            }
        }
        if self.file.is_some() && !self.stage.is_empty() {
            if let Err(e) = self.write_stage().await {
                st.cx.log(
                    Level::Error,
                    "core",
                    format_args!("spool write failed: {e}"),
                );
                self.refusal = Some(Refusal::Spool);
            }
        }
    }

    /// Spooling began inside the header section: the header bytes received since go to memory
    /// too, up to the header's end (or [`MAX_HEADER_MEM`]), so header checks always see the
    /// whole section in `body.mem`. The stage holds the message from the spool file's write
    /// offset on, and memory holds the message's first bytes.
    fn keep_header_in_memory(&mut self, txn: &mut Transaction, header_end: Option<u64>) {
        let Some((_, written)) = self.file.as_ref() else {
            return;
        };
        if self.headers_seen || txn.body.header_end.is_some() {
            return;
        }
        let have = txn.body.mem.len() as u64;
        let staged_end = written + self.stage.len() as u64;
        let want = header_end
            .unwrap_or(staged_end)
            .min(staged_end)
            .min(MAX_HEADER_MEM);
        if have < *written || want <= have {
            return; // cut at MAX_HEADER_MEM, or nothing new
        }
        let from = (have - written) as usize;
        let to = (want - written) as usize;
        txn.body.mem.extend_from_slice(&self.stage[from..to]);
    }

    /// Creates the spool file; everything in memory moves to the stage to be written, except
    /// the header section, which stays in memory for header checks.
    fn start_spool(&mut self, st: &State, txn: &mut Transaction) -> io::Result<()> {
        let dir = &st.env.settings.spool_dir;
        let name = format!(
            "{}.{}.{}",
            std::process::id(),
            st.cx.conn.id,
            txn.id.rsplit('.').next().unwrap_or("0")
        );
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let writer = monoio::fs::File::from_std(file.try_clone()?)?;
        self.stage.extend_from_slice(&txn.body.mem);
        let keep = txn.body.header_end.unwrap_or(txn.body.mem.len());
        txn.body.mem.truncate(keep);
        txn.body.spool = Some(SpoolFile { path, file });
        self.file = Some((writer, 0));
        Ok(())
    }

    async fn write_stage(&mut self) -> io::Result<()> {
        let Some((file, offset)) = self.file.as_mut() else {
            return Ok(());
        };
        let stage = std::mem::take(&mut self.stage);
        let len = stage.len() as u64;
        let (res, mut stage) = file.write_all_at(stage, *offset).await;
        *offset += len;
        stage.clear();
        self.stage = stage;
        res
    }
}

/// BDAT state across the chunks of one transaction.
#[derive(Default)]
pub(super) struct Bdat {
    /// A BDAT of this transaction was accepted: only BDAT may follow until LAST.
    pub active: bool,
    scanner: Option<ChunkScanner>,
    sink: Sink,
}

impl State {
    pub(super) async fn data(&mut self, out: &mut Vec<u8>) -> Flow {
        let Some(txn) = self.txn.as_ref() else {
            return self.error_flow(out, Resolved::new(503, "5.5.1", "MAIL first"));
        };
        if txn.recipients.is_empty() {
            return self.error_flow(out, Resolved::new(503, "5.5.1", "RCPT first"));
        }
        if let Some(flow) = self.run_data_hook(out).await {
            return flow;
        }
        reply::write(out, 354, "", "go ahead");
        Flow::Data
    }

    /// The `data` hook (for DATA and the first BDAT). `Some(flow)` if it refused.
    async fn run_data_hook(&mut self, out: &mut Vec<u8>) -> Option<Flow> {
        let env = self.env.clone();
        let txn = self.txn.as_mut()?;
        let decision = env.chains.run(&mut self.cx, Some(txn), Call::Data).await;
        match respond::for_outcome(Hook::Data, decision.outcome) {
            Answer::Proceed => None,
            Answer::Reply(r) => {
                self.log_refused("DATA", &r, decision.plugin.as_deref());
                self.end_transaction().await;
                Some(self.reply_flow(out, r, "refused at DATA"))
            }
            Answer::Answered => {
                self.end_transaction().await;
                Some(Flow::Next)
            }
        }
    }

    pub(super) async fn bdat(&mut self, out: &mut Vec<u8>, size: u64, last: bool) -> Flow {
        let refuse = |r: Resolved| {
            (
                r,
                Flow::Bdat {
                    size,
                    last,
                    accept: false,
                },
            )
        };
        let (reply, flow) = match self.txn.as_ref() {
            None => refuse(Resolved::new(503, "5.5.1", "MAIL first")),
            Some(t) if t.recipients.is_empty() => refuse(Resolved::new(503, "5.5.1", "RCPT first")),
            Some(_) if self.bdat.active => {
                return Flow::Bdat {
                    size,
                    last,
                    accept: true,
                }
            }
            Some(_) => match self.run_data_hook(out).await {
                // Refused: the chunk that follows is still read, and dropped (RFC 3030 §2).
                Some(Flow::Close(end)) => return Flow::Close(end),
                Some(_) => {
                    return Flow::Bdat {
                        size,
                        last,
                        accept: false,
                    }
                }
                None => {
                    let s = &self.env.settings;
                    let policy = bare_policy(s.bare_newline);
                    self.bdat.active = true;
                    self.bdat.scanner = Some(ChunkScanner::new(policy, s.data_line_length));
                    return Flow::Bdat {
                        size,
                        last,
                        accept: true,
                    };
                }
            },
        };
        match self.error(out, reply) {
            Some(end) => Flow::Close(end),
            None => flow,
        }
    }

    /// After the whole message is in: hooks, headers, queue, the final reply.
    async fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        refusal: Option<Refusal>,
        started: Instant,
    ) -> Flow {
        let Some(mut txn) = self.txn.take() else {
            return Flow::Next;
        };
        let cut = super::forged::header_cut(&txn).then_some(Refusal::HeaderTooLarge);
        let (reply, plugin) = match refusal.or(cut) {
            Some(r) => (refusal_reply(r), None),
            None => {
                let queued = Instant::now();
                let result = self.deliver(&mut txn).await;
                self.env.metrics.queue_latency.record(queued.elapsed());
                result
            }
        };
        self.env.metrics.message(reply.code);
        self.summary(&txn, &reply, plugin.as_deref(), started);
        reply.write(out);
        self.txn = Some(txn);
        if reply.code == 250 && self.env.chains.has(Hook::QueuePost) {
            // The session sends the 250 first, then runs queue_post (see `queue_post`).
            self.queue_post_pending = true;
        } else {
            self.end_transaction().await;
        }
        super::closing(reply.disconnect, "refused after DATA")
    }

    /// queue_post, after the 250 went out: it sees the transaction as queued, and its outcome
    /// is only logged (qpsmtpd). Then the transaction ends.
    pub(super) async fn queue_post(&mut self) {
        if !std::mem::take(&mut self.queue_post_pending) {
            return;
        }
        if let Some(mut txn) = self.txn.take() {
            let env = self.env.clone();
            let decision = env
                .chains
                .run(&mut self.cx, Some(&mut txn), Call::QueuePost)
                .await;
            if !matches!(decision.outcome, Outcome::Declined | Outcome::Ok(_)) {
                let source = decision.plugin.as_deref().unwrap_or("core");
                let what = decision.outcome.msg().unwrap_or(decision.outcome.name());
                self.cx
                    .log(Level::Error, source, format_args!("queue_post: {what}"));
            }
            self.txn = Some(txn);
        }
        self.end_transaction().await;
    }

    /// data_post_headers, the core headers, data_post, queue_pre and queue.
    async fn deliver(&mut self, txn: &mut Transaction) -> (Resolved, Option<std::rc::Rc<str>>) {
        let env = self.env.clone();
        let chains = &env.chains;
        // Added headers (SPF, DKIM) go before Received, as in qpsmtpd; the outcome is ignored.
        chains
            .run(&mut self.cx, Some(&mut *txn), Call::DataPostHeaders)
            .await;
        // After data_post_headers, so the DKIM check saw the message as signed.
        match super::forged::rename_in_message(txn, env.svc.me()).await {
            Ok(0) => {}
            Ok(n) => self.cx.log(
                Level::Notice,
                "core",
                format_args!(
                    "renamed {n} Authentication-Results field(s) claiming our authserv-id"
                ),
            ),
            Err(e) => {
                let msg = format_args!("cannot rename forged Authentication-Results: {e}");
                self.cx.log(Level::Error, "core", msg);
                return (refusal_reply(Refusal::Spool), None);
            }
        }
        self.add_core_headers(txn).await;
        let decision = chains
            .run(&mut self.cx, Some(&mut *txn), Call::DataPost)
            .await;
        match respond::for_outcome(Hook::DataPost, decision.outcome) {
            Answer::Reply(r) => return (r, decision.plugin),
            Answer::Answered => return (self.unanswered(&decision.plugin), decision.plugin),
            Answer::Proceed => {}
        }
        let decision = chains
            .run(&mut self.cx, Some(&mut *txn), Call::QueuePre)
            .await;
        match respond::for_outcome(Hook::Queue, decision.outcome) {
            Answer::Reply(r) => return (r, decision.plugin),
            Answer::Answered => return (self.unanswered(&decision.plugin), decision.plugin),
            Answer::Proceed => {}
        }
        let decision = chains.run(&mut self.cx, Some(&mut *txn), Call::Queue).await;
        let reply = match respond::for_outcome(Hook::Queue, decision.outcome.clone()) {
            Answer::Reply(r) => r,
            Answer::Answered => self.unanswered(&decision.plugin),
            Answer::Proceed if decision.outcome == Outcome::Declined => Resolved::new(
                451,
                "4.3.0",
                "Queuing declined or disabled; try again later",
            ),
            Answer::Proceed => {
                let (enh, text) = respond::ok_text(&decision.outcome, "2.0.0", "Queued");
                Resolved {
                    code: 250,
                    enhanced: enh,
                    text,
                    disconnect: false,
                }
            }
        };
        (reply, decision.plugin)
    }

    /// `DONE` without a reply after DATA: a plugin ended the transaction but said nothing.
    /// The client must get an answer, and 250 would claim a delivery nobody made: 451.
    fn unanswered(&self, plugin: &Option<std::rc::Rc<str>>) -> Resolved {
        let source = plugin.as_deref().unwrap_or("core");
        let msg = format_args!("DONE without a reply after DATA; answering 451");
        self.cx.log(Level::Error, source, msg);
        Resolved::new(451, "4.3.0", "Message not queued, try again later")
    }

    /// One line per transaction: who, envelope, size, outcome, time.
    fn summary(&self, txn: &Transaction, reply: &Resolved, plugin: Option<&str>, started: Instant) {
        if !self.env.svc.log_enabled(Level::Info) {
            return;
        }
        let conn = &self.cx.conn;
        let rcpts = Rcpts(&txn.recipients);
        let by = By(plugin);
        self.cx.log(
            Level::Info,
            "core",
            format_args!(
                "msg {} ip={} helo={} from={} rcpts={rcpts} size={} result=\"{} {} {}\"{by} ms={}",
                txn.id,
                conn.remote.ip(),
                conn.hello_host(),
                txn.sender,
                txn.body.len,
                reply.code,
                reply.enhanced,
                reply.text,
                started.elapsed().as_millis()
            ),
        );
    }
}

/// ` plugin=<name>` when a plugin decided, formatted without a temporary string.
struct By<'a>(Option<&'a str>);

impl std::fmt::Display for By<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(p) => write!(f, " plugin={p}"),
            None => Ok(()),
        }
    }
}

/// Recipients as a comma-separated list, formatted without a temporary vector.
struct Rcpts<'a>(&'a [ringsmtpd_plugin_api::Recipient]);

impl std::fmt::Display for Rcpts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(r.addr.as_str())?;
        }
        Ok(())
    }
}

fn refusal_reply(r: Refusal) -> Resolved {
    match r {
        Refusal::TooBig => Resolved::new(552, "5.3.4", "Message too big!"),
        Refusal::Spool => Resolved::new(
            451,
            "4.3.0",
            "Error writing the message to the spool, try again later",
        ),
        Refusal::BareNewline => Resolved::new(
            554,
            "5.6.0",
            "Bare CR or LF in message refused (RFC 5321 2.3.8)",
        ),
        Refusal::LineTooLong => Resolved::new(554, "5.6.0", "Message line too long"),
        Refusal::HeaderTooLarge => Resolved::new(552, "5.3.4", "Message header section too large"),
    }
}

pub(super) fn bare_policy(p: BareNewlinePolicy) -> BareNewline {
    match p {
        BareNewlinePolicy::Reject => BareNewline::Reject,
        BareNewlinePolicy::Normalize => BareNewline::Normalize,
    }
}

impl<T: Transport> Session<T> {
    /// Receives the DATA stream up to `CRLF.CRLF`, then finishes the message.
    pub(super) async fn receive_data(&mut self) -> Flow {
        let started = Instant::now();
        let s = self.st.env.settings.clone();
        let mut rx = DataReceiver::new(bare_policy(s.bare_newline), s.data_line_length);
        let mut sink = Sink::default();
        let Some(mut txn) = self.st.txn.take() else {
            return Flow::Next;
        };
        let result = loop {
            let input = &self.rbuf[self.rpos..];
            let (used, status) = rx.feed(input, sink.target(&mut txn));
            self.rpos += used;
            let first_headers = !sink.headers_seen && rx.header_end().is_some();
            sink.settle(&self.st, &mut txn, rx.emitted(), rx.header_end())
                .await;
            if first_headers && sink.refusal.is_none() {
                if let Some(flow) = self.st.headers_end(&mut self.wbuf, &mut txn).await {
                    break Err(flow);
                }
            }
            match status {
                DataStatus::Done => break Ok(()),
                DataStatus::NeedMore => {}
                DataStatus::BareNewline => {
                    break Err(Flow::Close(self.st.bare_newline(&mut self.wbuf, "DATA")))
                }
                DataStatus::LineTooLong => {
                    // The rest of the stream cannot be trusted to be framed as the client
                    // meant it: refuse and close.
                    let max = s.data_line_length;
                    let text = format!("Message line too long (max {max} bytes)");
                    reply::write(&mut self.wbuf, 552, "5.3.4", &text);
                    break Err(Flow::Close(End::Disconnected("line too long in DATA")));
                }
            }
            if let Err(end) = self.flush().await {
                break Err(Flow::Close(end));
            }
            if let Err(end) = self.fill(s.data_timeout, false).await {
                break Err(Flow::Close(end));
            }
        };
        self.st.txn = Some(txn);
        match result {
            Ok(()) => self.finish(sink.refusal, started).await,
            Err(flow) => {
                self.st.end_transaction().await; // nothing of a broken DATA is delivered
                flow
            }
        }
    }

    /// Receives one BDAT chunk of `size` bytes (or drops it when `accept` is false).
    pub(super) async fn receive_bdat(&mut self, size: u64, last: bool, accept: bool) -> Flow {
        let started = Instant::now();
        let timeout = self.st.env.settings.data_timeout;
        let mut remaining = size;
        let mut txn = if accept { self.st.txn.take() } else { None };
        let mut closing = None;
        loop {
            let avail = ((self.rbuf.len() - self.rpos) as u64).min(remaining) as usize;
            let chunk = &self.rbuf[self.rpos..self.rpos + avail];
            if let (Some(txn), Some(scanner)) = (txn.as_mut(), self.st.bdat.scanner.as_mut()) {
                let sink = &mut self.st.bdat.sink;
                if sink.refusal.is_none() {
                    if let Err(status) = scanner.push(chunk, sink.target(txn)) {
                        sink.refusal = Some(match status {
                            DataStatus::LineTooLong => Refusal::LineTooLong,
                            _ => Refusal::BareNewline,
                        });
                    }
                }
                let (emitted, header_end) = (scanner.emitted(), scanner.header_end());
                let mut sink = std::mem::take(&mut self.st.bdat.sink);
                let first_headers = !sink.headers_seen && header_end.is_some();
                sink.settle(&self.st, txn, emitted, header_end).await;
                let refused = sink.refusal.is_some();
                self.st.bdat.sink = sink;
                if first_headers && !refused {
                    closing = self.st.headers_end(&mut self.wbuf, txn).await;
                }
            }
            if let Some(flow) = closing {
                self.st.txn = txn;
                self.st.end_transaction().await; // nothing of a refused message is delivered
                return flow;
            }
            self.rpos += avail;
            remaining -= avail as u64;
            if remaining == 0 {
                break;
            }
            let filled = match self.flush().await {
                Ok(()) => self.fill(timeout, false).await,
                Err(end) => Err(end),
            };
            if let Err(end) = filled {
                self.st.txn = txn;
                self.st.end_transaction().await;
                return Flow::Close(end);
            }
        }
        let Some(mut txn) = txn else {
            return Flow::Next; // a refused chunk: its reply was sent with the command
        };
        let mut sink = std::mem::take(&mut self.st.bdat.sink);
        if !last {
            self.st.txn = Some(txn);
            self.st.bdat.sink = sink;
            let text = format!("{size} octets received");
            reply::write(&mut self.wbuf, 250, "2.0.0", &text);
            return Flow::Next;
        }
        if let Some(scanner) = self.st.bdat.scanner.as_mut() {
            if sink.refusal.is_none() && scanner.finish(sink.target(&mut txn)).is_err() {
                sink.refusal = Some(Refusal::BareNewline);
            }
            let (emitted, header_end) = (scanner.emitted(), scanner.header_end());
            sink.settle(&self.st, &mut txn, emitted, header_end).await;
        }
        self.st.txn = Some(txn);
        self.finish(sink.refusal, started).await
    }

    /// The end of a message; queue_post runs once the final reply is sent.
    async fn finish(&mut self, refusal: Option<Refusal>, started: Instant) -> Flow {
        let flow = self
            .st
            .finish_message(&mut self.wbuf, refusal, started)
            .await;
        if self.st.queue_post_pending {
            let _ = self.flush().await; // a failed write shows at the next read
            self.st.queue_post().await;
        }
        flow
    }
}

impl State {
    /// The `data_headers_end` hook, when the header section is complete. Only the disconnect
    /// outcomes act (qpsmtpd); `Some(flow)` ends the session.
    async fn headers_end(&mut self, out: &mut Vec<u8>, txn: &mut Transaction) -> Option<Flow> {
        if !self.env.chains.has(Hook::DataHeadersEnd) {
            return None;
        }
        let env = self.env.clone();
        let decision = env
            .chains
            .run(&mut self.cx, Some(txn), Call::DataHeadersEnd)
            .await;
        match respond::for_outcome(Hook::DataHeadersEnd, decision.outcome) {
            Answer::Reply(r) if r.disconnect => {
                self.log_refused("DATA", &r, decision.plugin.as_deref());
                Some(self.reply_flow(out, r, "refused at end of headers"))
            }
            _ => None,
        }
    }
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e.kind())
    }
}
