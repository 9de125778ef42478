//! Configuration of forked-call transcription: the backend, its endpoints and the forward target.
//!
//! Flattened into [`crate::config::Config`]; every option has an environment variable. The OpenAI
//! backends reuse the main `OPENAI_API_KEY` and `OPENAI_REALTIME_URL` (PROTOCOLS.md § "OpenAI
//! Realtime API — GA only", "Transcription-only sessions" and "Batch transcription").

use clap::{Args, ValueEnum};

use crate::config::{ConfigError, Secret};

/// `TRANSCRIBE_BACKEND`: who turns forked audio into text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Backend {
    /// One OpenAI Realtime transcription session per track (`?intent=transcription`).
    #[default]
    Openai,
    /// One Deepgram live-streaming connection per track.
    Deepgram,
    /// Batch uploads of each track's utterances to `/v1/audio/transcriptions` (finals only).
    Whisper,
}

impl Backend {
    /// `openai`, `deepgram` or `whisper`, as in logs and `TRANSCRIBE_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Openai => "openai",
            Backend::Deepgram => "deepgram",
            Backend::Whisper => "whisper",
        }
    }
}

/// Everything `/transcribe-call` and `/transcription-stream` need beyond the main config.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct TranscribeConfig {
    /// Transcription backend for forked calls: openai, deepgram or whisper.
    #[arg(long, env = "TRANSCRIBE_BACKEND", value_enum, default_value = "openai")]
    pub transcribe_backend: Backend,
    /// Where /transcribe-call forwards the call: an E.164 number (+15551234567) or a SIP URI.
    #[arg(long, env = "TRANSCRIBE_FORWARD_TO", value_parser = parse_forward_to)]
    pub transcribe_forward_to: Option<String>,
    /// Model of the OpenAI Realtime transcription sessions.
    #[arg(long, env = "TRANSCRIBE_MODEL", default_value = "gpt-4o-transcribe")]
    pub transcribe_model: String,
    /// Spoken language as an ISO-639-1 code (e.g. en); unset lets the backend detect it.
    #[arg(long, env = "TRANSCRIBE_LANGUAGE")]
    pub transcribe_language: Option<String>,
    /// Deepgram API key (TRANSCRIBE_BACKEND=deepgram).
    #[arg(long, env = "DEEPGRAM_API_KEY", hide_env_values = true)]
    pub deepgram_api_key: Option<Secret>,
    /// Deepgram live-streaming WebSocket URL (ws:// or wss://), without a query.
    #[arg(long, env = "DEEPGRAM_URL", default_value = "wss://api.deepgram.com/v1/listen", value_parser = parse_deepgram_url)]
    pub deepgram_url: String,
    /// Deepgram model.
    #[arg(long, env = "DEEPGRAM_MODEL", default_value = "nova-3")]
    pub deepgram_model: String,
    /// Batch transcription endpoint (TRANSCRIBE_BACKEND=whisper); uses OPENAI_API_KEY.
    #[arg(long, env = "WHISPER_URL", default_value = "https://api.openai.com/v1/audio/transcriptions", value_parser = parse_whisper_url)]
    pub whisper_url: String,
    /// Batch transcription model (whisper-1, gpt-4o-transcribe, gpt-4o-mini-transcribe).
    #[arg(long, env = "WHISPER_MODEL", default_value = "whisper-1")]
    pub whisper_model: String,
    /// Longest audio chunk uploaded at once, seconds (chunks are also cut at pauses).
    #[arg(long, env = "WHISPER_CHUNK_SECS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub whisper_chunk_secs: u32,
}

impl Default for TranscribeConfig {
    /// The documented defaults, ignoring the environment.
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: TranscribeConfig,
        }
        let cmd = <Defaults as clap::CommandFactory>::command();
        let cmd = cmd.mut_args(|arg| arg.env(None::<&str>));
        let matches = cmd
            .try_get_matches_from(["defaults"])
            .expect("every transcription option has a default or is optional");
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("transcription defaults parse")
            .config
    }
}

impl TranscribeConfig {
    /// Treat empty strings (from `.env`) as unset and check what clap cannot.
    ///
    /// # Errors
    /// A model name is empty; the error names its variable.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        for opt in [
            &mut self.transcribe_forward_to,
            &mut self.transcribe_language,
        ] {
            if opt.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *opt = None;
            }
        }
        if self
            .deepgram_api_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            self.deepgram_api_key = None;
        }
        for (variable, value) in [
            ("TRANSCRIBE_MODEL", &self.transcribe_model),
            ("DEEPGRAM_MODEL", &self.deepgram_model),
            ("WHISPER_MODEL", &self.whisper_model),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError {
                    variable,
                    reason: "must not be empty".into(),
                });
            }
        }
        Ok(self)
    }

    /// The variable that the chosen backend needs but is unset (`OPENAI_API_KEY` or
    /// `DEEPGRAM_API_KEY`), for a start-up warning; forks then record a transcription gap.
    pub fn missing_key(&self, openai_api_key: Option<&Secret>) -> Option<&'static str> {
        match self.transcribe_backend {
            Backend::Openai | Backend::Whisper if openai_api_key.is_none() => {
                Some("OPENAI_API_KEY")
            }
            Backend::Deepgram if self.deepgram_api_key.is_none() => Some("DEEPGRAM_API_KEY"),
            _ => None,
        }
    }
}

/// E.164 (`+` and 8–15 digits) or a `sip:`/`sips:` URI; empty means unset.
fn parse_forward_to(s: &str) -> Result<String, String> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let e164 = s.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    let sip = (lower.starts_with("sip:") || lower.starts_with("sips:")) && s.contains('@');
    if s.is_empty() || e164 || sip {
        Ok(s.to_string())
    } else {
        Err("TRANSCRIBE_FORWARD_TO must be an E.164 number (+15551234567) or a SIP URI (sip:user@host)".into())
    }
}

fn parse_deepgram_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("wss://") || s.starts_with("ws://") {
        Ok(s.to_string())
    } else {
        Err("DEEPGRAM_URL must start with wss:// or ws://".into())
    }
}

fn parse_whisper_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.starts_with("https://") || s.starts_with("http://") {
        Ok(s.to_string())
    } else {
        Err("WHISPER_URL must start with https:// or http://".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = TranscribeConfig::default();
        assert_eq!(c.transcribe_backend, Backend::Openai);
        assert_eq!(c.transcribe_model, "gpt-4o-transcribe");
        assert_eq!(c.deepgram_url, "wss://api.deepgram.com/v1/listen");
        assert_eq!(c.deepgram_model, "nova-3");
        assert_eq!(
            c.whisper_url,
            "https://api.openai.com/v1/audio/transcriptions"
        );
        assert_eq!(c.whisper_model, "whisper-1");
        assert_eq!(c.whisper_chunk_secs, 5);
        assert!(c.transcribe_forward_to.is_none() && c.deepgram_api_key.is_none());
    }

    #[test]
    fn forward_targets_are_e164_or_sip_and_errors_name_the_variable() {
        assert!(parse_forward_to("+15551234567").is_ok());
        assert!(parse_forward_to("sip:agent@pbx.example.com").is_ok());
        for bad in ["5551234567", "+1555abc", "sip:nohost", "tel:+1555"] {
            assert!(
                parse_forward_to(bad)
                    .unwrap_err()
                    .contains("TRANSCRIBE_FORWARD_TO"),
                "{bad}"
            );
        }
        assert!(parse_deepgram_url("https://x")
            .unwrap_err()
            .contains("DEEPGRAM_URL"));
        assert!(parse_whisper_url("ws://x")
            .unwrap_err()
            .contains("WHISPER_URL"));
    }

    #[test]
    fn missing_keys_are_named_per_backend() {
        let mut c = TranscribeConfig::default();
        assert_eq!(c.missing_key(None), Some("OPENAI_API_KEY"));
        assert_eq!(c.missing_key(Some(&"sk".into())), None);
        c.transcribe_backend = Backend::Deepgram;
        assert_eq!(c.missing_key(Some(&"sk".into())), Some("DEEPGRAM_API_KEY"));
        c.deepgram_api_key = Some("dg".into());
        assert_eq!(c.missing_key(None), None);
        let shown = format!("{c:?}");
        assert!(!shown.contains("\"dg\""), "{shown}");
    }

    #[test]
    fn empty_values_from_dotenv_count_as_unset() {
        let c = TranscribeConfig {
            transcribe_language: Some(" ".into()),
            deepgram_api_key: Some("".into()),
            ..TranscribeConfig::default()
        };
        let c = c.validate().unwrap();
        assert!(c.transcribe_language.is_none() && c.deepgram_api_key.is_none());
        let bad = TranscribeConfig {
            whisper_model: "".into(),
            ..TranscribeConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().variable, "WHISPER_MODEL");
    }
}
