//! Item 7: shared subscriptions. paho members and publishers; a raw member where the test
//! needs one that does not acknowledge.

use crate::paho::{Clients, payloads};
use crate::raw::{self, Raw, SUBACK};
use crate::topology::Topology;
use crate::{RELEASE, SILENCE};
use std::thread;

/// Item 7: `$share/{group}/{filter}` gives each message to exactly one member, in turn (the
/// default strategy, round robin), across endpoints; a member that leaves with unacknowledged
/// QoS 1 messages hands them to another member; QoS 1 messages for a group whose members are
/// all gone wait for the next member. The strategies each have a distribution test in
/// `core/src/shared.rs`.
pub(crate) fn item_07_shared_subscriptions(topology: &Topology) {
    let (first, second) = (topology.first(), topology.second());
    let mut clients = Clients::start();

    // Each message to exactly one member, alternating between the two.
    clients.connect("member-1", first, &[]);
    clients.connect("member-2", second, &[]);
    assert_eq!(clients.subscribe("member-1", "$share/item7/jobs/#", &["qos=1"]), 1);
    assert_eq!(clients.subscribe("member-2", "$share/item7/jobs/#", &["qos=1"]), 1);
    clients.connect("producer", first, &[]);
    for n in 0..6 {
        clients.publish("producer", &format!("jobs/{n}"), &format!("job-{n}"), &["qos=1"]);
    }
    let one = clients.expect_messages("member-1", 3);
    let two = clients.expect_messages("member-2", 3);
    clients.expect_silence("member-1", SILENCE);
    clients.expect_silence("member-2", SILENCE);
    let mut all: Vec<&str> = payloads(&one).into_iter().chain(payloads(&two)).collect();
    all.sort_unstable();
    assert_eq!(all, ["job-0", "job-1", "job-2", "job-3", "job-4", "job-5"], "each job exactly once");

    // A member that never acknowledges, then goes: its messages go to the other member.
    let (mut silent, _) = Raw::connected(second, &raw::connect("item7-silent", 60, &[]));
    silent.send(&raw::subscribe(1, &[], &[("$share/item7b/work", 0x01)]));
    assert_eq!(silent.expect(SUBACK).reason_codes(), [0x01]);
    clients.connect("worker", first, &[]);
    assert_eq!(clients.subscribe("worker", "$share/item7b/work", &["qos=1"]), 1);
    for n in 0..4 {
        clients.publish("producer", "work", &format!("task-{n}"), &["qos=1"]);
    }
    let payload = |packet: raw::Packet| String::from_utf8(packet.publish().payload).expect("UTF-8");
    let mut held: Vec<String> = (0..2).map(|_| payload(silent.expect(raw::PUBLISH))).collect();
    let worked = clients.expect_messages("worker", 2);
    drop(silent);
    let handed = clients.expect_messages("worker", 2);
    let mut handed: Vec<&str> = payloads(&handed);
    handed.sort_unstable();
    held.sort_unstable();
    assert_eq!(handed, held, "the unacknowledged messages went to the other member");
    let mut all: Vec<&str> = payloads(&worked).into_iter().chain(handed).collect();
    all.sort_unstable();
    assert_eq!(all, ["task-0", "task-1", "task-2", "task-3"]);

    // A group whose members have all left keeps QoS 1 messages for the next member.
    clients.connect("early", second, &[]);
    assert_eq!(clients.subscribe("early", "$share/item7c/later", &["qos=1"]), 1);
    clients.disconnect("early", &[]);
    thread::sleep(RELEASE);
    clients.publish("producer", "later", "kept-for-the-group", &["qos=1"]);
    clients.connect("late", first, &[]);
    assert_eq!(clients.subscribe("late", "$share/item7c/later", &["qos=1"]), 1);
    assert_eq!(clients.expect_message("late").payload(), "kept-for-the-group");
}
