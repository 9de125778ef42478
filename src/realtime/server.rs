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
