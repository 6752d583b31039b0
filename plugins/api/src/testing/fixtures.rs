//! What hook calls need: transactions, recipients, messages (in memory or spooled), AUTH
//! attempts, DNS records, a temporary directory, a fake program.

use std::path::{Path, PathBuf};

use crate::auth::{AuthRequest, Mechanism, Secret};
use crate::context::{Body, SpoolFile};
use crate::outcome::Outcome;
use crate::plugin::Plugin;

use super::services::{cx, run};

/// A fresh directory under the system temp dir, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory; `tag` goes into its name to tell tests apart.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("ringsmtpd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create a test directory");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory, as a string (for a plugin argument).
    pub fn join(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// Writes `contents` to the file `name` in the directory and returns its path (as
    /// [`TempDir::join`]).
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> String {
        let path = self.join(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A transaction whose sender is `from`, a MAIL path as the client writes it (`<a@b.example>`,
/// `<>`; UTF-8 allowed, as after SMTPUTF8).
pub fn txn_from(from: &str) -> crate::Transaction {
    let mut txn = crate::Transaction::default();
    txn.sender = crate::address::parse_path(from, true, true).expect("test sender");
    txn
}

/// A recipient `to`, a RCPT path as the client writes it (`<a@b.example>`, `<postmaster>`;
/// UTF-8 allowed, as after SMTPUTF8).
pub fn rcpt(to: &str) -> crate::Recipient {
    crate::Recipient {
        addr: crate::address::parse_path(to, false, true).expect("test recipient"),
        params: Default::default(),
    }
}

/// DNS records for [`FakeServices::answer`].
pub mod records {
    use crate::dns::Record;

    pub fn a(s: &str) -> Record {
        Record::A(s.parse().expect("test IPv4"))
    }

    pub fn aaaa(s: &str) -> Record {
        Record::Aaaa(s.parse().expect("test IPv6"))
    }

    pub fn txt(s: &str) -> Record {
        Record::Txt(s.to_string())
    }

    pub fn ptr(s: &str) -> Record {
        Record::Ptr(s.to_string())
    }

    pub fn mx(preference: u16, exchange: &str) -> Record {
        Record::Mx {
            preference,
            exchange: exchange.to_string(),
        }
    }
}

/// The outcome of `p`'s `mail` hook for the sender `from`, on a new connection.
pub fn mail_outcome(p: &dyn crate::Plugin, from: &str) -> Outcome {
    let (mut c, _) = cx("192.0.2.1:1");
    run(p.mail(&mut c, &mut txn_from(from)))
}

/// The outcome of `p`'s `rcpt` hook for the recipient `to`, on a new connection and
/// transaction.
pub fn rcpt_outcome(p: &dyn crate::Plugin, to: &str) -> Outcome {
    let (mut c, _) = cx("192.0.2.1:1");
    run(p.rcpt(&mut c, &mut crate::Transaction::default(), &rcpt(to)))
}

/// Puts `message` (header, empty line, body, as received) into `txn`'s body, in memory.
pub fn set_message(txn: &mut crate::Transaction, message: &str) {
    txn.body.mem = message.as_bytes().to_vec();
    txn.body.len = message.len() as u64;
    txn.body.header_end = message.find("\r\n\r\n").map(|i| i + 4);
}

/// An AUTH attempt with a clear password (PLAIN or LOGIN) for `user`.
pub fn password_attempt(mechanism: Mechanism, user: &str, password: &str) -> AuthRequest {
    AuthRequest {
        mechanism,
        user: user.to_string(),
        secret: Secret::Password(password.to_string()),
    }
}

/// A CRAM-MD5 attempt for `user`: `digest` (hex) answers `challenge`.
pub fn cram_md5_attempt(user: &str, challenge: &str, digest: &str) -> AuthRequest {
    AuthRequest {
        mechanism: Mechanism::CramMd5,
        user: user.to_string(),
        secret: Secret::CramMd5 {
            challenge: challenge.to_string(),
            digest: digest.to_string(),
        },
    }
}

/// Runs `req` through `p`'s `auth` hook for a client at 192.0.2.1: its outcome and the lines
/// logged on the way.
pub fn auth_run(p: &dyn Plugin, req: &AuthRequest) -> (Outcome, Vec<String>) {
    let (mut c, svc) = cx("192.0.2.1:1");
    let out = run(p.auth(&mut c, req));
    let logs = svc
        .logs
        .borrow()
        .iter()
        .map(|(_, _, m)| m.clone())
        .collect();
    (out, logs)
}

/// [`auth_run`] for a [`password_attempt`].
pub fn auth_attempt(
    p: &dyn Plugin,
    mechanism: Mechanism,
    user: &str,
    password: &str,
) -> (Outcome, Vec<String>) {
    auth_run(p, &password_attempt(mechanism, user, password))
}

/// Spools `message` into `body` as the engine does for a large one: the whole message in the
/// file `path`, its header section in memory.
pub fn spool(body: &mut Body, path: &Path, message: &[u8]) {
    std::fs::write(path, message).expect("write the spool file");
    let headers = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 4);
    body.mem = message[..headers].to_vec();
    body.header_end = Some(headers);
    body.len = message.len() as u64;
    body.spool = Some(SpoolFile {
        path: path.to_path_buf(),
        file: std::fs::File::open(path).expect("open the spool file"),
    });
}

/// Writes the program `text` (starting with its `#!` line) to `path`, executable (mode 0755):
/// a stand-in for a real program that a plugin runs.
pub fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the test program");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the test program executable");
}
