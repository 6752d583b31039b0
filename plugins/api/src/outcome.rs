//! What a hook answers: an [`Outcome`] now ([`Step::Ready`]) or later ([`Step::Pending`]).
//!
//! The engine, never the plugin, turns an outcome into an SMTP reply, from one table per hook
//! that follows qpsmtpd (see `docs/hooks.md`). A plugin only says *what* it decided and, if it
//! wants, the text; the code and enhanced status code come from the table unless the text
//! starts with its own enhanced code (`"5.7.1 Relaying denied"`).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;

/// The text a plugin attaches to its outcome. `None` means "use the hook's default text".
/// A `'static` text costs no allocation, so `Ready` outcomes on the hot path stay free.
pub type Msg = Option<Cow<'static, str>>;

/// qpsmtpd's return codes (`lib/Qpsmtpd/Constants.pm`), as a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not decided: the next plugin in the chain runs (qpsmtpd `DECLINED`).
    Declined,
    /// Accepted / handled; the hook's positive reply follows (qpsmtpd `OK`).
    Ok(Msg),
    /// Permanent failure, 5xx (qpsmtpd `DENY`).
    Deny(Msg),
    /// Temporary failure, 4xx (qpsmtpd `DENYSOFT`).
    DenySoft(Msg),
    /// 5xx, then the connection is closed (qpsmtpd `DENY_DISCONNECT`).
    DenyDisconnect(Msg),
    /// 4xx, then the connection is closed (qpsmtpd `DENYSOFT_DISCONNECT`).
    DenySoftDisconnect(Msg),
    /// The plugin answers the client itself with this reply (qpsmtpd `DONE`, where the plugin
    /// called `respond` itself). `None` sends nothing, as qpsmtpd's `DONE` does.
    Done(Option<Reply>),
}

impl Outcome {
    /// The qpsmtpd constant name, for logs and `--check` output.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Declined => "DECLINED",
            Outcome::Ok(_) => "OK",
            Outcome::Deny(_) => "DENY",
            Outcome::DenySoft(_) => "DENYSOFT",
            Outcome::DenyDisconnect(_) => "DENY_DISCONNECT",
            Outcome::DenySoftDisconnect(_) => "DENYSOFT_DISCONNECT",
            Outcome::Done(_) => "DONE",
        }
    }

    /// True for the four `DENY*` outcomes (they run the `deny` hook).
    pub fn is_deny(&self) -> bool {
        matches!(
            self,
            Outcome::Deny(_)
                | Outcome::DenySoft(_)
                | Outcome::DenyDisconnect(_)
                | Outcome::DenySoftDisconnect(_)
        )
    }

    /// The attached text, if any.
    pub fn msg(&self) -> Option<&str> {
        match self {
            Outcome::Ok(m)
            | Outcome::Deny(m)
            | Outcome::DenySoft(m)
            | Outcome::DenyDisconnect(m)
            | Outcome::DenySoftDisconnect(m) => m.as_deref(),
            Outcome::Declined | Outcome::Done(_) => None,
        }
    }

    /// The attached text as stored (borrowed `'static` texts stay borrowed).
    pub fn msg_cow(&self) -> Option<&Cow<'static, str>> {
        match self {
            Outcome::Ok(m)
            | Outcome::Deny(m)
            | Outcome::DenySoft(m)
            | Outcome::DenyDisconnect(m)
            | Outcome::DenySoftDisconnect(m) => m.as_ref(),
            Outcome::Declined | Outcome::Done(_) => None,
        }
    }

    /// `Deny` with a static text.
    pub fn deny(text: &'static str) -> Outcome {
        Outcome::Deny(Some(Cow::Borrowed(text)))
    }

    /// `DenySoft` with a static text.
    pub fn deny_soft(text: &'static str) -> Outcome {
        Outcome::DenySoft(Some(Cow::Borrowed(text)))
    }

    /// `Ok` with a static text.
    pub fn ok(text: &'static str) -> Outcome {
        Outcome::Ok(Some(Cow::Borrowed(text)))
    }
}

/// A complete SMTP reply chosen by a plugin (`Outcome::Done`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// Enhanced status code (RFC 3463) as text, e.g. `"5.7.1"`. `None`: the engine derives
    /// a generic one from the code's class (`x.0.0`).
    pub enhanced: Option<Cow<'static, str>>,
    /// The text lines; several lines make a multi-line reply.
    pub lines: Vec<Cow<'static, str>>,
    /// Close the connection after sending it.
    pub disconnect: bool,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            enhanced: Some(Cow::Borrowed(enhanced)),
            lines: vec![text.into()],
            disconnect: false,
        }
    }
}

/// A hook's answer: ready now, or a continuation the engine awaits under the plugin's timeout.
///
/// `Pending` is how a plugin waits on DNS, spamd or a downstream MTA without blocking its core:
/// the future may borrow the plugin and the context, and need not be `Send`.
pub enum Step<'a> {
    /// Decided without I/O: no allocation.
    Ready(Outcome),
    /// Decided later.
    Pending(Pin<Box<dyn Future<Output = Outcome> + 'a>>),
}

impl<'a> Step<'a> {
    /// `Ready(Declined)`: the default of every hook.
    pub const DECLINED: Step<'static> = Step::Ready(Outcome::Declined);

    /// Wraps an async block as a continuation.
    pub fn pending(fut: impl Future<Output = Outcome> + 'a) -> Step<'a> {
        Step::Pending(Box::pin(fut))
    }
}

impl From<Outcome> for Step<'_> {
    fn from(o: Outcome) -> Self {
        Step::Ready(o)
    }
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Ready(o) => f.debug_tuple("Ready").field(o).finish(),
            Step::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}
