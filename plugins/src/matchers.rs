//! Pieces shared by the policy plugins (`hosts_allow`, `relay`, `whitelist`, `badmailfrom`,
//! `badrcptto`, `badmailfromto`, `rcpt_map`, `rcpt_regexp`) and the limit plugins
//! (`count_unrecognized_commands`, `noop_counter`): qpsmtpd's return-code names and
//! `PATTERN CODE [message]` rules, badmailfrom-style address lists, config files read a line
//! at a time, and the log-and-reject of a failed check. IP patterns are
//! `ringsmtpd_plugin_api::cidr`.
//!
//! Everything here is parsed once, when a plugin is built; matching allocates nothing.

use std::borrow::Cow;
use std::fmt;

use regex::{Regex, RegexBuilder};
use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::{
    Address, Common, CommonArgs, ConfigError, Cx, Level, Outcome, PluginInit, RejectType,
};

// ---------------------------------------------------------------------------------------------
// Return codes.

/// A qpsmtpd return code as written in a config file (`hosts_allow`, `rcpt_map`,
/// `rcpt_regexp`). `DONE` is not one: it means "the plugin sent the reply itself", and a
/// config line cannot, so the client would wait for a reply that never comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Ok,
    Declined,
    Deny,
    DenySoft,
    DenyDisconnect,
    DenySoftDisconnect,
}

impl Code {
    /// qpsmtpd's names (`lib/Qpsmtpd/Constants.pm`), any case; `DENYHARD` is the old name of
    /// `DENY_DISCONNECT`.
    pub(crate) fn parse(name: &str) -> Result<Code, String> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "OK" => Code::Ok,
            "DECLINED" => Code::Declined,
            "DENY" => Code::Deny,
            "DENYSOFT" => Code::DenySoft,
            "DENY_DISCONNECT" | "DENYHARD" => Code::DenyDisconnect,
            "DENYSOFT_DISCONNECT" => Code::DenySoftDisconnect,
            "DONE" => {
                return Err("DONE is not allowed here: nothing would answer the client".into())
            }
            _ => {
                return Err(format!(
                    "'{name}' is not a return code (OK, DECLINED, DENY, DENYSOFT, \
                     DENY_DISCONNECT, DENYSOFT_DISCONNECT)"
                ))
            }
        })
    }

    pub(crate) fn is_deny(self) -> bool {
        !matches!(self, Code::Ok | Code::Declined)
    }

    /// The outcome, with `msg` as its text (qpsmtpd sends the text only with a deny).
    pub(crate) fn outcome(self, msg: Option<&str>) -> Outcome {
        let m = || msg.map(|m| Cow::Owned(m.to_string()));
        match self {
            Code::Ok => Outcome::Ok(None),
            Code::Declined => Outcome::Declined,
            Code::Deny => Outcome::Deny(m()),
            Code::DenySoft => Outcome::DenySoft(m()),
            Code::DenyDisconnect => Outcome::DenyDisconnect(m()),
            Code::DenySoftDisconnect => Outcome::DenySoftDisconnect(m()),
        }
    }
}

/// What a rule line says: a return code and an optional message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) code: Code,
    pub(crate) msg: Option<String>,
}

impl Verdict {
    /// Splits a rule line `KEY CODE [message]` (`hosts_allow`, `rcpt_map`, `rcpt_regexp`) into
    /// its key and verdict; `key` names the key's form in an error.
    pub(crate) fn parse<'t>(text: &'t str, key: &str) -> Result<(&'t str, Verdict), String> {
        let (first, rest) = first_word(text);
        let Some(rest) = rest else {
            return Err(format!("'{text}': expected {key} RETURNCODE [message]"));
        };
        let (code, msg) = first_word(rest);
        let code = Code::parse(code)?;
        let msg = msg.map(str::to_string);
        Ok((first, Verdict { code, msg }))
    }

    /// Logs that `what` matched this rule (at info for a deny) and returns its outcome.
    pub(crate) fn apply(&self, common: &Common, cx: &Cx, what: fmt::Arguments<'_>) -> Outcome {
        let level = if self.code.is_deny() {
            Level::Info
        } else {
            Level::Debug
        };
        common.log(cx, level, format_args!("{what}: {:?}", self.code));
        self.code.outcome(self.msg.as_deref())
    }
}

// ---------------------------------------------------------------------------------------------
// Address patterns (qmail's badmailfrom, with qpsmtpd's regex extension).

/// The characters that make a badmailfrom/badrcptto entry a regular expression (qpsmtpd's
/// test, `[/^$*+!%?\\]`).
const REGEX_CHARS: &[char] = &['/', '^', '$', '*', '+', '!', '%', '?', '\\'];

/// One entry of `badmailfrom` or `badrcptto`.
#[derive(Debug, Clone)]
pub(crate) enum AddrPattern {
    /// `user@host`, lowercased.
    Exact(String),
    /// `@host`: every address at host (lowercased, without the `@`).
    Host(String),
    /// A regular expression, matched case-insensitively anywhere in `user@host`.
    Regex(Regex),
}

impl AddrPattern {
    /// Parses an entry; `with_regex` allows the regular-expression form.
    pub(crate) fn parse(text: &str, with_regex: bool) -> Result<AddrPattern, String> {
        if with_regex && text.contains(REGEX_CHARS) {
            return regex(text).map(AddrPattern::Regex);
        }
        let lower = text.to_lowercase();
        match lower.split_once('@') {
            Some(("", host)) if !host.is_empty() && !host.contains('@') => {
                Ok(AddrPattern::Host(host.to_string()))
            }
            Some((user, host)) if !user.is_empty() && !host.is_empty() => {
                Ok(AddrPattern::Exact(lower))
            }
            _ => Err(format!(
                "'{text}' is not user@host, @host or a regular expression"
            )),
        }
    }

    /// True if the address (`addr` = lowercased `user@host`, `host` lowercased) matches.
    pub(crate) fn matches(&self, addr: &str, host: &str) -> bool {
        match self {
            AddrPattern::Exact(e) => e == addr,
            AddrPattern::Host(h) => h == host,
            AddrPattern::Regex(re) => re.is_match(addr),
        }
    }
}

/// A badmailfrom-style list (`badmailfrom`, `badrcptto`): an address pattern a line, an
/// optional reason after it.
#[derive(Debug, Default)]
pub(crate) struct AddrList(Vec<Listed>);

/// One entry of an [`AddrList`].
#[derive(Debug)]
pub(crate) struct Listed {
    pattern: AddrPattern,
    /// The pattern as written, lowercased.
    pub(crate) entry: String,
    reason: Option<String>,
}

impl Listed {
    /// The entry's reason, or `default`.
    pub(crate) fn reason_or(&self, default: impl Into<Cow<'static, str>>) -> Cow<'static, str> {
        match &self.reason {
            Some(r) => Cow::Owned(r.clone()),
            None => default.into(),
        }
    }
}

impl AddrList {
    /// Reads the config file `file`; the regular-expression form is allowed.
    pub(crate) fn load(init: &PluginInit<'_>, file: &str) -> Result<AddrList, ConfigError> {
        let entries = args::parse_lines(init, file, |text| {
            let (bad, reason) = first_word(text);
            Ok(Listed {
                pattern: AddrPattern::parse(bad, true)?,
                entry: bad.to_lowercase(),
                reason: reason.map(str::to_string),
            })
        })?;
        Ok(AddrList(entries))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first entry the address matches (`addr` = lowercased `user@host`, `host`
    /// lowercased).
    pub(crate) fn find(&self, addr: &str, host: &str) -> Option<&Listed> {
        self.0.iter().find(|l| l.pattern.matches(addr, host))
    }
}

/// `user@host` and `host`, lowercased, of an address with both parts; `None` for `<>` and
/// the bare `postmaster` (qpsmtpd's plugins skip those).
pub(crate) fn lower_parts(addr: &Address) -> Option<(String, String)> {
    if addr.local().is_empty() || addr.domain().is_empty() {
        return None;
    }
    Some((addr.as_str().to_lowercase(), addr.domain().to_lowercase()))
}

/// A pattern of a config file as a regular expression, matched without regard to case; its
/// error on one line (the regex crate draws a caret diagram).
pub(crate) fn regex(pattern: &str) -> Result<Regex, String> {
    let error = |e: regex::Error| {
        let e = e.to_string();
        let lines: Vec<&str> = e
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        format!("bad regular expression '{pattern}': {}", lines.join(" "))
    };
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(error)
}

/// Splits `text` at its first run of whitespace: (first word, rest or `None`).
pub(crate) fn first_word(text: &str) -> (&str, Option<&str>) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((w, rest)) => {
            let rest = rest.trim();
            (w, (!rest.is_empty()).then_some(rest))
        }
        None => (text, None),
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin plumbing: limits, the same action at several hooks.

/// The arguments of a plugin that refuses a client at the Nth of something on a connection:
/// `[N]` (a positive integer, `default_max` when absent) and the common ones, where
/// `reject_type` is `disconnect` (the default) or `perm`.
pub(crate) fn limit_args(
    init: &PluginInit<'_>,
    default_max: u32,
) -> Result<(Common, u32), ConfigError> {
    let defaults = CommonArgs {
        reject_type: RejectType::Disconnect,
        ..CommonArgs::DEFAULT
    };
    let (common, rest) = init.common(defaults)?;
    if matches!(
        common.args.reject_type,
        RejectType::Temp | RejectType::TempDisconnect
    ) {
        return Err(init.error("reject_type must be disconnect or perm"));
    }
    let max = args::positive(init, &rest, "N", default_max)?;
    Ok((common, max))
}

/// Adds one to a per-connection counter and returns the new count.
pub(crate) fn bump(count: &mut u32) -> u32 {
    *count = count.saturating_add(1);
    *count
}

/// `Plugin` hook methods that each call `self.$act(cx, Hook::…)`, for a plugin that does the
/// same at several hooks: `same_at!(act: connect, helo, mail)` inside `impl Plugin`. The hooks
/// it knows are those its arms list.
macro_rules! same_at {
    ($act:ident: $($hook:ident),+ $(,)?) => { $(same_at!(@hook $act $hook);)+ };
    (@hook $act:ident connect) => { same_at!(@fn $act connect Connect ()); };
    (@hook $act:ident helo) => { same_at!(@fn $act helo Helo (str)); };
    (@hook $act:ident ehlo) => { same_at!(@fn $act ehlo Ehlo (str)); };
    (@hook $act:ident vrfy) => { same_at!(@fn $act vrfy Vrfy (str)); };
    (@hook $act:ident help) => { same_at!(@fn $act help Help (str)); };
    (@hook $act:ident mail_pre) => { same_at!(@fn $act mail_pre MailPre (str, str)); };
    (@hook $act:ident rcpt_pre) => { same_at!(@fn $act rcpt_pre RcptPre (str, str)); };
    (@hook $act:ident unrecognized_command) => {
        same_at!(@fn $act unrecognized_command UnrecognizedCommand (str, str));
    };
    (@hook $act:ident mail) => { same_at!(@fn $act mail Mail (txn)); };
    (@hook $act:ident rcpt) => { same_at!(@fn $act rcpt Rcpt (txn, rcpt)); };
    (@hook $act:ident data) => { same_at!(@fn $act data Data (txn)); };
    (@hook $act:ident data_post) => { same_at!(@fn $act data_post DataPost (txn)); };
    (@hook $act:ident queue) => { same_at!(@fn $act queue Queue (txn)); };
    (@hook $act:ident reset_transaction) => {
        same_at!(@fn $act reset_transaction ResetTransaction (txn));
    };
    (@fn $act:ident $f:ident $hook:ident ($($arg:ident),*)) => {
        fn $f<'a>(
            &'a self,
            cx: &'a mut ringsmtpd_plugin_api::Cx,
            $(_: same_at!(@arg $arg)),*
        ) -> ringsmtpd_plugin_api::Step<'a> {
            self.$act(cx, ringsmtpd_plugin_api::Hook::$hook)
        }
    };
    (@arg str) => { &'a str };
    (@arg txn) => { &'a mut ringsmtpd_plugin_api::Transaction };
    (@arg rcpt) => { &'a ringsmtpd_plugin_api::Recipient };
}
pub(crate) use same_at;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Code::parse("DENY").unwrap(), Code::Deny);
        assert_eq!(Code::parse("denysoft").unwrap(), Code::DenySoft);
        assert_eq!(Code::parse("DENYHARD").unwrap(), Code::DenyDisconnect);
        assert_eq!(
            Code::parse("DENYSOFT_DISCONNECT").unwrap(),
            Code::DenySoftDisconnect
        );
        assert!(Code::parse("DONE").unwrap_err().contains("DONE"));
        assert!(Code::parse("901").is_err());
        assert_eq!(Code::Ok.outcome(Some("x")), Outcome::Ok(None));
        assert_eq!(Code::Declined.outcome(Some("x")), Outcome::Declined);
        assert_eq!(
            Code::Deny.outcome(Some("go")),
            Outcome::Deny(Some("go".into()))
        );
        assert_eq!(Code::DenySoft.outcome(None), Outcome::DenySoft(None));
        assert!(Code::DenyDisconnect.is_deny() && !Code::Ok.is_deny());
    }

    #[test]
    fn addr_patterns() {
        let p = AddrPattern::parse("Spammer@Example.COM", true).unwrap();
        assert!(p.matches("spammer@example.com", "example.com"));
        assert!(!p.matches("other@example.com", "example.com"));
        let p = AddrPattern::parse("@Example.com", true).unwrap();
        assert!(p.matches("x@example.com", "example.com"));
        assert!(!p.matches("x@sub.example.com", "sub.example.com"));
        let p = AddrPattern::parse(r"^return.*@.*\.pidplate\.biz$", true).unwrap();
        assert!(p.matches("return-1@a.pidplate.biz", "a.pidplate.biz"));
        assert!(!p.matches("x@a.pidplate.biz", "a.pidplate.biz"));
        // Case-insensitive.
        assert!(AddrPattern::parse("^BAD", true)
            .unwrap()
            .matches("bad@x.y", "x.y"));
        assert!(AddrPattern::parse("nohost", true).is_err());
        assert!(AddrPattern::parse("@", true).is_err());
        assert!(AddrPattern::parse("user@", true).is_err());
        let e = AddrPattern::parse("^(unclosed", true).unwrap_err();
        assert!(
            e.contains("bad regular expression") && !e.contains('\n'),
            "{e}"
        );
        // Without the regex form, '+' is literal but '@' is still required.
        let p = AddrPattern::parse("a+b@x.y", false).unwrap();
        assert!(p.matches("a+b@x.y", "x.y"));
    }

    #[test]
    fn words() {
        assert_eq!(first_word("  a   b c "), ("a", Some("b c")));
        assert_eq!(first_word("a"), ("a", None));
        assert_eq!(first_word("a   "), ("a", None));
    }
}
