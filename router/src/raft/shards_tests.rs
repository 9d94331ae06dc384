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

mod spreading {
    use super::super::shards::spread;
    use herald_core::REGISTRY_SHARDS;
    use std::collections::{BTreeMap, BTreeSet};

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    /// The owners after applying `events` to `owners`.
    fn applied(owners: &[u64], events: &[(u64, Vec<u16>)]) -> Vec<u64> {
        let mut owners = owners.to_vec();
        for (owner, shards) in events {
            for shard in shards {
                owners[usize::from(*shard)] = *owner;
            }
        }
        owners
    }

    fn counts(owners: &[u64]) -> BTreeMap<u64, usize> {
        let mut counts = BTreeMap::new();
        for owner in owners {
            *counts.entry(*owner).or_default() += 1;
        }
        counts
    }

    fn moved(events: &[(u64, Vec<u16>)]) -> usize {
        events.iter().map(|(_, shards)| shards.len()).sum()
    }

    #[test]
    fn a_new_table_is_spread_evenly_over_the_live_routers() {
        let owners = vec![0; usize::from(REGISTRY_SHARDS)];
        let events = spread(&owners, &set(&[1, 2, 3]), &set(&[]), false);
        assert_eq!(events.len(), 3, "one command per router: {events:?}");
        assert_eq!(counts(&applied(&owners, &events)), BTreeMap::from([(1, 22), (2, 21), (3, 21)]));
    }

    #[test]
    fn a_balanced_table_with_every_owner_live_needs_no_event() {
        let owners = applied(&[0; 64], &spread(&[0; 64], &set(&[1, 2, 3]), &set(&[]), false));
        assert_eq!(spread(&owners, &set(&[1, 2, 3]), &set(&[]), false), []);
    }

    #[test]
    fn only_the_shards_of_a_router_not_live_move_and_they_are_shared_out() {
        let owners = applied(&[0; 64], &spread(&[0; 64], &set(&[1, 2, 3]), &set(&[]), false));
        let events = spread(&owners, &set(&[1, 3]), &set(&[]), false);
        assert_eq!(moved(&events), 21, "router 2's shards, no others: {events:?}");
        let after = applied(&owners, &events);
        assert_eq!(counts(&after), BTreeMap::from([(1, 32), (3, 32)]));
        for shard in 0..64 {
            if owners[shard] != 2 {
                assert_eq!(after[shard], owners[shard], "shard {shard} stays");
            }
        }
    }

    #[test]
    fn a_router_that_joins_or_comes_back_takes_its_share_from_the_others() {
        let two = applied(&[0; 64], &spread(&[0; 64], &set(&[1, 3]), &set(&[]), false));
        let events = spread(&two, &set(&[1, 2, 3]), &set(&[]), false);
        assert_eq!(events.iter().map(|(owner, _)| *owner).collect::<Vec<_>>(), [2], "{events:?}");
        let after = applied(&two, &events);
        assert_eq!(counts(&after), BTreeMap::from([(1, 22), (2, 20), (3, 22)]));
    }

    #[test]
    fn everything_restarts_every_shard_where_it_is_and_a_restarted_router_its_own() {
        let owners = applied(&[0; 64], &spread(&[0; 64], &set(&[1, 2, 3]), &set(&[]), false));
        let all = spread(&owners, &set(&[1, 2, 3]), &set(&[]), true);
        assert_eq!(moved(&all), 64);
        assert_eq!(applied(&owners, &all), owners, "nothing moves");
        let restarted = spread(&owners, &set(&[1, 2, 3]), &set(&[3]), false);
        let threes: Vec<u16> = (0..64).filter(|s| owners[usize::from(*s)] == 3).collect();
        assert_eq!(restarted, [(3, threes)]);
    }

    #[test]
    fn a_single_router_owns_everything() {
        let events = spread(&[7; 64], &set(&[1]), &set(&[]), false);
        assert_eq!(events, [(1, (0..64).collect::<Vec<u16>>())]);
        assert_eq!(spread(&[0; 64], &set(&[]), &set(&[]), true), []);
    }
}
