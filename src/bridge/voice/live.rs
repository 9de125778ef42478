//! GPT-Live (`OPENAI_API=live`): its wire format to and from the bridge's vocabulary.
//!
//! Source: openai-python 3.51 `types/live/` (see `docs/protocols/gpt-live.md`). Client side:
//! the session's first `session.update` becomes `session.start` (model, instructions,
//! `audio/pcmu` at 8000 Hz, voice, and a Responses delegation carrying the function and MCP
//! tools); caller audio `session.input_audio.append`; a user message (the greeting prompt)
//! `session.commentary.append` (spoken context), a system message `session.thinking.append`
//! (silent context); a function call's output `response.item.create`; `response.create` as is.
//! Truncates, response cancels and buffer commits have no equivalent (the server handles
//! interruption) and are dropped; so is a later `session.update` (voice, format and instructions
//! cannot change after `session.start`: the bridge starts a Live session only once the call's
//! own settings are known).
//!
//! Server side: GPT-Live has no items, responses or speech events, only audio and transcript
//! deltas. The decoder makes the bridge's events from them: an assistant turn (item
//! `live_out_N`, response `live_resp_N`) opens with its first audio or transcript delta and is
//! done after [`ASSISTANT_QUIET`] without either (or when the caller's words arrive, or a
//! barge-in cuts it); a caller turn (`live_in_N`) gathers `session.input_transcript.delta`s and
//! is complete when the assistant answers or after [`CALLER_QUIET`] without a delta, the SDK's
//! transcript grouper's rule of thumb. A function call arrives as `response.event` carrying a
//! Responses stream event `response.output_item.done` with a `function_call` item, and belongs
//! to the assistant turn in progress (or opens one), so `end_call` hangs up once that turn's
//! audio has played.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::{debug, info};

use super::Step;
use crate::config::Config;
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::server::{ApiError, ResponseInfo};
use crate::realtime::session::Tool;
use crate::realtime::{ClientEvent, ServerEvent};

/// An assistant turn is over after this long without audio or transcript from the server.
pub(crate) const ASSISTANT_QUIET: Duration = Duration::from_millis(800);
/// A caller turn is complete after this long without a transcript delta (the SDK grouper's
/// `min_turn_separation_ms` is 500 ms of session time; deltas come in bursts, so a little more).
pub(crate) const CALLER_QUIET: Duration = Duration::from_millis(1500);

const APPEND_HEAD: &str = r#"{"type":"session.input_audio.append","audio":""#;
const APPEND_TAIL: &str = r#""}"#;

/// `session.input_audio.append` carrying checked base64 `audio` (see
/// [`crate::realtime::append_json`], whose shortcut this shares).
pub(crate) fn append_json(audio: &str) -> String {
    let mut json = String::with_capacity(APPEND_HEAD.len() + audio.len() + APPEND_TAIL.len());
    json.push_str(APPEND_HEAD);
    json.push_str(audio);
    json.push_str(APPEND_TAIL);
    json
}

/// `session.close`: the server answers `session.closed` with the reason and usage.
pub(crate) fn close_json() -> String {
    json!({"type": "session.close"}).to_string()
}

/// Client side of one call (per session: [`Encoder::new_session`]).
pub(crate) struct Encoder {
    model: String,
    delegate_model: String,
    /// `session.start` went out on this session.
    started: bool,
    /// The last event was spoken context: a `response.create` right after it is not needed
    /// (commentary is spoken by itself) and would ask the Responses backend for a second answer.
    after_commentary: bool,
}

impl Encoder {
    pub fn new(config: &Config) -> Self {
        Encoder {
            model: config.openai_live_model.clone(),
            delegate_model: config.openai_live_delegate_model.clone(),
            started: false,
            after_commentary: false,
        }
    }

    pub fn new_session(&mut self) {
        self.started = false;
        self.after_commentary = false;
    }

    /// The Live frames for one bridge client event.
    pub fn encode(&mut self, event: ClientEvent<'_>) -> Vec<String> {
        let after_commentary = std::mem::take(&mut self.after_commentary);
        let frame = match event {
            ClientEvent::SessionUpdate { session } if !self.started => {
                self.started = true;
                self.session_start(&session)
            }
            ClientEvent::SessionUpdate { .. } => {
                debug!("GPT-Live cannot change a started session's voice or instructions: update not sent");
                return Vec::new();
            }
            ClientEvent::InputAudioBufferAppend { audio } => append_json(&audio),
            ClientEvent::ConversationItemCreate {
                item: Item::FunctionCallOutput { call_id, output },
            } => json!({
                "type": "response.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            })
            .to_string(),
            ClientEvent::ConversationItemCreate {
                item: Item::Message { role, content },
            } => {
                let text: String = content
                    .iter()
                    .map(|part| match part {
                        ContentPart::InputText { text } | ContentPart::OutputText { text } => {
                            text.as_str()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                if role == "system" {
                    json!({"type": "session.thinking.append", "content": text, "delegation_id": null})
                        .to_string()
                } else {
                    self.after_commentary = true;
                    json!({"type": "session.commentary.append", "content": text, "delegation_id": null})
                        .to_string()
                }
            }
            ClientEvent::ResponseCreate {} if after_commentary => return Vec::new(),
            ClientEvent::ResponseCreate {} => json!({"type": "response.create"}).to_string(),
            ClientEvent::ConversationItemTruncate { .. }
            | ClientEvent::ResponseCancel {}
            | ClientEvent::InputAudioBufferCommit {}
            | ClientEvent::InputAudioBufferClear {}
            | ClientEvent::Unknown => {
                debug!("no GPT-Live equivalent: client event not sent");
                return Vec::new();
            }
        };
        vec![frame]
    }

    /// `session.start` from the bridge's session: `session_config_param.py`.
    fn session_start(&self, session: &crate::realtime::Session) -> String {
        let voice = session
            .audio
            .as_ref()
            .and_then(|a| a.output.as_ref())
            .and_then(|o| o.voice.clone());
        let tools: Vec<Value> = session
            .tools
            .iter()
            .flatten()
            .filter_map(|tool| match tool {
                Tool::Function(f) => Some(json!({
                    "type": "function",
                    "name": f.name,
                    "description": f.description,
                    "parameters": f.parameters,
                })),
                Tool::Mcp(_) => serde_json::to_value(tool).ok(),
            })
            .collect();
        let responses = json!({ "model": self.delegate_model, "tools": tools });
        let mut output = json!({});
        if let Some(voice) = voice {
            output["voice"] = json!(voice);
        }
        json!({
            "type": "session.start",
            "session": {
                "model": self.model,
                "instructions": session.instructions,
                "audio": {
                    "format": {"type": "audio/pcmu", "rate": 8000},
                    "output": output,
                },
                "delegation": {"type": "responses", "responses": responses},
            }
        })
        .to_string()
    }
}

/// An assistant turn the decoder made up.
#[derive(Debug)]
struct OutTurn {
    item_id: String,
    response_id: String,
    text: String,
    last_at: Instant,
    /// A barge-in ended it: late audio of it is still given its id (the bridge drops it) until
    /// the server goes quiet.
    cut: bool,
}

#[derive(Debug)]
struct InTurn {
    item_id: String,
    text: String,
    last_at: Instant,
}

/// Server side of one call.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    turns: u64,
    out: Option<OutTurn>,
    caller: Option<InTurn>,
}

/// The fields of a Live server event the decoder reads (all optional: each type has some).
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    event: Option<Value>,
}

#[derive(Deserialize)]
struct Usage {
    seconds: f64,
}

impl Decoder {
    /// What one Live server frame means to the bridge.
    pub fn decode<'a>(&mut self, text: &'a str, now: Instant) -> Vec<Step<'a>> {
        let probe = match serde_json::from_str::<Probe>(text) {
            Ok(probe) => probe,
            Err(e) => return vec![Step::Malformed(format!("not a GPT-Live event: {e}"))],
        };
        let mut steps = Vec::new();
        match probe.kind.as_ref() {
            "session.output_audio.delta" => {
                let Some(delta) = probe.delta else {
                    return vec![Step::Malformed("output audio without delta".into())];
                };
                let item_id = self.assistant(now, &mut steps);
                steps.push(Step::Audio {
                    item_id: Cow::Owned(item_id),
                    delta,
                });
            }
            "session.output_transcript.delta" => {
                let delta = probe.delta.unwrap_or_default();
                let item_id = self.assistant(now, &mut steps);
                if let Some(out) = self.out.as_mut() {
                    out.text.push_str(&delta);
                }
                steps.push(Step::Event(ServerEvent::OutputTranscriptDelta {
                    response_id: Cow::Owned(self.response_id()),
                    item_id: Cow::Owned(item_id),
                    output_index: 0,
                    content_index: 0,
                    delta,
                }));
            }
            "session.input_transcript.delta" => {
                let delta = probe.delta.unwrap_or_default();
                // The server hears the caller: whatever it was saying is over.
                self.end_assistant(&mut steps, "completed");
                if self.caller.is_none() {
                    self.turns += 1;
                    let item_id = format!("live_in_{}", self.turns);
                    steps.push(Step::CallerTurn {
                        item_id: item_id.clone(),
                    });
                    self.caller = Some(InTurn {
                        item_id,
                        text: String::new(),
                        last_at: now,
                    });
                }
                let caller = self.caller.as_mut().expect("set above");
                caller.text.push_str(&delta);
                caller.last_at = now;
            }
            "response.event" => {
                if let Some(call) = probe.event.as_ref().and_then(function_call) {
                    let item_id = self.assistant(now, &mut steps);
                    let response_id = self.response_id();
                    steps.push(Step::Event(ServerEvent::FunctionCallArgumentsDone {
                        response_id: Cow::Owned(response_id),
                        item_id: Cow::Owned(item_id),
                        output_index: 0,
                        call_id: Cow::Owned(call.0),
                        name: Cow::Owned(call.1),
                        arguments: Cow::Owned(call.2),
                    }));
                } else {
                    let kind = probe
                        .event
                        .as_ref()
                        .and_then(|e| e.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("-");
                    debug!(kind, "delegated Responses event");
                }
            }
            "session.started" => {
                steps.push(Step::Event(ServerEvent::SessionUpdated { session: None }))
            }
            "session.closed" => {
                self.finish(&mut steps);
                steps.push(Step::Closed {
                    reason: probe.reason.unwrap_or_else(|| "-".into()),
                    usage_seconds: probe.usage.map(|u| u.seconds),
                });
            }
            "error" => steps.push(Step::Event(ServerEvent::Error {
                error: probe.error.unwrap_or_default(),
            })),
            "info" => steps.push(Step::Info {
                code: probe.code.unwrap_or_default(),
                message: probe.message.unwrap_or_default(),
            }),
            other => steps.push(Step::Unknown(other.to_string())),
        }
        steps
    }

    /// When the next made-up turn end is due.
    pub fn deadline(&self) -> Option<Instant> {
        let out = self.out.as_ref().map(|o| o.last_at + ASSISTANT_QUIET);
        let caller = self.caller.as_ref().map(|c| c.last_at + CALLER_QUIET);
        out.into_iter().chain(caller).min()
    }

    /// Turns that have gone quiet by `now`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Step<'static>> {
        let mut steps = Vec::new();
        if self
            .out
            .as_ref()
            .is_some_and(|o| o.last_at + ASSISTANT_QUIET <= now)
        {
            if self.out.as_ref().is_some_and(|o| o.cut) {
                self.out = None;
            } else {
                self.end_assistant(&mut steps, "completed");
            }
        }
        if self
            .caller
            .as_ref()
            .is_some_and(|c| c.last_at + CALLER_QUIET <= now)
        {
            self.complete_caller(&mut steps);
        }
        steps
    }

    /// The bridge heard the caller barge in: the assistant's turn ends here (cancelled); its
    /// late audio keeps its id, so the bridge keeps dropping it.
    pub fn barged_in(&mut self) -> Vec<Step<'static>> {
        let mut steps = Vec::new();
        if self.out.as_ref().is_some_and(|o| !o.cut) {
            let out = self.out.as_mut().expect("checked");
            steps.push(Step::Event(ServerEvent::OutputTranscriptDone {
                response_id: Cow::Owned(out.response_id.clone()),
                item_id: Cow::Owned(out.item_id.clone()),
                output_index: 0,
                content_index: 0,
                transcript: Cow::Owned(out.text.clone()),
            }));
            steps.push(Step::Event(ServerEvent::ResponseDone {
                response: ResponseInfo {
                    id: out.response_id.clone(),
                    status: "cancelled".into(),
                },
            }));
            out.cut = true;
        }
        steps
    }

    /// Everything open is over (the session closed).
    pub fn finish<'a>(&mut self, steps: &mut Vec<Step<'a>>) {
        self.end_assistant(steps, "completed");
        self.complete_caller(steps);
    }

    fn response_id(&self) -> String {
        self.out
            .as_ref()
            .map(|o| o.response_id.clone())
            .unwrap_or_default()
    }

    /// The current assistant turn's item id, opening a turn (and completing the caller's) if
    /// none is open.
    fn assistant<'a>(&mut self, now: Instant, steps: &mut Vec<Step<'a>>) -> String {
        let open = self
            .out
            .as_ref()
            .is_some_and(|o| !o.cut || now.saturating_duration_since(o.last_at) < ASSISTANT_QUIET);
        if !open {
            self.out = None;
            self.complete_caller(steps);
            self.turns += 1;
            let out = OutTurn {
                item_id: format!("live_out_{}", self.turns),
                response_id: format!("live_resp_{}", self.turns),
                text: String::new(),
                last_at: now,
                cut: false,
            };
            steps.push(Step::Event(ServerEvent::ResponseCreated {
                response: ResponseInfo {
                    id: out.response_id.clone(),
                    status: "in_progress".into(),
                },
            }));
            self.out = Some(out);
        }
        let out = self.out.as_mut().expect("set above");
        out.last_at = now;
        out.item_id.clone()
    }

    fn end_assistant<'a>(&mut self, steps: &mut Vec<Step<'a>>, status: &str) {
        let Some(out) = self.out.take() else {
            return;
        };
        if out.cut {
            return; // already reported as cancelled
        }
        steps.push(Step::Event(ServerEvent::OutputAudioDone {
            response_id: Cow::Owned(out.response_id.clone()),
            item_id: Cow::Owned(out.item_id.clone()),
            output_index: 0,
            content_index: 0,
        }));
        steps.push(Step::Event(ServerEvent::OutputTranscriptDone {
            response_id: Cow::Owned(out.response_id.clone()),
            item_id: Cow::Owned(out.item_id),
            output_index: 0,
            content_index: 0,
            transcript: Cow::Owned(out.text),
        }));
        steps.push(Step::Event(ServerEvent::ResponseDone {
            response: ResponseInfo {
                id: out.response_id,
                status: status.into(),
            },
        }));
    }

    fn complete_caller<'a>(&mut self, steps: &mut Vec<Step<'a>>) {
        if let Some(caller) = self.caller.take() {
            info!(item_id = %caller.item_id, "GPT-Live caller turn complete");
            steps.push(Step::Event(ServerEvent::InputTranscriptionCompleted {
                item_id: Cow::Owned(caller.item_id),
                content_index: 0,
                transcript: Cow::Owned(caller.text),
            }));
        }
    }
}

/// `(call_id, name, arguments)` of a Responses stream event that completes a function call:
/// `response.output_item.done` with `item.type == "function_call"`.
fn function_call(event: &Value) -> Option<(String, String, String)> {
    if event.get("type")?.as_str()? != "response.output_item.done" {
        return None;
    }
    let item = event.get("item")?;
    if item.get("type")?.as_str()? != "function_call" {
        return None;
    }
    let field = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_string);
    Some((
        field("call_id")?,
        field("name")?,
        field("arguments").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(steps: &[Step<'_>]) -> Vec<String> {
        steps
            .iter()
            .map(|s| match s {
                Step::Audio { item_id, .. } => format!("audio {item_id}"),
                Step::Event(e) => serde_json::to_value(e).unwrap()["type"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                Step::CallerTurn { item_id } => format!("caller {item_id}"),
                Step::Closed { reason, .. } => format!("closed {reason}"),
                Step::Malformed(_) => "malformed".into(),
                Step::Info { .. } => "info".into(),
                Step::Unknown(kind) => format!("unknown {kind}"),
            })
            .collect()
    }

    const AUDIO: &str = r#"{"type":"session.output_audio.delta","delta":"//8="}"#;

    #[test]
    fn audio_opens_a_turn_that_ends_when_the_server_goes_quiet() {
        let mut d = Decoder::default();
        let t0 = Instant::now();
        assert_eq!(
            kinds(&d.decode(AUDIO, t0)),
            ["response.created", "audio live_out_1"]
        );
        assert_eq!(kinds(&d.decode(AUDIO, t0)), ["audio live_out_1"]);
        let words = r#"{"type":"session.output_transcript.delta","delta":"Hello","start_ms":0,"end_ms":300,"event_id":"e"}"#;
        assert_eq!(
            kinds(&d.decode(words, t0)),
            ["response.output_audio_transcript.delta"]
        );
        assert_eq!(d.deadline(), Some(t0 + ASSISTANT_QUIET));
        assert!(d.on_timer(t0 + ASSISTANT_QUIET / 2).is_empty());
        let done = d.on_timer(t0 + ASSISTANT_QUIET);
        assert_eq!(
            kinds(&done),
            [
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.done"
            ]
        );
        // The next audio is a new turn.
        assert_eq!(
            kinds(&d.decode(AUDIO, t0 + Duration::from_secs(5))),
            ["response.created", "audio live_out_2"]
        );
    }

    #[test]
    fn caller_words_end_the_assistant_turn_and_complete_when_answered() {
        let mut d = Decoder::default();
        let t0 = Instant::now();
        d.decode(AUDIO, t0);
        let heard = r#"{"type":"session.input_transcript.delta","delta":"book a table","start_ms":10,"end_ms":900,"event_id":"e"}"#;
        assert_eq!(
            kinds(&d.decode(heard, t0)),
            [
                "response.output_audio.done",
                "response.output_audio_transcript.done",
                "response.done",
                "caller live_in_2"
            ]
        );
        let answer = d.decode(AUDIO, t0 + Duration::from_millis(100));
        assert_eq!(
            kinds(&answer),
            [
                "conversation.item.input_audio_transcription.completed",
                "response.created",
                "audio live_out_3"
            ]
        );
        let Step::Event(ServerEvent::InputTranscriptionCompleted { transcript, .. }) = &answer[0]
        else {
            panic!()
        };
        assert_eq!(transcript, "book a table");
    }

    #[test]
    fn a_barge_in_cancels_the_turn_and_its_late_audio_keeps_the_muted_id() {
        let mut d = Decoder::default();
        let t0 = Instant::now();
        d.decode(AUDIO, t0);
        assert_eq!(
            kinds(&d.barged_in()),
            ["response.output_audio_transcript.done", "response.done"]
        );
        assert!(d.barged_in().is_empty(), "reported once");
        let late = t0 + ASSISTANT_QUIET / 2;
        assert_eq!(kinds(&d.decode(AUDIO, late)), ["audio live_out_1"]);
        // After a quiet gap the server's next words are a new turn.
        let next = late + ASSISTANT_QUIET;
        assert_eq!(
            kinds(&d.decode(AUDIO, next)),
            ["response.created", "audio live_out_2"]
        );
    }

    #[test]
    fn a_function_call_belongs_to_the_turn_it_arrives_in() {
        let mut d = Decoder::default();
        let t0 = Instant::now();
        d.decode(AUDIO, t0);
        let call = r#"{"type":"response.event","event_id":"e","event":{"type":"response.output_item.done","output_index":0,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"end_call","arguments":"{}","status":"completed"}}}"#;
        let steps = d.decode(call, t0);
        let [Step::Event(ServerEvent::FunctionCallArgumentsDone {
            response_id,
            call_id,
            name,
            ..
        })] = &steps[..]
        else {
            panic!("{:?}", kinds(&steps))
        };
        assert_eq!(
            (&**response_id, &**call_id, &**name),
            ("live_resp_1", "call_1", "end_call")
        );
        let done = d.on_timer(t0 + ASSISTANT_QUIET);
        let Some(Step::Event(ServerEvent::ResponseDone { response })) = done.last() else {
            panic!()
        };
        assert_eq!(response.id, "live_resp_1");
        // Without a turn in progress a call opens one.
        let later = t0 + Duration::from_secs(9);
        assert_eq!(
            kinds(&d.decode(call, later)),
            ["response.created", "response.function_call_arguments.done"]
        );
    }

    #[test]
    fn closed_errors_info_and_unknown_events_are_reported() {
        let mut d = Decoder::default();
        let t0 = Instant::now();
        let closed = r#"{"type":"session.closed","event_id":"e","reason":"expired","session":{},"usage":{"seconds":61.5}}"#;
        let steps = d.decode(closed, t0);
        let Step::Closed {
            reason,
            usage_seconds,
        } = &steps[0]
        else {
            panic!()
        };
        assert_eq!((reason.as_str(), *usage_seconds), ("expired", Some(61.5)));
        let error = r#"{"type":"error","event_id":"e","error":{"type":"invalid_request_error","code":"bad","message":"no"}}"#;
        assert_eq!(kinds(&d.decode(error, t0)), ["error"]);
        assert_eq!(
            kinds(&d.decode(
                r#"{"type":"info","code":"c","message":"m","event_id":"e"}"#,
                t0
            )),
            ["info"]
        );
        assert_eq!(
            kinds(&d.decode(r#"{"type":"session.usage.updated"}"#, t0)),
            ["unknown session.usage.updated"]
        );
        assert_eq!(kinds(&d.decode("nope", t0)), ["malformed"]);
    }

    #[test]
    fn the_first_update_starts_the_session_and_realtime_only_events_are_dropped() {
        let config = Config {
            openai_live_delegate_model: "gpt-5-mini".into(),
            ..Config::default()
        };
        let mut e = Encoder::new(&config);
        let session = crate::bridge::call_session(&config, &Default::default(), None);
        let update = ClientEvent::SessionUpdate {
            session: Box::new(session.clone()),
        };
        let start: Value = serde_json::from_str(&e.encode(update.clone())[0]).unwrap();
        assert_eq!(start["type"], "session.start");
        assert_eq!(start["session"]["model"], "gpt-live-1");
        assert_eq!(
            start["session"]["audio"]["format"],
            json!({"type": "audio/pcmu", "rate": 8000})
        );
        assert_eq!(start["session"]["audio"]["output"]["voice"], config.voice);
        assert_eq!(start["session"]["delegation"]["type"], "responses");
        assert_eq!(
            start["session"]["delegation"]["responses"]["model"],
            "gpt-5-mini"
        );
        assert_eq!(
            start["session"]["delegation"]["responses"]["tools"][0]["name"],
            "end_call"
        );
        assert!(e.encode(update).is_empty(), "no second start");
        let truncate = ClientEvent::ConversationItemTruncate {
            item_id: "live_out_1".into(),
            content_index: 0,
            audio_end_ms: 10,
        };
        assert!(e.encode(truncate).is_empty());
        let greet = e.encode(ClientEvent::user_text("Greet the caller"));
        assert!(greet[0].contains("session.commentary.append"), "{greet:?}");
        assert!(e.encode(ClientEvent::ResponseCreate {}).is_empty());
        assert_eq!(
            e.encode(ClientEvent::ResponseCreate {}),
            [r#"{"type":"response.create"}"#]
        );
        let output = ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: "call_1".into(),
                output: "{}".into(),
            },
        };
        let sent: Value = serde_json::from_str(&e.encode(output)[0]).unwrap();
        assert_eq!(sent["type"], "response.item.create");
        assert_eq!(sent["item"]["call_id"], "call_1");
        assert_eq!(
            append_json("//8="),
            r#"{"type":"session.input_audio.append","audio":"//8="}"#
        );
    }
}
