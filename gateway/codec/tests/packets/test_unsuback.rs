use bytes::BytesMut;
use herald_mqtt::{Codec, DecodeError, EncodeError, Packet, Properties, ReasonCode, UnsubAck};

use crate::support::*;

fn unsuback(reason_codes: Vec<ReasonCode>) -> UnsubAck {
    UnsubAck { packet_id: id(2), properties: Properties::new(), reason_codes }
}

#[test]
fn v311_unsuback_is_a_packet_identifier() {
    assert_vector(V3, &[0xB0, 0x02, 0x00, 0x02], &Packet::UnsubAck(unsuback(Vec::new())));
    // Reason codes have no room in 3.1.1.
    let packet = Packet::UnsubAck(unsuback(vec![ReasonCode::NoSubscriptionExisted]));
    assert_eq!(encode(V3, &packet), [0xB0, 0x02, 0x00, 0x02]);
}

#[test]
fn v5_unsuback_carries_one_reason_code_per_filter() {
    let packet = Packet::UnsubAck(unsuback(vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]));
    assert_vector(V5, &[0xB0, 0x05, 0x00, 0x02, 0x00, 0x00, 0x11], &packet);
}

#[test]
fn unsuback_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let cases = [
        (V3, vec![0xB0, 0x03, 0x00, 0x02, 0x00], TrailingBytes { count: 1 }, MalformedPacket),
        (
            V5,
            vec![0xB0, 0x04, 0x00, 0x02, 0x00, 0x01],
            InvalidReasonCode { packet: "UNSUBACK", code: 0x01 },
            MalformedPacket,
        ),
        (V5, vec![0xB0, 0x03, 0x00, 0x02, 0x00], NoReasonCodes { packet: "UNSUBACK" }, ProtocolError),
        (V5, vec![0xB0, 0x02, 0x00, 0x02], UnexpectedEnd, MalformedPacket),
        (V3, vec![0xB2], InvalidFixedHeaderFlags { packet_type: 11, flags: 2 }, MalformedPacket),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}

#[test]
fn a_v5_unsuback_without_reason_codes_cannot_be_encoded() {
    let mut out = BytesMut::new();
    assert_eq!(
        Codec::new(V5, u32::MAX).encode(&Packet::UnsubAck(unsuback(Vec::new())), &mut out),
        Err(EncodeError::EmptyPayload { packet: "UNSUBACK" })
    );
    assert!(out.is_empty());
}
