//! `RECORDING_RETENTION_DAYS`: recordings older than that are deleted, and their reference
//! cleared from the call record, at start-up and then hourly.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::Store;

/// Time between two sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// `{CallSid}.wav` files in `dir` last written before `cutoff`, with their CallSids.
fn expired(dir: &Path, cutoff: SystemTime) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let sid = name.strip_suffix(".wav")?.to_string();
            let written = e.metadata().and_then(|m| m.modified()).ok()?;
            (written < cutoff).then(|| (sid, e.path()))
        })
        .collect()
}

/// Delete the recordings in `dir` older than `days` days and clear their records' references;
/// returns how many were deleted.
pub async fn sweep(dir: &Path, days: u32, store: &Store) -> usize {
    let age = Duration::from_secs(u64::from(days) * 86_400);
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let dir = dir.to_path_buf();
    let removed = tokio::task::spawn_blocking(move || {
        expired(&dir, cutoff)
            .into_iter()
            .filter_map(|(sid, path)| match std::fs::remove_file(&path) {
                Ok(()) => Some(sid),
                Err(e) => {
                    warn!(error = %e, path = %path.display(), "could not delete an expired recording");
                    None
                }
            })
            .collect::<Vec<String>>()
    })
    .await
    .unwrap_or_default();
    for sid in &removed {
        store.update_existing(sid, |r| r.recording = None).await;
    }
    if !removed.is_empty() {
        info!(
            removed = removed.len(),
            days, "deleted recordings past RECORDING_RETENTION_DAYS"
        );
    }
    removed.len()
}

/// Sweep `dir` now and every [`SWEEP_EVERY`] until `stop` is cancelled.
pub async fn run(dir: PathBuf, days: u32, store: Store, stop: CancellationToken) {
    loop {
        sweep(&dir, days, &store).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
