//! The session registry kept in a real `redis-server` across a change of
//! leader (ADR 0029): the new leader writes it whole at its own, later
//! generation, with the sessions its gateways gave back, and what no router
//! knows any more leaves it.

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
