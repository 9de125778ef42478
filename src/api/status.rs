//! `POST /twilio/status`: Twilio's call status callback (form), applied to the call record.
//! Callbacks may arrive out of order; `SequenceNumber` decides (see [`crate::records`]). The
//! record is changed in the store, so with PostgreSQL any instance may receive the callback.

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use tracing::info;

use super::ApiError;
use crate::app::AppState;
use crate::records::CallRecord;
use crate::twilio::rest::StatusCallback;

/// Apply one status callback; answers 204. Malformed bodies get 400 and are counted.
pub async fn twilio_status(
    State(state): State<AppState>,
    form: Result<Form<StatusCallback>, FormRejection>,
) -> Result<StatusCode, ApiError> {
    let Form(cb) = form.map_err(|e| {
        state.stats.error(crate::stats::ErrorKind::StatusCallback);
        ApiError::BadRequest(format!("not a Twilio status callback: {e}"))
    })?;
    let status = cb.call_status.clone().unwrap_or_default();
    if status.is_empty() {
        return Err(ApiError::BadRequest("CallStatus is missing".into()));
    }
    let direction = cb
        .direction
        .clone()
        .unwrap_or_else(|| "outbound-api".into());
    let mut applied = false;
    // A failed write is counted and logged; Twilio still hears 204 (it would only retry).
    state
        .store
        .update(
            &cb.call_sid,
            || CallRecord::new(&cb.call_sid, &direction, &status),
            |r| {
                applied = r.apply_status(&status, cb.sequence(), cb.duration_s());
                r.from = r.from.take().or(cb.from.clone());
                r.to = r.to.take().or(cb.to.clone());
            },
        )
        .await;
    info!(call_sid = %cb.call_sid, status, applied, sequence = cb.sequence(), "Twilio status callback");
    Ok(StatusCode::NO_CONTENT)
}
