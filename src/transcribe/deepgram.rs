//! Deepgram live streaming (PROTOCOLS.md § "Deepgram live streaming";
//! developers.deepgram.com/reference/speech-to-text/listen-streaming): typed messages and one
//! session per track.
//!
//! Two tracks use two connections (one per track, `channels=1`) rather than one multichannel
//! connection: the tracks start at different times (each opens on its first frame), fail and
//! reconnect independently, and need no interleaving. A session sends the raw μ-law bytes as
//! binary frames, `KeepAlive` after [`KEEPALIVE_AFTER`] without audio (a Twilio hiccup; Twilio
//! itself sends a frame every 20 ms, silence included).
//!
//! The end of a track is flushed: `Finalize` (Deepgram processes the audio it holds and sends
//! its final results at once, marked `from_finalize`; developers.deepgram.com/docs/finalize),
//! then `CloseStream` (flush, metadata, close; /docs/close-stream), and the results are read
//! until Deepgram closes, at most `DRAIN_TIMEOUT` (5 s): nothing said before `stop` is lost.
//! `Results` with `is_final: false` are interim, `is_final: true` settle a segment (final);
//! empty transcripts are skipped.

use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::connect::connect;
use super::track::{Feed, TrackOut};
use super::{BackendSettings, TranscribeConfig};

/// Send `KeepAlive` when no audio went out for this long (Deepgram closes after 10 s of nothing).
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(4);
/// Longest wait for the flushed results after `Finalize` and `CloseStream`.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A text control message we send, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Control {
    /// Keeps an idle connection open.
    KeepAlive,
    /// Flush pending results now, keep the connection.
    Finalize,
    /// Flush pending results, then close.
    CloseStream,
}

impl Control {
    /// JSON text frame, e.g. `{"type":"KeepAlive"}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("control messages serialize")
    }
}

/// A message Deepgram sends, tagged by `type`; unknown types are [`ListenEvent::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ListenEvent {
    /// Transcript of a segment: interim (`is_final: false`) or settled.
    Results(Results),
    /// No word for `utterance_end_ms` after the last one.
    UtteranceEnd {
        #[serde(default)]
        channel: Vec<u32>,
        /// s since the stream started.
        #[serde(default)]
        last_word_end: f64,
    },
    /// Voice activity began (only with `vad_events=true`).
    SpeechStarted {
        /// s since the stream started.
        #[serde(default)]
        timestamp: f64,
    },
    /// Sent once per connection and when it closes.
    Metadata {
        #[serde(default)]
        request_id: String,
    },
    #[serde(other)]
    Other,
}

/// `Results`: the fields the relay reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    #[serde(default)]
    pub channel_index: Vec<u32>,
    /// Segment start, s since the stream started.
    #[serde(default)]
    pub start: f64,
    /// Segment length, s.
    #[serde(default)]
    pub duration: f64,
    /// `false`: the text may still change; `true`: the segment is settled.
    #[serde(default)]
    pub is_final: bool,
    /// An endpoint (pause) follows this segment.
    #[serde(default)]
    pub speech_final: bool,
    /// Sent in answer to `Finalize`.
    #[serde(default)]
    pub from_finalize: bool,
    pub channel: Channel,
}

/// `channel` of `Results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Best first.
    #[serde(default)]
    pub alternatives: Vec<Alternative>,
}

/// One transcription hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    pub transcript: String,
    /// 0.0–1.0.
    #[serde(default)]
    pub confidence: f64,
}

/// `DEEPGRAM_URL?model=…&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true&
/// punctuate=true&smart_format=true&endpointing=300&utterance_end_ms=1000[&language=…]`.
pub fn listen_url(config: &TranscribeConfig) -> String {
    let base = &config.deepgram_url;
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut url = format!(
        "{base}{sep}model={}&encoding=mulaw&sample_rate=8000&channels=1&interim_results=true\
         &punctuate=true&smart_format=true&endpointing=300&utterance_end_ms=1000",
        config.deepgram_model
    );
    if let Some(language) = &config.transcribe_language {
        url.push_str("&language=");
        url.push_str(language);
    }
    url
}

/// Run one connection until the track ends (`Ok`), `cancel` fires (`Ok`), or it fails (`Err`:
/// refused, or closed by Deepgram before `CloseStream`).
pub(super) async fn session(
    settings: &BackendSettings,
    feed: &mut Feed,
    out: &TrackOut,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    let key = settings
        .transcribe
        .deepgram_api_key
        .as_ref()
        .context("DEEPGRAM_API_KEY is not set")?;
    let url = listen_url(&settings.transcribe);
    let socket = connect(
        &url,
        &format!("Token {}", key.expose()),
        settings.connect_timeout,
    )
    .await
    .with_context(|| format!("opening {}", settings.transcribe.deepgram_url))?;
    let (mut tx, mut rx) = socket.split();
    let mut segment = 0u64;
    let mut last_sent = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                let _ = tx.close().await;
                return Ok(());
            }
            msg = rx.next() => {
                if !on_message(msg, &mut segment, out).await? {
                    bail!("Deepgram closed the connection");
                }
            }
            frame = feed.next() => {
                let Some(frame) = frame else { break };
                tx.send(Message::binary(frame.ulaw)).await.context("sending audio to Deepgram")?;
                last_sent = Instant::now();
            }
            () = tokio::time::sleep_until(last_sent + settings.deepgram_keepalive) => {
                tx.send(Message::text(Control::KeepAlive.to_json())).await.context("sending KeepAlive")?;
                last_sent = Instant::now();
            }
        }
    }
    // Finalize flushes what Deepgram still holds; CloseStream then ends the stream.
    for control in [Control::Finalize, Control::CloseStream] {
        if tx.feed(Message::text(control.to_json())).await.is_err() {
            return Ok(());
        }
    }
    if tx.flush().await.is_err() {
        return Ok(());
    }
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {
                debug!("Deepgram did not close within 5 s of Finalize and CloseStream");
                break;
            }
            msg = rx.next() => match on_message(msg, &mut segment, out).await {
                Ok(true) => {}
                Ok(false) | Err(_) => break,
            },
        }
    }
    let _ = tx.close().await;
    Ok(())
}

/// Apply one frame; `Ok(false)` when Deepgram closed the connection.
async fn on_message(
    msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    segment: &mut u64,
    out: &TrackOut,
) -> anyhow::Result<bool> {
    let text = match msg {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(_))) | None => return Ok(false),
        Some(Err(e)) => return Err(e).context("reading from Deepgram"),
        Some(Ok(_)) => return Ok(true),
    };
    let results = match serde_json::from_str::<ListenEvent>(text.as_str()) {
        Ok(ListenEvent::Results(results)) => results,
        Ok(_) => return Ok(true),
        Err(e) => {
            debug!(error = %e, "unreadable Deepgram message ignored");
            return Ok(true);
        }
    };
    let transcript = results
        .channel
        .alternatives
        .first()
        .map_or("", |a| a.transcript.trim());
    let key = format!("seg{segment}");
    let start_ms = Some((results.start.max(0.0) * 1000.0).round() as u64);
    if results.from_finalize {
        debug!(
            is_final = results.is_final,
            "Deepgram flushed the end of the track"
        );
    }
    if results.is_final {
        *segment += 1;
        if !transcript.is_empty() {
            out.final_text(&key, transcript, start_ms).await;
        }
    } else if !transcript.is_empty() {
        out.interim(&key, transcript, start_ms).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcribe::track::{Frame, Track};

    /// The next message the fake Deepgram received (5 s bound: a failure, not a wait).
    async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<Message>) -> Message {
        tokio::time::timeout(Duration::from_secs(5), seen.recv())
            .await
            .expect("the fake Deepgram heard from the session within 5 s")
            .expect("fake alive")
    }

    /// A session whose track goes quiet sends `KeepAlive` (never more audio), and once the track
    /// ends `Finalize` then `CloseStream`.
    #[tokio::test]
    async fn a_quiet_track_keeps_the_connection_alive_then_finalizes_and_closes_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            while let Some(Ok(msg)) = ws.next().await {
                let closing = msg.to_text().is_ok_and(|t| t.contains("CloseStream"));
                let _ = seen_tx.send(msg);
                if closing {
                    let _ = ws.close(None).await;
                    break;
                }
            }
        });
        let transcribe = TranscribeConfig {
            deepgram_url: format!("ws://{addr}/v1/listen"),
            deepgram_api_key: Some("dg-test".into()),
            ..TranscribeConfig::default()
        };
        let mut settings = BackendSettings::new(&transcribe, None, "");
        settings.deepgram_keepalive = Duration::from_millis(50);
        let (frames, rx) = tokio::sync::mpsc::channel(4);
        let mut feed = Feed::new(rx);
        let (lines, _lines_rx) = tokio::sync::mpsc::channel(4);
        let out = TrackOut::new(Track::Inbound, chrono::Utc::now(), lines);
        let cancel = CancellationToken::new();
        let session =
            tokio::spawn(async move { session(&settings, &mut feed, &out, &cancel).await });
        let frame = Frame {
            payload: "/////w==".into(),
            ulaw: vec![0xFF; 4],
        };
        frames.send(frame).await.unwrap();

        assert_eq!(next(&mut seen).await, Message::binary(vec![0xFF; 4]));
        // Nothing more to send: the connection is kept open with KeepAlive, twice in a row.
        for _ in 0..2 {
            assert_eq!(
                next(&mut seen).await,
                Message::text(r#"{"type":"KeepAlive"}"#)
            );
        }
        drop(frames);
        let mut msg = next(&mut seen).await;
        while msg == Message::text(r#"{"type":"KeepAlive"}"#) {
            msg = next(&mut seen).await;
        }
        assert_eq!(msg, Message::text(r#"{"type":"Finalize"}"#));
        assert_eq!(
            next(&mut seen).await,
            Message::text(r#"{"type":"CloseStream"}"#)
        );
        session.await.unwrap().expect("a clean end");
    }

    #[test]
    fn documented_messages_round_trip() {
        let results = r#"{"type":"Results","channel_index":[0,1],"start":0.0,"duration":1.2,"is_final":true,"speech_final":true,"channel":{"alternatives":[{"transcript":"hello there","confidence":0.98,"words":[]}]}}"#;
        let ListenEvent::Results(r) = serde_json::from_str(results).unwrap() else {
            panic!("not Results")
        };
        assert!(r.is_final && r.speech_final && !r.from_finalize);
        assert_eq!(r.channel.alternatives[0].transcript, "hello there");
        let again: ListenEvent =
            serde_json::from_str(&serde_json::to_string(&ListenEvent::Results(r.clone())).unwrap())
                .unwrap();
        assert_eq!(again, ListenEvent::Results(r));
        let flushed = r#"{"type":"Results","channel_index":[0,1],"start":1.0,"duration":0.5,"is_final":true,"speech_final":false,"from_finalize":true,"channel":{"alternatives":[{"transcript":"bye"}]}}"#;
        let ListenEvent::Results(r) = serde_json::from_str(flushed).unwrap() else {
            panic!("not Results")
        };
        assert!(r.is_final && r.from_finalize);
        let end = r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.3}"#;
        assert!(matches!(
            serde_json::from_str(end).unwrap(),
            ListenEvent::UtteranceEnd { .. }
        ));
        let other = r#"{"type":"Warning","description":"x"}"#;
        assert_eq!(
            serde_json::from_str::<ListenEvent>(other).unwrap(),
            ListenEvent::Other
        );
        assert_eq!(Control::KeepAlive.to_json(), r#"{"type":"KeepAlive"}"#);
        assert_eq!(Control::CloseStream.to_json(), r#"{"type":"CloseStream"}"#);
        assert_eq!(Control::Finalize.to_json(), r#"{"type":"Finalize"}"#);
    }

    #[test]
    fn the_listen_url_asks_for_mulaw_8k_with_interim_results() {
        let mut config = TranscribeConfig::default();
        assert_eq!(
            listen_url(&config),
            "wss://api.deepgram.com/v1/listen?model=nova-3&encoding=mulaw&sample_rate=8000\
             &channels=1&interim_results=true&punctuate=true&smart_format=true&endpointing=300\
             &utterance_end_ms=1000"
        );
        config.transcribe_language = Some("de".into());
        assert!(listen_url(&config).ends_with("&language=de"));
    }
}
