//! Offline inboxes on three routers: large, through a leader's death, through a stop of
//! every router.

use crate::raft_cluster::RaftCluster;
use crate::support::{Version, publisher, subscriber};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: [(&str, &str); 1] = [("HERALD_LIMITS_MAX_OFFLINE_MESSAGES", "10000")];

/// 10,000 QoS 1 messages for an offline persistent session, every router stopped and started
/// again, the subscriber back on another gateway: all of them, in order, once.
#[test]
fn ten_thousand_queued_messages_survive_a_restart_of_every_router() {
    let mut cluster = RaftCluster::start_with(3, &LIMIT);
    let first = cluster.start_gateway();
    subscriber(&first, Version::V311)
        .client_id("inbox")
        .persistent()
        .topic("box/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
    let payloads: Vec<String> = (0..10_000).map(|n| format!("n{n}")).collect();
    publisher(&first, Version::V311, "box/a").qos(1).lines(&payloads).run();

    for node in 1..=3 {
        cluster.kill_router(node);
    }
    for node in 1..=3 {
        cluster.restart_router(node);
    }
    let other = cluster.start_gateway();
    let mut back =
        subscriber(&other, Version::V311).client_id("inbox").persistent().topic("box/#").qos(1).start();
    let got: Vec<String> = back.expect_messages(10_000).into_iter().map(|m| m.payload).collect();
    assert_eq!(got, payloads, "every message, in order, none twice");
    back.expect_silence(Duration::from_millis(300));
}

/// The leader is killed while messages are published one by one: every message that was
/// acknowledged arrives, in order; those that were not may arrive or not, never twice.
#[test]
fn nothing_acknowledged_is_lost_when_the_leader_dies_mid_stream() {
    let mut cluster = RaftCluster::start_with(3, &LIMIT);
    let gateway = cluster.start_gateway();
    subscriber(&gateway, Version::V5)
        .client_id("witness")
        .persistent()
        .topic("stream/#")
        .qos(1)
        .exit_after_subscribe()
        .start();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let publishing = {
        let acknowledged = acknowledged.clone();
        std::thread::spawn(move || {
            for n in 0..120 {
                if publisher(&gateway, Version::V5, "stream/t").qos(1).message(&format!("s{n}")).try_run() {
                    acknowledged.lock().expect("lock").push(format!("s{n}"));
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        })
    };
    while acknowledged.lock().expect("lock").len() < 30 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let leader = cluster.leader();
    cluster.kill_router(leader);
    // The gateway keeps its clients and finds the new leader: publishes wait for it.
    publishing.join().expect("publisher thread");

    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() > 100, "most publishes went through: {}", acknowledged.len());
    let mut back =
        subscriber(&gateway, Version::V5).client_id("witness").persistent().topic("stream/#").qos(1).start();
    // Messages that were sent but not acknowledged may have been committed: they may come
    // too, in their place; every acknowledged one must, in order, and nothing twice.
    let mut rest: Vec<String> =
        back.expect_messages(acknowledged.len()).into_iter().map(|m| m.payload).collect();
    rest.extend(back.collect(Duration::from_millis(500)).into_iter().map(|m| m.payload));
    let mut seen = std::collections::HashSet::new();
    assert!(rest.iter().all(|p| seen.insert(p.clone())), "no message twice: {rest:?}");
    let in_order: Vec<&String> = rest.iter().filter(|p| acknowledged.contains(p)).collect();
    assert_eq!(in_order, acknowledged.iter().collect::<Vec<_>>(), "every acknowledged message, in order");
}
