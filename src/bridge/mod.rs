//! One phone call: the Twilio Media Stream bridged to one Realtime API session.
//!
//! Layout: the supervisor here opens the upstream socket as soon as Twilio's socket is accepted
//! (buffering early caller audio, bounded), sends `session.update`, then runs two tasks under the
//! call's span: [`inbound`] (Twilio → OpenAI, owns the upstream writer) and [`outbound`] (OpenAI →
//! Twilio, owns Twilio's writer, playback and the transcript). They talk over bounded channels; the
//! first to finish records why the call ended and cancels the other; both close their sockets;
//! the supervisor finalizes the transcript. The active-call guard lives as long as the supervisor.

mod ending;
mod inbound;
mod outbound;
pub mod playback;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::active::CallHandle;
use crate::app::AppState;
use crate::events::CallEvent;
use crate::realtime::ClientEvent;
use crate::transcript::{EndReason, Transcript};
use crate::upstream;
use inbound::{Inbound, Step};
use outbound::Outbound;

/// Caller audio kept while the upstream socket opens: 500 frames = 10 s. Beyond that the oldest
/// frames are dropped (and counted): the caller is not hearing anyone yet anyway.
const EARLY_AUDIO_FRAMES: usize = 500;
/// Capacity of the channels between the two tasks (marks arrive ~10/s, upstream commands rarely).
const CHANNEL_CAPACITY: usize = 256;

/// SIDs and parameters from Twilio's `start`.
#[derive(Debug, Clone)]
pub(crate) struct CallInfo {
    pub call_sid: String,
    pub stream_sid: String,
    /// The TwiML `<Parameter>`s (`From`, `To`, `CallRef` for outbound calls).
    pub parameters: std::collections::BTreeMap<String, String>,
}

impl CallInfo {
    /// A `<Parameter>` value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    /// A new transcript for this call.
    pub fn transcript(&self) -> Transcript {
        Transcript::new(
            &self.call_sid,
            &self.stream_sid,
            self.param("From").map(str::to_string),
            self.param("To").map(str::to_string),
        )
    }
}

/// From the inbound task to the outbound task.
pub(crate) enum ToOutbound {
    Started(CallInfo),
    /// Twilio echoed a mark; `at` is when the echo arrived.
    MarkEchoed {
        name: String,
        at: Instant,
    },
}

/// What both tasks of a call share.
#[derive(Clone)]
pub(crate) struct CallCtx {
    app: AppState,
    handle: CallHandle,
}

impl CallCtx {
    /// Record why the call ended (the first reason wins) and stop the other task.
    fn end(&self, reason: EndReason) {
        self.handle.end(reason);
    }

    fn cancel(&self) -> &CancellationToken {
        self.handle.token()
    }
}

/// Serve one `/media-stream` WebSocket until the call ends. Never panics on input; logs one summary.
pub async fn run_call(socket: WebSocket, app: AppState) {
    let _active = app.stats.call_started();
    let span = info_span!("call", call_sid = field::Empty, stream_sid = field::Empty);
    supervise(socket, app).instrument(span).await;
}

async fn supervise(socket: WebSocket, app: AppState) {
    let started = Instant::now();
    let (mut twilio_tx, mut twilio_rx) = socket.split();
    let (to_outbound, from_inbound) = mpsc::channel(CHANNEL_CAPACITY);
    let mut inbound = Inbound::new(app.stats.clone(), to_outbound);
    let ctx = CallCtx {
        app: app.clone(),
        handle: CallHandle::new(&app.shutdown),
    };

    // Phase 1: open the upstream socket while Twilio says `connected` and `start`.
    let mut early: VecDeque<String> = VecDeque::new();
    let connect = upstream::connect(&app.config);
    tokio::pin!(connect);
    let connected = loop {
        tokio::select! {
            result = &mut connect => break Some(result),
            _ = ctx.cancel().cancelled() => { ctx.end(EndReason::ServerShutdown); break None }
            msg = twilio_rx.next() => {
                let step = match msg {
                    Some(Ok(msg)) => inbound.on_message(msg),
                    _ => Step::Closed,
                };
                match step {
                    Step::Append(json) => {
                        if early.len() == EARLY_AUDIO_FRAMES {
                            early.pop_front();
                            inbound.frames_dropped += 1;
                            app.stats.frame_dropped();
                        }
                        early.push_back(json);
                    }
                    Step::Continue => {}
                    Step::Stop => { ctx.end(EndReason::CallerHungUp); break None }
                    Step::Closed => { ctx.end(EndReason::TwilioDisconnected); break None }
                }
            }
        }
    };

    let mut transcript = None;
    let (mut frames_out, mut barge_ins, mut out_ignored) = (0, 0, 0);
    let mut latencies_ms: Vec<u64> = Vec::new();
    match connected {
        None => close_within_a_second(twilio_tx.close()).await,
        Some(Err(e)) => {
            app.stats.error(crate::stats::ErrorKind::UpstreamConnect);
            // Twilio's `start` follows the upgrade at once: wait for it briefly so the failure
            // is logged under the call's SID and leaves a transcript saying what happened.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while inbound.call.is_none() {
                    match twilio_rx.next().await {
                        Some(Ok(msg)) => {
                            inbound.on_message(msg);
                        }
                        _ => break,
                    }
                }
            })
            .await;
            error!(error = %e, "could not open the Realtime API session; closing the stream so Twilio plays the fallback");
            ctx.end(EndReason::UpstreamError);
            close_within_a_second(twilio_tx.close()).await;
        }
        Some(Ok((socket, took))) => {
            app.stats.upstream_connected(took);
            info!(
                connect_ms = took.as_millis() as u64,
                "Realtime API connected"
            );
            let (mut upstream_tx, upstream_rx) = socket.split();
            let session = ClientEvent::SessionUpdate {
                session: Box::new(app.config.session()),
            };
            let mut setup = vec![session.to_json()];
            setup.extend(early.drain(..));
            let mut sent = Ok(());
            for json in setup {
                sent = upstream_tx
                    .feed(tokio_tungstenite::tungstenite::Message::text(json))
                    .await;
                if sent.is_err() {
                    break;
                }
            }
            if sent.is_ok() {
                sent = upstream_tx.flush().await;
            }
            if let Err(e) = sent {
                app.stats.error(crate::stats::ErrorKind::UpstreamConnect);
                error!(error = %e, "could not configure the Realtime session; closing the stream");
                ctx.end(EndReason::UpstreamError);
                close_within_a_second(twilio_tx.close()).await;
            } else {
                let (to_upstream, from_outbound) = mpsc::channel(CHANNEL_CAPACITY);
                let span = tracing::Span::current();
                let inbound_task = app.calls.spawn(
                    inbound::run(inbound, twilio_rx, upstream_tx, from_outbound, ctx.clone())
                        .instrument(span.clone()),
                );
                let out = Outbound::new(ctx.clone(), twilio_tx, to_upstream);
                let outbound_task = app
                    .calls
                    .spawn(outbound::run(out, upstream_rx, from_inbound).instrument(span));
                let (inbound_done, outbound_done) = tokio::join!(inbound_task, outbound_task);
                match outbound_done {
                    Ok(out) => {
                        transcript = out.transcript;
                        (frames_out, barge_ins) = (out.frames_out, out.barge_ins);
                        latencies_ms = out.latencies_ms;
                        out_ignored = out.ignored;
                    }
                    Err(e) => error!(error = %e, "outbound task failed"),
                }
                match inbound_done {
                    Ok(done) => inbound = done,
                    Err(e) => {
                        error!(error = %e, "inbound task failed");
                        ctx.end(EndReason::ServerShutdown);
                        return;
                    }
                }
            }
        }
    }

    let reason = ctx.handle.reason().unwrap_or(EndReason::ServerShutdown);
    if let Some(call) = &inbound.call {
        app.active.remove(&call.call_sid);
        app.records
            .update_existing(&call.call_sid, |r| r.end("completed", Some(reason)))
            .await;
    }
    let transcript = transcript.or_else(|| inbound.call.as_ref().map(CallInfo::transcript));
    if let Some(mut t) = transcript {
        t.finish(reason);
        app.events.publish(
            &t.call_sid,
            CallEvent::Ended {
                end_reason: reason,
                at: chrono::Utc::now(),
            },
        );
        match t.save(&app.config.transcript_dir).await {
            Ok(path) => info!(path = %path.display(), turns = t.turns.len(), "transcript saved"),
            Err(e) => {
                app.stats.error(crate::stats::ErrorKind::Storage);
                warn!(error = format!("{e:#}"), "could not write the transcript");
            }
        }
    }
    latencies_ms.sort_unstable();
    let latency_p50_ms = latencies_ms.get(latencies_ms.len() / 2).copied();
    let latency_max_ms = latencies_ms.last().copied();
    info!(
        end_reason = ?reason,
        response_latency_p50_ms = ?latency_p50_ms,
        response_latency_max_ms = ?latency_max_ms,
        duration_ms = started.elapsed().as_millis() as u64,
        frames_in = inbound.frames_in,
        frames_dropped = inbound.frames_dropped,
        frames_out,
        barge_ins,
        ignored_messages = inbound.ignored + out_ignored,
        "call ended"
    );
}

/// Close a socket, but never let a dead peer hold the call open for more than a second.
async fn close_within_a_second<F: std::future::Future>(close: F) {
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}
