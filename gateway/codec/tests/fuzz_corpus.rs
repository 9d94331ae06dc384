//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/decode/`) through the
//! fuzz target's checks, and keeps the seeds in step with the encoder.
//!
//! The seeds are real packets and packet streams written by the encoder.
//! After a deliberate change to the wire format, regenerate them with
//! `HERALD_BLESS_FUZZ_CORPUS=1 cargo test -p herald-mqtt --test fuzz_corpus`.

use std::fs;
use std::num::NonZeroU16;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use herald_mqtt::{
    Auth, Codec, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Property, ProtocolVersion,
    PubAck, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
    fuzz_decode,
};

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
}

fn id(value: u16) -> NonZeroU16 {
    NonZeroU16::new(value).expect("non-zero")
}

fn encode(version: ProtocolVersion, packets: &[Packet]) -> Vec<u8> {
    let codec = Codec::new(version, u32::MAX);
    let mut out = BytesMut::new();
    for packet in packets {
        codec.encode(packet, &mut out).expect("seed packet encodes");
    }
    out.to_vec()
}

fn session(version: ProtocolVersion) -> Vec<Packet> {
    let mut connect = Connect { keep_alive: 30, ..Connect::new(version, "device-1") };
    connect.will = Some(LastWill {
        topic: "devices/1/status".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::new(),
    });
    connect.username = Some("app".into());
    connect.password = Some(Bytes::from_static(b"secret"));
    let mut publish = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(id(2)),
        ..Publish::new("devices/1/inbox", Bytes::from_static(b"{\"n\":1}"))
    };
    let mut subscribe = Subscribe {
        packet_id: id(1),
        properties: Properties::new(),
        filters: vec![
            ("devices/1/#".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("$share/workers/jobs/+".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    };
    if version == V5 {
        connect.properties = vec![
            Property::SessionExpiryInterval(3600),
            Property::ReceiveMaximum(16),
            Property::TopicAliasMaximum(8),
        ]
        .into();
        publish.properties = vec![
            Property::MessageExpiryInterval(60),
            Property::ContentType("application/json".into()),
            Property::UserProperty("trace".into(), "abc".into()),
        ]
        .into();
        subscribe.properties.push(Property::SubscriptionIdentifier(7));
    }
    vec![
        Packet::Connect(Box::new(connect)),
        Packet::Subscribe(subscribe),
        Packet::Publish(publish),
        Packet::PubAck(PubAck::new(id(2))),
        Packet::PingReq,
        Packet::Disconnect(Disconnect::new(ReasonCode::Success)),
    ]
}

/// The named seeds: real packets a server sees and sends, and a few framing
/// edge cases.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut connack = ConnAck { session_present: true, ..ConnAck::new(ReasonCode::Success) };
    let v3_connack = encode(V3, &[Packet::ConnAck(connack.clone())]);
    connack.properties =
        vec![Property::AssignedClientIdentifier("auto-1".into()), Property::MaximumQos(1)].into();
    let mut alias = Publish::new("", Bytes::from_static(b"x"));
    alias.properties.push(Property::TopicAlias(3));
    let suback = SubAck {
        packet_id: id(1),
        properties: Properties::new(),
        reason_codes: vec![ReasonCode::GrantedQos1, ReasonCode::UnspecifiedError],
    };
    let unsubscribe =
        Unsubscribe { packet_id: id(4), properties: Properties::new(), filters: vec!["a/+".into()] };
    let unsuback = UnsubAck {
        packet_id: id(4),
        properties: Properties::new(),
        reason_codes: vec![ReasonCode::NoSubscriptionExisted],
    };
    let mut auth = Auth::new(ReasonCode::ContinueAuthentication);
    auth.properties.push(Property::AuthenticationMethod("SCRAM-SHA-256".into()));
    auth.properties.push(Property::AuthenticationData(Bytes::from_static(b"nonce")));
    let rejected = PubAck { reason_code: ReasonCode::QuotaExceeded, ..PubAck::new(id(9)) };
    vec![
        ("session-v311.bin", encode(V3, &session(V3))),
        ("session-v5.bin", encode(V5, &session(V5))),
        ("connack-v311.bin", v3_connack),
        ("connack-v5.bin", encode(V5, &[Packet::ConnAck(connack)])),
        ("publish-alias-v5.bin", encode(V5, &[Packet::Publish(alias)])),
        ("suback-v311.bin", encode(V3, &[Packet::SubAck(suback)])),
        ("unsubscribe-v5.bin", encode(V5, &[Packet::Unsubscribe(unsubscribe.clone())])),
        ("unsubscribe-v311.bin", encode(V3, &[Packet::Unsubscribe(unsubscribe)])),
        ("unsuback-v5.bin", encode(V5, &[Packet::UnsubAck(unsuback)])),
        ("auth-v5.bin", encode(V5, &[Packet::Auth(auth)])),
        ("qos2-flow-v5.bin", {
            let rel = PubAck { reason_code: ReasonCode::PacketIdentifierNotFound, ..PubAck::new(id(9)) };
            encode(V5, &[Packet::PubRec(rejected), Packet::PubRel(rel), Packet::PubComp(PubAck::new(id(9)))])
        }),
        ("disconnect-v5.bin", {
            let mut disconnect = Disconnect::new(ReasonCode::ServerMoved);
            disconnect.properties.push(Property::ServerReference("b.example:1883".into()));
            encode(V5, &[Packet::Disconnect(disconnect)])
        }),
        ("huge-length-then-silence.bin", vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
        ("five-byte-length.bin", vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
    ]
}

#[test]
fn seed_corpus_matches_the_encoder() {
    let dir = corpus_dir();
    let bless = std::env::var_os("HERALD_BLESS_FUZZ_CORPUS").is_some();
    if bless {
        fs::create_dir_all(&dir).expect("create corpus dir");
    }
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if bless {
            fs::write(&path, &bytes).expect("write seed");
        }
        let on_disk = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!(on_disk, bytes, "{name} is stale: rerun with HERALD_BLESS_FUZZ_CORPUS=1");
    }
}

#[test]
fn every_corpus_file_passes_the_fuzz_checks() {
    // The seeds are replayed from memory as well, so a run that is blessing
    // the corpus at the same time still checks them.
    let mut inputs: Vec<(String, Vec<u8>)> =
        seeds().into_iter().map(|(name, bytes)| (name.to_owned(), bytes)).collect();
    for entry in fs::read_dir(corpus_dir()).expect("corpus dir exists") {
        let path = entry.expect("readable dir entry").path();
        let data = fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        inputs.push((path.display().to_string(), data));
    }
    for (name, data) in &inputs {
        // Shown only when a check fails.
        println!("replaying {name}");
        fuzz_decode(data);
        // Every prefix too: the checks must hold for truncated streams.
        for cut in 0..data.len() {
            fuzz_decode(&data[..cut]);
        }
    }
}

#[test]
fn the_fuzz_checks_hold_for_bytes_that_are_not_packets() {
    let inputs: [&[u8]; 6] = [
        &[],
        &[0x00],
        &[0xF0, 0x00],
        &[0x10, 0x02, 0x00, 0x04],
        &[0x82, 0x04, 0x00, 0x01, 0x00, 0x00, 0xFF],
        &[0x30, 0x80, 0x80, 0x80, 0x80],
    ];
    for data in inputs {
        fuzz_decode(data);
    }
}
