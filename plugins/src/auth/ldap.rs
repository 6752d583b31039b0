//! The few LDAPv3 messages `auth/auth_ldap_bind` needs (RFC 4511), sans I/O: simple
//! BindRequest, SearchRequest with one equality filter, UnbindRequest; BindResponse,
//! SearchResultEntry (its DN only), SearchResultReference, SearchResultDone and the Notice of
//! Disconnection. Encoded with BER's definite lengths as RFC 4511 §5.1 requires.
//!
//! The filter is built as a BER structure, not parsed from a string, so a user name full of
//! `*`, `(` and `)` is a literal value and cannot change the filter (the injection that an
//! unescaped `"uid=$user"` string allows). [`escape_filter_value`] writes the RFC 4515 string
//! form only for logs.

use std::fmt;

/// The largest message we accept from the server. A SearchResultEntry with no attributes
/// (we ask for `1.1`) is a DN and a few bytes; referrals are short. A server sending more is
/// broken or hostile, and must not grow our buffer without bound.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

// Tags (RFC 4511 §4): universal, then [APPLICATION n] with the constructed bit where the
// operation is a SEQUENCE.
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const BOOLEAN: u8 = 0x01;
const ENUMERATED: u8 = 0x0a;
const SEQUENCE: u8 = 0x30;
const BIND_REQUEST: u8 = 0x60;
const BIND_RESPONSE: u8 = 0x61;
const UNBIND_REQUEST: u8 = 0x42;
const SEARCH_REQUEST: u8 = 0x63;
const SEARCH_RESULT_ENTRY: u8 = 0x64;
const SEARCH_RESULT_DONE: u8 = 0x65;
const SEARCH_RESULT_REFERENCE: u8 = 0x73;
const EXTENDED_RESPONSE: u8 = 0x78;
/// AuthenticationChoice `simple [0] OCTET STRING`.
const AUTH_SIMPLE: u8 = 0x80;
/// Filter `equalityMatch [3] AttributeValueAssertion`.
const FILTER_EQUALITY: u8 = 0xa3;

/// Search scope `wholeSubtree` (RFC 4511 §4.5.1.2).
const SCOPE_SUBTREE: i64 = 2;
/// `neverDerefAliases`: an alias entry is not followed to another user's entry.
const DEREF_NEVER: i64 = 0;

/// LDAP result codes we name (RFC 4511 Appendix A).
pub(crate) mod code {
    pub const SUCCESS: u32 = 0;
    pub const SIZE_LIMIT_EXCEEDED: u32 = 4;
    pub const CONSTRAINT_VIOLATION: u32 = 19;
    pub const NO_SUCH_OBJECT: u32 = 32;
    pub const INAPPROPRIATE_AUTHENTICATION: u32 = 48;
    pub const INVALID_CREDENTIALS: u32 = 49;
    pub const INSUFFICIENT_ACCESS_RIGHTS: u32 = 50;
    pub const UNWILLING_TO_PERFORM: u32 = 53;
}

/// The name of a result code, for logs.
pub(crate) fn code_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        10 => "referral",
        11 => "adminLimitExceeded",
        13 => "confidentialityRequired",
        19 => "constraintViolation",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        80 => "other",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// A BER INTEGER/ENUMERATED: minimal two's complement.
fn int(out: &mut Vec<u8>, tag: u8, v: i64) {
    let bytes = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    tlv(out, tag, &bytes[start..]);
}

/// `LDAPMessage ::= SEQUENCE { messageID, protocolOp }`.
fn message(id: i32, op: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(op.len() + 6);
    int(&mut body, INTEGER, i64::from(id));
    body.extend_from_slice(op);
    let mut out = Vec::with_capacity(body.len() + 6);
    tlv(&mut out, SEQUENCE, &body);
    out
}

/// A simple BindRequest (RFC 4511 §4.2): version 3, `dn`, `password`.
pub(crate) fn bind_request(id: i32, dn: &[u8], password: &[u8]) -> Vec<u8> {
    let mut op = Vec::with_capacity(dn.len() + password.len() + 12);
    int(&mut op, INTEGER, 3);
    tlv(&mut op, OCTET_STRING, dn);
    tlv(&mut op, AUTH_SIMPLE, password);
    let mut wrapped = Vec::with_capacity(op.len() + 6);
    tlv(&mut wrapped, BIND_REQUEST, &op);
    message(id, &wrapped)
}

/// A SearchRequest (RFC 4511 §4.5.1) for the entries under `base` whose `attr` equals
/// `value`, returning no attributes (`1.1`: we need only the DN).
pub(crate) fn search_request(
    id: i32,
    base: &str,
    attr: &str,
    value: &[u8],
    size_limit: i64,
    time_limit: i64,
) -> Vec<u8> {
    let mut op = Vec::with_capacity(base.len() + attr.len() + value.len() + 40);
    tlv(&mut op, OCTET_STRING, base.as_bytes());
    int(&mut op, ENUMERATED, SCOPE_SUBTREE);
    int(&mut op, ENUMERATED, DEREF_NEVER);
    int(&mut op, INTEGER, size_limit);
    int(&mut op, INTEGER, time_limit);
    tlv(&mut op, BOOLEAN, &[0x00]); // typesOnly FALSE
    let mut ava = Vec::with_capacity(attr.len() + value.len() + 8);
    tlv(&mut ava, OCTET_STRING, attr.as_bytes());
    tlv(&mut ava, OCTET_STRING, value);
    tlv(&mut op, FILTER_EQUALITY, &ava);
    let mut attrs = Vec::with_capacity(5);
    tlv(&mut attrs, OCTET_STRING, b"1.1");
    tlv(&mut op, SEQUENCE, &attrs);
    let mut wrapped = Vec::with_capacity(op.len() + 6);
    tlv(&mut wrapped, SEARCH_REQUEST, &op);
    message(id, &wrapped)
}

/// An UnbindRequest (RFC 4511 §4.3): the polite end of the connection.
pub(crate) fn unbind_request(id: i32) -> Vec<u8> {
    message(id, &[UNBIND_REQUEST, 0x00])
}

/// The RFC 4515 string form of an assertion value: `*`, `(`, `)`, `\` and NUL as `\XX`
/// (and control characters too, so the log line stays one line).
pub(crate) fn escape_filter_value(value: &str) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '*' | '(' | ')' | '\\') || c.is_ascii_control() {
            let _ = write!(out, "\\{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A malformed or unexpected message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadMessage(pub String);

impl fmt::Display for BadMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(why: impl Into<String>) -> BadMessage {
    BadMessage(why.into())
}

/// One tag-length-value: the tag and the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
}

/// The header of the TLV at the start of `buf`: (tag, header length, content length);
/// `Ok(None)` if `buf` does not hold the whole header yet.
fn header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, BadMessage> {
    let (Some(&tag), Some(&first)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if tag & 0x1f == 0x1f {
        return Err(bad("multi-byte BER tag (not used by LDAP)"));
    }
    if first < 0x80 {
        return Ok(Some((tag, 2, usize::from(first))));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 {
        return Err(bad("indefinite BER length (RFC 4511 §5.1 forbids it)"));
    }
    if n > 4 {
        return Err(bad("BER length over 4 bytes"));
    }
    let Some(bytes) = buf.get(2..2 + n) else {
        return Ok(None);
    };
    let len = bytes
        .iter()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Ok(Some((tag, 2 + n, len)))
}

/// The length of the complete message at the start of `buf`, `Ok(None)` if more bytes are
/// needed. A message longer than [`MAX_MESSAGE`] is an error before it arrives.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<usize>, BadMessage> {
    let Some((tag, head, len)) = header(buf)? else {
        return Ok(None);
    };
    if tag != SEQUENCE {
        return Err(bad(format!(
            "message starts with tag {tag:#04x}, not SEQUENCE"
        )));
    }
    if head + len > MAX_MESSAGE {
        return Err(bad(format!(
            "message of {} bytes (limit {MAX_MESSAGE})",
            head + len
        )));
    }
    Ok((buf.len() >= head + len).then_some(head + len))
}

/// Reads TLVs one after another out of a content.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(content: &'a [u8]) -> Reader<'a> {
        Reader(content)
    }

    /// The next TLV; an error if the content ends inside one.
    pub(crate) fn next(&mut self) -> Result<Option<Tlv<'a>>, BadMessage> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let (tag, head, len) = header(self.0)?.ok_or_else(|| bad("truncated BER header"))?;
        let content = self
            .0
            .get(head..head + len)
            .ok_or_else(|| bad("BER length past the end of its container"))?;
        self.0 = &self.0[head + len..];
        Ok(Some(Tlv { tag, content }))
    }

    /// The next TLV, which must have `tag`.
    pub(crate) fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], BadMessage> {
        match self.next()? {
            Some(t) if t.tag == tag => Ok(t.content),
            Some(t) => Err(bad(format!(
                "{what}: tag {:#04x}, expected {tag:#04x}",
                t.tag
            ))),
            None => Err(bad(format!("{what} missing"))),
        }
    }
}

/// A BER INTEGER or ENUMERATED that fits 32 bits.
pub(crate) fn read_int(content: &[u8]) -> Result<i64, BadMessage> {
    if content.is_empty() || content.len() > 5 {
        return Err(bad("INTEGER of bad length"));
    }
    let first = i64::from(content[0] as i8);
    Ok(content[1..]
        .iter()
        .fold(first, |acc, &b| (acc << 8) | i64::from(b)))
}

/// An LDAPResult (RFC 4511 §4.1.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LdapResult {
    pub code: u32,
    pub matched_dn: String,
    pub message: String,
}

impl fmt::Display for LdapResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code, code_name(self.code))?;
        if !self.message.is_empty() {
            // The server's text, one line, bounded.
            let text: String = self
                .message
                .chars()
                .take(200)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            write!(f, ": {text}")?;
        }
        Ok(())
    }
}

fn read_result(r: &mut Reader<'_>) -> Result<LdapResult, BadMessage> {
    let code = read_int(r.expect(ENUMERATED, "resultCode")?)?;
    let code = u32::try_from(code).map_err(|_| bad("negative resultCode"))?;
    let matched_dn = String::from_utf8_lossy(r.expect(OCTET_STRING, "matchedDN")?).into_owned();
    let message =
        String::from_utf8_lossy(r.expect(OCTET_STRING, "diagnosticMessage")?).into_owned();
    Ok(LdapResult {
        code,
        matched_dn,
        message,
    })
}

/// The operations we read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    BindResponse(LdapResult),
    /// A SearchResultEntry: the DN as sent (bound with exactly these bytes).
    SearchEntry(Vec<u8>),
    SearchReference,
    SearchDone(LdapResult),
    /// An ExtendedResponse: with message ID 0 the server's Notice of Disconnection (§4.4.1).
    Extended(LdapResult),
    Other(u8),
}

/// One parsed LDAPMessage: its ID and operation. Controls are ignored.
pub(crate) fn parse_message(msg: &[u8]) -> Result<(i64, Op), BadMessage> {
    let mut outer = Reader::new(msg);
    let body = outer.expect(SEQUENCE, "LDAPMessage")?;
    let mut r = Reader::new(body);
    let id = read_int(r.expect(INTEGER, "messageID")?)?;
    let op = r.next()?.ok_or_else(|| bad("protocolOp missing"))?;
    let mut c = Reader::new(op.content);
    let op = match op.tag {
        BIND_RESPONSE => Op::BindResponse(read_result(&mut c)?),
        SEARCH_RESULT_ENTRY => Op::SearchEntry(c.expect(OCTET_STRING, "objectName")?.to_vec()),
        SEARCH_RESULT_REFERENCE => Op::SearchReference,
        SEARCH_RESULT_DONE => Op::SearchDone(read_result(&mut c)?),
        EXTENDED_RESPONSE => Op::Extended(read_result(&mut c)?),
        tag => Op::Other(tag),
    };
    Ok((id, op))
}

/// Reads a server's byte stream the way `auth/ldap_bind` does: frames one message after
/// another and parses each, until the bytes run out or one is refused. Each message's ID and
/// operation (printed), or the refusal. The fuzz target `ldap_ber` (`fuzz/`) feeds it hostile
/// bytes.
pub fn read_stream(mut buf: &[u8]) -> Vec<Result<String, String>> {
    let mut seen = Vec::new();
    loop {
        match frame(buf) {
            Ok(Some(n)) => {
                seen.push(match parse_message(&buf[..n]) {
                    Ok((id, op)) => Ok(format!("{id} {}", describe(&op))),
                    Err(e) => Err(e.to_string()),
                });
                buf = &buf[n..];
            }
            Ok(None) => return seen,
            Err(e) => {
                seen.push(Err(e.to_string()));
                return seen;
            }
        }
    }
}

/// An operation as the plugin logs it.
fn describe(op: &Op) -> String {
    match op {
        Op::BindResponse(r) | Op::SearchDone(r) | Op::Extended(r) => r.to_string(),
        Op::SearchEntry(dn) => String::from_utf8_lossy(dn).into_owned(),
        Op::SearchReference => "reference".into(),
        Op::Other(tag) => format!("tag {tag:#04x}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A server's encoder, for the fake servers in tests: an LDAPResult-shaped response.
    pub fn result_message(id: i32, tag: u8, code: u32, text: &str) -> Vec<u8> {
        let mut op = Vec::new();
        int(&mut op, ENUMERATED, i64::from(code));
        tlv(&mut op, OCTET_STRING, b"");
        tlv(&mut op, OCTET_STRING, text.as_bytes());
        let mut wrapped = Vec::new();
        tlv(&mut wrapped, tag, &op);
        message(id, &wrapped)
    }

    pub fn bind_response(id: i32, code: u32) -> Vec<u8> {
        result_message(id, BIND_RESPONSE, code, "")
    }

    pub fn search_done(id: i32, code: u32) -> Vec<u8> {
        result_message(id, SEARCH_RESULT_DONE, code, "")
    }

    pub fn search_entry(id: i32, dn: &str) -> Vec<u8> {
        let mut op = Vec::new();
        tlv(&mut op, OCTET_STRING, dn.as_bytes());
        tlv(&mut op, SEQUENCE, b"");
        let mut wrapped = Vec::new();
        tlv(&mut wrapped, SEARCH_RESULT_ENTRY, &op);
        message(id, &wrapped)
    }

    pub fn notice_of_disconnection() -> Vec<u8> {
        result_message(0, EXTENDED_RESPONSE, 52, "shutting down")
    }

    /// A request as the fake server sees it.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Request {
        Bind {
            id: i64,
            dn: String,
            password: String,
        },
        Search {
            id: i64,
            base: String,
            attr: String,
            value: String,
            size_limit: i64,
        },
        Unbind,
    }

    /// Parses a request (the server side of what we encode).
    pub fn parse_request(msg: &[u8]) -> Request {
        let mut outer = Reader::new(msg);
        let mut r = Reader::new(outer.expect(SEQUENCE, "msg").unwrap());
        let id = read_int(r.expect(INTEGER, "id").unwrap()).unwrap();
        let op = r.next().unwrap().unwrap();
        let mut c = Reader::new(op.content);
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        match op.tag {
            BIND_REQUEST => {
                assert_eq!(read_int(c.expect(INTEGER, "version").unwrap()).unwrap(), 3);
                let dn = s(c.expect(OCTET_STRING, "dn").unwrap());
                let password = s(c.expect(AUTH_SIMPLE, "simple").unwrap());
                Request::Bind { id, dn, password }
            }
            SEARCH_REQUEST => {
                let base = s(c.expect(OCTET_STRING, "base").unwrap());
                assert_eq!(read_int(c.expect(ENUMERATED, "scope").unwrap()).unwrap(), 2);
                assert_eq!(read_int(c.expect(ENUMERATED, "deref").unwrap()).unwrap(), 0);
                let size_limit = read_int(c.expect(INTEGER, "size").unwrap()).unwrap();
                read_int(c.expect(INTEGER, "time").unwrap()).unwrap();
                c.expect(BOOLEAN, "typesOnly").unwrap();
                let mut ava = Reader::new(c.expect(FILTER_EQUALITY, "filter").unwrap());
                let attr = s(ava.expect(OCTET_STRING, "attr").unwrap());
                let value = s(ava.expect(OCTET_STRING, "value").unwrap());
                let mut attrs = Reader::new(c.expect(SEQUENCE, "attrs").unwrap());
                assert_eq!(attrs.expect(OCTET_STRING, "1.1").unwrap(), b"1.1");
                Request::Search {
                    id,
                    base,
                    attr,
                    value,
                    size_limit,
                }
            }
            UNBIND_REQUEST => Request::Unbind,
            t => panic!("unexpected request tag {t:#04x}"),
        }
    }

    #[test]
    fn bind_request_bytes() {
        // SEQUENCE { 1, [APPLICATION 0] { 3, "cn=a", [0] "pw" } } (RFC 4511 §4.2).
        let got = bind_request(1, b"cn=a", b"pw");
        let want = [
            0x30, 0x12, 0x02, 0x01, 0x01, 0x60, 0x0d, 0x02, 0x01, 0x03, 0x04, 0x04, b'c', b'n',
            b'=', b'a', 0x80, 0x02, b'p', b'w',
        ];
        assert_eq!(got, want);
        assert_eq!(
            parse_request(&got),
            Request::Bind {
                id: 1,
                dn: "cn=a".into(),
                password: "pw".into()
            }
        );
    }

    #[test]
    fn long_lengths_and_integers() {
        let dn = "x".repeat(300);
        let msg = bind_request(70000, dn.as_bytes(), b"p");
        assert_eq!(frame(&msg), Ok(Some(msg.len())));
        assert_eq!(frame(&msg[..msg.len() - 1]), Ok(None));
        assert_eq!(frame(&msg[..1]), Ok(None));
        assert_eq!(frame(&msg[..3]), Ok(None));
        match parse_request(&msg) {
            Request::Bind { id, dn: got, .. } => assert_eq!((id, got.len()), (70000, 300)),
            other => panic!("{other:?}"),
        }
        for v in [0i64, 1, 127, 128, 255, 256, -1, -128, -129, 2_147_483_647] {
            let mut out = Vec::new();
            int(&mut out, INTEGER, v);
            assert_eq!(read_int(&out[2..]), Ok(v), "{v}: {out:02x?}");
        }
        let mut out = Vec::new();
        int(&mut out, INTEGER, 128);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x80], "minimal, positive");
    }

    #[test]
    fn search_request_is_a_literal_equality_filter() {
        let msg = search_request(2, "dc=example,dc=test", "uid", b"*)(uid=*", 2, 5);
        assert_eq!(
            parse_request(&msg),
            Request::Search {
                id: 2,
                base: "dc=example,dc=test".into(),
                attr: "uid".into(),
                value: "*)(uid=*".into(),
                size_limit: 2,
            }
        );
        assert_eq!(escape_filter_value("*)(uid=*"), "\\2a\\29\\28uid=\\2a");
        assert_eq!(escape_filter_value("a\\b\0c"), "a\\5cb\\00c");
        assert_eq!(escape_filter_value("jöe"), "jöe");
    }

    #[test]
    fn responses() {
        let (id, op) = parse_message(&bind_response(3, 49)).unwrap();
        assert_eq!(id, 3);
        let Op::BindResponse(r) = op else { panic!() };
        assert_eq!(r.code, code::INVALID_CREDENTIALS);
        assert_eq!(r.to_string(), "49 (invalidCredentials)");
        assert_eq!(
            parse_message(&search_entry(2, "uid=a,dc=t")).unwrap(),
            (2, Op::SearchEntry(b"uid=a,dc=t".to_vec()))
        );
        let (_, op) = parse_message(&search_done(2, 0)).unwrap();
        assert!(matches!(op, Op::SearchDone(LdapResult { code: 0, .. })));
        let (id, op) = parse_message(&notice_of_disconnection()).unwrap();
        assert_eq!(id, 0);
        let Op::Extended(r) = op else { panic!() };
        assert_eq!(r.to_string(), "52 (unavailable): shutting down");
        assert_eq!(
            parse_message(&unbind_request(9)).unwrap(),
            (9, Op::Other(UNBIND_REQUEST))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(frame(&[0x04, 0x00]).is_err(), "not a SEQUENCE");
        assert!(frame(&[0x30, 0x80]).is_err(), "indefinite length");
        assert!(
            frame(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err(),
            "5-byte length"
        );
        assert!(
            frame(&[0x30, 0x83, 0x10, 0x00, 0x00]).is_err(),
            "over the limit"
        );
        assert!(frame(&[0x3f, 0x01]).is_err(), "multi-byte tag");
        for msg in [
            &[0x30, 0x03, 0x02, 0x01][..],                     // truncated inside
            &[0x30, 0x03, 0x02, 0x01, 0x01],                   // no protocolOp
            &[0x30, 0x05, 0x02, 0x01, 0x01, 0x61, 0x00],       // empty result
            &[0x30, 0x06, 0x02, 0x00, 0x61, 0x02, 0x0a, 0x00], // empty INTEGER
            &[0x30, 0x02, 0x04, 0x00],                         // messageID not INTEGER
        ] {
            assert!(parse_message(msg).is_err(), "{msg:02x?}");
        }
        // Every prefix of a valid message is a clean error or "need more", never a panic.
        let good = search_entry(2, "uid=someone,dc=example,dc=test");
        for n in 0..good.len() {
            let _ = parse_message(&good[..n]);
            assert_eq!(frame(&good[..n]), Ok(None));
        }
    }
}
