use bytes::{Bytes, BytesMut};
use herald_core::topic::TopicError;
use herald_mqtt::{Codec, DecodeError, EncodeError, Packet, Property, PropertyId, Publish, QoS, ReasonCode};

use crate::support::*;

fn qos1(topic: &str, packet_id: u16, payload: &'static [u8]) -> Publish {
    Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(id(packet_id)),
        ..Publish::new(topic, Bytes::from_static(payload))
    }
}

#[test]
fn v311_publish_vectors() {
    let bytes = [0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i'];
    assert_vector(V3, &bytes, &Packet::Publish(qos1("a/b", 10, b"hi")));

    let retained = Publish { retain: true, ..Publish::new("a/b", Bytes::new()) };
    assert_vector(V3, &[0x31, 0x05, 0x00, 0x03, b'a', b'/', b'b'], &Packet::Publish(retained));

    let redelivery = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        packet_id: Some(id(0x0102)),
        ..Publish::new("t", Bytes::from_static(b"x"))
    };
    assert_vector(V3, &[0x3C, 0x06, 0x00, 0x01, b't', 0x01, 0x02, b'x'], &Packet::Publish(redelivery));
}

#[test]
fn v5_publish_with_properties() {
    // Payload Format Indicator 1, Message Expiry Interval 60.
    #[rustfmt::skip]
    let bytes = [
        0x30, 0x0F, 0x00, 0x03, b'a', b'/', b'b',
        0x07, 0x01, 0x01, 0x02, 0x00, 0x00, 0x00, 0x3C,
        b'h', b'i',
    ];
    let mut publish = Publish::new("a/b", Bytes::from_static(b"hi"));
    publish.properties.push(Property::PayloadFormatIndicator(1));
    publish.properties.push(Property::MessageExpiryInterval(60));
    assert_vector(V5, &bytes, &Packet::Publish(publish));
}

#[test]
fn v5_publish_may_leave_the_topic_to_an_alias() {
    let bytes = [0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01, b'x'];
    let mut publish = Publish::new("", Bytes::from_static(b"x"));
    publish.properties.push(Property::TopicAlias(1));
    assert_vector(V5, &bytes, &Packet::Publish(publish));
}

#[test]
fn v5_publish_keeps_repeated_properties_in_wire_order() {
    let mut publish = Publish::new("a", Bytes::new());
    publish.properties.push(Property::SubscriptionIdentifier(1));
    publish.properties.push(Property::UserProperty("k".into(), "2".into()));
    publish.properties.push(Property::SubscriptionIdentifier(300));
    publish.properties.push(Property::UserProperty("k".into(), "1".into()));
    publish.properties.push(Property::UserProperty("a".into(), "3".into()));
    let bytes = encode(V5, &Packet::Publish(publish.clone()));
    let Packet::Publish(decoded) = decode(V5, &bytes).expect("valid") else { panic!("publish") };
    assert_eq!(decoded, publish);
    assert_eq!(decoded.properties.subscription_identifiers().collect::<Vec<_>>(), [1, 300]);
    assert_eq!(
        decoded.properties.user_properties().collect::<Vec<_>>(),
        [("k", "2"), ("k", "1"), ("a", "3")]
    );
}

#[test]
fn topic_and_payload_are_slices_of_the_read_buffer() {
    let bytes = [0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i'];
    let mut buf = BytesMut::from(&bytes[..]);
    let base = buf.as_ptr() as usize;
    let Ok(Some(Packet::Publish(publish))) = Codec::new(V3, u32::MAX).decode(&mut buf) else {
        panic!("publish")
    };
    assert_eq!(publish.topic.as_bytes().as_ptr() as usize, base + 4);
    assert_eq!(publish.payload.as_ptr() as usize, base + 9);
}

#[test]
fn publish_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError, TopicAliasInvalid};
    let topic = field(b"a/b");
    let cases: Vec<(_, Vec<u8>, DecodeError, ReasonCode)> = vec![
        // Header problems are reported from the first byte alone.
        (V3, vec![0x36], PublishQosThree, MalformedPacket),
        (V5, vec![0x37], PublishQosThree, MalformedPacket),
        (V3, vec![0x38], DupWithQos0, MalformedPacket),
        (V3, frame(0x30, &field(b"a/+")), InvalidTopicName(TopicError::WildcardInName), ProtocolError),
        (
            V5,
            frame(0x30, &[field(b"#"), vec![0]].concat()),
            InvalidTopicName(TopicError::WildcardInName),
            ProtocolError,
        ),
        (V3, frame(0x30, &field(b"")), InvalidTopicName(TopicError::Empty), ProtocolError),
        (V5, frame(0x30, &[field(b""), vec![0]].concat()), EmptyTopicWithoutAlias, ProtocolError),
        (V3, frame(0x32, &[topic.clone(), vec![0, 0]].concat()), ZeroPacketId, ProtocolError),
        (V5, frame(0x34, &[topic.clone(), vec![0, 0, 0]].concat()), ZeroPacketId, ProtocolError),
        (V5, frame(0x30, &[topic.clone(), vec![3, 0x23, 0, 0]].concat()), TopicAliasZero, TopicAliasInvalid),
        (V3, frame(0x30, &field(b"a\0")), NullCharacter, MalformedPacket),
        (V3, frame(0x30, &field(&[0xC3, 0x28])), InvalidUtf8, MalformedPacket),
        (V3, frame(0x30, &field(&[0xED, 0xA0, 0x80])), InvalidUtf8, MalformedPacket),
        // QoS 1 needs a packet identifier the packet does not have room for.
        (V3, frame(0x32, &topic), UnexpectedEnd, MalformedPacket),
        (
            V5,
            frame(0x30, &[topic.clone(), vec![10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]].concat()),
            DuplicateProperty { id: PropertyId::MessageExpiryInterval },
            ProtocolError,
        ),
        (
            V5,
            frame(0x30, &[topic.clone(), vec![2, 0x01, 2]].concat()),
            InvalidPropertyValue { id: PropertyId::PayloadFormatIndicator, value: 2 },
            ProtocolError,
        ),
        (
            V5,
            frame(0x30, &[topic.clone(), vec![6, 0x08], field(b"r/#")].concat()),
            InvalidResponseTopic(TopicError::WildcardInName),
            ProtocolError,
        ),
        (
            V5,
            frame(0x30, &[topic.clone(), vec![3, 0x11, 0, 0]].concat()),
            PropertyNotAllowed { id: PropertyId::SessionExpiryInterval, packet: "PUBLISH" },
            MalformedPacket,
        ),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}

#[test]
fn a_topic_running_past_the_packet_does_not_read_the_next_one() {
    // The topic claims 5 bytes; the packet has 1, and a PINGREQ follows.
    let bytes = [0x30, 0x03, 0x00, 0x05, b'a', 0xC0, 0x00, b'b', b'c'];
    assert_rejects(V3, &bytes, DecodeError::UnexpectedEnd, ReasonCode::MalformedPacket);
}

#[test]
fn publishes_that_cannot_be_encoded_leave_the_buffer_alone() {
    let codec = Codec::new(V5, u32::MAX);
    let cases = [
        (
            Publish { qos: QoS::AtLeastOnce, ..Publish::new("t", Bytes::new()) },
            EncodeError::MissingPacketId { qos: 1 },
        ),
        (
            Publish { packet_id: Some(id(1)), ..Publish::new("t", Bytes::new()) },
            EncodeError::UnexpectedPacketId,
        ),
        (Publish { dup: true, ..Publish::new("t", Bytes::new()) }, EncodeError::DupWithQos0),
        (Publish::new("t".repeat(65_536), Bytes::new()), EncodeError::StringTooLong { len: 65_536 }),
    ];
    for (publish, error) in cases {
        let mut out = BytesMut::from(&b"xyz"[..]);
        assert_eq!(codec.encode(&Packet::Publish(publish), &mut out), Err(error.clone()));
        assert_eq!(&out[..], b"xyz", "{error}");
    }
}

#[test]
fn v311_encoding_leaves_out_properties() {
    let mut publish = qos1("a/b", 10, b"hi");
    publish.properties.push(Property::MessageExpiryInterval(60));
    assert_eq!(
        encode(V3, &Packet::Publish(publish)),
        [0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A, b'h', b'i']
    );
}

#[test]
fn large_payloads_use_a_multi_byte_remaining_length() {
    let payload = Bytes::from(vec![7u8; 20_000]);
    let packet = Packet::Publish(Publish::new("t", payload.clone()));
    let bytes = encode(V3, &packet);
    // 3 (topic) + 20,000 = 20,003 = 0x4E23: 0xA3 0x9C 0x01.
    assert_eq!(&bytes[..4], [0x30, 0xA3, 0x9C, 0x01]);
    assert_eq!(bytes.len(), 4 + 20_003);
    assert_eq!(decode(V3, &bytes), Ok(packet));
}
