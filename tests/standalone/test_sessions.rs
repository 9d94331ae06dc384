//! Sessions: persistent sessions that queue messages while their client is away, clean sessions
//! that start empty, session takeover, and client identifiers assigned by the broker.

use std::thread;

use crate::support::{
    Broker, Message, RawConnection, Version, assert_still_serving, paho, publisher, received, record,
    records, subscriber,
};

/// Payloads `prefix0`, `prefix1`, ... in publication order.
fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|number| format!("{prefix}{number}")).collect()
}

#[test]
fn persistent_session_queues_messages_while_offline_v311() {
    let broker = Broker::start();
    subscriber(&broker, Version::V311)
        .client_id("resume-311")
        .persistent()
        .topic("sessions/311")
        .qos(1)
        .exit_after_subscribe()
        .start();

    let payloads = numbered("offline-", 10);
    publisher(&broker, Version::V311, "sessions/311").qos(1).lines(&payloads).run();

    // Subscribing again does not create the queued messages: only the kept session holds them.
    let mut back = subscriber(&broker, Version::V311)
        .client_id("resume-311")
        .persistent()
        .topic("sessions/311")
        .qos(1)
        .start();
    let expected: Vec<_> =
        payloads.iter().map(|payload| Message::new("sessions/311", payload, 1, false)).collect();
    assert_eq!(back.expect_messages(payloads.len()), expected);
}

#[test]
fn persistent_session_queues_messages_while_offline_v5() {
    let broker = Broker::start();
    let first = paho(
        &broker,
        "session.py",
        &["5", "resume-5", "--clean", "1", "--expiry", "300", "--subscribe", "sessions/5", "--qos", "2"],
    );
    assert_eq!(record(&first, "connack").field("session_present"), "0");
    assert_eq!(record(&first, "granted").field("qos"), "2");

    let at_qos1 = numbered("qos1-", 5);
    let at_qos2 = numbered("qos2-", 5);
    publisher(&broker, Version::V5, "sessions/5").qos(1).lines(&at_qos1).run();
    publisher(&broker, Version::V5, "sessions/5").qos(2).lines(&at_qos2).run();

    let second =
        paho(&broker, "session.py", &["5", "resume-5", "--clean", "0", "--expiry", "300", "--expect", "10"]);
    let connack = record(&second, "connack");
    assert_eq!(connack.field("reason"), "0");
    assert_eq!(connack.field("session_present"), "1", "the session survived the disconnection");
    let expected: Vec<_> = at_qos1
        .iter()
        .map(|payload| Message::new("sessions/5", payload, 1, false))
        .chain(at_qos2.iter().map(|payload| Message::new("sessions/5", payload, 2, false)))
        .collect();
    assert_eq!(received(&second), expected);
}

/// Leaves a persistent session with three queued messages, then connects with a clean session:
/// nothing is delivered, and the old session is gone for good.
fn clean_session_discards(broker: &Broker, version: Version) {
    let client_id = format!("clean-{version}");
    let topic = format!("sessions/clean/{version}");
    let version_name = version.paho_name();

    let setup = paho(
        broker,
        "session.py",
        &[version_name, &client_id, "--clean", "0", "--expiry", "300", "--subscribe", &topic],
    );
    assert_eq!(record(&setup, "granted").field("qos"), "1");
    publisher(broker, version, &topic).qos(1).lines(&numbered("queued-", 3)).run();

    let clean = paho(broker, "session.py", &[version_name, &client_id, "--clean", "1", "--settle", "1.0"]);
    assert_eq!(record(&clean, "connack").field("session_present"), "0", "v{version} clean connection");
    assert_eq!(received(&clean), [], "v{version}: queued messages reached a clean session");

    // The clean connection's session ended with it (v5: no Session Expiry Interval means 0).
    let after = paho(
        broker,
        "session.py",
        &[version_name, &client_id, "--clean", "0", "--expiry", "300", "--settle", "0.5"],
    );
    let session_present = record(&after, "connack").field("session_present");
    assert_eq!(session_present, "0", "v{version} after a clean connection");
    assert_eq!(received(&after), [], "v{version}: messages left over from the discarded session");
}

#[test]
fn clean_session_discards_the_stored_session() {
    let broker = Broker::start();
    thread::scope(|scope| {
        for version in Version::ALL {
            let broker = &broker;
            scope.spawn(move || clean_session_discards(broker, version));
        }
    });
}

/// v3.1.1 CONNECT, client id "takeover-311", clean session, keep-alive 60 s.
const CONNECT_TAKEOVER_V311: &[u8] = &[
    0x10, 0x18, // CONNECT, remaining length 24
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x04, // protocol level 4 (3.1.1)
    0x02, // connect flags: clean session
    0x00, 0x3C, // keep-alive 60 s
    0x00, 0x0C, b't', b'a', b'k', b'e', b'o', b'v', b'e', b'r', b'-', b'3', b'1', b'1', // client id
];

/// v5 CONNECT, client id "takeover-5", clean start, keep-alive 60 s, no properties.
const CONNECT_TAKEOVER_V5: &[u8] = &[
    0x10, 0x17, // CONNECT, remaining length 23
    0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
    0x05, // protocol level 5
    0x02, // connect flags: clean start
    0x00, 0x3C, // keep-alive 60 s
    0x00, // properties: none
    0x00, 0x0A, b't', b'a', b'k', b'e', b'o', b'v', b'e', b'r', b'-', b'5', // client id
];

#[test]
fn a_second_connection_takes_over_the_client_id() {
    // The first connection is a raw socket rather than paho: paho 1.6.1 drops the reason code of
    // a DISCONNECT without properties, and a raw socket cannot reconnect behind the test's back.
    let broker = Broker::start();
    for (version, connect) in [(Version::V311, CONNECT_TAKEOVER_V311), (Version::V5, CONNECT_TAKEOVER_V5)] {
        let client_id = format!("takeover-{version}");
        let mut first = RawConnection::open(&broker);
        first.send(connect);
        let connack = first.expect_packet();
        assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "first CONNACK {connack:?}");

        let topic = format!("takeover/{version}");
        let mut second = subscriber(&broker, version).client_id(&client_id).topic(&topic).qos(1).start();

        let before_close = first.expect_closed();
        match version {
            // v3.1.1 has no server DISCONNECT: the socket just closes.
            Version::V311 => assert_eq!(before_close, [], "v3.1.1 first connection"),
            Version::V5 => {
                let [disconnect] = before_close.as_slice() else {
                    panic!("v5 first connection: expected one DISCONNECT, got {before_close:?}");
                };
                assert_eq!(disconnect.first_byte, 0xE0, "DISCONNECT expected, got {disconnect:?}");
                assert_eq!(disconnect.body.first(), Some(&0x8E), "reason: session taken over");
            }
        }

        publisher(&broker, version, &topic).qos(1).message("to the new owner").run();
        assert_eq!(second.expect_messages(1), [Message::new(&topic, "to the new owner", 1, false)]);
    }
    assert_still_serving(&broker);
}

#[test]
fn an_empty_client_id_gets_one_assigned() {
    let broker = Broker::start();
    for version in Version::ALL {
        let output = paho(&broker, "assigned_id.py", &[version.paho_name()]);
        let connacks = records(&output, "connack");
        assert_eq!(connacks.len(), 2, "v{version}: two CONNACKs");
        for connack in &connacks {
            assert_eq!(connack.field("reason"), "0", "v{version}: an empty client id is accepted");
        }
        if version == Version::V5 {
            let assigned: Vec<&str> = connacks.iter().map(|connack| connack.field("assigned")).collect();
            assert!(
                assigned.iter().all(|id| *id != "-" && !id.is_empty()),
                "v5 CONNACK carries an Assigned Client Identifier: {assigned:?}"
            );
            assert_ne!(assigned[0], assigned[1], "assigned identifiers are unique");
        }
        // Each client got the message it published to itself.
        let mut messages = received(&output);
        messages.sort();
        assert_eq!(
            messages,
            [
                Message::new("assigned/0", "hello-0", 1, false),
                Message::new("assigned/1", "hello-1", 1, false)
            ],
            "v{version}"
        );
    }
}

/// v3.1.1 CONNECT, clean session 0, keep-alive 60 s, client id `dup-1`.
const CONNECT_PERSISTENT_DUP: &[u8] = &[
    0x10, 0x11, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x3C, // header, clean session 0
    0x00, 0x05, b'd', b'u', b'p', b'-', b'1', // client id
];
/// SUBSCRIBE packet id 1 to `dup/t` at QoS 1.
const SUBSCRIBE_DUP_TOPIC: &[u8] = &[0x82, 0x0A, 0x00, 0x01, 0x00, 0x05, b'd', b'u', b'p', b'/', b't', 0x01];

#[test]
fn an_unacknowledged_delivery_is_resent_with_dup_and_its_packet_id_after_resuming() {
    let broker = Broker::start();
    let mut first = RawConnection::open(&broker);
    first.send(CONNECT_PERSISTENT_DUP);
    assert_eq!(first.expect_packet().body, [0x00, 0x00], "CONNACK, new session");
    first.send(SUBSCRIBE_DUP_TOPIC);
    let suback = first.expect_packet();
    assert_eq!((suback.first_byte, suback.body.as_slice()), (0x90, &[0x00, 0x01, 0x01][..]));

    publisher(&broker, Version::V311, "dup/t").qos(1).message("hello").run();
    let delivery = first.expect_packet();
    assert_eq!(delivery.first_byte, 0x32, "QoS 1 PUBLISH without DUP: {delivery:?}");
    let packet_id = [delivery.body[7], delivery.body[8]];
    assert_eq!(&delivery.body[9..], b"hello");
    drop(first); // gone without PUBACK

    let mut second = RawConnection::open(&broker);
    second.send(CONNECT_PERSISTENT_DUP);
    assert_eq!(second.expect_packet().body, [0x01, 0x00], "CONNACK, session present");
    let resent = second.expect_packet();
    assert_eq!(resent.first_byte, 0x3A, "QoS 1 PUBLISH with DUP [MQTT-4.4.0-1]: {resent:?}");
    assert_eq!([resent.body[7], resent.body[8]], packet_id, "the original packet id");
    assert_eq!(&resent.body[9..], b"hello");
    second.send(&[0x40, 0x02, packet_id[0], packet_id[1]]);
    // PINGREQ after the PUBACK: its PINGRESP proves the PUBACK was handled.
    second.send(&[0xC0, 0x00]);
    assert_eq!(second.expect_packet().first_byte, 0xD0, "PINGRESP");
    drop(second);

    // Acknowledged now: a third connection gets nothing again.
    let mut third = RawConnection::open(&broker);
    third.send(CONNECT_PERSISTENT_DUP);
    assert_eq!(third.expect_packet().body, [0x01, 0x00], "CONNACK, session present");
    assert!(
        matches!(third.receive(std::time::Duration::from_millis(700)), crate::support::Incoming::Silent),
        "an acknowledged message is not sent again"
    );
}
