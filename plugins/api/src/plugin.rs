//! The [`Plugin`] trait and how a plugin is built from its `config/plugins` line (its common
//! arguments are in [`crate::Common`]).

use std::cell::Cell;
use std::fmt;

use crate::context::{Cx, Level, Transaction};
use crate::hook::HookSet;
use crate::outcome::{Outcome, Step};

/// The [`Plugin`] trait, its hook methods from the hook list.
macro_rules! plugin_trait {
    (
        hooks: [$($hooks:tt)*]
        chained: [$(
            $(#[$doc:meta])* $hook:ident $name:literal
            fn $method:ident(cx $(, $txn:ident)? $(; $($arg:ident: $ty:ty),+)?);
        )*]
    ) => {
        /// A plugin: a set of hooks. Every hook has a default that declines; a plugin overrides
        /// the hooks it lists in [`Plugin::hooks`] (`testing::unlisted_overrides` finds one it
        /// overrides but does not list).
        ///
        /// Plugins are built once per worker from their config line and live on that worker, so
        /// they need not be `Send` or `Sync` and may keep per-core state in `Cell`/`RefCell`.
        ///
        /// Hooks that run inside a mail transaction get it as `txn`. A `Step::Pending` future may
        /// borrow the plugin, `cx` and `txn`; the engine awaits it under the plugin timeout.
        #[allow(unused_variables)]
        pub trait Plugin {
            /// The hooks this plugin implements. The engine calls only these.
            fn hooks(&self) -> HookSet;

            $(
                $(#[$doc])*
                fn $method<'a>(
                    &'a self,
                    cx: &'a mut Cx,
                    $($txn: &'a mut Transaction,)?
                    $($($arg: $ty,)+)?
                ) -> Step<'a> {
                    reached_default();
                    Step::DECLINED
                }
            )*

            /// The hooks for which [`Plugin::store_ahead`] plans the plugin's store batch.
            fn store_hooks(&self) -> HookSet {
                HookSet::EMPTY
            }

            /// The state-store batch this plugin's `at.hook` will send, built before the hook
            /// runs so that the engine can send every plan of the hook in one round trip; the
            /// hook then sends the same batch with [`Cx::store_planned`]. `None`: nothing to
            /// send (the client is exempt). Called only for [`Plugin::store_hooks`], and only
            /// when the batch will be sent: it may note what the hook or a later one must undo.
            /// See [`crate::store::ahead`].
            fn store_ahead(&self, cx: &mut Cx, at: &crate::store::Ahead<'_>) -> Option<crate::store::Batch> {
                None
            }

            /// The mechanisms this auth backend can check; the server advertises the union.
            /// CRAM-MD5 needs the clear password on the server side, so it is not in the default.
            fn auth_mechanisms(&self) -> &'static [crate::auth::Mechanism] {
                &[crate::auth::Mechanism::Plain, crate::auth::Mechanism::Login]
            }

            /// True for a queue plugin that passes the DSN parameters (RFC 3461: RET, ENVID,
            /// NOTIFY, ORCPT) on to an MTA that honours them. EHLO offers DSN only when every
            /// queue plugin of the chain does: a plugin that delivers here (Maildir, a local
            /// queue) produces no delivery notifications, so the server must not promise them.
            fn carries_dsn(&self) -> bool {
                false
            }

            /// A log line (qpsmtpd's `logging` hook). Logging plugins are listed in
            /// `config/logging`; they run in order until one returns `OK`. Without any, the core
            /// writes to stderr. Called synchronously and often: it must not block (buffer, and
            /// write off the worker).
            fn logging(&self, record: &LogRecord<'_>) -> Outcome {
                reached_default();
                Outcome::Declined
            }
        }
    };
}

crate::for_each_hook!(plugin_trait);

thread_local! {
    /// Set by every default hook method: a hook the engine calls is listed in `hooks()`, so
    /// this is only read by [`crate::testing::unlisted_overrides`], which calls the others.
    static DEFAULT_REACHED: Cell<bool> = const { Cell::new(false) };
}

fn reached_default() {
    DEFAULT_REACHED.set(true);
}

/// True if a default hook method ran since the last call (on this thread).
pub(crate) fn take_default_reached() -> bool {
    DEFAULT_REACHED.replace(false)
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

    /// The config directory on disk, for a plugin that reads a directory of its own in it
    /// (`dkim`: `config/dkim/DOMAIN/private`); `None` for a config that is not a directory.
    fn dir(&self) -> Option<&std::path::Path> {
        None
    }

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
