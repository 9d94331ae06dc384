use bytes::{Bytes, BytesMut};
use herald_core::topic::TopicError;
use herald_mqtt::{
    Codec, ConnAck, Connect, DecodeError, EncodeError, LastWill, Packet, Properties, Property, PropertyId,
    ProtocolVersion, Publish, QoS, ReasonCode,
};

use crate::support::*;

#[test]
fn v311_connect_with_client_id_only() {
    // "MQTT", level 4, Clean Session, keep alive 60, client id "abc".
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x0F,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C,
        0x00, 0x03, b'a', b'b', b'c',
    ];
    let connect = Connect { keep_alive: 60, ..Connect::new(V3, "abc") };
    assert_vector(V3, &bytes, &Packet::Connect(Box::new(connect)));
}

#[test]
fn v311_connect_with_will_and_credentials() {
    // Flags 0xEE: user name, password, will retain, will QoS 1, will, clean.
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x1E,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x0A,
        0x00, 0x02, b'c', b'1',
        0x00, 0x03, b'w', b'/', b't',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x01, b'p',
    ];
    let connect = Connect {
        keep_alive: 10,
        will: Some(LastWill {
            topic: "w/t".into(),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::new(),
        }),
        username: Some("u".into()),
        password: Some(Bytes::from_static(b"p")),
        ..Connect::new(V3, "c1")
    };
    assert_vector(V3, &bytes, &Packet::Connect(Box::new(connect)));
}

#[test]
fn v5_connect_with_properties_and_will_properties() {
    // Flags 0x06: will (QoS 0), clean start. Session Expiry 120, Will Delay 10.
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x20,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x06, 0x00, 0x3C,
        0x05, 0x11, 0x00, 0x00, 0x00, 0x78,
        0x00, 0x03, b'a', b'b', b'c',
        0x05, 0x18, 0x00, 0x00, 0x00, 0x0A,
        0x00, 0x01, b't',
        0x00, 0x00,
    ];
    let connect = Connect {
        keep_alive: 60,
        properties: vec![Property::SessionExpiryInterval(120)].into(),
        will: Some(LastWill {
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: vec![Property::WillDelayInterval(10)].into(),
        }),
        ..Connect::new(V5, "abc")
    };
    assert_vector(V5, &bytes, &Packet::Connect(Box::new(connect)));
}

#[test]
fn v5_allows_a_password_without_a_user_name() {
    #[rustfmt::skip]
    let bytes = [
        0x10, 0x11,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x42, 0x00, 0x00,
        0x00,
        0x00, 0x00,
        0x00, 0x02, b'p', b'w',
    ];
    let connect = Connect { password: Some(Bytes::from_static(b"pw")), ..Connect::new(V5, "") };
    assert_vector(V5, &bytes, &Packet::Connect(Box::new(connect)));
}

/// Returns a CONNECT body: protocol name, level, flags, keep alive 60, then
/// `rest`.
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = field(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
    body.extend_from_slice(rest);
    frame(0x10, &body)
}

#[test]
fn connect_violations_are_rejected_with_the_right_code() {
    use DecodeError::*;
    use ReasonCode::{MalformedPacket, ProtocolError, UnsupportedProtocolVersion as Unsupported};
    let client = field(b"c");
    let will = [field(b"c"), field(b"w/t"), field(b"x")].concat();
    let cases: Vec<(ProtocolVersion, Vec<u8>, DecodeError, ReasonCode)> = vec![
        (V3, connect_body(b"MQTX", 4, 0x02, &client), InvalidProtocolName, Unsupported),
        (V5, connect_body(b"mqtt", 5, 0x02, &client), InvalidProtocolName, Unsupported),
        // MQTT 3.1 is recognised by its name and refused by its level.
        (V3, connect_body(b"MQIsdp", 3, 0x02, &client), UnsupportedProtocolVersion { level: 3 }, Unsupported),
        (V3, connect_body(b"MQTT", 3, 0x02, &client), UnsupportedProtocolVersion { level: 3 }, Unsupported),
        (V5, connect_body(b"MQTT", 6, 0x02, &client), UnsupportedProtocolVersion { level: 6 }, Unsupported),
        (V3, connect_body(b"MQTT", 4, 0x03, &client), ConnectReservedFlag, MalformedPacket),
        (V5, connect_body(b"MQTT", 5, 0x01, &[0, 0, 1, b'c']), ConnectReservedFlag, MalformedPacket),
        (V3, connect_body(b"MQTT", 4, 0x08, &client), WillQosWithoutWill, MalformedPacket),
        (V3, connect_body(b"MQTT", 4, 0x10, &client), WillQosWithoutWill, MalformedPacket),
        (V3, connect_body(b"MQTT", 4, 0x20, &client), WillRetainWithoutWill, MalformedPacket),
        (V3, connect_body(b"MQTT", 4, 0x1C, &will), WillQosThree, MalformedPacket),
        (
            V3,
            connect_body(b"MQTT", 4, 0x40, &[field(b"c"), field(b"pw")].concat()),
            PasswordWithoutUsername,
            MalformedPacket,
        ),
        (
            V3,
            connect_body(b"MQTT", 4, 0x04, &[field(b"c"), field(b"w/#"), field(b"x")].concat()),
            InvalidTopicName(TopicError::WildcardInName),
            ProtocolError,
        ),
        (
            V3,
            connect_body(b"MQTT", 4, 0x04, &[field(b"c"), field(b""), field(b"x")].concat()),
            InvalidTopicName(TopicError::Empty),
            ProtocolError,
        ),
        (
            V5,
            connect_body(b"MQTT", 5, 0x02, &[&[0x04, 0x16, 0x00, 0x01, 0xAA][..], &client].concat()),
            AuthenticationDataWithoutMethod,
            ProtocolError,
        ),
        (
            V5,
            connect_body(
                b"MQTT",
                5,
                0x04,
                &[&[0x00][..], &field(b"c"), &[0x05, 0x11, 0, 0, 0, 1], &field(b"t"), &field(b"")].concat(),
            ),
            PropertyNotAllowed { id: PropertyId::SessionExpiryInterval, packet: "will properties" },
            MalformedPacket,
        ),
        // The will flag promises fields that are not there.
        (V3, connect_body(b"MQTT", 4, 0x04, &client), UnexpectedEnd, MalformedPacket),
        (V3, connect_body(b"MQTT", 4, 0x02, &[]), UnexpectedEnd, MalformedPacket),
        (
            V3,
            connect_body(b"MQTT", 4, 0x02, &[field(b"c"), vec![0xFF]].concat()),
            TrailingBytes { count: 1 },
            MalformedPacket,
        ),
    ];
    for (version, bytes, error, reason) in cases {
        assert_rejects(version, &bytes, error, reason);
    }
}

#[test]
fn the_codec_adopts_the_connect_level_for_pipelined_packets() {
    let connect = Packet::Connect(Box::new(Connect::new(V5, "c")));
    let mut publish = Publish::new("a/b", Bytes::from_static(b"hi"));
    publish.properties.push(Property::MessageExpiryInterval(30));
    publish.properties.push(Property::UserProperty("k".into(), "v".into()));
    let publish = Packet::Publish(publish);
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encode(V5, &connect));
    buf.extend_from_slice(&encode(V5, &publish));

    // A server starts at 3.1.1 until CONNECT says otherwise.
    let mut codec = Codec::new(V3, u32::MAX);
    assert_eq!(codec.decode(&mut buf), Ok(Some(connect)));
    assert_eq!(codec.version(), V5);
    assert_eq!(codec.decode(&mut buf), Ok(Some(publish)));
    assert_eq!(codec.decode(&mut buf), Ok(None));

    // And the other way round: a 3.1.1 PUBLISH read at 5.0 would take the
    // first payload byte for a property length.
    let connect = Packet::Connect(Box::new(Connect::new(V3, "c")));
    let publish = Packet::Publish(Publish::new("a", Bytes::from_static(b"\x05xyz")));
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&encode(V3, &connect));
    buf.extend_from_slice(&encode(V3, &publish));
    let mut codec = Codec::new(V5, u32::MAX);
    assert_eq!(codec.decode(&mut buf), Ok(Some(connect)));
    assert_eq!(codec.version(), V3);
    assert_eq!(codec.decode(&mut buf), Ok(Some(publish)));
}

#[test]
fn only_connect_changes_the_version() {
    let mut buf = BytesMut::from(&encode(V5, &Packet::ConnAck(ConnAck::new(ReasonCode::Success)))[..]);
    let mut codec = Codec::new(V5, u32::MAX);
    assert!(matches!(codec.decode(&mut buf), Ok(Some(Packet::ConnAck(_)))));
    assert_eq!(codec.version(), V5);
}

#[test]
fn connects_that_cannot_be_encoded_leave_the_buffer_alone() {
    let mut out = BytesMut::from(&b"xyz"[..]);
    let lonely_password = Connect { password: Some(Bytes::from_static(b"p")), ..Connect::new(V3, "c") };
    assert_eq!(
        Codec::new(V3, u32::MAX).encode(&Packet::Connect(Box::new(lonely_password)), &mut out),
        Err(EncodeError::PasswordWithoutUsername)
    );
    assert_eq!(
        Codec::new(V3, u32::MAX).encode(&Packet::Connect(Box::new(Connect::new(V5, "c"))), &mut out),
        Err(EncodeError::ConnectVersionMismatch { connect: V5, codec: V3 })
    );
    assert_eq!(&out[..], b"xyz");
}

#[test]
fn v311_encoding_leaves_out_properties() {
    let mut connect = Connect::new(V3, "c");
    let plain = encode(V3, &Packet::Connect(Box::new(connect.clone())));
    connect.properties.push(Property::SessionExpiryInterval(5));
    assert_eq!(encode(V3, &Packet::Connect(Box::new(connect))), plain);
}
