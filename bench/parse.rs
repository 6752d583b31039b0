//! Parser throughput: one pipelined client batch (RFC 2920) through `proto::command::parse`,
//! then the paths and MAIL parameters of that batch through their parsers.
//!
//! `cargo bench --bench parse`; numbers are bytes of input per second.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringsmtpd::proto::{command, params};
use ringsmtpd_plugin_api::address::parse_path;

/// What a pipelining client sends after the greeting, up to and including DATA, then QUIT.
const BATCH: &[u8] = b"EHLO mail-relay.sender.example.org\r\n\
MAIL FROM:<bounces+1234-abcd@sender.example.org> SIZE=48213 BODY=8BITMIME\r\n\
RCPT TO:<alice@example.com>\r\n\
RCPT TO:<bob.smith@mail.example.com>\r\n\
RCPT TO:<\"carol x\"@[192.0.2.25]>\r\n\
DATA\r\n\
QUIT\r\n";

const PATHS: [(&str, bool); 4] = [
    ("<bounces+1234-abcd@sender.example.org>", true),
    ("<alice@example.com>", false),
    ("<bob.smith@mail.example.com>", false),
    ("<\"carol x\"@[192.0.2.25]>", false),
];

const MAIL_PARAMS: &str = "SIZE=48213 BODY=8BITMIME";

/// The lines of the batch without their CRLF, as the session's line splitter hands them over.
fn lines(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', batch).map(move |end| {
        let line = batch.get(start..end.saturating_sub(1)).unwrap_or_default();
        start = end + 1;
        line
    })
}

fn bench(c: &mut Criterion) {
    assert_eq!(
        lines(BATCH).filter(|l| command::parse(l).is_ok()).count(),
        7
    );

    let mut g = c.benchmark_group("command");
    g.throughput(Throughput::Bytes(BATCH.len() as u64));
    g.bench_function("pipelined_batch", |b| {
        b.iter(|| {
            for line in lines(black_box(BATCH)) {
                let _ = black_box(command::parse(line));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("path");
    g.throughput(Throughput::Bytes(
        PATHS.iter().map(|(p, _)| p.len() as u64).sum(),
    ));
    g.bench_function("parse_path", |b| {
        b.iter(|| {
            for (path, reverse) in black_box(PATHS) {
                let _ = black_box(parse_path(path, reverse, false));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("params");
    g.throughput(Throughput::Bytes(MAIL_PARAMS.len() as u64));
    g.bench_function("parse_mail_params", |b| {
        b.iter(|| black_box(params::parse_mail_params(black_box(MAIL_PARAMS))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
