//! The envelope: addresses and the ESMTP parameters of MAIL and RCPT, as parsed and validated.
//!
//! Parsing lives in [`crate::address`] (paths) and the server's `proto` module (parameters);
//! these are the plain values plugins and queues see.

/// A mailbox from a MAIL or RCPT path, without angle brackets and without a source route
/// (RFC 5321 §4.1.2 and Appendix C: a source route is accepted and ignored).
///
/// The text is kept as the client sent it (a quoted local part stays quoted), so it can be
/// relayed downstream unchanged. The null reverse path `<>` is the empty address.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Address {
    pub(crate) text: String,
    /// Byte offset of the `@` separating local part and domain; `None` for `<>` and for the
    /// bare `postmaster` recipient (RFC 5321 §4.5.1).
    pub(crate) at: Option<usize>,
}

impl Address {
    /// The null reverse path `<>`.
    pub fn null() -> Address {
        Address::default()
    }

    /// Makes this the null path, keeping the buffer for reuse.
    pub fn clear(&mut self) {
        self.text.clear();
        self.at = None;
    }

    /// True for `<>`.
    pub fn is_null(&self) -> bool {
        self.text.is_empty()
    }

    /// The whole mailbox, `local@domain` (empty for `<>`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The local part, as sent (quoted if it was quoted).
    pub fn local(&self) -> &str {
        match self.at {
            Some(at) => &self.text[..at],
            None => &self.text,
        }
    }

    /// The domain or address literal (`[1.2.3.4]`), as sent; empty for `<>` and `postmaster`.
    pub fn domain(&self) -> &str {
        match self.at {
            Some(at) => &self.text[at + 1..],
            None => "",
        }
    }

    /// True if the address has non-ASCII characters (needs SMTPUTF8, RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.text.is_ascii()
    }

    /// True for a bare `postmaster` (any case), the one recipient without a domain RFC 5321
    /// requires a server to accept.
    pub fn is_bare_postmaster(&self) -> bool {
        self.at.is_none() && self.text.eq_ignore_ascii_case("postmaster")
    }
}

impl std::fmt::Display for Address {
    /// The address in angle brackets, as in SMTP: `<a@b>` or `<>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.text)
    }
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.text)
    }
}

/// `BODY=` (RFC 6152 8BITMIME, RFC 3030 BINARYMIME is not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// DSN `RET=` (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

/// The parameters of `MAIL FROM`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870), the size the client declares.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: BodyType,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// DSN `RET=`.
    pub ret: Option<Ret>,
    /// DSN `ENVID=`, still xtext-encoded as received (RFC 3461 §4.4), so it relays unchanged.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954 §5), xtext as received.
    pub auth: Option<String>,
}

/// DSN `NOTIFY=` (RFC 3461 §4.1): `NEVER`, or any of SUCCESS, FAILURE, DELAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// True if no NOTIFY was given.
    pub fn is_unset(&self) -> bool {
        *self == Notify::default()
    }
}

impl std::fmt::Display for Notify {
    /// The value of `NOTIFY=`: `NEVER`, or the classes joined by commas.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.never {
            return f.write_str("NEVER");
        }
        let classes = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let set: Vec<&str> = classes.iter().filter(|c| c.0).map(|c| c.1).collect();
        f.write_str(&set.join(","))
    }
}

impl MailParams {
    /// The parameters as the client would send them again after `MAIL FROM:<...>`
    /// (`SIZE=10`, `BODY=8BITMIME`, `SMTPUTF8`, `RET=HDRS`, `ENVID=`, `AUTH=`); a `BODY=7BIT`
    /// cannot be told from none and is left out.
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(size) = self.size {
            w.push(format!("SIZE={size}"));
        }
        if self.body == BodyType::EightBitMime {
            w.push("BODY=8BITMIME".into());
        }
        if self.smtputf8 {
            w.push("SMTPUTF8".into());
        }
        match self.ret {
            Some(Ret::Full) => w.push("RET=FULL".into()),
            Some(Ret::Hdrs) => w.push("RET=HDRS".into()),
            None => {}
        }
        if let Some(envid) = &self.envid {
            w.push(format!("ENVID={envid}"));
        }
        if let Some(auth) = &self.auth {
            w.push(format!("AUTH={auth}"));
        }
        w
    }
}

impl RcptParams {
    /// The parameters as the client would send them again after `RCPT TO:<...>`
    /// (`NOTIFY=`, `ORCPT=`).
    pub fn words(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.notify.is_unset() {
            w.push(format!("NOTIFY={}", self.notify));
        }
        if let Some(orcpt) = &self.orcpt {
            w.push(format!("ORCPT={orcpt}"));
        }
        w
    }
}

/// The parameters of `RCPT TO`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// DSN `NOTIFY=`.
    pub notify: Notify,
    /// DSN `ORCPT=` as received (`addr-type;xtext`), so it relays unchanged.
    pub orcpt: Option<String>,
}

/// One accepted recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub addr: Address,
    pub params: RcptParams,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_written_back_as_esmtp_words() {
        assert!(MailParams::default().words().is_empty());
        let mail = MailParams {
            size: Some(10),
            body: BodyType::EightBitMime,
            smtputf8: true,
            ret: Some(Ret::Hdrs),
            envid: Some("QQ+2B1".into()),
            auth: Some("<>".into()),
        };
        assert_eq!(
            mail.words(),
            [
                "SIZE=10",
                "BODY=8BITMIME",
                "SMTPUTF8",
                "RET=HDRS",
                "ENVID=QQ+2B1",
                "AUTH=<>"
            ]
        );
        let never = Notify {
            never: true,
            ..Notify::default()
        };
        assert_eq!(never.to_string(), "NEVER");
        let rcpt = RcptParams {
            notify: Notify {
                failure: true,
                delay: true,
                ..Notify::default()
            },
            orcpt: Some("rfc822;a@b.example".into()),
        };
        assert_eq!(
            rcpt.words(),
            ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;a@b.example"]
        );
        assert!(RcptParams::default().words().is_empty());
    }
}
