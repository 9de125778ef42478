//! HTTP handlers: the TwiML webhook, the Media Streams upgrade and `/health`.

use std::collections::HashMap;

use axum::extract::rejection::FormRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Form, State};
use std::sync::atomic::Ordering;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tracing::{info, warn};

use crate::app::AppState;
use crate::bridge;
use crate::metrics::Exposition;
use crate::stats::ActiveCall;
use crate::twilio::{self, stream_token, twiml};

/// Read buffer per WebSocket, bytes (messages larger than it still work; it grows as needed).
pub const READ_BUFFER_BYTES: usize = 4096;

/// Largest WebSocket message accepted from Twilio (a 20 ms frame is ~300 bytes), bytes.
pub const MAX_TWILIO_MESSAGE_BYTES: usize = 64 * 1024;

/// `GET|POST /incoming-call`: TwiML that connects the call to `/media-stream`.
///
/// Twilio sends the call's parameters as a form (POST) or query (GET); `From` and `To` are passed
/// on as `<Parameter>`s. Without `OPENAI_API_KEY` the answer is the fallback message and `<Hangup/>`.
pub async fn incoming_call(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let params = match form {
        Ok(Form(params)) => params,
        // No form body (e.g. a bare POST from curl): answer as for a call without parameters.
        Err(FormRejection::InvalidFormContentType(_)) => HashMap::new(),
        // Too large or unreadable: the rejection's own status (413, 400).
        Err(rejection) => return rejection.into_response(),
    };
    let config = &state.config;
    let call_sid = params.get("CallSid").map(String::as_str).unwrap_or("-");
    let body = if !config.openai_configured() {
        warn!(
            call_sid,
            "incoming call answered with the fallback: OPENAI_API_KEY is not set"
        );
        twiml::say_and_hang_up(&config.fallback_message)
    } else if state.draining.load(Ordering::Relaxed) {
        info!(
            call_sid,
            "incoming call answered with the fallback: the server is shutting down"
        );
        twiml::say_and_hang_up(&config.fallback_message)
    } else if state.stats.active() >= config.max_concurrent_calls {
        state.stats.rejected();
        warn!(
            call_sid,
            active = state.stats.active(),
            "incoming call rejected as busy: MAX_CONCURRENT_CALLS reached"
        );
        twiml::reject_busy()
    } else {
        let url = stream_url(config.public_url.as_deref(), &headers, "/media-stream");
        info!(call_sid, stream_url = %url, "incoming call");
        let token = stream_token_for(config, |now| {
            let call_sid = params.get("CallSid").filter(|s| twilio::is_call_sid(s))?;
            Some((call_sid.clone(), now + stream_token::INCOMING_TTL_SECS))
        });
        let mut parameters: Vec<(&str, &str)> = ["From", "To"]
            .into_iter()
            .filter_map(|k| params.get(k).map(|v| (k, v.as_str())))
            .collect();
        if let Some(token) = &token {
            parameters.push((stream_token::PARAMETER, token));
        }
        twiml::connect_stream(
            config.intro_message.as_deref(),
            &url,
            &parameters,
            &config.fallback_message,
        )
    };
    ([(header::CONTENT_TYPE, "text/xml")], body).into_response()
}

/// The stream token for a call's TwiML when signatures are checked (see
/// [`stream_token`]): `subject_and_expiry(now)` names the subject and the expiry (Unix seconds).
pub fn stream_token_for(
    config: &crate::config::Config,
    subject_and_expiry: impl FnOnce(i64) -> Option<(String, i64)>,
) -> Option<String> {
    let key = config.signing_key()?;
    let (subject, expires) = subject_and_expiry(chrono::Utc::now().timestamp())?;
    Some(stream_token::issue(key.expose(), &subject, expires))
}

/// The public base URL, e.g. `https://relay.example.com`: `PUBLIC_URL` when set, otherwise the
/// request's `Host` with the scheme from `X-Forwarded-Proto` (default `https`: Twilio only calls
/// public https endpoints, usually through a TLS-terminating proxy).
pub fn public_base(public_url: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = public_url {
        return base.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .and_then(|p| p.split(',').next())
        .map(str::trim)
        .filter(|p| *p == "http")
        .unwrap_or("https");
    format!("{proto}://{host}")
}

/// The WebSocket form of an http(s) URL: `https://` → `wss://`, `http://` → `ws://`.
pub fn websocket_url(url: &str) -> String {
    match url.split_once("://") {
        Some(("http", rest)) => format!("ws://{rest}"),
        Some((_, rest)) => format!("wss://{rest}"),
        None => format!("wss://{url}"),
    }
}

/// The `wss://…{path}` URL Twilio should open (see [`public_base`]).
pub fn stream_url(public_url: Option<&str>, headers: &HeaderMap, path: &str) -> String {
    websocket_url(&format!("{}{path}", public_base(public_url, headers)))
}

/// `GET /media-stream`: one Twilio Media Stream (one call) per WebSocket.
pub async fn media_stream(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let slot = match admit_call(&state) {
        Ok(slot) => slot,
        Err(refusal) => return refusal.into_response(),
    };
    let calls = state.calls.clone();
    ws.max_message_size(MAX_TWILIO_MESSAGE_BYTES)
        // tungstenite zero-fills its read buffer before every read: the 128 KiB default cost
        // ~14 % of relay CPU and ~250 KiB per call; Twilio's messages are ~300 bytes.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_frame_size(MAX_TWILIO_MESSAGE_BYTES)
        .on_upgrade(move |socket| calls.track_future(bridge::run_call(socket, state, slot)))
}

/// Why a new stream is turned away: answered 503 with the reason.
#[derive(Debug)]
pub struct Refusal(&'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, self.0).into_response()
    }
}

/// A call slot for a new stream, taken before the upgrade (so sockets still waiting for `start`
/// count against `MAX_CONCURRENT_CALLS` too); a [`Refusal`] while draining or when every slot is
/// taken.
pub fn admit_call(state: &AppState) -> Result<ActiveCall, Refusal> {
    let reason = if state.draining.load(Ordering::Relaxed) {
        "shutting down"
    } else if let Some(slot) = state.stats.reserve_call(state.config.max_concurrent_calls) {
        return Ok(slot);
    } else {
        state.stats.rejected();
        "MAX_CONCURRENT_CALLS reached"
    };
    warn!(reason, "refused a stream");
    Err(Refusal(reason))
}

/// Body of `GET /health`. The fields of the Node.js sample our users come from (`status`,
/// `uptime`, `timestamp`, `connections`, `errors`, `openai_configured`) keep their names.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Health {
    /// `healthy`; `draining` after SIGTERM, `unhealthy` while the store is unreachable (both
    /// answered with 503, so load balancers stop routing).
    pub status: String,
    pub version: String,
    /// Seconds since start, as the sample writes it: `"325s"`.
    pub uptime: String,
    pub uptime_s: u64,
    /// RFC 3339.
    pub timestamp: String,
    pub connections: Connections,
    pub errors: u64,
    /// `ok`, or `error` while the store (`DATABASE_URL`) does not answer.
    pub database: String,
    pub openai_configured: bool,
    /// Twilio REST credentials are set (outbound calls, hang-up, numbers).
    pub twilio_configured: bool,
    /// `OPENAI_MODEL`.
    pub model: String,
    /// The model's announced shutdown date (`YYYY-MM-DD`); absent for a current model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_shutdown_date: Option<String>,
}

/// Calls in progress and since start.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Connections {
    pub active: u64,
    pub total: u64,
}

/// `GET /metrics`: OpenMetrics text when `Accept` asks for it (Prometheus does), otherwise the
/// classic Prometheus text format 0.0.4; the `Content-Type` names the one sent.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|h| h.to_str().ok());
    let format = Exposition::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.stats.prometheus(format),
    )
        .into_response()
}

/// `GET /health`: liveness and counters for operators; 503 with `"status": "draining"` (and
/// `connections.active`, the calls still running) once the server is shutting down, and 503
/// with `"status": "unhealthy"`, `"database": "error"` while the store does not answer (a
/// one-second ping, reused for 1.5 s).
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let stats = &state.stats;
    let draining = state.draining.load(Ordering::Relaxed);
    let database_ok = state.store.healthy().await;
    let (code, status) = if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !database_ok {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else {
        (StatusCode::OK, "healthy")
    };
    let health = Health {
        status: status.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime: format!("{}s", stats.uptime_s()),
        uptime_s: stats.uptime_s(),
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        connections: Connections {
            active: stats.active(),
            total: stats.total(),
        },
        errors: stats.errors(),
        database: if database_ok { "ok" } else { "error" }.into(),
        openai_configured: state.config.openai_configured(),
        twilio_configured: state.twilio.is_some(),
        model: state.config.openai_model.clone(),
        model_shutdown_date: state.config.model_shutdown().map(|s| s.date.to_string()),
    };
    (code, Json(health))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn stream_url_prefers_public_url_and_maps_schemes() {
        let h = HeaderMap::new();
        assert_eq!(
            stream_url(Some("https://relay.example.com/"), &h, "/media-stream"),
            "wss://relay.example.com/media-stream"
        );
        assert_eq!(
            stream_url(Some("http://127.0.0.1:8080"), &h, "/media-stream"),
            "ws://127.0.0.1:8080/media-stream"
        );
    }

    #[test]
    fn stream_url_from_forwarded_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("abc.ngrok.app"));
        assert_eq!(
            stream_url(None, &h, "/media-stream"),
            "wss://abc.ngrok.app/media-stream"
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        assert_eq!(
            stream_url(None, &h, "/media-stream"),
            "ws://abc.ngrok.app/media-stream"
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            stream_url(None, &h, "/media-stream"),
            "wss://abc.ngrok.app/media-stream"
        );
    }
}
