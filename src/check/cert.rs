//! TLS certificates: one that has expired (error) or expires within [`SOON`] (warning), and one
//! that does not name the host it serves (`me`, or its `tls_sni` name). Names are matched by
//! webpki, as a client would (subjectAltName, wildcards); the expiry date is read from the
//! certificate's DER with the small reader below.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::ServerName;

use crate::tls::Leaf;

use super::{Finding, Severity};

/// A certificate that expires sooner than this is reported.
pub const SOON: Duration = Duration::from_secs(30 * 24 * 3600);

pub(super) fn check(leaves: &[Leaf], me: &str, now: SystemTime, out: &mut Vec<Finding>) {
    for leaf in leaves {
        let at = leaf.file.display().to_string();
        let host = leaf.sni.as_deref().unwrap_or(me);
        match not_after(&leaf.cert) {
            None => out.push(Finding::new(
                Severity::Warning,
                at.clone(),
                "cannot read the certificate's expiry date (not X.509 DER as expected)",
            )),
            Some((when, shown)) if when <= now => out.push(Finding::new(
                Severity::Error,
                at.clone(),
                format!(
                    "the certificate expired on {shown}: clients that check it refuse STARTTLS. \
                     Renew it, then send SIGHUP"
                ),
            )),
            Some((when, shown)) if when < now + SOON => {
                let days = when.duration_since(now).unwrap_or_default().as_secs() / 86400;
                out.push(Finding::new(
                    Severity::Warning,
                    at.clone(),
                    format!(
                        "the certificate expires on {shown}, in {days} day(s): renew it, then \
                         send SIGHUP"
                    ),
                ));
            }
            Some(_) => {}
        }
        let names_host = ServerName::try_from(host).ok().is_some_and(|name| {
            webpki::EndEntityCert::try_from(&leaf.cert)
                .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
        if !names_host {
            let whose = if leaf.sni.is_some() {
                "its tls_sni line"
            } else {
                "me (this server's name in the banner and EHLO)"
            };
            out.push(Finding::new(
                Severity::Warning,
                at,
                format!(
                    "the certificate does not name {host}, the host {whose} says it serves: \
                     clients that check the name refuse it. Get one for {host} \
                     (`ringsmtpd tls-cert --host {host}` for a test), or fix me"
                ),
            ));
        }
    }
}

/// The certificate's notAfter: the time, and the date as written (`YYYY-MM-DD HH:MM:SS UTC`).
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }` (RFC 5280 §4.1).
pub(super) fn not_after(der: &[u8]) -> Option<(SystemTime, String)> {
    let (tag, cert, _) = tlv(der)?;
    let (tag2, tbs, _) = (tag == 0x30).then(|| tlv(cert)).flatten()?;
    if tag2 != 0x30 {
        return None;
    }
    let mut rest = tbs;
    let (first, _, after) = tlv(rest)?;
    if first == 0xa0 {
        rest = after; // explicit version
    }
    for _ in 0..3 {
        rest = tlv(rest)?.2; // serialNumber, signature, issuer
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, time, _) = tlv(after_not_before)?;
    let time = std::str::from_utf8(time).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950-2049), GeneralizedTime YYYYMMDDHHMMSSZ.
    let full = match tag {
        0x17 if time.len() == 13 => {
            let yy: u32 = time.get(..2)?.parse().ok()?;
            format!("{}{time}", if yy >= 50 { 19 } else { 20 })
        }
        0x18 if time.len() == 15 => time.to_string(),
        _ => return None,
    };
    if !full.ends_with('Z') || !full[..14].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| full[r].parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, s) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
    let when = if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    };
    let shown = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC");
    Some((when, shown))
}

/// One DER element: (tag, contents, what follows). Definite lengths up to 4 bytes only.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn garbage_is_no_date_and_no_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01\x02",
            &[0xff; 64],
        ] {
            assert_eq!(not_after(bad), None);
        }
    }
}
