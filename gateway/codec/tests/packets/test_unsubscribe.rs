use herald_core::topic::TopicError;
use herald_mqtt::{DecodeError, Packet, Properties, Property, PropertyId, ReasonCode, Unsubscribe};

use crate::support::*;

#[test]
fn unsubscribe_vectors() {
    let unsubscribe =
        Unsubscribe { packet_id: id(2), properties: Properties::new(), filters: vec!["a/b".into()] };
    let packet = Packet::Unsubscribe(unsubscribe.clone());
    assert_vector(V3, &[0xA2, 0x07, 0x00, 0x02, 0x00, 0x03, b'a', b'/', b'b'], &packet);
    assert_vector(V5, &[0xA2, 0x08, 0x00, 0x02, 0x00, 0x00, 0x03, b'a', b'/', b'b'], &packet);

    let mut tagged = unsubscribe;
    tagged.filters.push("$share/g/#".into());
    tagged.properties.push(Property::UserProperty("k".into(), "v".into()));
    #[rustfmt::skip]
    let bytes = [
        0xA2, 0x1B, 0x00, 0x02,
        0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x03, b'a', b'/', b'b',
        0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'#',
    ];
    assert_vector(V5, &bytes, &Packet::Unsubscribe(tagged));
}

#[test]
fn unsubscribe_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let cases = [
        (V3, vec![0xA0], InvalidFixedHeaderFlags { packet_type: 10, flags: 0 }, MalformedPacket),
        (V3, vec![0xA2, 0x02, 0x00, 0x02], NoTopicFilters { packet: "UNSUBSCRIBE" }, ProtocolError),
        (V5, vec![0xA2, 0x03, 0x00, 0x02, 0x00], NoTopicFilters { packet: "UNSUBSCRIBE" }, ProtocolError),
        (
            V3,
            frame(0xA2, &[vec![0x00, 0x02], field(b"a+")].concat()),
            InvalidTopicFilter(TopicError::MisplacedSingleLevelWildcard),
            ProtocolError,
        ),
        (
            V3,
            frame(0xA2, &[vec![0x00, 0x02], field(b"")].concat()),
            InvalidTopicFilter(TopicError::Empty),
            ProtocolError,
        ),
        (V3, frame(0xA2, &[vec![0x00, 0x00], field(b"a")].concat()), ZeroPacketId, ProtocolError),
        (
            V3,
            frame(0xA2, &[vec![0x00, 0x02], vec![0x00, 0x09, b'a']].concat()),
            UnexpectedEnd,
            MalformedPacket,
        ),
        (
            V5,
            frame(0xA2, &[vec![0x00, 0x02, 0x03, 0x1F, 0x00, 0x00], field(b"a")].concat()),
            PropertyNotAllowed { id: PropertyId::ReasonString, packet: "UNSUBSCRIBE" },
            MalformedPacket,
        ),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}
