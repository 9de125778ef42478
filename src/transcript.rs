//! The transcript of one call and its JSON file, `TRANSCRIPT_DIR/{CallSid}.json`.
//!
//! The file is rewritten atomically (temp file + rename, [`write_atomically`]) after every
//! completed turn and at call end, so a crash loses at most the turn in progress; temp files a
//! crash or a failed write leaves are removed ([`remove_temp_files`] at start-up). Turns are kept in the order they started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Turns begun whose text has not arrived, at most (a real call has one or two).
pub const MAX_OPEN_TURNS: usize = 64;
/// Turns per call, at most: hours of conversation.
pub const MAX_TURNS: usize = 20_000;
/// Text per call, at most, bytes (turns and pending text together).
pub const MAX_TEXT_BYTES: usize = 4 * 1024 * 1024;

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
    /// A tool call of the assistant (function, built-in or MCP) and its answer.
    Tool,
}

impl Role {
    /// `Caller`, `Assistant`, `Agent`: the label used in text transcripts and logs.
    pub fn label(self) -> &'static str {
        match self {
            Role::Caller => "Caller",
            Role::Assistant => "Assistant",
            Role::Agent => "Agent",
            Role::Tool => "Tool",
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
    /// The instance holding the call stopped beating (crashed, killed): the call was closed
    /// by another instance, or by this one when it restarted, at the last heartbeat.
    ServerLost,
    /// The assistant called `transfer_call` and Twilio handed the call to the destination
    /// (`transferred_to` names it).
    Transferred,
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
            EndReason::Transferred => "transferred",
            EndReason::ServerLost => "server_lost",
        }
    }
}

/// The `end_reason` string (as [`EndReason::as_str`]), so logs use the transcript's names.
impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    /// A caller turn typed on the keypad: the keys, e.g. `427#`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtmf: Option<String>,
    /// A `tool` turn's call: `name`, `arguments`, `output` or `error`, `duration_ms`.
    #[serde(default, flatten, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolCallRecord>,
}

/// One tool call as the transcript keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The function's name (`server_label.name` for MCP tools).
    pub name: String,
    /// The arguments the model gave (a JSON string if they were not JSON).
    pub arguments: serde_json::Value,
    /// The answer the model got, when the tool answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Why the tool gave no answer (the `error` the model got).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the call to its answer, ms (0 when the API ran it).
    pub duration_ms: u64,
}

impl Turn {
    /// A finished turn of `role` that began at `at`.
    pub fn new(role: Role, text: String, at: DateTime<Utc>) -> Self {
        Turn {
            role,
            text,
            started_at: at,
            interrupted: false,
            heard_ms: None,
            dtmf: None,
            tool: None,
        }
    }
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
    /// The `TRANSFER_DESTINATIONS` name the call was transferred to (with `end_reason: transferred`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred_to: Option<String>,
    /// Times the Realtime session reached its maximum duration and was renewed (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub session_renewals: u32,
    /// Why the voice API last closed the session, when it says (GPT-Live `session.closed`
    /// `reason`: `close_requested`, `expired`, `content`, `remote_hangup`, `connection_lost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_close_reason: Option<String>,
    /// The audio the voice API counted for the call, seconds (GPT-Live `session.closed`
    /// `usage.seconds`, summed over the call's sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_usage_seconds: Option<f64>,
    /// Turns (or text) dropped because the call passed [`MAX_OPEN_TURNS`], [`MAX_TURNS`] or
    /// [`MAX_TEXT_BYTES`]: only a misbehaving upstream gets there (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_turns: u32,
    /// Bytes of text kept so far (turns and pending), against [`MAX_TEXT_BYTES`].
    #[serde(skip)]
    text_bytes: usize,
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
            transferred_to: None,
            session_renewals: 0,
            upstream_close_reason: None,
            upstream_usage_seconds: None,
            dropped_turns: 0,
            text_bytes: 0,
            pending: HashMap::new(),
        }
    }

    /// Note that item `item_id` began at `at` (speech started, first assistant audio sent).
    /// Beyond [`MAX_OPEN_TURNS`] open at once the item is dropped and counted.
    pub fn begin(&mut self, item_id: &str, role: Role, at: DateTime<Utc>) {
        if self.pending.contains_key(item_id) {
            return;
        }
        if self.pending.len() >= MAX_OPEN_TURNS {
            self.dropped_turns = self.dropped_turns.saturating_add(1);
            return;
        }
        self.pending
            .insert(item_id.to_string(), Turn::new(role, String::new(), at));
    }

    /// Append partial text (a transcript delta) to a pending turn (dropped past [`MAX_TEXT_BYTES`]).
    pub fn append(&mut self, item_id: &str, role: Role, delta: &str) {
        self.begin(item_id, role, Utc::now());
        if self.text_bytes + delta.len() > MAX_TEXT_BYTES {
            return;
        }
        if let Some(turn) = self.pending.get_mut(item_id) {
            turn.text.push_str(delta);
            self.text_bytes += delta.len();
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

    /// Complete a turn with its final text; returns false if nothing was added (empty text, or
    /// the call is past [`MAX_TURNS`] / [`MAX_TEXT_BYTES`]: then the turn is dropped and counted).
    pub fn complete(&mut self, item_id: &str, role: Role, text: &str) -> bool {
        let mut turn = match self.pending.remove(item_id) {
            Some(turn) => {
                self.text_bytes -= turn.text.len();
                turn
            }
            None => Turn::new(role, String::new(), Utc::now()),
        };
        turn.text = text.trim().to_string();
        if turn.text.is_empty() {
            return false;
        }
        self.keep(turn)
    }

    /// Add a finished turn (a tool call, keys pressed) in order of its start; false if the call
    /// is past [`MAX_TURNS`] / [`MAX_TEXT_BYTES`] (then it is dropped and counted).
    pub fn add(&mut self, turn: Turn) -> bool {
        self.keep(turn)
    }

    /// Whether a turn of `role` has begun and its text not yet arrived.
    pub fn has_pending(&self, role: Role) -> bool {
        self.pending.values().any(|t| t.role == role)
    }

    /// Forget a pending turn whose text will never come (its transcription failed).
    pub fn discard(&mut self, item_id: &str) {
        if let Some(turn) = self.pending.remove(item_id) {
            self.text_bytes -= turn.text.len();
        }
    }

    /// The upstream session these item ids belong to is gone: keep the pending turns' partial
    /// text as turns (never lost) and forget the ids, which a new session may reuse.
    pub fn settle_pending(&mut self) {
        let mut pending: Vec<Turn> = self.pending.drain().map(|(_, t)| t).collect();
        pending.sort_by_key(|t| t.started_at);
        let mut kept = Vec::with_capacity(pending.len());
        for mut turn in pending {
            self.text_bytes -= turn.text.len();
            turn.text = turn.text.trim().to_string();
            if !turn.text.is_empty() && self.admits(&turn, kept.len()) {
                self.text_bytes += turn.text.len();
                kept.push(turn);
            }
        }
        if kept.is_empty() {
            return;
        }
        // One merge of two sorted lists: linear, however many turns were pending.
        let turns = std::mem::take(&mut self.turns);
        let mut merged = Vec::with_capacity(turns.len() + kept.len());
        let (mut a, mut b) = (turns.into_iter().peekable(), kept.into_iter().peekable());
        loop {
            let take_a = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.started_at <= y.started_at,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            merged.extend(if take_a { a.next() } else { b.next() });
        }
        self.turns = merged;
    }

    /// Mark the call ended; pending turns with partial text are kept, not lost.
    pub fn finish(&mut self, reason: EndReason) {
        self.settle_pending();
        self.ended_at = Some(Utc::now());
        self.end_reason = Some(reason);
    }

    /// Whether the call has room for `turn` besides `also` turns about to be added; counts it
    /// as dropped if not.
    fn admits(&mut self, turn: &Turn, also: usize) -> bool {
        let fits = self.turns.len() + also < MAX_TURNS
            && self.text_bytes + turn.text.len() <= MAX_TEXT_BYTES;
        if !fits {
            self.dropped_turns = self.dropped_turns.saturating_add(1);
        }
        fits
    }

    /// Add a completed turn in order of when it started, if the call has room for it.
    fn keep(&mut self, turn: Turn) -> bool {
        if !self.admits(&turn, 0) {
            return false;
        }
        self.text_bytes += turn.text.len();
        let at = self
            .turns
            .partition_point(|t| t.started_at <= turn.started_at);
        self.turns.insert(at, turn);
        true
    }

    /// `dir/{call_sid}.json`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.json", sanitize(&self.call_sid)))
    }

    /// Write the file atomically (see [`write_atomically`]). Errors name the path.
    pub async fn save(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = self.path(dir);
        let json = serde_json::to_vec_pretty(self).context("serializing transcript")?;
        write_atomically(&path, &json).await?;
        Ok(path)
    }
}

/// Suffix of the temporary file a JSON file is written to before it is renamed into place.
const TEMP_SUFFIX: &str = ".json.tmp";

/// Write `bytes` to `path` (`….json`) atomically: to `….json.tmp` in the same directory (created
/// if missing), then renamed over `path`, so readers see the old file or the new one, never half
/// of one. When a step fails (a full disk, a read-only directory) the temporary file is removed
/// and the error names the path; the old file, if any, is untouched.
pub async fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(&TEMP_SUFFIX[1..]);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let written = match tokio::fs::write(&tmp, bytes).await {
        Ok(()) => tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display())),
        Err(e) => Err(anyhow::Error::new(e).context(format!("writing {}", tmp.display()))),
    };
    if written.is_err() {
        // Best effort: a 0-byte leftover would otherwise stay forever.
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

/// Remove the `*.json.tmp` files in `dir` (not below it) that a crash or a failed write left
/// behind; returns how many were removed. Run at start-up, before anything writes there.
pub fn remove_temp_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(TEMP_SUFFIX))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
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

    #[test]
    fn a_flood_of_items_is_bounded_and_finishing_it_is_linear() {
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        let t0 = Utc::now();
        for i in 0..250_000 {
            t.append(&format!("item_{i}"), Role::Assistant, "x");
        }
        t.begin("late", Role::Caller, t0);
        assert!(!t.has_pending(Role::Caller), "beyond the open-turn bound");
        t.finish(EndReason::CallerHungUp);
        assert_eq!(t.turns.len(), MAX_OPEN_TURNS);
        assert_eq!(t.dropped_turns as usize, 250_000 - MAX_OPEN_TURNS + 1);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["dropped_turns"], 250_000 - MAX_OPEN_TURNS as u64 + 1);
    }

    #[test]
    fn settled_turns_merge_in_order_and_their_ids_can_be_reused() {
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        let t0 = Utc::now();
        t.begin("item_3", Role::Caller, t0);
        t.append("item_3", Role::Caller, "half a sen");
        t.begin(
            "item_2",
            Role::Assistant,
            t0 + chrono::Duration::milliseconds(500),
        );
        t.complete("item_2", Role::Assistant, "answer");
        t.settle_pending();
        // A new session reuses item_3 for the assistant.
        t.begin("item_3", Role::Assistant, t0 + chrono::Duration::seconds(2));
        t.complete("item_3", Role::Assistant, "Hello again");
        let turns: Vec<_> = t.turns.iter().map(|x| (x.role, x.text.as_str())).collect();
        assert_eq!(
            turns,
            [
                (Role::Caller, "half a sen"),
                (Role::Assistant, "answer"),
                (Role::Assistant, "Hello again")
            ]
        );
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

    /// `path` made a link to `/dev/full`: writing through it fails with ENOSPC, as on a full disk.
    #[cfg(target_os = "linux")]
    fn full_disk_at(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/full", path).unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_failed_save_keeps_the_old_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Transcript::new("CA1", "MZ1", None, None);
        t.complete("i", Role::Caller, "hello");
        let path = t.save(dir.path()).await.unwrap();
        full_disk_at(&dir.path().join("CA1.json.tmp"));
        t.complete("j", Role::Assistant, "hi");
        let err = t.save(dir.path()).await.unwrap_err();
        assert!(format!("{err:#}").contains("CA1.json.tmp"), "{err:#}");
        assert!(std::fs::symlink_metadata(dir.path().join("CA1.json.tmp")).is_err());
        let back: Transcript = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.turns.len(), 1, "the last good file stays");
    }

    #[test]
    fn temp_files_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["CA1.json.tmp", "CA2.json.tmp", "CA3.json", "notes.txt"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert_eq!(remove_temp_files(dir.path()), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["CA3.json", "notes.txt"]);
        assert_eq!(remove_temp_files(&dir.path().join("missing")), 0);
    }
}
