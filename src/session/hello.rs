//! HELO and EHLO (RFC 5321 §4.1.1.1). Unlike qpsmtpd, a second EHLO is allowed: it resets the
//! session state as RSET does (RFC 5321 §4.1.4).

use ringsmtpd_plugin_api::{Hello, HelloKind, Hook};

use super::respond::{self, Answer};
use super::{Flow, State};
use crate::hooks::Call;
use crate::proto::reply;

impl State {
    pub(super) async fn hello(&mut self, out: &mut Vec<u8>, host: &str, ehlo: bool) -> Flow {
        self.end_transaction().await;
        let call = if ehlo {
            Call::Ehlo(host)
        } else {
            Call::Helo(host)
        };
        let outcome = self.run(call).await;
        match respond::for_outcome(call.hook(), outcome) {
            Answer::Reply(r) => return self.reply_flow(out, r, "refused at HELO"),
            Answer::Answered => return Flow::Next,
            Answer::Proceed => {}
        }
        let kind = if ehlo {
            HelloKind::Ehlo
        } else {
            HelloKind::Helo
        };
        match &mut self.cx.conn.hello {
            Some(h) => {
                h.kind = kind;
                h.host.clear();
                h.host.push_str(host);
            }
            None => {
                self.cx.conn.hello = Some(Hello {
                    kind,
                    host: host.to_string(),
                })
            }
        }
        let conn = &self.cx.conn;
        let me = self.env.svc.me();
        let remote = conn.remote_host.as_deref().unwrap_or("unknown");
        let ip = conn.remote.ip();
        if !ehlo {
            let text = format!("{me} Hi {remote} [{ip}]; I am so happy to meet you.");
            reply::write(out, 250, "", &text);
            return Flow::Next;
        }
        let size = match self.env.settings.databytes {
            0 => "SIZE".to_string(), // RFC 1870 §4: no fixed maximum
            n => format!("SIZE {n}"),
        };
        let dsn = if self.env.chains.offers_dsn() {
            "\nDSN"
        } else {
            ""
        };
        let starttls = if self.tls_offer { "\nSTARTTLS" } else { "" };
        let mut auth = String::new();
        if self.auth_offered() {
            auth.push_str("\nAUTH");
            for m in self.env.chains.auth_mechanisms() {
                auth.push(' ');
                auth.push_str(m.name());
            }
        }
        let text = format!(
            "{me} Hi {remote} [{ip}]\nPIPELINING\n8BITMIME\n{size}\nENHANCEDSTATUSCODES\n\
             SMTPUTF8\nCHUNKING{dsn}{starttls}{auth}"
        );
        reply::write(out, 250, "", &text);
        debug_assert!(call.hook() == Hook::Ehlo);
        Flow::Next
    }
}
