//! Caller turns in parrot mode: appended audio through the VAD to `speech_started`, `committed`,
//! placeholder transcription and the automatic reply; the client's own `input_audio_buffer.commit`
//! and `.clear`; and the `echo-frames` echo.
//!
//! Transcription sessions (`?intent=transcription`, PROTOCOLS.md § "Transcription-only sessions")
//! never reply: each utterance gets `speech_started`, `speech_stopped`, `committed`, two
//! `…input_audio_transcription.delta` events (interim text) and `.completed` with the placeholder
//! `[speech X.XX s]` (the length of the utterance's loud part).
//!
//! A client's `input_audio_buffer.commit` commits what is buffered and not yet committed, like the
//! real API: `committed` without `speech_stopped`, then the transcription of the utterance in
//! progress (empty text when nobody was speaking); less than [`MIN_COMMIT_MS`] buffered is refused
//! with the `error` code `input_audio_buffer_commit_empty`.

use std::borrow::Cow;

use tokio::time::Instant;

use super::config;
use super::session::Conn;
use super::vad::VadEvent;
use crate::audio::BYTES_PER_MS;
use crate::realtime::session::SessionKind;
use crate::realtime::ServerEvent;

/// The least audio `input_audio_buffer.commit` accepts, ms (the real API's limit).
pub(crate) const MIN_COMMIT_MS: usize = 100;

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
                    self.vad_commit(start, end, at);
                    let realtime = self.session.kind == SessionKind::Realtime;
                    if realtime {
                        self.utterances += 1;
                    }
                    if settings.create_response && realtime && self.response.is_none() {
                        if let Some((audio, transcript)) = self.utterance.clone() {
                            self.start_response(audio, format!("You said: {transcript}"), now);
                            let scripted =
                                self.tool_calls.get(self.utterances as usize - 1).cloned();
                            if let Some(r) = self.response.as_mut() {
                                r.tool_call = scripted;
                            }
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

    /// Speech stopped: `speech_stopped`, then commit the buffer up to `at` (the end of the quiet
    /// that ended the utterance) with the loud part `start..end` as the utterance.
    fn vad_commit(&mut self, start: u64, end: u64, at: u64) {
        let item_id = self
            .speech_item
            .take()
            .unwrap_or_else(|| self.new_item_id());
        self.emit(&ServerEvent::SpeechStopped {
            audio_end_ms: at / BYTES_PER_MS as u64,
            item_id: Cow::Borrowed(&item_id),
        });
        self.committed_to = byte_index(at).min(self.audio.len());
        let utterance = self.audio_between(start, end);
        self.commit_item(item_id, utterance);
    }

    /// `input_audio_buffer.commit`: commit what the VAD has judged and nobody has committed yet,
    /// as the real API does: `committed` (no `speech_stopped`) and the transcription of the
    /// utterance in progress, if any (a commit without speech transcribes to empty text; with
    /// turn detection off the whole buffer counts as speech). Less than [`MIN_COMMIT_MS`] buffered
    /// is refused with `input_audio_buffer_commit_empty`.
    pub(super) fn commit_buffer(&mut self, event_id: Option<String>) {
        let buffered = self.audio.len() - self.committed_to;
        if buffered < MIN_COMMIT_MS * BYTES_PER_MS {
            let ms = buffered as f64 / BYTES_PER_MS as f64;
            let msg = format!(
                "Error committing input audio buffer: buffer too small. Expected at least \
                 {MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2}ms of audio."
            );
            return self.error("input_audio_buffer_commit_empty", msg, None, event_id);
        }
        let utterance = match self.vad.take_speech() {
            Some((start, end)) => self.audio_between(start, end),
            None if config::vad_settings(&self.session).is_none() => {
                self.audio[self.committed_to..].to_vec()
            }
            None => Vec::new(),
        };
        let item_id = self
            .speech_item
            .take()
            .unwrap_or_else(|| self.new_item_id());
        self.committed_to = self.audio.len();
        self.commit_item(item_id, utterance);
    }

    /// `input_audio_buffer.clear`: drop the uncommitted buffer and the utterance in progress.
    pub(super) fn clear_buffer(&mut self) {
        self.vad.clear();
        self.speech_item = None;
        self.committed_to = self.audio.len();
        self.emit_json(serde_json::json!({"type": "input_audio_buffer.cleared"}));
    }

    /// `committed` for `item_id`, then its transcription (placeholder text) when the session
    /// transcribes; `utterance` is the loud audio (μ-law) of the item, empty for silence.
    fn commit_item(&mut self, item_id: String, utterance: Vec<u8>) {
        let item = Cow::Borrowed(item_id.as_str());
        let previous = self.last_item.take();
        self.emit(&ServerEvent::Committed {
            previous_item_id: previous.as_deref().map(Cow::Borrowed),
            item_id: item.clone(),
        });
        let seconds = utterance.len() as f64 / (BYTES_PER_MS as f64 * 1000.0);
        // A transcription session always transcribes, in two deltas so clients see interim text.
        let transcription_only = self.session.kind == SessionKind::Transcription;
        let transcript = if utterance.is_empty() {
            String::new()
        } else if transcription_only {
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
        if !utterance.is_empty() {
            self.utterance = Some((utterance, transcript));
        }
    }

    /// `audio[start..end]` for VAD positions (bytes), clamped to what is there.
    fn audio_between(&self, start: u64, end: u64) -> Vec<u8> {
        let end = byte_index(end).min(self.audio.len());
        let start = byte_index(start).min(end);
        self.audio[start..end].to_vec()
    }
}

/// A VAD position as an index into the audio.
fn byte_index(pos: u64) -> usize {
    usize::try_from(pos).unwrap_or(usize::MAX)
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
