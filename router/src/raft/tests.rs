//! Tests of the replicated core: openraft's own storage conformance suite
//! against the WAL-backed log and the state machine, and restarts of a
//! single node on its data.

use super::*;
use herald_proto::journal::Fact;
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

/// Builds a fresh log and state machine in a temporary directory, which
/// lives as long as they do.
struct TempStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStore {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        // Small segments: the suite's few entries span several files.
        let log = LogStore::open(dir.path(), WalOptions { segment_size: 512, ..WalOptions::default() })
            .expect("open the log");
        let machine = StateMachine::open(dir.path())?;
        Ok((dir, log, machine))
    }
}

/// Takes a snapshot and waits until it is built.
pub(super) async fn snapshot(node: &RaftNode) {
    node.snapshot().await.expect("snapshot");
    let mut metrics = node.raft.metrics();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.borrow().snapshot.is_none() {
        tokio::time::timeout_at(deadline, metrics.changed())
            .await
            .expect("snapshot in time")
            .expect("metrics");
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
    snapshot(&node).await;
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
    snapshot(&node).await;
    node.shutdown().await;
    // Without its log, the machine restores the snapshot: generation 3 applied.
    std::fs::remove_dir_all(dir.path().join("log")).expect("remove the log");
    let machine = StateMachine::open(dir.path()).expect("open");
    assert_eq!(machine.state().lock().expect("unpoisoned").generation, 3);
}

#[test]
fn entries_of_every_kind_survive_their_encoding() {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership};
    let id = |index| LogId::new(CommittedLeaderId::new(3, 9), index);
    let membership = Membership::new(vec![[1_u64, 2].into()], None);
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry { log_id: id(1), payload: EntryPayload::Blank },
        Entry { log_id: id(2), payload: EntryPayload::Normal(Command::NextGeneration) },
        Entry { log_id: id(3), payload: EntryPayload::Normal(Command::Journal(vec![1, 2, 3])) },
        Entry {
            log_id: id(4),
            payload: EntryPayload::Normal(Command::Restore { generation: 9, image: vec![4, 5, 6] }),
        },
        Entry { log_id: id(u64::MAX), payload: EntryPayload::Membership(membership) },
    ];
    let mut all = Vec::new();
    for entry in &entries {
        let bytes = log_store::encode_entry(entry);
        assert_eq!(&log_store::decode_entry(&bytes).expect("decodes"), entry);
        all.extend((bytes.len() as u32).to_le_bytes());
        all.extend(bytes);
    }
    // What routers in the field hold in their logs (entry format 2): read
    // back as written, or the build fails (golden file).
    let stored = herald_testkit::golden::check(&fixtures().join("entries-v2.bin"), &all);
    let mut rest = stored.as_slice();
    for entry in &entries {
        let (len, tail) = rest.split_first_chunk::<4>().expect("length prefix");
        let (bytes, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
        assert_eq!(&log_store::decode_entry(bytes).expect("stored entry decodes"), entry);
        rest = tail;
    }
    assert!(log_store::decode_entry(&[2, 0, 0]).is_err(), "a short entry is an error, not a panic");
    assert!(log_store::decode_entry(&[9]).is_err(), "an unknown format is an error");
}

/// Commits `facts` through the router's journal interface.
pub(super) async fn commit(node: &RaftNode, facts: &[Fact]) -> Result<(), String> {
    crate::Journal::submit(node, facts).await?.await
}

/// A retained message on `topic` with `payload` (empty: clears the topic).
pub(super) fn retained_message(topic: &str, payload: &'static [u8]) -> std::sync::Arc<herald_proto::Message> {
    std::sync::Arc::new(herald_proto::Message {
        id: herald_core::MessageId(1),
        app: herald_core::AppId::default_app(),
        topic: herald_core::Topic::new(topic.to_owned()).expect("topic"),
        payload: bytes::Bytes::from_static(payload),
        qos: herald_core::QoS::AtLeastOnce,
        retain: true,
        created_at: herald_core::UnixMillis(1),
        expires_at: None,
        origin: None,
        properties: None,
        trace: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_journal_facts_are_there_after_a_restart_and_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let message = retained_message;
    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("start");
    commit(&node, &[Fact::Retained(message("a", b"1")), Fact::Retained(message("b", b"2"))])
        .await
        .expect("commit");
    commit(&node, &[Fact::Retained(message("a", b""))]).await.expect("commit a clear");
    node.shutdown().await;

    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("restart");
    let topics =
        |image: DurableImage| image.retained.iter().map(|m| m.topic.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(topics(node.durable_image()), ["b"], "replayed from the log");
    snapshot(&node).await;
    node.shutdown().await;
    std::fs::remove_dir_all(dir.path().join("log")).expect("remove the log");
    std::fs::remove_file(dir.path().join("committed")).ok();
    let node = RaftNode::start_single(dir.path(), 1, "127.0.0.1:0").await.expect("restart from the snapshot");
    assert_eq!(topics(node.durable_image()), ["b"], "restored from the snapshot");
    node.shutdown().await;
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/raft")
}

/// Snapshots (generation, then the durable image) and backup files as
/// routers in the field wrote them: read back as written (golden files).
#[test]
fn snapshots_and_backups_match_their_golden_files() {
    let mut durable = crate::state::DurableState::default();
    durable.apply(Fact::Retained(retained_message("status", b"ready")));
    durable.apply(Fact::GatewayLinked(herald_core::NodeId(3)));
    let replicated = state_machine::Replicated { generation: 12, shards: None, durable };
    let bytes = replicated.encode();
    let stored = herald_testkit::golden::check(&fixtures().join("snapshot-v1.bin"), &bytes);
    let decoded = state_machine::Replicated::decode(&stored).expect("stored snapshot decodes");
    assert_eq!(decoded.generation, 12);
    assert_eq!(decoded.durable.image(), replicated.durable.image());

    let image = journal::encode_image(&replicated.durable.image());
    let meta = backup::BackupMeta {
        format: backup::BACKUP_FORMAT,
        cluster_id: "prod".to_owned(),
        node_id: 2,
        applied_index: 41,
        generation: 12,
        created_unix_ms: 1_790_000_000_000,
        image_len: image.len() as u64,
        image_crc32: crc32fast::hash(&image),
    };
    let file = backup::Backup { meta, image };
    let stored = herald_testkit::golden::check(&fixtures().join("backup-v1.bin"), &file.encode());
    assert_eq!(backup::Backup::decode(&stored), Ok(file));
}
