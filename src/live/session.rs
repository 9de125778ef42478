//! The `session` object of `session.start` and the resolved one of `session.started`/`.closed`.
//!
//! Shapes from openai-python 3.51.0 `types/live/session_config.py` (start), `session_resource.py`
//! (resolved), `audio_format.py`, `client_delegation.py`, `responses_delegation_config.py`,
//! `function_tool.py`, `initial_item.py`. Only what a relay sets is typed; Decisions delegation,
//! triggers, `client` and `store` are left out (absent on the wire, ignored on input).

use serde::{Deserialize, Serialize};

/// `session.start`'s `session`: startup configuration. Voice and format cannot change afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionConfig {
    /// The Live model, e.g. `gpt-live-1`. Required; never a URL query parameter.
    pub model: String,
    /// Frontend instructions (voice, conversation, when to delegate); blank means server defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Audio>,
    /// Who handles delegated tasks: `null`/absent or `client` is the application, `responses` a
    /// Responses backend with its own model, prompt and tools.
    #[serde(default)]
    pub delegation: Option<Delegation>,
    /// Text-only history before startup (at most 128 messages, one text part each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<InitialItem>>,
}

/// Startup audio: the wire format (primary WebSockets only) and the voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audio {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<AudioFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// Audio encoding and rate of both directions (`audio_format.py`). Rates in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AudioFormat {
    /// Mono PCM16LE; 16000 or 24000 Hz.
    #[serde(rename = "audio/pcm")]
    Pcm { rate: u32 },
    /// Mono G.711 μ-law; 8000 Hz. What Twilio sends, passed through unchanged.
    #[serde(rename = "audio/pcmu")]
    Pcmu { rate: u32 },
    /// Mono G.711 A-law; 8000 Hz.
    #[serde(rename = "audio/pcma")]
    Pcma { rate: u32 },
}

impl AudioFormat {
    /// `{"type":"audio/pcmu","rate":8000}`: the relay's format.
    pub fn pcmu() -> Self {
        AudioFormat::Pcmu { rate: 8000 }
    }
}

/// `audio.output`: the voice (default `marin`, immutable after startup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<Voice>,
}

/// A built-in voice name (`built_in_voice.py`) or a custom voice `{"id": …}` (`custom_voice.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Voice {
    Name(String),
    Custom { id: String },
}

/// `delegation` (`session_config.py` `Delegation`), tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delegation {
    /// Delegated tasks come to the application as delegation events.
    Client {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acknowledgement_delay_ms: Option<u32>,
    },
    /// Delegated tasks run on a Responses backend managed by the session; its function calls
    /// arrive in `response.event` and are answered with `response.item.create` + `response.create`.
    Responses {
        responses: ResponsesDelegation,
        /// ms before an automatic spoken acknowledgement (default 0 outside Decisions sessions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        acknowledgement_delay_ms: Option<u32>,
    },
}

/// `responses_delegation_config.py`: the backend's model, prompt and tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesDelegation {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
}

/// A backend tool; only function tools are typed (`function_tool.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Tool {
    Function {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// JSON Schema of the arguments.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parameters: Option<serde_json::Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

impl Tool {
    /// The function's name.
    pub fn name(&self) -> &str {
        match self {
            Tool::Function { name, .. } => name,
        }
    }
}

impl Delegation {
    /// Names of the function tools a Responses delegation declares (none for `client`).
    pub fn function_names(&self) -> Vec<&str> {
        match self {
            Delegation::Responses { responses, .. } => {
                responses.tools.iter().flatten().map(Tool::name).collect()
            }
            Delegation::Client { .. } => Vec::new(),
        }
    }
}

/// One history message of `input` (`initial_item.py`): `role` is `developer`, `user` or
/// `assistant`; exactly one text part (`input_text`, or `text`/`output_text` for assistant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitialItem {
    pub role: String,
    pub content: Vec<TextPart>,
    /// Always `message` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// `{"type": "input_text", "text": …}` (the type is optional except `output_text`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextPart {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub text: String,
}

/// The resolved session in `session.started` and `session.closed` (`session_resource.py`): the
/// start configuration with server defaults plus the session's `id`, `expires_at` (Unix seconds)
/// and `status` (always `active`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionResource {
    pub id: String,
    pub expires_at: i64,
    pub model: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<Audio>,
    #[serde(default)]
    pub delegation: Option<Delegation>,
}
