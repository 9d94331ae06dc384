//! Decode and encode of a QoS 1 PUBLISH, the packet every push goes through,
//! at 16 B, 1 KiB and 64 KiB payloads and both protocol versions.

use std::hint::black_box;
use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_mqtt::{Codec, Packet, Property, ProtocolVersion, Publish, QoS};

const PAYLOAD_SIZES: [usize; 3] = [16, 1024, 64 * 1024];
const VERSIONS: [(ProtocolVersion, &str); 2] =
    [(ProtocolVersion::V311, "v3.1.1"), (ProtocolVersion::V5, "v5")];

fn publish(payload_size: usize, version: ProtocolVersion) -> Packet {
    let mut publish = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: NonZeroU16::new(42),
        ..Publish::new("devices/7f3a9c/notifications", Bytes::from(vec![0xA5; payload_size]))
    };
    if version == ProtocolVersion::V5 {
        // What a push typically carries in 5.0: an expiry and a content type.
        publish.properties.push(Property::MessageExpiryInterval(3600));
        publish.properties.push(Property::ContentType("application/json".into()));
    }
    Packet::Publish(publish)
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> Bytes {
    let mut buf = BytesMut::new();
    Codec::new(version, u32::MAX).encode(packet, &mut buf).expect("benchmark packet encodes");
    buf.freeze()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish_qos1");
    for (version, name) in VERSIONS {
        for size in PAYLOAD_SIZES {
            let bytes = encoded(&publish(size, version), version);
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &bytes, |b, bytes| {
                let mut codec = Codec::new(version, u32::MAX);
                // Copying the packet into a fresh read buffer is setup, not
                // decoding: batch it outside the measurement.
                b.iter_batched(
                    || BytesMut::from(&bytes[..]),
                    |mut buf| black_box(codec.decode(&mut buf)),
                    BatchSize::SmallInput,
                );
            });
        }
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_publish_qos1");
    for (version, name) in VERSIONS {
        for size in PAYLOAD_SIZES {
            let packet = publish(size, version);
            let codec = Codec::new(version, u32::MAX);
            group.throughput(Throughput::Bytes(encoded(&packet, version).len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &packet, |b, packet| {
                let mut buf = BytesMut::new();
                b.iter(|| {
                    buf.clear();
                    codec.encode(black_box(packet), &mut buf).expect("encodes");
                    black_box(buf.len())
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
