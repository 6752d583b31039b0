//! RCPT TO (RFC 5321 §4.1.1.3), with the DSN parameters NOTIFY and ORCPT (RFC 3461).
//! Some plugin must accept a recipient: if every plugin declines, the answer is 450, so the
//! server is never an open relay by accident (qpsmtpd's rule).

use ringsmtpd_plugin_api::{address, Outcome, Recipient};

use super::respond::{self, Resolved};
use super::{Flow, State};
use crate::hooks::Call;
use crate::proto::params;

impl State {
    pub(super) async fn rcpt(&mut self, out: &mut Vec<u8>, path: &str, params: &str) -> Flow {
        let Some(txn) = self.txn.as_ref() else {
            return self.error_flow(out, Resolved::new(503, "5.5.1", "Use MAIL before RCPT"));
        };
        if txn.recipients.len() >= self.env.settings.max_rcpts {
            // RFC 5321 §4.5.3.1.10: 452 for too many recipients; the client sends the rest later.
            respond::write(out, 452, "4.5.3", "Too many recipients");
            return Flow::Next;
        }
        if !params.is_empty() && !self.cx.conn.is_esmtp() {
            let r = Resolved::new(555, "5.5.4", "ESMTP parameters need EHLO");
            return self.error_flow(out, r);
        }
        let smtputf8 = txn.mail_params.smtputf8;
        let rcpt_params = match params::parse_rcpt_params(params) {
            Ok(p) => p,
            Err(e) => return self.error_flow(out, Resolved::new(e.code, "", e.text).enh(None)),
        };
        let addr = match address::parse_path(path, false, smtputf8) {
            Ok(a) => a,
            Err(e) => {
                let (enh, text) = respond::split_enhanced(e.0);
                return self.error_flow(out, Resolved::new(501, "5.1.3", text).enh(enh));
            }
        };
        let rcpt = Recipient {
            addr,
            params: rcpt_params,
        };

        let env = self.env.clone();
        let Some(txn) = self.txn.as_mut() else {
            return Flow::Next; // unreachable: checked above, and nothing in between ends it
        };
        let decision = env
            .chains
            .run(&mut self.cx, Some(&mut *txn), Call::Rcpt(&rcpt))
            .await;
        match respond::for_outcome(Call::Rcpt(&rcpt).hook(), decision.outcome.clone()) {
            Ok(Some(r)) => {
                self.log_refused("RCPT", &r, decision.plugin.as_deref());
                self.reply_flow(out, r, "refused at RCPT")
            }
            Err(()) => Flow::Next,
            Ok(None) if decision.outcome == Outcome::Declined => {
                let r = Resolved::new(450, "4.7.1", "No plugin decided if relaying is allowed");
                self.log_refused("RCPT", &r, None);
                r.write(out);
                Flow::Next
            }
            Ok(None) => {
                let (enh, text) = respond::ok_text(&decision.outcome, "2.1.5", "recipient ok");
                respond::write(out, 250, &enh, &format!("{}, {text}", rcpt.addr));
                txn.recipients.push(rcpt);
                Flow::Next
            }
        }
    }
}
