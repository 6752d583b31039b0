//! What a run counts: per-phase latency histograms, reply codes, message outcomes and
//! connection errors. Each worker thread keeps its own [`Stats`] (no sharing on the hot path);
//! they are merged once at the end.
//!
//! The invariant every report keeps, and the tests check:
//! `attempted = accepted + rejected_4xx + rejected_5xx + failed`.
//! A message is *attempted* once a connection has taken its sequence number and is about to
//! send MAIL; connection failures before that are counted apart (`conn_failed`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::hist::{histogram, HIST_MAX_US};
use crate::slices::Slices;

/// The measured steps of a message's life. Latencies are in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// TCP connect started -> 220 banner received (the PROXY header, if any, in between).
    Connect,
    /// EHLO sent -> its reply (the first EHLO; with STARTTLS, the second is in `Tls`).
    Ehlo,
    /// STARTTLS sent -> handshake done -> the reply to the EHLO after it.
    Tls,
    /// AUTH PLAIN sent -> 235.
    Auth,
    /// MAIL sent (open loop: the message's scheduled time) -> its reply.
    Mail,
    /// RCPT sent (pipelined: the batch sent) -> its reply; one sample per recipient.
    Rcpt,
    /// DATA sent (pipelined: the batch sent) -> 354.
    Data,
    /// The message's last write started (body and final dot, one write) -> the reply to the
    /// message. For small messages that is the dot; for large ones it includes the transfer.
    /// (Timing from the write's completion would undercount: the reply can already be waiting
    /// when the completion is reaped.)
    DataEnd,
    /// The whole transaction: MAIL sent (open loop: scheduled) -> reply to the final dot, for
    /// accepted messages.
    Message,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Connect,
        Phase::Ehlo,
        Phase::Tls,
        Phase::Auth,
        Phase::Mail,
        Phase::Rcpt,
        Phase::Data,
        Phase::DataEnd,
        Phase::Message,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Ehlo => "ehlo",
            Phase::Tls => "tls",
            Phase::Auth => "auth",
            Phase::Mail => "mail",
            Phase::Rcpt => "rcpt",
            Phase::Data => "data",
            Phase::DataEnd => "dataend",
            Phase::Message => "message",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Connect => "connect->banner",
            Phase::Ehlo => "EHLO",
            Phase::Tls => "STARTTLS+handshake+EHLO",
            Phase::Auth => "AUTH PLAIN (235)",
            Phase::Mail => "MAIL",
            Phase::Rcpt => "RCPT",
            Phase::Data => "DATA (354)",
            Phase::DataEnd => "DATA end (body+dot->reply)",
            Phase::Message => "message (MAIL->250)",
        }
    }
}

/// Where a connection-level error happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Connect,
    Banner,
    Ehlo,
    Starttls,
    Auth,
    Message,
    Quit,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Banner => "banner",
            Stage::Ehlo => "ehlo",
            Stage::Starttls => "starttls",
            Stage::Auth => "auth",
            Stage::Message => "message",
            Stage::Quit => "quit",
        }
    }
}

#[derive(Clone)]
pub struct Stats {
    pub hist: Vec<Histogram<u64>>,
    /// Count of every reply code seen (banner, EHLO, MAIL, ..., QUIT), indexed by code.
    pub codes: Vec<u64>,
    pub attempted: u64,
    pub accepted: u64,
    pub rejected_4xx: u64,
    pub rejected_5xx: u64,
    /// Attempted messages that got no final answer: the connection closed, timed out or sent
    /// garbage in the middle of the transaction.
    pub failed: u64,
    /// Single recipients refused (a message with some accepted recipients still goes on).
    pub rcpt_rejected: u64,
    /// Sessions that reached the EHLO reply.
    pub sessions: u64,
    /// Connections that failed before a session was established (connect, banner, EHLO,
    /// STARTTLS, AUTH).
    pub conn_failed: u64,
    /// Sessions that completed a TLS handshake, and how many of them negotiated each
    /// "protocol cipher".
    pub tls_sessions: u64,
    pub tls_kinds: BTreeMap<String, u64>,
    /// Sessions authenticated (235 to AUTH PLAIN).
    pub auth_ok: u64,
    /// Established sessions lost in the middle of a message or at QUIT.
    pub conn_dropped: u64,
    /// Sessions where we wanted PIPELINING and the server did not offer it.
    pub no_pipelining: u64,
    /// Connection slots that stopped after `--max-failures` consecutive failures.
    pub slots_gave_up: u64,
    /// (stage, kind) -> count.
    pub errors: BTreeMap<(&'static str, String), u64>,
    /// When the last message was answered (the end of the busy time the rate is taken over).
    pub last_answer: Option<Instant>,
    /// Sequence numbers of the accepted messages, kept only for `--accepted`.
    pub accepted_seqs: Vec<u64>,
    /// The same counts second by second.
    pub slices: Slices,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            hist: Phase::ALL.iter().map(|_| histogram(3)).collect(),
            codes: vec![0; 600],
            attempted: 0,
            accepted: 0,
            rejected_4xx: 0,
            rejected_5xx: 0,
            failed: 0,
            rcpt_rejected: 0,
            sessions: 0,
            conn_failed: 0,
            tls_sessions: 0,
            tls_kinds: BTreeMap::new(),
            auth_ok: 0,
            conn_dropped: 0,
            no_pipelining: 0,
            slots_gave_up: 0,
            errors: BTreeMap::new(),
            last_answer: None,
            accepted_seqs: Vec::new(),
            slices: Slices::default(),
        }
    }
}

impl Stats {
    pub fn record(&mut self, phase: Phase, d: Duration) {
        let us = d.as_micros().clamp(1, HIST_MAX_US as u128) as u64;
        self.hist[phase as usize].saturating_record(us);
    }

    pub fn hist(&self, phase: Phase) -> &Histogram<u64> {
        &self.hist[phase as usize]
    }

    pub fn code(&mut self, code: u16) {
        if let Some(c) = self.codes.get_mut(code as usize) {
            *c += 1;
        }
    }

    pub fn error(&mut self, stage: Stage, kind: String) {
        *self.errors.entry((stage.name(), kind)).or_insert(0) += 1;
    }

    pub fn rejected(&self) -> u64 {
        self.rejected_4xx + self.rejected_5xx
    }

    /// Connection errors of every kind: failed to establish, or lost once established.
    pub fn conn_errors(&self) -> u64 {
        self.conn_failed + self.conn_dropped
    }

    /// `attempted == accepted + rejected + failed`.
    pub fn balanced(&self) -> bool {
        self.attempted == self.accepted + self.rejected() + self.failed
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            // Same bounds on both sides: add cannot fail. Ignore rather than unwrap.
            let _ = a.add(b);
        }
        for (a, b) in self.codes.iter_mut().zip(&o.codes) {
            *a += b;
        }
        self.attempted += o.attempted;
        self.accepted += o.accepted;
        self.rejected_4xx += o.rejected_4xx;
        self.rejected_5xx += o.rejected_5xx;
        self.failed += o.failed;
        self.rcpt_rejected += o.rcpt_rejected;
        self.sessions += o.sessions;
        self.conn_failed += o.conn_failed;
        self.tls_sessions += o.tls_sessions;
        for (k, v) in &o.tls_kinds {
            *self.tls_kinds.entry(k.clone()).or_insert(0) += v;
        }
        self.auth_ok += o.auth_ok;
        self.conn_dropped += o.conn_dropped;
        self.no_pipelining += o.no_pipelining;
        self.slots_gave_up += o.slots_gave_up;
        self.last_answer = self.last_answer.max(o.last_answer);
        self.accepted_seqs.extend_from_slice(&o.accepted_seqs);
        self.slices.merge(&o.slices);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Reply codes seen, in order.
    pub fn code_counts(&self) -> Vec<(u16, u64)> {
        self.codes
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(c, &n)| (c as u16, n))
            .collect()
    }
}

/// One point of the throughput timeline: cumulative counts at `t` seconds into the run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub t: f64,
    pub attempted: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    pub conn_errors: u64,
}

/// Latency curve for a percentile plot: points (x, µs) where x = -log10(1 - q), so x = 1, 2, 3
/// are p90, p99, p99.9; stops where the histogram has too few samples to say more.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let n = h.len();
    if n == 0 {
        return Vec::new();
    }
    let x_max = (n as f64).log10().min(6.0);
    let mut out = Vec::new();
    let mut x = 0.0;
    loop {
        let q = 1.0 - 10f64.powf(-x);
        out.push((x, h.value_at_quantile(q)));
        if x >= x_max {
            break;
        }
        x = (x + 0.05).min(x_max);
    }
    out.push((x_max, h.max()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_everything() {
        let mut a = Stats {
            attempted: 3,
            accepted: 2,
            rejected_5xx: 1,
            ..Default::default()
        };
        a.record(Phase::Mail, Duration::from_micros(100));
        a.code(250);
        a.error(Stage::Connect, "refused".into());
        a.tls_sessions = 1;
        a.tls_kinds.insert("TLSv1.3 X".into(), 1);
        a.auth_ok = 1;
        let mut b = a.clone();
        b.failed = 1;
        b.attempted = 4;
        a.merge(&b);
        assert_eq!(
            (a.attempted, a.accepted, a.rejected(), a.failed),
            (7, 4, 2, 1)
        );
        assert!(a.balanced());
        assert_eq!(a.hist(Phase::Mail).len(), 2);
        assert_eq!(a.code_counts(), vec![(250, 2)]);
        assert_eq!(a.errors[&("connect", "refused".to_string())], 2);
        assert_eq!(
            (a.tls_sessions, a.tls_kinds["TLSv1.3 X"], a.auth_ok),
            (2, 2, 2)
        );
    }

    #[test]
    fn curves_end_at_the_max() {
        let mut h = histogram(3);
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let c = percentile_curve(&h);
        assert_eq!(c[0].0, 0.0);
        assert_eq!(c.last().unwrap().1, h.max());
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
