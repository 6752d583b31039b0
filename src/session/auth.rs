//! SMTP AUTH (RFC 4954): the SASL exchange for PLAIN (RFC 4616), LOGIN and CRAM-MD5
//! (RFC 2195). The core does the protocol; the `auth` hook's backends check the credentials.
//!
//! - AUTH is offered (EHLO) and accepted only over TLS, unless `tls_before_auth` is 0, so
//!   passwords never cross the network in the clear by default (qpsmtpd's default was the
//!   other way round).
//! - Every failure counts against the client's IP across all workers; each failure is answered
//!   after a growing delay (a timer: no thread waits), and past `auth_max_failures` within
//!   `AUTH_WINDOW` the client is disconnected and further AUTH from its IP is refused with 454
//!   until the window passes.
//! - Success: 235, the connection becomes a relay client and the user is recorded for Received
//!   (ESMTPA/ESMTPSA, RFC 3848) and Authentication-Results.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use ringsmtpd_plugin_api::auth::{AuthRequest, Mechanism, Secret};
use ringsmtpd_plugin_api::shared::Naughty;
use ringsmtpd_plugin_api::{AuthInfo, ConfigError, ConfigSource, Hook, Level, Outcome};

use super::respond::Resolved;
use super::{End, Flow, State};
use crate::proto::reply;

/// How long failures are remembered per IP.
const AUTH_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest delay before a 535: enough to make guessing slow, short enough that a typo
/// costs a real user little.
const MAX_DELAY: Duration = Duration::from_secs(16);
/// Longest decoded SASL response accepted (RFC 4954 §4 allows 12,288 octets per line).
const MAX_RESPONSE: usize = 12_288;

/// AUTH settings: `tls_before_auth` (1 by default: AUTH only over TLS) and
/// `auth_max_failures` (failures per IP within 15 minutes before it is refused; default 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthPolicy {
    pub plaintext: bool,
    pub max_failures: u32,
}

impl AuthPolicy {
    pub fn load(cfg: &dyn ConfigSource) -> Result<AuthPolicy, ConfigError> {
        let plaintext = match cfg.first("tls_before_auth")? {
            None => false,
            Some(l) => match l.text.as_str() {
                "1" => false,
                "0" => true,
                _ => return Err(l.error("tls_before_auth must be 0 or 1")),
            },
        };
        let max_failures = match cfg.first("auth_max_failures")? {
            None => 5,
            Some(l) => match l.text.parse::<u32>() {
                Ok(n @ 1..=1000) => n,
                _ => return Err(l.error("auth_max_failures must be a number from 1 to 1000")),
            },
        };
        Ok(AuthPolicy {
            plaintext,
            max_failures,
        })
    }
}

impl Default for AuthPolicy {
    fn default() -> Self {
        AuthPolicy {
            plaintext: false,
            max_failures: 5,
        }
    }
}

/// An AUTH exchange waiting for the client's next line.
#[derive(Debug)]
pub(crate) enum Sasl {
    Plain,
    LoginUser,
    LoginPassword(String),
    CramMd5(String),
}

/// Failures per IP, shared by all workers (one lock per failure, never per message).
struct Failures(Mutex<HashMap<IpAddr, (u32, Instant)>>);

fn failures() -> &'static Failures {
    static F: OnceLock<Failures> = OnceLock::new();
    F.get_or_init(|| Failures(Mutex::new(HashMap::new())))
}

impl Failures {
    /// Failures of `ip` within the window.
    fn count(&self, ip: IpAddr) -> u32 {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some(&(n, last)) if last.elapsed() < AUTH_WINDOW => n,
            _ => 0,
        }
    }

    /// Records a failure; returns the count within the window, this one included.
    fn record(&self, ip: IpAddr) -> u32 {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (_, last)| last.elapsed() < AUTH_WINDOW); // bounded memory
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= AUTH_WINDOW {
            entry.0 = 0;
        }
        entry.0 += 1;
        entry.1 = Instant::now();
        entry.0
    }

    fn clear(&self, ip: IpAddr) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(&ip);
    }
}

impl State {
    /// True if AUTH is on offer now: a backend exists, the client said EHLO, is not
    /// authenticated, and the channel is encrypted (or plaintext AUTH is allowed).
    pub(super) fn auth_offered(&self) -> bool {
        self.env.chains.has(Hook::Auth)
            && self.cx.conn.auth.is_none()
            && (self.cx.conn.tls.is_some() || self.env.auth.plaintext)
    }

    /// `AUTH <mechanism> [initial-response]`.
    pub(super) async fn auth(&mut self, out: &mut Vec<u8>, args: &str) -> Flow {
        if !self.env.chains.has(Hook::Auth) {
            return self.unrecognized(out, "auth", args).await; // qpsmtpd without auth plugins
        }
        let mut words = args.split_ascii_whitespace();
        let (mech, initial) = (words.next().unwrap_or(""), words.next());
        let refusal = if !self.cx.conn.is_esmtp() {
            Some(Resolved::new(503, "5.5.1", "AUTH not defined for HELO"))
        } else if self.cx.conn.auth.is_some() {
            Some(Resolved::new(503, "5.5.1", "Already authenticated"))
        } else if self.txn.is_some() {
            Some(Resolved::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ))
        } else if words.next().is_some() || mech.is_empty() {
            Some(Resolved::new(
                501,
                "5.5.4",
                "Syntax: AUTH mechanism [initial-response]",
            ))
        } else if self.cx.conn.tls.is_none() && !self.env.auth.plaintext {
            let text = "Encryption required for requested authentication mechanism";
            Some(Resolved::new(538, "5.7.11", text))
        } else if failures().count(self.cx.conn.remote.ip()) >= self.env.auth.max_failures {
            let text = "Too many authentication failures, try again later";
            Some(Resolved::new(454, "4.7.0", text))
        } else {
            None
        };
        if let Some(r) = refusal {
            return self.error_flow(out, r);
        }
        let Some(mech) =
            Mechanism::from_name(mech).filter(|m| self.env.chains.auth_mechanisms().contains(m))
        else {
            return self.error_flow(
                out,
                Resolved::new(504, "5.5.4", "Unrecognized authentication type"),
            );
        };
        let step = match (mech, initial) {
            (Mechanism::Plain, None) => Sasl::Plain,
            (Mechanism::Plain, Some(resp)) => return self.sasl_step(out, Sasl::Plain, resp).await,
            (Mechanism::Login, None) => Sasl::LoginUser,
            (Mechanism::Login, Some(resp)) => {
                return self.sasl_step(out, Sasl::LoginUser, resp).await
            }
            (Mechanism::CramMd5, Some(_)) => {
                let text = "CRAM-MD5 takes no initial response";
                return self.error_flow(out, Resolved::new(501, "5.5.4", text));
            }
            (Mechanism::CramMd5, None) => Sasl::CramMd5(self.challenge()),
        };
        self.prompt(out, &step);
        self.sasl = Some(step);
        Flow::Next
    }

    /// The next line of an AUTH exchange.
    pub(super) async fn auth_continue(&mut self, out: &mut Vec<u8>, line: &[u8]) -> Flow {
        let Some(step) = self.sasl.take() else {
            return Flow::Next;
        };
        match std::str::from_utf8(line) {
            Ok(resp) => self.sasl_step(out, step, resp.trim()).await,
            Err(_) => self.error_flow(out, Resolved::new(501, "5.5.2", "Invalid base64 data")),
        }
    }

    async fn sasl_step(&mut self, out: &mut Vec<u8>, step: Sasl, resp: &str) -> Flow {
        if resp == "*" {
            return self.error_flow(out, Resolved::new(501, "5.7.0", "Authentication canceled"));
        }
        // "=" is an empty initial response (RFC 4954 §4).
        let decoded = if resp == "=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(resp)
        };
        let data = match decoded {
            Ok(d) if d.len() <= MAX_RESPONSE => d,
            _ => return self.error_flow(out, Resolved::new(501, "5.5.2", "Invalid base64 data")),
        };
        let Ok(text) = String::from_utf8(data) else {
            return self.error_flow(
                out,
                Resolved::new(501, "5.5.2", "Credentials must be UTF-8"),
            );
        };
        let request = match step {
            Sasl::Plain => {
                // authzid NUL authcid NUL password; a different authzid is refused (no proxy
                // authorization here), an empty one is the usual case.
                let mut parts = text.splitn(3, '\0');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(authz), Some(user), Some(pass)) if authz.is_empty() || authz == user => {
                        AuthRequest {
                            mechanism: Mechanism::Plain,
                            user: user.to_string(),
                            secret: Secret::Password(pass.to_string()),
                        }
                    }
                    _ => {
                        return self
                            .error_flow(out, Resolved::new(501, "5.5.2", "Invalid PLAIN response"))
                    }
                }
            }
            Sasl::LoginUser => {
                let next = Sasl::LoginPassword(text);
                self.prompt(out, &next);
                self.sasl = Some(next);
                return Flow::Next;
            }
            Sasl::LoginPassword(user) => AuthRequest {
                mechanism: Mechanism::Login,
                user,
                secret: Secret::Password(text),
            },
            Sasl::CramMd5(challenge) => {
                // "user SP digest", digest 32 lowercase hex digits (RFC 2195 §2).
                match text.rsplit_once(' ') {
                    Some((user, digest))
                        if digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        AuthRequest {
                            mechanism: Mechanism::CramMd5,
                            user: user.to_string(),
                            secret: Secret::CramMd5 {
                                challenge,
                                digest: digest.to_string(),
                            },
                        }
                    }
                    _ => {
                        return self.error_flow(
                            out,
                            Resolved::new(501, "5.5.2", "Invalid CRAM-MD5 response"),
                        )
                    }
                }
            }
        };
        self.verify(out, request).await
    }

    /// Runs the backends and answers 235, 454 or 535.
    async fn verify(&mut self, out: &mut Vec<u8>, req: AuthRequest) -> Flow {
        let env = self.env.clone();
        let decision = env.chains.run_auth(&mut self.cx, &req).await;
        let ip = self.cx.conn.remote.ip();
        let (mech, user) = (req.mechanism, req.user.as_str());
        let source = decision.plugin.as_deref().unwrap_or("core");
        match decision.outcome {
            Outcome::Ok(_) => {
                failures().clear(ip);
                self.cx.log(
                    Level::Info,
                    source,
                    format_args!("AUTH {mech} success for {user}"),
                );
                let conn = &mut self.cx.conn;
                conn.auth = Some(AuthInfo {
                    user: req.user.clone(),
                    mechanism: mech.name().to_string(),
                });
                conn.relay_client = true;
                conn.notes.take::<Naughty>(); // qpsmtpd: an authenticated client is not naughty
                reply::write(out, 235, "2.7.0", "Authentication successful");
                Flow::Next
            }
            Outcome::DenySoft(_) | Outcome::DenySoftDisconnect(_) => {
                self.cx.log(
                    Level::Warn,
                    source,
                    format_args!("AUTH {mech} for {user}: temporary failure"),
                );
                reply::write(out, 454, "4.7.0", "Temporary authentication failure");
                Flow::Next
            }
            _ => {
                let n = failures().record(ip);
                let msg =
                    format_args!("AUTH {mech} failed for {user} from {ip} ({n} recent failures)");
                self.cx.log(Level::Warn, source, msg);
                // Slow guessing down without holding a thread: the session waits on a timer.
                let delay = Duration::from_secs(1 << n.min(5).saturating_sub(1)).min(MAX_DELAY);
                monoio::time::sleep(delay).await;
                reply::write(out, 535, "5.7.8", "Authentication credentials invalid");
                if n >= self.env.auth.max_failures {
                    let text = "Too many authentication failures, closing connection";
                    reply::write(out, 421, "4.7.0", text);
                    return Flow::Close(End::TooManyErrors);
                }
                Flow::Next
            }
        }
    }

    /// The 334 prompt for a step.
    fn prompt(&self, out: &mut Vec<u8>, step: &Sasl) {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = match step {
            Sasl::Plain => String::new(),
            Sasl::LoginUser => b64("Username:"),
            Sasl::LoginPassword(_) => b64("Password:"),
            Sasl::CramMd5(challenge) => b64(challenge),
        };
        reply::write(out, 334, "", &text);
    }

    /// A CRAM-MD5 challenge: `<random.time@me>` (RFC 2195 §2), unique and unpredictable.
    fn challenge(&self) -> String {
        let mut bytes = [0u8; 8];
        let random = match getrandom::getrandom(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => RandomState::new().hash_one(Instant::now()),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("<{random}.{now}@{}>", self.env.svc.me())
    }
}
