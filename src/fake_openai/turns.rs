//! Caller turns in parrot mode: appended audio through the VAD to `speech_started`, `committed`,
//! placeholder transcription and the automatic reply; and the `echo-frames` echo.
//!
//! Transcription sessions (`?intent=transcription`, PROTOCOLS.md § "Transcription-only sessions")
//! never reply: each utterance gets `speech_started`, `speech_stopped`, `committed`, two
//! `…input_audio_transcription.delta` events (interim text) and `.completed` with the placeholder
//! `[speech X.XX s]` (the length of the utterance's loud part).

use std::borrow::Cow;

use tokio::time::Instant;

use super::config;
use super::session::Conn;
use super::vad::VadEvent;
use crate::audio::BYTES_PER_MS;
use crate::realtime::session::SessionKind;
use crate::realtime::ServerEvent;

impl Conn {
    /// `echo-frames`: send the same base64 back as assistant audio, at once.
    pub(super) fn echo(&mut self, audio: &str) {
        let (response_id, item_id) = std::mem::take(&mut self.echo_ids);
        self.emit(&ServerEvent::OutputAudioDelta {
            response_id: Cow::Borrowed(&response_id),
            item_id: Cow::Borrowed(&item_id),
            output_index: 0,
            content_index: 0,
            delta: Cow::Borrowed(audio),
        });
        if let Some(bytes) = self.item_audio_bytes.get_mut(&item_id) {
            *bytes += base64_decoded_len(audio);
        }
        self.echo_ids = (response_id, item_id);
    }

    /// Keep decoded caller audio and run the VAD over it: `speech_started` (cancelling a response
    /// if `interrupt_response`), then on enough quiet the commit and, if `create_response`, a reply.
    pub(super) fn append(&mut self, bytes: Vec<u8>, now: Instant) {
        let start = self.audio.len();
        self.audio.extend_from_slice(&bytes);
        self.record(|log| {
            log.appended_audio.extend_from_slice(&bytes);
            let now = std::time::Instant::now();
            log.first_append_at.get_or_insert(now);
            log.last_append_at = Some(now);
        });
        let Some(settings) = config::vad_settings(&self.session) else {
            self.vad.skip(bytes.len());
            return;
        };
        for event in self.vad.push(&self.audio[start..], &settings) {
            match event {
                VadEvent::Started { start } => {
                    let item_id = self.new_item_id();
                    let ms = start / BYTES_PER_MS as u64;
                    self.emit(&ServerEvent::SpeechStarted {
                        audio_start_ms: ms.saturating_sub(settings.prefix_padding_ms.into()),
                        item_id: Cow::Borrowed(&item_id),
                    });
                    self.speech_item = Some(item_id);
                    self.idle_at = None;
                    if settings.interrupt_response && self.response.is_some() {
                        self.cancel_response();
                    }
                }
                VadEvent::Stopped { start, end, at } => {
                    self.commit(start, end, at);
                    let realtime = self.session.kind == SessionKind::Realtime;
                    if realtime {
                        self.utterances += 1;
                    }
                    if settings.create_response && realtime && self.response.is_none() {
                        if let Some((audio, transcript)) = self.utterance.clone() {
                            self.start_response(audio, format!("You said: {transcript}"), now);
                            if self.end_call_after == Some(self.utterances)
                                && self.declares_end_call()
                            {
                                if let Some(r) = self.response.as_mut() {
                                    r.end_call = true;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Speech stopped: commit the utterance and transcribe it (placeholder text).
    fn commit(&mut self, start: u64, end: u64, at: u64) {
        let item_id = self
            .speech_item
            .take()
            .unwrap_or_else(|| self.new_item_id());
        let item = Cow::Borrowed(item_id.as_str());
        self.emit(&ServerEvent::SpeechStopped {
            audio_end_ms: at / BYTES_PER_MS as u64,
            item_id: item.clone(),
        });
        let previous = self.last_item.take();
        self.emit(&ServerEvent::Committed {
            previous_item_id: previous.as_deref().map(Cow::Borrowed),
            item_id: item.clone(),
        });
        let range = usize::try_from(start).unwrap_or(usize::MAX)
            ..usize::try_from(end).unwrap_or(usize::MAX);
        let utterance = self.audio.get(range).unwrap_or_default().to_vec();
        let seconds = utterance.len() as f64 / (BYTES_PER_MS as f64 * 1000.0);
        // A transcription session always transcribes, in two deltas so clients see interim text.
        let transcription_only = self.session.kind == SessionKind::Transcription;
        let transcript = if transcription_only {
            format!("[speech {seconds:.2} s]")
        } else {
            format!("[caller speech {seconds:.2} s]")
        };
        if transcription_only || config::transcribes(&self.session) {
            let cut = if transcription_only {
                half_way(&transcript)
            } else {
                transcript.len()
            };
            for delta in [&transcript[..cut], &transcript[cut..]] {
                if delta.is_empty() {
                    continue;
                }
                self.emit(&ServerEvent::InputTranscriptionDelta {
                    item_id: item.clone(),
                    content_index: 0,
                    delta: Cow::Borrowed(delta),
                });
            }
            self.emit(&ServerEvent::InputTranscriptionCompleted {
                item_id: item,
                content_index: 0,
                transcript: Cow::Borrowed(&transcript),
            });
        }
        self.last_item = Some(item_id);
        self.utterance = Some((utterance, transcript));
    }
}

/// A char boundary near the middle of `text`, where the first delta ends.
fn half_way(text: &str) -> usize {
    let mut cut = text.len() / 2;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    cut
}

/// Bytes a padded base64 string decodes to, without decoding it.
fn base64_decoded_len(b64: &str) -> usize {
    let padding = b64.bytes().rev().take_while(|&b| b == b'=').count().min(2);
    (b64.len() / 4 * 3).saturating_sub(padding)
}
