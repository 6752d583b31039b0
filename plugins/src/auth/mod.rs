//! SMTP AUTH backends (qpsmtpd's `plugins/auth/`). The core speaks SASL (RFC 4954: PLAIN,
//! LOGIN, CRAM-MD5) and hands each attempt to the `auth` hook of these plugins in
//! `config/plugins` order, until one answers something other than `DECLINED`.
//!
//! What the outcomes mean, for every backend here (qpsmtpd's `docs/authentication.md`):
//!
//! | outcome | when | the client gets |
//! |---|---|---|
//! | `OK` | the password is right | 235, and the connection may relay |
//! | `DECLINED` | this backend does not know the user: the next backend tries | 535 if no backend accepts |
//! | `DENY` | the user is known and the password is wrong (or can never be right: empty, NUL, CR/LF): later backends are not asked | 535 |
//! | `DENYSOFT` | the backend cannot tell (server down, timeout, protocol error) | 454 4.7.0: the client retries later; never an acceptance |
//!
//! Every backend refuses an empty password: an LDAP "unauthenticated bind" with an empty
//! password succeeds on many servers, the classic LDAP authentication bug (RFC 4513 §5.1.2),
//! and no other backend has a reason to accept one either.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use ringsmtpd_plugin_api::auth::AuthRequest;
use ringsmtpd_plugin_api::{Common, ConfigError, ConfigLine, Cx, Level, Outcome, Services};

pub mod auth_checkpassword;
pub mod auth_flat_file;
pub mod auth_imap;
pub mod auth_ldap_bind;
pub mod authdeny;
pub mod ldap;

/// The text of a `DENY`: RFC 4954 §6's code for a wrong password. The same for an unknown
/// user, so the reply tells an attacker nothing about which user names exist.
pub(crate) const INVALID: &str = "5.7.8 Authentication credentials invalid";

/// The text of a `DENYSOFT` (RFC 4954 §6, 454 4.7.0).
pub(crate) const TEMPORARY: &str = "4.7.0 Temporary authentication failure";

/// The clear password of `req`, for a backend that passes it on (checkpassword, IMAP, LDAP);
/// `None`, logged, for CRAM-MD5, whose digest only a holder of the clear password can check.
pub(crate) fn clear_password<'r>(
    common: &Common,
    cx: &Cx,
    req: &'r AuthRequest,
) -> Option<&'r str> {
    let password = req.password();
    if password.is_none() {
        let mechanism = req.mechanism;
        common.log(
            cx,
            Level::Debug,
            format_args!("skip: {mechanism} needs the clear password"),
        );
    }
    password
}

/// The password a backend passes on for `req` (checkpassword, IMAP), or the outcome without
/// asking: `DECLINED` when there is none in clear ([`clear_password`]) or no user name, `DENY`
/// for an empty password (never right).
pub(crate) fn password_to_pass_on<'r>(
    common: &Common,
    cx: &Cx,
    req: &'r AuthRequest,
) -> Result<&'r str, Outcome> {
    let password = clear_password(common, cx, req).ok_or(Outcome::Declined)?;
    if req.user.is_empty() {
        return Err(Outcome::Declined);
    }
    if password.is_empty() {
        let user = Shown(&req.user);
        let why = format_args!("fail: empty password for '{user}'");
        return Err(refuse(common, cx, why));
    }
    Ok(password)
}

/// `DENY` with [`INVALID`], after logging `why` at info.
pub(crate) fn refuse(common: &Common, cx: &Cx, why: fmt::Arguments<'_>) -> Outcome {
    common.log(cx, Level::Info, why);
    Outcome::deny(INVALID)
}

/// A user name as a log shows it: control characters as `?`, at most 100 characters, so a
/// client cannot write lines into the log or flood it.
pub(crate) struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        for (i, c) in self.0.chars().enumerate() {
            if i == 100 {
                return f.write_str("...");
            }
            f.write_char(if c.is_control() { '?' } else { c })?;
        }
        Ok(())
    }
}

pub(crate) use crate::helpers::backend::{parse_port, Host};
pub(crate) use crate::helpers::deadline::within;
pub(crate) use ringsmtpd_plugin_api::args::parse_timeout;

/// The answer of a server that `ask` awaits, or why there is none: its error, or no answer
/// within `dur` (the line names the timeout as `what`).
pub(crate) async fn answer_within<T>(
    svc: &dyn Services,
    dur: Duration,
    what: &str,
    ask: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    within(svc, dur, ask)
        .await
        .unwrap_or_else(|| Err(format!("no answer within {what} ({}s)", dur.as_secs())))
}

/// Refuses a secrets file that every local user may read (or write): `flat_auth_pw` holds
/// clear passwords, `ldap` may hold the search account's. The files are those the config
/// lines came from (an `$include`d file is checked too). A name that is not a file on disk
/// (an in-memory config in tests) is skipped.
pub(crate) fn check_private(lines: &[ConfigLine], what: &str) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mut seen: Vec<&str> = Vec::new();
    for line in lines {
        if seen.contains(&line.file.as_str()) {
            continue;
        }
        seen.push(&line.file);
        let Ok(meta) = std::fs::metadata(&line.file) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if mode & 0o006 != 0 {
            return Err(ConfigError {
                file: line.file.clone(),
                line: 0,
                reason: format!(
                    "holds {what} and is readable or writable by every user (mode {:04o}): \
                     chmod 600 (or 640 with the server's group) and restart",
                    mode & 0o7777
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsmtpd_plugin_api::testing::{block_on, FakeServices, TempDir};

    #[test]
    fn shown_user_names_are_safe_for_logs() {
        assert_eq!(Shown("a\r\nb").to_string(), "a??b");
        let long = "x".repeat(300);
        assert_eq!(Shown(&long).to_string().len(), 103);
    }

    #[test]
    fn within_prefers_a_ready_answer_and_times_out_otherwise() {
        // The fake timer fires at once: a ready future still wins, a pending one loses.
        let svc = FakeServices::new("mx.test");
        let d = Duration::from_secs(1);
        assert_eq!(block_on(within(&*svc, d, async { 7 })), Some(7));
        assert_eq!(
            block_on(within(&*svc, d, std::future::pending::<u8>())),
            None
        );
    }

    #[test]
    fn private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("auth-perm");
        let file = dir.path().join("flat_auth_pw");
        std::fs::write(&file, "a@b:c\n").unwrap();
        let line = ConfigLine {
            text: "a@b:c".into(),
            file: file.display().to_string(),
            line: 1,
        };
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(std::slice::from_ref(&line), "passwords").is_ok());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check_private(std::slice::from_ref(&line), "passwords").is_ok());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(std::slice::from_ref(&line), "passwords").unwrap_err();
        assert!(err.to_string().contains("mode 0644"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o602)).unwrap();
        assert!(check_private(&[line], "passwords").is_err());
    }
}
