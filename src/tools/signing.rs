//! Standard Webhooks signatures on the relay's outgoing tool calls.
//!
//! Follows `PROTOCOLS.md` § "Standard Webhooks" (github.com/standard-webhooks/standard-webhooks,
//! `spec/standard-webhooks.md`): headers `webhook-id` (unique per message), `webhook-timestamp`
//! (integer seconds since the Unix epoch) and `webhook-signature: v1,<base64>`, where the
//! signature is HMAC-SHA256 over `"{id}.{timestamp}.{body}"` keyed with the secret's bytes. The
//! secret is written `whsec_<base64>` and decodes to 24–64 bytes, so any Standard Webhooks library
//! (the `standardwebhooks` crate, the PyPI and npm packages) verifies what is signed here.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The secret's prefix in its written form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Shortest and longest secret the spec allows, bytes (after base64 decoding).
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// `webhook-id`, `webhook-timestamp`, `webhook-signature`.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// A signing key. `Debug` never shows it.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer([redacted])")
    }
}

/// The three headers of one signed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `msg_` + 32 hex digits, fresh per message.
    pub id: String,
    /// Seconds since the Unix epoch.
    pub timestamp: i64,
    /// `v1,<base64 HMAC-SHA256>`.
    pub signature: String,
}

impl Signer {
    /// A signer for a secret written `whsec_<base64>` (the prefix may be left out). Errors say
    /// what is wrong without repeating the secret.
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        let encoded = secret.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                "must be whsec_ followed by base64 (e.g. from `openssl rand -base64 32`)"
                    .to_string()
            })?;
        if !SECRET_BYTES.contains(&key.len()) {
            return Err(format!(
                "decodes to {} bytes; Standard Webhooks secrets are {} to {} bytes",
                key.len(),
                SECRET_BYTES.start(),
                SECRET_BYTES.end()
            ));
        }
        Ok(Signer { key })
    }

    /// `v1,<base64>` for message `id` sent at `timestamp` (s) with `body`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    }

    /// Sign `body` now under a fresh message id.
    pub fn sign_now(&self, body: &[u8]) -> Signature {
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.sign(&id, timestamp, body);
        Signature {
            id,
            timestamp,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_test_vector_signs_as_published() {
        // The Standard Webhooks reference libraries' shared vector.
        let signer = Signer::from_secret("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            signer.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn signatures_verify_with_the_standardwebhooks_crate() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signed = Signer::from_secret(secret).unwrap().sign_now(b"{\"a\":1}");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(HEADER_ID, signed.id.parse().unwrap());
        headers.insert(
            HEADER_TIMESTAMP,
            signed.timestamp.to_string().parse().unwrap(),
        );
        headers.insert(HEADER_SIGNATURE, signed.signature.parse().unwrap());
        let verifier = standardwebhooks::Webhook::new(secret).unwrap();
        verifier.verify(b"{\"a\":1}", &headers).expect("verifies");
        assert!(verifier.verify(b"{\"a\":2}", &headers).is_err());
    }

    #[test]
    fn secrets_outside_the_spec_are_refused_without_being_echoed() {
        let short = Signer::from_secret("whsec_c2hvcnQ=").unwrap_err();
        assert!(short.contains("5 bytes"), "{short}");
        let junk = Signer::from_secret("whsec_not base64!").unwrap_err();
        assert!(!junk.contains("not base64!"), "{junk}");
        assert!(!format!(
            "{:?}",
            Signer::from_secret("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()
        )
        .contains("C2FV"));
    }
}
