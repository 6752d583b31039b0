//! The `DomainKey-Signature` tag list (RFC 4870 §3.3) and the sending address it must cover
//! (§3.2: `Sender:` if present, else `From:`). Tag lists are parsed by the `dkim` plugin's
//! parser (same syntax, RFC 6376 §3.2).

use ringsmtpd_plugin_api::dnsutil::check_zone;

use super::canon::Canon;
use crate::dkim::signature::{base64, clean, tag_list};

/// Header names in `h=` at most.
const MAX_H: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkSignature {
    /// `d=`, lowercased.
    pub domain: String,
    pub selector: String,
    pub canon: Canon,
    /// `h=`, lowercased: the header fields signed, when the signer listed them.
    pub headers: Option<Vec<String>>,
    pub b: Vec<u8>,
}

/// A signature that cannot be checked: why (fixed text), and the `d=` it names, cleaned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub why: &'static str,
    pub domain: String,
}

/// Parses a DomainKey-Signature value (what follows the colon).
pub fn parse(value: &[u8]) -> Result<DkSignature, Bad> {
    let text = std::str::from_utf8(value).map_err(|_| Bad {
        why: "signature is not UTF-8",
        domain: String::new(),
    })?;
    let tags = tag_list(text).map_err(|why| Bad {
        why,
        domain: String::new(),
    })?;
    let get = |name: &str| tags.iter().find(|(t, _)| *t == name).map(|(_, v)| *v);
    let domain = get("d").unwrap_or("").to_ascii_lowercase();
    let bad = |why| Bad {
        why,
        domain: clean(&domain),
    };
    if get("a").is_some_and(|a| a != "rsa-sha1") {
        return Err(bad("unknown algorithm a= (only rsa-sha1)"));
    }
    if get("q").is_some_and(|q| q != "dns") {
        return Err(bad("unknown query method q= (only dns)"));
    }
    let canon = Canon::parse(get("c").unwrap_or("simple"))
        .ok_or_else(|| bad("unknown canonicalization c="))?;
    if domain.is_empty() || check_zone(&domain).is_err() || domain.ends_with('.') {
        return Err(bad("bad or missing d="));
    }
    let selector = get("s").unwrap_or("");
    if selector.is_empty() || check_zone(selector).is_err() || selector.ends_with('.') {
        return Err(bad("bad or missing s="));
    }
    let b = base64(get("b").ok_or_else(|| bad("no b= tag"))?).map_err(bad)?;
    if b.is_empty() {
        return Err(bad("empty b="));
    }
    let headers = match get("h") {
        None => None,
        Some(h) => {
            let names: Vec<String> = h
                .split(':')
                .map(|n| n.trim_matches([' ', '\t', '\r', '\n']).to_ascii_lowercase())
                .collect();
            if names.len() > MAX_H || names.iter().any(String::is_empty) {
                return Err(bad("bad h="));
            }
            Some(names)
        }
    };
    Ok(DkSignature {
        domain,
        selector: selector.to_string(),
        canon,
        headers,
        b,
    })
}

/// The sending address of a `From:` or `Sender:` value: the one mailbox's `local@domain`
/// (domain lowercased), or `None` for a group, several mailboxes or no parsable address.
/// Comments and quoted display names are skipped.
pub fn mailbox(value: &str) -> Option<(String, String)> {
    let mut plain = String::with_capacity(value.len());
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            _ if quoted || depth > 0 => {}
            '<' if angle.is_none() && !in_angle => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            ',' | ';' | '<' | '>' => return None,
            c if in_angle => angle.get_or_insert_with(String::new).push(c),
            c => plain.push(c),
        }
    }
    if quoted || depth > 0 || in_angle {
        return None;
    }
    let addr = angle.unwrap_or(plain);
    let addr = addr.trim();
    let (local, domain) = addr.rsplit_once('@')?;
    let domain = domain.trim().to_ascii_lowercase();
    if local.is_empty() || local.contains(char::is_whitespace) || check_zone(&domain).is_err() {
        return None;
    }
    Some((local.to_string(), domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_parse_strictly() {
        let s = parse(b" a=rsa-sha1; q=dns; c=nofws;\r\n s=sel; d=Example.COM;\r\n h=From : Subject; b=AAEC\r\n AwQ=;").unwrap();
        assert_eq!(s.domain, "example.com");
        assert_eq!(s.selector, "sel");
        assert_eq!(s.canon, Canon::Nofws);
        assert_eq!(s.headers, Some(vec!["from".into(), "subject".into()]));
        assert_eq!(s.b, [0, 1, 2, 3, 4]);
        let s = parse(b"s=sel; d=example.com; b=AAEC").unwrap();
        assert_eq!((s.canon, s.headers), (Canon::Simple, None));
        for (value, why) in [
            (
                "a=rsa-sha256; s=x; d=example.com; b=AA==",
                "unknown algorithm a= (only rsa-sha1)",
            ),
            (
                "q=dns/txt; s=x; d=example.com; b=AA==",
                "unknown query method q= (only dns)",
            ),
            (
                "c=relaxed; s=x; d=example.com; b=AA==",
                "unknown canonicalization c=",
            ),
            ("s=x; b=AA==", "bad or missing d="),
            ("s=x; d=exa mple.com; b=AA==", "bad or missing d="),
            ("d=example.com; b=AA==", "bad or missing s="),
            ("s=x; d=example.com", "no b= tag"),
            ("s=x; d=example.com; b=!!", "bad base64"),
            ("s=x; d=example.com; h=from::to; b=AA==", "bad h="),
            ("s=x; s=y; d=example.com; b=AA==", "duplicate tag"),
        ] {
            let got = parse(value.as_bytes()).map(|_| ()).map_err(|b| b.why);
            assert!(got.is_err(), "{value}");
            if why != "bad base64" && why != "duplicate tag" {
                assert_eq!(got, Err(why), "{value}");
            }
        }
        let long: String = (0..100).map(|i| format!("h{i}:")).collect();
        let value = format!("s=x; d=example.com; h={long}from; b=AA==");
        assert_eq!(parse(value.as_bytes()).map_err(|b| b.why), Err("bad h="));
    }

    #[test]
    fn the_sending_mailbox() {
        let m = |v: &str| mailbox(v).map(|(l, d)| format!("{l}@{d}"));
        assert_eq!(
            m("Joe <joe@Example.COM>").as_deref(),
            Some("joe@example.com")
        );
        assert_eq!(
            m(" joe@example.com (Joe)").as_deref(),
            Some("joe@example.com")
        );
        assert_eq!(
            m("\"Smith, <Joe>\" <joe@example.com>").as_deref(),
            Some("joe@example.com")
        );
        assert_eq!(
            m("(a <comment>) joe@example.com").as_deref(),
            Some("joe@example.com")
        );
        for bad in [
            "a@example.com, b@example.com",
            "group: a@example.com;",
            "<a@example.com> <b@example.com>",
            "joe",
            "@example.com",
            "joe@exa mple.com",
            "\"open <joe@example.com>",
            "<joe@example.com",
        ] {
            assert_eq!(m(bad), None, "{bad}");
        }
    }
}
