use bytes::BytesMut;
use herald_core::topic::TopicError;
use herald_mqtt::{
    Codec, DecodeError, EncodeError, Packet, Properties, Property, PropertyId, QoS, ReasonCode,
    RetainHandling, Subscribe, SubscriptionOptions,
};

use crate::support::*;

#[test]
fn v311_subscribe_with_two_filters() {
    #[rustfmt::skip]
    let bytes = [
        0x82, 0x0E, 0x00, 0x01,
        0x00, 0x03, b'a', b'/', b'b', 0x01,
        0x00, 0x03, b'c', b'/', b'#', 0x02,
    ];
    let subscribe = Subscribe {
        packet_id: id(1),
        properties: Properties::new(),
        filters: vec![
            ("a/b".into(), SubscriptionOptions::new(QoS::AtLeastOnce)),
            ("c/#".into(), SubscriptionOptions::new(QoS::ExactlyOnce)),
        ],
    };
    assert_vector(V3, &bytes, &Packet::Subscribe(subscribe));
}

#[test]
fn v5_subscribe_with_options_and_a_subscription_identifier() {
    // Options 0x2D: QoS 1, No Local, Retain As Published, Retain Handling 2.
    let bytes = [0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x05, 0x00, 0x03, b'a', b'/', b'+', 0x2D];
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: true,
        retain_as_published: true,
        retain_handling: RetainHandling::DoNotSend,
    };
    let subscribe = Subscribe {
        packet_id: id(1),
        properties: vec![Property::SubscriptionIdentifier(5)].into(),
        filters: vec![("a/+".into(), options)],
    };
    assert_vector(V5, &bytes, &Packet::Subscribe(subscribe.clone()));
    // 3.1.1 carries the QoS alone.
    assert_eq!(
        encode(V3, &Packet::Subscribe(subscribe)),
        [0x82, 0x08, 0x00, 0x01, 0x00, 0x03, b'a', b'/', b'+', 0x01]
    );
}

#[test]
fn v5_shared_subscriptions_are_accepted_without_no_local() {
    let bytes = [
        0x82, 0x12, 0x00, 0x02, 0x00, 0x00, 0x0C, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'a',
        b'/', b'#', 0x19,
    ];
    let options = SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        retain_as_published: true,
        retain_handling: RetainHandling::SendAtSubscribeIfNew,
        ..SubscriptionOptions::default()
    };
    let subscribe = Subscribe {
        packet_id: id(2),
        properties: Properties::new(),
        filters: vec![("$share/g/a/#".into(), options)],
    };
    assert_vector(V5, &bytes, &Packet::Subscribe(subscribe));
}

/// Returns a SUBSCRIBE for one filter with `options`; `properties` is the raw
/// property section (5.0) or empty (3.1.1).
fn one_filter(properties: &[u8], filter: &[u8], options: u8) -> Vec<u8> {
    frame(0x82, &[&[0x00, 0x01][..], properties, &field(filter), &[options]].concat())
}

#[test]
fn subscribe_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError};
    let none: &[u8] = &[0x00];
    let cases = [
        (V3, vec![0x80], InvalidFixedHeaderFlags { packet_type: 8, flags: 0 }, MalformedPacket),
        (V5, vec![0x83], InvalidFixedHeaderFlags { packet_type: 8, flags: 3 }, MalformedPacket),
        (V3, vec![0x82, 0x02, 0x00, 0x01], NoTopicFilters { packet: "SUBSCRIBE" }, ProtocolError),
        (V5, vec![0x82, 0x03, 0x00, 0x01, 0x00], NoTopicFilters { packet: "SUBSCRIBE" }, ProtocolError),
        (V3, frame(0x82, &[&[0x00, 0x01][..], &field(b"a/b")].concat()), UnexpectedEnd, MalformedPacket),
        (V3, frame(0x82, &[&[0x00, 0x00][..], &field(b"a"), &[0x00]].concat()), ZeroPacketId, ProtocolError),
        (
            V3,
            one_filter(&[], b"a/#/b", 0x00),
            InvalidTopicFilter(TopicError::MisplacedMultiLevelWildcard),
            ProtocolError,
        ),
        (
            V5,
            one_filter(none, b"$share/g", 0x00),
            InvalidTopicFilter(TopicError::MissingSharedFilter),
            ProtocolError,
        ),
        (V3, one_filter(&[], b"a", 0x04), SubscriptionOptionsReserved { options: 0x04 }, MalformedPacket),
        (V3, one_filter(&[], b"a", 0x80), SubscriptionOptionsReserved { options: 0x80 }, MalformedPacket),
        (V3, one_filter(&[], b"a", 0x03), SubscriptionQosThree, ProtocolError),
        (V5, one_filter(none, b"a", 0x40), SubscriptionOptionsReserved { options: 0x40 }, MalformedPacket),
        (V5, one_filter(none, b"a", 0x81), SubscriptionOptionsReserved { options: 0x81 }, MalformedPacket),
        (V5, one_filter(none, b"a", 0x03), SubscriptionQosThree, ProtocolError),
        (V5, one_filter(none, b"a", 0x30), RetainHandlingThree, ProtocolError),
        (V5, one_filter(none, b"$share/g/a", 0x04), NoLocalOnSharedSubscription, ProtocolError),
        (
            V5,
            one_filter(&[0x02, 0x0B, 0x00], b"a", 0x00),
            InvalidPropertyValue { id: PropertyId::SubscriptionIdentifier, value: 0 },
            ProtocolError,
        ),
        (
            V5,
            one_filter(&[0x04, 0x0B, 0x01, 0x0B, 0x02], b"a", 0x00),
            DuplicateProperty { id: PropertyId::SubscriptionIdentifier },
            ProtocolError,
        ),
        (
            V5,
            one_filter(&[0x05, 0x0B, 0xFF, 0xFF, 0xFF, 0xFF], b"a", 0x00),
            VariableIntegerTooLong,
            MalformedPacket,
        ),
        (V5, one_filter(&[0x02, 0x0B, 0x80], b"a", 0x00), UnexpectedEnd, MalformedPacket),
        (
            V5,
            one_filter(&[0x03, 0x1F, 0x00, 0x00], b"a", 0x00),
            PropertyNotAllowed { id: PropertyId::ReasonString, packet: "SUBSCRIBE" },
            MalformedPacket,
        ),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}

#[test]
fn a_subscribe_without_filters_cannot_be_encoded() {
    let empty = Subscribe { packet_id: id(1), properties: Properties::new(), filters: Vec::new() };
    let mut out = BytesMut::new();
    assert_eq!(
        Codec::new(V3, u32::MAX).encode(&Packet::Subscribe(empty), &mut out),
        Err(EncodeError::EmptyPayload { packet: "SUBSCRIBE" })
    );
    assert!(out.is_empty());
}
