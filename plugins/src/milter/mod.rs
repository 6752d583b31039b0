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
//! path), each `RCPT TO` the plugins before it let through, `DATA`, every header field of the
//! message as the client sent it (not the Received and Authentication-Results fields
//! ringsmtpd adds), the end of headers, the body in packets of at most 65535 bytes (read
//! from the spool file on the blocking pool when the message is spooled, never all in memory),
//! and the end of message. A `RSET` or a new `MAIL` sends an abort. The option negotiation
//! offers every action and every protocol step flag, including the `SMFIP_NR_*` "no reply"
//! flags (no reply is awaited at a stage the milter marked so) and `SMFIP_HDR_LEADSPC`; the
//! milter's symbol lists (`SMFIF_SETSYMLIST`) narrow the macros sent at each stage.
//!
//! Macros sent, as Postfix's defaults: at connect `j`, `{daemon_name}`, `{daemon_addr}`, `v`,
//! `_`, `{client_addr}`, `{client_port}`, `{client_name}`; at HELO `{tls_version}`,
//! `{cipher}` (when TLS is on); at MAIL `i`, `{auth_type}`, `{auth_authen}` (after AUTH),
//! `{mail_addr}`; at RCPT `{rcpt_addr}`; at DATA, end of headers and end of message `i`.
//!
//! Replies and what the client gets:
//!
//! | milter reply | effect |
//! |---|---|
//! | continue | nothing: the next plugin decides |
//! | accept | at connect or HELO: the milter is skipped for the session; at MAIL or RCPT: for the transaction; at end of message: the message goes on |
//! | reject | the hook's deny reply (5xx: 550 at RCPT, 552 after DATA, see docs/hooks.md); at RCPT only that recipient |
//! | tempfail | the hook's temporary deny reply (4xx) |
//! | discard | the message is accepted with 250 and thrown away (this plugin's `queue` hook answers before the queue plugin) |
//! | reply code (`SMFIR_REPLYCODE`) | that reply: its 4xx/5xx code, enhanced status code and text; several lines allowed, control characters replaced by `?` |
//! | progress | the wait for the answer starts again |
//!
//! Modifications at end of message, applied before the message is queued: add header (put
//! after the headers ringsmtpd added, before the message's own), insert header (before the
//! `index`-th field, counting the fields ringsmtpd added first: 0 is the top; past the last
//! field, appended), change header (the `index`-th field of that name in the message's own
//! header section; an empty value deletes it; none: appended), add recipient,
//! delete recipient, change sender, quarantine (written as an `X-Quarantine: REASON` header:
//! ringsmtpd has no hold queue), replace body (the new body is kept in memory, at most 32
//! MiB). Header changes and inserts go through the plugin API's header edits, so they work on
//! a spooled message too (its spool file is rewritten on the blocking pool; a header section
//! longer than the core keeps in memory is a failure: the default action). Header values
//! from a milter are sanitised: their folds become CRLF TAB and any other
//! CR, LF or control character becomes a space, so no milter can inject a header line.
//!
//! ## Arguments
//!
//! - `NAME`: the milter's name, for logs (qpsmtpd's argument order).
//! - `ADDRESS`: `inet:PORT@HOST`, `HOST:PORT` (`[IPv6]:PORT`), `unix:/path/to/socket`, or
//!   qpsmtpd's bare `PORT` (on 127.0.0.1).
//!   A host name is resolved at each connection.
//! - `default_action accept|tempfail|reject`: what happens when the milter cannot be reached,
//!   times out, closes, or breaks the protocol (Postfix's `milter_default_action`): `accept`
//!   skips the milter for the rest of the session, `tempfail` (the default) answers every
//!   later command the milter would see with the hook's temporary deny (4.7.1: 450 at
//!   connect, which closes the session, 451 at MAIL...), `reject` with its deny (5.7.1). The failure is logged once and the
//!   connection to the milter dropped; the next SMTP session opens a new one.
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
//! `connect`, `helo`, `ehlo`, `mail`, `rcpt`, `data`, `data_post` (headers, body, end of
//! message and the modifications), `queue` (only to accept a discarded message),
//! `reset_transaction` (abort), `disconnect` (quit).
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
//! reply, a reply with the wrong shape, a modification outside the negotiated actions, or a
//! modification at any stage but the end of message is a protocol error (the default action).
//! Header names must be printable ASCII without `:`; header values, reply texts and log lines
//! never carry a milter's CR, LF or control characters. Replaced recipients and senders are
//! parsed as SMTP paths.
//!
//! Not done yet: `SMFIC_UNKNOWN` for unknown commands; the ESMTP arguments of `MAIL` and
//! `RCPT` are not sent, and those of added recipients (`SMFIR_ADDRCPT_PAR`) and of a changed
//! sender are ignored; an added header (`SMFIR_ADDHEADER`) goes after the fields ringsmtpd
//! added, above the message's own; a `SMFIR_REPLYCODE` is sent as the plugin's own reply, so
//! the `deny` hook does not see it; rejected recipients are not shown to the milter
//! (`SMFIP_RCPT_REJ` is not offered); of a spooled message whose header section is over
//! 256 KiB only the part the core keeps in memory is sent.

mod apply;
mod conn;
pub mod proto;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringsmtpd_plugin_api::net::Endpoint;
use ringsmtpd_plugin_api::{
    blocking, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::helpers::backend::{parse_port, parse_timeout, Host};
use conn::Conn;
use proto::{step, Family, Packet, Reply, Stage};

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

/// The milter connections of one SMTP session, by the milters' `NAME`s.
#[derive(Default)]
struct Sessions(Vec<(String, State)>);

/// One milter's state in this SMTP session.
enum State {
    /// Connected; `skip_txn` after an accept at MAIL or RCPT, `in_txn` once MAIL was sent.
    Live {
        conn: Conn,
        in_txn: bool,
        skip_txn: bool,
    },
    /// Accepted for the whole session: not asked again.
    Done,
    /// Failed: every later hook gets the default action.
    Failed,
}

/// Marks a transaction whose message a milter discarded.
struct Discarded;

/// What a stage's exchange produced.
enum Verdict {
    Continue,
    /// Accepted: skip the milter for the rest of this scope.
    Accept,
    Outcome(Outcome),
    Discard,
}

impl Milter {
    /// This milter's state, taken out for a hook: `Failed` stands in its place meanwhile, so a
    /// hook dropped by `plugin_timeout` (the connection with it) leaves the default action
    /// behind, never a skipped milter.
    fn take(&self, cx: &mut Cx) -> Option<State> {
        let s = cx.conn.notes.get_mut::<Sessions>()?;
        let (_, state) = s.0.iter_mut().find(|(n, _)| *n == self.name)?;
        Some(std::mem::replace(state, State::Failed))
    }

    fn put(&self, cx: &mut Cx, state: State) {
        let s = cx.conn.notes.get_or_insert_with(Sessions::default);
        match s.0.iter_mut().find(|(n, _)| *n == self.name) {
            Some((_, slot)) => *slot = state,
            None => s.0.push((self.name.clone(), state)),
        }
    }

    fn default_outcome(&self) -> Outcome {
        match self.default_action {
            DefaultAction::Accept => Outcome::Declined,
            DefaultAction::Tempfail => Outcome::DenySoft(Some(
                "4.7.1 Mail filter unavailable, try again later".into(),
            )),
            DefaultAction::Reject => {
                Outcome::Deny(Some("5.7.1 Mail filter refused the message".into()))
            }
        }
    }

    /// A failure: logged once, the connection dropped, the default action from now on.
    fn failed(&self, cx: &mut Cx, why: &str) -> Outcome {
        cx.log(
            Level::Warn,
            &self.instance,
            format_args!(
                "milter {}: {why}; default action {:?}",
                self.name, self.default_action
            ),
        );
        self.put(
            cx,
            if self.default_action == DefaultAction::Accept {
                State::Done
            } else {
                State::Failed
            },
        );
        self.default_outcome()
    }

    async fn endpoint(&self, cx: &Cx) -> Result<Endpoint, String> {
        match &self.address {
            Address::Unix(p) => Ok(Endpoint::Unix(p.clone())),
            Address::Tcp(h, port) => h.resolve(&*cx.svc, *port).await.map(Endpoint::Tcp),
        }
    }

    /// Runs one stage: `send` queues its packets on a live connection, then the reply is
    /// awaited unless `no_reply` is negotiated. With a transaction, an accept skips the
    /// milter for the transaction (else for the session) and a discard marks it.
    async fn stage(
        &self,
        cx: &mut Cx,
        txn: Option<&mut Transaction>,
        skip_flag: u32,
        no_reply: u32,
        send: impl FnOnce(&mut Conn),
    ) -> Outcome {
        let txn_scope = txn.is_some();
        let (mut conn, in_txn) = match self.take(cx) {
            Some(State::Live {
                conn,
                in_txn,
                skip_txn,
            }) => {
                if skip_txn && txn_scope || conn.has_step(skip_flag) {
                    self.put(
                        cx,
                        State::Live {
                            conn,
                            in_txn,
                            skip_txn,
                        },
                    );
                    return Outcome::Declined;
                }
                (conn, in_txn)
            }
            Some(State::Done) | None => {
                self.put(cx, State::Done);
                return Outcome::Declined;
            }
            Some(State::Failed) => {
                self.put(cx, State::Failed);
                return self.default_outcome();
            }
        };
        send(&mut conn);
        let verdict = if conn.has_step(no_reply) {
            conn.flush(&*cx.svc, self.timeout)
                .await
                .map(|()| Verdict::Continue)
        } else {
            self.answer(cx, &mut conn).await
        };
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => return self.failed(cx, &e),
        };
        let (state, outcome) = match verdict {
            Verdict::Continue => (
                State::Live {
                    conn,
                    in_txn,
                    skip_txn: false,
                },
                Outcome::Declined,
            ),
            Verdict::Accept if txn_scope => (
                State::Live {
                    conn,
                    in_txn,
                    skip_txn: true,
                },
                Outcome::Declined,
            ),
            Verdict::Accept => (State::Done, Outcome::Declined),
            Verdict::Outcome(o) => (
                State::Live {
                    conn,
                    in_txn,
                    skip_txn: false,
                },
                o,
            ),
            Verdict::Discard => {
                if let Some(txn) = txn {
                    txn.notes.set(Discarded);
                }
                (
                    State::Live {
                        conn,
                        in_txn,
                        skip_txn: true,
                    },
                    Outcome::Declined,
                )
            }
        };
        self.put(cx, state);
        outcome
    }

    /// Reads the final reply of a stage before the end of message.
    async fn answer(&self, cx: &Cx, conn: &mut Conn) -> Result<Verdict, String> {
        loop {
            let r = conn.reply(&*cx.svc, self.timeout).await?;
            match final_verdict(r)? {
                Some(v) => return Ok(v),
                None => continue, // progress
            }
        }
    }
}

/// The verdict of a final reply, `None` for progress; a modification is an error here.
fn final_verdict(r: Reply) -> Result<Option<Verdict>, String> {
    Ok(Some(match r {
        Reply::Continue => Verdict::Continue,
        Reply::Accept => Verdict::Accept,
        Reply::Reject => Verdict::Outcome(Outcome::Deny(None)),
        Reply::Tempfail => Verdict::Outcome(Outcome::DenySoft(None)),
        Reply::Discard => Verdict::Discard,
        Reply::ReplyCode(text) => {
            let (code, enhanced, lines) =
                proto::reply_code(&text).ok_or_else(|| "bad reply code text".to_string())?;
            // The exact code, enhanced code and lines: the plugin answers itself (`DONE`).
            Verdict::Outcome(Outcome::Done(Some(ringsmtpd_plugin_api::Reply {
                code,
                enhanced: (!enhanced.is_empty()).then(|| enhanced.into()),
                lines: lines.into_iter().map(Cow::Owned).collect(),
                disconnect: false,
            })))
        }
        Reply::Progress => return Ok(None),
        other => return Err(format!("sent {} outside the end of message", kind(&other))),
    }))
}

fn pair(name: &str, value: impl Into<String>) -> (String, String) {
    (name.to_string(), value.into())
}

fn connect_macros(cx: &Cx) -> Vec<(String, String)> {
    let ip = cx.conn.remote.ip().to_string();
    let host = cx
        .conn
        .remote_host
        .clone()
        .unwrap_or_else(|| "unknown".into());
    vec![
        pair("j", cx.svc.me()),
        pair("{daemon_name}", "ringsmtpd"),
        pair("{daemon_addr}", cx.conn.local.ip().to_string()),
        pair("v", concat!("ringsmtpd ", env!("CARGO_PKG_VERSION"))),
        pair("_", format!("{host} [{ip}]")),
        pair("{client_addr}", ip),
        pair("{client_port}", cx.conn.remote.port().to_string()),
        pair("{client_name}", host),
    ]
}

impl Plugin for Milter {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            Hook::Connect,
            Hook::Helo,
            Hook::Ehlo,
            Hook::Mail,
            Hook::Rcpt,
            Hook::Data,
            Hook::DataPost,
            Hook::Queue,
            Hook::ResetTransaction,
            Hook::Disconnect,
        ])
    }

    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::pending(async move {
            let opened = match self.endpoint(cx).await {
                Ok(ep) => Conn::open(&*cx.svc, &ep, self.connect_timeout, self.timeout).await,
                Err(e) => Err(e),
            };
            let conn = match opened {
                Ok(c) => c,
                Err(e) => return self.failed(cx, &e),
            };
            self.put(
                cx,
                State::Live {
                    conn,
                    in_txn: false,
                    skip_txn: false,
                },
            );
            let macros = connect_macros(cx);
            let host = cx
                .conn
                .remote_host
                .clone()
                .unwrap_or_else(|| format!("[{}]", cx.conn.remote.ip()));
            let remote: SocketAddr = cx.conn.remote;
            self.stage(cx, None, step::NOCONNECT, step::NR_CONN, |c| {
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
        let mut macros = Vec::new();
        if let Some(tls) = &cx.conn.tls {
            macros.push(pair("{tls_version}", tls.protocol.clone()));
            macros.push(pair("{cipher}", tls.cipher.clone()));
        }
        Step::pending(self.stage(cx, None, step::NOHELO, step::NR_HELO, move |c| {
            c.send_macros(Stage::Helo, macros);
            c.send(&Packet::Helo(host));
        }))
    }

    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        self.helo(cx, host)
    }

    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let mut macros = vec![pair("i", txn.id.clone())];
        if let Some(auth) = &cx.conn.auth {
            macros.push(pair("{auth_type}", auth.mechanism.clone()));
            macros.push(pair("{auth_authen}", auth.user.clone()));
        }
        macros.push(pair("{mail_addr}", txn.sender.as_str()));
        let args = vec![format!("<{}>", txn.sender.as_str())];
        Step::pending(async move {
            self.with_live(cx, |in_txn, _| *in_txn = true);
            self.stage(cx, Some(txn), step::NOMAIL, step::NR_MAIL, move |c| {
                c.send_macros(Stage::Mail, macros);
                c.send(&Packet::Mail(&args));
            })
            .await
        })
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        let macros = vec![pair("{rcpt_addr}", rcpt.addr.as_str())];
        let args = vec![format!("<{}>", rcpt.addr.as_str())];
        Step::pending(
            self.stage(cx, Some(txn), step::NORCPT, step::NR_RCPT, move |c| {
                c.send_macros(Stage::Rcpt, macros);
                c.send(&Packet::Rcpt(&args));
            }),
        )
    }

    fn data<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        let macros = vec![pair("i", txn.id.clone())];
        Step::pending(
            self.stage(cx, Some(txn), step::NODATA, step::NR_DATA, move |c| {
                c.send_macros(Stage::Data, macros);
                c.send(&Packet::Data);
            }),
        )
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
        let Some(true) = self.with_live(cx, |in_txn, skip| {
            *skip = false;
            std::mem::replace(in_txn, false)
        }) else {
            return Step::DECLINED;
        };
        Step::pending(async move {
            if let Some(State::Live { mut conn, .. }) = self.take(cx) {
                conn.send(&Packet::Abort);
                match conn.flush(&*cx.svc, self.timeout).await {
                    Ok(()) => self.put(
                        cx,
                        State::Live {
                            conn,
                            in_txn: false,
                            skip_txn: false,
                        },
                    ),
                    Err(e) => {
                        self.failed(cx, &e);
                    }
                }
            }
            Outcome::Declined
        })
    }

    fn disconnect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        let Some(State::Live { mut conn, .. }) = self.take(cx) else {
            return Step::DECLINED;
        };
        Step::pending(async move {
            conn.send(&Packet::Quit);
            let _ = conn.flush(&*cx.svc, self.timeout).await;
            Outcome::Declined
        })
    }
}

impl Milter {
    /// Runs `f` on the transaction flags of a live connection.
    fn with_live<R>(&self, cx: &mut Cx, f: impl FnOnce(&mut bool, &mut bool) -> R) -> Option<R> {
        let s = cx.conn.notes.get_mut::<Sessions>()?;
        match s.0.iter_mut().find(|(n, _)| *n == self.name)? {
            (
                _,
                State::Live {
                    in_txn, skip_txn, ..
                },
            ) => Some(f(in_txn, skip_txn)),
            _ => None,
        }
    }

    /// Headers, end of headers, body and end of message, then the modifications.
    async fn end_of_message(&self, cx: &mut Cx, txn: &mut Transaction) -> Outcome {
        let (mut conn, skip) = match self.take(cx) {
            Some(State::Live { conn, skip_txn, .. }) => (conn, skip_txn),
            Some(State::Failed) => {
                self.put(cx, State::Failed);
                return self.default_outcome();
            }
            Some(other) => {
                self.put(cx, other);
                return Outcome::Declined;
            }
            None => return Outcome::Declined,
        };
        if skip {
            self.put(
                cx,
                State::Live {
                    conn,
                    in_txn: true,
                    skip_txn: true,
                },
            );
            return Outcome::Declined;
        }
        let id = txn.id.clone();
        let result = self.exchange_message(cx, &mut conn, txn, id).await;
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
                self.put(
                    cx,
                    State::Live {
                        conn,
                        in_txn: false,
                        skip_txn: false,
                    },
                );
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
        id: String,
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
            conn.send_macros(Stage::Eoh, vec![pair("i", id.clone())]);
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
        conn.send_macros(Stage::Eom, vec![pair("i", id)]);
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
                return Ok((v, mods));
            }
        }
    }

    /// The reply to a header, end of headers or body packet: `None` to go on, or a verdict
    /// that ends the message early (`Skip` is taken as "no more body").
    async fn early(
        &self,
        conn: &mut Conn,
        svc: &dyn ringsmtpd_plugin_api::Services,
    ) -> Result<Option<Verdict>, String> {
        loop {
            match conn.reply(svc, self.timeout).await? {
                Reply::Continue | Reply::Skip => return Ok(None),
                Reply::Progress => continue,
                r => return final_verdict(r),
            }
        }
    }

    /// The body in packets of at most [`proto::BODY_CHUNK`] bytes, from memory or read from
    /// the spool file on the blocking pool one packet at a time.
    async fn send_body(
        &self,
        conn: &mut Conn,
        svc: &dyn ringsmtpd_plugin_api::Services,
        body: &ringsmtpd_plugin_api::Body,
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
            match conn.reply(svc, self.timeout).await? {
                Reply::Continue => {}
                Reply::Skip if conn.has_step(step::SKIP) => return Ok(None),
                Reply::Progress => {
                    if let Some(v) = self.early(conn, svc).await? {
                        return Ok(Some(v));
                    }
                }
                r => return final_verdict(r),
            }
        }
        Ok(None)
    }
}

/// A modification's name for logs.
fn kind(r: &Reply) -> &'static str {
    match r {
        Reply::AddHeader { .. } => "add-header",
        Reply::InsertHeader { .. } => "insert-header",
        Reply::ChangeHeader { .. } => "change-header",
        Reply::AddRcpt { .. } => "add-recipient",
        Reply::DelRcpt(_) => "delete-recipient",
        Reply::ChangeFrom { .. } => "change-sender",
        Reply::ReplaceBody(_) => "replace-body",
        Reply::Quarantine(_) => "quarantine",
        _ => "a reply",
    }
}
