//! SMTP AUTH (RFC 4954) as plugins see it. The core speaks SASL (PLAIN RFC 4616, LOGIN,
//! CRAM-MD5 RFC 2195: the 334 challenges, base64, `*` to cancel) and hands each attempt to the
//! `auth` hook as an [`AuthRequest`]; a backend (`auth/auth_flat_file`, `auth_checkpassword`,
//! `auth_ldap_bind`, `auth_imap`, `authdeny`) answers `OK` (235) or anything else (535).

use std::fmt;

/// The SASL mechanisms the core speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    Plain,
    Login,
    CramMd5,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::Login, Mechanism::CramMd5];

    /// The name in EHLO and the AUTH command.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::CramMd5 => "CRAM-MD5",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the client proved, by mechanism.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// PLAIN and LOGIN: the password itself (only ever over TLS unless the admin allowed
    /// plaintext AUTH).
    Password(String),
    /// CRAM-MD5: the server's challenge and the client's hex HMAC-MD5 of it, keyed with the
    /// password; only a backend that knows the clear password can check it.
    CramMd5 { challenge: String, digest: String },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<hidden>)"),
            Secret::CramMd5 { challenge, .. } => {
                write!(f, "CramMd5 {{ challenge: {challenge:?} }}")
            }
        }
    }
}

/// One authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub mechanism: Mechanism,
    /// The authentication identity (PLAIN's authcid, LOGIN's user name, CRAM-MD5's user).
    pub user: String,
    pub secret: Secret,
}

impl AuthRequest {
    /// The clear password (PLAIN, LOGIN), for backends that pass it on (checkpassword, LDAP
    /// bind, IMAP login).
    pub fn password(&self) -> Option<&str> {
        match &self.secret {
            Secret::Password(p) => Some(p),
            Secret::CramMd5 { .. } => None,
        }
    }

    /// True if `stored` (the user's clear password, as `flat_auth_pw` keeps it) is what the
    /// client proved, for every mechanism. Compares in constant time.
    pub fn matches_password(&self, stored: &str) -> bool {
        match &self.secret {
            Secret::Password(p) => constant_time_eq(p.as_bytes(), stored.as_bytes()),
            Secret::CramMd5 { challenge, digest } => {
                let want = hex(&hmac_md5(stored.as_bytes(), challenge.as_bytes()));
                constant_time_eq(want.as_bytes(), digest.to_ascii_lowercase().as_bytes())
            }
        }
    }
}

/// Compares without an early exit, so timing does not tell how much of a secret matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-MD5 (RFC 2104) as CRAM-MD5 uses it.
pub fn hmac_md5(key: &[u8], msg: &[u8]) -> [u8; 16] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    match Hmac::<md5::Md5>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(msg);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 16],
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cram_md5_rfc2195_example() {
        // RFC 2195 §2: user tim, password tanstaaftanstaaf.
        let challenge = "<1896.697170952@postoffice.reston.mci.net>";
        let req = AuthRequest {
            mechanism: Mechanism::CramMd5,
            user: "tim".into(),
            secret: Secret::CramMd5 {
                challenge: challenge.into(),
                digest: "b913a602c7eda7a495b4e6e7334d3890".into(),
            },
        };
        assert!(req.matches_password("tanstaaftanstaaf"));
        assert!(!req.matches_password("tanstaaftanstaafX"));
        assert_eq!(req.password(), None);
    }

    #[test]
    fn plain_passwords_and_names() {
        let req = AuthRequest {
            mechanism: Mechanism::Plain,
            user: "u".into(),
            secret: Secret::Password("pw".into()),
        };
        assert!(
            req.matches_password("pw")
                && !req.matches_password("pW")
                && !req.matches_password("pw ")
        );
        assert!(
            !format!("{req:?}").contains("pw\""),
            "the password never reaches a log"
        );
        assert_eq!(Mechanism::from_name("cram-md5"), Some(Mechanism::CramMd5));
        assert_eq!(Mechanism::from_name("GSSAPI"), None);
    }
}
