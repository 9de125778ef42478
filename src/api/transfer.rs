//! `POST /api/calls/{sid}/transfer`: hand a call in progress to one of `TRANSFER_DESTINATIONS`
//! by name (the console's transfer button comes here too), as the model's `transfer_call` does.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::calls::{read_record, twilio};
use super::ApiError;
use crate::app::AppState;
use crate::transcript::EndReason;
use crate::twilio::{is_call_sid, twiml};

/// Body of `POST /api/calls/{sid}/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// A `TRANSFER_DESTINATIONS` name, e.g. `sales`.
    pub destination: String,
}

/// `POST /api/calls/{call_sid}/transfer` `{"destination":"sales"}` → `{"call_sid","destination"}`.
pub async fn transfer(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    transfer_call(&state, &call_sid, &body.destination)
        .await
        .map(Json)
}

/// Point `call_sid` at the TwiML `<Dial>` of destination `name` (caller ID: the call's `from`
/// when it is E.164). The call's stream ends with `end_reason` `transferred`; if Twilio refuses,
/// the reason is taken back and the call goes on.
///
/// # Errors
/// 422 for a malformed SID or an unknown destination, 503 without Twilio credentials, 502 when
/// Twilio refuses, 503 when the store fails.
pub async fn transfer_call(
    state: &AppState,
    call_sid: &str,
    name: &str,
) -> Result<Value, ApiError> {
    if !is_call_sid(call_sid) {
        return Err(ApiError::invalid(
            "call_sid",
            format!("{call_sid:?} is not a CallSid (CA followed by 32 hexadecimal digits)"),
        ));
    }
    let destinations = &state.config.transfer_destinations;
    let Some(destination) = destinations.iter().find(|d| d.name == name) else {
        let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
        return Err(ApiError::invalid(
            "destination",
            if names.is_empty() {
                "no TRANSFER_DESTINATIONS are configured".to_string()
            } else {
                format!("must be one of {}", names.join(", "))
            },
        ));
    };
    let twilio = twilio(state)?;
    let record = read_record(state, call_sid).await?;
    let caller_id = record
        .and_then(|r| r.from)
        .filter(|f| crate::config::is_e164(f));
    let xml = twiml::dial(&destination.target, caller_id.as_deref());
    // Before the request: the `stop` Twilio sends once it has the new TwiML may come first.
    state.active.announce_end(call_sid, EndReason::Transferred);
    if let Err(e) = twilio.update_twiml(call_sid, &xml).await {
        state.active.withdraw(call_sid, EndReason::Transferred);
        return Err(e.into());
    }
    info!(%call_sid, destination = %destination.name, "transferred through the API");
    Ok(json!({"call_sid": call_sid, "destination": destination.name}))
}
