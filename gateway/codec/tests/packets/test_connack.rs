use herald_mqtt::{ConnAck, DecodeError, Packet, Property, PropertyId, ReasonCode};

use crate::support::*;

#[test]
fn v311_return_codes_map_to_v5_reason_codes() {
    let table = [
        (0x00, ReasonCode::Success),
        (0x01, ReasonCode::UnsupportedProtocolVersion),
        (0x02, ReasonCode::ClientIdentifierNotValid),
        (0x03, ReasonCode::ServerUnavailable),
        (0x04, ReasonCode::BadUserNameOrPassword),
        (0x05, ReasonCode::NotAuthorized),
    ];
    for (code, reason) in table {
        assert_vector(V3, &[0x20, 0x02, 0x00, code], &Packet::ConnAck(ConnAck::new(reason)));
    }
    let resumed = ConnAck { session_present: true, ..ConnAck::new(ReasonCode::Success) };
    assert_vector(V3, &[0x20, 0x02, 0x01, 0x00], &Packet::ConnAck(resumed));
}

#[test]
fn v311_encoding_maps_v5_only_codes_to_the_nearest_return_code() {
    let cases = [
        (ReasonCode::Banned, 0x05),
        (ReasonCode::BadAuthenticationMethod, 0x05),
        (ReasonCode::QuotaExceeded, 0x03),
        (ReasonCode::ServerBusy, 0x03),
    ];
    for (reason, code) in cases {
        assert_eq!(
            encode(V3, &Packet::ConnAck(ConnAck::new(reason))),
            [0x20, 0x02, 0x00, code],
            "{reason:?}"
        );
    }
}

#[test]
fn v5_connack_with_properties() {
    // Receive Maximum 10, Topic Alias Maximum 5, Assigned Client Identifier "xyz".
    #[rustfmt::skip]
    let bytes = [
        0x20, 0x0F, 0x00, 0x00,
        0x0C, 0x21, 0x00, 0x0A, 0x22, 0x00, 0x05, 0x12, 0x00, 0x03, b'x', b'y', b'z',
    ];
    let connack = ConnAck {
        properties: vec![
            Property::ReceiveMaximum(10),
            Property::TopicAliasMaximum(5),
            Property::AssignedClientIdentifier("xyz".into()),
        ]
        .into(),
        ..ConnAck::new(ReasonCode::Success)
    };
    assert_vector(V5, &bytes, &Packet::ConnAck(connack.clone()));
    let Packet::ConnAck(decoded) = decode(V5, &bytes).expect("valid") else { panic!("connack") };
    assert_eq!(decoded.properties.receive_maximum(), Some(10));
    assert_eq!(decoded.properties.assigned_client_identifier(), Some("xyz"));
}

#[test]
fn v5_connack_without_properties_still_has_a_property_length() {
    assert_vector(V5, &[0x20, 0x03, 0x00, 0x00, 0x00], &Packet::ConnAck(ConnAck::new(ReasonCode::Success)));
    assert_vector(
        V5,
        &[0x20, 0x03, 0x00, 0x9F, 0x00],
        &Packet::ConnAck(ConnAck::new(ReasonCode::ConnectionRateExceeded)),
    );
}

#[test]
fn connack_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let cases = [
        (V3, vec![0x20, 0x02, 0x02, 0x00], ConnAckReservedFlags { flags: 0x02 }, MalformedPacket),
        (V5, vec![0x20, 0x03, 0x80, 0x00, 0x00], ConnAckReservedFlags { flags: 0x80 }, MalformedPacket),
        (
            V3,
            vec![0x20, 0x02, 0x00, 0x06],
            InvalidReasonCode { packet: "CONNACK", code: 0x06 },
            MalformedPacket,
        ),
        // 0x10 is a PUBACK code; 0x03 is no code at all.
        (
            V5,
            vec![0x20, 0x03, 0x00, 0x10, 0x00],
            InvalidReasonCode { packet: "CONNACK", code: 0x10 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x20, 0x03, 0x00, 0x03, 0x00],
            InvalidReasonCode { packet: "CONNACK", code: 0x03 },
            MalformedPacket,
        ),
        (V3, vec![0x20, 0x02, 0x01, 0x05], SessionPresentWithError, ProtocolError),
        (V5, vec![0x20, 0x03, 0x01, 0x87, 0x00], SessionPresentWithError, ProtocolError),
        (V5, vec![0x20, 0x02, 0x00, 0x00], UnexpectedEnd, MalformedPacket),
        (V3, vec![0x20, 0x03, 0x00, 0x00, 0x00], TrailingBytes { count: 1 }, MalformedPacket),
        (
            V5,
            vec![0x20, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01],
            PropertyNotAllowed { id: PropertyId::TopicAlias, packet: "CONNACK" },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02],
            InvalidPropertyValue { id: PropertyId::MaximumQos, value: 2 },
            ProtocolError,
        ),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}
