//! Delivery at QoS 0, 1 and 2 in both directions and across protocol versions.

use crate::support::{Broker, Message, Version, paho, publisher, received, record, subscriber};

/// Subscribes at every QoS, publishes at every QoS, and checks that each subscriber gets each
/// message exactly once at the lower of the two QoS levels, with the payload intact.
fn every_qos_pair(publisher_version: Version, subscriber_version: Version) {
    let broker = Broker::start();
    let mut subscribers: Vec<_> = (0..=2_u8)
        .map(|subscription_qos| {
            subscriber(&broker, subscriber_version)
                .topic(&format!("qos/sub{subscription_qos}/+"))
                .qos(subscription_qos)
                .start()
        })
        .collect();
    for (subscription_qos, subscriber) in (0..=2_u8).zip(&subscribers) {
        assert_eq!(subscriber.granted(), [subscription_qos], "granted QoS");
    }

    for subscription_qos in 0..=2_u8 {
        for publication_qos in 0..=2_u8 {
            publisher(&broker, publisher_version, &format!("qos/sub{subscription_qos}/pub{publication_qos}"))
                .qos(publication_qos)
                .message(&format!("payload with spaces, sent at QoS {publication_qos}"))
                .run();
        }
    }

    for (subscription_qos, subscriber) in (0..=2_u8).zip(&mut subscribers) {
        // Sorted, because publications from different connections need not keep their order; a
        // duplicate would take the place of a later message.
        let mut got = subscriber.expect_messages(3);
        got.sort();
        let expected: Vec<_> = (0..=2_u8)
            .map(|publication_qos| {
                Message::new(
                    &format!("qos/sub{subscription_qos}/pub{publication_qos}"),
                    &format!("payload with spaces, sent at QoS {publication_qos}"),
                    publication_qos.min(subscription_qos),
                    false,
                )
            })
            .collect();
        assert_eq!(got, expected, "subscription at QoS {subscription_qos}");
    }
}

#[test]
fn every_qos_pair_round_trips_v311() {
    every_qos_pair(Version::V311, Version::V311);
}

#[test]
fn every_qos_pair_round_trips_v5() {
    every_qos_pair(Version::V5, Version::V5);
}

#[test]
fn messages_cross_protocol_versions() {
    let broker = Broker::start();
    for (from, to) in [(Version::V311, Version::V5), (Version::V5, Version::V311)] {
        let topic = format!("cross/{from}/{to}");
        let mut listener = subscriber(&broker, to).topic(&topic).qos(2).start();
        publisher(&broker, from, &topic).qos(2).message("exactly once").run();
        // A marker published after the message: a duplicate of the QoS 2 message would show up
        // before it.
        publisher(&broker, from, &topic).qos(2).message("marker").run();
        assert_eq!(
            listener.expect_messages(2),
            [Message::new(&topic, "exactly once", 2, false), Message::new(&topic, "marker", 2, false)],
            "v{from} publisher to v{to} subscriber"
        );
    }
}

/// Two paho publishers, one at QoS 1 and one at QoS 2, each send 200 numbered messages at once
/// to a QoS 2 subscriber: every message arrives once, in each publisher's order.
fn many_messages(version: Version) {
    const COUNT: usize = 200;
    let broker = Broker::start();
    let records = paho(&broker, "bulk.py", &[version.paho_name(), &COUNT.to_string()]);

    assert_eq!(record(&records, "granted").field("qos"), "2", "granted QoS of the subscription");
    let done = record(&records, "done");
    assert_eq!(done.field("acked_qos1"), COUNT.to_string(), "PUBACKs received by the QoS 1 publisher");
    assert_eq!(done.field("acked_qos2"), COUNT.to_string(), "PUBCOMPs received by the QoS 2 publisher");

    let messages = received(&records);
    let expected: Vec<String> = (0..COUNT).map(|number| number.to_string()).collect();
    for qos in [1_u8, 2] {
        let topic = format!("bulk/{qos}");
        let stream: Vec<&Message> = messages.iter().filter(|message| message.topic == topic).collect();
        let payloads: Vec<&str> = stream.iter().map(|message| message.payload.as_str()).collect();
        assert_eq!(payloads, expected, "payloads from the QoS {qos} publisher, in arrival order");
        assert!(
            stream.iter().all(|message| message.qos == qos && !message.retain),
            "QoS {qos} publications are delivered at QoS {qos}, not retained"
        );
    }
    assert_eq!(messages.len(), 2 * COUNT, "no message on another topic");
}

#[test]
fn many_qos1_and_qos2_messages_arrive_once_in_order_v311() {
    many_messages(Version::V311);
}

#[test]
fn many_qos1_and_qos2_messages_arrive_once_in_order_v5() {
    many_messages(Version::V5);
}
