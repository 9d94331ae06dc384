//! Tests of the registry shard table: shard events as the replicated state
//! applies them, their log and snapshot forms, a leader taking every shard
//! through a real single-node Raft, and the check that every router applies
//! shard events before one is proposed.

use super::shards::{RAFT_COMMANDS, ShardTable, every_peer_applies_shard_events};
use super::state_machine::Replicated;
use super::*;
use herald_core::REGISTRY_SHARDS;
use herald_proto::grpc::pb::StatusReply;

fn apply(state: &mut Replicated, command: Command) -> Response {
    state.apply(&command).expect("applies")
}

fn event(owner: u64, shards: &[u16]) -> Command {
    Command::Shards { owner, shards: shards.to_vec() }
}

fn every_shard() -> Vec<u16> {
    (0..REGISTRY_SHARDS).collect()
}

#[test]
fn a_shard_event_moves_only_the_shards_it_names_each_above_every_generation_before() {
    // A cluster from before the table, at generation 5.
    let mut state = Replicated { generation: 5, ..Replicated::default() };
    assert_eq!(state.shard_generations(), ShardGenerations::uniform(5));

    let Response::Shards(created) = apply(&mut state, event(1, &every_shard())) else { panic!("shards") };
    assert_eq!(created, vec![6; 64], "created above the cluster's generation");
    let table = state.shards.clone().expect("a table");
    assert_eq!((table.owned_by(1), table.owned_by(2)), (64, 0));

    let Response::Shards(moved) = apply(&mut state, event(2, &[3, 7])) else { panic!("shards") };
    let expected: Vec<u64> = (0..64).map(|s| if s == 3 || s == 7 { 7 } else { 6 }).collect();
    assert_eq!(moved, expected, "the two moved, the others kept theirs");
    let table = state.shards.clone().expect("a table");
    assert_eq!((table.owned_by(1), table.owned_by(2), table.owners[3]), (62, 2, 2));

    // Moving shard 3 back: above shard 7's generation too.
    let Response::Shards(back) = apply(&mut state, event(1, &[3])) else { panic!("shards") };
    assert_eq!((back[3], back[7], back[0]), (8, 7, 6));

    // A new generation for the whole registry rises above every shard's.
    assert_eq!(apply(&mut state, Command::NextGeneration), Response::Generation(9));
    assert_eq!(state.shard_generations(), ShardGenerations::uniform(9));
    let Response::Shards(after) = apply(&mut state, event(1, &[0])) else { panic!("shards") };
    assert_eq!((after[0], after[1]), (10, 9));
}

#[test]
fn a_shard_beyond_the_registry_is_refused_and_changes_nothing() {
    let mut state = Replicated::default();
    apply(&mut state, event(1, &every_shard()));
    let before = state.shards.clone();
    assert!(state.apply(&event(2, &[1, REGISTRY_SHARDS])).is_err());
    assert_eq!(state.shards, before);
}

#[test]
fn a_restored_backup_leaves_every_shard_above_its_epochs_and_above_the_shards_before() {
    let mut state = Replicated::default();
    apply(&mut state, event(1, &every_shard()));
    apply(&mut state, event(1, &[5]));
    let image = journal::encode_image(&DurableImage::default());
    // A backup of an older cluster (generation 1) and of a newer one (40).
    apply(&mut state, Command::Restore { generation: 1, image: image.clone() });
    assert_eq!(state.shard_generations(), ShardGenerations::uniform(2));
    apply(&mut state, Command::Restore { generation: 40, image });
    assert_eq!(state.shard_generations(), ShardGenerations::uniform(40));
    let Response::Shards(after) = apply(&mut state, event(1, &every_shard())) else { panic!("shards") };
    assert_eq!(after, vec![41; 64]);
}

#[test]
fn shard_events_and_tables_survive_their_log_and_snapshot_forms() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(4, 2), 17),
        payload: EntryPayload::Normal(event(2, &[0, 9, 63])),
    };
    let bytes = log_store::encode_entry(&entry);
    // Entry format 2, command tag 3 (golden file).
    let stored = herald_testkit::golden::check(&fixtures().join("entries-v2-shards.bin"), &bytes);
    assert_eq!(log_store::decode_entry(&stored).expect("decodes"), entry);
    let mut odd = bytes.clone();
    odd.push(1);
    assert!(log_store::decode_entry(&odd).is_err(), "half a shard is an error, not a panic");

    let mut state = Replicated { generation: 3, ..Replicated::default() };
    apply(&mut state, event(1, &every_shard()));
    apply(&mut state, event(2, &[9]));
    state.durable.apply(Fact::Retained(tests::retained_message("status", b"ready")));
    // Snapshot version 2: the table between the generation and the image.
    let stored = herald_testkit::golden::check(&fixtures().join("snapshot-v2.bin"), &state.encode());
    let decoded = Replicated::decode(&stored).expect("decodes");
    assert_eq!((decoded.generation, &decoded.shards), (3, &state.shards));
    assert_eq!(decoded.durable.image(), state.durable.image());
    assert_eq!(decoded.shard_generations(), state.shard_generations());
    assert!(Replicated::decode(&stored[..20]).is_err(), "a cut table is an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_takes_every_shard_at_a_generation_above_its_last_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::start_single(dir.path(), 7, "127.0.0.1:0").await.expect("start");
    assert_eq!(node.take_registry().await.expect("commit"), ShardGenerations::uniform(1));
    let table = || node.state.lock().expect("unpoisoned").shards.clone().expect("a table");
    assert_eq!(table().owned_by(7), 64);
    node.shutdown().await;

    let node = RaftNode::start_single(dir.path(), 7, "127.0.0.1:0").await.expect("restart");
    assert_eq!(node.take_registry().await.expect("commit"), ShardGenerations::uniform(2));
    tests::snapshot(&node).await;
    node.shutdown().await;
    std::fs::remove_dir_all(dir.path().join("log")).expect("remove the log");
    std::fs::remove_file(dir.path().join("committed")).ok();
    let node = RaftNode::start_single(dir.path(), 7, "127.0.0.1:0").await.expect("restart from the snapshot");
    assert_eq!(node.take_registry().await.expect("commit"), ShardGenerations::uniform(3));
    node.shutdown().await;
}

#[test]
fn a_shard_event_waits_until_every_router_says_it_applies_them() {
    let peers: BTreeMap<u64, String> = [(2, "a".to_owned()), (3, "b".to_owned())].into();
    let answer = |node_id, raft_commands| StatusReply { node_id, raft_commands, ..StatusReply::default() };
    assert!(every_peer_applies_shard_events(&peers, &[answer(2, RAFT_COMMANDS), answer(3, RAFT_COMMANDS)]));
    assert!(
        !every_peer_applies_shard_events(&peers, &[answer(2, RAFT_COMMANDS), answer(3, 0)]),
        "an older router"
    );
    assert!(
        !every_peer_applies_shard_events(&peers, &[answer(2, RAFT_COMMANDS)]),
        "a router that did not answer"
    );
    assert!(every_peer_applies_shard_events(&BTreeMap::new(), &[]), "a single router");
}

#[test]
fn a_table_is_refused_unless_it_has_one_entry_per_shard() {
    let mut bytes = Vec::new();
    ShardTable::new(4).encode(&mut bytes);
    assert!(ShardTable::decode(&bytes).is_some());
    bytes[0] = 63;
    assert!(ShardTable::decode(&bytes).is_none());
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/raft")
}
