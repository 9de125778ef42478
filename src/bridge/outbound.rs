//! OpenAI → Twilio: assistant audio out (each chunk followed by a mark), barge-in, transcript.
//!
//! Event mapping per `PROTOCOLS.md`: `response.output_audio.delta` → Twilio `media` + `mark`;
//! `input_audio_buffer.speech_started` while audio is unplayed → Twilio `clear` +
//! `conversation.item.truncate` at what the caller heard (see [`super::playback`]). The session's
//! `interrupt_response` cancels the response itself, so no `response.cancel` is sent. The
//! `end_call` tool is handled in [`super::ending`].

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use chrono::Utc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tracing::{debug, info, trace, warn};

use super::ending::Ending;
use super::playback::Playback;
use super::{CallCtx, CallInfo, ToOutbound};
use crate::active::CallSettings;
use crate::config::END_CALL_TOOL;
use crate::events::CallEvent;
use crate::realtime::client::Item;
use crate::realtime::server::{EventProbe, OUTPUT_AUDIO_DELTA};
use crate::realtime::{ClientEvent, ServerEvent};
use crate::records::CallRecord;
use crate::transcript::{EndReason, Role, Transcript};
use crate::twilio::media::{base64_decoded_len, TwilioCommand};
use crate::upstream::UpstreamSocket;

/// Per-call state of the OpenAI side.
pub(super) struct Outbound {
    pub(super) ctx: CallCtx,
    twilio_tx: SplitSink<WebSocket, Message>,
    to_upstream: mpsc::Sender<String>,
    pub(super) playback: Playback,
    stream_sid: Option<String>,
    pub(super) call_sid: Option<String>,
    pub transcript: Option<Transcript>,
    /// This call's overrides (outbound calls placed through the API).
    settings: CallSettings,
    /// `session.update`s sent and not yet answered; the supervisor sent the first.
    pending_updates: u32,
    greeted: bool,
    /// The item a barge-in interrupted: late deltas of it are dropped, not played.
    muted_item: Option<String>,
    /// Set once the model called `end_call`.
    pub(super) ending: Option<Ending>,
    /// When the caller last stopped speaking, until the reply's first audio is sent.
    speech_stopped_at: Option<Instant>,
    /// Response latencies of this call, ms.
    pub latencies_ms: Vec<u64>,
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
            call_sid: None,
            transcript: None,
            settings: CallSettings::default(),
            pending_updates: 1,
            greeted: false,
            muted_item: None,
            ending: None,
            speech_stopped_at: None,
            latencies_ms: Vec::new(),
            frames_out: 0,
            barge_ins: 0,
            ignored: 0,
        }
    }

    async fn on_inbound(&mut self, msg: ToOutbound) {
        match msg {
            ToOutbound::Started(info) => self.started(info).await,
            ToOutbound::MarkEchoed { name, at } => {
                if !self.playback.echoed(&name, at) {
                    trace!(mark = %name, "mark echo after clear");
                }
            }
        }
    }

    /// Twilio's `start`: the call's record, registry entry, transcript and overrides.
    async fn started(&mut self, info: CallInfo) {
        let app = &self.ctx.app;
        app.active.register(&info.call_sid, self.ctx.handle.clone());
        let (from, to) = (info.param("From"), info.param("To"));
        app.records
            .update(
                &info.call_sid,
                || CallRecord::new(&info.call_sid, "inbound", "in-progress"),
                |r| {
                    if !r.is_ended() {
                        r.status = "in-progress".into();
                    }
                    r.from = r.from.take().or(from.map(str::to_string));
                    r.to = r.to.take().or(to.map(str::to_string));
                },
            )
            .await;
        if let Some(settings) = info.param("CallRef").and_then(|r| app.pending.take(r)) {
            if settings.instructions.is_some() || settings.voice.is_some() {
                let session = app.config.session_for(&settings);
                self.pending_updates += 1;
                self.upstream(
                    ClientEvent::SessionUpdate {
                        session: Box::new(session),
                    }
                    .to_json(),
                )
                .await;
                info!("applied this call's instructions/voice");
            }
            self.settings = settings;
        }
        self.transcript = Some(info.transcript());
        self.call_sid = Some(info.call_sid);
        self.stream_sid = Some(info.stream_sid);
        self.maybe_greet().await;
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
                self.ctx
                    .app
                    .stats
                    .error(crate::stats::ErrorKind::UpstreamEvent);
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
            ServerEvent::SpeechStopped { .. } => self.speech_stopped_at = Some(Instant::now()),
            ServerEvent::SessionUpdated { .. } => {
                debug!("session updated");
                self.pending_updates = self.pending_updates.saturating_sub(1);
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
                if let Some(ending) = self.ending.as_mut() {
                    ending.response_done(&response.id);
                }
            }
            ServerEvent::Error { error } => {
                self.ctx
                    .app
                    .stats
                    .error(crate::stats::ErrorKind::UpstreamEvent);
                warn!(
                    code = error.code.as_deref().unwrap_or("-"),
                    message = %error.message,
                    "Realtime API error"
                );
            }
            ServerEvent::FunctionCallArgumentsDone {
                name,
                call_id,
                response_id,
                arguments,
                ..
            } => {
                self.function_call(&name, &call_id, &response_id, &arguments)
                    .await
            }
            _ => {}
        }
        Ok(())
    }

    async fn function_call(
        &mut self,
        name: &str,
        call_id: &str,
        response_id: &str,
        arguments: &str,
    ) {
        let known = name == END_CALL_TOOL;
        let output = if known {
            r#"{"ok":true}"#
        } else {
            r#"{"error":"unknown function"}"#
        };
        let answer = ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: call_id.to_string(),
                output: output.to_string(),
            },
        };
        self.upstream(answer.to_json()).await;
        if known {
            info!(
                arguments,
                "the assistant is ending the call; waiting for its goodbye to play"
            );
            self.ending = Some(Ending::new(response_id));
        } else {
            warn!(name, "the model called an unknown function");
            self.upstream(ClientEvent::ResponseCreate {}.to_json())
                .await;
        }
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
        if let Some(stopped) = self.speech_stopped_at.take() {
            let latency = now - stopped;
            self.ctx.app.stats.response_latency(latency);
            self.latencies_ms.push(latency.as_millis() as u64);
        }
        let bytes = base64_decoded_len(delta);
        self.ctx.app.stats.frame_to_twilio(bytes);
        let mark = self.playback.sent(item_id, bytes, now);
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
        self.ctx.app.stats.barge_in();
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

    /// Ask for the greeting once every `session.update` is applied and Twilio has started.
    async fn maybe_greet(&mut self) {
        let greeting = self
            .settings
            .greeting
            .clone()
            .or_else(|| self.ctx.app.config.greeting.clone());
        let Some(greeting) = greeting else {
            return;
        };
        if self.greeted || self.pending_updates > 0 || self.stream_sid.is_none() {
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
            let event = CallEvent::Final {
                speaker: role,
                text: text.trim().to_string(),
                at: Utc::now(),
            };
            self.ctx.app.events.publish(&t.call_sid, event);
            self.save().await;
        }
    }

    async fn save(&self) {
        if let Some(t) = &self.transcript {
            if let Err(e) = t.save(&self.ctx.app.config.transcript_dir).await {
                self.ctx.app.stats.error(crate::stats::ErrorKind::Storage);
                warn!(error = format!("{e:#}"), "could not write the transcript");
            }
        }
    }

    pub(super) async fn upstream(&self, json: String) {
        // The inbound task owns the upstream socket; if it is gone the call is ending anyway.
        let _ = self.to_upstream.send(json).await;
    }
}

/// Run the OpenAI → Twilio side until upstream ends, Twilio's socket fails, the assistant hangs
/// up, or `ctx` is cancelled. Closes Twilio's socket on exit (Twilio then runs the TwiML after
/// `<Connect>`).
pub(super) async fn run(
    mut out: Outbound,
    mut upstream_rx: SplitStream<UpstreamSocket>,
    mut from_inbound: mpsc::Receiver<ToOutbound>,
) -> Outbound {
    let ctx = out.ctx.clone();
    let reason = loop {
        if out.ending.as_ref().is_some_and(|e| e.ready(&out.playback)) {
            out.hang_up().await;
            break Some(EndReason::AssistantHungUp);
        }
        let deadline = out.ending.as_ref().map(Ending::deadline);
        tokio::select! {
            _ = ctx.cancel().cancelled() => break None,
            _ = sleep_until_opt(deadline) => {
                warn!("the goodbye did not finish playing in time; hanging up now");
                out.hang_up().await;
                break Some(EndReason::AssistantHungUp);
            }
            Some(msg) = from_inbound.recv() => out.on_inbound(msg).await,
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
                    ctx.app.stats.error(crate::stats::ErrorKind::UpstreamEvent);
                    warn!("ignored a binary frame from the Realtime API");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    ctx.app.stats.error(crate::stats::ErrorKind::UpstreamSocket);
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

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
