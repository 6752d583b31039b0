//! The DMARC verdict once the policy is known (RFC 7489 §3.1, §6.6.2, §6.6.4): identifier
//! alignment, the organizational domain, the policy that applies (`p` or `sp`) and `pct`
//! sampling. No I/O: [`evaluate`] is a function of its inputs.

use std::fmt;

use super::record::{Align, Policy, Record};

/// The DMARC result, as RFC 7489 §11.2 registers them for Authentication-Results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmarcResult {
    Pass,
    Fail,
    /// No policy published for the Author Domain or its organizational domain.
    None,
    /// The policy could not be looked up (DNS timeout, SERVFAIL...): never a reject.
    TempError,
    /// A record that cannot be applied, several records, or no usable From.
    PermError,
}

impl DmarcResult {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail => "fail",
            DmarcResult::None => "none",
            DmarcResult::TempError => "temperror",
            DmarcResult::PermError => "permerror",
        }
    }
}

impl fmt::Display for DmarcResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The organizational domain (§3.2) from the public suffix list compiled into the `psl`
/// crate: the public suffix and one label more; a name that is itself a public suffix is its
/// own. A name under a suffix the list does not know has the last label as its suffix (the
/// list's `*` rule): `mail.example.test` → `example.test`.
pub fn org_domain(name: &str) -> &str {
    psl::domain_str(name).unwrap_or(name)
}

/// True if `id` (an authenticated domain) aligns with the Author Domain `from` (§3.1.1,
/// §3.1.2): equal in strict mode, the same organizational domain in relaxed mode. Both are
/// lowercased, without a final dot.
pub fn aligned(id: &str, from: &str, mode: Align) -> bool {
    id == from || (mode == Align::Relaxed && org_domain(id) == org_domain(from))
}

/// The policy found for the Author Domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub record: Record,
    /// Where it was found: the Author Domain, or its organizational domain.
    pub domain: String,
    /// Found at the organizational domain for a subdomain: `sp` applies (§6.3).
    pub subdomain: bool,
}

impl Found {
    /// The policy for this Author Domain: `sp` for a subdomain if there is one, else `p`.
    pub fn policy(&self) -> Policy {
        match (self.subdomain, self.record.sp) {
            (true, Some(sp)) => sp,
            _ => self.record.p,
        }
    }
}

/// What the authentication checks found, as DMARC reads them.
#[derive(Debug, Clone, Default)]
pub struct Authenticated<'a> {
    /// The SPF-authenticated domain: the MAIL FROM domain (or, for a null sender, the HELO
    /// name, RFC 7208 §2.4) when SPF passed, lowercased.
    pub spf: Option<&'a str>,
    /// The `d=` of every DKIM signature that passed, lowercased.
    pub dkim: Vec<&'a str>,
}

/// The verdict for a message whose Author Domain has a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub result: DmarcResult,
    /// What the policy asks for this message (after `pct`): `none` on a pass.
    pub disposition: Policy,
    /// SPF passed for a domain aligned with the Author Domain.
    pub spf_aligned: bool,
    /// The first aligned passing DKIM domain, if any.
    pub dkim_aligned: Option<String>,
    /// The policy applied at less than its strength because `pct` sampled the message out.
    pub sampled_out: bool,
}

/// Applies `found` to a message from `from` (§6.6.2 steps 3 to 6). `roll` is the message's
/// random number in 0..100: the policy applies when `roll < pct` (§6.6.4).
pub fn evaluate(from: &str, found: &Found, auth: &Authenticated<'_>, roll: u8) -> Verdict {
    let rec = &found.record;
    let spf_aligned = auth.spf.is_some_and(|d| aligned(d, from, rec.aspf));
    let dkim_aligned = auth
        .dkim
        .iter()
        .find(|d| aligned(d, from, rec.adkim))
        .map(|d| d.to_string());
    if spf_aligned || dkim_aligned.is_some() {
        return Verdict {
            result: DmarcResult::Pass,
            disposition: Policy::None,
            spf_aligned,
            dkim_aligned,
            sampled_out: false,
        };
    }
    let policy = found.policy();
    let sampled_out = policy != Policy::None && roll >= rec.pct;
    Verdict {
        result: DmarcResult::Fail,
        disposition: if sampled_out { policy.lower() } else { policy },
        spf_aligned,
        dkim_aligned,
        sampled_out,
    }
}

/// A number in 0..100 from a per-message seed (SplitMix64's finalizer: every seed bit moves
/// the result, so consecutive seeds give unrelated rolls).
pub fn roll(seed: u64) -> u8 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % 100) as u8
}

#[cfg(test)]
mod tests {
    use super::super::record::{parse, Parsed};
    use super::*;

    fn found(txt: &str, domain: &str, subdomain: bool) -> Found {
        let Parsed::Ok(record) = parse(txt) else {
            panic!("{txt}")
        };
        Found {
            record,
            domain: domain.to_string(),
            subdomain,
        }
    }

    #[test]
    fn organizational_domains_come_from_the_compiled_list() {
        for (name, org) in [
            ("example.com", "example.com"),
            ("a.b.example.com", "example.com"),
            ("mail.example.co.uk", "example.co.uk"),
            ("co.uk", "co.uk"),
            ("com", "com"),
            ("x.example.test", "example.test"),
            // The private section too (as Mail::DMARC reads the list).
            ("www.someone.github.io", "someone.github.io"),
        ] {
            assert_eq!(org_domain(name), org, "{name}");
        }
    }

    #[test]
    fn alignment_relaxed_and_strict() {
        assert!(aligned("example.com", "example.com", Align::Strict));
        assert!(!aligned("mail.example.com", "example.com", Align::Strict));
        assert!(aligned("mail.example.com", "example.com", Align::Relaxed));
        assert!(aligned(
            "a.example.co.uk",
            "b.example.co.uk",
            Align::Relaxed
        ));
        assert!(!aligned("example.co.uk", "other.co.uk", Align::Relaxed));
        assert!(!aligned("evil.com", "example.com", Align::Relaxed));
    }

    #[test]
    fn pass_when_either_identifier_aligns() {
        let f = found("v=DMARC1; p=reject; adkim=s", "example.com", false);
        let spf = Authenticated {
            spf: Some("bounces.example.com"),
            dkim: vec![],
        };
        let v = evaluate("example.com", &f, &spf, 0);
        assert_eq!(
            (v.result, v.disposition, v.spf_aligned),
            (DmarcResult::Pass, Policy::None, true)
        );
        // adkim=s: a parent's signature does not align; an exact one does.
        let dkim = Authenticated {
            spf: None,
            dkim: vec!["example.com"],
        };
        let v = evaluate("news.example.com", &f, &dkim, 0);
        assert_eq!(
            (v.result, v.disposition),
            (DmarcResult::Fail, Policy::Reject)
        );
        let v = evaluate("example.com", &f, &dkim, 0);
        assert_eq!(v.dkim_aligned.as_deref(), Some("example.com"));
        assert_eq!(v.result, DmarcResult::Pass);
    }

    #[test]
    fn sp_applies_to_subdomains_found_at_the_org_domain() {
        let none = Authenticated::default();
        let f = found("v=DMARC1; p=reject; sp=quarantine", "example.com", true);
        assert_eq!(
            evaluate("a.example.com", &f, &none, 0).disposition,
            Policy::Quarantine
        );
        let f = found("v=DMARC1; p=reject; sp=quarantine", "example.com", false);
        assert_eq!(
            evaluate("example.com", &f, &none, 0).disposition,
            Policy::Reject
        );
        let f = found("v=DMARC1; p=quarantine", "example.com", true);
        assert_eq!(
            evaluate("a.example.com", &f, &none, 0).disposition,
            Policy::Quarantine
        );
    }

    #[test]
    fn pct_samples_and_lowers_by_one_step() {
        let none = Authenticated::default();
        let all = found("v=DMARC1; p=reject; pct=100", "example.com", false);
        let nothing = found("v=DMARC1; p=reject; pct=0", "example.com", false);
        let q0 = found("v=DMARC1; p=quarantine; pct=0", "example.com", false);
        for r in [0, 50, 99] {
            let v = evaluate("example.com", &all, &none, r);
            assert_eq!((v.disposition, v.sampled_out), (Policy::Reject, false));
            let v = evaluate("example.com", &nothing, &none, r);
            assert_eq!((v.disposition, v.sampled_out), (Policy::Quarantine, true));
            assert_eq!(
                evaluate("example.com", &q0, &none, r).disposition,
                Policy::None
            );
        }
        let half = found("v=DMARC1; p=reject; pct=50", "example.com", false);
        assert_eq!(
            evaluate("example.com", &half, &none, 49).disposition,
            Policy::Reject
        );
        assert_eq!(
            evaluate("example.com", &half, &none, 50).disposition,
            Policy::Quarantine
        );
    }

    #[test]
    fn rolls_spread_over_0_to_99() {
        let rolls: Vec<u8> = (0..10_000u64).map(roll).collect();
        assert!(rolls.iter().all(|&r| r < 100));
        let below_50 = rolls.iter().filter(|&&r| r < 50).count();
        assert!((4_500..5_500).contains(&below_50), "{below_50}");
        assert_eq!(roll(7), roll(7));
    }
}
