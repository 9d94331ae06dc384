//! What a restart keeps: retained messages, persistent sessions with their
//! subscriptions and queued messages, and the messages waiting in a shared
//! group, whether the broker stopped cleanly or was killed, because each is
//! committed to the Raft log before it is acknowledged (ADR 0013).

use crate::support::{Broker, Message, RawConnection, Version, connect_v5, publisher, subscriber};

#[test]
fn retained_messages_survive_a_restart() {
    let broker = Broker::start();
    publisher(&broker, Version::V5, "status/lamp").qos(1).retain().message("on").run();
    publisher(&broker, Version::V311, "status/door").qos(0).retain().message("open").run();
    publisher(&broker, Version::V311, "status/door").qos(1).retain().message("").run();
    let broker = broker.restart("TERM");
    let mut reader = subscriber(&broker, Version::V5).topic("status/#").qos(1).start();
    assert_eq!(reader.expect_messages(1), vec![Message::new("status/lamp", "on", 1, true)]);
    reader.expect_silence(std::time::Duration::from_millis(300));
}

#[test]
fn a_persistent_sessions_queue_survives_a_crash() {
    for version in [Version::V311, Version::V5] {
        let broker = Broker::start();
        let id = format!("durable-{version}");
        subscriber(&broker, version)
            .client_id(&id)
            .topic("orders/#")
            .qos(1)
            .persistent()
            .exit_after_subscribe()
            .start();
        for n in 1..=3 {
            // Each PUBACK means committed: SIGKILL right after loses none.
            publisher(&broker, Version::V5, &format!("orders/{n}"))
                .qos(1)
                .message(&format!("order-{n}"))
                .run();
        }
        let broker = broker.restart("KILL");
        let mut back =
            subscriber(&broker, version).client_id(&id).topic("orders/#").qos(1).persistent().start();
        let expected: Vec<Message> =
            (1..=3).map(|n| Message::new(&format!("orders/{n}"), &format!("order-{n}"), 1, false)).collect();
        assert_eq!(back.expect_messages(3), expected, "{version}: queued messages in order, after a crash");
    }
}

#[test]
fn a_shared_groups_waiting_messages_survive_a_crash() {
    let broker = Broker::start();
    subscriber(&broker, Version::V5)
        .client_id("member")
        .topic("$share/workers/jobs")
        .qos(1)
        .persistent()
        .exit_after_subscribe()
        .start();
    publisher(&broker, Version::V5, "jobs").qos(1).message("job-1").run();
    let broker = broker.restart("KILL");
    let mut next = subscriber(&broker, Version::V5).topic("$share/workers/jobs").qos(1).start();
    assert_eq!(next.expect_messages(1), vec![Message::new("jobs", "job-1", 1, false)]);
}

/// Fifty times: a QoS 1 publish for an offline persistent session is acknowledged, and the
/// broker is killed at once. After the last restart, the session gets all fifty, in order.
///
/// Checked once to fail when the router sends a batch's replies before its journal commit
/// (`Inner::run_batch` in `router/src/service.rs` dispatching first): messages acknowledged
/// just before a kill were missing after the restart. The log's syncs are slowed down
/// (`HERALD_FAULT_SLOW_SYNC_MS`) so that the kill lands inside that window. A kill ends the process, not the
/// machine: the page cache keeps what was written; the fdatasync in the write-ahead log is
/// what a power loss would also need (docs/adr/0012-raft-log-and-state-storage.md).
#[test]
fn fifty_kills_right_after_each_acknowledgement_lose_nothing() {
    // Every log write and sync takes 50 ms more (a slow disk), so an acknowledgement sent before its
    // commit would be followed by the kill before the commit.
    let mut broker = Broker::start_with(&[], &[("HERALD_FAULT_SLOW_SYNC_MS", "50")]);
    subscriber(&broker, Version::V5)
        .client_id("survivor")
        .topic("crash/#")
        .qos(1)
        .persistent()
        .exit_after_subscribe()
        .start();
    for n in 0..50 {
        publisher(&broker, Version::V5, &format!("crash/{n}")).qos(1).message(&format!("c{n}")).run();
        broker = broker.restart("KILL");
    }
    let mut back =
        subscriber(&broker, Version::V5).client_id("survivor").topic("crash/#").qos(1).persistent().start();
    let expected: Vec<Message> =
        (0..50).map(|n| Message::new(&format!("crash/{n}"), &format!("c{n}"), 1, false)).collect();
    assert_eq!(back.expect_messages(50), expected);
}

/// Connects `client` and returns whether the CONNACK says a session was present; then
/// disconnects.
fn session_present(broker: &Broker, client: &str, expiry_seconds: u32) -> bool {
    let mut connection = RawConnection::open(broker);
    connection.send(&connect_v5(client, expiry_seconds, false, None));
    let connack = connection.expect_packet();
    assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "accepted: {connack:?}");
    connection.send(&[0xE0, 0x00]);
    connack.body[0] & 0x01 == 0x01
}

#[test]
fn session_and_message_expiry_hold_across_a_restart() {
    let broker = Broker::start();
    // A session that expires 2 s after it goes offline, and one that lasts.
    let mut brief = RawConnection::open(&broker);
    brief.send(&connect_v5("brief", 2, true, None));
    assert_eq!(brief.expect_packet().first_byte, 0x20);
    brief.send(&[0xE0, 0x00]);
    subscriber(&broker, Version::V5)
        .client_id("lasting")
        .topic("exp/#")
        .qos(1)
        .persistent()
        .exit_after_subscribe()
        .start();
    publisher(&broker, Version::V5, "exp/short").qos(1).expiry(1).message("gone").run();
    publisher(&broker, Version::V5, "exp/long").qos(1).expiry(600).message("kept").run();
    publisher(&broker, Version::V5, "exp/none").qos(1).message("kept too").run();

    let broker = broker.restart("TERM");
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert!(!session_present(&broker, "brief", 60), "the brief session expired, restart or not");
    let mut back =
        subscriber(&broker, Version::V5).client_id("lasting").topic("exp/#").qos(1).persistent().start();
    let got: Vec<String> = back.expect_messages(2).into_iter().map(|m| m.payload).collect();
    assert_eq!(got, ["kept", "kept too"], "the expired message was not delivered");
    back.expect_silence(std::time::Duration::from_millis(300));
}

/// Twice the per-session limit is queued: with `refuse_newest` the first half arrives, with
/// `drop_oldest` the second, in order either way.
#[test]
fn an_overflowing_offline_queue_keeps_exactly_the_documented_half() {
    for (policy, kept) in [("refuse_newest", 0..10), ("drop_oldest", 10..20)] {
        let broker = Broker::start_with(
            &[],
            &[("HERALD_LIMITS_MAX_OFFLINE_MESSAGES", "10"), ("HERALD_LIMITS_OFFLINE_OVERFLOW", policy)],
        );
        subscriber(&broker, Version::V5)
            .client_id("full")
            .topic("over/#")
            .qos(1)
            .persistent()
            .exit_after_subscribe()
            .start();
        let payloads: Vec<String> = (0..20).map(|n| format!("o{n}")).collect();
        publisher(&broker, Version::V5, "over/t").qos(1).lines(&payloads).run();
        let broker = broker.restart("KILL");
        let mut back =
            subscriber(&broker, Version::V5).client_id("full").topic("over/#").qos(1).persistent().start();
        let expected: Vec<Message> =
            kept.map(|n| Message::new("over/t", &format!("o{n}"), 1, false)).collect();
        assert_eq!(back.expect_messages(10), expected, "{policy}");
        back.expect_silence(std::time::Duration::from_millis(300));
    }
}

/// Ten persistent sessions receive 2 MB of messages while offline, round after round, and
/// take them: the data directory ends within a few log segments, because snapshots let whole
/// segments go.
#[test]
fn delivered_messages_give_their_space_back() {
    let settings = [
        ("HERALD_RAFT_SEGMENT_BYTES", "262144"),
        ("HERALD_RAFT_SNAPSHOT_ENTRIES", "40"),
        ("HERALD_RAFT_KEEP_ENTRIES", "5"),
    ];
    let broker = Broker::start_with(&[], &settings);
    let clients: Vec<String> = (0..10).map(|n| format!("space-{n}")).collect();
    for client in &clients {
        subscriber(&broker, Version::V311)
            .client_id(client)
            .topic("space/#")
            .qos(1)
            .persistent()
            .exit_after_subscribe()
            .start();
    }
    let payload = "x".repeat(2_000);
    for round in 0..10 {
        let lines: Vec<String> = (0..100).map(|n| format!("{round}-{n}-{payload}")).collect();
        publisher(&broker, Version::V311, "space/t").qos(1).lines(&lines).run();
        for client in &clients {
            let mut taker = subscriber(&broker, Version::V311)
                .client_id(client)
                .topic("space/#")
                .qos(1)
                .persistent()
                .start();
            assert_eq!(taker.expect_messages(100).len(), 100, "round {round}, {client}");
        }
    }
    // Sessions coming and going (a few log entries each, nothing queued) let a last snapshot
    // be taken after everything was delivered.
    for _ in 0..15 {
        subscriber(&broker, Version::V311)
            .client_id(&clients[0])
            .topic("space/#")
            .qos(1)
            .persistent()
            .exit_after_subscribe()
            .start();
    }
    let log = broker.data_path().join("raft").join("log");
    let segments = std::fs::read_dir(&log).expect("log directory").count();
    let bytes: u64 = walk_size(broker.data_path());
    // 2 MB of payload written (20 MB queued, counting each session) went through 256 KiB
    // segments: what is left is the tail behind the last snapshot.
    assert!(segments <= 3, "{segments} segments left in {}", log.display());
    let listing =
        std::process::Command::new("ls").args(["-laR"]).arg(broker.data_path()).output().expect("ls");
    assert!(
        bytes < 2 * 1024 * 1024,
        "{bytes} bytes left in the data directory:\n{}",
        String::from_utf8_lossy(&listing.stdout)
    );
}

fn walk_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
