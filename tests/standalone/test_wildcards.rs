//! Topic filters with `+` and `#`, and topics starting with `$`.

use crate::support::{
    Broker, Incoming, Message, RawConnection, STEP_TIMEOUT, Version, assert_still_serving, publisher,
    subscriber,
};

/// Topics published, in order, by [`wildcard_routing`].
const TOPICS: [&str; 6] = [
    "sport/tennis/score",
    "sport/golf/score",
    "sport",
    "sport/tennis/player/1",
    "news/tennis",
    "sport/tennis/score/extra",
];

fn wildcard_routing(version: Version) {
    let broker = Broker::start();
    // Each filter with the topics of TOPICS it matches.
    let cases: [(&str, &[&str]); 6] = [
        ("sport/tennis/score", &["sport/tennis/score"]),
        ("sport/+/score", &["sport/tennis/score", "sport/golf/score"]),
        // `#` also matches the parent level [MQTT-4.7.1-2].
        (
            "sport/#",
            &[
                "sport/tennis/score",
                "sport/golf/score",
                "sport",
                "sport/tennis/player/1",
                "sport/tennis/score/extra",
            ],
        ),
        (
            "+/tennis/#",
            &["sport/tennis/score", "sport/tennis/player/1", "news/tennis", "sport/tennis/score/extra"],
        ),
        ("+", &["sport"]),
        ("#", &TOPICS),
    ];
    let mut subscribers: Vec<_> = cases
        .iter()
        .map(|(filter, _)| subscriber(&broker, version).topic(filter).topic("end").qos(1).start())
        .collect();
    for topic in TOPICS {
        publisher(&broker, version, topic).qos(1).message(topic).run();
    }
    publisher(&broker, version, "end").qos(1).message("end").run();

    for ((filter, matching), subscriber) in cases.iter().zip(&mut subscribers) {
        let mut expected: Vec<_> =
            matching.iter().map(|topic| Message::new(topic, topic, 1, false)).collect();
        expected.push(Message::new("end", "end", 1, false));
        expected.sort();
        // A message routed to the wrong filter takes the place of a right one or of the marker.
        let mut got = subscriber.expect_messages(expected.len());
        got.sort();
        assert_eq!(got, expected, "filter {filter:?}");
    }
}

#[test]
fn wildcards_route_v311() {
    wildcard_routing(Version::V311);
}

#[test]
fn wildcards_route_v5() {
    wildcard_routing(Version::V5);
}

/// v3.1.1 CONNECT, client id "dollar-311", clean session, keep-alive 60 s.
const CONNECT_V311: &[u8] = &[
    0x10, 0x16, // CONNECT, remaining length 22
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // connect flags: clean session
    0x00, 0x3C, // keep-alive 60 s
    0x00, 0x0A, b'd', b'o', b'l', b'l', b'a', b'r', b'-', b'3', b'1', b'1', // client id
];

/// v5 CONNECT, client id "dollar-5", clean start, keep-alive 60 s, no properties.
const CONNECT_V5: &[u8] = &[
    0x10, 0x15, // CONNECT, remaining length 21
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0x02, // connect flags: clean start
    0x00, 0x3C, // keep-alive 60 s
    0x00, // properties: none
    0x00, 0x08, b'd', b'o', b'l', b'l', b'a', b'r', b'-', b'5', // client id
];

/// v3.1.1 PUBLISH QoS 1 to "$foo/bar", packet id 1, payload "x".
const PUBLISH_DOLLAR_V311: &[u8] = &[
    0x32, 0x0D, // PUBLISH, QoS 1, remaining length 13
    0x00, 0x08, b'$', b'f', b'o', b'o', b'/', b'b', b'a', b'r', // topic name
    0x00, 0x01, // packet id 1
    b'x', // payload
];

/// v5 PUBLISH QoS 1 to "$foo/bar", packet id 1, no properties, payload "x".
const PUBLISH_DOLLAR_V5: &[u8] = &[
    0x32, 0x0E, // PUBLISH, QoS 1, remaining length 14
    0x00, 0x08, b'$', b'f', b'o', b'o', b'/', b'b', b'a', b'r', // topic name
    0x00, 0x01, // packet id 1
    0x00, // properties: none
    b'x', // payload
];

/// Connects with `connect`, checks the CONNACK, sends `publish`, and returns what came back.
fn publish_raw(broker: &Broker, connect: &[u8], publish: &[u8]) -> (RawConnection, Incoming) {
    let mut connection = RawConnection::open(broker);
    connection.send(connect);
    let connack = connection.expect_packet();
    assert_eq!(connack.first_byte, 0x20, "CONNACK expected, got {connack:?}");
    assert_eq!(connack.body[1], 0x00, "connection accepted, got {connack:?}");
    connection.send(publish);
    let answer = connection.receive(STEP_TIMEOUT);
    (connection, answer)
}

#[test]
fn wildcards_at_the_first_level_do_not_match_dollar_topics() {
    let broker = Broker::start();
    let mut listeners: Vec<_> = [(Version::V311, "#"), (Version::V5, "#"), (Version::V5, "+/bar")]
        .into_iter()
        .map(|(version, filter)| subscriber(&broker, version).topic(filter).qos(1).start())
        .collect();
    // Whether the broker refuses these publications or accepts them, it must not route them to
    // filters starting with a wildcard [MQTT-4.7.2-1]; the answer is awaited, so a routed copy
    // would be on its way before the marker below.
    publish_raw(&broker, CONNECT_V311, PUBLISH_DOLLAR_V311);
    publish_raw(&broker, CONNECT_V5, PUBLISH_DOLLAR_V5);
    publisher(&broker, Version::V5, "foo/bar").qos(1).message("marker").run();
    for listener in &mut listeners {
        assert_eq!(listener.expect_messages(1), [Message::new("foo/bar", "marker", 1, false)]);
    }
}

#[test]
fn clients_cannot_publish_to_dollar_topics() {
    let broker = Broker::start();

    // v3.1.1 has no negative PUBACK: the broker closes the connection.
    let (_connection, answer) = publish_raw(&broker, CONNECT_V311, PUBLISH_DOLLAR_V311);
    match answer {
        Incoming::Closed => {}
        Incoming::Packet(packet) => panic!("v3.1.1: expected the connection closed, got {packet:?}"),
        Incoming::Silent => panic!("v3.1.1: no answer and the connection is still open"),
    }

    // v5: a PUBACK with reason 0x90 (topic name invalid), or the connection closed.
    let (mut connection, answer) = publish_raw(&broker, CONNECT_V5, PUBLISH_DOLLAR_V5);
    match answer {
        Incoming::Closed => {}
        Incoming::Packet(packet) if packet.first_byte == 0x40 => {
            assert_eq!(&packet.body[..2], [0x00, 0x01], "PUBACK for packet id 1");
            assert_eq!(packet.body.get(2), Some(&0x90), "PUBACK reason: topic name invalid");
        }
        Incoming::Packet(packet) if packet.first_byte == 0xE0 => {
            assert!(packet.body.first().is_some_and(|reason| *reason >= 0x80), "DISCONNECT {packet:?}");
            connection.expect_closed();
        }
        other => panic!("v5: expected PUBACK 0x90 or a close, got {other:?}"),
    }
    assert_still_serving(&broker);
}
