//! The console's session cookie and CSRF tokens, stateless: a cookie `relay_session` =
//! `{expires}.{nonce}.{mac}` where `mac` = HMAC-SHA256(key, `{expires}.{nonce}`) and the key is
//! derived from `API_TOKEN` (so changing the token signs everyone out; restarts do not). A
//! form's CSRF token is HMAC-SHA256(key, `csrf.{nonce}`): only the holder of the session can
//! know it, and no server-side table is needed.
//!
//! The sign-in form has no session yet: it uses a double-submit token (a random value in the
//! `relay_login` cookie and in the form, which must match), on top of `SameSite=Strict`.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const COOKIE: &str = "relay_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "relay_login";
/// How long a session lasts, seconds (12 h).
pub const LIFETIME_SECS: i64 = 12 * 3600;

type HmacSha256 = Hmac<Sha256>;

/// The signing key of one `API_TOKEN`.
pub struct Keys {
    key: [u8; 32],
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The random part of the cookie; CSRF tokens are derived from it.
    pub nonce: String,
    /// Unix seconds after which the cookie is refused.
    pub expires: i64,
}

impl Keys {
    /// The key for `api_token`: HMAC-SHA256(token, a fixed label), so the cookie's key is not
    /// the bearer token itself.
    pub fn new(api_token: &Secret) -> Keys {
        let mut mac = HmacSha256::new_from_slice(api_token.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"twilio-realtime-relay console session v1");
        Keys {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, message: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(message.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A new session cookie value valid until `now + LIFETIME_SECS` (Unix seconds).
    pub fn issue(&self, now: i64) -> String {
        let payload = format!("{}.{}", now + LIFETIME_SECS, random_nonce());
        let mac = self.mac(&payload);
        format!("{payload}.{mac}")
    }

    /// The session in cookie `value`, if its MAC is right (compared in constant time) and it
    /// has not expired at `now` (Unix seconds).
    pub fn verify(&self, value: &str, now: i64) -> Option<Session> {
        let (payload, mac) = value.rsplit_once('.')?;
        let (expires, nonce) = payload.split_once('.')?;
        let expected = self.mac(payload);
        if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        (now < expires).then(|| Session {
            nonce: nonce.to_string(),
            expires,
        })
    }

    /// The CSRF token of `session`'s forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.mac(&format!("csrf.{}", session.nonce))
    }

    /// Whether `given` is `session`'s CSRF token (constant time).
    pub fn csrf_ok(&self, session: &Session, given: &str) -> bool {
        bool::from(self.csrf(session).as_bytes().ct_eq(given.as_bytes()))
    }
}

/// 128 random bits, URL-safe base64.
pub fn random_nonce() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// Whether `a` and `b` are equal, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

/// The valid session of a request, when `API_TOKEN` is set and the cookie checks out.
pub fn from_headers(api_token: Option<&Secret>, headers: &HeaderMap) -> Option<Session> {
    let keys = Keys::new(api_token?);
    keys.verify(cookie(headers, COOKIE)?, chrono::Utc::now().timestamp())
}

/// `Set-Cookie` for a session value (`None`: clear it).
pub fn set_cookie(value: Option<&str>) -> String {
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={LIFETIME_SECS}"
        ),
        None => format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_verifies_until_it_expires_and_only_under_its_token() {
        let keys = Keys::new(&Secret::from("token-one"));
        let cookie = keys.issue(1000);
        let session = keys.verify(&cookie, 1001).expect("valid");
        assert_eq!(session.expires, 1000 + LIFETIME_SECS);
        assert!(
            keys.verify(&cookie, 1000 + LIFETIME_SECS).is_none(),
            "expired"
        );
        let other = Keys::new(&Secret::from("token-two"));
        assert!(
            other.verify(&cookie, 1001).is_none(),
            "a new token signs out"
        );
        let (payload, _) = cookie.rsplit_once('.').unwrap();
        let forged = format!("9999999999.{}", payload.split_once('.').unwrap().1);
        assert!(keys
            .verify(
                &format!("{forged}.{}", cookie.rsplit_once('.').unwrap().1),
                1001
            )
            .is_none());
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let keys = Keys::new(&Secret::from("t"));
        let a = keys.verify(&keys.issue(0), 1).unwrap();
        let b = keys.verify(&keys.issue(0), 1).unwrap();
        assert!(keys.csrf_ok(&a, &keys.csrf(&a)));
        assert!(!keys.csrf_ok(&a, &keys.csrf(&b)));
        assert!(!keys.csrf_ok(&a, ""));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; relay_session=x.y.z; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
