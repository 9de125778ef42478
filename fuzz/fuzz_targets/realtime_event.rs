//! Fuzz target: any text frame the Realtime API (server events) or a stand-in client (client
//! events) can send.
//!
//! Parsing must never panic, and whatever parses must serialize with `to_json` (which `expect`s)
//! and parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio_realtime_relay::realtime::{ClientEvent, ServerEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(event) = serde_json::from_str::<ServerEvent>(text) {
        let json = event.to_json();
        assert!(serde_json::from_str::<ServerEvent>(&json).is_ok(), "{json}");
    }
    if let Ok(event) = serde_json::from_str::<ClientEvent>(text) {
        let json = event.to_json();
        assert!(serde_json::from_str::<ClientEvent>(&json).is_ok(), "{json}");
    }
});
