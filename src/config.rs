//! Typed configuration: one struct read from flags, the environment and `.env`, secrets redacted.
//!
//! Every `serve` option has an environment variable (the names are part of the contract, see the
//! README's configuration table). Invalid values are rejected at start-up with an error naming the
//! variable; upstream URLs are overridable so tests and the demo reach local fakes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, ValueEnum};

use crate::realtime::models::{self, ReasoningEffort};
use crate::realtime::session::FunctionTool;

/// Default assistant prompt (`INSTRUCTIONS`).
pub const DEFAULT_INSTRUCTIONS: &str = "You are a friendly, concise phone assistant. Keep answers short and conversational: the caller hears you over a phone line. If you do not know something, say so.";
/// Default `DATABASE_URL`: an SQLite file beside the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/relay.db";

/// Default `RECORDING_DIR`: inside the data directory, beside the default SQLite database.
pub const DEFAULT_RECORDING_DIR: &str = "./data/recordings";

/// `TRANSCRIPT_EXPORT`: whether transcripts are also written as JSON files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TranscriptExport {
    /// `TRANSCRIPT_DIR/{CallSid}.json`, written from the store at call end.
    Json,
    /// Transcripts only in the store.
    Off,
}

/// `RECORDING`: whether calls are recorded (stereo WAV in `RECORDING_DIR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordingMode {
    /// `RECORDING_DIR/{CallSid}.wav`, the caller left, the assistant right.
    On,
    /// No recordings.
    Off,
}

/// Default `FALLBACK_MESSAGE`.
pub const DEFAULT_FALLBACK: &str =
    "Sorry, our assistant is not available right now. Please try again later. Goodbye.";

/// Voices the Realtime API offers (PROTOCOLS.md § "OpenAI Realtime API"): `VOICE` and the
/// per-call `voice` of `POST /api/calls` must be one of them.
pub const VOICES: [&str; 10] = [
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
];

/// Longest `SHUTDOWN_GRACE_SECS` that fits the platforms' stop timeouts (the shipped `fly.toml`
/// sets `kill_timeout = 30`; Render's `maxShutdownDelaySeconds` defaults to 30), seconds.
pub const PLATFORM_STOP_TIMEOUT_SECS: u64 = 30;

/// A secret value (API key, token). `Debug` and `Display` print `[redacted]`; use [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that must send it (an `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Secret(s.trim().to_string()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

/// `TURN_DETECTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum TurnDetectionKind {
    ServerVad,
    SemanticVad,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `serve` (and `demo`) needs. Each field: flag, environment variable, default.
/// The OpenAI voice API a call's sessions speak (`OPENAI_API`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VoiceApi {
    /// The Realtime API (GA): server turn detection, `speech_started`, truncate.
    #[default]
    Realtime,
    /// GPT-Live: interruption handled by the server, no speech events; the relay detects barge-in.
    Live,
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    /// Public base URL, e.g. https://relay.example.com. Unset: derived from Host and X-Forwarded-Proto.
    #[arg(long, env = "PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<String>,
    /// OpenAI API key. Unset: calls get the fallback message.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,
    /// Realtime API WebSocket URL (ws:// or wss://), without the model query.
    #[arg(long, env = "OPENAI_REALTIME_URL", default_value = "wss://api.openai.com/v1/realtime", value_parser = parse_ws_url)]
    pub openai_realtime_url: String,
    /// Which OpenAI voice API the calls talk to: `realtime` (the Realtime API, GA) or `live`
    /// (GPT-Live, `OPENAI_LIVE_URL`). Both pass G.711 μ-law through unchanged.
    #[arg(long, alias = "api", env = "OPENAI_API", value_enum, default_value_t = VoiceApi::Realtime)]
    pub openai_api: VoiceApi,
    /// GPT-Live WebSocket URL (ws:// or wss://); the model goes in `session.start`, not the URL.
    #[arg(long, env = "OPENAI_LIVE_URL", default_value = "wss://api.openai.com/v1/live/sessions", value_parser = parse_ws_url)]
    pub openai_live_url: String,
    /// GPT-Live model (`session.start`'s `session.model`).
    #[arg(long, env = "OPENAI_LIVE_MODEL", default_value = "gpt-live-1")]
    pub openai_live_model: String,
    /// GPT-Live's Responses backend model (`delegation.responses.model`, required by the API),
    /// which decides on the tools.
    #[arg(long, env = "OPENAI_LIVE_DELEGATE_MODEL", default_value = "gpt-5-mini")]
    pub openai_live_delegate_model: String,
    /// Upstreams without speech events (`live`): the most assistant audio sent to Twilio and not
    /// yet played, ms; the rest waits in the relay, so a barge-in drops it there.
    #[arg(long, env = "PLAYBACK_AHEAD_MS", default_value_t = 400)]
    pub playback_ahead_ms: u64,
    /// How long to wait for the Realtime API to accept the WebSocket, ms.
    #[arg(long, env = "OPENAI_CONNECT_TIMEOUT_MS", default_value_t = 5000)]
    pub openai_connect_timeout_ms: u64,
    /// While a response is in progress, the longest wait for the Realtime API's next event
    /// before the session counts as failed (reconnect once, then the fallback), ms.
    #[arg(long, env = "OPENAI_STALL_TIMEOUT_MS", default_value_t = 5000)]
    pub openai_stall_timeout_ms: u64,
    /// Realtime model (see the README's model table; a model with an announced shutdown warns).
    #[arg(long, env = "OPENAI_MODEL", default_value = models::DEFAULT_MODEL)]
    pub openai_model: String,
    /// `reasoning.effort` for reasoning-capable models (the gpt-realtime-2 family):
    /// minimal, low, medium, high or xhigh. Unset: the model's default.
    #[arg(long, env = "REASONING_EFFORT", value_enum)]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Open a new Realtime session after this many seconds of one, at the first quiet moment
    /// (sessions end at 60 minutes); 0: only renew when the API expires the session.
    #[arg(long, env = "SESSION_RENEW_SECS", default_value_t = 3300)]
    pub session_renew_secs: u64,
    /// Longest call, seconds: then the assistant says goodbye and the call is hung up
    /// (`max_duration`). 0: no limit. Twilio's own limit is 14400 (4 hours).
    #[arg(long, env = "MAX_CALL_SECS", default_value_t = 14400)]
    pub max_call_secs: u64,
    /// Seconds of caller silence (after the assistant finished speaking) before the assistant
    /// asks whether the caller is still there. 0: off.
    #[arg(long, env = "CALLER_IDLE_SECS", default_value_t = 0)]
    pub caller_idle_secs: u64,
    /// Prompts to a silent caller before the assistant says goodbye (`caller_idle`).
    #[arg(long, env = "CALLER_IDLE_PROMPTS", default_value_t = 2)]
    pub caller_idle_prompts: u32,
    /// Assistant voice (alloy, ash, ballad, coral, echo, sage, shimmer, verse, marin, cedar).
    #[arg(long, env = "VOICE", default_value = "marin")]
    pub voice: String,
    /// The assistant's system prompt.
    #[arg(long, env = "INSTRUCTIONS", default_value = DEFAULT_INSTRUCTIONS)]
    pub instructions: String,
    /// When set, the assistant speaks first with this greeting.
    #[arg(long, env = "GREETING")]
    pub greeting: Option<String>,
    /// Turn detection: server_vad or semantic_vad.
    #[arg(long, env = "TURN_DETECTION", value_enum, default_value = "server_vad")]
    pub turn_detection: TurnDetectionKind,
    /// server_vad activation threshold, 0.0–1.0.
    #[arg(long, env = "VAD_THRESHOLD", default_value_t = 0.5, value_parser = parse_threshold)]
    pub vad_threshold: f32,
    /// server_vad audio kept before detected speech, ms.
    #[arg(long, env = "VAD_PREFIX_PADDING_MS", default_value_t = 300)]
    pub vad_prefix_padding_ms: u32,
    /// server_vad silence that ends a turn, ms.
    #[arg(long, env = "VAD_SILENCE_DURATION_MS", default_value_t = 500)]
    pub vad_silence_duration_ms: u32,
    /// Caller transcription model; `none` disables caller transcription.
    #[arg(
        long,
        env = "TRANSCRIPTION_MODEL",
        default_value = "gpt-4o-mini-transcribe"
    )]
    pub transcription_model: String,
    /// `on`: record every assistant call as `RECORDING_DIR/{CallSid}.wav` (stereo, 8 kHz);
    /// `off`: record nothing. Mind consent law (see the README).
    #[arg(long, env = "RECORDING", value_enum, default_value = "off")]
    pub recording: RecordingMode,
    /// Directory of `{CallSid}.wav` recordings (and their temp tracks while calls run).
    #[arg(long, env = "RECORDING_DIR", default_value = DEFAULT_RECORDING_DIR)]
    pub recording_dir: PathBuf,
    /// Recordings older than this many days are deleted (at start-up and hourly); unset: kept.
    #[arg(long, env = "RECORDING_RETENTION_DAYS")]
    pub recording_retention_days: Option<u32>,
    /// Directory of `{CallSid}.json` transcripts.
    #[arg(long, env = "TRANSCRIPT_DIR", default_value = "./transcripts")]
    pub transcript_dir: PathBuf,
    /// The store: `sqlite://PATH` (created with its directory on first start, WAL mode) or
    /// `postgres://…` for several instances sharing one database.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// `json`: write `TRANSCRIPT_DIR/{CallSid}.json` from the store at call end; `off`: none.
    #[arg(long, env = "TRANSCRIPT_EXPORT", value_enum, default_value = "json")]
    pub transcript_export: TranscriptExport,
    /// This instance's id in the registry; default a fresh one each start. Give a stable id
    /// so a restarted instance closes its own leftover calls at once.
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Seconds between this instance's heartbeats; an instance silent for three is dead and
    /// its calls are closed as `server_lost` (1–300).
    #[arg(long, env = "INSTANCE_HEARTBEAT_SECS", default_value_t = 5)]
    pub instance_heartbeat_secs: u64,
    /// Optional `<Say>` before connecting the stream.
    #[arg(long, env = "INTRO_MESSAGE")]
    pub intro_message: Option<String>,
    /// Spoken when the assistant cannot be reached.
    #[arg(long, env = "FALLBACK_MESSAGE", default_value = DEFAULT_FALLBACK)]
    pub fallback_message: String,
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Twilio account SID (AC…), for the REST API and signature checks.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,
    /// Twilio auth token: REST API basic auth and the key of `X-Twilio-Signature`.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,
    /// Twilio API key SID (SK…), an alternative to the auth token for the REST API.
    #[arg(long, env = "TWILIO_API_KEY_SID")]
    pub twilio_api_key_sid: Option<String>,
    /// Twilio API key secret.
    #[arg(long, env = "TWILIO_API_KEY_SECRET", hide_env_values = true)]
    pub twilio_api_key_secret: Option<Secret>,
    /// Default caller ID for outbound calls (E.164).
    #[arg(long, env = "TWILIO_PHONE_NUMBER")]
    pub twilio_phone_number: Option<String>,
    /// Twilio REST API base URL.
    #[arg(long, env = "TWILIO_API_BASE", default_value = "https://api.twilio.com", value_parser = parse_http_url)]
    pub twilio_api_base: String,
    /// Bearer token for everything under /api; unset: /api answers 503.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,
    /// Comma-separated E.164 prefixes outbound calls may go to (e.g. +1,+44); empty: any.
    #[arg(long, env = "ALLOWED_DESTINATIONS", value_delimiter = ',', num_args = 0..)]
    pub allowed_destinations: Vec<String>,
    /// Check X-Twilio-Signature (on by default whenever TWILIO_AUTH_TOKEN is set).
    #[arg(long, env = "TWILIO_VALIDATE_SIGNATURE", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub twilio_validate_signature: bool,
    /// Calls served at once; above it, new calls are rejected as busy.
    #[arg(long, env = "MAX_CONCURRENT_CALLS", default_value_t = 200)]
    pub max_concurrent_calls: u64,
    /// A Media Stream must send `start` within this many seconds of its upgrade, else it is closed.
    #[arg(long, env = "STREAM_START_TIMEOUT_SECS", default_value_t = 10)]
    pub stream_start_timeout_secs: u64,
    /// A started Media Stream with no message for this many seconds is dead (Twilio sends a
    /// frame every 20 ms): the call ends with `twilio_timeout`.
    #[arg(long, env = "STREAM_IDLE_TIMEOUT_SECS", default_value_t = 10)]
    pub stream_idle_timeout_secs: u64,
    /// Longest wait for an HTTP request's head (request line and headers), ms: from the accept,
    /// or from the first byte of a later request on a kept-alive connection. Then the connection
    /// is closed without an answer.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// Longest time from an HTTP request's head to the end of its body, ms. Then the request is
    /// answered 408 and the connection closed.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_body_timeout_ms: u64,
    /// Longest wait for the next request on a kept-alive HTTP connection, seconds.
    #[arg(long, env = "HTTP_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub http_idle_timeout_secs: u64,
    /// HTTP connections open at once; the top eighth is a reserve (see the README's Security
    /// section). Upgraded WebSocket calls are not counted: MAX_CONCURRENT_CALLS caps them.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS", default_value_t = 1024)]
    pub max_http_connections: usize,
    /// On SIGTERM, how long calls in progress may continue before they are ended, seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
    /// Runtime worker threads (default: the CPUs available). One thread wakes less often per
    /// frame (cheaper at low load) but caps the relay at one core.
    #[arg(long, env = "WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// JSON file of function tools (webhooks) and MCP servers the assistant may use (README §
    /// Tools). Unset: only the built-in tools.
    #[arg(long, env = "TOOLS_FILE")]
    pub tools_file: Option<PathBuf>,
    /// Standard Webhooks secret (`whsec_<base64>`, 24–64 bytes) that signs every tool call;
    /// required when TOOLS_FILE declares functions.
    #[arg(long, env = "TOOLS_WEBHOOK_SECRET", hide_env_values = true)]
    pub tools_webhook_secret: Option<Secret>,
    /// Comma-separated `name=target` pairs the assistant may transfer callers to (targets: E.164
    /// numbers or sip: URIs), e.g. sales=+15551230001,support=sip:help@example.com. Needs
    /// Twilio credentials; numbers must fit ALLOWED_DESTINATIONS.
    #[arg(long, env = "TRANSFER_DESTINATIONS", value_delimiter = ',', num_args = 0.., value_parser = crate::tools::transfer::parse_destination)]
    pub transfer_destinations: Vec<crate::tools::transfer::Destination>,
    /// Pass the caller's keypad presses (DTMF) to the assistant: on or off.
    #[arg(long, env = "DTMF", default_value_t = true, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub dtmf: bool,
    /// Keys pressed within this many ms of each other reach the assistant as one message, ms.
    #[arg(long, env = "DTMF_GAP_MS", default_value_t = 1500)]
    pub dtmf_gap_ms: u64,
    /// The parsed `TOOLS_FILE`, filled in by [`Config::validate`].
    #[arg(skip)]
    pub tools: crate::tools::ToolsFile,

    /// Live transcription of forked calls (`/transcribe-call`).
    #[command(flatten)]
    pub transcribe: crate::transcribe::TranscribeConfig,
}

/// Why a configuration value is rejected: always names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

impl Default for Config {
    /// The documented defaults, ignoring the environment (tests start from this).
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        // Parse with no arguments; the `env` attributes are skipped by clearing them below.
        let cmd = <Defaults as clap::CommandFactory>::command();
        let cmd = cmd.mut_args(|arg| arg.env(None::<&str>));
        let matches = cmd
            .try_get_matches_from(["defaults"])
            .expect("every option has a default or is optional");
        <Defaults as clap::FromArgMatches>::from_arg_matches(&matches)
            .expect("defaults parse")
            .config
    }
}

impl Config {
    /// Cross-field checks clap cannot express. Empty strings from `.env` count as unset.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        for opt in [
            &mut self.greeting,
            &mut self.intro_message,
            &mut self.public_url,
        ] {
            if opt.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *opt = None;
            }
        }
        if self
            .openai_api_key
            .as_ref()
            .is_some_and(|k| k.expose().is_empty())
        {
            self.openai_api_key = None;
        }
        if let Err(reason) = crate::store::check_url(&self.database_url) {
            return Err(ConfigError {
                variable: "DATABASE_URL",
                reason,
            });
        }
        if self
            .recording_retention_days
            .is_some_and(|d| !(1..=36_500).contains(&d))
        {
            return Err(ConfigError {
                variable: "RECORDING_RETENTION_DAYS",
                reason: "must be between 1 and 36500 days (unset keeps recordings forever)".into(),
            });
        }
        if !(1..=300).contains(&self.instance_heartbeat_secs) {
            return Err(ConfigError {
                variable: "INSTANCE_HEARTBEAT_SECS",
                reason: format!("{} is not within 1–300", self.instance_heartbeat_secs),
            });
        }
        if self
            .instance_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            self.instance_id = None;
        }
        if self.openai_model.trim().is_empty() {
            return Err(ConfigError {
                variable: "OPENAI_MODEL",
                reason: "must not be empty".into(),
            });
        }
        if let Some(effort) = self.reasoning_effort {
            if !models::supports_reasoning(&self.openai_model) {
                return Err(ConfigError {
                    variable: "REASONING_EFFORT",
                    reason: format!(
                        "{effort} was given, but {} does not take reasoning.effort; use a model of the gpt-realtime-2 family (e.g. {}) or unset REASONING_EFFORT",
                        self.openai_model,
                        models::DEFAULT_MODEL
                    ),
                });
            }
        }
        for (variable, secs) in [
            ("STREAM_START_TIMEOUT_SECS", self.stream_start_timeout_secs),
            ("STREAM_IDLE_TIMEOUT_SECS", self.stream_idle_timeout_secs),
        ] {
            if !(1..=300).contains(&secs) {
                return Err(ConfigError {
                    variable,
                    reason: "must be between 1 and 300 seconds".into(),
                });
            }
        }
        if self.openai_stall_timeout_ms < 500 {
            return Err(ConfigError {
                variable: "OPENAI_STALL_TIMEOUT_MS",
                reason: "must be at least 500 ms".into(),
            });
        }
        if self.session_renew_secs >= 3600 {
            return Err(ConfigError {
                variable: "SESSION_RENEW_SECS",
                reason: "must be below 3600: Realtime sessions end at 60 minutes (0 turns proactive renewal off)".into(),
            });
        }
        if self.caller_idle_secs > 600 {
            return Err(ConfigError {
                variable: "CALLER_IDLE_SECS",
                reason: "must be at most 600 seconds (0 turns idle prompts off)".into(),
            });
        }
        if self.caller_idle_prompts > 10 {
            return Err(ConfigError {
                variable: "CALLER_IDLE_PROMPTS",
                reason: "must be at most 10".into(),
            });
        }
        self.voice = self.voice.trim().to_string();
        if !VOICES.contains(&self.voice.as_str()) {
            return Err(ConfigError {
                variable: "VOICE",
                reason: format!(
                    "{:?} is not a Realtime voice; use one of {}",
                    self.voice,
                    VOICES.join(", ")
                ),
            });
        }
        if let Some(url) = &self.public_url {
            check_public_url(url).map_err(|reason| ConfigError {
                variable: "PUBLIC_URL",
                reason,
            })?;
        }
        if self.shutdown_grace_secs > PLATFORM_STOP_TIMEOUT_SECS {
            tracing::warn!(
                variable = "SHUTDOWN_GRACE_SECS",
                value = self.shutdown_grace_secs,
                "SHUTDOWN_GRACE_SECS is {} s, above the {PLATFORM_STOP_TIMEOUT_SECS} s Fly (fly.toml kill_timeout) and Render (maxShutdownDelaySeconds) give a stopping process by default: calls still running then are cut off without their transcript; lower it or raise the platform's limit",
                self.shutdown_grace_secs
            );
        }
        for opt in [
            &mut self.twilio_account_sid,
            &mut self.twilio_api_key_sid,
            &mut self.twilio_phone_number,
        ] {
            if opt.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *opt = None;
            }
        }
        for secret in [
            &mut self.twilio_auth_token,
            &mut self.twilio_api_key_secret,
            &mut self.api_token,
        ] {
            if secret.as_ref().is_some_and(|k| k.expose().is_empty()) {
                *secret = None;
            }
        }
        self.allowed_destinations = self
            .allowed_destinations
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        if let Some(bad) = self
            .allowed_destinations
            .iter()
            .find(|p| !is_e164_prefix(p))
        {
            return Err(ConfigError {
                variable: "ALLOWED_DESTINATIONS",
                reason: format!("{bad:?} is not an E.164 prefix like +1 or +44"),
            });
        }
        if let Some(number) = &self.twilio_phone_number {
            if !is_e164(number) {
                return Err(ConfigError {
                    variable: "TWILIO_PHONE_NUMBER",
                    reason: format!("{number:?} is not an E.164 number like +15551234567"),
                });
            }
        }
        if self.twilio_api_key_sid.is_some() != self.twilio_api_key_secret.is_some() {
            return Err(ConfigError {
                variable: "TWILIO_API_KEY_SECRET",
                reason: "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET must be set together".into(),
            });
        }
        if self.worker_threads.is_some_and(|n| !(1..=256).contains(&n)) {
            return Err(ConfigError {
                variable: "WORKER_THREADS",
                reason: "must be between 1 and 256".into(),
            });
        }
        if self.max_concurrent_calls == 0 {
            return Err(ConfigError {
                variable: "MAX_CONCURRENT_CALLS",
                reason: "must be at least 1".into(),
            });
        }
        self.validate_http()?;
        self.transcribe = self.transcribe.validate()?;
        if self.vad_silence_duration_ms == 0 {
            return Err(ConfigError {
                variable: "VAD_SILENCE_DURATION_MS",
                reason: "must be at least 1 ms".into(),
            });
        }
        self.validate_tools()?;
        Ok(self)
    }

    /// `TOOLS_FILE`, `TOOLS_WEBHOOK_SECRET`, `TRANSFER_DESTINATIONS`, `DTMF_GAP_MS`.
    fn validate_tools(&mut self) -> Result<(), ConfigError> {
        if self
            .tools_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            self.tools_file = None;
        }
        if self
            .tools_webhook_secret
            .as_ref()
            .is_some_and(|s| s.expose().is_empty())
        {
            self.tools_webhook_secret = None;
        }
        if let Some(path) = &self.tools_file {
            self.tools = crate::tools::ToolsFile::load(path).map_err(|reason| ConfigError {
                variable: "TOOLS_FILE",
                reason,
            })?;
        }
        match &self.tools_webhook_secret {
            Some(secret) => {
                crate::tools::signing::Signer::from_secret(secret.expose()).map_err(|reason| {
                    ConfigError {
                        variable: "TOOLS_WEBHOOK_SECRET",
                        reason,
                    }
                })?;
            }
            None if !self.tools.functions.is_empty() => {
                return Err(ConfigError {
                    variable: "TOOLS_WEBHOOK_SECRET",
                    reason: "required when TOOLS_FILE declares functions: every tool call is signed with it (whsec_ followed by base64 of 24 to 64 random bytes, e.g. whsec_$(openssl rand -base64 32))".into(),
                });
            }
            None => {}
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.transfer_destinations {
            let variable = "TRANSFER_DESTINATIONS";
            if !seen.insert(d.name.as_str()) {
                return Err(ConfigError {
                    variable,
                    reason: format!("{} is named twice", d.name),
                });
            }
            let allowed = &self.allowed_destinations;
            if !d.is_sip()
                && !allowed.is_empty()
                && !allowed.iter().any(|p| d.target.starts_with(p.as_str()))
            {
                return Err(ConfigError {
                    variable,
                    reason: format!(
                        "{}={} is not in ALLOWED_DESTINATIONS ({})",
                        d.name,
                        d.target,
                        allowed.join(",")
                    ),
                });
            }
        }
        if !(100..=10_000).contains(&self.dtmf_gap_ms) {
            return Err(ConfigError {
                variable: "DTMF_GAP_MS",
                reason: "must be between 100 and 10000 ms".into(),
            });
        }
        Ok(())
    }

    /// The HTTP server's timeouts and connection cap, each within a range that keeps the server
    /// both reachable and protected.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let checks: [(&'static str, u64, std::ops::RangeInclusive<u64>, &str); 4] = [
            (
                "HTTP_HEADER_TIMEOUT_MS",
                self.http_header_timeout_ms,
                100..=300_000,
                "ms",
            ),
            (
                "HTTP_BODY_TIMEOUT_MS",
                self.http_body_timeout_ms,
                100..=300_000,
                "ms",
            ),
            (
                "HTTP_IDLE_TIMEOUT_SECS",
                self.http_idle_timeout_secs,
                1..=3600,
                "seconds",
            ),
            (
                "MAX_HTTP_CONNECTIONS",
                u64::try_from(self.max_http_connections).unwrap_or(u64::MAX),
                8..=1_000_000,
                "connections",
            ),
        ];
        for (variable, value, range, unit) in checks {
            if !range.contains(&value) {
                return Err(ConfigError {
                    variable,
                    reason: format!(
                        "must be between {} and {} {unit} (got {value})",
                        range.start(),
                        range.end()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether the Twilio REST API can be used (account SID plus a token or an API key).
    pub fn twilio_configured(&self) -> bool {
        self.twilio_account_sid.is_some()
            && (self.twilio_auth_token.is_some() || self.twilio_api_key_secret.is_some())
    }

    /// Whether requests from Twilio must carry a valid `X-Twilio-Signature`.
    pub fn validates_signatures(&self) -> bool {
        self.signing_key().is_some()
    }

    /// The key of every check Twilio's requests must pass (`X-Twilio-Signature`, stream
    /// tokens): the auth token, when signatures are checked.
    pub fn signing_key(&self) -> Option<&Secret> {
        self.twilio_auth_token
            .as_ref()
            .filter(|_| self.twilio_validate_signature)
    }

    /// Whether calls can reach the assistant.
    pub fn openai_configured(&self) -> bool {
        self.openai_api_key.is_some()
    }

    /// The configured model's announced shutdown, if it has one.
    pub fn model_shutdown(&self) -> Option<&'static models::Shutdown> {
        models::shutdown_of(&self.openai_model)
    }

    /// The URL a call's voice session opens: [`Config::realtime_url`], or `OPENAI_LIVE_URL` as it
    /// is (GPT-Live takes the model in `session.start`).
    pub fn voice_url(&self) -> String {
        match self.openai_api {
            VoiceApi::Realtime => self.realtime_url(),
            VoiceApi::Live => self.openai_live_url.clone(),
        }
    }

    /// The upstream URL with the model query: `…/v1/realtime?model=gpt-realtime-2.1`.
    pub fn realtime_url(&self) -> String {
        let sep = if self.openai_realtime_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}model={}",
            self.openai_realtime_url, self.openai_model
        )
    }
}

/// Name of the built-in tool the model calls to hang up.
pub const END_CALL_TOOL: &str = "end_call";

/// The `end_call` function tool: the model calls it when the conversation is over.
pub fn end_call_tool() -> FunctionTool {
    FunctionTool {
        name: END_CALL_TOOL.into(),
        description: "Hang up the phone call. Call this when the caller says goodbye or clearly wants to end the call, or when the task is done and you have said a short goodbye. Say the goodbye before calling this.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "reason": {"type": "string", "description": "Why the call is ending, in a few words."}
            }
        }),
    }
}

/// `+` then 2–15 digits, the first not 0 (ITU-T E.164).
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// `+` then 1–15 digits, the first not 0: a prefix for ALLOWED_DESTINATIONS.
pub fn is_e164_prefix(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (1..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

fn parse_threshold(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err("VAD_THRESHOLD must be a number from 0.0 to 1.0".into()),
    }
}

fn parse_public_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if s.is_empty() {
        return Ok(String::new());
    }
    if !(s.starts_with("https://") || s.starts_with("http://")) {
        return Err("PUBLIC_URL must start with https:// (or http:// for local tests)".into());
    }
    Ok(s.to_string())
}

/// `PUBLIC_URL` must be a base URL (scheme and host, optionally a port): the relay appends
/// `/media-stream`, `/twilio/status` and the signed paths itself, so a path such as
/// `/incoming-call` would end up in every stream URL (`wss://…/incoming-call/media-stream`).
fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.trim_end_matches('/');
    let (host, path) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if !path.is_empty() {
        return Err(format!(
            "{url:?} has a path or query ({path:?}); give the base URL only, e.g. https://{host} (the relay adds /incoming-call, /media-stream and /twilio/status itself)"
        ));
    }
    Ok(())
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    if !(s.starts_with("https://") || s.starts_with("http://")) {
        return Err(
            "TWILIO_API_BASE must start with https:// (or http:// for a local fake)".into(),
        );
    }
    Ok(s.to_string())
}

fn parse_ws_url(s: &str) -> Result<String, String> {
    let s = s.trim();
    if !(s.starts_with("wss://") || s.starts_with("ws://")) {
        return Err("OPENAI_REALTIME_URL must start with wss:// or ws://".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_contract() {
        let c = Config::default();
        assert_eq!(c.port, 8080);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.openai_realtime_url, "wss://api.openai.com/v1/realtime");
        assert_eq!(
            c.realtime_url(),
            "wss://api.openai.com/v1/realtime?model=gpt-realtime-2.1"
        );
        assert_eq!(c.reasoning_effort, None);
        assert_eq!(c.session_renew_secs, 3300);
        assert_eq!(c.max_call_secs, 14400);
        assert_eq!(c.caller_idle_secs, 0);
        assert_eq!(c.caller_idle_prompts, 2);
        assert_eq!(c.voice, "marin");
        assert_eq!(c.vad_threshold, 0.5);
        assert_eq!(c.transcription_model, "gpt-4o-mini-transcribe");
        assert!(c.openai_api_key.is_none());
        assert_eq!(c.http_header_timeout_ms, 10_000);
        assert_eq!(c.http_body_timeout_ms, 10_000);
        assert_eq!(c.http_idle_timeout_secs, 60);
        assert_eq!(c.max_http_connections, 1024);
    }

    #[test]
    fn http_timeouts_and_the_connection_cap_are_range_checked() {
        type Case = (&'static str, fn(&mut Config));
        let cases: [Case; 5] = [
            ("HTTP_HEADER_TIMEOUT_MS", |c| c.http_header_timeout_ms = 0),
            ("HTTP_BODY_TIMEOUT_MS", |c| c.http_body_timeout_ms = 99),
            ("HTTP_IDLE_TIMEOUT_SECS", |c| c.http_idle_timeout_secs = 0),
            ("MAX_HTTP_CONNECTIONS", |c| c.max_http_connections = 7),
            ("HTTP_HEADER_TIMEOUT_MS", |c| {
                c.http_header_timeout_ms = 300_001
            }),
        ];
        for (variable, set) in cases {
            let mut config = Config::default();
            set(&mut config);
            let err = config.validate().unwrap_err();
            assert_eq!(err.variable, variable, "{err}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let c = Config {
            openai_api_key: Some("sk-live-very-secret".into()),
            ..Config::default()
        };
        let c = Config {
            twilio_auth_token: Some("twilio-secret-token".into()),
            api_token: Some("api-secret-token".into()),
            twilio_api_key_secret: Some("key-secret".into()),
            ..c
        };
        let shown = format!("{c:?}");
        for secret in ["twilio-secret-token", "api-secret-token", "key-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn invalid_values_name_their_variable() {
        assert!(parse_threshold("1.5")
            .unwrap_err()
            .contains("VAD_THRESHOLD"));
        assert!(parse_ws_url("http://x")
            .unwrap_err()
            .contains("OPENAI_REALTIME_URL"));
        assert!(parse_public_url("relay.example.com")
            .unwrap_err()
            .contains("PUBLIC_URL"));
        for threads in [0, 257] {
            let config = Config {
                worker_threads: Some(threads),
                ..Config::default()
            };
            let err = config.validate().unwrap_err();
            assert_eq!(err.variable, "WORKER_THREADS", "{threads}");
        }
    }

    #[test]
    fn the_env_example_is_a_complete_and_valid_configuration() {
        use clap::{CommandFactory, FromArgMatches, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example");
        let mut args = vec!["relay".to_string()];
        let mut names = Vec::new();
        for item in dotenvy::from_path_iter(path).expect(".env.example exists") {
            let (key, value) = item.expect(".env.example parses");
            names.push(key.clone());
            if key == "RUST_LOG" || value.is_empty() {
                continue;
            }
            args.push(format!("--{}", key.to_lowercase().replace('_', "-")));
            args.push(value);
        }
        let cmd = Cli::command().mut_args(|a| a.env(None::<&str>));
        let matches = cmd
            .try_get_matches_from(&args)
            .expect("every .env.example name is an option");
        let config = Cli::from_arg_matches(&matches).unwrap().config;
        config.validate().expect(".env.example validates");
        // Every documented variable of `serve` is in the example.
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy().to_string();
                assert!(names.contains(&env), "{env} is missing from .env.example");
            }
        }
    }

    #[test]
    fn long_call_options_out_of_range_name_their_variable() {
        let check = |tweak: fn(&mut Config)| {
            let mut c = Config::default();
            tweak(&mut c);
            c.validate().map(|_| ()).map_err(|e| e.variable)
        };
        assert_eq!(
            check(|c| c.session_renew_secs = 3600),
            Err("SESSION_RENEW_SECS")
        );
        assert_eq!(
            check(|c| c.session_renew_secs = 0),
            Ok(()),
            "0 turns it off"
        );
        assert_eq!(check(|c| c.caller_idle_secs = 601), Err("CALLER_IDLE_SECS"));
        assert_eq!(
            check(|c| c.caller_idle_prompts = 11),
            Err("CALLER_IDLE_PROMPTS")
        );
        assert_eq!(
            check(|c| c.openai_stall_timeout_ms = 100),
            Err("OPENAI_STALL_TIMEOUT_MS")
        );
        assert_eq!(
            check(|c| c.stream_start_timeout_secs = 0),
            Err("STREAM_START_TIMEOUT_SECS")
        );
        assert_eq!(
            check(|c| c.stream_idle_timeout_secs = 301),
            Err("STREAM_IDLE_TIMEOUT_SECS")
        );
    }

    #[test]
    fn reasoning_effort_is_refused_for_a_model_that_does_not_take_it() {
        let ok = Config {
            reasoning_effort: Some(ReasoningEffort::Low),
            ..Config::default()
        };
        assert!(ok.validate().is_ok());
        let bad = Config {
            openai_model: "gpt-realtime-mini".into(),
            reasoning_effort: Some(ReasoningEffort::Low),
            ..Config::default()
        };
        let err = bad.validate().unwrap_err();
        assert_eq!(err.variable, "REASONING_EFFORT");
        assert!(err.reason.contains("gpt-realtime-mini"), "{err}");
    }

    #[test]
    fn a_model_with_an_announced_shutdown_is_known() {
        let old = Config {
            openai_model: "gpt-realtime".into(),
            ..Config::default()
        };
        let shutdown = old.model_shutdown().expect("gpt-realtime is announced");
        assert_eq!(shutdown.date, "2027-01-20");
        assert_eq!(shutdown.replacement, "gpt-realtime-2.1");
        assert!(Config::default().model_shutdown().is_none());
    }

    #[test]
    fn unknown_voices_and_public_urls_with_a_path_are_refused() {
        let voice = |v: &str| {
            Config {
                voice: v.into(),
                ..Config::default()
            }
            .validate()
        };
        let err = voice("nonsense").unwrap_err();
        assert_eq!(err.variable, "VOICE");
        assert!(err.reason.contains("marin"), "{err}");
        assert_eq!(voice(" cedar ").unwrap().voice, "cedar");
        let public = |u: &str| {
            Config {
                public_url: Some(u.into()),
                ..Config::default()
            }
            .validate()
        };
        for bad in [
            "https://relay.example.com/incoming-call",
            "https://relay.example.com?x=1",
            "https://",
        ] {
            assert_eq!(public(bad).unwrap_err().variable, "PUBLIC_URL", "{bad}");
        }
        for good in ["https://relay.example.com", "http://127.0.0.1:8080"] {
            assert!(public(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn e164_numbers_and_prefixes() {
        assert!(is_e164("+15551234567"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+0555"));
        assert!(!is_e164("+1555123456789012"));
        assert!(!is_e164("+1 555"));
        assert!(is_e164_prefix("+1"));
        assert!(!is_e164_prefix("+"));
        let bad = Config {
            allowed_destinations: vec!["44".into()],
            ..Config::default()
        };
        assert_eq!(bad.validate().unwrap_err().variable, "ALLOWED_DESTINATIONS");
    }

    #[test]
    fn tool_options_are_checked_at_start_up_naming_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools.json");
        std::fs::write(
            &path,
            r#"{"functions":[{"name":"a","url":"http://127.0.0.1:9/a"}]}"#,
        )
        .unwrap();
        let with_file = |secret: Option<&str>| Config {
            tools_file: Some(path.clone()),
            tools_webhook_secret: secret.map(Into::into),
            ..Config::default()
        };
        let err = with_file(None).validate().unwrap_err();
        assert_eq!(err.variable, "TOOLS_WEBHOOK_SECRET");
        let err = with_file(Some("whsec_c2hvcnQ=")).validate().unwrap_err();
        assert_eq!(err.variable, "TOOLS_WEBHOOK_SECRET");
        let ok = with_file(Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")).validate();
        assert_eq!(ok.unwrap().tools.functions[0].name, "a");
        std::fs::write(&path, r#"{"functions":[{"name":"a","url":"ftp://x"}]}"#).unwrap();
        let err = with_file(Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"))
            .validate()
            .unwrap_err();
        assert_eq!(err.variable, "TOOLS_FILE");
        assert!(
            err.reason
                .contains("tools.json: functions[0] (\"a\"): url:"),
            "{err}"
        );

        let transfer = |list: &str, allowed: &str| Config {
            transfer_destinations: list
                .split(',')
                .map(|d| crate::tools::transfer::parse_destination(d).unwrap())
                .collect(),
            allowed_destinations: vec![allowed.into()],
            ..Config::default()
        };
        assert!(transfer("sales=+15551230001,help=sip:a@b.example", "+1")
            .validate()
            .is_ok());
        let err = transfer("sales=+445551230001", "+1")
            .validate()
            .unwrap_err();
        assert_eq!(err.variable, "TRANSFER_DESTINATIONS");
        let err = transfer("a=+15551230001,a=+15551230002", "+1")
            .validate()
            .unwrap_err();
        assert!(err.reason.contains("named twice"), "{err}");
        let gap = Config {
            dtmf_gap_ms: 50,
            ..Config::default()
        };
        assert_eq!(gap.validate().unwrap_err().variable, "DTMF_GAP_MS");
    }

    #[test]
    fn signatures_are_checked_only_with_a_token_and_unless_disabled() {
        let mut c = Config::default();
        assert!(!c.validates_signatures());
        c.twilio_auth_token = Some("tok".into());
        assert!(c.validates_signatures());
        c.twilio_validate_signature = false;
        assert!(!c.validates_signatures());
    }
}
