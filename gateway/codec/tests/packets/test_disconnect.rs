use herald_mqtt::{DecodeError, Disconnect, Packet, Property, PropertyId, ReasonCode};

use crate::support::*;

#[test]
fn a_normal_disconnect_is_empty_in_both_versions() {
    for version in BOTH {
        assert_vector(version, &[0xE0, 0x00], &Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
    }
}

#[test]
fn v5_disconnect_forms() {
    assert_vector(
        V5,
        &[0xE0, 0x01, 0x8E],
        &Packet::Disconnect(Disconnect::new(ReasonCode::SessionTakenOver)),
    );
    let with_will = Disconnect {
        properties: vec![Property::SessionExpiryInterval(0)].into(),
        ..Disconnect::new(ReasonCode::DisconnectWithWill)
    };
    assert_vector(
        V5,
        &[0xE0, 0x07, 0x04, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        &Packet::Disconnect(with_will),
    );
    let moved = Disconnect {
        properties: vec![Property::ServerReference("b".into())].into(),
        ..Disconnect::new(ReasonCode::Success)
    };
    assert_vector(V5, &[0xE0, 0x06, 0x00, 0x04, 0x1C, 0x00, 0x01, b'b'], &Packet::Disconnect(moved));
    // A written-out success with an empty property list is the same packet.
    assert_decodes(V5, &[0xE0, 0x02, 0x00, 0x00], &Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
    assert_decodes(V5, &[0xE0, 0x01, 0x00], &Packet::Disconnect(Disconnect::new(ReasonCode::Success)));
}

#[test]
fn v311_has_no_room_for_a_reason() {
    let packet = Packet::Disconnect(Disconnect::new(ReasonCode::ServerShuttingDown));
    assert_eq!(encode(V3, &packet), [0xE0, 0x00]);
}

#[test]
fn disconnect_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::MalformedPacket;
    let cases = [
        (V3, vec![0xE0, 0x01, 0x00], TrailingBytes { count: 1 }),
        (V5, vec![0xE0, 0x01, 0x01], InvalidReasonCode { packet: "DISCONNECT", code: 0x01 }),
        (V5, vec![0xE0, 0x01, 0x84], InvalidReasonCode { packet: "DISCONNECT", code: 0x84 }),
        (V5, vec![0xE2], InvalidFixedHeaderFlags { packet_type: 14, flags: 2 }),
        (
            V5,
            vec![0xE0, 0x05, 0x00, 0x03, 0x12, 0x00, 0x00],
            PropertyNotAllowed { id: PropertyId::AssignedClientIdentifier, packet: "DISCONNECT" },
        ),
    ];
    for (version, bytes, error) in cases {
        assert_rejects(version, &bytes, error, MalformedPacket);
    }
}
