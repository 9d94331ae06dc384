//! Items 3 and 4: what the server answers and why it hangs up. Raw: paho 1.6.1 hides the
//! reason codes of PUBACK, PUBREC, PUBREL and PUBCOMP, and drops a DISCONNECT's reason code
//! when no properties follow it.

use crate::paho::Clients;
use crate::raw::{
    self, CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, QOS1, QOS2, Raw, SUBACK, UNSUBACK, property,
};
use crate::topology::Topology;
use std::time::{Duration, Instant};

/// Item 3: every acknowledgement carries a reason code (CONNACK, PUBACK, PUBREC, PUBREL,
/// PUBCOMP, SUBACK, UNSUBACK, DISCONNECT; AUTH is item 14's), refusals carry a reason string
/// and the stable error code as the user property `error`, and a client that sets Request
/// Problem Information to 0 gets neither.
pub(crate) fn item_03_reason_codes(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());

    // CONNACK: a refused CONNECT says why (client identifiers may not contain '/').
    let mut refused = Raw::open(first);
    refused.send(&raw::connect("item3/client", 60, &[]));
    let connack = refused.expect(CONNACK);
    assert_eq!(connack.reason_code(), 0x85, "client identifier not valid");
    let properties = connack.properties();
    assert_eq!(properties.text(property::REASON_STRING), Some("client identifier not valid"), "{connack:?}");
    assert_eq!(properties.user("error"), Some("protocol_violation"), "{connack:?}");

    let (mut client, _) = Raw::connected(first, &raw::connect("acker", 60, &[]));
    let acknowledged = |packet: raw::Packet| (packet.packet_id(), packet.reason_code());

    // PUBACK 0x10 while nobody subscribes, 0x00 once someone does (on the other endpoint).
    client.send(&raw::publish(QOS1, "item3/topic", 1, &[], b"unheard"));
    assert_eq!(acknowledged(client.expect(PUBACK)), (1, 0x10), "no matching subscribers");
    let mut clients = Clients::start();
    clients.connect("listener", second, &[]);
    clients.subscribe("listener", "item3/topic", &["qos=1"]);
    client.send(&raw::publish(QOS1, "item3/topic", 2, &[], b"heard"));
    assert_eq!(acknowledged(client.expect(PUBACK)), (2, 0x00), "success");
    assert_eq!(clients.expect_message("listener").payload(), "heard");

    // PUBREC 0x10, then PUBCOMP 0x00 for its PUBREL; PUBCOMP 0x92 for a PUBREL of an unknown
    // packet identifier, PUBREL 0x92 for a PUBREC of one the server never used.
    client.send(&raw::publish(QOS2, "item3/nobody", 3, &[], b"unheard"));
    assert_eq!(acknowledged(client.expect(PUBREC)), (3, 0x10), "no matching subscribers");
    client.send(&raw::ack(PUBREL, 3));
    assert_eq!(acknowledged(client.expect(PUBCOMP)), (3, 0x00), "success");
    client.send(&raw::ack(PUBREL, 99));
    let pubcomp = client.expect(PUBCOMP);
    assert_eq!(acknowledged(pubcomp.clone()), (99, 0x92), "packet identifier not found");
    // Errors carry the stable error code as the user property `error`, beside the reason string.
    assert_eq!(pubcomp.properties().user("error"), Some("not_found"), "{pubcomp:?}");
    client.send(&raw::ack(PUBREC, 98));
    assert_eq!(acknowledged(client.expect(PUBREL)), (98, 0x92), "packet identifier not found");

    // PUBACK and PUBREC 0x90 with a reason string: clients may not publish to $-topics.
    client.send(&raw::publish(QOS1, "$SYS/item3", 4, &[], b"refused"));
    let puback = client.expect(PUBACK);
    assert_eq!(acknowledged(puback.clone()), (4, 0x90), "topic name invalid");
    assert!(puback.properties().has(property::REASON_STRING), "no reason string: {puback:?}");
    assert_eq!(puback.properties().user("error"), Some("topic_name_invalid"), "{puback:?}");
    client.send(&raw::publish(QOS2, "$SYS/item3", 5, &[], b"refused"));
    let pubrec = client.expect(PUBREC);
    assert_eq!(acknowledged(pubrec.clone()), (5, 0x90), "topic name invalid");
    assert!(pubrec.properties().has(property::REASON_STRING), "no reason string: {pubrec:?}");

    // SUBACK: the granted QoS per filter, a shared subscription's too (refusal codes in
    // SUBACK are item 13's).
    let filters = [("item3/a", 0x00), ("item3/b", 0x01), ("item3/c", 0x02), ("$share/group/item3", 0x01)];
    client.send(&raw::subscribe(6, &[], &filters));
    let suback = client.expect(SUBACK);
    assert_eq!((suback.packet_id(), suback.reason_codes()), (6, vec![0x00, 0x01, 0x02, 0x01]));

    // UNSUBACK: 0x00, and 0x11 for a filter that had no subscription.
    client.send(&raw::unsubscribe(7, &["item3/a", "item3/never"]));
    let unsuback = client.expect(UNSUBACK);
    assert_eq!((unsuback.packet_id(), unsuback.reason_codes()), (7, vec![0x00, 0x11]));

    // DISCONNECT with a reason code and a reason string: a second CONNECT is a protocol error.
    client.send(&raw::connect("acker", 60, &[]));
    let disconnect = client.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x82, "protocol error: {disconnect:?}");
    assert!(disconnect.properties().has(property::REASON_STRING), "no reason string: {disconnect:?}");

    // Request Problem Information 0: the same refusal, without a reason string [MQTT-3.1.2-29].
    let (mut quiet, _) =
        Raw::connected(first, &raw::connect("quiet", 60, &[property::REQUEST_PROBLEM_INFORMATION, 0x00]));
    quiet.send(&raw::publish(QOS1, "$SYS/item3", 1, &[], b"refused"));
    let puback = quiet.expect(PUBACK);
    assert_eq!(acknowledged(puback.clone()), (1, 0x90), "topic name invalid");
    assert_eq!(puback.properties(), raw::Properties::default(), "problem information was sent");
}

/// Item 4: the server says why it ends a connection: 0x8E session taken over (by a connection
/// on the other gateway), 0x95 packet too large, 0x8D keep-alive timeout, 0x8B shutting down.
/// 0x9C with a Server Reference is [`item_04_server_sent_disconnect_with_server_reference`].
pub(crate) fn item_04_server_sent_disconnect(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());

    // Keep-alive 1 s and then silence; its 1.5 s run while the other cases do.
    let idle_since = Instant::now();
    let (mut idle, _) = Raw::connected(first, &raw::connect("idle", 1, &[]));

    // 0x8E: the same client identifier connects on the other endpoint.
    let (mut taken, _) = Raw::connected(first, &raw::connect("twin", 60, &[]));
    let (_twin, _) = Raw::connected(second, &raw::connect("twin", 60, &[]));
    let disconnect = taken.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x8E, "session taken over: {disconnect:?}");

    // 0x95: a fixed header announcing more than the Maximum Packet Size the CONNACK announced.
    let (mut large, connack) = Raw::connected(first, &raw::connect("large", 60, &[]));
    let maximum = connack.properties().number(property::MAXIMUM_PACKET_SIZE).expect("announced");
    large.send(&[&[PUBLISH | QOS1][..], &raw::variable(maximum)].concat()); // PUBLISH, Remaining Length
    let disconnect = large.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x95, "packet too large: {disconnect:?}");

    // 0x8D: nothing arrived for one and a half times the keep-alive [MQTT-3.1.2-22].
    let disconnect = idle.expect_disconnect();
    let after = idle_since.elapsed();
    assert_eq!(disconnect.reason_code(), 0x8D, "keep alive timeout: {disconnect:?}");
    assert!(after >= Duration::from_millis(1500), "closed after {after:?}, before 1.5 keep-alives");

    // 0x8B: the process serving the connection shuts down.
    let (mut staying, _) = Raw::connected(first, &raw::connect("staying", 60, &[]));
    topology.shut_down_first();
    let disconnect = staying.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x8B, "server shutting down: {disconnect:?}");
}

/// Item 4, with `server_reference` set: shutting down sends clients elsewhere, 0x9C with the
/// Server Reference.
pub(crate) fn item_04_server_sent_disconnect_with_server_reference(topology: &Topology) {
    let (mut staying, _) = Raw::connected(topology.first(), &raw::connect("staying", 60, &[]));
    topology.shut_down_first();
    let disconnect = staying.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x9C, "use another server: {disconnect:?}");
    let reference = disconnect.properties().text(property::SERVER_REFERENCE).map(str::to_owned);
    assert_eq!(reference.as_deref(), Some("other:1883"), "{disconnect:?}");
}

/// Item 4, with `server_moved` set: the server has moved for good. A v5 CONNECT gets CONNACK
/// 0x9D with the Server Reference; a v3.1.1 CONNECT gets 0x03 (server unavailable).
pub(crate) fn item_04_server_moved(topology: &Topology) {
    let mut moved = Raw::open(topology.first());
    moved.send(&raw::connect("item4-moved", 60, &[]));
    let connack = moved.expect(CONNACK);
    assert_eq!(connack.reason_code(), 0x9D, "server moved: {connack:?}");
    let reference = connack.properties().text(property::SERVER_REFERENCE).map(str::to_owned);
    assert_eq!(reference.as_deref(), Some("moved:1883"), "{connack:?}");

    let mut old = Raw::open(topology.second());
    let body = [raw::utf8("MQTT"), vec![0x04, 0x02, 0x00, 0x3C], raw::utf8("item4-v311")].concat();
    old.send(&raw::packet(raw::CONNECT, &body));
    let connack = old.expect(CONNACK);
    assert_eq!(connack.body, [0x00, 0x03], "v3.1.1: server unavailable");
}
