//! The caller's turn in flight, kept so that a session expiring mid-turn costs the caller nothing.
//!
//! When a Realtime session reaches its maximum duration, audio the server had not committed is
//! gone with it: a caller cut off mid-sentence would be answered on a fragment. So while a caller
//! turn is open (from `speech_started` until a response to it is created) the inbound side keeps
//! the `input_audio_buffer.append`s it sent, from the utterance's `audio_start_ms` on, and after
//! an expiry the next session hears them again before the live audio. Outside a turn only the
//! last [`RING_MS`] are kept (the server reports `speech_started` a little after the speech began,
//! and `audio_start_ms` reaches back by its prefix padding). Frames are shared with the socket
//! writer (`Utf8Bytes` is reference-counted), so keeping one costs no copy.
//!
//! Positions are the server's: ms of audio appended to this session (μ-law is 8 bytes per ms).

use std::collections::VecDeque;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::audio::BYTES_PER_MS;

/// Audio kept outside a caller turn, ms.
pub(super) const RING_MS: u64 = 500;
/// Longest caller turn kept, ms; older audio of a longer monologue is let go.
pub(super) const MAX_TURN_MS: u64 = 30_000;

/// One `input_audio_buffer.append` and how much audio it carries.
#[derive(Debug, Clone)]
pub(super) struct Frame {
    pub json: Utf8Bytes,
    /// μ-law bytes of audio (8 per ms).
    pub bytes: u32,
}

impl Frame {
    /// An append carrying `bytes` of μ-law audio.
    pub fn new(json: String, bytes: usize) -> Self {
        Frame {
            json: Utf8Bytes::from(json),
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        }
    }
}

/// What one session has been sent, as far as a replay needs it.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// Frames sent, with the position (ms) where each ends; the oldest go first.
    kept: VecDeque<(u64, Frame)>,
    /// Bytes of audio sent to this session.
    sent_bytes: u64,
    /// The caller's turn started at this position (ms): keep everything from there.
    turn_from_ms: Option<u64>,
}

impl Replay {
    /// A frame went to the session.
    pub fn sent(&mut self, frame: &Frame) {
        self.sent_bytes += u64::from(frame.bytes);
        let end_ms = self.sent_bytes / BYTES_PER_MS as u64;
        self.kept.push_back((end_ms, frame.clone()));
        let keep_ms = if self.turn_from_ms.is_some() {
            MAX_TURN_MS
        } else {
            RING_MS
        };
        while self
            .kept
            .front()
            .is_some_and(|(end, _)| end + keep_ms < end_ms)
        {
            self.kept.pop_front();
        }
    }

    /// `speech_started` at `audio_start_ms`: keep the turn from there (and what the ring has of it).
    pub fn turn_started(&mut self, audio_start_ms: u64) {
        self.turn_from_ms = Some(audio_start_ms);
        self.kept.retain(|(end, _)| *end > audio_start_ms);
    }

    /// The turn was answered: back to the ring.
    pub fn turn_answered(&mut self) {
        self.turn_from_ms = None;
    }

    /// The session ended. After an expiry mid-turn: the turn's frames, oldest first, to send the
    /// next session; otherwise nothing. Either way the next session starts from position 0.
    pub fn take_turn(&mut self, mid_turn: bool) -> Vec<Frame> {
        let frames = match self.turn_from_ms {
            Some(_) if mid_turn => self.kept.drain(..).map(|(_, f)| f).collect(),
            _ => Vec::new(),
        };
        *self = Replay::default();
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20 ms frame (160 bytes) tagged `n`.
    fn frame(n: u32) -> Frame {
        Frame::new(n.to_string(), 160)
    }

    fn tags(frames: &[Frame]) -> Vec<String> {
        frames.iter().map(|f| f.json.to_string()).collect()
    }

    #[test]
    fn outside_a_turn_only_the_ring_is_kept_and_nothing_is_replayed() {
        let mut r = Replay::default();
        for n in 0..100 {
            r.sent(&frame(n));
        }
        assert!(r.kept.len() <= (RING_MS / 20) as usize + 1);
        assert!(r.take_turn(true).is_empty(), "no turn was open");
    }

    #[test]
    fn a_turn_is_replayed_from_its_audio_start() {
        let mut r = Replay::default();
        for n in 0..50 {
            r.sent(&frame(n)); // frame n ends at (n + 1) × 20 ms
        }
        // The server saw speech from 700 ms: frames 35.. (ending at 720 ms and later).
        r.turn_started(700);
        for n in 50..200 {
            r.sent(&frame(n));
        }
        let replayed = r.take_turn(true);
        assert_eq!(tags(&replayed)[0], "35");
        assert_eq!(replayed.len(), 200 - 35, "everything since, none dropped");
        assert!(
            r.take_turn(true).is_empty(),
            "taken once; the next session starts afresh"
        );
    }

    #[test]
    fn an_answered_turn_is_not_replayed() {
        let mut r = Replay::default();
        r.turn_started(0);
        r.sent(&frame(1));
        r.turn_answered();
        assert!(r.take_turn(true).is_empty());
        let mut r = Replay::default();
        r.turn_started(0);
        r.sent(&frame(1));
        assert!(r.take_turn(false).is_empty(), "not an expiry mid-turn");
    }

    #[test]
    fn a_monologue_keeps_its_last_thirty_seconds() {
        let mut r = Replay::default();
        r.turn_started(0);
        for n in 0..2000 {
            r.sent(&frame(n));
        }
        let kept_ms = r.kept.len() as u64 * 20;
        assert!(
            (MAX_TURN_MS..=MAX_TURN_MS + 40).contains(&kept_ms),
            "{kept_ms}"
        );
    }
}
