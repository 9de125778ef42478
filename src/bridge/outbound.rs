//! OpenAI → Twilio: assistant audio out (with marks), barge-in, transcript.
//!
//! Event mapping per `PROTOCOLS.md`: `response.output_audio.delta` → Twilio `media`, plus a `mark`
//! per 100 ms of an item and at its end (see [`super::playback::MARK_EVERY_MS`]);
//! `input_audio_buffer.speech_started` while audio is unplayed → Twilio `clear` +
//! `conversation.item.truncate` at what the caller heard (see [`super::playback`]). The session's
//! `interrupt_response` cancels the response itself, so no `response.cancel` is sent. The
//! `end_call` tool and the relay's own goodbyes are handled in [`super::ending`], session setup
//! (`start`, `session.update`, the greeting, resuming after a reconnect) in [`super::session`],
//! session renewal in [`super::renewal`] and silent callers in [`super::idle`].

use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use chrono::Utc;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::clock::{Fired, Watchdogs};
use super::ending::Ending;
use super::idle::IdleWatch;
use super::playback::Playback;
use super::renewal::{CallerTurn, FollowUp, Renewal, SessionEnd, SESSION_EXPIRED};
use super::voice::Step;
use super::{CallCtx, ToInbound, ToOutbound};
use crate::active::CallSettings;
use crate::events::{CallEvent, CallState};
use crate::realtime::server::{EventProbe, OUTPUT_AUDIO_DELTA};
use crate::realtime::{ClientEvent, ServerEvent};
use crate::stats::ErrorKind;
use crate::transcript::{EndReason, Role, Transcript};
use crate::twilio::media::{base64_decoded_len, is_base64, MediaJson, TwilioCommand};
use crate::upstream::UpstreamSocket;

/// Longest media payload sent to Twilio, base64 characters: 12,000 bytes of μ-law, 1.5 s (a
/// multiple of 4, so every piece of a longer delta is valid base64 on its own).
pub(super) const MAX_MEDIA_PAYLOAD_CHARS: usize = 16_000;

/// Per-call state of the OpenAI side.
pub(super) struct Outbound {
    pub(super) ctx: CallCtx,
    twilio_tx: SplitSink<WebSocket, Message>,
    /// Writes for the current upstream session and turn notices (the inbound task owns the socket).
    pub(super) to_upstream: mpsc::Sender<ToInbound>,
    /// Why the upstream session ended while the call was still up (renewal or failure).
    pub(super) session_end: Option<SessionEnd>,
    pub(super) playback: Playback,
    pub(super) stream_sid: Option<String>,
    /// Builds this stream's `media` commands (set with `stream_sid`).
    pub(super) media_json: Option<MediaJson>,
    pub(super) call_sid: Option<String>,
    pub transcript: Option<Transcript>,
    /// This call's overrides (outbound calls placed through the API).
    pub(super) settings: CallSettings,
    /// `session.update`s sent and not yet answered.
    pub(super) pending_updates: u32,
    pub(super) greeted: bool,
    /// The item a barge-in interrupted: late deltas of it are dropped, not played.
    pub(super) muted_item: Option<String>,
    /// Items of an earlier session still playing at Twilio: a barge-in clears them but cannot
    /// truncate them (the current session does not know them).
    pub(super) stale_items: Vec<String>,
    /// Set once the model called `end_call`.
    pub(super) ending: Option<Ending>,
    /// When the caller last stopped speaking, until the reply's first audio is sent.
    pub(super) speech_stopped_at: Option<Instant>,
    /// A response is in progress (`response.created` without `response.done`).
    pub(super) response_active: bool,
    /// The caller's turn, as the server's turn detection reports it.
    pub(super) caller_turn: CallerTurn,
    /// The session transcribes the caller, so a caller turn is not over until its text arrives.
    pub(super) transcribes_caller: bool,
    /// The API sent `session_expired`: this session is over.
    pub(super) session_expired: bool,
    /// This session's first `session.updated` arrived.
    pub(super) session_configured: bool,
    /// What the next session must do for the turn an expiry interrupted.
    pub(super) follow_up: FollowUp,
    /// When to ask a renewed session to answer if it has heard no speech ([`FollowUp`]).
    pub(super) follow_up_at: Option<tokio::time::Instant>,
    /// When the call reaches `MAX_CALL_SECS` (set on Twilio's `start`).
    pub(super) max_call_at: Option<tokio::time::Instant>,
    pub(super) idle: IdleWatch,
    /// Tool calls in flight, keys pressed, the call's tool context ([`super::tools`]).
    pub(super) tools: super::tools::CallTools,
    /// The assistant's track of the call's recording (`RECORDING=on`).
    pub(super) recorder: Option<crate::recording::Side>,
    /// The Twilio-bound half of the voice session: the API's events in the bridge's vocabulary.
    pub(super) voice: super::voice::Decoder,
    /// Assistant audio waiting for Twilio to play what it has (APIs without speech events).
    pub(super) pacer: super::pacer::Pacer,
    /// The barge-in detector shared with the inbound task (APIs without speech events).
    pub(super) listen: Option<super::listen::Listen>,
    /// Response latencies of this call, ms.
    pub latencies_ms: Vec<u64>,
    /// Audio chunks sent to Twilio.
    pub frames_out: u64,
    pub barge_ins: u64,
    pub ignored: u64,
}

impl Outbound {
    /// Outbound state for a new call; `to_upstream` is set per upstream session.
    pub fn new(ctx: CallCtx, twilio_tx: SplitSink<WebSocket, Message>) -> Self {
        let config = &ctx.app.config;
        let (transcribes_caller, idle, tools, voice) = (
            super::session::transcribes_caller(config),
            IdleWatch::new(config),
            super::tools::CallTools::new(config),
            super::voice::Decoder::new(config),
        );
        let pacer = super::pacer::Pacer::new(
            voice
                .detects_barge_in_locally()
                .then_some(config.playback_ahead_ms),
        );
        Outbound {
            ctx,
            twilio_tx,
            to_upstream: mpsc::channel(1).0,
            session_end: None,
            playback: Playback::default(),
            stream_sid: None,
            media_json: None,
            call_sid: None,
            transcript: None,
            settings: CallSettings::default(),
            pending_updates: 0,
            greeted: false,
            muted_item: None,
            stale_items: Vec::new(),
            ending: None,
            speech_stopped_at: None,
            response_active: false,
            caller_turn: CallerTurn::Quiet,
            transcribes_caller,
            session_expired: false,
            session_configured: false,
            follow_up: FollowUp::None,
            follow_up_at: None,
            max_call_at: None,
            idle,
            tools,
            recorder: None,
            voice,
            pacer,
            listen: None,
            latencies_ms: Vec::new(),
            frames_out: 0,
            barge_ins: 0,
            ignored: 0,
        }
    }

    pub(super) async fn on_inbound(&mut self, msg: ToOutbound) {
        match msg {
            ToOutbound::Started(info) => self.started(info).await,
            ToOutbound::MarkEchoed { name, at } => {
                if !self.playback.echoed(&name, at) {
                    trace!(mark = %name, "mark echo after clear");
                }
            }
            ToOutbound::Dtmf { digit } => self.dtmf(&digit).await,
            ToOutbound::CallerSpeech => self.caller_speech().await,
        }
        self.sync_listening();
    }

    /// Tell the console what the call does now (published only when it changes).
    fn set_state(&self, state: CallState) {
        if let Some(sid) = &self.call_sid {
            self.ctx.app.events.set_state(sid, state);
        }
    }

    /// Handle one upstream text frame. `Err` means Twilio's socket failed.
    async fn on_event(&mut self, text: &str) -> Result<(), axum::Error> {
        if let super::voice::Decoder::Live(decoder) = &mut self.voice {
            let steps = decoder.decode(text, tokio::time::Instant::now());
            return self.steps(steps).await;
        }
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
                self.ctx.app.stats.error(ErrorKind::UpstreamEvent);
                warn!(error = %e, "ignored a malformed Realtime event");
                return Ok(());
            }
        };
        self.on_server_event(event).await
    }

    /// Handle what a voice API's frames mean (see [`super::voice`]).
    pub(super) async fn steps(&mut self, steps: Vec<Step<'_>>) -> Result<(), axum::Error> {
        for step in steps {
            match step {
                Step::Audio { item_id, delta } => self.audio(&item_id, &delta).await?,
                Step::Event(event) => self.on_server_event(event).await?,
                Step::CallerTurn { item_id } => {
                    if let Some(t) = self.transcript.as_mut() {
                        t.begin(&item_id, Role::Caller, Utc::now());
                    }
                    self.caller_spoke().await;
                }
                Step::Closed {
                    reason,
                    usage_seconds,
                } => self.upstream_closed(reason, usage_seconds),
                Step::Info { code, message } => {
                    self.ctx.app.stats.upstream_notice();
                    info!(%code, %message, "notice from the voice API");
                }
                Step::Unknown(kind) => {
                    self.ignored += 1;
                    self.ctx.app.stats.upstream_notice();
                    debug!(%kind, "an event type the relay does not use");
                }
                Step::Malformed(reason) => {
                    self.ignored += 1;
                    self.ctx.app.stats.error(ErrorKind::UpstreamEvent);
                    warn!(%reason, "ignored a malformed event from the voice API");
                }
            }
        }
        Ok(())
    }

    /// When the voice API's made-up turns next need a look (GPT-Live: a turn gone quiet).
    pub(super) fn voice_deadline(&self) -> Option<tokio::time::Instant> {
        match &self.voice {
            super::voice::Decoder::Live(d) => d.deadline(),
            super::voice::Decoder::Realtime => None,
        }
    }

    /// The voice deadline passed: handle the turns that ended. `Err`: Twilio's socket failed.
    pub(super) async fn voice_timer(
        &mut self,
        now: tokio::time::Instant,
    ) -> Result<(), axum::Error> {
        let steps = match &mut self.voice {
            super::voice::Decoder::Live(d) => d.on_timer(now),
            super::voice::Decoder::Realtime => return Ok(()),
        };
        self.steps(steps).await
    }

    /// The server ended the session (GPT-Live `session.closed`): its reason and usage go into
    /// the transcript; `expired` renews the session as the Realtime API's expiry does.
    fn upstream_closed(&mut self, reason: String, usage_seconds: Option<f64>) {
        info!(%reason, usage_seconds, "the voice API closed the session");
        if let Some(t) = self.transcript.as_mut() {
            t.upstream_close_reason = Some(reason.clone());
            if let Some(seconds) = usage_seconds {
                // Cumulative per session: sessions of one call add up.
                t.upstream_usage_seconds = Some(t.upstream_usage_seconds.unwrap_or(0.0) + seconds);
            }
        }
        if reason == "expired" {
            self.expired();
            self.session_expired = true;
        }
    }

    /// Handle one event in the bridge's vocabulary (the Realtime API's).
    async fn on_server_event(&mut self, event: ServerEvent<'_>) -> Result<(), axum::Error> {
        match event {
            ServerEvent::OutputAudioDelta { item_id, delta, .. } => {
                self.audio(&item_id, &delta).await?;
            }
            ServerEvent::SpeechStarted {
                item_id,
                audio_start_ms,
            } => {
                if let Some(t) = self.transcript.as_mut() {
                    t.begin(&item_id, Role::Caller, Utc::now());
                }
                self.caller_turn = CallerTurn::Speaking;
                let _ = self
                    .to_upstream
                    .send(ToInbound::TurnStarted { audio_start_ms })
                    .await;
                self.follow_up_at = None;
                self.caller_spoke().await;
                self.barge_in().await?;
            }
            ServerEvent::SpeechStopped { .. } => {
                self.speech_stopped_at = Some(Instant::now());
                self.caller_turn = CallerTurn::Stopped;
            }
            ServerEvent::TimeoutTriggered { .. } => self.server_idle_prompt().await,
            ServerEvent::ResponseCreated { response } => {
                self.response_active = true;
                if self.caller_turn != CallerTurn::Quiet {
                    // The turn is being answered: a later expiry is handled by a follow-up
                    // response, not by hearing the turn again.
                    let _ = self.to_upstream.send(ToInbound::TurnAnswered).await;
                }
                self.caller_turn = CallerTurn::Quiet;
                self.tools.response_created();
                if let Some(ending) = self.ending.as_mut() {
                    ending.response_created(&response.id);
                }
            }
            ServerEvent::SessionUpdated { .. } => {
                debug!("session updated");
                self.session_configured = true;
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
                if let Some(t) = self.transcript.as_mut() {
                    t.discard(&item_id);
                }
                warn!(%item_id, message = %error.message, "caller transcription failed");
            }
            ServerEvent::OutputAudioDone { .. } => self.mark_tail().await?,
            ServerEvent::ResponseDone { response } => {
                self.response_active = false;
                self.set_state(CallState::Talking);
                self.mark_tail().await?;
                debug!(id = %response.id, status = %response.status, "response done");
                if let Some(ending) = self.ending.as_mut() {
                    ending.response_done(&response.id);
                }
                self.tools_response_done().await;
            }
            ServerEvent::Error { error } if error.code.as_deref() == Some(SESSION_EXPIRED) => {
                // Not a failure: the session reached its maximum duration (see `renewal`).
                self.expired();
                self.session_expired = true;
            }
            ServerEvent::Error { error } => {
                self.ctx.app.stats.error(ErrorKind::UpstreamEvent);
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
                self.tool_call(&name, &call_id, &response_id, &arguments)
                    .await
            }
            ServerEvent::OutputItemDone {
                response_id, item, ..
            } => self.item_done(&response_id, item).await,
            // Function calls are taken from the response's output (it names the response).
            ServerEvent::ConversationItemDone { item }
                if !matches!(
                    item,
                    crate::realtime::server::OutputItem::FunctionCall { .. }
                ) =>
            {
                self.item_done("", item).await
            }
            ServerEvent::McpListToolsInProgress { item_id } => {
                self.mcp_event("mcp_list_tools.in_progress", &item_id)
            }
            ServerEvent::McpListToolsCompleted { item_id } => {
                self.mcp_event("mcp_list_tools.completed", &item_id)
            }
            ServerEvent::McpListToolsFailed { item_id } => {
                self.mcp_event("mcp_list_tools.failed", &item_id)
            }
            ServerEvent::McpCallInProgress { item_id, .. } => {
                self.mcp_event("response.mcp_call.in_progress", &item_id)
            }
            ServerEvent::McpCallCompleted { item_id, .. } => {
                self.mcp_event("response.mcp_call.completed", &item_id)
            }
            ServerEvent::McpCallFailed { item_id, .. } => {
                self.mcp_event("response.mcp_call.failed", &item_id)
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
        if !is_base64(delta) {
            self.ignored += 1;
            self.ctx.app.stats.error(ErrorKind::UpstreamEvent);
            warn!(%item_id, "dropped an audio delta that is not base64");
            return Ok(());
        }
        if self.stream_sid.is_none() || self.media_json.is_none() {
            warn!("assistant audio before Twilio's start: dropped");
            return Ok(());
        }
        let now = Instant::now();
        if self.playback.sent_ms(item_id).is_none() {
            if let Some(t) = self.transcript.as_mut() {
                t.begin(item_id, Role::Assistant, Utc::now());
            }
            self.set_state(CallState::AssistantSpeaking);
        }
        if let Some(stopped) = self.speech_stopped_at.take() {
            let latency = now - stopped;
            self.ctx.app.stats.response_latency(latency);
            self.latencies_ms.push(latency.as_millis() as u64);
        }
        if self.pacer.enabled() {
            let dropped = self.pacer.push(item_id, delta);
            if dropped > 0 {
                self.ctx.app.stats.error(ErrorKind::UpstreamEvent);
                warn!(
                    dropped_chars = dropped,
                    "more than 120 s of assistant audio waiting: dropped the oldest"
                );
            }
            return self.pump().await;
        }
        // A long delta goes to Twilio as several media messages (marks between them as usual):
        // one message of several megabytes would be both a memory spike and a stall.
        let mut rest = delta;
        while !rest.is_empty() {
            let cut = rest.len().min(MAX_MEDIA_PAYLOAD_CHARS);
            let (chunk, tail) = rest.split_at(cut);
            rest = tail;
            self.send_piece(item_id, chunk, now).await?;
        }
        self.twilio_tx.flush().await?;
        self.frames_out += 1;
        Ok(())
    }

    /// Feed one piece of assistant audio (checked base64) to Twilio with its marks; the caller
    /// flushes. Only called once Twilio's `start` has set the stream.
    async fn send_piece(
        &mut self,
        item_id: &str,
        chunk: &str,
        now: Instant,
    ) -> Result<(), axum::Error> {
        let (Some(stream_sid), Some(media_json)) = (self.stream_sid.as_deref(), &self.media_json)
        else {
            return Ok(());
        };
        let bytes = base64_decoded_len(chunk);
        self.ctx.app.stats.frame_to_twilio(bytes);
        let marks = self.playback.sent(item_id, bytes, now);
        // One flush: the marks and the audio leave in one write.
        if let Some(before) = marks.before {
            let mark = TwilioCommand::mark(stream_sid, &before).to_json();
            self.twilio_tx.feed(Message::text(mark)).await?;
        }
        let media = media_json.frame(chunk);
        if let Some(listen) = &self.listen {
            listen.assistant_sent(chunk);
        }
        self.twilio_tx.feed(Message::text(media)).await?;
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.assistant_audio(item_id, chunk);
        }
        if let Some(after) = marks.after {
            let mark = TwilioCommand::mark(stream_sid, &after).to_json();
            self.twilio_tx.feed(Message::text(mark)).await?;
        }
        Ok(())
    }

    /// Send the paced audio Twilio has room for ([`super::pacer`]), and the tail mark once the
    /// queue has gone out.
    pub(super) async fn pump(&mut self) -> Result<(), axum::Error> {
        let now = Instant::now();
        let mut sent = false;
        while let Some((item_id, piece)) = self.pacer.next(self.playback.unplayed_ms(now)) {
            if self.muted_item.as_deref() == Some(item_id.as_str()) {
                continue;
            }
            self.send_piece(&item_id, &piece, now).await?;
            self.frames_out += 1;
            sent = true;
        }
        if sent {
            self.twilio_tx.flush().await?;
        }
        if self.pacer.take_tail() {
            self.mark_tail().await?;
        }
        Ok(())
    }

    /// The relay heard the caller speak over the assistant (APIs without speech events): clear
    /// what Twilio has not played; if it has played everything (the API stopped talking on its
    /// own and the queue ran out first), the turn is still marked interrupted, with all of it heard.
    async fn caller_speech(&mut self) {
        self.caller_spoke().await;
        if self.playback.is_playing() || !self.pacer.is_empty() {
            info!("barge-in heard by the relay");
            if let Err(e) = self.barge_in().await {
                debug!(error = %e, "Twilio's socket failed during a barge-in");
            }
            return;
        }
        if !self.response_active {
            return;
        }
        if let Some((item_id, sent_ms)) = self.playback.last_sent() {
            info!(%item_id, heard_ms = sent_ms, "the caller spoke over the assistant after all its audio had played");
            let item_id = item_id.to_string();
            if let Some(t) = self.transcript.as_mut() {
                t.interrupt(&item_id, sent_ms);
            }
            self.barge_ins += 1;
            self.ctx.app.stats.barge_in();
            if let Some(sid) = &self.call_sid {
                self.ctx.app.events.barge_in(sid);
            }
            self.muted_item = Some(item_id);
        }
        let ended = match &mut self.voice {
            super::voice::Decoder::Live(d) => d.barged_in(),
            super::voice::Decoder::Realtime => Vec::new(),
        };
        if let Err(e) = self.steps(ended).await {
            debug!(error = %e, "Twilio's socket failed during a barge-in");
        }
        self.save().await;
    }

    /// Tell the barge-in detector whether assistant audio may be unplayed (it listens only then).
    pub(super) fn sync_listening(&self) {
        if let Some(listen) = &self.listen {
            listen.set_playing(self.playback.is_playing() || !self.pacer.is_empty());
        }
    }

    /// When the next paced piece may go to Twilio.
    pub(super) fn pace_deadline(&self) -> Option<tokio::time::Instant> {
        self.pacer
            .deadline(self.playback.play_end())
            .map(tokio::time::Instant::from_std)
    }

    /// The item's audio is complete (or its response ended): mark its unmarked tail so that
    /// Twilio tells us when it has all been played.
    async fn mark_tail(&mut self) -> Result<(), axum::Error> {
        if !self.pacer.tail() {
            return Ok(()); // marked once the paced audio has gone out
        }
        let (Some(stream_sid), Some(name)) =
            (self.stream_sid.as_deref(), self.playback.mark_tail())
        else {
            return Ok(());
        };
        let mark = TwilioCommand::mark(stream_sid, &name).to_json();
        self.twilio_tx.send(Message::text(mark)).await
    }

    async fn barge_in(&mut self) -> Result<(), axum::Error> {
        let waiting = self.pacer.clear();
        if waiting > 0 {
            debug!(
                pieces = waiting,
                "barge-in: dropped the assistant audio not yet sent"
            );
        }
        if !self.playback.is_playing() {
            return Ok(());
        }
        let Some(stream_sid) = self.stream_sid.clone() else {
            return Ok(());
        };
        let cuts = self.playback.barge_in(Instant::now());
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.barge_in(&cuts);
        }
        self.set_state(CallState::Talking);
        if let Some(sid) = &self.call_sid {
            self.ctx.app.events.barge_in(sid);
        }
        self.twilio_tx
            .send(Message::text(TwilioCommand::clear(&stream_sid).to_json()))
            .await?;
        self.barge_ins += 1;
        self.ctx.app.stats.barge_in();
        for cut in cuts {
            if self.stale_items.contains(&cut.item_id) {
                info!(item_id = %cut.item_id, heard_ms = cut.heard_ms, "barge-in: cleared Twilio (an earlier session's item: nothing to truncate)");
            } else {
                info!(item_id = %cut.item_id, heard_ms = cut.heard_ms, "barge-in: cleared Twilio and truncating");
                let truncate = ClientEvent::ConversationItemTruncate {
                    item_id: cut.item_id.as_str().into(),
                    content_index: 0,
                    audio_end_ms: cut.heard_ms,
                };
                self.upstream(truncate.to_json()).await;
            }
            if let Some(t) = self.transcript.as_mut() {
                t.interrupt(&cut.item_id, cut.heard_ms);
            }
            self.muted_item = Some(cut.item_id);
        }
        // An API without interruption events: its turn ends here (the rest of it is dropped).
        let ended = match &mut self.voice {
            super::voice::Decoder::Live(d) => d.barged_in(),
            super::voice::Decoder::Realtime => Vec::new(),
        };
        Box::pin(self.steps(ended)).await?;
        self.save().await;
        Ok(())
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

    /// Hand the transcript to the store's writer (never waits; see [`crate::store::Store::save_transcript`]).
    pub(super) async fn save(&self) {
        if let Some(t) = &self.transcript {
            self.ctx.app.store.save_transcript(t);
        }
    }

    /// Close Twilio's socket: Twilio then runs the TwiML after `<Connect>`.
    pub(super) async fn close_twilio(&mut self) {
        let _ = self.twilio_tx.close().await;
    }

    /// `OPENAI_CONNECT_TIMEOUT_MS`: also how long a new session may take to confirm its setup.
    pub(super) fn connect_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ctx.app.config.openai_connect_timeout_ms)
    }

    /// `OPENAI_STALL_TIMEOUT_MS`: the longest silence from the API while a response is in progress.
    pub(super) fn stall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.ctx.app.config.openai_stall_timeout_ms)
    }

    pub(super) async fn upstream(&self, json: String) {
        // The inbound task owns the upstream socket; if it is gone the call is ending anyway.
        let _ = self.to_upstream.send(ToInbound::Send(json)).await;
    }
}

/// Run the OpenAI → Twilio side for one upstream session: until the call ends (Twilio's socket
/// fails, a goodbye has played, or the call is cancelled) or the session does (then only
/// `session` is cancelled and `session_end` says why: renewal or failure, for the supervisor).
pub(super) async fn run(
    mut out: Outbound,
    mut upstream_rx: SplitStream<UpstreamSocket>,
    mut from_inbound: mpsc::Receiver<ToOutbound>,
    session: CancellationToken,
    closed: tokio::sync::oneshot::Sender<()>,
) -> (Outbound, mpsc::Receiver<ToOutbound>) {
    let ctx = out.ctx.clone();
    // One cancellation future for the whole session, not a new one per upstream frame.
    let cancelled = session.cancelled();
    tokio::pin!(cancelled);
    let mut renewal = Renewal::new(ctx.app.config.session_renew_secs);
    let mut dogs = Watchdogs::new(&out);
    // One timer for every deadline (see `clock`): reset only when the earliest one changes.
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let session_end = loop {
        if let Some(reason) = out
            .ending
            .as_ref()
            .filter(|e| e.ready(&out.playback) && out.pacer.is_empty())
            .map(Ending::reason)
        {
            if out.end_now(reason).await {
                ctx.end(reason);
                break None;
            }
        }
        if out.session_expired {
            break Some(SessionEnd::Expired {
                next: renewal.ready.take(),
            });
        }
        if out.session_configured {
            dogs.configured_by = None;
        }
        out.watch_response(&mut dogs);
        if out.idle.enabled() {
            out.idle.observe(out.quiet());
        }
        if renewal.ready.is_some() && out.quiet() {
            info!("switching to the next Realtime session at a quiet moment");
            break renewal.ready.take().map(SessionEnd::Renewed);
        }
        let deadline = out.next_deadline(&renewal, &dogs);
        if let Some(at) = deadline.filter(|at| *at != timer.deadline()) {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            // Cancellation first: a close caused by the call ending is not an upstream failure.
            biased;
            _ = &mut cancelled => break None,
            Some(msg) = from_inbound.recv() => out.on_inbound(msg).await,
            Some(done) = out.tools.results.recv() => out.tool_finished(done).await,
            frame = upstream_rx.next() => {
                dogs.last_event = tokio::time::Instant::now();
                match frame {
                    Some(Ok(tungstenite::Message::Text(text))) => {
                        if let Err(e) = out.on_event(text.as_str()).await {
                            debug!(error = %e, "Twilio socket failed while sending");
                            ctx.end(EndReason::TwilioDisconnected);
                            break None;
                        }
                    }
                    Some(Ok(tungstenite::Message::Close(frame))) => {
                        ctx.app.stats.error(ErrorKind::UpstreamSocket);
                        info!(?frame, "the Realtime API closed the session");
                        break Some(SessionEnd::Failed(EndReason::UpstreamClosed));
                    }
                    Some(Ok(tungstenite::Message::Binary(_))) => {
                        out.ignored += 1;
                        ctx.app.stats.error(ErrorKind::UpstreamEvent);
                        warn!("ignored a binary frame from the Realtime API");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        ctx.app.stats.error(ErrorKind::UpstreamSocket);
                        warn!(error = %e, "the Realtime API socket failed");
                        break Some(SessionEnd::Failed(EndReason::UpstreamError));
                    }
                    None => {
                        ctx.app.stats.error(ErrorKind::UpstreamSocket);
                        warn!("the Realtime API socket ended without a close");
                        break Some(SessionEnd::Failed(EndReason::UpstreamClosed));
                    }
                }
            }
            result = renewal.opened(), if renewal.opening() => renewal.settle(&ctx.app, result),
            () = &mut timer, if deadline.is_some() => {
                match out.on_timer(tokio::time::Instant::now(), &mut renewal, &mut dogs).await {
                    Fired::Continue => {}
                    Fired::CallEnded => break None,
                    Fired::SessionFailed(reason) => break Some(SessionEnd::Failed(reason)),
                }
            }
        }
    };
    if session_end.is_some() {
        out.session_end = session_end;
        session.cancel();
    } else if out.voice.closes_gracefully() {
        // The call is over and the inbound side asks the server to close: read its answer.
        let confirm = async {
            while let Some(Ok(frame)) = upstream_rx.next().await {
                let tungstenite::Message::Text(text) = frame else {
                    continue;
                };
                if let super::voice::Decoder::Live(d) = &mut out.voice {
                    for step in d.decode(text.as_str(), tokio::time::Instant::now()) {
                        if let Step::Closed {
                            reason,
                            usage_seconds,
                        } = step
                        {
                            out.upstream_closed(reason, usage_seconds);
                            return;
                        }
                    }
                }
            }
        };
        if tokio::time::timeout(super::voice::CLOSE_WAIT, confirm)
            .await
            .is_err()
        {
            warn!("the voice API did not confirm the session's close in time");
        }
        let _ = closed.send(());
    }
    (out, from_inbound)
}
