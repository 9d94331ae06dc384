//! Each packet type accepts exactly the reason codes of its own table in
//! MQTT 5.0 §3 and nothing else, checked for all 256 byte values.

use herald_mqtt::{DecodeError, Packet, ReasonCode};

use crate::support::*;

const PUBLISH_RESULTS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const RELEASE_RESULTS: &[u8] = &[0x00, 0x92];

/// A packet name, its bytes before the reason code, after it, and the codes
/// its table allows.
type Table = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

const TABLES: [Table; 9] = [
    (
        "CONNACK",
        &[0x20, 0x03, 0x00],
        &[0x00],
        &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
            0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ],
    ),
    ("PUBACK", &[0x40, 0x03, 0x00, 0x01], &[], PUBLISH_RESULTS),
    ("PUBREC", &[0x50, 0x03, 0x00, 0x01], &[], PUBLISH_RESULTS),
    ("PUBREL", &[0x62, 0x03, 0x00, 0x01], &[], RELEASE_RESULTS),
    ("PUBCOMP", &[0x70, 0x03, 0x00, 0x01], &[], RELEASE_RESULTS),
    (
        "SUBACK",
        &[0x90, 0x04, 0x00, 0x01, 0x00],
        &[],
        &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2],
    ),
    ("UNSUBACK", &[0xB0, 0x04, 0x00, 0x01, 0x00], &[], &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]),
    (
        "DISCONNECT",
        &[0xE0, 0x01],
        &[],
        &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
            0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
        ],
    ),
    ("AUTH", &[0xF0, 0x01], &[], &[0x00, 0x18, 0x19]),
];

/// Returns the reason code(s) of a decoded packet.
fn reason_codes(packet: &Packet) -> Vec<ReasonCode> {
    match packet {
        Packet::ConnAck(connack) => vec![connack.reason_code],
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            vec![ack.reason_code]
        }
        Packet::SubAck(suback) => suback.reason_codes.clone(),
        Packet::UnsubAck(unsuback) => unsuback.reason_codes.clone(),
        Packet::Disconnect(disconnect) => vec![disconnect.reason_code],
        Packet::Auth(auth) => vec![auth.reason_code],
        other => panic!("{other:?} has no reason code"),
    }
}

#[test]
fn each_packet_accepts_only_its_own_reason_codes() {
    for (packet, before, after, allowed) in TABLES {
        for code in 0..=255u8 {
            let bytes = [before, &[code], after].concat();
            let result = decode(V5, &bytes);
            if allowed.contains(&code) {
                let decoded = result.unwrap_or_else(|err| panic!("{packet} {code:#04x}: {err}"));
                assert_eq!(
                    reason_codes(&decoded).iter().map(|c| c.as_u8()).collect::<Vec<_>>(),
                    [code],
                    "{packet}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(DecodeError::InvalidReasonCode { packet, code }),
                    "{packet} {code:#04x}"
                );
            }
        }
    }
}
