//! Client events: what the relay sends to GPT-Live (and what the stand-in parses).
//!
//! Shapes from openai-python 3.51.0 `types/live/client_event.py` and the event files it names
//! (`session_start_event.py`, `input_audio_append_event.py`, `commentary_append_event.py`, …).
//! The optional `event_id` every client event may carry is not typed: the stand-in reads it from
//! the raw JSON. Decision, fixture and `session.update` events are not typed (parsed as
//! [`ClientEvent::Unknown`]).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::SessionConfig;

/// A client event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ClientEvent<'a> {
    /// Start the session: first on every primary WebSocket; then wait for `session.started`.
    #[serde(rename = "session.start")]
    SessionStart { session: Box<SessionConfig> },
    /// Caller audio in the startup format: base64 μ-law from Twilio, unchanged. No acknowledgment.
    #[serde(rename = "session.input_audio.append")]
    InputAudioAppend {
        #[serde(borrow)]
        audio: Cow<'a, str>,
    },
    /// Stop feeding input audio to the model (answered by `session.input_audio.muted`).
    #[serde(rename = "session.input_audio.mute")]
    InputAudioMute {},
    /// Resume input audio (answered by `session.input_audio.unmuted`).
    #[serde(rename = "session.input_audio.unmute")]
    InputAudioUnmute {},
    /// Developer instructions appended mid-session (≤ 500 tokens). `delegation_id` is required
    /// and nullable: `null` for general context.
    #[serde(rename = "session.instructions.append")]
    InstructionsAppend {
        content: String,
        delegation_id: Option<String>,
    },
    /// Silent context for the model (≤ 500 tokens).
    #[serde(rename = "session.thinking.append")]
    ThinkingAppend {
        content: String,
        delegation_id: Option<String>,
    },
    /// Speakable context the model tells the caller (≤ 500 tokens): how the relay greets.
    #[serde(rename = "session.commentary.append")]
    CommentaryAppend {
        content: String,
        delegation_id: Option<String>,
    },
    /// Add an input item (a function call's output) to the Responses backend's conversation.
    #[serde(rename = "response.item.create")]
    ResponseItemCreate { item: ResponseItem },
    /// Ask the Responses backend to respond, or continue a response waiting for tool results.
    #[serde(rename = "response.create")]
    ResponseCreate {},
    /// Close the session; the server answers with the terminal `session.closed`.
    #[serde(rename = "session.close")]
    SessionClose {},
    /// Any other client event type (the stand-in answers it with an `error`).
    #[serde(other)]
    Unknown,
}

/// A Responses input item for `response.item.create` (openai-python
/// `types/responses/response_input_item_param.py`; only what the relay sends is typed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseItem {
    /// The result of a `function_call`: `output` is the tool's text (JSON for ours).
    FunctionCallOutput { call_id: String, output: String },
}

impl ClientEvent<'_> {
    /// Serialize to a JSON text frame. Cannot fail: no maps with non-string keys.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client events serialize")
    }

    /// `session.commentary.append` with general context (`delegation_id: null`): the greeting.
    pub fn commentary(text: impl Into<String>) -> Self {
        ClientEvent::CommentaryAppend {
            content: text.into(),
            delegation_id: None,
        }
    }

    /// `response.item.create` carrying a `function_call_output`.
    pub fn function_output(call_id: impl Into<String>, output: impl Into<String>) -> Self {
        ClientEvent::ResponseItemCreate {
            item: ResponseItem::FunctionCallOutput {
                call_id: call_id.into(),
                output: output.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::session::{
        Audio, AudioFormat, AudioOutput, Delegation, ResponsesDelegation, Tool, Voice,
    };

    #[test]
    fn session_start_has_the_sdk_shape() {
        let start = ClientEvent::SessionStart {
            session: Box::new(SessionConfig {
                model: "gpt-live-1".into(),
                instructions: Some("Be brief.".into()),
                audio: Some(Audio {
                    format: Some(AudioFormat::pcmu()),
                    output: Some(AudioOutput {
                        voice: Some(Voice::Name("marin".into())),
                    }),
                }),
                delegation: Some(Delegation::Responses {
                    responses: ResponsesDelegation {
                        model: "gpt-5.2".into(),
                        instructions: Some("Use tools.".into()),
                        tools: Some(vec![Tool::Function {
                            name: "end_call".into(),
                            description: Some("Hang up.".into()),
                            parameters: Some(serde_json::json!({"type": "object"})),
                            strict: None,
                        }]),
                    },
                    acknowledgement_delay_ms: None,
                }),
                input: None,
            }),
        };
        let json: serde_json::Value = serde_json::from_str(&start.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "session.start", "session": {
                "model": "gpt-live-1", "instructions": "Be brief.",
                "audio": {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}},
                "delegation": {"type": "responses", "responses": {"model": "gpt-5.2",
                    "instructions": "Use tools.", "tools": [{"type": "function", "name": "end_call",
                    "description": "Hang up.", "parameters": {"type": "object"}}]}}}})
        );
    }

    #[test]
    fn a_session_without_delegation_sends_null_and_reads_client_or_custom_voices() {
        let config = SessionConfig {
            model: "gpt-live-1".into(),
            instructions: None,
            audio: None,
            delegation: None,
            input: None,
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"model": "gpt-live-1", "delegation": null})
        );
        let parsed: SessionConfig = serde_json::from_str(
            r#"{"model":"m","delegation":{"type":"client"},"audio":{"output":{"voice":{"id":"voice_1"}}},
            "input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}]}"#,
        )
        .unwrap();
        assert!(matches!(parsed.delegation, Some(Delegation::Client { .. })));
        let voice = parsed.audio.and_then(|a| a.output).and_then(|o| o.voice);
        assert_eq!(
            voice,
            Some(Voice::Custom {
                id: "voice_1".into()
            })
        );
    }

    #[test]
    fn documented_client_events_round_trip() {
        let samples = [
            r#"{"type":"session.input_audio.append","audio":"//8="}"#,
            r#"{"type":"session.input_audio.mute"}"#,
            r#"{"type":"session.input_audio.unmute"}"#,
            r#"{"type":"session.instructions.append","content":"Speak slowly.","delegation_id":null}"#,
            r#"{"type":"session.thinking.append","content":"Looking it up.","delegation_id":null}"#,
            r#"{"type":"session.commentary.append","content":"Greet the caller.","delegation_id":null}"#,
            r#"{"type":"response.item.create","item":{"type":"function_call_output","call_id":"call_1","output":"{\"ok\":true}"}}"#,
            r#"{"type":"response.create"}"#,
            r#"{"type":"session.close"}"#,
        ];
        for sample in samples {
            let event: ClientEvent = serde_json::from_str(sample).expect(sample);
            assert_ne!(event, ClientEvent::Unknown);
            assert_eq!(event.to_json(), sample);
        }
        assert_eq!(
            ClientEvent::commentary("Greet the caller.").to_json(),
            samples[5]
        );
        assert_eq!(
            ClientEvent::function_output("call_1", r#"{"ok":true}"#).to_json(),
            samples[6]
        );
    }

    #[test]
    fn appends_borrow_and_other_types_are_unknown() {
        let event: ClientEvent =
            serde_json::from_str(r#"{"type":"session.input_audio.append","audio":"AAAA"}"#)
                .unwrap();
        assert!(matches!(
            event,
            ClientEvent::InputAudioAppend {
                audio: Cow::Borrowed("AAAA")
            }
        ));
        let other: ClientEvent =
            serde_json::from_str(r#"{"type":"decision.create","x":1}"#).unwrap();
        assert_eq!(other, ClientEvent::Unknown);
    }
}
