//! openraft's log storage over the store's write-ahead log (ADR 0012).
//!
//! ```text
//! <raft dir>/log/*.seg    entries, one WAL record each (see `encode_entry`)
//! <raft dir>/vote         the vote, written durably before save_vote returns
//! <raft dir>/committed    the commit mark, overwritten in place without a sync (a hint:
//!                         lost, entries re-commit)
//! <raft dir>/purged       the last purged log id, written durably
//! ```
//!
//! The WAL is blocking; every call runs on a blocking thread while the
//! async caller waits, so Raft's own task never blocks the runtime. Calls
//! are serialised by a mutex, as openraft requires of log and vote I/O.

use super::{Command, TypeConfig};
use herald_store::small_file;
use herald_store::wal::{Wal, WalOptions};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogId, StorageError, StorageIOError, Vote,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

type NodeId = u64;
type Error = StorageError<NodeId>;

/// The encoding of small stored values (vote, marks, snapshots): JSON after
/// this byte. A value of another format is refused rather than misread.
const JSON_FORMAT: u8 = 1;
/// The encoding of log entries: binary, after this byte (`encode_entry`).
const ENTRY_FORMAT: u8 = 2;

/// The WAL and the files beside it, shared by the store and its readers.
#[derive(Debug)]
struct Files {
    dir: PathBuf,
    wal: Wal,
    /// The last purged log id: entries up to it are gone even where the
    /// WAL still holds their segment.
    purged: Option<LogId<NodeId>>,
    /// Whether opening discarded a torn tail (a crash during an append).
    torn: bool,
}

/// The Raft log of one router node.
#[derive(Debug, Clone)]
pub struct LogStore {
    files: Arc<Mutex<Files>>,
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir`.
    pub fn open(dir: &Path, options: WalOptions) -> Result<LogStore, herald_store::StoreError> {
        let (wal, recovery) = Wal::open(dir.join("log"), options)?;
        if recovery.discarded_bytes > 0 {
            tracing::warn!(
                records = recovery.records,
                discarded_bytes = recovery.discarded_bytes,
                "raft log: discarded a torn tail"
            );
        }
        let torn = recovery.discarded_bytes > 0;
        let mut files = Files { dir: dir.to_path_buf(), wal, purged: None, torn };
        files.purged = files.read_meta("purged").map_err(|e| herald_store::StoreError::Corrupt {
            path: dir.join("purged"),
            reason: e.to_string(),
        })?;
        Ok(LogStore { files: Arc::new(Mutex::new(files)) })
    }

    /// Refuses a log that lost entries it held: entries up to the last
    /// known commit must be in the log, in the snapshot (whose last index
    /// is `snapshot`) or purged behind it, and purged entries must be in
    /// the snapshot. A router that started anyway could vote for a
    /// candidate lacking entries it had acknowledged, or lead without them.
    ///
    /// A torn tail is no damage: entries a crash cut short were never
    /// acknowledged by this node (the commit mark may run ahead of them on
    /// a follower; the leader sends them again).
    pub fn check_intact(&self, snapshot: Option<u64>) -> Result<(), herald_store::StoreError> {
        let files = self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let damaged = |reason: String| herald_store::StoreError::Corrupt { path: files.dir.clone(), reason };
        let purged = files.purged.map(|id| id.index);
        if let Some(purged) = purged
            && snapshot.is_none_or(|s| s < purged)
        {
            return Err(damaged(format!(
                "the log is purged up to {purged} but the snapshot is missing or damaged \
                 (it reaches {snapshot:?}): those entries exist nowhere on this router"
            )));
        }
        let floor = purged.max(snapshot).unwrap_or(0);
        if let Some(gap) = files.wal.gaps().into_iter().find(|gap| gap.end > floor + 1) {
            return Err(damaged(format!(
                "entries {} to {} are missing from the log (a segment was lost or cut short)",
                gap.start.max(floor + 1),
                gap.end - 1
            )));
        }
        let committed = files
            .read_meta::<Option<LogId<NodeId>>>("committed")
            .map_err(|e| damaged(format!("the commit mark is unreadable: {e}")))?
            .flatten();
        let held = files.wal.last().unwrap_or(0).max(floor);
        if let Some(committed) = committed
            && committed.index > held
            && !files.torn
        {
            return Err(damaged(format!(
                "entries up to {} were committed but the log ends at {held}: a data file was \
                 truncated or damaged",
                committed.index
            )));
        }
        Ok(())
    }

    /// Runs `work` on the files on a blocking thread.
    async fn with_files<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Files) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            let mut files = files.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut files)
        })
        .await
        .map_err(|e| StorageIOError::write(&e))?
    }
}

impl Files {
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let start = self.purged.map_or(start, |purged| start.max(purged.index + 1));
        if start >= end {
            return Ok(Vec::new());
        }
        let records = self.wal.read(start..end).map_err(|e| StorageIOError::read_logs(&e))?;
        records
            .iter()
            .map(|(_, record)| decode_entry(record).map_err(StorageIOError::read_logs).map_err(Error::from))
            .collect()
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, Error> {
        let Some(last) = self.wal.last() else { return Ok(None) };
        Ok(self.read_entries(last, last + 1)?.pop().map(|entry| *entry.get_log_id()))
    }

    fn read_meta<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, Error> {
        let path = self.dir.join(name);
        let Some(bytes) = small_file::read(&path).map_err(|e| StorageIOError::read(&e))? else {
            return Ok(None);
        };
        decode(&bytes).map(Some).map_err(|e| StorageIOError::read(e).into())
    }

    fn write_meta<T: Serialize>(&self, name: &str, value: &T, durable: bool) -> Result<(), Error> {
        let path = self.dir.join(name);
        let bytes = encode(value);
        // The commit mark is written for every entry: in place, since a
        // rename (which ext4 follows with a writeback) cost more than the
        // entry's own sync under many small entries.
        let written = if durable {
            small_file::write_durably(&path, &bytes)
        } else {
            small_file::overwrite_lazily(&path, &bytes)
        };
        written.map_err(|e| StorageIOError::write(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        self.with_files(move |files| files.read_entries(start, end)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Error> {
        self.with_files(|files| {
            let last_purged_log_id = files.purged;
            let last_log_id = files.last_entry_id()?.or(last_purged_log_id);
            Ok(LogState { last_purged_log_id, last_log_id })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), Error> {
        let vote = *vote;
        self.with_files(move |files| files.write_meta("vote", &vote, true)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, Error> {
        self.with_files(|files| files.read_meta("vote")).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), Error> {
        self.with_files(move |files| files.write_meta("committed", &committed, false)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, Error> {
        self.with_files(|files| Ok(files.read_meta::<Option<LogId<NodeId>>>("committed")?.flatten())).await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(first) = entries.first().map(|e| e.get_log_id().index) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let records: Vec<Vec<u8>> = entries.iter().map(encode_entry).collect();
        let appended = self
            .with_files(move |files| {
                files
                    .wal
                    .append(first, records.iter().map(Vec::as_slice))
                    .map_err(|e| StorageIOError::write_logs(&e).into())
            })
            .await;
        // Synced by the WAL before it returned: durable now.
        match &appended {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(error) => callback.log_io_completed(Err(std::io::Error::other(error.to_string()))),
        }
        appended
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        self.with_files(move |files| {
            files.wal.truncate(log_id.index).map_err(|e| StorageIOError::write_logs(&e).into())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), Error> {
        self.with_files(move |files| {
            // The mark first: entries below it are never read again, even
            // if removing their segments is cut short.
            files.write_meta("purged", &log_id, true)?;
            files.purged = Some(log_id);
            files.wal.purge(log_id.index).map_err(|e| StorageIOError::write_logs(&e).into())
        })
        .await
    }
}

/// Encodes a value as a format byte and JSON.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = vec![JSON_FORMAT];
    serde_json::to_writer(&mut bytes, value).expect("raft types serialise to JSON");
    bytes
}

/// Decodes what [`encode`] wrote.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    match bytes.split_first() {
        Some((&JSON_FORMAT, json)) => serde_json::from_slice(json).map_err(|e| AnyError::new(&e)),
        Some((format, _)) => Err(AnyError::error(format!("unknown record format {format}"))),
        None => Err(AnyError::error("empty record")),
    }
}

/// Entry payload kinds.
const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;
/// Command tags.
const NEXT_GENERATION: u8 = 0;
const JOURNAL: u8 = 1;
const RESTORE: u8 = 2;
const SHARDS: u8 = 3;

/// Encodes an entry: `[2][term u64][leader node u64][index u64][kind]`,
/// then for a command its tag and bytes (a journal's facts as they are,
/// already protobuf; a restore's generation u64 then its image; a shard
/// event's owner u64 then its shards, u16 each), for a membership change
/// its JSON. Little endian.
pub(super) fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let id = entry.get_log_id();
    let mut bytes = Vec::with_capacity(32);
    bytes.push(ENTRY_FORMAT);
    bytes.extend(id.leader_id.term.to_le_bytes());
    bytes.extend(id.leader_id.node_id.to_le_bytes());
    bytes.extend(id.index.to_le_bytes());
    match &entry.payload {
        EntryPayload::Blank => bytes.push(BLANK),
        EntryPayload::Normal(Command::NextGeneration) => bytes.extend([NORMAL, NEXT_GENERATION]),
        EntryPayload::Normal(Command::Journal(facts)) => {
            bytes.extend([NORMAL, JOURNAL]);
            bytes.extend(facts);
        }
        EntryPayload::Normal(Command::Restore { generation, image }) => {
            bytes.extend([NORMAL, RESTORE]);
            bytes.extend(generation.to_le_bytes());
            bytes.extend(image);
        }
        EntryPayload::Normal(Command::Shards { owner, shards }) => {
            bytes.extend([NORMAL, SHARDS]);
            bytes.extend(owner.to_le_bytes());
            shards.iter().for_each(|shard| bytes.extend(shard.to_le_bytes()));
        }
        EntryPayload::Membership(membership) => {
            bytes.push(MEMBERSHIP);
            serde_json::to_writer(&mut bytes, membership).expect("memberships serialise to JSON");
        }
    }
    bytes
}

/// Decodes what [`encode_entry`] wrote.
pub(super) fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, AnyError> {
    let Some((&ENTRY_FORMAT, rest)) = bytes.split_first() else {
        return Err(AnyError::error(format!("unknown entry format {:?}", bytes.first())));
    };
    let number = |at: usize| -> Result<u64, AnyError> {
        rest.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| AnyError::error("entry shorter than its header"))
    };
    let log_id = LogId::new(CommittedLeaderId::new(number(0)?, number(8)?), number(16)?);
    let payload = match (rest.get(24), rest.get(25)) {
        (Some(&BLANK), _) => EntryPayload::Blank,
        (Some(&NORMAL), Some(&NEXT_GENERATION)) => EntryPayload::Normal(Command::NextGeneration),
        (Some(&NORMAL), Some(&JOURNAL)) => EntryPayload::Normal(Command::Journal(rest[26..].to_vec())),
        (Some(&NORMAL), Some(&RESTORE)) => EntryPayload::Normal(Command::Restore {
            generation: number(26)?,
            image: rest
                .get(34..)
                .ok_or_else(|| AnyError::error("restore entry shorter than its header"))?
                .to_vec(),
        }),
        (Some(&NORMAL), Some(&SHARDS)) => {
            let shards = rest.get(34..).filter(|s| s.len() % 2 == 0);
            let shards = shards.ok_or_else(|| AnyError::error("shard entry of a wrong length"))?;
            EntryPayload::Normal(Command::Shards {
                owner: number(26)?,
                shards: shards.chunks_exact(2).map(|s| u16::from_le_bytes([s[0], s[1]])).collect(),
            })
        }
        (Some(&MEMBERSHIP), _) => {
            EntryPayload::Membership(serde_json::from_slice(&rest[25..]).map_err(|e| AnyError::new(&e))?)
        }
        (kind, tag) => return Err(AnyError::error(format!("unknown entry kind {kind:?}/{tag:?}"))),
    };
    Ok(Entry { log_id, payload })
}
