//! `GET /transcription-stream`: one Twilio fork stream (`<Start><Stream>`, one-way) per WebSocket.
//!
//! Reads Twilio's messages (PROTOCOLS.md § "Twilio Media Streams"): `start` creates the transcript
//! and the call record, each `media` frame goes to its track's task (opened on the track's first
//! frame; `inbound` = caller, `outbound` = agent), `stop` ends the fork. Nothing is ever sent to
//! Twilio — a fork that answers gets error 31924 — except the closing handshake at the end. Bad
//! input is counted (`/health` errors), the first instance logged, and never ends the call.
//! After the end, the tracks flush their backends (at most [`DRAIN_TIMEOUT`]), then the
//! transcript is finished, the record ended and `call.ended` published.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use chrono::Utc;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, field, info, info_span, warn, Instrument};

use super::output::{ForkInfo, Line, Output};
use super::track::{self, Feed, Frame, Track, TrackOut};
use super::BackendSettings;
use crate::app::AppState;
use crate::routes::MAX_TWILIO_MESSAGE_BYTES;
use crate::transcript::EndReason;
use crate::twilio::media::TwilioEvent;

/// Longest wait, after the fork ends, for the tracks' last results (backends drain in ≤ 15 s).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames buffered per track while its backend connects or lags: 500 × 20 ms = 10 s. Beyond
/// that frames are dropped and counted.
const TRACK_BUFFER_FRAMES: usize = 500;
/// Lines buffered from the tracks to the output.
const LINES_CAPACITY: usize = 256;

/// `GET /transcription-stream`: upgrade and run [`run_fork`], tracked so shutdown waits for it.
/// While the server drains or at `MAX_CONCURRENT_CALLS` the upgrade is refused with 503: Twilio
/// then drops the fork, and the call itself (`<Dial>`) goes on untranscribed.
pub async fn transcription_stream(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let slot = match crate::routes::admit_call(&state) {
        Ok(slot) => slot,
        Err(refusal) => return axum::response::IntoResponse::into_response(refusal),
    };
    let calls = state.calls.clone();
    ws.max_message_size(MAX_TWILIO_MESSAGE_BYTES)
        .max_frame_size(MAX_TWILIO_MESSAGE_BYTES)
        .read_buffer_size(crate::routes::READ_BUFFER_BYTES)
        .on_upgrade(move |socket| calls.track_future(run_fork(socket, state, slot)))
}

/// Serve one fork stream until Twilio stops it, the socket closes, or the server shuts down.
/// Counts as a call in `/health` while `slot` ([`crate::routes::admit_call`]) lives; logs one
/// summary line.
pub async fn run_fork(socket: WebSocket, state: AppState, slot: crate::stats::ActiveCall) {
    let _slot = slot;
    let settings = Arc::new(BackendSettings::from_config(&state.config));
    let span = info_span!("fork", call_sid = field::Empty, stream_sid = field::Empty);
    supervise(socket, state, settings).instrument(span).await;
}

/// What to do after one Twilio message.
enum Step {
    Continue,
    Stop,
    Closed,
}

/// One fork's state on the Twilio side.
struct Fork {
    state: AppState,
    settings: Arc<BackendSettings>,
    cancel: CancellationToken,
    /// Cloned into every track; dropped at the end so the output sees the tracks finish.
    lines_tx: Option<mpsc::Sender<Line>>,
    /// Audio senders per track ([`Track::index`]), created on the track's first frame.
    tracks: [Option<mpsc::Sender<Frame>>; 2],
    /// Created on `start`.
    output: Option<Output>,
    frames: [u64; 2],
    dropped: u64,
    ignored: u64,
}

async fn supervise(mut socket: WebSocket, state: AppState, settings: Arc<BackendSettings>) {
    let started = Instant::now();
    let (lines_tx, mut lines_rx) = mpsc::channel(LINES_CAPACITY);
    let mut fork = Fork {
        cancel: state.shutdown.child_token(),
        state,
        settings,
        lines_tx: Some(lines_tx),
        tracks: [None, None],
        output: None,
        frames: [0, 0],
        dropped: 0,
        ignored: 0,
    };
    let reason = loop {
        tokio::select! {
            () = fork.cancel.cancelled() => break EndReason::ServerShutdown,
            msg = socket.recv() => {
                let step = match msg {
                    Some(Ok(msg)) => fork.on_message(msg).await,
                    Some(Err(e)) => {
                        debug!(error = %e, "Twilio socket error");
                        Step::Closed
                    }
                    None => Step::Closed,
                };
                match step {
                    Step::Continue => {}
                    Step::Stop => break EndReason::CallerHungUp,
                    Step::Closed => break EndReason::TwilioDisconnected,
                }
            }
            Some(line) = lines_rx.recv() => fork.apply(line).await,
        }
    };
    // The closing handshake is the only frame a fork ever sends.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
    // Ending the audio makes each track flush its backend and report its last lines.
    fork.tracks = [None, None];
    fork.lines_tx = None;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    loop {
        tokio::select! {
            line = lines_rx.recv() => match line {
                Some(line) => fork.apply(line).await,
                None => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                warn!("transcription backends still busy after the call; their last results are lost");
                fork.cancel.cancel();
                break;
            }
        }
    }
    let (finals, interims) = match fork.output.take() {
        Some(output) => {
            let counts = (output.finals, output.interims);
            output.finish(reason).await;
            counts
        }
        None => (0, 0),
    };
    info!(
        end_reason = %reason,
        duration_ms = started.elapsed().as_millis() as u64,
        frames_inbound = fork.frames[0],
        frames_outbound = fork.frames[1],
        dropped_frames = fork.dropped,
        finals,
        interims,
        ignored_messages = fork.ignored,
        "fork ended"
    );
}

impl Fork {
    /// Classify one message from Twilio.
    async fn on_message(&mut self, msg: Message) -> Step {
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(bytes) => {
                self.ignore(&format!("binary frame of {} bytes", bytes.len()));
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
                let name = media.track.as_deref().unwrap_or("inbound");
                match Track::parse(name) {
                    Some(track) => self.media(track, media.payload),
                    None => self.ignore(&format!("media on unknown track {name:?}")),
                }
            }
            TwilioEvent::Start {
                stream_sid, start, ..
            } => {
                if self.output.is_some() {
                    self.ignore("a second start");
                    return Step::Continue;
                }
                let stream_sid = stream_sid.map_or(start.stream_sid, Cow::into_owned);
                let span = tracing::Span::current();
                span.record("call_sid", start.call_sid.as_str());
                span.record("stream_sid", stream_sid.as_str());
                let info = ForkInfo {
                    call_sid: start.call_sid,
                    stream_sid,
                    from: start.custom_parameters.get("From").cloned(),
                    to: start.custom_parameters.get("To").cloned(),
                };
                let backend = self.settings.transcribe.transcribe_backend.name();
                let tracks = start.tracks.join(",");
                info!(
                    from = info.from.as_deref(),
                    to = info.to.as_deref(),
                    tracks,
                    backend,
                    "fork started"
                );
                self.output = Some(Output::start(&self.state, &info).await);
            }
            TwilioEvent::Stop { .. } => {
                info!("Twilio sent stop");
                return Step::Stop;
            }
            TwilioEvent::Connected { .. } => debug!("Twilio connected"),
            TwilioEvent::Dtmf { dtmf, .. } => info!(digit = %dtmf.digit, "key pressed"),
            TwilioEvent::Mark { .. } => self.ignore("a mark (forks never send marks)"),
            TwilioEvent::Unknown => self.ignore("unknown event type"),
        }
        Step::Continue
    }

    /// Hand one frame to its track, opening the track on its first frame.
    fn media(&mut self, track: Track, payload: Cow<'_, str>) {
        if self.output.is_none() {
            return self.ignore("media before start");
        }
        let ulaw = match base64::engine::general_purpose::STANDARD.decode(payload.as_bytes()) {
            Ok(ulaw) => ulaw,
            Err(e) => return self.ignore(&format!("media payload is not base64: {e}")),
        };
        self.frames[track.index()] += 1;
        self.state.stats.fork_frame(track.name());
        let sender = match &self.tracks[track.index()] {
            Some(sender) => sender.clone(),
            None => match self.open_track(track) {
                Some(sender) => sender,
                None => return,
            },
        };
        let frame = Frame {
            payload: payload.into_owned(),
            ulaw,
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(frame) {
            self.dropped += 1;
            if self.dropped == 1 {
                self.state
                    .stats
                    .error(crate::stats::ErrorKind::TwilioMessage);
                warn!(
                    track = track.name(),
                    "transcription backend is behind; dropping audio"
                );
            }
        }
    }

    fn open_track(&mut self, track: Track) -> Option<mpsc::Sender<Frame>> {
        let lines_tx = self.lines_tx.clone()?;
        let (tx, rx) = mpsc::channel(TRACK_BUFFER_FRAMES);
        let out = TrackOut::new(track, Utc::now(), lines_tx);
        info!(
            track = track.name(),
            speaker = track.role().label(),
            "track started"
        );
        self.state.calls.spawn(
            track::run(
                self.settings.clone(),
                track,
                Feed::new(rx),
                out,
                self.state.stats.clone(),
                self.cancel.clone(),
            )
            .instrument(tracing::Span::current()),
        );
        self.tracks[track.index()] = Some(tx.clone());
        Some(tx)
    }

    async fn apply(&mut self, line: Line) {
        if let Some(output) = &mut self.output {
            output.apply(line).await;
        }
    }

    fn ignore(&mut self, reason: &str) {
        self.ignored += 1;
        self.state
            .stats
            .error(crate::stats::ErrorKind::TwilioMessage);
        if self.ignored == 1 {
            warn!(
                reason,
                "ignored a Twilio message; further ones are only counted"
            );
        } else {
            debug!(reason, "ignored a Twilio message");
        }
    }
}
