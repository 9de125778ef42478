//! OpenAI → Twilio: assistant audio out (each chunk followed by a mark), barge-in, transcript.
//!
//! Event mapping per `PROTOCOLS.md`: `response.output_audio.delta` → Twilio `media` + `mark`;
//! `input_audio_buffer.speech_started` while audio is unplayed → Twilio `clear` +
//! `conversation.item.truncate` at what the caller heard (see [`super::playback`]). The session's
//! `interrupt_response` cancels the response itself, so no `response.cancel` is sent.

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use chrono::Utc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tracing::{debug, info, trace, warn};

use super::playback::Playback;
use super::{CallCtx, ToOutbound};
use crate::realtime::server::{EventProbe, OUTPUT_AUDIO_DELTA};
use crate::realtime::{ClientEvent, ServerEvent};
use crate::transcript::{EndReason, Role, Transcript};
use crate::twilio::media::{base64_decoded_len, TwilioCommand};
use crate::upstream::UpstreamSocket;

/// Per-call state of the OpenAI side.
pub(super) struct Outbound {
    ctx: CallCtx,
    twilio_tx: SplitSink<WebSocket, Message>,
    to_upstream: mpsc::Sender<String>,
    playback: Playback,
    stream_sid: Option<String>,
    pub transcript: Option<Transcript>,
    session_ready: bool,
    greeted: bool,
    /// The item a barge-in interrupted: late deltas of it are dropped, not played.
    muted_item: Option<String>,
    /// Audio chunks sent to Twilio.
    pub frames_out: u64,
    pub barge_ins: u64,
    pub ignored: u64,
}

impl Outbound {
    pub fn new(
        ctx: CallCtx,
        twilio_tx: SplitSink<WebSocket, Message>,
        to_upstream: mpsc::Sender<String>,
    ) -> Self {
        Outbound {
            ctx,
            twilio_tx,
            to_upstream,
            playback: Playback::default(),
            stream_sid: None,
            transcript: None,
            session_ready: false,
            greeted: false,
            muted_item: None,
            frames_out: 0,
            barge_ins: 0,
            ignored: 0,
        }
    }

    fn on_inbound(&mut self, msg: ToOutbound) {
        match msg {
            ToOutbound::Started(info) => {
                self.transcript = Some(info.transcript());
                self.stream_sid = Some(info.stream_sid);
            }
            ToOutbound::MarkEchoed { name, at } => {
                if !self.playback.echoed(&name, at) {
                    trace!(mark = %name, "mark echo after clear");
                }
            }
        }
    }

    /// Handle one upstream text frame. `Err` means Twilio's socket failed.
    async fn on_event(&mut self, text: &str) -> Result<(), axum::Error> {
        // The per-frame path: one flat parse with the audio borrowed.
        if let Ok(EventProbe {
            kind,
            item_id: Some(item_id),
            delta: Some(delta),
        }) = serde_json::from_str::<EventProbe>(text)
        {
            if kind == OUTPUT_AUDIO_DELTA {
                return self.audio(&item_id, &delta).await;
            }
        }
        let event = match serde_json::from_str::<ServerEvent>(text) {
            Ok(event) => event,
            Err(e) => {
                self.ignored += 1;
                self.ctx.app.stats.error();
                warn!(error = %e, "ignored a malformed Realtime event");
                return Ok(());
            }
        };
        match event {
            ServerEvent::OutputAudioDelta { item_id, delta, .. } => {
                self.audio(&item_id, &delta).await?;
            }
            ServerEvent::SpeechStarted { item_id, .. } => {
                if let Some(t) = self.transcript.as_mut() {
                    t.begin(&item_id, Role::Caller, Utc::now());
                }
                self.barge_in().await?;
            }
            ServerEvent::SessionUpdated { .. } => {
                debug!("session updated");
                self.session_ready = true;
                self.maybe_greet().await;
            }
            ServerEvent::InputTranscriptionCompleted {
                item_id,
                transcript,
                ..
            } => {
                self.complete_turn(&item_id, Role::Caller, &transcript)
                    .await
            }
            ServerEvent::OutputTranscriptDelta { item_id, delta, .. } => {
                if let Some(t) = self.transcript.as_mut() {
                    t.append(&item_id, Role::Assistant, &delta);
                }
            }
            ServerEvent::OutputTranscriptDone {
                item_id,
                transcript,
                ..
            } => {
                self.complete_turn(&item_id, Role::Assistant, &transcript)
                    .await
            }
            ServerEvent::InputTranscriptionFailed { item_id, error } => {
                warn!(%item_id, message = %error.message, "caller transcription failed");
            }
            ServerEvent::ResponseDone { response } => {
                debug!(id = %response.id, status = %response.status, "response done");
            }
            ServerEvent::Error { error } => {
                self.ctx.app.stats.error();
                warn!(
                    code = error.code.as_deref().unwrap_or("-"),
                    message = %error.message,
                    "Realtime API error"
                );
            }
            ServerEvent::FunctionCallArgumentsDone { name, .. } => {
                debug!(%name, "function call (no tools are declared)");
            }
            _ => {}
        }
        Ok(())
    }

    async fn audio(&mut self, item_id: &str, delta: &str) -> Result<(), axum::Error> {
        if self.muted_item.as_deref() == Some(item_id) {
            trace!("dropped audio of an interrupted item");
            return Ok(());
        }
        let Some(stream_sid) = self.stream_sid.as_deref() else {
            warn!("assistant audio before Twilio's start: dropped");
            return Ok(());
        };
        let now = Instant::now();
        if self.playback.sent_ms(item_id).is_none() {
            if let Some(t) = self.transcript.as_mut() {
                t.begin(item_id, Role::Assistant, Utc::now());
            }
        }
        let mark = self.playback.sent(item_id, base64_decoded_len(delta), now);
        let media = TwilioCommand::media(stream_sid, delta).to_json();
        let mark = TwilioCommand::mark(stream_sid, &mark).to_json();
        self.twilio_tx.feed(Message::text(media)).await?;
        self.twilio_tx.feed(Message::text(mark)).await?;
        self.twilio_tx.flush().await?;
        self.frames_out += 1;
        Ok(())
    }

    async fn barge_in(&mut self) -> Result<(), axum::Error> {
        if !self.playback.is_playing() {
            return Ok(());
        }
        let Some(stream_sid) = self.stream_sid.clone() else {
            return Ok(());
        };
        let cuts = self.playback.barge_in(Instant::now());
        self.twilio_tx
            .send(Message::text(TwilioCommand::clear(&stream_sid).to_json()))
            .await?;
        self.barge_ins += 1;
        for cut in cuts {
            info!(item_id = %cut.item_id, heard_ms = cut.heard_ms, "barge-in: cleared Twilio and truncating");
            let truncate = ClientEvent::ConversationItemTruncate {
                item_id: cut.item_id.as_str().into(),
                content_index: 0,
                audio_end_ms: cut.heard_ms,
            };
            self.upstream(truncate.to_json()).await;
            if let Some(t) = self.transcript.as_mut() {
                t.interrupt(&cut.item_id, cut.heard_ms);
            }
            self.muted_item = Some(cut.item_id);
        }
        self.save().await;
        Ok(())
    }

    /// Ask for the greeting once the session is configured and Twilio has started the stream.
    async fn maybe_greet(&mut self) {
        let Some(greeting) = self.ctx.app.config.greeting.clone() else {
            return;
        };
        if self.greeted || !self.session_ready || self.stream_sid.is_none() {
            return;
        }
        self.greeted = true;
        let prompt = format!("Greet the caller by saying exactly: \"{greeting}\"");
        self.upstream(ClientEvent::user_text(prompt).to_json())
            .await;
        self.upstream(ClientEvent::ResponseCreate {}.to_json())
            .await;
    }

    async fn complete_turn(&mut self, item_id: &str, role: Role, text: &str) {
        let Some(t) = self.transcript.as_mut() else {
            return;
        };
        if t.complete(item_id, role, text) {
            info!(?role, text, "turn");
            self.save().await;
        }
    }

    async fn save(&self) {
        if let Some(t) = &self.transcript {
            if let Err(e) = t.save(&self.ctx.app.config.transcript_dir).await {
                self.ctx.app.stats.error();
                warn!(error = format!("{e:#}"), "could not write the transcript");
            }
        }
    }

    async fn upstream(&self, json: String) {
        // The inbound task owns the upstream socket; if it is gone the call is ending anyway.
        let _ = self.to_upstream.send(json).await;
    }
}

/// Run the OpenAI → Twilio side until upstream ends, Twilio's socket fails, or `ctx` is cancelled.
/// Closes Twilio's socket on exit (so Twilio runs the TwiML after `<Connect>`).
pub(super) async fn run(
    mut out: Outbound,
    mut upstream_rx: SplitStream<UpstreamSocket>,
    mut from_inbound: mpsc::Receiver<ToOutbound>,
) -> Outbound {
    let ctx = out.ctx.clone();
    let reason = loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break None,
            Some(msg) = from_inbound.recv() => {
                let started = matches!(msg, ToOutbound::Started(_));
                out.on_inbound(msg);
                if started {
                    out.maybe_greet().await;
                }
            }
            frame = upstream_rx.next() => match frame {
                Some(Ok(tungstenite::Message::Text(text))) => {
                    if let Err(e) = out.on_event(text.as_str()).await {
                        debug!(error = %e, "Twilio socket failed while sending");
                        break Some(EndReason::TwilioDisconnected);
                    }
                }
                Some(Ok(tungstenite::Message::Close(frame))) => {
                    info!(?frame, "the Realtime API closed the session");
                    break Some(EndReason::UpstreamClosed);
                }
                Some(Ok(tungstenite::Message::Binary(_))) => {
                    out.ignored += 1;
                    ctx.app.stats.error();
                    warn!("ignored a binary frame from the Realtime API");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ctx.app.stats.error();
                    warn!(error = %e, "the Realtime API socket failed");
                    break Some(EndReason::UpstreamError);
                }
                None => break Some(EndReason::UpstreamClosed),
            },
        }
    };
    if let Some(reason) = reason {
        ctx.end(reason);
    }
    super::close_within_a_second(out.twilio_tx.close()).await;
    out
}
