//! Items 8 and 15: what a subscription carries besides its filter.

use crate::paho::{Clients, payloads};
use crate::topology::Topology;

/// Returns the subscription identifiers of a `received` record, sorted.
fn identifiers(message: &crate::paho::Record) -> Vec<u32> {
    let mut identifiers: Vec<u32> = message
        .get("subscription_identifier")
        .map(|list| list.split(',').map(|id| id.parse().expect("numeric identifier")).collect())
        .unwrap_or_default();
    identifiers.sort_unstable();
    identifiers
}

/// Item 8: a subscription's identifier comes back on every delivery it matches, all of them
/// when several subscriptions match, from a live subscription and from an offline session's
/// queue alike; a subscription without one adds none.
pub(crate) fn item_08_subscription_identifiers(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();
    clients.connect("reader", second, &["session_expiry_interval=60"]);
    clients.subscribe("reader", "item8/+", &["qos=1", "subscription_identifier=1"]);
    clients.subscribe("reader", "item8/#", &["qos=1", "subscription_identifier=268435455"]);
    clients.subscribe("reader", "item8/plain/topic", &["qos=1"]);
    clients.connect("writer", first, &[]);

    clients.publish("writer", "item8/one", "both", &["qos=1"]);
    clients.publish("writer", "item8/plain/topic", "deep", &["qos=1"]);
    let live = clients.expect_messages("reader", 2);
    assert_eq!(payloads(&live), ["both", "deep"]);
    assert_eq!(identifiers(&live[0]), [1, 268_435_455], "{:?}", live[0]);
    assert_eq!(identifiers(&live[1]), [268_435_455], "the filter without one adds none: {:?}", live[1]);

    // Queued while offline, resumed on the other endpoint.
    clients.disconnect("reader", &[]);
    clients.publish("writer", "item8/two", "queued", &["qos=1"]);
    let connack = clients.connect("reader", first, &["clean=0", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 1, "{connack:?}");
    let queued = clients.expect_message("reader");
    assert_eq!((queued.payload(), identifiers(&queued)), ("queued", vec![1, 268_435_455]), "{queued:?}");
}

/// Item 15: no local keeps a client's own messages from it, retain as published keeps the
/// RETAIN flag on live deliveries, and retain handling 0/1/2 decides whether a subscription
/// gets the retained message.
pub(crate) fn item_15_subscription_options(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();

    // No local: the message reaches the other subscriber, not its publisher; the first
    // message the publisher gets is the other client's.
    clients.connect("me", first, &[]);
    clients.subscribe("me", "item15/chat", &["qos=1", "no_local=1"]);
    clients.connect("you", second, &[]);
    clients.subscribe("you", "item15/chat", &["qos=1"]);
    clients.publish("me", "item15/chat", "mine", &["qos=1"]);
    assert_eq!(clients.expect_message("you").payload(), "mine");
    clients.publish("you", "item15/chat", "yours", &["qos=1"]);
    assert_eq!(clients.expect_message("me").payload(), "yours", "no local was ignored");
    assert_eq!(clients.expect_message("you").payload(), "yours", "without no local, its own");

    // Retain as published: a live delivery keeps RETAIN only for the subscription that asks.
    clients.subscribe("you", "item15/retained", &["qos=1", "retain_as_published=1"]);
    clients.connect("plain", second, &[]);
    clients.subscribe("plain", "item15/retained", &["qos=1"]);
    clients.publish("me", "item15/retained", "kept", &["qos=1", "retain=1"]);
    let (flagged, unflagged) = (clients.expect_message("you"), clients.expect_message("plain"));
    assert_eq!((flagged.payload(), flagged.field("retain")), ("kept", "1"), "retain as published");
    assert_eq!((unflagged.payload(), unflagged.field("retain")), ("kept", "0"), "retain cleared");

    // Retain handling. Where the retained message must not come, a live (not retained) one
    // published after the SUBACK must be the first to arrive.
    let live = |clients: &mut Clients, client: &str, payload: &str| {
        clients.publish("me", "item15/retained", payload, &["qos=1"]);
        let message = clients.expect_message(client);
        assert_eq!((message.payload(), message.field("retain")), (payload, "0"), "{message:?}");
    };
    let retained = |clients: &mut Clients, client: &str| {
        let message = clients.expect_message(client);
        assert_eq!((message.payload(), message.field("retain")), ("kept", "1"), "{message:?}");
    };
    clients.connect("late", second, &[]);
    // 2: never.
    clients.subscribe("late", "item15/retained", &["qos=1", "retain_handling=2"]);
    live(&mut clients, "late", "after-handling-2");
    // 1 on an existing subscription: not again.
    clients.subscribe("late", "item15/retained", &["qos=1", "retain_handling=1"]);
    live(&mut clients, "late", "after-handling-1");
    // 0: at every subscribe, existing or not.
    clients.subscribe("late", "item15/retained", &["qos=1", "retain_handling=0"]);
    retained(&mut clients, "late");
    // 1 on a new subscription: yes.
    clients.connect("fresh", first, &[]);
    clients.subscribe("fresh", "item15/retained", &["qos=1", "retain_handling=1"]);
    retained(&mut clients, "fresh");
}
