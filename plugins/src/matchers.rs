//! Pieces shared by the policy plugins (`hosts_allow`, `relay`, `whitelist`, `badmailfrom`,
//! `badrcptto`, `badmailfromto`, `rcpt_map`, `rcpt_regexp`): IP address patterns, qpsmtpd's
//! return-code names, badmailfrom-style address patterns, and a logging helper that honours
//! the `loglevel` argument.
//!
//! Everything here is parsed once, when a plugin is built; matching allocates nothing.

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use ringsmtpd_plugin_api::{Address, CommonArgs, Cx, Level, Outcome};

/// Logs `msg` for `plugin` at `level`, after the plugin's `loglevel` argument.
pub(crate) fn log(
    cx: &Cx,
    common: &CommonArgs,
    plugin: &str,
    level: Level,
    msg: std::fmt::Arguments<'_>,
) {
    if let Some(level) = common.adjust(level) {
        cx.log(level, plugin, msg);
    }
}

// ---------------------------------------------------------------------------------------------
// IP patterns: `ringsmtpd_plugin_api::cidr`, under the names the policy plugins use.

pub(crate) use ringsmtpd_plugin_api::cidr::{Cidr as Net, IpForms, IpList};

/// Parses one IP pattern in the forms `forms` allows.
pub(crate) fn parse_net(text: &str, forms: IpForms) -> Result<Net, String> {
    Net::parse(text, forms)
}

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
    /// Parses an entry; `regex` allows the regular-expression form.
    pub(crate) fn parse(text: &str, regex: bool) -> Result<AddrPattern, String> {
        if regex && text.contains(REGEX_CHARS) {
            return RegexBuilder::new(text)
                .case_insensitive(true)
                .size_limit(1 << 20)
                .build()
                .map(AddrPattern::Regex)
                .map_err(|e| {
                    format!(
                        "bad regular expression '{text}': {}",
                        one_line(&e.to_string())
                    )
                });
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

/// `user@host` and `host`, lowercased, of an address with both parts; `None` for `<>` and
/// the bare `postmaster` (qpsmtpd's plugins skip those).
pub(crate) fn lower_parts(addr: &Address) -> Option<(String, String)> {
    if addr.local().is_empty() || addr.domain().is_empty() {
        return None;
    }
    Some((addr.as_str().to_lowercase(), addr.domain().to_lowercase()))
}

/// A regex error message on one line (the regex crate draws a caret diagram).
pub(crate) fn one_line(s: &str) -> String {
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
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
