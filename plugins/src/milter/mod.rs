//! # milter — run a Sendmail/Postfix milter (protocol version 6) in the chain
//!
//! ## Synopsis
//!
//! ```text
//! milter NAME ADDRESS [default_action accept|tempfail|reject] [connect_timeout S] [timeout S] [eom_timeout S]
//! ```
//!
//! ## Description
//!
//! Speaks the milter protocol (version 6, as libmilter 1.0.1 and Postfix speak it) to the
//! milter at `ADDRESS`, so opendkim, opendmarc, spamass-milter, clamav-milter or rspamd's
//! proxy worker see each SMTP session as they would behind Postfix. One milter connection is
//! opened at `connect` and kept for the whole SMTP session, across its transactions; `QUIT`
//! ends it at `disconnect`. Several milters are several `milter` lines, called in
//! `config/plugins` order; give each its own `NAME`. Put the `milter` lines before the
//! plugins that accept recipients (`rcpt_ok`) and before the queue plugin: a hook's chain
//! stops at the first plugin that decides, so a milter placed after `rcpt_ok` never sees a
//! recipient.
//!
//! The milter sees: connect (client name, address and port), HELO/EHLO, `MAIL FROM` (the
//! path and its ESMTP parameters: `SIZE=`, `BODY=8BITMIME`, `SMTPUTF8`, `RET=`, `ENVID=`,
//! `AUTH=`), each `RCPT TO` the plugins before it let through (with `NOTIFY=` and
//! `ORCPT=`), `DATA`, every header field of the message as the client sent it (not the
//! Received and Authentication-Results fields ringsmtpd adds), the end of headers, the body in
//! packets of at most 65535 bytes (read from the spool file on the blocking pool when the
//! message is spooled, never all in memory), and the end of message. A `RSET` or a new `MAIL`
//! sends an abort. A command the server does not know (the `unrecognized_command` hook) goes
//! to the milter as `SMFIC_UNKNOWN` (`VERB args`, the verb in capitals); its reject, tempfail
//! or reply code answers the command (see docs/hooks.md: 500 unless a reply code), an accept
//! only that command. The option negotiation offers every action and every protocol step
//! flag, including the `SMFIP_NR_*` "no reply" flags (no reply is awaited at a stage the
//! milter marked so), `SMFIP_HDR_LEADSPC` and `SMFIP_RCPT_REJ`; the milter's symbol lists
//! (`SMFIF_SETSYMLIST`) narrow the macros sent at each stage. A version 2 milter gets no
//! `SMFIC_UNKNOWN`, a version 2 or 3 milter no `SMFIC_DATA` (they came with versions 3 and 4).
//!
//! With `SMFIP_RCPT_REJ`, a recipient another plugin refuses (a deny at `rcpt_pre` or `rcpt`,
//! seen through the `deny` hook) is shown to the milter too, as Sendmail and Postfix show it:
//! `SMFIC_RCPT` with the path and parameters as the client sent them, the macros
//! `{rcpt_mailer}` `error`, `{rcpt_host}` the refusal's enhanced status code and
//! `{rcpt_addr}` its text. The milter's answer to it changes nothing. For this the milter's
//! `rcpt_pre` hook must run: put the `milter` lines before the plugins that rewrite or refuse
//! paths at `rcpt_pre`. Recipients the core refuses itself (syntax, too many recipients, every
//! plugin declining) are not shown.
//!
//! Macros sent, as Postfix's defaults (`milter_*_macros`): at connect `j`,
//! `{daemon_name}`, `{daemon_addr}`, `{daemon_port}`, `v`, `_`, `{client_addr}`,
//! `{client_port}`, `{client_name}`, `{client_ptr}`; at HELO `{tls_version}`, `{cipher}`
//! (when TLS is on; `{cipher_bits}`, `{cert_subject}` and `{cert_issuer}` are not known); at
//! MAIL `i`, `{auth_type}`, `{auth_authen}` (after AUTH), `{auth_author}` (the `AUTH=`
//! parameter), `{mail_addr}`, `{mail_host}` (the sender's domain), `{mail_mailer}`; at RCPT
//! `i`, `{rcpt_addr}`, `{rcpt_host}` (the recipient's domain), `{rcpt_mailer}`; at DATA, end
//! of headers and end of message `i` (the transaction id). The mailer macros are always
//! `smtp` (ringsmtpd does not resolve transports), `error` for a rejected recipient.
//!
//! Replies and what the client gets:
//!
//! | milter reply | effect |
//! |---|---|
//! | continue | nothing: the next plugin decides |
//! | accept | at connect or HELO: the milter is skipped for the session; at MAIL, RCPT or DATA: for the transaction; at end of message: the message goes on; at an unknown command: nothing |
//! | reject | the hook's deny reply (5xx: 550 at RCPT, 552 after DATA, see docs/hooks.md); at RCPT only that recipient |
//! | tempfail | the hook's temporary deny reply (4xx) |
//! | discard | at MAIL, RCPT, DATA or end of message: the message is accepted with 250 and thrown away (this plugin's `queue` hook answers before the queue plugin); at connect or HELO: nothing (taken as continue) |
//! | reply code (`SMFIR_REPLYCODE`) | that reply: its 4xx/5xx code, enhanced status code and text; several lines allowed, control characters replaced by `?` |
//! | progress | the wait for the answer starts again (a new `timeout` or `eom_timeout`) |
//!
//! Modifications at end of message, applied before the message is queued: add header (put
//! after the headers ringsmtpd added, before the message's own), insert header (before the
//! `index`-th field, counting the fields ringsmtpd added first: 0 is the top; past the last
//! field, appended), change header (the `index`-th field of that name in the message's own
//! header section; an empty value deletes it; none: appended), add recipient,
//! delete recipient, change sender, quarantine, replace body (the new body is kept in memory,
//! at most 32 MiB). Header changes and inserts go through the plugin API's header edits, so
//! they work on a spooled message too (its spool file is rewritten on the blocking pool; a
//! header section longer than the core keeps in memory is a failure: the default action).
//! Header values from a milter are sanitised: their folds become CRLF TAB and any other
//! CR, LF or control character becomes a space, so no milter can inject a header line.
//!
//! Quarantine (`SMFIR_QUARANTINE`, action `SMFIF_QUARANTINE`): ringsmtpd has no hold queue,
//! so the message is queued as usual with an `X-Quarantine: REASON` header field added
//! (the reason sanitised as any milter header): a delivery agent or a mailbox filter holds
//! it (for example a Sieve rule on `X-Quarantine`). The reason is not logged.
//!
//! ## Arguments
//!
//! - `NAME`: the milter's name, for logs (qpsmtpd's argument order).
//! - `ADDRESS`: `inet:PORT@HOST`, `HOST:PORT` (`[IPv6]:PORT`), `unix:/path/to/socket`, or
//!   qpsmtpd's bare `PORT` (on 127.0.0.1).
//!   A host name is resolved at each connection.
//! - `default_action accept|tempfail|reject`: what happens when the milter cannot be reached,
//!   times out, closes, or breaks the protocol (Postfix's `milter_default_action`): `accept`
//!   skips the milter for the rest of the session, `tempfail` (the default) answers the
//!   command and every later one the milter would see with the hook's temporary deny (4.7.1:
//!   450 at connect, which closes the session, 451 at MAIL...), `reject` with its deny
//!   (5.7.1). The failure is logged once and the connection to the milter dropped; the next
//!   SMTP session opens a new one (see Security for what counts as a failure).
//! - `connect_timeout S` (default 10), `timeout S` (each wait for a reply or a write,
//!   default 20), `eom_timeout S` (the end-of-message reply, default 25; Postfix's
//!   `milter_*_timeout`). Every reply `progress` restarts the wait. `plugin_timeout` (default
//!   30) still bounds each whole hook: raise it for a slow milter. A hook cut short by it
//!   leaves the milter failed for the session (the default action), never skipped.
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `connect`, `helo`, `ehlo`, `mail`, `rcpt_pre` (notes the path for `SMFIP_RCPT_REJ`),
//! `rcpt`, `deny` (a refused recipient, for `SMFIP_RCPT_REJ`), `data`, `data_post` (headers,
//! body, end of message and the modifications), `queue` (only to accept a discarded
//! message), `reset_transaction` (abort), `unrecognized_command` (`SMFIC_UNKNOWN`),
//! `disconnect` (quit).
//!
//! ## Notes
//!
//! A private connection note holds the milter connections of the session. No shared note is
//! read or written.
//!
//! ## Standards
//!
//! The milter protocol version 6 as libmilter 1.0.1 (Sendmail 8.14+) implements it, and
//! Postfix's milter client (`MILTER_README`) for the macro defaults and `milter_default_action`.
//!
//! ## Security
//!
//! Everything a milter sends is parsed strictly and bounded: a packet over 1 MiB, an unknown
//! reply, a reply with the wrong shape, bytes after a final reply (a packet longer than its
//! declared length, a second answer), a modification outside the negotiated actions, or a
//! modification at any stage but the end of message is a protocol error. A protocol error,
//! a milter that closes the connection (mid-message or not) and a milter that does not
//! answer within the timeout all get the same treatment: the default action for the command
//! and every later one of the SMTP session, one log line, the connection to the milter
//! dropped (the next SMTP session opens a new one); the SMTP session itself goes on.
//! Header names must be printable ASCII without `:`; header values, reply texts and log lines
//! never carry a milter's CR, LF or control characters. Replaced recipients and senders are
//! parsed as SMTP paths.
//!
//! Not done yet: the ESMTP arguments of added recipients (`SMFIR_ADDRCPT_PAR`) and of a
//! changed sender are ignored; a change-header refers only to the message's own header section (not
//! to the fields ringsmtpd added); a `SMFIR_REPLYCODE` is sent as the plugin's own reply, so
//! the `deny` hook does not see it; of a spooled message whose header section is over
//! 256 KiB only the part the core keeps in memory is sent.

mod apply;
mod conn;
mod macros;
mod message;
pub mod proto;
mod session;
#[cfg(test)]
mod tests;

use std::time::Duration;

use ringsmtpd_plugin_api::net::Endpoint;
use ringsmtpd_plugin_api::{
    ConfigError, Cx, Hook, HookSet, Outcome, Plugin, PluginInit, Recipient, Step, Transaction,
};

use crate::helpers::backend::{parse_port, Host};
use conn::Conn;
use proto::{step, Family, Packet, Stage};
use ringsmtpd_plugin_api::args::parse_timeout;
use session::{Discarded, Live, Scope, State};

/// What to do when the milter is down or misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Accept,
    Tempfail,
    Reject,
}

/// Where the milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    Tcp(Host, u16),
    Unix(std::path::PathBuf),
}

pub struct Milter {
    name: String,
    instance: String,
    address: Address,
    default_action: DefaultAction,
    connect_timeout: Duration,
    timeout: Duration,
    eom_timeout: Duration,
}

pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<Milter, ConfigError> {
    let usage = "usage: milter NAME ADDRESS [default_action accept|tempfail|reject] [connect_timeout S] [timeout S] [eom_timeout S]";
    let [name, address, rest @ ..] = init.args else {
        return Err(init.error(usage));
    };
    let mut m = Milter {
        name: name.to_string(),
        instance: init.name.to_string(),
        address: parse_address(address).map_err(|e| init.error(e))?,
        default_action: DefaultAction::Tempfail,
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(20),
        eom_timeout: Duration::from_secs(25),
    };
    let mut it = rest.iter();
    while let Some(key) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| init.error(format!("'{key}' needs a value")))?;
        let secs = || parse_timeout(value).map_err(|e| init.error(e));
        match key.as_str() {
            "default_action" => {
                m.default_action = match value.as_str() {
                    "accept" => DefaultAction::Accept,
                    "tempfail" => DefaultAction::Tempfail,
                    "reject" => DefaultAction::Reject,
                    _ => {
                        return Err(init.error(format!(
                            "default_action '{value}': accept, tempfail or reject"
                        )))
                    }
                }
            }
            "connect_timeout" => m.connect_timeout = secs()?,
            "timeout" => m.timeout = secs()?,
            "eom_timeout" => m.eom_timeout = secs()?,
            _ => return Err(init.unknown(key)),
        }
    }
    Ok(m)
}

/// `inet:PORT@HOST`, `HOST:PORT`, `[IPv6]:PORT`, `unix:/path`, or qpsmtpd's bare `PORT`
/// (on 127.0.0.1).
fn parse_address(s: &str) -> Result<Address, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Address::Tcp(Host::parse("127.0.0.1")?, parse_port(s)?));
    }
    if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
        if !path.starts_with('/') {
            return Err(format!("'{s}': the socket path must be absolute"));
        }
        return Ok(Address::Unix(path.into()));
    }
    let (host, port) =
        if let Some(rest) = s.strip_prefix("inet:").or_else(|| s.strip_prefix("inet6:")) {
            let (port, host) = rest
                .split_once('@')
                .ok_or_else(|| format!("'{s}' is not inet:PORT@HOST"))?;
            (host, port)
        } else {
            s.rsplit_once(':')
                .ok_or_else(|| format!("'{s}' is not HOST:PORT, inet:PORT@HOST or unix:/path"))?
        };
    Ok(Address::Tcp(Host::parse(host)?, parse_port(port)?))
}

impl Milter {
    async fn endpoint(&self, cx: &Cx) -> Result<Endpoint, String> {
        match &self.address {
            Address::Unix(p) => Ok(Endpoint::Unix(p.clone())),
            Address::Tcp(h, port) => h.resolve(&*cx.svc, *port).await.map(Endpoint::Tcp),
        }
    }
}

impl Plugin for Milter {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Helo,
            Hook::Ehlo,
            Hook::Mail,
            Hook::RcptPre,
            Hook::Rcpt,
            Hook::Data,
            Hook::DataPost,
            Hook::Queue,
            Hook::ResetTransaction,
            Hook::Disconnect,
            Hook::UnrecognizedCommand,
            Hook::Deny,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(async move {
            let opened = match self.endpoint(cx).await {
                Ok(ep) => Conn::open(&*cx.svc, &ep, self.connect_timeout, self.timeout).await,
                Err(e) => Err(e),
            };
            match opened {
                Ok(conn) => self.put(cx, State::Live(Live::new(conn))),
                Err(e) => return self.failed(cx, &e),
            }
            let macros = macros::connect(cx);
            let host = cx
                .conn
                .remote_host
                .clone()
                .unwrap_or_else(|| format!("[{}]", cx.conn.remote.ip()));
            let remote = cx.conn.remote;
            self.stage(cx, Scope::Session, step::NOCONNECT, step::NR_CONN, |c| {
                c.send_macros(Stage::Connect, macros);
                c.send(&Packet::Connect {
                    host: &host,
                    family: Family::Inet(remote),
                });
            })
            .await
        })
    }

    fn helo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        let macros = macros::helo(cx);
        Step::pending(
            self.stage(cx, Scope::Session, step::NOHELO, step::NR_HELO, move |c| {
                c.send_macros(Stage::Helo, macros);
                c.send(&Packet::Helo(host));
            }),
        )
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.helo(cx, host)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let macros = macros::mail(cx, txn);
        let mut args = vec![format!("<{}>", txn.sender.as_str())];
        args.extend(txn.mail_params.words());
        if let Some(live) = self.live(cx) {
            live.txn = Some(txn.id.clone());
        }
        Step::pending(self.stage(
            cx,
            Scope::Transaction(txn),
            step::NOMAIL,
            step::NR_MAIL,
            move |c| {
                c.send_macros(Stage::Mail, macros);
                c.send(&Packet::Mail(&args));
            },
        ))
    }

    fn rcpt_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, params: &'a str) -> Step<'a> {
        if let Some(live) = self.live(cx) {
            if live.txn.is_some() && live.conn.has_step(step::RCPT_REJ) {
                live.pending_rcpt = Some((path.to_string(), params.to_string()));
            }
        }
        Step::DECLINED
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        // The milter sees this recipient now: not again as rejected.
        if let Some(live) = self.live(cx) {
            live.pending_rcpt = None;
        }
        let macros = macros::rcpt(txn, rcpt);
        let mut args = vec![format!("<{}>", rcpt.addr.as_str())];
        args.extend(rcpt.params.words());
        Step::pending(self.stage(
            cx,
            Scope::Transaction(txn),
            step::NORCPT,
            step::NR_RCPT,
            move |c| {
                c.send_macros(Stage::Rcpt, macros);
                c.send(&Packet::Rcpt(&args));
            },
        ))
    }

    fn deny<'a>(
        &'a self,
        cx: &'a mut Cx,
        _plugin: &'a str,
        hook: Hook,
        outcome: &'a Outcome,
    ) -> Step<'a> {
        let pending = matches!(hook, Hook::Rcpt | Hook::RcptPre)
            && self
                .live(cx)
                .is_some_and(|live| live.pending_rcpt.is_some());
        if !pending {
            return Step::DECLINED;
        }
        Step::pending(self.rejected_rcpt(cx, outcome))
    }

    fn data<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let macros = macros::queue_id(txn);
        Step::pending(self.stage(
            cx,
            Scope::Transaction(txn),
            step::NODATA,
            step::NR_DATA,
            move |c| {
                c.send_macros(Stage::Data, macros);
                c.send(&Packet::Data);
            },
        ))
    }

    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::pending(self.end_of_message(cx, txn))
    }

    fn queue<'a>(&'a self, _cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        if txn.notes.contains::<Discarded>() {
            return Step::Ready(Outcome::Ok(Some(
                "2.7.0 Message accepted (discarded by a mail filter)".into(),
            )));
        }
        Step::DECLINED
    }

    fn reset_transaction<'a>(&'a self, cx: &'a mut Cx, _txn: &'a mut Transaction) -> Step<'a> {
        let Some(live) = self.live(cx) else {
            return Step::DECLINED;
        };
        live.skip_txn = false;
        live.pending_rcpt = None;
        if live.txn.take().is_none() {
            return Step::DECLINED;
        }
        Step::pending(async move {
            if let Ok(mut live) = self.take_live(cx) {
                live.conn.send(&Packet::Abort);
                match live.conn.flush(&*cx.svc, self.timeout).await {
                    Ok(()) => self.put(cx, State::Live(live)),
                    Err(e) => {
                        self.failed(cx, &e);
                    }
                }
            }
            Outcome::Declined
        })
    }

    fn unrecognized_command<'a>(
        &'a self,
        cx: &'a mut Cx,
        verb: &'a str,
        args: &'a str,
    ) -> Step<'a> {
        let line = if args.is_empty() {
            verb.to_ascii_uppercase()
        } else {
            format!("{} {args}", verb.to_ascii_uppercase())
        };
        Step::pending(self.stage(
            cx,
            Scope::Command,
            step::NOUNKNOWN,
            step::NR_UNKN,
            move |c| c.send(&Packet::Unknown(&line)),
        ))
    }

    fn disconnect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let Some(State::Live(mut live)) = self.take(cx) else {
            return Step::DECLINED;
        };
        Step::pending(async move {
            live.conn.send(&Packet::Quit);
            let _ = live.conn.flush(&*cx.svc, self.timeout).await;
            Outcome::Declined
        })
    }
}
