//! # rcpt_regexp — decide recipients by pattern or address, with a return code per line
//!
//! ## Synopsis
//!
//! ```text
//! rcpt_regexp [loglevel N]
//! ```
//!
//! ## Description
//!
//! At `RCPT`, the recipient's `user@host` (lowercased) is compared with each line of
//! `rcpt_regexp` in order; the first line that matches decides, with its return code and
//! message. No match declines (the next rcpt plugin decides). Recipients without a domain (the
//! bare `postmaster`) are not checked.
//!
//! Return codes: `OK` accepts the recipient (no later rcpt plugin runs — so an `OK` line can
//! make this server relay for a foreign domain: use `DECLINED` for addresses whose domain
//! `rcpt_ok` should still check); `DECLINED` passes it to the next plugin; `DENY` (550),
//! `DENYSOFT` (450), `DENY_DISCONNECT` (550 and close), `DENYSOFT_DISCONNECT` (421 and close)
//! refuse it, with the line's message if it has one.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect: each line says what to do |
//!
//! ## Config files
//!
//! `rcpt_regexp`, read when the plugin is built (start and reload):
//!
//! ```text
//! # pattern or address      code       message
//! me@myhost.example          OK
//! /^user\d+@doma\.in$/       OK
//! info@myhost.example        DENY       User not found.
//! /^unused@/                 DENY       User not found.
//! /^.*$/                     DECLINED
//! ```
//!
//! A first column between slashes is a regular expression (`regex` crate syntax: Perl's
//! without look-around and back-references), matched without regard to case; anything else is
//! an address compared exactly, without regard to case. Codes are qpsmtpd's names, any case;
//! `DENYHARD` means `DENY_DISCONNECT`. Differences from qpsmtpd: a line whose pattern does not
//! compile, without a code, with an unknown code or with `DONE` (which would leave the client
//! without an answer) stops the server with `rcpt_regexp:LINE` instead of being skipped at
//! every recipient with a warning.
//!
//! ## Hooks
//!
//! `rcpt`.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 5321 §4.2.3 (550/450 for the refusals).
//!
//! ## Security
//!
//! Patterns run in linear time (no backtracking). qpsmtpd compiled them with `eval`, so its
//! file had to be trusted like code; here a pattern is only a pattern.

use regex::Regex;
use ringsmtpd_plugin_api::args;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{lower_parts, regex, Verdict};

enum Subject {
    Regex(Regex),
    Exact(String),
}

impl Subject {
    /// `/regex/` or an address.
    fn parse(text: &str) -> Result<Subject, String> {
        let re = match text.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(re) if text.len() >= 2 => re,
            _ => return Ok(Subject::Exact(text.to_lowercase())),
        };
        regex(re).map(Subject::Regex)
    }

    fn matches(&self, to: &str) -> bool {
        match self {
            Subject::Regex(re) => re.is_match(to),
            Subject::Exact(s) => s == to,
        }
    }
}

/// The `rcpt_regexp` plugin.
pub struct RcptRegexp {
    common: Common,
    lines: Vec<(Subject, Verdict)>,
}

/// Builds `rcpt_regexp` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let lines = args::parse_lines(init, "rcpt_regexp", |text| {
        let (subject, verdict) = Verdict::parse(text, "ADDRESS|/REGEX/")?;
        Ok((Subject::parse(subject)?, verdict))
    })?;
    Ok(Box::new(RcptRegexp { common, lines }))
}

impl Plugin for RcptRegexp {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Rcpt])
    }

    fn rcpt<'a>(
        &'a self,
        cx: &'a mut Cx,
        _txn: &'a mut Transaction,
        rcpt: &'a Recipient,
    ) -> Step<'a> {
        let Some((to, _)) = lower_parts(&rcpt.addr) else {
            return Step::DECLINED;
        };
        match self.lines.iter().position(|(s, _)| s.matches(&to)) {
            Some(i) => {
                let what = format_args!("{to} matches entry {}", i + 1);
                Step::Ready(self.lines[i].1.apply(&self.common, cx, what))
            }
            None => Step::DECLINED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{assert_bad_lines, build, rcpt_outcome};
    use ringsmtpd_plugin_api::Outcome;

    const FILE: &str = "# rcpt_regexp\n\
        me@myhost.example          OK       Accepting mail\n\
        /^user\\d+@doma\\.in$/       OK\n\
        info@myhost.example        DENY     User not found.\n\
        /^unused@/                 denysoft Try later\n\
        /^gone@/                   DENY_DISCONNECT\n\
        /^.*@myhost\\.example$/     DECLINED Fall through\n\
        /./                        DENY     No such user.\n";

    #[test]
    fn first_match_decides() {
        let p = build(new, "rcpt_regexp", &[("rcpt_regexp", FILE)]).unwrap();
        let check = |to| rcpt_outcome(&*p, to);
        assert_eq!(check("<ME@MyHost.example>"), Outcome::Ok(None));
        assert_eq!(check("<user42@doma.in>"), Outcome::Ok(None));
        assert_eq!(
            check("<USER42@DOMA.IN>"),
            Outcome::Ok(None),
            "patterns ignore case"
        );
        assert_eq!(
            check("<userx@doma.in>"),
            Outcome::Deny(Some("No such user.".into()))
        );
        assert_eq!(
            check("<info@myhost.example>"),
            Outcome::Deny(Some("User not found.".into()))
        );
        assert_eq!(
            check("<unused@x.example>"),
            Outcome::DenySoft(Some("Try later".into()))
        );
        assert_eq!(check("<gone@x.example>"), Outcome::DenyDisconnect(None));
        assert_eq!(check("<other@myhost.example>"), Outcome::Declined);
        assert_eq!(check("<postmaster>"), Outcome::Declined);
    }

    #[test]
    fn no_file_declines() {
        let p = build(new, "rcpt_regexp", &[]).unwrap();
        assert_eq!(rcpt_outcome(&*p, "<a@b.example>"), Outcome::Declined);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        assert_bad_lines(
            new,
            "rcpt_regexp",
            "rcpt_regexp",
            &[
                ("a@b.example OK\n/^x/\n", 2),
                ("/^(unclosed/ DENY\n", 1),
                ("/(?=ahead)/ DENY\n", 1),
                ("a@b.example MAYBE\n", 1),
                ("# c\na@b.example DONE\n", 2),
            ],
        );
        assert!(build(new, "rcpt_regexp x", &[]).is_err());
        assert!(build(new, "rcpt_regexp loglevel 7", &[]).is_ok());
    }
}
