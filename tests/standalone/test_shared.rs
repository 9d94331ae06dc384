//! Shared subscriptions (`$share/{group}/{filter}`): each message goes to one
//! member of the group; a member that leaves gives its unacknowledged
//! messages to another; with no member, QoS 1 messages wait for one.

use crate::support::{Broker, RawConnection, Version, publisher, subscriber};
use std::collections::BTreeSet;
use std::time::Duration;

fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n}")).collect()
}

#[test]
fn each_message_goes_to_exactly_one_member_in_turn() {
    let broker = Broker::start();
    for version in Version::ALL {
        let filter = format!("$share/workers/jobs/{version}/#");
        let topic = format!("jobs/{version}/run");
        let mut first = subscriber(&broker, version).topic(&filter).qos(1).start();
        let mut second = subscriber(&broker, version).topic(&filter).qos(1).start();
        let sent = numbered("job", 10);
        publisher(&broker, version, &topic).qos(1).lines(&sent).run();
        let a: Vec<String> = first.expect_messages(5).into_iter().map(|m| m.payload).collect();
        let b: Vec<String> = second.expect_messages(5).into_iter().map(|m| m.payload).collect();
        first.expect_silence(Duration::from_millis(300));
        second.expect_silence(Duration::from_millis(100));
        let all: BTreeSet<&String> = a.iter().chain(&b).collect();
        assert_eq!(all, sent.iter().collect(), "v{version}: every message once, across the group");
    }
}

/// v3.1.1 CONNECT, clean session, keep-alive 60 s, client id `member-raw`.
const CONNECT_MEMBER: &[u8] = &[
    0x10, 0x16, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, // header
    0x00, 0x0A, b'm', b'e', b'm', b'b', b'e', b'r', b'-', b'r', b'a', b'w',
];
/// SUBSCRIBE packet id 1 to `$share/g/t` at QoS 1.
const SUBSCRIBE_GROUP: &[u8] =
    &[0x82, 0x0F, 0x00, 0x01, 0x00, 0x0A, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b't', 0x01];

#[test]
fn a_member_that_leaves_gives_its_unacknowledged_messages_to_another() {
    let broker = Broker::start();
    let mut raw = RawConnection::open(&broker);
    raw.send(CONNECT_MEMBER);
    assert_eq!(raw.expect_packet().body, [0x00, 0x00], "CONNACK");
    raw.send(SUBSCRIBE_GROUP);
    assert_eq!(raw.expect_packet().body, [0x00, 0x01, 0x01], "SUBACK granted QoS 1");
    let mut steady = subscriber(&broker, Version::V5).topic("$share/g/t").qos(1).start();

    let sent = numbered("m", 4);
    publisher(&broker, Version::V311, "t").qos(1).lines(&sent).run();
    // The raw member takes its share and never acknowledges it.
    let held: Vec<u8> = (0..2).map(|_| raw.expect_packet().first_byte).collect();
    assert_eq!(held, [0x32, 0x32], "two QoS 1 PUBLISHes to the raw member");
    let mut got: Vec<String> = steady.expect_messages(2).into_iter().map(|m| m.payload).collect();
    drop(raw);
    got.extend(steady.expect_messages(2).into_iter().map(|m| m.payload));
    let got: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got, sent.iter().collect(), "the other member ends up with all four");
}

#[test]
fn messages_for_a_group_without_members_wait_for_the_next_member() {
    let broker = Broker::start();
    let first = subscriber(&broker, Version::V5).topic("$share/later/news").qos(1).start();
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    publisher(&broker, Version::V5, "news").qos(1).message("kept for the group").run();
    let mut next = subscriber(&broker, Version::V5).topic("$share/later/news").qos(1).start();
    let got = next.expect_messages(1);
    assert_eq!(got[0].payload, "kept for the group");
}
