//! The session registry kept in a real `redis-server` (ADR 0029): one hash
//! per session that follows connections, is written whole at start and
//! after Redis lost it, never overwrites what a later generation wrote,
//! and never holds a connect back while Redis is down.

use crate::support::{Broker, RawConnection, connect_v5};
use herald_testkit::redis::RedisServer;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(15);

fn key(client: &str) -> String {
    format!("herald:session:default/{client}")
}

/// Connects `client` with session expiry `expiry_seconds`; asserts it is accepted.
fn connect(broker: &Broker, client: &str, expiry_seconds: u32) -> RawConnection {
    let mut connection = RawConnection::open(broker);
    connection.send(&connect_v5(client, expiry_seconds, true, None));
    let connack = connection.expect_packet();
    assert_eq!((connack.first_byte, connack.body[1]), (0x20, 0x00), "{client}: accepted");
    connection
}

/// The `gateway` and `expiry` fields of `client`'s hash, once `check` holds.
fn held(redis: &RedisServer, client: &str, check: impl Fn(&str) -> bool) -> String {
    let output = redis.wait_for(&["HMGET", &key(client), "gateway", "expiry"], WAIT, &check);
    assert!(check(&output), "{client}: the registry holds {output:?}");
    output
}

#[test]
fn the_registry_in_redis_follows_sessions_and_is_written_again_after_redis_lost_it() {
    let mut redis = RedisServer::start();
    // A session of an earlier run that no router knows any more, and one
    // written by a router of a later generation (this one is stale to it).
    let ghost = ["HSET", &key("ghost"), "gateway", "9", "epoch", "1.5", "writer", "1"];
    assert_eq!(redis.cli(&ghost), "3");
    let future = ["HSET", &key("future"), "gateway", "7", "epoch", "999999.1", "writer", "999999"];
    assert_eq!(redis.cli(&future), "3");
    let broker = Broker::start_with(&[], &[("HERALD_REGISTRY_REDIS", &redis.url())]);

    // The start writes the registry whole: what the router does not know
    // goes, unless a later generation wrote it.
    let gone = redis.wait_for(&["EXISTS", &key("ghost")], WAIT, |o| o == "0");
    assert_eq!(gone, "0", "a session no router knows is deleted");
    let generation: u64 = redis.cli(&["GET", "herald:registry:generation"]).parse().expect("a generation");
    assert!(generation >= 1);

    // Online: held by the gateway (node 1) at an epoch of this generation.
    let _online = connect(&broker, "dev-1", 0);
    held(&redis, "dev-1", |o| o == "1\n0");
    let epoch = redis.cli(&["HGET", &key("dev-1"), "epoch"]);
    assert!(epoch.starts_with(&format!("{generation}.")), "epoch {epoch} of generation {generation}");
    // Persistent and gone offline: kept, held by no gateway.
    let mut persistent = connect(&broker, "dev-2", 300);
    held(&redis, "dev-2", |o| o == "1\n300");
    persistent.send(&[0xE0, 0x00]);
    held(&redis, "dev-2", |o| o == "300"); // an empty gateway, then the expiry
    // Transient and gone: deleted.
    let mut transient = connect(&broker, "dev-3", 0);
    held(&redis, "dev-3", |o| o == "1\n0");
    transient.send(&[0xE0, 0x00]);
    let deleted = redis.wait_for(&["EXISTS", &key("dev-3")], WAIT, |o| o == "0");
    assert_eq!(deleted, "0", "an ended transient session leaves the registry");
    // The later generation's entry is fenced: neither deleted nor overwritten.
    let _fenced = connect(&broker, "future", 0);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.cli(&["HMGET", &key("future"), "gateway", "writer"]), "7\n999999");

    // Redis restarts empty (no persistence): the registry is written again.
    redis.restart();
    held(&redis, "dev-1", |o| o == "1\n0");
    held(&redis, "dev-2", |o| o == "300"); // an empty gateway, then the expiry

    // Redis down: connects go on; the registry catches up when it is back.
    redis.stop();
    let _meanwhile = connect(&broker, "dev-4", 0);
    redis.restart();
    held(&redis, "dev-4", |o| o == "1\n0");
    held(&redis, "dev-1", |o| o == "1\n0");
}
