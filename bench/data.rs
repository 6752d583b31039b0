//! Throughput of the DATA receiver: a 1 MiB message (realistic line lengths,
//! some dot-stuffed lines) fed in 16 KiB chunks, as reads would deliver it.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringsmtpd::proto::data::{BareNewline, DataReceiver, DataStatus};
use std::hint::black_box;

/// A dot-stuffed DATA stream of about 1 MiB ending in ".\r\n".
fn message() -> Vec<u8> {
    let mut wire = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: bench\r\n\r\n".to_vec();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while wire.len() < 1 << 20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 20 + (seed % 58) as usize;
        if seed.is_multiple_of(50) {
            wire.extend_from_slice(b"..");
        }
        wire.extend((0..len).map(|i| b'a' + ((seed >> (i % 32)) % 26) as u8));
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn feed_all(rx: &mut DataReceiver, wire: &[u8], out: &mut Vec<u8>) {
    rx.reset();
    out.clear();
    for chunk in wire.chunks(16 * 1024) {
        let (_, status) = rx.feed(chunk, out);
        if status == DataStatus::Done {
            return;
        }
        assert_eq!(status, DataStatus::NeedMore);
    }
    panic!("no end of data");
}

fn bench_data(c: &mut Criterion) {
    let wire = message();
    let mut group = c.benchmark_group("data_receiver");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    for (name, policy) in [
        ("reject", BareNewline::Reject),
        ("normalize", BareNewline::Normalize),
    ] {
        let mut rx = DataReceiver::new(policy, 998);
        let mut out = Vec::with_capacity(wire.len());
        group.bench_function(format!("1MiB_16KiB_chunks_{name}"), |b| {
            b.iter(|| {
                feed_all(&mut rx, black_box(&wire), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_data);
criterion_main!(benches);
