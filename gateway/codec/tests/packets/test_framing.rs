use bytes::{Bytes, BytesMut};
use herald_mqtt::{Codec, DecodeError, Packet, PubAck, Publish, ReasonCode};

use crate::support::*;

#[test]
fn reserved_packet_types_and_flags_fail_on_the_first_byte() {
    use DecodeError::*;
    let cases = [
        (V3, 0x00, ReservedPacketType { packet_type: 0 }),
        (V5, 0x0F, ReservedPacketType { packet_type: 0 }),
        (V3, 0xF0, ReservedPacketType { packet_type: 15 }),
        (V3, 0x11, InvalidFixedHeaderFlags { packet_type: 1, flags: 1 }),
        (V5, 0x28, InvalidFixedHeaderFlags { packet_type: 2, flags: 8 }),
        (V3, 0x44, InvalidFixedHeaderFlags { packet_type: 4, flags: 4 }),
        (V5, 0x52, InvalidFixedHeaderFlags { packet_type: 5, flags: 2 }),
        (V3, 0x63, InvalidFixedHeaderFlags { packet_type: 6, flags: 3 }),
        (V5, 0x7F, InvalidFixedHeaderFlags { packet_type: 7, flags: 15 }),
        (V3, 0x8A, InvalidFixedHeaderFlags { packet_type: 8, flags: 10 }),
        (V5, 0x94, InvalidFixedHeaderFlags { packet_type: 9, flags: 4 }),
        (V3, 0xA6, InvalidFixedHeaderFlags { packet_type: 10, flags: 6 }),
        (V5, 0xB1, InvalidFixedHeaderFlags { packet_type: 11, flags: 1 }),
        (V3, 0xC2, InvalidFixedHeaderFlags { packet_type: 12, flags: 2 }),
        (V5, 0xD4, InvalidFixedHeaderFlags { packet_type: 13, flags: 4 }),
        (V3, 0xE8, InvalidFixedHeaderFlags { packet_type: 14, flags: 8 }),
        (V5, 0xF2, InvalidFixedHeaderFlags { packet_type: 15, flags: 2 }),
    ];
    for (version, byte, error) in cases {
        assert_rejects(version, &[byte], error, ReasonCode::MalformedPacket);
    }
}

#[test]
fn a_fifth_remaining_length_byte_is_refused_without_waiting_for_it() {
    let prefix = [0x30, 0xFF, 0xFF, 0xFF];
    let mut buf = BytesMut::from(&prefix[..]);
    assert_eq!(Codec::new(V3, u32::MAX).decode(&mut buf), Ok(None));
    assert_rejects(
        V3,
        &[0x30, 0xFF, 0xFF, 0xFF, 0xFF],
        DecodeError::VariableIntegerTooLong,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn a_padded_remaining_length_is_refused() {
    assert_rejects(
        V5,
        &[0xC0, 0x80, 0x00],
        DecodeError::NonMinimalVariableInteger,
        ReasonCode::MalformedPacket,
    );
}

#[test]
fn the_size_limit_is_checked_from_the_fixed_header() {
    let mut codec = Codec::new(V3, 16);
    // 2 header bytes + 15 = 17 > 16, known before any body byte arrives.
    let mut buf = BytesMut::from(&[0x30, 0x0F][..]);
    let error = codec.decode(&mut buf).expect_err("too large");
    assert_eq!(error, DecodeError::PacketTooLarge { size: 17, max: 16 });
    assert_eq!(error.reason_code(), ReasonCode::PacketTooLarge);

    // Exactly the limit is fine.
    let packet = Packet::Publish(Publish::new("t", Bytes::from_static(&[0; 11])));
    let bytes = encode(V3, &packet);
    assert_eq!(bytes.len(), 16);
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(codec.decode(&mut buf), Ok(Some(packet)));

    codec.set_max_packet_size(15);
    assert_eq!(codec.max_packet_size(), 15);
    let mut buf = BytesMut::from(&bytes[..2]);
    assert_eq!(codec.decode(&mut buf), Err(DecodeError::PacketTooLarge { size: 16, max: 15 }));
}

#[test]
fn a_256_mb_claim_then_silence_fails_after_five_bytes_without_allocating() {
    let mut codec = Codec::new(V5, 1024);
    let mut buf = BytesMut::with_capacity(8);
    buf.extend_from_slice(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert_eq!(codec.decode(&mut buf), Err(DecodeError::PacketTooLarge { size: 268_435_460, max: 1024 }));
    assert!(buf.capacity() < 1024, "capacity grew to {}", buf.capacity());
}

#[test]
fn an_incomplete_packet_reserves_what_it_needs_and_no_more_than_the_limit() {
    let max = 1 << 20;
    let mut codec = Codec::new(V3, max);
    // A PUBLISH of 512 KiB: header 0x30 0x80 0x80 0x20.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x20, 0x00][..]);
    assert_eq!(codec.decode(&mut buf), Ok(None));
    let total = 4 + (512 << 10);
    assert!(buf.capacity() >= total, "capacity {}", buf.capacity());
    assert!(buf.capacity() <= max as usize, "capacity {}", buf.capacity());
    assert_eq!(&buf[..], [0x30, 0x80, 0x80, 0x20, 0x00]);
}

#[test]
fn packets_back_to_back_decode_in_order() {
    let packets = [
        Packet::PingReq,
        Packet::Publish(Publish::new("a/b", Bytes::from_static(b"one"))),
        Packet::PubAck(PubAck::new(id(9))),
        Packet::Publish(Publish::new("c", Bytes::from_static(b"two"))),
    ];
    for version in BOTH {
        let mut buf = BytesMut::new();
        for packet in &packets {
            buf.extend_from_slice(&encode(version, packet));
        }
        // Half of the next packet is already there too.
        buf.extend_from_slice(&[0xD0]);
        let mut codec = Codec::new(version, u32::MAX);
        for packet in &packets {
            assert_eq!(codec.decode(&mut buf).as_ref(), Ok(&Some(packet.clone())));
        }
        assert_eq!(codec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0x00]);
        assert_eq!(codec.decode(&mut buf), Ok(Some(Packet::PingResp)));
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }
}

#[test]
fn version_accessors() {
    let mut codec = Codec::new(V3, 100);
    assert_eq!(codec.version(), V3);
    codec.set_version(V5);
    assert_eq!(codec.version(), V5);
    // AUTH is now a packet type.
    let mut buf = BytesMut::from(&[0xF0, 0x00][..]);
    assert!(matches!(codec.decode(&mut buf), Ok(Some(Packet::Auth(_)))));
}

#[test]
fn every_error_message_cites_the_spec() {
    use DecodeError::*;
    let samples = [
        ReservedPacketType { packet_type: 0 },
        InvalidFixedHeaderFlags { packet_type: 1, flags: 1 },
        VariableIntegerTooLong,
        NonMinimalVariableInteger,
        PacketTooLarge { size: 2, max: 1 },
        UnexpectedEnd,
        TrailingBytes { count: 1 },
        InvalidUtf8,
        NullCharacter,
        ZeroPacketId,
        PublishQosThree,
        DupWithQos0,
        InvalidTopicName(herald_core::TopicError::WildcardInName),
        EmptyTopicWithoutAlias,
        TopicAliasZero,
        InvalidResponseTopic(herald_core::TopicError::WildcardInName),
        InvalidProtocolName,
        UnsupportedProtocolVersion { level: 3 },
        ConnectReservedFlag,
        WillQosWithoutWill,
        WillQosThree,
        WillRetainWithoutWill,
        PasswordWithoutUsername,
        AuthenticationDataWithoutMethod,
        ConnAckReservedFlags { flags: 2 },
        SessionPresentWithError,
        InvalidReasonCode { packet: "PUBACK", code: 3 },
        NoTopicFilters { packet: "SUBSCRIBE" },
        InvalidTopicFilter(herald_core::TopicError::Empty),
        SubscriptionOptionsReserved { options: 0x40 },
        SubscriptionQosThree,
        RetainHandlingThree,
        NoLocalOnSharedSubscription,
        NoReasonCodes { packet: "SUBACK" },
        UnknownProperty { id: 4 },
        PropertyNotAllowed { id: herald_mqtt::PropertyId::TopicAlias, packet: "CONNECT" },
        DuplicateProperty { id: herald_mqtt::PropertyId::TopicAlias },
        InvalidPropertyValue { id: herald_mqtt::PropertyId::ReceiveMaximum, value: 0 },
        PropertyLengthExceedsPacket,
    ];
    for error in samples {
        let message = error.to_string();
        assert!(message.contains("[MQTT-") || message.contains("[§"), "{message}");
    }
}
