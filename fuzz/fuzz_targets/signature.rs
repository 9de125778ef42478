//! Fuzz target: `X-Twilio-Signature` validation on attacker-controlled URLs, parameters,
//! signatures and bodies.
//!
//! Input (lossy UTF-8), split on `\n`: auth token, URL, signature, then up to 64 `name=value`
//! form parameters; everything after the signature line is also the JSON body. Neither check may
//! panic, and a signature we computed ourselves must validate for the URL in either port form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twilio_realtime_relay::twilio::signature::{is_valid, is_valid_json, sign};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let token = lines.next().unwrap_or_default();
    let url = lines.next().unwrap_or_default();
    let signature = lines.next().unwrap_or_default();
    let rest = lines.next().unwrap_or_default();
    // Twilio sends a few dozen fields; thousands would only spend the run sorting them.
    let params: Vec<(String, String)> = rest
        .lines()
        .take(64)
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect();

    is_valid(token, url, &params, signature);
    is_valid_json(token, url, rest.as_bytes(), signature);

    let ours = sign(token, url, &params);
    assert_eq!(ours.len(), 28, "HMAC-SHA1 in base64 is 28 characters");
    assert!(
        is_valid(token, url, &params, &ours),
        "own signature rejected"
    );
    if !ours.starts_with(signature) || ours == signature {
        return;
    }
    // A strict prefix of the right signature (a truncation) must never pass.
    assert!(!is_valid(token, url, &params, signature));
});
