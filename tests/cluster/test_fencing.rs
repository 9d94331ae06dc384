//! Fencing: a gateway that lost a session while it was stopped delivers
//! nothing for it and publishes no will for it when it resumes (a
//! persistent session resumed elsewhere, and a transient one taken over,
//! whose will fires once, at the takeover); the same
//! client id racing on two gateways ends with one session. Each test runs
//! with the registry in one router's memory, kept in a real `redis-server`
//! too (ADR 0029), where it must name the same owner, and with the
//! registry shards spread over three routers (ADR 0033), also while one of
//! them is lost and its shards move.

use crate::cluster::Cluster;
use crate::raft_cluster::RaftCluster;
use crate::support::{Incoming, RawConnection, Version, connect_v5, publisher, subscriber};
use herald_testkit::redis::RedisServer;
use std::time::Duration;

/// Two gateways and the routers behind them.
enum Setup {
    /// One router.
    One(Cluster),
    /// Three routers, each owning a third of the registry shards.
    Three(RaftCluster),
}

impl Setup {
    fn gateway(&self, index: usize) -> std::net::SocketAddr {
        match self {
            Setup::One(cluster) => cluster.gateway(index),
            Setup::Three(cluster) => cluster.gateway(index),
        }
    }

    fn signal_gateway(&self, index: usize, signal: &str) {
        match self {
            Setup::One(cluster) => cluster.signal_gateway(index, signal),
            Setup::Three(cluster) => cluster.signal_gateway(index, signal),
        }
    }
}

/// Starts a router (its registry in `redis`, if given) and two gateways.
fn cluster(redis: Option<&RedisServer>) -> Setup {
    Setup::One(match redis {
        Some(redis) => Cluster::start_with(2, &[("HERALD_REGISTRY_REDIS", &redis.url())]),
        None => Cluster::start(2),
    })
}

/// Starts three routers, with `environment`, and two gateways that know
/// them all; waits until the registry shards are spread over the three.
fn three_routers(environment: &[(&str, &str)]) -> Setup {
    let mut cluster = RaftCluster::start_with(3, environment);
    cluster.start_gateway();
    cluster.start_gateway();
    cluster.wait_for_shards_over(&[1, 2, 3]);
    Setup::Three(cluster)
}

/// Waits until Redis names gateway `node` as `client`'s holder; returns
/// the epoch it names.
fn held_in_redis(redis: &RedisServer, client: &str, node: &str) -> String {
    let key = format!("herald:session:default/{client}");
    let holder = redis.wait_for(&["HGET", &key, "gateway"], Duration::from_secs(5), |o| o == node);
    assert_eq!(holder, node, "{client}: the registry in Redis names gateway {holder:?}");
    redis.cli(&["HGET", &key, "epoch"])
}

/// A v5 CONNECT for `client` with session expiry 60 s, optionally clean start and optionally a
/// QoS 1 will on `wills/{client}`.
fn connect_with_will(client: &str, clean_start: bool, will: bool) -> Vec<u8> {
    let topic = format!("wills/{client}");
    connect_v5(client, 60, clean_start, will.then_some((topic.as_str(), "gone")))
}

/// SUBSCRIBE packet id 1, no properties, to `topic` at QoS 1 (v5).
fn subscribe_v5(topic: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.push(0x01);
    let mut packet = vec![0x82, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn a_stopped_gateway_that_lost_a_session_delivers_nothing_and_publishes_no_will() {
    stale_gateway(None);
}

#[test]
fn with_the_registry_in_redis_a_stopped_gateway_that_lost_a_session_delivers_nothing() {
    let redis = RedisServer::start();
    stale_gateway(Some(&redis));
}

#[test]
fn with_the_shards_on_three_routers_a_stopped_gateway_that_lost_a_session_delivers_nothing() {
    stale_gateway_in(three_routers(&[]), None);
}

fn stale_gateway(redis: Option<&RedisServer>) {
    stale_gateway_in(cluster(redis), redis);
}

fn stale_gateway_in(cluster: Setup, redis: Option<&RedisServer>) {
    let mut wills = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();

    let mut old = RawConnection::open(&cluster.gateway(0));
    old.send(&connect_with_will("roamer2", true, true));
    assert_eq!(old.expect_packet().first_byte, 0x20, "CONNACK");
    old.send(&subscribe_v5("stale/t"));
    assert_eq!(old.expect_packet().first_byte, 0x90, "SUBACK");

    cluster.signal_gateway(0, "STOP");
    let mut new = RawConnection::open(&cluster.gateway(1));
    new.send(&connect_with_will("roamer2", false, false));
    let connack = new.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x01), "CONNACK, session present");
    let epoch = redis.map(|redis| held_in_redis(redis, "roamer2", "2"));
    publisher(&cluster.gateway(1), Version::V5, "stale/t").qos(1).message("for the new owner").run();
    let delivered = new.expect_packet();
    assert_eq!(delivered.first_byte & 0xF0, 0x30, "the new connection gets the message");

    resume_stale_gateway(&cluster, &mut old, &mut new, "stale/t");
    wills.expect_silence(Duration::from_millis(1_000));
    // The stale gateway changed nothing in the registry either.
    if let (Some(redis), Some(epoch)) = (redis, epoch) {
        assert_eq!(held_in_redis(redis, "roamer2", "2"), epoch);
    }
}

/// The transient case: the client connects again through the other gateway
/// with a clean start, which takes the stopped gateway's connection over, so
/// that connection's will fires, once, when the takeover happens; the
/// resumed gateway then delivers nothing on it and publishes no will.
#[test]
fn a_stopped_gateway_that_lost_a_transient_session_delivers_nothing_and_its_will_fires_once() {
    stale_transient(cluster(None));
}

#[test]
fn with_the_shards_on_three_routers_a_stopped_gateway_that_lost_a_transient_session_delivers_nothing() {
    stale_transient(three_routers(&[]));
}

fn stale_transient(cluster: Setup) {
    let mut wills = subscriber(&cluster.gateway(1), Version::V5).topic("wills/#").qos(1).start();
    let mut old = RawConnection::open(&cluster.gateway(0));
    old.send(&connect_v5("roamer3", 0, true, Some(("wills/roamer3", "gone"))));
    assert_eq!(old.expect_packet().first_byte, 0x20, "CONNACK");
    old.send(&subscribe_v5("stale/t3"));
    assert_eq!(old.expect_packet().first_byte, 0x90, "SUBACK");

    cluster.signal_gateway(0, "STOP");
    let mut new = RawConnection::open(&cluster.gateway(1));
    new.send(&connect_v5("roamer3", 0, true, None));
    let connack = new.expect_packet();
    assert_eq!((connack.first_byte, connack.body[0]), (0x20, 0x00), "CONNACK, no session present");
    let fired: Vec<String> = wills.expect_messages(1).into_iter().map(|m| m.topic).collect();
    assert_eq!(fired, ["wills/roamer3"], "the taken over connection's will, at the takeover");
    new.send(&subscribe_v5("stale/t3"));
    assert_eq!(new.expect_packet().first_byte, 0x90, "SUBACK");
    publisher(&cluster.gateway(1), Version::V5, "stale/t3").qos(1).message("for the new owner").run();
    assert_eq!(new.expect_packet().first_byte & 0xF0, 0x30, "the new connection gets the message");

    resume_stale_gateway(&cluster, &mut old, &mut new, "stale/t3");
    wills.expect_silence(Duration::from_millis(1_000));
}

/// Resumes the stopped gateway 0: it closes the `old` connection (telling
/// it, perhaps, that it was taken over) without delivering anything on it,
/// and serves again: its publish to `topic` reaches the `new` connection.
fn resume_stale_gateway(cluster: &Setup, old: &mut RawConnection, new: &mut RawConnection, topic: &str) {
    cluster.signal_gateway(0, "CONT");
    let last_words = old.expect_closed();
    assert!(
        last_words.iter().all(|packet| packet.first_byte & 0xF0 != 0x30),
        "the stale connection delivered {last_words:?}"
    );
    publisher(&cluster.gateway(0), Version::V5, topic).qos(1).message("after the resume").run();
    assert_eq!(new.expect_packet().first_byte & 0xF0, 0x30, "the new owner gets it");
}

/// A QoS 1 PUBLISH to `topic`, packet id 1, no properties (v5).
fn publish_v5(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = (topic.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&[0x00, 0x01, 0x00]); // packet id 1, no properties
    body.extend_from_slice(payload);
    let mut packet = vec![0x32, body.len() as u8];
    packet.extend(body);
    packet
}

/// Reads packets until one of type `kind` (first byte without flags) or the close.
fn next_of(connection: &mut RawConnection, kind: u8, wait: Duration) -> Option<crate::support::Packet> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match connection.receive(left) {
            Incoming::Packet(packet) if packet.first_byte & 0xF0 == kind => return Some(packet),
            Incoming::Packet(_) => {}
            Incoming::Closed | Incoming::Silent => return None,
        }
    }
}

/// Two hundred rounds of the same client id connecting to both gateways at once, with a
/// jitter of up to 2 ms between them: each round exactly one connection survives (the other
/// gets DISCONNECT 0x8E), a QoS 1 message published afterwards reaches the survivor once, and
/// the loser's will fires exactly once.
#[test]
fn the_same_client_id_racing_on_two_gateways_ends_with_one_session_every_round() {
    race(None);
}

/// The same rounds, the registry kept in Redis: after each, Redis names
/// the survivor's gateway.
#[test]
fn with_the_registry_in_redis_the_same_client_id_racing_ends_with_one_session_every_round() {
    let redis = RedisServer::start();
    race(Some(&redis));
}

/// The same rounds with the registry shards spread over three routers:
/// each connect is claimed at one of three owners.
#[test]
fn with_the_shards_on_three_routers_the_same_client_id_racing_ends_with_one_session_every_round() {
    race_in(&three_routers(&[]), None, 200);
}

/// Rounds run while a router owning a third of the shards is lost and its
/// shards move to the two others (rebuilt from the gateways' lists): the
/// connects of those shards wait for the move, and every round still ends
/// with one session.
#[test]
fn the_same_client_id_racing_ends_with_one_session_every_round_across_a_lost_shard_owner() {
    let mut setup = three_routers(&[("HERALD_RAFT_REGISTRY_MOVE_AFTER_MS", "1000")]);
    let Setup::Three(cluster) = &mut setup else { unreachable!() };
    let leader = cluster.leader();
    let lost = (1..=3).find(|n| *n != leader).expect("a follower");
    cluster.kill_router(lost);
    race_in(&setup, None, 60);
    let Setup::Three(cluster) = &setup else { unreachable!() };
    let left: Vec<usize> = (1..=3).filter(|n| *n != lost).collect();
    cluster.wait_for_shards_over(&left);
}

fn race(redis: Option<&RedisServer>) {
    race_in(&cluster(redis), redis, 200);
}

fn race_in(cluster: &Setup, redis: Option<&RedisServer>, rounds: u32) {
    let (first, second) = (cluster.gateway(0), cluster.gateway(1));
    let mut wills = subscriber(&first, Version::V5).topic("wills/#").qos(1).start();
    let mut seed = 0x2545_f491_u32;
    // Each round's will that must fire: the one of the connection taken over.
    let mut expected = Vec::new();
    for round in 0..rounds {
        let client = format!("race-{round}");
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let jitter = Duration::from_micros(u64::from(seed >> 16) % 2_000);
        // The two connections' wills say which one fired.
        let topic = format!("wills/{client}");
        let connect_as = |payload| connect_v5(&client, 60, true, Some((topic.as_str(), payload)));
        let late_on_first = seed & 1 == 0;
        let racer = {
            let (connect, address) = (connect_as("early"), if late_on_first { second } else { first });
            std::thread::spawn(move || {
                let mut connection = RawConnection::open(&address);
                connection.send(&connect);
                connection
            })
        };
        std::thread::sleep(jitter);
        let mut late = RawConnection::open(&if late_on_first { first } else { second });
        late.send(&connect_as("late"));
        let early = racer.join().expect("racer");
        let mut connections = [early, late];
        for connection in &mut connections {
            let connack = next_of(connection, 0x20, Duration::from_secs(5)).expect("a CONNACK");
            assert_eq!(connack.body[1], 0x00, "round {round}: accepted {connack:?}");
        }
        // The one taken over is told so and closed; the other stays.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let loser = 'found: loop {
            for (index, connection) in connections.iter_mut().enumerate() {
                if let Some(disconnect) = next_of(connection, 0xE0, Duration::from_millis(5)) {
                    assert_eq!(disconnect.body.first(), Some(&0x8E), "round {round}: taken over");
                    break 'found index;
                }
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: neither connection was taken over");
        };
        expected.push((topic.clone(), if loser == 0 { "early" } else { "late" }.to_owned()));
        let survivor = &mut connections[1 - loser];
        if let Some(redis) = redis {
            // `connections` is [early, late]; gateway index + 1 is its node id.
            let early_on_second = late_on_first;
            let on_second = if loser == 1 { early_on_second } else { !early_on_second };
            held_in_redis(redis, &client, if on_second { "2" } else { "1" });
        }
        survivor.send(&subscribe_v5(&format!("race/{round}")));
        assert!(next_of(survivor, 0x90, Duration::from_secs(5)).is_some(), "round {round}: SUBACK");
        let mut sender = RawConnection::open(&first);
        sender.send(&connect_with_will(&format!("sender-{round}"), true, false));
        next_of(&mut sender, 0x20, Duration::from_secs(5)).expect("CONNACK");
        sender.send(&publish_v5(&format!("race/{round}"), b"once"));
        assert!(next_of(&mut sender, 0x40, Duration::from_secs(5)).is_some(), "round {round}: PUBACK");
        let delivered = next_of(survivor, 0x30, Duration::from_secs(5)).expect("the survivor gets it");
        assert!(delivered.body.ends_with(b"once"), "round {round}: {delivered:?}");
        assert!(next_of(survivor, 0x30, Duration::from_millis(20)).is_none(), "round {round}: once");
        // Normal disconnections: no will. Each is read to its end (the
        // gateway closes it once it has read the DISCONNECT) before the next
        // round, so no socket goes while the gateway may not have read it.
        for connection in [survivor, &mut sender] {
            connection.send(&[0xE0, 0x00]);
            let after = connection.expect_closed();
            assert!(after.is_empty(), "round {round}: nothing after DISCONNECT, got {after:?}");
        }
    }
    let mut fired: Vec<(String, String)> =
        wills.expect_messages(rounds as usize).into_iter().map(|m| (m.topic, m.payload)).collect();
    fired.sort();
    expected.sort();
    assert_eq!(fired, expected, "one will per round, the taken over connection's, none twice");
    wills.expect_silence(Duration::from_millis(300));
}
