//! Tests of the replicated core: openraft's own storage conformance suite
//! against the WAL-backed log and the state machine, and restarts of a
//! single node on its data.

use super::*;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

/// Builds a fresh log and state machine in a temporary directory, which
/// lives as long as they do.
struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStore {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Small segments: the suite's few entries span several files.
        let log = LogStore::open(dir.path(), WalOptions { segment_size: 512 }).expect("open the log");
        let machine = StateMachine::open(dir.path())?;
        Ok((dir, log, machine))
    }
}

#[test]
fn the_log_and_state_machine_pass_openrafts_storage_suite() {
    Suite::test_all(TempStore).expect("openraft storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_keep_rising_across_restarts_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("start");
    let first: Vec<u64> = [
        node.next_generation().await.expect("commit"),
        node.next_generation().await.expect("commit"),
        node.next_generation().await.expect("commit"),
    ]
    .into();
    assert_eq!(first, [1, 2, 3]);
    node.shutdown().await;

    // From the log alone.
    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("restart");
    assert_eq!(node.next_generation().await.expect("commit"), 4);
    // From a snapshot and the log after it.
    node.snapshot().await.expect("snapshot");
    let mut metrics = node.raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.borrow().snapshot.is_none() {
        tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .expect("snapshot in time")
            .expect("metrics");
    }
    assert!(dir.path().join("snapshot").exists());
    assert_eq!(node.next_generation().await.expect("commit"), 5);
    node.shutdown().await;

    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("restart");
    assert_eq!(node.next_generation().await.expect("commit"), 6);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_alone_restores_the_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("start");
    for _ in 0..3 {
        node.next_generation().await.expect("commit");
    }
    node.snapshot().await.expect("snapshot");
    let mut metrics = node.raft.metrics();
    while metrics.borrow().snapshot.is_none() {
        tokio::time::timeout(Duration::from_secs(10), metrics.changed())
            .await
            .expect("in time")
            .expect("metrics");
    }
    node.shutdown().await;
    // Without its log, the machine restores the snapshot: generation 3 applied.
    std::fs::remove_dir_all(dir.path().join("log")).expect("remove the log");
    let machine = StateMachine::open(dir.path()).expect("open");
    assert_eq!(machine.state().generation, 3);
}
