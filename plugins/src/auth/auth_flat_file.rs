//! # auth/auth_flat_file — SMTP AUTH against a file of clear passwords
//!
//! ## Synopsis
//!
//! ```text
//! auth/auth_flat_file [loglevel N]
//! ```
//!
//! ## Description
//!
//! Checks the user name and password of an SMTP AUTH attempt against `flat_auth_pw`, one
//! `user@domain:password` per line. It supports PLAIN, LOGIN **and CRAM-MD5** (RFC 2195): the
//! file holds the clear password, which is what CRAM-MD5 needs to recompute the client's HMAC.
//! Passwords are compared in constant time.
//!
//! User names follow qpsmtpd: the client must give the whole address, `user@domain`; it is
//! compared without regard to case (`Good@Example.COM` is `good@example.com`). A name without
//! `@`, or one not in the file, is `DECLINED` (the next auth plugin may know it; if none does,
//! the client gets 535). A listed user with a wrong password is `DENY` (535, later backends
//! are not asked). An empty password never matches.
//!
//! Differences from qpsmtpd: entries in the file match in any case (qpsmtpd lowercased the
//! client's name but not the file's, so an entry with a capital never matched); the file is
//! checked when the server starts, not searched with a regular expression built from the
//! client's name at each attempt; a world-readable file stops the server (below).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect: a failed AUTH is always 535. |
//!
//! ## Config files
//!
//! `flat_auth_pw`, read when the plugin is built (start and reload). Every line is
//! `user@domain:password`: the first `:` ends the name, so the password may contain `:`;
//! leading and trailing blanks of the line are dropped (qpsmtpd's config reader does the same),
//! blanks inside are kept. These stop the server with `file:line`: a line without `:`, a name
//! that is not exactly `local@domain` (no blanks, no second `@`), an empty password, a name
//! listed twice. A missing file is an error too: this plugin without users is a mistake.
//!
//! ```text
//! # user@domain:password
//! good@example.com:good_pass
//! ```
//!
//! ## Hooks
//!
//! `auth` (PLAIN, LOGIN, CRAM-MD5).
//!
//! ## Notes
//!
//! None read or written; the core records the authenticated user.
//!
//! ## Standards
//!
//! RFC 4954 (SMTP AUTH), RFC 4616 (PLAIN), RFC 2195 (CRAM-MD5).
//!
//! ## Security
//!
//! **The file holds clear passwords.** It must be readable by the server's user only: mode
//! `0600` (or `0640` owned by root with the server's group). The plugin refuses to start if
//! the file (or a file it `$include`s) can be read or written by every user. Use passwords
//! made for this purpose only: whoever reads the file has them. CRAM-MD5 keeps the password
//! off the wire but needs it in clear here; over TLS, PLAIN is as safe on the wire.

use std::collections::HashMap;

use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use super::{check_private, refuse, Shown};

const FILE: &str = "flat_auth_pw";

/// The `auth/auth_flat_file` plugin.
pub struct FlatFile {
    common: Common,
    /// Lowercased `user@domain` -> clear password.
    users: HashMap<String, String>,
}

/// Builds `auth/auth_flat_file` from its config line and reads `flat_auth_pw`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let common = init.common_only(CommonArgs::DEFAULT)?;
    let lines = init.config.lines(FILE)?.ok_or_else(|| {
        init.error(format!(
            "config file {FILE} not found: it lists the users (user@domain:password)"
        ))
    })?;
    check_private(&lines, "clear passwords")?;
    let mut users: HashMap<String, String> = HashMap::with_capacity(lines.len());
    let mut first_seen: HashMap<String, u32> = HashMap::new();
    for line in &lines {
        let (user, password) = line
            .text
            .split_once(':')
            .ok_or_else(|| line.error("expected user@domain:password (no ':' on this line)"))?;
        check_user(user).map_err(|why| line.error(format!("user '{user}': {why}")))?;
        if password.is_empty() {
            return Err(line.error(format!("user '{user}' has an empty password")));
        }
        let key = user.to_lowercase();
        if let Some(first) = first_seen.get(&key) {
            return Err(line.error(format!(
                "user '{user}' is listed twice (first at line {first})"
            )));
        }
        first_seen.insert(key.clone(), line.line);
        users.insert(key, password.to_string());
    }
    Ok(Box::new(FlatFile { common, users }))
}

/// A file entry's name: exactly one `@`, something on both sides, no blanks or controls.
fn check_user(user: &str) -> Result<(), &'static str> {
    let (local, domain) = user
        .split_once('@')
        .ok_or("must be a full address, user@domain (qpsmtpd's auth_flat_file needs the domain)")?;
    if local.is_empty() || domain.is_empty() {
        return Err("must be user@domain, with both parts");
    }
    if domain.contains('@') {
        return Err("has more than one '@'");
    }
    if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a blank or control character");
    }
    Ok(())
}

impl Plugin for FlatFile {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }

    fn auth_mechanisms(&self) -> &'static [Mechanism] {
        &Mechanism::ALL
    }

    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        let user = Shown(&req.user);
        if !req.user.contains('@') {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip: '{user}' has no domain (names are user@domain)"),
            );
            return Step::DECLINED;
        }
        let Some(stored) = self.users.get(&req.user.to_lowercase()) else {
            self.common
                .log(cx, Level::Info, format_args!("skip: no such user '{user}'"));
            return Step::DECLINED;
        };
        if req.matches_password(stored) {
            self.common.log(
                cx,
                Level::Info,
                format_args!("pass: '{user}' with {}", req.mechanism),
            );
            Step::Ready(Outcome::Ok(None))
        } else {
            Step::Ready(refuse(
                &self.common,
                cx,
                format_args!("fail: wrong password for '{user}' with {}", req.mechanism),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::INVALID;
    use ringsmtpd_plugin_api::auth::hmac_md5;
    use ringsmtpd_plugin_api::testing::{
        auth_attempt, auth_run, build, build_err, cram_md5_attempt, TempDir,
    };

    const PW: &str = "# users\n\
                      good@example.com:good_pass\n\
                      \n\
                      Mixed@Example.ORG:p:with:colons and blanks\n";

    fn plugin(files: &[(&str, &str)]) -> Box<dyn Plugin> {
        build(new, "auth/auth_flat_file", files).unwrap()
    }

    fn attempt(p: &dyn Plugin, mechanism: Mechanism, user: &str, password: &str) -> Outcome {
        auth_attempt(p, mechanism, user, password).0
    }

    fn cram(p: &dyn Plugin, user: &str, password: &str) -> Outcome {
        let challenge = "<1234.5678@mx.example.test>";
        let digest: String = hmac_md5(password.as_bytes(), challenge.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        auth_run(p, &cram_md5_attempt(user, challenge, &digest)).0
    }

    #[test]
    fn right_and_wrong_passwords_with_plain_and_login() {
        let p = plugin(&[(FILE, PW)]);
        for m in [Mechanism::Plain, Mechanism::Login] {
            assert_eq!(
                attempt(&*p, m, "good@example.com", "good_pass"),
                Outcome::Ok(None)
            );
            assert_eq!(
                attempt(&*p, m, "good@example.com", "bad_pass"),
                Outcome::deny(INVALID)
            );
            assert_eq!(
                attempt(&*p, m, "good@example.com", "good_pass "),
                Outcome::deny(INVALID)
            );
            assert_eq!(
                attempt(&*p, m, "good@example.com", ""),
                Outcome::deny(INVALID)
            );
        }
    }

    #[test]
    fn cram_md5_through_the_file() {
        let p = plugin(&[(FILE, PW)]);
        assert_eq!(p.auth_mechanisms(), &Mechanism::ALL);
        assert_eq!(
            cram(&*p, "good@example.com", "good_pass"),
            Outcome::Ok(None)
        );
        assert_eq!(
            cram(&*p, "good@example.com", "good_pas"),
            Outcome::deny(INVALID)
        );
        assert_eq!(
            cram(&*p, "nobody@example.com", "good_pass"),
            Outcome::Declined
        );
    }

    #[test]
    fn names_are_full_addresses_in_any_case() {
        let p = plugin(&[(FILE, PW)]);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "GOOD@example.COM", "good_pass"),
            Outcome::Ok(None)
        );
        // An entry written with capitals matches too; the password keeps its case, ':' and blanks.
        assert_eq!(
            attempt(
                &*p,
                Mechanism::Plain,
                "mixed@example.org",
                "p:with:colons and blanks"
            ),
            Outcome::Ok(None)
        );
        assert_eq!(
            attempt(
                &*p,
                Mechanism::Plain,
                "mixed@example.org",
                "P:with:colons and blanks"
            ),
            Outcome::deny(INVALID)
        );
        // No domain, unknown user, another domain: not ours, the next backend may know them.
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good", "good_pass"),
            Outcome::Declined
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.net", "good_pass"),
            Outcome::Declined
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com@x", "good_pass"),
            Outcome::Declined
        );
        assert_eq!(
            attempt(&*p, Mechanism::Login, "none@example.com", "x"),
            Outcome::Declined
        );
    }

    #[test]
    fn logs_never_show_the_password() {
        let p = plugin(&[(FILE, PW)]);
        let (out, logs) = auth_attempt(&*p, Mechanism::Plain, "good@example.com", "s3cr3t-attempt");
        assert_eq!(out, Outcome::deny(INVALID));
        let logged = |needle: &str| logs.iter().any(|l| l.contains(needle));
        assert!(logged(
            "fail: wrong password for 'good@example.com' with PLAIN"
        ));
        assert!(!logged("s3cr3t"));
        assert!(!logged("good_pass"));
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let cases: &[(&str, u32, &str)] = &[
            ("good@example.com:x\nno_colon_here\n", 2, "no ':'"),
            ("# c\nnodomain:pw\n", 2, "full address"),
            ("@example.com:pw\n", 1, "both parts"),
            ("user@:pw\n", 1, "both parts"),
            ("a@b@c:pw\n", 1, "more than one '@'"),
            ("a b@c:pw\n", 1, "blank"),
            ("a@b:\n", 1, "empty password"),
            ("a@b:x\n\nA@B:y\n", 3, "listed twice (first at line 1)"),
        ];
        for (text, line, why) in cases {
            let err = build_err(new, "auth/auth_flat_file", &[(FILE, text)]);
            assert_eq!(
                (err.file.as_str(), err.line),
                (FILE, *line),
                "{text:?}: {err}"
            );
            assert!(err.reason.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn missing_file_and_arguments() {
        let err = build_err(new, "auth/auth_flat_file", &[]);
        assert!(err.to_string().contains("flat_auth_pw not found"), "{err}");
        let err = build_err(new, "auth/auth_flat_file bogus", &[(FILE, PW)]);
        assert!(
            err.to_string().contains("unknown argument 'bogus'"),
            "{err}"
        );
        assert!(build(new, "auth/auth_flat_file loglevel 7", &[(FILE, PW)]).is_ok());
        assert!(build(new, "auth/auth_flat_file reject 0", &[(FILE, PW)]).is_ok());
        build_err(new, "auth/auth_flat_file loglevel", &[(FILE, PW)]);
        // An empty file is allowed: nobody can authenticate (every name is declined).
        let p = plugin(&[(FILE, "# nobody yet\n")]);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "a@b", "c"),
            Outcome::Declined
        );
    }

    #[test]
    fn loglevel_silences_the_plugin() {
        let p = build(new, "auth/auth_flat_file loglevel 3", &[(FILE, PW)]).unwrap();
        let (out, logs) = auth_attempt(&*p, Mechanism::Plain, "good@example.com", "good_pass");
        assert_eq!(out, Outcome::Ok(None));
        assert!(logs.is_empty(), "info lines dropped at loglevel 3");
    }

    #[test]
    fn world_readable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("flat");
        let path = dir.path().join(FILE);
        std::fs::write(&path, "a@b:c\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        // A config source that names the file by its path, as the server's config reader does.
        struct OnDisk(std::path::PathBuf);
        impl ringsmtpd_plugin_api::ConfigSource for OnDisk {
            fn lines(
                &self,
                _name: &str,
            ) -> Result<Option<Vec<ringsmtpd_plugin_api::ConfigLine>>, ConfigError> {
                Ok(Some(vec![ringsmtpd_plugin_api::ConfigLine {
                    text: "a@b:c".into(),
                    file: self.0.display().to_string(),
                    line: 1,
                }]))
            }
        }
        let config = OnDisk(path.clone());
        let origin = ringsmtpd_plugin_api::testing::origin("auth/auth_flat_file");
        let init = PluginInit {
            name: "auth/auth_flat_file",
            args: &[],
            config: &config,
            origin: &origin,
        };
        let err = new(&init).err().expect("world-readable file accepted");
        assert!(
            err.to_string()
                .contains("readable or writable by every user"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(new(&init).is_ok());
    }
}
