//! The write-ahead log: an append-only sequence of records numbered by
//! consecutive indexes, in preallocated, zero-filled segment files, synced
//! with one `fdatasync` per appended batch. It is the Raft log's home (ADR
//! 0012); the router adapts it to openraft's `RaftLogStorage`.
//!
//! ```text
//! <dir>/00000000000000000001.seg   first index in the name, zero-filled to segment_size
//!   record = [u32 len][u32 crc32(index ‖ payload)][u64 index][payload]   (little endian)
//!   a record whose header is all zeros ends the segment
//! ```
//!
//! Recovery scans every segment and stops at the first record that is torn
//! (short, bad checksum, or an index out of sequence); the rest of that
//! segment is zeroed and later segments are removed, so a record that was
//! never acknowledged cannot reappear after new appends. Truncation zeroes
//! the bytes it gives up for the same reason.
//!
//! Only the last segment can hold a torn record after a crash: a segment
//! is synced before the next one is started. A bad record in any other
//! segment is damage (a disk error, a file overwritten or cut short): the
//! log refuses to open rather than lose records it acknowledged.
//! [`Wal::gaps`] lists the indexes missing between segments, for the
//! owner to check against what it knows was committed.
//!
//! Blocking I/O: callers on an async runtime run it on a blocking thread.

use crate::{StoreError, io_error, sync_dir};
use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of a record header: length, checksum, index.
const HEADER: u64 = 16;
/// Largest payload of one record.
pub const MAX_RECORD: u64 = 256 * 1024 * 1024;
/// Bytes zero-filled per write when preparing or clearing segment space.
const ZERO_CHUNK: usize = 1024 * 1024;

/// How segments are sized and synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Bytes per segment file (a record larger than this gets a segment of
    /// its own, sized to fit).
    pub segment_size: u64,
    /// Added before every write and sync: a slow disk, for fault tests
    /// (zero otherwise).
    pub slow_sync: std::time::Duration,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_size: 64 * 1024 * 1024, slow_sync: std::time::Duration::ZERO }
    }
}

/// One segment file: the records from `first` on.
#[derive(Debug)]
struct Segment {
    first: u64,
    path: PathBuf,
    file: File,
    /// Offset and payload length of each record, record `first + i` at `i`.
    records: Vec<(u64, u32)>,
    /// Where the next record goes.
    end: u64,
    /// The file's preallocated size.
    capacity: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

/// What recovery found when the log was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records kept.
    pub records: u64,
    /// Bytes of a torn tail that were discarded (0 after a clean shutdown).
    pub discarded_bytes: u64,
}

/// An open write-ahead log, held by one owner.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    segments: Vec<Segment>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and recovers it.
    pub fn open(dir: impl Into<PathBuf>, options: WalOptions) -> Result<(Wal, Recovery), StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else { continue };
            let first = stem.parse::<u64>().map_err(|_| StoreError::Corrupt {
                path: entry.path(),
                reason: "segment name is not an index".into(),
            })?;
            firsts.push(first);
        }
        firsts.sort_unstable();
        let mut wal = Wal { dir, options, segments: Vec::new() };
        let mut recovery = Recovery::default();
        let mut torn = false;
        let last_file = firsts.last().copied();
        let last_file = last_file.as_ref();
        for first in firsts.iter().copied() {
            let path = wal.segment_path(first);
            if let Some(next) = wal.next()
                && first < next
            {
                return Err(
                    wal.corrupt(format!("segment {first} overlaps the records before it (up to {next})"))
                );
            }
            let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_error(&path))?;
            let capacity = file.metadata().map_err(io_error(&path))?.len();
            let mut segment = Segment { first, path, file, records: Vec::new(), end: 0, capacity };
            let clean = scan(&mut segment)?;
            recovery.records += segment.records.len() as u64;
            if !clean && Some(&first) != last_file {
                let at = segment.end;
                return Err(wal.corrupt(format!(
                    "segment {} is damaged at byte {at} (record {}), and later segments follow it: \
                     records this log acknowledged are lost",
                    segment.path.display(),
                    segment.first + segment.records.len() as u64,
                )));
            }
            if !clean {
                recovery.discarded_bytes +=
                    zero(&segment.file, &segment.path, segment.end, segment.capacity)?;
                segment.file.sync_data().map_err(io_error(&segment.path))?;
                torn = true;
            }
            wal.segments.push(segment);
        }
        if torn {
            sync_dir(&wal.dir)?;
        }
        Ok((wal, recovery))
    }

    /// Returns the index of the first record held (`None` when empty).
    /// After [`Wal::purge`] this may be below the purged point: purging
    /// removes whole segments only.
    pub fn first(&self) -> Option<u64> {
        self.segments.iter().find(|s| !s.records.is_empty()).map(|s| s.first)
    }

    /// Returns the index of the last record held.
    pub fn last(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last)
    }

    /// Returns the index the next append must start at, if the log has
    /// records (an empty log accepts any start).
    pub fn next(&self) -> Option<u64> {
        self.last().map(|last| last + 1)
    }

    /// Appends `records`, numbered from `first`, and syncs them: when this
    /// returns `Ok`, they survive a crash. `first` may leave a hole after the
    /// last record (the records in it do not exist), never overlap it.
    pub fn append<'a>(
        &mut self,
        first: u64,
        records: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(), StoreError> {
        if let Some(next) = self.next()
            && first < next
        {
            return Err(
                self.corrupt(format!("append at {first} overlaps the log, which continues at {next}"))
            );
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_records: Vec<(u64, u32)> = Vec::new();
        let mut touched = false;
        for (index, payload) in (first..).zip(records) {
            let length = payload.len() as u64;
            if length > MAX_RECORD {
                return Err(self.corrupt(format!("record {index} of {length} bytes exceeds {MAX_RECORD}")));
            }
            let needed = HEADER + length;
            let fits = self.segments.last().is_some_and(|s| {
                s.first + (s.records.len() + pending_records.len()) as u64 == index
                    && s.end + pending.len() as u64 + needed <= s.capacity
            });
            if !fits {
                self.flush_pending(&mut pending, &mut pending_records)?;
                self.roll(index, needed)?;
                touched = true;
            }
            let segment = self.segments.last().expect("a segment was rolled");
            let offset = segment.end + pending.len() as u64;
            pending.extend_from_slice(&(length as u32).to_le_bytes());
            pending.extend_from_slice(&checksum(index, payload).to_le_bytes());
            pending.extend_from_slice(&index.to_le_bytes());
            pending.extend_from_slice(payload);
            pending_records.push((offset, length as u32));
        }
        self.flush_pending(&mut pending, &mut pending_records)?;
        if touched {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Reads the records held in `range`, with their indexes, in order
    /// (indexes in a hole or outside the log are skipped).
    pub fn read(&self, range: Range<u64>) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (Some(first), Some(last)) = (self.first(), self.last()) else { return Ok(Vec::new()) };
        let range = range.start.max(first)..range.end.min(last + 1);
        let mut out = Vec::with_capacity(range.end.saturating_sub(range.start) as usize);
        for index in range {
            let Some((segment, position)) = self.locate(index) else { continue };
            let (offset, length) = segment.records[position];
            let mut payload = vec![0_u8; length as usize];
            segment.file.read_exact_at(&mut payload, offset + HEADER).map_err(io_error(&segment.path))?;
            out.push((index, payload));
        }
        Ok(out)
    }

    /// Removes the records from `from` on (inclusive) and makes the removal
    /// durable. Removing past the end does nothing.
    pub fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        let mut removed_files = false;
        loop {
            let count = self.segments.len();
            let Some(segment) = self.segments.last_mut() else { break };
            if segment.first >= from && count > 1 {
                let segment = self.segments.pop().expect("not empty");
                fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
                removed_files = true;
                continue;
            }
            let keep = from.saturating_sub(segment.first).min(segment.records.len() as u64) as usize;
            if keep < segment.records.len() {
                let end = segment.records[keep].0;
                zero(&segment.file, &segment.path, end, segment.end)?;
                segment.file.sync_data().map_err(io_error(&segment.path))?;
                segment.records.truncate(keep);
                segment.end = end;
            }
            break;
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Drops whole segments whose records are all at or below `upto`; when
    /// `upto` reaches the last record, the log becomes empty (and accepts
    /// any next index).
    pub fn purge(&mut self, upto: u64) -> Result<(), StoreError> {
        let everything = self.last().is_none_or(|last| upto >= last);
        let mut removed = false;
        while let Some(segment) = self.segments.first() {
            let below = segment.last().is_none_or(|last| last <= upto);
            if !(everything || below && self.segments.len() > 1) {
                break;
            }
            let segment = self.segments.remove(0);
            fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Returns the runs of indexes missing between the records held (a
    /// gap left by an append past the end, or by a damaged segment).
    pub fn gaps(&self) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut next: Option<u64> = None;
        for segment in self.segments.iter().filter(|s| !s.records.is_empty()) {
            if let Some(next) = next
                && segment.first > next
            {
                gaps.push(next..segment.first);
            }
            next = segment.last().map(|last| last + 1);
        }
        gaps
    }

    /// Returns the number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn locate(&self, index: u64) -> Option<(&Segment, usize)> {
        let at = self.segments.partition_point(|s| s.first <= index).checked_sub(1)?;
        let segment = &self.segments[at];
        let position = (index - segment.first) as usize;
        (position < segment.records.len()).then_some((segment, position))
    }

    /// Writes and syncs the bytes gathered for the last segment.
    fn flush_pending(
        &mut self,
        pending: &mut Vec<u8>,
        records: &mut Vec<(u64, u32)>,
    ) -> Result<(), StoreError> {
        if pending.is_empty() {
            return Ok(());
        }
        let segment = self.segments.last_mut().expect("pending bytes have a segment");
        if !self.options.slow_sync.is_zero() {
            std::thread::sleep(self.options.slow_sync);
        }
        segment.file.write_all_at(pending, segment.end).map_err(io_error(&segment.path))?;
        segment.file.sync_data().map_err(io_error(&segment.path))?;
        segment.end += pending.len() as u64;
        segment.records.append(records);
        pending.clear();
        Ok(())
    }

    /// Starts a segment at `first` with room for at least `needed` bytes.
    /// An empty last segment is replaced rather than followed.
    fn roll(&mut self, first: u64, needed: u64) -> Result<(), StoreError> {
        if let Some(last) = self.segments.last()
            && last.records.is_empty()
        {
            let last = self.segments.pop().expect("not empty");
            fs::remove_file(&last.path).map_err(io_error(&last.path))?;
        }
        let path = self.segment_path(first);
        let capacity = self.options.segment_size.max(needed);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_error(&path))?;
        // Zero-filled, not sparse: an fdatasync over allocated blocks does
        // not also commit file-size metadata (durable-writes.md, pitfall 7).
        zero(&file, &path, 0, capacity)?;
        file.sync_all().map_err(io_error(&path))?;
        self.segments.push(Segment { first, path, file, records: Vec::new(), end: 0, capacity });
        Ok(())
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}.seg"))
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt { path: self.dir.clone(), reason }
    }
}

/// Reads `segment`'s records from the start; returns whether it ended
/// cleanly (at zeros or at the end of the file) rather than at a torn record.
fn scan(segment: &mut Segment) -> Result<bool, StoreError> {
    let mut offset = 0;
    let mut header = [0_u8; HEADER as usize];
    loop {
        if offset + HEADER > segment.capacity {
            segment.end = offset;
            return Ok(true);
        }
        segment.file.read_exact_at(&mut header, offset).map_err(io_error(&segment.path))?;
        segment.end = offset;
        if header == [0; HEADER as usize] {
            return Ok(true);
        }
        let length = u64::from(u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let expected = segment.first + segment.records.len() as u64;
        if index != expected || length > MAX_RECORD || offset + HEADER + length > segment.capacity {
            return Ok(false);
        }
        let mut payload = vec![0_u8; length as usize];
        segment.file.read_exact_at(&mut payload, offset + HEADER).map_err(io_error(&segment.path))?;
        if checksum(index, &payload) != crc {
            return Ok(false);
        }
        segment.records.push((offset, length as u32));
        offset += HEADER + length;
    }
}

/// Overwrites `[from, to)` of `file` with zeros; returns the bytes written.
fn zero(file: &File, path: &Path, from: u64, to: u64) -> Result<u64, StoreError> {
    let zeros = vec![0_u8; ZERO_CHUNK.min(to.saturating_sub(from) as usize)];
    let mut at = from;
    while at < to {
        let n = (to - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at).map_err(io_error(path))?;
        at += n as u64;
    }
    Ok(to.saturating_sub(from))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
