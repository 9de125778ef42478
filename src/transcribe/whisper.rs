//! The batch backend (PROTOCOLS.md § "Batch transcription"): each track's audio is cut into
//! utterance-sized chunks and uploaded to `WHISPER_URL` (`/v1/audio/transcriptions`); every answer
//! is a final (there are no interims).
//!
//! Chunks are cut at pauses (700 ms) or at `WHISPER_CHUNK_SECS` (the `chunker` module); chunks
//! without speech are never sent. Each chunk is decoded to 16-bit PCM (Whisper does not take
//! μ-law) and sent as an 8 kHz mono WAV (`file` = `chunk.wav`, `model`, `response_format=json`,
//! optional `language`) with a bearer key.
//! Uploads run concurrently but their finals are reported in the order the chunks were cut; a
//! failed upload is retried once, and if it fails again the track gets a gap and sends no more
//! chunks. The end of a track is flushed: the chunk in progress is cut (if it holds speech) and
//! uploaded, and the track is done only when every upload has settled, at most `DRAIN_TIMEOUT`
//! (15 s) after the end.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::chunker::{Chunk, Chunker};
use super::connect::{ensure_crypto_provider, error_message};
use super::track::{Feed, TrackOut};
use super::BackendSettings;
use crate::audio::{decode, SAMPLE_RATE_HZ};
use crate::stats::Stats;

/// Longest one upload may take.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for outstanding uploads once the track has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The JSON answer of `/v1/audio/transcriptions` with `response_format=json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionResponse {
    pub text: String,
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
            stats.error(crate::stats::ErrorKind::Transcription);
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
            stats.error(crate::stats::ErrorKind::Transcription);
            error!(error = %e, "cannot build the HTTP client; no transcription for this track");
            out.gap(0).await;
            return;
        }
    };
    let mut chunker = Chunker::new(settings.transcribe.whisper_chunk_secs);
    // Uploads run concurrently but settle in the order their chunks were cut, so a track's finals
    // (and the events the API streams) come out in the order they were spoken.
    let mut uploads = FuturesOrdered::new();
    let mut given_up = false;
    let mut n = 0u64;
    let spawn = |chunk: Chunk, uploads: &mut FuturesOrdered<_>| {
        uploads.push_back(upload(
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
            Some(done) = uploads.next() => {
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
            done = uploads.next() => {
                let Some(done) = done else { return };
                n += 1;
                given_up |= settle(done, n, &out, &stats, given_up).await;
            }
        }
    }
}

/// Report one finished upload; returns true if the track must now give up.
async fn settle(
    (start_ms, done): (u64, anyhow::Result<String>),
    n: u64,
    out: &TrackOut,
    stats: &Stats,
    given_up: bool,
) -> bool {
    match done {
        Ok(text) => {
            if !text.trim().is_empty() {
                out.final_text(&format!("chunk{n}"), &text, Some(start_ms))
                    .await;
            }
            false
        }
        Err(e) => {
            stats.error(crate::stats::ErrorKind::Transcription);
            if !given_up {
                error!(
                    error = format!("{e:#}"),
                    "transcription unavailable for the rest of this track"
                );
                out.gap(start_ms).await;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::{encode, BYTES_PER_MS};

    #[test]
    fn wav_chunks_are_8k_mono_16_bit_pcm() {
        let tone = |ms: usize| {
            let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
                .map(|n| (8000.0 * (n as f64 * 0.3).sin()) as i16)
                .collect();
            encode(&pcm)
        };
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
