//! One OpenAI Realtime transcription session for one track (PROTOCOLS.md § "OpenAI Realtime API —
//! GA only", "Transcription-only sessions").
//!
//! Connects `OPENAI_REALTIME_URL?intent=transcription` (no model in the URL) with a bearer key,
//! sends `session.update` with `type: "transcription"`, `audio/pcmu`, `TRANSCRIBE_MODEL` and server
//! VAD (500 ms silence), then forwards each Twilio payload unchanged as `input_audio_buffer.append`.
//! `…input_audio_transcription.delta` events accumulate per item into interim text;
//! `.completed` is the final. When the track ends, 600 ms of μ-law silence is appended so the
//! server VAD commits an utterance still in progress, and the session waits (at most
//! [`DRAIN_TIMEOUT`]) for the transcripts of every utterance it has seen start.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::connect::connect;
use super::track::{Feed, TrackOut};
use super::{BackendSettings, TranscribeConfig};
use crate::audio::{FRAME_BYTES, FRAME_MS, ULAW_SILENCE};
use crate::realtime::session::{
    AudioConfig, AudioFormat, AudioInput, InputTranscription, SessionKind, TurnDetection,
};
use crate::realtime::{ClientEvent, ServerEvent, Session};
use crate::upstream::UpstreamSocket;

/// Longest wait for outstanding transcripts once the track has ended.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Silence appended at the end: more than the VAD's 500 ms, so a last utterance gets committed.
const END_SILENCE_MS: usize = 600;
/// Server VAD silence that ends an utterance, ms.
const SILENCE_DURATION_MS: u32 = 500;

/// `OPENAI_REALTIME_URL` + `intent=transcription`.
pub(super) fn transcription_url(realtime_url: &str) -> String {
    let sep = if realtime_url.contains('?') { '&' } else { '?' };
    format!("{realtime_url}{sep}intent=transcription")
}

/// The `session` of the transcription `session.update`.
pub(crate) fn transcription_session(config: &TranscribeConfig) -> Session {
    Session {
        kind: SessionKind::Transcription,
        model: None,
        output_modalities: None,
        instructions: None,
        audio: Some(AudioConfig {
            input: Some(AudioInput {
                format: AudioFormat::pcmu(),
                transcription: Some(InputTranscription {
                    model: config.transcribe_model.clone(),
                    language: config.transcribe_language.clone(),
                }),
                turn_detection: Some(TurnDetection::ServerVad {
                    threshold: None,
                    prefix_padding_ms: None,
                    silence_duration_ms: Some(SILENCE_DURATION_MS),
                    create_response: None,
                    interrupt_response: None,
                    idle_timeout_ms: None,
                }),
            }),
            output: None,
        }),
        tools: None,
        tool_choice: None,
        reasoning: None,
    }
}

/// Utterances seen start and not yet transcribed, by item id.
#[derive(Default)]
struct Items {
    /// Where the utterance started in the session's audio (ms) and its text so far.
    open: HashMap<String, (Option<u64>, String)>,
    /// `session.updated` arrived: later `error` events are about one event, not the session.
    configured: bool,
}

/// Run one session until the track ends (`Ok`), `cancel` fires (`Ok`), or it fails (`Err`:
/// refused, closed by the server, or the `session.update` rejected).
pub(super) async fn session(
    settings: &BackendSettings,
    feed: &mut Feed,
    out: &TrackOut,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let key = settings
        .openai_api_key
        .as_ref()
        .context("OPENAI_API_KEY is not set")?;
    let url = transcription_url(&settings.openai_realtime_url);
    let socket = connect(
        &url,
        &format!("Bearer {}", key.expose()),
        settings.connect_timeout,
    )
    .await
    .with_context(|| format!("opening {url}"))?;
    let (mut tx, mut rx) = socket.split();
    let update = ClientEvent::SessionUpdate {
        session: Box::new(transcription_session(&settings.transcribe)),
    };
    tx.send(Message::text(update.to_json()))
        .await
        .context("sending session.update")?;
    let mut items = Items::default();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = tx.close().await;
                return Ok(());
            }
            msg = rx.next() => on_message(msg, &mut items, out).await?,
            frame = feed.next() => {
                let Some(frame) = frame else { break };
                let append = ClientEvent::InputAudioBufferAppend { audio: frame.payload.into() };
                tx.send(Message::text(append.to_json())).await.context("sending audio")?;
            }
        }
    }
    drain(&mut tx, &mut rx, &mut items, out, cancel).await;
    Ok(())
}

type Tx = futures_util::stream::SplitSink<UpstreamSocket, Message>;
type Rx = futures_util::stream::SplitStream<UpstreamSocket>;

/// The track ended: flush the VAD with silence and collect outstanding transcripts. Failures here
/// only cost the utterances still open, so they are logged, not retried.
async fn drain(
    tx: &mut Tx,
    rx: &mut Rx,
    items: &mut Items,
    out: &TrackOut,
    cancel: &CancellationToken,
) {
    let silence = base64::engine::general_purpose::STANDARD.encode([ULAW_SILENCE; FRAME_BYTES]);
    for _ in 0..END_SILENCE_MS / FRAME_MS {
        let append = ClientEvent::InputAudioBufferAppend {
            audio: silence.as_str().into(),
        };
        if tx.feed(Message::text(append.to_json())).await.is_err() {
            break;
        }
    }
    let _ = tx.flush().await;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !items.open.is_empty() {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {
                warn!(open = items.open.len(), "utterances left untranscribed at the end of the track");
                break;
            }
            msg = rx.next() => if let Err(e) = on_message(msg, items, out).await {
                debug!(error = format!("{e:#}"), "transcription session ended while draining");
                break;
            },
        }
    }
    let _ = tx.close().await;
}

/// Apply one server frame. Errors end the session.
async fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    items: &mut Items,
    out: &TrackOut,
) -> anyhow::Result<()> {
    let text = match msg {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(frame))) => bail!("the Realtime API closed the session: {frame:?}"),
        None => bail!("the Realtime API dropped the connection"),
        Some(Err(e)) => return Err(e).context("reading from the Realtime API"),
        Some(Ok(_)) => return Ok(()),
    };
    let event = match serde_json::from_str::<ServerEvent>(text.as_str()) {
        Ok(event) => event,
        Err(e) => {
            debug!(error = %e, "unreadable Realtime event ignored");
            return Ok(());
        }
    };
    match event {
        ServerEvent::SessionUpdated { .. } => items.configured = true,
        ServerEvent::SpeechStarted {
            audio_start_ms,
            item_id,
        } => {
            items
                .open
                .entry(item_id.into_owned())
                .or_insert((Some(audio_start_ms), String::new()));
        }
        ServerEvent::InputTranscriptionDelta { item_id, delta, .. } => {
            let (start, text) = items
                .open
                .entry(item_id.to_string())
                .or_insert((None, String::new()));
            text.push_str(&delta);
            let (start, text) = (*start, text.clone());
            out.interim(&item_id, &text, start).await;
        }
        ServerEvent::InputTranscriptionCompleted {
            item_id,
            transcript,
            ..
        } => {
            let start = items
                .open
                .remove(item_id.as_ref())
                .and_then(|(start, _)| start);
            out.final_text(&item_id, &transcript, start).await;
        }
        ServerEvent::InputTranscriptionFailed { item_id, error } => {
            items.open.remove(item_id.as_ref());
            warn!(item_id = %item_id, error = %error.message, "one utterance could not be transcribed");
        }
        ServerEvent::Error { error } if !items.configured => {
            bail!("the transcription session was refused: {}", error.message)
        }
        ServerEvent::Error { error } => {
            warn!(code = ?error.code, message = %error.message, "Realtime API error");
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_update_matches_the_documented_transcription_shape() {
        let config = TranscribeConfig {
            transcribe_language: Some("en".into()),
            ..TranscribeConfig::default()
        };
        let update = ClientEvent::SessionUpdate {
            session: Box::new(transcription_session(&config)),
        };
        let documented = serde_json::json!({"type":"session.update","session":{"type":"transcription","audio":{"input":{"format":{"type":"audio/pcmu"},"transcription":{"model":"gpt-4o-transcribe","language":"en"},"turn_detection":{"type":"server_vad","silence_duration_ms":500}}}}});
        assert_eq!(serde_json::to_value(&update).unwrap(), documented);
    }

    #[test]
    fn the_url_asks_for_a_transcription_session_without_a_model() {
        assert_eq!(
            transcription_url("wss://api.openai.com/v1/realtime"),
            "wss://api.openai.com/v1/realtime?intent=transcription"
        );
        assert_eq!(
            transcription_url("ws://127.0.0.1:9/v1/realtime?x=1"),
            "ws://127.0.0.1:9/v1/realtime?x=1&intent=transcription"
        );
    }
}
