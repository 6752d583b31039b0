//! The fuzz targets (docs/fuzzing.md): one function per parser that reads hostile bytes, by
//! name. The libFuzzer binary (`src/bin/fuzz.rs`, built by `fuzz/run`) runs one of them per
//! process; `tests/corpus.rs` replays every file of `corpus/<target>/` through the same
//! function as a plain `cargo test`, so an input that once crashed stays checked.

use ringsmtpd::fuzzing as core;
use ringsmtpd_plugin_api::headers;
use ringsmtpd_plugin_api::mime::{Entity, Visitor, Walker};
use ringsmtpd_plugins::dkim::{key, signature};
use ringsmtpd_plugins::sender_permitted_from::macros::{Kind, MacroString};
use ringsmtpd_plugins::sender_permitted_from::record::Record;

/// A fuzz target: it runs a parser on the bytes, and panics on a bug.
pub type Target = fn(&[u8]);

/// Every target: its name (the folder of its corpus) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("address", address),
    ("bdat_receiver", core::bdat_receiver),
    ("command", core::command),
    ("data_receiver", core::data_receiver),
    ("dkim_records", dkim_records),
    ("dns_reply", core::dns_reply),
    ("esmtp_params", core::esmtp_params),
    ("header_fields", header_fields),
    ("ldap_ber", ldap_ber),
    ("milter_reply", milter_reply),
    ("mime", mime),
    ("proxy_header", core::proxy_header),
    ("resp_reply", core::resp_reply),
    ("session", core::session),
    ("smtp_reply", smtp_reply),
    ("spf_record", spf_record),
    ("store_files", core::store_files),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The path parser of MAIL and RCPT (`plugins/api/src/address.rs`); the first byte picks
/// reverse-path or forward-path, and SMTPUTF8. An accepted address prints back to a path that
/// parses to the same address.
pub fn address(data: &[u8]) {
    let Some((&first, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let (reverse, utf8) = (first & 1 != 0, first & 2 != 0);
    if let Ok(addr) = ringsmtpd_plugin_api::address::parse_path(text, reverse, utf8) {
        let again = format!("<{}>", addr.as_str());
        let reparsed = ringsmtpd_plugin_api::address::parse_path(&again, reverse, utf8)
            .unwrap_or_else(|e| panic!("{text:?} parsed, its form {again:?} did not: {e:?}"));
        assert_eq!(reparsed.as_str(), addr.as_str(), "{text:?}");
    }
}

/// The header field parser (`plugins/api/src/headers.rs`) over a message's header section:
/// every field's name and unfolded value (without line ends), and the Date parser on every
/// value.
pub fn header_fields(data: &[u8]) {
    for field in headers::fields(data) {
        let Ok(field) = field else { continue };
        assert!(!field.name().is_empty());
        let value = field.value();
        // Lines end in CRLF or LF; a bare CR is data (the core never lets one into a message).
        assert!(
            !value.contains('\n'),
            "unfolded value keeps a line end: {value:?}"
        );
        let _ = headers::parse_date(&value);
    }
    let _ = headers::first(data, "Date");
    let _ = headers::count(data, &["Received", "Subject"]);
}

/// The LDAP client's BER reader (`plugins/src/auth/ldap.rs`) over a server's byte stream.
pub fn ldap_ber(data: &[u8]) {
    let _ = ringsmtpd_plugins::auth::ldap::read_stream(data);
}

/// A DKIM-Signature value and a key record (`plugins/src/dkim/`): both come from the network
/// (the message, DNS). The same bytes go to both parsers.
pub fn dkim_records(data: &[u8]) {
    let _ = signature::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        for alg in [
            signature::Algorithm::RsaSha256,
            signature::Algorithm::Ed25519Sha256,
        ] {
            let _ = key::parse(text, alg);
        }
    }
}

/// An SPF record and macro strings (`plugins/src/sender_permitted_from/`), as DNS serves them.
pub fn spf_record(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Record::parse(text);
    let _ = MacroString::parse(text, Kind::Domain);
    let _ = MacroString::parse(text, Kind::Explain);
    let _ = MacroString::parse_domain(text);
}

/// What a MIME walk reported: each entity (depth, media type, encoding) and its decoded body.
#[derive(Debug, Default, PartialEq)]
struct Walk(Vec<(u32, String, String, Vec<u8>)>);

impl Visitor for Walk {
    fn entity(&mut self, e: &Entity<'_>) -> bool {
        self.0
            .push((e.depth, e.media.clone(), e.encoding.clone(), Vec::new()));
        true
    }
    fn data(&mut self, decoded: &[u8]) {
        if let Some(last) = self.0.last_mut() {
            last.3.extend_from_slice(decoded);
        }
    }
    fn end(&mut self) {}
}

/// The streaming MIME walker (`plugins/api/src/mime.rs`) over a message: fed whole, and fed in
/// pieces of a size the first byte picks, it reports the same entities and decoded bodies.
pub fn mime(data: &[u8]) {
    let Some((&first, msg)) = data.split_first() else {
        return;
    };
    let mut whole = Walker::new(Walk::default());
    whole.feed(msg);
    let whole = whole.finish();
    let mut pieces = Walker::new(Walk::default());
    for piece in msg.chunks(usize::from(first) + 1) {
        pieces.feed(piece);
    }
    assert_eq!(
        whole,
        pieces.finish(),
        "pieces of {} bytes",
        usize::from(first) + 1
    );
}

/// A downstream's replies as `queue/smtp-forward` and `queue/lmtp` read them
/// (`plugins/src/queue/smtp_client.rs`): the text we pass on keeps no CR, and an enhanced
/// status code at its front has the class of the reply code (a 4xx never says 2.x.x).
pub fn smtp_reply(data: &[u8]) {
    use ringsmtpd_plugins::queue::smtp_client::read_replies;
    for (reply, text, _caps) in read_replies(data).into_iter().flatten() {
        assert!((200..600).contains(&reply.code), "code {}", reply.code);
        assert!(!text.contains('\r'), "CR in {text:?}");
        // An enhanced code is `class.subject.detail` with class 2, 4 or 5 (RFC 3463); the
        // engine takes anything else ("3.2.0") as text and puts its own code in front.
        let first = text.split(' ').next().unwrap_or("");
        let parts: Vec<&str> = first.split('.').collect();
        let enhanced = parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
        if enhanced {
            assert_eq!(
                parts[0].as_bytes()[0],
                b'0' + (reply.code / 100) as u8,
                "{} with {text:?}",
                reply.code
            );
        }
    }
}

/// The milter client's reply reader (`plugins/src/milter/proto.rs`) over what a milter sends,
/// read as `milter/conn.rs` reads it (replies parsed from the front of the bytes received so
/// far): whole and cut in two at a point the first byte picks, the same replies and the same
/// refusal. Each reply takes exactly its packet (`len(4) cmd data`); a refusal is decided by
/// the packet alone (the bytes after it change nothing), and a packet is refused as soon as its
/// 4 length bytes are in when the length is 0 or over `MAX_PACKET`, so "need more" never waits
/// on such a length. The option negotiation, header names and reply texts are checked too.
pub fn milter_reply(data: &[u8]) {
    use ringsmtpd_plugins::milter::proto::{self, MAX_PACKET};
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let declared = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let stream = core::read_replies_cut_anywhere(proto::parse, input, cut);
    let mut at = 0;
    for (reply, used) in &stream.replies {
        assert_eq!(*used, 4 + declared(&input[at..]), "reply {reply:?} at {at}");
        at += used;
        check_milter_reply(reply);
    }
    let rest = &input[at..];
    match (&stream.error, rest.len()) {
        (None, 0..=3) => assert_eq!(stream.left, rest.len(), "bytes left waiting"),
        (None, _) => {
            assert_eq!(stream.left, rest.len(), "bytes left waiting");
            let len = declared(rest);
            assert!(
                (1..=MAX_PACKET).contains(&len),
                "waits on a length of {len}"
            );
            assert!(rest.len() < 4 + len, "a whole packet waits");
        }
        (Some(e), _) => {
            let len = declared(rest);
            let packet = if (1..=MAX_PACKET).contains(&len) {
                assert!(rest.len() >= 4 + len, "{e:?} before the packet was in");
                4 + len
            } else {
                4
            };
            assert_eq!(
                proto::parse(&rest[..packet]).as_ref().err(),
                Some(e),
                "the refusal depends on bytes after the packet"
            );
        }
    }
}

/// What a parsed milter reply promises: a header name is a field name, a negotiation lists
/// each stage once with at most 64 macro names of at most 64 bytes, and a reply text cleans
/// up into a 4xx/5xx reply without control characters.
fn check_milter_reply(reply: &ringsmtpd_plugins::milter::proto::Reply) {
    use ringsmtpd_plugins::milter::proto::{self, Reply};
    let _ = reply.needs();
    match reply {
        Reply::AddHeader { name, .. }
        | Reply::InsertHeader { name, .. }
        | Reply::ChangeHeader { name, .. } => {
            assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        }
        Reply::OptNeg(n) => {
            for (i, (stage, names)) in n.macros.iter().enumerate() {
                assert!(
                    !n.macros[..i].iter().any(|(s, _)| s == stage),
                    "{stage:?} twice"
                );
                assert!(names.len() <= 64 && names.iter().all(|m| !m.is_empty() && m.len() <= 64));
            }
            let _ = proto::check_negotiation(n);
        }
        Reply::ReplyCode(text) => {
            if let Some((code, enhanced, lines)) = proto::reply_code(text) {
                assert!((400..600).contains(&code), "code {code}");
                assert!(!lines.is_empty() && lines.len() <= 32);
                assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
                assert!(
                    enhanced.is_empty() || enhanced.as_bytes()[0] == b'0' + (code / 100) as u8,
                    "{code} with {enhanced:?}"
                );
            }
        }
        _ => {}
    }
}
