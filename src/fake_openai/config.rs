//! The stand-in's session: the `session.created` defaults and how a `session.update` merges into them.
//!
//! Defaults follow the GA API reference (server VAD, threshold 0.5, 300 ms prefix padding, 500 ms
//! silence, create and interrupt responses; no input transcription). Only `audio/pcmu` is accepted.

use serde_json::Value;

use crate::realtime::session::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, SessionKind, TurnDetection,
};
use crate::realtime::Session;

const DEFAULT_THRESHOLD: f32 = 0.5;
const DEFAULT_PREFIX_PADDING_MS: u32 = 300;
const DEFAULT_SILENCE_MS: u32 = 500;
const PCMU: &str = "audio/pcmu";

/// Why a client event was refused: becomes an `error` event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
}

/// Turn detection as the energy VAD uses it (semantic VAD is approximated by these defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct VadSettings {
    /// 0.0–1.0; mapped to an RMS level by [`super::vad::speech_rms_level`].
    pub threshold: f32,
    /// ms subtracted from the detected start in `speech_started.audio_start_ms`.
    pub prefix_padding_ms: u32,
    /// ms of quiet that end an utterance.
    pub silence_duration_ms: u32,
    pub create_response: bool,
    pub interrupt_response: bool,
    /// Server VAD only: prompt after this much silence following the last response, ms.
    pub idle_timeout_ms: Option<u64>,
}

/// The session announced in `session.created`, from the upgrade's path and query: `model=` sets the
/// model, `intent=transcription` makes a transcription session.
pub(crate) fn initial_session(path_and_query: &str) -> Session {
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let transcription = param("intent").as_deref() == Some("transcription");
    Session {
        kind: if transcription {
            SessionKind::Transcription
        } else {
            SessionKind::Realtime
        },
        model: if transcription {
            None
        } else {
            Some(param("model").unwrap_or_else(|| crate::realtime::models::DEFAULT_MODEL.into()))
        },
        output_modalities: Some(vec!["audio".into()]),
        instructions: Some(String::new()),
        audio: Some(AudioConfig {
            input: Some(AudioInput {
                format: AudioFormat::pcmu(),
                transcription: None,
                turn_detection: Some(default_server_vad()),
            }),
            output: Some(AudioOutput {
                format: AudioFormat::pcmu(),
                voice: Some("marin".into()),
            }),
        }),
        tools: Some(Vec::new()),
        tool_choice: Some("auto".into()),
        reasoning: None,
    }
}

fn default_server_vad() -> TurnDetection {
    TurnDetection::ServerVad {
        threshold: Some(DEFAULT_THRESHOLD),
        prefix_padding_ms: Some(DEFAULT_PREFIX_PADDING_MS),
        silence_duration_ms: Some(DEFAULT_SILENCE_MS),
        create_response: Some(true),
        interrupt_response: Some(true),
        idle_timeout_ms: None,
    }
}

/// Apply a `session.update` to `current`. `raw` is the update's `session` object as received; it
/// tells an explicit `null` (turn detection or transcription off) from an absent field.
pub(crate) fn merge_update(
    current: &Session,
    update: Session,
    raw: &Value,
) -> Result<Session, Rejection> {
    let mut merged = current.clone();
    merged.kind = update.kind;
    merged.model = update.model.or(merged.model);
    merged.output_modalities = update.output_modalities.or(merged.output_modalities);
    merged.instructions = update.instructions.or(merged.instructions);
    merged.tools = update.tools.or(merged.tools);
    merged.tool_choice = update.tool_choice.or(merged.tool_choice);
    merged.reasoning = update.reasoning.or(merged.reasoning);
    let Some(audio) = update.audio else {
        return Ok(merged);
    };
    let mut merged_audio = merged.audio.take().unwrap_or(AudioConfig {
        input: None,
        output: None,
    });
    if let Some(input) = audio.input {
        check_format(&input.format, "session.audio.input.format.type")?;
        let raw_input = raw.pointer("/audio/input");
        let has = |key: &str| raw_input.and_then(|i| i.get(key)).is_some();
        let old = merged_audio.input.take();
        let (old_transcription, old_td) = old
            .map(|o| (o.transcription, o.turn_detection))
            .unwrap_or((None, None));
        merged_audio.input = Some(AudioInput {
            format: input.format,
            transcription: if has("transcription") {
                input.transcription
            } else {
                old_transcription
            },
            turn_detection: if has("turn_detection") {
                input
                    .turn_detection
                    .map(|new| merge_turn_detection(old_td, new))
            } else {
                old_td
            },
        });
    }
    if let Some(output) = audio.output {
        check_format(&output.format, "session.audio.output.format.type")?;
        let old_voice = merged_audio.output.take().and_then(|o| o.voice);
        merged_audio.output = Some(AudioOutput {
            format: output.format,
            voice: output.voice.or(old_voice),
        });
    }
    merged.audio = Some(merged_audio);
    Ok(merged)
}

fn check_format(format: &AudioFormat, param: &'static str) -> Result<(), Rejection> {
    if format.kind == PCMU {
        return Ok(());
    }
    Err(Rejection {
        code: "invalid_value",
        message: format!(
            "Invalid value: '{}'. The Realtime stand-in only supports '{PCMU}' (G.711 μ-law, 8 kHz).",
            format.kind
        ),
        param: Some(param),
    })
}

/// Fields the update leaves out keep their current value (same VAD type) or take the defaults.
fn merge_turn_detection(old: Option<TurnDetection>, new: TurnDetection) -> TurnDetection {
    let (t0, p0, s0, c0, i0) = match old {
        Some(TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            create_response,
            interrupt_response,
            ..
        }) => (
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            create_response,
            interrupt_response,
        ),
        Some(TurnDetection::SemanticVad {
            create_response,
            interrupt_response,
            ..
        }) => (None, None, None, create_response, interrupt_response),
        None => (None, None, None, None, None),
    };
    match new {
        // An update that leaves `idle_timeout_ms` out turns the idle timeout off (it is nullable).
        TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            create_response,
            interrupt_response,
            idle_timeout_ms,
        } => TurnDetection::ServerVad {
            threshold: threshold.or(t0).or(Some(DEFAULT_THRESHOLD)),
            prefix_padding_ms: prefix_padding_ms.or(p0).or(Some(DEFAULT_PREFIX_PADDING_MS)),
            silence_duration_ms: silence_duration_ms.or(s0).or(Some(DEFAULT_SILENCE_MS)),
            create_response: create_response.or(c0).or(Some(true)),
            interrupt_response: interrupt_response.or(i0).or(Some(true)),
            idle_timeout_ms,
        },
        TurnDetection::SemanticVad {
            eagerness,
            create_response,
            interrupt_response,
        } => TurnDetection::SemanticVad {
            eagerness: eagerness.or(Some("auto".into())),
            create_response: create_response.or(c0).or(Some(true)),
            interrupt_response: interrupt_response.or(i0).or(Some(true)),
        },
    }
}

/// The VAD settings in force, or `None` when turn detection is off.
pub(crate) fn vad_settings(session: &Session) -> Option<VadSettings> {
    let td = session
        .audio
        .as_ref()?
        .input
        .as_ref()?
        .turn_detection
        .as_ref()?;
    Some(match td {
        TurnDetection::ServerVad {
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            create_response,
            interrupt_response,
            idle_timeout_ms,
        } => VadSettings {
            threshold: threshold.unwrap_or(DEFAULT_THRESHOLD),
            prefix_padding_ms: prefix_padding_ms.unwrap_or(DEFAULT_PREFIX_PADDING_MS),
            silence_duration_ms: silence_duration_ms.unwrap_or(DEFAULT_SILENCE_MS),
            create_response: create_response.unwrap_or(true),
            interrupt_response: interrupt_response.unwrap_or(true),
            idle_timeout_ms: *idle_timeout_ms,
        },
        TurnDetection::SemanticVad {
            create_response,
            interrupt_response,
            ..
        } => VadSettings {
            threshold: DEFAULT_THRESHOLD,
            prefix_padding_ms: DEFAULT_PREFIX_PADDING_MS,
            silence_duration_ms: DEFAULT_SILENCE_MS,
            create_response: create_response.unwrap_or(true),
            interrupt_response: interrupt_response.unwrap_or(true),
            idle_timeout_ms: None,
        },
    })
}

/// Whether caller transcription is configured (any model).
pub(crate) fn transcribes(session: &Session) -> bool {
    session
        .audio
        .as_ref()
        .and_then(|a| a.input.as_ref())
        .is_some_and(|i| i.transcription.is_some())
}
