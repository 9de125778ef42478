//! One simulated call: the WebSocket session, the 20 ms clock, and what flows each way.

use std::time::Duration;

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::StreamExt;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn, Instrument};

use super::fork::ForkTracks;
use super::outbox::Outbox;
use super::playback::Playback;
use super::report::CallReport;
use super::script::{Script, Timing};
use crate::audio::FRAME_MS;
use crate::twilio::media::TwilioCommand;
use crate::twilio::stream_token;

/// How long the WebSocket upgrade may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the server's close frame after ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What to say and how to behave on one simulated call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Relay WebSocket URL (`ws://` or `wss://`), e.g. `ws://127.0.0.1:8080/media-stream`.
    pub url: String,
    /// Caller clips, 8 kHz mono μ-law each, said in order.
    pub clips: Vec<Vec<u8>>,
    /// `start.customParameters`, as TwiML `<Parameter>`s would set them.
    pub params: Vec<(String, String)>,
    /// Barge in: start the next clip this many ms after the reply started playing.
    pub interrupt_after_ms: Option<u64>,
    /// Quiet before the first clip and after each reply before the next clip (or hangup), ms.
    pub quiet_ms: u64,
    /// Move on when no reply starts this long after a clip ended, ms.
    pub reply_timeout_ms: u64,
    /// Hard cap on the call, ms since `start`.
    pub max_call_ms: u64,
    /// Raw frames sent right after `start` (hostile-input tests); they take no sequence number.
    pub inject_after_start: Vec<Message>,
    /// Headers added to the WebSocket upgrade request (e.g. `X-Twilio-Signature`).
    pub extra_headers: Vec<(String, String)>,
    /// Play a one-way `<Start><Stream>` fork of these tracks instead of a bidirectional stream
    /// (see [`super::fork`]): no replies are awaited and anything received is unexpected.
    pub fork: Option<ForkTracks>,
    /// Fork mode: the other party's clips (8 kHz μ-law), played on the outbound track,
    /// alternating with `clips` on the inbound track.
    pub agent_clips: Vec<Vec<u8>>,
    /// The `CallSid` to send in `start` (tests subscribe to it in advance); `None`: a fresh one.
    pub call_sid: Option<String>,
    /// Twilio's auth token: sign the upgrade (`X-Twilio-Signature` over `signed_url`) and send
    /// a `StreamToken` parameter for this call, as the relay's TwiML would have given Twilio.
    pub auth_token: Option<String>,
    /// The URL to sign: the one the relay believes Twilio called (its `PUBLIC_URL` in `wss://`
    /// form). `None`: `url` with `ws://` written as `wss://`.
    pub signed_url: Option<String>,
    /// The `AccountSid` to send in `start` and `stop`; `None`: a fresh one.
    pub account_sid: Option<String>,
    /// Ends the call from outside when cancelled (a REST hang-up or a TwiML update, as Twilio
    /// would): `stop`, then a close. `None`: only the script and the relay end the call.
    pub stop: Option<CancellationToken>,
}

impl CallOptions {
    /// Options for saying `clips` (8 kHz μ-law) to `url`: 1000 ms quiet, 15000 ms reply timeout,
    /// 120000 ms call cap, no barge-in, no parameters, headers or injected frames.
    pub fn new(url: impl Into<String>, clips: Vec<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            clips,
            params: Vec::new(),
            interrupt_after_ms: None,
            quiet_ms: 1000,
            reply_timeout_ms: 15_000,
            max_call_ms: 120_000,
            inject_after_start: Vec::new(),
            extra_headers: Vec::new(),
            fork: None,
            agent_clips: Vec::new(),
            call_sid: None,
            auth_token: None,
            signed_url: None,
            account_sid: None,
            stop: None,
        }
    }
}

/// Places one simulated call the way Twilio runs a bidirectional `<Connect><Stream>`
/// (`PROTOCOLS.md` § "Twilio Media Streams"): `connected`, `start`, a 160-byte `media` frame every
/// 20 ms, marks echoed as their audio plays, `stop` and a close when the script is done. With
/// [`CallOptions::fork`] set, a one-way fork instead ([`super::fork`]).
///
/// # Errors
/// Only when the upgrade request is invalid or the connection cannot be made within 10 s; once
/// connected, a dropped socket ends the call with `closed_by_server` set in the report.
pub async fn run(opts: CallOptions) -> anyhow::Result<CallReport> {
    let report = CallReport {
        call_sid: opts
            .call_sid
            .clone()
            .unwrap_or_else(|| format!("CA{}", uuid::Uuid::new_v4().simple())),
        stream_sid: format!("MZ{}", uuid::Uuid::new_v4().simple()),
        account_sid: opts
            .account_sid
            .clone()
            .unwrap_or_else(|| format!("AC{}", uuid::Uuid::new_v4().simple())),
        ..CallReport::default()
    };
    let span = tracing::info_span!("sim_call", call_sid = %report.call_sid, stream_sid = %report.stream_sid);
    session(opts, report).instrument(span).await
}

/// Why the main loop stopped.
#[derive(Debug, PartialEq)]
enum Step {
    Continue,
    Hangup,
    Closed,
}

/// Everything the loop mutates besides the socket.
struct Call {
    started: Instant,
    max_call_ms: u64,
    playback: Playback,
    script: Script,
    report: CallReport,
}

impl Call {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn on_tick(&mut self, out: &mut Outbox) -> anyhow::Result<Step> {
        let now = self.now_ms();
        for name in self.playback.tick(now) {
            out.send_mark(&name).await?;
            self.report.marks_echoed += 1;
        }
        if now >= self.max_call_ms {
            warn!(max_call_ms = self.max_call_ms, "call limit reached");
            self.report.hit_call_limit = true;
            return Ok(Step::Hangup);
        }
        let Some(frame) = self.script.next_frame(now, &mut self.playback) else {
            return Ok(Step::Hangup);
        };
        out.send_media(&frame, now).await?;
        self.report.sent_audio.extend_from_slice(&frame);
        Ok(Step::Continue)
    }

    async fn on_message(
        &mut self,
        out: &mut Outbox,
        message: Option<Result<Message, tungstenite::Error>>,
    ) -> anyhow::Result<Step> {
        match message {
            Some(Ok(Message::Text(text))) => self.on_text(out, text.as_str()).await?,
            Some(Ok(Message::Binary(bytes))) => {
                // Twilio would raise warning 31950.
                self.unexpected(format!("binary frame of {} bytes", bytes.len()));
            }
            Some(Ok(Message::Close(frame))) => {
                info!(?frame, "server closed the stream");
                return Ok(Step::Closed);
            }
            Some(Ok(_)) => {} // ping/pong: tungstenite answers pings itself
            Some(Err(error)) => {
                warn!(%error, "stream failed");
                return Ok(Step::Closed);
            }
            None => {
                info!("server dropped the connection");
                return Ok(Step::Closed);
            }
        }
        Ok(Step::Continue)
    }

    async fn on_text(&mut self, out: &mut Outbox, text: &str) -> anyhow::Result<()> {
        // Twilio would raise warning 31951 for anything rejected here.
        let command: TwilioCommand = match serde_json::from_str(text) {
            Ok(command) => command,
            Err(error) => {
                self.unexpected(format!("{error}: {}", excerpt(text)));
                return Ok(());
            }
        };
        let (TwilioCommand::Media { stream_sid, .. }
        | TwilioCommand::Mark { stream_sid, .. }
        | TwilioCommand::Clear { stream_sid }) = &command;
        if *stream_sid != self.report.stream_sid {
            self.unexpected(format!("wrong streamSid {stream_sid}: {}", excerpt(text)));
            return Ok(());
        }
        let now = self.now_ms();
        match command {
            TwilioCommand::Media { media, .. } => {
                let Ok(ulaw) = BASE64.decode(media.payload.as_bytes()) else {
                    self.unexpected(format!("payload is not base64: {}", excerpt(text)));
                    return Ok(());
                };
                trace!(bytes = ulaw.len(), "media received");
                if self.report.first_audio_latency_ms.is_none() && !ulaw.is_empty() {
                    if let Some(end) = self.script.first_clip_end_ms {
                        let latency = now.saturating_sub(end);
                        info!(latency_ms = latency, "first assistant audio");
                        self.report.first_audio_latency_ms = Some(latency);
                    }
                }
                self.report.received_audio.extend_from_slice(&ulaw);
                self.report.largest_media_bytes = self.report.largest_media_bytes.max(ulaw.len());
                self.playback.push_audio(&ulaw);
            }
            TwilioCommand::Mark { mark, .. } => {
                debug!(mark = %mark.name, "mark received");
                self.report.marks_received += 1;
                if let Some(name) = self.playback.push_mark(mark.name.into_owned()) {
                    out.send_mark(&name).await?;
                    self.report.marks_echoed += 1;
                }
            }
            TwilioCommand::Clear { .. } => {
                self.report.clears += 1;
                let pending = self.playback.clear(now);
                debug!(pending_marks = pending.len(), "clear received");
                for name in pending {
                    out.send_mark(&name).await?;
                    self.report.marks_echoed += 1;
                }
            }
        }
        Ok(())
    }

    /// Moves what playback and the script counted into the report.
    fn finish(mut self) -> CallReport {
        let mut report = self.report;
        report.heard = std::mem::take(&mut self.playback.heard);
        report.heard_ms_at_clear = std::mem::take(&mut self.playback.heard_ms_at_clear);
        report.max_queued_ms = (self.playback.max_queued / crate::audio::BYTES_PER_MS) as u64;
        report.replies_started = self.playback.replies_started;
        report.reply_timeouts = self.script.reply_timeouts;
        info!(
            heard_ms = report.heard_ms(),
            closed_by_server = report.closed_by_server,
            "call ended"
        );
        report
    }

    fn unexpected(&mut self, what: String) {
        warn!(message = %what, "unexpected message from the relay");
        self.report.unexpected_messages.push(what);
    }
}

/// The first 200 characters of `text`, for error reports.
fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

fn upgrade_request(opts: &CallOptions) -> anyhow::Result<tungstenite::handshake::client::Request> {
    let mut request = opts
        .url
        .as_str()
        .into_client_request()
        .with_context(|| format!("invalid WebSocket URL {}", opts.url))?;
    for (name, value) in &opts.extra_headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .with_context(|| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).with_context(|| format!("invalid value for {name}"))?;
        request.headers_mut().append(name, value);
    }
    Ok(request)
}

/// What the relay's TwiML and Twilio's signing would add for `auth_token`: the upgrade's
/// signature and the call's stream token (unless the caller set one).
fn sign_as_twilio(opts: &mut CallOptions, call_sid: &str) {
    let Some(token) = opts.auth_token.clone() else {
        return;
    };
    let url = opts
        .signed_url
        .clone()
        .unwrap_or_else(|| match opts.url.strip_prefix("ws://") {
            Some(rest) => format!("wss://{rest}"),
            None => opts.url.clone(),
        });
    let signature = crate::twilio::signature::sign(&token, &url, &[]);
    opts.extra_headers
        .push((crate::verify::SIGNATURE_HEADER.into(), signature));
    if opts
        .params
        .iter()
        .any(|(k, _)| k == stream_token::PARAMETER)
    {
        return;
    }
    let call_ref = opts
        .params
        .iter()
        .find(|(k, _)| k == "CallRef")
        .map(|(_, v)| v.as_str());
    let subject = stream_token::subject(call_sid, call_ref);
    let expires = chrono::Utc::now().timestamp() + stream_token::INCOMING_TTL_SECS;
    let value = stream_token::issue(&token, &subject, expires);
    opts.params.push((stream_token::PARAMETER.into(), value));
}

async fn session(mut opts: CallOptions, report: CallReport) -> anyhow::Result<CallReport> {
    sign_as_twilio(&mut opts, &report.call_sid);
    let request = upgrade_request(&opts)?;
    let (ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| anyhow!("{}: no WebSocket upgrade within 10 s", opts.url))?
        .with_context(|| format!("connecting to {}", opts.url))?;
    info!(url = %opts.url, clips = opts.clips.len(), "connected");
    let (sink, mut stream) = ws.split();
    let mut out = Outbox::new(sink, &report);
    if let Some(tracks) = opts.fork {
        return Ok(super::fork::session(opts, tracks, out, stream, report).await);
    }
    let stop = opts.stop.clone().unwrap_or_default();
    let timing = Timing {
        quiet_ms: opts.quiet_ms,
        interrupt_after_ms: opts.interrupt_after_ms,
        reply_timeout_ms: opts.reply_timeout_ms,
    };
    let mut call = Call {
        started: Instant::now(),
        max_call_ms: opts.max_call_ms,
        playback: Playback::new(),
        script: Script::new(opts.clips, timing),
        report,
    };

    let greeting = async {
        out.send_greeting(&opts.params).await?;
        for frame in opts.inject_after_start {
            out.send_raw(frame).await?;
        }
        anyhow::Ok(())
    };
    let mut step = match greeting.await {
        Ok(()) => Step::Continue,
        Err(error) => {
            warn!(error = %format!("{error:#}"), "could not start the stream");
            Step::Closed
        }
    };
    call.started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(FRAME_MS as u64));
    // Twilio's clock does not slow down: catch up on late ticks so frames match elapsed time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    while step == Step::Continue {
        let result = tokio::select! {
            () = stop.cancelled() => {
                info!("the call was ended from outside");
                Ok(Step::Hangup)
            }
            _ = ticker.tick() => call.on_tick(&mut out).await,
            message = stream.next() => call.on_message(&mut out, message).await,
        };
        step = result.unwrap_or_else(|error| {
            warn!(error = %format!("{error:#}"), "sending failed");
            Step::Closed
        });
    }
    if step == Step::Hangup {
        info!("hanging up");
        out.hang_up().await;
        // Wait for the server's close frame; messages after `stop` are not counted.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(_)) = stream.next().await {}
        })
        .await;
    } else {
        call.report.closed_by_server = true;
        out.close().await;
    }
    Ok(call.finish())
}
