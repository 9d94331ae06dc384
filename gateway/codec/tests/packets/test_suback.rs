use herald_mqtt::{DecodeError, Packet, Properties, Property, ReasonCode, SubAck};

use crate::support::*;

fn suback(reason_codes: Vec<ReasonCode>) -> SubAck {
    SubAck { packet_id: id(1), properties: Properties::new(), reason_codes }
}

#[test]
fn v311_return_codes_are_granted_qos_or_0x80() {
    let packet = Packet::SubAck(suback(vec![
        ReasonCode::Success,
        ReasonCode::GrantedQos1,
        ReasonCode::GrantedQos2,
        ReasonCode::UnspecifiedError,
    ]));
    assert_vector(V3, &[0x90, 0x06, 0x00, 0x01, 0x00, 0x01, 0x02, 0x80], &packet);
}

#[test]
fn v311_encoding_turns_every_failure_into_0x80() {
    let packet = Packet::SubAck(suback(vec![ReasonCode::GrantedQos2, ReasonCode::NotAuthorized]));
    let bytes = encode(V3, &packet);
    assert_eq!(bytes, [0x90, 0x04, 0x00, 0x01, 0x02, 0x80]);
    assert_eq!(
        decode(V3, &bytes),
        Ok(Packet::SubAck(suback(vec![ReasonCode::GrantedQos2, ReasonCode::UnspecifiedError])))
    );
}

#[test]
fn v5_suback_with_reason_codes_and_properties() {
    let packet = Packet::SubAck(suback(vec![
        ReasonCode::Success,
        ReasonCode::GrantedQos1,
        ReasonCode::NotAuthorized,
        ReasonCode::WildcardSubscriptionsNotSupported,
    ]));
    assert_vector(V5, &[0x90, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 0x87, 0xA2], &packet);

    let mut with_reason = suback(vec![ReasonCode::QuotaExceeded]);
    with_reason.properties.push(Property::ReasonString("q".into()));
    let bytes = [0x90, 0x08, 0x00, 0x01, 0x04, 0x1F, 0x00, 0x01, b'q', 0x97];
    assert_vector(V5, &bytes, &Packet::SubAck(with_reason));
}

#[test]
fn suback_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let cases = [
        (
            V3,
            vec![0x90, 0x03, 0x00, 0x01, 0x03],
            InvalidReasonCode { packet: "SUBACK", code: 0x03 },
            MalformedPacket,
        ),
        // 3.1.1 has one failure code; 0x87 is a 5.0 code.
        (
            V3,
            vec![0x90, 0x03, 0x00, 0x01, 0x87],
            InvalidReasonCode { packet: "SUBACK", code: 0x87 },
            MalformedPacket,
        ),
        (
            V5,
            vec![0x90, 0x04, 0x00, 0x01, 0x00, 0x11],
            InvalidReasonCode { packet: "SUBACK", code: 0x11 },
            MalformedPacket,
        ),
        (V3, vec![0x90, 0x02, 0x00, 0x01], NoReasonCodes { packet: "SUBACK" }, ProtocolError),
        (V5, vec![0x90, 0x03, 0x00, 0x01, 0x00], NoReasonCodes { packet: "SUBACK" }, ProtocolError),
        (V3, vec![0x90, 0x03, 0x00, 0x00, 0x00], ZeroPacketId, ProtocolError),
        (V3, vec![0x91], InvalidFixedHeaderFlags { packet_type: 9, flags: 1 }, MalformedPacket),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}
