//! What one simulated call observed, and its printable summary.

use std::fmt::Write as _;

use crate::audio::BYTES_PER_MS;

/// Everything a simulated call saw, for the `call` summary and for tests. Audio is 8 kHz μ-law.
#[derive(Debug, Clone, Default)]
pub struct CallReport {
    /// `CA` + 32 hex digits, sent in `start`.
    pub call_sid: String,
    /// `MZ` + 32 hex digits, sent in `start`.
    pub stream_sid: String,
    /// `AC` + 32 hex digits, sent in `start`.
    pub account_sid: String,
    /// From the end of the first clip (its last frame sent) to the first assistant `media`
    /// received after it, ms; `None` if no audio came after the first clip.
    pub first_audio_latency_ms: Option<u64>,
    /// Every μ-law byte sent in `media` frames, in order (silence included); in fork mode, those
    /// of the inbound track (the caller).
    pub sent_audio: Vec<u8>,
    /// Fork mode: every μ-law byte sent on the outbound track (the agent), in order.
    pub sent_agent_audio: Vec<u8>,
    /// Every μ-law byte received in `media`, in order, before playback (cleared audio included).
    pub received_audio: Vec<u8>,
    /// The most μ-law bytes one `media` message carried.
    pub largest_media_bytes: usize,
    /// The bytes actually played to the caller, concatenated without gaps.
    pub heard: Vec<u8>,
    /// `mark` commands received.
    pub marks_received: usize,
    /// `mark` events echoed back.
    pub marks_echoed: usize,
    /// `clear` commands received.
    pub clears: usize,
    /// For each `clear`: how much of the reply then playing (the latest reply, if it had already
    /// finished) had been played when the clear arrived, ms, counted from its first played byte
    /// at 20 ms granularity. A reply starts when audio arrives while nothing is playing, unless it
    /// is within 300 ms of the previous reply with no `clear` and no caller clip in between (an
    /// underrun, not a new reply).
    pub heard_ms_at_clear: Vec<u64>,
    /// The most assistant audio ever waiting unplayed at this end at once, ms: how far ahead of
    /// playback the relay sends (`PLAYBACK_AHEAD_MS` on APIs it paces).
    pub max_queued_ms: u64,
    /// Replies that started playing.
    pub replies_started: usize,
    /// Clips after which no reply started within the reply timeout.
    pub reply_timeouts: usize,
    /// The server closed the WebSocket (or it failed) before we sent `stop`.
    pub closed_by_server: bool,
    /// The call was cut at the `max_call_ms` cap.
    pub hit_call_limit: bool,
    /// Anything received that is not valid media/mark/clear JSON for our `streamSid`, with why;
    /// in fork mode, anything received at all (a fork must get nothing back).
    pub unexpected_messages: Vec<String>,
}

impl CallReport {
    /// Audio the caller heard, ms (8 bytes per ms).
    pub fn heard_ms(&self) -> u64 {
        (self.heard.len() / BYTES_PER_MS) as u64
    }

    /// A few human-readable lines: SIDs, latency, audio heard, marks and clears.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let latency = self
            .first_audio_latency_ms
            .map_or_else(|| "none".to_string(), |ms| format!("{ms} ms"));
        let ending = if self.closed_by_server {
            "closed by server"
        } else if self.hit_call_limit {
            "hung up at the call limit"
        } else {
            "hung up by caller"
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "call {} stream {} ({ending})",
            self.call_sid, self.stream_sid
        );
        let _ = writeln!(out, "first-audio latency: {latency}");
        let _ = writeln!(
            out,
            "audio: sent {} ms, received {} ms, heard {} ms in {} replies ({} without reply)",
            self.sent_audio.len() / BYTES_PER_MS,
            self.received_audio.len() / BYTES_PER_MS,
            self.heard_ms(),
            self.replies_started,
            self.reply_timeouts,
        );
        if !self.sent_agent_audio.is_empty() {
            let _ = writeln!(
                out,
                "fork: sent {} ms on the outbound (agent) track",
                self.sent_agent_audio.len() / BYTES_PER_MS
            );
        }
        let _ = writeln!(
            out,
            "marks: {} received, {} echoed; clears: {} (heard ms at clear: {:?})",
            self.marks_received, self.marks_echoed, self.clears, self.heard_ms_at_clear,
        );
        if !self.unexpected_messages.is_empty() {
            let _ = writeln!(
                out,
                "unexpected messages: {}",
                self.unexpected_messages.len()
            );
            for message in self.unexpected_messages.iter().take(5) {
                let _ = writeln!(out, "  {message}");
            }
        }
        out
    }
}
