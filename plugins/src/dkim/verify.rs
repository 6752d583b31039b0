//! Checking one signature (RFC 6376 §6.1.3): the header fields it signs, selected bottom-up;
//! its own field with `b=` emptied; the signature over them with RSA-SHA256 (RFC 8301) or
//! Ed25519-SHA256 (RFC 8463).

use std::collections::HashMap;
use std::fmt;

use ring::{digest, signature as sig};

use super::canon;
use super::key::{Key, PublicKey};
use super::signature::{Algorithm, Signature};

/// The RFC 8601 §2.7.1 results a signature can have (`none` is for the message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Policy,
    TempError,
    PermError,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Policy => "policy",
            Verdict::TempError => "temperror",
            Verdict::PermError => "permerror",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// The header fields of a message, for selecting the ones a signature names.
pub struct HeaderIndex<'m> {
    /// Each well-formed field as received (`Name: value`, folds kept, no final line end).
    fields: Vec<&'m [u8]>,
    /// Lowercased name -> the indexes of its fields, top to bottom.
    by_name: HashMap<String, Vec<usize>>,
}

/// The bytes of `part` as a range of `whole` (both borrow the same buffer).
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize)
}

impl<'m> HeaderIndex<'m> {
    pub fn new(header: &'m [u8]) -> HeaderIndex<'m> {
        let mut fields = Vec::new();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        for f in ringsmtpd_plugin_api::headers::fields(header).flatten() {
            let start = offset_in(header, f.name().as_bytes());
            let end = offset_in(header, f.raw_value()) + f.raw_value().len();
            let Some(raw) = header.get(start..end) else {
                continue;
            };
            by_name
                .entry(f.name().to_ascii_lowercase())
                .or_default()
                .push(fields.len());
            fields.push(raw);
        }
        HeaderIndex { fields, by_name }
    }

    /// How many fields named `name` (lowercase) there are.
    pub fn count(&self, name: &str) -> usize {
        self.by_name.get(name).map_or(0, Vec::len)
    }

    /// The first field named `name` (lowercase), as received.
    pub fn first(&self, name: &str) -> Option<&'m [u8]> {
        let i = *self.by_name.get(name)?.first()?;
        Some(self.fields[i])
    }

    /// The DKIM-Signature fields, top to bottom: (index, raw field, value after the colon).
    pub fn signatures(&self) -> impl Iterator<Item = (usize, &'m [u8])> + '_ {
        self.by_name
            .get("dkim-signature")
            .into_iter()
            .flatten()
            .map(|&i| (i, self.fields[i]))
    }

    /// The data a signature signs (§3.7): the canonical fields of `h=`, each instance taken
    /// from the bottom up (a name listed more often than it occurs adds nothing), then the
    /// signature's own field (`field`) with `b=` emptied and no final CRLF.
    pub fn signed_data(&self, s: &Signature, field: &[u8]) -> Vec<u8> {
        self.data_for(&s.headers, s.header_canon, field)
    }

    /// [`HeaderIndex::signed_data`] for the (lowercase) names `headers` in `canon`: what a
    /// signer signs with the same selection.
    pub fn data_for(&self, headers: &[String], canon: canon::Canon, field: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1024);
        let mut used: HashMap<&str, usize> = HashMap::new();
        for name in headers {
            let Some(list) = self.by_name.get(name.as_str()) else {
                continue;
            };
            let n = used.entry(name.as_str()).or_insert(0);
            if *n < list.len() {
                let i = list[list.len() - 1 - *n];
                *n += 1;
                canon::header(canon, self.fields[i], &mut out);
            }
        }
        canon::header(canon, &without_b(field), &mut out);
        out.truncate(out.len() - 2);
        out
    }
}

/// The signature field with the value of its `b=` tag removed (§3.5, `b=`), all else kept.
pub fn without_b(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|&b| b == b':').map_or(0, |c| c + 1);
    let mut out = field[..colon].to_vec();
    let mut first = true;
    for part in field[colon..].split(|&b| b == b';') {
        if !first {
            out.push(b';');
        }
        first = false;
        let eq = part.iter().position(|&b| b == b'=');
        let is_b = eq.is_some_and(|e| part[..e].trim_ascii() == b"b");
        match eq {
            Some(e) if is_b => out.extend_from_slice(&part[..=e]),
            _ => out.extend_from_slice(part),
        }
    }
    out
}

/// Checks the signature `s` over `data` (from [`HeaderIndex::signed_data`]) with `key`.
pub fn check(s: &Signature, key: &Key, data: &[u8]) -> bool {
    match (&key.key, s.algorithm) {
        (PublicKey::Rsa { n, e }, Algorithm::RsaSha256) => {
            let components = sig::RsaPublicKeyComponents { n, e };
            components
                .verify(
                    &sig::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                    data,
                    &s.b,
                )
                .is_ok()
        }
        (PublicKey::Ed25519(k), Algorithm::Ed25519Sha256) => {
            // RFC 8463 §3: Ed25519 signs the SHA-256 of the data ("PureEdDSA" over the hash).
            let hash = digest::digest(&digest::SHA256, data);
            sig::UnparsedPublicKey::new(&sig::ED25519, k)
                .verify(hash.as_ref(), &s.b)
                .is_ok()
        }
        _ => false,
    }
}

/// `i=` against a key with `t=s`: the identity's domain must be `d=` itself.
pub fn strict_identity_ok(s: &Signature) -> bool {
    s.identity
        .rsplit_once('@')
        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&s.domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_tag_is_emptied_only() {
        let f = b"DKIM-Signature: v=1; bh=abc=; b=xy\r\n z=;\r\n d=x";
        assert_eq!(without_b(f), b"DKIM-Signature: v=1; bh=abc=; b=;\r\n d=x");
        let f = b"DKIM-Signature:b = xyz";
        assert_eq!(without_b(f), b"DKIM-Signature:b =");
    }

    #[test]
    fn fields_are_taken_bottom_up() {
        let h = b"From: a\r\nSubject: one\r\nsubject: two\r\nTo: t\r\n\r\n";
        let idx = HeaderIndex::new(h);
        let s = super::super::signature::parse(
            b"v=1; a=rsa-sha256; d=x.y; s=s; h=subject:from:subject:subject:x; bh=4bLNXImK9drULnmePzZNEBleUanJCX5PIsDIFoH4KTQ=; b=AAAA",
        )
        .unwrap();
        let data = idx.signed_data(&s, b"DKIM-Signature: b=AAAA");
        assert_eq!(
            String::from_utf8(data).unwrap(),
            "subject: two\r\nFrom: a\r\nSubject: one\r\nDKIM-Signature: b="
        );
    }
}
