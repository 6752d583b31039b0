//! The DKIM key record (RFC 6376 §3.6.1): `v=DKIM1; k=rsa|ed25519; h=; s=; t=; p=`, and the
//! public key in `p=`: an RSA SubjectPublicKeyInfo (RFC 5280 §4.1.2.7, RFC 3279 §2.3.1; a
//! bare RSAPublicKey is accepted too) or a 32-byte Ed25519 key (RFC 8463 §4).

use super::signature::{base64, tag_list, Algorithm};

/// RSA key sizes accepted, in bits: RFC 8301 §3.2 (below 1024 MUST NOT be valid) and a cap
/// on the verification cost.
pub const RSA_MIN_BITS: usize = 1024;
pub const RSA_MAX_BITS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ed25519([u8; 32]),
}

/// A usable key record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub key: PublicKey,
    /// `t=y`: the domain is testing DKIM.
    pub testing: bool,
    /// `t=s`: `i=` must be in `d=` itself, not a subdomain.
    pub strict: bool,
}

/// Parses a key record for a signature made with `algorithm`. `Err` is why it is unusable:
/// a `permerror` (a revoked key, `p=` empty, included).
pub fn parse(record: &str, algorithm: Algorithm) -> Result<Key, &'static str> {
    let tags = tag_list(record)?;
    let get = |name: &str| tags.iter().find(|(t, _)| *t == name).map(|(_, v)| *v);
    if let Some(v) = get("v") {
        if v != "DKIM1" || tags.first().map(|(t, _)| *t) != Some("v") {
            return Err("key record: bad v= (must be DKIM1, first)");
        }
    }
    let kind = get("k").unwrap_or("rsa").to_ascii_lowercase();
    if !matches!(kind.as_str(), "rsa" | "ed25519") {
        return Err("key record: unknown key type k=");
    }
    if kind != algorithm.key_type() {
        return Err("key record: key type k= does not match a=");
    }
    if let Some(h) = get("h") {
        if !h
            .split(':')
            .any(|a| a.trim().eq_ignore_ascii_case("sha256"))
        {
            return Err("key record: h= does not allow sha256");
        }
    }
    if let Some(s) = get("s") {
        if !s.split(':').any(|t| matches!(t.trim(), "*" | "email")) {
            return Err("key record: s= does not allow email");
        }
    }
    let flags: Vec<&str> = get("t").map_or(Vec::new(), |t| t.split(':').map(str::trim).collect());
    let p = get("p").ok_or("key record: no p= tag")?;
    let p = base64(p).map_err(|_| "key record: p= is not base64")?;
    if p.is_empty() {
        return Err("key revoked (empty p=)");
    }
    let key = match algorithm {
        Algorithm::Ed25519Sha256 => PublicKey::Ed25519(
            p.try_into()
                .map_err(|_| "key record: not a 32-byte ed25519 key")?,
        ),
        Algorithm::RsaSha256 => {
            let (n, e) = rsa_key(&p).ok_or("key record: not an RSA public key")?;
            let bits = bit_len(n);
            if bits < RSA_MIN_BITS {
                return Err("RSA key shorter than 1024 bits (RFC 8301)");
            }
            if bits > RSA_MAX_BITS {
                return Err("RSA key longer than 4096 bits");
            }
            PublicKey::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            }
        }
    };
    Ok(Key {
        key,
        testing: flags.contains(&"y"),
        strict: flags.contains(&"s"),
    })
}

fn bit_len(n: &[u8]) -> usize {
    match n.first() {
        Some(&top) => n.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 3 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
/// 1.2.840.113549.1.1.1, rsaEncryption.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// A positive INTEGER's magnitude, without the sign byte.
fn unsigned(int: &[u8]) -> Option<&[u8]> {
    if int.first().is_some_and(|b| b & 0x80 != 0) {
        return None; // negative
    }
    let start = int.iter().position(|&b| b != 0).unwrap_or(int.len());
    let mag = &int[start..];
    (!mag.is_empty()).then_some(mag)
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_public_key(der_bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, seq, rest) = der(der_bytes)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (tn, n, seq) = der(seq)?;
    let (te, e, seq) = der(seq)?;
    if tn != INTEGER || te != INTEGER || !seq.is_empty() {
        return None;
    }
    Some((unsigned(n)?, unsigned(e)?))
}

/// The modulus and exponent of a SubjectPublicKeyInfo for rsaEncryption, or of a bare
/// RSAPublicKey (some publishers put that in `p=`).
fn rsa_key(p: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, spki, rest) = der(p)?;
    if tag != SEQUENCE || !rest.is_empty() {
        return None;
    }
    let (t, algorithm, after) = der(spki)?;
    if t == INTEGER {
        return rsa_public_key(p);
    }
    if t != SEQUENCE {
        return None;
    }
    let (toid, oid, _params) = der(algorithm)?;
    if toid != OID || oid != RSA_ENCRYPTION {
        return None;
    }
    let (tbits, bits, after) = der(after)?;
    if tbits != BIT_STRING || !after.is_empty() {
        return None;
    }
    let (&unused, key) = bits.split_first()?;
    if unused != 0 {
        return None;
    }
    rsa_public_key(key)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::dkim::signature::base64_encode;

    pub const RSA1024: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB";
    const ED: &str = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

    #[test]
    fn rfc8463_records() {
        let k = parse(
            &format!("v=DKIM1; k=rsa; p={RSA1024}"),
            Algorithm::RsaSha256,
        )
        .unwrap();
        let PublicKey::Rsa { n, e } = &k.key else {
            panic!("not RSA")
        };
        assert_eq!((bit_len(n), e.as_slice()), (1024, &[1u8, 0, 1][..]));
        let k = parse(
            &format!("v=DKIM1; k=ed25519; p={ED}"),
            Algorithm::Ed25519Sha256,
        )
        .unwrap();
        assert!(matches!(k.key, PublicKey::Ed25519(_)));
        assert!(!k.testing && !k.strict);
        // The bare RSAPublicKey inside the SPKI is accepted as well.
        let spki = base64(RSA1024).unwrap();
        let inner = &spki[spki.len() - 140..];
        assert_eq!(rsa_key(inner), rsa_key(&spki));
    }

    #[test]
    fn bad_records() {
        let rsa = Algorithm::RsaSha256;
        let ed = Algorithm::Ed25519Sha256;
        let cases: &[(&str, Algorithm, &str)] = &[
            ("v=DKIM1; p=", rsa, "key revoked (empty p=)"),
            (
                "v=DKIM2; p=AAAA",
                rsa,
                "key record: bad v= (must be DKIM1, first)",
            ),
            (
                "p=AAAA; v=DKIM1",
                rsa,
                "key record: bad v= (must be DKIM1, first)",
            ),
            ("k=dsa; p=AAAA", rsa, "key record: unknown key type k="),
            (
                &format!("k=ed25519; p={ED}"),
                rsa,
                "key record: key type k= does not match a=",
            ),
            (
                &format!("p={RSA1024}"),
                ed,
                "key record: key type k= does not match a=",
            ),
            (
                &format!("h=sha1; p={RSA1024}"),
                rsa,
                "key record: h= does not allow sha256",
            ),
            (
                &format!("s=tlsrpt; p={RSA1024}"),
                rsa,
                "key record: s= does not allow email",
            ),
            ("v=DKIM1; k=rsa", rsa, "key record: no p= tag"),
            ("p=!!!!", rsa, "key record: p= is not base64"),
            ("p=AAAA", rsa, "key record: not an RSA public key"),
            (
                "k=ed25519; p=AAAA",
                ed,
                "key record: not a 32-byte ed25519 key",
            ),
            ("spf1 -all", rsa, "tag without '='"),
        ];
        for (record, alg, want) in cases {
            assert_eq!(parse(record, *alg), Err(*want), "{record}");
        }
        let k = parse(&format!("t=y:s; h=sha1:sha256; s=email; p={RSA1024}"), rsa).unwrap();
        assert!(k.testing && k.strict);
    }

    #[test]
    fn rsa_sizes_and_der() {
        // A 512-bit modulus in an RSAPublicKey: too short.
        let mut n = vec![0x00, 0xc0];
        n.extend([0x11; 63]);
        let key = der_seq(&[der_int(&n), der_int(&[1, 0, 1])]);
        let b64 = base64_encode(&key);
        assert_eq!(
            parse(&format!("p={b64}"), Algorithm::RsaSha256),
            Err("RSA key shorter than 1024 bits (RFC 8301)")
        );
        // 4096 bits is taken, 4104 is not.
        for (bytes, ok) in [(512, true), (513, false)] {
            let mut n = vec![0x00, 0xc0];
            n.extend(vec![0x11; bytes - 1]);
            let key = der_seq(&[der_int(&n), der_int(&[1, 0, 1])]);
            let r = parse(&format!("p={}", base64_encode(&key)), Algorithm::RsaSha256);
            assert_eq!(r.is_ok(), ok, "{bytes}");
        }
        // Truncated, negative, trailing junk: refused without panics.
        for junk in [
            &key[..key.len() - 1],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
            &[0x30][..],
        ] {
            assert_eq!(rsa_key(junk), None);
        }
        let mut trailing = key.clone();
        trailing.push(0);
        assert_eq!(rsa_key(&trailing), None);
        assert_eq!(unsigned(&[0x80, 1]), None);
    }

    fn der_len(len: usize) -> Vec<u8> {
        match len {
            0..=127 => vec![len as u8],
            128..=255 => vec![0x81, len as u8],
            _ => vec![0x82, (len >> 8) as u8, len as u8],
        }
    }

    fn der_int(v: &[u8]) -> Vec<u8> {
        let mut out = vec![INTEGER];
        out.extend(der_len(v.len()));
        out.extend_from_slice(v);
        out
    }

    fn der_seq(items: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = items.concat();
        let mut out = vec![SEQUENCE];
        out.extend(der_len(body.len()));
        out.extend(body);
        out
    }
}
