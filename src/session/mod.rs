//! One SMTP connection: read, take the command lines (framed by `proto::line`), dispatch each
//! verb, write replies (`proto::reply`).
//!
//! The loop parses every complete command in the read buffer before it writes, so a pipelined
//! batch (RFC 2920) is answered with one write. Each verb lives in its own file:
//! `hello.rs` (HELO/EHLO), `mail.rs`, `rcpt.rs`, `data.rs` (DATA, BDAT, queueing),
//! `misc.rs` (RSET, NOOP, VRFY, HELP, QUIT, unknown verbs). `respond.rs` holds the reply
//! table. A session ends through one [`End`], logged once.

mod auth;
mod data;
mod forged;
pub mod headers;
mod hello;
mod mail;
mod misc;
mod rcpt;
mod recycle;
pub mod respond;
pub mod script;

use std::future::Future;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringsmtpd_plugin_api::{Connection, Cx, Hook, Level, Outcome, Services, Transaction};

use crate::config::Settings;
use crate::hooks::{Call, Chains};
use crate::proto::command::{self, Command};
use crate::proto::line::{Line, Lines};
use crate::proto::reply;
use crate::shutdown::Shutdown;
use crate::transport::Transport;
pub use auth::AuthPolicy;
use respond::{Answer, Resolved};

/// Read buffer: a busy session gets at least `READ_BUF_MIN` (commands are at most `max_line`,
/// 512 by default). A read that fills the buffer doubles it, up to `READ_BUF_MAX`, so a client
/// streaming DATA soon reads 64 KiB per call. An idle session has no buffers: it gives them
/// back to its worker (`recycle.rs`) and waits for readability without one (see [`Session::run`]).
const READ_BUF_MIN: usize = 1024;
const READ_BUF_MAX: usize = 64 * 1024;
/// The write buffer a busy session starts with (a reply batch is rarely longer).
const WRITE_BUF: usize = 512;

/// What a session needs from its worker; fixed for the session's life (after a reload, new
/// connections get a new `Env`, running ones keep theirs).
pub struct Env {
    pub settings: Arc<Settings>,
    /// STARTTLS and implicit TLS, when config/plugins has a `tls` line.
    pub tls: Option<crate::tls::TlsSetup>,
    /// When AUTH is offered and how failures are limited.
    pub auth: AuthPolicy,
    /// This worker's counters (see metrics.rs).
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
    /// This worker's DNS client (also reachable through `svc`), for its counters.
    pub dns: Option<crate::dns::Resolver>,
    pub chains: Chains,
    pub svc: Rc<dyn Services>,
    pub shutdown: Rc<Shutdown>,
}

/// Why a session ended. Logged once, at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client said QUIT.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    /// The client was idle past `timeout` (421 sent).
    Timeout,
    /// A plugin's `*_DISCONNECT` or a core rule closed it (the reply said why).
    Disconnected(&'static str),
    /// The server is shutting down (421 sent).
    Shutdown,
    /// A bare CR or LF was received (521 sent): an SMTP smuggling attempt or a broken client.
    BareNewline,
    /// Too many bad or unknown commands (421 sent).
    TooManyErrors,
    /// The TLS handshake failed or timed out (after STARTTLS, or on a `tls` listener).
    TlsFailed(io::ErrorKind),
    /// Reading or writing failed.
    Io(io::ErrorKind),
}

/// What the loop does after a command.
pub(crate) enum Flow {
    Next,
    /// Enter DATA mode (the 354 is in the write buffer).
    Data,
    /// Receive a BDAT chunk of `size` bytes; `accept` is false when the chunk is to be
    /// discarded (its command was refused, RFC 3030 §2).
    Bdat {
        size: u64,
        last: bool,
        accept: bool,
    },
    /// Start TLS (the 220 is in the write buffer).
    StartTls,
    Close(End),
}

/// The per-connection state the verbs work on (everything but the transport and buffers).
pub struct State {
    pub env: Rc<Env>,
    pub cx: Cx,
    /// The open mail transaction, from an accepted MAIL to the end of DATA or RSET.
    /// Boxed: an idle session has none, and its place in every session would be wasted.
    pub txn: Option<Box<Transaction>>,
    /// Error replies so far (`max_errors`).
    errors: u32,
    /// Unknown verbs so far (`max_unrecognized`).
    unrecognized: u32,
    /// BDAT state of the open transaction.
    bdat: data::Bdat,
    /// A reused buffer for the headers the core writes.
    scratch: String,
    /// Unprocessed input is waiting in the read buffer (for [`Cx::client_has_sent`]).
    buffered: Rc<std::cell::Cell<bool>>,
    /// STARTTLS is offered: TLS is configured, the transport can do it, it is not done yet.
    tls_offer: bool,
    /// A message got 250 and queue_post is still to run (after the reply is sent).
    queue_post_pending: bool,
    /// QUIT was answered `DONE`: qpsmtpd then skips the disconnect hook.
    quit_done: bool,
    /// An AUTH exchange waits for the client's next line.
    sasl: Option<auth::Sasl>,
}

pub struct Session<T: Transport> {
    io: T,
    /// Input; bytes before `rpos` are processed.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Replies not yet sent.
    wbuf: Vec<u8>,
    /// The last read filled the buffer: the client sends faster than we read.
    read_full: bool,
    /// Command-line framing (it remembers an over-long line being skipped across reads).
    lines: Lines,
    st: State,
}

/// Why an idle session resumes.
enum Wake {
    /// The connection is new: pre-connection and connect hooks, then the banner.
    Start,
    /// The client sent something (or closed, or the socket failed: the read tells).
    Input,
    TimedOut,
    Shutdown,
}

impl<T: Transport> Session<T> {
    /// A session on `io`. `early` holds bytes already read (after a PROXY header).
    pub fn new(env: Rc<Env>, io: T, conn: Connection, early: &[u8]) -> Session<T> {
        Session::build(env, io, conn, early).offer_tls()
    }

    fn build(env: Rc<Env>, io: T, conn: Connection, early: &[u8]) -> Session<T> {
        let rbuf = early.to_vec();
        let mut cx = Cx::new(conn, env.svc.clone());
        let buffered = Rc::new(std::cell::Cell::new(!early.is_empty()));
        if let Some(peek) = io.input_probe() {
            let buffered = buffered.clone();
            cx.input_probe = Some(Rc::new(move || buffered.get() || peek()));
        }
        Session {
            io,
            rbuf,
            rpos: 0,
            wbuf: Vec::new(),
            read_full: false,
            lines: Lines::new(
                data::bare_policy(env.settings.bare_newline),
                env.settings.max_line,
            ),
            st: State {
                env,
                cx,
                txn: None,
                errors: 0,
                unrecognized: 0,
                bdat: data::Bdat::default(),
                scratch: String::new(),
                buffered,
                tls_offer: false,
                queue_post_pending: false,
                quit_done: false,
                sasl: None,
            },
        }
    }

    /// Offers STARTTLS if TLS is configured and this transport can do it.
    fn offer_tls(mut self) -> Session<T> {
        self.st.tls_offer =
            self.st.env.tls.is_some() && self.io.can_start_tls() && self.st.cx.conn.tls.is_none();
        self
    }

    /// Runs the whole conversation and the end-of-session hooks; returns why it ended.
    ///
    /// The session alternates between busy periods and idle waits. A busy period (`busy`:
    /// commands, DATA, BDAT, hooks, with the read and write buffers) runs in a heap slot lent
    /// by the worker (`recycle::boxed`), so its several KiB of state are not part of the
    /// connection's task. It ends when all input is processed, the replies are sent and no
    /// transaction is open; the session then gives its buffers back and waits, holding only
    /// itself, until the socket is readable (`Transport::wait_readable`), the idle timeout
    /// passes or the server shuts down. Inside a transaction (after MAIL) the client is
    /// expected to go on at once, so the session keeps its buffers and reads as before.
    ///
    /// The session itself is boxed, so that moving it into and out of a busy period moves a
    /// pointer, and the task keeps no copy of it.
    pub fn run(self) -> impl Future<Output = End>
    where
        T: 'static,
    {
        Box::new(self).run_boxed()
    }

    async fn run_boxed(mut self: Box<Self>) -> End
    where
        T: 'static,
    {
        let conn = &self.st.cx.conn;
        let remote = conn.remote;
        self.st.cx.log(
            Level::Info,
            "core",
            format_args!("connect from {remote} to {}", conn.local),
        );
        let metrics = &self.st.env.metrics;
        metrics
            .connections_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics
            .connections_open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut wake = Wake::Start;
        loop {
            let (s, end) = self.lend_busy(wake).await;
            self = s;
            if let Some(end) = end {
                return self.lend_close(end).await;
            }
            wake = self.idle().await;
        }
    }

    // The large futures are made inside plain functions and moved straight into their slots:
    // made inside `run`, they would keep a place of their size in `run`'s own future.
    fn lend_busy(
        self: Box<Self>,
        wake: Wake,
    ) -> recycle::Lent<impl Future<Output = (Box<Self>, Option<End>)>>
    where
        T: 'static,
    {
        recycle::boxed(self.busy(wake))
    }

    fn lend_close(self: Box<Self>, end: End) -> recycle::Lent<impl Future<Output = End>>
    where
        T: 'static,
    {
        recycle::boxed(self.close(end))
    }

    /// Waits without buffers until there is something to do (see [`Session::run`]).
    async fn idle(&mut self) -> Wake {
        recycle::give(recycle::Buf::Read, std::mem::take(&mut self.rbuf));
        recycle::give(recycle::Buf::Write, std::mem::take(&mut self.wbuf));
        self.rpos = 0;
        let timeout = self.st.env.settings.timeout;
        let shutdown = self.st.env.shutdown.clone();
        let ready = monoio::time::timeout(timeout, self.io.wait_readable());
        monoio::select! {
            r = ready => if r.is_ok() { Wake::Input } else { Wake::TimedOut },
            _ = shutdown.wait() => Wake::Shutdown,
        }
    }

    /// One busy period: takes the buffers, does what `wake` calls for, then runs commands
    /// until the session can go idle (`None`) or ends (`Some`).
    async fn busy(mut self: Box<Self>, wake: Wake) -> (Box<Self>, Option<End>) {
        if self.rbuf.capacity() == 0 {
            self.rbuf = recycle::take(recycle::Buf::Read, READ_BUF_MIN);
        }
        if self.wbuf.capacity() == 0 {
            self.wbuf = recycle::take(recycle::Buf::Write, WRITE_BUF);
        }
        let end = match wake {
            Wake::Start => match self.st.greet(&mut self.wbuf).await {
                Some(end) => Some(end),
                None => self.converse().await,
            },
            Wake::Input => match self.fill_ready().await {
                Ok(()) => self.converse().await,
                Err(end) => Some(end),
            },
            Wake::TimedOut => Some(self.timed_out().await),
            Wake::Shutdown => {
                let end = self.st.shutting_down(&mut self.wbuf);
                let _ = self.flush().await;
                Some(end)
            }
        };
        (self, end)
    }

    /// After the conversation: what is said is sent, the transaction ends, the end-of-session
    /// hooks run, the close is logged.
    async fn close(mut self: Box<Self>, end: End) -> End {
        // Whatever was said is sent before the connection goes.
        let _ = self.flush().await;
        self.st.end_transaction().await;
        if !self.st.quit_done {
            self.st.run(Call::Disconnect).await; // qpsmtpd skips it after QUIT answered DONE
        }
        self.st.run(Call::PostConnection).await;
        self.st
            .env
            .metrics
            .connections_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let conn = &self.st.cx.conn;
        let (ms, n) = (conn.started.elapsed().as_millis(), conn.transactions);
        let remote = conn.remote;
        let msg = format_args!("close {remote}: {end:?} after {ms} ms, {n} transactions");
        self.st.cx.log(Level::Info, "core", msg);
        end
    }

    /// Runs every complete command in the buffer, answers, reads more; returns `None` when the
    /// session can go idle (no input left, replies sent, no transaction open).
    async fn converse(&mut self) -> Option<End> {
        let end = loop {
            // Every complete line in the buffer first: that is one pipelined batch.
            while let Some((line, used)) = self.lines.next(&self.rbuf[self.rpos..]) {
                self.rpos += used;
                let line = match line {
                    Line::Command(line) => line,
                    Line::TooLong => {
                        let max = self.st.env.settings.max_line;
                        let r = Resolved::new(500, "5.5.2", format!("Line too long (max {max})"));
                        if let Some(end) = self.st.error(&mut self.wbuf, r) {
                            return Some(end);
                        }
                        continue;
                    }
                    Line::BareNewline => {
                        return Some(self.st.bare_newline(&mut self.wbuf, "command"))
                    }
                };
                if self.st.env.shutdown.is_set() {
                    return Some(self.st.shutting_down(&mut self.wbuf));
                }
                self.st.buffered.set(self.rpos < self.rbuf.len());
                let flow = if self.st.sasl.is_some() {
                    self.st.auth_continue(&mut self.wbuf, line).await
                } else {
                    self.st.command(line, &mut self.wbuf).await
                };
                let flow = match flow {
                    Flow::Next => continue,
                    Flow::Close(end) => return Some(end),
                    Flow::Data => self.receive_data().await,
                    Flow::Bdat { size, last, accept } => {
                        self.receive_bdat(size, last, accept).await
                    }
                    Flow::StartTls => match self.start_tls().await {
                        Ok(()) => Flow::Next,
                        Err(end) => Flow::Close(end),
                    },
                };
                if let Flow::Close(end) = flow {
                    return Some(end);
                }
            }
            // No complete line left: guard the partial one, answer the batch, read more.
            self.rpos += self.lines.overflow(&self.rbuf[self.rpos..]);
            if let Err(end) = self.flush().await {
                break end;
            }
            if self.rpos == self.rbuf.len() && self.st.txn.is_none() {
                return None;
            }
            if let Err(end) = self.fill(self.st.env.settings.timeout, true).await {
                break end;
            }
        };
        Some(end)
    }

    /// After `220 Ready to start TLS`: the handshake, then a fresh session over TLS.
    async fn start_tls(&mut self) -> Result<(), End> {
        self.flush().await?;
        // RFC 3207 §4.2 and CVE-2011-0411: bytes pipelined after STARTTLS came in plaintext
        // and must never be executed inside the TLS session.
        let dropped = self.rbuf.len() - self.rpos;
        if dropped > 0 {
            let msg = format_args!("dropped {dropped} bytes pipelined after STARTTLS");
            self.st.cx.log(Level::Warn, "core", msg);
        }
        self.rbuf.clear();
        self.rpos = 0;
        let Some(setup) = self.st.env.tls.clone() else {
            return Err(End::TlsFailed(io::ErrorKind::Unsupported));
        };
        let handshake = self.io.start_tls(setup.config);
        let limit = crate::tls::handshake_timeout(self.st.env.settings.timeout);
        match monoio::time::timeout(limit, handshake).await {
            Ok(Ok(info)) => {
                self.st.tls_started(info).await;
                Ok(())
            }
            Ok(Err(e)) => Err(End::TlsFailed(e.kind())),
            Err(_elapsed) => Err(End::TlsFailed(io::ErrorKind::TimedOut)),
        }
    }

    /// Sends the pending replies.
    async fn flush(&mut self) -> Result<(), End> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let (res, mut buf) = self.io.write_all(buf).await;
        buf.clear();
        self.wbuf = buf;
        res.map_err(|e| End::Io(e.kind()))
    }

    /// After an idle wait: reads what is there without waiting, else as [`Session::fill`].
    async fn fill_ready(&mut self) -> Result<(), End> {
        let room = READ_BUF_MIN.max(self.rbuf.capacity());
        self.rbuf.reserve(room - self.rbuf.len());
        let spare = self.rbuf.capacity() - self.rbuf.len();
        match self.io.read_now(&mut self.rbuf) {
            Some(Ok(0)) => Err(End::ClientClosed),
            Some(Ok(n)) => {
                self.read_full = n == spare;
                Ok(())
            }
            Some(Err(e)) => Err(End::Io(e.kind())),
            None => self.fill(self.st.env.settings.timeout, true).await,
        }
    }

    /// Reads more input after moving unprocessed bytes to the front. Waits at most `timeout`
    /// and, between commands (`idle`), wakes for shutdown; either ends the session with a 421.
    /// Inside DATA (`!idle`) shutdown waits: the transaction may finish before the deadline.
    async fn fill(&mut self, timeout: Duration, idle: bool) -> Result<(), End> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let cap = self.rbuf.capacity();
        if cap == self.rbuf.len() || (self.read_full && cap < READ_BUF_MAX) {
            self.rbuf.reserve(cap.clamp(READ_BUF_MIN, READ_BUF_MAX));
        }
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let buf = std::mem::take(&mut self.rbuf);
        let shutdown = self.st.env.shutdown.clone();
        let read = monoio::time::timeout(timeout, self.io.read(buf));
        let result = monoio::select! {
            r = read => Some(r),
            _ = shutdown.wait(), if idle => None,
        };
        match result {
            Some(Ok((Ok(0), buf))) => {
                self.rbuf = buf;
                Err(End::ClientClosed)
            }
            Some(Ok((Ok(n), buf))) => {
                self.rbuf = buf;
                self.read_full = n == spare;
                Ok(())
            }
            Some(Ok((Err(e), buf))) => {
                self.rbuf = buf;
                if e.kind() == io::ErrorKind::TimedOut {
                    return Err(self.timed_out().await);
                }
                Err(End::Io(e.kind()))
            }
            // The read (and its buffer) was dropped: nothing more is read on this connection.
            Some(Err(_elapsed)) => Err(self.timed_out().await),
            None => {
                let end = self.st.shutting_down(&mut self.wbuf);
                let _ = self.flush().await;
                Err(end)
            }
        }
    }

    async fn timed_out(&mut self) -> End {
        let me = self.st.env.svc.me().to_string();
        reply::write(
            &mut self.wbuf,
            421,
            "4.4.2",
            &format!("{me} Error: timeout exceeded"),
        );
        let _ = self.flush().await;
        End::Timeout
    }
}

impl State {
    /// Runs a chain that has no transaction argument.
    pub(crate) async fn run(&mut self, call: Call<'_>) -> Outcome {
        let env = self.env.clone();
        env.chains.run(&mut self.cx, None, call).await.outcome
    }

    /// pre-connection and connect hooks, then the banner. `Some(end)` if refused.
    async fn greet(&mut self, out: &mut Vec<u8>) -> Option<End> {
        for hook in [Call::PreConnection, Call::Connect] {
            let outcome = self.run(hook).await;
            match respond::for_outcome(hook.hook(), outcome) {
                Answer::Proceed => {}
                Answer::Reply(r) => {
                    r.write(out);
                    // A plugin's DONE with a 2xx reply replaces the banner; anything else
                    // at connect is a refusal and ends the session.
                    if r.disconnect || r.code >= 400 {
                        return Some(End::Disconnected("refused at connect"));
                    }
                    return None;
                }
                Answer::Answered => return None, // DONE without a reply: no banner
            }
        }
        reply::write(out, 220, "", &self.env.settings.smtpgreeting);
        None
    }

    /// Parses and runs one command line.
    async fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Flow {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => {
                let (enh, text) = respond::split_enhanced(e.text);
                return self.error_flow(out, Resolved::new(e.code, "", text.to_string()).enh(enh));
            }
        };
        if self.bdat.active
            && !matches!(
                cmd,
                Command::Bdat { .. } | Command::Rset | Command::Quit | Command::Noop
            )
        {
            // RFC 3030 §3: after BDAT, only BDAT (or RSET) until LAST.
            let r = Resolved::new(503, "5.5.1", "Only BDAT or RSET may follow BDAT");
            return self.error_flow(out, r);
        }
        match cmd {
            Command::Helo(host) => self.hello(out, host, false).await,
            Command::Ehlo(host) => self.hello(out, host, true).await,
            Command::Mail { path, params } => self.mail(out, path, params).await,
            Command::Rcpt { path, params } => self.rcpt(out, path, params).await,
            Command::Data => self.data(out).await,
            Command::Bdat { size, last } => self.bdat(out, size, last).await,
            Command::Rset => self.rset(out).await,
            Command::Noop => self.noop(out).await,
            Command::Quit => self.quit(out).await,
            Command::Vrfy(arg) => self.vrfy(out, arg).await,
            Command::Help(arg) => self.help(out, arg).await,
            Command::StartTls => self.starttls(out).await,
            Command::Auth(args) => self.auth(out, args).await,
            Command::Unknown { verb, args } => {
                let verb = verb.to_ascii_lowercase();
                self.unrecognized(out, &verb, args).await
            }
        }
    }

    /// Sends an error reply and counts it; too many errors end the session.
    fn error(&mut self, out: &mut Vec<u8>, reply: Resolved) -> Option<End> {
        reply.write(out);
        self.errors += 1;
        if self.errors >= self.env.settings.max_errors {
            reply::write(out, 421, "4.7.0", "Too many errors, closing connection");
            return Some(End::TooManyErrors);
        }
        None
    }

    fn error_flow(&mut self, out: &mut Vec<u8>, reply: Resolved) -> Flow {
        match self.error(out, reply) {
            Some(end) => Flow::Close(end),
            None => Flow::Next,
        }
    }

    /// Sends a reply decided by the table; a disconnecting one ends the session.
    fn reply_flow(&mut self, out: &mut Vec<u8>, reply: Resolved, why: &'static str) -> Flow {
        reply.write(out);
        closing(reply.disconnect, why)
    }

    /// A bare CR or LF: refuse and close, as Postfix's `smtpd_forbid_bare_newline` does. After
    /// an ambiguous line end nobody knows where the client thinks a command or the message
    /// ends, which is what SMTP smuggling exploits.
    fn bare_newline(&mut self, out: &mut Vec<u8>, place: &str) -> End {
        self.cx.log(
            Level::Warn,
            "core",
            format_args!(
                "bare CR or LF in {place} from {}: refused",
                self.cx.conn.remote
            ),
        );
        reply::write(
            out,
            521,
            "5.5.2",
            "Error: bare CR or LF received (RFC 5321 2.3.8)",
        );
        End::BareNewline
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) -> End {
        let me = self.env.svc.me().to_string();
        reply::write(
            out,
            421,
            "4.3.2",
            &format!("{me} Service shutting down, try again later"),
        );
        End::Shutdown
    }

    /// STARTTLS (RFC 3207). Without a `tls` line it is an unknown verb, as in qpsmtpd.
    async fn starttls(&mut self, out: &mut Vec<u8>) -> Flow {
        if self.cx.conn.tls.is_some() {
            return self.error_flow(out, Resolved::new(503, "5.5.1", "TLS already active"));
        }
        if !self.tls_offer {
            return self.unrecognized(out, "starttls", "").await;
        }
        reply::write(out, 220, "2.0.0", "Ready to start TLS");
        Flow::StartTls
    }

    /// After the handshake: RFC 3207 §4.2, the server discards what it learned from the client
    /// (its HELO, an AUTH, an open transaction) and keeps what it knows of the peer address.
    async fn tls_started(&mut self, info: ringsmtpd_plugin_api::TlsInfo) {
        self.cx.log(
            Level::Info,
            "core",
            format_args!("TLS started: {} {}", info.protocol, info.cipher),
        );
        self.end_transaction().await;
        let conn = &mut self.cx.conn;
        conn.tls = Some(info);
        conn.hello = None;
        if conn.auth.take().is_some() {
            conn.relay_client = false; // it came from the AUTH, which is forgotten
        }
        self.tls_offer = false;
        self.sasl = None;
        self.errors = 0;
        self.unrecognized = 0;
    }

    /// Takes a cleared transaction from the worker's pool (or makes one).
    fn new_transaction(&mut self) -> Box<Transaction> {
        let mut txn = recycle::take_transaction();
        self.cx.conn.transactions += 1;
        use std::fmt::Write;
        let _ = write!(
            txn.id,
            "{:x}.{}",
            self.cx.conn.id, self.cx.conn.transactions
        );
        txn
    }

    /// Ends the open transaction, if any: `reset_transaction` hook, then back to the pool.
    async fn end_transaction(&mut self) {
        self.bdat = data::Bdat::default();
        if let Some(mut txn) = self.txn.take() {
            let env = self.env.clone();
            if env.chains.has(Hook::ResetTransaction) {
                env.chains
                    .run(&mut self.cx, Some(&mut txn), Call::ResetTransaction)
                    .await;
            }
            recycle::give_transaction(txn);
        }
    }
}

/// The flow after a reply that may close the connection.
fn closing(disconnect: bool, why: &'static str) -> Flow {
    if disconnect {
        Flow::Close(End::Disconnected(why))
    } else {
        Flow::Next
    }
}

impl Resolved {
    /// Uses `enh` as the enhanced code when given.
    pub(crate) fn enh(mut self, enh: Option<&str>) -> Resolved {
        if let Some(e) = enh {
            self.enhanced = std::borrow::Cow::Owned(e.to_string());
        } else if self.enhanced.is_empty() {
            self.enhanced = std::borrow::Cow::Borrowed(match self.code / 100 {
                2 => "2.0.0",
                4 => "4.0.0",
                _ => "5.0.0",
            });
        }
        self
    }
}

#[cfg(test)]
mod tests;
