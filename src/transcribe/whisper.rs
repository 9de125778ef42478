//! The batch backend (PROTOCOLS.md § "Batch transcription"): each track's audio is cut into
//! utterance-sized chunks and uploaded to `WHISPER_URL` (`/v1/audio/transcriptions`); every answer
//! is a final (there are no interims).
//!
//! Chunks ([`Chunker`]) start with up to 300 ms of the quiet before speech and end after 700 ms of
//! quiet following speech, or at `WHISPER_CHUNK_SECS`; chunks without speech are never sent.
//! "Speech" is 60 ms of frames whose RMS ([`crate::audio::rms`]) exceeds 600 (16-bit units).
//! Each chunk is decoded to 16-bit PCM (Whisper does not take μ-law) and sent as an 8 kHz mono WAV
//! (`file` = `chunk.wav`, `model`, `response_format=json`, optional `language`) with a bearer key.
//! Uploads run concurrently; a failed upload is retried once, and if it fails again the track
//! gets a gap and sends no more chunks. The remainder is flushed when the track ends.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::connect::{ensure_crypto_provider, error_message};
use super::track::{Feed, TrackOut};
use super::BackendSettings;
use crate::audio::{decode, rms, BYTES_PER_MS, SAMPLE_RATE_HZ};
use crate::stats::Stats;

/// Quiet after speech that ends a chunk, ms.
pub const PAUSE_MS: u64 = 700;
/// Quiet kept before the speech of a chunk, ms.
const PRE_ROLL_MS: u64 = 300;
/// Loud audio needed before a chunk counts as speech, ms.
const MIN_SPEECH_MS: u64 = 60;
/// Frame RMS (16-bit PCM units) above which audio is loud.
const SPEECH_RMS: f64 = 600.0;
/// Longest one upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for outstanding uploads once the track has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The JSON answer of `/v1/audio/transcriptions` with `response_format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionResponse {
    pub text: String,
}

/// A cut chunk: where it starts in the track's audio (ms) and its μ-law bytes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Chunk {
    pub start_ms: u64,
    pub ulaw: Vec<u8>,
}

/// Cuts a track's μ-law into chunks at pauses or at a maximum length.
#[derive(Debug)]
pub(super) struct Chunker {
    max_bytes: usize,
    buf: Vec<u8>,
    /// Track position of `buf[0]`, bytes.
    buf_start: u64,
    /// Consecutive loud audio, ms.
    loud_ms: u64,
    /// Consecutive quiet audio since the last loud frame, ms.
    quiet_ms: u64,
    speech: bool,
}

impl Chunker {
    /// Chunks of at most `max_secs` seconds.
    pub fn new(max_secs: u32) -> Self {
        Chunker {
            max_bytes: max_secs.max(1) as usize * 1000 * BYTES_PER_MS,
            buf: Vec::new(),
            buf_start: 0,
            loud_ms: 0,
            quiet_ms: 0,
            speech: false,
        }
    }

    /// Add one frame (any length; Twilio's are 20 ms); returns a chunk when one is complete.
    pub fn push(&mut self, ulaw: &[u8]) -> Option<Chunk> {
        let ms = (ulaw.len() / BYTES_PER_MS) as u64;
        let loud = rms(ulaw) > SPEECH_RMS;
        self.buf.extend_from_slice(ulaw);
        if loud {
            self.loud_ms += ms;
            self.quiet_ms = 0;
            self.speech |= self.loud_ms >= MIN_SPEECH_MS;
        } else {
            self.loud_ms = 0;
            self.quiet_ms += ms;
        }
        if !self.speech {
            // Keep only the pre-roll (plus a loud run in progress) while nobody speaks.
            let keep = (PRE_ROLL_MS + self.loud_ms) as usize * BYTES_PER_MS;
            if self.buf.len() > keep {
                let excess = self.buf.len() - keep;
                self.buf.drain(..excess);
                self.buf_start += excess as u64;
            }
            return None;
        }
        (self.quiet_ms >= PAUSE_MS || self.buf.len() >= self.max_bytes).then(|| self.cut())
    }

    /// What is left at the end of the track, if it holds speech.
    pub fn flush(&mut self) -> Option<Chunk> {
        self.speech.then(|| self.cut())
    }

    fn cut(&mut self) -> Chunk {
        let ulaw = std::mem::take(&mut self.buf);
        let start_ms = self.buf_start / BYTES_PER_MS as u64;
        self.buf_start += ulaw.len() as u64;
        self.speech = false;
        self.loud_ms = 0;
        self.quiet_ms = 0;
        Chunk { start_ms, ulaw }
    }
}

/// μ-law → 16-bit PCM WAV, 8 kHz mono, in memory.
///
/// # Errors
/// Only if hound fails writing to memory.
pub fn wav_bytes(ulaw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE_HZ,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::with_capacity(44 + ulaw.len() * 2));
    let mut writer = hound::WavWriter::new(&mut cursor, spec).context("starting a WAV")?;
    for sample in decode(ulaw) {
        writer
            .write_sample(sample)
            .context("writing a WAV sample")?;
    }
    writer.finalize().context("finishing a WAV")?;
    Ok(cursor.into_inner())
}

/// Upload one chunk; returns the text.
async fn transcribe(
    client: &reqwest::Client,
    settings: &BackendSettings,
    ulaw: &[u8],
) -> anyhow::Result<String> {
    let key = settings
        .openai_api_key
        .as_ref()
        .context("OPENAI_API_KEY is not set")?;
    let config = &settings.transcribe;
    let file = reqwest::multipart::Part::bytes(wav_bytes(ulaw)?)
        .file_name("chunk.wav")
        .mime_str("audio/wav")
        .context("building the upload")?;
    let mut form = reqwest::multipart::Form::new()
        .part("file", file)
        .text("model", config.whisper_model.clone())
        .text("response_format", "json");
    if let Some(language) = &config.transcribe_language {
        form = form.text("language", language.clone());
    }
    let response = client
        .post(&config.whisper_url)
        .bearer_auth(key.expose())
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("POST {}", config.whisper_url))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.bytes().await.unwrap_or_default();
        bail!("HTTP {status}: {}", error_message(&body));
    }
    let answer: TranscriptionResponse = response
        .json()
        .await
        .context("reading the transcription JSON")?;
    Ok(answer.text)
}

/// Upload with one retry; returns the chunk's start and the text or the last error.
async fn upload(
    client: reqwest::Client,
    settings: Arc<BackendSettings>,
    stats: Stats,
    chunk: Chunk,
) -> (u64, anyhow::Result<String>) {
    let first = transcribe(&client, &settings, &chunk.ulaw).await;
    let result = match first {
        Ok(text) => Ok(text),
        Err(e) => {
            stats.error();
            warn!(
                error = format!("{e:#}"),
                "transcription upload failed; retrying once"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            transcribe(&client, &settings, &chunk.ulaw).await
        }
    };
    (chunk.start_ms, result)
}

/// Chunk and upload one track until its audio ends or `cancel` fires.
pub(super) async fn run(
    settings: Arc<BackendSettings>,
    mut feed: Feed,
    out: TrackOut,
    stats: Stats,
    cancel: CancellationToken,
) {
    ensure_crypto_provider();
    let client = match reqwest::Client::builder().timeout(UPLOAD_TIMEOUT).build() {
        Ok(client) => client,
        Err(e) => {
            stats.error();
            error!(error = %e, "cannot build the HTTP client; no transcription for this track");
            out.gap(0).await;
            return;
        }
    };
    let mut chunker = Chunker::new(settings.transcribe.whisper_chunk_secs);
    let mut uploads = JoinSet::new();
    let mut given_up = false;
    let mut n = 0u64;
    let spawn = |chunk: Chunk, uploads: &mut JoinSet<_>| {
        uploads.spawn(upload(
            client.clone(),
            settings.clone(),
            stats.clone(),
            chunk,
        ));
    };
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            frame = feed.next() => match frame {
                Some(frame) if !given_up => {
                    if let Some(chunk) = chunker.push(&frame.ulaw) {
                        spawn(chunk, &mut uploads);
                    }
                }
                Some(_) => {}
                None => break,
            },
            Some(done) = uploads.join_next() => {
                n += 1;
                given_up |= settle(done, n, &out, &stats, given_up).await;
            }
        }
    }
    if let Some(chunk) = chunker.flush().filter(|_| !given_up) {
        spawn(chunk, &mut uploads);
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {
                warn!(left = uploads.len(), "transcription uploads still running at the end; abandoned");
                return;
            }
            done = uploads.join_next() => {
                let Some(done) = done else { return };
                n += 1;
                given_up |= settle(done, n, &out, &stats, given_up).await;
            }
        }
    }
}

/// Report one finished upload; returns true if the track must now give up.
async fn settle(
    done: Result<(u64, anyhow::Result<String>), tokio::task::JoinError>,
    n: u64,
    out: &TrackOut,
    stats: &Stats,
    given_up: bool,
) -> bool {
    match done {
        Ok((start_ms, Ok(text))) => {
            if !text.trim().is_empty() {
                out.final_text(&format!("chunk{n}"), &text, Some(start_ms))
                    .await;
            }
            false
        }
        Ok((start_ms, Err(e))) => {
            stats.error();
            if !given_up {
                error!(
                    error = format!("{e:#}"),
                    "transcription unavailable for the rest of this track"
                );
                out.gap(start_ms).await;
            }
            true
        }
        Err(e) => {
            stats.error();
            error!(error = %e, "transcription upload task failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{encode, FRAME_BYTES, ULAW_SILENCE};

    fn tone(ms: usize) -> Vec<u8> {
        let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
            .map(|n| (8000.0 * (n as f64 * 0.3).sin()) as i16)
            .collect();
        encode(&pcm)
    }

    fn feed(chunker: &mut Chunker, audio: &[u8]) -> Vec<Chunk> {
        audio
            .chunks(FRAME_BYTES)
            .filter_map(|f| chunker.push(f))
            .collect()
    }

    #[test]
    fn chunks_are_cut_at_pauses_with_a_pre_roll_and_silence_is_never_sent() {
        let mut chunker = Chunker::new(5);
        let mut audio = vec![ULAW_SILENCE; 2000 * BYTES_PER_MS];
        audio.extend(tone(1000));
        audio.extend(vec![ULAW_SILENCE; 1000 * BYTES_PER_MS]);
        let chunks = feed(&mut chunker, &audio);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].start_ms, 2000 - PRE_ROLL_MS);
        let len_ms = (chunks[0].ulaw.len() / BYTES_PER_MS) as u64;
        assert_eq!(len_ms, PRE_ROLL_MS + 1000 + PAUSE_MS);
        assert_eq!(chunker.flush(), None, "trailing silence is not a chunk");
    }

    #[test]
    fn long_speech_is_cut_at_the_maximum_and_the_rest_flushed() {
        let mut chunker = Chunker::new(1);
        let chunks = feed(&mut chunker, &tone(2500));
        assert_eq!(chunks.len(), 2);
        assert_eq!((chunks[0].start_ms, chunks[1].start_ms), (0, 1000));
        assert!(chunks.iter().all(|c| c.ulaw.len() == 1000 * BYTES_PER_MS));
        let rest = chunker.flush().unwrap();
        assert_eq!((rest.start_ms, rest.ulaw.len()), (2000, 500 * BYTES_PER_MS));
    }

    #[test]
    fn wav_chunks_are_8k_mono_16_bit_pcm() {
        let ulaw = tone(100);
        let wav = wav_bytes(&ulaw).unwrap();
        assert_eq!(&wav[..4], b"RIFF");
        let reader = hound::WavReader::new(Cursor::new(wav)).unwrap();
        let spec = reader.spec();
        assert_eq!(
            (spec.sample_rate, spec.channels, spec.bits_per_sample),
            (8000, 1, 16)
        );
        let samples: Vec<i16> = reader.into_samples().map(Result::unwrap).collect();
        assert_eq!(samples, decode(&ulaw));
    }
}
