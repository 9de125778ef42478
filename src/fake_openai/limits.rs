//! The stand-in's session limits: expiry at the maximum duration and server VAD's idle timeout.
//!
//! Expiry follows `PROTOCOLS.md` § "Where the newer facts come from", "Session limit": an `error`
//! with `code: "session_expired"`, then the socket is closed. The idle timeout follows
//! `realtime_audio_input_turn_detection_param.py` (`idle_timeout_ms`, server VAD only): counted
//! from when the last response's audio finished playing (real time from its first chunk), or
//! from the `session.update` that set it; speech stops it. When it runs out the stand-in sends
//! `input_audio_buffer.timeout_triggered`, commits the silent audio and answers with the tone.

use std::borrow::Cow;

use tokio::time::{Duration, Instant};

use super::config;
use super::respond::greeting_tone;
use super::session::Conn;
use crate::audio::BYTES_PER_MS;
use crate::realtime::ServerEvent;

impl Conn {
    /// The session reached its maximum duration: `session_expired`, then close.
    pub(super) fn expire(&mut self) {
        self.expires_at = None;
        self.idle_at = None;
        self.response = None;
        self.error(
            "session_expired",
            "Your session hit the maximum duration of the stand-in's --expire-after-secs.".into(),
            None,
            None,
        );
        self.closing = true;
    }

    /// Start (or restart) the idle clock at `from` if the session asks for one and nothing is in
    /// progress; otherwise stop it.
    pub(super) fn arm_idle(&mut self, from: Instant) {
        let timeout = config::vad_settings(&self.session).and_then(|s| s.idle_timeout_ms);
        self.idle_at = match timeout {
            Some(ms) if self.response.is_none() && self.speech_item.is_none() => {
                Some(from + Duration::from_millis(ms))
            }
            _ => None,
        };
    }

    /// The caller said nothing for `idle_timeout_ms`: prompt them.
    pub(super) fn idle_timeout(&mut self, now: Instant) {
        self.idle_at = None;
        let end_ms = (self.audio.len() / BYTES_PER_MS) as u64;
        let timeout_ms = config::vad_settings(&self.session)
            .and_then(|s| s.idle_timeout_ms)
            .unwrap_or(0);
        let item_id = self.new_item_id();
        self.emit(&ServerEvent::TimeoutTriggered {
            audio_start_ms: end_ms.saturating_sub(timeout_ms),
            audio_end_ms: end_ms,
            item_id: Cow::Borrowed(&item_id),
        });
        let previous = self.last_item.replace(item_id.clone());
        self.emit(&ServerEvent::Committed {
            previous_item_id: previous.as_deref().map(Cow::Borrowed),
            item_id: Cow::Borrowed(&item_id),
        });
        self.start_response(
            greeting_tone(),
            "(idle prompt) Are you still there?".into(),
            now,
        );
    }
}
