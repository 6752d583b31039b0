//! The macros (Sendmail's `${name}` values) sent before each stage's command, as Postfix's
//! defaults name them, with the values ringsmtpd knows. A milter's symbol list narrows them
//! ([`super::conn::Conn::send_macros`]).

use ringsmtpd_plugin_api::{Cx, Recipient, Transaction};

pub(crate) type Macros = Vec<(String, String)>;

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

/// The client's host name as the DNS gave it, or `unknown`.
fn client_name(cx: &Cx) -> String {
    cx.conn
        .remote_host
        .clone()
        .unwrap_or_else(|| "unknown".into())
}

/// Connect: `j`, `{daemon_name}`, `{daemon_addr}`, `{daemon_port}`, `v`, `_`,
/// `{client_addr}`, `{client_port}`, `{client_name}`, `{client_ptr}`.
pub(crate) fn connect(cx: &Cx) -> Macros {
    let ip = cx.conn.remote.ip().to_string();
    let host = client_name(cx);
    vec![
        pair("j", cx.svc.me()),
        pair("{daemon_name}", "ringsmtpd"),
        pair("{daemon_addr}", cx.conn.local.ip().to_string()),
        pair("{daemon_port}", cx.conn.local.port().to_string()),
        pair("v", concat!("ringsmtpd ", env!("CARGO_PKG_VERSION"))),
        pair("_", format!("{host} [{ip}]")),
        pair("{client_addr}", ip),
        pair("{client_port}", cx.conn.remote.port().to_string()),
        pair("{client_ptr}", host.clone()),
        pair("{client_name}", host),
    ]
}

/// HELO/EHLO: `{tls_version}`, `{cipher}` once TLS is on.
pub(crate) fn helo(cx: &Cx) -> Macros {
    match &cx.conn.tls {
        Some(tls) => vec![
            pair("{tls_version}", tls.protocol.clone()),
            pair("{cipher}", tls.cipher.clone()),
        ],
        None => Vec::new(),
    }
}

/// MAIL: `i`, `{auth_type}`, `{auth_authen}` after AUTH, `{auth_author}` (the `AUTH=`
/// parameter), `{mail_addr}`, `{mail_host}`, `{mail_mailer}`.
pub(crate) fn mail(cx: &Cx, txn: &Transaction) -> Macros {
    let mut m = vec![pair("i", txn.id.clone())];
    if let Some(auth) = &cx.conn.auth {
        m.push(pair("{auth_type}", auth.mechanism.clone()));
        m.push(pair("{auth_authen}", auth.user.clone()));
    }
    if let Some(author) = &txn.mail_params.auth {
        m.push(pair("{auth_author}", author.clone()));
    }
    m.push(pair("{mail_addr}", txn.sender.as_str()));
    if !txn.sender.is_null() {
        m.push(pair("{mail_host}", txn.sender.domain()));
        m.push(pair("{mail_mailer}", "smtp"));
    }
    m
}

/// RCPT: `i`, `{rcpt_addr}`, `{rcpt_host}` (its domain), `{rcpt_mailer}` (`smtp`: ringsmtpd
/// does not resolve transports).
pub(crate) fn rcpt(txn: &Transaction, rcpt: &Recipient) -> Macros {
    vec![
        pair("i", txn.id.clone()),
        pair("{rcpt_addr}", rcpt.addr.as_str()),
        pair("{rcpt_host}", rcpt.addr.domain()),
        pair("{rcpt_mailer}", "smtp"),
    ]
}

/// A recipient a plugin refused (`SMFIP_RCPT_REJ`), as Sendmail and Postfix show it:
/// `{rcpt_mailer}` `error`, `{rcpt_host}` the enhanced status code, `{rcpt_addr}` the reply
/// text.
pub(crate) fn rejected_rcpt(id: &str, enhanced: &str, text: &str) -> Macros {
    vec![
        pair("i", id),
        pair("{rcpt_addr}", text),
        pair("{rcpt_host}", enhanced),
        pair("{rcpt_mailer}", "error"),
    ]
}

/// DATA, end of headers and end of message: `i`.
pub(crate) fn queue_id(txn: &Transaction) -> Macros {
    vec![pair("i", txn.id.clone())]
}
