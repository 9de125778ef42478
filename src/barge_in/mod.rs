//! Local barge-in detection for upstreams that send no speech events (GPT-Live): a voice-activity
//! detector on the caller's μ-law that ignores the assistant's own echo.
//!
//! Each 16 ms of caller audio is upsampled to 16 kHz ([`rubato`]) and scored by [`earshot`]'s
//! neural VAD (0 = no voice, 1 = voice). A chunk counts as the caller speaking when its score
//! reaches [`DetectorSettings::threshold`] **and** it passes a Geigel double-talk rule: its peak
//! level is at least the loudest assistant audio played within the echo window
//! ([`DetectorSettings::echo_window_ms`]) minus [`DetectorSettings::echo_margin_db`]. Echo that
//! comes back attenuated by more than the margin fails the rule whatever its delay within the
//! window; a caller talking over the assistant at a comparable level passes it. The rule is
//! Geigel's (D. L. Duttweiler, "A Twelve-Channel Digital Echo Canceler", IEEE Trans. Commun. 26(5),
//! 1978; ITU-T G.168 § 3 describes the same near-end/far-end level comparison), with 10 ms block
//! peaks instead of samples and a margin set for the −20 dB echo of a telephone line instead of a
//! hybrid's 6 dB. The onset is confirmed after [`DetectorSettings::onset_ms`] of such chunks in a
//! row, and reported once.
//!
//! [`cases`] and [`signals`] are the scenarios the tests and `benches/barge_in.rs` run; the relay
//! uses only [`Detector`].

pub mod cases;
mod far_end;
pub mod signals;
mod upsample;

#[cfg(test)]
mod tests;

use crate::audio;
use far_end::FarEnd;
use upsample::{Upsampler, CHUNK_8K, FRAME_16K};

/// Tuning of a [`Detector`]. The defaults were measured with `benches/barge_in.rs` (see
/// `bench/README.md`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// `earshot` score (0–1) at or above which a 16 ms chunk is voice. Default 0.5 (earshot's).
    pub threshold: f32,
    /// Voice audio in a row (ms, counted in 16 ms chunks) before an onset is confirmed.
    /// Default 64: long enough to ignore clicks and breaths, short enough to clear in time.
    pub onset_ms: u32,
    /// Chunks below the threshold tolerated inside the run (ms) without restarting it, for the
    /// dips between syllables. Default 32.
    pub gap_ms: u32,
    /// Geigel margin (dB): caller peak must reach the recent assistant peak minus this. Default 12,
    /// leaving 8 dB between the rule and echo at −20 dB.
    pub echo_margin_db: f32,
    /// How long played assistant audio can come back as echo (ms): the echo delay (0–600 ms) plus
    /// the jitter between Twilio's playback and the inbound frames. Default 800, at most 1500.
    pub echo_window_ms: u32,
    /// Caller chunks quieter than this (dBov peak) never count, whatever the VAD says. Default −45.
    pub min_level_dbov: f32,
    /// Non-voice audio (ms) after a confirmed onset before another onset can be reported. Default 400.
    pub release_ms: u32,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            onset_ms: 64,
            gap_ms: 32,
            echo_margin_db: 12.0,
            echo_window_ms: 800,
            min_level_dbov: -45.0,
            release_ms: 400,
        }
    }
}

/// A confirmed caller speech onset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Onset {
    /// Caller audio (ms) from where the speech began to the end of the frame that confirmed it.
    pub audio_ms_since_onset: u32,
    /// Loudest chunk of the run, dBov peak.
    pub caller_peak_dbov: f32,
    /// Loudest assistant audio within the echo window when confirmed, dBov peak (−120 if none).
    pub assistant_peak_dbov: f32,
}

/// Barge-in detector for one call: feed it the assistant's audio as it goes to Twilio and the
/// caller's frames as they arrive; it says when the caller has started talking.
///
/// Memory: 18 KiB measured (3.1 KiB inline, with the 512-byte far-end ring; `earshot`'s ~8 KiB
/// state boxed; rubato's FFT buffers). CPU: ~13 µs per 20 ms frame (`bench/README.md`). `Send`.
pub struct Detector {
    settings: DetectorSettings,
    vad: Box<earshot::Detector>,
    upsampler: Upsampler,
    far: FarEnd,
    /// Caller μ-law not yet scored (less than a chunk).
    pending: [u8; CHUNK_8K],
    pending_len: usize,
    frame: [i16; FRAME_16K],
    /// Caller samples received since `new` (the audio clock, 8 kHz).
    now: u64,
    run: Run,
}

/// Where the detector is in a run of voice chunks.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Caller-clock sample where the current run began.
    start: Option<u64>,
    /// Voice audio in the run (8 kHz samples) and the non-voice samples since the last voice chunk.
    voiced: u64,
    gap: u64,
    peak: u16,
    /// An onset was reported for this run; no other until `release_ms` of non-voice.
    reported: bool,
}

impl Detector {
    /// A detector with `settings`, ready for audio mid-stream.
    pub fn new(settings: DetectorSettings) -> Self {
        let far = FarEnd::new(settings.echo_window_ms);
        Self {
            settings,
            vad: earshot::Detector::default_boxed(),
            upsampler: Upsampler::new(),
            far,
            pending: [audio::ULAW_SILENCE; CHUNK_8K],
            pending_len: 0,
            frame: [0; FRAME_16K],
            now: 0,
            run: Run::default(),
        }
    }

    /// The assistant's audio (8 kHz μ-law, any length) as it is sent to Twilio, in play order.
    ///
    /// It is placed where Twilio will play it: after the audio already queued, or at once if the
    /// queue has run dry, on the caller's audio clock; so calling it when the audio is sent ahead
    /// of playback (up to ~1 s) and calling it as it plays are both right.
    pub fn assistant_played(&mut self, mulaw: &[u8]) {
        self.far
            .played(self.now, mulaw.iter().map(|&b| audio::ulaw_to_linear(b)));
    }

    /// One inbound Twilio frame (8 kHz μ-law, normally 160 bytes = 20 ms; any length works).
    ///
    /// Returns `Some` once per run of caller speech, on the frame that confirms its onset.
    pub fn caller_frame(&mut self, mulaw: &[u8]) -> Option<Onset> {
        let mut onset = None;
        let mut rest = mulaw;
        while !rest.is_empty() {
            let take = (CHUNK_8K - self.pending_len).min(rest.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&rest[..take]);
            self.pending_len += take;
            self.now += take as u64;
            rest = &rest[take..];
            if self.pending_len == CHUNK_8K {
                self.pending_len = 0;
                onset = onset.or(self.score_chunk());
            }
        }
        onset.map(|mut found| {
            // Count the audio of this frame after the confirming chunk too.
            let start = self.run.start.unwrap_or(self.now);
            found.audio_ms_since_onset = ((self.now - start) / 8) as u32;
            found
        })
    }

    /// Scores the chunk in `pending` (ending at `now`) and advances the run.
    fn score_chunk(&mut self) -> Option<Onset> {
        let chunk = self.pending;
        self.upsampler.process(&chunk, &mut self.frame);
        let score = self.vad.predict_i16(&self.frame);
        let peak = chunk
            .iter()
            .map(|&b| audio::ulaw_to_linear(b).unsigned_abs())
            .max()
            .unwrap_or(0);
        let caller_db = far_end::dbov(peak);
        let assistant_db = far_end::dbov(self.far.recent_peak(self.now));
        let voice = score >= self.settings.threshold
            && caller_db >= self.settings.min_level_dbov
            && caller_db >= assistant_db - self.settings.echo_margin_db;
        self.advance(voice, peak, assistant_db)
    }

    fn advance(&mut self, voice: bool, peak: u16, assistant_db: f32) -> Option<Onset> {
        let chunk = CHUNK_8K as u64;
        let s = &self.settings;
        let run = &mut self.run;
        if voice {
            if run.start.is_none() {
                // The resampler delays what the VAD scores; the run began that much earlier.
                run.start = Some(
                    self.now
                        .saturating_sub(chunk + self.upsampler.delay_8k() as u64),
                );
            }
            run.voiced += chunk;
            run.gap = 0;
            run.peak = run.peak.max(peak);
        } else if run.start.is_some() {
            run.gap += chunk;
            let limit = if run.reported { s.release_ms } else { s.gap_ms };
            if run.gap > u64::from(limit) * 8 {
                *run = Run::default();
            }
            return None;
        }
        if run.reported || run.voiced < u64::from(s.onset_ms) * 8 {
            return None;
        }
        run.reported = true;
        Some(Onset {
            audio_ms_since_onset: 0,
            caller_peak_dbov: far_end::dbov(run.peak),
            assistant_peak_dbov: assistant_db,
        })
    }

    /// Starts afresh after a Twilio `clear` or when the assistant starts a new turn: forgets the
    /// caller audio and any run, and drops assistant audio queued but not yet played (the clear
    /// dropped it). Played audio stays in the echo window.
    pub fn reset(&mut self) {
        self.vad.reset();
        self.upsampler.reset();
        self.pending_len = 0;
        self.run = Run::default();
        self.far.drop_queued(self.now);
    }

    /// Whether the caller is talking: an onset was confirmed and `release_ms` of non-voice has
    /// not passed since.
    pub fn is_active(&self) -> bool {
        self.run.reported
    }

    /// Caller audio received since [`Detector::new`], ms (the detector's clock).
    pub fn caller_ms(&self) -> u64 {
        self.now / 8
    }
}
