//! One stand-in connection's state machine: parses client events, produces server event frames.
//!
//! No I/O here: [`Conn::on_text`] and [`Conn::on_tick`] queue JSON frames that the connection loop
//! (`conn.rs`) drains with [`Conn::take_output`]. Turns and commits are in `turns.rs`, the input
//! buffer's order and pace in `pace.rs`, items in `items.rs`, responses in `respond.rs`, session
//! expiry and idle prompts in `limits.rs`.

use std::collections::HashMap;

use base64::Engine;
use serde::Serialize;
use serde_json::Value;
use tokio::time::{Duration, Instant};

use super::config::{self, Rejection};
use super::pace::{Input, InputQueue};
use super::recorder::ConnRecorder;
use super::respond::{chunk_interval, ActiveResponse};
use super::vad::Vad;
use super::Mode;
use crate::realtime::server::ApiError;
use crate::realtime::{ClientEvent, ServerEvent, Session};

/// The state of one connection to the stand-in.
pub(crate) struct Conn {
    pub(super) mode: Mode,
    /// Time between two 100 ms audio chunks.
    pub(super) interval: Duration,
    pub(super) session: Session,
    pub(super) vad: Vad,
    /// Every appended μ-law byte the VAD has judged (parrot mode); VAD positions index into it.
    pub(super) audio: Vec<u8>,
    /// Bytes of `audio` committed or cleared: what follows is the uncommitted input buffer.
    pub(super) committed_to: usize,
    /// Feed appended audio to the VAD at 1× real time (`--realtime-pace`), through `input`.
    pub(crate) realtime_pace: bool,
    /// Appends, commits and clears waiting for the VAD (realtime pace only).
    pub(super) input: InputQueue,
    /// The last committed caller utterance (loud part, μ-law) and its placeholder transcript.
    pub(super) utterance: Option<(Vec<u8>, String)>,
    /// Text of the message items created since the last response (a greeting instruction).
    pub(super) pending_text: Option<String>,
    /// Item id of the caller utterance in progress.
    pub(super) speech_item: Option<String>,
    /// Last item added to the conversation: the next one's `previous_item_id`.
    pub(super) last_item: Option<String>,
    pub(super) response: Option<ActiveResponse>,
    /// μ-law bytes generated per assistant item: the limit for truncation.
    pub(super) item_audio_bytes: HashMap<String, usize>,
    /// `(response_id, item_id)` of every echo in `echo-frames` mode.
    pub(super) echo_ids: (String, String),
    next_event: u64,
    next_item: u64,
    next_response: u64,
    out: Vec<String>,
    /// Close the socket once the queued frames are sent.
    pub(super) closing: bool,
    /// Call `end_call` in the reply to this caller utterance (1-based), if declared.
    pub(crate) end_call_after: Option<u32>,
    /// Function calls scripted per caller utterance ([`super::FakeOptions::tool_calls`]).
    pub(crate) tool_calls: Vec<super::ScriptedCall>,
    /// The output of the last `function_call_output` item, for the next response.
    pub(super) tool_output: Option<String>,
    /// Caller utterances committed so far.
    pub(super) utterances: u32,
    /// When the session reaches its maximum duration ([`super::FakeOptions::expire_after`]).
    pub(crate) expires_at: Option<Instant>,
    /// When server VAD's `idle_timeout_ms` runs out, if armed (see `limits.rs`).
    pub(super) idle_at: Option<Instant>,
    rec: Option<ConnRecorder>,
}

/// `{"event_id": …, <the event's fields>}`: stamps any event without going through a `Value`.
#[derive(Serialize)]
struct Stamped<'a, T: ?Sized> {
    event_id: &'a str,
    #[serde(flatten)]
    event: &'a T,
}

impl Conn {
    /// A connection from `path_and_query` (the model comes from its query), sending audio at `pace`
    /// × real time.
    pub(crate) fn new(
        mode: Mode,
        pace: f64,
        path_and_query: &str,
        rec: Option<ConnRecorder>,
    ) -> Self {
        let mut conn = Conn {
            mode,
            interval: chunk_interval(pace),
            session: config::initial_session(path_and_query),
            vad: Vad::default(),
            audio: Vec::new(),
            committed_to: 0,
            realtime_pace: false,
            input: InputQueue::default(),
            utterance: None,
            pending_text: None,
            speech_item: None,
            last_item: None,
            response: None,
            item_audio_bytes: HashMap::new(),
            echo_ids: (String::new(), String::new()),
            next_event: 0,
            next_item: 0,
            next_response: 0,
            out: Vec::new(),
            closing: false,
            end_call_after: None,
            tool_calls: Vec::new(),
            tool_output: None,
            utterances: 0,
            expires_at: None,
            idle_at: None,
            rec,
        };
        if mode == Mode::EchoFrames {
            conn.echo_ids = (conn.new_response_id(), conn.new_item_id());
            conn.item_audio_bytes.insert(conn.echo_ids.1.clone(), 0);
        }
        conn
    }

    /// The first frames: `session.created`, or for a beta-header client the GA server's refusal.
    pub(crate) fn start(&mut self, beta_header: bool) {
        if beta_header {
            self.error(
                "beta_api_shape_disabled",
                "The beta Realtime API shape is disabled; remove the OpenAI-Beta header.".into(),
                None,
                None,
            );
            self.closing = true;
            return;
        }
        let session = Box::new(self.session.clone());
        self.emit(&ServerEvent::SessionCreated {
            session: Some(session),
        });
    }

    /// Frames queued since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<String> {
        std::mem::take(&mut self.out)
    }

    /// Record that the connection ended.
    pub(crate) fn finish(&mut self) {
        self.record(|log| log.closed = true);
    }

    /// A binary frame: the API only speaks JSON text.
    pub(crate) fn on_binary(&mut self) {
        let msg = "Binary frames are not supported; send JSON text events.";
        self.error("invalid_json", msg.into(), None, None);
    }

    /// One client text frame.
    pub(crate) fn on_text(&mut self, text: &str, now: Instant) {
        if self.mode == Mode::EchoFrames {
            // Hot path under load: one borrowing parse, no recording.
            if let Ok(ClientEvent::InputAudioBufferAppend { audio }) = serde_json::from_str(text) {
                self.echo(&audio);
                return;
            }
        }
        let raw: Value = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let msg = format!("The event is not valid JSON: {e}.");
                return self.error("invalid_json", msg, None, None);
            }
        };
        let event_id = raw
            .get("event_id")
            .and_then(Value::as_str)
            .map(String::from);
        let kind = raw.get("type").and_then(Value::as_str).map(String::from);
        tracing::trace!(kind = kind.as_deref().unwrap_or("?"), "stand-in received");
        let raw_session = raw.get("session").cloned();
        self.record(|log| log.client_events.push(raw));
        match serde_json::from_str::<ClientEvent>(text) {
            Ok(event) => self.dispatch(event, raw_session, event_id, now),
            Err(e) => {
                let rejection = classify_parse_error(kind.as_deref(), raw_session.as_ref(), &e);
                self.reject(rejection, event_id);
            }
        }
    }

    /// Act on one well-formed client event.
    fn dispatch(
        &mut self,
        event: ClientEvent<'_>,
        raw_session: Option<Value>,
        event_id: Option<String>,
        now: Instant,
    ) {
        match event {
            ClientEvent::SessionUpdate { session } => {
                let raw = raw_session.unwrap_or(Value::Null);
                match config::merge_update(&self.session, *session, &raw) {
                    Ok(merged) => {
                        self.session = merged;
                        self.arm_idle(now);
                        let session = Box::new(self.session.clone());
                        self.emit(&ServerEvent::SessionUpdated {
                            session: Some(session),
                        });
                    }
                    Err(rejection) => self.reject(rejection, event_id),
                }
            }
            ClientEvent::InputAudioBufferAppend { audio } if self.mode == Mode::EchoFrames => {
                self.echo(&audio)
            }
            ClientEvent::InputAudioBufferAppend { audio } => {
                match base64::engine::general_purpose::STANDARD.decode(audio.as_bytes()) {
                    Ok(bytes) => self.on_append(bytes, now),
                    Err(e) => {
                        self.reject(invalid("audio", format!("Invalid base64: {e}.")), event_id)
                    }
                }
            }
            ClientEvent::InputAudioBufferCommit {} if self.mode == Mode::EchoFrames => {
                tracing::debug!("echo-frames stand-in ignores input_audio_buffer.commit");
            }
            ClientEvent::InputAudioBufferCommit {} => {
                self.on_buffer_op(Input::Commit(event_id), now)
            }
            ClientEvent::InputAudioBufferClear {} => self.on_buffer_op(Input::Clear, now),
            ClientEvent::ConversationItemTruncate {
                item_id,
                content_index,
                audio_end_ms,
            } => self.truncate(&item_id, content_index, audio_end_ms, event_id),
            ClientEvent::ConversationItemCreate { item } => self.create_item(item),
            ClientEvent::ResponseCreate {} => self.response_create(event_id, now),
            ClientEvent::ResponseCancel {} => self.response_cancel(event_id),
            ClientEvent::Unknown => {
                let msg = "Unknown client event type; see the Realtime GA client events.";
                self.error("unknown_event", msg.into(), Some("type"), event_id);
            }
        }
    }

    /// When [`Conn::on_tick`] should next run: queued input, the next response chunk, an idle
    /// prompt or the session's expiry is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.input.next_due(),
            self.response_due(),
            self.idle_at,
            self.expires_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expire the session if it is time; else feed the input that is due to the VAD (a barge-in
    /// cancels before the next chunk goes out), prompt an idle caller, and send the response
    /// chunk that is due.
    pub(crate) fn on_tick(&mut self, now: Instant) {
        if self.expires_at.is_some_and(|at| at <= now) {
            return self.expire();
        }
        self.process_input(now);
        if self.idle_at.is_some_and(|at| at <= now) {
            self.idle_timeout(now);
        }
        self.send_due_chunk(now);
    }

    /// Queue one server event with a fresh `event_id`.
    pub(super) fn emit<T: Serialize + ?Sized>(&mut self, event: &T) {
        self.next_event += 1;
        let event_id = format!("event_{}", self.next_event);
        let stamped = Stamped {
            event_id: &event_id,
            event,
        };
        self.out.push(
            serde_json::to_string(&stamped).expect("server events serialize to JSON objects"),
        );
    }

    /// Queue an event the typed [`ServerEvent`] does not model (a JSON object with a `type`).
    pub(super) fn emit_json(&mut self, event: Value) {
        self.emit(&event);
    }

    /// Queue an `error` event (`invalid_request_error`) and record its code.
    pub(super) fn error(
        &mut self,
        code: &str,
        message: String,
        param: Option<&str>,
        event_id: Option<String>,
    ) {
        tracing::debug!(code, %message, "stand-in sends error");
        self.record(|log| log.errors_sent.push(code.to_string()));
        self.emit(&ServerEvent::Error {
            error: ApiError {
                kind: Some("invalid_request_error".into()),
                code: Some(code.into()),
                message,
                param: param.map(String::from),
                event_id,
            },
        });
    }

    /// Queue the `error` event for a [`Rejection`].
    pub(super) fn reject(&mut self, rejection: Rejection, event_id: Option<String>) {
        self.error(rejection.code, rejection.message, rejection.param, event_id);
    }

    /// Update this connection's [`super::ConnectionLog`], if recording.
    pub(super) fn record(&self, f: impl FnOnce(&mut super::ConnectionLog)) {
        if let Some(rec) = &self.rec {
            rec.update(f);
        }
    }

    /// The next `item_<n>` of this connection.
    pub(super) fn new_item_id(&mut self) -> String {
        self.next_item += 1;
        format!("item_{}", self.next_item)
    }

    /// The next `resp_<n>` of this connection.
    pub(super) fn new_response_id(&mut self) -> String {
        self.next_response += 1;
        format!("resp_{}", self.next_response)
    }
}

/// An `invalid_value` rejection naming `param`.
pub(super) fn invalid(param: &'static str, message: String) -> Rejection {
    Rejection {
        code: "invalid_value",
        message,
        param: Some(param),
    }
}

/// A frame that is JSON but not a valid client event: name what is wrong as the real API does.
fn classify_parse_error(
    kind: Option<&str>,
    session: Option<&Value>,
    e: &serde_json::Error,
) -> Rejection {
    let missing = |param: &'static str| Rejection {
        code: "missing_required_parameter",
        message: format!("Missing required parameter: '{param}'."),
        param: Some(param),
    };
    match kind {
        None => missing("type"),
        Some("session.update") if session.and_then(|s| s.get("type")).is_none() => {
            missing("session.type")
        }
        Some(kind) => Rejection {
            code: "invalid_value",
            message: format!("Invalid '{kind}' event: {e}."),
            param: None,
        },
    }
}
