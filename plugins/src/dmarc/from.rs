//! The Author Domain (RFC 7489 §3.1, §6.6.1): the domain of the addresses in the message's
//! one `From:` field (RFC 5322 §3.6.2, `mailbox-list`; RFC 6854 groups).
//!
//! The value is read with its comments dropped and quoted strings skipped, split into
//! mailboxes at the commas outside quotes, comments and angle brackets; each mailbox's
//! address is the part in `<...>` if there is one (an obsolete route before a `:` dropped),
//! else the whole mailbox, and its domain what follows the last `@`. Several mailboxes of one
//! domain are one Author Domain; several domains, none, or a domain that is not a DNS name of
//! letters, digits, `-` and `_` (a literal `[...]`, non-ASCII, an empty label) are errors
//! the plugin reports (§6.6.1 says such mail is typically rejected).

use ringsmtpd_plugin_api::dnsutil::check_zone;
use ringsmtpd_plugin_api::headers::fields;

/// Why there is no Author Domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromError {
    /// No `From:` field.
    Missing,
    /// More than one `From:` field (RFC 5322 §3.6 allows one).
    Repeated,
    /// Addresses of more than one domain in the field.
    Domains,
    /// No address with a usable domain in the field.
    Unparseable,
    /// No `From:` in the part of a huge header section the core kept in memory.
    Unread,
}

impl FromError {
    /// For the log and the A-R comment.
    pub fn why(self) -> &'static str {
        match self {
            FromError::Missing => "no From header",
            FromError::Repeated => "multiple From headers",
            FromError::Domains => "From header with several domains",
            FromError::Unparseable => "unparseable From header",
            FromError::Unread => "no From header in the first 256 KiB",
        }
    }

    /// True if the message is refused for it (as `reject` says): all but [`FromError::Unread`],
    /// where the From may well be there.
    pub fn refused(self) -> bool {
        self != FromError::Unread
    }

    /// The reply text when the plugin refuses (qpsmtpd's texts where it had them).
    pub fn reply(self) -> &'static str {
        match self {
            FromError::Missing => "empty from address, null sender?",
            FromError::Repeated => "multiple From headers",
            FromError::Domains => "From header with several domains",
            FromError::Unparseable | FromError::Unread => "unparseable from header",
        }
    }
}

/// The longest `From:` value read (a real one is well under 1 KiB).
const MAX_VALUE: usize = 8 * 1024;
/// Mailboxes read in one field at most.
const MAX_MAILBOXES: usize = 100;

/// The Author Domain of a header section, lowercased, without a final dot.
pub fn author_domain(header: &[u8]) -> Result<String, FromError> {
    let mut from = fields(header)
        .filter_map(Result::ok)
        .filter(|f| f.is("From"));
    let field = from.next().ok_or(FromError::Missing)?;
    if from.next().is_some() {
        return Err(FromError::Repeated);
    }
    let value = field.value();
    if value.len() > MAX_VALUE {
        return Err(FromError::Unparseable);
    }
    let mut domain: Option<String> = None;
    for mailbox in mailboxes(&value)?.iter().take(MAX_MAILBOXES) {
        let d = mailbox_domain(mailbox).ok_or(FromError::Unparseable)?;
        match &domain {
            Some(seen) if *seen != d => return Err(FromError::Domains),
            _ => domain = Some(d),
        }
    }
    domain.ok_or(FromError::Unparseable)
}

/// Splits a `mailbox-list` (or group) into mailboxes: comments removed, quoted strings kept
/// as an opaque `""`, group names and their `:`/`;` dropped, empty elements skipped.
fn mailboxes(value: &str) -> Result<Vec<String>, FromError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    let mut angle = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted string (display name or local part): skip to its end.
                loop {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('"') => break,
                        Some(_) => {}
                        None => return Err(FromError::Unparseable),
                    }
                }
                cur.push_str("\"\"");
            }
            '(' => {
                let mut depth = 1;
                while depth > 0 {
                    match chars.next() {
                        Some('\\') => {
                            chars.next();
                        }
                        Some('(') => depth += 1,
                        Some(')') => depth -= 1,
                        Some(_) => {}
                        None => return Err(FromError::Unparseable),
                    }
                }
                cur.push(' ');
            }
            '<' if !angle => {
                angle = true;
                cur.push(c);
            }
            '>' if angle => {
                angle = false;
                cur.push(c);
            }
            ',' | ';' if !angle => out.push(std::mem::take(&mut cur)),
            // A group's name ends at a ':' outside brackets (RFC 6854).
            ':' if !angle => cur.clear(),
            _ => cur.push(c),
        }
    }
    if angle {
        return Err(FromError::Unparseable);
    }
    out.push(cur);
    out.retain(|m| !m.trim().is_empty());
    Ok(out)
}

/// The domain of one mailbox (`name <addr>` or `addr`), checked and lowercased.
fn mailbox_domain(mailbox: &str) -> Option<String> {
    let addr = match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            if !mailbox[close + 1..].trim().is_empty() {
                return None;
            }
            let inner = &mailbox[open + 1..close];
            // obs-route: `<@relay1,@relay2:user@domain>`
            inner.rsplit(':').next().unwrap_or(inner)
        }
        (None, None) => mailbox,
        _ => return None,
    };
    let (local, domain) = addr.trim().rsplit_once('@')?;
    if local.trim().is_empty() {
        return None;
    }
    host_name(domain.trim())
}

/// A domain fit to ask DNS about and to write anywhere (letters, digits, `-`, `_`, labels of
/// at most 63 bytes, 253 in all: `dnsutil::check_zone`), lowercased, a final dot dropped.
fn host_name(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    check_zone(name).ok().map(|()| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(value: &str) -> Result<String, FromError> {
        author_domain(format!("Subject: x\r\nFrom: {value}\r\nTo: y@z.test\r\n\r\n").as_bytes())
    }

    #[test]
    fn the_forms_of_a_mailbox() {
        for (value, want) in [
            ("user@Example.COM", "example.com"),
            ("<user@example.com>", "example.com"),
            ("Joe User <user@example.com.>", "example.com"),
            (
                "\"User, Joe <x@evil.test>\" <user@example.com>",
                "example.com",
            ),
            (
                "user@example.com (Joe <x@evil.test>, nested (deep))",
                "example.com",
            ),
            ("\"quoted@local\"@example.com", "example.com"),
            ("<@relay.test,@other.test:user@example.com>", "example.com"),
            ("a@example.com, B <b@EXAMPLE.com>", "example.com"),
            ("Team: a@example.com, b@example.com;", "example.com"),
        ] {
            assert_eq!(domain(value), Ok(want.to_string()), "{value}");
        }
        let folded = b"From: Joe\r\n <joe@fold.example.org>\r\n\r\n";
        assert_eq!(author_domain(folded), Ok("fold.example.org".into()));
    }

    #[test]
    fn one_field_with_one_domain_or_an_error() {
        assert_eq!(
            author_domain(b"Subject: none\r\n\r\nFrom: in@body.test\r\n"),
            Err(FromError::Missing)
        );
        assert_eq!(
            author_domain(b"From: a@one.test\r\nFROM: a@one.test\r\n\r\n"),
            Err(FromError::Repeated)
        );
        assert_eq!(domain("a@one.test, b@two.test"), Err(FromError::Domains));
        for bad in [
            "",
            "no address",
            "user@",
            "@example.com",
            "user@[192.0.2.1]",
            "user@exa!mple.com",
            "user@exa mple.com",
            "user@ex..ample",
            "user@bücher.example",
            "Joe <user@example.com",
            "Joe user@example.com>",
            "\"unterminated <user@example.com>",
            "(unterminated user@example.com",
            "Undisclosed:;",
            "<a@example.com> trailing",
        ] {
            assert_eq!(domain(bad), Err(FromError::Unparseable), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(MAX_VALUE));
        assert_eq!(domain(&long), Err(FromError::Unparseable));
    }
}
