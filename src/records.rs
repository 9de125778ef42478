//! Call records: one per call (assistant calls, outbound calls, forked calls), as `/api/calls`
//! shows them; kept in the store ([`crate::store`]).
//!
//! Status values are Twilio's (`queued initiated ringing in-progress completed busy failed
//! no-answer canceled`, PROTOCOLS.md § "Twilio REST API"); status callbacks may arrive out of
//! order, so a callback older (by `SequenceNumber`) than the last one applied is ignored, and a
//! terminal status is never replaced by a live one.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::transcript::EndReason;

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
    /// The instance whose stream holds (or held) the call (`INSTANCE_ID`); absent for calls
    /// that never streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The call's recording (`RECORDING=on`), once it is written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<crate::recording::RecordingRef>,
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
            instance_id: None,
            recording: None,
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
}
