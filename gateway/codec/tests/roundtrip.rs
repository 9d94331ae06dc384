//! Encode → decode round trips for every packet type at both protocol
//! versions. Strategies generate only valid packets: property sets allowed
//! for the packet (table 2-4, repeats only where the spec allows them), and
//! for MQTT 3.1.1 only what 3.1.1 can carry.

use std::num::NonZeroU16;

use bytes::{Bytes, BytesMut};
use herald_core::topic::{validate_topic_filter, validate_topic_name};
use herald_mqtt::{
    Auth, ByteString, Codec, ConnAck, Connect, Disconnect, LastWill, Packet, Properties, Property,
    PropertyId, ProtocolVersion, PubAck, Publish, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, encoded_len,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

const V3: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Where a property list sits: table 2-4 transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Connect,
    Will,
    ConnAck,
    Publish,
    Ack,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

fn allowed(context: Context) -> &'static [u8] {
    match context {
        Context::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x26, 0x27],
        Context::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18, 0x26],
        Context::ConnAck => &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29,
            0x2A,
        ],
        Context::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x23, 0x26],
        Context::Ack | Context::SubAck | Context::UnsubAck => &[0x1F, 0x26],
        Context::Subscribe => &[0x0B, 0x26],
        Context::Unsubscribe => &[0x26],
        Context::Disconnect => &[0x11, 0x1C, 0x1F, 0x26],
        Context::Auth => &[0x15, 0x16, 0x1F, 0x26],
    }
}

fn versions() -> impl Strategy<Value = ProtocolVersion> {
    prop_oneof![Just(V3), Just(V5)]
}

fn text() -> impl Strategy<Value = ByteString> {
    "[a-zA-Z0-9 /_é€𝄞-]{0,12}".prop_map(ByteString::from)
}

fn topic_name() -> impl Strategy<Value = ByteString> {
    "[a-z0-9$é]{1,6}(/[a-z0-9é]{0,6}){0,3}"
        .prop_filter("a valid topic name", |name| validate_topic_name(name).is_ok())
        .prop_map(ByteString::from)
}

fn topic_filter() -> impl Strategy<Value = ByteString> {
    let level = prop_oneof![Just("+".to_owned()), "[a-z0-9]{0,4}"];
    (option::of("[a-z]{1,4}"), vec(level, 1..4), any::<bool>())
        .prop_map(|(share, levels, multi)| {
            let mut filter = levels.join("/");
            if multi {
                filter.push_str("/#");
            }
            match share {
                Some(group) => format!("$share/{group}/{filter}"),
                None => filter,
            }
        })
        .prop_filter("a valid topic filter", |filter| validate_topic_filter(filter).is_ok())
        .prop_map(ByteString::from)
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = NonZeroU16> {
    any::<NonZeroU16>()
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![Just(QoS::AtMostOnce), Just(QoS::AtLeastOnce), Just(QoS::ExactlyOnce)]
}

/// A valid value of property `id`.
fn property(id: PropertyId) -> BoxedStrategy<Property> {
    use Property as P;
    use PropertyId as I;
    let flag = || 0..=1u8;
    match id {
        I::PayloadFormatIndicator => flag().prop_map(P::PayloadFormatIndicator).boxed(),
        I::MessageExpiryInterval => any::<u32>().prop_map(P::MessageExpiryInterval).boxed(),
        I::ContentType => text().prop_map(P::ContentType).boxed(),
        I::ResponseTopic => topic_name().prop_map(P::ResponseTopic).boxed(),
        I::CorrelationData => binary(8).prop_map(P::CorrelationData).boxed(),
        I::SubscriptionIdentifier => (1..=268_435_455u32).prop_map(P::SubscriptionIdentifier).boxed(),
        I::SessionExpiryInterval => any::<u32>().prop_map(P::SessionExpiryInterval).boxed(),
        I::AssignedClientIdentifier => text().prop_map(P::AssignedClientIdentifier).boxed(),
        I::ServerKeepAlive => any::<u16>().prop_map(P::ServerKeepAlive).boxed(),
        I::AuthenticationMethod => text().prop_map(P::AuthenticationMethod).boxed(),
        I::AuthenticationData => binary(8).prop_map(P::AuthenticationData).boxed(),
        I::RequestProblemInformation => flag().prop_map(P::RequestProblemInformation).boxed(),
        I::WillDelayInterval => any::<u32>().prop_map(P::WillDelayInterval).boxed(),
        I::RequestResponseInformation => flag().prop_map(P::RequestResponseInformation).boxed(),
        I::ResponseInformation => text().prop_map(P::ResponseInformation).boxed(),
        I::ServerReference => text().prop_map(P::ServerReference).boxed(),
        I::ReasonString => text().prop_map(P::ReasonString).boxed(),
        I::ReceiveMaximum => (1..=u16::MAX).prop_map(P::ReceiveMaximum).boxed(),
        I::TopicAliasMaximum => any::<u16>().prop_map(P::TopicAliasMaximum).boxed(),
        I::TopicAlias => (1..=u16::MAX).prop_map(P::TopicAlias).boxed(),
        I::MaximumQos => flag().prop_map(P::MaximumQos).boxed(),
        I::RetainAvailable => flag().prop_map(P::RetainAvailable).boxed(),
        I::UserProperty => (text(), text()).prop_map(|(k, v)| P::UserProperty(k, v)).boxed(),
        I::MaximumPacketSize => (1..=u32::MAX).prop_map(P::MaximumPacketSize).boxed(),
        I::WildcardSubscriptionAvailable => flag().prop_map(P::WildcardSubscriptionAvailable).boxed(),
        I::SubscriptionIdentifierAvailable => flag().prop_map(P::SubscriptionIdentifierAvailable).boxed(),
        I::SharedSubscriptionAvailable => flag().prop_map(P::SharedSubscriptionAvailable).boxed(),
    }
}

/// Any set of properties allowed in `context`, in any order; empty in 3.1.1.
fn properties(context: Context, version: ProtocolVersion) -> BoxedStrategy<Properties> {
    if version == V3 {
        return Just(Properties::new()).boxed();
    }
    let parts: Vec<BoxedStrategy<Vec<Property>>> = allowed(context)
        .iter()
        .map(|&raw| {
            let id = PropertyId::from_u8(raw).expect("defined identifier");
            let repeatable = id == PropertyId::UserProperty
                || (id == PropertyId::SubscriptionIdentifier && context == Context::Publish);
            if repeatable {
                vec(property(id), 0..3).boxed()
            } else {
                option::of(property(id)).prop_map(|p| p.into_iter().collect()).boxed()
            }
        })
        .collect();
    parts
        .prop_map(|lists| lists.into_iter().flatten().collect::<Vec<_>>())
        .prop_shuffle()
        .prop_map(move |mut list| {
            // Authentication Data needs a method to go with it in CONNECT.
            let has = |list: &[Property], id| list.iter().any(|p: &Property| p.id() == id);
            if context == Context::Connect
                && has(&list, PropertyId::AuthenticationData)
                && !has(&list, PropertyId::AuthenticationMethod)
            {
                list.push(Property::AuthenticationMethod("m".into()));
            }
            Properties::from(list)
        })
        .boxed()
}

fn reason_code(v5_codes: &'static [u8]) -> impl Strategy<Value = ReasonCode> {
    proptest::sample::select(v5_codes)
        .prop_map(|code| ReasonCode::from_u8(code).expect("defined reason code"))
}

fn connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (topic_name(), binary(16), qos(), any::<bool>(), properties(Context::Will, version)).prop_map(
        |(topic, payload, qos, retain, properties)| LastWill { topic, payload, qos, retain, properties },
    );
    (
        any::<bool>(),
        any::<u16>(),
        properties(Context::Connect, version),
        text(),
        option::of(will),
        option::of(text()),
        option::of(binary(8)),
    )
        .prop_map(move |(clean_start, keep_alive, properties, client_id, will, username, password)| {
            // 3.1.1 has no password without a user name.
            let username = match (&username, &password, version) {
                (None, Some(_), ProtocolVersion::V311) => Some("user".into()),
                _ => username,
            };
            Packet::Connect(Box::new(Connect {
                protocol: version,
                clean_start,
                keep_alive,
                properties,
                client_id,
                will,
                username,
                password,
            }))
        })
}

fn connack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match version {
        // The six return codes 3.1.1 has, as their v5 equivalents.
        ProtocolVersion::V311 => {
            (0..=5u8).prop_map(|code| ReasonCode::from_v3_connack(code).expect("defined return code")).boxed()
        }
        ProtocolVersion::V5 => reason_code(&[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
            0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ])
        .boxed(),
    };
    (any::<bool>(), code, properties(Context::ConnAck, version)).prop_map(
        |(session_present, reason_code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present: session_present && reason_code == ReasonCode::Success,
                reason_code,
                properties,
            })
        },
    )
}

fn publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = match version {
        ProtocolVersion::V311 => topic_name().boxed(),
        ProtocolVersion::V5 => prop_oneof![4 => topic_name(), 1 => Just(ByteString::new())].boxed(),
    };
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic,
        packet_id(),
        binary(64),
        properties(Context::Publish, version),
    )
        .prop_map(|(dup, qos, retain, topic, packet_id, payload, mut properties)| {
            if topic.is_empty() && properties.topic_alias().is_none() {
                properties.push(Property::TopicAlias(1));
            }
            let acknowledged = qos != QoS::AtMostOnce;
            Packet::Publish(Publish {
                dup: dup && acknowledged,
                qos,
                retain,
                topic,
                packet_id: acknowledged.then_some(packet_id),
                payload,
                properties,
            })
        })
}

fn ack(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    const PUBLISH_RESULTS: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    const RELEASE_RESULTS: &[u8] = &[0x00, 0x92];
    type Wrap = fn(PubAck) -> Packet;
    let kinds: [(Wrap, &'static [u8]); 4] = [
        (Packet::PubAck, PUBLISH_RESULTS),
        (Packet::PubRec, PUBLISH_RESULTS),
        (Packet::PubRel, RELEASE_RESULTS),
        (Packet::PubComp, RELEASE_RESULTS),
    ];
    proptest::sample::select(kinds.to_vec()).prop_flat_map(move |(wrap, codes)| {
        let code = match version {
            ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
            ProtocolVersion::V5 => reason_code(codes).boxed(),
        };
        (packet_id(), code, properties(Context::Ack, version)).prop_map(
            move |(packet_id, reason_code, properties)| wrap(PubAck { packet_id, reason_code, properties }),
        )
    })
}

fn subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options = (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| match version {
            ProtocolVersion::V311 => SubscriptionOptions::new(qos),
            ProtocolVersion::V5 => SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling: match retain_handling {
                    0 => RetainHandling::SendAtSubscribe,
                    1 => RetainHandling::SendAtSubscribeIfNew,
                    _ => RetainHandling::DoNotSend,
                },
            },
        },
    );
    let filter = (topic_filter(), options).prop_map(|(filter, mut options)| {
        // No Local is a protocol error on a shared subscription.
        if filter.starts_with("$share/") {
            options.no_local = false;
        }
        (filter, options)
    });
    (packet_id(), properties(Context::Subscribe, version), vec(filter, 1..4)).prop_map(
        |(packet_id, properties, filters)| Packet::Subscribe(Subscribe { packet_id, properties, filters }),
    )
}

fn suback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes: &'static [u8] = match version {
        // What 3.1.1 can say: a granted QoS or 0x80, which decodes as
        // Unspecified error.
        ProtocolVersion::V311 => &[0x00, 0x01, 0x02, 0x80],
        ProtocolVersion::V5 => &[0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2],
    };
    (packet_id(), properties(Context::SubAck, version), vec(reason_code(codes), 1..5)).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::SubAck(SubAck { packet_id, properties, reason_codes })
        },
    )
}

fn unsubscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (packet_id(), properties(Context::Unsubscribe, version), vec(topic_filter(), 1..4)).prop_map(
        |(packet_id, properties, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, properties, filters })
        },
    )
}

fn unsuback(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = match version {
        ProtocolVersion::V311 => Just(Vec::new()).boxed(),
        ProtocolVersion::V5 => vec(reason_code(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]), 1..5).boxed(),
    };
    (packet_id(), properties(Context::UnsubAck, version), codes).prop_map(
        |(packet_id, properties, reason_codes)| {
            Packet::UnsubAck(UnsubAck { packet_id, properties, reason_codes })
        },
    )
}

fn disconnect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = match version {
        ProtocolVersion::V311 => Just(ReasonCode::Success).boxed(),
        ProtocolVersion::V5 => reason_code(&[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
            0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
        ])
        .boxed(),
    };
    (code, properties(Context::Disconnect, version))
        .prop_map(|(reason_code, properties)| Packet::Disconnect(Disconnect { reason_code, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason_code(&[0x00, 0x18, 0x19]), properties(Context::Auth, V5))
        .prop_map(|(reason_code, properties)| Packet::Auth(Auth { reason_code, properties }))
}

fn any_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let mut choices = vec![
        connect(version).boxed(),
        connack(version).boxed(),
        publish(version).boxed(),
        ack(version).boxed(),
        subscribe(version).boxed(),
        suback(version).boxed(),
        unsubscribe(version).boxed(),
        unsuback(version).boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        disconnect(version).boxed(),
    ];
    if version == V5 {
        choices.push(auth().boxed());
    }
    proptest::strategy::Union::new(choices).boxed()
}

/// Encodes `packet`, checks `encoded_len`, that every strict prefix decodes
/// to `Ok(None)` without touching the buffer, and that the whole decodes to
/// an equal packet.
fn assert_round_trip(version: ProtocolVersion, packet: &Packet) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::new();
    Codec::new(version, u32::MAX)
        .encode(packet, &mut buf)
        .map_err(|err| TestCaseError::fail(format!("{packet:?} does not encode: {err}")))?;
    prop_assert_eq!(buf.len(), encoded_len(packet, version));
    for cut in 0..buf.len() {
        let mut prefix = BytesMut::from(&buf[..cut]);
        prop_assert_eq!(Codec::new(version, u32::MAX).decode(&mut prefix), Ok(None));
        prop_assert_eq!(&prefix[..], &buf[..cut]);
    }
    let decoded = Codec::new(version, u32::MAX).decode(&mut buf);
    prop_assert_eq!(decoded, Ok(Some(packet.clone())));
    prop_assert!(buf.is_empty());
    Ok(())
}

proptest! {
    #[test]
    fn connect_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), connect(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn connack_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), connack(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn publish_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), publish(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn ack_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), ack(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn subscribe_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), subscribe(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn suback_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), suback(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn unsubscribe_round_trips(
        (version, packet) in versions().prop_flat_map(|v| (Just(v), unsubscribe(v)))
    ) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn unsuback_round_trips((version, packet) in versions().prop_flat_map(|v| (Just(v), unsuback(v)))) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn ping_round_trips(version in versions(), request in any::<bool>()) {
        let packet = if request { Packet::PingReq } else { Packet::PingResp };
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn disconnect_round_trips(
        (version, packet) in versions().prop_flat_map(|v| (Just(v), disconnect(v)))
    ) {
        assert_round_trip(version, &packet)?;
    }

    #[test]
    fn auth_round_trips(packet in auth()) {
        assert_round_trip(V5, &packet)?;
    }

    /// A stream of packets written back to back reads back in order,
    /// whatever the read boundaries.
    #[test]
    fn streams_round_trip_across_arbitrary_reads(
        (version, packets, cuts) in versions().prop_flat_map(|v| {
            (Just(v), vec(any_packet(v), 1..6), vec(1..64usize, 1..8))
        })
    ) {
        let codec = Codec::new(version, u32::MAX);
        let mut wire = BytesMut::new();
        for packet in &packets {
            codec.encode(packet, &mut wire).map_err(|err| TestCaseError::fail(err.to_string()))?;
        }
        let mut reader = Codec::new(version, u32::MAX);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut rest = &wire[..];
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
            rest = tail;
            buf.extend_from_slice(chunk);
            while let Some(packet) = reader.decode(&mut buf).map_err(|err| TestCaseError::fail(err.to_string()))? {
                decoded.push(packet);
            }
        }
        prop_assert_eq!(decoded, packets);
        prop_assert!(buf.is_empty());
    }
}
