//! One message to many local subscribers at a gateway: matched in the
//! local index, a copy handed to each connection's inbox, each session
//! turning it into a PUBLISH and the codec encoding it (the socket write
//! left out), and at QoS 1 each PUBACK taken back. Per delivery, this is
//! the gateway's user-space cost of the fan-out scenario of
//! `herald loadtest fanout`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::QoS;
use herald_gateway::bench::FanOut;
use std::hint::black_box;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan_out_64b");
    for (qos, name) in [(QoS::AtMostOnce, "qos0"), (QoS::AtLeastOnce, "qos1")] {
        for subscribers in [100, 1000] {
            let mut fan_out = FanOut::new(subscribers, qos, 64);
            group.throughput(Throughput::Elements(subscribers as u64));
            group.bench_function(BenchmarkId::new(name, subscribers), |b| {
                b.iter(|| black_box(fan_out.deliver()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fan_out);
criterion_main!(benches);
