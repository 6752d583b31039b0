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

use regex::{Regex, RegexBuilder};
use ringsmtpd_plugin_api::{
    CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Plugin, PluginInit, Recipient, Step,
    Transaction,
};

use crate::matchers::{first_word, log, lower_parts, one_line, Code};

enum Subject {
    Regex(Regex),
    Exact(String),
}

struct Line {
    subject: Subject,
    code: Code,
    msg: Option<String>,
}

/// The `rcpt_regexp` plugin.
pub struct RcptRegexp {
    name: String,
    common: CommonArgs,
    lines: Vec<Line>,
}

/// Builds `rcpt_regexp` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    Ok(Box::new(build(init)?))
}

fn build(init: &PluginInit<'_>) -> Result<RcptRegexp, ConfigError> {
    let (common, rest) =
        CommonArgs::extract(init.args, CommonArgs::DEFAULT).map_err(|e| init.error(e))?;
    if let Some(extra) = rest.first() {
        return Err(init.error(format!("unknown argument '{extra}'")));
    }
    let mut lines = Vec::new();
    for line in init.config.lines("rcpt_regexp")?.unwrap_or_default() {
        let (first, rest) = first_word(&line.text);
        let Some(rest) = rest else {
            return Err(line.error(format!("'{}': no return code", line.text)));
        };
        let (code, msg) = first_word(rest);
        let subject = match first.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(re) if first.len() >= 2 => Subject::Regex(
                RegexBuilder::new(re)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        line.error(format!(
                            "bad regular expression /{re}/: {}",
                            one_line(&e.to_string())
                        ))
                    })?,
            ),
            _ => Subject::Exact(first.to_lowercase()),
        };
        let code = Code::parse(code).map_err(|e| line.error(e))?;
        lines.push(Line {
            subject,
            code,
            msg: msg.map(str::to_string),
        });
    }
    Ok(RcptRegexp {
        name: init.name.to_string(),
        common,
        lines,
    })
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
        for (i, line) in self.lines.iter().enumerate() {
            let hit = match &line.subject {
                Subject::Regex(re) => re.is_match(&to),
                Subject::Exact(s) => *s == to,
            };
            if hit {
                log(
                    cx,
                    &self.common,
                    &self.name,
                    Level::Info,
                    format_args!("{to} matches entry {}: {:?}", i + 1, line.code),
                );
                return Step::Ready(line.code.outcome(line.msg.as_deref()));
            }
        }
        Step::DECLINED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::address::parse_path;
    use ringsmtpd_plugin_api::testing::{cx, origin, run, MemConfig};
    use ringsmtpd_plugin_api::Outcome;

    fn build_with(args: &[&str], files: &[(&str, &str)]) -> Result<RcptRegexp, ConfigError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let config = MemConfig::new(files);
        let line = origin(&format!("rcpt_regexp {}", args.join(" ")));
        build(&PluginInit {
            name: "rcpt_regexp",
            args: &args,
            config: &config,
            origin: &line,
        })
    }

    const FILE: &str = "# rcpt_regexp\n\
        me@myhost.example          OK       Accepting mail\n\
        /^user\\d+@doma\\.in$/       OK\n\
        info@myhost.example        DENY     User not found.\n\
        /^unused@/                 denysoft Try later\n\
        /^gone@/                   DENY_DISCONNECT\n\
        /^.*@myhost\\.example$/     DECLINED Fall through\n\
        /./                        DENY     No such user.\n";

    fn check(p: &RcptRegexp, to: &str) -> Outcome {
        let (mut c, _) = cx("192.0.2.1:1");
        let mut t = Transaction::default();
        let r = Recipient {
            addr: parse_path(to, false, false).unwrap(),
            params: Default::default(),
        };
        run(p.rcpt(&mut c, &mut t, &r))
    }

    #[test]
    fn first_match_decides() {
        let p = build_with(&[], &[("rcpt_regexp", FILE)]).unwrap();
        assert_eq!(check(&p, "<ME@MyHost.example>"), Outcome::Ok(None));
        assert_eq!(check(&p, "<user42@doma.in>"), Outcome::Ok(None));
        assert_eq!(
            check(&p, "<USER42@DOMA.IN>"),
            Outcome::Ok(None),
            "patterns ignore case"
        );
        assert_eq!(
            check(&p, "<userx@doma.in>"),
            Outcome::Deny(Some("No such user.".into()))
        );
        assert_eq!(
            check(&p, "<info@myhost.example>"),
            Outcome::Deny(Some("User not found.".into()))
        );
        assert_eq!(
            check(&p, "<unused@x.example>"),
            Outcome::DenySoft(Some("Try later".into()))
        );
        assert_eq!(check(&p, "<gone@x.example>"), Outcome::DenyDisconnect(None));
        assert_eq!(check(&p, "<other@myhost.example>"), Outcome::Declined);
        assert_eq!(check(&p, "<postmaster>"), Outcome::Declined);
    }

    #[test]
    fn no_file_declines() {
        let p = build_with(&[], &[]).unwrap();
        assert_eq!(check(&p, "<a@b.example>"), Outcome::Declined);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (text, line) in [
            ("a@b.example OK\n/^x/\n", 2),
            ("/^(unclosed/ DENY\n", 1),
            ("/(?=ahead)/ DENY\n", 1),
            ("a@b.example MAYBE\n", 1),
            ("# c\na@b.example DONE\n", 2),
        ] {
            let e = build_with(&[], &[("rcpt_regexp", text)]).err().unwrap();
            assert_eq!(
                (e.file.as_str(), e.line),
                ("rcpt_regexp", line),
                "{text:?}: {e}"
            );
        }
        assert!(build_with(&["x"], &[]).is_err());
        assert!(build_with(&["loglevel", "7"], &[]).is_ok());
    }
}
