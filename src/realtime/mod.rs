//! OpenAI Realtime API, GA interface only: typed client and server events and the session shape.
//!
//! Follows `PROTOCOLS.md` § "OpenAI Realtime API — GA only" (developers.openai.com/api/docs/guides/realtime-websocket,
//! and the `openai` Python package's `openai/types/realtime/`). The retired beta shapes (`g711_ulaw`,
//! `response.audio.delta`, `OpenAI-Beta` header) are never produced.

pub mod client;
pub mod models;
pub mod server;
pub mod session;

pub use client::{append_json, ClientEvent};
pub use server::ServerEvent;
pub use session::Session;
