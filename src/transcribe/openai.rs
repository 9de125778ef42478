//! One OpenAI Realtime transcription session for one track (PROTOCOLS.md § "OpenAI Realtime API —
//! GA only", "Transcription-only sessions").
//!
//! Connects `OPENAI_REALTIME_URL?intent=transcription` (no model in the URL) with a bearer key,
//! sends `session.update` with `type: "transcription"`, `audio/pcmu`, `TRANSCRIBE_MODEL` and server
//! VAD (500 ms silence), then forwards each Twilio payload unchanged as `input_audio_buffer.append`.
//! `…input_audio_transcription.delta` events accumulate per item into interim text;
//! `.completed` is the final (`.failed` is logged; the utterance is lost).
//!
//! The end of a track is flushed: the server hears audio no faster than real time and may be
//! seconds behind (a session that opened late, a burst of frames), so utterances it has not heard
//! yet cannot be seen from here. When the track ends, 600 ms of μ-law silence is appended (the
//! server VAD ends an utterance in progress after 500 ms), then `input_audio_buffer.commit`, which
//! the server applies after all the audio before it. The session then waits, at most
//! [`DRAIN_TIMEOUT`] (10 s), for the answer to that commit — `input_audio_buffer.committed` for an
//! item without `speech_stopped` (the commit took the remainder: the utterance in progress, or
//! trailing silence, which transcribes to nothing) or the `error` code
//! `input_audio_buffer_commit_empty` (the VAD had committed everything; under 100 ms was left) —
//! and for the transcription `completed`/`failed` of every item committed before it, VAD commits
//! included. Sources for the commit: openai-python
//! `types/realtime/input_audio_buffer_commit_event_param.py` ("will produce an error if the input
//! audio buffer is empty"; answered by `input_audio_buffer.committed`, transcribed if enabled,
//! no response); the error code and its text ("buffer too small. Expected at least 100ms of
//! audio") as the API returns it, quoted in public client logs (code search:
//! `input_audio_buffer_commit_empty`).

use std::collections::{HashMap, HashSet};
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

/// Longest wait, once the track has ended, for the server to hear the rest of the audio and
/// transcribe it: the server may be seconds behind, and hears the backlog at 1× real time.
pub(super) const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The `error` code answering a commit of less than 100 ms of audio.
const COMMIT_EMPTY: &str = "input_audio_buffer_commit_empty";
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

/// Utterances seen start or committed and not yet transcribed, by item id, and the end-of-track
/// commit.
#[derive(Default)]
struct Items {
    /// Where the utterance started in the session's audio (ms) and its text so far.
    open: HashMap<String, (Option<u64>, String)>,
    /// Items the server VAD stopped: their `committed` is the VAD's, not the answer to ours.
    stopped: HashSet<String>,
    /// Items committed whose transcription has not come yet.
    committed: HashSet<String>,
    /// `session.updated` arrived: later `error` events are about one event, not the session.
    configured: bool,
    /// Our `input_audio_buffer.commit` went out.
    commit_sent: bool,
    /// The server answered it: everything appended before it has been heard and committed.
    commit_answered: bool,
}

impl Items {
    /// Every utterance the server heard is transcribed.
    fn flushed(&self) -> bool {
        self.commit_answered && self.committed.is_empty()
    }
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

/// The track ended: flush the VAD with silence, commit the rest, and collect the transcripts of
/// everything committed. Failures here only cost the utterances still open, so they are logged,
/// not retried.
async fn drain(
    tx: &mut Tx,
    rx: &mut Rx,
    items: &mut Items,
    out: &TrackOut,
    cancel: &CancellationToken,
) {
    let silence = base64::engine::general_purpose::STANDARD.encode([ULAW_SILENCE; FRAME_BYTES]);
    let append = ClientEvent::InputAudioBufferAppend {
        audio: silence.as_str().into(),
    }
    .to_json();
    let commit = ClientEvent::InputAudioBufferCommit {}.to_json();
    let frames = std::iter::repeat_n(append, END_SILENCE_MS / FRAME_MS);
    for text in frames.chain([commit]) {
        if tx.feed(Message::text(text)).await.is_err() {
            let _ = tx.close().await;
            return;
        }
    }
    if tx.flush().await.is_err() {
        return;
    }
    items.commit_sent = true;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while !items.flushed() {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {
                warn!(
                    commit_answered = items.commit_answered,
                    untranscribed = items.committed.len(),
                    timeout_s = DRAIN_TIMEOUT.as_secs(),
                    "the end of the track was not transcribed in time; it is lost"
                );
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
        ServerEvent::SpeechStopped { item_id, .. } => {
            items.stopped.insert(item_id.into_owned());
        }
        ServerEvent::Committed { item_id, .. } => {
            // A commit the VAD did not announce with `speech_stopped` answers ours.
            let by_vad = items.stopped.remove(item_id.as_ref());
            items.commit_answered |= items.commit_sent && !by_vad;
            items.committed.insert(item_id.into_owned());
        }
        ServerEvent::InputTranscriptionCompleted {
            item_id,
            transcript,
            ..
        } => {
            items.committed.remove(item_id.as_ref());
            let start = items
                .open
                .remove(item_id.as_ref())
                .and_then(|(start, _)| start);
            // Empty text (a commit of silence) makes no turn.
            out.final_text(&item_id, &transcript, start).await;
        }
        ServerEvent::InputTranscriptionFailed { item_id, error } => {
            items.committed.remove(item_id.as_ref());
            items.open.remove(item_id.as_ref());
            warn!(item_id = %item_id, error = %error.message, "one utterance could not be transcribed");
        }
        ServerEvent::Error { error } if !items.configured => {
            bail!("the transcription session was refused: {}", error.message)
        }
        ServerEvent::Error { error }
            if items.commit_sent && error.code.as_deref() == Some(COMMIT_EMPTY) =>
        {
            debug!("nothing left to commit at the end of the track");
            items.commit_answered = true;
        }
        ServerEvent::Error { error } => {
            warn!(code = error.code.as_deref().unwrap_or("-"), message = %error.message, "Realtime API error");
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::output::{Line, LineKind};
    use crate::transcribe::track::{Frame, Track};
    use serde_json::json;

    /// A Realtime server that answers `session.update`, hears one frame, and answers the
    /// end-of-track commit with `answer`; records the `type` of every client event.
    async fn scripted_server(
        answer: Vec<serde_json::Value>,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            let mut seen = Vec::new();
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                let kind = event["type"].as_str().unwrap().to_string();
                let replies = match kind.as_str() {
                    "session.update" => vec![json!({"type": "session.updated"})],
                    "input_audio_buffer.commit" => answer.clone(),
                    _ => Vec::new(),
                };
                seen.push(kind);
                for reply in replies {
                    ws.send(Message::text(reply.to_string())).await.unwrap();
                }
            }
            seen
        });
        (url, server)
    }

    /// Run a session whose track is one frame long against `answer`; returns the finals and the
    /// client events the server saw. 5 s bound: the drain must end on the answer, not time out.
    async fn end_of_track(answer: Vec<serde_json::Value>) -> (Vec<String>, Vec<String>) {
        let (url, server) = scripted_server(answer).await;
        let key = crate::config::Secret::from("sk-test");
        let settings = BackendSettings::new(&TranscribeConfig::default(), Some(&key), &url);
        let (frames, rx) = tokio::sync::mpsc::channel(1);
        frames
            .send(Frame {
                payload: "/////w==".into(),
                ulaw: vec![0xFF; 4],
            })
            .await
            .unwrap();
        drop(frames);
        let (lines, mut lines_rx) = tokio::sync::mpsc::channel(16);
        let out = TrackOut::new(Track::Outbound, chrono::Utc::now(), lines);
        let (mut feed, cancel) = (Feed::new(rx), CancellationToken::new());
        let run = session(&settings, &mut feed, &out, &cancel);
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the drain ends on the server's answer")
            .expect("a clean end");
        drop(out);
        let mut finals = Vec::new();
        while let Some(Line { kind, text, .. }) = lines_rx.recv().await {
            if matches!(kind, LineKind::Final) && !text.is_empty() {
                finals.push(text);
            }
        }
        (finals, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_track_ends_with_silence_and_a_commit_and_an_empty_commit_still_awaits_the_last_transcript(
    ) {
        // The silence let the VAD commit the last utterance; nothing was left for our commit.
        let (finals, seen) = end_of_track(vec![
            json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "item_7"}),
            json!({"type": "input_audio_buffer.committed", "previous_item_id": null, "item_id": "item_7"}),
            json!({"type": "error", "error": {"type": "invalid_request_error", "code": COMMIT_EMPTY,
                "message": "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, but buffer only has 0.00ms of audio."}}),
            json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_7", "content_index": 0, "transcript": "the last words"}),
        ])
        .await;
        assert_eq!(finals, ["the last words"]);
        let appends = END_SILENCE_MS / FRAME_MS;
        assert_eq!(seen.len(), 1 + 1 + appends + 1, "{seen:?}");
        assert_eq!(seen[0], "session.update");
        assert!(seen[1..=1 + appends]
            .iter()
            .all(|k| k == "input_audio_buffer.append"));
        assert_eq!(seen.last().unwrap(), "input_audio_buffer.commit");
    }

    #[tokio::test]
    async fn a_commit_that_takes_the_utterance_in_progress_is_awaited_until_it_is_transcribed() {
        let (finals, _) = end_of_track(vec![
            json!({"type": "input_audio_buffer.committed", "previous_item_id": "item_3", "item_id": "item_4"}),
            json!({"type": "conversation.item.input_audio_transcription.delta", "item_id": "item_4", "content_index": 0, "delta": "still "}),
            json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_4", "content_index": 0, "transcript": "still talking"}),
        ])
        .await;
        assert_eq!(finals, ["still talking"]);
    }

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
