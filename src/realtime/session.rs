//! The GA `session` object sent in `session.update` (and echoed by the stand-in).
//!
//! Shapes follow `PROTOCOLS.md` § "OpenAI Realtime API — GA only": `type` is required, `audio/pcmu`
//! has no rate field, `semantic_vad` takes `eagerness` instead of threshold/padding/silence.

use serde::{Deserialize, Serialize};

/// `session` of a `session.update`. Optional fields are omitted, never sent as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// `realtime` (speech to speech) or `transcription`.
    #[serde(rename = "type")]
    pub kind: SessionKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `["audio"]` (audio with transcript) or `["text"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_modalities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio: Option<AudioConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `auto`, `none` or `required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<String>,
    /// `{"effort": …}`, only for reasoning-capable models ([`super::models::supports_reasoning`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
}

/// `session.reasoning` (`types/realtime/realtime_reasoning_param.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reasoning {
    pub effort: super::models::ReasoningEffort,
}

/// The session's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    Realtime,
    Transcription,
}

/// `audio: {input, output}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<AudioInput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<AudioOutput>,
}

/// `audio.input`: format, caller transcription and turn detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInput {
    pub format: AudioFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcription: Option<InputTranscription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_detection: Option<TurnDetection>,
}

/// `audio.output`: format and voice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioOutput {
    pub format: AudioFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<String>,
}

/// `{"type":"audio/pcmu"}`: G.711 μ-law at 8 kHz, what Twilio speaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

impl AudioFormat {
    /// G.711 μ-law, the only format the relay uses (no transcoding on the hot path).
    pub fn pcmu() -> Self {
        AudioFormat {
            kind: "audio/pcmu".into(),
        }
    }
}

/// `audio.input.transcription`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputTranscription {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// `audio.input.turn_detection`, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TurnDetection {
    /// Energy-based VAD. `threshold` 0.0–1.0; durations in ms.
    ServerVad {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_padding_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silence_duration_ms: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
        /// Silence after the last response's audio finished playing (by the server's reckoning)
        /// before the server prompts the caller (`input_audio_buffer.timeout_triggered`), ms.
        /// Server VAD only (`realtime_audio_input_turn_detection_param.py`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idle_timeout_ms: Option<u64>,
    },
    /// Model-based end-of-turn detection. `eagerness`: `low`, `medium`, `high` or `auto`.
    SemanticVad {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eagerness: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        create_response: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interrupt_response: Option<bool>,
    },
}

/// One entry of `session.tools`, tagged by `type` (openai-python 3.51
/// `types/realtime/realtime_tools_config_union_param.py`: a function tool or an MCP server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Tool {
    /// `{"type":"function","name","description","parameters"}`: the relay runs it.
    Function(FunctionTool),
    /// `{"type":"mcp","server_label",…}`: the API calls the MCP server itself.
    Mcp(McpTool),
}

/// A function tool the model may call (`realtime_function_tool_param.py`); the relay answers
/// with a `function_call_output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    /// `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// When and how to call it, and what to tell the caller meanwhile.
    pub description: String,
    /// JSON Schema (an object schema) of the arguments.
    pub parameters: serde_json::Value,
}

/// A remote MCP server the API calls on the model's behalf (`realtime_tools_config_union_param.py`,
/// class `Mcp`). Exactly one of `server_url`, `connector_id`, `tunnel_id` is set. `Debug` hides
/// `headers` and `authorization`, which carry credentials.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct McpTool {
    /// Names the server in MCP call items (`mcp_call.server_label`).
    pub server_label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_id: Option<String>,
    /// HTTP headers the API sends to the server (authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    /// `["tool", …]` or `{"read_only": bool, "tool_names": [...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_tools: Option<serde_json::Value>,
    /// `"always"`, `"never"` or `{"always": filter, "never": filter}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_approval: Option<serde_json::Value>,
    /// An OAuth access token for the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_description: Option<String>,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names =
            |h: &std::collections::BTreeMap<String, String>| h.keys().cloned().collect::<Vec<_>>();
        f.debug_struct("McpTool")
            .field("server_label", &self.server_label)
            .field("server_url", &self.server_url)
            .field("connector_id", &self.connector_id)
            .field("tunnel_id", &self.tunnel_id)
            .field("headers", &self.headers.as_ref().map(names))
            .field("allowed_tools", &self.allowed_tools)
            .field("require_approval", &self.require_approval)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "[redacted]"),
            )
            .field("server_description", &self.server_description)
            .finish()
    }
}

impl Tool {
    /// The function's name or the MCP server's label.
    pub fn name(&self) -> &str {
        match self {
            Tool::Function(f) => &f.name,
            Tool::Mcp(m) => &m.server_label,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_session_update_round_trips() {
        let sample = serde_json::json!({"type":"realtime","model":"gpt-realtime","output_modalities":["audio"],"instructions":"…",
          "audio":{"input":{"format":{"type":"audio/pcmu"},"transcription":{"model":"gpt-4o-mini-transcribe"},
                            "turn_detection":{"type":"server_vad","threshold":0.5,"prefix_padding_ms":300,"silence_duration_ms":500,"create_response":true,"interrupt_response":true}},
                   "output":{"format":{"type":"audio/pcmu"},"voice":"marin"}},
          "tools":[{"type":"function","name":"end_call","description":"…","parameters":{"type":"object","properties":{}}}],"tool_choice":"auto",
          "reasoning":{"effort":"low"}});
        let session: Session = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(serde_json::to_value(&session).unwrap(), sample);
    }

    #[test]
    fn mcp_entries_round_trip_in_the_sdk_shape_and_hide_their_credentials() {
        let sample = serde_json::json!({"type": "mcp", "server_label": "crm",
            "server_url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer tok-secret"},
            "allowed_tools": ["find_customer"], "require_approval": "never"});
        let tool: Tool = serde_json::from_value(sample.clone()).unwrap();
        assert_eq!(tool.name(), "crm");
        assert_eq!(serde_json::to_value(&tool).unwrap(), sample);
        assert!(!format!("{tool:?}").contains("tok-secret"));
    }

    #[test]
    fn semantic_vad_has_no_threshold_fields() {
        let td = TurnDetection::SemanticVad {
            eagerness: None,
            create_response: Some(true),
            interrupt_response: Some(true),
        };
        assert_eq!(
            serde_json::to_value(td).unwrap(),
            serde_json::json!({"type":"semantic_vad","create_response":true,"interrupt_response":true})
        );
    }
}
