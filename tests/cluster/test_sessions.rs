//! Sessions move between gateways: resumption, takeover.

use crate::cluster::Cluster;
use crate::support::{Message, RawConnection, Version, publisher, subscriber};

#[test]
fn a_persistent_session_resumes_on_the_other_gateway_with_its_queue() {
    let cluster = Cluster::start(2);
    for version in Version::ALL {
        let client = format!("mover-{version}");
        let topic = format!("inbox/{version}");
        subscriber(&cluster.gateway(0), version)
            .client_id(&client)
            .persistent()
            .topic(&topic)
            .qos(1)
            .exit_after_subscribe()
            .start();
        for n in 0..3 {
            publisher(&cluster.gateway(1), version, &topic).qos(1).message(&format!("m{n}")).run();
        }
        let mut back = subscriber(&cluster.gateway(1), version)
            .client_id(&client)
            .persistent()
            .topic(&topic)
            .qos(1)
            .start();
        let expected: Vec<Message> =
            (0..3).map(|n| Message::new(&topic, &format!("m{n}"), 1, false)).collect();
        assert_eq!(back.expect_messages(3), expected, "v{version}");
    }
}

/// v5 CONNECT, clean start, keep-alive 60 s, client id `roamer`.
const CONNECT_ROAMER_V5: &[u8] = &[
    0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C,
    0x00, // header, no properties
    0x00, 0x06, b'r', b'o', b'a', b'm', b'e', b'r',
];

#[test]
fn the_same_client_id_on_another_gateway_takes_the_session_over() {
    let cluster = Cluster::start(2);
    let mut first = RawConnection::open(&cluster.gateway(0));
    first.send(CONNECT_ROAMER_V5);
    let connack = first.expect_packet();
    assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "CONNACK {connack:?}");

    let mut second =
        subscriber(&cluster.gateway(1), Version::V5).client_id("roamer").topic("roam/t").qos(1).start();
    let closed = first.expect_closed();
    let [disconnect] = closed.as_slice() else { panic!("expected one DISCONNECT, got {closed:?}") };
    assert_eq!((disconnect.first_byte, disconnect.body.first()), (0xE0, Some(&0x8E)), "session taken over");

    publisher(&cluster.gateway(0), Version::V5, "roam/t").qos(1).message("to the new owner").run();
    assert_eq!(second.expect_messages(1), [Message::new("roam/t", "to the new owner", 1, false)]);
}
