//! Small files replaced whole: votes, commit marks, snapshots' metadata.
//!
//! [`write_durably`] survives a crash once it returns (write a temporary
//! file, fsync it, rename it over the old one, fsync the directory).
//! [`overwrite_lazily`] is for hints written often, whose loss only costs
//! work: in place, without a sync, a temporary file or a rename (ext4
//! follows a rename over a file with a writeback of its data). After a
//! crash the file holds the old or the new content, or is unreadable, and
//! [`read`] then says `None`: never a mix.

use crate::{StoreError, io_error, sync_dir};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces the file at `path` with `bytes`, durably.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    replace(path, bytes)
}

/// Writes `bytes` over the file at `path` in place, without waiting for
/// the disk and without a rename.
pub fn overwrite_lazily(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::FileExt;
    let mut whole = Vec::with_capacity(bytes.len() + 4);
    whole.extend_from_slice(bytes);
    whole.extend_from_slice(&crc32fast::hash(bytes).to_le_bytes());
    let file =
        fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).map_err(io_error(path))?;
    file.write_all_at(&whole, 0).map_err(io_error(path))?;
    file.set_len(whole.len() as u64).map_err(io_error(path))?;
    Ok(())
}

/// Returns the file's content, or `None` if it does not exist or is not
/// whole (its trailing checksum does not match).
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StoreError::Io { path: path.to_path_buf(), source }),
    };
    if bytes.len() < 4 {
        return Ok(None);
    }
    let sum = bytes.split_off(bytes.len() - 4);
    Ok((crc32fast::hash(&bytes).to_le_bytes()[..] == sum[..]).then_some(bytes))
}

fn replace(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.write_all(&crc32fast::hash(bytes).to_le_bytes()).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_replaced_whole_and_damage_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vote");
        assert_eq!(read(&path).expect("read"), None);
        write_durably(&path, b"term 1").expect("write");
        overwrite_lazily(&path, b"term 22").expect("write");
        assert_eq!(read(&path).expect("read"), Some(b"term 22".to_vec()));
        overwrite_lazily(&path, b"term 3").expect("overwrite shorter");
        assert_eq!(read(&path).expect("read"), Some(b"term 3".to_vec()));
        overwrite_lazily(&path, b"term 444").expect("overwrite longer");
        assert_eq!(read(&path).expect("read"), Some(b"term 444".to_vec()));
        let mut damaged = fs::read(&path).expect("raw");
        damaged[0] ^= 1;
        fs::write(&path, damaged).expect("damage");
        assert_eq!(read(&path).expect("read"), None, "a damaged file is not half-read");
        fs::write(&path, b"ab").expect("short");
        assert_eq!(read(&path).expect("read"), None);
    }
}
