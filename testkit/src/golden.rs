//! Golden files: stored bytes of each on-disk and on-wire format version,
//! so that an accidental incompatible change to an encoding fails a test.
//!
//! A format test encodes known values and compares the bytes with the
//! stored file, and decodes the stored file back into the values. When a
//! change to a format is intended, the format's version is bumped, its new
//! files are written with `HERALD_BLESS=1` (the old ones stay: a new build
//! must still read them when the rolling-upgrade rule says so).

use std::path::Path;

/// Compares `bytes` with the golden file at `path` (written instead when
/// `HERALD_BLESS` is set), and returns the file's bytes for decoding.
pub fn check(path: &Path, bytes: &[u8]) -> Vec<u8> {
    if std::env::var_os("HERALD_BLESS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create the golden files' directory");
        }
        std::fs::write(path, bytes).expect("write a golden file");
    }
    let stored = std::fs::read(path).unwrap_or_else(|e| {
        panic!("golden file {} unreadable ({e}); HERALD_BLESS=1 writes it", path.display())
    });
    assert!(
        stored == bytes,
        "the encoding no longer matches {}: a stored format changed. If intended, bump the format \
         version and write new golden files with HERALD_BLESS=1 (keep the old ones)",
        path.display()
    );
    stored
}
