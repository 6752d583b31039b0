//! # auth/auth_checkpassword — SMTP AUTH through a DJB checkpassword program
//!
//! ## Synopsis
//!
//! ```text
//! auth/auth_checkpassword checkpw <program> true <program> [timeout N] [loglevel N]
//! auth/auth_checkpassword checkpw /usr/local/vpopmail/bin/vchkpw true /bin/true
//! auth/auth_checkpassword                      (paths from config/smtpauth-checkpassword)
//! ```
//!
//! ## Description
//!
//! Runs a checkpassword program (<https://cr.yp.to/checkpwd/interface.html>: qmail's
//! `checkpassword`, vpopmail's `vchkpw`, `checkpassword-pam`, ...) for each PLAIN or LOGIN
//! attempt: the program reads `user\0password\0timestamp\0` from descriptor 3 and, if the
//! password is right, runs the `true` program, which exits 0. Exit codes:
//!
//! | exit | meaning | outcome |
//! |---|---|---|
//! | 0 | right password | `OK` (235) |
//! | 1 | wrong password or unknown user (the protocol does not tell which) | `DECLINED`: the next backend may know the user; 535 if none does |
//! | 111 | temporary error | `DENYSOFT` (454 4.7.0) |
//! | 2 (misuse), any other code, killed by a signal, cannot be started, over `timeout` | the check did not happen | `DENYSOFT` (454 4.7.0), logged at `error` |
//!
//! The program runs off the worker threads, on the slow helpers' own bounded pool
//! (`ringsmtpd_plugin_api::helper`), so a slow one never holds up other sessions, and a burst
//! of them waits there instead of taking the blocking pool's threads from Maildir fsyncs. It
//! is killed (SIGKILL) when it runs past `timeout`. It is started as `/bin/sh -c 'exec "$0" "$@" 3<&0 0</dev/null'
//! <program> <true>` with the data on a pipe: the shell moves the pipe to descriptor 3
//! (as qpsmtpd's `3<&0`) and then replaces itself with the program, so the program is the
//! process that is timed and killed. Its standard output is discarded; its standard error
//! goes where the server's goes. `TCPREMOTEIP` and `TCPLOCALIP` (ucspi-tcp's names, which
//! vchkpw logs) are set to the client's and our address.
//!
//! CRAM-MD5 cannot be checked this way (the program needs the clear password): the plugin
//! declines it and does not advertise it.
//!
//! Differences from qpsmtpd: no automatic `sudo` (qpsmtpd prepended `sudo -C4` when the
//! program was not setuid; configure `checkpw` as a wrapper script if you need it); a
//! temporary error or a crash is a 454, not a 535; a missing or non-executable program stops
//! the server at start instead of disabling the plugin with a log line; the timestamp field is
//! the current Unix time (qpsmtpd sent a constant).
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `checkpw <path>` | | the checkpassword program (absolute path, executable) |
//! | `true <path>` | | the program it runs on success (`/bin/true`) |
//! | `timeout N` | `10` | seconds (a decimal number above 0, at most 3600), before the program is killed and the attempt is a 454. Keep it below the core's `plugin_timeout`. |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! `checkpw` and `true` come together; without them the plugin reads the file below.
//!
//! ## Config files
//!
//! `smtpauth-checkpassword` (qpsmtpd's): one line, `<checkpw path> <true path>`, read only if
//! the arguments give no paths. A line that is not exactly two paths stops the server with
//! `file:line`, as does a path that is not an executable file.
//!
//! ## Hooks
//!
//! `auth` (PLAIN, LOGIN).
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! The checkpassword interface (D. J. Bernstein); RFC 4954 (SMTP AUTH).
//!
//! ## Security
//!
//! The password reaches the program on a pipe, never in its arguments or environment (which
//! other local users can see in `/proc`). The protocol allows at most 512 bytes of data: a
//! longer user name and password are refused (`DENY`) without running the program, as are
//! ones with a NUL (the field separator) and an empty password. Running the server as root
//! for the program's sake is not needed: make the program setuid or wrap it, as qpsmtpd's
//! POD explains. The program is trusted: whatever it exits with 0 for is authenticated.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringsmtpd_plugin_api::auth::AuthRequest;
use ringsmtpd_plugin_api::{
    helper, Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit,
    Step,
};

use super::{parse_timeout, password_to_pass_on, refuse, Shown, TEMPORARY};

const FILE: &str = "smtpauth-checkpassword";

/// The most data the checkpassword interface allows on descriptor 3.
const MAX_DATA: usize = 512;

/// Default for `timeout`: vchkpw answers in milliseconds; a PAM module that asks a remote
/// directory may take a few seconds; ten is long for a client waiting on its 235.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the blocking job looks whether the program has exited.
const POLL: Duration = Duration::from_millis(5);

/// The `auth/auth_checkpassword` plugin.
pub struct CheckPassword {
    common: Common,
    checkpw: PathBuf,
    true_prog: PathBuf,
    timeout: Duration,
}

/// Builds `auth/auth_checkpassword` from its config line (or `smtpauth-checkpassword`).
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut checkpw = None;
    let mut true_prog = None;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut it = rest.iter();
    while let Some(key) = it.next() {
        let value = match *key {
            "checkpw" | "true" | "timeout" => it
                .next()
                .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?,
            other => return Err(init.unknown(other)),
        };
        match *key {
            "checkpw" => checkpw = Some(*value),
            "true" => true_prog = Some(*value),
            _ => timeout = parse_timeout(value).map_err(|e| init.error(e))?,
        }
    }
    let (checkpw, true_prog) = match (checkpw, true_prog) {
        (Some(c), Some(t)) => {
            let check = |p: &str| executable(p).map_err(|e| init.error(e));
            (check(c)?, check(t)?)
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(init.error("give both 'checkpw <path>' and 'true <path>', or neither"))
        }
        (None, None) => {
            let line = init.config.first(FILE)?.ok_or_else(|| {
                init.error(format!(
                    "no checkpassword program: give 'checkpw <path> true <path>' or the \
                     config file {FILE}"
                ))
            })?;
            let words: Vec<&str> = line.text.split_whitespace().collect();
            let [c, t] = words[..] else {
                return Err(line.error("expected '<checkpw path> <true path>'"));
            };
            let check = |p: &str| executable(p).map_err(|e| line.error(e));
            (check(c)?, check(t)?)
        }
    };
    Ok(Box::new(CheckPassword {
        common,
        checkpw,
        true_prog,
        timeout,
    }))
}

/// An absolute path to an executable regular file.
fn executable(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(format!("'{path}' is not an absolute path"));
    }
    let meta = std::fs::metadata(p).map_err(|e| format!("'{path}': {e}"))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("'{path}' is not an executable file"));
    }
    Ok(p.to_path_buf())
}

/// How a run of the program ended.
#[derive(Debug, PartialEq, Eq)]
enum Run {
    Exited(ExitStatus),
    TimedOut,
    Failed(String),
}

/// Runs the program with `data` on descriptor 3, kills it past `timeout`. Blocking: runs on
/// the helpers' pool.
fn run_checkpw(
    checkpw: &Path,
    true_prog: &Path,
    data: &[u8],
    env: &[(&str, String)],
    timeout: Duration,
) -> Run {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"exec "$0" "$@" 3<&0 0</dev/null"#)
        .arg(checkpw)
        .arg(true_prog)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Run::Failed(format!("cannot start /bin/sh: {e}")),
    };
    let started = Instant::now();
    // At most 512 bytes: a pipe holds far more, so this write never waits for the reader. A
    // program that exits without reading gives EPIPE, which is fine: its exit code decides.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(data);
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Run::Exited(status),
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Run::TimedOut;
            }
            Ok(None) => std::thread::sleep(POLL),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Run::Failed(format!("cannot wait for the program: {e}"));
            }
        }
    }
}

impl Plugin for CheckPassword {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }

    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        let user = Shown(&req.user);
        let password = match password_to_pass_on(&self.common, cx, req) {
            Ok(password) => password,
            Err(outcome) => return Step::Ready(outcome),
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        if req.user.contains('\0') || password.contains('\0') {
            return Step::Ready(refuse(
                &self.common,
                cx,
                format_args!("fail: NUL in the user name or password of '{user}'"),
            ));
        }
        let len = req.user.len() + password.len() + stamp.len() + 3;
        if len > MAX_DATA {
            return Step::Ready(refuse(
                &self.common,
                cx,
                format_args!(
                "fail: user name and password of '{user}' are {len} bytes, over the protocol's \
                 {MAX_DATA}"
            ),
            ));
        }
        let mut data = Vec::with_capacity(len);
        for field in [req.user.as_str(), password, &stamp] {
            data.extend_from_slice(field.as_bytes());
            data.push(0);
        }
        let env = vec![
            ("TCPREMOTEIP", cx.conn.remote.ip().to_string()),
            ("TCPLOCALIP", cx.conn.local.ip().to_string()),
        ];
        let (checkpw, true_prog, timeout) =
            (self.checkpw.clone(), self.true_prog.clone(), self.timeout);
        Step::pending(async move {
            let svc = cx.svc.clone();
            let ran = helper(&*svc, move || {
                run_checkpw(&checkpw, &true_prog, &data, &env, timeout)
            })
            .await;
            let prog = self.checkpw.display();
            match ran {
                Some(Run::Exited(status)) => match status.code() {
                    Some(0) => {
                        self.common.log(
                            cx,
                            Level::Info,
                            format_args!("pass: '{user}' with {}", req.mechanism),
                        );
                        Outcome::Ok(None)
                    }
                    Some(1) => {
                        self.common.log(
                            cx,
                            Level::Info,
                            format_args!("fail: {prog} refused '{user}' (exit 1)"),
                        );
                        Outcome::Declined
                    }
                    Some(111) => {
                        self.common.log(
                            cx,
                            Level::Warn,
                            format_args!("temporary failure: {prog} exited 111 for '{user}'"),
                        );
                        Outcome::deny_soft(TEMPORARY)
                    }
                    code => {
                        let how = code.map_or_else(
                            || "was killed by a signal".to_string(),
                            |c| format!("exited {c}"),
                        );
                        self.common.log(
                            cx,
                            Level::Error,
                            format_args!("temporary failure: {prog} {how} for '{user}'"),
                        );
                        Outcome::deny_soft(TEMPORARY)
                    }
                },
                Some(Run::TimedOut) => {
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!(
                            "temporary failure: {prog} ran past {}s for '{user}' and was killed",
                            self.timeout.as_secs()
                        ),
                    );
                    Outcome::deny_soft(TEMPORARY)
                }
                Some(Run::Failed(why)) => {
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!("temporary failure: {prog}: {why}"),
                    );
                    Outcome::deny_soft(TEMPORARY)
                }
                None => {
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!("temporary failure: the job running {prog} panicked"),
                    );
                    Outcome::deny_soft(TEMPORARY)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::INVALID;
    use ringsmtpd_plugin_api::auth::Mechanism;
    use ringsmtpd_plugin_api::testing::{
        auth_attempt, auth_run, build, build_err, cram_md5_attempt, cx, executable,
        password_attempt, run, TempDir,
    };

    /// A temp dir with executable scripts.
    struct Scripts(TempDir);

    impl Scripts {
        fn new() -> Scripts {
            Scripts(TempDir::new("checkpw"))
        }

        fn script(&self, name: &str, body: &str) -> String {
            let path = self.0.path().join(name);
            executable(&path, &format!("#!/bin/bash\n{body}\n"));
            path.display().to_string()
        }

        /// A checkpassword (bash: `read -d ''` reads the NUL-terminated fields) that accepts
        /// user `good@example.com` with `right pw`, exits 111 for
        /// user `tempfail`, 2 for `misuse`, and writes what it read to `<dir>/seen`.
        fn checkpw(&self) -> String {
            let seen = self.0.path().join("seen");
            self.script(
                "checkpw",
                &format!(
                    r#"IFS= read -r -d '' user <&3 || exit 2
IFS= read -r -d '' pass <&3 || exit 2
IFS= read -r -d '' stamp <&3 || exit 2
printf '%s|%s|%s|%s|%s\n' "$user" "$pass" "$stamp" "$TCPREMOTEIP" "$*" > {seen}
case "$user" in tempfail) exit 111;; misuse) exit 2;; esac
[ "$user" = good@example.com ] && [ "$pass" = 'right pw' ] && exec "$@"
exit 1"#,
                    seen = seen.display()
                ),
            )
        }

        fn seen(&self) -> String {
            std::fs::read_to_string(self.0.path().join("seen")).unwrap_or_default()
        }
    }

    fn attempt(p: &dyn Plugin, mechanism: Mechanism, user: &str, pw: &str) -> Outcome {
        auth_attempt(p, mechanism, user, pw).0
    }

    /// The plugin with `checkpw` and `true` programs.
    fn with(checkpw: &str, true_prog: &str, files: &[(&str, &str)]) -> Box<dyn Plugin> {
        let line = format!("auth/auth_checkpassword checkpw {checkpw} true {true_prog}");
        build(new, &line, files).unwrap()
    }

    fn plugin(s: &Scripts) -> Box<dyn Plugin> {
        with(&s.checkpw(), "/bin/true", &[])
    }

    #[test]
    fn right_password_runs_true_and_passes() {
        let s = Scripts::new();
        let p = plugin(&s);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com", "right pw"),
            Outcome::Ok(None)
        );
        let seen = s.seen();
        let fields: Vec<&str> = seen.trim_end().split('|').collect();
        assert_eq!(fields[0], "good@example.com");
        assert_eq!(fields[1], "right pw");
        assert!(
            fields[2].parse::<u64>().unwrap() > 1_600_000_000,
            "timestamp {seen}"
        );
        assert_eq!(fields[3], "192.0.2.1");
        assert_eq!(fields[4], "/bin/true", "the true program is the argument");
        assert_eq!(
            attempt(&*p, Mechanism::Login, "good@example.com", "right pw"),
            Outcome::Ok(None)
        );
    }

    #[test]
    fn wrong_password_declines_and_temporary_errors_are_soft() {
        let s = Scripts::new();
        let p = plugin(&s);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com", "wrong"),
            Outcome::Declined
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "tempfail", "x"),
            Outcome::deny_soft(TEMPORARY)
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "misuse", "x"),
            Outcome::deny_soft(TEMPORARY)
        );
    }

    #[test]
    fn a_failing_true_program_is_no_acceptance() {
        let s = Scripts::new();
        let p = with(&s.checkpw(), "/bin/false", &[]);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com", "right pw"),
            Outcome::Declined
        );
    }

    #[test]
    fn program_past_the_timeout_is_killed() {
        let s = Scripts::new();
        let pidfile = s.0.path().join("pid");
        // The program would run for 30 s: only a kill can end it within this test.
        let slow = s.script(
            "slow",
            &format!("echo $$ > {}; exec sleep 30", pidfile.display()),
        );
        let line = format!("auth/auth_checkpassword checkpw {slow} true /bin/true timeout 1");
        let p = build(new, &line, &[]).unwrap();
        let started = Instant::now();
        let (out, logs) = auth_attempt(&*p, Mechanism::Plain, "good@example.com", "right pw");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "answered before its timeout"
        );
        assert!(logs.iter().any(|l| l.contains("ran past 1s")));
        // Killed, not left to run: its process disappears (a deadline bounds a hang only).
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        let proc_dir = std::path::Path::new("/proc").join(&pid);
        let deadline = Instant::now() + Duration::from_secs(20);
        while proc_dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !proc_dir.exists(),
            "the program kept running after the timeout"
        );
    }

    #[test]
    fn crashing_program_is_a_temporary_failure() {
        let s = Scripts::new();
        let crash = s.script("crash", "kill -9 $$");
        let p = with(&crash, "/bin/true", &[]);
        let (out, logs) = auth_attempt(&*p, Mechanism::Plain, "a", "b");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(logs.iter().any(|l| l.contains("was killed by a signal")));
    }

    #[test]
    fn refused_without_running_the_program() {
        let s = Scripts::new();
        let p = plugin(&s);
        let long = "x".repeat(500);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "a", &long),
            Outcome::deny(INVALID)
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "a", ""),
            Outcome::deny(INVALID)
        );
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "a\0b", "c"),
            Outcome::deny(INVALID)
        );
        assert_eq!(attempt(&*p, Mechanism::Plain, "", "c"), Outcome::Declined);
        assert_eq!(s.seen(), "", "the program ran");
        // CRAM-MD5 cannot be checked: declined, and not advertised.
        assert_eq!(p.auth_mechanisms(), &[Mechanism::Plain, Mechanism::Login]);
        let req = cram_md5_attempt("good@example.com", "<1@x>", "0");
        assert_eq!(auth_run(&*p, &req).0, Outcome::Declined);
    }

    #[test]
    fn password_stays_out_of_logs() {
        let s = Scripts::new();
        let p = plugin(&s);
        let (mut c, svc) = cx("192.0.2.1:1");
        let req = password_attempt(Mechanism::Plain, "good@example.com", "wrong-secret");
        assert_eq!(run(p.auth(&mut c, &req)), Outcome::Declined);
        assert!(svc.logged("refused 'good@example.com' (exit 1)"));
        assert!(!svc.logged("wrong-secret"));
    }

    #[test]
    fn config_file_form() {
        let s = Scripts::new();
        let checkpw = s.checkpw();
        let line = format!("{checkpw} /bin/true\n");
        let p = build(new, "auth/auth_checkpassword", &[(FILE, &line)]).unwrap();
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com", "right pw"),
            Outcome::Ok(None)
        );
        // Arguments win over the file (which is then not even read).
        let p = with(&checkpw, "/bin/false", &[(FILE, "garbage")]);
        assert_eq!(
            attempt(&*p, Mechanism::Plain, "good@example.com", "right pw"),
            Outcome::Declined
        );
        let plain = s.0.path().join("not-executable");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_executable = format!("{} /bin/true\n", plain.display());
        let a_directory = format!("/bin/true {}\n", s.0.path().display());
        for (text, why) in [
            ("# c\n/bin/true\n", "expected '<checkpw path> <true path>'"),
            ("/bin/true /bin/true /bin/true\n", "expected"),
            ("/no/such/checkpw /bin/true\n", "/no/such/checkpw"),
            ("relative/checkpw /bin/true\n", "not an absolute path"),
            (not_executable.as_str(), "not an executable file"),
            (a_directory.as_str(), "not an executable file"),
        ] {
            let err = build_err(new, "auth/auth_checkpassword", &[(FILE, text)]);
            assert_eq!(err.file, FILE, "{text:?}: {err}");
            assert_eq!(
                err.line,
                text.lines().position(|l| !l.starts_with('#')).unwrap() as u32 + 1
            );
            assert!(err.reason.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn argument_errors() {
        let no_config = build_err(new, "auth/auth_checkpassword", &[]);
        assert!(
            no_config.to_string().contains("no checkpassword program"),
            "{no_config}"
        );
        for (args, why) in [
            ("checkpw /bin/true", "both"),
            ("true /bin/true", "both"),
            ("checkpw", "needs a value"),
            ("checkpw /bin/true true /bin/true timeout 0", "not '0'"),
            ("checkpw /bin/true true /bin/true timeout", "needs a value"),
            ("checkpw /nope true /bin/true", "/nope"),
            (
                "checkpw /bin/true true /bin/true sudo",
                "unknown argument 'sudo'",
            ),
        ] {
            let line = format!("auth/auth_checkpassword {args}");
            let err = build_err(new, &line, &[]);
            assert_eq!(err.file, "plugins", "{args:?}");
            assert!(err.reason.contains(why), "{args:?}: {err}");
        }
        let line =
            "auth/auth_checkpassword true /bin/true checkpw /bin/true timeout 300 loglevel 6";
        assert!(build(new, line, &[]).is_ok());
    }
}
