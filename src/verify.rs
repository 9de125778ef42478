//! Proof that a request comes from Twilio: `X-Twilio-Signature` on the webhooks, the status
//! callback and the Media Streams upgrades.
//!
//! The signed URL is rebuilt from `PUBLIC_URL` (not from headers an attacker controls) plus the
//! request's path and query; WebSocket upgrades are signed against the `wss://` form. Form POST
//! parameters are part of the signature; JSON bodies are covered by `bodySHA256`. See
//! `PROTOCOLS.md` § "Twilio request signatures" and [`crate::twilio::signature`].

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::warn;

use crate::app::{AppState, MAX_BODY_BYTES};
use crate::routes::{public_base, websocket_url};
use crate::twilio::signature;

/// The header Twilio signs requests with.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// Middleware: pass requests with a valid signature (or all, when checks are off); answer the
/// rest 403, counted and logged without the signature.
pub async fn require_twilio_signature(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let config = &state.config;
    let Some(token) = config.signing_key() else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let websocket = is_upgrade(&parts.headers);
    let url = signed_url(
        config.public_url.as_deref(),
        &parts.headers,
        &path,
        websocket,
    );
    let given = parts
        .headers
        .get(SIGNATURE_HEADER)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE.into_response(),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let valid = if parts.method == Method::POST && content_type.starts_with("application/json") {
        signature::is_valid_json(token.expose(), &url, &bytes, &given)
    } else {
        let params: Vec<(String, String)> = if parts.method == Method::POST {
            form_pairs(&bytes)
        } else {
            Vec::new()
        };
        signature::is_valid(token.expose(), &url, &params, &given)
    };
    if !valid {
        state.stats.error(crate::stats::ErrorKind::Signature);
        state.stats.rejected();
        warn!(
            method = %parts.method,
            url = %url,
            signature_present = !given.is_empty(),
            "rejected a request without a valid X-Twilio-Signature"
        );
        return (StatusCode::FORBIDDEN, "invalid Twilio signature").into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The URL Twilio signed: the public base URL (`PUBLIC_URL`; without it the `Host` header and
/// `X-Forwarded-Proto` stand in, and start-up warns) plus path and query, `wss://` for upgrades.
pub fn signed_url(
    public_url: Option<&str>,
    headers: &HeaderMap,
    path_and_query: &str,
    websocket: bool,
) -> String {
    let url = format!("{}{path_and_query}", public_base(public_url, headers));
    if websocket {
        websocket_url(&url)
    } else {
        url
    }
}

/// Decoded `application/x-www-form-urlencoded` pairs, in order (repeated keys kept); a body
/// that is not a form signs as no parameters (and so fails unless Twilio signed none).
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_like_twilio_encodes_them() {
        let pairs = form_pairs(b"From=%2B14158675309&Body=hello+world&Odd=100%25&Empty=");
        assert_eq!(
            pairs,
            [
                ("From".to_string(), "+14158675309".to_string()),
                ("Body".into(), "hello world".into()),
                ("Odd".into(), "100%".into()),
                ("Empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn the_signed_url_comes_from_public_url_and_upgrades_use_wss() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "attacker.example".parse().unwrap());
        assert_eq!(
            signed_url(
                Some("https://relay.example.com/"),
                &h,
                "/media-stream",
                true
            ),
            "wss://relay.example.com/media-stream"
        );
        assert_eq!(
            signed_url(
                Some("https://relay.example.com"),
                &h,
                "/incoming-call?x=1",
                false
            ),
            "https://relay.example.com/incoming-call?x=1"
        );
        assert_eq!(
            signed_url(None, &h, "/incoming-call", false),
            "https://attacker.example/incoming-call"
        );
    }
}
