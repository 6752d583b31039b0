//! The [`Plugin`] trait and how a plugin is built from its `config/plugins` line (its common
//! arguments are in [`crate::Common`]).

use std::fmt;

use crate::context::{Cx, Level, Transaction};
use crate::envelope::Recipient;
use crate::hook::{Hook, HookSet};
use crate::outcome::{Outcome, Step};

/// A plugin: a set of hooks. Every hook has a default that declines at no cost; a plugin
/// overrides the hooks it lists in [`Plugin::hooks`].
///
/// Plugins are built once per worker from their config line and live on that worker, so they
/// need not be `Send` or `Sync` and may keep per-core state in `Cell`/`RefCell`.
///
/// Hooks that run inside a mail transaction get it as `txn`. A `Step::Pending` future may
/// borrow the plugin, `cx` and `txn`; the engine awaits it under the plugin timeout.
#[allow(unused_variables)]
pub trait Plugin {
    /// The hooks this plugin implements. The engine calls only these.
    fn hooks(&self) -> HookSet;

    /// A connection was accepted, before any session state exists.
    fn pre_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    /// Before the banner.
    fn connect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    /// `HELO host`, after syntax checks.
    fn helo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    /// `EHLO host`, after syntax checks.
    fn ehlo<'a>(&'a self, cx: &'a mut Cx, host: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    /// `MAIL FROM` before the path is parsed: `path` as sent (normally `<...>`), `params` the
    /// ESMTP parameters. `OK` with a text replaces the path (how `dont_require_anglebrackets`
    /// adds the brackets); a deny refuses the command with 501 (qpsmtpd's `mail_pre`).
    fn mail_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, params: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    /// `MAIL FROM`: `txn.sender` and `txn.mail_params` are set; a deny discards `txn`.
    fn mail<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// `RCPT TO` before the path is parsed, as [`Plugin::mail_pre`].
    fn rcpt_pre<'a>(&'a self, cx: &'a mut Cx, path: &'a str, params: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    /// `RCPT TO`: `rcpt` joins `txn.recipients` on `OK`. Every plugin declining gives 450:
    /// some plugin must accept, so the server is never an open relay by accident.
    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        Step::DECLINED
    }
    /// `DATA` (or the first `BDAT`), before the 354.
    fn data<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// The header section has been received; the body is still coming.
    /// Only the `*_DISCONNECT` outcomes act here.
    fn data_headers_end<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// The whole message is in, before Received and Authentication-Results are added: the
    /// place to add headers (SPF, DKIM). The outcome is ignored, as in qpsmtpd.
    fn data_post_headers<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// The whole message is in and the core headers are added: content checks.
    fn data_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// Before queueing.
    fn queue_pre<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// Deliver the message. `OK` means it is durable at the destination (fsync'd or accepted
    /// downstream); only then does the client get 250.
    fn queue<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// After the queue reply was sent; the outcome is only logged.
    fn queue_post<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// The transaction ends (RSET, new MAIL, after queueing or a data deny, disconnect).
    fn reset_transaction<'a>(&'a self, cx: &'a mut Cx, txn: &'a mut Transaction) -> Step<'a> {
        Step::DECLINED
    }
    /// The session is ending (QUIT, a `*_DISCONNECT`, EOF). Outcome ignored.
    fn disconnect<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    /// The connection is closed. Outcome ignored.
    fn post_connection<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    /// A verb the core does not know; `verb` is lowercased.
    fn unrecognized_command<'a>(
        &'a self,
        cx: &'a mut Cx,
        verb: &'a str,
        args: &'a str,
    ) -> Step<'a> {
        Step::DECLINED
    }
    fn vrfy<'a>(&'a self, cx: &'a mut Cx, arg: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    fn noop<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    fn help<'a>(&'a self, cx: &'a mut Cx, args: &'a str) -> Step<'a> {
        Step::DECLINED
    }
    fn quit<'a>(&'a self, cx: &'a mut Cx) -> Step<'a> {
        Step::DECLINED
    }
    /// Another plugin (`plugin`) denied at `hook`. Outcome ignored.
    fn deny<'a>(
        &'a self,
        cx: &'a mut Cx,
        plugin: &'a str,
        hook: Hook,
        outcome: &'a Outcome,
    ) -> Step<'a> {
        Step::DECLINED
    }
    /// Another plugin (`plugin`) gave a non-deny outcome at `hook`. Outcome ignored.
    fn ok<'a>(
        &'a self,
        cx: &'a mut Cx,
        plugin: &'a str,
        hook: Hook,
        outcome: &'a Outcome,
    ) -> Step<'a> {
        Step::DECLINED
    }
    /// An SMTP AUTH attempt (RFC 4954): `OK` authenticates the client (235, it becomes a
    /// relay client); anything else fails it (535). Backends run in `config/plugins` order.
    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a crate::auth::AuthRequest) -> Step<'a> {
        Step::DECLINED
    }
    /// The mechanisms this auth backend can check; the server advertises the union.
    /// CRAM-MD5 needs the clear password on the server side, so it is not in the default.
    fn auth_mechanisms(&self) -> &'static [crate::auth::Mechanism] {
        &[crate::auth::Mechanism::Plain, crate::auth::Mechanism::Login]
    }
    /// A log line (qpsmtpd's `logging` hook). Logging plugins are listed in `config/logging`;
    /// they run in order until one returns `OK`. Without any, the core writes to stderr.
    /// Called synchronously and often: it must not block (buffer, and write off the worker).
    fn logging(&self, record: &LogRecord<'_>) -> Outcome {
        Outcome::Declined
    }
    /// The core is about to add its Received header; `protocol` is `SMTP`, `ESMTP`, `ESMTPS`,
    /// `ESMTPA` or `ESMTPSA` (RFC 3848). `Ok(Some(text))` replaces the header's value.
    fn received_line<'a>(
        &'a self,
        cx: &'a mut Cx,
        txn: &'a mut Transaction,
        protocol: &'a str,
    ) -> Step<'a> {
        Step::DECLINED
    }
}

/// One log line, as the `logging` hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    pub level: Level,
    /// The connection it is about; 0 for the server itself.
    pub conn: u64,
    /// The plugin name, or `core`.
    pub source: &'a str,
    pub msg: &'a fmt::Arguments<'a>,
}

// ---------------------------------------------------------------------------------------------
// Configuration as plugins see it.

/// One value from a config file, with where it came from (for `file:line` errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLine {
    pub text: String,
    pub file: String,
    pub line: u32,
}

impl ConfigLine {
    /// An error pointing at this line.
    pub fn error(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }
}

/// A configuration error, shown as `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 0 when the error is about the file as a whole.
    pub line: u32,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.reason)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Read access to the config directory (qpsmtpd's `$self->qp->config(...)`).
pub trait ConfigSource {
    /// The values of config file `name`: comments and blank lines dropped, whitespace trimmed,
    /// `$include` expanded. `Ok(None)` if the file exists nowhere on the search path.
    fn lines(&self, name: &str) -> Result<Option<Vec<ConfigLine>>, ConfigError>;

    /// The first value of `name`, like qpsmtpd's scalar `config()`.
    fn first(&self, name: &str) -> Result<Option<ConfigLine>, ConfigError> {
        Ok(self.lines(name)?.and_then(|v| v.into_iter().next()))
    }
}

/// What a plugin's constructor gets: its config line and the config directory.
pub struct PluginInit<'a> {
    /// The instance name as written in `config/plugins` (`relay`, `relay:1`, `queue/maildir`).
    pub name: &'a str,
    /// The arguments after the name, split on whitespace (qpsmtpd has no quoting).
    pub args: &'a [String],
    pub config: &'a dyn ConfigSource,
    /// Where the plugin line is, for errors about the arguments.
    pub origin: &'a ConfigLine,
}

impl PluginInit<'_> {
    /// An error about this plugin's arguments, pointing at its line in `config/plugins`.
    pub fn error(&self, reason: impl fmt::Display) -> ConfigError {
        self.origin.error(format!("{}: {}", self.name, reason))
    }
}

/// Builds a plugin instance from its config line.
pub type Factory = fn(&PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_display() {
        let e = ConfigError {
            file: "config/rcpthosts".into(),
            line: 3,
            reason: "bad".into(),
        };
        assert_eq!(e.to_string(), "config/rcpthosts:3: bad");
    }
}
