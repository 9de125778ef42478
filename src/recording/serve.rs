//! `GET /api/calls/{sid}/recording.wav`: the call's recording (`audio/wav`), with `Range`
//! requests answered `206` by tower-http's `ServeFile`; 404 when the call has no recording.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::api::ApiError;
use crate::app::AppState;
use crate::twilio::is_call_sid;

/// The recording's `Content-Type`.
static WAV: std::sync::LazyLock<mime::Mime> =
    std::sync::LazyLock::new(|| "audio/wav".parse().expect("a valid media type"));

/// Serve `RECORDING_DIR/{call_sid}.wav`.
///
/// # Errors
/// `404` when `call_sid` is not a CallSid or its call has no recording.
pub async fn recording_wav(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let missing = || ApiError::NotFound(format!("no recording of call {call_sid}"));
    // A CallSid is `CA` + 32 hex digits, so the path cannot leave the directory.
    if !is_call_sid(&call_sid) {
        return Err(missing());
    }
    let path = super::wav_path(&state.config.recording_dir, &call_sid);
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(missing());
    }
    let response = ServeFile::new_with_mime(path, &WAV)
        .oneshot(request)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(response.map(Body::new))
}
