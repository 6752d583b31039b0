//! What every plugin has: its instance name and qpsmtpd's common arguments (`reject`,
//! `reject_type`, `loglevel`), bundled as [`Common`] with a `log` that honours `loglevel` and
//! qpsmtpd's `get_reject`.
//!
//! ```ignore
//! pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
//!     let (common, rest) = init.common(CommonArgs::DEFAULT)?; // or init.common_only(...)
//!     ...
//! }
//! // in a hook:
//! self.common.log(cx, Level::Info, format_args!("fail, {host} is listed"));
//! return Step::Ready(self.common.reject(cx, "Your host is listed"));
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::context::{Cx, Level};
use crate::outcome::{Msg, Outcome, Step};
use crate::plugin::{ConfigError, PluginInit};
use crate::shared::Naughty;

/// A plugin's instance name (as written in `config/plugins`: `relay`, `relay:1`) and its
/// common arguments. Every built-in plugin holds one as its field `common`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Common {
    pub name: String,
    pub args: CommonArgs,
}

impl Common {
    /// A plugin named `name` with these arguments (tests and plugins built by hand).
    pub fn new(name: &str, args: CommonArgs) -> Common {
        Common {
            name: name.to_string(),
            args,
        }
    }

    /// Logs `msg` at `level`, after the plugin's `loglevel` argument, under its name.
    pub fn log(&self, cx: &Cx, level: Level, msg: fmt::Arguments<'_>) {
        if let Some(level) = self.args.adjust(level) {
            cx.log(level, &self.name, msg);
        }
    }

    /// The outcome for a failed check, as qpsmtpd's `get_reject`: `reject 0` logs and
    /// declines, `reject naughty` marks the connection and declines, `reject 1` denies in the
    /// form `reject_type` says. Its log lines honour `loglevel`.
    pub fn reject(&self, cx: &mut Cx, msg: impl Into<Cow<'static, str>>) -> Outcome {
        let msg = msg.into();
        match self.args.reject {
            Reject::No => {
                self.log(cx, Level::Info, format_args!("fail, log only: {msg}"));
                Outcome::Declined
            }
            Reject::Naughty => {
                self.log(cx, Level::Info, format_args!("fail, naughty: {msg}"));
                cx.conn.notes.set(Naughty {
                    plugin: self.name.clone(),
                    msg: msg.into_owned(),
                });
                Outcome::Declined
            }
            Reject::Yes => self.args.deny(Some(msg)),
        }
    }

    /// A failed check: logs `fail, {what}` and refuses with `msg` as the plugin's `reject`
    /// arguments say ([`Common::reject`]).
    pub fn fail(
        &self,
        cx: &mut Cx,
        what: fmt::Arguments<'_>,
        msg: impl Into<Cow<'static, str>>,
    ) -> Step<'static> {
        self.log(cx, Level::Info, format_args!("fail, {what}"));
        Step::Ready(self.reject(cx, msg))
    }
}

impl<'a> PluginInit<'a> {
    /// This plugin's [`Common`] (its common arguments taken out of its line, starting from
    /// `defaults`) and the remaining arguments in order.
    pub fn common(&self, defaults: CommonArgs) -> Result<(Common, Vec<&'a str>), ConfigError> {
        let (args, rest) = CommonArgs::extract(self.args, defaults).map_err(|e| self.error(e))?;
        Ok((Common::new(self.name, args), rest))
    }

    /// As [`PluginInit::common`], for a plugin that takes no other argument.
    pub fn common_only(&self, defaults: CommonArgs) -> Result<Common, ConfigError> {
        let (common, rest) = self.common(defaults)?;
        match rest.first() {
            Some(extra) => Err(self.unknown(extra)),
            None => Ok(common),
        }
    }

    /// Takes the plugin's own `key VALUE` argument out of its line, for a plugin that gives a
    /// common argument values of its own (`naughty` and `karma` with `reject`): the last
    /// value given, and the other arguments, for [`PluginInit::common`] on them.
    pub fn take_arg(&self, key: &str) -> Result<(Option<&'a str>, Vec<String>), ConfigError> {
        let mut value = None;
        let mut others = Vec::new();
        let mut it = self.args.iter();
        while let Some(arg) = it.next() {
            if arg != key {
                others.push(arg.clone());
                continue;
            }
            let v = it
                .next()
                .ok_or_else(|| self.error(format!("{key} needs a value")))?;
            value = Some(v.as_str());
        }
        Ok((value, others))
    }

    /// The error for an argument the plugin does not know.
    pub fn unknown(&self, arg: &str) -> ConfigError {
        self.error(format!("unknown argument '{arg}'"))
    }
}

/// `reject 0|1|naughty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Log only.
    No,
    /// Reject at once, in the form `reject_type` says.
    Yes,
    /// Mark the connection naughty; the `naughty` plugin rejects later, at one chosen hook.
    Naughty,
}

/// `reject_type perm|temp|disconnect|temp_disconnect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectType {
    Perm,
    Temp,
    Disconnect,
    TempDisconnect,
}

/// The arguments every plugin understands (qpsmtpd `docs/config.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonArgs {
    pub reject: Reject,
    pub reject_type: RejectType,
    /// The plugin's `loglevel` argument: `+N`/`-N` shift the level of its lines (a lower
    /// number is more important, so `-1` makes it louder), a bare `N` drops its lines above N.
    pub loglevel: LogAdjust,
}

/// A per-plugin `loglevel` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAdjust {
    None,
    /// `+N` / `-N`: shift every line's level by N.
    Shift(i32),
    /// `N`: log this plugin's lines only at or below level N.
    Max(Level),
}

impl CommonArgs {
    /// Defaults as most qpsmtpd plugins have them: `reject 1`, `reject_type perm`.
    pub const DEFAULT: CommonArgs = CommonArgs {
        reject: Reject::Yes,
        reject_type: RejectType::Perm,
        loglevel: LogAdjust::None,
    };

    /// Takes `reject`, `reject_type` and `loglevel` (each followed by its value) out of `args`,
    /// starting from `defaults`, and returns the remaining arguments in order.
    pub fn extract(
        args: &[String],
        defaults: CommonArgs,
    ) -> Result<(CommonArgs, Vec<&str>), String> {
        let mut common = defaults;
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let key = arg.as_str();
            if !matches!(key, "reject" | "reject_type" | "loglevel") {
                rest.push(key);
                continue;
            }
            let value = it
                .next()
                .ok_or_else(|| format!("argument '{key}' needs a value"))?;
            match key {
                "reject" => {
                    common.reject = match value.as_str() {
                        "0" => Reject::No,
                        "1" => Reject::Yes,
                        "naughty" => Reject::Naughty,
                        v => return Err(format!("reject must be 0, 1 or naughty, not '{v}'")),
                    }
                }
                "reject_type" => {
                    common.reject_type = match value.as_str() {
                        "perm" | "deny" => RejectType::Perm,
                        "temp" | "soft" | "denysoft" => RejectType::Temp,
                        "disconnect" => RejectType::Disconnect,
                        "temp_disconnect" => RejectType::TempDisconnect,
                        v => {
                            return Err(format!(
                                "reject_type must be perm, temp, disconnect or temp_disconnect, \
                                 not '{v}'"
                            ))
                        }
                    }
                }
                _ => {
                    common.loglevel = match value.as_bytes().first() {
                        Some(b'+') | Some(b'-') => LogAdjust::Shift(
                            value
                                .parse::<i32>()
                                .map_err(|_| format!("bad loglevel '{value}'"))?,
                        ),
                        _ => LogAdjust::Max(
                            Level::parse(value).ok_or_else(|| format!("bad loglevel '{value}'"))?,
                        ),
                    }
                }
            }
        }
        Ok((common, rest))
    }

    /// The deny outcome in the form `reject_type` says (for `reject 1`).
    pub fn deny(&self, msg: Msg) -> Outcome {
        match self.reject_type {
            RejectType::Perm => Outcome::Deny(msg),
            RejectType::Temp => Outcome::DenySoft(msg),
            RejectType::Disconnect => Outcome::DenyDisconnect(msg),
            RejectType::TempDisconnect => Outcome::DenySoftDisconnect(msg),
        }
    }

    /// The level a line at `level` is written at, after this plugin's `loglevel` argument;
    /// `None` if the argument silences it.
    pub fn adjust(&self, level: Level) -> Option<Level> {
        match self.loglevel {
            LogAdjust::None => Some(level),
            LogAdjust::Shift(n) => Some(Level::from_number(level as i32 + n)),
            LogAdjust::Max(max) => (level <= max).then_some(level),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn extract_common_args() {
        let args = strings(&["dir", "reject", "naughty", "reject_type", "temp", "x"]);
        let (c, rest) = CommonArgs::extract(&args, CommonArgs::DEFAULT).unwrap();
        assert_eq!(c.reject, Reject::Naughty);
        assert_eq!(c.reject_type, RejectType::Temp);
        assert_eq!(rest, vec!["dir", "x"]);
        let (c, _) =
            CommonArgs::extract(&strings(&["loglevel", "-2"]), CommonArgs::DEFAULT).unwrap();
        assert_eq!(c.loglevel, LogAdjust::Shift(-2));
        assert_eq!(c.adjust(Level::Info), Some(Level::Warn));
        let (c, _) =
            CommonArgs::extract(&strings(&["loglevel", "4"]), CommonArgs::DEFAULT).unwrap();
        assert_eq!(c.adjust(Level::Info), None);
        assert_eq!(c.adjust(Level::Error), Some(Level::Error));
    }

    #[test]
    fn extract_rejects_bad_values() {
        for bad in [
            &["reject"][..],
            &["reject", "2"],
            &["reject_type", "x"],
            &["loglevel", "q"],
        ] {
            assert!(
                CommonArgs::extract(&strings(bad), CommonArgs::DEFAULT).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn reject_honours_loglevel_and_forms() {
        use crate::testing::cx;
        let args = strings(&["reject", "0", "loglevel", "4"]);
        let (a, _) = CommonArgs::extract(&args, CommonArgs::DEFAULT).unwrap();
        let common = Common::new("p", a);
        let (mut c, svc) = cx("192.0.2.1:1");
        assert_eq!(common.reject(&mut c, "bad"), Outcome::Declined);
        assert!(
            !svc.logged("fail, log only"),
            "loglevel 4 silences the info line"
        );
        let common = Common::new("p", CommonArgs::DEFAULT);
        assert_eq!(common.reject(&mut c, "bad"), Outcome::deny("bad"));
        let mut naughty = CommonArgs::DEFAULT;
        naughty.reject = Reject::Naughty;
        assert_eq!(
            Common::new("p", naughty).reject(&mut c, "bad"),
            Outcome::Declined
        );
        assert_eq!(c.conn.notes.get::<Naughty>().unwrap().plugin, "p");
        assert!(svc.logged("fail, naughty: bad"));
    }
}
