//! Registry shards (ADR 0033): every gateway links to every router's
//! registry and learns from them which router owns each shard.

use crate::ops_client::{fetch, ops_address, samples};
use crate::raft_cluster::RaftCluster;
use crate::support::{Incoming, RawConnection, Version, connect_v5, publisher, subscriber};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Waits until gateway metrics at `ops` satisfy `check`; returns them.
fn metrics_until(
    ops: &str,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, lines) = fetch(ops, "/metrics");
        assert_eq!(status, 200);
        let metrics = samples(&lines);
        if check(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "{what}: {metrics:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn owned_by(metrics: &HashMap<String, f64>, router: usize) -> f64 {
    metrics.get(&format!("herald_gateway_registry_shards{{owner=\"{router}\"}}")).copied().unwrap_or(0.0)
}

/// The shard counts the gateway at `ops` says each router owns.
fn spread_over(metrics: &HashMap<String, f64>, routers: &[usize]) -> bool {
    let share = 64f64 / routers.len() as f64;
    let total: f64 = routers.iter().map(|r| owned_by(metrics, *r)).sum();
    total == 64.0 && routers.iter().all(|r| (owned_by(metrics, *r) - share).abs() <= 2.0)
}

fn claims(metrics: &HashMap<String, f64>, outcome: &str) -> f64 {
    metrics
        .get(&format!("herald_gateway_owner_claims_total{{outcome=\"{outcome}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

/// Connects `count` clients of new client ids through `gateway`, one after
/// the other: each must be accepted (its claim granted by its shard's owner),
/// whichever router owns it.
fn connect_many(gateway: &std::net::SocketAddr, count: usize) {
    for _ in 0..count {
        publisher(gateway, Version::V5, "shards/t").message("hi").run();
    }
}

/// Three routers, with `environment`, and a gateway that knows them all,
/// its operations endpoints on 127.0.0.2, once the registry shards are
/// spread over the three: the cluster, its leader, the gateway's MQTT
/// address and its operations address.
fn spread_cluster(environment: &[(&str, &str)]) -> (RaftCluster, usize, std::net::SocketAddr, String) {
    let mut cluster = RaftCluster::start_with(3, environment);
    let leader = cluster.leader();
    let gateway = cluster.start_gateway_with(&[1, 2, 3], &["--ops", "127.0.0.2:0"]);
    let ops = ops_address(&cluster.gateway_output(0));
    cluster.wait_for_shards_over(&[1, 2, 3]);
    (cluster, leader, gateway, ops)
}

#[test]
fn a_gateway_links_to_every_routers_registry_and_learns_who_owns_each_shard() {
    let mut cluster = RaftCluster::start(3);
    let leader = cluster.leader();
    // Told of the leader only: it learns the two others from the shard table.
    let gateway = cluster.start_gateway_with(&[leader], &["--ops", "127.0.0.2:0"]);
    let ops = ops_address(&cluster.gateway_output(0));
    let links = "herald_gateway_registry_links{}";
    metrics_until(&ops, "linked to the three routers, the shards spread over them", |m| {
        m.get(links) == Some(&3.0) && spread_over(m, &[1, 2, 3])
    });
    // A connect is claimed at the session's shard owner first.
    let _client = subscriber(&gateway, Version::V5).client_id("owned").topic("t").start();
    metrics_until(&ops, "the claim granted by the shard's owner", |m| claims(m, "granted") == 1.0);

    // The leader is killed: its link drops, and its shards move to the two
    // routers left, which tell the gateway.
    cluster.kill_router(leader);
    let left: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let metrics = metrics_until(&ops, "the two routers left own every shard", |m| {
        m.get(links) == Some(&2.0) && spread_over(m, &left)
    });
    assert_eq!(owned_by(&metrics, leader), 0.0, "{metrics:#?}");
}

#[test]
fn the_shards_of_a_router_lost_move_to_the_others_and_come_back_with_it() {
    let mut cluster = RaftCluster::start(3);
    let leader = cluster.leader();
    let gateway = cluster.start_gateway_with(&[1, 2, 3], &["--ops", "127.0.0.2:0"]);
    let ops = ops_address(&cluster.gateway_output(0));
    metrics_until(&ops, "the shards spread over the three routers", |m| spread_over(m, &[1, 2, 3]));

    // A follower is lost: after raft.registry_move_after_ms its shards move
    // to the leader and the other follower, and every session can connect.
    let lost = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.kill_router(lost);
    let left: Vec<usize> = (1..=3).filter(|n| *n != lost).collect();
    metrics_until(&ops, "the lost router's shards moved", |m| spread_over(m, &left));
    connect_many(&gateway, 24);
    // Back, it takes its share again (from the others, at new generations).
    cluster.restart_router(lost);
    cluster.wait_for_shards_over(&[1, 2, 3]);
    metrics_until(&ops, "the shards spread over the three routers again", |m| spread_over(m, &[1, 2, 3]));
    connect_many(&gateway, 24);
    let metrics = metrics_until(&ops, "every claim granted", |m| claims(m, "granted") >= 48.0);
    assert_eq!(claims(&metrics, "not_granted"), 0.0, "{metrics:#?}");
}

#[test]
fn a_router_restarted_before_its_shards_move_serves_them_once_the_leader_restarts_them() {
    // Its shards never move in this test: the router comes back to the same
    // shards, which an earlier process of it may have granted epochs of.
    let (mut cluster, leader, gateway, ops) =
        spread_cluster(&[("HERALD_RAFT_REGISTRY_MOVE_AFTER_MS", "600000")]);
    let restarted = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.kill_router(restarted);
    cluster.restart_router(restarted);
    // It serves them only once the leader has restarted them (a shard event
    // at new generations): until then its status says it inherited them.
    let status = cluster.wait_for_shards_over(&[1, 2, 3]);
    assert!(!status.contains("inherited="), "{status}");
    metrics_until(&ops, "linked to the restarted router", |m| {
        m.get("herald_gateway_registry_links{}") == Some(&3.0)
    });
    connect_many(&gateway, 24);
    let metrics = metrics_until(&ops, "every claim granted", |m| claims(m, "granted") >= 24.0);
    assert_eq!(claims(&metrics, "not_granted"), 0.0, "{metrics:#?}");
    let log = cluster.router_output(restarted);
    assert!(
        log.contains("owned before this process saw the table"),
        "it said it waited for its shards:\n{log}"
    );
}

/// The sessions the registry shards of `routers` know, summed.
fn owners_know(cluster: &RaftCluster, routers: &[usize]) -> f64 {
    routers
        .iter()
        .map(|router| {
            let (status, lines) = fetch(&ops_address(&cluster.router_output(*router)), "/metrics");
            assert_eq!(status, 200);
            samples(&lines).get("herald_router_registry_sessions{}").copied().unwrap_or(0.0)
        })
        .sum()
}

fn until_owners_know(cluster: &RaftCluster, routers: &[usize], sessions: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while owners_know(cluster, routers) != sessions {
        assert!(
            Instant::now() < deadline,
            "routers {routers:?} know {} sessions, not {sessions}: {:?}\n{}",
            owners_know(cluster, routers),
            routers.iter().map(|r| owners_know(cluster, &[*r])).collect::<Vec<_>>(),
            cluster.status()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shard_owners_rebuild_what_they_own_from_the_gateways_lists_and_revoke_a_connection_taken_over() {
    let (mut cluster, leader, first, ops) = spread_cluster(&[("HERALD_OPS", "127.0.0.1:0")]);
    let clients: Vec<_> = (0..24)
        .map(|n| subscriber(&first, Version::V5).client_id(&format!("rebuilt-{n}")).topic("t").start())
        .collect();
    until_owners_know(&cluster, &[1, 2, 3], 24.0);

    // A follower is lost: the routers its shards move to learn their
    // sessions from the gateway's lists (about a third of the 24).
    let lost = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.kill_router(lost);
    let left: Vec<usize> = (1..=3).filter(|n| *n != lost).collect();
    until_owners_know(&cluster, &left, 24.0);
    // Back, it takes its share again and is listed its sessions.
    cluster.restart_router(lost);
    cluster.wait_for_shards_over(&[1, 2, 3]);
    until_owners_know(&cluster, &[1, 2, 3], 24.0);
    // The moved sessions were listed twice: to the routers left, and back.
    metrics_until(&ops, "sessions listed", |m| {
        m.get("herald_gateway_registry_listed_total{}").is_some_and(|n| *n >= 2.0)
    });

    // The same client id on a second gateway: its shard's owner revokes
    // the first connection (the gateway hears it), which ends with
    // DISCONNECT 0x8E (the leader's revocation still ends it).
    let mut roamer = RawConnection::open(&first);
    roamer.send(CONNECT_ROAMER_V5);
    let connack = roamer.expect_packet();
    assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "CONNACK {connack:?}");
    until_owners_know(&cluster, &[1, 2, 3], 25.0);
    let second = cluster.start_gateway_with(&[1, 2, 3], &["--ops", "127.0.0.3:0"]);
    let _taken = subscriber(&second, Version::V5).client_id("roamer").topic("t").start();
    let closed = roamer.expect_closed();
    let [disconnect] = closed.as_slice() else { panic!("expected one DISCONNECT, got {closed:?}") };
    assert_eq!((disconnect.first_byte, disconnect.body.first()), (0xE0, Some(&0x8E)), "taken over");
    metrics_until(&ops, "the owner's revocation received", |m| {
        m.get("herald_gateway_owner_revocations_total{}").is_some_and(|n| *n >= 1.0)
    });
    drop(clients);
}

/// CONNECT, MQTT 5, clean start, keep alive 60 s, client id "roamer".
const CONNECT_ROAMER_V5: &[u8] = &[
    0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x06, b'r', b'o',
    b'a', b'm', b'e', b'r',
];

#[test]
fn a_router_alone_among_its_voters_owns_every_shard_and_withholds_no_vote() {
    let mut cluster = RaftCluster::start(1);
    let gateway = cluster.start_gateway();
    let status = cluster.wait_for_shards_over(&[1]);
    assert!(!status.contains("vote=withheld"), "nobody asks for its vote:\n{status}");
    connect_many(&gateway, 3);
}

#[test]
fn connects_keep_being_granted_while_a_shard_owner_is_frozen_and_its_shards_move() {
    let (cluster, leader, gateway, ops) = spread_cluster(&[("HERALD_RAFT_REGISTRY_MOVE_AFTER_MS", "1000")]);
    // Frozen, its process keeps its sockets open: a claim sent to it gets
    // no answer, and its link stays up for a while.
    let frozen = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.signal_router(frozen, "STOP");
    connect_many(&gateway, 24);
    let left: Vec<usize> = (1..=3).filter(|n| *n != frozen).collect();
    let metrics = metrics_until(&ops, "the frozen router's shards moved", |m| spread_over(m, &left));
    assert_eq!(claims(&metrics, "not_granted"), 0.0, "{metrics:#?}");
    cluster.signal_router(frozen, "CONT");
}

/// The wills of transient sessions are held by their shards' owners: a
/// connection lost without DISCONNECT has its will published by the owner,
/// through the leader when the owner is another router; one that
/// disconnects normally has none. A connection taken over by a newer one
/// has its will published once.
#[test]
fn shard_owners_publish_the_wills_of_transient_sessions_through_the_leader() {
    let (cluster, _leader, gateway, _ops) = spread_cluster(&[("HERALD_OPS", "127.0.0.1:0")]);
    let routers: Vec<String> = (1..=3).map(|node| ops_address(&cluster.router_output(node))).collect();
    let mut wills = subscriber(&gateway, Version::V5).topic("wills/#").qos(1).start();
    let connect = |client: &str| {
        let mut connection = RawConnection::open(&gateway);
        let topic = format!("wills/{client}");
        connection.send(&connect_v5(client, 0, true, Some((&topic, "gone"))));
        assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
        connection
    };
    let clients: Vec<String> = (0..12).map(|n| format!("lost-{n}")).collect();
    let lost: Vec<RawConnection> = clients.iter().map(|c| connect(c)).collect();
    let mut quiet = connect("quiet");
    quiet.send(&[0xE0, 0x00]); // normal disconnection: no will
    let taken = connect("taken");
    let mut taker = connect("taken");
    drop(lost); // closed without DISCONNECT: their wills go
    let mut fired: Vec<String> = wills.expect_messages(13).into_iter().map(|m| m.topic).collect();
    fired.sort();
    let mut expected: Vec<String> =
        clients.iter().chain(["taken".to_owned()].iter()).map(|c| format!("wills/{c}")).collect();
    expected.sort();
    assert_eq!(fired, expected, "each lost connection's will once, the taken over one's too");
    wills.expect_silence(Duration::from_millis(500));
    drop(taken);
    taker.send(&[0xE0, 0x00]);

    // Published by the owners: some through the leader from another router.
    let outcome = |ops: &str, outcome: &str| {
        let (status, lines) = fetch(ops, "/metrics");
        assert_eq!(status, 200);
        let name = format!("herald_router_registry_wills_total{{outcome=\"{outcome}\"}}");
        samples(&lines).get(&name).copied().unwrap_or_else(|| panic!("no {name} in {lines:#?}"))
    };
    let here: f64 = routers.iter().map(|ops| outcome(ops, "here")).sum();
    let forwarded: f64 = routers.iter().map(|ops| outcome(ops, "forwarded")).sum();
    assert_eq!(here + forwarded, 13.0, "every will published by its shard's owner");
    assert!(forwarded >= 1.0, "some owners are not the leader: {forwarded} forwarded");
    assert_eq!(routers.iter().map(|ops| outcome(ops, "dropped")).sum::<f64>(), 0.0);
}

/// The sessions each router's registry shards know (their
/// `herald_router_registry_sessions` gauges; `routers` are their operations
/// addresses).
fn sessions_known(routers: &[String]) -> Vec<f64> {
    routers
        .iter()
        .map(|ops| {
            samples(&fetch(ops, "/metrics").1)
                .get("herald_router_registry_sessions{}")
                .copied()
                .unwrap_or(0.0)
        })
        .collect()
}

/// Connects `client` through `gateway` (transient, with a will on
/// `wills/{client}` if `will`) until it lands on a shard of a router other
/// than `avoid`, trying `{client}-0`, `{client}-1`, ...: the client id, its
/// connection and its shard's owner (1-based).
fn connect_off(
    gateway: &std::net::SocketAddr,
    routers: &[String],
    avoid: usize,
    client: &str,
    will: bool,
) -> (String, RawConnection, usize) {
    for n in 0..20 {
        let client = format!("{client}-{n}");
        let before = sessions_known(routers);
        let mut connection = RawConnection::open(gateway);
        let topic = format!("wills/{client}");
        connection.send(&connect_v5(&client, 0, true, will.then_some((topic.as_str(), "gone"))));
        assert_eq!(connection.expect_packet().first_byte, 0x20, "CONNACK");
        let deadline = Instant::now() + Duration::from_secs(10);
        let owner = loop {
            let after = sessions_known(routers);
            if after.iter().sum::<f64>() == before.iter().sum::<f64>() + 1.0
                && let Some(owner) = (0..routers.len()).find(|i| after[*i] == before[*i] + 1.0)
            {
                break owner + 1;
            }
            assert!(Instant::now() < deadline, "the session is known: {before:?} then {after:?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        if owner != avoid {
            return (client, connection, owner);
        }
        connection.send(&[0xE0, 0x00]);
        let _ = connection.expect_closed();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sessions_known(routers).iter().sum::<f64>() != before.iter().sum::<f64>() {
            assert!(Instant::now() < deadline, "the session ended");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("twenty clients all on shards of router {avoid}");
}

/// A transient connection taken over ends on its shard owner's word, without
/// waiting for the leader: with the leader stopped, a client connecting again
/// through the other gateway has its old connection closed with DISCONNECT
/// 0x8E at once; its new connection is accepted once the leader resumes.
#[test]
fn a_shard_owner_ends_a_transient_connection_taken_over_while_the_leader_is_stopped() {
    let (mut cluster, leader, first, _ops) = spread_cluster(&[("HERALD_OPS", "127.0.0.1:0")]);
    let second = cluster.start_gateway_with(&[1, 2, 3], &[]);
    let routers: Vec<String> = (1..=3).map(|node| ops_address(&cluster.router_output(node))).collect();
    // A client whose shard a follower owns.
    let (client, mut old, _) = connect_off(&first, &routers, leader, "roamer", false);

    cluster.signal_router(leader, "STOP");
    let mut new = RawConnection::open(&second);
    new.send(&connect_v5(&client, 0, true, None));
    let ended = old.receive(Duration::from_secs(3));
    cluster.signal_router(leader, "CONT");
    match ended {
        Incoming::Packet(packet) => {
            assert_eq!((packet.first_byte, packet.body.first()), (0xE0, Some(&0x8E)), "taken over")
        }
        other => panic!("the old connection got {other:?} while the leader was stopped"),
    }
    let connack = new.expect_packet();
    assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "the new connection is accepted");
}

/// A transient session's will moves with its shard: when the router that
/// owns it is lost, the gateway lists the session, will included, to the
/// shard's new owner, which publishes the will when the connection is lost.
#[test]
fn a_transient_sessions_will_moves_with_its_shard_when_its_owner_is_lost() {
    let (mut cluster, leader, gateway, _ops) =
        spread_cluster(&[("HERALD_OPS", "127.0.0.1:0"), ("HERALD_RAFT_REGISTRY_MOVE_AFTER_MS", "1000")]);
    let routers: Vec<String> = (1..=3).map(|node| ops_address(&cluster.router_output(node))).collect();
    let mut wills = subscriber(&gateway, Version::V5).topic("wills/#").qos(1).start();
    let (client, connection, owner) = connect_off(&gateway, &routers, leader, "moving", true);
    cluster.kill_router(owner);
    let left: Vec<usize> = (1..=3).filter(|n| *n != owner).collect();
    cluster.wait_for_shards_over(&left);
    // Listed to the new owners: the two sessions are known again.
    let alive: Vec<String> = left.iter().map(|n| routers[n - 1].clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sessions_known(&alive).iter().sum::<f64>() != 2.0 {
        assert!(Instant::now() < deadline, "listed again: {:?}", sessions_known(&alive));
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(connection); // lost without DISCONNECT
    let fired: Vec<String> = wills.expect_messages(1).into_iter().map(|m| m.topic).collect();
    assert_eq!(fired, [format!("wills/{client}")]);
    wills.expect_silence(Duration::from_millis(500));
}
