//! The table that turns a hook's [`Outcome`] into a reply, following qpsmtpd's `*_respond`
//! subs with RFC 3463 enhanced status codes added (the bytes are written by `proto::reply`).

use std::borrow::Cow;

use ringsmtpd_plugin_api::{Hook, Outcome, Reply};

use crate::proto::reply;

/// Splits a leading enhanced status code (`"5.7.1 text"`) off a plugin's text.
pub fn split_enhanced(text: &str) -> (Option<&str>, &str) {
    let Some((first, rest)) = text.split_once(' ') else {
        return (None, text);
    };
    let mut parts = first.split('.');
    let ok = matches!(parts.next(), Some("2" | "4" | "5"))
        && parts.next().is_some_and(is_status_number)
        && parts.next().is_some_and(is_status_number)
        && parts.next().is_none();
    if ok {
        (Some(first), rest)
    } else {
        (None, text)
    }
}

/// [`split_enhanced`] on a plugin's text, borrowing when the text is `'static` (the common
/// case), so a reply from a static text allocates nothing. (A `&Cow`, not a `&str`: whether
/// the text is borrowed is the point.)
#[allow(clippy::ptr_arg)]
pub fn split_msg(m: &Cow<'static, str>) -> (Option<Cow<'static, str>>, Cow<'static, str>) {
    match m {
        Cow::Borrowed(s) => {
            let (e, t) = split_enhanced(s);
            (e.map(Cow::Borrowed), Cow::Borrowed(t))
        }
        Cow::Owned(s) => {
            let (e, t) = split_enhanced(s);
            (
                e.map(|e| Cow::Owned(e.to_string())),
                Cow::Owned(t.to_string()),
            )
        }
    }
}

fn is_status_number(s: &str) -> bool {
    (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A reply the engine decided to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub code: u16,
    pub enhanced: Cow<'static, str>,
    pub text: Cow<'static, str>,
    pub disconnect: bool,
}

impl Resolved {
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Resolved {
            code,
            enhanced: Cow::Borrowed(enhanced),
            text: text.into(),
            disconnect: false,
        }
    }

    pub fn disconnect(mut self) -> Self {
        self.disconnect = true;
        self
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        reply::write(out, self.code, &self.enhanced, &self.text);
    }

    /// A plugin's `Done(Some(reply))`.
    pub fn from_reply(r: Reply) -> Resolved {
        let class = (r.code / 100).clamp(2, 5);
        let enhanced = r.enhanced.unwrap_or(Cow::Borrowed(match class {
            2 => "2.0.0",
            4 => "4.0.0",
            _ => "5.0.0",
        }));
        Resolved {
            code: r.code,
            enhanced: fix_class(enhanced, r.code),
            text: Cow::Owned(r.lines.join("\n")),
            disconnect: r.disconnect,
        }
    }
}

/// An enhanced code whose class disagrees with the reply code (a plugin's "5.7.1" on a 4xx
/// reply under `reject_type temp`) takes the reply's class (RFC 3463 §2).
fn fix_class(enhanced: Cow<'static, str>, code: u16) -> Cow<'static, str> {
    let class = b'0' + (code / 100).clamp(2, 5) as u8;
    if enhanced.as_bytes().first() == Some(&class) {
        enhanced
    } else {
        let mut s = enhanced.into_owned();
        s.replace_range(..1, std::str::from_utf8(&[class]).unwrap_or("4"));
        Cow::Owned(s)
    }
}

/// The default reply of a hook's outcome: (code, enhanced code, default text, disconnect).
struct Row(u16, &'static str, &'static str, bool);

/// What the table says for a deny-type outcome at `hook`, or `None` where qpsmtpd does not
/// act on it (the caller then goes on as for `DECLINED`).
fn deny_row(hook: Hook, outcome: &Outcome) -> Option<Row> {
    use Outcome::*;
    let soft = matches!(outcome, DenySoft(_) | DenySoftDisconnect(_));
    let disc = matches!(outcome, DenyDisconnect(_) | DenySoftDisconnect(_));
    Some(match (hook, soft) {
        (Hook::PreConnection, false) => {
            Row(550, "5.7.1", "Sorry, service not available for you", true)
        }
        (Hook::PreConnection, true) => Row(451, "4.7.1", "Sorry, try again later", true),
        (Hook::Connect, false) => Row(550, "5.7.1", "Connection from you denied, bye bye.", true),
        (Hook::Connect, true) => Row(
            450,
            "4.7.1",
            "Connection from you temporarily denied, bye bye.",
            true,
        ),
        (Hook::Helo | Hook::Ehlo, false) => Row(550, "5.7.1", "Denied", disc),
        (Hook::Helo | Hook::Ehlo, true) => Row(450, "4.7.1", "Temporarily denied", disc),
        (Hook::MailPre, _) => Row(501, "5.5.4", "could not parse your mail from command", disc),
        (Hook::RcptPre, _) => Row(501, "5.5.4", "could not parse recipient", disc),
        (Hook::Mail, false) => Row(550, "5.7.1", "sender denied", disc),
        (Hook::Mail, true) if disc => Row(421, "4.7.1", "sender temporarily denied", true),
        (Hook::Mail, true) => Row(450, "4.7.1", "sender temporarily denied", false),
        (Hook::Rcpt, false) => Row(550, "5.7.1", "relaying denied", disc),
        (Hook::Rcpt, true) if disc => Row(421, "4.7.1", "recipient temporarily denied", true),
        (Hook::Rcpt, true) => Row(450, "4.7.1", "recipient temporarily denied", false),
        (Hook::Data, false) => Row(554, "5.7.1", "Message denied", disc),
        (Hook::Data, true) => Row(451, "4.7.1", "Message denied temporarily", disc),
        (Hook::DataHeadersEnd, false) if disc => Row(554, "5.7.1", "Message denied", true),
        (Hook::DataHeadersEnd, true) if disc => {
            Row(421, "4.7.1", "Message denied temporarily", true)
        }
        (Hook::DataPost, false) => Row(552, "5.7.1", "Message denied", disc),
        (Hook::DataPost, true) => Row(452, "4.7.1", "Message denied temporarily", disc),
        (Hook::Queue, false) => Row(552, "5.3.0", "Message denied", disc),
        (Hook::Queue, true) => Row(452, "4.3.0", "Message denied temporarily", disc),
        (Hook::Vrfy, false) => Row(554, "5.7.1", "Access Denied", disc),
        (Hook::Noop, false) => Row(500, "5.5.1", "Stop wasting my time.", disc),
        (Hook::Help, false) => Row(500, "5.5.1", "Syntax error, command not recognized", disc),
        (Hook::UnrecognizedCommand, false) if disc => {
            Row(521, "5.5.1", "Unrecognized command", true)
        }
        (Hook::UnrecognizedCommand, false) => Row(500, "5.5.1", "Unrecognized command", false),
        _ => return None,
    })
}

/// What a hook's outcome means for the reply to the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The outcome does not answer here (OK/DECLINED, or a deny qpsmtpd ignores at this
    /// hook): the caller goes on with its own reply.
    Proceed,
    /// Send this reply (a deny from the table, or a plugin's `DONE` with a reply).
    Reply(Resolved),
    /// `DONE` without a reply: the plugin answered itself; send nothing.
    Answered,
}

/// The reply for a deny-type (or `DONE`) outcome at `hook`.
pub fn for_outcome(hook: Hook, outcome: Outcome) -> Answer {
    if let Outcome::Done(reply) = outcome {
        return match reply {
            Some(r) => Answer::Reply(Resolved::from_reply(r)),
            None => Answer::Answered,
        };
    }
    if !outcome.is_deny() {
        return Answer::Proceed;
    }
    let Some(Row(code, enh, default, disconnect)) = deny_row(hook, &outcome) else {
        return Answer::Proceed;
    };
    let (enhanced, text) = match outcome.msg_cow().map(split_msg) {
        Some((Some(e), text)) => (e, text),
        Some((None, text)) => (Cow::Borrowed(enh), text),
        None => (Cow::Borrowed(enh), Cow::Borrowed(default)),
    };
    Answer::Reply(Resolved {
        code,
        enhanced: fix_class(enhanced, code),
        text,
        disconnect,
    })
}

/// The text of an `OK` outcome, split from its enhanced code, or the defaults given.
pub fn ok_text(
    outcome: &Outcome,
    enhanced: &'static str,
    default: &'static str,
) -> (Cow<'static, str>, Cow<'static, str>) {
    match outcome.msg_cow().map(split_msg) {
        Some((Some(e), text)) => (e, text),
        Some((None, text)) => (Cow::Borrowed(enhanced), text),
        None => (Cow::Borrowed(enhanced), Cow::Borrowed(default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_split() {
        assert_eq!(
            split_enhanced("5.7.1 Relaying denied"),
            (Some("5.7.1"), "Relaying denied")
        );
        assert_eq!(split_enhanced("4.3.0 x"), (Some("4.3.0"), "x"));
        assert_eq!(split_enhanced("5.1234.1 x"), (None, "5.1234.1 x"));
        assert_eq!(split_enhanced("3.1.1 x"), (None, "3.1.1 x"));
        assert_eq!(split_enhanced("Relaying denied"), (None, "Relaying denied"));
    }

    /// The reply of an outcome that must answer.
    fn reply(a: Answer) -> Resolved {
        match a {
            Answer::Reply(r) => r,
            other => panic!("no reply: {other:?}"),
        }
    }

    #[test]
    fn table_follows_qpsmtpd() {
        let r = reply(for_outcome(Hook::Rcpt, Outcome::Deny(None)));
        assert_eq!((r.code, &*r.enhanced, r.disconnect), (550, "5.7.1", false));
        let r = reply(for_outcome(Hook::Mail, Outcome::DenySoftDisconnect(None)));
        assert_eq!((r.code, r.disconnect), (421, true));
        let r = reply(for_outcome(Hook::Data, Outcome::DenySoft(None)));
        assert_eq!(r.code, 451);
        let r = reply(for_outcome(
            Hook::Queue,
            Outcome::deny_soft("4.3.0 disk full"),
        ));
        assert_eq!(
            (r.code, &*r.enhanced, &*r.text),
            (452, "4.3.0", "disk full")
        );
        // A 5.x.x text on a soft reject takes the 4 class.
        let r = reply(for_outcome(
            Hook::Rcpt,
            Outcome::deny_soft("5.7.1 greylisted"),
        ));
        assert_eq!((r.code, &*r.enhanced), (450, "4.7.1"));
        let r = reply(for_outcome(Hook::PreConnection, Outcome::DenySoft(None)));
        assert_eq!((r.code, r.disconnect), (451, true));
        // data_headers_end only acts on the disconnect outcomes.
        assert_eq!(
            for_outcome(Hook::DataHeadersEnd, Outcome::Deny(None)),
            Answer::Proceed
        );
        assert_eq!(for_outcome(Hook::Rcpt, Outcome::Ok(None)), Answer::Proceed);
        assert_eq!(
            for_outcome(Hook::Rcpt, Outcome::Done(None)),
            Answer::Answered
        );
    }
}
