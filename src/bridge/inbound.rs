//! Twilio → OpenAI: classify each Twilio message and forward caller audio upstream.
//!
//! `media` payloads go out as `input_audio_buffer.append` with the base64 text untouched
//! (`PROTOCOLS.md` § "Twilio Media Streams" and § "OpenAI Realtime"). `mark` echoes and `start` go to
//! the outbound task, which owns playback and the transcript. Malformed and unknown messages are
//! logged (the first few per call, then summarized) and counted; they never end the call.
//!
//! Backpressure: caller audio waits in a bounded queue while the upstream socket is busy; when
//! the queue is full the oldest frame is dropped (and counted) so a slow upstream costs a little
//! audio, not memory or ever-growing latency. Messages from the outbound task are never dropped.
//!
//! Liveness: `start` must arrive within `STREAM_START_TIMEOUT_SECS` of the upgrade, and a started
//! stream with no message for `STREAM_IDLE_TIMEOUT_SECS` is dead (Twilio sends a frame every
//! 20 ms): either ends the call as `twilio_timeout`, counted. One timer per call checks it, re-armed
//! only when it fires, so a frame costs one clock read.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::replay::{Frame, Replay};
use super::ToInbound;
use super::{CallCtx, CallInfo, ToOutbound};
use crate::app::AppState;
use crate::recording::{CallRecording, Side};
use crate::stats::ErrorKind;
use crate::transcript::EndReason;
use crate::twilio::media::{base64_decoded_len, is_base64, FrameProbe, TwilioEvent};
use crate::twilio::{self, stream_token};
use crate::upstream::UpstreamSocket;

/// Ignored messages logged in full per call; the rest are counted and summarized at the end.
const LOGGED_IGNORES: u64 = 5;
/// Caller frames waiting for the upstream socket before the oldest is dropped: 1 s of audio.
pub(super) const UPSTREAM_QUEUE_FRAMES: usize = 50;

/// What to do after one Twilio message.
pub(super) enum Step {
    /// Send this `input_audio_buffer.append` upstream.
    Append(Frame),
    Continue,
    /// Twilio sent `stop`.
    Stop,
    /// Twilio closed the socket.
    Closed,
    /// The stream's `start` was refused: close the socket.
    Refused,
}

/// At most this much of a refused SID goes into the log, characters.
fn truncated(sid: &str) -> String {
    sid.chars().take(40).collect()
}

/// Per-call state of the Twilio side.
pub(super) struct Inbound {
    app: AppState,
    /// `start` must arrive by then.
    start_by: Instant,
    /// When the last message from Twilio arrived.
    last_seen: Instant,
    /// `STREAM_IDLE_TIMEOUT_SECS`.
    idle_after: Duration,
    to_outbound: mpsc::Sender<ToOutbound>,
    /// Set from `start`.
    pub call: Option<CallInfo>,
    /// Media frames received from Twilio.
    pub frames_in: u64,
    /// Caller frames dropped because the upstream socket could not keep up.
    pub frames_dropped: u64,
    /// Messages ignored as malformed, unknown or binary.
    pub ignored: u64,
    /// What the current session has been sent, for a replay after an expiry mid-turn.
    pub replay: Replay,
    /// The caller's track of the call's recording (`RECORDING=on`).
    pub recorder: Option<Side>,
    /// The upstream-bound half of the voice session: frames in the configured API's format.
    pub voice: super::voice::Encoder,
    /// Listening for the caller over the assistant, on APIs without speech events.
    pub listen: Option<super::listen::Listen>,
}

impl Inbound {
    /// For a stream upgraded now.
    pub fn new(app: &AppState, to_outbound: mpsc::Sender<ToOutbound>) -> Self {
        let now = Instant::now();
        let config = &app.config;
        Inbound {
            app: app.clone(),
            start_by: now + Duration::from_secs(config.stream_start_timeout_secs),
            last_seen: now,
            idle_after: Duration::from_secs(config.stream_idle_timeout_secs),
            to_outbound,
            call: None,
            frames_in: 0,
            frames_dropped: 0,
            ignored: 0,
            replay: Replay::default(),
            recorder: None,
            voice: super::voice::Encoder::new(config),
            listen: None,
        }
    }

    /// When the stream is dead if nothing changes: no `start` by `start_by`, or no message for
    /// `idle_after` since the last one.
    pub fn deadline(&self) -> Instant {
        match self.call {
            None => self.start_by,
            Some(_) => self.last_seen + self.idle_after,
        }
    }

    /// The stream missed its deadline: count it and say why.
    pub fn timed_out(&mut self) -> EndReason {
        self.app.stats.error(ErrorKind::TwilioTimeout);
        if self.call.is_none() {
            warn!("no start from Twilio in time: closing the stream");
        } else {
            warn!(
                idle_s = self.idle_after.as_secs(),
                "no message from Twilio for STREAM_IDLE_TIMEOUT_SECS: the stream is dead"
            );
        }
        EndReason::TwilioTimeout
    }

    /// Classify one message from Twilio.
    pub async fn on_message(&mut self, msg: Message) -> Step {
        self.last_seen = Instant::now();
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(bytes) => {
                self.bad_message(&format!(
                    "binary frame of {} bytes (Twilio sends JSON text)",
                    bytes.len()
                ));
                return Step::Continue;
            }
            Message::Close(_) => return Step::Closed,
            Message::Ping(_) | Message::Pong(_) => return Step::Continue,
        };
        // serde would also read a JSON array as a tagged enum; Twilio only sends objects.
        if !text.as_str().trim_start().starts_with('{') {
            self.bad_message("not a JSON object");
            return Step::Continue;
        }
        // The per-frame path: one flat parse, the payload borrowed, one string built.
        if let Ok(FrameProbe {
            event,
            stream_sid,
            media: Some(media),
        }) = serde_json::from_str::<FrameProbe>(text.as_str())
        {
            if event == "media" {
                let Some(call) = &self.call else {
                    self.bad_message("media before start");
                    return Step::Continue;
                };
                if !is_base64(&media.payload) {
                    self.bad_message("media payload is not base64");
                    return Step::Continue;
                }
                match stream_sid {
                    Some(sid) if sid != call.stream_sid => {
                        self.bad_message("media for another streamSid");
                        return Step::Continue;
                    }
                    // Malformed but unambiguous (one stream per socket): count it, keep the audio.
                    None => self.bad_message("media without streamSid (relayed)"),
                    Some(_) => {}
                }
                self.frames_in += 1;
                if let Some(recorder) = self.recorder.as_mut() {
                    recorder.caller_frame(media.timestamp.as_deref(), &media.payload);
                }
                if let Some(onset) = self
                    .listen
                    .as_ref()
                    .and_then(|l| l.caller_frame(&media.payload))
                {
                    info!(
                        audio_ms_since_onset = onset.audio_ms_since_onset,
                        caller_peak_dbov = onset.caller_peak_dbov,
                        assistant_peak_dbov = onset.assistant_peak_dbov,
                        "the caller is speaking over the assistant"
                    );
                    if self.to_outbound.try_send(ToOutbound::CallerSpeech).is_err() {
                        warn!("a barge-in was not delivered: the outbound side is busy or gone");
                    }
                }
                self.app.stats.frame_to_openai(media.payload.len());
                trace!(bytes = media.payload.len(), "caller audio");
                let bytes = base64_decoded_len(&media.payload);
                return Step::Append(Frame::new(self.voice.append_json(&media.payload), bytes));
            }
        }
        let event = match serde_json::from_str::<TwilioEvent>(text.as_str()) {
            Ok(event) => event,
            Err(e) => {
                self.bad_message(&format!("malformed message: {e}"));
                return Step::Continue;
            }
        };
        match event {
            TwilioEvent::Media { .. } => {
                // Only reached when the probe could not read it: a shape we cannot relay.
                self.bad_message("media frame without a usable payload");
                Step::Continue
            }
            TwilioEvent::Mark { mark, .. } => {
                let echo = ToOutbound::MarkEchoed {
                    name: mark.name.into_owned(),
                    at: Instant::now(),
                };
                if self.to_outbound.try_send(echo).is_err() {
                    debug!("mark echo not delivered: the outbound side is busy or gone");
                }
                Step::Continue
            }
            TwilioEvent::Start { .. } if self.call.is_some() => {
                self.bad_message("a second start on the same stream (ignored)");
                Step::Continue
            }
            TwilioEvent::Start {
                stream_sid, start, ..
            } => {
                let stream_sid = stream_sid.map_or(start.stream_sid, Cow::into_owned);
                let info = CallInfo {
                    call_sid: start.call_sid,
                    stream_sid,
                    parameters: start.custom_parameters,
                    recording: None,
                };
                if let Err((kind, reason)) = self.admit(&info).await {
                    self.app.stats.error(kind);
                    warn!(
                        call_sid = truncated(&info.call_sid),
                        stream_sid = truncated(&info.stream_sid),
                        reason,
                        "refused the stream's start; closing it"
                    );
                    return Step::Refused;
                }
                let span = tracing::Span::current();
                span.record("call_sid", info.call_sid.as_str());
                span.record("stream_sid", info.stream_sid.as_str());
                info!(
                    from = info.param("From").unwrap_or("-"),
                    to = info.param("To").unwrap_or("-"),
                    tracks = start.tracks.join(","),
                    "stream started"
                );
                let mut info = info;
                info.recording =
                    CallRecording::start(&self.app.config, &self.app.stats, &info.call_sid);
                self.recorder = info.recording.as_ref().map(CallRecording::caller);
                self.call = Some(info.clone());
                if self
                    .to_outbound
                    .try_send(ToOutbound::Started(info))
                    .is_err()
                {
                    warn!("could not hand the stream start to the outbound side");
                }
                Step::Continue
            }
            TwilioEvent::Dtmf { dtmf, .. } => {
                debug!(digit = %dtmf.digit, "caller pressed a key");
                let key = ToOutbound::Dtmf {
                    digit: dtmf.digit.into_owned(),
                };
                if self.to_outbound.try_send(key).is_err() {
                    warn!("a key press was not delivered: the outbound side is busy or gone");
                }
                Step::Continue
            }
            TwilioEvent::Stop { .. } => {
                info!("Twilio sent stop");
                Step::Stop
            }
            TwilioEvent::Connected { .. } => {
                debug!("Twilio connected");
                Step::Continue
            }
            TwilioEvent::Unknown => {
                self.bad_message("unknown event type");
                Step::Continue
            }
        }
    }

    /// Whether a `start` may open this call: SIDs in Twilio's formats, a call that is neither
    /// live on another stream nor already over (its record and transcript are never
    /// overwritten), and with signatures on, a valid unused stream token for this call.
    async fn admit(&self, info: &CallInfo) -> Result<(), (ErrorKind, String)> {
        let malformed = |what: &str| (ErrorKind::TwilioMessage, what.to_string());
        if !twilio::is_call_sid(&info.call_sid) {
            return Err(malformed("the CallSid is not CA + 32 hex digits"));
        }
        if !twilio::is_stream_sid(&info.stream_sid) {
            return Err(malformed("the streamSid is not MZ + 32 hex digits"));
        }
        let app = &self.app;
        if app.active.get(&info.call_sid).is_some() {
            return Err(malformed("another stream is live for this CallSid"));
        }
        match app.store.get(&info.call_sid).await {
            Ok(Some(r)) if r.is_ended() => {
                return Err(malformed("this call has already ended"));
            }
            Ok(_) => {}
            // Unknown whether it ended: let the call in rather than drop a live caller.
            Err(e) => app.store.failed("checking the call's record", &e),
        }
        let Some(key) = app.config.signing_key() else {
            return Ok(());
        };
        let now = chrono::Utc::now().timestamp();
        let token = info.param(stream_token::PARAMETER);
        let subject = stream_token::subject(&info.call_sid, info.param("CallRef"));
        stream_token::verify(key.expose(), &subject, token, now)
            .and_then(|expires| {
                app.stream_tokens
                    .use_once(token.unwrap_or_default(), expires, now)
            })
            .map_err(|e| (ErrorKind::Signature, e.to_string()))
    }

    /// Count a bad message; log the first few of each call in full, then only the total at the end.
    fn bad_message(&mut self, reason: &str) {
        self.ignored += 1;
        self.app.stats.error(crate::stats::ErrorKind::TwilioMessage);
        if self.ignored <= LOGGED_IGNORES {
            warn!(reason, "bad Twilio message");
        } else if self.ignored == LOGGED_IGNORES + 1 {
            warn!("more bad Twilio messages; the total is logged when the call ends");
        }
    }

    /// Twilio's socket failed: a message over the size limit is counted as a bad message.
    pub fn socket_failed(&mut self, error: axum::Error) {
        let oversized = error
            .into_inner()
            .downcast_ref::<tungstenite::Error>()
            .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)));
        if oversized {
            self.bad_message("message over 64 KiB; Twilio's socket is closed");
        } else {
            debug!("Twilio's socket failed");
        }
    }

    /// Queue caller audio for upstream, dropping the oldest frame when the queue is full.
    pub fn enqueue(&mut self, queue: &mut VecDeque<Frame>, frame: Frame) {
        if queue.len() >= UPSTREAM_QUEUE_FRAMES {
            queue.pop_front();
            self.frames_dropped += 1;
            self.app.stats.frame_dropped();
            if self.frames_dropped == 1 {
                warn!("the Realtime API is not keeping up: dropping the oldest caller audio");
            }
        }
        queue.push_back(frame);
    }
}

/// What woke the inbound loop.
enum Wake {
    Twilio(Option<Result<Message, axum::Error>>),
    Control(Option<ToInbound>),
    Cancelled,
    WriteFailed(tungstenite::Error),
    TimedOut,
}

/// Run the Twilio → OpenAI side for one upstream session: until Twilio stops or fails (the call
/// ends), the upstream socket fails (only `session` is cancelled, so the supervisor can
/// reconnect), or `session` is cancelled. Also sends the upstream writes the outbound task asks
/// for. Closes the upstream socket on exit and hands back the Twilio reader and the caller audio
/// not yet sent (the next session gets it).
pub(super) async fn run(
    mut inbound: Inbound,
    mut twilio_rx: SplitStream<WebSocket>,
    mut upstream_tx: SplitSink<UpstreamSocket, tungstenite::Message>,
    mut from_outbound: mpsc::Receiver<ToInbound>,
    ctx: CallCtx,
    session: CancellationToken,
    closed: tokio::sync::oneshot::Receiver<()>,
) -> (Inbound, SplitStream<WebSocket>, VecDeque<Frame>) {
    let mut audio: VecDeque<Frame> = VecDeque::with_capacity(UPSTREAM_QUEUE_FRAMES);
    let mut control: VecDeque<String> = VecDeque::new();
    let mut unflushed = false;
    let mut control_open = true;
    let cancelled = session.cancelled();
    tokio::pin!(cancelled);
    let timer = tokio::time::sleep_until(inbound.deadline().into());
    tokio::pin!(timer);
    let reason = loop {
        // One poll drives everything: write what the socket takes (control first), flush, then
        // read the next message from either side. Reading never waits for writing.
        let wake = poll_fn(|cx| {
            if cancelled.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Cancelled);
            }
            while timer.as_mut().poll(cx).is_ready() {
                let deadline = inbound.deadline();
                if deadline <= Instant::now() {
                    return Poll::Ready(Wake::TimedOut);
                }
                timer.as_mut().reset(deadline.into());
            }
            while !control.is_empty() || !audio.is_empty() {
                match upstream_tx.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        let message = match control.pop_front() {
                            Some(json) => tungstenite::Message::text(json),
                            None => {
                                let frame = audio.pop_front().expect("one queue is non-empty");
                                inbound.replay.sent(&frame);
                                tungstenite::Message::Text(frame.json)
                            }
                        };
                        if let Err(e) = upstream_tx.start_send_unpin(message) {
                            return Poll::Ready(Wake::WriteFailed(e));
                        }
                        unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::WriteFailed(e)),
                    Poll::Pending => break,
                }
            }
            if unflushed {
                match upstream_tx.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Wake::WriteFailed(e)),
                    Poll::Pending => {}
                }
            }
            if control_open {
                if let Poll::Ready(msg) = from_outbound.poll_recv(cx) {
                    return Poll::Ready(Wake::Control(msg));
                }
            }
            if let Poll::Ready(msg) = twilio_rx.poll_next_unpin(cx) {
                return Poll::Ready(Wake::Twilio(msg));
            }
            Poll::Pending
        })
        .await;
        match wake {
            Wake::Cancelled => break None,
            Wake::TimedOut => break Some(inbound.timed_out()),
            Wake::WriteFailed(e) => {
                warn!(error = %e, "could not write to the Realtime API");
                session.cancel();
                break None;
            }
            Wake::Control(Some(ToInbound::Send(json))) => {
                control.extend(inbound.voice.encode(json));
            }
            Wake::Control(Some(ToInbound::TurnStarted { audio_start_ms })) => {
                inbound.replay.turn_started(audio_start_ms)
            }
            Wake::Control(Some(ToInbound::TurnAnswered)) => inbound.replay.turn_answered(),
            Wake::Control(None) => control_open = false,
            Wake::Twilio(msg) => {
                let step = match msg {
                    Some(Ok(msg)) => inbound.on_message(msg).await,
                    Some(Err(e)) => {
                        inbound.socket_failed(e);
                        Step::Closed
                    }
                    None => Step::Closed,
                };
                match step {
                    Step::Append(frame) => inbound.enqueue(&mut audio, frame),
                    Step::Continue => {}
                    Step::Stop => break Some(EndReason::CallerHungUp),
                    Step::Closed => break Some(EndReason::TwilioDisconnected),
                    Step::Refused => break Some(EndReason::StreamRefused),
                }
            }
        }
    };
    if let Some(reason) = reason {
        ctx.end(reason);
    }
    // Deliver what is already queued (e.g. a truncate) before closing, but never wait long.
    super::close_within_a_second(async {
        for json in control.drain(..) {
            let _ = upstream_tx.feed(tungstenite::Message::text(json)).await;
        }
        // What the outbound side still had queued for this session (e.g. a turn notice).
        while let Ok(msg) = from_outbound.try_recv() {
            if let ToInbound::Send(json) = msg {
                for frame in inbound.voice.encode(json) {
                    let _ = upstream_tx.feed(tungstenite::Message::text(frame)).await;
                }
            }
        }
        let _ = upstream_tx.flush().await;
    })
    .await;
    // The call is over: an API that closes gracefully is asked to, and the outbound side reads
    // its answer (`session.closed`, with the reason and usage for the transcript) for at most
    // `CLOSE_WAIT` before the socket is closed.
    let call_over = ctx.handle.reason().is_some() || ctx.cancel().is_cancelled();
    if let (true, Some(close)) = (call_over, inbound.voice.close_request()) {
        if upstream_tx
            .send(tungstenite::Message::text(close))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(super::voice::CLOSE_WAIT, closed).await;
        }
    }
    super::close_within_a_second(upstream_tx.close()).await;
    (inbound, twilio_rx, audio)
}
