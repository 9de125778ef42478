//! The HTTP API under `/api` (bearer token, JSON) and Twilio's status callback.
//!
//! Everything under `/api` needs `Authorization: Bearer $API_TOKEN`, compared in constant time;
//! without `API_TOKEN` the whole API answers 503 (never open by default: an endpoint that
//! places calls is toll fraud waiting to happen). GET and HEAD also accept the console's
//! session cookie (so its `<audio>` and scripts can read); a POST never does (no CSRF token).

mod calls;
mod error;
mod events;
mod status;
mod transfer;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

pub use calls::{end_call, place, NewCall};
pub use error::ApiError;
pub use status::twilio_status;
pub use transfer::transfer_call;

use crate::app::AppState;

/// `/api/...` routes, all behind the bearer token.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/calls", post(calls::create).get(calls::list))
        .route("/api/calls/{call_sid}", get(calls::show))
        .route("/api/calls/{call_sid}/transcript", get(calls::transcript))
        .route("/api/calls/{call_sid}/hangup", post(calls::hang_up))
        .route("/api/calls/{call_sid}/transfer", post(transfer::transfer))
        .route("/api/calls/{call_sid}/events", get(events::feed))
        .route("/api/numbers", get(calls::numbers))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.config.api_token.as_ref() else {
        return Err(ApiError::Disabled(
            "the HTTP API is disabled: set API_TOKEN to a long random value to enable it, then send `Authorization: Bearer <API_TOKEN>`".into(),
        ));
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or("");
    let reads = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let bearer = bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes()));
    let signed_in =
        reads && crate::console::session::from_headers(Some(expected), request.headers()).is_some();
    if bearer || signed_in {
        Ok(next.run(request).await)
    } else {
        state.stats.error(crate::stats::ErrorKind::ApiAuth);
        Err(ApiError::Unauthorized {
            path: request.uri().path().to_string(),
        })
    }
}
