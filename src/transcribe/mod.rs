//! Live transcription of forked calls (`<Start><Stream>`, one-way, one or both tracks).
//!
//! # Layout
//! - [`config`]: `TRANSCRIBE_*`, `DEEPGRAM_*` and `WHISPER_*` options.

pub mod config;

pub use config::{Backend, TranscribeConfig};
