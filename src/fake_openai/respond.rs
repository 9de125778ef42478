//! The stand-in's assistant responses: start, paced 100 ms audio chunks, completion and cancellation.
//!
//! Event order follows the GA reference: `response.created`, `response.output_item.added`,
//! `conversation.item.added`, `response.output_audio.delta`… (the transcript delta with the first
//! chunk), `response.output_audio_transcript.done`, `response.output_audio.done`,
//! `response.output_item.done`, `response.done`. A cancelled response ends with `response.done`
//! (`cancelled`) alone.

use std::borrow::Cow;

use base64::Engine;
use serde_json::{json, Value};
use tokio::time::{Duration, Instant};

use super::session::Conn;
use super::Mode;
use crate::audio::{encode, BYTES_PER_MS, SAMPLE_RATE_HZ};
use crate::realtime::server::ResponseInfo;
use crate::realtime::ServerEvent;

/// One audio delta: 100 ms of μ-law = 800 bytes.
pub(crate) const CHUNK_BYTES: usize = 100 * BYTES_PER_MS;

/// A response being streamed.
#[derive(Debug)]
pub(crate) struct ActiveResponse {
    pub(crate) id: String,
    /// The assistant message item carrying the audio.
    pub(crate) item_id: String,
    audio: Vec<u8>,
    /// Bytes of `audio` already sent.
    sent: usize,
    transcript: String,
    /// When the next chunk is due.
    next_at: Instant,
    /// When the first chunk went out: the client starts playing then, in real time.
    started_at: Instant,
    /// Finish with a call to the `end_call` tool (after the audio), as a model would on goodbye.
    pub(crate) end_call: bool,
    /// Finish with this function call (after the audio, before `end_call`).
    pub(crate) tool_call: Option<super::ScriptedCall>,
}

/// Time between two 100 ms chunks at `pace` × real time (4.0 → 25 ms). A non-positive or NaN pace
/// means real time; an infinite one, no pause at all.
pub(crate) fn chunk_interval(pace: f64) -> Duration {
    if pace.is_nan() || pace <= 0.0 {
        Duration::from_millis(100)
    } else {
        Duration::from_secs_f64(0.1 / pace)
    }
}

/// About 1.2 s of audible μ-law: three 400 ms notes (C5, E5, G5) at amplitude 6000.
pub(crate) fn greeting_tone() -> Vec<u8> {
    let note_samples = 400 * BYTES_PER_MS;
    let pcm: Vec<i16> = [523.25_f64, 659.25, 783.99]
        .iter()
        .flat_map(|&hz| {
            (0..note_samples).map(move |n| {
                let t = n as f64 / f64::from(SAMPLE_RATE_HZ);
                (6000.0 * (std::f64::consts::TAU * hz * t).sin()) as i16
            })
        })
        .collect();
    encode(&pcm)
}

/// The assistant message item as `response.output_item.*` and `conversation.item.*` carry it.
fn message_item(id: &str, status: &str, transcript: Option<&str>) -> Value {
    let content = match transcript {
        Some(t) => json!([{"type": "output_audio", "transcript": t}]),
        None => json!([]),
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant", "content": content})
}

impl Conn {
    /// `response.create`: reply to the pending text message with the tone, else parrot the last
    /// utterance, else play the tone.
    pub(super) fn response_create(&mut self, event_id: Option<String>, now: Instant) {
        if self.mode == Mode::EchoFrames {
            tracing::debug!("echo-frames stand-in ignores response.create");
            return;
        }
        if let Some(active) = &self.response {
            let msg = format!(
                "Conversation already has an active response in progress: {}.",
                active.id
            );
            return self.error(
                "conversation_already_has_active_response",
                msg,
                None,
                event_id,
            );
        }
        let (audio, transcript) = if let Some(output) = self.tool_output.take() {
            self.pending_text = None;
            (greeting_tone(), format!("The tool answered: {output}"))
        } else if let Some(text) = self.pending_text.take() {
            (greeting_tone(), format!("(greeting) {text}"))
        } else if let Some((audio, transcript)) = &self.utterance {
            (audio.clone(), format!("You said: {transcript}"))
        } else {
            (greeting_tone(), "(tone)".to_string())
        };
        self.start_response(audio, transcript, now);
    }

    /// `response.cancel`: only valid with a response in flight, as on the real API.
    pub(super) fn response_cancel(&mut self, event_id: Option<String>) {
        if self.response.is_some() {
            self.cancel_response();
        } else {
            let msg = "Cancellation failed: no active response found.".to_string();
            self.error("response_cancel_not_active", msg, None, event_id);
        }
    }

    /// Announce a response; its first chunk is due at once.
    pub(super) fn start_response(&mut self, audio: Vec<u8>, transcript: String, now: Instant) {
        let id = self.new_response_id();
        let item_id = self.new_item_id();
        tracing::debug!(response_id = %id, bytes = audio.len(), %transcript, "stand-in responds");
        self.emit(&ServerEvent::ResponseCreated {
            response: ResponseInfo {
                id: id.clone(),
                status: "in_progress".into(),
            },
        });
        let item = message_item(&item_id, "in_progress", None);
        self.emit_json(
            json!({"type": "response.output_item.added", "response_id": id,
            "output_index": 0, "item": item}),
        );
        let previous = self.last_item.replace(item_id.clone());
        self.emit_json(
            json!({"type": "conversation.item.added", "previous_item_id": previous,
            "item": item}),
        );
        self.item_audio_bytes.insert(item_id.clone(), 0);
        self.response = Some(ActiveResponse {
            id,
            item_id,
            audio,
            sent: 0,
            transcript,
            next_at: now,
            started_at: now,
            end_call: false,
            tool_call: None,
        });
        self.idle_at = None;
    }

    /// The due time of the next chunk, if a response is in flight.
    pub(super) fn response_due(&self) -> Option<Instant> {
        self.response.as_ref().map(|r| r.next_at)
    }

    /// Send the chunk that is due; finish the response after its last one.
    pub(super) fn send_due_chunk(&mut self, now: Instant) {
        let Some(mut r) = self.response.take() else {
            return;
        };
        if now < r.next_at {
            self.response = Some(r);
            return;
        }
        let end = (r.sent + CHUNK_BYTES).min(r.audio.len());
        let chunk = &r.audio[r.sent..end];
        let (response_id, item_id) = (
            Cow::Borrowed(r.id.as_str()),
            Cow::Borrowed(r.item_id.as_str()),
        );
        let delta = base64::engine::general_purpose::STANDARD.encode(chunk);
        self.emit(&ServerEvent::OutputAudioDelta {
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            output_index: 0,
            content_index: 0,
            delta: Cow::Owned(delta),
        });
        self.record(|log| log.sent_audio.extend_from_slice(chunk));
        if let Some(bytes) = self.item_audio_bytes.get_mut(r.item_id.as_str()) {
            *bytes += chunk.len();
        }
        if r.sent == 0 {
            self.emit(&ServerEvent::OutputTranscriptDelta {
                response_id: response_id.clone(),
                item_id: item_id.clone(),
                output_index: 0,
                content_index: 0,
                delta: Cow::Borrowed(&r.transcript),
            });
        }
        r.sent = end;
        if r.sent < r.audio.len() {
            // Keep the schedule even if a tick ran late.
            r.next_at += self.interval;
            self.response = Some(r);
            return;
        }
        self.emit(&ServerEvent::OutputTranscriptDone {
            response_id: response_id.clone(),
            item_id: item_id.clone(),
            output_index: 0,
            content_index: 0,
            transcript: Cow::Borrowed(&r.transcript),
        });
        self.emit(&ServerEvent::OutputAudioDone {
            response_id,
            item_id,
            output_index: 0,
            content_index: 0,
        });
        let item = message_item(&r.item_id, "completed", Some(&r.transcript));
        self.emit_json(
            json!({"type": "response.output_item.done", "response_id": r.id,
            "output_index": 0, "item": item}),
        );
        if let Some(call) = &r.tool_call {
            match call.name.split_once('.') {
                Some((server, tool)) => self.call_mcp(&r.id, server, tool, &call.arguments),
                None => self.call_function(&r.id, 1, &call.name, &call.arguments),
            }
        }
        if r.end_call {
            self.call_function(
                &r.id,
                2,
                "end_call",
                r#"{"reason":"the caller said goodbye"}"#,
            );
        }
        // The idle timeout counts from when the response's audio has played (real time).
        let played = r.started_at + Duration::from_millis((r.audio.len() / BYTES_PER_MS) as u64);
        self.arm_idle(played);
        self.emit(&ServerEvent::ResponseDone {
            response: ResponseInfo {
                id: r.id,
                status: "completed".into(),
            },
        });
    }

    /// Whether the session declares the relay's `end_call` function tool.
    pub(super) fn declares_end_call(&self) -> bool {
        self.session
            .tools
            .as_ref()
            .is_some_and(|tools| tools.iter().any(|t| t.name() == "end_call"))
    }

    /// A function call item calling `name` as output `output_index` of `response_id`, announced
    /// as the API does: `output_item.added`, `function_call_arguments.done`, `output_item.done`.
    fn call_function(&mut self, response_id: &str, output_index: u32, name: &str, arguments: &str) {
        let item_id = self.new_item_id();
        let call_id = format!("call_{}", item_id.trim_start_matches("item_"));
        let item = json!({"id": item_id, "type": "function_call", "status": "completed",
            "name": name, "call_id": call_id, "arguments": arguments});
        self.emit_json(
            json!({"type": "response.output_item.added", "response_id": response_id,
            "output_index": output_index, "item": item}),
        );
        self.emit(&ServerEvent::FunctionCallArgumentsDone {
            response_id: Cow::Borrowed(response_id),
            item_id: Cow::Borrowed(&item_id),
            output_index,
            call_id: Cow::Borrowed(&call_id),
            name: Cow::Borrowed(name),
            arguments: Cow::Borrowed(arguments),
        });
        self.emit_json(
            json!({"type": "response.output_item.done", "response_id": response_id,
            "output_index": output_index, "item": item}),
        );
    }

    /// An MCP tool call the API ran itself (a scripted name `server.tool`), as output 1 of
    /// `response_id`: `response.mcp_call.in_progress`, `.completed` and the `mcp_call` item
    /// with a placeholder output.
    fn call_mcp(&mut self, response_id: &str, server: &str, tool: &str, arguments: &str) {
        let item_id = self.new_item_id();
        self.emit_json(
            json!({"type": "response.mcp_call.in_progress", "item_id": item_id, "output_index": 1}),
        );
        self.emit_json(
            json!({"type": "response.mcp_call.completed", "item_id": item_id, "output_index": 1}),
        );
        let item = json!({"id": item_id, "type": "mcp_call", "server_label": server, "name": tool,
            "arguments": arguments, "output": format!("{{\"ran\":\"{tool}\"}}")});
        self.emit_json(
            json!({"type": "response.output_item.done", "response_id": response_id,
            "output_index": 1, "item": item}),
        );
    }

    /// Stop the response in flight: no more deltas, `response.done` with `cancelled`.
    pub(super) fn cancel_response(&mut self) {
        if let Some(r) = self.response.take() {
            tracing::debug!(response_id = %r.id, sent = r.sent, "stand-in response cancelled");
            self.emit(&ServerEvent::ResponseDone {
                response: ResponseInfo {
                    id: r.id,
                    status: "cancelled".into(),
                },
            });
        }
    }
}
