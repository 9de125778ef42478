//! OpenAI GPT-Live (`wss://api.openai.com/v1/live/sessions`): typed client and server events, the
//! session configuration, and the SDK's transcript grouping policy.
//!
//! Follows openai-python 3.51.0 (`types/live/`, `resources/live/live.py`, `lib/live/`); every fact
//! used is listed with its source file in `docs/protocols/gpt-live.md`. Bearer auth, no model in
//! the URL: the first client event is `session.start` and the client waits for `session.started`.
//! There is no speech-started or truncate event: the server handles interruption itself.

pub mod client;
pub mod server;
pub mod session;
pub mod transcript;

pub use client::ClientEvent;
pub use server::ServerEvent;
pub use session::SessionConfig;

/// The Live model a session starts with unless configured otherwise (`session_config.py`).
pub const DEFAULT_MODEL: &str = "gpt-live-1";

/// The WebSocket path under the API's base URL (`resources/live/live.py`, `_prepare_url`).
pub const PATH: &str = "/v1/live/sessions";
