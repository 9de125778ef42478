//! One track of a fork: its audio feed, its backend sessions (reopened once on failure) and the
//! gap recorded when transcription is given up.
//!
//! Times: a backend reports offsets in ms of the audio its session received; [`TrackOut`] turns
//! them into wall-clock times from the arrival of the track's first frame plus the audio fed to
//! earlier sessions, so turns of both tracks sort by when they were said, whatever the backend's
//! latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::output::{Line, LineKind};
use super::{deepgram, openai, whisper, Backend, BackendSettings};
use crate::audio::BYTES_PER_MS;
use crate::stats::Stats;
use crate::transcript::Role;

/// A session that ran this long before failing earns a fresh retry (e.g. the Realtime API's
/// 60-minute session limit is not a reason to give up on the rest of the call).
const HEALTHY_SESSION: Duration = Duration::from_secs(60);
/// Pause before reopening a failed session.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// A fork track (PROTOCOLS.md § "Twilio Media Streams": `media.track`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Track {
    /// What the caller says.
    Inbound,
    /// What the other party (the `<Dial>`ed agent) says.
    Outbound,
}

impl Track {
    /// `inbound`/`inbound_track` or `outbound`/`outbound_track`.
    pub fn parse(name: &str) -> Option<Track> {
        match name {
            "inbound" | "inbound_track" => Some(Track::Inbound),
            "outbound" | "outbound_track" => Some(Track::Outbound),
            _ => None,
        }
    }

    /// The speaker of this track.
    pub fn role(self) -> Role {
        match self {
            Track::Inbound => Role::Caller,
            Track::Outbound => Role::Agent,
        }
    }

    /// `inbound` or `outbound`.
    pub fn name(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }

    /// 0 or 1, for per-track arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One Twilio `media` payload: the base64 text as received (forwarded unchanged to OpenAI) and
/// its decoded μ-law bytes (sent to Deepgram, buffered for Whisper).
#[derive(Debug)]
pub(super) struct Frame {
    pub payload: String,
    pub ulaw: Vec<u8>,
}

/// A track's audio as backend sessions consume it, counting what they took.
pub(super) struct Feed {
    rx: mpsc::Receiver<Frame>,
    consumed_bytes: u64,
}

impl Feed {
    pub fn new(rx: mpsc::Receiver<Frame>) -> Self {
        Feed {
            rx,
            consumed_bytes: 0,
        }
    }

    /// The next frame; `None` once the fork has ended (the sender is dropped).
    pub async fn next(&mut self) -> Option<Frame> {
        let frame = self.rx.recv().await?;
        self.consumed_bytes += frame.ulaw.len() as u64;
        Some(frame)
    }

    /// ms of the track's audio consumed so far.
    pub fn position_ms(&self) -> u64 {
        self.consumed_bytes / BYTES_PER_MS as u64
    }

    /// Throw the rest of the audio away (transcription given up) until the fork ends.
    async fn discard(&mut self, cancel: &CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                frame = self.rx.recv() => if frame.is_none() { return },
            }
        }
    }
}

/// Where a backend session reports what it heard. Cheap to clone.
#[derive(Clone)]
pub(super) struct TrackOut {
    track: Track,
    /// When the track's first frame arrived.
    origin: DateTime<Utc>,
    /// Track audio fed to earlier sessions, ms: added to the session's own offsets.
    session_offset_ms: u64,
    /// Keeps keys unique across tracks and sessions: `inbound-2-`.
    prefix: String,
    tx: mpsc::Sender<Line>,
}

impl TrackOut {
    pub fn new(track: Track, origin: DateTime<Utc>, tx: mpsc::Sender<Line>) -> Self {
        TrackOut {
            track,
            origin,
            session_offset_ms: 0,
            prefix: format!("{}-0-", track.name()),
            tx,
        }
    }

    /// The reporter for session `n`, which starts at `offset_ms` of the track's audio.
    fn for_session(&self, n: u32, offset_ms: u64) -> TrackOut {
        TrackOut {
            session_offset_ms: offset_ms,
            prefix: format!("{}-{n}-", self.track.name()),
            ..self.clone()
        }
    }

    /// Wall-clock time of `offset_ms` into this session's audio; now when the backend gave none.
    fn at(&self, offset_ms: Option<u64>) -> DateTime<Utc> {
        match offset_ms {
            Some(ms) => {
                let ms = i64::try_from(self.session_offset_ms + ms).unwrap_or(i64::MAX);
                self.origin + chrono::Duration::milliseconds(ms)
            }
            None => Utc::now(),
        }
    }

    async fn send(&self, kind: LineKind, key: &str, text: &str, offset_ms: Option<u64>) {
        let line = Line {
            role: self.track.role(),
            kind,
            key: format!("{}{key}", self.prefix),
            text: text.to_string(),
            at: self.at(offset_ms),
        };
        // Closed only when the fork's output is gone: nothing left to tell.
        let _ = self.tx.send(line).await;
    }

    /// Text of segment `key` so far (it may still change); `offset_ms` is where the segment starts.
    pub async fn interim(&self, key: &str, text: &str, offset_ms: Option<u64>) {
        self.send(LineKind::Interim, key, text, offset_ms).await;
    }

    /// Settled text of segment `key`.
    pub async fn final_text(&self, key: &str, text: &str, offset_ms: Option<u64>) {
        self.send(LineKind::Final, key, text, offset_ms).await;
    }

    /// Transcription stops for good at `offset_ms` of this session's audio.
    pub async fn gap(&self, offset_ms: u64) {
        let at = self.at(Some(offset_ms));
        let text = super::gap_text(at);
        self.send(LineKind::Gap, "gap", &text, Some(offset_ms))
            .await;
    }
}

/// A streaming backend: one WebSocket session at a time.
#[derive(Debug, Clone, Copy)]
enum Streaming {
    OpenAi,
    Deepgram,
}

/// Transcribe one track until its audio ends (the fork is over) or `cancel` fires.
pub(super) async fn run(
    settings: Arc<BackendSettings>,
    track: Track,
    mut feed: Feed,
    out: TrackOut,
    stats: Stats,
    cancel: CancellationToken,
) {
    let backend = match settings.transcribe.transcribe_backend {
        Backend::Whisper => return whisper::run(settings, feed, out, stats, cancel).await,
        Backend::Openai => Streaming::OpenAi,
        Backend::Deepgram => Streaming::Deepgram,
    };
    let mut may_retry = true;
    let mut session = 0;
    loop {
        session += 1;
        let started = Instant::now();
        let session_out = out.for_session(session, feed.position_ms());
        let result = match backend {
            Streaming::OpenAi => openai::session(&settings, &mut feed, &session_out, &cancel).await,
            Streaming::Deepgram => {
                deepgram::session(&settings, &mut feed, &session_out, &cancel).await
            }
        };
        let Err(e) = result else { return };
        stats.error(crate::stats::ErrorKind::Transcription);
        if started.elapsed() >= HEALTHY_SESSION {
            may_retry = true;
        }
        if may_retry && !cancel.is_cancelled() {
            may_retry = false;
            warn!(
                track = track.name(),
                session,
                error = format!("{e:#}"),
                "transcription session failed; reopening it once"
            );
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(RETRY_BACKOFF) => continue,
            }
        }
        error!(
            track = track.name(),
            session,
            error = format!("{e:#}"),
            "transcription unavailable for the rest of this track"
        );
        out.gap(feed.position_ms()).await;
        feed.discard(&cancel).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_become_wall_times_and_keys_stay_unique_per_session() {
        let (tx, mut rx) = mpsc::channel(8);
        let origin = Utc::now();
        let out = TrackOut::new(Track::Outbound, origin, tx);
        let second = out.for_session(2, 1_500);
        second.final_text("item_1", "hello", Some(250)).await;
        out.gap(3_000).await;
        let line = rx.recv().await.unwrap();
        assert_eq!(line.role, Role::Agent);
        assert_eq!(line.key, "outbound-2-item_1");
        assert_eq!(line.at, origin + chrono::Duration::milliseconds(1_750));
        let gap = rx.recv().await.unwrap();
        assert!(matches!(gap.kind, LineKind::Gap));
        assert_eq!(gap.at, origin + chrono::Duration::milliseconds(3_000));
        assert!(gap.text.starts_with("[transcription unavailable from "));
        assert_eq!(Track::parse("inbound_track"), Some(Track::Inbound));
        assert_eq!(Track::parse("both"), None);
    }
}
