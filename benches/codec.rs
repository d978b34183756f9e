//! Frame codec benchmarks: one `submit` message with a binary payload of
//! 64 B, 1 KiB and 64 KiB, serialized + sealed + framed (`FrameWriter`) and
//! unframed + opened + parsed (`FrameReader`).
//!
//! A reader accepts counters only in order, so the decode benchmark encodes a
//! run of frames first (untimed) and then times decoding them with a reader
//! that starts where that writer started.
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_util::codec::Decoder;

use argon::protocol::{FrameReader, FrameWriter, FromClient, Priority, Submit, Value};
use argon::MasterKey;

const MAX_FRAME: usize = 16 * 1024 * 1024;
const SIZES: [(usize, &str); 3] = [(64, "64B"), (1024, "1KiB"), (64 * 1024, "64KiB")];
/// Frames encoded ahead per timed decode run: bounds memory at 64 KiB.
const CHUNK: u64 = 256;

fn session_key() -> [u8; 32] {
    let master = MasterKey::from_material(b"benchmark key material, 32 bytes or more");
    master.session_keys(&[1; 32], &[2; 32]).0
}

fn submit(payload: usize) -> FromClient {
    FromClient::Submit(Submit {
        id: 42,
        task: "echo".into(),
        args: Value::Binary(vec![0x5a; payload]),
        priority: Priority::Normal,
        timeout_ms: None,
        attempts: 1,
        retries: None,
        detach: false,
        want_id: false,
        due_ms: None,
        delay_ms: None,
        unique_key: None,
        unique_for_ms: None,
    })
}

fn encode(c: &mut Criterion) {
    let key = session_key();
    let mut group = c.benchmark_group("seal_encode");
    for (size, label) in SIZES {
        let msg = submit(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &msg, |b, msg| {
            let mut writer = FrameWriter::new(&key, MAX_FRAME);
            let mut buf = BytesMut::with_capacity(size + 256);
            b.iter(|| {
                buf.clear();
                writer.write(black_box(msg), &mut buf).expect("encodes");
                black_box(buf.len());
            });
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let key = session_key();
    let mut group = c.benchmark_group("open_decode");
    for (size, label) in SIZES {
        let msg = submit(size);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &msg, |b, msg| {
            b.iter_custom(|iters| {
                let mut writer = FrameWriter::new(&key, MAX_FRAME);
                let mut reader = FrameReader::<FromClient>::new(&key, MAX_FRAME);
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(CHUNK);
                    left -= n;
                    let mut stream = BytesMut::new();
                    for _ in 0..n {
                        writer.write(msg, &mut stream).expect("encodes");
                    }
                    let start = Instant::now();
                    for _ in 0..n {
                        let m = reader.decode(&mut stream).expect("opens").expect("whole");
                        black_box(m);
                    }
                    total += start.elapsed();
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
