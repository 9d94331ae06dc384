//! The session registry kept in a real `redis-server` across a change of
//! leader (ADR 0029): each router writes the sessions of the registry shards
//! it owns (ADR 0033); the new leader restarts every shard, whose owners
//! write them whole at later generations, with the sessions the gateways
//! gave back and the persistent ones offline, and what no router knows any
//! more leaves it.

use crate::raft_cluster::RaftCluster;
use crate::support::{Version, subscriber};
use herald_testkit::redis::RedisServer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn key(client: &str) -> String {
    format!("herald:session:default/{client}")
}

fn generation(redis: &RedisServer) -> u64 {
    redis.cli(&["GET", "herald:registry:generation"]).parse().unwrap_or(0)
}

/// The generation of an epoch written `GENERATION.COUNTER`.
fn generation_of(epoch: &str) -> u64 {
    epoch.split_once('.').and_then(|(generation, _)| generation.parse().ok()).unwrap_or(0)
}

#[test]
fn with_the_registry_in_redis_a_new_leader_writes_it_again_at_a_later_generation() {
    let redis = RedisServer::start();
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_REGISTRY_REDIS", &redis.url())]);
    let gateway = cluster.start_gateway();
    // A persistent session: the new leader restores it offline from the
    // replicated state before the gateway gives it back.
    let mut kept = subscriber(&gateway, Version::V5).client_id("kept").persistent().topic("t").qos(1).start();
    let holder = redis.wait_for(&["HGET", &key("kept"), "gateway"], WAIT, |o| o == "1");
    assert_eq!(holder, "1", "the gateway (node 1) holds the session");
    let epoch = redis.cli(&["HGET", &key("kept"), "epoch"]);
    let first = generation(&redis);
    // Its shard's generation: the leader's when it started, or a later one
    // (the leader restarts a router's inherited shards after it started).
    assert!(generation_of(&epoch) >= first, "epoch {epoch} of generation {first} or later");
    // An entry of this generation that no router will know after the change.
    let ghost =
        ["HSET", &key("ghost"), "gateway", "1", "epoch", &format!("{first}.1"), "writer", &first.to_string()];
    assert_eq!(redis.cli(&ghost), "3");

    let leader = cluster.leader();
    cluster.kill_router(leader);
    assert_ne!(cluster.leader(), leader);
    let raised = redis.wait_for(&["GET", "herald:registry:generation"], WAIT, |o| {
        o.parse::<u64>().is_ok_and(|g| g > first)
    });
    let second: u64 = raised.parse().expect("a later generation");
    assert!(second > first, "the new leader raised the generation ({first} -> {raised})");
    let gone = redis.wait_for(&["EXISTS", &key("ghost")], WAIT, |o| o == "0");
    assert_eq!(gone, "0", "what no router knows leaves the registry");
    // The session the gateway gave back keeps its epoch; a new one gets the new generation's.
    let back =
        redis.wait_for(&["HMGET", &key("kept"), "gateway", "epoch"], WAIT, |o| o == format!("1\n{epoch}"));
    assert_eq!(back, format!("1\n{epoch}"));
    let _fresh = subscriber(&gateway, Version::V5).client_id("fresh").topic("t").qos(1).start();
    let fresh = redis.wait_for(&["HGET", &key("fresh"), "epoch"], WAIT, |o| !o.is_empty());
    assert!(generation_of(&fresh) >= second, "epoch {fresh} of generation {second} or later");
    assert_eq!(kept.connects(), 1, "the client stayed connected through the change of leader");
}

/// A persistent session offline is known only to the replicated state once
/// its shard restarted: its owner writes it from there, so it stays in
/// Redis across the change of leader, and leaves when it expires.
#[test]
fn an_offline_session_stays_in_redis_across_a_change_of_leader_and_leaves_when_it_expires() {
    let redis = RedisServer::start();
    let mut cluster = RaftCluster::start_with(3, &[("HERALD_REGISTRY_REDIS", &redis.url())]);
    let gateway = cluster.start_gateway();
    cluster.wait_for_shards_over(&[1, 2, 3]);
    subscriber(&gateway, Version::V5)
        .client_id("away")
        .session_expiry(20)
        .topic("t")
        .qos(1)
        .exit_after_subscribe()
        .start();
    // Expiry, then holder: none.
    let offline = redis.wait_for(&["HMGET", &key("away"), "expiry", "gateway"], WAIT, |o| o == "20");
    assert_eq!(offline, "20", "offline, expiring 20 s after it left");
    let first = generation(&redis);

    let leader = cluster.leader();
    cluster.kill_router(leader);
    assert_ne!(cluster.leader(), leader);
    // Every shard restarted or moved: its owner wrote it whole, "away" with
    // it, at the shard's new generation.
    let later = |o: &str| o.parse::<u64>().is_ok_and(|g| g > first);
    let writer = redis.wait_for(&["HGET", &key("away"), "writer"], WAIT, later);
    assert!(later(&writer), "written again at a generation above {first}: {writer}");
    assert_eq!(redis.cli(&["HMGET", &key("away"), "expiry", "gateway"]), "20");
    let gone = redis.wait_for(&["EXISTS", &key("away")], Duration::from_secs(40), |o| o == "0");
    assert_eq!(gone, "0", "an expired session leaves the registry");
}
