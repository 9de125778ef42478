//! Grouping GPT-Live transcript deltas into turns, as the SDK's transcript grouper does.
//!
//! GPT-Live sends `session.input_transcript.delta` (caller) and `session.output_transcript.delta`
//! (assistant) fragments with `start_ms`/`end_ms` on the session timeline and no "done" events
//! (`types/live/input_transcript_delta_event.py`). openai-python 3.51.0 `lib/live/` groups them
//! into display segments; this module is that policy, pure and without clocks:
//!
//! - `_transcript_state.py` (here [`TranscriptGrouper`]): deltas without an `event_id` or with
//!   `end_ms < start_ms` are refused; a repeated `event_id` is ignored, as is empty text; a
//!   fragment of the speaker who is not current waits (the SDK: up to 50 ms) for a fragment of
//!   the other speaker with the same interval, so simultaneous fragments are ordered current
//!   speaker first; a fragment starting before the previous one (a timestamp reset) closes
//!   everything with `timestamp_reset`; `session.closed` closes everything with `session_closed`.
//! - `_transcript_grouping.py` (here `policy`): the same speaker appends to the current turn; the
//!   caller starting after the assistant closes the assistant turn at once (`speaker_change`);
//!   the assistant starting at least `min_turn_separation_ms` (500) after the caller's last
//!   fragment closes the caller turn, but an assistant fragment sooner than that, or a short
//!   acknowledgment ("mhm", "okay", … under `backchannel_max_duration_ms`, 1000) is buffered and
//!   becomes the next turn only once the caller has been quiet for 500 ms; a buffered short
//!   acknowledgment the caller talks past, with no assistant turn in the previous
//!   `backchannel_isolation_ms` (2000), is dropped as a backchannel; an assistant turn with
//!   `assistant_silence_ms` (2000) of silence after it closes with `inactivity`.
//!
//! Where the SDK reads local monotonic time (its inactivity timers, the 50 ms wait, "now" on the
//! source clock) the caller passes the session-timeline time to [`TranscriptGrouper::advance`];
//! at push time "now" is the latest `end_ms` seen. Segment ids are `segment_<n>` per grouper.

mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashSet;

use super::ServerEvent;
use policy::{Fragment, Grouping};

/// Who spoke a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    /// The caller (`session.input_transcript.delta`).
    User,
    /// The assistant (`session.output_transcript.delta`).
    Assistant,
}

/// A snapshot of one turn (`TranscriptSegment`); ms on the session timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `segment_<n>`, local to this grouper.
    pub id: String,
    /// The segment emitted before this one.
    pub previous_id: Option<String>,
    pub speaker: Speaker,
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Why a segment was closed (`TranscriptSegmentCloseReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    SpeakerChange,
    Inactivity,
    TimestampReset,
    SessionClosed,
    Manual,
}

/// What a push or an advance changed, in order (`GroupingUpdate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The segment's text or end grew (replace what is displayed; `segment.updated`).
    Updated(Segment),
    /// The segment is complete: a turn for the transcript (`segment.closed`).
    Closed {
        segment: Segment,
        reason: CloseReason,
    },
}

impl Update {
    /// The completed segment, if this update closes one.
    pub fn closed(&self) -> Option<&Segment> {
        match self {
            Update::Closed { segment, .. } => Some(segment),
            Update::Updated(_) => None,
        }
    }
}

/// The policy's thresholds in ms (`TranscriptGrouperOptions`; defaults from `_options`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrouperOptions {
    pub min_turn_separation_ms: u64,
    pub assistant_silence_ms: u64,
    /// 0 disables backchannel suppression.
    pub backchannel_max_duration_ms: u64,
    pub backchannel_isolation_ms: u64,
    /// Phrases added to the built-in acknowledgments (normalized the same way).
    pub additional_acknowledgments: Vec<String>,
}

impl Default for GrouperOptions {
    fn default() -> Self {
        GrouperOptions {
            min_turn_separation_ms: 500,
            assistant_silence_ms: 2000,
            backchannel_max_duration_ms: 1000,
            backchannel_isolation_ms: 2000,
            additional_acknowledgments: Vec::new(),
        }
    }
}

/// A transcript delta refused before it changed anything: no `event_id`, or `end_ms < start_ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Live transcript delta: expected an event_id and start_ms <= end_ms")]
pub struct InvalidDelta;

/// One session's grouper. Feed it every server event ([`TranscriptGrouper::push_event`]), call
/// [`TranscriptGrouper::advance`] when [`TranscriptGrouper::deadline`] passes, and
/// [`TranscriptGrouper::flush`] at the end.
#[derive(Debug)]
pub struct TranscriptGrouper {
    grouping: Grouping,
    seen_ids: HashSet<String>,
    /// Fragments with one interval waiting for the other speaker's (`_pending`).
    pending: Vec<Fragment>,
    /// Latest `end_ms` committed: "now" on the source clock at push time.
    anchor: Option<u64>,
    last_start_ms: Option<u64>,
    closed: bool,
}

impl Default for TranscriptGrouper {
    fn default() -> Self {
        Self::new(GrouperOptions::default())
    }
}

impl TranscriptGrouper {
    /// A grouper with these thresholds.
    pub fn new(options: GrouperOptions) -> Self {
        TranscriptGrouper {
            grouping: Grouping::new(options),
            seen_ids: HashSet::new(),
            pending: Vec::new(),
            anchor: None,
            last_start_ms: None,
            closed: false,
        }
    }

    /// Consume one server event: transcript deltas are grouped, `session.closed` finishes the
    /// grouper (`session_closed`), everything else is ignored.
    ///
    /// # Errors
    /// [`InvalidDelta`] for a delta without an `event_id` or with `end_ms < start_ms` (nothing changes).
    pub fn push_event(&mut self, event: &ServerEvent<'_>) -> Result<Vec<Update>, InvalidDelta> {
        match event {
            ServerEvent::InputTranscriptDelta {
                event_id,
                delta,
                start_ms,
                end_ms,
            } => self.push(Speaker::User, event_id, delta, *start_ms, *end_ms),
            ServerEvent::OutputTranscriptDelta {
                event_id,
                delta,
                start_ms,
                end_ms,
            } => self.push(Speaker::Assistant, event_id, delta, *start_ms, *end_ms),
            ServerEvent::SessionClosed { .. } => Ok(self.finish(CloseReason::SessionClosed)),
            _ => Ok(Vec::new()),
        }
    }

    /// Consume one transcript delta (`TranscriptState.push`). Ignored after the grouper finished.
    ///
    /// # Errors
    /// [`InvalidDelta`]: an empty `event_id` or `end_ms < start_ms`.
    pub fn push(
        &mut self,
        speaker: Speaker,
        event_id: &str,
        text: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<Update>, InvalidDelta> {
        if event_id.is_empty() || end_ms < start_ms {
            return Err(InvalidDelta);
        }
        if self.closed || !self.seen_ids.insert(event_id.to_string()) || text.is_empty() {
            return Ok(Vec::new());
        }
        let fragment = Fragment {
            speaker,
            text: text.to_string(),
            start_ms,
            end_ms,
        };
        let mut updates = Vec::new();
        let same_interval = self
            .pending
            .first()
            .is_some_and(|p| p.start_ms == start_ms && p.end_ms == end_ms);
        if same_interval {
            self.pending.push(fragment);
            if self.pending.iter().any(|p| p.speaker != speaker) {
                updates.extend(self.flush_pending());
            }
        } else {
            updates.extend(self.flush_pending());
            if self.grouping.speaker() == Some(speaker) {
                updates.extend(self.commit(vec![fragment]));
            } else {
                self.pending.push(fragment);
            }
        }
        Ok(updates)
    }

    /// When [`TranscriptGrouper::advance`] should next run, ms on the session timeline: a
    /// fragment waiting for its pair is due at once (the SDK waits 50 ms of local time), then
    /// the policy's next inactivity or backchannel deadline. `None`: nothing will change.
    pub fn deadline(&self) -> Option<u64> {
        if self.closed {
            return None;
        }
        if let Some(latest) = self.pending.iter().map(|p| p.end_ms).max() {
            return Some(latest);
        }
        self.grouping.deadline()
    }

    /// The session timeline reached `now_ms` (`TranscriptState.tick`): commit waiting fragments
    /// and close what has been quiet long enough.
    pub fn advance(&mut self, now_ms: u64) -> Vec<Update> {
        if self.closed {
            return Vec::new();
        }
        let mut updates = self.flush_pending();
        updates.extend(self.grouping.advance(now_ms, false));
        updates
    }

    /// The end of the transcript (`close()`, reason `manual`): every open segment is closed and
    /// returned; later pushes are ignored.
    pub fn flush(&mut self) -> Vec<Update> {
        self.finish(CloseReason::Manual)
    }

    /// Close everything once with `reason` (`TranscriptState.finish`).
    pub fn finish(&mut self, reason: CloseReason) -> Vec<Update> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        let mut updates = self.flush_pending();
        updates.extend(self.grouping.close(self.anchor.unwrap_or(0), reason));
        self.seen_ids.clear();
        updates
    }

    fn flush_pending(&mut self) -> Vec<Update> {
        let pending = std::mem::take(&mut self.pending);
        self.commit(pending)
    }

    fn commit(&mut self, fragments: Vec<Fragment>) -> Vec<Update> {
        let Some(first) = fragments.first() else {
            return Vec::new();
        };
        let mut updates = Vec::new();
        if self.last_start_ms.is_some_and(|last| first.start_ms < last) {
            let now = self.anchor.unwrap_or(0);
            updates.extend(self.grouping.close(now, CloseReason::TimestampReset));
            self.anchor = None;
        }
        self.last_start_ms = Some(first.start_ms);
        let latest = fragments.iter().map(|f| f.end_ms).max().unwrap_or(0);
        self.anchor = Some(self.anchor.unwrap_or(0).max(latest));
        updates.extend(self.grouping.process(fragments));
        updates
    }
}
