//! The HTTP API's error type: JSON `{"error":{"code","message","source","field"?}}` with the
//! right status. Twilio's own code and message pass through with `source: "twilio"` and 502;
//! 5xx details of our own are logged, never sent.
//!
//! Every error is logged once, here, as it becomes a response: the ones a client or Twilio
//! causes and the relay expects (4xx, Twilio's refusals as 502, a feature not configured as 503)
//! at WARN with their reason; internal errors at ERROR with their cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::{error, warn};

use crate::twilio::rest::TwilioError;

/// Everything an `/api` or Twilio-callback handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no or wrong bearer token on a request for `path`.
    #[error("missing or invalid bearer token")]
    Unauthorized {
        /// The request's path, for the log line (never sent back).
        path: String,
    },
    /// 503: the feature needs configuration (`API_TOKEN`, Twilio credentials, …).
    #[error("{0}")]
    Disabled(String),
    /// 422: a request field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// 400: the body is not the JSON we expect.
    #[error("{0}")]
    BadRequest(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 502: Twilio refused or failed.
    #[error("Twilio: {0}")]
    Twilio(#[from] TwilioError),
    /// 503: the store (`DATABASE_URL`) failed or timed out; counted as a storage error by
    /// [`ApiError::store`], logged with its cause.
    #[error("the store is unavailable")]
    Store(anyhow::Error),
    /// 500: logged with its cause; the client sees a generic message.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A store failure, counted in `stats` as `errors_total{kind="storage"}`.
    pub fn store(stats: &crate::stats::Stats, error: anyhow::Error) -> Self {
        stats.error(crate::stats::ErrorKind::Storage);
        ApiError::Store(error)
    }

    /// A 422 naming `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field,
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The one log line of this error, answered with `status`.
    fn log(&self, status: StatusCode) {
        let status = status.as_u16();
        match self {
            ApiError::Internal(e) => {
                error!(
                    status,
                    error = format!("{e:#}"),
                    "internal error in the HTTP API"
                );
            }
            ApiError::Store(e) => warn!(
                status,
                error = format!("{e:#}"),
                "the store failed during an HTTP API request"
            ),
            ApiError::Unauthorized { path } => warn!(
                status,
                path = path.as_str(),
                "rejected an /api request without a valid bearer token"
            ),
            ApiError::Twilio(TwilioError::Api {
                code,
                message,
                http_status,
                ..
            }) => warn!(
                status,
                twilio_status = http_status,
                twilio_code = code,
                reason = message.as_str(),
                "Twilio refused the request"
            ),
            ApiError::Invalid { field, message } => warn!(
                status,
                field,
                reason = message.as_str(),
                "invalid request to the HTTP API"
            ),
            other => warn!(
                status,
                reason = %other,
                "HTTP API request failed"
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            ApiError::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                json!({"code": "unauthorized", "message": self.to_string(), "source": "relay"}),
            ),
            ApiError::Disabled(message) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "not_configured", "message": message, "source": "relay"}),
            ),
            ApiError::Invalid { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"code": "invalid_field", "message": message, "field": field, "source": "relay"}),
            ),
            ApiError::BadRequest(message) => (
                StatusCode::BAD_REQUEST,
                json!({"code": "bad_request", "message": message, "source": "relay"}),
            ),
            ApiError::NotFound(message) => (
                StatusCode::NOT_FOUND,
                json!({"code": "not_found", "message": message, "source": "relay"}),
            ),
            ApiError::Twilio(TwilioError::Api {
                code,
                message,
                more_info,
                http_status,
            }) => (
                StatusCode::BAD_GATEWAY,
                json!({"code": code, "message": message, "more_info": more_info,
                       "twilio_status": http_status, "source": "twilio"}),
            ),
            ApiError::Twilio(e) => (
                StatusCode::BAD_GATEWAY,
                json!({"code": "twilio_unreachable", "message": e.to_string(), "source": "twilio"}),
            ),
            ApiError::Store(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"code": "store_unavailable", "message": self.to_string(), "source": "relay"}),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"code": "internal", "message": "internal error", "source": "relay"}),
            ),
        };
        self.log(status);
        (status, Json(json!({ "error": body }))).into_response()
    }
}
