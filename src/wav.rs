//! Reading caller clips (WAV) and writing what the caller heard.
