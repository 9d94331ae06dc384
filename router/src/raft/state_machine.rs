//! The replicated state machine: what every router node holds identically
//! because it applies the same committed commands in the same order.
//!
//! Applied state lives in memory; a snapshot is the whole state written
//! durably to `<raft dir>/snapshot`, and a restart loads it and replays the
//! log after it. Applying reads no clock: a command carries any time it
//! needs.

use super::log_store::{decode, encode};
use super::shards::ShardTable;
use super::{Command, Response, TypeConfig};
use crate::state::DurableState;
use herald_core::ShardGenerations;
use herald_proto::journal;
use herald_store::small_file;
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

type NodeId = u64;
type Error = StorageError<NodeId>;

/// The replicated data itself.
#[derive(Debug, Clone, Default)]
pub struct Replicated {
    /// The cluster's registry generation, from before the shard table, and
    /// the floor of every shard's generation. It only grows, so epochs
    /// minted after a restart exceed all before.
    pub generation: u64,
    /// The registry shard table, once a leader has proposed a shard event.
    pub shards: Option<ShardTable>,
    /// Retained messages, persistent sessions and shared groups' queues,
    /// as the router's journal describes them (ADR 0013).
    pub durable: DurableState,
}

impl Replicated {
    pub(super) fn apply(&mut self, command: &Command) -> Result<Response, herald_proto::grpc::ConvertError> {
        Ok(match command {
            Command::NextGeneration => {
                // Above every shard's too: each shard is then at it.
                self.generation = self.high_water() + 1;
                Response::Generation(self.generation)
            }
            Command::Shards { owner, shards } => {
                let floor = self.generation;
                let table = self.shards.get_or_insert_with(|| ShardTable::new(floor));
                table.assign(*owner, shards, floor).map_err(|_| herald_proto::grpc::ConvertError {
                    field: "shards",
                    reason: "a shard beyond the registry's",
                })?;
                Response::Shards(table.generations(floor))
            }
            Command::Journal(bytes) => {
                for fact in journal::decode(bytes)? {
                    self.durable.apply(fact);
                }
                Response::Done
            }
            Command::Restore { generation, image } => {
                self.durable = DurableState::from_image(journal::decode_image(image)?);
                // Every shard above the backup's epochs.
                self.generation = self.high_water().max(*generation);
                Response::Done
            }
        })
    }

    /// The highest generation of the registry or any of its shards.
    pub fn high_water(&self) -> u64 {
        self.shards.as_ref().map_or(0, ShardTable::high_water).max(self.generation)
    }

    /// Every shard's generation as a router serving the registry uses it.
    pub fn shard_generations(&self) -> ShardGenerations {
        match &self.shards {
            Some(table) => ShardGenerations::from_table(table.generations(self.generation)),
            None => ShardGenerations::uniform(self.generation),
        }
    }

    /// Snapshot form, version 1 (a cluster without a shard table): the
    /// generation (8 bytes, little endian), then the durable image as
    /// protobuf. Version 2: eight 0xff bytes (no generation of version 1),
    /// the generation, the shard table ([`ShardTable::encode`]), the image.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if let Some(table) = &self.shards {
            bytes.extend(SNAPSHOT_V2);
            bytes.extend(self.generation.to_le_bytes());
            table.encode(&mut bytes);
        } else {
            bytes.extend(self.generation.to_le_bytes());
        }
        bytes.extend(journal::encode_image(&self.durable.image()));
        bytes
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Replicated, AnyError> {
        let short = || AnyError::error("snapshot shorter than its header");
        let (first, rest) = bytes.split_first_chunk::<8>().ok_or_else(short)?;
        let (generation, shards, image) = if *first == SNAPSHOT_V2 {
            let (generation, rest) = rest.split_first_chunk::<8>().ok_or_else(short)?;
            let (table, image) =
                ShardTable::decode(rest).ok_or_else(|| AnyError::error("snapshot's shard table damaged"))?;
            (u64::from_le_bytes(*generation), Some(table), image)
        } else {
            (u64::from_le_bytes(*first), None, rest)
        };
        let image = journal::decode_image(image).map_err(|e| AnyError::new(&e))?;
        Ok(Replicated { generation, shards, durable: DurableState::from_image(image) })
    }
}

/// The first bytes of a snapshot of version 2.
const SNAPSHOT_V2: [u8; 8] = [0xff; 8];

/// What a snapshot file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    #[serde(with = "super::base64_bytes")]
    data: Vec<u8>,
}

/// The state machine of one router node. The replicated data is shared
/// with [`super::RaftNode`], which reads it (after a commit, or at start).
#[derive(Debug)]
pub struct StateMachine {
    path: PathBuf,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    state: Arc<Mutex<Replicated>>,
    snapshots: Arc<SnapshotCounts>,
}

/// Snapshots this node built and installed (from a leader or a backup)
/// since it started, for metrics.
#[derive(Debug, Default)]
pub struct SnapshotCounts {
    /// Snapshots built from the state.
    pub built: std::sync::atomic::AtomicU64,
    /// Snapshots installed in place of the state.
    pub installed: std::sync::atomic::AtomicU64,
}

impl StateMachine {
    /// Opens the state machine whose snapshot is kept in `dir`, restoring
    /// the last snapshot if there is one.
    pub fn open(dir: &Path) -> Result<StateMachine, Error> {
        let path = dir.join("snapshot");
        let mut machine = StateMachine {
            path,
            last_applied: None,
            membership: StoredMembership::default(),
            state: Arc::default(),
            snapshots: Arc::default(),
        };
        if let Some(stored) = machine.read_snapshot()? {
            machine.restore(&stored.meta, &stored.data)?;
        }
        Ok(machine)
    }

    /// The last index the snapshot it opened with covers.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.last_applied.map(|id| id.index)
    }

    /// Its snapshot counts, shared.
    pub fn snapshot_counts(&self) -> Arc<SnapshotCounts> {
        self.snapshots.clone()
    }

    /// Returns the replicated data, shared.
    pub fn state(&self) -> Arc<Mutex<Replicated>> {
        self.state.clone()
    }

    fn data(&self) -> MutexGuard<'_, Replicated> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_snapshot(&self) -> Result<Option<StoredSnapshot>, Error> {
        let Some(bytes) =
            small_file::read(&self.path).map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        decode(&bytes).map(Some).map_err(|e| StorageIOError::read_snapshot(None, e).into())
    }

    fn restore(&mut self, meta: &SnapshotMeta<NodeId, BasicNode>, data: &[u8]) -> Result<(), Error> {
        *self.data() =
            Replicated::decode(data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct SnapshotBuilder {
    path: PathBuf,
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Error> {
        let stored = StoredSnapshot { meta: self.meta.clone(), data: self.data.clone() };
        let (path, bytes) = (self.path.clone(), encode(&stored));
        let signature = self.meta.signature();
        tokio::task::spawn_blocking(move || small_file::write_durably(&path, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        Ok(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match &entry.payload {
                EntryPayload::Blank => Response::Done,
                EntryPayload::Normal(command) => {
                    let applied = self.data().apply(command);
                    // A committed command that does not decode is a bug or
                    // damage: stop rather than diverge from the other nodes.
                    applied.map_err(|e| StorageIOError::apply(entry.log_id, &e))?
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    Response::Done
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let built = self.snapshots.built.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let last = self.last_applied.map_or(0, |id| id.index);
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{last}-{built}"),
        };
        SnapshotBuilder { path: self.path.clone(), meta, data: self.data().encode() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let data = snapshot.into_inner();
        self.restore(meta, &data)?;
        let bytes = encode(&StoredSnapshot { meta: meta.clone(), data });
        let path = self.path.clone();
        let signature = meta.signature();
        tokio::task::spawn_blocking(move || small_file::write_durably(&path, &bytes))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature.clone()), &e))?
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        self.snapshots.installed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Error> {
        let path = self.path.clone();
        let stored = tokio::task::spawn_blocking(move || small_file::read(&path))
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        let Some(bytes) = stored else { return Ok(None) };
        let stored: StoredSnapshot = decode(&bytes).map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
