//! Fuzz target: any text frame a caller (or anyone who reaches `/media-stream`) can send.
//!
//! Parsing must never panic, a parsed event must serialize and parse back to itself, and a media
//! payload's computed length must stay within its text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio_realtime_relay::twilio::media::{base64_decoded_len, TwilioEvent};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(event) = serde_json::from_str::<TwilioEvent>(text) else {
        return;
    };
    if let TwilioEvent::Media { media, .. } = &event {
        assert!(base64_decoded_len(&media.payload) <= media.payload.len());
    }
    let json = serde_json::to_string(&event).expect("a parsed Twilio event serializes");
    let again: TwilioEvent = serde_json::from_str(&json).expect("our own JSON parses");
    assert_eq!(event, again, "round trip changed the event: {json}");
});
