//! Micro-benchmarks of the hot paths: fan-out of one publish to N members, the line decoder,
//! and the JSON envelope parser. `cargo bench`; CI only compiles them (`cargo bench --no-run`).

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use switchboard::hub::{Author, Delivery, Hub, HubConfig, Transport};
use switchboard::protocol::envelope;
use switchboard::protocol::line::LineDecoder;
use switchboard::store::{self, Retention};

/// One publish offered to N members; the queues are drained outside the timed loop's hot
/// part, as connection writers would.
fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out");
    for members in [10usize, 100, 1_000] {
        let hub = Hub::new(HubConfig {
            queue_capacity: 1_024,
            history: store::memory(Retention::default()),
            cluster: None,
            auth: switchboard::auth::Auth::open(),
            ..HubConfig::default()
        });
        let mut receivers = Vec::new();
        let mut subs = Vec::new();
        for i in 0..members {
            let (sub, rx) = hub.subscribe(Transport::Ws, true, None);
            hub.join("bench", &sub, format!("m{i}").into());
            subs.push(sub);
            receivers.push(rx);
        }
        let room = hub.room("bench");
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                let published = hub
                    .publish(
                        &room,
                        None,
                        Author::from("pub"),
                        black_box("hello, room"),
                        None,
                    )
                    .expect("memory store accepts");
                black_box(published);
                for rx in &mut receivers {
                    while let Some(d) = rx.try_recv() {
                        if let Delivery::Event(e) = d {
                            black_box(switchboard::wire::event(switchboard::wire::Wire::Plain, &e));
                        }
                    }
                }
            });
        });
    }
    group.finish();
}

fn parsers(c: &mut Criterion) {
    let lines: Vec<u8> = (0..1_000)
        .flat_map(|i| format!("message number {i}\r\n").into_bytes())
        .collect();
    c.bench_function("line_decoder_1000_lines", |b| {
        b.iter(|| {
            let mut decoder = LineDecoder::new(64 * 1024);
            let mut buf = BytesMut::from(&lines[..]);
            let mut n = 0;
            while let Ok(Some(line)) = decoder.decode(&mut buf) {
                black_box(line);
                n += 1;
            }
            assert_eq!(n, 1_000);
        });
    });
    let frame =
        r#"{"type":"publish","room":"lobby","text":"hello there","ref":"r1","key":"k-123"}"#;
    c.bench_function("envelope_parse_publish", |b| {
        b.iter(|| black_box(envelope::parse(black_box(frame)).expect("valid")));
    });
}

criterion_group!(benches, fan_out, parsers);
criterion_main!(benches);
