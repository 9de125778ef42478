//! Per-call stream tokens: what makes one `X-Twilio-Signature` on a stream upgrade worthless to
//! replay.
//!
//! Twilio signs only the URL of a Media Streams upgrade, and that URL is the same for every
//! call, so one observed signature would open any number of streams. The TwiML that opens a
//! stream therefore carries a `<Parameter name="StreamToken">` (which Twilio hands back inside
//! the stream's `start`, under TLS): `{expires}.{mac}`, where `expires` is Unix seconds and `mac`
//! is base64url (no padding) of HMAC-SHA256, keyed by the auth token, over `{subject}.{expires}`.
//! The subject is the call's CallSid (`/incoming-call`), or `ref:{CallRef}` for calls placed
//! through the API, whose TwiML is written before Twilio has given the call a SID. A `start` must
//! carry a valid, unexpired token for its own subject that no stream has used yet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The `<Parameter>` name.
pub const PARAMETER: &str = "StreamToken";
/// How long a token from `/incoming-call` is good for: the stream opens within seconds, s.
pub const INCOMING_TTL_SECS: i64 = 300;
/// How long a token of a placed call is good for: it may ring and queue a while first, s.
pub const PLACED_TTL_SECS: i64 = 3600;
/// Tokens remembered as used, at most (each for its remaining lifetime).
const LEDGER_CAPACITY: usize = 100_000;

/// Why a stream's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no StreamToken parameter")]
    Missing,
    #[error("the StreamToken is malformed")]
    Malformed,
    #[error("the StreamToken does not match this call")]
    Invalid,
    #[error("the StreamToken has expired")]
    Expired,
    #[error("the StreamToken was already used by another stream")]
    Reused,
}

/// The subject of a call's token: its `CallRef` when it was placed through the API, else its SID.
pub fn subject(call_sid: &str, call_ref: Option<&str>) -> String {
    match call_ref {
        Some(reference) => format!("ref:{reference}"),
        None => call_sid.to_string(),
    }
}

/// The token for `subject`, good until `expires` (Unix seconds).
pub fn issue(key: &str, subject: &str, expires: i64) -> String {
    format!(
        "{expires}.{}",
        URL_SAFE_NO_PAD.encode(mac(key, subject, expires))
    )
}

fn mac(key: &str, subject: &str, expires: i64) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{subject}.{expires}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Check `token` for `subject` at `now` (Unix seconds), in constant time. Does not mark it used.
pub fn verify(key: &str, subject: &str, token: Option<&str>, now: i64) -> Result<i64, TokenError> {
    let token = token.ok_or(TokenError::Missing)?;
    let (expires, given) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expires: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    let given = URL_SAFE_NO_PAD
        .decode(given)
        .map_err(|_| TokenError::Malformed)?;
    if !bool::from(given.ct_eq(&mac(key, subject, expires))) {
        return Err(TokenError::Invalid);
    }
    if expires < now {
        return Err(TokenError::Expired);
    }
    Ok(expires)
}

/// Tokens already used, until they expire. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TokenLedger(Arc<Mutex<HashMap<String, i64>>>);

impl TokenLedger {
    /// Mark `token` (valid until `expires`) used; `Err(Reused)` if a stream already used it.
    /// When full, forgets expired tokens first; a ledger full of live tokens refuses new ones
    /// rather than forgetting one still usable.
    pub fn use_once(&self, token: &str, expires: i64, now: i64) -> Result<(), TokenError> {
        let mut used = self.0.lock().expect("token ledger lock poisoned");
        if used.contains_key(token) {
            return Err(TokenError::Reused);
        }
        if used.len() >= LEDGER_CAPACITY {
            used.retain(|_, until| *until >= now);
            if used.len() >= LEDGER_CAPACITY {
                return Err(TokenError::Reused);
            }
        }
        used.insert(token.to_string(), expires);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "12345";
    const SID: &str = "CA0123456789abcdef0123456789abcdef";

    #[test]
    fn a_token_is_good_for_its_own_call_until_it_expires() {
        let token = issue(KEY, SID, 1_000);
        assert_eq!(verify(KEY, SID, Some(&token), 999), Ok(1_000));
        assert_eq!(
            verify(KEY, SID, Some(&token), 1_001),
            Err(TokenError::Expired)
        );
        let other = "CAffffffffffffffffffffffffffffffff";
        assert_eq!(
            verify(KEY, other, Some(&token), 999),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            verify("other-key", SID, Some(&token), 999),
            Err(TokenError::Invalid)
        );
        let stretched = token.replacen("1000", "9999", 1);
        assert_eq!(
            verify(KEY, SID, Some(&stretched), 999),
            Err(TokenError::Invalid)
        );
        assert_eq!(verify(KEY, SID, None, 0), Err(TokenError::Missing));
        for bad in ["", "abc", "1000.%%%", "x.AAAA"] {
            assert_eq!(
                verify(KEY, SID, Some(bad), 0),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn placed_calls_are_bound_to_their_call_ref() {
        assert_eq!(subject(SID, Some("abc")), "ref:abc");
        assert_eq!(subject(SID, None), SID);
        let token = issue(KEY, &subject(SID, Some("abc")), 50);
        assert!(verify(KEY, "ref:abc", Some(&token), 0).is_ok());
        assert!(verify(KEY, SID, Some(&token), 0).is_err());
    }

    #[test]
    fn a_token_opens_one_stream() {
        let ledger = TokenLedger::default();
        assert_eq!(ledger.use_once("t", 10, 0), Ok(()));
        assert_eq!(ledger.use_once("t", 10, 0), Err(TokenError::Reused));
        assert_eq!(
            ledger.clone().use_once("u", 10, 0),
            Ok(()),
            "clones share the ledger"
        );
    }
}
