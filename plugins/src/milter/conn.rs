//! One connection to a milter, kept for one SMTP session: negotiation, then packets out and
//! replies in, every wait under a deadline. What the replies mean is the plugin's business
//! (`mod.rs`); this file only moves packets.

use std::time::Duration;

use ringsmtpd_plugin_api::net::{Endpoint, Stream};
use ringsmtpd_plugin_api::Services;

use super::proto::{self, step, Negotiated, Packet, Reply, Stage};
use crate::helpers::deadline::within;

/// A live milter connection and what was negotiated on it.
pub(crate) struct Conn {
    stream: Box<dyn Stream>,
    /// Bytes received and not parsed yet.
    buf: Vec<u8>,
    pub neg: Negotiated,
    /// Packets waiting to be written (written before the next read, or by [`Conn::flush`]).
    out: Vec<u8>,
}

impl Conn {
    /// Connects and negotiates version 6 with everything we offer.
    pub(crate) async fn open(
        svc: &dyn Services,
        to: &Endpoint,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Result<Conn, String> {
        let stream = match within(svc, connect_timeout, svc.connect(to, connect_timeout)).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(format!("cannot connect to {to}: {e}")),
            None => return Err(format!("cannot connect to {to}: timed out")),
        };
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(512),
            neg: Negotiated {
                version: proto::VERSION,
                actions: 0,
                steps: 0,
                macros: Vec::new(),
            },
            out: Vec::new(),
        };
        conn.send(&Packet::OptNeg {
            actions: proto::OFFERED_ACTIONS,
            steps: proto::OFFERED_STEPS,
        });
        match conn.reply(svc, timeout).await? {
            Reply::OptNeg(mut n) => {
                proto::check_negotiation(&n)?;
                // Commands an older milter does not know: SMFIC_UNKNOWN came with version 3,
                // SMFIC_DATA with version 4.
                if n.version < 3 {
                    n.steps |= step::NOUNKNOWN;
                }
                if n.version < 4 {
                    n.steps |= step::NODATA;
                }
                conn.neg = n;
                Ok(conn)
            }
            _ => Err("did not answer the negotiation with its options".into()),
        }
    }

    pub(crate) fn has_step(&self, flag: u32) -> bool {
        self.neg.steps & flag != 0
    }

    /// Queues a packet.
    pub(crate) fn send(&mut self, p: &Packet<'_>) {
        p.encode(&mut self.out);
    }

    /// Queues the macros of `stage`: ours, or only those the milter asked for at that stage.
    pub(crate) fn send_macros(&mut self, stage: Stage, ours: Vec<(String, String)>) {
        let pairs: Vec<(String, String)> = match self.neg.macros.iter().find(|(s, _)| *s == stage) {
            Some((_, wanted)) => ours
                .into_iter()
                .filter(|(n, _)| wanted.contains(n))
                .collect(),
            None => ours,
        };
        if !pairs.is_empty() {
            self.send(&Packet::Macro {
                stage,
                pairs: &pairs,
            });
        }
    }

    /// Writes what is queued. Bytes still unread from the milter at that point came after its
    /// last answer, unasked (a packet longer than its declared length, a second reply): a
    /// protocol error.
    pub(crate) async fn flush(
        &mut self,
        svc: &dyn Services,
        timeout: Duration,
    ) -> Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.finish()?;
        let out = std::mem::take(&mut self.out);
        match within(svc, timeout, self.stream.write_all(out)).await {
            Some((Ok(()), mut b)) => {
                b.clear();
                self.out = b;
                Ok(())
            }
            Some((Err(e), _)) => Err(format!("write failed: {e}")),
            None => Err(format!("write timed out ({}s)", timeout.as_secs())),
        }
    }

    /// Ends an exchange after its final reply: bytes already received beyond it (a packet
    /// longer than its declared length, a second reply) are a protocol error.
    pub(crate) fn finish(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "sent {} bytes after its answer, unasked",
                self.buf.len()
            ))
        }
    }

    /// Writes what is queued, then reads the next reply; `timeout` applies to each wait.
    pub(crate) async fn reply(
        &mut self,
        svc: &dyn Services,
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.flush(svc, timeout).await?;
        loop {
            match proto::parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(16 * 1024);
            }
            let buf = std::mem::take(&mut self.buf);
            match within(svc, timeout, self.stream.read(buf)).await {
                Some((Ok(0), _)) => return Err("closed the connection".into()),
                Some((Ok(_), b)) => self.buf = b,
                Some((Err(e), _)) => return Err(format!("read failed: {e}")),
                None => return Err(format!("no answer within {}s", timeout.as_secs())),
            }
        }
    }
}
