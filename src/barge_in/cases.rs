//! The barge-in scenarios the unit tests assert and `benches/barge_in.rs` measures: the bundled
//! caller clips over line noise, line noise alone, the assistant's own echo, and double talk.
//!
//! Each case is a caller track and the assistant audio played over it, both 8 kHz μ-law. [`run`]
//! drives a [`Detector`] the way the bridge will: the assistant audio is sent 400 ms ahead of
//! playback (`PLAYBACK_AHEAD_MS`), the caller's track arrives in 20 ms frames, and time is audio
//! time (samples), never the wall clock.

use anyhow::Context;

use super::signals::{self, LineNoise};
use super::{Detector, DetectorSettings, Onset};
use crate::audio::{BYTES_PER_MS, FRAME_BYTES};

/// Assistant audio queued at Twilio ahead of playback (ms), as the bridge paces it.
pub const AHEAD_MS: usize = 400;
/// Echo of the assistant's audio on the caller's track, dB.
pub const ECHO_DB: f32 = -20.0;
/// Echo delays the echo cases cover, ms.
pub const ECHO_DELAYS_MS: [usize; 4] = [0, 100, 300, 600];
/// Line noise before the caller starts talking (the detector starts cold on it), ms.
pub const LEAD_MS: usize = 1000;

/// One scenario.
#[derive(Debug, Clone)]
pub struct Case {
    /// `kind/detail`, e.g. `speech/hello/-10dB`.
    pub name: String,
    /// What Twilio sends from the caller (8 kHz μ-law).
    pub caller: Vec<u8>,
    /// What the assistant plays from the start of the caller track (8 kHz μ-law, maybe empty).
    pub assistant: Vec<u8>,
    /// Sample of `caller` where the caller's own speech starts; `None`: no onset must be found.
    pub speech_start: Option<usize>,
}

/// What the detector reported on a case.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Each onset with the caller-track sample at the end of the frame that confirmed it.
    pub onsets: Vec<(usize, Onset)>,
    /// 20 ms caller frames fed.
    pub frames: usize,
}

impl Outcome {
    /// Onsets confirmed where none should be: any on a case without speech, otherwise those
    /// before the caller's speech starts (a clear on noise or echo).
    pub fn false_onsets(&self, case: &Case) -> usize {
        let start = case.speech_start.unwrap_or(usize::MAX);
        self.onsets.iter().filter(|(at, _)| *at <= start).count()
    }

    /// Audio from the start of the caller's speech to the frame confirming its onset (ms), if
    /// one was confirmed after it started.
    pub fn latency_ms(&self, case: &Case) -> Option<usize> {
        let start = case.speech_start?;
        self.onsets
            .iter()
            .find(|(at, _)| *at > start)
            .map(|(at, _)| (at - start) / BYTES_PER_MS)
    }
}

/// The bundled clips, "hello" then "question" (8 kHz μ-law).
///
/// # Errors
/// Only if a compiled-in file is not a WAV this crate reads (a build mistake).
pub fn clips() -> anyhow::Result<[Vec<u8>; 2]> {
    let hello = crate::wav::decode_wav(include_bytes!("../../assets/caller-hello.wav"))
        .context("assets/caller-hello.wav")?;
    let question = crate::wav::decode_wav(include_bytes!("../../assets/caller-question.wav"))
        .context("assets/caller-question.wav")?;
    Ok([hello, question])
}

fn ms(n: usize) -> usize {
    n * BYTES_PER_MS
}

/// The caller saying `clip` at `gain_db` after [`LEAD_MS`] of `noise`.
pub fn speech(name: &str, clip: &[u8], gain_db: f32, noise: &LineNoise) -> Case {
    let mut track = noise.render(ms(LEAD_MS) + clip.len() + ms(500));
    signals::add(&mut track, clip, ms(LEAD_MS), gain_db);
    Case {
        name: format!("speech/{name}/{gain_db}dB"),
        caller: signals::encode(&track),
        assistant: Vec::new(),
        speech_start: Some(ms(LEAD_MS)),
    }
}

/// `seconds` of `noise` alone.
pub fn noise(name: &str, seconds: usize, noise: &LineNoise) -> Case {
    Case {
        name: format!("noise/{name}/{seconds}s"),
        caller: signals::encode(&noise.render(ms(seconds * 1000))),
        assistant: Vec::new(),
        speech_start: None,
    }
}

/// The assistant playing `assistant`, heard back on the caller's track at [`ECHO_DB`] after
/// `delay_ms`, over `noise`.
pub fn echo(assistant: &[u8], delay_ms: usize, noise: &LineNoise) -> Case {
    echo_at(assistant, delay_ms, ECHO_DB, noise)
}

/// As [`echo`] with the echo at `echo_db` instead of [`ECHO_DB`].
pub fn echo_at(assistant: &[u8], delay_ms: usize, echo_db: f32, noise: &LineNoise) -> Case {
    let mut track = noise.render(assistant.len() + ms(delay_ms) + ms(500));
    signals::add(&mut track, assistant, ms(delay_ms), echo_db);
    Case {
        name: format!("echo/{delay_ms}ms/{echo_db}dB"),
        caller: signals::encode(&track),
        assistant: assistant.to_vec(),
        speech_start: None,
    }
}

/// As [`echo`] with 300 ms of delay, and the caller saying `clip` at `gain_db` over it,
/// `at_ms` after the assistant started.
pub fn double_talk(
    assistant: &[u8],
    clip: &[u8],
    at_ms: usize,
    gain_db: f32,
    noise: &LineNoise,
) -> Case {
    let mut case = echo(assistant, 300, noise);
    let mut track: Vec<f32> = case
        .caller
        .iter()
        .map(|&b| f32::from(crate::audio::ulaw_to_linear(b)))
        .collect();
    signals::add(&mut track, clip, ms(at_ms), gain_db);
    case.name = format!("double-talk/{gain_db}dB");
    case.caller = signals::encode(&track);
    case.speech_start = Some(ms(at_ms));
    case
}

/// The assistant's reply in the echo cases: "hello", 300 ms of silence, "question" (5.4 s).
pub fn assistant_reply(clips: &[Vec<u8>; 2]) -> Vec<u8> {
    let mut reply = clips[0].clone();
    reply.extend(std::iter::repeat_n(crate::audio::ULAW_SILENCE, ms(300)));
    reply.extend_from_slice(&clips[1]);
    reply
}

/// Every case the tests assert and the benchmark reports, with the default line noise.
///
/// # Errors
/// As [`clips`].
pub fn all() -> anyhow::Result<Vec<Case>> {
    let clips = clips()?;
    let line = LineNoise::default();
    let mut cases = Vec::new();
    for (name, clip) in [("hello", &clips[0]), ("question", &clips[1])] {
        for gain in [0.0, -10.0] {
            cases.push(speech(name, clip, gain, &line));
        }
    }
    cases.push(noise("line", 10, &line));
    cases.push(noise("busy-line", 10, &busy_line()));
    let reply = assistant_reply(&clips);
    for delay in ECHO_DELAYS_MS {
        cases.push(echo(&reply, delay, &line));
    }
    for gain in [0.0, -10.0] {
        cases.push(double_talk(&reply, &clips[1], 1500, gain, &line));
    }
    Ok(cases)
}

/// A noisier line: hiss −45 dBov, hum −45 dBov, clicks at −12 dBov every 0.8 s.
pub fn busy_line() -> LineNoise {
    LineNoise {
        seed: 7,
        hiss_dbov: -45.0,
        hum_dbov: -45.0,
        click_peak_dbov: -12.0,
        click_every_ms: 800,
    }
}

/// Runs `case` through a fresh detector: assistant audio sent [`AHEAD_MS`] ahead, then the
/// caller's track in 20 ms frames.
pub fn run(case: &Case, settings: &DetectorSettings) -> Outcome {
    let mut detector = Detector::new(settings.clone());
    let mut sent = 0;
    let mut onsets = Vec::new();
    let mut frames = 0;
    for (i, frame) in case.caller.chunks(FRAME_BYTES).enumerate() {
        let due = (ms(AHEAD_MS) + i * FRAME_BYTES).min(case.assistant.len());
        if due > sent {
            detector.assistant_played(&case.assistant[sent..due]);
            sent = due;
        }
        if let Some(onset) = detector.caller_frame(frame) {
            onsets.push((i * FRAME_BYTES + frame.len(), onset));
        }
        frames += 1;
    }
    Outcome { onsets, frames }
}
