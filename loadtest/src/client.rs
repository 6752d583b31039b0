//! The SMTP client: one task per connection slot. A slot connects, greets, sends messages
//! until its session quota or the run's budget is used up, says QUIT, and connects again.
//!
//! Every read and write runs under a timeout (`--timeout`, `--connect-timeout`), every reply
//! is parsed with bounds (`proto.rs`), and a slot stops after `--max-failures` consecutive
//! connection failures: a server that closes connections, stops answering or sends garbage
//! is counted and reported, never waited on forever.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::ClientConfig;

use crate::config::{nth_in_range, Config};
use crate::conn::Conn;
use crate::hist::HIST_MAX_US;
use crate::message::Messages;
use crate::proto::{parse_reply, proxy_header, ProtoError, Reply};
use crate::schedule::RateSchedule;
use crate::slices::LATE;
use crate::stats::{Phase, Stage, Stats};

/// First size of a connection's reply buffer; it grows for long multiline replies.
const RBUF_INITIAL: usize = 4096;
/// A reply buffer never grows past this: [`crate::proto`] bounds one reply to less.
const RBUF_MAX: usize = 256 * 1024;

/// State shared by all workers: the message budget, the clock, the stop flag, and counters
/// for the progress line (the report is built from the per-worker [`Stats`]).
pub struct Shared {
    pub t0: Instant,
    /// No message starts at or after this instant.
    pub deadline: Instant,
    pub limit: Option<u64>,
    pub rate: Option<RateSchedule>,
    /// Last sequence number taken.
    next: AtomicU64,
    /// Set by SIGINT/SIGTERM: start nothing new.
    pub stop: Arc<AtomicBool>,
    pub attempted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub conn_errors: AtomicU64,
    /// `--idle`: slots holding an open session, and slots that gave up.
    pub idle_open: AtomicUsize,
    pub idle_gave_up: AtomicUsize,
}

/// A message to send: its sequence number (1-based) and, in open-loop mode, when it is due.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    pub seq: u64,
    pub due: Option<Instant>,
}

impl Shared {
    pub fn new(cfg: &Config, stop: Arc<AtomicBool>) -> Shared {
        let t0 = Instant::now();
        Shared {
            t0,
            deadline: t0 + cfg.time_limit(),
            limit: cfg.messages,
            rate: cfg.rate.clone(),
            next: AtomicU64::new(0),
            stop,
            attempted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            conn_errors: AtomicU64::new(0),
            idle_open: AtomicUsize::new(0),
            idle_gave_up: AtomicUsize::new(0),
        }
    }

    /// Takes the next message, or `None` when the run is over.
    pub fn claim(&self) -> Option<Ticket> {
        if self.stop.load(Relaxed) || Instant::now() >= self.deadline {
            return None;
        }
        let seq = self.next.fetch_add(1, Relaxed) + 1;
        if self.limit.is_some_and(|l| seq > l) {
            return None;
        }
        let due = match &self.rate {
            Some(r) => {
                let due = self.t0 + Duration::from_secs_f64(r.due(seq - 1)?);
                if due >= self.deadline {
                    return None;
                }
                Some(due)
            }
            None => None,
        };
        Some(Ticket { seq, due })
    }
}

/// What one worker thread's slots share (no locks: one thread).
pub struct WorkerCtx {
    pub cfg: Arc<Config>,
    pub shared: Arc<Shared>,
    pub messages: Arc<Messages>,
    pub stats: RefCell<Stats>,
    /// `--starttls`: the run's TLS client config.
    pub tls: Option<Arc<ClientConfig>>,
}

/// Why a connection or a transaction failed.
#[derive(Debug)]
pub enum Fail {
    Timeout,
    /// The server closed the connection (EOF).
    Closed,
    Io(io::Error),
    Protocol(ProtoError),
    /// Banner or EHLO refused with this code.
    Refused(u16),
    /// The server answered 421: it is closing the connection.
    Closing,
    /// The EHLO reply did not offer this extension (`--starttls`, `--auth-plain`).
    NotOffered(&'static str),
    /// The TLS handshake failed, or the server broke STARTTLS's rules.
    Tls(String),
}

impl Fail {
    /// A 421 before the session: the server refuses connections now (its connection limit).
    pub fn is_refusal(&self) -> bool {
        matches!(self, Fail::Refused(421) | Fail::Closing)
    }

    pub fn kind(&self) -> String {
        match self {
            Fail::Timeout => "timeout".into(),
            Fail::Closed => "closed by server".into(),
            Fail::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionRefused => "refused".into(),
                io::ErrorKind::ConnectionReset => "reset".into(),
                io::ErrorKind::BrokenPipe => "broken pipe".into(),
                io::ErrorKind::AddrNotAvailable => "address not available".into(),
                _ => format!("io: {e}"),
            },
            Fail::Protocol(p) => p.to_string(),
            Fail::Refused(c) => format!("refused with {c}"),
            Fail::Closing => "421 (server closing)".into(),
            Fail::NotOffered(ext) => format!("{ext} not offered"),
            Fail::Tls(why) => why.clone(),
        }
    }
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Io(e)
    }
}

enum Outcome {
    Accepted,
    Rejected(u16),
}

/// One connection slot's state across its successive sessions.
struct Slot {
    id: usize,
    ctx: Rc<WorkerCtx>,
    stream: Option<Conn>,
    /// Unparsed reply bytes are `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Commands waiting to be written.
    wbuf: Vec<u8>,
    /// The message being sent.
    body: Vec<u8>,
    pipelining: bool,
    /// The connection was lost (or the server said 421) after the message was answered.
    lost: Option<Fail>,
}

/// Runs connection slot `id` until the run is over for it.
pub async fn run_slot(id: usize, ctx: Rc<WorkerCtx>) {
    let mut slot = Slot {
        id,
        ctx,
        stream: None,
        rbuf: Vec::new(),
        rpos: 0,
        wbuf: Vec::new(),
        body: Vec::new(),
        pipelining: false,
        lost: None,
    };
    slot.run().await;
}

impl Slot {
    fn cfg(&self) -> &Config {
        &self.ctx.cfg
    }

    /// The second of the run it is now (the index of its [`crate::slices::Slice`]).
    fn second(&self) -> u64 {
        self.ctx.shared.t0.elapsed().as_secs()
    }

    async fn run(&mut self) {
        let mut failures = 0u32;
        let mut attempt: u64 = 0;
        let connections = self.cfg().connections as u64;
        // The message this slot will send first on its next session. It is taken before
        // connecting, so no session is opened for nothing; in open-loop mode the connection
        // is made when the message is due, and its time is part of the message's latency.
        let mut pending: Option<Ticket> = None;
        loop {
            if self.ctx.shared.stop.load(Relaxed) || Instant::now() >= self.ctx.shared.deadline {
                break;
            }
            if !self.ctx.cfg.idle {
                if pending.is_none() {
                    pending = self.claim();
                }
                let Some(ticket) = pending else {
                    break;
                };
                if let Some(due) = ticket.due {
                    monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
                }
            }
            // Spread connections over targets and source addresses: slot id first, then
            // the slot's attempt number, so concurrent slots use different addresses.
            let n = self.id as u64 + attempt * connections;
            attempt += 1;
            let targets = &self.ctx.cfg.targets;
            let target = targets[(n % targets.len() as u64) as usize];
            let source = self.ctx.cfg.source_range.map(|r| nth_in_range(r, n));
            let opened = self.open(target, source).await;
            if let Err((stage, fail)) = opened {
                self.stream = None;
                {
                    let second = self.second();
                    let mut st = self.ctx.stats.borrow_mut();
                    st.conn_failed += 1;
                    st.error(stage, fail.kind());
                    let slice = st.slices.at(second);
                    if fail.is_refusal() {
                        slice.refused_421 += 1;
                    } else {
                        slice.conn_errors += 1;
                    }
                    if connect_timed_out(stage, &fail) {
                        slice.connect_timeouts += 1;
                    }
                }
                self.ctx.shared.conn_errors.fetch_add(1, Relaxed);
                if self.ctx.cfg.defer_refused
                    && (fail.is_refusal() || connect_timed_out(stage, &fail))
                {
                    pending = None; // deferred: the next message keeps its own schedule
                    continue;
                }
                failures += 1;
                if failures >= self.ctx.cfg.max_failures {
                    self.ctx.stats.borrow_mut().slots_gave_up += 1;
                    if self.ctx.cfg.idle {
                        self.ctx.shared.idle_gave_up.fetch_add(1, Relaxed);
                    }
                    break;
                }
                // Back off a little so a dead server is not hammered with connects.
                let pause = Duration::from_millis(50 * u64::from(failures.min(20)));
                monoio::time::sleep(pause).await;
                continue;
            }
            failures = 0;
            self.ctx.stats.borrow_mut().sessions += 1;
            if self.ctx.cfg.idle {
                self.hold_idle().await;
                break;
            }
            if self.session(pending.take()).await {
                self.quit().await;
            }
            self.stream = None;
        }
    }

    /// Takes the next message, counting how late this slot takes it: a message whose time has
    /// passed by more than [`LATE`] found no free slot then (the generator's own queue). With
    /// `--skip-late`, messages later than that are skipped, as independent clients would
    /// each have sent theirs on time. `None` when the run is over.
    fn claim(&self) -> Option<Ticket> {
        loop {
            let ticket = self.ctx.shared.claim()?;
            let Some(due) = ticket.due else {
                return Some(ticket);
            };
            let lag = Instant::now().saturating_duration_since(due);
            if lag <= LATE {
                return Some(ticket);
            }
            let second = self.second();
            let mut st = self.ctx.stats.borrow_mut();
            if self.ctx.cfg.skip_late.is_some_and(|max| lag > max) {
                st.slices.at(second).skipped += 1;
                continue;
            }
            st.slices.at(second).late += 1;
            return Some(ticket);
        }
    }

    /// Sends messages on the open session; false if the connection was lost.
    async fn session(&mut self, mut first: Option<Ticket>) -> bool {
        let per_session = self.cfg().per_session;
        let mut sent = 0u32;
        while per_session == 0 || sent < per_session {
            let ticket = match first.take() {
                Some(t) => t,
                None => {
                    let Some(t) = self.claim() else {
                        break;
                    };
                    if let Some(due) = t.due {
                        monoio::time::sleep_until(monoio::time::Instant::from_std(due)).await;
                    }
                    t
                }
            };
            sent += 1;
            let second = self.second();
            {
                let mut st = self.ctx.stats.borrow_mut();
                st.attempted += 1;
                st.slices.at(second).sent += 1;
            }
            self.ctx.shared.attempted.fetch_add(1, Relaxed);
            let outcome = self.message(ticket).await;
            self.ctx.stats.borrow_mut().last_answer = Some(Instant::now());
            let second = self.second();
            match outcome {
                Ok(Outcome::Accepted) => {
                    let mut st = self.ctx.stats.borrow_mut();
                    st.accepted += 1;
                    st.slices.at(second).accepted += 1;
                    if self.ctx.cfg.accepted_log.is_some() {
                        st.accepted_seqs.push(ticket.seq);
                    }
                    drop(st);
                    self.ctx.shared.accepted.fetch_add(1, Relaxed);
                }
                Ok(Outcome::Rejected(code)) => {
                    {
                        let mut st = self.ctx.stats.borrow_mut();
                        st.slices.at(second).rejected += 1;
                        if code >= 500 {
                            st.rejected_5xx += 1;
                        } else {
                            st.rejected_4xx += 1;
                        }
                    }
                    self.ctx.shared.rejected.fetch_add(1, Relaxed);
                    if self.lost.is_none() {
                        if let Err(f) = self.rset().await {
                            self.lost = Some(f);
                        }
                    }
                }
                Err(fail) => {
                    let mut st = self.ctx.stats.borrow_mut();
                    st.failed += 1;
                    st.slices.at(second).failed += 1;
                    drop(st);
                    self.ctx.shared.failed.fetch_add(1, Relaxed);
                    self.lost = Some(fail);
                }
            }
            if let Some(fail) = self.lost.take() {
                let mut st = self.ctx.stats.borrow_mut();
                st.conn_dropped += 1;
                st.error(Stage::Message, fail.kind());
                st.slices.at(second).conn_errors += 1;
                self.ctx.shared.conn_errors.fetch_add(1, Relaxed);
                return false;
            }
        }
        true
    }

    /// `--idle`: keep the session open until the run's deadline, then QUIT.
    async fn hold_idle(&mut self) {
        self.ctx.shared.idle_open.fetch_add(1, Relaxed);
        let shared = self.ctx.shared.clone();
        while !shared.stop.load(Relaxed) && Instant::now() < shared.deadline {
            // Wake once a second to notice a stop (SIGINT) without burning the CPU we measure beside.
            let until = (Instant::now() + Duration::from_secs(1)).min(shared.deadline);
            monoio::time::sleep_until(monoio::time::Instant::from_std(until)).await;
        }
        self.quit().await;
        self.stream = None;
    }

    /// Connect, PROXY header, banner, EHLO (HELO if EHLO is refused as unknown).
    async fn open(
        &mut self,
        target: SocketAddr,
        source: Option<IpAddr>,
    ) -> Result<(), (Stage, Fail)> {
        let start = Instant::now();
        let bind = if self.cfg().proxy.is_some() {
            None
        } else {
            source
        };
        let stream =
            match monoio::time::timeout(self.cfg().connect_timeout, connect(target, bind)).await {
                Err(_) => return Err((Stage::Connect, Fail::Timeout)),
                Ok(Err(e)) => return Err((Stage::Connect, Fail::Io(e))),
                Ok(Ok(s)) => s,
            };
        // Commands are small and answered one by one: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        self.stream = Some(Conn::Plain(stream));
        if self.rbuf.capacity() == 0 {
            self.rbuf = Vec::with_capacity(RBUF_INITIAL);
        }
        self.rbuf.clear();
        self.rpos = 0;
        self.wbuf.clear();
        self.lost = None;
        if let Some(version) = self.cfg().proxy {
            let local = self
                .stream
                .as_ref()
                .and_then(Conn::tcp)
                .and_then(|s| s.local_addr().ok());
            let claimed = match (source, local) {
                (Some(ip), _) => SocketAddr::new(ip, 1024 + (self.id % 60000) as u16),
                (None, Some(l)) => l,
                (None, None) => SocketAddr::new(target.ip(), 1024),
            };
            proxy_header(version, claimed, target, &mut self.wbuf);
            self.flush().await.map_err(|f| (Stage::Connect, f))?;
        }
        let banner = self.reply().await.map_err(|f| (Stage::Banner, f))?;
        self.ctx
            .stats
            .borrow_mut()
            .record(Phase::Connect, start.elapsed());
        if banner.code != 220 {
            return Err((Stage::Banner, Fail::Refused(banner.code)));
        }
        let t = Instant::now();
        let mut ehlo = self.ehlo().await.map_err(|f| (Stage::Ehlo, f))?;
        self.record(Phase::Ehlo, t);
        if let Some(config) = self.ctx.tls.clone() {
            ehlo = self
                .starttls(config, target, &ehlo)
                .await
                .map_err(|f| (Stage::Starttls, f))?;
        }
        if self.cfg().auth_plain.is_some() {
            self.auth_plain(&ehlo).await.map_err(|f| (Stage::Auth, f))?;
        }
        self.pipelining = self.cfg().pipelining && ehlo.pipelining;
        if self.cfg().pipelining && !ehlo.pipelining {
            self.ctx.stats.borrow_mut().no_pipelining += 1;
        }
        Ok(())
    }

    /// EHLO (HELO if EHLO is refused as unknown); its 2xx reply.
    async fn ehlo(&mut self) -> Result<Reply, Fail> {
        let helo = &self.ctx.cfg.helo;
        self.wbuf
            .extend_from_slice(format!("EHLO {helo}\r\n").as_bytes());
        self.flush().await?;
        let mut ehlo = self.reply().await?;
        if matches!(ehlo.code, 500 | 502) {
            // An SMTP-only server: fall back to HELO, without extensions.
            let helo = &self.ctx.cfg.helo;
            self.wbuf
                .extend_from_slice(format!("HELO {helo}\r\n").as_bytes());
            self.flush().await?;
            let code = self.reply().await?.code;
            ehlo = Reply {
                code,
                ..Reply::default()
            };
        }
        if ehlo.code / 100 != 2 {
            return Err(Fail::Refused(ehlo.code));
        }
        Ok(ehlo)
    }

    /// STARTTLS (RFC 3207), the handshake, and EHLO again: the reply to that EHLO, which
    /// replaces the one before (§4.2: the client forgets what it learnt before TLS).
    async fn starttls(
        &mut self,
        config: Arc<ClientConfig>,
        target: SocketAddr,
        ehlo: &Reply,
    ) -> Result<Reply, Fail> {
        if !ehlo.starttls {
            return Err(Fail::NotOffered("STARTTLS"));
        }
        let t = Instant::now();
        self.wbuf.extend_from_slice(b"STARTTLS\r\n");
        self.flush().await?;
        let r = self.reply().await?;
        if r.code != 220 {
            return Err(Fail::Refused(r.code));
        }
        if self.rpos < self.rbuf.len() {
            // Plaintext sent after the 220 would be read as if it came over TLS (the
            // STARTTLS command injection of CVE-2011-0411, server side): refuse it.
            return Err(Fail::Tls("plaintext after the 220 to STARTTLS".into()));
        }
        let plain = self.stream.take().ok_or(Fail::Closed)?;
        let tls = self.ctx.cfg.tls.as_ref();
        let name = match tls.and_then(|o| o.name.clone()) {
            Some(n) => n,
            None => target.ip().to_string(),
        };
        let (conn, kind) =
            match monoio::time::timeout(self.ctx.cfg.timeout, plain.start_tls(config, &name)).await
            {
                Err(_) => return Err(Fail::Timeout),
                Ok(Err(e)) => return Err(Fail::Tls(format!("handshake: {}", printable(&e)))),
                Ok(Ok(c)) => c,
            };
        self.stream = Some(conn);
        {
            let mut st = self.ctx.stats.borrow_mut();
            st.tls_sessions += 1;
            *st.tls_kinds.entry(kind).or_insert(0) += 1;
        }
        let ehlo = self.ehlo().await?;
        self.record(Phase::Tls, t);
        Ok(ehlo)
    }

    /// AUTH PLAIN (RFC 4616) with the initial response (RFC 4954); 235 or an error.
    async fn auth_plain(&mut self, ehlo: &Reply) -> Result<(), Fail> {
        use base64::Engine as _;
        if !ehlo.auth_plain {
            return Err(Fail::NotOffered("AUTH PLAIN"));
        }
        let Some((user, pass)) = &self.ctx.cfg.auth_plain else {
            return Ok(());
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        let t = Instant::now();
        self.wbuf.extend_from_slice(b"AUTH PLAIN ");
        self.wbuf.extend_from_slice(token.as_bytes());
        self.wbuf.extend_from_slice(b"\r\n");
        self.flush().await?;
        let r = self.reply().await?;
        if r.code != 235 {
            return Err(Fail::Refused(r.code));
        }
        self.record(Phase::Auth, t);
        self.ctx.stats.borrow_mut().auth_ok += 1;
        Ok(())
    }

    /// One transaction. `Err` means the connection is unusable (and the message failed).
    async fn message(&mut self, ticket: Ticket) -> Result<Outcome, Fail> {
        // Built before the clock starts: the generator's own work is not the server's latency.
        self.body.clear();
        self.ctx.messages.build(ticket.seq, &mut self.body);
        self.transaction(ticket).await
    }

    async fn transaction(&mut self, ticket: Ticket) -> Result<Outcome, Fail> {
        let rcpts = self.cfg().rcpts;
        // The first refusal decides the outcome. Once there is one, a lost connection no
        // longer fails the message: the server answered it (and then hung up, as a
        // `reject_type disconnect` plugin does).
        let mut refusal: Option<u16> = None;
        macro_rules! reply {
            () => {
                match self.reply().await {
                    Ok(r) if r.code == 421 => {
                        // RFC 5321 §3.8: the server is closing the channel.
                        self.lost = Some(Fail::Closing);
                        return Ok(Outcome::Rejected(refusal.unwrap_or(421)));
                    }
                    Ok(r) => r,
                    Err(f) => match refusal {
                        Some(code) => {
                            self.lost = Some(f);
                            return Ok(Outcome::Rejected(code));
                        }
                        None => return Err(f),
                    },
                }
            };
        }
        let sent = Instant::now();
        let start = ticket.due.unwrap_or(sent);
        let mut accepted = 0;
        let mut last_rcpt = 0;
        let mut data_sent = sent;
        let data;
        if self.pipelining {
            // RFC 2920: MAIL, every RCPT and DATA in one write; DATA ends the group.
            self.push_mail();
            for j in 0..rcpts {
                self.push_rcpt(j);
            }
            self.wbuf.extend_from_slice(b"DATA\r\n");
            self.flush().await?;
            let mail = reply!();
            self.record(Phase::Mail, start);
            if mail.code / 100 != 2 {
                refusal = Some(mail.code);
            }
            for _ in 0..rcpts {
                let r = reply!();
                self.record(Phase::Rcpt, sent);
                last_rcpt = r.code;
                if r.code / 100 == 2 {
                    accepted += 1;
                } else {
                    self.ctx.stats.borrow_mut().rcpt_rejected += 1;
                }
            }
            if refusal.is_none() && accepted == 0 {
                refusal = Some(last_rcpt);
            }
            data = reply!();
        } else {
            self.push_mail();
            self.flush().await?;
            let mail = reply!();
            self.record(Phase::Mail, start);
            if mail.code / 100 != 2 {
                return Ok(Outcome::Rejected(mail.code));
            }
            for j in 0..rcpts {
                self.push_rcpt(j);
                let t = Instant::now();
                self.flush().await?;
                let r = reply!();
                self.record(Phase::Rcpt, t);
                last_rcpt = r.code;
                if r.code / 100 == 2 {
                    accepted += 1;
                } else {
                    self.ctx.stats.borrow_mut().rcpt_rejected += 1;
                }
            }
            if accepted == 0 {
                return Ok(Outcome::Rejected(last_rcpt));
            }
            self.wbuf.extend_from_slice(b"DATA\r\n");
            data_sent = Instant::now();
            self.flush().await?;
            data = reply!();
        }
        if data.code != 354 {
            return Ok(Outcome::Rejected(refusal.unwrap_or(data.code)));
        }
        self.record(Phase::Data, data_sent);
        if let Some(code) = refusal {
            // A server that says 354 after refusing the envelope: give it an empty message
            // (RFC 2920 §3.1) and count the refusal.
            self.wbuf.extend_from_slice(b".\r\n");
            self.flush().await?;
            reply!();
            return Ok(Outcome::Rejected(code));
        }
        let dot = Instant::now();
        self.write_body().await?;
        let end = reply!();
        self.record(Phase::DataEnd, dot);
        if end.code / 100 == 2 {
            self.record(Phase::Message, start);
            let us = start
                .elapsed()
                .as_micros()
                .clamp(1, u128::from(HIST_MAX_US)) as u64;
            let second = self.second();
            let mut st = self.ctx.stats.borrow_mut();
            st.slices.at(second).latency.saturating_record(us);
            Ok(Outcome::Accepted)
        } else {
            Ok(Outcome::Rejected(end.code))
        }
    }

    /// After a refused transaction: RSET, so the next MAIL starts clean.
    async fn rset(&mut self) -> Result<(), Fail> {
        self.wbuf.extend_from_slice(b"RSET\r\n");
        self.flush().await?;
        let r = self.reply().await?;
        if r.code == 421 {
            return Err(Fail::Closing);
        }
        Ok(())
    }

    async fn quit(&mut self) {
        self.wbuf.extend_from_slice(b"QUIT\r\n");
        let r = match self.flush().await {
            Ok(()) => self.reply().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(fail) = r {
            let second = self.second();
            let mut st = self.ctx.stats.borrow_mut();
            st.conn_dropped += 1;
            st.error(Stage::Quit, fail.kind());
            st.slices.at(second).conn_errors += 1;
            self.ctx.shared.conn_errors.fetch_add(1, Relaxed);
        }
        self.stream = None;
    }

    fn record(&self, phase: Phase, since: Instant) {
        self.ctx.stats.borrow_mut().record(phase, since.elapsed());
    }

    fn push_mail(&mut self) {
        self.wbuf.extend_from_slice(b"MAIL FROM:<");
        self.wbuf.extend_from_slice(self.ctx.cfg.from.as_bytes());
        self.wbuf.extend_from_slice(b">\r\n");
    }

    fn push_rcpt(&mut self, j: u32) {
        use std::io::Write;
        let _ = write!(
            self.wbuf,
            "RCPT TO:<rcpt{j}@{}>\r\n",
            self.ctx.cfg.to_domain
        );
    }

    /// Writes `wbuf` and empties it.
    async fn flush(&mut self) -> Result<(), Fail> {
        let buf = std::mem::take(&mut self.wbuf);
        let stream = self.stream.as_mut().ok_or(Fail::Closed)?;
        match monoio::time::timeout(self.ctx.cfg.timeout, stream.write_all(buf)).await {
            // The buffer went with the cancelled write; the connection is dropped anyway.
            Err(_) => Err(Fail::Timeout),
            Ok((res, mut buf)) => {
                buf.clear();
                self.wbuf = buf;
                res.map_err(Fail::Io)
            }
        }
    }

    /// Writes the message built in `body` (it ends with the final dot), without copying it.
    async fn write_body(&mut self) -> Result<(), Fail> {
        let buf = std::mem::take(&mut self.body);
        let stream = self.stream.as_mut().ok_or(Fail::Closed)?;
        match monoio::time::timeout(self.ctx.cfg.timeout, stream.write_all(buf)).await {
            Err(_) => Err(Fail::Timeout),
            Ok((res, buf)) => {
                self.body = buf;
                res.map_err(Fail::Io)
            }
        }
    }

    /// Reads one complete reply, counting its code.
    async fn reply(&mut self) -> Result<Reply, Fail> {
        loop {
            if self.rpos < self.rbuf.len() {
                match parse_reply(&self.rbuf[self.rpos..]) {
                    Ok(Some((r, n))) => {
                        self.rpos += n;
                        if self.rpos == self.rbuf.len() {
                            self.rbuf.clear();
                            self.rpos = 0;
                        }
                        self.ctx.stats.borrow_mut().code(r.code);
                        return Ok(r);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Fail::Protocol(e)),
                }
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            if self.rbuf.len() == self.rbuf.capacity() {
                if self.rbuf.capacity() >= RBUF_MAX {
                    return Err(Fail::Protocol(ProtoError::TooManyLines));
                }
                self.rbuf.reserve(self.rbuf.capacity().max(RBUF_INITIAL));
            }
            let buf = std::mem::take(&mut self.rbuf);
            let stream = self.stream.as_mut().ok_or(Fail::Closed)?;
            match monoio::time::timeout(self.ctx.cfg.timeout, stream.read(buf)).await {
                Err(_) => return Err(Fail::Timeout),
                Ok((res, buf)) => {
                    self.rbuf = buf;
                    match res {
                        Ok(0) => return Err(Fail::Closed),
                        Ok(_) => {}
                        Err(e) => return Err(Fail::Io(e)),
                    }
                }
            }
        }
    }
}

/// A TCP connect that did not complete in time: the server's listen queue is full (its
/// kernel drops the SYNs) or the host is unreachable.
fn connect_timed_out(stage: Stage, fail: &Fail) -> bool {
    stage == Stage::Connect && matches!(fail, Fail::Timeout)
}

/// `e` as text for the report: a handshake error can quote the server's certificate, so
/// control characters become `?` and the text is cut at 200 characters.
fn printable(e: &io::Error) -> String {
    e.to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect()
}

/// Connects to `target`, from `bind` if given (a loopback source address from
/// `--source-range`).
async fn connect(target: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(src) = bind else {
        return TcpStream::connect_addr(target).await;
    };
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    sock.set_nonblocking(true)?;
    // Let connect() pick the port (IP_BIND_ADDRESS_NO_PORT): binding with port 0 would reserve
    // a port per source address at bind time and run out sooner. Best effort.
    if src.is_ipv4() {
        let one: libc::c_int = 1;
        // SAFETY: the fd is a valid open socket owned by `sock`; the option value is a
        // c_int that lives across the call, and its size is passed.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    sock.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    match sock.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std_stream: std::net::TcpStream = sock.into();
    let stream = TcpStream::from_std(std_stream)?;
    stream.writable(false).await?;
    // The connect's outcome is in SO_ERROR once the socket is writable.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    // SAFETY: `fd` belongs to `stream`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Some(e) = socket2::SockRef::from(&borrowed).take_error()? {
        return Err(e);
    }
    Ok(stream)
}
