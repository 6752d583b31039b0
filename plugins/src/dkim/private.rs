//! A DKIM private key: read from PEM as `openssl genrsa`, `openssl genpkey` and
//! `opendkim-genkey` write it (RSA in PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`,
//! Ed25519 in PKCS#8), generated for `ringsmtpd dkim-keygen`, signing (RSA-SHA256 with
//! PKCS#1 v1.5, RFC 6376 §3.3.1; Ed25519-SHA256, RFC 8463 §3), and its public key as a
//! DNS key record (RFC 6376 §3.6.1).
//!
//! RSA signatures come from ring for keys of 2048 bits and more (constant time); ring does not
//! take smaller keys, so 1024 to 2047 bits are signed by the `rsa` crate, with blinding. The
//! `rsa` crate also reads and writes the key formats and generates RSA keys, which ring
//! cannot.

use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use ring::{digest, rand::SystemRandom};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};

use super::key::{RSA_MAX_BITS, RSA_MIN_BITS};
use super::signature::{base64, base64_encode};

/// The DER `DigestInfo` prefix of a SHA-256 hash (RFC 8017 §9.2, note 1).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// Bits ring signs with at least.
const RING_MIN_BITS: usize = 2048;

enum Rsa {
    Ring(Box<RsaKeyPair>),
    /// 1024 to 2047 bits.
    Small(Box<RsaPrivateKey>),
}

enum Inner {
    Rsa {
        key: Rsa,
        spki: Vec<u8>,
        bits: usize,
    },
    Ed25519(Ed25519KeyPair),
}

/// A private key that signs DKIM signatures.
pub struct SigningKey(Inner);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.describe())
    }
}

/// The label and the DER contents of the first PEM block in `text`.
fn pem(text: &str) -> Result<(&str, Vec<u8>), String> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or("not a PEM file (no -----BEGIN line)")?;
    let rest = &text[begin + 11..];
    let label_end = rest.find("-----").ok_or("malformed -----BEGIN line")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end_line = format!("-----END {label}-----");
    let end = body
        .find(&end_line)
        .ok_or_else(|| format!("no {end_line} line"))?;
    let der = base64(&body[..end]).map_err(|e| format!("{label}: {e}"))?;
    Ok((label, der))
}

impl SigningKey {
    /// Reads a PEM private key.
    pub fn from_pem(text: &str) -> Result<SigningKey, String> {
        let (label, der) = pem(text)?;
        match label {
            "RSA PRIVATE KEY" => {
                let key = RsaPrivateKey::from_pkcs1_der(&der)
                    .map_err(|e| format!("not an RSA private key: {e}"))?;
                SigningKey::rsa(key)
            }
            "PRIVATE KEY" => match RsaPrivateKey::from_pkcs8_der(&der) {
                Ok(key) => SigningKey::rsa(key),
                Err(_) => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                    .map(|k| SigningKey(Inner::Ed25519(k)))
                    .map_err(|_| "a PKCS#8 key that is neither RSA nor Ed25519".to_string()),
            },
            "ENCRYPTED PRIVATE KEY" => {
                Err("the key is encrypted (write it without a passphrase)".into())
            }
            other => Err(format!("not a private key (PEM {other})")),
        }
    }

    fn rsa(key: RsaPrivateKey) -> Result<SigningKey, String> {
        let bits = key.n().bits();
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(format!(
                "an RSA key of {bits} bits (DKIM keys here are {RSA_MIN_BITS} to {RSA_MAX_BITS} bits)"
            ));
        }
        key.validate()
            .map_err(|e| format!("a broken RSA key: {e}"))?;
        let spki = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| format!("cannot encode the public key: {e}"))?
            .into_vec();
        let inner = if bits >= RING_MIN_BITS {
            let der = key
                .to_pkcs1_der()
                .map_err(|e| format!("cannot encode the key: {e}"))?;
            let pair = RsaKeyPair::from_der(der.as_bytes())
                .map_err(|e| format!("an RSA key ring refuses: {e}"))?;
            Rsa::Ring(Box::new(pair))
        } else {
            Rsa::Small(Box::new(key))
        };
        Ok(SigningKey(Inner::Rsa {
            key: inner,
            spki,
            bits,
        }))
    }

    /// A new RSA key of `bits` bits (1024 to 4096) and its PKCS#8 PEM.
    pub fn generate_rsa(bits: usize) -> Result<(SigningKey, String), String> {
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(format!("--bits must be {RSA_MIN_BITS} to {RSA_MAX_BITS}"));
        }
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, bits).map_err(|e| e.to_string())?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?
            .to_string();
        Ok((SigningKey::rsa(key)?, pem))
    }

    /// A new Ed25519 key and its PKCS#8 PEM.
    pub fn generate_ed25519() -> Result<(SigningKey, String), String> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| "cannot generate an Ed25519 key".to_string())?;
        let pem = pem_encode("PRIVATE KEY", doc.as_ref());
        let key = SigningKey::from_pem(&pem)?;
        Ok((key, pem))
    }

    #[cfg(test)]
    pub fn algorithm(&self) -> super::signature::Algorithm {
        match self.0 {
            Inner::Rsa { .. } => super::signature::Algorithm::RsaSha256,
            Inner::Ed25519(_) => super::signature::Algorithm::Ed25519Sha256,
        }
    }

    /// `a=` of the signatures this key makes.
    pub fn algorithm_name(&self) -> &'static str {
        match self.0 {
            Inner::Rsa { .. } => "rsa-sha256",
            Inner::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// `rsa 2048 bits` or `ed25519`, for log lines.
    pub fn describe(&self) -> String {
        match &self.0 {
            Inner::Rsa { bits, .. } => format!("rsa {bits} bits"),
            Inner::Ed25519(_) => "ed25519".into(),
        }
    }

    /// Whether signing costs enough to belong on the blocking pool (RSA: about a millisecond
    /// for 2048 bits; Ed25519: tens of microseconds).
    pub fn is_slow(&self) -> bool {
        matches!(self.0, Inner::Rsa { .. })
    }

    /// The signature over `data` (RSA-SHA256, or Ed25519 over the SHA-256 of `data`).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match &self.0 {
            Inner::Rsa {
                key: Rsa::Ring(pair),
                ..
            } => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), data, &mut out)
                    .map_err(|_| "RSA signing failed".to_string())?;
                Ok(out)
            }
            Inner::Rsa {
                key: Rsa::Small(key),
                ..
            } => {
                let hash = digest::digest(&digest::SHA256, data);
                let scheme = Pkcs1v15Sign {
                    hash_len: Some(32),
                    prefix: SHA256_PREFIX.into(),
                };
                key.sign_with_rng(&mut rsa::rand_core::OsRng, scheme, hash.as_ref())
                    .map_err(|e| format!("RSA signing failed: {e}"))
            }
            Inner::Ed25519(pair) => {
                let hash = digest::digest(&digest::SHA256, data);
                Ok(pair.sign(hash.as_ref()).as_ref().to_vec())
            }
        }
    }

    /// The key record to publish at `<selector>._domainkey.<domain>`:
    /// `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>` or `v=DKIM1; k=ed25519; p=<32 bytes>`.
    pub fn record(&self) -> String {
        match &self.0 {
            Inner::Rsa { spki, .. } => format!("v=DKIM1; k=rsa; p={}", base64_encode(spki)),
            Inner::Ed25519(pair) => format!(
                "v=DKIM1; k=ed25519; p={}",
                base64_encode(pair.public_key().as_ref())
            ),
        }
    }
}

/// `der` as a PEM block with lines of 64 characters.
fn pem_encode(label: &str, der: &[u8]) -> String {
    let text = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A 1024-bit key as `openssl genrsa -traditional 1024` writes it (PKCS#1).
    pub const RSA1024_PKCS1: &str = include_str!("testdata/rsa1024.pem");
    /// A 2048-bit key as `openssl genrsa 2048` (OpenSSL 3) writes it (PKCS#8).
    pub const RSA2048_PKCS8: &str = include_str!("testdata/rsa2048.pem");
    /// An Ed25519 key as `openssl genpkey -algorithm ed25519` writes it (PKCS#8 v1, no public key).
    pub const ED25519_PKCS8: &str = include_str!("testdata/ed25519.pem");

    #[test]
    fn reads_what_openssl_writes() {
        let k = SigningKey::from_pem(RSA1024_PKCS1).unwrap();
        assert_eq!(k.describe(), "rsa 1024 bits");
        assert!(matches!(
            k.0,
            Inner::Rsa {
                key: Rsa::Small(_),
                ..
            }
        ));
        let k = SigningKey::from_pem(RSA2048_PKCS8).unwrap();
        assert_eq!(k.describe(), "rsa 2048 bits");
        assert!(matches!(
            k.0,
            Inner::Rsa {
                key: Rsa::Ring(_),
                ..
            }
        ));
        assert!(k
            .record()
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"));
        let k = SigningKey::from_pem(ED25519_PKCS8).unwrap();
        assert_eq!(k.algorithm_name(), "ed25519-sha256");
        assert!(k.record().starts_with("v=DKIM1; k=ed25519; p="));
    }

    #[test]
    fn refuses_what_is_not_a_usable_key() {
        let cases = [
            ("", "not a PEM file"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "not a private key"),
            ("-----BEGIN PRIVATE KEY-----\nAA%A\n-----END PRIVATE KEY-----\n", "PRIVATE KEY: not base64"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n", "no -----END PRIVATE KEY----- line"),
            ("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"),
            ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "not an RSA private key"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "neither RSA nor Ed25519"),
        ];
        for (pem, want) in cases {
            let e = SigningKey::from_pem(pem).unwrap_err();
            assert!(e.contains(want), "{pem:?}: {e}");
        }
        let (_, small) = {
            let mut rng = rsa::rand_core::OsRng;
            let k = RsaPrivateKey::new(&mut rng, 768).unwrap();
            ((), k.to_pkcs8_pem(LineEnding::LF).unwrap().to_string())
        };
        let e = SigningKey::from_pem(&small).unwrap_err();
        assert_eq!(
            e,
            "an RSA key of 768 bits (DKIM keys here are 1024 to 4096 bits)"
        );
        assert!(SigningKey::generate_rsa(512).is_err());
    }

    /// Each kind of key signs what the verifier's key parser and check accept.
    #[test]
    fn signatures_verify_with_the_published_record() {
        use super::super::key;
        use super::super::signature;
        let (ed, ed_pem) = SigningKey::generate_ed25519().unwrap();
        assert!(ed_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        for k in [
            SigningKey::from_pem(RSA1024_PKCS1).unwrap(),
            SigningKey::from_pem(RSA2048_PKCS8).unwrap(),
            SigningKey::from_pem(ED25519_PKCS8).unwrap(),
            ed,
        ] {
            let record = k.record();
            let public = key::parse(&record, k.algorithm()).unwrap();
            let b = k.sign(b"data").unwrap();
            let tags = format!(
                "v=1; a={}; d=x.example; s=s; h=from; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b={}",
                k.algorithm_name(),
                base64_encode(&b)
            );
            let sig = signature::parse(tags.as_bytes()).unwrap();
            assert!(super::super::verify::check(&sig, &public, b"data"), "{k:?}");
            assert!(
                !super::super::verify::check(&sig, &public, b"date"),
                "{k:?}"
            );
        }
    }
}
