//! Signing (RFC 6376 §5) the mail of relay and authenticated clients: which domain signs, which
//! header fields, the DKIM-Signature field folded as written, the signature over the same
//! bytes the verifier checks ([`HeaderIndex::data_for`]).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use ringsmtpd_plugin_api::{blocking, Cx, Level, Transaction};

use super::canon::{BodyHasher, Canon};
use super::keys::DomainKey;
use super::signature::{base64_encode, MAX_SIGNED_FIELDS};
use super::verify::HeaderIndex;
use super::{header_section, Dkim};

/// The fields signed when present (RFC 6376 §5.4.1's list, the MIME fields and Message-ID),
/// once per instance. Received, Return-Path and trace fields are not: relays add them.
pub const SIGNED_FIELDS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-id",
    "content-description",
    "content-disposition",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
];

/// Fields named once more than they occur ("oversigned", RFC 6376 §8.15): a From added on
/// the way breaks the signature instead of being shown as the author.
pub const OVERSIGNED: &[&str] = &["from"];

/// Width the signature field is folded to.
const WIDTH: usize = 78;

/// The `h=` names for a message: each field of [`SIGNED_FIELDS`] once per instance, those of
/// [`OVERSIGNED`] once more; at most [`MAX_SIGNED_FIELDS`] names (what verifiers here accept;
/// of a field repeated beyond that, the bottom instances are signed).
pub fn signed_names(index: &HeaderIndex<'_>) -> Vec<String> {
    let mut names = Vec::new();
    for name in SIGNED_FIELDS {
        let extra = usize::from(OVERSIGNED.contains(name));
        for _ in 0..index.count(name) + extra {
            if names.len() == MAX_SIGNED_FIELDS {
                return names;
            }
            names.push(name.to_string());
        }
    }
    names
}

/// The domain of the first address of the first From field, lowercased (RFC 5322 §3.6.2:
/// `Name <local@domain>` or `local@domain`); `None` if there is none that is a domain name.
pub fn from_domain(index: &HeaderIndex<'_>) -> Option<String> {
    let field = index.first("from")?;
    let value = &field[field.iter().position(|&b| b == b':')? + 1..];
    let value = std::str::from_utf8(value).ok()?;
    // The address: inside the first <...>, else the first word with an @.
    let addr = match value.find('<') {
        Some(open) => value[open + 1..].split('>').next()?,
        None => value
            .split([',', ' ', '\t', '\r', '\n'])
            .find(|w| w.contains('@'))?,
    };
    let (_, domain) = addr.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    super::signature::dns_name(&domain).then_some(domain)
}

/// How a token follows the one before it on the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// After a space.
    Space,
    /// Directly (inside `h=` and `b=`).
    Direct,
    /// On a new line.
    Line,
}

/// Breaks `tokens` into lines of at most [`WIDTH`] characters (a token longer than that gets
/// a line of its own), the first line `first` characters shorter. A fold replaces the space
/// or nothing between two tokens (RFC 6376 allows white space between tags and inside `h=`
/// and `b=`).
fn fold(tokens: &[(Join, &str)], first: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    let mut room = WIDTH.saturating_sub(first);
    for &(join, token) in tokens {
        let line = lines.last_mut().expect("one line at least");
        let space = join == Join::Space && !line.is_empty();
        let need = token.len() + usize::from(space);
        if !line.is_empty() && (join == Join::Line || line.len() + need > room) {
            lines.push(token.to_string());
            room = WIDTH - 1;
            continue;
        }
        if space {
            line.push(' ');
        }
        line.push_str(token);
    }
    lines
}

/// The `b=` value in pieces that fold between them.
fn b_pieces(b: &str) -> Vec<&str> {
    b.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect()
}

/// The DKIM-Signature field's lines for `key` over a message with these `names` and body
/// hash, up to and including `b=` (empty), and then with `b` filled in.
struct Field {
    tokens: Vec<String>,
}

impl Field {
    fn new(key: &DomainKey, names: &[String], bh: &[u8], now: u64) -> Field {
        let mut tokens = vec![
            "v=1;".to_string(),
            format!("a={};", key.key.algorithm_name()),
            "c=relaxed/relaxed;".to_string(),
            format!("d={};", key.domain),
            format!("s={};", key.selector),
            format!("t={now};"),
        ];
        for (i, name) in names.iter().enumerate() {
            let (head, tail) = match (i == 0, i + 1 == names.len()) {
                (true, true) => ("h=", ";"),
                (true, false) => ("h=", ":"),
                (false, true) => ("", ";"),
                (false, false) => ("", ":"),
            };
            tokens.push(format!("{head}{name}{tail}"));
        }
        tokens.push(format!("bh={};", base64_encode(bh)));
        Field { tokens }
    }

    /// The lines with `b=` last, on a line of its own (so they are the same with `b=` empty
    /// and filled in), its value folded into pieces (RFC 6376 §3.5: white space in `b=` is
    /// ignored).
    fn lines(&self, b: &str) -> Vec<String> {
        let mut tokens: Vec<(Join, &str)> = Vec::with_capacity(self.tokens.len() + 8);
        // Names after the first continue the h= list directly.
        let mut in_h = false;
        for t in &self.tokens {
            let join = match in_h {
                true => Join::Direct,
                false => Join::Space,
            };
            in_h = (t.starts_with("h=") || in_h) && t.ends_with(':');
            tokens.push((join, t.as_str()));
        }
        let pieces = b_pieces(b);
        let first_b = format!("b={}", pieces.first().copied().unwrap_or(""));
        tokens.push((Join::Line, &first_b));
        for piece in pieces.into_iter().skip(1) {
            tokens.push((Join::Direct, piece));
        }
        fold(&tokens, "DKIM-Signature: ".len())
    }
}

/// The field as written (with CRLF TAB folds), for the signed data.
fn field_text(lines: &[String]) -> String {
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut out = String::new();
    ringsmtpd_plugin_api::headers::write_folded_field(&mut out, "DKIM-Signature", &lines);
    out.truncate(out.len() - 2);
    out
}

impl Dkim {
    /// Signs the message of a relay or authenticated client with the key of its From domain
    /// (else its envelope sender's domain), if there is one; logs why not otherwise.
    pub(super) async fn sign(&self, cx: &mut Cx, txn: &mut Transaction) {
        let (header, body_at) = match header_section(&*cx.svc, &txn.body).await {
            Ok(h) => h,
            Err((_, why)) => {
                let msg = format_args!("error, not signed: {why}");
                return self.common.log(cx, Level::Error, msg);
            }
        };
        let index = HeaderIndex::new(&header);
        let from = from_domain(&index);
        let sender = Some(txn.sender.domain().to_ascii_lowercase()).filter(|d| !d.is_empty());
        let Some(key) = [&from, &sender]
            .into_iter()
            .flatten()
            .find_map(|d| self.keys.find(d))
        else {
            let domains: Vec<&str> = [&from, &sender]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let msg = match domains.is_empty() {
                true => "skip, no From or sender domain to sign for".to_string(),
                false => format!("skip, no key for {}", domains.join(" or ")),
            };
            return self.common.log(cx, Level::Info, format_args!("{msg}"));
        };
        if index.count("from") == 0 {
            // RFC 6376 §5.4: From must be signed; a message without one is not signed.
            let msg = format_args!("skip, no From field to sign");
            return self.common.log(cx, Level::Info, msg);
        }
        let names = signed_names(&index);
        let hashers = vec![BodyHasher::new(Canon::Relaxed, None)];
        let Ok(hashes) = self.body_hashes(cx, txn, body_at, hashers).await else {
            return; // logged
        };
        let now = cx
            .svc
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let field = Field::new(key, &names, &hashes[0].0, now);
        let unsigned = field_text(&field.lines(""));
        let data = index.data_for(&names, Canon::Relaxed, unsigned.as_bytes());
        let signer = Arc::clone(&key.key);
        let signed = match signer.is_slow() {
            true => blocking(&*cx.svc, move || signer.sign(&data)).await,
            false => Some(signer.sign(&data)),
        };
        let b = match signed {
            Some(Ok(b)) => base64_encode(&b),
            Some(Err(e)) => {
                return self
                    .common
                    .log(cx, Level::Error, format_args!("error, not signed: {e}"));
            }
            None => {
                let msg = format_args!("error, not signed: the signing task failed");
                return self.common.log(cx, Level::Error, msg);
            }
        };
        let lines = field.lines(&b);
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        txn.prepend_folded_header("DKIM-Signature", &lines);
        self.common.log(
            cx,
            Level::Info,
            format_args!(
                "pass, signed d={} s={} a={} h={}",
                key.domain,
                key.selector,
                key.key.algorithm_name(),
                names.join(":")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dkim::keys::tests::write_key;
    use crate::dkim::private::tests::{ED25519_PKCS8, RSA1024_PKCS1, RSA2048_PKCS8};
    use crate::dkim::private::SigningKey;
    use crate::dkim::tests::{check_with, Stored};
    use ringsmtpd_plugin_api::dns::QType;
    use ringsmtpd_plugin_api::testing::records::txt;
    use ringsmtpd_plugin_api::testing::{cx, run, set_message, spool, FakeServices, TempDir};
    use ringsmtpd_plugin_api::{
        AuthInfo, ConfigError, ConfigLine, ConfigSource, Outcome, Plugin, PluginInit,
    };
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    /// A config directory on disk with nothing in it but `dkim/`.
    struct DirConfig(PathBuf);

    impl ConfigSource for DirConfig {
        fn lines(&self, _: &str) -> Result<Option<Vec<ConfigLine>>, ConfigError> {
            Ok(None)
        }
        fn dir(&self) -> Option<&Path> {
            Some(&self.0)
        }
    }

    fn plugin(config: &Path) -> Result<Box<dyn Plugin>, ConfigError> {
        let origin = ringsmtpd_plugin_api::testing::origin("dkim");
        crate::dkim::new(&PluginInit {
            name: "dkim",
            args: &[],
            config: &DirConfig(config.to_path_buf()),
            origin: &origin,
        })
    }

    const MESSAGE: &str = "Received: from a by b; Fri, 4 Dec 2026 10:00:00 +0000\r\n\
        From: Joe <joe@example.org>\r\nTo: Sue <sue@example.net>\r\n\
        Subject:  Lunch \r\n  today?\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n\
        Message-ID: <1@example.org>\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=utf-8\r\nX-Mailer: test\r\n\r\n\
        Hi  there. \r\n\r\nJoe\r\n\r\n\r\n";

    /// Signs `message` as the plugin does for an authenticated client: the message with the
    /// signature on top, and the log.
    fn sign(config: &Path, message: &str, stored: Stored) -> (String, Rc<FakeServices>) {
        let p = plugin(config).unwrap();
        let (mut c, svc) = cx("192.0.2.1:4242");
        c.conn.auth = Some(AuthInfo {
            user: "joe".into(),
            mechanism: "PLAIN".into(),
        });
        let mut txn = Transaction::default();
        txn.sender =
            ringsmtpd_plugin_api::address::parse_path("<joe@bounce.example.com>", true, false)
                .unwrap();
        let t = TempDir::new("dkimsign");
        match stored {
            Stored::Spooled => spool(&mut txn.body, &t.path().join("msg"), message.as_bytes()),
            _ => set_message(&mut txn, message),
        }
        assert_eq!(
            run(p.data_post_headers(&mut c, &mut txn)),
            Outcome::Declined
        );
        assert!(
            txn.notes
                .get::<ringsmtpd_plugin_api::shared::AuthResults>()
                .is_none(),
            "not verified"
        );
        assert_eq!(run(p.data_post(&mut c, &mut txn)), Outcome::Declined);
        (format!("{}{message}", txn.added_headers), svc)
    }

    fn verify(message: &str, name: &str, record: &str) -> crate::dkim::tests::Run {
        check_with(
            "dkim",
            message.as_bytes(),
            Stored::Memory,
            |svc: &FakeServices| {
                svc.answer(name, QType::Txt, vec![txt(record)]);
            },
        )
    }

    #[test]
    fn signed_mail_verifies_and_tampering_fails() {
        let t = TempDir::new("dkimconf");
        for (pem, bits) in [
            (RSA2048_PKCS8, "2048"),
            (RSA1024_PKCS1, "1024"),
            (ED25519_PKCS8, "ed"),
        ] {
            write_key(t.path(), "example.org", "sel", pem);
            let record = SigningKey::from_pem(pem).unwrap().record();
            let (signed, svc) = sign(t.path(), MESSAGE, Stored::Memory);
            assert!(signed.starts_with("DKIM-Signature: v=1; a="), "{signed}");
            for line in signed.split("\r\n") {
                assert!(line.len() <= 78, "{bits}: {line:?}");
            }
            assert!(svc.logged("pass, signed d=example.org s=sel a="));
            assert!(svc.logged("h=from:from:subject:date:message-id:to:mime-version:content-type"));
            let r = verify(&signed, "sel._domainkey.example.org", &record);
            assert_eq!(r.clauses.len(), 1);
            assert!(
                r.clauses[0].starts_with("dkim=pass header.d=example.org "),
                "{bits}: {:?}",
                r.clauses
            );
            // Relaxed/relaxed: re-folding and blanks survive.
            let moved = signed
                .replace("Subject:  Lunch \r\n  today?", "subject: Lunch today?")
                .replace("Hi  there. ", "Hi there.");
            assert!(
                verify(&moved, "sel._domainkey.example.org", &record).clauses[0]
                    .starts_with("dkim=pass ")
            );
            // A changed body, a changed signed field, an added From: fail, refused.
            for (from, to) in [
                ("Hi  there.", "Hi  where."),
                ("Subject:  Lunch", "Subject:  Dinner"),
                (
                    "From: Joe <joe@example.org>",
                    "From: Evil <ceo@example.org>\r\nFrom: Joe <joe@example.org>",
                ),
                ("To: Sue", "To: Bob"),
            ] {
                let r = verify(
                    &signed.replacen(from, to, 1),
                    "sel._domainkey.example.org",
                    &record,
                );
                assert!(
                    r.clauses[0].starts_with("dkim=fail "),
                    "{bits} {to}: {:?}",
                    r.clauses
                );
                assert!(r.outcome.is_deny());
            }
            // An unsigned field may change.
            let r = verify(
                &signed.replace("X-Mailer: test", "X-Mailer: other"),
                "sel._domainkey.example.org",
                &record,
            );
            assert!(r.clauses[0].starts_with("dkim=pass "));
        }
    }

    #[test]
    fn spooled_mail_is_signed_the_same() {
        let t = TempDir::new("dkimconf");
        write_key(t.path(), "example.org", "sel", ED25519_PKCS8);
        let record = SigningKey::from_pem(ED25519_PKCS8).unwrap().record();
        let (mem, _) = sign(t.path(), MESSAGE, Stored::Memory);
        let (spooled, _) = sign(t.path(), MESSAGE, Stored::Spooled);
        let bh = |m: &str| m[m.find("bh=").unwrap()..][..48].to_string();
        assert_eq!(bh(&mem), bh(&spooled));
        assert!(
            verify(&spooled, "sel._domainkey.example.org", &record).clauses[0]
                .starts_with("dkim=pass ")
        );
    }

    #[test]
    fn which_domain_signs() {
        let t = TempDir::new("dkimconf");
        // No key at all: one log line, no header.
        let (signed, svc) = sign(t.path(), MESSAGE, Stored::Memory);
        assert_eq!(signed, MESSAGE);
        assert!(svc.logged("skip, no key for example.org or bounce.example.com"));
        // No From field: not signed, even with the sender's key.
        write_key(t.path(), "example.com", "env", ED25519_PKCS8);
        let no_from = MESSAGE.replace("From: Joe <joe@example.org>\r\n", "");
        let (signed, svc) = sign(t.path(), &no_from, Stored::Memory);
        assert_eq!(signed, no_from);
        assert!(svc.logged("skip, no From field to sign"));
        // The envelope sender's parent domain when From's has none.
        let (signed, _) = sign(t.path(), MESSAGE, Stored::Memory);
        assert!(
            signed.contains(" d=example.com;") && signed.contains("s=env;"),
            "{signed}"
        );
        // The From domain first; a link signs as its target.
        write_key(t.path(), "hosting.example", "h1", ED25519_PKCS8);
        std::os::unix::fs::symlink("hosting.example", t.path().join("dkim/example.org")).unwrap();
        let (signed, _) = sign(t.path(), MESSAGE, Stored::Memory);
        assert!(
            signed.contains(" d=hosting.example;") && signed.contains("s=h1;"),
            "{signed}"
        );
        // A relay client (no AUTH) is signed too; mail from elsewhere is verified, not signed.
        let p = plugin(t.path()).unwrap();
        let (mut c, _) = cx("192.0.2.1:1");
        c.conn.relay_client = true;
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        run(p.data_post_headers(&mut c, &mut txn));
        assert!(txn.added_headers.starts_with("DKIM-Signature: "));
        let (mut c, _) = cx("192.0.2.1:1");
        let mut txn = Transaction::default();
        set_message(&mut txn, MESSAGE);
        run(p.data_post_headers(&mut c, &mut txn));
        assert!(!txn.added_headers.contains("DKIM-Signature"));
        assert!(txn
            .notes
            .get::<ringsmtpd_plugin_api::shared::AuthResults>()
            .is_some());
    }

    /// `dkim-keygen`'s key signs, and its printed record verifies the signature.
    #[test]
    fn generated_keys_sign_and_their_record_verifies() {
        use crate::dkim::keygen::{generate, Request};
        let t = TempDir::new("dkimconf");
        for rsa_bits in [None, Some(1024)] {
            let req = Request {
                config: t.path().to_path_buf(),
                domain: "example.org".into(),
                selector: "gen".into(),
                rsa_bits,
                force: true,
            };
            let generated = generate(&req).unwrap();
            // The zone line's strings, joined, are the record.
            let record: String = generated.record.split('"').skip(1).step_by(2).collect();
            let (signed, _) = sign(t.path(), MESSAGE, Stored::Memory);
            let r = verify(&signed, "gen._domainkey.example.org", &record);
            assert!(
                r.clauses[0].starts_with("dkim=pass header.d=example.org "),
                "{rsa_bits:?}: {:?}",
                r.clauses
            );
            let r = verify(
                &signed.replace("Joe\r\n", "Jim\r\n"),
                "gen._domainkey.example.org",
                &record,
            );
            assert!(r.clauses[0].starts_with("dkim=fail "));
        }
    }

    #[test]
    fn a_bad_key_is_a_config_error() {
        let t = TempDir::new("dkimconf");
        write_key(t.path(), "example.org", "sel", "not a key");
        let Err(e) = plugin(t.path()) else {
            panic!("built with a bad key")
        };
        assert!(e.file.ends_with("dkim/example.org/private"), "{e}");
    }

    #[test]
    fn from_domains() {
        let cases: &[(&str, Option<&str>)] = &[
            ("From: Joe <joe@Example.ORG>\r\n\r\n", Some("example.org")),
            ("From: joe@example.org (Joe)\r\n\r\n", Some("example.org")),
            (
                "From: \"a@b\" <joe@sub.example.org.>\r\n\r\n",
                Some("sub.example.org"),
            ),
            (
                "From: a@one.example, b@two.example\r\n\r\n",
                Some("one.example"),
            ),
            ("From: undisclosed\r\n\r\n", None),
            ("From: <joe@bad domain>\r\n\r\n", None),
            ("To: x@example.org\r\n\r\n", None),
        ];
        for (header, want) in cases {
            let index = HeaderIndex::new(header.as_bytes());
            assert_eq!(from_domain(&index).as_deref(), *want, "{header:?}");
        }
    }

    #[test]
    fn names_oversign_from_and_count_instances() {
        let h = "Received: x\r\nFrom: a@b.example\r\nTo: c@d.example\r\nCc: e@f.example\r\nTo: g@h.example\r\nX-Mailer: m\r\nSubject: s\r\n\r\n";
        let index = HeaderIndex::new(h.as_bytes());
        assert_eq!(signed_names(&index).join(":"), "from:from:subject:to:to:cc");
        let many = format!(
            "From: a@b.example\r\n{}\r\n",
            "To: x@y.example\r\n".repeat(1000)
        );
        let names = signed_names(&HeaderIndex::new(many.as_bytes()));
        assert_eq!(names.len(), MAX_SIGNED_FIELDS);
        assert_eq!(names[..3], ["from", "from", "to"]);
    }

    #[test]
    fn folding_keeps_lines_short() {
        use Join::*;
        let tokens = [
            (Space, "v=1;"),
            (Space, "h=from:"),
            (Direct, "to;"),
            (Line, "b=abc"),
        ];
        assert_eq!(fold(&tokens, 16), ["v=1; h=from:to;", "b=abc"]);
        let long = "x".repeat(70);
        let tokens = [
            (Space, "v=1;"),
            (Space, &long),
            (Direct, &long),
            (Space, "z"),
        ];
        let lines = fold(&tokens, 16);
        assert_eq!(
            lines,
            ["v=1;".to_string(), long.clone(), format!("{long} z")]
        );
    }
}
