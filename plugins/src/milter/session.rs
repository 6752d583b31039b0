//! One milter's state in an SMTP session, kept in a connection note, and one stage's exchange
//! before the end of message: the command, the reply, what the reply means for the session
//! and the transaction, and the default action when the milter fails; also a refused
//! recipient shown to the milter (`SMFIP_RCPT_REJ`).

use std::borrow::Cow;

use ringsmtpd_plugin_api::{Cx, Level, Outcome, Transaction};

use super::conn::Conn;
use super::proto::{self, step, Packet, Reply, Stage};
use super::{macros, DefaultAction, Milter};

/// The milter connections of one SMTP session, by the milters' `NAME`s.
#[derive(Default)]
struct Sessions(Vec<(String, State)>);

/// One milter's state in this SMTP session.
pub(super) enum State {
    Live(Live),
    /// Accepted for the whole session: not asked again.
    Done,
    /// Failed: every later hook gets the default action.
    Failed,
}

/// A connected milter.
pub(super) struct Live {
    pub(super) conn: Conn,
    /// The queue id of the transaction the milter is in: MAIL was sent, and neither the end of
    /// message nor an abort since.
    pub(super) txn: Option<String>,
    /// Accepted or discarded for the transaction: not asked again until it ends.
    pub(super) skip_txn: bool,
    /// The last `RCPT TO` path and parameters (from `rcpt_pre`) the milter has not seen yet:
    /// shown to it as rejected if a plugin refuses the recipient.
    pub(super) pending_rcpt: Option<(String, String)>,
}

impl Live {
    pub(super) fn new(conn: Conn) -> Live {
        Live {
            conn,
            txn: None,
            skip_txn: false,
            pending_rcpt: None,
        }
    }
}

/// Marks a transaction whose message a milter discarded.
pub(super) struct Discarded;

/// What a stage's exchange produced.
pub(super) enum Verdict {
    Continue,
    /// Accepted: skip the milter for the rest of this scope.
    Accept,
    Outcome(Outcome),
    Discard,
}

/// What an accept or a discard at a stage applies to.
pub(super) enum Scope<'t> {
    /// Connect and HELO: an accept skips the milter for the session.
    Session,
    /// MAIL, RCPT and DATA: an accept skips it for the transaction, a discard marks it.
    Transaction(&'t mut Transaction),
    /// An unknown command: only a refusal counts.
    Command,
}

impl Milter {
    /// This milter's state, taken out for a hook: `Failed` stands in its place meanwhile, so a
    /// hook dropped by `plugin_timeout` (the connection with it) leaves the default action
    /// behind, never a skipped milter.
    pub(super) fn take(&self, cx: &mut Cx) -> Option<State> {
        let s = cx.conn.notes.get_mut::<Sessions>()?;
        let (_, state) = s.0.iter_mut().find(|(n, _)| *n == self.name)?;
        Some(std::mem::replace(state, State::Failed))
    }

    pub(super) fn put(&self, cx: &mut Cx, state: State) {
        let s = cx.conn.notes.get_or_insert_with(Sessions::default);
        match s.0.iter_mut().find(|(n, _)| *n == self.name) {
            Some((_, slot)) => *slot = state,
            None => s.0.push((self.name.clone(), state)),
        }
    }

    /// The live connection, left in its place.
    pub(super) fn live<'c>(&self, cx: &'c mut Cx) -> Option<&'c mut Live> {
        let s = cx.conn.notes.get_mut::<Sessions>()?;
        match s.0.iter_mut().find(|(n, _)| *n == self.name)? {
            (_, State::Live(live)) => Some(live),
            _ => None,
        }
    }

    /// The live connection taken out for a hook; `Err` with what the hook answers when there
    /// is none (the default action after a failure, else nothing).
    pub(super) fn take_live(&self, cx: &mut Cx) -> Result<Live, Outcome> {
        match self.take(cx) {
            Some(State::Live(live)) => Ok(live),
            Some(State::Failed) => {
                self.put(cx, State::Failed);
                Err(self.default_outcome())
            }
            Some(State::Done) => {
                self.put(cx, State::Done);
                Err(Outcome::Declined)
            }
            None => Err(Outcome::Declined),
        }
    }

    pub(super) fn default_outcome(&self) -> Outcome {
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
    pub(super) fn failed(&self, cx: &mut Cx, why: &str) -> Outcome {
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

    /// Runs one stage: `send` queues its packets on a live connection, then the reply is
    /// awaited unless `no_reply` is negotiated; nothing is sent when the milter asked not to
    /// see the stage (`skip_flag`) or accepted the transaction.
    pub(super) async fn stage(
        &self,
        cx: &mut Cx,
        scope: Scope<'_>,
        skip_flag: u32,
        no_reply: u32,
        send: impl FnOnce(&mut Conn),
    ) -> Outcome {
        let mut live = match self.take_live(cx) {
            Ok(live) => live,
            Err(outcome) => return outcome,
        };
        let in_txn = matches!(scope, Scope::Transaction(_));
        if live.skip_txn && in_txn || live.conn.has_step(skip_flag) {
            self.put(cx, State::Live(live));
            return Outcome::Declined;
        }
        send(&mut live.conn);
        let verdict = if live.conn.has_step(no_reply) {
            live.conn
                .flush(&*cx.svc, self.timeout)
                .await
                .map(|()| Verdict::Continue)
        } else {
            self.answer(cx, &mut live.conn).await
        };
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => return self.failed(cx, &e),
        };
        let outcome = match (verdict, scope) {
            (Verdict::Outcome(o), _) => o,
            (Verdict::Accept, Scope::Session) => {
                self.put(cx, State::Done);
                return Outcome::Declined;
            }
            (Verdict::Discard, Scope::Transaction(txn)) => {
                txn.notes.set(Discarded);
                live.skip_txn = true;
                Outcome::Declined
            }
            (Verdict::Accept, Scope::Transaction(_)) => {
                live.skip_txn = true;
                Outcome::Declined
            }
            _ => Outcome::Declined,
        };
        self.put(cx, State::Live(live));
        outcome
    }

    /// Shows the milter a recipient a plugin refused (`SMFIP_RCPT_REJ`); its answer changes
    /// nothing, a failure is the milter's failure as anywhere.
    pub(super) async fn rejected_rcpt(&self, cx: &mut Cx, refusal: &Outcome) -> Outcome {
        let mut live = match self.take_live(cx) {
            Ok(live) => live,
            Err(outcome) => return outcome,
        };
        let pending = live.pending_rcpt.take();
        let (Some(id), Some((path, params)), false) = (
            live.txn.clone(),
            pending,
            live.skip_txn || live.conn.has_step(step::NORCPT),
        ) else {
            self.put(cx, State::Live(live));
            return Outcome::Declined;
        };
        let (enhanced, text) = refusal_text(refusal);
        live.conn
            .send_macros(Stage::Rcpt, macros::rejected_rcpt(&id, &enhanced, &text));
        live.conn.send(&Packet::Rcpt(&rcpt_args(&path, &params)));
        let answered = if live.conn.has_step(step::NR_RCPT) {
            live.conn.flush(&*cx.svc, self.timeout).await
        } else {
            self.answer(cx, &mut live.conn).await.map(|_| ())
        };
        match answered {
            Ok(()) => {
                self.put(cx, State::Live(live));
                Outcome::Declined
            }
            Err(e) => self.failed(cx, &e),
        }
    }

    /// Reads the final reply of a stage before the end of message.
    pub(super) async fn answer(&self, cx: &Cx, conn: &mut Conn) -> Result<Verdict, String> {
        loop {
            let r = conn.reply(&*cx.svc, self.timeout).await?;
            if let Some(v) = final_verdict(r)? {
                conn.finish()?;
                return Ok(v);
            }
        }
    }
}

/// The path in angle brackets, then the ESMTP parameters, as `SMFIC_RCPT` carries them.
fn rcpt_args(path: &str, params: &str) -> Vec<String> {
    let path = if path.starts_with('<') {
        path.to_string()
    } else {
        format!("<{path}>")
    };
    std::iter::once(path)
        .chain(params.split_whitespace().map(str::to_string))
        .collect()
}

/// The enhanced status code and text of a plugin's refusal, for the `{rcpt_host}` and
/// `{rcpt_addr}` macros of a rejected recipient.
fn refusal_text(o: &Outcome) -> (String, String) {
    let class = if matches!(o, Outcome::DenySoft(_) | Outcome::DenySoftDisconnect(_)) {
        4
    } else {
        5
    };
    let (code, enhanced, text) = match o {
        Outcome::Done(Some(r)) => (
            r.code,
            r.enhanced.as_deref().map(str::to_string),
            r.lines.join(" "),
        ),
        _ => {
            let msg = o.msg().unwrap_or("");
            match msg.split_once(' ') {
                Some((e, t)) if proto::is_enhanced(e, class * 100) => {
                    (class * 100, Some(e.to_string()), t.to_string())
                }
                _ => (class * 100, None, msg.to_string()),
            }
        }
    };
    let enhanced = enhanced.unwrap_or_else(|| format!("{}.0.0", code / 100));
    let text = if text.is_empty() {
        "rejected".to_string()
    } else {
        text
    };
    (enhanced, text)
}

/// The verdict of a final reply, `None` for progress; a modification is an error here.
pub(super) fn final_verdict(r: Reply) -> Result<Option<Verdict>, String> {
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

/// A reply's name for logs.
pub(super) fn kind(r: &Reply) -> &'static str {
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
