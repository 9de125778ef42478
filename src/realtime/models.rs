//! Realtime models: which ones have an announced shutdown, and which take `reasoning.effort`.
//!
//! Source: the official Python SDK, openai-python 3.51, `types/realtime/realtime_session_create_request_param.py`
//! (field `model`: current `gpt-realtime-2.1`, `gpt-realtime-2.1-mini`, `gpt-realtime-2`,
//! `gpt-realtime-1.5`; the six below announced for shutdown on 2027-01-20) and
//! `types/realtime/realtime_reasoning_param.py` ("reasoning-capable Realtime models such as
//! `gpt-realtime-2`"; the SDK names no full list, so the `gpt-realtime-2` family, 2.1 included, is
//! treated as reasoning-capable). See `PROTOCOLS.md` § "Where the newer facts come from".

use std::fmt;

/// The default `OPENAI_MODEL`: current, and not announced for shutdown.
pub const DEFAULT_MODEL: &str = "gpt-realtime-2.1";

/// Where the shutdown dates below come from.
pub const SHUTDOWN_SOURCE: &str =
    "openai-python 3.51, types/realtime/realtime_session_create_request_param.py";

/// A model OpenAI has announced it will shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// The model id as sent in `?model=`.
    pub model: &'static str,
    /// The announced shutdown date, `YYYY-MM-DD`.
    pub date: &'static str,
    /// The current model to move to.
    pub replacement: &'static str,
}

/// Every model with an announced shutdown (model, date, replacement); [`SHUTDOWN_SOURCE`] says where
/// they come from.
pub const ANNOUNCED_SHUTDOWNS: &[Shutdown] = &[
    Shutdown {
        model: "gpt-realtime",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1",
    },
    Shutdown {
        model: "gpt-realtime-2025-08-28",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1",
    },
    Shutdown {
        model: "gpt-realtime-mini",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1-mini",
    },
    Shutdown {
        model: "gpt-realtime-mini-2025-12-15",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1-mini",
    },
    Shutdown {
        model: "gpt-audio-mini",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1-mini",
    },
    Shutdown {
        model: "gpt-audio-mini-2025-12-15",
        date: "2027-01-20",
        replacement: "gpt-realtime-2.1-mini",
    },
];

/// The announced shutdown of `model`, if it has one (exact, case-sensitive match: model ids are).
pub fn shutdown_of(model: &str) -> Option<&'static Shutdown> {
    ANNOUNCED_SHUTDOWNS.iter().find(|s| s.model == model)
}

/// Whether `model` accepts `reasoning.effort`: the `gpt-realtime-2` family (`gpt-realtime-2`,
/// `gpt-realtime-2.1`, `gpt-realtime-2.1-mini` and their dated snapshots).
pub fn supports_reasoning(model: &str) -> bool {
    model
        .strip_prefix("gpt-realtime-2")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-']))
}

/// `reasoning.effort` (`types/realtime/realtime_reasoning_effort.py`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
}

impl fmt::Display for ReasoningEffort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
            ReasoningEffort::Xhigh => "xhigh",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_model_has_no_announced_shutdown() {
        assert_eq!(shutdown_of(DEFAULT_MODEL), None);
        assert!(supports_reasoning(DEFAULT_MODEL));
    }

    #[test]
    fn every_model_announced_for_shutdown_has_a_current_replacement() {
        assert_eq!(ANNOUNCED_SHUTDOWNS.len(), 6);
        for s in ANNOUNCED_SHUTDOWNS {
            assert_eq!(shutdown_of(s.model), Some(s));
            assert_eq!(shutdown_of(s.replacement), None, "{}", s.replacement);
            assert!(chrono::NaiveDate::parse_from_str(s.date, "%Y-%m-%d").is_ok());
        }
        assert_eq!(shutdown_of("gpt-realtime").unwrap().date, "2027-01-20");
    }

    #[test]
    fn only_the_gpt_realtime_2_family_takes_reasoning_effort() {
        for model in [
            "gpt-realtime-2",
            "gpt-realtime-2.1",
            "gpt-realtime-2.1-mini",
            "gpt-realtime-2-2026-05-01",
        ] {
            assert!(supports_reasoning(model), "{model}");
        }
        for model in [
            "gpt-realtime",
            "gpt-realtime-1.5",
            "gpt-realtime-mini",
            "gpt-realtime-2025-08-28",
            "gpt-realtime-20",
            "gpt-audio-mini",
        ] {
            assert!(!supports_reasoning(model), "{model}");
        }
    }

    #[test]
    fn efforts_serialize_as_the_sdk_spells_them() {
        assert_eq!(
            serde_json::to_value(ReasoningEffort::Minimal).unwrap(),
            "minimal"
        );
        assert_eq!(ReasoningEffort::Xhigh.to_string(), "xhigh");
    }
}
