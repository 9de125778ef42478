//! The stand-in speaking GPT-Live (`/v1/live/sessions`; `docs/protocols/gpt-live.md`).
//!
//! Every client event is parsed with the typed [`crate::live::ClientEvent`]; one that does not
//! parse, an unknown type, or anything before `session.start` gets an `error` event and the
//! connection stays open. `session.start` must name a model and ask for `audio/pcmu` at 8000 Hz
//! (otherwise `error` `invalid_value` and a close, as a session that cannot start); a second one
//! is refused (`session_already_started`). Then:
//! - [`Mode::Parrot`]: the energy VAD ([`super::vad`]) hears appended audio; each utterance gets a
//!   `session.input_transcript.delta` (`[speech X.XX s]`, with `start_ms`/`end_ms` on the input
//!   clock) and a reply replaying it as `session.output_audio.delta` chunks of 100 ms (paced like
//!   the Realtime stand-in) with one `session.output_transcript.delta`. When the caller starts
//!   speaking during a reply the reply stops at once and nothing says so (the API's server-side
//!   interruption), counted in [`super::ConnectionLog::interruptions`].
//! - [`Mode::EchoFrames`]: every append comes straight back as an audio delta (load tests).
//! - `session.commentary.append` is spoken: the greeting tone with the text as its transcript.
//! - Scripted function calls (and `end_call` after the N-th utterance, when the delegation
//!   declares it) end a reply as `response.event` carrying `response.output_item.done` with a
//!   completed `function_call` item; a `response.item.create` output then `response.create` is
//!   answered with the tone and `The tool answered: <output>`.
//! - `session.close` → `session.closed` `close_requested`; `--expire-after-secs` → `expired`;
//!   both with `usage.seconds` = the caller audio appended, then a close.

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::config::VadSettings;
use super::recorder::ConnRecorder;
use super::respond::{chunk_interval, greeting_tone, CHUNK_BYTES};
use super::vad::{Vad, VadEvent};
use super::{FakeOptions, Mode, ScriptedCall};
use crate::audio::BYTES_PER_MS;
use crate::live::client::ResponseItem;
use crate::live::session::AudioFormat;
use crate::live::ClientEvent;

/// Turn detection as the Realtime stand-in's server VAD defaults.
const VAD: VadSettings = VadSettings {
    threshold: 0.5,
    prefix_padding_ms: 300,
    silence_duration_ms: 500,
    create_response: true,
    interrupt_response: true,
    idle_timeout_ms: None,
};

/// A reply being streamed.
struct Reply {
    audio: Vec<u8>,
    sent: usize,
    transcript: String,
    next_at: Instant,
    /// Events after the audio (function calls).
    then: Vec<Value>,
}

/// One GPT-Live connection's state machine: client frames in, server frames out.
pub(crate) struct LiveConn {
    mode: Mode,
    interval: Duration,
    rec: Option<ConnRecorder>,
    started: bool,
    tools: Vec<String>,
    vad: Vad,
    audio: Vec<u8>,
    reply: Option<Reply>,
    /// Output clock: ms of assistant audio sent this session.
    output_ms: u64,
    utterances: u32,
    tool_calls: VecDeque<ScriptedCall>,
    end_call_after: Option<u32>,
    tool_output: Option<String>,
    expires_at: Option<Instant>,
    next_event: u64,
    out: Vec<String>,
    pub(crate) closing: bool,
}

impl LiveConn {
    pub(crate) fn new(
        opts: &FakeOptions,
        authorization: Option<&str>,
        rec: Option<ConnRecorder>,
    ) -> Self {
        let mut conn = LiveConn {
            mode: opts.mode,
            interval: chunk_interval(opts.pace),
            rec,
            started: false,
            tools: Vec::new(),
            vad: Vad::default(),
            audio: Vec::new(),
            reply: None,
            output_ms: 0,
            utterances: 0,
            tool_calls: opts.tool_calls.iter().cloned().collect(),
            end_call_after: opts.end_call_after,
            tool_output: None,
            expires_at: opts.expire_after.map(|after| Instant::now() + after),
            next_event: 0,
            out: Vec::new(),
            closing: false,
        };
        if !authorization.is_some_and(|a| a.starts_with("Bearer ") && a.len() > 7) {
            conn.error(
                "missing_api_key",
                "Authorization: Bearer <key> is required".into(),
            );
            conn.closing = true;
        }
        conn
    }

    pub(crate) fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    pub(crate) fn finish(&mut self) {
        self.record(|log| log.closed = true);
    }

    pub(crate) fn on_binary(&mut self) {
        self.error("invalid_json", "binary frames are not events".into());
    }

    pub(crate) fn on_text(&mut self, text: &str, now: Instant) {
        let event = match serde_json::from_str::<ClientEvent>(text) {
            Ok(event) => event,
            Err(e) => {
                self.error("invalid_value", format!("not a GPT-Live client event: {e}"));
                return;
            }
        };
        let is_append = matches!(event, ClientEvent::InputAudioAppend { .. });
        if !(is_append && self.mode == Mode::EchoFrames) {
            if let Ok(value) = serde_json::from_str::<Value>(text) {
                self.record(|log| log.client_events.push(value));
            }
        }
        if !self.started
            && !matches!(
                event,
                ClientEvent::SessionStart { .. } | ClientEvent::Unknown
            )
        {
            self.error("session_not_started", "send session.start first".into());
            return;
        }
        match event {
            ClientEvent::SessionStart { session } => {
                if self.started {
                    self.error(
                        "session_already_started",
                        "the session has started; voice and format cannot change".into(),
                    );
                    return;
                }
                let format = session.audio.as_ref().and_then(|a| a.format);
                if session.model.trim().is_empty() || format != Some(AudioFormat::pcmu()) {
                    self.error("invalid_value", "session.start needs a model and audio.format {\"type\":\"audio/pcmu\",\"rate\":8000}".into());
                    self.closing = true;
                    return;
                }
                self.started = true;
                self.tools = session
                    .delegation
                    .as_ref()
                    .map(|d| d.function_names().into_iter().map(str::to_string).collect())
                    .unwrap_or_default();
                let model = session.model.clone();
                self.emit(json!({"type": "session.started", "session": {"id": "sess_fake", "model": model, "status": "active", "expires_at": 0}}));
            }
            ClientEvent::InputAudioAppend { audio } => {
                let Ok(bytes) = BASE64.decode(audio.as_bytes()) else {
                    self.error("invalid_value", "audio is not base64".into());
                    return;
                };
                if self.mode == Mode::EchoFrames {
                    self.emit(json!({"type": "session.output_audio.delta", "delta": audio}));
                    return;
                }
                self.record(|log| log.appended_audio.extend_from_slice(&bytes));
                self.audio.extend_from_slice(&bytes);
                for event in self.vad.push(&bytes, &VAD) {
                    match event {
                        VadEvent::Started { .. } => {
                            if self.reply.take().is_some() {
                                self.record(|log| log.interruptions += 1);
                            }
                        }
                        VadEvent::Stopped { start, end, .. } => self.utterance(start, end, now),
                    }
                }
            }
            ClientEvent::CommentaryAppend { content, .. } => {
                self.start_reply(greeting_tone(), content, Vec::new(), now)
            }
            ClientEvent::ResponseItemCreate {
                item: ResponseItem::FunctionCallOutput { output, .. },
            } => self.tool_output = Some(output),
            ClientEvent::ResponseCreate {} => {
                let text = match self.tool_output.take() {
                    Some(output) => format!("The tool answered: {output}"),
                    None => "How can I help?".into(),
                };
                self.start_reply(greeting_tone(), text, Vec::new(), now);
            }
            ClientEvent::SessionClose {} => self.close("close_requested"),
            ClientEvent::Unknown => {
                self.error("unknown_event", "unknown client event type".into());
            }
            ClientEvent::InputAudioMute {}
            | ClientEvent::InputAudioUnmute {}
            | ClientEvent::InstructionsAppend { .. }
            | ClientEvent::ThinkingAppend { .. } => {}
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.reply
            .as_ref()
            .map(|r| r.next_at)
            .into_iter()
            .chain(self.expires_at)
            .min()
    }

    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.expires_at.is_some_and(|at| at <= now) {
            self.expires_at = None;
            self.close("expired");
            return;
        }
        let Some(reply) = self.reply.as_mut() else {
            return;
        };
        if reply.next_at > now {
            return;
        }
        let end = (reply.sent + CHUNK_BYTES).min(reply.audio.len());
        let chunk = reply.audio[reply.sent..end].to_vec();
        let first = reply.sent == 0;
        reply.sent = end;
        reply.next_at = now + self.interval;
        let done = reply.sent >= reply.audio.len();
        let transcript = first.then(|| reply.transcript.clone());
        let total_ms = (reply.audio.len() / BYTES_PER_MS) as u64;
        self.emit(json!({"type": "session.output_audio.delta", "delta": BASE64.encode(&chunk)}));
        self.record(|log| log.sent_audio.extend_from_slice(&chunk));
        if let Some(text) = transcript {
            let (start, end) = (self.output_ms, self.output_ms + total_ms);
            self.emit(json!({"type": "session.output_transcript.delta", "delta": text, "start_ms": start, "end_ms": end}));
        }
        self.output_ms += (chunk.len() / BYTES_PER_MS) as u64;
        if done {
            let reply = self.reply.take().expect("checked");
            for event in reply.then {
                self.emit(event);
            }
        }
    }

    /// The caller said something in `start..end` (bytes of appended audio): transcribe, reply.
    fn utterance(&mut self, start: u64, end: u64, now: Instant) {
        let (start, end) = (start as usize, (end as usize).min(self.audio.len()));
        let heard = self.audio[start.min(end)..end].to_vec();
        let secs = heard.len() as f64 / (BYTES_PER_MS as f64 * 1000.0);
        let (start_ms, end_ms) = ((start / BYTES_PER_MS) as u64, (end / BYTES_PER_MS) as u64);
        self.emit(json!({"type": "session.input_transcript.delta", "delta": format!("[speech {secs:.2} s]"), "start_ms": start_ms, "end_ms": end_ms}));
        self.utterances += 1;
        let mut then = Vec::new();
        if let Some(call) = self.tool_calls.pop_front() {
            then.push(function_call(&call.name, &call.arguments, self.utterances));
        }
        if self.end_call_after == Some(self.utterances)
            && self.tools.iter().any(|t| t == "end_call")
        {
            then.push(function_call(
                "end_call",
                r#"{"reason":"goodbye"}"#,
                1000 + self.utterances,
            ));
        }
        self.start_reply(heard, format!("[reply {secs:.2} s]"), then, now);
    }

    fn start_reply(&mut self, audio: Vec<u8>, transcript: String, then: Vec<Value>, now: Instant) {
        self.reply = Some(Reply {
            audio,
            sent: 0,
            transcript,
            next_at: now,
            then,
        });
    }

    fn close(&mut self, reason: &str) {
        self.reply = None;
        let seconds = self.audio.len() as f64 / (BYTES_PER_MS as f64 * 1000.0);
        self.emit(json!({"type": "session.closed", "reason": reason, "session": {"id": "sess_fake"}, "usage": {"seconds": seconds}}));
        self.closing = true;
    }

    fn emit(&mut self, mut event: Value) {
        self.next_event += 1;
        event["event_id"] = json!(format!("event_{}", self.next_event));
        self.out.push(event.to_string());
    }

    fn error(&mut self, code: &str, message: String) {
        self.record(|log| log.errors_sent.push(code.to_string()));
        self.emit(json!({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message}}));
    }

    fn record(&self, f: impl FnOnce(&mut super::ConnectionLog)) {
        if let Some(rec) = &self.rec {
            rec.update(f);
        }
    }
}

/// `response.event` carrying a completed function call (`response_event.py`; the nested event
/// is the Responses API's `response.output_item.done`).
fn function_call(name: &str, arguments: &str, n: u32) -> Value {
    json!({
        "type": "response.event",
        "delegation_id": null,
        "event": {
            "type": "response.output_item.done",
            "output_index": 0,
            "item": {"type": "function_call", "id": format!("fc_{n}"), "call_id": format!("call_{n}"), "name": name, "arguments": arguments, "status": "completed"},
        },
    })
}
