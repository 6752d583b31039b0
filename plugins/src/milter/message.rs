//! The message's part of a transaction: header fields, end of headers, the body (from memory
//! or the spool file, in bounded packets), the end of message and the modifications that
//! come before its final reply.

use std::sync::Arc;

use ringsmtpd_plugin_api::{blocking, Body, Cx, Outcome, Services, Transaction};

use super::conn::Conn;
use super::proto::{self, step, Packet, Reply, Stage};
use super::session::{final_verdict, kind, Discarded, State, Verdict};
use super::{apply, macros, Milter};

/// A final reply before the end of message.
enum Next {
    GoOn,
    /// `SMFIR_SKIP`: no more body packets.
    Skip,
    Verdict(Verdict),
}

impl Milter {
    /// Headers, end of headers, body and end of message, then the modifications.
    pub(super) async fn end_of_message(&self, cx: &mut Cx, txn: &mut Transaction) -> Outcome {
        let mut live = match self.take_live(cx) {
            Ok(live) => live,
            Err(outcome) => return outcome,
        };
        if live.skip_txn {
            self.put(cx, State::Live(live));
            return Outcome::Declined;
        }
        let result = self.exchange_message(cx, &mut live.conn, txn).await;
        match result {
            Ok((verdict, mods)) => {
                let outcome = match verdict {
                    Verdict::Discard => {
                        txn.notes.set(Discarded);
                        Outcome::Declined
                    }
                    Verdict::Outcome(o) => o,
                    Verdict::Continue | Verdict::Accept => {
                        if let Err(e) = apply::apply(&*cx.svc, txn, mods).await {
                            return self.failed(cx, &e);
                        }
                        Outcome::Declined
                    }
                };
                // The milter ends its transaction at end of message: no abort follows.
                live.txn = None;
                self.put(cx, State::Live(live));
                outcome
            }
            Err(e) => self.failed(cx, &e),
        }
    }

    async fn exchange_message(
        &self,
        cx: &mut Cx,
        conn: &mut Conn,
        txn: &Transaction,
    ) -> Result<(Verdict, Vec<Reply>), String> {
        let svc = cx.svc.clone();
        let leadspc = conn.has_step(step::HDR_LEADSPC);
        if !conn.has_step(step::NOHDRS) {
            let header = txn.body.header_bytes();
            for f in apply::header_fields(header) {
                let (name, value) = (f.name(header), f.value(header));
                let value = if leadspc {
                    &value[..]
                } else {
                    value.strip_prefix(' ').unwrap_or(&value)
                };
                let value = value.replace("\r\n", "\n");
                conn.send(&Packet::Header {
                    name: &name,
                    value: &value,
                });
                if !conn.has_step(step::NR_HDR) {
                    if let Some(v) = self.early(conn, &*svc).await? {
                        return Ok((v, Vec::new()));
                    }
                }
            }
        }
        if !conn.has_step(step::NOEOH) {
            conn.send_macros(Stage::Eoh, macros::queue_id(txn));
            conn.send(&Packet::Eoh);
            if !conn.has_step(step::NR_EOH) {
                if let Some(v) = self.early(conn, &*svc).await? {
                    return Ok((v, Vec::new()));
                }
            }
        }
        if !conn.has_step(step::NOBODY) {
            if let Some(v) = self.send_body(conn, &*svc, &txn.body).await? {
                return Ok((v, Vec::new()));
            }
        }
        conn.send_macros(Stage::Eom, macros::queue_id(txn));
        conn.send(&Packet::Eom);
        let mut mods = Vec::new();
        loop {
            let r = conn.reply(&*svc, self.eom_timeout).await?;
            if let Some(flag) = r.needs() {
                if conn.neg.actions & flag == 0 {
                    return Err(format!(
                        "sent {} without negotiating action 0x{flag:x}",
                        kind(&r)
                    ));
                }
                if mods.len() >= 10_000 {
                    return Err("sent too many modifications".into());
                }
                mods.push(r);
                continue;
            }
            if let Some(v) = final_verdict(r)? {
                conn.finish()?;
                return Ok((v, mods));
            }
        }
    }

    /// The reply to a header, end of headers or body packet: `None` to go on, or a verdict
    /// that ends the message early. A skip goes on too (at a body packet it ends the body,
    /// see [`Milter::send_body`]).
    async fn early(&self, conn: &mut Conn, svc: &dyn Services) -> Result<Option<Verdict>, String> {
        Ok(match self.next(conn, svc).await? {
            Next::GoOn | Next::Skip => None,
            Next::Verdict(v) => Some(v),
        })
    }

    /// The final reply to a packet before the end of message, past any progress.
    async fn next(&self, conn: &mut Conn, svc: &dyn Services) -> Result<Next, String> {
        loop {
            let next = match conn.reply(svc, self.timeout).await? {
                Reply::Continue => Next::GoOn,
                Reply::Skip => Next::Skip,
                r => match final_verdict(r)? {
                    Some(v) => Next::Verdict(v),
                    None => continue, // progress
                },
            };
            conn.finish()?;
            return Ok(next);
        }
    }

    /// The body in packets of at most [`proto::BODY_CHUNK`] bytes, from memory or read from
    /// the spool file on the blocking pool one packet at a time.
    async fn send_body(
        &self,
        conn: &mut Conn,
        svc: &dyn Services,
        body: &Body,
    ) -> Result<Option<Verdict>, String> {
        let start = body.header_end.unwrap_or(body.len as usize) as u64;
        let spool = match &body.spool {
            Some(s) => Some(Arc::new(
                s.file.try_clone().map_err(|e| format!("spool file: {e}"))?,
            )),
            None => None,
        };
        let mut offset = start;
        while offset < body.len {
            let n = ((body.len - offset) as usize).min(proto::BODY_CHUNK);
            let chunk = match &spool {
                None => body
                    .mem
                    .get(offset as usize..offset as usize + n)
                    .ok_or("body shorter than its length")?
                    .to_vec(),
                Some(file) => {
                    let file = file.clone();
                    blocking(svc, move || {
                        use std::os::unix::fs::FileExt;
                        let mut buf = vec![0; n];
                        file.read_exact_at(&mut buf, offset).map(|()| buf)
                    })
                    .await
                    .ok_or("spool read panicked")?
                    .map_err(|e| format!("reading the spool file: {e}"))?
                }
            };
            offset += n as u64;
            conn.send(&Packet::Body(&chunk));
            if conn.has_step(step::NR_BODY) {
                conn.flush(svc, self.timeout).await?;
                continue;
            }
            match self.next(conn, svc).await? {
                Next::GoOn => {}
                Next::Skip if conn.has_step(step::SKIP) => return Ok(None),
                Next::Skip => return Err("sent skip without negotiating it".into()),
                Next::Verdict(v) => return Ok(Some(v)),
            }
        }
        Ok(None)
    }
}
