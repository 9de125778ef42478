//! The `fake-openai` subcommand: a local stand-in for the OpenAI Realtime API (GA) over plain `ws://`,
//! and for GPT-Live at `/v1/live/sessions` (`live`, see its docs; `--api live` announces that URL).
//!
//! Speaks the GA event shapes of `PROTOCOLS.md` § "OpenAI Realtime API — GA only" with the typed
//! [`crate::realtime`] events: `session.created`/`updated`, an energy VAD (`vad`) that emits
//! `input_audio_buffer.speech_started`/`stopped`/`committed`, placeholder caller transcription, and
//! audio responses paced faster than real time, server VAD's `idle_timeout_ms` prompts
//! (`input_audio_buffer.timeout_triggered`), and sessions that expire like the API's
//! (`--expire-after-secs`). A `?intent=transcription` connection is a
//! transcription session: the same VAD events, then two transcription deltas and `.completed` per
//! utterance (placeholder `[speech X.XX s]`), never a response. `input_audio_buffer.commit`
//! commits what is buffered as the real API does (`committed` and, when transcribing, the
//! transcription; under 100 ms buffered, the error `input_audio_buffer_commit_empty`).
//! Appended audio is heard at once, or with [`FakeOptions::realtime_pace`] at 1× real time from
//! its arrival, commits and clears waiting behind it, so events come as late as on the real API.
//! Two modes:
//! - [`Mode::Parrot`]: the reply to each caller utterance is that utterance's audio; a text message
//!   plus `response.create` (a greeting) gets a 1.2 s tone. Barge-in cancels, truncation is
//!   checked against the audio generated, as on the real API.
//! - [`Mode::EchoFrames`]: every `input_audio_buffer.append` comes straight back as one
//!   `response.output_audio.delta` (load tests: no VAD, no recording of audio).
//!
//! Every server event carries an `event_id` (`event_<n>`); items are `item_<n>` and responses
//! `resp_<n>`, counted per connection. Refused client events get an `error` event
//! (`invalid_request_error`) and the connection stays open: `invalid_json` (not JSON, or a binary
//! frame), `unknown_event` (unknown `type`), `missing_required_parameter` (no `type`, no
//! `session.type`), `invalid_value` (a format other than `audio/pcmu`, bad base64, a truncate of an
//! unknown item or past the audio generated, any other malformed event),
//! `response_cancel_not_active`, `conversation_already_has_active_response`,
//! `input_audio_buffer_commit_empty`. A client sending the
//! retired `OpenAI-Beta` header gets `beta_api_shape_disabled` and a close.
//!
//! # Layout
//! - `conn`: the WebSocket upgrade (recording, refusal) and the read/tick loop.
//! - `session`: one connection's state machine (client events in, server event frames out).
//! - `turns`: caller audio through the VAD to commits, transcription and replies; client commits
//!   and clears; the echo.
//! - `pace`: the input buffer's order and pace (at once, or queued at real time).
//! - `items`: conversation item acks and truncation.
//! - `respond`: responses: paced 100 ms chunks, completion, cancellation, the greeting tone.
//! - `limits`: session expiry and server VAD's idle timeout.
//! - `config`: session defaults and `session.update` merging.
//! - `vad`: the energy VAD and its threshold mapping.
//! - `live`: the GPT-Live connection state machine.
//! - `recorder`: [`ConnectionLog`]s for tests.

mod config;
mod conn;
mod items;
mod limits;
mod live;
mod pace;
mod recorder;
mod respond;
mod session;
mod turns;
mod vad;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use recorder::ConnectionLog;
use recorder::Recorder;

/// How the stand-in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Energy VAD and turns; each reply replays the caller's last utterance (μ-law, 8 kHz).
    #[default]
    Parrot,
    /// Echo every appended frame at once as an audio delta, with the same base64 payload.
    EchoFrames,
}

/// Behaviour of a stand-in server.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeOptions {
    /// Parrot (turns and replies) or echo-frames (load tests).
    pub mode: Mode,
    /// Refuse every upgrade with this HTTP status (e.g. 401) and the API's `invalid_api_key` JSON body.
    pub reject_status: Option<u16>,
    /// Speed of response audio relative to real time: 4.0 sends a 100 ms chunk every 25 ms;
    /// `f64::INFINITY` sends them back to back.
    pub pace: f64,
    /// End every session this long after it opened the way the API does at its maximum duration:
    /// `error` `session_expired`, then a close (`None`: sessions never expire).
    pub expire_after: Option<Duration>,
    /// Hold every upgrade after the first one this long before answering, like a slow path to
    /// the API: shows whether a client opens its next session before it needs it.
    pub later_upgrade_delay: Option<Duration>,
    /// Call the `end_call` tool (when the session declares it) in the reply to the caller's
    /// N-th utterance, after the reply's audio: a deterministic stand-in for "the caller said
    /// goodbye".
    pub end_call_after: Option<u32>,
    /// Hear appended audio at 1× real time from its arrival, as the real API does, instead of at
    /// once: VAD events and transcripts come as late as they would there, and a commit waits
    /// behind the audio queued before it.
    pub realtime_pace: bool,
    /// Function calls to make, one per caller utterance: the reply to the N-th utterance ends
    /// (after its audio, before any `end_call`) with a call to `tool_calls[N-1]`, declared or not,
    /// as a model would. A `function_call_output` the client then sends is answered, on its
    /// `response.create`, with the greeting tone and the transcript `The tool answered: <output>`.
    /// A name `server.tool` plays an MCP call the API ran itself instead: `response.mcp_call.*`
    /// and an `mcp_call` item whose output is `{"ran":"tool"}`.
    pub tool_calls: Vec<ScriptedCall>,
}

/// One scripted function call of the stand-in: `NAME='{"json":"args"}'` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedCall {
    pub name: String,
    /// The `arguments` string, sent as given (it may be invalid on purpose).
    pub arguments: String,
}

/// Parse `--tool-call NAME=JSON` (the JSON is not checked: tests send bad arguments too).
pub fn parse_tool_call(s: &str) -> Result<ScriptedCall, String> {
    let (name, arguments) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME='{{\"json\":\"args\"}}'"))?;
    if name.trim().is_empty() {
        return Err("the tool name is empty".into());
    }
    Ok(ScriptedCall {
        name: name.trim().into(),
        arguments: arguments.into(),
    })
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            mode: Mode::Parrot,
            reject_status: None,
            pace: 4.0,
            expire_after: None,
            later_upgrade_delay: None,
            end_call_after: None,
            realtime_pace: false,
            tool_calls: Vec::new(),
        }
    }
}

/// A stand-in serving on `127.0.0.1:<ephemeral port>` in a background task, with a recorder.
/// Clones share the server; it stops when the last clone is dropped.
#[derive(Clone)]
pub struct FakeOpenAi {
    /// The bound address.
    pub addr: SocketAddr,
    recorder: Recorder,
    _stop_on_drop: Arc<DropGuard>,
}

impl FakeOpenAi {
    /// Bind `127.0.0.1:0` and serve in a background task.
    ///
    /// # Errors
    /// Binding the listener fails.
    pub async fn spawn(opts: FakeOptions) -> anyhow::Result<FakeOpenAi> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Realtime stand-in to 127.0.0.1:0")?;
        let addr = listener.local_addr().context("stand-in local address")?;
        let recorder = Recorder::new();
        let shutdown = CancellationToken::new();
        let serving = serve_recorded(listener, opts, shutdown.clone(), Some(recorder.clone()));
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                warn!(error = %e, "Realtime stand-in stopped");
            }
        });
        Ok(FakeOpenAi {
            addr,
            recorder,
            _stop_on_drop: Arc::new(shutdown.drop_guard()),
        })
    }

    /// The URL to point the relay at: `ws://127.0.0.1:PORT/v1/realtime` (add `?model=…` as usual).
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// The GPT-Live URL to point the relay at (`OPENAI_LIVE_URL`): `ws://127.0.0.1:PORT/v1/live/sessions`.
    pub fn live_url(&self) -> String {
        format!("ws://{}{}", self.addr, crate::live::PATH)
    }

    /// A snapshot of every connection so far (refused upgrades included), in arrival order.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        self.recorder.snapshot()
    }

    /// Wait until `f` holds for the connection logs; re-checked on every recorded change (no polling).
    /// Returns `false` if `timeout` passes first.
    pub async fn wait_for<F: Fn(&[ConnectionLog]) -> bool>(&self, timeout: Duration, f: F) -> bool {
        self.recorder.wait_for(timeout, f).await
    }
}

/// Serve the stand-in on an already-bound listener until `shutdown` fires, then close every
/// connection and wait for them. Nothing is recorded (use [`FakeOpenAi`] for that).
///
/// # Errors
/// None today; the `Result` leaves room for fatal listener errors.
pub async fn serve(
    listener: TcpListener,
    opts: FakeOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_recorded(listener, opts, shutdown, None).await
}

async fn serve_recorded(
    listener: TcpListener,
    opts: FakeOptions,
    shutdown: CancellationToken,
    recorder: Option<Recorder>,
) -> anyhow::Result<()> {
    let opts = Arc::new(opts);
    let tracker = TaskTracker::new();
    let mut accepted_count = 0u64;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small frames both ways: latency matters more than packet count.
                let _ = stream.set_nodelay(true);
                accepted_count += 1;
                let delay = opts.later_upgrade_delay.filter(|_| accepted_count > 1);
                tracker.spawn(conn::handle(
                    stream,
                    peer,
                    opts.clone(),
                    recorder.clone(),
                    shutdown.clone(),
                    delay,
                ));
            }
            Err(e) => {
                // Usually out of file descriptors under load: back off instead of spinning.
                warn!(error = %e, "stand-in accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// `fake-openai` command line.
#[derive(clap::Args, Debug, Clone)]
pub struct FakeOpenAiArgs {
    /// Address to listen on.
    #[arg(long, env = "FAKE_OPENAI_ADDR", default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,
    /// Which API to announce: `realtime` (`/v1/realtime`) or `live` (GPT-Live,
    /// `/v1/live/sessions`). Both are served on every address, by path.
    #[arg(long, value_enum, default_value_t = crate::config::VoiceApi::Realtime)]
    pub api: crate::config::VoiceApi,
    /// `parrot` (VAD + replies that replay the caller) or `echo-frames` (load tests).
    #[arg(long, value_enum, default_value_t = Mode::Parrot)]
    pub mode: Mode,
    /// Response audio speed relative to real time (4 = a 100 ms chunk every 25 ms).
    #[arg(long, default_value_t = 4.0)]
    pub pace: f64,
    /// Refuse every upgrade with this HTTP status (e.g. 401) to exercise the relay's error path.
    #[arg(long)]
    pub reject_status: Option<u16>,
    /// Call the `end_call` tool after replying to the caller's N-th utterance.
    #[arg(long, value_name = "N")]
    pub end_call_after: Option<u32>,
    /// End every session N seconds after it opened, as the API does at its maximum duration
    /// (`error` `session_expired`, then a close).
    #[arg(long, value_name = "N")]
    pub expire_after_secs: Option<u64>,
    /// Hear appended audio at 1× real time (as the real API does) instead of at once.
    #[arg(long)]
    pub realtime_pace: bool,
    /// Call this function (NAME='{"json":"args"}') after replying to the next caller utterance;
    /// repeat for later utterances, one each.
    #[arg(long = "tool-call", value_name = "NAME=JSON", value_parser = parse_tool_call)]
    pub tool_calls: Vec<ScriptedCall>,
}

/// Run the stand-in until Ctrl-C.
///
/// # Errors
/// The address cannot be bound.
pub async fn main(args: FakeOpenAiArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding the Realtime stand-in to {}", args.addr))?;
    let addr = listener.local_addr().context("stand-in local address")?;
    match args.api {
        crate::config::VoiceApi::Realtime => info!(
            url = %format!("ws://{addr}/v1/realtime"),
            mode = ?args.mode,
            pace = args.pace,
            realtime_pace = args.realtime_pace,
            "Realtime stand-in listening; set OPENAI_REALTIME_URL to this url"
        ),
        crate::config::VoiceApi::Live => info!(
            url = %format!("ws://{addr}{}", crate::live::PATH),
            mode = ?args.mode,
            pace = args.pace,
            "GPT-Live stand-in listening; set OPENAI_API=live and OPENAI_LIVE_URL to this url"
        ),
    }
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        match tokio::signal::ctrl_c().await {
            Ok(()) => on_signal.cancel(),
            Err(e) => warn!(error = %e, "cannot listen for Ctrl-C; stop the stand-in another way"),
        }
    });
    let opts = FakeOptions {
        mode: args.mode,
        reject_status: args.reject_status,
        pace: args.pace,
        expire_after: args.expire_after_secs.map(Duration::from_secs),
        later_upgrade_delay: None,
        end_call_after: args.end_call_after,
        realtime_pace: args.realtime_pace,
        tool_calls: args.tool_calls,
    };
    serve(listener, opts, shutdown).await?;
    info!("Realtime stand-in stopped");
    Ok(())
}
