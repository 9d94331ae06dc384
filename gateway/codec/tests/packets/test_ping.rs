use herald_mqtt::{DecodeError, Packet, ReasonCode};

use crate::support::*;

#[test]
fn pings_are_a_fixed_header_alone() {
    for version in BOTH {
        assert_vector(version, &[0xC0, 0x00], &Packet::PingReq);
        assert_vector(version, &[0xD0, 0x00], &Packet::PingResp);
    }
}

#[test]
fn ping_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    let cases = [
        (V3, vec![0xC0, 0x01, 0x00], TrailingBytes { count: 1 }),
        (V5, vec![0xD0, 0x02, 0x00, 0x00], TrailingBytes { count: 2 }),
        (V3, vec![0xC1], InvalidFixedHeaderFlags { packet_type: 12, flags: 1 }),
        (V5, vec![0xD8], InvalidFixedHeaderFlags { packet_type: 13, flags: 8 }),
    ];
    for (version, bytes, error) in cases {
        assert_rejects(version, &bytes, error, ReasonCode::MalformedPacket);
    }
}
