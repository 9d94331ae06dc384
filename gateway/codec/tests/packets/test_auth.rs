use bytes::BytesMut;
use herald_mqtt::{Auth, Codec, DecodeError, EncodeError, Packet, Property, PropertyId, ReasonCode};

use crate::support::*;

#[test]
fn v5_auth_forms() {
    assert_vector(V5, &[0xF0, 0x00], &Packet::Auth(Auth::new(ReasonCode::Success)));
    assert_vector(V5, &[0xF0, 0x01, 0x19], &Packet::Auth(Auth::new(ReasonCode::ReAuthenticate)));
    let continued = Auth {
        properties: vec![Property::AuthenticationMethod("SCRA".into())].into(),
        ..Auth::new(ReasonCode::ContinueAuthentication)
    };
    let bytes = [0xF0, 0x09, 0x18, 0x07, 0x15, 0x00, 0x04, b'S', b'C', b'R', b'A'];
    assert_vector(V5, &bytes, &Packet::Auth(continued));
}

#[test]
fn auth_does_not_exist_in_v311() {
    assert_rejects(
        V3,
        &[0xF0, 0x00],
        DecodeError::ReservedPacketType { packet_type: 15 },
        ReasonCode::MalformedPacket,
    );
    let mut out = BytesMut::from(&b"xyz"[..]);
    assert_eq!(
        Codec::new(V3, u32::MAX).encode(&Packet::Auth(Auth::new(ReasonCode::Success)), &mut out),
        Err(EncodeError::UnsupportedInVersion { packet: "AUTH", version: V3 })
    );
    assert_eq!(&out[..], b"xyz");
}

#[test]
fn auth_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    let cases = [
        (vec![0xF0, 0x01, 0x80], InvalidReasonCode { packet: "AUTH", code: 0x80 }),
        (vec![0xF1], InvalidFixedHeaderFlags { packet_type: 15, flags: 1 }),
        (
            vec![0xF0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01],
            PropertyNotAllowed { id: PropertyId::SessionExpiryInterval, packet: "AUTH" },
        ),
    ];
    for (bytes, error) in cases {
        assert_rejects(V5, &bytes, error, ReasonCode::MalformedPacket);
    }
}
