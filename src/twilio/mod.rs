//! Twilio protocols: Media Streams messages and TwiML documents.
//!
//! SIDs: Twilio's resource identifiers are a two-letter type prefix and 32 hexadecimal digits
//! (`CA…` calls, `MZ…` streams, `AC…` accounts, `PN…` numbers).

pub mod media;
pub mod rest;
pub mod signature;
pub mod twiml;

/// Whether `s` is a Call SID: `CA` followed by 32 hexadecimal digits.
pub fn is_call_sid(s: &str) -> bool {
    s.strip_prefix("CA")
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
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
