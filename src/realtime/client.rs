//! Client events: what the relay sends to the Realtime API (and what the stand-in parses).
//!
//! Shapes follow `PROTOCOLS.md` § "OpenAI Realtime API — GA only", "Client events a relay sends".

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::Session;

/// A client event, tagged by `type`. Unknown types (stand-in side) parse as [`ClientEvent::Unknown`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientEvent<'a> {
    /// Configure the session; sent first on every upstream socket.
    #[serde(rename = "session.update")]
    SessionUpdate { session: Box<Session> },
    /// Caller audio: base64 μ-law passed through from Twilio unchanged.
    #[serde(rename = "input_audio_buffer.append")]
    InputAudioBufferAppend {
        #[serde(borrow)]
        audio: Cow<'a, str>,
    },
    /// Commit the audio appended and not yet committed as one user item: the server answers
    /// `input_audio_buffer.committed` (and transcribes the item if transcription is on), or an
    /// `error` with code `input_audio_buffer_commit_empty` when less than 100 ms is buffered.
    /// Never creates a response (openai-python `types/realtime/input_audio_buffer_commit_event_param.py`).
    #[serde(rename = "input_audio_buffer.commit")]
    InputAudioBufferCommit {},
    /// Discard uncommitted caller audio.
    #[serde(rename = "input_audio_buffer.clear")]
    InputAudioBufferClear {},
    /// Cut an assistant item's audio at `audio_end_ms` (what the caller heard). Must not exceed the audio generated.
    #[serde(rename = "conversation.item.truncate")]
    ConversationItemTruncate {
        #[serde(borrow)]
        item_id: Cow<'a, str>,
        content_index: u32,
        /// ms of the item's audio the caller heard.
        audio_end_ms: u64,
    },
    /// Add an item (a text message or a function call's output) to the conversation.
    #[serde(rename = "conversation.item.create")]
    ConversationItemCreate { item: Item },
    /// Ask the model to respond now (greeting, after a function call).
    #[serde(rename = "response.create")]
    ResponseCreate {},
    /// Cancel the response in flight. Only sent when one is.
    #[serde(rename = "response.cancel")]
    ResponseCancel {},
    /// Any other client event type (the stand-in answers it with an `error`).
    #[serde(other)]
    Unknown,
}

/// A conversation item for `conversation.item.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A text message; `role` is `user`, `assistant` or `system`.
    Message {
        role: String,
        content: Vec<ContentPart>,
    },
    /// The answer to a `function_call`: `output` is a JSON string.
    FunctionCallOutput { call_id: String, output: String },
}

/// One content part of a message item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText { text: String },
    OutputText { text: String },
}

/// `input_audio_buffer.append` up to its audio, and after it.
const APPEND_HEAD: &str = r#"{"type":"input_audio_buffer.append","audio":""#;
const APPEND_TAIL: &str = r#""}"#;

/// `input_audio_buffer.append` carrying `audio`, built by copying (the per-frame path): base64 needs
/// no JSON escaping, so the serializer's per-byte escape scan is skipped. `audio` must be base64
/// the caller has checked (`twilio::media::is_base64`; debug builds assert that nothing in it
/// needs escaping). Same text as `ClientEvent::InputAudioBufferAppend { audio }.to_json()`.
pub fn append_json(audio: &str) -> String {
    debug_assert!(
        audio.bytes().all(|b| b > 0x1f && b != b'"' && b != b'\\'),
        "append audio must be checked base64"
    );
    let mut json = String::with_capacity(APPEND_HEAD.len() + audio.len() + APPEND_TAIL.len());
    json.push_str(APPEND_HEAD);
    json.push_str(audio);
    json.push_str(APPEND_TAIL);
    json
}

impl ClientEvent<'_> {
    /// Serialize to a JSON text frame. Cannot fail: no maps with non-string keys.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client events serialize")
    }

    /// A user text message, e.g. the instruction to greet the caller.
    pub fn user_text(text: impl Into<String>) -> Self {
        ClientEvent::ConversationItemCreate {
            item: Item::Message {
                role: "user".into(),
                content: vec![ContentPart::InputText { text: text.into() }],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_appends_equal_serialized_ones() {
        for audio in ["", "//8=", "AAAA", &"f39/fw==".repeat(30)] {
            let typed = ClientEvent::InputAudioBufferAppend {
                audio: audio.into(),
            };
            assert_eq!(append_json(audio), typed.to_json());
        }
    }

    #[test]
    fn documented_client_events_round_trip() {
        let samples = [
            r#"{"type":"input_audio_buffer.append","audio":"//8="}"#,
            r#"{"type":"conversation.item.truncate","item_id":"item_1","content_index":0,"audio_end_ms":1500}"#,
            r#"{"type":"conversation.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"{\"ok\":true}"}}"#,
            r#"{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}"#,
            r#"{"type":"response.create"}"#,
            r#"{"type":"response.cancel"}"#,
            r#"{"type":"input_audio_buffer.clear"}"#,
            r#"{"type":"input_audio_buffer.commit"}"#,
        ];
        for sample in samples {
            let event: ClientEvent = serde_json::from_str(sample).expect(sample);
            assert_ne!(event, ClientEvent::Unknown);
            assert_eq!(event.to_json(), sample);
        }
    }
}
