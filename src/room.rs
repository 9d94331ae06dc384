//! Out of room on disk (a full disk, a quota, a file-size limit): the Raft
//! log cannot take a write, so Raft stops and nothing more is acknowledged
//! (the write that failed never was). Rather than exit and wait for a
//! supervisor, the process waits until its data directory takes a write of
//! the size that matters again, then starts anew from its data: routers
//! rejoin the cluster, gateways link again, clients carry on.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info};

/// How often a full data directory is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Whether `error` is storage that ran out of room.
pub(crate) fn out_of_room(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}");
    ["No space left on device", "File too large", "Disk quota exceeded"]
        .iter()
        .any(|sign| text.contains(sign))
}

/// Runs `run` until it ends; when it ended because `data` ran out of room,
/// waits until `data` takes `probe_bytes` (written, synced, removed) and
/// runs it again. `run` gets a future that resolves on `shutdown`.
pub(crate) async fn resuming<F, Fut>(
    data: PathBuf,
    probe_bytes: u64,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut run: F,
) -> anyhow::Result<()>
where
    F: FnMut(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    loop {
        let mut until = stopped.clone();
        let outcome = run(Box::pin(async move {
            let _ = until.wait_for(|stop| *stop).await;
        }))
        .await;
        match outcome {
            Err(error) if out_of_room(&error) && !*stopped.borrow() => {
                error!(
                    error = format!("{error:#}"),
                    data = %data.display(),
                    "out of room on disk: nothing more is acknowledged; waiting for room, then starting again"
                );
                if !until_room(&data, probe_bytes, stopped.clone()).await {
                    return Err(error);
                }
                info!(data = %data.display(), "room on disk again: starting again from the data");
            }
            other => return other,
        }
    }
}

/// Waits until `dir` takes `bytes`; false if told to stop first.
async fn until_room(dir: &Path, bytes: u64, mut stop: watch::Receiver<bool>) -> bool {
    let probe = dir.join(".room-probe");
    loop {
        let path = probe.clone();
        let written = tokio::task::spawn_blocking(move || write_probe(&path, bytes)).await;
        let _ = std::fs::remove_file(&probe);
        if matches!(written, Ok(Ok(()))) {
            return true;
        }
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return false,
            () = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
}

fn write_probe(path: &Path, bytes: u64) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let zeros = vec![0_u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_room_is_told_from_other_storage_errors() {
        let full = anyhow::anyhow!("raft stopped: write segment: File too large (os error 27)");
        assert!(out_of_room(&full));
        let context = anyhow::anyhow!("No space left on device (os error 28)").context("stopped");
        assert!(out_of_room(&context), "the cause counts");
        assert!(!out_of_room(&anyhow::anyhow!("raft stopped: segment 3 is damaged at byte 7")));
    }

    #[test]
    fn a_directory_with_room_is_seen_at_once_and_the_probe_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_stop, stopped) = watch::channel(false);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        assert!(runtime.block_on(until_room(dir.path(), 3 << 20, stopped)));
        assert_eq!(std::fs::read_dir(dir.path()).expect("read").count(), 0, "no probe left behind");
    }
}
