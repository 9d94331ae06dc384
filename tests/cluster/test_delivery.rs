//! Publishes on one gateway reach subscribers on another.

use crate::cluster::Cluster;
use crate::support::{Message, Version, paho, publisher, received, subscriber};

#[test]
fn a_subscriber_on_one_gateway_receives_publishes_from_another_at_every_qos() {
    let cluster = Cluster::start(2);
    for version in Version::ALL {
        for qos in 0..=2u8 {
            let topic = format!("across/{version}/{qos}");
            let mut sub = subscriber(&cluster.gateway(0), version).topic(&topic).qos(qos).start();
            publisher(&cluster.gateway(1), version, &topic).qos(qos).message("hello").run();
            assert_eq!(
                sub.expect_messages(1),
                [Message::new(&topic, "hello", qos, false)],
                "v{version} qos {qos}"
            );
        }
    }
}

#[test]
fn wildcards_and_local_subscribers_both_match() {
    let cluster = Cluster::start(2);
    let mut remote = subscriber(&cluster.gateway(0), Version::V5).topic("sensors/+/temp").qos(1).start();
    let mut local = subscriber(&cluster.gateway(1), Version::V5).topic("sensors/#").qos(1).start();
    publisher(&cluster.gateway(1), Version::V5, "sensors/kitchen/temp").qos(1).message("21").run();
    assert_eq!(remote.expect_messages(1), [Message::new("sensors/kitchen/temp", "21", 1, false)]);
    assert_eq!(local.expect_messages(1), [Message::new("sensors/kitchen/temp", "21", 1, false)]);
}

#[test]
fn a_message_retained_through_one_gateway_is_delivered_on_another() {
    let cluster = Cluster::start(2);
    publisher(&cluster.gateway(0), Version::V311, "status/door").qos(1).retain().message("open").run();
    let mut late = subscriber(&cluster.gateway(1), Version::V5).topic("status/#").qos(1).start();
    assert_eq!(late.expect_messages(1), [Message::new("status/door", "open", 1, true)]);
}

#[test]
fn a_publish_over_websocket_on_one_gateway_reaches_another() {
    let mut cluster = Cluster::start(1);
    let websocket = cluster.add_websocket_gateway();
    let mut remote = subscriber(&cluster.gateway(0), Version::V311).topic("browser/#").qos(1).start();
    // relay.py: a publisher and a subscriber, both over WebSocket on the second gateway.
    let port = cluster.gateway_websocket(websocket).port().to_string();
    let arguments = ["5", "--publisher", "ws", "--subscriber", "ws", "--topic", "browser/tab", "--qos", "1"];
    let output = paho(&cluster.gateway(websocket), "relay.py", &[&[&port[..]][..], &arguments[..]].concat());
    assert_eq!(received(&output), [Message::new("browser/tab", "message-0", 1, false)], "local subscriber");
    assert_eq!(remote.expect_messages(1), [Message::new("browser/tab", "message-0", 1, false)]);
}

#[test]
fn a_shared_group_with_members_on_both_gateways_gets_each_message_once() {
    let cluster = Cluster::start(2);
    let mut on_first =
        subscriber(&cluster.gateway(0), Version::V5).topic("$share/pool/work/#").qos(1).start();
    let mut on_second =
        subscriber(&cluster.gateway(1), Version::V311).topic("$share/pool/work/#").qos(1).start();
    let sent: Vec<String> = (0..10).map(|n| format!("w{n}")).collect();
    publisher(&cluster.gateway(1), Version::V5, "work/item").qos(1).lines(&sent).run();
    // The router alternates between the two gateways, each of which has one member.
    let mut got: Vec<String> = on_first.expect_messages(5).into_iter().map(|m| m.payload).collect();
    got.extend(on_second.expect_messages(5).into_iter().map(|m| m.payload));
    on_first.expect_silence(std::time::Duration::from_millis(300));
    got.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(got, expected);
}
