//! The registry writer against a real `redis-server`: each session's entry
//! is fenced by the writer's generation of that session's shard.

use super::*;
use crate::state::Holder;
use herald_core::{Epoch, NodeId, REGISTRY_SHARDS, UnixMillis};
use herald_testkit::redis::RedisServer;

/// The registry as a router would hand it over: fixed generations and
/// entries.
struct Fixed(ShardGenerations, Vec<RegistryEntry>);

impl Snapshots for Fixed {
    fn snapshot(&self, queued: &mut mpsc::Receiver<Vec<RegistryEntry>>) -> Snapshot {
        while queued.try_recv().is_ok() {}
        Snapshot::Ready(self.0.clone(), self.1.clone())
    }
}

fn session(client: &str) -> SessionKey {
    SessionKey::new(AppId::default_app(), ClientId::new(client.to_owned()).expect("client id"))
}

/// A client id on `shard` (`on`) or off it, not in `taken`.
fn client(shard: ShardId, on: bool, taken: &[&str]) -> String {
    (0..)
        .map(|i| format!("d{i}"))
        .find(|c| (ShardId::of(&session(c)) == shard) == on && !taken.contains(&c.as_str()))
        .expect("a client id")
}

fn key(client: &str) -> String {
    format!("herald:session:default/{client}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entry_is_fenced_by_the_writers_generation_of_its_shard() {
    let redis = RedisServer::start();
    // This writer moved shard `moved` here at generation 9; its other
    // shards are at 4.
    let moved = ShardId::of(&session("a"));
    let mut generations = vec![4; usize::from(REGISTRY_SHARDS)];
    generations[moved.index()] = 9;
    let generations = ShardGenerations::from_table(generations);
    let b = client(moved, false, &[]);
    let (ghost_moved, ghost_kept) = (client(moved, true, &["a"]), client(moved, false, &[&b]));
    // What other writers left, each at generation 6 of its shard: older
    // than this writer's 9 on `moved`, newer than its 4 elsewhere.
    for c in ["a", b.as_str(), ghost_moved.as_str(), ghost_kept.as_str()] {
        assert_eq!(redis.cli(&["HSET", &key(c), "gateway", "5", "epoch", "6.1", "writer", "6"]), "3");
    }

    let holder = |counter| Holder {
        gateway: Some(NodeId(1)),
        epoch: Epoch::new(9, counter),
        since: UnixMillis(1),
        expiry_seconds: 0,
    };
    let entries = vec![
        RegistryEntry { session: session("a"), held: Some(holder(1)) },
        RegistryEntry { session: session(&b), held: Some(holder(2)) },
    ];
    let config = RedisRegistryConfig {
        address: RedisAddress::parse(&redis.url()).expect("url"),
        prefix: "herald:".to_owned(),
    };
    let stats = std::sync::Arc::new(RegistryStats::default());
    let (mirror, task) = start(config, Fixed(generations, entries), stats.clone());
    let writer = tokio::spawn(task);

    let wait = Duration::from_secs(10);
    let written = redis.wait_for(&["HMGET", &key("a"), "gateway", "writer"], wait, |o| o == "1\n9");
    assert_eq!(written, "1\n9", "shard {moved}'s entry: written at its generation 9");
    let gone = redis.wait_for(&["EXISTS", &key(&ghost_moved)], wait, |o| o == "0");
    assert_eq!(gone, "0", "unknown on shard {moved}, from generation 6: deleted");
    // Another shard, at 4 here: what generation 6 wrote stays as it was.
    assert_eq!(redis.cli(&["HMGET", &key(&b), "gateway", "writer"]), "5\n6");
    assert_eq!(redis.cli(&["HMGET", &key(&ghost_kept), "gateway", "writer"]), "5\n6");
    assert_eq!(stats.fenced.load(Ordering::Relaxed), 2, "the write and the delete refused");
    assert_eq!(redis.cli(&["GET", "herald:registry:generation"]), "9", "the writer's highest generation");
    drop(mirror);
    writer.abort();
}

/// A writer that owns some shards (a router of a cluster) leaves the
/// others' entries alone when it writes its own whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_of_some_shards_leaves_the_others_entries_alone() {
    let redis = RedisServer::start();
    let mine = ShardId::of(&session("a"));
    let mut generations = vec![0; usize::from(REGISTRY_SHARDS)];
    generations[mine.index()] = 3;
    let (ours_gone, theirs) = (client(mine, true, &["a"]), client(mine, false, &[]));
    for c in [ours_gone.as_str(), theirs.as_str()] {
        assert_eq!(redis.cli(&["HSET", &key(c), "gateway", "5", "epoch", "1.1", "writer", "1"]), "3");
    }
    let held =
        Holder { gateway: Some(NodeId(1)), epoch: Epoch::new(3, 1), since: UnixMillis(1), expiry_seconds: 0 };
    let entries = vec![RegistryEntry { session: session("a"), held: Some(held) }];
    let config = RedisRegistryConfig {
        address: RedisAddress::parse(&redis.url()).expect("url"),
        prefix: "herald:".to_owned(),
    };
    let stats = std::sync::Arc::new(RegistryStats::default());
    let (mirror, task) =
        start(config, Fixed(ShardGenerations::from_table(generations), entries), stats.clone());
    let writer = tokio::spawn(task);
    let wait = Duration::from_secs(10);
    assert_eq!(redis.wait_for(&["HGET", &key("a"), "writer"], wait, |o| o == "3"), "3");
    assert_eq!(
        redis.wait_for(&["EXISTS", &key(&ours_gone)], wait, |o| o == "0"),
        "0",
        "unknown on its shard"
    );
    assert_eq!(redis.cli(&["HMGET", &key(&theirs), "gateway", "writer"]), "5\n1", "another router's shard");
    assert_eq!(stats.fenced.load(Ordering::Relaxed), 0, "nothing of another shard even tried");
    drop(mirror);
    writer.abort();
}
