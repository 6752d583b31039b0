//! A DMARC policy record (RFC 7489 §6.3, §6.4), parsed strictly.
//!
//! `v=DMARC1` must be the first tag, its value exactly `DMARC1`: a TXT record that does not
//! start so is not a DMARC record and is discarded (§6.6.3 step 2). Tag names are
//! case-insensitive, values of `p`, `sp`, `adkim`, `aspf` too (ABNF literals). The rest:
//!
//! | case | what happens |
//! |---|---|
//! | `p` missing or not `none`/`quarantine`/`reject`, or `sp` not one of those | with a syntactically valid `rua` URI: read as `p=none` (§6.6.3 step 6A); without: [`Parsed::Bad`] (no DMARC processing, reported as `permerror`) |
//! | `adkim`, `aspf` not `r`/`s`; `pct` not 0..100; `ri` not a number | the default (`r`, `r`, 100, 86400) and a warning (§6.3: syntax errors are discarded in favour of defaults) |
//! | a tag twice | [`Parsed::Bad`]: which one holds is ambiguous |
//! | a piece without `=`, a bad tag name | ignored with a warning |
//! | unknown tags (`fo`, `rf`, `ruf` are known and unused) | ignored (§6.3: MUST be ignored) |
//! | over [`MAX_RECORD`] bytes | [`Parsed::Bad`] |

/// The longest record read (a real one is under 300 bytes).
pub const MAX_RECORD: usize = 2048;
/// The longest `rua` kept (for the aggregate report file).
const MAX_RUA: usize = 512;

/// A requested policy (`p`, `sp`), or the disposition of a message (§6.3, §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    fn parse(value: &str) -> Option<Policy> {
        match value.to_ascii_lowercase().as_str() {
            "none" => Some(Policy::None),
            "quarantine" => Some(Policy::Quarantine),
            "reject" => Some(Policy::Reject),
            _ => None,
        }
    }

    /// The next policy lower in severity (§6.6.4, a message sampled out by `pct`).
    pub fn lower(self) -> Policy {
        match self {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        }
    }
}

/// Identifier alignment mode (`adkim`, `aspf`, §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Relaxed,
    Strict,
}

impl Align {
    pub fn as_str(self) -> &'static str {
        match self {
            Align::Relaxed => "r",
            Align::Strict => "s",
        }
    }
}

/// A policy record as the receiver applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub p: Policy,
    pub sp: Option<Policy>,
    pub adkim: Align,
    pub aspf: Align,
    pub pct: u8,
    /// Aggregate report URIs as published (printable ASCII, bounded), empty if none.
    pub rua: String,
    pub ri: u32,
    /// What was wrong and defaulted, for the log.
    pub warnings: Vec<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a DMARC record (does not start with `v=DMARC1`): discarded.
    NotDmarc,
    /// A DMARC record that cannot be applied: `permerror`.
    Bad(&'static str),
    Ok(Record),
}

/// Parses one TXT record (its strings joined).
pub fn parse(txt: &str) -> Parsed {
    let mut pieces = txt.split(';').map(|p| p.trim_matches([' ', '\t']));
    let version = pieces.next().and_then(|first| first.split_once('='));
    let dmarc1 = version.is_some_and(|(v, value)| {
        v.trim_end_matches([' ', '\t']).eq_ignore_ascii_case("v")
            && value.trim_start_matches([' ', '\t']) == "DMARC1"
    });
    if !dmarc1 {
        return Parsed::NotDmarc;
    }
    if txt.len() > MAX_RECORD {
        return Parsed::Bad("record too long");
    }
    let mut rec = Record {
        p: Policy::None,
        sp: None,
        adkim: Align::Relaxed,
        aspf: Align::Relaxed,
        pct: 100,
        rua: String::new(),
        ri: 86400,
        warnings: Vec::new(),
    };
    let (mut p, mut p_bad, mut sp_bad) = (None, false, false);
    let mut seen: Vec<String> = Vec::new();
    for piece in pieces.filter(|p| !p.is_empty()) {
        let Some((name, value)) = piece.split_once('=') else {
            rec.warnings.push("a tag without '=' ignored");
            continue;
        };
        let name = name.trim_end_matches([' ', '\t']).to_ascii_lowercase();
        let value = value.trim_start_matches([' ', '\t']);
        let good_name = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !good_name {
            rec.warnings.push("a bad tag name ignored");
            continue;
        }
        if seen.contains(&name) || name == "v" {
            return Parsed::Bad("a tag appears twice");
        }
        seen.push(name.clone());
        match name.as_str() {
            "p" => {
                p = Policy::parse(value);
                p_bad = p.is_none();
            }
            "sp" => {
                rec.sp = Policy::parse(value);
                sp_bad = rec.sp.is_none();
            }
            "adkim" | "aspf" => {
                let mode = match value.to_ascii_lowercase().as_str() {
                    "r" => Align::Relaxed,
                    "s" => Align::Strict,
                    _ => {
                        rec.warnings.push("bad adkim= or aspf=, relaxed used");
                        Align::Relaxed
                    }
                };
                match name.as_str() {
                    "adkim" => rec.adkim = mode,
                    _ => rec.aspf = mode,
                }
            }
            "pct" => match value.parse::<u8>() {
                Ok(n)
                    if n <= 100
                        && value.len() <= 3
                        && value.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    rec.pct = n
                }
                _ => rec.warnings.push("bad pct=, 100 used"),
            },
            "ri" => match value.parse::<u32>() {
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => rec.ri = n,
                _ => rec.warnings.push("bad ri=, 86400 used"),
            },
            "rua" => {
                rec.rua = value
                    .chars()
                    .take(MAX_RUA)
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                    .collect();
            }
            _ => {} // fo, rf, ruf and unknown tags
        }
    }
    match p {
        Some(policy) if !sp_bad => rec.p = policy,
        _ if valid_rua(&rec.rua) => {
            rec.p = Policy::None;
            rec.sp = None;
            rec.warnings
                .push("no valid p= or sp=, read as p=none (rua given)");
        }
        _ if sp_bad => return Parsed::Bad("invalid sp="),
        _ if p_bad => return Parsed::Bad("invalid p="),
        _ => return Parsed::Bad("no p="),
    }
    Parsed::Ok(rec)
}

/// True if `rua` holds at least one syntactically valid URI (§6.4 `dmarc-uri`: a URI,
/// optionally `!size[kmgt]`): `scheme:rest` with no blanks.
fn valid_rua(rua: &str) -> bool {
    rua.split(',').map(str::trim).any(|uri| {
        let uri = match uri.rsplit_once('!') {
            Some((u, size)) => {
                let digits = size.trim_end_matches(['k', 'm', 'g', 't']);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return false;
                }
                u
            }
            None => uri,
        };
        match uri.split_once(':') {
            Some((scheme, rest)) => {
                scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_graphic())
            }
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(txt: &str) -> Record {
        match parse(txt) {
            Parsed::Ok(r) => r,
            other => panic!("{txt}: {other:?}"),
        }
    }

    #[test]
    fn a_full_record() {
        let r = ok(
            "v=DMARC1; p=Reject; sp=quarantine; adkim=s; aspf=S; pct=25; \
                    rua=mailto:agg@example.com; ruf=mailto:f@example.com; fo=1; ri=3600",
        );
        assert_eq!(
            (r.p, r.sp, r.adkim, r.aspf, r.pct, r.ri),
            (
                Policy::Reject,
                Some(Policy::Quarantine),
                Align::Strict,
                Align::Strict,
                25,
                3600
            )
        );
        assert_eq!(r.rua, "mailto:agg@example.com");
        assert!(r.warnings.is_empty());
        let r = ok("v = DMARC1 ;p = none");
        assert_eq!(
            (r.p, r.sp, r.adkim, r.pct),
            (Policy::None, None, Align::Relaxed, 100)
        );
    }

    #[test]
    fn not_dmarc_records_are_discarded() {
        for txt in [
            "v=spf1 -all",
            "p=reject; v=DMARC1",
            "v=dmarc1; p=reject",
            "v=DMARC2; p=reject",
            "v=DMARC1 p=reject",
            "",
            "some text",
        ] {
            assert_eq!(parse(txt), Parsed::NotDmarc, "{txt}");
        }
    }

    #[test]
    fn bad_records() {
        assert_eq!(parse("v=DMARC1"), Parsed::Bad("no p="));
        assert_eq!(parse("v=DMARC1; p=block"), Parsed::Bad("invalid p="));
        assert_eq!(
            parse("v=DMARC1; p=reject; sp=maybe"),
            Parsed::Bad("invalid sp=")
        );
        assert_eq!(
            parse("v=DMARC1; p=reject; p=none"),
            Parsed::Bad("a tag appears twice")
        );
        assert_eq!(
            parse("v=DMARC1; v=DMARC1; p=none"),
            Parsed::Bad("a tag appears twice")
        );
        let long = format!(
            "v=DMARC1; p=none; rua=mailto:{}@x.test",
            "a".repeat(MAX_RECORD)
        );
        assert_eq!(parse(&long), Parsed::Bad("record too long"));
        // §6.6.3 6A: a bad p= with a valid rua reads as p=none.
        let r = ok("v=DMARC1; p=block; rua=mailto:agg@example.com!10m");
        assert_eq!((r.p, r.sp), (Policy::None, None));
        assert_eq!(
            parse("v=DMARC1; p=block; rua=nonsense"),
            Parsed::Bad("invalid p=")
        );
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let r = ok("v=DMARC1; p=quarantine; adkim=x; pct=101; ri=soon; junk; 9x=1; zz=whatever");
        assert_eq!((r.adkim, r.pct, r.ri), (Align::Relaxed, 100, 86400));
        assert_eq!(r.warnings.len(), 5);
        for pct in ["-1", "+5", "1000", "007x", ""] {
            let r = ok(&format!("v=DMARC1; p=reject; pct={pct}"));
            assert_eq!(r.pct, 100, "{pct}");
        }
        assert_eq!(ok("v=DMARC1; p=reject; pct=0").pct, 0);
        let r = ok("v=DMARC1; p=none; rua=mailto:a@b.test\u{1}x");
        assert_eq!(r.rua, "mailto:a@b.test?x");
    }
}
