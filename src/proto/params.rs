//! ESMTP parameters of MAIL and RCPT (RFC 5321 §4.1.2), validated into the API crate's types.
//!
//! ```text
//! Mail-parameters = esmtp-param *(SP esmtp-param)
//! esmtp-param     = esmtp-keyword ["=" esmtp-value]
//! esmtp-keyword   = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
//! esmtp-value     = 1*(%d33-60 / %d62-126)       ; RFC 6531 §3.3 adds UTF8-non-ascii
//! ```
//!
//! Keywords are case-insensitive; values of the keywords we know are matched case-insensitively
//! where their RFC defines words (BODY, RET, NOTIFY) and kept as sent where they are data
//! (ENVID, AUTH, ORCPT), so they relay unchanged. Blanks between parameters may be several.
//! A keyword we do not offer is 555 (RFC 5321 §4.1.1.11), any other problem 501.

use ringsmtpd_plugin_api::{BodyType, MailParams, Notify, RcptParams, Ret};

/// A parameter the server refuses; `text` begins with an enhanced status code (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamError {
    pub code: u16,
    pub text: &'static str,
}

const fn syntax(text: &'static str) -> ParamError {
    ParamError { code: 501, text }
}

const BAD_PARAM: ParamError = syntax("5.5.4 Syntax error in parameters");
const DUPLICATE: ParamError = syntax("5.5.4 Duplicate parameter");
/// RFC 5321 §4.1.1.11: "555 MAIL FROM/RCPT TO parameters not recognized or not implemented".
const UNSUPPORTED: ParamError = ParamError {
    code: 555,
    text: "5.5.4 Unsupported parameter",
};
const BINARYMIME: ParamError = ParamError {
    code: 555,
    text: "5.5.4 BODY=BINARYMIME is not supported",
};
const SIZE: ParamError = syntax("5.5.4 Syntax: SIZE=<number>");
const BODY: ParamError = syntax("5.5.4 Syntax: BODY=7BIT or BODY=8BITMIME");
const SMTPUTF8: ParamError = syntax("5.5.4 Syntax: SMTPUTF8 takes no value");
const RET: ParamError = syntax("5.5.4 Syntax: RET=FULL or RET=HDRS");
const ENVID: ParamError = syntax("5.5.4 Syntax: ENVID=<xtext of at most 100 characters>");
const AUTH: ParamError = syntax("5.5.4 Syntax: AUTH=<xtext>");
const NOTIFY: ParamError = syntax("5.5.4 Syntax: NOTIFY=NEVER or NOTIFY=SUCCESS,FAILURE,DELAY");
const ORCPT: ParamError = syntax("5.5.4 Syntax: ORCPT=<addr-type>;<xtext>");

/// RFC 3461 §4.4: the ENVID value is at most 100 characters (counted here after decoding the
/// xtext, as the limit is on the identifier itself).
const MAX_ENVID: usize = 100;
/// RFC 3461 §4.2 caps ORCPT at 500 characters; counted on the value as sent.
const MAX_ORCPT: usize = 500;

/// Splits `params` into `(keyword, value)` pairs, checking the esmtp-param syntax.
fn split(params: &str) -> impl Iterator<Item = Result<(&str, Option<&str>), ParamError>> {
    params
        .split([' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (key, value) = match p.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (p, None),
            };
            let key_ok = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            let value_ok = value.is_none_or(|v| {
                !v.is_empty() && v.bytes().all(|b| b > b' ' && b != b'=' && b != 0x7f)
            });
            if key_ok && value_ok {
                Ok((key, value))
            } else {
                Err(BAD_PARAM)
            }
        })
}

/// Records that the parameter numbered `bit` was seen; a second time is 501 (RFC 5321 does not
/// define repeats; RFC 3461 §4 and RFC 1870 each allow one).
fn once(seen: &mut u8, bit: u8) -> Result<(), ParamError> {
    if *seen & (1 << bit) != 0 {
        return Err(DUPLICATE);
    }
    *seen |= 1 << bit;
    Ok(())
}

/// ESMTP parameters of MAIL (RFC 5321 §4.1.2 esmtp-param: keyword ["=" value], space separated,
/// keywords case-insensitive):
///
/// - `SIZE=<digits>` (RFC 1870 §3): the declared size, must fit u64.
/// - `BODY=7BIT|8BITMIME` (RFC 6152 §2); `BINARYMIME` (RFC 3030) is not offered: 555.
/// - `SMTPUTF8` without value (RFC 6531 §3.4).
/// - `RET=FULL|HDRS` (RFC 3461 §4.3).
/// - `ENVID=<xtext>` (RFC 3461 §4.4): xtext, at most 100 characters decoded, decoding to
///   printable ASCII; kept raw.
/// - `AUTH=<xtext>` (RFC 4954 §5), `<>` included; kept raw.
pub fn parse_mail_params(params: &str) -> Result<MailParams, ParamError> {
    let mut out = MailParams::default();
    let mut seen = 0u8;
    for param in split(params) {
        let (key, value) = param?;
        let is = |k: &str| key.eq_ignore_ascii_case(k);
        if is("SIZE") {
            once(&mut seen, 0)?;
            let v = value
                .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
                .ok_or(SIZE)?;
            out.size = Some(v.parse().map_err(|_| SIZE)?);
        } else if is("BODY") {
            once(&mut seen, 1)?;
            out.body = match value.ok_or(BODY)? {
                v if v.eq_ignore_ascii_case("7BIT") => BodyType::SevenBit,
                v if v.eq_ignore_ascii_case("8BITMIME") => BodyType::EightBitMime,
                v if v.eq_ignore_ascii_case("BINARYMIME") => return Err(BINARYMIME),
                _ => return Err(BODY),
            };
        } else if is("SMTPUTF8") {
            once(&mut seen, 2)?;
            if value.is_some() {
                return Err(SMTPUTF8);
            }
            out.smtputf8 = true;
        } else if is("RET") {
            once(&mut seen, 3)?;
            out.ret = Some(match value.ok_or(RET)? {
                v if v.eq_ignore_ascii_case("FULL") => Ret::Full,
                v if v.eq_ignore_ascii_case("HDRS") => Ret::Hdrs,
                _ => return Err(RET),
            });
        } else if is("ENVID") {
            once(&mut seen, 4)?;
            let v = value.ok_or(ENVID)?;
            match xtext_len(v) {
                Some(n) if n <= MAX_ENVID => out.envid = Some(v.to_owned()),
                _ => return Err(ENVID),
            }
        } else if is("AUTH") {
            once(&mut seen, 5)?;
            let v = value.ok_or(AUTH)?;
            xtext_len(v).ok_or(AUTH)?;
            out.auth = Some(v.to_owned());
        } else {
            return Err(UNSUPPORTED);
        }
    }
    Ok(out)
}

/// ESMTP parameters of RCPT:
///
/// - `NOTIFY=NEVER` alone, or a comma list of SUCCESS, FAILURE, DELAY (RFC 3461 §4.1);
///   repeating an element is harmless and accepted.
/// - `ORCPT=<addr-type>;<xtext>` (RFC 3461 §4.2), addr-type an atom; for addr-type `utf-8`
///   the value is utf-8-addr-xtext or utf-8-addr-unitext (RFC 6533 §3). Kept raw.
pub fn parse_rcpt_params(params: &str) -> Result<RcptParams, ParamError> {
    let mut out = RcptParams::default();
    let mut seen = 0u8;
    for param in split(params) {
        let (key, value) = param?;
        if key.eq_ignore_ascii_case("NOTIFY") {
            once(&mut seen, 0)?;
            out.notify = notify(value.ok_or(NOTIFY)?)?;
        } else if key.eq_ignore_ascii_case("ORCPT") {
            once(&mut seen, 1)?;
            let v = value
                .filter(|v| v.len() <= MAX_ORCPT && orcpt_ok(v))
                .ok_or(ORCPT)?;
            out.orcpt = Some(v.to_owned());
        } else {
            return Err(UNSUPPORTED);
        }
    }
    Ok(out)
}

/// notify-esmtp-value = "NEVER" / 1#notify-list-element (RFC 3461 §4.1).
fn notify(value: &str) -> Result<Notify, ParamError> {
    if value.eq_ignore_ascii_case("NEVER") {
        return Ok(Notify {
            never: true,
            ..Notify::default()
        });
    }
    let mut n = Notify::default();
    for word in value.split(',') {
        let flag = match word {
            w if w.eq_ignore_ascii_case("SUCCESS") => &mut n.success,
            w if w.eq_ignore_ascii_case("FAILURE") => &mut n.failure,
            w if w.eq_ignore_ascii_case("DELAY") => &mut n.delay,
            _ => return Err(NOTIFY), // NEVER in a list, empty or unknown element
        };
        *flag = true;
    }
    Ok(n)
}

/// xtext (RFC 3461 §4): xchar is `!`..`~` except `+` and `=`; hexchar is `+` and two
/// upper-case hex digits. Returns the decoded length, or `None` if the syntax is wrong or a
/// hexchar decodes to something not printable ASCII (RFC 3461 §4.2 and §4.4 require printable
/// values).
fn xtext_len(s: &str) -> Option<usize> {
    let (mut b, mut n) = (s.as_bytes(), 0);
    while let Some((&c, rest)) = b.split_first() {
        b = match c {
            b'+' => match rest {
                [h, l, tail @ ..] => {
                    let decoded = (hex(*h)? << 4) | hex(*l)?;
                    (0x20..=0x7e).contains(&decoded).then_some(tail)?
                }
                _ => return None,
            },
            b'!'..=b'~' if c != b'=' => rest,
            _ => return None,
        };
        n += 1;
    }
    Some(n)
}

/// An upper-case hex digit (RFC 3461 §4: "two upper case hexadecimal digits").
fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `addr-type ";" xtext` (RFC 3461 §4.2), addr-type = atom (RFC 5322 atext). For addr-type
/// `utf-8` (RFC 6533 §3) the address is 1*(QCHAR / UTF-8 / EmbeddedUnicodeChar), QCHAR being
/// printable ASCII except `+`, `=` and `\`, EmbeddedUnicodeChar `\x{` 1*6HEXDIG `}`.
fn orcpt_ok(value: &str) -> bool {
    let Some((kind, addr)) = value.split_once(';') else {
        return false;
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b);
    if kind.is_empty() || !kind.bytes().all(atext) || addr.is_empty() {
        return false;
    }
    if !kind.eq_ignore_ascii_case("utf-8") {
        return xtext_len(addr).is_some();
    }
    let mut chars = addr.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some((digits, tail)) = chars
                    .as_str()
                    .strip_prefix("x{")
                    .and_then(|t| t.split_once('}'))
                else {
                    return false;
                };
                if digits.is_empty()
                    || digits.len() > 6
                    || !digits.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return false;
                }
                chars = tail.chars();
            }
            '+' | '=' => return false,
            '!'..='~' => {}
            c if !c.is_ascii() && !c.is_control() => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(p: &str) -> MailParams {
        match parse_mail_params(p) {
            Ok(m) => m,
            Err(e) => panic!("{p:?} should parse, got {e:?}"),
        }
    }

    fn rcpt(p: &str) -> RcptParams {
        match parse_rcpt_params(p) {
            Ok(r) => r,
            Err(e) => panic!("{p:?} should parse, got {e:?}"),
        }
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(mail(""), MailParams::default());
        assert_eq!(mail("   "), MailParams::default());
        assert_eq!(rcpt(""), RcptParams::default());
        assert!(rcpt("").notify.is_unset());
    }

    #[test]
    fn all_mail_params() {
        let m = mail("SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159+2B1 AUTH=<>");
        assert_eq!(m.size, Some(12345));
        assert_eq!(m.body, BodyType::EightBitMime);
        assert!(m.smtputf8);
        assert_eq!(m.ret, Some(Ret::Hdrs));
        assert_eq!(m.envid.as_deref(), Some("QQ314159+2B1"));
        assert_eq!(m.auth.as_deref(), Some("<>"));
        let m = mail("size=0  body=7bit\tsmtputf8 ret=full auth=e+3Dmc2@example.com");
        assert_eq!(
            (m.size, m.body, m.smtputf8, m.ret),
            (Some(0), BodyType::SevenBit, true, Some(Ret::Full))
        );
        assert_eq!(m.auth.as_deref(), Some("e+3Dmc2@example.com"));
    }

    #[test]
    fn size() {
        assert_eq!(mail("SIZE=18446744073709551615").size, Some(u64::MAX));
        for p in [
            "SIZE",
            "SIZE=18446744073709551616",
            "SIZE=-1",
            "SIZE=+1",
            "SIZE=1k",
            "SIZE=1.0",
        ] {
            assert_eq!(parse_mail_params(p), Err(SIZE), "{p:?}");
        }
        assert_eq!(parse_mail_params("SIZE="), Err(BAD_PARAM));
    }

    #[test]
    fn body() {
        assert_eq!(parse_mail_params("BODY=BINARYMIME"), Err(BINARYMIME));
        assert_eq!(BINARYMIME.code, 555);
        assert_eq!(parse_mail_params("BODY=8BIT"), Err(BODY));
        assert_eq!(parse_mail_params("BODY"), Err(BODY));
        assert_eq!(BODY.code, 501);
    }

    #[test]
    fn smtputf8_and_ret() {
        assert_eq!(parse_mail_params("SMTPUTF8=yes"), Err(SMTPUTF8));
        assert_eq!(parse_mail_params("RET=NONE"), Err(RET));
        assert_eq!(parse_mail_params("RET"), Err(RET));
    }

    #[test]
    fn envid_and_auth_xtext() {
        let hundred = "a".repeat(100);
        assert_eq!(
            mail(&format!("ENVID={hundred}")).envid.as_deref(),
            Some(hundred.as_str())
        );
        // 99 plain characters and one hexchar decode to 100.
        let encoded = format!("ENVID={}+2B", "a".repeat(99));
        assert_eq!(mail(&encoded).envid.map(|e| e.len()), Some(102));
        for p in [
            format!("ENVID={}", "a".repeat(101)),
            "ENVID=a+2".into(),
            "ENVID=a+".into(),
            "ENVID=a+2b".into(),
            "ENVID=a+GG".into(),
            "ENVID=a+0D".into(),
            "ENVID=é".into(),
            "ENVID".into(),
        ] {
            assert_eq!(parse_mail_params(&p), Err(ENVID), "{p:?}");
        }
        assert_eq!(parse_mail_params("AUTH=a+zz"), Err(AUTH));
        assert_eq!(parse_mail_params("AUTH"), Err(AUTH));
    }

    #[test]
    fn duplicates_and_unknown() {
        for p in [
            "SIZE=1 SIZE=2",
            "BODY=7BIT body=8bitmime",
            "SMTPUTF8 smtputf8",
            "RET=FULL RET=FULL",
            "ENVID=a ENVID=b",
            "AUTH=<> AUTH=<>",
        ] {
            assert_eq!(parse_mail_params(p), Err(DUPLICATE), "{p:?}");
        }
        assert_eq!(DUPLICATE.code, 501);
        for p in [
            "FOO",
            "X-TAG=1",
            "NOTIFY=NEVER",
            "SIZE=1 MT-PRIORITY=3",
            "BODY=7BIT HOLDFOR=10",
        ] {
            assert_eq!(parse_mail_params(p), Err(UNSUPPORTED), "{p:?}");
        }
        for p in ["SIZE=1 FOO", "ORCPT=rfc822;a@b BODY=8BITMIME"] {
            assert_eq!(parse_rcpt_params(p), Err(UNSUPPORTED), "{p:?}");
        }
        assert_eq!(
            UNSUPPORTED,
            ParamError {
                code: 555,
                text: "5.5.4 Unsupported parameter"
            }
        );
    }

    #[test]
    fn keyword_and_value_syntax() {
        for p in [
            "-SIZE=1",
            "SI_ZE=1",
            "SIZE==1",
            "=1",
            "SIZE=1=2",
            "SIZE=\x01",
            "ENVID=a\x7f",
        ] {
            assert_eq!(parse_mail_params(p), Err(BAD_PARAM), "{p:?}");
        }
        assert_eq!(BAD_PARAM.code, 501);
    }

    #[test]
    fn notify() {
        let n = rcpt("NOTIFY=NEVER").notify;
        assert!(n.never && !n.success && !n.failure && !n.delay);
        let n = rcpt("notify=success,Delay").notify;
        assert!(!n.never && n.success && !n.failure && n.delay);
        let n = rcpt("NOTIFY=FAILURE,SUCCESS,DELAY,FAILURE").notify;
        assert!(n.success && n.failure && n.delay);
        for p in [
            "NOTIFY",
            "NOTIFY=NEVER,SUCCESS",
            "NOTIFY=SUCCESS,NEVER",
            "NOTIFY=SUCCESS,",
            "NOTIFY=,DELAY",
            "NOTIFY=ALWAYS",
            "NOTIFY=SUCCESS;DELAY",
        ] {
            assert_eq!(parse_rcpt_params(p), Err(NOTIFY), "{p:?}");
        }
        assert_eq!(
            parse_rcpt_params("NOTIFY=NEVER NOTIFY=DELAY"),
            Err(DUPLICATE)
        );
    }

    #[test]
    fn orcpt() {
        assert_eq!(
            rcpt("ORCPT=rfc822;user+2Btag@example.com").orcpt.as_deref(),
            Some("rfc822;user+2Btag@example.com")
        );
        let r = rcpt("NOTIFY=FAILURE ORCPT=RFC822;a@b");
        assert_eq!(
            (r.notify.failure, r.orcpt.as_deref()),
            (true, Some("RFC822;a@b"))
        );
        assert!(rcpt("ORCPT=utf-8;us\\x{E9}r@b").orcpt.is_some());
        assert!(rcpt("ORCPT=UTF-8;用户@例子.广告").orcpt.is_some());
        for p in [
            "ORCPT",
            "ORCPT=rfc822",
            "ORCPT=rfc822;",
            "ORCPT=;a@b",
            "ORCPT=rfc(822);a@b",
            "ORCPT=rfc822;a+2@b",
            "ORCPT=rfc822;用户@b",
            "ORCPT=utf-8;a+b",
            "ORCPT=utf-8;a\\x{}b",
            "ORCPT=utf-8;a\\x{1234567}b",
            "ORCPT=utf-8;a\\y",
            "ORCPT=utf-8;a\\x{12",
        ] {
            assert_eq!(parse_rcpt_params(p), Err(ORCPT), "{p:?}");
        }
        let long = format!("ORCPT=rfc822;{}@b", "a".repeat(500));
        assert_eq!(parse_rcpt_params(&long), Err(ORCPT));
        assert_eq!(
            parse_rcpt_params("ORCPT=rfc822;a@b ORCPT=rfc822;c@d"),
            Err(DUPLICATE)
        );
    }

    #[test]
    fn texts_carry_enhanced_codes() {
        for e in [
            BAD_PARAM,
            DUPLICATE,
            UNSUPPORTED,
            BINARYMIME,
            SIZE,
            BODY,
            SMTPUTF8,
            RET,
            ENVID,
            AUTH,
            NOTIFY,
            ORCPT,
        ] {
            assert!(e.text.starts_with("5.5.4 "), "{e:?}");
        }
    }
}
