//! Items 1 and 2: how long sessions and messages live.

use crate::paho::{Clients, payloads};
use crate::raw::{self, DISCONNECT, Incoming, PUBACK, PUBLISH, QOS1, Raw, SUBACK, property};
use crate::topology::Topology;
use crate::{RELEASE, SILENCE, sleep_until};
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

/// Item 1: the session expiry interval comes from CONNECT, DISCONNECT may change it (but not
/// from 0: 0x82), a timer ends an offline session, clean start discards one, and CONNACK says
/// whether one was resumed. The session resumes on the other gateway of a cluster.
pub(crate) fn item_01_session_expiry(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();

    // A session that expires 1 s after it goes offline; its timer runs during the steps below.
    clients.connect("brief", first, &["session_expiry_interval=1"]);
    clients.subscribe("brief", "item1/brief", &["qos=1"]);
    clients.disconnect("brief", &[]);
    let brief_left = Instant::now();

    // A persistent session outlives its connection, queues, and resumes elsewhere.
    let connack = clients.connect("keeper", first, &["session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 0, "a new session: {connack:?}");
    clients.subscribe("keeper", "item1/keeper", &["qos=1"]);
    clients.disconnect("keeper", &[]);
    clients.connect("publisher", second, &[]);
    clients.publish("publisher", "item1/keeper", "queued", &["qos=1"]);
    let connack = clients.connect("keeper", second, &["clean=0", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 1, "the session resumes: {connack:?}");
    assert_eq!(payloads(&clients.expect_messages("keeper", 1)), ["queued"]);

    // Clean start discards the stored session: its queue and its subscriptions.
    clients.disconnect("keeper", &[]);
    clients.publish("publisher", "item1/keeper", "discarded", &["qos=1"]);
    let connack = clients.connect("keeper", first, &["clean=1", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 0, "clean start: {connack:?}");
    clients.publish("publisher", "item1/keeper", "unsubscribed", &["qos=1"]);
    clients.expect_silence("keeper", SILENCE);

    // DISCONNECT may lower the interval: at 0 the session ends with the connection.
    clients.subscribe("keeper", "item1/keeper", &["qos=1"]);
    clients.disconnect("keeper", &["session_expiry_interval=0"]);
    // A CONNECT on another endpoint is not ordered after this DISCONNECT; give the router
    // the release first.
    thread::sleep(RELEASE);
    let connack = clients.connect("keeper", second, &["clean=0", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 0, "DISCONNECT ended the session: {connack:?}");

    // ...but may not raise it from 0 [MQTT-3.14.2-2]. paho shows no DISCONNECT from the server
    // after its own, so this one is raw.
    let (mut grower, _) = Raw::connected(first, &raw::connect("grower", 60, &[]));
    grower.send(&raw::packet(
        DISCONNECT,
        &[
            &[0x00][..], // reason: normal disconnection
            &raw::properties(&[property::SESSION_EXPIRY_INTERVAL, 0x00, 0x00, 0x00, 0x1E]), // 30 s
        ]
        .concat(),
    ));
    let disconnect = grower.expect_disconnect();
    assert_eq!(disconnect.reason_code(), 0x82, "protocol error: {disconnect:?}");

    // The 1 s session expired while offline: nothing is left to resume.
    sleep_until(brief_left + Duration::from_millis(2000));
    let connack = clients.connect("brief", second, &["clean=0", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 0, "the session expired: {connack:?}");

    assert_nothing_lost_across_a_disconnect(topology);
}

/// Leaves a persistent session in the middle of a stream of QoS 1 messages and resumes it on
/// the other endpoint: every message the server acknowledged to the publisher arrives, before
/// the DISCONNECT or after the resumption.
///
/// Deliveries on their way to the closing connection are the hard case: they were routed while
/// the session was online, so the router did not queue them; the gateway hands them back
/// (`Uplink::Requeue`) and removes the session's routes only after the router has its release.
fn assert_nothing_lost_across_a_disconnect(topology: &Topology) {
    const MESSAGES: u16 = 300;
    let topic = "item1/stream";
    let expiry = [property::SESSION_EXPIRY_INTERVAL, 0x00, 0x00, 0x00, 0x3C]; // 60 s
    let (mut reader, _) = Raw::connected(topology.second(), &raw::connect("reader", 60, &expiry));
    reader.send(&raw::subscribe(1, &[], &[(topic, 0x01)]));
    assert_eq!(reader.expect(SUBACK).reason_codes(), [0x01]);

    // One message every 100 µs or so: the stream spans the DISCONNECT. At most 64 in flight,
    // within the server's receive maximum (128) however slow its PUBACKs [MQTT-3.3.4-7].
    let (mut source, _) = Raw::connected(topology.first(), &raw::connect("source", 60, &[]));
    let publisher = thread::spawn(move || {
        const WINDOW: u16 = 64;
        let mut codes = Vec::new();
        for n in 1..=MESSAGES {
            if n > WINDOW {
                codes.push(source.expect(PUBACK).reason_code());
            }
            source.send(&raw::publish(QOS1, topic, n, &[], n.to_string().as_bytes()));
            thread::sleep(Duration::from_micros(50));
        }
        while codes.len() < usize::from(MESSAGES) {
            codes.push(source.expect(PUBACK).reason_code());
        }
        codes
    });

    let mut received = BTreeSet::new();
    let mut take = |raw: &mut Raw, publication: raw::Publication| {
        raw.send(&raw::ack(PUBACK, publication.packet_id));
        received.insert(String::from_utf8(publication.payload).expect("UTF-8 payload"));
    };
    for _ in 0..5 {
        let publication = reader.expect(PUBLISH).publish();
        take(&mut reader, publication);
    }
    reader.send(&[DISCONNECT, 0x00]); // DISCONNECT, normal, in the short form
    drop(reader);
    let acknowledged = publisher.join().expect("the publisher finished");
    assert!(acknowledged.iter().all(|code| *code == 0x00), "PUBACK codes {acknowledged:02x?}");

    let (mut reader, connack) = Raw::connected(topology.first(), &raw::resume("reader", 60, &expiry));
    assert!(connack.session_present(), "the session resumes: {connack:?}");
    loop {
        match reader.receive(SILENCE) {
            Incoming::Packet(packet) if packet.kind() == PUBLISH => take(&mut reader, packet.publish()),
            Incoming::Silent => break,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
    let lost: Vec<u16> = (1..=MESSAGES).filter(|n| !received.contains(&n.to_string())).collect();
    assert!(lost.is_empty(), "{} of {MESSAGES} acknowledged messages lost: {lost:?}", lost.len());
}

/// Item 2: a message's expiry interval travels with it, decremented by the time it was held,
/// and an expired message is never delivered: not from an offline session's queue, not from
/// the retained store, not from a connection's queue behind a full receive window.
pub(crate) fn item_02_message_expiry(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();

    // An offline persistent session on the first endpoint...
    clients.connect("offline", first, &["session_expiry_interval=60"]);
    clients.subscribe("offline", "item2/queued/+", &["qos=1"]);
    clients.disconnect("offline", &[]);
    // ...and a connection there that takes one delivery at a time (Receive Maximum 1).
    let (mut narrow, _) =
        Raw::connected(first, &raw::connect("narrow", 60, &[property::RECEIVE_MAXIMUM, 0x00, 0x01]));
    narrow.send(&raw::subscribe(1, &[], &[("item2/narrow", 0x01)]));
    assert_eq!(narrow.expect(SUBACK).reason_codes(), [0x01]);

    // Messages from the second endpoint; those with a 1 s expiry expire in every queue.
    clients.connect("publisher", second, &[]);
    let published = Instant::now();
    clients.publish("publisher", "item2/queued/short", "short", &["qos=1", "message_expiry_interval=1"]);
    clients.publish("publisher", "item2/queued/long", "long", &["qos=1", "message_expiry_interval=60"]);
    let short_retained = ["qos=1", "retain=1", "message_expiry_interval=1"];
    clients.publish("publisher", "item2/retained/short", "short", &short_retained);
    clients.publish("publisher", "item2/retained/long", "long", &["qos=1", "retain=1"]);
    clients.publish("publisher", "item2/narrow", "first", &["qos=1"]);
    clients.publish("publisher", "item2/narrow", "short", &["qos=1", "message_expiry_interval=1"]);
    clients.publish("publisher", "item2/narrow", "last", &["qos=1"]);

    let all_published = Instant::now();
    let held = narrow.expect(PUBLISH).publish();
    assert_eq!(held.payload, b"first");
    // Past every 1 s expiry, and over 2 s into the 60 s one.
    sleep_until((published + Duration::from_millis(2200)).max(all_published + Duration::from_millis(1200)));

    // Behind the window: once it opens, the expired message is skipped.
    narrow.send(&raw::ack(PUBACK, held.packet_id));
    let next = narrow.expect(PUBLISH).publish();
    assert_eq!(String::from_utf8_lossy(&next.payload), "last", "the expired message was sent: {next:?}");

    // From the offline queue: the short-lived message (queued first) is gone, the other
    // arrives with what is left of its 60 s.
    let connack = clients.connect("offline", second, &["clean=0", "session_expiry_interval=60"]);
    assert_eq!(connack.number("session_present"), 1, "{connack:?}");
    let delivered = clients.expect_message("offline");
    assert_eq!(delivered.payload(), "long", "the expired message was delivered: {delivered:?}");
    let remaining = delivered.number("message_expiry_interval");
    assert!((40..=58).contains(&remaining), "held over 2 s of 60 s, {remaining} s left: {delivered:?}");

    // From the retained store: any retained message of the first filter would arrive before
    // the second SUBACK.
    clients.connect("late", first, &[]);
    clients.subscribe("late", "item2/retained/short", &["qos=1"]);
    clients.subscribe("late", "item2/retained/long", &["qos=1"]);
    let retained = clients.expect_message("late");
    assert_eq!((retained.field("topic"), retained.payload()), ("item2/retained/long", "long"));

    // Live: the interval is forwarded, and absent when the publisher set none.
    clients.subscribe("late", "item2/live", &["qos=1"]);
    clients.publish("publisher", "item2/live", "timed", &["qos=1", "message_expiry_interval=30"]);
    clients.publish("publisher", "item2/live", "untimed", &["qos=1"]);
    let live = clients.expect_messages("late", 2);
    assert_eq!(payloads(&live), ["timed", "untimed"]);
    assert!((29..=30).contains(&live[0].number("message_expiry_interval")), "{:?}", live[0]);
    assert_eq!(live[1].get("message_expiry_interval"), None, "{:?}", live[1]);
}
