//! Live transcription of forked calls: a call between people keeps going (`<Dial>`) while Twilio
//! forks its audio one way (`<Start><Stream>`, PROTOCOLS.md § "TwiML") to `/transcription-stream`.
//!
//! Each track of the fork (`inbound` = the caller, `outbound` = the other party, the `agent`) gets
//! its own backend session, opened when the track's first frame arrives: an OpenAI Realtime
//! transcription session, a Deepgram live connection, or chunked Whisper uploads
//! (`TRANSCRIBE_BACKEND`). Interim and final text is logged (info), finals go to the same
//! transcript files and call records as assistant calls, and everything is published on the
//! call's event feed (`transcript.interim`, `transcript.final`, `call.ended`). Nothing is ever
//! sent back to Twilio on a fork (Twilio treats it as error 31924), only the closing handshake.
//! When the fork ends, each track flushes its backend and waits, bounded, for the last results,
//! so words said just before `stop` are kept: `openai` appends silence and commits the input
//! buffer, `deepgram` sends `Finalize` and `CloseStream`, `whisper` uploads the chunk in progress.
//!
//! Backend failures: a streaming session that fails is reopened once (a session that ran for a
//! minute earns a fresh retry); a Whisper chunk is retried once. When the retry fails too, the
//! track goes on without transcription and the transcript gets a turn for that track reading
//! `[transcription unavailable from HH:MM:SS UTC]` ([`gap_text`]); finals already received stay.
//!
//! # Layout
//! - [`config`]: `TRANSCRIBE_*`, `DEEPGRAM_*` and `WHISPER_*` options.
//! - [`twiml`]: `/transcribe-call`: the `<Start><Stream>` + `<Dial>` TwiML.
//! - [`fork`]: `/transcription-stream`: reading the one-way Twilio stream, one task per track.
//! - `output`: the log lines, transcript file, call record and event feed of one fork.
//! - `track`: one track's audio feed, backend sessions, retry and gap.
//! - `openai`: OpenAI Realtime transcription sessions.
//! - [`deepgram`]: Deepgram live-streaming messages and sessions.
//! - [`whisper`]: batch uploads of WAV chunks to `/v1/audio/transcriptions`.
//! - `chunker`: cutting a track's audio into chunks at pauses.
//! - `connect`: opening a backend WebSocket (auth header, timeout, refusals).

mod chunker;
pub mod config;
mod connect;
pub mod deepgram;
pub mod fork;
pub(crate) mod openai;
mod output;
mod track;
pub mod twiml;
pub mod whisper;

use std::time::Duration;

use chrono::{DateTime, Utc};

pub use config::{Backend, TranscribeConfig};
pub use fork::{run_fork, transcription_stream};
pub use twiml::{transcribe_call, transcribe_twiml};

use crate::config::{Config, Secret};

/// What a fork's backends need from the configuration, copied once per call.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    /// The backend choice and its endpoints, models and keys.
    pub transcribe: TranscribeConfig,
    /// `OPENAI_API_KEY`, for the `openai` and `whisper` backends.
    pub openai_api_key: Option<Secret>,
    /// `OPENAI_REALTIME_URL` without a query; `?intent=transcription` is added.
    pub openai_realtime_url: String,
    /// How long a backend WebSocket may take to open (`OPENAI_CONNECT_TIMEOUT_MS`).
    pub connect_timeout: Duration,
    /// Send Deepgram a `KeepAlive` after this long without audio
    /// ([`deepgram::KEEPALIVE_AFTER`]; shorter in tests).
    pub deepgram_keepalive: Duration,
}

impl BackendSettings {
    /// From explicit parts (tests, tools); `connect_timeout` is 5 s, `deepgram_keepalive` 4 s.
    pub fn new(
        transcribe: &TranscribeConfig,
        openai_api_key: Option<&Secret>,
        openai_realtime_url: &str,
    ) -> Self {
        BackendSettings {
            transcribe: transcribe.clone(),
            openai_api_key: openai_api_key.cloned(),
            openai_realtime_url: openai_realtime_url.to_string(),
            connect_timeout: Duration::from_secs(5),
            deepgram_keepalive: deepgram::KEEPALIVE_AFTER,
        }
    }

    /// From the server's configuration.
    pub fn from_config(config: &Config) -> Self {
        BackendSettings {
            connect_timeout: Duration::from_millis(config.openai_connect_timeout_ms),
            ..Self::new(
                &config.transcribe,
                config.openai_api_key.as_ref(),
                &config.openai_realtime_url,
            )
        }
    }
}

/// The text of the turn recorded when a track's transcription is given up at `at`:
/// `[transcription unavailable from 14:03:22 UTC]`.
pub fn gap_text(at: DateTime<Utc>) -> String {
    format!(
        "[transcription unavailable from {} UTC]",
        at.format("%H:%M:%S")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_text_names_the_time_in_utc() {
        let at = DateTime::parse_from_rfc3339("2025-01-02T14:03:22.5+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            gap_text(at),
            "[transcription unavailable from 12:03:22 UTC]"
        );
    }
}
