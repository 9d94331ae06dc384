use herald_mqtt::{DecodeError, Packet, Property, PropertyId, PubAck, ReasonCode};

use crate::support::*;

type Wrap = fn(PubAck) -> Packet;

/// The four acknowledgements: first byte and how to wrap the body.
const KINDS: [(u8, Wrap); 4] =
    [(0x40, Packet::PubAck), (0x50, Packet::PubRec), (0x62, Packet::PubRel), (0x70, Packet::PubComp)];

#[test]
fn success_without_properties_is_two_bytes_in_both_versions() {
    for (first_byte, wrap) in KINDS {
        for version in BOTH {
            assert_vector(version, &[first_byte, 0x02, 0x00, 0x01], &wrap(PubAck::new(id(1))));
        }
    }
}

#[test]
fn v5_reason_code_without_properties_omits_the_property_length() {
    let ack = PubAck { reason_code: ReasonCode::NoMatchingSubscribers, ..PubAck::new(id(1)) };
    assert_vector(V5, &[0x40, 0x03, 0x00, 0x01, 0x10], &Packet::PubAck(ack));
    let rel = PubAck { reason_code: ReasonCode::PacketIdentifierNotFound, ..PubAck::new(id(7)) };
    assert_vector(V5, &[0x62, 0x03, 0x00, 0x07, 0x92], &Packet::PubRel(rel));
}

#[test]
fn v5_ack_with_a_reason_string() {
    let bytes = [0x40, 0x09, 0x00, 0x01, 0x80, 0x05, 0x1F, 0x00, 0x02, b'n', b'o'];
    let ack = PubAck {
        reason_code: ReasonCode::UnspecifiedError,
        properties: vec![Property::ReasonString("no".into())].into(),
        ..PubAck::new(id(1))
    };
    assert_vector(V5, &bytes, &Packet::PubAck(ack.clone()));
    // Success with properties needs the reason code byte written out.
    let ok = PubAck { reason_code: ReasonCode::Success, ..ack };
    assert_vector(
        V5,
        &[0x50, 0x09, 0x00, 0x01, 0x00, 0x05, 0x1F, 0x00, 0x02, b'n', b'o'],
        &Packet::PubRec(ok),
    );
}

#[test]
fn v5_accepts_the_longer_forms_of_a_plain_success() {
    assert_decodes(V5, &[0x40, 0x03, 0x00, 0x01, 0x00], &Packet::PubAck(PubAck::new(id(1))));
    assert_decodes(V5, &[0x70, 0x04, 0x00, 0x01, 0x00, 0x00], &Packet::PubComp(PubAck::new(id(1))));
}

#[test]
fn v311_has_no_room_for_reason_codes_or_properties() {
    let ack = PubAck {
        reason_code: ReasonCode::NotAuthorized,
        properties: vec![Property::ReasonString("no".into())].into(),
        ..PubAck::new(id(3))
    };
    assert_eq!(encode(V3, &Packet::PubAck(ack)), [0x40, 0x02, 0x00, 0x03]);
}

#[test]
fn ack_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let cases = [
        (
            V3,
            vec![0x61, 0x02, 0x00, 0x01],
            InvalidFixedHeaderFlags { packet_type: 6, flags: 1 },
            MalformedPacket,
        ),
        (V5, vec![0x60], InvalidFixedHeaderFlags { packet_type: 6, flags: 0 }, MalformedPacket),
        (V3, vec![0x42], InvalidFixedHeaderFlags { packet_type: 4, flags: 2 }, MalformedPacket),
        (V3, vec![0x40, 0x02, 0x00, 0x00], ZeroPacketId, ProtocolError),
        (V5, vec![0x50, 0x02, 0x00, 0x00], ZeroPacketId, ProtocolError),
        (V3, vec![0x40, 0x03, 0x00, 0x01, 0x00], TrailingBytes { count: 1 }, MalformedPacket),
        (V5, vec![0x40, 0x01, 0x00], UnexpectedEnd, MalformedPacket),
        (
            V5,
            vec![0x40, 0x03, 0x00, 0x01, 0x92],
            InvalidReasonCode { packet: "PUBACK", code: 0x92 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x50, 0x03, 0x00, 0x01, 0x92],
            InvalidReasonCode { packet: "PUBREC", code: 0x92 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x62, 0x03, 0x00, 0x01, 0x10],
            InvalidReasonCode { packet: "PUBREL", code: 0x10 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x70, 0x03, 0x00, 0x01, 0x80],
            InvalidReasonCode { packet: "PUBCOMP", code: 0x80 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x40, 0x03, 0x00, 0x01, 0x03],
            InvalidReasonCode { packet: "PUBACK", code: 0x03 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01],
            PropertyNotAllowed { id: PropertyId::TopicAlias, packet: "PUBACK" },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x62, 0x0B, 0x00, 0x01, 0x00, 0x07, 0x1F, 0x00, 0x01, b'a', 0x1F, 0x00, 0x00],
            DuplicateProperty { id: PropertyId::ReasonString },
            ProtocolError,
        ),
        (V5, vec![0x40, 0x05, 0x00, 0x01, 0x00, 0x02, 0x1F], PropertyLengthExceedsPacket, MalformedPacket),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}
