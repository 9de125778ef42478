//! Where a fork's text goes: log lines, the transcript file, the call record and the event feed.
//!
//! One owner (the fork's supervisor) applies every [`Line`] in arrival order, so the transcript
//! needs no lock. The transcript has the same shape as assistant calls
//! ([`crate::transcript`]) and goes to the store after every final; turns sort by when they
//! were said. Interims are logged and published but never stored.

use chrono::{DateTime, Utc};
use tracing::info;

use crate::app::AppState;
use crate::events::CallEvent;
use crate::records::CallRecord;
use crate::transcript::{EndReason, Role, Transcript};

/// What kind of text a [`Line`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LineKind {
    /// Text of a segment so far; may still change.
    Interim,
    /// Settled text of a segment.
    Final,
    /// The track's transcription was given up; `text` says from when.
    Gap,
}

/// One piece of text from a track's backend.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub role: Role,
    pub kind: LineKind,
    /// Unique per segment across the fork's tracks and sessions.
    pub key: String,
    pub text: String,
    /// When the segment started (wall clock, from the track's audio position).
    pub at: DateTime<Utc>,
}

/// SIDs and parameters from Twilio's `start`.
#[derive(Debug, Clone)]
pub(super) struct ForkInfo {
    pub call_sid: String,
    pub stream_sid: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The outputs of one fork, created on `start`.
pub(super) struct Output {
    state: AppState,
    transcript: Transcript,
    pub interims: u64,
    pub finals: u64,
}

impl Output {
    /// Start the transcript and create (or update) the call record as `fork`, `in-progress`.
    pub async fn start(state: &AppState, info: &ForkInfo) -> Output {
        let sid = info.call_sid.as_str();
        let (from, to) = (info.from.clone(), info.to.clone());
        let instance = state.store.instance_id().to_string();
        let record = state
            .store
            .update(
                sid,
                || CallRecord::new(sid, "fork", "in-progress"),
                |r| {
                    r.from = from.or(r.from.take());
                    r.to = to.or(r.to.take());
                    r.instance_id = Some(instance);
                },
            )
            .await;
        state.events.started(crate::events::LiveCall {
            call_sid: sid.to_string(),
            from: record.from,
            to: record.to,
            direction: record.direction,
            started_at: record.started_at,
            state: crate::events::CallState::Talking,
        });
        Output {
            state: state.clone(),
            transcript: Transcript::new(sid, &info.stream_sid, info.from.clone(), info.to.clone()),
            interims: 0,
            finals: 0,
        }
    }

    /// Log, store and publish one line.
    pub async fn apply(&mut self, line: Line) {
        let at = line.at.format("%H:%M:%S%.3f").to_string();
        let speaker = line.role.label();
        let sid = self.transcript.call_sid.clone();
        match line.kind {
            LineKind::Interim => {
                self.interims += 1;
                info!(%at, speaker, text = line.text.as_str(), "interim");
                let event = CallEvent::Interim {
                    speaker: line.role,
                    text: line.text,
                    at: line.at,
                };
                self.state.events.publish(&sid, event);
            }
            LineKind::Final | LineKind::Gap => {
                self.transcript.begin(&line.key, line.role, line.at);
                if !self.transcript.complete(&line.key, line.role, &line.text) {
                    return;
                }
                if line.kind == LineKind::Final {
                    self.finals += 1;
                    self.state.stats.fork_final();
                    info!(%at, speaker, text = line.text.trim(), "final");
                } else {
                    let backend = self.state.config.transcribe.transcribe_backend.name();
                    self.state.stats.fork_backend_failed(backend);
                }
                self.state.store.save_transcript(&self.transcript);
                let event = CallEvent::Final {
                    speaker: line.role,
                    text: line.text.trim().to_string(),
                    at: line.at,
                };
                self.state.events.publish(&sid, event);
            }
        }
    }

    /// Finish and save the transcript, end the call record, publish `call.ended`.
    pub async fn finish(mut self, reason: EndReason) {
        self.transcript.finish(reason);
        self.state.store.finish_transcript(&self.transcript).await;
        let sid = self.transcript.call_sid.clone();
        self.state
            .store
            .update(
                &sid,
                || CallRecord::new(&sid, "fork", "in-progress"),
                |r| r.end("completed", Some(reason)),
            )
            .await;
        self.state.events.publish(
            &sid,
            CallEvent::Ended {
                end_reason: reason,
                at: Utc::now(),
            },
        );
    }
}
