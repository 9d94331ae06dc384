//! Retained messages: kept per topic, replaced, delivered to new subscriptions with the RETAIN
//! flag, and cleared by an empty retained publication.

use crate::support::{Broker, Message, Version, publisher, subscriber};

fn retained_lifecycle(version: Version) {
    let broker = Broker::start();
    publisher(&broker, version, "retained/a").qos(1).retain().message("first").run();
    publisher(&broker, version, "retained/a").qos(1).retain().message("second").run();
    publisher(&broker, version, "retained/b").qos(0).retain().message("other topic").run();

    // A new subscription gets the latest retained message of every matching topic, flagged.
    let mut early = subscriber(&broker, version).topic("retained/#").qos(1).start();
    let mut got = early.expect_messages(2);
    got.sort();
    assert_eq!(
        got,
        [Message::new("retained/a", "second", 1, true), Message::new("retained/b", "other topic", 0, true)]
    );

    // An established subscription gets a retained publication as a normal one [MQTT-3.3.1-9].
    publisher(&broker, version, "retained/a").qos(1).retain().message("live").run();
    assert_eq!(early.expect_messages(1), [Message::new("retained/a", "live", 1, false)]);

    // An empty retained payload is forwarded like any publication [MQTT-3.3.1-10] and clears
    // the topic's retained message [MQTT-3.3.1-11].
    publisher(&broker, version, "retained/a").qos(1).retain().empty().run();
    publisher(&broker, version, "retained/b").qos(1).retain().empty().run();
    let mut cleared = early.expect_messages(2);
    cleared.sort();
    assert_eq!(cleared, [Message::new("retained/a", "", 1, false), Message::new("retained/b", "", 1, false)]);

    // Retained messages reach a subscriber right after its SUBACK, so anything retained would
    // arrive before a marker published once the subscription is in place.
    let mut late = subscriber(&broker, version).topic("retained/#").qos(1).start();
    publisher(&broker, version, "retained/marker").qos(1).message("marker").run();
    assert_eq!(late.expect_messages(1), [Message::new("retained/marker", "marker", 1, false)]);
}

#[test]
fn retained_messages_v311() {
    retained_lifecycle(Version::V311);
}

#[test]
fn retained_messages_v5() {
    retained_lifecycle(Version::V5);
}
