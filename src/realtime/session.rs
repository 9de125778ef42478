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

/// A function tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments.
    pub parameters: serde_json::Value,
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
