//! Twilio protocols: Media Streams messages and TwiML documents.
//!
//! SIDs: Twilio's resource identifiers are a two-letter type prefix and 32 hexadecimal digits
//! (`CA…` calls, `MZ…` streams, `AC…` accounts, `PN…` numbers).

pub mod media;
pub mod rest;
pub mod signature;
pub mod stream_token;
pub mod twiml;

/// Whether `s` is a Call SID: `CA` followed by 32 hexadecimal digits.
pub fn is_call_sid(s: &str) -> bool {
    s.strip_prefix("CA")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `s` is a Media Stream SID: `MZ` followed by 32 hexadecimal digits.
pub fn is_stream_sid(s: &str) -> bool {
    s.strip_prefix("MZ")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_sids_are_mz_and_32_hex_digits() {
        assert!(super::is_stream_sid("MZ0123456789abcdef0123456789ABCDEF"));
        assert!(!super::is_stream_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!super::is_stream_sid(
            "MZ8f2b3c9e-1d2a-4b5c-9e8f-7a6b5c4d3e2f"
        ));
    }

    #[test]
    fn call_sids_are_ca_and_32_hex_digits() {
        assert!(super::is_call_sid("CA0123456789abcdef0123456789ABCDEF"));
        for bad in [
            "CA123",
            "CA0123456789abcdef0123456789abcdeg",
            "MZ0123456789abcdef0123456789abcdef",
            "CA0123456789abcdef0123456789abcdef0",
            "",
        ] {
            assert!(!super::is_call_sid(bad), "{bad}");
        }
    }
}
