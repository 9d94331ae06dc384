//! Items 9, 10, 12 and 13: what each side may send the other, and what the server announces.

use crate::paho::Clients;
use crate::raw::{self, CONNACK, PUBACK, PUBLISH, PUBREC, QOS1, QOS2, RETAIN, Raw, SUBACK, property};
use crate::topology::Topology;
use std::collections::HashMap;
use std::time::Duration;

/// How long a raw client waits to conclude that no further packet comes.
const QUIET: Duration = Duration::from_millis(500);

/// Item 9: topic aliases both ways. Inbound, an alias set by a PUBLISH with a topic stands for
/// it in later ones, and one above our Topic Alias Maximum closes with 0x94. Outbound, within
/// the client's maximum, a repeated topic goes out as an empty topic plus its alias, and the
/// least recently used alias is reassigned when all are taken.
pub(crate) fn item_09_topic_aliases_both_ways(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();

    // Inbound, from paho: the second PUBLISH has an empty topic.
    clients.connect("reader", second, &[]);
    clients.subscribe("reader", "item9/in", &["qos=1"]);
    clients.connect("writer", first, &[]);
    clients.publish("writer", "item9/in", "named", &["qos=1", "topic_alias=1"]);
    clients.publish("writer", "", "aliased", &["qos=1", "topic_alias=1"]);
    let received = clients.expect_messages("reader", 2);
    let topics: Vec<_> = received.iter().map(|m| (m.field("topic"), m.payload())).collect();
    assert_eq!(topics, [("item9/in", "named"), ("item9/in", "aliased")]);

    // Inbound, raw: paho will not send an alias above the maximum.
    let (mut bold, connack) = Raw::connected(first, &raw::connect("bold", 60, &[]));
    let maximum = connack.properties().number(property::TOPIC_ALIAS_MAXIMUM).expect("announced");
    let alias = u16::try_from(maximum + 1).expect("small maximum").to_be_bytes();
    bold.send(&raw::publish(QOS1, "item9/in", 1, &[property::TOPIC_ALIAS, alias[0], alias[1]], b"x"));
    let disconnect = bold.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x94, "topic alias invalid: {disconnect:?}");

    // Outbound, raw: paho 1.6.1 resolves no aliases, and the wire is the point. The client
    // accepts 2 aliases.
    let (mut compact, _) =
        Raw::connected(first, &raw::connect("compact", 60, &[property::TOPIC_ALIAS_MAXIMUM, 0x00, 0x02]));
    compact.send(&raw::subscribe(1, &[], &[("item9/out/+", 0x00)]));
    assert_eq!(compact.expect(SUBACK).reason_codes(), [0x00]);
    let sequence = ["a", "a", "b", "c", "a"];
    for (n, topic) in sequence.iter().enumerate() {
        clients.publish("writer", &format!("item9/out/{topic}"), &n.to_string(), &["qos=1"]);
    }
    let mut table: HashMap<u32, String> = HashMap::new();
    let mut wire = Vec::new();
    for (n, published) in sequence.iter().enumerate() {
        let publication = compact.expect(PUBLISH).publish();
        assert_eq!(publication.payload, n.to_string().as_bytes(), "in order: {publication:?}");
        let alias = publication.properties.number(property::TOPIC_ALIAS);
        let topic = match alias {
            Some(alias) if publication.topic.is_empty() => table.get(&alias).cloned().expect("a known alias"),
            Some(alias) => {
                table.insert(alias, publication.topic.clone());
                publication.topic.clone()
            }
            None => publication.topic.clone(),
        };
        assert_eq!(topic, format!("item9/out/{published}"), "resolves to the published topic");
        wire.push((publication.topic, alias));
    }
    let full = |topic: &str, alias: u32| (format!("item9/out/{topic}"), Some(alias));
    let short = |alias: u32| (String::new(), Some(alias));
    assert_eq!(
        wire,
        [full("a", 1), short(1), full("b", 2), full("c", 1), full("a", 2)],
        "a repeated topic is sent as its alias; the least recently used alias is reassigned"
    );
}

/// Item 10: flow control both ways. Inbound, more unacknowledged QoS 2 publishes than our
/// Receive Maximum close with 0x93. Outbound, no more QoS 1 deliveries are in flight than the
/// client's Receive Maximum; the rest wait for PUBACKs, in order.
pub(crate) fn item_10_flow_control(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());

    // Inbound: QoS 2 publishes stay unacknowledged until their PUBREL, which never comes.
    let (mut eager, connack) = Raw::connected(first, &raw::connect("eager", 60, &[]));
    let maximum = connack.properties().number(property::RECEIVE_MAXIMUM).expect("announced");
    let maximum = u16::try_from(maximum).expect("two bytes");
    let burst: Vec<u8> =
        (1..=maximum).flat_map(|id| raw::publish(QOS2, "item10/in", id, &[], b"x")).collect();
    eager.send(&burst);
    for id in 1..=maximum {
        assert_eq!(eager.expect(PUBREC).packet_id(), id);
    }
    eager.send(&raw::publish(QOS2, "item10/in", maximum + 1, &[], b"one too many"));
    let disconnect = eager.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x93, "receive maximum exceeded: {disconnect:?}");

    // Outbound: a client that takes 2 at a time.
    let (mut slow, _) =
        Raw::connected(first, &raw::connect("slow", 60, &[property::RECEIVE_MAXIMUM, 0x00, 0x02]));
    slow.send(&raw::subscribe(1, &[], &[("item10/out", 0x01)]));
    assert_eq!(slow.expect(SUBACK).reason_codes(), [0x01]);
    let mut clients = Clients::start();
    clients.connect("writer", second, &[]);
    for n in 1..=5 {
        clients.publish("writer", "item10/out", &format!("m{n}"), &["qos=1"]);
    }
    let next = |slow: &mut Raw| {
        let publication = slow.expect(PUBLISH).publish();
        (String::from_utf8_lossy(&publication.payload).into_owned(), publication.packet_id)
    };
    let (m1, id1) = next(&mut slow);
    let (m2, id2) = next(&mut slow);
    assert_eq!((m1.as_str(), m2.as_str()), ("m1", "m2"));
    slow.expect_silence(QUIET);
    slow.send(&raw::ack(PUBACK, id1));
    let (m3, id3) = next(&mut slow);
    assert_eq!(m3, "m3");
    slow.expect_silence(QUIET);
    slow.send(&[raw::ack(PUBACK, id2), raw::ack(PUBACK, id3)].concat());
    let (m4, _) = next(&mut slow);
    let (m5, _) = next(&mut slow);
    assert_eq!((m4.as_str(), m5.as_str()), ("m4", "m5"));
}

/// Item 12: the maximum packet size both ways. Ours: a packet of exactly the size the CONNACK
/// announced is accepted, and a fixed header announcing one byte more closes with 0x95
/// before the body is sent. The client's: a message larger than it accepts is not sent to it
/// (dropped), and the next one that fits is.
pub(crate) fn item_12_maximum_packet_size(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let (mut client, connack) = Raw::connected(first, &raw::connect("sizer", 60, &[]));
    let maximum = connack.properties().number(property::MAXIMUM_PACKET_SIZE).expect("announced");
    assert_packet_size_limit(&mut client, maximum);

    // The client accepts packets of 64 bytes at most.
    let (mut small, _) = Raw::connected(
        first,
        &raw::connect("small", 60, &[property::MAXIMUM_PACKET_SIZE, 0x00, 0x00, 0x00, 0x40]),
    );
    small.send(&raw::subscribe(1, &[], &[("item12/out", 0x01)]));
    assert_eq!(small.expect(SUBACK).reason_codes(), [0x01]);
    let mut clients = Clients::start();
    clients.connect("writer", second, &[]);
    clients.publish("writer", "item12/out", &"x".repeat(100), &["qos=1"]);
    clients.publish("writer", "item12/out", "fits", &["qos=1"]);
    let packet = small.expect(PUBLISH);
    assert!(packet.wire_size() <= 64, "{} bytes sent to a 64-byte client", packet.wire_size());
    assert_eq!(packet.publish().payload, b"fits", "the large message was sent: {packet:?}");
}

/// Item 12, with `max_packet_size` set to 1024: the CONNACK announces it and the limit is
/// enforced at it.
pub(crate) fn item_12_configured_maximum_packet_size(topology: &Topology) {
    let (mut client, connack) = Raw::connected(topology.first(), &raw::connect("sizer", 60, &[]));
    assert_eq!(connack.properties().number(property::MAXIMUM_PACKET_SIZE), Some(1024), "{connack:?}");
    assert_packet_size_limit(&mut client, 1024);
}

/// Sends a QoS 1 PUBLISH of exactly `maximum` bytes, which must be acknowledged, then the
/// fixed header of one with a body a byte longer, which must close the connection with 0x95.
fn assert_packet_size_limit(client: &mut Raw, maximum: u32) {
    let topic = "item12/in";
    // The Remaining Length whose packet, fixed header included, is exactly `maximum` bytes.
    let remaining = (1..=4)
        .map(|length_bytes| maximum - 1 - length_bytes)
        .find(|remaining| raw::variable(*remaining).len() == (maximum - 1 - remaining) as usize)
        .expect("a Remaining Length that fits");
    // Topic (2 + its length), packet identifier (2), empty properties (1), then the payload.
    let payload = vec![b'x'; (remaining as usize) - 2 - topic.len() - 2 - 1];
    let exact = raw::publish(QOS1, topic, 1, &[], &payload);
    assert_eq!(exact.len(), maximum as usize, "the packet is exactly the maximum");
    client.send(&exact);
    let puback = client.expect(PUBACK);
    assert!(puback.reason_code() < 0x80, "a packet of the maximum size was refused: {puback:?}");

    client.send(&[&[PUBLISH | QOS1][..], &raw::variable(remaining + 1)].concat()); // PUBLISH, Remaining Length
    let disconnect = client.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x95, "packet too large: {disconnect:?}");
}

/// Item 13: the CONNACK announces the server's capabilities (here the defaults: receive
/// maximum, maximum packet size, topic alias maximum; maximum QoS 2, retain, wildcards,
/// subscription identifiers and shared subscriptions available, so left out), the assigned
/// client identifier and a capped session expiry; a shared subscription is granted.
/// [`item_13_configured_server_capabilities`] changes each one.
pub(crate) fn item_13_server_capabilities(topology: &Topology) {
    // An empty client identifier and the largest session expiry.
    let connect = raw::connect("", 60, &[property::SESSION_EXPIRY_INTERVAL, 0xFF, 0xFF, 0xFF, 0xFF]);
    let (mut client, connack) = Raw::connected(topology.first(), &connect);
    let announced = connack.properties();
    let number = |id| announced.number(id);
    assert_eq!(number(property::RECEIVE_MAXIMUM), Some(128), "{connack:?}");
    assert_eq!(number(property::MAXIMUM_PACKET_SIZE), Some(1_048_576), "{connack:?}");
    assert_eq!(number(property::TOPIC_ALIAS_MAXIMUM), Some(64), "{connack:?}");
    assert_eq!(number(property::SESSION_EXPIRY_INTERVAL), Some(604_800), "capped: {connack:?}");
    let assigned = announced.text(property::ASSIGNED_CLIENT_IDENTIFIER).unwrap_or_default();
    assert!(!assigned.is_empty(), "no assigned client identifier: {connack:?}");
    for absent in [
        property::MAXIMUM_QOS,
        property::RETAIN_AVAILABLE,
        property::WILDCARD_SUBSCRIPTION_AVAILABLE,
        property::SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        property::SHARED_SUBSCRIPTION_AVAILABLE,
        property::SERVER_KEEP_ALIVE,
    ] {
        assert!(!announced.has(absent), "property {absent:#04x} announced at its default: {connack:?}");
    }
    client.send(&raw::subscribe(1, &[], &[("$share/group/item13", 0x01)]));
    assert_eq!(client.expect(SUBACK).reason_codes(), [0x01], "shared subscriptions are available");
}

/// Item 13, with every capability configured away from its default: the CONNACK announces
/// each, and a client that uses one it lacks gets the matching reason code.
pub(crate) fn item_13_configured_server_capabilities(topology: &Topology) {
    let first = topology.first();
    let connect = |client_id: &str| {
        raw::connect(client_id, 60, &[property::SESSION_EXPIRY_INTERVAL, 0x00, 0x00, 0x0E, 0x10])
    };
    let (mut client, connack) = Raw::connected(first, &connect("capable"));
    let announced = connack.properties();
    let expected = [
        (property::MAXIMUM_QOS, 1),
        (property::RETAIN_AVAILABLE, 0),
        (property::WILDCARD_SUBSCRIPTION_AVAILABLE, 0),
        (property::SUBSCRIPTION_IDENTIFIER_AVAILABLE, 0),
        (property::SERVER_KEEP_ALIVE, 5),
        (property::RECEIVE_MAXIMUM, 10),
        (property::TOPIC_ALIAS_MAXIMUM, 3),
        (property::MAXIMUM_PACKET_SIZE, 2048),
        (property::SESSION_EXPIRY_INTERVAL, 100),
        (property::SHARED_SUBSCRIPTION_AVAILABLE, 0),
    ];
    for (id, value) in expected {
        assert_eq!(announced.number(id), Some(value), "property {id:#04x}: {connack:?}");
    }

    // SUBACK 0xA2 for a wildcard, 0x9E for a shared subscription; a subscription asking QoS 2
    // is granted the maximum, 1.
    let filters = [("item13/+", 0x01), ("item13/exact", 0x02), ("$share/g/item13", 0x01)];
    client.send(&raw::subscribe(1, &[], &filters));
    assert_eq!(client.expect(SUBACK).reason_codes(), [0xA2, 0x01, 0x9E]);
    // DISCONNECT 0xA1 for a subscription identifier.
    client.send(&raw::subscribe(2, &[property::SUBSCRIPTION_IDENTIFIER, 0x07], &[("item13/exact", 0x01)]));
    assert_eq!(client.expect_disconnect().reason_code(), 0xA1, "subscription identifiers not supported");

    // DISCONNECT 0x9B for QoS 2, 0x9A for RETAIN.
    let (mut client, _) = Raw::connected(first, &connect("qos2"));
    client.send(&raw::publish(QOS2, "item13/exact", 1, &[], b"x"));
    assert_eq!(client.expect_disconnect().reason_code(), 0x9B, "QoS not supported");
    let (mut client, _) = Raw::connected(first, &connect("retainer"));
    client.send(&raw::publish(QOS1 | RETAIN, "item13/exact", 1, &[], b"x"));
    assert_eq!(client.expect_disconnect().reason_code(), 0x9A, "retain not supported");

    // CONNACK 0x9B and 0x9A for a will the server could not publish [MQTT-3.2.2-12, -15].
    for (flags, reason) in [(0x16, 0x9B), (0x26, 0x9A)] {
        let will_connect = raw::packet(
            raw::CONNECT,
            &[
                raw::utf8("MQTT"),    // protocol name
                vec![0x05],           // protocol level 5
                vec![flags],          // clean start, will; will QoS 2 (0x16) or will retain (0x26)
                vec![0x00, 0x3C],     // keep alive 60 s
                raw::properties(&[]), // CONNECT properties
                raw::utf8("testator"),
                raw::properties(&[]), // will properties
                raw::utf8("item13/will"),
                raw::utf8("gone"), // will payload (two-byte length, then bytes)
            ]
            .concat(),
        );
        let mut testator = Raw::open(first);
        testator.send(&will_connect);
        assert_eq!(testator.expect(CONNACK).reason_code(), reason, "will flags {flags:#04x}");
    }
}

/// A client publishing past `limits.max_publish_rate` (here 5 a second, a burst of 5) gets
/// DISCONNECT 0x96 (message rate too high); one within it is left alone.
pub(crate) fn configured_publish_rate(topology: &Topology) {
    let (mut calm, _) = Raw::connected(topology.first(), &raw::connect("calm", 60, &[]));
    for id in 1..=5 {
        calm.send(&raw::publish(QOS1, "rate/calm", id, &[], b"x"));
        assert!(calm.expect(PUBACK).reason_code() < 0x80);
    }
    let (mut eager, _) = Raw::connected(topology.second(), &raw::connect("eager", 60, &[]));
    for _ in 0..6 {
        eager.send(&raw::publish(0, "rate/eager", 0, &[], b"x"));
    }
    let disconnect = eager.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x96, "{disconnect:?}");
    // The calm one, a second later, has its budget back.
    std::thread::sleep(Duration::from_millis(1100));
    calm.send(&raw::publish(QOS1, "rate/calm", 6, &[], b"x"));
    assert!(calm.expect(PUBACK).reason_code() < 0x80);
}
