//! The wire format, through hickory-proto: names in, query packets out; reply packets in,
//! [`DnsAnswer`]s out. No I/O here.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use ringsmtpd_plugin_api::dns::{DnsAnswer, DnsError, QType, Record};

/// The EDNS0 UDP payload we advertise: 1232 bytes, the DNS Flag Day 2020 value that fits an
/// IPv6 minimum-MTU packet without fragmentation (so no fragment-injection spoofing either).
pub const UDP_PAYLOAD: u16 = 1232;
/// The longest name in text form without the final dot (RFC 1035 §2.3.4: 255 octets on the
/// wire, which is 253 characters of text).
pub const MAX_NAME: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;
/// Positive answers are cached at most a day (unbound's `cache-max-ttl` default), whatever
/// the zone says.
pub const MAX_POSITIVE_TTL: u32 = 86_400;
/// Negative answers at most an hour (unbound's `cache-max-negative-ttl`; RFC 2308 §5 suggests
/// 1-3 hours): a DNSBL delisting shows within the hour.
pub const MAX_NEGATIVE_TTL: u32 = 3_600;
/// CNAME links followed inside one answer before the rest is ignored.
const MAX_CNAME_CHAIN: usize = 8;

/// The record type on the wire for a plugin's [`QType`].
pub fn record_type(q: QType) -> RecordType {
    match q {
        QType::A => RecordType::A,
        QType::Aaaa => RecordType::AAAA,
        QType::Mx => RecordType::MX,
        QType::Txt => RecordType::TXT,
        QType::Ptr => RecordType::PTR,
        QType::Cname => RecordType::CNAME,
        QType::Ns => RecordType::NS,
    }
}

/// A one-character tag per type, the first byte of a cache or in-flight key.
pub fn type_tag(q: QType) -> char {
    match q {
        QType::A => 'a',
        QType::Aaaa => '6',
        QType::Mx => 'm',
        QType::Txt => 't',
        QType::Ptr => 'p',
        QType::Cname => 'c',
        QType::Ns => 'n',
    }
}

/// Writes the key of (`name`, `q`) into `out`: the type tag, then the name lowercased without
/// a final dot. Refuses what is not a host-style DNS name: empty labels, a label over 63 or a
/// name over 253 characters, and any character but ASCII letters, digits, `-` and `_`
/// (underscore for `_dmarc`-style names). Non-ASCII names must be given in A-label
/// (punycode) form. Nothing is allocated when `out` has room.
pub fn key_into(name: &str, q: QType, out: &mut String) -> Result<(), DnsError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(DnsError::BadName);
    }
    out.clear();
    out.push(type_tag(q));
    let mut label = 0usize;
    for b in name.bytes() {
        match b {
            b'.' => {
                if label == 0 {
                    return Err(DnsError::BadName);
                }
                label = 0;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => {
                label += 1;
                if label > MAX_LABEL {
                    return Err(DnsError::BadName);
                }
            }
            _ => return Err(DnsError::BadName),
        }
        out.push(char::from(b.to_ascii_lowercase()));
    }
    if label == 0 {
        return Err(DnsError::BadName); // "a..b" is caught above; this is a trailing "a.."
    }
    Ok(())
}

/// The name part of a key made by [`key_into`].
pub fn key_name(key: &str) -> &str {
    key.get(1..).unwrap_or_default()
}

/// A question ready to send: the name, the type, and the encoded query with ID 0 (each try
/// patches its own random ID into the first two bytes).
pub struct Question {
    pub name: Name,
    pub rtype: RecordType,
    pub packet: Vec<u8>,
}

/// Builds the query for a validated, lowercased name: RD set, one question, class IN, and an
/// EDNS0 OPT record advertising [`UDP_PAYLOAD`] (RFC 6891).
pub fn question(name: &str, q: QType) -> Result<Question, DnsError> {
    let mut fqdn = String::with_capacity(name.len() + 1);
    fqdn.push_str(name);
    fqdn.push('.');
    let name = Name::from_ascii(&fqdn).map_err(|_| DnsError::BadName)?;
    let rtype = record_type(q);
    let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_PAYLOAD);
    edns.set_version(0);
    msg.set_edns(edns);
    let packet = msg.to_vec().map_err(|_| DnsError::BadName)?;
    Ok(Question {
        name,
        rtype,
        packet,
    })
}

/// The query packet of `q` with `id` in its header.
pub fn with_id(q: &Question, id: u16) -> Vec<u8> {
    let mut p = q.packet.clone();
    if let Some(head) = p.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
    p
}

/// True if `msg` is a reply to exactly our question: a response, opcode QUERY, ID `id`, one
/// question with our name (compared case-insensitively, RFC 4343), type and class IN.
/// Anything else is not ours and must not be believed (RFC 5452 §9.1).
pub fn is_reply_to(msg: &Message, id: u16, q: &Question) -> bool {
    msg.metadata.id == id
        && msg.metadata.message_type == MessageType::Response
        && msg.metadata.op_code == OpCode::Query
        && msg.queries.len() == 1
        && msg.queries[0].query_type() == q.rtype
        && msg.queries[0].query_class() == DNSClass::IN
        && msg.queries[0].name().eq_ignore_root(&q.name)
}

/// What a reply means for the lookup.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// An answer to give to the waiters and to cache (`ttl` 0: do not cache).
    Answer(DnsAnswer),
    /// SERVFAIL: try the next upstream.
    ServFail,
    /// REFUSED, FORMERR, NOTIMP or another rcode: try the next upstream.
    Refused,
}

/// Interprets a reply that [`is_reply_to`] accepted.
///
/// The records kept are those owned by the query name or by a name the answer's CNAME chain
/// leads to (at most 8 links), of the types the plugin API knows; anything else in the answer
/// section is ignored. The TTL is the smallest of those records (capped at
/// [`MAX_POSITIVE_TTL`]); for NXDOMAIN and NODATA it is the negative TTL of RFC 2308 §5: the
/// smaller of the SOA record's TTL and its MINIMUM field, capped at [`MAX_NEGATIVE_TTL`], and 0
/// (not cached) when the reply carries no SOA.
pub fn interpret(msg: &Message, q: &Question) -> Verdict {
    let nxdomain = match msg.metadata.response_code {
        ResponseCode::NoError => false,
        ResponseCode::NXDomain => true,
        ResponseCode::ServFail => return Verdict::ServFail,
        _ => return Verdict::Refused,
    };
    // The names that own records we accept: the query name, then CNAME targets.
    let mut owners: Vec<&Name> = vec![&q.name];
    for _ in 0..MAX_CNAME_CHAIN {
        let next = msg.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c)
                if r.dns_class == DNSClass::IN
                    && owners.iter().any(|o| o.eq_ignore_root(&r.name))
                    && !owners.iter().any(|o| o.eq_ignore_root(&c.0)) =>
            {
                Some(&c.0)
            }
            _ => None,
        });
        match next {
            Some(n) => owners.push(n),
            None => break,
        }
    }
    let mut records = Vec::new();
    let mut ttl: Option<u32> = None;
    for r in &msg.answers {
        if r.dns_class != DNSClass::IN || !owners.iter().any(|o| o.eq_ignore_root(&r.name)) {
            continue;
        }
        let rec = match &r.data {
            RData::A(a) => Record::A(a.0),
            RData::AAAA(a) => Record::Aaaa(a.0),
            RData::MX(mx) => Record::Mx {
                preference: mx.preference,
                exchange: host(&mx.exchange),
            },
            RData::TXT(t) => {
                let mut s = String::new();
                for part in t.txt_data.iter() {
                    s.push_str(&String::from_utf8_lossy(part));
                }
                Record::Txt(s)
            }
            RData::PTR(p) => Record::Ptr(host(&p.0)),
            RData::CNAME(c) => Record::Cname(host(&c.0)),
            RData::NS(n) => Record::Ns(host(&n.0)),
            _ => continue,
        };
        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
        records.push(rec);
    }
    let has_data = records.iter().any(|r| !matches!(r, Record::Cname(_)))
        || (q.rtype == RecordType::CNAME && !records.is_empty());
    let ttl = if nxdomain || !has_data {
        // RFC 2308 §5: negative answers live min(SOA TTL, SOA MINIMUM). A CNAME chain that
        // ends in NODATA/NXDOMAIN is cached no longer than its links either.
        let neg = negative_ttl(msg);
        ttl.map_or(neg, |t| t.min(neg))
    } else {
        ttl.unwrap_or(0).min(MAX_POSITIVE_TTL)
    };
    Verdict::Answer(DnsAnswer {
        nxdomain,
        records,
        ttl,
    })
}

/// The negative-caching TTL from the authority section's SOA (RFC 2308 §5), 0 without one.
fn negative_ttl(msg: &Message) -> u32 {
    msg.authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(0)
        .min(MAX_NEGATIVE_TTL)
}

/// A host name as plugins see it: lowercased, no final dot.
fn host(n: &Name) -> String {
    let mut s = n.to_ascii();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s.make_ascii_lowercase();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME, MX, SOA, TXT};
    use hickory_proto::rr::Record as HRecord;
    use std::net::Ipv4Addr;

    fn key(name: &str) -> Result<String, DnsError> {
        let mut out = String::new();
        key_into(name, QType::A, &mut out).map(|()| out)
    }

    #[test]
    fn keys_are_lowercase_and_validated() {
        assert_eq!(key("Example.TEST.").unwrap(), "aexample.test");
        assert_eq!(key("_dmarc.example.test").unwrap(), "a_dmarc.example.test");
        assert_eq!(key_name("aexample.test"), "example.test");
        let long_label = format!("{}.test", "x".repeat(64));
        let ok_label = format!("{}.test", "x".repeat(63));
        assert!(key(&ok_label).is_ok());
        let long_name = ["abcdefghi"; 26].join("."); // 26*9 + 25 = 259 > 253
        let ok_name = format!("{}.x", ["abcdefghi"; 25].join(".")); // 249 + 2 = 251
        assert!(key(&ok_name).is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a b.test",
            "exa\u{e9}mple.test",
            "a/b.test",
            "a\\.b",
            "a..",
            &long_label,
            &long_name,
        ] {
            assert_eq!(key(bad), Err(DnsError::BadName), "{bad:?}");
        }
    }

    #[test]
    fn query_has_edns_rd_and_one_question() {
        let q = question("mail.example.test", QType::Mx).unwrap();
        let packet = with_id(&q, 0xbeef);
        let msg = Message::from_vec(&packet).unwrap();
        assert_eq!(msg.metadata.id, 0xbeef);
        assert!(msg.metadata.recursion_desired);
        assert_eq!(msg.queries.len(), 1);
        assert_eq!(msg.queries[0].query_type(), RecordType::MX);
        assert_eq!(
            msg.edns.as_ref().map(|e| e.max_payload()),
            Some(UDP_PAYLOAD)
        );
    }

    fn reply(q: &Question, id: u16, rcode: ResponseCode) -> Message {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.response_code = rcode;
        m.add_query(Query::query(q.name.clone(), q.rtype));
        m
    }

    fn soa(zone: &str, ttl: u32, minimum: u32) -> HRecord {
        let z = Name::from_ascii(zone).unwrap();
        let data = SOA::new(z.clone(), z.clone(), 1, 3600, 600, 86400, minimum);
        HRecord::from_rdata(z, ttl, RData::SOA(data))
    }

    #[test]
    fn reply_must_match_id_and_question() {
        let q = question("a.example.test", QType::A).unwrap();
        let ok = reply(&q, 7, ResponseCode::NoError);
        assert!(is_reply_to(&ok, 7, &q));
        assert!(!is_reply_to(&ok, 8, &q));
        // Case does not matter (RFC 4343)...
        let upper = question("A.EXAMPLE.test", QType::A).unwrap();
        assert!(is_reply_to(&reply(&upper, 7, ResponseCode::NoError), 7, &q));
        // ...but the name, the type and the message type do.
        let other = question("b.example.test", QType::A).unwrap();
        assert!(!is_reply_to(
            &reply(&other, 7, ResponseCode::NoError),
            7,
            &q
        ));
        let txt = question("a.example.test", QType::Txt).unwrap();
        assert!(!is_reply_to(&reply(&txt, 7, ResponseCode::NoError), 7, &q));
        let mut query = reply(&q, 7, ResponseCode::NoError);
        query.metadata.message_type = MessageType::Query;
        assert!(!is_reply_to(&query, 7, &q));
        let mut two = reply(&q, 7, ResponseCode::NoError);
        two.add_query(Query::query(q.name.clone(), q.rtype));
        assert!(!is_reply_to(&two, 7, &q));
    }

    #[test]
    fn answers_follow_cnames_and_ignore_strangers() {
        let q = question("www.example.test", QType::A).unwrap();
        let mut m = reply(&q, 1, ResponseCode::NoError);
        let www = Name::from_ascii("WWW.example.test.").unwrap();
        let host = Name::from_ascii("host.example.test.").unwrap();
        let evil = Name::from_ascii("bank.example.").unwrap();
        m.add_answer(HRecord::from_rdata(
            host.clone(),
            100,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ));
        m.add_answer(HRecord::from_rdata(www, 300, RData::CNAME(CNAME(host))));
        m.add_answer(HRecord::from_rdata(
            evil,
            300,
            RData::A(A(Ipv4Addr::new(6, 6, 6, 6))),
        ));
        let Verdict::Answer(a) = interpret(&m, &q) else {
            panic!("not an answer")
        };
        assert!(!a.nxdomain);
        assert_eq!(a.ttl, 100);
        assert_eq!(
            a.records,
            vec![
                Record::A(Ipv4Addr::new(192, 0, 2, 1)),
                Record::Cname("host.example.test".into())
            ]
        );
    }

    #[test]
    fn negative_ttl_from_soa() {
        let q = question("x.dnsbl.test", QType::A).unwrap();
        let mut nx = reply(&q, 1, ResponseCode::NXDomain);
        nx.add_authority(soa("dnsbl.test.", 900, 60));
        assert_eq!(
            interpret(&nx, &q),
            Verdict::Answer(DnsAnswer {
                nxdomain: true,
                records: vec![],
                ttl: 60
            })
        );
        let mut nodata = reply(&q, 1, ResponseCode::NoError);
        nodata.add_authority(soa("dnsbl.test.", 30, 86400));
        let Verdict::Answer(a) = interpret(&nodata, &q) else {
            panic!()
        };
        assert_eq!((a.nxdomain, a.ttl), (false, 30));
        let mut capped = reply(&q, 1, ResponseCode::NXDomain);
        capped.add_authority(soa("dnsbl.test.", 604800, 604800));
        let Verdict::Answer(a) = interpret(&capped, &q) else {
            panic!()
        };
        assert_eq!(a.ttl, MAX_NEGATIVE_TTL);
        let bare = reply(&q, 1, ResponseCode::NXDomain);
        let Verdict::Answer(a) = interpret(&bare, &q) else {
            panic!()
        };
        assert_eq!(a.ttl, 0, "no SOA: not cached");
    }

    #[test]
    fn rcodes_and_record_types() {
        let q = question("example.test", QType::Mx).unwrap();
        assert_eq!(
            interpret(&reply(&q, 1, ResponseCode::ServFail), &q),
            Verdict::ServFail
        );
        assert_eq!(
            interpret(&reply(&q, 1, ResponseCode::Refused), &q),
            Verdict::Refused
        );
        assert_eq!(
            interpret(&reply(&q, 1, ResponseCode::FormErr), &q),
            Verdict::Refused
        );
        let mut m = reply(&q, 1, ResponseCode::NoError);
        let n = Name::from_ascii("example.test.").unwrap();
        let mx = Name::from_ascii("MX.Example.test.").unwrap();
        m.add_answer(HRecord::from_rdata(
            n.clone(),
            999_999,
            RData::MX(MX::new(10, mx)),
        ));
        m.add_answer(HRecord::from_rdata(
            n,
            999_999,
            RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
        ));
        let Verdict::Answer(a) = interpret(&m, &q) else {
            panic!()
        };
        assert_eq!(a.ttl, MAX_POSITIVE_TTL);
        assert_eq!(
            a.records,
            vec![
                Record::Mx {
                    preference: 10,
                    exchange: "mx.example.test".into()
                },
                Record::Txt("v=spf1 -all".into())
            ]
        );
    }
}
