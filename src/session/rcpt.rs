//! RCPT TO (RFC 5321 §4.1.1.3), with the DSN parameters NOTIFY and ORCPT (RFC 3461).
//! Some plugin must accept a recipient: if every plugin declines, the answer is 450, so the
//! server is never an open relay by accident (qpsmtpd's rule).

use ringsmtpd_plugin_api::{address, Outcome, Recipient};

use super::respond::{self, Answer, Resolved};
use super::{Flow, State};
use crate::hooks::Call;
use crate::proto::params;
use crate::proto::reply;

impl State {
    pub(super) async fn rcpt(&mut self, out: &mut Vec<u8>, path: &str, params: &str) -> Flow {
        let Some(txn) = self.txn.as_mut() else {
            return self.error_flow(out, Resolved::new(503, "5.5.1", "Use MAIL before RCPT"));
        };
        if txn.recipients.len() >= self.env.settings.max_rcpts {
            // RFC 5321 §4.5.3.1.10: 452, and the client sends the rest in another transaction.
            reply::write(out, 452, "4.5.3", "Too many recipients");
            return Flow::Next;
        }
        if !params.is_empty() && !self.cx.conn.is_esmtp() {
            let r = Resolved::new(555, "5.5.4", "ESMTP parameters need EHLO");
            return self.error_flow(out, r);
        }
        let rewritten = match self.pre_hook(out, Call::RcptPre(path, params)).await {
            Ok(rewritten) => rewritten,
            Err(flow) => return flow,
        };
        let path = rewritten.as_deref().unwrap_or(path);
        let Some(txn) = self.txn.as_mut() else {
            return Flow::Next; // a pre hook cannot end the transaction; keeps the borrow simple
        };
        let rcpt_params = match params::parse_rcpt_params(params) {
            Ok(p) => p,
            Err(e) => return self.error_flow(out, Resolved::new(e.code, "", e.text).enh(None)),
        };
        let mut addr = txn.recycled_address();
        let smtputf8 = txn.mail_params.smtputf8;
        if let Err(e) = address::parse_path_into(path, false, smtputf8, &mut addr) {
            txn.recycle(addr);
            let (enh, text) = respond::split_enhanced(e.0);
            return self.error_flow(out, Resolved::new(501, "5.1.3", text).enh(enh));
        }
        let rcpt = Recipient {
            addr,
            params: rcpt_params,
        };

        let env = self.env.clone();
        let decision = env
            .chains
            .run(&mut self.cx, Some(&mut *txn), Call::Rcpt(&rcpt))
            .await;
        let refused = match respond::for_outcome(Call::Rcpt(&rcpt).hook(), decision.outcome.clone())
        {
            Answer::Reply(r) => Some(r),
            Answer::Answered => None, // DONE: the plugin answered; the recipient is not added
            Answer::Proceed if decision.outcome == Outcome::Declined => Some(Resolved::new(
                450,
                "4.7.1",
                "No plugin decided if relaying is allowed",
            )),
            Answer::Proceed => {
                let (enh, text) = respond::ok_text(&decision.outcome, "2.1.5", "recipient ok");
                reply::line(out, 250, &enh, format_args!("{}, {text}", rcpt.addr));
                txn.recipients.push(rcpt);
                return Flow::Next;
            }
        };
        txn.recycle(rcpt.addr);
        match refused {
            Some(r) => {
                self.log_refused("RCPT", &r, decision.plugin.as_deref());
                self.reply_flow(out, r, "refused at RCPT")
            }
            None => Flow::Next,
        }
    }
}
