//! Server events: what the Realtime API sends (and what the stand-in produces).
//!
//! Shapes follow `PROTOCOLS.md` § "OpenAI Realtime API — GA only", "Server events a relay handles".
//! Only the fields the relay uses are typed; everything else (including `event_id`) is ignored on
//! input. Unknown event types parse as [`ServerEvent::Other`]; the audio `delta` borrows from the frame.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::Session;

/// A server event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent<'a> {
    /// `session` is `None` when it does not match our model (the relay never needs its content).
    #[serde(rename = "session.created")]
    SessionCreated {
        #[serde(default, deserialize_with = "session_if_valid")]
        session: Option<Box<Session>>,
    },
    /// The `session.update` was applied.
    #[serde(rename = "session.updated")]
    SessionUpdated {
        #[serde(default, deserialize_with = "session_if_valid")]
        session: Option<Box<Session>>,
    },
    /// Turn detection heard the caller start speaking; `audio_start_ms` counts from the first append.
    #[serde(rename = "input_audio_buffer.speech_started")]
    SpeechStarted {
        #[serde(default)]
        audio_start_ms: u64,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    #[serde(rename = "input_audio_buffer.speech_stopped")]
    SpeechStopped {
        #[serde(default)]
        audio_end_ms: u64,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    /// Server VAD heard no speech for `idle_timeout_ms` after the last response played; the
    /// server commits the silent audio and responds (`input_audio_buffer_timeout_triggered.py`).
    #[serde(rename = "input_audio_buffer.timeout_triggered")]
    TimeoutTriggered {
        #[serde(default)]
        audio_start_ms: u64,
        #[serde(default)]
        audio_end_ms: u64,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    #[serde(rename = "input_audio_buffer.committed")]
    Committed {
        #[serde(default, borrow)]
        previous_item_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    /// Interim caller transcription text.
    #[serde(rename = "conversation.item.input_audio_transcription.delta")]
    InputTranscriptionDelta {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        content_index: u32,
        #[serde(borrow)]
        delta: Cow<'a, str>,
    },
    /// Final caller transcription of one utterance.
    #[serde(rename = "conversation.item.input_audio_transcription.completed")]
    InputTranscriptionCompleted {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        content_index: u32,
        #[serde(borrow)]
        transcript: Cow<'a, str>,
    },
    #[serde(rename = "conversation.item.input_audio_transcription.failed")]
    InputTranscriptionFailed {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        error: ApiError,
    },
    #[serde(rename = "response.created")]
    ResponseCreated { response: ResponseInfo },
    /// A chunk of assistant audio: base64 μ-law, any length.
    #[serde(rename = "response.output_audio.delta")]
    OutputAudioDelta {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        #[serde(borrow)]
        delta: Cow<'a, str>,
    },
    #[serde(rename = "response.output_audio.done")]
    OutputAudioDone {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
    },
    #[serde(rename = "response.output_audio_transcript.delta")]
    OutputTranscriptDelta {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        #[serde(borrow)]
        delta: Cow<'a, str>,
    },
    /// The full text of what the assistant's audio says (before any truncation).
    #[serde(rename = "response.output_audio_transcript.done")]
    OutputTranscriptDone {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        content_index: u32,
        #[serde(borrow)]
        transcript: Cow<'a, str>,
    },
    /// The model called a function tool; `arguments` is a JSON string.
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        #[serde(borrow)]
        call_id: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        arguments: Cow<'a, str>,
    },
    /// An output item of a response is complete: a `function_call` (the model's call, with its
    /// final arguments), an `mcp_call` (run by the API, with its output or error), a message, …
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        #[serde(default, borrow)]
        response_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
        item: OutputItem,
    },
    /// An item is complete in the conversation; MCP tool lists (`mcp_list_tools`) arrive this way.
    #[serde(rename = "conversation.item.done")]
    ConversationItemDone { item: OutputItem },
    /// The API started listing an MCP server's tools (`mcp_list_tools_in_progress.py`).
    #[serde(rename = "mcp_list_tools.in_progress")]
    McpListToolsInProgress {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    /// An MCP server's tools are listed (`mcp_list_tools_completed.py`).
    #[serde(rename = "mcp_list_tools.completed")]
    McpListToolsCompleted {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    /// Listing an MCP server's tools failed: the model cannot use them (`mcp_list_tools_failed.py`).
    #[serde(rename = "mcp_list_tools.failed")]
    McpListToolsFailed {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
    },
    /// The API is calling an MCP tool (`response_mcp_call_in_progress.py`).
    #[serde(rename = "response.mcp_call.in_progress")]
    McpCallInProgress {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
    },
    /// An MCP tool call succeeded; its output is on the `mcp_call` item.
    #[serde(rename = "response.mcp_call.completed")]
    McpCallCompleted {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
    },
    /// An MCP tool call failed; its error is on the `mcp_call` item.
    #[serde(rename = "response.mcp_call.failed")]
    McpCallFailed {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        output_index: u32,
    },
    /// The response finished: `completed`, `cancelled`, `failed` or `incomplete`.
    #[serde(rename = "response.done")]
    ResponseDone { response: ResponseInfo },
    /// A truncate was applied.
    #[serde(rename = "conversation.item.truncated")]
    ItemTruncated {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        #[serde(default)]
        content_index: u32,
        audio_end_ms: u64,
    },
    /// Something the client sent was rejected, or the server failed.
    #[serde(rename = "error")]
    Error { error: ApiError },
    /// Every other type (`rate_limits.updated`, `conversation.item.added`, …): ignored.
    #[serde(other)]
    Other,
}

/// A conversation item as `response.output_item.done` / `conversation.item.done` carry it, for
/// the types the relay reads (openai-python 3.51 `types/realtime/`:
/// `realtime_conversation_item_function_call.py`, `realtime_mcp_tool_call.py`,
/// `realtime_mcp_list_tools.py`); every other type is [`OutputItem::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model calls a function tool; `arguments` is a JSON string.
    FunctionCall {
        #[serde(default)]
        call_id: String,
        name: String,
        #[serde(default)]
        arguments: String,
        /// `completed`, `incomplete` or `in_progress`.
        #[serde(default)]
        status: Option<String>,
    },
    /// A call the API made to an MCP server's tool.
    McpCall {
        #[serde(default)]
        id: String,
        server_label: String,
        name: String,
        #[serde(default)]
        arguments: String,
        #[serde(default)]
        output: Option<String>,
        /// `{"type": "protocol_error"|"tool_execution_error"|"http_error", …}`.
        #[serde(default)]
        error: Option<serde_json::Value>,
    },
    /// The tools an MCP server offers.
    McpListTools {
        #[serde(default)]
        id: Option<String>,
        server_label: String,
        #[serde(default)]
        tools: Vec<McpToolInfo>,
    },
    /// Messages, function call outputs, approval requests, …
    #[serde(other)]
    Other,
}

/// One tool of an `mcp_list_tools` item (only its name is read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct McpToolInfo {
    pub name: String,
}

/// Hot-path view of any server event: its `type` and, for audio deltas, `item_id` and `delta`.
/// One flat pass, no buffering; callers parse [`ServerEvent`] for every other type.
#[derive(Debug, Deserialize)]
pub struct EventProbe<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "crate::borrowed::optional_str")]
    pub item_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "crate::borrowed::optional_str")]
    pub delta: Option<Cow<'a, str>>,
}

/// `type` of an assistant audio chunk, the one event on the per-frame path.
pub const OUTPUT_AUDIO_DELTA: &str = "response.output_audio.delta";

/// The `response` object of `response.created` / `response.done` (only the fields we use).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseInfo {
    #[serde(default)]
    pub id: String,
    /// `in_progress`, `completed`, `cancelled`, `failed`, `incomplete`.
    #[serde(default)]
    pub status: String,
}

/// The `error` object: `{"type","code","message","param","event_id"}`, all optional but `message`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
}

/// A session object we cannot model (a newer field shape) must not make the event unreadable.
fn session_if_valid<'de, D>(d: D) -> Result<Option<Box<Session>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

impl ServerEvent<'_> {
    /// Serialize to a JSON text frame (stand-in side).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_server_events_parse_to_their_variants() {
        let samples = [
            r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"item_2","event_id":"e1"}"#,
            r#"{"type":"input_audio_buffer.speech_stopped","audio_end_ms":2000,"item_id":"item_2"}"#,
            r#"{"type":"input_audio_buffer.committed","previous_item_id":null,"item_id":"item_2"}"#,
            r#"{"type":"input_audio_buffer.timeout_triggered","audio_start_ms":2000,"audio_end_ms":10000,"item_id":"item_5"}"#,
            r#"{"type":"conversation.item.input_audio_transcription.delta","item_id":"item_2","content_index":0,"delta":"Hel"}"#,
            r#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"item_2","content_index":0,"transcript":"Hello","usage":{"type":"duration","seconds":1}}"#,
            r#"{"type":"conversation.item.input_audio_transcription.failed","item_id":"item_2","content_index":0,"error":{"message":"x"}}"#,
            r#"{"type":"response.created","response":{"id":"resp_1","status":"in_progress","output":[]}}"#,
            r#"{"type":"response.output_audio.delta","response_id":"resp_1","item_id":"item_3","output_index":0,"content_index":0,"delta":"//8="}"#,
            r#"{"type":"response.output_audio.done","response_id":"resp_1","item_id":"item_3","output_index":0,"content_index":0}"#,
            r#"{"type":"response.output_audio_transcript.delta","response_id":"resp_1","item_id":"item_3","output_index":0,"content_index":0,"delta":"Hi th"}"#,
            r#"{"type":"response.output_audio_transcript.done","response_id":"resp_1","item_id":"item_3","output_index":0,"content_index":0,"transcript":"Hi there"}"#,
            r#"{"type":"response.function_call_arguments.done","response_id":"resp_1","item_id":"item_4","output_index":0,"call_id":"call_1","name":"end_call","arguments":"{}"}"#,
            r#"{"type":"response.done","response":{"id":"resp_1","status":"completed"}}"#,
            r#"{"type":"response.output_item.done","response_id":"resp_1","output_index":1,"item":{"id":"item_5","type":"function_call","status":"completed","name":"lookup_order","call_id":"call_5","arguments":"{}"}}"#,
            r#"{"type":"response.output_item.done","response_id":"resp_1","output_index":0,"item":{"id":"item_6","type":"mcp_call","server_label":"crm","name":"find_customer","arguments":"{}","output":"found"}}"#,
            r#"{"type":"conversation.item.done","item":{"id":"item_7","type":"mcp_list_tools","server_label":"crm","tools":[{"name":"find_customer","input_schema":{}}]}}"#,
            r#"{"type":"mcp_list_tools.in_progress","item_id":"item_7"}"#,
            r#"{"type":"mcp_list_tools.completed","item_id":"item_7"}"#,
            r#"{"type":"mcp_list_tools.failed","item_id":"item_7"}"#,
            r#"{"type":"response.mcp_call.in_progress","item_id":"item_6","output_index":0}"#,
            r#"{"type":"response.mcp_call.completed","item_id":"item_6","output_index":0}"#,
            r#"{"type":"response.mcp_call.failed","item_id":"item_6","output_index":0}"#,
            r#"{"type":"error","error":{"type":"invalid_request_error","code":"bad","message":"no","param":null,"event_id":"e9"}}"#,
        ];
        for sample in samples {
            let event: ServerEvent = serde_json::from_str(sample).expect(sample);
            assert_ne!(event, ServerEvent::Other, "{sample}");
            let json = event.to_json();
            let again: ServerEvent = serde_json::from_str(&json).unwrap();
            assert_eq!(event, again, "{sample}");
        }
    }

    #[test]
    fn events_with_fields_we_do_not_model_still_parse() {
        let odd = r#"{"type":"session.updated","session":{"audio":{"input":{"format":"weird"}}}}"#;
        assert!(matches!(
            serde_json::from_str::<ServerEvent>(odd).unwrap(),
            ServerEvent::SessionUpdated { session: None }
        ));
        let bare = r#"{"type":"input_audio_buffer.speech_started","item_id":"item_9"}"#;
        assert!(matches!(
            serde_json::from_str::<ServerEvent>(bare).unwrap(),
            ServerEvent::SpeechStarted {
                audio_start_ms: 0,
                ..
            }
        ));
    }

    #[test]
    fn the_probe_borrows_an_audio_delta() {
        let e = r#"{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"item_3","output_index":0,"content_index":0,"delta":"//8="}"#;
        let probe: EventProbe = serde_json::from_str(e).unwrap();
        assert_eq!(probe.kind, OUTPUT_AUDIO_DELTA);
        assert!(matches!(probe.item_id, Some(Cow::Borrowed("item_3"))));
        assert!(matches!(probe.delta, Some(Cow::Borrowed("//8="))));
    }

    #[test]
    fn unknown_server_events_are_other() {
        for sample in [
            r#"{"type":"rate_limits.updated","rate_limits":[]}"#,
            r#"{"type":"conversation.item.added","item":{}}"#,
            r#"{"type":"response.audio.delta","delta":"beta shape"}"#,
        ] {
            assert_eq!(
                serde_json::from_str::<ServerEvent>(sample).unwrap(),
                ServerEvent::Other
            );
        }
    }
}
