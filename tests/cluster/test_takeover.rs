//! A persistent session resumed on another gateway gets its QoS 2 messages
//! under the same packet ids [MQTT-4.4.0-1], so a message the client
//! already has gets its PUBREL again, not a second PUBLISH: when its
//! connection is taken over from a live gateway (the router waits for the
//! old connection's release, ADR 0030), and when its gateway is killed
//! (the gateway reported the packet ids to the router as it went).

use crate::cluster::Cluster;
use crate::raw::{QOS1, QOS2, ack, publish, subscribe};
use crate::support::{Incoming, Packet, RawConnection, connect_v5};
use std::time::Duration;

/// The payload, QoS, packet id and DUP flag of a PUBLISH read raw.
fn delivery(packet: &Packet) -> (String, u8, u16, bool) {
    assert_eq!(packet.first_byte & 0xF0, 0x30, "a PUBLISH: {packet:?}");
    let publication =
        crate::raw::Packet { first_byte: packet.first_byte, body: packet.body.clone() }.publish();
    let payload = String::from_utf8(publication.payload).expect("utf-8 payload");
    (payload, publication.qos, publication.packet_id, packet.first_byte & 0x08 != 0)
}

/// The packet id of an acknowledgement read raw.
fn acked_id(packet: &Packet) -> u16 {
    u16::from_be_bytes([packet.body[0], packet.body[1]])
}

/// Publishes `payload` to `topic` at QoS `qos` (1 or 2) and completes the flow.
fn send(publisher: &mut RawConnection, qos: u8, topic: &str, packet_id: u16, payload: &str) {
    publisher.send(&publish(if qos == 2 { QOS2 } else { QOS1 }, topic, packet_id, &[], payload.as_bytes()));
    if qos == 1 {
        assert_eq!(publisher.expect_packet().first_byte, 0x40, "PUBACK");
        return;
    }
    assert_eq!(publisher.expect_packet().first_byte, 0x50, "PUBREC");
    publisher.send(&ack(0x62, packet_id));
    assert_eq!(publisher.expect_packet().first_byte, 0x70, "PUBCOMP");
}

/// A device on gateway 0 with two QoS 2 messages in flight: one it has
/// (PUBREC sent, PUBREL received, no PUBCOMP) and one it never answered.
/// Returns the device's connection and the two packet ids.
fn device_with_qos2_in_flight(cluster: &Cluster) -> (RawConnection, u16, u16) {
    let mut device = RawConnection::open(&cluster.gateway(0));
    device.send(&connect_v5("roamer", 3600, true, None));
    assert_eq!(device.expect_packet().first_byte, 0x20, "CONNACK");
    device.send(&subscribe(1, &[], &[("roam/#", 2)]));
    assert_eq!(device.expect_packet().first_byte, 0x90, "SUBACK");
    let mut publisher = RawConnection::open(&cluster.gateway(1));
    publisher.send(&connect_v5("sender", 0, true, None));
    assert_eq!(publisher.expect_packet().first_byte, 0x20, "CONNACK");

    // Two messages acknowledged, so the next packet ids are not the first
    // ones a fresh connection would pick.
    for (n, payload) in ["warm-1", "warm-2"].into_iter().enumerate() {
        send(&mut publisher, 1, "roam/a", n as u16 + 1, payload);
        let (got, _, packet_id, _) = delivery(&device.expect_packet());
        assert_eq!(got, payload);
        device.send(&ack(0x40, packet_id));
    }
    // A QoS 2 message the device has (its PUBREC is in, the PUBREL is
    // out, the PUBCOMP never comes) and one it has not acknowledged at all.
    send(&mut publisher, 2, "roam/b", 3, "exactly-once");
    let (got, qos, had, _) = delivery(&device.expect_packet());
    assert_eq!((got.as_str(), qos), ("exactly-once", 2));
    device.send(&ack(0x50, had));
    let pubrel = device.expect_packet();
    assert_eq!((pubrel.first_byte, acked_id(&pubrel)), (0x62, had), "PUBREL");
    send(&mut publisher, 2, "roam/c", 4, "unanswered");
    let (got, _, unanswered, dup) = delivery(&device.expect_packet());
    assert_eq!((got.as_str(), dup), ("unanswered", false));
    assert!(had > 2 && unanswered > 2, "packet ids {had}, {unanswered} are not a fresh connection's first");
    (device, had, unanswered)
}

/// Expects, on a resumed connection, PUBREL `had` and the PUBLISH of
/// `unanswered` again (DUP, same id), completes both, and then silence.
fn expect_resumed_under_the_same_ids(again: &mut RawConnection, had: u16, unanswered: u16) {
    // The message the device has: PUBREL again, under its packet id.
    let pubrel = again.expect_packet();
    assert_eq!((pubrel.first_byte, acked_id(&pubrel)), (0x62, had), "PUBREL again, not a second PUBLISH");
    // The one it never answered: again, with DUP, under its packet id.
    let (got, qos, packet_id, dup) = delivery(&again.expect_packet());
    assert_eq!((got.as_str(), qos, packet_id, dup), ("unanswered", 2, unanswered, true));
    again.send(&ack(0x70, had));
    again.send(&ack(0x50, unanswered));
    let pubrel = again.expect_packet();
    assert_eq!((pubrel.first_byte, acked_id(&pubrel)), (0x62, unanswered));
    again.send(&ack(0x70, unanswered));
    assert!(matches!(again.receive(Duration::from_secs(1)), Incoming::Silent), "nothing else");
}

#[test]
fn a_session_taken_over_from_a_live_gateway_resumes_under_the_same_packet_ids() {
    let cluster = Cluster::start(2);
    let (mut device, had, unanswered) = device_with_qos2_in_flight(&cluster);

    // The same client connects through the other gateway while the first
    // still holds its connection.
    let mut again = RawConnection::open(&cluster.gateway(1));
    again.send(&connect_v5("roamer", 3600, false, None));
    let connack = again.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x01), "CONNACK, session present");
    let last_words = device.expect_closed();
    assert!(
        last_words.iter().any(|p| p.first_byte == 0xE0 && p.body.first() == Some(&0x8E)),
        "the old connection is told it was taken over: {last_words:?}"
    );
    expect_resumed_under_the_same_ids(&mut again, had, unanswered);
}

#[test]
fn a_killed_gateways_client_gets_its_qos2_messages_under_the_same_packet_ids() {
    let mut cluster = Cluster::start(2);
    let (_device, had, unanswered) = device_with_qos2_in_flight(&cluster);
    // The gateway reports how far QoS 2 messages got every 20 ms or so.
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill_gateway(0);

    let mut again = RawConnection::open(&cluster.gateway(1));
    again.send(&connect_v5("roamer", 3600, false, None));
    let connack = again.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x01), "CONNACK, session present");
    expect_resumed_under_the_same_ids(&mut again, had, unanswered);
}
