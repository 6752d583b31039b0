//! Sender authentication CPU cost per message: the `dkim` plugin verifying a 2 KiB message
//! that carries one RSA-2048 and one Ed25519 signature (relaxed/relaxed, as most signers
//! send), and `sender_permitted_from` evaluating a record with two `include:`s.
//!
//! `cargo bench --bench auth`. The plugins run through their public API (`ringsmtpd_plugins::find`)
//! on the plugin API's test services, whose DNS answers are pre-filled and come back at once:
//! what is measured is the CPU work of a message (parsing, canonicalization, hashing, the
//! signature checks, the SPF evaluation), as with a warm DNS cache, and no I/O. The messages
//! are signed here: RSA with a 2048-bit test key (made with `openssl genpkey`, used nowhere
//! else), Ed25519 with a key made at start. See docs/benchmarks.md for the figures.

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ring::signature::{Ed25519KeyPair, KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use ringsmtpd_plugin_api::dns::QType;
use ringsmtpd_plugin_api::shared::AuthResults;
use ringsmtpd_plugin_api::testing::{cx, records::txt, run, set_message, txn_from, FakeServices};
use ringsmtpd_plugin_api::{Cx, Hello, HelloKind, Plugin, PluginInit, Transaction};

/// The 2048-bit RSA test key, PKCS#8.
const RSA2048_PKCS8: &[&str] = &[
    "MIIEvwIBADANBgkqhkiG9w0BAQEFAASCBKkwggSlAgEAAoIBAQDXCp2Y0jcv1k3yXbYKyyFR5ggE9sWl73zsYYgn6rtIVwdK",
    "l+fsDiRX9u6PFdQQfa25uMPLdvWa0/gZWirZkRuGiTbEArgbX4aqA3gtaD0Lyugmba+M7e4U1ATu4a+bMlARDk9tgn6Ncby0",
    "5aG0wVisrvVmUe8wgkIAa/JRrpaEfZqRzYG3VidQiefVHpWkLMZuPLYcgmSpnbjLotRJa6BfParfZYV8ORU4FBuw7TTY4j3q",
    "GfM3aWtHwhIwqjNp4+gie6CJe2FbiVyPF7hc5LIewdBlwr07/m0CvpPjx+xcPmefJh25N+aQACcHTTVykmT2vEl7k5FXDZAu",
    "tzG8GfFDAgMBAAECggEABRWRq1LRDjb9ac0QaEnsNEEBkIh7HNTAOeCGdRcmLWwtVnSn/ZtJ/bBvbH+iH2+xQ1JcgruBzBLV",
    "61eH6tP0+CXXXyQHUVJdXzisxzoPM2+tNHdkbqsTdXeb1EAOxFcYsIaLlzW+Iz78rLQ/MgReQdrzH2OxiY6S2+qxdH/xvBkn",
    "DYKlJIbCggLErEyOZYOWjmKHX5FTboVoMD0S/Z7puhaRFkPCH+cRwCfSNyTvrjRAhpW+03/KJ2XYdt31WFcirM9W1qaqFTwD",
    "wSjII8+QPAtShydEAtJGZQMzR1JY8RIuHDf/tTujviratqZ/SfyVeU9sNGzncHCkVrlDckXvoQKBgQDswNGRvib5yXvDTSbk",
    "9IY+uz74r1gufzfisGlwOiaOiq6bqDX1OFyPVpNfniiBvwXQlzNAuSi8rcHlY1Psi8ajyaVtEDwkIvB4Beasp4FnBJU/ulQG",
    "Ufklklrlvzh1r5a9E0O77QA4l+tkSVTn4z/9NpYGsHJi5eJU+HQe7Et8owKBgQDohfGrNz0M2lxCQjWH3dSdBC4a7ARLgOoO",
    "Vn4qM8xSrUWXte5ScsAUq/YkFOQejMdoJYFFKc8SXDXkfE/hiq8mHyyqmE6QwPc7aPf/TVoIqw7Qh3Ml7IjBEnL/QnGEJyQ1",
    "QsJCiKt/valkEsXXBWOC8iTappllu2tfAMxWtXli4QKBgQDZMQKQq1riJ/6L6klWHSTSg8B/L4y8CyVfpurzc8VPWtZYIfZu",
    "Ieh37rqAK32JmY5iD3OLWtGOVfDc2URyasAuHZzO8ufZVtw3n2JA3eIOedvZfLv8mFLyLtOIlOXcwNqOVg/7ZK6hPG1LsSJd",
    "INLhHqR/OnuVUsNRpCQTAj819QKBgQCH+Ovdp6u3vGl/BaCwFvSh7TPY4nOQg45bXBDjNO8i2dh8YxM+e4P/kp+Zce4EP2bM",
    "bEIv48cHgYyyVE+SILtTm59PE0m+NFlfEH8VeHJR51X+c3bOkodWACfnRT+EfC8cRjG7HpjLVmmb765pkukiRd9vTUUezH55",
    "S8oyWmTlgQKBgQCnrDHlxBIEAplHaG7ERkMm73tFfroL81xJY81pJrq3jX+NbbenHlt35ylzFlyQzhmXiE35qf6J/FRdRvLk",
    "KlEdpHY37Bfg/lkN5L8v1+AND2kxyEN/SvXlJSNnBcKDRvytNTrlpiyG3sUVlCX/Ljlvi/Tg/y2q1v+6x/ubfaFCzg==",
];

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// RFC 6376 §3.4.4 relaxed body: white space runs become one space, none at line ends, no
/// empty lines at the end.
fn relaxed_body(body: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| {
            l.split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

/// RFC 6376 §3.4.2 relaxed header field (without its CRLF).
fn relaxed_field(name: &str, value: &str) -> String {
    let value: Vec<&str> = value
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .collect();
    format!("{}:{}", name.to_ascii_lowercase(), value.join(" "))
}

/// Adds a relaxed/relaxed DKIM-Signature on top of `message` with `sign`.
fn dkim_sign(message: &str, a: &str, s: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let (head, body) = message.split_once("\r\n\r\n").expect("a body");
    let bh =
        b64(ring::digest::digest(&ring::digest::SHA256, relaxed_body(body).as_bytes()).as_ref());
    let names = ["from", "to", "subject", "date", "message-id"];
    let mut data = String::new();
    for name in names {
        let line = head
            .split("\r\n")
            .find(|l| {
                l.split_once(':')
                    .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .expect("signed field");
        let (n, v) = line.split_once(':').expect("field");
        data.push_str(&relaxed_field(n, v));
        data.push_str("\r\n");
    }
    let value = format!(
        " v=1; a={a}; c=relaxed/relaxed; d=bench.example; s={s}; h={}; bh={bh}; b=",
        names.join(":")
    );
    data.push_str(&relaxed_field("DKIM-Signature", &value));
    let b = b64(&sign(data.as_bytes()));
    format!("DKIM-Signature:{value}{b}\r\n{message}")
}

/// A 2 KiB message, signed with RSA-2048 and Ed25519; the services answer both keys.
fn signed_message(svc: &FakeServices) -> String {
    let body: String = (0..24)
        .map(|i| {
            format!(
                "Line {i:02} of the message body, with  some   spacing\tand text to fill it.\r\n"
            )
        })
        .collect();
    let message = format!(
        "From: Alice <alice@bench.example>\r\nTo: bob@example.test\r\nSubject: the auth bench\r\n\
         Date: Fri, 04 Dec 2026 22:00:00 +0000\r\nMessage-ID: <bench.1@bench.example>\r\n\r\n{body}"
    );
    let der = base64::engine::general_purpose::STANDARD
        .decode(RSA2048_PKCS8.concat())
        .expect("test key");
    let rsa = RsaKeyPair::from_pkcs8(&der).expect("RSA test key");
    let rng = ring::rand::SystemRandom::new();
    let ed = Ed25519KeyPair::from_pkcs8(
        Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("ed25519")
            .as_ref(),
    )
    .expect("ed25519 key");
    let message = dkim_sign(&message, "rsa-sha256", "rsa", |data| {
        let mut out = vec![0; rsa.public().modulus_len()];
        rsa.sign(&RSA_PKCS1_SHA256, &rng, data, &mut out)
            .expect("RSA sign");
        out
    });
    let message = dkim_sign(&message, "ed25519-sha256", "ed", |data| {
        ed.sign(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
            .as_ref()
            .to_vec()
    });
    let rsa_record = format!("v=DKIM1; k=rsa; p={}", b64(rsa.public().as_ref()));
    let ed_record = format!("v=DKIM1; k=ed25519; p={}", b64(ed.public_key().as_ref()));
    svc.answer(
        "rsa._domainkey.bench.example",
        QType::Txt,
        vec![txt(&rsa_record)],
    );
    svc.answer(
        "ed._domainkey.bench.example",
        QType::Txt,
        vec![txt(&ed_record)],
    );
    message
}

fn plugin(line: &str) -> Box<dyn Plugin> {
    let words: Vec<String> = line
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let name = line.split_whitespace().next().expect("name");
    let cfg = ringsmtpd_plugin_api::testing::MemConfig::default();
    let origin = ringsmtpd_plugin_api::testing::origin(line);
    let init = PluginInit {
        name,
        args: &words,
        config: &cfg,
        origin: &origin,
    };
    ringsmtpd_plugins::find(name).expect("known plugin")(&init).expect("builds")
}

/// One message through the dkim plugin's hooks; its A-R clauses.
fn verify(p: &dyn Plugin, c: &mut Cx, message: &str) -> Vec<String> {
    let mut txn = Transaction::default();
    set_message(&mut txn, message);
    run(p.data_post_headers(c, &mut txn));
    run(p.data_post(c, &mut txn));
    txn.notes
        .get::<AuthResults>()
        .map_or(Vec::new(), |a| a.0.clone())
}

/// One MAIL FROM through sender_permitted_from (the check at `mail`, the header and clause
/// at `data_post_headers`); its A-R clauses.
fn spf(p: &dyn Plugin, c: &mut Cx) -> Vec<String> {
    let mut txn = txn_from("<alice@bench.example>");
    run(p.mail(c, &mut txn));
    run(p.data_post_headers(c, &mut txn));
    txn.notes
        .get::<AuthResults>()
        .map_or(Vec::new(), |a| a.0.clone())
}

/// Keeps the test services' records of questions and log lines from growing.
fn forget(svc: &FakeServices) {
    svc.asked.borrow_mut().clear();
    svc.logs.borrow_mut().clear();
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("auth");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));

    let (mut cx_dkim, svc) = cx("192.0.2.1:4242");
    let message = signed_message(&svc);
    let dkim = plugin("dkim");
    let clauses = verify(&*dkim, &mut cx_dkim, &message);
    assert_eq!(clauses.len(), 2, "{clauses:?}");
    assert!(
        clauses.iter().all(|c| c.starts_with("dkim=pass ")),
        "{clauses:?}"
    );
    g.bench_function(
        format!("dkim_verify_rsa2048_ed25519_{}_bytes", message.len()),
        |b| {
            b.iter(|| {
                forget(&svc);
                black_box(verify(&*dkim, &mut cx_dkim, black_box(&message)))
            })
        },
    );

    let (mut cx_spf, svc) = cx("192.0.2.1:4242");
    cx_spf.conn.hello = Some(Hello {
        kind: HelloKind::Ehlo,
        host: "mta.bench.example".into(),
    });
    for (name, record) in [
        (
            "bench.example",
            "v=spf1 include:_spf1.bench.example include:_spf2.bench.example -all",
        ),
        (
            "_spf1.bench.example",
            "v=spf1 ip4:198.51.100.0/24 ip4:203.0.113.0/24 ip6:2001:db8::/32 -all",
        ),
        ("_spf2.bench.example", "v=spf1 ip4:192.0.2.0/24 -all"),
    ] {
        svc.answer(name, QType::Txt, vec![txt(record)]);
    }
    let spf_plugin = plugin("sender_permitted_from");
    let clauses = spf(&*spf_plugin, &mut cx_spf);
    assert_eq!(
        clauses,
        ["spf=pass smtp.mailfrom=bench.example"],
        "{clauses:?}"
    );
    g.bench_function("spf_two_includes_warm", |b| {
        b.iter(|| {
            forget(&svc);
            black_box(spf(&*spf_plugin, &mut cx_spf))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
