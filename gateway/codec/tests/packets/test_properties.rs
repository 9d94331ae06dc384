//! Table 2-4 (which property may appear where), repetition, value ranges and
//! the property length, checked against a transcription of the table made
//! independently of the decoder's own.

use bytes::Bytes;
use herald_core::topic::TopicError;
use herald_mqtt::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, LastWill, Packet, Properties, Property, PropertyId,
    PubAck, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};

use crate::support::*;

/// Where a property list can sit, with table 2-4 transposed: the
/// identifiers each place allows.
const CONTEXTS: [(&str, &[u8]); 14] = [
    ("CONNECT", &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27]),
    ("will properties", &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26]),
    (
        "CONNACK",
        &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
            0x2A,
        ],
    ),
    ("PUBLISH", &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26]),
    ("PUBACK", &[0x1F, 0x26]),
    ("PUBREC", &[0x1F, 0x26]),
    ("PUBREL", &[0x1F, 0x26]),
    ("PUBCOMP", &[0x1F, 0x26]),
    ("SUBSCRIBE", &[0x0B, 0x26]),
    ("SUBACK", &[0x1F, 0x26]),
    ("UNSUBSCRIBE", &[0x26]),
    ("UNSUBACK", &[0x1F, 0x26]),
    ("DISCONNECT", &[0x11, 0x1C, 0x1F, 0x26]),
    ("AUTH", &[0x15, 0x16, 0x1F, 0x26]),
];

/// Returns a packet of kind `context` carrying `properties` where that
/// context puts them.
fn packet_with(context: &str, properties: Properties) -> Packet {
    let ack = PubAck { properties: properties.clone(), ..PubAck::new(id(1)) };
    match context {
        "CONNECT" => Packet::Connect(Box::new(Connect { properties, ..Connect::new(V5, "c") })),
        "will properties" => Packet::Connect(Box::new(Connect {
            will: Some(LastWill {
                topic: "w".into(),
                payload: Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties,
            }),
            ..Connect::new(V5, "c")
        })),
        "CONNACK" => Packet::ConnAck(ConnAck { properties, ..ConnAck::new(ReasonCode::Success) }),
        "PUBLISH" => Packet::Publish(Publish { properties, ..Publish::new("t", Bytes::new()) }),
        "PUBACK" => Packet::PubAck(ack),
        "PUBREC" => Packet::PubRec(ack),
        "PUBREL" => Packet::PubRel(ack),
        "PUBCOMP" => Packet::PubComp(ack),
        "SUBSCRIBE" => Packet::Subscribe(Subscribe {
            packet_id: id(1),
            properties,
            filters: vec![("f".into(), SubscriptionOptions::default())],
        }),
        "SUBACK" => {
            Packet::SubAck(SubAck { packet_id: id(1), properties, reason_codes: vec![ReasonCode::Success] })
        }
        "UNSUBSCRIBE" => {
            Packet::Unsubscribe(Unsubscribe { packet_id: id(1), properties, filters: vec!["f".into()] })
        }
        "UNSUBACK" => Packet::UnsubAck(UnsubAck {
            packet_id: id(1),
            properties,
            reason_codes: vec![ReasonCode::Success],
        }),
        "DISCONNECT" => Packet::Disconnect(Disconnect { properties, ..Disconnect::new(ReasonCode::Success) }),
        "AUTH" => Packet::Auth(Auth { properties, ..Auth::new(ReasonCode::Success) }),
        other => panic!("unknown context {other}"),
    }
}

/// Returns a valid value of property `id`.
fn sample(id: PropertyId) -> Property {
    use Property as P;
    use PropertyId as I;
    match id {
        I::PayloadFormatIndicator => P::PayloadFormatIndicator(1),
        I::MessageExpiryInterval => P::MessageExpiryInterval(60),
        I::ContentType => P::ContentType("text/plain".into()),
        I::ResponseTopic => P::ResponseTopic("r/1".into()),
        I::CorrelationData => P::CorrelationData(Bytes::from_static(b"\x00\x01")),
        I::SubscriptionIdentifier => P::SubscriptionIdentifier(268_435_455),
        I::SessionExpiryInterval => P::SessionExpiryInterval(u32::MAX),
        I::AssignedClientIdentifier => P::AssignedClientIdentifier("id".into()),
        I::ServerKeepAlive => P::ServerKeepAlive(30),
        I::AuthenticationMethod => P::AuthenticationMethod("SCRAM".into()),
        I::AuthenticationData => P::AuthenticationData(Bytes::from_static(b"d")),
        I::RequestProblemInformation => P::RequestProblemInformation(0),
        I::WillDelayInterval => P::WillDelayInterval(5),
        I::RequestResponseInformation => P::RequestResponseInformation(1),
        I::ResponseInformation => P::ResponseInformation("resp".into()),
        I::ServerReference => P::ServerReference("other:1883".into()),
        I::ReasonString => P::ReasonString("why".into()),
        I::ReceiveMaximum => P::ReceiveMaximum(1),
        I::TopicAliasMaximum => P::TopicAliasMaximum(0),
        I::TopicAlias => P::TopicAlias(65_535),
        I::MaximumQos => P::MaximumQos(1),
        I::RetainAvailable => P::RetainAvailable(0),
        I::UserProperty => P::UserProperty("k".into(), "v".into()),
        I::MaximumPacketSize => P::MaximumPacketSize(1),
        I::WildcardSubscriptionAvailable => P::WildcardSubscriptionAvailable(1),
        I::SubscriptionIdentifierAvailable => P::SubscriptionIdentifierAvailable(0),
        I::SharedSubscriptionAvailable => P::SharedSubscriptionAvailable(1),
    }
}

/// What decoding a packet carrying `properties` in `context` should give,
/// when every property is one the context allows.
fn expected_when_allowed(
    context: &str,
    properties: &Properties,
    packet: &Packet,
) -> Result<Packet, DecodeError> {
    if context == "CONNECT"
        && properties.authentication_data().is_some()
        && properties.authentication_method().is_none()
    {
        return Err(DecodeError::AuthenticationDataWithoutMethod);
    }
    Ok(packet.clone())
}

#[test]
fn every_property_is_accepted_exactly_where_table_2_4_allows_it() {
    for (context, allowed) in CONTEXTS {
        for id in PropertyId::ALL {
            let properties: Properties = vec![sample(id)].into();
            let packet = packet_with(context, properties.clone());
            let result = decode(V5, &encode(V5, &packet));
            if allowed.contains(&id.as_u8()) {
                assert_eq!(
                    result,
                    expected_when_allowed(context, &properties, &packet),
                    "{id:?} in {context}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(DecodeError::PropertyNotAllowed { id, packet: context }),
                    "{id:?} in {context}"
                );
            }
        }
    }
}

#[test]
fn single_use_properties_may_not_repeat() {
    for (context, allowed) in CONTEXTS {
        for &raw in allowed {
            let id = PropertyId::from_u8(raw).expect("defined");
            let properties: Properties = vec![sample(id), sample(id)].into();
            let packet = packet_with(context, properties.clone());
            let result = decode(V5, &encode(V5, &packet));
            let repeatable = id == PropertyId::UserProperty
                || (id == PropertyId::SubscriptionIdentifier && context == "PUBLISH");
            if repeatable {
                assert_eq!(
                    result,
                    expected_when_allowed(context, &properties, &packet),
                    "{id:?} in {context}"
                );
            } else {
                assert_eq!(result, Err(DecodeError::DuplicateProperty { id }), "{id:?} in {context}");
            }
        }
    }
}

#[test]
fn property_values_outside_their_range_are_protocol_errors() {
    use Property as P;
    let cases = [
        ("PUBLISH", P::PayloadFormatIndicator(2), PropertyId::PayloadFormatIndicator, 2),
        ("CONNECT", P::RequestProblemInformation(2), PropertyId::RequestProblemInformation, 2),
        ("CONNECT", P::RequestResponseInformation(255), PropertyId::RequestResponseInformation, 255),
        ("CONNACK", P::MaximumQos(2), PropertyId::MaximumQos, 2),
        ("CONNACK", P::RetainAvailable(2), PropertyId::RetainAvailable, 2),
        ("CONNACK", P::WildcardSubscriptionAvailable(7), PropertyId::WildcardSubscriptionAvailable, 7),
        ("CONNACK", P::SubscriptionIdentifierAvailable(2), PropertyId::SubscriptionIdentifierAvailable, 2),
        ("CONNACK", P::SharedSubscriptionAvailable(2), PropertyId::SharedSubscriptionAvailable, 2),
        ("CONNECT", P::ReceiveMaximum(0), PropertyId::ReceiveMaximum, 0),
        ("CONNACK", P::ReceiveMaximum(0), PropertyId::ReceiveMaximum, 0),
        ("CONNECT", P::MaximumPacketSize(0), PropertyId::MaximumPacketSize, 0),
        ("PUBLISH", P::SubscriptionIdentifier(0), PropertyId::SubscriptionIdentifier, 0),
        ("SUBSCRIBE", P::SubscriptionIdentifier(0), PropertyId::SubscriptionIdentifier, 0),
    ];
    for (context, property, id, value) in cases {
        let bytes = encode(V5, &packet_with(context, vec![property].into()));
        assert_rejects(
            V5,
            &bytes,
            DecodeError::InvalidPropertyValue { id, value },
            ReasonCode::ProtocolError,
        );
    }
    let bytes = encode(V5, &packet_with("PUBLISH", vec![P::TopicAlias(0)].into()));
    assert_rejects(V5, &bytes, DecodeError::TopicAliasZero, ReasonCode::TopicAliasInvalid);
    let bytes = encode(V5, &packet_with("will properties", vec![P::ResponseTopic("a/+".into())].into()));
    assert_rejects(
        V5,
        &bytes,
        DecodeError::InvalidResponseTopic(TopicError::WildcardInName),
        ReasonCode::ProtocolError,
    );
}

#[test]
fn malformed_property_sections_are_rejected() {
    use DecodeError::*;
    use ReasonCode::MalformedPacket;
    let topic = field(b"a");
    let publish =
        |properties: &[u8], payload: &[u8]| frame(0x30, &[&topic[..], properties, payload].concat());
    let cases = [
        (publish(&[0x02, 0x04, 0x00], b""), UnknownProperty { id: 0x04 }),
        (publish(&[0x02, 0x2B, 0x00], b""), UnknownProperty { id: 0x2B }),
        // A two-byte identifier: 128 or more (unknown), or padded.
        (publish(&[0x03, 0x80, 0x01, 0x00], b""), UnknownProperty { id: 0x80 }),
        (publish(&[0x02, 0x81, 0x00], b""), UnknownProperty { id: 0x81 }),
        (publish(&[0x09, 0x01], b""), PropertyLengthExceedsPacket),
        // Message Expiry needs four bytes; the property section has two,
        // though the packet goes on.
        (publish(&[0x03, 0x02, 0x00, 0x00], b"\x00\x00\x00"), UnexpectedEnd),
        (publish(&[0x05, 0x03, 0x00, 0x02, b'a', 0x00], b""), NullCharacter),
        (publish(&[0x07, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x01, b'v'], b""), InvalidUtf8),
        (publish(&[0x80, 0x00], b""), NonMinimalVariableInteger),
        (publish(&[0x80], b""), UnexpectedEnd),
    ];
    for (bytes, error) in cases {
        assert_rejects(V5, &bytes, error, MalformedPacket);
    }
}

#[test]
fn typed_getters_read_every_single_use_property() {
    let properties: Properties = PropertyId::ALL.into_iter().map(sample).collect();
    assert_eq!(properties.payload_format_indicator(), Some(1));
    assert_eq!(properties.message_expiry_interval(), Some(60));
    assert_eq!(properties.content_type(), Some("text/plain"));
    assert_eq!(properties.response_topic(), Some("r/1"));
    assert_eq!(properties.correlation_data().map(|b| &b[..]), Some(&b"\x00\x01"[..]));
    assert_eq!(properties.subscription_identifiers().collect::<Vec<_>>(), [268_435_455]);
    assert_eq!(properties.session_expiry_interval(), Some(u32::MAX));
    assert_eq!(properties.assigned_client_identifier(), Some("id"));
    assert_eq!(properties.server_keep_alive(), Some(30));
    assert_eq!(properties.authentication_method(), Some("SCRAM"));
    assert_eq!(properties.authentication_data().map(|b| &b[..]), Some(&b"d"[..]));
    assert_eq!(properties.request_problem_information(), Some(0));
    assert_eq!(properties.will_delay_interval(), Some(5));
    assert_eq!(properties.request_response_information(), Some(1));
    assert_eq!(properties.response_information(), Some("resp"));
    assert_eq!(properties.server_reference(), Some("other:1883"));
    assert_eq!(properties.reason_string(), Some("why"));
    assert_eq!(properties.receive_maximum(), Some(1));
    assert_eq!(properties.topic_alias_maximum(), Some(0));
    assert_eq!(properties.topic_alias(), Some(65_535));
    assert_eq!(properties.maximum_qos(), Some(1));
    assert_eq!(properties.retain_available(), Some(0));
    assert_eq!(properties.user_properties().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(properties.maximum_packet_size(), Some(1));
    assert_eq!(properties.wildcard_subscription_available(), Some(1));
    assert_eq!(properties.subscription_identifier_available(), Some(0));
    assert_eq!(properties.shared_subscription_available(), Some(1));
    assert_eq!(properties.get(PropertyId::TopicAlias), Some(&Property::TopicAlias(65_535)));

    let empty = Properties::new();
    assert!(empty.is_empty());
    assert_eq!(empty.topic_alias(), None);
    assert_eq!(empty.reason_string(), None);
}
