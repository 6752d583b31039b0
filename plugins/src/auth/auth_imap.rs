//! # auth/auth_imap — SMTP AUTH by logging in to an IMAP server
//!
//! ## Synopsis
//!
//! ```text
//! auth/auth_imap <host> [<port>] [timeout N] [loglevel N]
//! auth/auth_imap 127.0.0.1 143
//! ```
//!
//! ## Description
//!
//! For each PLAIN or LOGIN attempt: connect to the IMAP server, read its greeting, send
//! `A1 LOGIN <user> <password>` (RFC 3501 §6.2.3) and read until the tagged answer, then
//! `A2 LOGOUT`. The IMAP server decides; useful where Dovecot or Cyrus already knows the
//! users.
//!
//! | the server answers | outcome |
//! |---|---|
//! | `A1 OK` | `OK` (235) |
//! | `A1 NO` (wrong password, unknown user; also `[AUTHENTICATIONFAILED]`, RFC 5530) | `DENY` (535), as qpsmtpd |
//! | `A1 NO [UNAVAILABLE]` (RFC 5530: the backend is down), `A1 BAD`, `* BYE`, a greeting other than `* OK`, `LOGINDISABLED` in the greeting's capabilities (the server wants TLS first) | `DENYSOFT` (454 4.7.0), logged |
//! | cannot resolve or connect, timeout, connection closed, a line over 8 KiB | `DENYSOFT` (454 4.7.0), logged at `error`: never an acceptance |
//! | empty password; CR, LF or NUL in the name or password | `DENY` without connecting |
//!
//! The user name and password go as RFC 3501 quoted strings (`"` and `\` escaped with `\`).
//! A quoted string carries 7-bit characters only, so a name or password with other characters
//! (UTF-8) goes as a synchronizing literal (`{n}` CRLF, wait for the server's `+`, then the
//! bytes): no character can end the string early or start a command. CR, LF and NUL cannot be
//! sent either way (a literal could carry CR and LF, but no real password has them and IMAP
//! servers reject them); they are refused.
//!
//! **No TLS to the IMAP server**: neither IMAPS nor STARTTLS. The password crosses the
//! connection in the clear, so point this plugin at the same host (`127.0.0.1`) or a network
//! you trust; a server that requires TLS for LOGIN (it says `LOGINDISABLED`) gives 454 and an
//! error log line. (qpsmtpd's plugin could speak TLS through Net::IMAP::Simple::SSL.)
//!
//! Differences from qpsmtpd: the host is required (as in qpsmtpd's code, not its POD); a
//! server that cannot be reached is a 454, not a 535; extra arguments are errors, not a
//! warning; `timeout` is new.
//!
//! ## Arguments
//!
//! | argument | default | meaning |
//! |---|---|---|
//! | `<host>` | required | address or host name (resolved at each attempt through the server's DNS) |
//! | `<port>` | `143` | |
//! | `timeout N` | `10` | seconds (a decimal number above 0, at most 3600), for the whole exchange. Keep it below the core's `plugin_timeout`. |
//! | `loglevel` | | qpsmtpd's per-plugin log level. `reject`/`reject_type` are accepted and have no effect. |
//!
//! ## Config files
//!
//! None.
//!
//! ## Hooks
//!
//! `auth` (PLAIN, LOGIN; CRAM-MD5 is declined and not advertised).
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 3501 (IMAP4rev1: greeting, LOGIN, quoted strings, literals, LOGINDISABLED), RFC 5530
//! (response codes), RFC 4954 (SMTP AUTH).
//!
//! ## Security
//!
//! See "No TLS" above. The server's lines are read with a length limit and never copied into
//! a reply; they reach the log with control characters replaced.

use std::time::Duration;

use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism};
use ringsmtpd_plugin_api::net::{read_line, Stream};
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, Cx, Hook, HookSet, Level, Outcome, Plugin, PluginInit, Step,
};

use super::{
    answer_within, parse_port, parse_timeout, password_to_pass_on, refuse, Host, Shown, TEMPORARY,
};

/// The longest server line we read: a CAPABILITY line of a big server is a few hundred bytes.
const MAX_LINE: usize = 8 * 1024;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `auth/auth_imap` plugin.
pub struct Imap {
    common: Common,
    host: Host,
    port: u16,
    timeout: Duration,
}

/// Builds `auth/auth_imap` from its config line.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut positional = Vec::new();
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        if *arg == "timeout" {
            let v = it
                .next()
                .ok_or_else(|| init.error("argument 'timeout' needs a value"))?;
            timeout = parse_timeout(v).map_err(|e| init.error(e))?;
        } else {
            positional.push(*arg);
        }
    }
    let (host, port) = match positional.as_slice() {
        [] => return Err(init.error("the IMAP server is required: auth/auth_imap <host> [<port>]")),
        [host] => (*host, None),
        [host, port] => (*host, Some(*port)),
        [_, _, extra, ..] => return Err(init.unknown(extra)),
    };
    let host = Host::parse(host).map_err(|e| init.error(e))?;
    let port = port
        .map(parse_port)
        .transpose()
        .map_err(|e| init.error(e))?
        .unwrap_or(143);
    Ok(Box::new(Imap {
        common,
        host,
        port,
        timeout,
    }))
}

/// How an argument of LOGIN goes on the wire.
#[derive(Debug, PartialEq, Eq)]
enum Arg {
    /// A quoted string, quotes included.
    Quoted(String),
    /// A synchronizing literal: these bytes after `{n}` CRLF and the server's `+`.
    Literal(Vec<u8>),
}

/// RFC 3501 §4.3, §9 `astring`: a quoted string when every character is 7-bit TEXT-CHAR, a
/// literal otherwise; `None` for CR, LF, NUL, which we never send.
fn encode_arg(s: &str) -> Option<Arg> {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return None;
    }
    if !s.is_ascii() {
        return Some(Arg::Literal(s.as_bytes().to_vec()));
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Some(Arg::Quoted(q))
}

/// What the IMAP server said about one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// `NO`: the server's text.
    Refused(String),
    /// The check did not happen; why.
    Unavailable(String),
}

/// A server line for a log: no line end, control characters as `?`, at most 200 characters.
fn shown_line(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .trim_end_matches(['\r', '\n'])
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// One connection: the stream and what was read past the last line.
struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Conn {
    /// The next line from the server, with its line end.
    async fn line(&mut self) -> Result<Vec<u8>, String> {
        let end = read_line(&mut *self.stream, &mut self.buf, 0, MAX_LINE)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "the server closed the connection".to_string(),
                _ => format!("read: {e}"),
            })?;
        Ok(self.buf.drain(..end).collect())
    }

    async fn send(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .0
            .map_err(|e| format!("write: {e}"))
    }
}

/// True if `line` (after `* ` or a tag) starts with `word` as a whole word, any case.
fn starts_with_word(line: &[u8], word: &str) -> bool {
    line.len() >= word.len()
        && line[..word.len()].eq_ignore_ascii_case(word.as_bytes())
        && line
            .get(word.len())
            .is_none_or(|b| matches!(b, b' ' | b'\r' | b'\n'))
}

/// True if the line carries the capability `cap` (in `[CAPABILITY ...]` or a `* CAPABILITY`).
fn has_capability(line: &[u8], cap: &str) -> bool {
    line.split(|b| matches!(b, b' ' | b'[' | b']' | b'\r' | b'\n'))
        .any(|w| w.eq_ignore_ascii_case(cap.as_bytes()))
}

impl Imap {
    /// The verdict of the IMAP server; `Err` if it cannot give one.
    async fn check(&self, cx: &Cx, user: &Arg, password: &Arg) -> Result<Verdict, String> {
        let to = self
            .host
            .connect(&*cx.svc, self.port, self.timeout, "the IMAP host");
        let (addr, stream) = to.await?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let verdict = self
            .login(&mut conn, user, password)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        // Polite; the answer does not matter.
        let _ = conn.send(b"A2 LOGOUT\r\n".to_vec()).await;
        Ok(verdict)
    }

    async fn login(&self, conn: &mut Conn, user: &Arg, password: &Arg) -> Result<Verdict, String> {
        let greeting = conn.line().await?;
        let Some(rest) = greeting.strip_prefix(b"* ") else {
            return Err(format!("not an IMAP greeting: {}", shown_line(&greeting)));
        };
        if !starts_with_word(rest, "OK") {
            return Err(format!("greeting: {}", shown_line(&greeting)));
        }
        if has_capability(rest, "LOGINDISABLED") {
            return Err(
                "the server refuses LOGIN without TLS (LOGINDISABLED), which this \
                        plugin does not speak"
                    .into(),
            );
        }
        // Send `A1 LOGIN`, stopping before each literal's bytes until the server says `+`.
        let mut pending = b"A1 LOGIN".to_vec();
        for arg in [user, password] {
            pending.push(b' ');
            match arg {
                Arg::Quoted(q) => pending.extend_from_slice(q.as_bytes()),
                Arg::Literal(bytes) => {
                    pending.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                    conn.send(std::mem::take(&mut pending)).await?;
                    let go = self.tagged_or_continue(conn).await?;
                    if let Some(verdict) = go {
                        return Ok(verdict);
                    }
                    pending.extend_from_slice(bytes);
                }
            }
        }
        pending.extend_from_slice(b"\r\n");
        conn.send(pending).await?;
        loop {
            let line = conn.line().await?;
            if let Some(rest) = line.strip_prefix(b"A1 ") {
                return Ok(tagged(rest, &line));
            }
            if let Some(rest) = line.strip_prefix(b"* ") {
                if starts_with_word(rest, "BYE") {
                    return Err(format!("the server says {}", shown_line(&line)));
                }
                continue; // CAPABILITY and other untagged data
            }
            return Err(format!("unexpected line: {}", shown_line(&line)));
        }
    }

    /// After a literal's `{n}`: `Ok(None)` on the server's `+` (send the bytes), the verdict if
    /// the server answered the command instead (a `NO`/`BAD` refusing the literal).
    async fn tagged_or_continue(&self, conn: &mut Conn) -> Result<Option<Verdict>, String> {
        loop {
            let line = conn.line().await?;
            if line.starts_with(b"+") {
                return Ok(None);
            }
            if let Some(rest) = line.strip_prefix(b"A1 ") {
                return Ok(Some(tagged(rest, &line)));
            }
            if line
                .strip_prefix(b"* ")
                .is_some_and(|r| starts_with_word(r, "BYE"))
            {
                return Err(format!("the server says {}", shown_line(&line)));
            }
        }
    }
}

/// The verdict of the tagged answer `rest` (after `A1 `).
fn tagged(rest: &[u8], line: &[u8]) -> Verdict {
    if starts_with_word(rest, "OK") {
        Verdict::Pass
    } else if starts_with_word(rest, "NO") {
        if has_capability(rest, "UNAVAILABLE") {
            Verdict::Unavailable(format!("the server says {}", shown_line(line)))
        } else {
            Verdict::Refused(shown_line(line))
        }
    } else {
        Verdict::Unavailable(format!("the server says {}", shown_line(line)))
    }
}

impl Plugin for Imap {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }

    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        let user = Shown(&req.user);
        let password = match password_to_pass_on(&self.common, cx, req) {
            Ok(password) => password,
            Err(outcome) => return Step::Ready(outcome),
        };
        let (Some(user_arg), Some(password_arg)) = (encode_arg(&req.user), encode_arg(password))
        else {
            return Step::Ready(refuse(
                &self.common,
                cx,
                format_args!("fail: CR, LF or NUL in the name or password of '{user}'"),
            ));
        };
        Step::pending(async move {
            let svc = cx.svc.clone();
            let check = self.check(cx, &user_arg, &password_arg);
            let verdict = answer_within(&*svc, self.timeout, "the timeout", check)
                .await
                .unwrap_or_else(Verdict::Unavailable);
            match verdict {
                Verdict::Pass => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("pass: '{user}' with {}", req.mechanism),
                    );
                    Outcome::Ok(None)
                }
                Verdict::Refused(line) => {
                    refuse(&self.common, cx, format_args!("fail: '{user}': {line}"))
                }
                Verdict::Unavailable(why) => {
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!(
                            "temporary failure for '{user}' at {}:{}: {why}",
                            self.host, self.port
                        ),
                    );
                    Outcome::deny_soft(TEMPORARY)
                }
            }
        })
    }

    fn auth_mechanisms(&self) -> &'static [Mechanism] {
        &[Mechanism::Plain, Mechanism::Login]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::INVALID;
    use ringsmtpd_plugin_api::net::Endpoint;
    use ringsmtpd_plugin_api::testing::{
        auth_attempt, auth_run, build, build_err, cram_md5_attempt, cx, password_attempt, run,
        FakePeer,
    };
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    /// A scripted IMAP server: `greeting` is sent first; then for each line read,
    /// `answer(line)` gives what to write back (the connection is closed after an answer that
    /// does not end with a line end). Every line read is recorded.
    fn fake_imap(greeting: &'static str, answer: Answer) -> FakePeer<String> {
        FakePeer::start(move |mut conn: TcpStream, seen: &Mutex<Vec<String>>| {
            if conn.write_all(greeting.as_bytes()).is_err() {
                return;
            }
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // Synchronizing literals: say `+`, then read their bytes and the rest of the
                // line into the line.
                while let Some(n) = literal_len(&line) {
                    let mut bytes = vec![0; n];
                    let ok = conn.write_all(b"+ go ahead\r\n").is_ok()
                        && reader.read_exact(&mut bytes).is_ok();
                    line.extend_from_slice(&bytes);
                    if !ok || reader.read_until(b'\n', &mut line).is_err() {
                        return;
                    }
                }
                let out = answer(&line);
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&line).into_owned());
                // An answer without a line end is the last thing said.
                if conn.write_all(&out).is_err() || !out.ends_with(b"\n") {
                    return;
                }
            }
        })
    }

    type Answer = fn(&[u8]) -> Vec<u8>;

    /// `n` if the line ends with a synchronizing literal's `{n}` CRLF.
    fn literal_len(line: &[u8]) -> Option<usize> {
        let s = std::str::from_utf8(line).ok()?;
        let s = s.strip_suffix("}\r\n")?;
        let open = s.rfind('{')?;
        s[open + 1..].parse().ok()
    }

    /// Dovecot-like: `joe` / `right pw` logs in, anything else is NO.
    fn dovecot(line: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(line);
        if s.starts_with("A1 LOGIN ") {
            if s == "A1 LOGIN \"joe\" \"right pw\"\r\n" || s == "A1 LOGIN {4}\r\njöe {4}\r\npwé\r\n"
            {
                b"* CAPABILITY IMAP4rev1 IDLE\r\nA1 OK [CAPABILITY IMAP4rev1] Logged in\r\n"
                    .to_vec()
            } else {
                b"A1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".to_vec()
            }
        } else if s.starts_with("A2 LOGOUT") {
            b"* BYE Logging out\r\nA2 OK Logout completed.\r\n".to_vec()
        } else {
            b"* BAD unexpected\r\n".to_vec()
        }
    }

    const GREETING: &str = "* OK [CAPABILITY IMAP4rev1 LITERAL+ AUTH=PLAIN] Dovecot ready.\r\n";

    fn attempt(p: &dyn Plugin, user: &str, pw: &str) -> (Outcome, Vec<String>) {
        auth_attempt(p, Mechanism::Login, user, pw)
    }

    fn plugin(port: u16) -> Box<dyn Plugin> {
        build(new, &format!("auth/auth_imap 127.0.0.1 {port}"), &[]).unwrap()
    }

    #[test]
    fn right_and_wrong_passwords() {
        let srv = fake_imap(GREETING, dovecot);
        let p = plugin(srv.port);
        let (out, logs) = attempt(&*p, "joe", "right pw");
        assert_eq!(out, Outcome::Ok(None), "{logs:?}");
        assert_eq!(
            srv.take(),
            ["A1 LOGIN \"joe\" \"right pw\"\r\n", "A2 LOGOUT\r\n"]
        );
        let (out, logs) = attempt(&*p, "joe", "wrong");
        assert_eq!(out, Outcome::deny(INVALID));
        assert!(
            logs.iter()
                .any(|l| l.contains("A1 NO [AUTHENTICATIONFAILED]")),
            "{logs:?}"
        );
        assert!(
            !logs.iter().any(|l| l.contains("wrong")),
            "password logged: {logs:?}"
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped() {
        assert_eq!(
            encode_arg(r#"a"b\c"#),
            Some(Arg::Quoted(r#""a\"b\\c""#.into()))
        );
        assert_eq!(encode_arg("x y"), Some(Arg::Quoted("\"x y\"".into())));
        assert_eq!(
            encode_arg("jöe"),
            Some(Arg::Literal("jöe".as_bytes().to_vec()))
        );
        for bad in ["a\rb", "a\nb", "a\0b"] {
            assert_eq!(encode_arg(bad), None, "{bad:?}");
        }
        let srv = fake_imap(GREETING, dovecot);
        let p = plugin(srv.port);
        // An attempt to end the string and inject a command stays one quoted string.
        let (out, _) = attempt(&*p, "joe", "x\" \"y");
        assert_eq!(out, Outcome::deny(INVALID));
        assert_eq!(srv.take()[0], "A1 LOGIN \"joe\" \"x\\\" \\\"y\"\r\n");
    }

    #[test]
    fn non_ascii_goes_as_literals() {
        let srv = fake_imap(GREETING, dovecot);
        let p = plugin(srv.port);
        let (out, logs) = attempt(&*p, "jöe", "pwé");
        assert_eq!(out, Outcome::Ok(None), "{logs:?}");
        assert_eq!(srv.take()[0], "A1 LOGIN {4}\r\njöe {4}\r\npwé\r\n");
    }

    #[test]
    fn refused_without_connecting() {
        let srv = fake_imap(GREETING, |_| panic!("connected"));
        let p = plugin(srv.port);
        assert_eq!(attempt(&*p, "joe", "").0, Outcome::deny(INVALID));
        assert_eq!(
            attempt(&*p, "joe", "a\r\nA9 DELETE INBOX").0,
            Outcome::deny(INVALID)
        );
        assert_eq!(attempt(&*p, "jo\ne", "x").0, Outcome::deny(INVALID));
        assert_eq!(attempt(&*p, "", "x").0, Outcome::Declined);
        assert!(srv.take().is_empty());
        assert_eq!(p.auth_mechanisms(), &[Mechanism::Plain, Mechanism::Login]);
        let req = cram_md5_attempt("joe", "<1@x>", "00");
        assert_eq!(auth_run(&*p, &req).0, Outcome::Declined);
    }

    #[test]
    fn server_trouble_is_temporary() {
        let cases: &[(&'static str, Answer, &str)] = &[
            ("* BYE too many connections\r\n", dovecot, "greeting: * BYE"),
            ("HTTP/1.0 200 OK\r\n", dovecot, "not an IMAP greeting"),
            (
                "* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n",
                dovecot,
                "LOGINDISABLED",
            ),
            (
                GREETING,
                |_| b"A1 NO [UNAVAILABLE] backend down\r\n".to_vec(),
                "[UNAVAILABLE]",
            ),
            (GREETING, |_| b"A1 BAD syntax\r\n".to_vec(), "A1 BAD"),
            (
                GREETING,
                |_| b"* BYE shutting down\r\n".to_vec(),
                "* BYE shutting down",
            ),
            (GREETING, |_| b"A7 OK what\r\n".to_vec(), "unexpected line"),
            (GREETING, |_| vec![b'x'; 9000], "line too long"),
            (GREETING, |_| b"A1 OK".to_vec(), "closed the connection"),
        ];
        for (greeting, answer, why) in cases {
            let srv = fake_imap(greeting, *answer);
            let p = plugin(srv.port);
            let (out, logs) = attempt(&*p, "joe", "right pw");
            assert_eq!(out, Outcome::deny_soft(TEMPORARY), "{why}: {logs:?}");
            assert!(logs.iter().any(|l| l.contains(why)), "{why}: {logs:?}");
        }
    }

    #[test]
    fn untagged_lines_before_the_answer_are_skipped() {
        let srv = fake_imap(GREETING, |_| {
            b"* CAPABILITY IMAP4rev1\r\n* OK [ALERT] hello\r\nA1 OK done\r\n".to_vec()
        });
        let p = plugin(srv.port);
        assert_eq!(attempt(&*p, "joe", "x").0, Outcome::Ok(None));
        // `A1 OKAY` is not `A1 OK`.
        let srv = fake_imap(GREETING, |_| b"A1 OKAY\r\n".to_vec());
        let p = plugin(srv.port);
        assert_eq!(attempt(&*p, "joe", "x").0, Outcome::deny_soft(TEMPORARY));
    }

    #[test]
    fn server_down_is_temporary() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (out, logs) = attempt(&*plugin(port), "joe", "right pw");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("cannot connect to 127.0.0.1:")),
            "{logs:?}"
        );
        let p = build(new, "auth/auth_imap imap.invalid", &[]).unwrap();
        let (out, logs) = attempt(&*p, "joe", "right pw");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("cannot resolve the IMAP host")),
            "{logs:?}"
        );
    }

    #[test]
    fn silent_server_times_out() {
        // A server that never sends its greeting, with a timer that has already fired: the
        // timeout, not a hang, ends the attempt.
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.mute_peers.set(true);
        let p = build(new, "auth/auth_imap 127.0.0.1 timeout 4", &[]).unwrap();
        let req = password_attempt(Mechanism::Plain, "joe", "x");
        assert_eq!(run(p.auth(&mut c, &req)), Outcome::deny_soft(TEMPORARY));
        assert!(svc.logged("no answer within the timeout (4s)"));
        // The port defaults to 143.
        assert_eq!(
            *svc.connects.borrow(),
            [Endpoint::Tcp("127.0.0.1:143".parse().unwrap())]
        );
    }

    #[test]
    fn arguments() {
        let ok = |args: &str| build(new, &format!("auth/auth_imap {args}"), &[]).is_ok();
        assert!(ok("127.0.0.1"));
        assert!(ok("imap.example.org 993"));
        assert!(ok("127.0.0.1 143 timeout 30 loglevel 7"));
        assert!(ok("timeout 2 [::1]"));
        for (args, why) in [
            ("", "the IMAP server is required"),
            ("bad/host!", "not an IP address or host name"),
            ("127.0.0.1 0", "port '0'"),
            ("127.0.0.1 imap", "port 'imap'"),
            ("127.0.0.1 143 extra", "unknown argument 'extra'"),
            ("127.0.0.1 timeout", "needs a value"),
            ("127.0.0.1 timeout 0", "not '0'"),
        ] {
            let err = build_err(new, &format!("auth/auth_imap {args}"), &[]);
            assert_eq!(err.file, "plugins", "{args:?}");
            assert!(err.reason.contains(why), "{args:?}: {err}");
        }
    }
}
