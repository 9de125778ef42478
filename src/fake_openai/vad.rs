//! The stand-in's energy VAD: 20 ms windows of μ-law, loud when their RMS exceeds a level.
//!
//! Threshold mapping: speech when `rms > 300 + threshold × 1000` (16-bit PCM units), so the default
//! threshold 0.5 means RMS 800 (about −32 dBFS). Digital silence (0xFF) has RMS 0 and line hiss a
//! few tens; espeak speech at normal level has RMS in the thousands in voiced parts.
//! Speech starts after [`MIN_SPEECH_MS`] of consecutive loud windows and stops after
//! `silence_duration_ms` of consecutive quiet ones. Positions are bytes of appended audio since the
//! first append (8 bytes = 1 ms).

use super::config::VadSettings;
use crate::audio::{rms, BYTES_PER_MS, FRAME_BYTES, FRAME_MS};

/// ms of consecutive loud audio that start an utterance.
pub(crate) const MIN_SPEECH_MS: u64 = 60;

/// RMS level (16-bit PCM units) above which a window counts as speech, for a threshold of 0.0–1.0.
pub(crate) fn speech_rms_level(threshold: f32) -> f64 {
    300.0 + f64::from(threshold.clamp(0.0, 1.0)) * 1000.0
}

/// A turn boundary; positions in bytes of appended audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VadEvent {
    /// The first loud window of the utterance starts at `start`.
    Started { start: u64 },
    /// The utterance's loud audio is `start..end`; the silence that ended it ends at `at`.
    Stopped { start: u64, end: u64, at: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Speech {
    start: u64,
    last_loud_end: u64,
    quiet_ms: u32,
}

/// Energy VAD state for one connection.
#[derive(Debug, Default)]
pub(crate) struct Vad {
    /// Bytes of the window being filled (appends need not be 20 ms long).
    partial: Vec<u8>,
    /// Bytes of appended audio already judged.
    pos: u64,
    /// Start of the current run of loud windows while not speaking.
    run_start: Option<u64>,
    speaking: Option<Speech>,
}

impl Vad {
    /// Judge newly appended μ-law audio; returns the turn boundaries it crossed, in order.
    pub(crate) fn push(&mut self, mut audio: &[u8], settings: &VadSettings) -> Vec<VadEvent> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let take = (FRAME_BYTES - self.partial.len()).min(audio.len());
            self.partial.extend_from_slice(&audio[..take]);
            audio = &audio[take..];
            if self.partial.len() == FRAME_BYTES {
                let window = std::mem::take(&mut self.partial);
                self.window(&window, settings, &mut events);
            }
        }
        while audio.len() >= FRAME_BYTES {
            let (window, rest) = audio.split_at(FRAME_BYTES);
            self.window(window, settings, &mut events);
            audio = rest;
        }
        self.partial.extend_from_slice(audio);
        events
    }

    /// `input_audio_buffer.clear`: forget the utterance in progress (positions keep counting).
    pub(crate) fn clear(&mut self) {
        self.pos += self.partial.len() as u64;
        self.partial.clear();
        self.run_start = None;
        self.speaking = None;
    }

    /// The client committed the buffer: end the utterance in progress without a `Stopped`
    /// event and return its loud audio `(start, end)`, if one had started. A loud run too short
    /// to count as speech is forgotten too (its audio is committed).
    pub(crate) fn take_speech(&mut self) -> Option<(u64, u64)> {
        self.run_start = None;
        self.speaking
            .take()
            .map(|speech| (speech.start, speech.last_loud_end))
    }

    /// Turn detection is off: count `bytes` of audio without judging them, so positions stay in
    /// step with the appended audio.
    pub(crate) fn skip(&mut self, bytes: usize) {
        self.clear();
        self.pos += bytes as u64;
    }

    fn window(&mut self, window: &[u8], settings: &VadSettings, events: &mut Vec<VadEvent>) {
        let start = self.pos;
        self.pos += window.len() as u64;
        let loud = rms(window) > speech_rms_level(settings.threshold);
        let Some(speech) = self.speaking.as_mut() else {
            if !loud {
                self.run_start = None;
                return;
            }
            let run_start = *self.run_start.get_or_insert(start);
            if self.pos - run_start >= MIN_SPEECH_MS * BYTES_PER_MS as u64 {
                self.run_start = None;
                self.speaking = Some(Speech {
                    start: run_start,
                    last_loud_end: self.pos,
                    quiet_ms: 0,
                });
                events.push(VadEvent::Started { start: run_start });
            }
            return;
        };
        if loud {
            speech.last_loud_end = self.pos;
            speech.quiet_ms = 0;
            return;
        }
        speech.quiet_ms += FRAME_MS as u32;
        if speech.quiet_ms >= settings.silence_duration_ms.max(FRAME_MS as u32) {
            events.push(VadEvent::Stopped {
                start: speech.start,
                end: speech.last_loud_end,
                at: self.pos,
            });
            self.speaking = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{encode, ULAW_SILENCE};

    fn settings() -> VadSettings {
        VadSettings {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            create_response: true,
            interrupt_response: true,
            idle_timeout_ms: None,
        }
    }

    fn tone(ms: usize) -> Vec<u8> {
        let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
            .map(|n| (8000.0 * (n as f64 * 440.0 * std::f64::consts::TAU / 8000.0).sin()) as i16)
            .collect();
        encode(&pcm)
    }

    #[test]
    fn silence_and_hiss_never_start_speech() {
        let mut vad = Vad::default();
        assert!(vad.push(&[ULAW_SILENCE; 8000], &settings()).is_empty());
        let hiss: Vec<i16> = (0..8000)
            .map(|n| if n % 2 == 0 { 60 } else { -60 })
            .collect();
        assert!(vad.push(&encode(&hiss), &settings()).is_empty());
    }

    #[test]
    fn short_blips_do_not_start_speech() {
        let mut vad = Vad::default();
        let mut audio = tone(40);
        audio.extend([ULAW_SILENCE; 160]);
        audio.extend(tone(40));
        assert!(vad.push(&audio, &settings()).is_empty());
    }

    #[test]
    fn tone_then_silence_starts_and_stops_in_odd_sized_appends() {
        let mut vad = Vad::default();
        let mut audio = vec![ULAW_SILENCE; 800];
        audio.extend(tone(1000));
        audio.extend([ULAW_SILENCE; 4000]);
        let mut events = Vec::new();
        for chunk in audio.chunks(333) {
            events.extend(vad.push(chunk, &settings()));
        }
        assert_eq!(
            events,
            vec![
                VadEvent::Started { start: 800 },
                VadEvent::Stopped {
                    start: 800,
                    end: 8800,
                    at: 8800 + 4000
                }
            ]
        );
    }

    #[test]
    fn threshold_maps_to_rms_levels() {
        assert_eq!(speech_rms_level(0.0), 300.0);
        assert_eq!(speech_rms_level(0.5), 800.0);
        assert_eq!(speech_rms_level(2.0), 1300.0);
    }
}
