//! Twilio → OpenAI: classify each Twilio message and forward caller audio upstream.
//!
//! `media` payloads go out as `input_audio_buffer.append` with the base64 text untouched
//! (`PROTOCOLS.md` § "Twilio Media Streams" and § "OpenAI Realtime"). `mark` echoes and `start` go to
//! the outbound task, which owns playback and the transcript. Malformed and unknown messages are
//! logged (the first few per call, then summarized) and counted; they never end the call.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::ws::{Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tracing::{debug, info, trace, warn};

use super::{CallCtx, CallInfo, ToOutbound};
use crate::realtime::ClientEvent;
use crate::stats::Stats;
use crate::transcript::EndReason;
use crate::twilio::media::TwilioEvent;
use crate::upstream::UpstreamSocket;

/// Ignored messages logged in full per call; the rest are counted and summarized at the end.
const LOGGED_IGNORES: u64 = 5;

/// What to do after one Twilio message.
pub(super) enum Step {
    /// Send this `input_audio_buffer.append` JSON upstream.
    Append(String),
    Continue,
    /// Twilio sent `stop`.
    Stop,
    /// Twilio closed the socket.
    Closed,
}

/// Per-call state of the Twilio side.
pub(super) struct Inbound {
    stats: Stats,
    to_outbound: mpsc::Sender<ToOutbound>,
    /// Set from `start`.
    pub call: Option<CallInfo>,
    /// Media frames forwarded (or buffered) upstream.
    pub frames_in: u64,
    /// Messages ignored as malformed, unknown or binary.
    pub ignored: u64,
}

impl Inbound {
    pub fn new(stats: Stats, to_outbound: mpsc::Sender<ToOutbound>) -> Self {
        Inbound {
            stats,
            to_outbound,
            call: None,
            frames_in: 0,
            ignored: 0,
        }
    }

    /// Classify one message from Twilio.
    pub async fn on_message(&mut self, msg: Message) -> Step {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(bytes) => {
                self.ignore(&format!(
                    "binary frame of {} bytes (Twilio sends JSON text)",
                    bytes.len()
                ));
                return Step::Continue;
            }
            Message::Close(_) => return Step::Closed,
            Message::Ping(_) | Message::Pong(_) => return Step::Continue,
        };
        let event = match serde_json::from_str::<TwilioEvent>(text.as_str()) {
            Ok(event) => event,
            Err(e) => {
                self.ignore(&format!("malformed message: {e}"));
                return Step::Continue;
            }
        };
        match event {
            TwilioEvent::Media { media, .. } => {
                self.frames_in += 1;
                trace!(bytes = media.payload.len(), "caller audio");
                let append = ClientEvent::InputAudioBufferAppend {
                    audio: media.payload,
                };
                Step::Append(append.to_json())
            }
            TwilioEvent::Mark { mark, .. } => {
                let echo = ToOutbound::MarkEchoed {
                    name: mark.name.into_owned(),
                    at: Instant::now(),
                };
                let _ = self.to_outbound.send(echo).await;
                Step::Continue
            }
            TwilioEvent::Start {
                stream_sid, start, ..
            } => {
                let stream_sid = stream_sid.map_or(start.stream_sid, Cow::into_owned);
                let span = tracing::Span::current();
                span.record("call_sid", start.call_sid.as_str());
                span.record("stream_sid", stream_sid.as_str());
                let info = CallInfo {
                    call_sid: start.call_sid,
                    stream_sid,
                    from: start.custom_parameters.get("From").cloned(),
                    to: start.custom_parameters.get("To").cloned(),
                };
                info!(from = ?info.from, to = ?info.to, tracks = ?start.tracks, "stream started");
                self.call = Some(info.clone());
                let _ = self.to_outbound.send(ToOutbound::Started(info)).await;
                Step::Continue
            }
            TwilioEvent::Dtmf { dtmf, .. } => {
                info!(digit = %dtmf.digit, "caller pressed a key");
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
                self.ignore("unknown event type");
                Step::Continue
            }
        }
    }

    fn ignore(&mut self, reason: &str) {
        self.ignored += 1;
        self.stats.error();
        if self.ignored <= LOGGED_IGNORES {
            warn!(reason, "ignored a Twilio message");
        } else if self.ignored == LOGGED_IGNORES + 1 {
            warn!("more Twilio messages ignored; the total is logged when the call ends");
        }
    }
}

/// Run the Twilio → OpenAI side until Twilio stops, either socket fails, or `ctx` is cancelled.
/// Also sends the upstream writes the outbound task asks for. Closes the upstream socket on exit.
pub(super) async fn run(
    mut inbound: Inbound,
    mut twilio_rx: SplitStream<WebSocket>,
    mut upstream_tx: SplitSink<UpstreamSocket, tungstenite::Message>,
    mut from_outbound: mpsc::Receiver<String>,
    ctx: CallCtx,
) -> Inbound {
    let reason = loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break None,
            msg = twilio_rx.next() => {
                let step = match msg {
                    Some(Ok(msg)) => inbound.on_message(msg).await,
                    Some(Err(e)) => {
                        debug!(error = %e, "Twilio socket error");
                        Step::Closed
                    }
                    None => Step::Closed,
                };
                match step {
                    Step::Append(json) => {
                        if let Err(e) = upstream_tx.send(tungstenite::Message::text(json)).await {
                            warn!(error = %e, "could not send caller audio upstream");
                            break Some(EndReason::UpstreamError);
                        }
                    }
                    Step::Continue => {}
                    Step::Stop => break Some(EndReason::CallerHungUp),
                    Step::Closed => break Some(EndReason::TwilioDisconnected),
                }
            }
            Some(json) = from_outbound.recv() => {
                if let Err(e) = upstream_tx.send(tungstenite::Message::text(json)).await {
                    warn!(error = %e, "could not send to the Realtime API");
                    break Some(EndReason::UpstreamError);
                }
            }
        }
    };
    if let Some(reason) = reason {
        ctx.end(reason);
    }
    super::close_within_a_second(upstream_tx.close()).await;
    inbound
}
