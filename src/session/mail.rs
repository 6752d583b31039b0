//! MAIL FROM (RFC 5321 §4.1.1.2), with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531)
//! and the DSN parameters RET and ENVID (RFC 3461).

use std::borrow::Cow;

use ringsmtpd_plugin_api::{address, Level, Outcome};

use super::respond::{self, Answer, Resolved};
use super::{Flow, State};
use crate::hooks::Call;
use crate::proto::params;
use crate::proto::reply;

impl State {
    pub(super) async fn mail(&mut self, out: &mut Vec<u8>, path: &str, params: &str) -> Flow {
        if self.cx.conn.hello.is_none() {
            let r = Resolved::new(503, "5.5.1", "please say hello first ...");
            return self.error_flow(out, r);
        }
        if self.txn.is_some() {
            // RFC 5321 §4.1.4: MAIL must not be sent while a transaction is open.
            let r = Resolved::new(503, "5.5.1", "Error: nested MAIL command");
            return self.error_flow(out, r);
        }
        if !params.is_empty() && !self.cx.conn.is_esmtp() {
            let r = Resolved::new(555, "5.5.4", "ESMTP parameters need EHLO");
            return self.error_flow(out, r);
        }
        let rewritten = match self.pre_hook(out, Call::MailPre(path, params)).await {
            Ok(rewritten) => rewritten,
            Err(flow) => return flow,
        };
        let path = rewritten.as_deref().unwrap_or(path);
        let mail_params = match params::parse_mail_params(params) {
            Ok(p) => p,
            Err(e) => return self.error_flow(out, Resolved::new(e.code, "", e.text).enh(None)),
        };
        let databytes = self.env.settings.databytes;
        if databytes > 0 && mail_params.size.is_some_and(|s| s > databytes) {
            // RFC 1870 §6.1: the declared size exceeds the fixed maximum.
            let text = "Message size exceeds fixed maximum message size";
            return self.error_flow(out, Resolved::new(552, "5.3.4", text));
        }
        let mut txn = self.new_transaction();
        if let Err(e) = address::parse_path_into(path, true, mail_params.smtputf8, &mut txn.sender)
        {
            super::recycle::give_transaction(txn);
            let (enh, text) = respond::split_enhanced(e.0);
            return self.error_flow(out, Resolved::new(501, "5.1.7", text).enh(enh));
        }
        txn.mail_params = mail_params;

        let env = self.env.clone();
        let decision = env
            .chains
            .run(&mut self.cx, Some(&mut txn), Call::Mail)
            .await;
        match respond::for_outcome(Call::Mail.hook(), decision.outcome.clone()) {
            Answer::Reply(r) => {
                self.log_refused("MAIL", &r, decision.plugin.as_deref());
                let default_text = decision.outcome.msg().is_none()
                    && !matches!(decision.outcome, Outcome::Done(_));
                if default_text {
                    // qpsmtpd's default texts name the sender: "<a@b>, sender denied".
                    let text = format_args!("{}, {}", txn.sender, r.text);
                    reply::line(out, r.code, &r.enhanced, text);
                } else {
                    r.write(out);
                }
                super::recycle::give_transaction(txn);
                super::closing(r.disconnect, "refused at MAIL")
            }
            Answer::Answered => {
                self.txn = Some(txn); // DONE: the plugin answered and accepted the sender
                Flow::Next
            }
            Answer::Proceed => {
                let default = "sender OK - how exciting to get mail from you!";
                let (enh, text) = respond::ok_text(&decision.outcome, "2.1.0", default);
                reply::line(out, 250, &enh, format_args!("{}, {text}", txn.sender));
                self.txn = Some(txn);
                Flow::Next
            }
        }
    }

    /// `mail_pre`/`rcpt_pre`: `Ok(Some(path))` when a plugin rewrote the path, `Err(flow)`
    /// when it refused the command (501).
    pub(super) async fn pre_hook(
        &mut self,
        out: &mut Vec<u8>,
        call: Call<'_>,
    ) -> Result<Option<Cow<'static, str>>, Flow> {
        if !self.env.chains.has(call.hook()) {
            return Ok(None);
        }
        let outcome = self.run(call).await;
        match respond::for_outcome(call.hook(), outcome.clone()) {
            Answer::Reply(r) => Err(self.reply_flow(out, r, "refused before parsing")),
            Answer::Answered => Err(Flow::Next),
            Answer::Proceed => Ok(match outcome {
                Outcome::Ok(Some(path)) => Some(path),
                _ => None,
            }),
        }
    }

    /// One log line per refused command, naming the plugin that decided.
    pub(super) fn log_refused(&self, verb: &str, r: &Resolved, plugin: Option<&str>) {
        let source = plugin.unwrap_or("core");
        let (code, enh, text) = (r.code, &r.enhanced, &r.text);
        self.cx.log(
            Level::Info,
            source,
            format_args!("{verb} refused: {code} {enh} {text}"),
        );
    }
}
