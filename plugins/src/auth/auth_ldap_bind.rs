//! # auth/auth_ldap_bind — SMTP AUTH by binding to an LDAP directory as the user
//!
//! ## Synopsis
//!
//! ```text
//! auth/auth_ldap_bind [ldap_host H] [ldap_port N] [ldap_base DN] [ldap_timeout N]
//!                     [ldap_auth_filter_attr ATTR] [ldap_bind_dn DN ldap_bind_password PW]
//!                     [ldap_auth_strip_domain 1|0] [loglevel N]
//! auth/auth_ldap_bind ldap_base dc=example,dc=com
//! auth/auth_ldap_bind                               (settings from config/ldap)
//! ```
//!
//! ## Description
//!
//! For each PLAIN or LOGIN attempt, as qpsmtpd's plugin: connect to the directory, search
//! under `ldap_base` (whole subtree) for the entry whose `ldap_auth_filter_attr` equals the
//! user name, then bind as that entry's DN with the client's password (LDAPv3 simple bind,
//! RFC 4513 §5.1.3). The directory decides; the password is never compared here.
//!
//! | what happens | outcome |
//! |---|---|
//! | the bind succeeds | `OK` (235) |
//! | the bind fails: invalidCredentials, inappropriateAuthentication, insufficientAccessRights, unwillingToPerform, constraintViolation (a locked account) | `DENY` (535) |
//! | no entry matches, or more than one (an ambiguous name never authenticates) | `DECLINED`: the next backend may know the user; 535 if none does |
//! | empty password, NUL in the name | `DENY`, without asking the directory |
//! | cannot resolve or connect, timeout, any other result code (busy, unavailable, a failed search bind, a missing base), a malformed answer, the server disconnecting | `DENYSOFT` (454 4.7.0), logged at `error`: never an acceptance |
//!
//! **The empty password.** A simple bind with a DN and an empty password is an
//! "unauthenticated bind" (RFC 4513 §5.1.2) that many servers answer with success. An
//! authenticator that takes that success as proof lets anyone in as anyone: the classic LDAP
//! auth bug. This plugin refuses empty passwords before talking to the server.
//!
//! The user name: with `ldap_auth_strip_domain 1` (the default, qpsmtpd's behaviour), the part
//! before the first `@` is searched for (`joe@example.com` -> `uid=joe`), so every domain
//! maps to the same directory entries; with `0` the whole name is searched for (directories
//! keyed by `mail`). The value is sent as typed: the attribute's matching rule in the
//! directory decides whether case matters (`uid` ignores it). The filter is built as an LDAP
//! structure, so `*`, `(` and `)` in a name are literal characters, never wildcards or filter
//! syntax; logs show it in RFC 4515 escaped form.
//!
//! The LDAP client is the minimal LDAPv3 one in `ldap.rs` (bind, search, unbind: a few hundred
//! lines), speaking over the worker's own non-blocking sockets (`Services::connect`), so
//! waiting on the directory never holds a core and needs no thread. The whole exchange runs
//! under `ldap_timeout`; the search also carries it as its time limit. One connection per
//! attempt: search (after the optional service bind), then the user's bind on the same
//! connection (RFC 4511 §4.2.1 allows binding again), then unbind.
//!
//! Differences from qpsmtpd: qpsmtpd's plugin, because of a bug in its DN check, never
//! authenticated anyone since 2005's version, and passed its arguments so that only the last
//! one counted; here arguments are `key value` pairs and all count. `ldap_bind_dn` /
//! `ldap_bind_password` (qpsmtpd's POD lists them as future work) allow directories that
//! refuse anonymous searches. `ldap_auth_strip_domain` is new. A wrong password for a found
//! user is `DENY` (qpsmtpd declined everything); a directory that is down is a 454, not a
//! 535. Missing `ldap_base` stops the server at start instead of failing every attempt.
//!
//! ## Arguments and the `ldap` file
//!
//! Each setting is an argument pair `key value`, or a line `key value` in `config/ldap` (the
//! value is the rest of the line, so it may contain blanks there, not in arguments).
//! Arguments override the file.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `ldap_base` | required | the search base DN |
//! | `ldap_host` | `127.0.0.1` | address or host name (resolved at each attempt through the server's DNS) |
//! | `ldap_port` | `389` | |
//! | `ldap_timeout` | `5` | seconds (a decimal number above 0, at most 3600), for the whole exchange. Keep it below the core's `plugin_timeout`. |
//! | `ldap_auth_filter_attr` | `uid` | the attribute holding the user name: a name (`uid`, `mail`, `sAMAccountName`) or a numeric OID |
//! | `ldap_bind_dn`, `ldap_bind_password` | none: anonymous search | the account to bind as before searching; both or neither |
//! | `ldap_auth_strip_domain` | `1` | `1`: search for the part before `@`; `0`: the whole name |
//! | `loglevel` | | qpsmtpd's per-plugin log level (argument only). `reject`/`reject_type` are accepted and have no effect. |
//!
//! Errors stop the server with `file:line` (for the `ldap` file) or the `config/plugins`
//! line: an unknown key, a key given twice in the same place, a key without a value, a bad
//! port, host, timeout or attribute, an empty password for `ldap_bind_dn`.
//!
//! ## Hooks
//!
//! `auth` (PLAIN, LOGIN). CRAM-MD5 is declined and not advertised: the directory holds no
//! clear password we could read.
//!
//! ## Notes
//!
//! None.
//!
//! ## Standards
//!
//! RFC 4511 (LDAPv3 protocol), RFC 4513 §5.1 (simple bind, unauthenticated binds), RFC 4515
//! (string filters, for logs), RFC 4954 (SMTP AUTH).
//!
//! ## Security
//!
//! The client's password goes to the directory in the clear: this client speaks neither LDAPS
//! nor StartTLS, so run the directory on the same host (the default, `127.0.0.1`) or on a
//! network you trust. The search account's password in `config/ldap` makes that file secret:
//! it must not be readable by every user (the plugin refuses to start otherwise); prefer the
//! file to an argument, since `config/plugins` is usually world-readable. The DN found by the
//! search is bound with exactly as the server sent it. Answers are bounded (64 KiB a
//! message, at most two entries taken), so a hostile directory cannot exhaust memory.

use std::io;
use std::time::Duration;

use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism};
use ringsmtpd_plugin_api::net::Stream;
use ringsmtpd_plugin_api::{
    Common, CommonArgs, ConfigError, ConfigLine, Cx, Hook, HookSet, Level, Outcome, Plugin,
    PluginInit, Step,
};

use super::ldap::{self, code, LdapResult, Op};
use super::{
    answer_within, check_private, clear_password, parse_port, parse_timeout, refuse, Host, Shown,
    TEMPORARY,
};

const FILE: &str = "ldap";

const KEYS: &[&str] = &[
    "ldap_host",
    "ldap_port",
    "ldap_base",
    "ldap_timeout",
    "ldap_auth_filter_attr",
    "ldap_bind_dn",
    "ldap_bind_password",
    "ldap_auth_strip_domain",
];

/// The `auth/auth_ldap_bind` plugin.
pub struct LdapBind {
    common: Common,
    host: Host,
    port: u16,
    base: String,
    timeout: Duration,
    attr: String,
    /// The search account: DN and password.
    search_bind: Option<(String, String)>,
    strip_domain: bool,
}

/// One setting and where it came from (a line of `ldap`, or the plugin's arguments).
struct Setting {
    value: String,
    line: Option<ConfigLine>,
}

/// Builds `auth/auth_ldap_bind` from its config line and `config/ldap`.
pub fn new(init: &PluginInit<'_>) -> Result<Box<dyn Plugin>, ConfigError> {
    let (common, rest) = init.common(CommonArgs::DEFAULT)?;
    let mut settings: Vec<(&'static str, Setting)> = Vec::new();
    let known = |key: &str| KEYS.iter().copied().find(|k| *k == key);

    let file = init.config.lines(FILE)?.unwrap_or_default();
    for line in &file {
        let (key, value) = match line.text.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (line.text.as_str(), ""),
        };
        let key = known(key).ok_or_else(|| line.error(format!("unknown setting '{key}'")))?;
        if value.is_empty() {
            return Err(line.error(format!("'{key}' needs a value")));
        }
        if settings.iter().any(|(k, _)| *k == key) {
            return Err(line.error(format!("'{key}' is set twice")));
        }
        settings.push((
            key,
            Setting {
                value: value.to_string(),
                line: Some(line.clone()),
            },
        ));
    }
    if settings.iter().any(|(k, _)| *k == "ldap_bind_password") {
        check_private(&file, "the LDAP search account's password")?;
    }

    let mut from_args: Vec<&str> = Vec::new();
    let mut it = rest.iter();
    while let Some(key) = it.next() {
        let key = known(key).ok_or_else(|| init.unknown(key))?;
        let value = it
            .next()
            .ok_or_else(|| init.error(format!("argument '{key}' needs a value")))?;
        if from_args.contains(&key) {
            return Err(init.error(format!("argument '{key}' is given twice")));
        }
        from_args.push(key);
        settings.retain(|(k, _)| *k != key);
        settings.push((
            key,
            Setting {
                value: value.to_string(),
                line: None,
            },
        ));
    }

    let get = |key: &str| settings.iter().find(|(k, _)| *k == key).map(|(_, s)| s);
    // An error about a setting points where the setting was written.
    let fail = |s: &Setting, why: String| match &s.line {
        Some(line) => line.error(why),
        None => init.error(why),
    };

    let base = get("ldap_base").ok_or_else(|| {
        init.error(format!(
            "ldap_base is required (an argument 'ldap_base <dn>' or a line in config/{FILE})"
        ))
    })?;
    if base.value.chars().any(char::is_control) {
        return Err(fail(base, "ldap_base contains a control character".into()));
    }
    let host = match get("ldap_host") {
        Some(s) => Host::parse(&s.value).map_err(|e| fail(s, format!("ldap_host: {e}")))?,
        None => Host::Ip(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let port = match get("ldap_port") {
        Some(s) => parse_port(&s.value).map_err(|e| fail(s, format!("ldap_port: {e}")))?,
        None => 389,
    };
    let timeout = match get("ldap_timeout") {
        Some(s) => parse_timeout(&s.value).map_err(|e| fail(s, format!("ldap_timeout: {e}")))?,
        None => Duration::from_secs(5),
    };
    let attr = match get("ldap_auth_filter_attr") {
        Some(s) => {
            check_attr(&s.value).map_err(|e| fail(s, format!("ldap_auth_filter_attr: {e}")))?;
            s.value.clone()
        }
        None => "uid".to_string(),
    };
    let search_bind = match (get("ldap_bind_dn"), get("ldap_bind_password")) {
        (Some(dn), Some(pw)) => Some((dn.value.clone(), pw.value.clone())),
        (None, None) => None,
        (Some(s), None) | (None, Some(s)) => {
            return Err(fail(
                s,
                "ldap_bind_dn and ldap_bind_password come together".into(),
            ))
        }
    };
    let strip_domain = match get("ldap_auth_strip_domain") {
        None => true,
        Some(s) => match s.value.as_str() {
            "1" => true,
            "0" => false,
            v => {
                return Err(fail(
                    s,
                    format!("ldap_auth_strip_domain must be 0 or 1, not '{v}'"),
                ))
            }
        },
    };
    Ok(Box::new(LdapBind {
        common,
        host,
        port,
        base: base.value.clone(),
        timeout,
        attr,
        search_bind,
        strip_domain,
    }))
}

/// An attribute description without options (RFC 4512 §2.5): a name or a numeric OID.
fn check_attr(attr: &str) -> Result<(), String> {
    let name = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let oid = attr.split('.').count() >= 2
        && attr
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if name || oid {
        Ok(())
    } else {
        Err(format!("'{attr}' is not an attribute name or numeric OID"))
    }
}

/// What the directory said about one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// The user's bind failed with this result.
    Refused(LdapResult),
    NotFound,
    Ambiguous,
    /// The check did not happen; why.
    Unavailable(String),
}

/// One LDAP connection: the stream, what was read past the last message, the next message ID.
struct Conn {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    next_id: i32,
}

impl Conn {
    async fn send(&mut self, msg: Vec<u8>) -> io::Result<()> {
        self.stream.write_all(msg).await.0
    }

    fn id(&mut self) -> i32 {
        self.next_id += 1;
        self.next_id
    }

    /// The next message from the server.
    async fn recv(&mut self) -> Result<(i64, Op), String> {
        loop {
            match ldap::frame(&self.buf) {
                Ok(Some(n)) => {
                    let parsed = ldap::parse_message(&self.buf[..n]).map_err(|e| e.to_string());
                    self.buf.drain(..n);
                    return parsed;
                }
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096);
            }
            let (res, buf) = self.stream.read(std::mem::take(&mut self.buf)).await;
            self.buf = buf;
            match res {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The response to request `id`: a Notice of Disconnection or another ID is an error.
    async fn response(&mut self, id: i32) -> Result<Op, String> {
        match self.recv().await? {
            (got, op) if got == i64::from(id) => Ok(op),
            (0, Op::Extended(r)) => Err(format!("the server disconnects us: {r}")),
            (got, _) => Err(format!("answer to message {got}, expected {id}")),
        }
    }

    async fn bind(&mut self, dn: &[u8], password: &[u8]) -> Result<LdapResult, String> {
        let id = self.id();
        self.send(ldap::bind_request(id, dn, password))
            .await
            .map_err(|e| format!("write: {e}"))?;
        match self.response(id).await? {
            Op::BindResponse(r) => Ok(r),
            other => Err(format!("unexpected answer to a bind: {other:?}")),
        }
    }
}

impl LdapBind {
    /// Search the user's DN and bind as it.
    async fn check(&self, cx: &Cx, value: &str, password: &str) -> Result<Verdict, String> {
        let to = self
            .host
            .connect(&*cx.svc, self.port, self.timeout, "ldap_host");
        let (addr, stream) = to.await?;
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            next_id: 0,
        };
        let verdict = self
            .exchange(&mut conn, value, password)
            .await
            .map_err(|e| format!("{addr}: {e}"));
        // Polite, not awaited for an answer (there is none); a failure changes nothing.
        let id = conn.id();
        let _ = conn.send(ldap::unbind_request(id)).await;
        verdict
    }

    async fn exchange(
        &self,
        conn: &mut Conn,
        value: &str,
        password: &str,
    ) -> Result<Verdict, String> {
        if let Some((dn, pw)) = &self.search_bind {
            let r = conn.bind(dn.as_bytes(), pw.as_bytes()).await?;
            if r.code != code::SUCCESS {
                return Err(format!("the search bind as '{dn}' failed: {r}"));
            }
        }
        let id = conn.id();
        let time_limit = i64::try_from(self.timeout.as_secs()).unwrap_or(i64::MAX);
        conn.send(ldap::search_request(
            id,
            &self.base,
            &self.attr,
            value.as_bytes(),
            2,
            time_limit,
        ))
        .await
        .map_err(|e| format!("write: {e}"))?;
        let mut found: Vec<Vec<u8>> = Vec::new();
        let done = loop {
            match conn.response(id).await? {
                Op::SearchEntry(dn) => {
                    if found.len() < 2 {
                        found.push(dn);
                    }
                }
                Op::SearchReference => {}
                Op::SearchDone(r) => break r,
                other => return Err(format!("unexpected answer to a search: {other:?}")),
            }
        };
        match done.code {
            code::SUCCESS => {}
            // More than the two entries we allowed: ambiguous whatever the rest says.
            code::SIZE_LIMIT_EXCEEDED => return Ok(Verdict::Ambiguous),
            code::NO_SUCH_OBJECT => {
                return Err(format!(
                    "the search base '{}' does not exist: {done}",
                    self.base
                ))
            }
            _ => return Err(format!("search failed: {done}")),
        }
        let dn = match found.as_slice() {
            [] => return Ok(Verdict::NotFound),
            [dn] => dn.clone(),
            _ => return Ok(Verdict::Ambiguous),
        };
        let r = conn.bind(&dn, password.as_bytes()).await?;
        Ok(match r.code {
            code::SUCCESS => Verdict::Pass,
            code::INVALID_CREDENTIALS
            | code::INAPPROPRIATE_AUTHENTICATION
            | code::INSUFFICIENT_ACCESS_RIGHTS
            | code::UNWILLING_TO_PERFORM
            | code::CONSTRAINT_VIOLATION => Verdict::Refused(r),
            _ => {
                return Err(format!(
                    "bind as '{}' failed: {r}",
                    String::from_utf8_lossy(&dn)
                ))
            }
        })
    }
}

impl Plugin for LdapBind {
    fn hooks(&self) -> HookSet {
        HookSet::of(&[Hook::Auth])
    }

    fn auth<'a>(&'a self, cx: &'a mut Cx, req: &'a AuthRequest) -> Step<'a> {
        let user = Shown(&req.user);
        let Some(password) = clear_password(&self.common, cx, req) else {
            return Step::DECLINED;
        };
        if password.is_empty() {
            // Would be an unauthenticated bind, which "succeeds" (RFC 4513 §5.1.2).
            return Step::Ready(refuse(
                &self.common,
                cx,
                format_args!("fail: empty password for '{user}'"),
            ));
        }
        if req.user.contains('\0') || password.contains('\0') {
            return Step::Ready(refuse(
                &self.common,
                cx,
                format_args!("fail: NUL in the name or password of '{user}'"),
            ));
        }
        let value = if self.strip_domain {
            req.user.split('@').next().unwrap_or_default()
        } else {
            req.user.as_str()
        };
        if value.is_empty() {
            self.common.log(
                cx,
                Level::Info,
                format_args!("skip: no user name in '{user}'"),
            );
            return Step::DECLINED;
        }
        Step::pending(async move {
            let svc = cx.svc.clone();
            let filter = format!("({}={})", self.attr, ldap::escape_filter_value(value));
            let check = self.check(cx, value, password);
            let verdict = answer_within(&*svc, self.timeout, "ldap_timeout", check)
                .await
                .unwrap_or_else(Verdict::Unavailable);
            match verdict {
                Verdict::Pass => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("pass: '{user}' bound as {filter}"),
                    );
                    Outcome::Ok(None)
                }
                Verdict::Refused(r) => refuse(
                    &self.common,
                    cx,
                    format_args!("fail: bind as {filter} for '{user}': {r}"),
                ),
                Verdict::NotFound => {
                    self.common.log(
                        cx,
                        Level::Info,
                        format_args!("skip: no entry {filter} under {}", self.base),
                    );
                    Outcome::Declined
                }
                Verdict::Ambiguous => {
                    self.common.log(
                        cx,
                        Level::Warn,
                        format_args!(
                        "skip: more than one entry {filter} under {}: not authenticating '{user}'",
                        self.base
                    ),
                    );
                    Outcome::Declined
                }
                Verdict::Unavailable(why) => {
                    self.common.log(
                        cx,
                        Level::Error,
                        format_args!("temporary failure for '{user}': {why}"),
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
    use crate::auth::ldap::tests::{
        bind_response, notice_of_disconnection, parse_request, search_done, search_entry, Request,
    };
    use crate::auth::INVALID;
    use ringsmtpd_plugin_api::testing::{
        auth_attempt, auth_run, build, build_err, cram_md5_attempt, cx, password_attempt, run,
        FakePeer,
    };
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;

    const BASE: &str = "dc=example,dc=test";

    type Answer = fn(&Request) -> Vec<Vec<u8>>;

    /// The directory of most tests: `joe` (password `right`) and two `twin`s.
    fn directory(req: &Request) -> Vec<Vec<u8>> {
        match req {
            Request::Bind { id, dn, password } => {
                let id = *id as i32;
                let ok = (dn == "cn=search,dc=example,dc=test" && password == "searchpw")
                    || (dn == "uid=joe,ou=people,dc=example,dc=test" && password == "right");
                vec![bind_response(id, if ok { 0 } else { 49 })]
            }
            Request::Search { id, value, .. } => {
                let id = *id as i32;
                match value.as_str() {
                    "joe" => vec![
                        search_entry(id, "uid=joe,ou=people,dc=example,dc=test"),
                        search_done(id, 0),
                    ],
                    "twin" => vec![
                        search_entry(id, "uid=twin,ou=a"),
                        search_entry(id, "uid=twin,ou=b"),
                        search_done(id, 4),
                    ],
                    "busy" => vec![search_done(id, 51)],
                    "bye" => vec![notice_of_disconnection()],
                    _ => vec![search_done(id, 0)],
                }
            }
            Request::Unbind => vec![],
        }
    }

    /// A fake directory: answers requests with `answer`, records them all.
    fn fake_ldap(answer: Answer) -> FakePeer<Request> {
        FakePeer::start(move |conn, seen| serve(conn, answer, seen))
    }

    fn serve(mut conn: TcpStream, answer: Answer, log: &Mutex<Vec<Request>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Ok(Some(n)) = ldap::frame(&buf) {
                let req = parse_request(&buf[..n]);
                buf.drain(..n);
                let unbind = req == Request::Unbind;
                let answers = answer(&req);
                log.lock().unwrap().push(req);
                for out in answers {
                    if conn.write_all(&out).is_err() {
                        return;
                    }
                }
                if unbind {
                    return;
                }
            }
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn plugin(args: &str) -> Box<dyn Plugin> {
        build(new, &format!("auth/auth_ldap_bind {args}"), &[]).unwrap()
    }

    fn attempt(p: &dyn Plugin, user: &str, password: &str) -> (Outcome, Vec<String>) {
        auth_attempt(p, Mechanism::Plain, user, password)
    }

    /// The plugin for the fake directory at `port`, with `extra` arguments.
    fn with(port: u16, extra: &str) -> Box<dyn Plugin> {
        plugin(&format!(
            "ldap_host 127.0.0.1 ldap_port {port} ldap_base {BASE} {extra}"
        ))
    }

    #[test]
    fn right_password_binds_as_the_found_dn() {
        let srv = fake_ldap(directory);
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "joe@example.test", "right");
        assert_eq!(out, Outcome::Ok(None), "{logs:?}");
        assert_eq!(
            srv.take(),
            vec![
                Request::Search {
                    id: 1,
                    base: BASE.into(),
                    attr: "uid".into(),
                    value: "joe".into(),
                    size_limit: 2
                },
                Request::Bind {
                    id: 2,
                    dn: "uid=joe,ou=people,dc=example,dc=test".into(),
                    password: "right".into()
                },
                Request::Unbind,
            ]
        );
        assert!(
            logs.iter()
                .any(|l| l == "pass: 'joe@example.test' bound as (uid=joe)"),
            "{logs:?}"
        );
    }

    #[test]
    fn wrong_password_is_deny_and_unknown_user_declines() {
        let srv = fake_ldap(directory);
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "joe", "wrong");
        assert_eq!(out, Outcome::deny(INVALID));
        assert!(
            logs.iter().any(|l| l.contains("49 (invalidCredentials)")),
            "{logs:?}"
        );
        assert!(
            !logs.iter().any(|l| l.contains("wrong")),
            "password in a log: {logs:?}"
        );
        assert_eq!(attempt(&*p, "nobody", "x").0, Outcome::Declined);
        // Two entries for one name: never authenticated, even with a password that binds.
        let (out, logs) = attempt(&*p, "twin", "right");
        assert_eq!(out, Outcome::Declined);
        assert!(
            logs.iter()
                .any(|l| l.contains("more than one entry (uid=twin)")),
            "{logs:?}"
        );
    }

    #[test]
    fn empty_password_never_reaches_the_directory() {
        let srv = fake_ldap(|_| panic!("the directory was asked"));
        let p = with(srv.port, "");
        assert_eq!(attempt(&*p, "joe", "").0, Outcome::deny(INVALID));
        assert_eq!(attempt(&*p, "jo\0e", "x").0, Outcome::deny(INVALID));
        assert_eq!(attempt(&*p, "@example.test", "x").0, Outcome::Declined);
        assert!(srv.take().is_empty());
        // CRAM-MD5: declined, not advertised.
        assert_eq!(p.auth_mechanisms(), &[Mechanism::Plain, Mechanism::Login]);
        let req = cram_md5_attempt("joe", "<1@x>", "00");
        assert_eq!(auth_run(&*p, &req).0, Outcome::Declined);
    }

    #[test]
    fn filter_metacharacters_are_literal() {
        let srv = fake_ldap(directory);
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "*)(uid=*", "right");
        assert_eq!(out, Outcome::Declined);
        let reqs = srv.take();
        assert!(
            matches!(&reqs[0], Request::Search { value, .. } if value == "*)(uid=*"),
            "{reqs:?}"
        );
        assert!(
            logs.iter()
                .any(|l| l.contains("(uid=\\2a\\29\\28uid=\\2a)")),
            "{logs:?}"
        );
    }

    #[test]
    fn search_bind_and_full_names() {
        let srv = fake_ldap(directory);
        let p = with(
            srv.port,
            "ldap_bind_dn cn=search,dc=example,dc=test ldap_bind_password searchpw \
             ldap_auth_filter_attr mail ldap_auth_strip_domain 0",
        );
        assert_eq!(
            attempt(&*p, "joe@example.test", "right").0,
            Outcome::Declined
        );
        let reqs = srv.take();
        assert_eq!(
            reqs[0],
            Request::Bind {
                id: 1,
                dn: "cn=search,dc=example,dc=test".into(),
                password: "searchpw".into()
            }
        );
        assert!(
            matches!(&reqs[1], Request::Search { attr, value, .. } if attr == "mail" && value == "joe@example.test"),
            "{reqs:?}"
        );
        // A wrong search password is the admin's problem: temporary, logged, never a pass.
        let p = with(
            srv.port,
            "ldap_bind_dn cn=search,dc=example,dc=test ldap_bind_password nope",
        );
        let (out, logs) = attempt(&*p, "joe", "right");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("the search bind as 'cn=search,dc=example,dc=test' failed")),
            "{logs:?}"
        );
    }

    #[test]
    fn directory_trouble_is_temporary() {
        let srv = fake_ldap(directory);
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "busy", "x");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter().any(|l| l.contains("search failed: 51 (busy)")),
            "{logs:?}"
        );
        let (out, logs) = attempt(&*p, "bye", "x");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("disconnects us: 52 (unavailable)")),
            "{logs:?}"
        );
        // A bind answered with an unexpected code (here: busy) is not a refusal.
        let srv = fake_ldap(|req| match req {
            Request::Search { id, .. } => vec![
                search_entry(*id as i32, "uid=x"),
                search_done(*id as i32, 0),
            ],
            Request::Bind { id, .. } => vec![bind_response(*id as i32, 51)],
            Request::Unbind => vec![],
        });
        let p = with(srv.port, "");
        assert_eq!(attempt(&*p, "x", "y").0, Outcome::deny_soft(TEMPORARY));
        // A missing base.
        let srv = fake_ldap(|req| match req {
            Request::Search { id, .. } => vec![search_done(*id as i32, 32)],
            _ => vec![],
        });
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "x", "y");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter().any(|l| l.contains("does not exist")),
            "{logs:?}"
        );
        // Garbage instead of LDAP.
        let srv = fake_ldap(|_| vec![b"HTTP/1.0 400 Bad Request\r\n\r\n".to_vec()]);
        let p = with(srv.port, "");
        assert_eq!(attempt(&*p, "x", "y").0, Outcome::deny_soft(TEMPORARY));
        // An answer to another message.
        let srv = fake_ldap(|_| vec![search_done(7, 0)]);
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "x", "y");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("answer to message 7, expected 1")),
            "{logs:?}"
        );
    }

    #[test]
    fn server_down_is_temporary_never_acceptance() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let p = with(port, "");
        let (out, logs) = attempt(&*p, "joe", "right");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter()
                .any(|l| l.contains("cannot connect to 127.0.0.1:")),
            "{logs:?}"
        );
        // A server that accepts and closes at once.
        let srv = fake_ldap(|_| panic!("close"));
        let p = with(srv.port, "");
        let (out, logs) = attempt(&*p, "joe", "right");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter().any(|l| l.contains("closed the connection")),
            "{logs:?}"
        );
        // A host name that does not resolve (the fake DNS answers NXDOMAIN).
        let p = plugin(&format!("ldap_host ldap.invalid ldap_base {BASE}"));
        let (out, logs) = attempt(&*p, "joe", "right");
        assert_eq!(out, Outcome::deny_soft(TEMPORARY));
        assert!(
            logs.iter().any(|l| l.contains("cannot resolve ldap_host")),
            "{logs:?}"
        );
    }

    #[test]
    fn silent_server_times_out() {
        // Connections that never answer, timers that fire at once.
        let (mut c, svc) = cx("192.0.2.1:1");
        svc.mute_peers.set(true);
        let p = plugin(&format!("ldap_base {BASE} ldap_timeout 3"));
        let req = password_attempt(Mechanism::Login, "joe", "right");
        assert_eq!(run(p.auth(&mut c, &req)), Outcome::deny_soft(TEMPORARY));
        assert!(svc.logged("no answer within ldap_timeout (3s)"));
    }

    #[test]
    fn ldap_file_and_arguments() {
        let srv = fake_ldap(directory);
        let file = format!(
            "# directory\nldap_host 127.0.0.1\nldap_port {}\nldap_base   {BASE}\nldap_timeout 2\n\
             ldap_bind_dn cn=search, dc=example, dc=test\nldap_bind_password search pw\n",
            srv.port
        );
        let p = build(new, "auth/auth_ldap_bind", &[(FILE, &file)]).unwrap();
        // The file's values may hold blanks: the bind DN and password as written.
        assert_eq!(
            attempt(&*p, "joe", "right").0,
            Outcome::deny_soft(TEMPORARY)
        );
        assert_eq!(
            srv.take()[0],
            Request::Bind {
                id: 1,
                dn: "cn=search, dc=example, dc=test".into(),
                password: "search pw".into()
            }
        );
        // Arguments override the file: here the port (the file's is closed) and the base.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let file = format!("ldap_port {dead}\nldap_base dc=other\n");
        let line = format!(
            "auth/auth_ldap_bind ldap_port {} ldap_base {BASE}",
            srv.port
        );
        let p = build(new, &line, &[(FILE, &file)]).unwrap();
        assert_eq!(attempt(&*p, "joe", "right").0, Outcome::Ok(None));
    }

    #[test]
    fn bad_ldap_file_lines() {
        for (text, line, why) in [
            (
                "ldap_base dc=x\nldap_hots h\n",
                2,
                "unknown setting 'ldap_hots'",
            ),
            ("ldap_base\n", 1, "needs a value"),
            ("ldap_base dc=x\nldap_base dc=y\n", 2, "set twice"),
            ("ldap_base dc=x\n# c\nldap_port 0\n", 3, "ldap_port"),
            ("ldap_base dc=x\nldap_port 70000\n", 2, "ldap_port"),
            ("ldap_base dc=x\nldap_host bad host!\n", 2, "ldap_host"),
            ("ldap_base dc=x\nldap_timeout 0\n", 2, "ldap_timeout"),
            (
                "ldap_base dc=x\nldap_auth_filter_attr u(id\n",
                2,
                "ldap_auth_filter_attr",
            ),
            ("ldap_base dc=x\nldap_bind_dn cn=a\n", 2, "come together"),
            ("ldap_base dc=x\nldap_auth_strip_domain yes\n", 2, "0 or 1"),
        ] {
            let err = build_err(new, "auth/auth_ldap_bind", &[(FILE, text)]);
            assert_eq!(
                (err.file.as_str(), err.line),
                (FILE, line),
                "{text:?}: {err}"
            );
            assert!(err.reason.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn bad_arguments() {
        for (args, why) in [
            ("", "ldap_base is required"),
            ("ldap_base", "needs a value"),
            ("ldap_base dc=x ldap_base dc=y", "given twice"),
            (
                "ldap_base dc=x ldap_server h",
                "unknown argument 'ldap_server'",
            ),
            ("ldap_base dc=x ldap_port x", "ldap_port"),
            ("ldap_base dc=x ldap_timeout 9999", "ldap_timeout"),
            ("ldap_base dc=x ldap_bind_password p", "come together"),
            (
                "ldap_base dc=x ldap_auth_filter_attr 1uid",
                "ldap_auth_filter_attr",
            ),
        ] {
            let err = build_err(new, &format!("auth/auth_ldap_bind {args}"), &[]);
            assert_eq!(err.file, "plugins", "{args:?}");
            assert!(err.reason.contains(why), "{args:?}: {err}");
        }
        for attr in [
            "uid",
            "mail",
            "sAMAccountName",
            "x-attr",
            "0.9.2342.19200300.100.1.1",
        ] {
            assert!(check_attr(attr).is_ok(), "{attr}");
        }
        for attr in ["", "1", "1.", "a_b", "uid;x", "*"] {
            assert!(check_attr(attr).is_err(), "{attr}");
        }
        let line =
            "auth/auth_ldap_bind ldap_base dc=x ldap_host ldap.example.org loglevel 7 reject 0";
        assert!(build(new, line, &[]).is_ok());
    }
}
