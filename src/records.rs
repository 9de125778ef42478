//! Call records: one per call (assistant calls, outbound calls, forked calls), kept in memory
//! and persisted as `TRANSCRIPT_DIR/calls/{CallSid}.json` so they survive a restart.
//!
//! Status values are Twilio's (`queued initiated ringing in-progress completed busy failed
//! no-answer canceled`, PROTOCOLS.md § "Twilio REST API"); status callbacks may arrive out of
//! order, so a callback older (by `SequenceNumber`) than the last one applied is ignored, and a
//! terminal status is never replaced by a live one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::stats::{ErrorKind, Stats};
use crate::transcript::{remove_temp_files, write_atomically, EndReason};

/// One call as `/api/calls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_sid: String,
    /// `inbound`, `outbound-api` or `fork` (a transcribed call between people).
    pub direction: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Twilio's call status.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Seconds, from Twilio's `CallDuration` when known, else measured.
    pub duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// `metadata` given to `POST /api/calls`, returned as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Highest status-callback `SequenceNumber` applied.
    #[serde(default, skip_serializing)]
    pub last_sequence: Option<u64>,
}

impl CallRecord {
    /// A new record, started now, with status `status`.
    pub fn new(call_sid: &str, direction: &str, status: &str) -> Self {
        CallRecord {
            call_sid: call_sid.to_string(),
            direction: direction.to_string(),
            from: None,
            to: None,
            status: status.to_string(),
            started_at: Utc::now(),
            ended_at: None,
            duration_s: None,
            end_reason: None,
            metadata: None,
            last_sequence: None,
        }
    }

    /// Whether the call is over (a terminal Twilio status, or ended as seen by the relay).
    pub fn is_ended(&self) -> bool {
        self.ended_at.is_some() || is_terminal(&self.status)
    }

    /// Mark ended now (if not already), with the measured duration unless Twilio gave one.
    pub fn end(&mut self, status: &str, reason: Option<EndReason>) {
        let now = Utc::now();
        if self.ended_at.is_none() {
            self.ended_at = Some(now);
        }
        if !is_terminal(&self.status) {
            self.status = status.to_string();
        }
        if self.end_reason.is_none() {
            self.end_reason = reason;
        }
        if self.duration_s.is_none() {
            self.duration_s = Some((now - self.started_at).num_seconds().max(0) as u64);
        }
    }

    /// Apply a Twilio status callback. Returns false if it was stale and ignored.
    pub fn apply_status(
        &mut self,
        status: &str,
        sequence: Option<u64>,
        duration_s: Option<u64>,
    ) -> bool {
        if let (Some(seen), Some(seq)) = (self.last_sequence, sequence) {
            if seq <= seen {
                return false;
            }
        }
        if is_terminal(&self.status) && !is_terminal(status) {
            return false;
        }
        self.last_sequence = sequence.or(self.last_sequence);
        self.status = status.to_string();
        if let Some(d) = duration_s {
            self.duration_s = Some(d);
        }
        if is_terminal(status) && self.ended_at.is_none() {
            self.ended_at = Some(Utc::now());
        }
        true
    }
}

/// Twilio statuses after which nothing changes.
pub fn is_terminal(status: &str) -> bool {
    matches!(
        status,
        "completed" | "busy" | "failed" | "no-answer" | "canceled"
    )
}

/// All call records. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CallStore {
    dir: PathBuf,
    records: Arc<Mutex<HashMap<String, CallRecord>>>,
    /// Failed writes are counted as `errors_total{kind="storage"}`.
    stats: Stats,
}

impl CallStore {
    /// Load the records under `transcript_dir/calls/`; unreadable files are logged and skipped,
    /// temp files left by a crash are removed. Failed writes later are counted in `stats`.
    pub fn load(transcript_dir: &Path, stats: Stats) -> Self {
        let dir = transcript_dir.join("calls");
        let removed = remove_temp_files(&dir);
        if removed > 0 {
            info!(removed, dir = %dir.display(), "removed call-record temp files an earlier run left");
        }
        let mut records = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                match std::fs::read(&path)
                    .map_err(anyhow::Error::from)
                    .and_then(|b| Ok(serde_json::from_slice::<CallRecord>(&b)?))
                {
                    Ok(r) => {
                        records.insert(r.call_sid.clone(), r);
                    }
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "skipped an unreadable call record")
                    }
                }
            }
        }
        CallStore {
            dir,
            records: Arc::new(Mutex::new(records)),
            stats,
        }
    }

    /// The record of `call_sid`.
    pub fn get(&self, call_sid: &str) -> Option<CallRecord> {
        self.lock().get(call_sid).cloned()
    }

    /// Up to `limit` records: calls in progress first, then newest first.
    pub fn list(&self, limit: usize) -> Vec<CallRecord> {
        let mut all: Vec<CallRecord> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| {
            a.is_ended()
                .cmp(&b.is_ended())
                .then(b.started_at.cmp(&a.started_at))
        });
        all.truncate(limit);
        all
    }

    /// Change (or create with `create`) the record of `call_sid` and persist it. Returns it.
    pub async fn update(
        &self,
        call_sid: &str,
        create: impl FnOnce() -> CallRecord,
        change: impl FnOnce(&mut CallRecord),
    ) -> CallRecord {
        let record = {
            let mut records = self.lock();
            let record = records.entry(call_sid.to_string()).or_insert_with(create);
            change(record);
            record.clone()
        };
        self.persist(&record).await;
        record
    }

    /// Change the record of `call_sid` if it exists.
    pub async fn update_existing(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Option<CallRecord> {
        let record = {
            let mut records = self.lock();
            let record = records.get_mut(call_sid)?;
            change(record);
            record.clone()
        };
        self.persist(&record).await;
        Some(record)
    }

    /// Write `record` atomically; a failure is counted and logged (the in-memory record stays
    /// current, and the next change of the record writes it again).
    async fn persist(&self, record: &CallRecord) {
        if let Err(e) = self.write(record).await {
            self.stats.error(ErrorKind::Storage);
            warn!(call_sid = %record.call_sid, error = format!("{e:#}"), "could not persist the call record");
        }
    }

    async fn write(&self, record: &CallRecord) -> anyhow::Result<()> {
        let name: String = record
            .call_sid
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .take(64)
            .collect();
        let path = self.dir.join(format!("{name}.json"));
        write_atomically(&path, &serde_json::to_vec_pretty(record)?).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CallRecord>> {
        self.records.lock().expect("call store lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_and_regressing_status_callbacks_are_ignored() {
        let mut r = CallRecord::new("CA1", "outbound-api", "queued");
        assert!(r.apply_status("ringing", Some(2), None));
        assert!(
            !r.apply_status("initiated", Some(1), None),
            "older sequence"
        );
        assert!(r.apply_status("completed", Some(4), Some(42)));
        assert!(
            !r.apply_status("in-progress", Some(5), None),
            "terminal stays terminal"
        );
        assert_eq!(r.status, "completed");
        assert_eq!(r.duration_s, Some(42));
        assert!(r.is_ended());
    }

    #[tokio::test]
    async fn records_survive_a_restart_and_list_active_calls_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = CallStore::load(dir.path(), Stats::default());
        store
            .update(
                "CA_old",
                || CallRecord::new("CA_old", "inbound", "in-progress"),
                |r| r.end("completed", Some(EndReason::CallerHungUp)),
            )
            .await;
        store
            .update(
                "CA_live",
                || CallRecord::new("CA_live", "inbound", "in-progress"),
                |_| {},
            )
            .await;
        let again = CallStore::load(dir.path(), Stats::default());
        let list = again.list(10);
        let sids: Vec<&str> = list.iter().map(|r| r.call_sid.as_str()).collect();
        assert_eq!(sids, ["CA_live", "CA_old"]);
        assert_eq!(
            again.get("CA_old").unwrap().end_reason,
            Some(EndReason::CallerHungUp)
        );
        assert_eq!(again.list(1).len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_write_is_counted_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Stats::default();
        let store = CallStore::load(dir.path(), stats.clone());
        let tmp = dir.path().join("calls/CA1.json.tmp");
        // Writing through a link to /dev/full fails with ENOSPC, as on a full disk.
        std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
        let record = store
            .update(
                "CA1",
                || CallRecord::new("CA1", "inbound", "ringing"),
                |_| {},
            )
            .await;
        assert_eq!(record.status, "ringing");
        assert_eq!(stats.errors(), 1);
        assert!(stats
            .prometheus(crate::metrics::Exposition::Classic)
            .contains("errors_total{kind=\"storage\"} 1"));
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "temp file removed"
        );
        assert_eq!(store.get("CA1").unwrap().status, "ringing", "still served");
    }

    #[test]
    fn temp_files_an_earlier_run_left_are_removed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        std::fs::create_dir_all(&calls).unwrap();
        std::fs::write(calls.join("CA1.json.tmp"), b"").unwrap();
        let record = CallRecord::new("CA2", "inbound", "completed");
        std::fs::write(calls.join("CA2.json"), serde_json::to_vec(&record).unwrap()).unwrap();
        let store = CallStore::load(dir.path(), Stats::default());
        assert!(!calls.join("CA1.json.tmp").exists());
        assert_eq!(store.get("CA2").unwrap().status, "completed");
    }
}
