//! Every byte Herald keeps on disk.
//!
//! Owns: the data directory (its exclusive lock, its format version and
//! its cluster id), the write-ahead log that holds the Raft log
//! ([`wal`]), and small files replaced whole ([`small_file`]: votes,
//! snapshots). Session inboxes join it as durable sessions land.
//!
//! Must never depend on: any other workspace crate, tokio, openraft or the
//! network. Only this crate touches the disk (and, later, sled).
//!
//! Start here: [`DataDir`], then [`wal::Wal`] (the Raft log's file format).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The on-disk format version of a data directory; a directory of another
/// version is refused rather than misread. Version 2: the registry
/// generation moved from a `GENERATION` file into the Raft log (`raft/`).
pub const FORMAT_VERSION: u32 = 2;

/// Why a data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O failure, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
    /// Another process holds the directory.
    #[error("{0}: data directory is in use by another process")]
    Locked(PathBuf),
    /// A file holds something this version cannot read.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

pub mod small_file;
pub mod wal;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

/// Makes the entries of directory `dir` (files created, renamed, removed)
/// durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

/// An open data directory, held exclusively by this process until dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Opens (creating if needed) the data directory at `path` and locks it.
    pub fn open(path: impl Into<PathBuf>) -> Result<DataDir, StoreError> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(io_error(&path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(path)),
            Err(fs::TryLockError::Error(source)) => return Err(StoreError::Io { path: lock_path, source }),
        }
        let dir = DataDir { path, _lock: lock };
        match dir.read_number("FORMAT")? {
            None => dir.write_number("FORMAT", u64::from(FORMAT_VERSION))?,
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(StoreError::Corrupt {
                    path: dir.path.join("FORMAT"),
                    reason: format!("format version {v}, this build reads {FORMAT_VERSION}"),
                });
            }
        }
        Ok(dir)
    }

    /// Returns the directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the id of the cluster this directory belongs to, creating a
    /// random one on first use. A node never joins a cluster whose id
    /// differs from its directory's.
    pub fn cluster_id(&self) -> Result<String, StoreError> {
        self.claim_cluster_id(None)
    }

    /// Returns the id of the cluster this directory belongs to. On first
    /// use it becomes `wanted` (or a random id); afterwards `wanted`, when
    /// given, must be the recorded id: a directory never changes cluster.
    pub fn claim_cluster_id(&self, wanted: Option<&str>) -> Result<String, StoreError> {
        let path = self.path.join("CLUSTER");
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                let recorded = text.trim();
                return match wanted {
                    Some(wanted) if wanted != recorded => Err(StoreError::Corrupt {
                        path,
                        reason: format!("this data directory belongs to cluster {recorded}, not {wanted}"),
                    }),
                    _ => Ok(recorded.to_owned()),
                };
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        let id = wanted.map_or_else(random_id, str::to_owned);
        self.write_text("CLUSTER", &id)?;
        Ok(id)
    }

    fn read_number(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| StoreError::Corrupt {
                path,
                reason: format!("not a number: {:?}", text.trim()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Replaces a small file atomically and durably: write a temporary file,
    /// fsync it, rename it over the old one, fsync the directory.
    fn write_number(&self, name: &str, value: u64) -> Result<(), StoreError> {
        self.write_text(name, &value.to_string())
    }

    fn write_text(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let path = self.path.join(name);
        let tmp = self.path.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        writeln!(file, "{value}").map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        sync_dir(&self.path)
    }
}

/// Returns 128 random bits as hex, from the standard library's randomly
/// seeded hasher (no extra dependency for one id).
fn random_id() -> String {
    use std::hash::BuildHasher;
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let a = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    let b = std::collections::hash_map::RandomState::new().hash_one((a, nanos));
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_id_is_created_once_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = DataDir::open(tmp.path()).expect("open").cluster_id().expect("id");
        assert_eq!(first.len(), 32);
        let again = DataDir::open(tmp.path()).expect("reopen").cluster_id().expect("id");
        assert_eq!(first, again);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(DataDir::open(other.path()).expect("open").cluster_id().expect("id"), first);
    }

    #[test]
    fn a_given_cluster_id_is_recorded_once_and_then_enforced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = DataDir::open(tmp.path()).expect("open");
        assert_eq!(dir.claim_cluster_id(Some("prod")).expect("first use"), "prod");
        assert_eq!(dir.claim_cluster_id(None).expect("recorded"), "prod");
        assert!(matches!(dir.claim_cluster_id(Some("other")), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn a_directory_is_held_by_one_opener_at_a_time() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _held = DataDir::open(tmp.path()).expect("open");
        assert!(matches!(DataDir::open(tmp.path()), Err(StoreError::Locked(_))));
    }

    #[test]
    fn another_format_version_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("FORMAT"), "99\n").expect("write");
        assert!(matches!(DataDir::open(tmp.path()), Err(StoreError::Corrupt { .. })));
        fs::write(tmp.path().join("FORMAT"), "x\n").expect("write");
        assert!(matches!(DataDir::open(tmp.path()), Err(StoreError::Corrupt { .. })));
    }
}
