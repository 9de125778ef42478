//! The transcript of one call and its JSON file, `TRANSCRIPT_DIR/{CallSid}.json`.
//!
//! The file is rewritten atomically (temp file + rename) after every completed turn and at call
//! end, so a crash loses at most the turn in progress. Turns are kept in the order they started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Who spoke a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The person who called (the inbound track of a fork).
    Caller,
    /// The AI assistant.
    Assistant,
    /// The other person on a forked call (the outbound track).
    Agent,
}

impl Role {
    /// `Caller`, `Assistant`, `Agent`: the label used in text transcripts and logs.
    pub fn label(self) -> &'static str {
        match self {
            Role::Caller => "Caller",
            Role::Assistant => "Assistant",
            Role::Agent => "Agent",
        }
    }
}

/// Why a call ended, as written to `end_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Twilio sent `stop`: the caller hung up (or the call otherwise ended on Twilio's side).
    CallerHungUp,
    /// Twilio's socket closed without `stop`.
    TwilioDisconnected,
    /// The Realtime API could not be reached or failed mid-call.
    UpstreamError,
    /// The Realtime API closed its socket.
    UpstreamClosed,
    /// The server was shutting down.
    ServerShutdown,
    /// The assistant called `end_call` and the call was hung up after its goodbye played.
    AssistantHungUp,
    /// `POST /api/calls/{sid}/hangup`.
    ApiHangup,
    /// The call reached `MAX_CALL_SECS`: the assistant said goodbye and the call was hung up.
    MaxDuration,
    /// The caller stayed silent through `CALLER_IDLE_PROMPTS` prompts; the assistant said goodbye.
    CallerIdle,
    /// Twilio's stream went silent: no message for `STREAM_IDLE_TIMEOUT_SECS` (or no `start`
    /// within `STREAM_START_TIMEOUT_SECS`, which leaves no transcript).
    TwilioTimeout,
    /// The stream's `start` was refused (malformed SIDs, a call that already ended or is live,
    /// a missing or invalid stream token). Only in logs: there is no call to write a transcript for.
    StreamRefused,
}

impl EndReason {
    /// The `end_reason` string, e.g. `caller_hung_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::CallerHungUp => "caller_hung_up",
            EndReason::TwilioDisconnected => "twilio_disconnected",
            EndReason::UpstreamError => "upstream_error",
            EndReason::UpstreamClosed => "upstream_closed",
            EndReason::ServerShutdown => "server_shutdown",
            EndReason::AssistantHungUp => "assistant_hung_up",
            EndReason::ApiHangup => "api_hangup",
            EndReason::MaxDuration => "max_duration",
            EndReason::CallerIdle => "caller_idle",
            EndReason::TwilioTimeout => "twilio_timeout",
            EndReason::StreamRefused => "stream_refused",
        }
    }
}

/// One utterance. `heard_ms` is set only for interrupted assistant turns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    pub text: String,
    pub started_at: DateTime<Utc>,
    pub interrupted: bool,
    /// ms of this turn's audio the caller heard before barging in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard_ms: Option<u64>,
}

/// The whole file. `ended_at`/`end_reason` are `null` while the call is live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub call_sid: String,
    pub stream_sid: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<EndReason>,
    pub turns: Vec<Turn>,
    /// Times the Realtime API dropped mid-call and the relay reconnected (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub upstream_reconnects: u32,
    /// Times the Realtime session reached its maximum duration and was renewed (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_renewals: u32,
    /// Turns whose text has not arrived yet, by Realtime item id.
    #[serde(skip)]
    pending: HashMap<String, Turn>,
}

impl Transcript {
    /// A new transcript, started now.
    pub fn new(call_sid: &str, stream_sid: &str, from: Option<String>, to: Option<String>) -> Self {
        Transcript {
            call_sid: call_sid.to_string(),
            stream_sid: stream_sid.to_string(),
            from,
            to,
            started_at: Utc::now(),
            ended_at: None,
            end_reason: None,
            turns: Vec::new(),
            upstream_reconnects: 0,
            session_renewals: 0,
            pending: HashMap::new(),
        }
    }

    /// Note that item `item_id` began at `at` (speech started, first assistant audio sent).
    pub fn begin(&mut self, item_id: &str, role: Role, at: DateTime<Utc>) {
        self.pending.entry(item_id.to_string()).or_insert(Turn {
            role,
            text: String::new(),
            started_at: at,
            interrupted: false,
            heard_ms: None,
        });
    }

    /// Append partial text (a transcript delta) to a pending turn.
    pub fn append(&mut self, item_id: &str, role: Role, delta: &str) {
        self.begin(item_id, role, Utc::now());
        if let Some(turn) = self.pending.get_mut(item_id) {
            turn.text.push_str(delta);
        }
    }

    /// Record that the caller barged in after hearing `heard_ms` of assistant item `item_id`.
    pub fn interrupt(&mut self, item_id: &str, heard_ms: u64) {
        let turn = self.pending.get_mut(item_id).or_else(|| {
            self.turns
                .iter_mut()
                .rev()
                .find(|t| t.role == Role::Assistant)
        });
        if let Some(turn) = turn {
            turn.interrupted = true;
            turn.heard_ms = Some(heard_ms);
        }
    }

    /// Complete a turn with its final text; returns false if the text was empty (nothing added).
    pub fn complete(&mut self, item_id: &str, role: Role, text: &str) -> bool {
        let mut turn = self.pending.remove(item_id).unwrap_or(Turn {
            role,
            text: String::new(),
            started_at: Utc::now(),
            interrupted: false,
            heard_ms: None,
        });
        turn.text = text.trim().to_string();
        if turn.text.is_empty() {
            return false;
        }
        self.insert(turn);
        true
    }

    /// Whether a turn of `role` has begun and its text not yet arrived.
    pub fn has_pending(&self, role: Role) -> bool {
        self.pending.values().any(|t| t.role == role)
    }

    /// Forget a pending turn whose text will never come (its transcription failed).
    pub fn discard(&mut self, item_id: &str) {
        self.pending.remove(item_id);
    }

    /// Mark the call ended; pending turns with partial text are kept, not lost.
    pub fn finish(&mut self, reason: EndReason) {
        let pending: Vec<Turn> = self.pending.drain().map(|(_, t)| t).collect();
        for mut turn in pending {
            turn.text = turn.text.trim().to_string();
            if !turn.text.is_empty() {
                self.insert(turn);
            }
        }
        self.ended_at = Some(Utc::now());
        self.end_reason = Some(reason);
    }

    fn insert(&mut self, turn: Turn) {
        let at = self
            .turns
            .partition_point(|t| t.started_at <= turn.started_at);
        self.turns.insert(at, turn);
    }

    /// `dir/{call_sid}.json`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", sanitize(&self.call_sid)))
    }

    /// Write the file atomically: `{sid}.json.tmp` then rename. Errors name the path.
    pub async fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = self.path(dir);
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).context("serializing transcript")?;
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        tokio::fs::write(&tmp, json)
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(path)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Keep a SID usable as a file name whatever Twilio (or an attacker) sends.
fn sanitize(sid: &str) -> String {
    let cleaned: String = sid
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn turns_are_ordered_by_when_they_started_not_when_text_arrived() {
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        let t0 = Utc::now();
        t.begin("item_1", Role::Caller, t0);
        t.begin("item_2", Role::Assistant, t0 + Duration::milliseconds(900));
        assert!(t.complete("item_2", Role::Assistant, "Hi there"));
        assert!(t.complete("item_1", Role::Caller, " Hello "));
        let roles: Vec<_> = t.turns.iter().map(|x| (x.role, x.text.as_str())).collect();
        assert_eq!(
            roles,
            [(Role::Caller, "Hello"), (Role::Assistant, "Hi there")]
        );
    }

    #[test]
    fn interruption_is_recorded_before_or_after_the_text() {
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        t.begin("a", Role::Assistant, Utc::now());
        t.interrupt("a", 640);
        t.complete("a", Role::Assistant, "Long answer");
        t.begin("b", Role::Assistant, Utc::now());
        t.complete("b", Role::Assistant, "Second");
        t.interrupt("b", 120);
        assert_eq!(t.turns[0].heard_ms, Some(640));
        assert!(t.turns[1].interrupted);
        assert_eq!(t.turns[1].heard_ms, Some(120));
    }

    #[test]
    fn partial_text_survives_the_end_of_the_call() {
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        t.append("a", Role::Assistant, "Half a sen");
        t.finish(EndReason::CallerHungUp);
        assert_eq!(t.turns[0].text, "Half a sen");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["end_reason"], "caller_hung_up");
        for reason in [
            EndReason::ApiHangup,
            EndReason::AssistantHungUp,
            EndReason::UpstreamClosed,
            EndReason::MaxDuration,
            EndReason::CallerIdle,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert!(json["turns"][0].get("heard_ms").is_none());
    }

    #[tokio::test]
    async fn save_writes_the_file_atomically_under_the_call_sid() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transcript::new("CA../../etc", "MZ1", Some("+1555".into()), None);
        t.complete("i", Role::Caller, "hello");
        let path = t.save(dir.path()).await.unwrap();
        assert_eq!(path, dir.path().join("CAetc.json"));
        let back: Transcript = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.turns[0].text, "hello");
        assert!(!dir.path().join("CAetc.json.tmp").exists());
    }
}
