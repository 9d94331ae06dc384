//! Backups of the replicated state: one self-checking file that `herald
//! ctl snapshot save` writes from any router, and `herald ctl snapshot
//! restore` loads into a cluster that holds nothing yet.
//!
//! ```text
//!   HERALD-BACKUP\n  {JSON metadata}\n  durable image (protobuf, journal.proto)
//! ```
//!
//! The metadata names the format version, the cluster and node it came
//! from, the applied index, the registry generation, and the image's length
//! and CRC-32: a truncated or damaged file is refused, never half-restored.

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"HERALD-BACKUP\n";
/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupMeta {
    /// The backup format version.
    pub format: u32,
    /// The cluster it was taken from.
    pub cluster_id: String,
    /// The router it was taken from.
    pub node_id: u64,
    /// The last log index applied to the state it holds.
    pub applied_index: u64,
    /// The registry generation at that point.
    pub generation: u64,
    /// When it was taken, Unix milliseconds.
    pub created_unix_ms: u64,
    /// The image's length in bytes.
    pub image_len: u64,
    /// The image's CRC-32.
    pub image_crc32: u32,
}

/// A backup: its metadata and the durable image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// What it says about itself.
    pub meta: BackupMeta,
    /// The durable image (`herald_proto::journal::encode_image`).
    pub image: Vec<u8>,
}

impl Backup {
    /// Returns the file form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        serde_json::to_writer(&mut bytes, &self.meta).expect("metadata serialises");
        bytes.push(b'\n');
        bytes.extend(&self.image);
        bytes
    }

    /// Reads a file written by [`Backup::encode`], checking its format,
    /// length and checksum.
    pub fn decode(bytes: &[u8]) -> Result<Backup, String> {
        let rest = bytes.strip_prefix(MAGIC).ok_or("not a Herald backup (no HERALD-BACKUP header)")?;
        let end = rest.iter().position(|b| *b == b'\n').ok_or("backup metadata not terminated")?;
        let meta: BackupMeta =
            serde_json::from_slice(&rest[..end]).map_err(|e| format!("backup metadata: {e}"))?;
        if meta.format != BACKUP_FORMAT {
            return Err(format!("backup format {} (this build reads {BACKUP_FORMAT})", meta.format));
        }
        let image = &rest[end + 1..];
        if image.len() as u64 != meta.image_len {
            return Err(format!("backup truncated: {} of {} image bytes", image.len(), meta.image_len));
        }
        if crc32fast::hash(image) != meta.image_crc32 {
            return Err("backup damaged: the image's checksum does not match".to_owned());
        }
        Ok(Backup { meta, image: image.to_vec() })
    }

    /// Builds a backup of `image` with its length and checksum filled in.
    pub fn new(
        cluster_id: &str,
        node_id: u64,
        applied_index: u64,
        generation: u64,
        image: Vec<u8>,
    ) -> Backup {
        let created_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let meta = BackupMeta {
            format: BACKUP_FORMAT,
            cluster_id: cluster_id.to_owned(),
            node_id,
            applied_index,
            generation,
            created_unix_ms,
            image_len: image.len() as u64,
            image_crc32: crc32fast::hash(&image),
        };
        Backup { meta, image }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_survives_its_file_form_and_damage_is_refused() {
        let backup = Backup::new("prod", 2, 41, 7, vec![1, 2, 3, 4, 5]);
        let bytes = backup.encode();
        assert_eq!(Backup::decode(&bytes), Ok(backup));

        let truncated = &bytes[..bytes.len() - 1];
        assert!(Backup::decode(truncated).is_err_and(|e| e.contains("truncated")));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xFF;
        assert!(Backup::decode(&flipped).is_err_and(|e| e.contains("checksum")));
        assert!(Backup::decode(b"something else").is_err_and(|e| e.contains("not a Herald backup")));
    }
}
