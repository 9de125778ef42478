//! One phone call: the Twilio Media Stream bridged to one Realtime API session.
//!
//! Layout: the supervisor here opens the upstream socket as soon as Twilio's socket is accepted
//! (buffering early caller audio, bounded), sends `session.update`, then runs two tasks under the
//! call's span: `inbound` (Twilio → OpenAI, owns the upstream writer) and `outbound` (OpenAI →
//! Twilio, owns Twilio's writer, playback and the transcript). They talk over bounded channels.
//! [`playback`] tracks what the caller has heard (marks, barge-in cuts), `session` sets the
//! Realtime session up (`start`, `session.update`, greeting, resume), `ending` carries out the
//! assistant's `end_call`, `tools` its other tool calls (`transfer_call`, webhooks), `keypad` the
//! caller's DTMF keys and `mcp` the API's own MCP calls. The tasks speak the Realtime API's
//! events; `voice` translates them for the configured API (`OPENAI_API`: the Realtime API as is,
//! GPT-Live through made-up turns). On an API without speech events `listen` hears the caller
//! barge in (a detector shared by both tasks) and `pacer` keeps at most `PLAYBACK_AHEAD_MS` of
//! assistant audio unplayed at Twilio.
//! When the call ends (Twilio stops or drops, a goodbye has played, the API hangs up, shutdown)
//! the first reason is recorded and both tasks stop. When only the upstream session ends, they
//! hand their state back (with the caller audio not yet sent) and the supervisor opens the next
//! session, seeding it with the conversation so far: as often as the call needs when the session
//! reached its maximum duration (`renewal`), once per call when it failed. At the end the
//! supervisor closes Twilio's socket and finalizes the record, the transcript and the event feed.
//! The active-call guard lives as long as the supervisor.

mod clock;
mod ending;
mod idle;
mod inbound;
mod keypad;
mod listen;
mod mcp;
mod outbound;
mod pacer;
pub mod playback;
mod renewal;
mod replay;
mod session;
mod tools;
mod voice;

pub use session::{call_session, transcribes_caller};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite;
use tokio_util::sync::CancellationToken;
use tracing::{error, field, info, info_span, warn, Instrument};

use crate::active::CallHandle;
use crate::app::AppState;
use crate::events::CallEvent;
use crate::records::CallRecord;
use crate::stats::ErrorKind;
use crate::transcript::{EndReason, Transcript};
use crate::upstream::{self, UpstreamSocket};
use inbound::{Inbound, Step};
use outbound::Outbound;
use renewal::{FollowUp, SessionEnd};
use replay::{Frame, Replay};

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
    /// The call's recording, when `RECORDING=on` (each task writes its own track).
    pub recording: Option<crate::recording::CallRecording>,
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

/// From the outbound task to the inbound task, which owns the upstream socket.
pub(crate) enum ToInbound {
    /// Send this client event upstream.
    Send(String),
    /// The server heard the caller start a turn at `audio_start_ms` (its audio clock).
    TurnStarted { audio_start_ms: u64 },
    /// The caller's turn has been answered.
    TurnAnswered,
}

/// From the inbound task to the outbound task.
pub(crate) enum ToOutbound {
    Started(CallInfo),
    /// Twilio echoed a mark; `at` is when the echo arrived.
    MarkEchoed {
        name: String,
        at: Instant,
    },
    /// The caller pressed a key (Twilio `dtmf`).
    Dtmf {
        digit: String,
    },
    /// The caller started speaking over the assistant, heard by the relay ([`listen`]) on an API
    /// that reports no speech.
    CallerSpeech,
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
/// `slot` is the call's reservation ([`crate::routes::admit_call`]), given back when it ends.
pub async fn run_call(socket: WebSocket, app: AppState, slot: crate::stats::ActiveCall) {
    let _slot = slot;
    let span = info_span!("call", call_sid = field::Empty, stream_sid = field::Empty);
    supervise(socket, app).instrument(span).await;
}

/// One call's two sides between upstream sessions: the Twilio reader with its state, and the
/// outbound state that owns Twilio's writer, playback and the transcript.
struct Sides {
    inbound: Inbound,
    twilio_rx: SplitStream<WebSocket>,
    out: Outbound,
    from_inbound: mpsc::Receiver<ToOutbound>,
    /// Caller audio read but not yet sent when the last session ended.
    unsent: VecDeque<Frame>,
}

/// How many upstream sessions a call has had, and why each one after the first was opened.
#[derive(Debug, Default)]
struct Sessions {
    /// Sessions that started serving.
    opened: u32,
    /// Real failures (drops, refused connects): one reconnect per call.
    failures: u32,
    /// Reconnects after a failure.
    reconnects: u32,
    /// Sessions replaced at their maximum duration (not failures).
    renewals: u32,
}

async fn supervise(socket: WebSocket, app: AppState) {
    let started = Instant::now();
    let (twilio_tx, twilio_rx) = socket.split();
    let (to_outbound, from_inbound) = mpsc::channel(CHANNEL_CAPACITY);
    let ctx = CallCtx {
        app: app.clone(),
        handle: CallHandle::new(&app.shutdown),
    };
    let mut sides = Sides {
        inbound: Inbound::new(&app, to_outbound),
        twilio_rx,
        out: Outbound::new(ctx.clone(), twilio_tx),
        from_inbound,
        unsent: VecDeque::new(),
    };
    if sides.out.voice.detects_barge_in_locally() {
        let listen = listen::Listen::new();
        sides.inbound.listen = Some(listen.clone());
        sides.out.listen = Some(listen);
    }
    let mut early: VecDeque<Frame> = VecDeque::new();
    let mut count = Sessions::default();
    // A socket that passed the signature check may open its upstream session before `start`
    // (saving a round trip); anyone else's must first show a `start`, so a stranger's sockets
    // cost no upstream sessions.
    // GPT-Live fixes the voice and instructions at `session.start`: its session opens once the
    // call's own settings (from `start`) are known.
    let start_first = !app.config.validates_signatures()
        || app.config.openai_api == crate::config::VoiceApi::Live;
    if start_first {
        let deadline = sides.inbound.deadline();
        if let Some(reason) =
            read_until_start(&mut sides.inbound, &mut sides.twilio_rx, deadline).await
        {
            ctx.end(reason);
            close_within_a_second(sides.out.close_twilio()).await;
            finish(app, ctx, sides, started, count).await;
            return;
        }
        if app.config.openai_api == crate::config::VoiceApi::Live {
            // Twilio's `start` waits for the outbound task; take it now, so the first session's
            // setup carries the call's settings. Counting a pending update keeps the greeting
            // for when the session has started.
            sides.out.pending_updates += 1;
            while let Ok(msg) = sides.from_inbound.try_recv() {
                sides.out.on_inbound(msg).await;
            }
            sides.out.pending_updates = 0;
        }
    }
    // A socket opened in advance by a renewal.
    let mut next: Option<UpstreamSocket> = None;
    loop {
        let socket = match next.take() {
            Some(socket) => socket,
            None => {
                // Open the upstream socket while Twilio keeps talking: on the first session that
                // saves a round trip before `start`; later it keeps the caller's audio.
                let Some(result) = connect_while_listening(
                    &mut sides.inbound,
                    &mut sides.twilio_rx,
                    &mut early,
                    &ctx,
                )
                .await
                else {
                    break;
                };
                match result {
                    Ok((socket, took)) => {
                        app.stats.upstream_connected(took);
                        info!(
                            connect_ms = took.as_millis() as u64,
                            session = count.opened + 1,
                            "Realtime API connected"
                        );
                        socket
                    }
                    Err(e) => {
                        app.stats.error(ErrorKind::UpstreamConnect);
                        count.failures += 1;
                        if count.opened == 0 {
                            // Log the failure under the call's SID and leave a transcript.
                            let soon = std::time::Instant::now() + Duration::from_secs(2);
                            let until = soon.min(sides.inbound.deadline());
                            read_until_start(&mut sides.inbound, &mut sides.twilio_rx, until).await;
                        }
                        if count.opened == 0 || count.failures >= 2 {
                            error!(error = %e, "could not open the Realtime API session; closing the stream so Twilio plays the fallback");
                            ctx.end(EndReason::UpstreamError);
                            break;
                        }
                        warn!(error = %e, "could not open the next Realtime API session; trying once more");
                        continue;
                    }
                }
            }
        };
        let (mut upstream_tx, upstream_rx) = socket.split();
        sides.inbound.voice.new_session();
        let setup = sides
            .out
            .session_setup(count.opened > 0)
            .into_iter()
            .flat_map(|json| sides.inbound.voice.encode(json))
            .collect();
        if let Err(e) = send_all(&mut upstream_tx, setup, &early, &mut sides.inbound.replay).await {
            app.stats.error(ErrorKind::UpstreamSocket);
            count.failures += 1;
            if count.failures >= 2 {
                error!(error = %e, "could not configure the Realtime session; closing the stream so Twilio plays the fallback");
                ctx.end(EndReason::UpstreamError);
                break;
            }
            warn!(error = %e, "could not configure the Realtime session; opening another");
            continue;
        }
        early.clear();
        count.opened += 1;
        sides = match run_session(sides, upstream_tx, upstream_rx, &ctx).await {
            Some(sides) => sides,
            None => {
                ctx.end(EndReason::ServerShutdown);
                return;
            }
        };
        if ctx.handle.reason().is_some() || ctx.cancel().is_cancelled() {
            ctx.end(EndReason::ServerShutdown); // keeps an earlier reason
            break;
        }
        let expired_mid_turn = matches!(sides.out.session_end, Some(SessionEnd::Expired { .. }))
            && sides.out.follow_up != FollowUp::None;
        let replayed = sides.inbound.replay.take_turn(expired_mid_turn);
        if !replayed.is_empty() {
            // The next session hears the turn again, so its own turn detection answers it;
            // the follow-up only covers a turn whose rest it never hears.
            info!(
                frames = replayed.len(),
                "replaying the caller's turn in progress to the next session"
            );
            app.stats.frames_replayed(replayed.len());
            sides.out.follow_up = FollowUp::RespondIfSilent;
        }
        early = replayed
            .into_iter()
            .chain(sides.unsent.drain(..))
            .chain(early.drain(..))
            .collect();
        match sides.out.session_end.take() {
            Some(SessionEnd::Renewed(socket)) => {
                count.renewals += 1;
                app.stats.session_renewed("proactive");
                next = Some(socket);
            }
            Some(SessionEnd::Expired { next: socket }) => {
                count.renewals += 1;
                app.stats.session_renewed("expired");
                next = socket;
            }
            Some(SessionEnd::Failed(failure)) => {
                count.failures += 1;
                if count.failures >= 2 {
                    error!(
                        end_reason = failure.as_str(),
                        "the Realtime API dropped again; closing the stream so Twilio plays the fallback"
                    );
                    ctx.end(failure);
                    break;
                }
                count.reconnects += 1;
                warn!(
                    end_reason = failure.as_str(),
                    "the Realtime API dropped mid-call; reconnecting once with the conversation so far"
                );
            }
            None => {
                ctx.end(EndReason::UpstreamError);
                break;
            }
        }
    }
    close_within_a_second(sides.out.close_twilio()).await;
    finish(app, ctx, sides, started, count).await;
}

/// Run the two tasks for one upstream session; they stop when the call ends or the session
/// fails (then only the session token is cancelled) and hand their sides back. `None` if a task
/// panicked (already logged).
async fn run_session(
    sides: Sides,
    upstream_tx: SplitSink<UpstreamSocket, tungstenite::Message>,
    upstream_rx: SplitStream<UpstreamSocket>,
    ctx: &CallCtx,
) -> Option<Sides> {
    let Sides {
        inbound,
        twilio_rx,
        mut out,
        from_inbound,
        ..
    } = sides;
    let session = ctx.cancel().child_token();
    let (to_upstream, from_outbound) = mpsc::channel(CHANNEL_CAPACITY);
    // The outbound side tells the inbound side when a graceful close has been confirmed.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    out.to_upstream = to_upstream;
    let span = tracing::Span::current();
    let calls = &ctx.app.calls;
    let inbound_task = calls.spawn(
        inbound::run(
            inbound,
            twilio_rx,
            upstream_tx,
            from_outbound,
            ctx.clone(),
            session.clone(),
            closed_rx,
        )
        .instrument(span.clone()),
    );
    let outbound_task = calls
        .spawn(outbound::run(out, upstream_rx, from_inbound, session, closed_tx).instrument(span));
    match tokio::join!(inbound_task, outbound_task) {
        (Ok((inbound, twilio_rx, unsent)), Ok((out, from_inbound))) => Some(Sides {
            inbound,
            twilio_rx,
            out,
            from_inbound,
            unsent,
        }),
        (inbound, outbound) => {
            let describe =
                |e: Option<tokio::task::JoinError>| e.map_or("-".into(), |e| e.to_string());
            error!(
                inbound = describe(inbound.err()),
                outbound = describe(outbound.err()),
                "a call task failed"
            );
            None
        }
    }
}

/// Read Twilio while `upstream::connect` runs. `None` if the call ended meanwhile.
async fn connect_while_listening(
    inbound: &mut Inbound,
    twilio_rx: &mut SplitStream<WebSocket>,
    early: &mut VecDeque<Frame>,
    ctx: &CallCtx,
) -> Option<Result<(UpstreamSocket, Duration), upstream::UpstreamError>> {
    let connect = upstream::connect(&ctx.app.config);
    tokio::pin!(connect);
    loop {
        tokio::select! {
            biased;
            _ = ctx.cancel().cancelled() => {
                ctx.end(EndReason::ServerShutdown);
                return None;
            }
            result = &mut connect => return Some(result),
            _ = tokio::time::sleep_until(inbound.deadline().into()) => {
                if inbound.deadline() <= std::time::Instant::now() {
                    ctx.end(inbound.timed_out());
                    return None;
                }
            }
            msg = twilio_rx.next() => {
                let step = match msg {
                    Some(Ok(msg)) => inbound.on_message(msg).await,
                    _ => Step::Closed,
                };
                match step {
                    Step::Append(json) => {
                        if early.len() == EARLY_AUDIO_FRAMES {
                            early.pop_front();
                            inbound.frames_dropped += 1;
                            ctx.app.stats.frame_dropped();
                        }
                        early.push_back(json);
                    }
                    Step::Continue => {}
                    Step::Stop => {
                        ctx.end(EndReason::CallerHungUp);
                        return None;
                    }
                    Step::Closed => {
                        ctx.end(EndReason::TwilioDisconnected);
                        return None;
                    }
                    Step::Refused => {
                        ctx.end(EndReason::StreamRefused);
                        return None;
                    }
                }
            }
        }
    }
}

/// Read Twilio until its `start` (then `None`) or until `until`, a `stop` or a close (then why
/// the call ends). Caller audio before `start` is counted as a bad message, as ever.
async fn read_until_start(
    inbound: &mut Inbound,
    twilio_rx: &mut SplitStream<WebSocket>,
    until: std::time::Instant,
) -> Option<EndReason> {
    let reading = async {
        while inbound.call.is_none() {
            let step = match twilio_rx.next().await {
                Some(Ok(msg)) => inbound.on_message(msg).await,
                _ => Step::Closed,
            };
            match step {
                Step::Stop => return Some(EndReason::CallerHungUp),
                Step::Closed => return Some(EndReason::TwilioDisconnected),
                Step::Refused => return Some(EndReason::StreamRefused),
                Step::Append(_) | Step::Continue => {}
            }
        }
        None
    };
    match tokio::time::timeout_at(until.into(), reading).await {
        Ok(ended) => ended,
        Err(_) if inbound.call.is_none() && until >= inbound.deadline() => {
            Some(inbound.timed_out())
        }
        Err(_) => None,
    }
}

/// The session's setup events, then the caller audio kept for it (left in place on failure, so
/// the next attempt still has it), noted in `replay` as sent to this session.
async fn send_all(
    upstream_tx: &mut SplitSink<UpstreamSocket, tungstenite::Message>,
    setup: Vec<String>,
    audio: &VecDeque<Frame>,
    replay: &mut Replay,
) -> Result<(), tungstenite::Error> {
    for json in setup {
        upstream_tx.feed(tungstenite::Message::text(json)).await?;
    }
    for frame in audio {
        upstream_tx
            .feed(tungstenite::Message::Text(frame.json.clone()))
            .await?;
        replay.sent(frame);
    }
    upstream_tx.flush().await
}

/// The call is over: record, transcript, event feed, summary line.
async fn finish(app: AppState, ctx: CallCtx, sides: Sides, started: Instant, count: Sessions) {
    let reason = ctx.handle.reason().unwrap_or(EndReason::ServerShutdown);
    let Sides {
        mut inbound,
        mut out,
        ..
    } = sides;
    if let Some(call) = &inbound.call {
        app.active.remove(&call.call_sid);
    }
    // Assembling the WAV takes a moment on a long call: the call is no longer active meanwhile.
    let recording = crate::recording::finish(inbound.recorder.take(), out.recorder.take()).await;
    if let Some(call) = &inbound.call {
        let (from, to) = (
            call.param("From").map(str::to_string),
            call.param("To").map(str::to_string),
        );
        app.store
            .update(
                &call.call_sid,
                || CallRecord::new(&call.call_sid, "inbound", "in-progress"),
                |r| {
                    r.from = r.from.take().or(from);
                    r.to = r.to.take().or(to);
                    r.end("completed", Some(reason));
                    r.recording = recording.or(r.recording.take());
                },
            )
            .await;
    }
    let transcript = out
        .transcript
        .clone()
        .or_else(|| inbound.call.as_ref().map(CallInfo::transcript));
    if let Some(mut t) = transcript {
        t.upstream_reconnects = count.reconnects;
        t.session_renewals = count.renewals;
        t.finish(reason);
        if t.dropped_turns > 0 {
            app.stats.error(ErrorKind::UpstreamEvent);
            warn!(
                dropped_turns = t.dropped_turns,
                "the Realtime API opened more transcript items than a call holds; the excess was dropped"
            );
        }
        app.events.publish(
            &t.call_sid,
            CallEvent::Ended {
                end_reason: reason,
                at: chrono::Utc::now(),
            },
        );
        app.store.finish_transcript(&t).await;
        info!(turns = t.turns.len(), "transcript stored");
    }
    let mut latencies = out.latencies_ms.clone();
    latencies.sort_unstable();
    info!(
        end_reason = reason.as_str(),
        duration_ms = started.elapsed().as_millis() as u64,
        frames_in = inbound.frames_in,
        frames_dropped = inbound.frames_dropped,
        frames_out = out.frames_out,
        barge_ins = out.barge_ins,
        response_latency_p50_ms = latencies.get(latencies.len() / 2).copied(),
        response_latency_max_ms = latencies.last().copied(),
        upstream_reconnects = count.reconnects,
        session_renewals = count.renewals,
        ignored_messages = inbound.ignored + out.ignored,
        "call ended"
    );
}

/// Close a socket, but never let a dead peer hold the call open for more than a second.
async fn close_within_a_second<F: std::future::Future>(close: F) {
    let _ = tokio::time::timeout(Duration::from_secs(1), close).await;
}
