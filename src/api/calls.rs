//! `/api/calls` and `/api/numbers`: place, list, inspect and hang up calls; list numbers.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::info;

use super::ApiError;
use crate::active::CallSettings;
use crate::app::AppState;
use crate::config::{is_e164, Config, VOICES};
use crate::records::{is_terminal, CallRecord};
use crate::routes::{public_base, stream_url};
use crate::transcript::{EndReason, Transcript};
use crate::twilio::rest::{CreateCall, TwilioRest};
use crate::twilio::{is_call_sid, stream_token, twiml};

/// Longest per-call `instructions`, characters.
const MAX_INSTRUCTIONS: usize = 20_000;
/// Twilio's limit on inline `Twiml`, characters.
const MAX_TWIML: usize = 4000;

/// Body of `POST /api/calls`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCall {
    /// E.164 destination.
    pub to: String,
    /// E.164 caller ID; default `TWILIO_PHONE_NUMBER`.
    pub from: Option<String>,
    pub instructions: Option<String>,
    pub greeting: Option<String>,
    pub voice: Option<String>,
    /// Returned as is with the call record, and passed to tool webhooks (`call.metadata`).
    pub metadata: Option<Value>,
    /// The configured tools (function names, MCP server labels) this call may use; default all.
    pub tools: Option<Vec<String>>,
    /// `false` withholds `transfer_call` from this call.
    pub transfer: Option<bool>,
}

pub(super) fn twilio(state: &AppState) -> Result<&TwilioRest, ApiError> {
    state.twilio.as_ref().ok_or_else(|| {
        ApiError::Disabled(
            "Twilio is not configured: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET)".into(),
        )
    })
}

fn validate(
    config: &Config,
    registry: &crate::tools::Registry,
    call: &NewCall,
) -> Result<String, ApiError> {
    if !is_e164(&call.to) {
        return Err(ApiError::invalid(
            "to",
            "must be an E.164 number such as +15551234567",
        ));
    }
    let allowed = &config.allowed_destinations;
    if !allowed.is_empty() && !allowed.iter().any(|p| call.to.starts_with(p.as_str())) {
        return Err(ApiError::invalid(
            "to",
            format!(
                "{} is not in ALLOWED_DESTINATIONS ({})",
                call.to,
                allowed.join(",")
            ),
        ));
    }
    let from = call
        .from
        .clone()
        .or_else(|| config.twilio_phone_number.clone())
        .ok_or_else(|| ApiError::invalid("from", "give `from` or set TWILIO_PHONE_NUMBER"))?;
    if !is_e164(&from) {
        return Err(ApiError::invalid(
            "from",
            "must be an E.164 number such as +15551234567",
        ));
    }
    if let Some(voice) = &call.voice {
        if !VOICES.contains(&voice.as_str()) {
            return Err(ApiError::invalid(
                "voice",
                format!("must be one of {}", VOICES.join(", ")),
            ));
        }
    }
    if let Some(tools) = &call.tools {
        let unknown = registry.unknown(tools);
        if !unknown.is_empty() {
            return Err(ApiError::invalid(
                "tools",
                format!("not configured in TOOLS_FILE: {}", unknown.join(", ")),
            ));
        }
    }
    if call
        .instructions
        .as_ref()
        .is_some_and(|i| i.chars().count() > MAX_INSTRUCTIONS)
    {
        return Err(ApiError::invalid(
            "instructions",
            format!("at most {MAX_INSTRUCTIONS} characters"),
        ));
    }
    Ok(from)
}

/// `POST /api/calls` → 201 `{"call_sid","status","to","from"}` (see [`place`]).
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<NewCall>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(call) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let placed = place(&state, &headers, call).await?;
    Ok((StatusCode::CREATED, Json(placed)))
}

/// Validate `call` and place it through Twilio (the API's `POST /api/calls` and the console's
/// form both come here): `{"call_sid","status","to","from"}`. `headers` give the public URL
/// when `PUBLIC_URL` is not set.
///
/// # Errors
/// 422 [`ApiError::Invalid`] naming the field, 503 when Twilio, OpenAI or the store is not
/// available, 502 when Twilio refuses.
pub async fn place(
    state: &AppState,
    headers: &HeaderMap,
    call: NewCall,
) -> Result<Value, ApiError> {
    let config = &state.config;
    let from = validate(config, &state.tools, &call)?;
    let twilio = twilio(state)?;
    if !config.openai_configured() {
        return Err(ApiError::Disabled(
            "OPENAI_API_KEY is not set: the call would only hear the fallback message".into(),
        ));
    }
    // In the store, so the instance the stream lands on (any, with PostgreSQL) applies them.
    let reference = state
        .store
        .put_settings(&CallSettings {
            instructions: call.instructions.clone(),
            greeting: call.greeting.clone(),
            voice: call.voice.clone(),
            tools: call.tools.clone(),
            transfer: call.transfer,
            metadata: call.metadata.clone(),
        })
        .await
        .map_err(|e| ApiError::store(&state.stats, e))?;
    let stream = stream_url(config.public_url.as_deref(), headers, "/media-stream");
    let token = crate::routes::stream_token_for(config, |now| {
        let subject = stream_token::subject("", Some(&reference));
        Some((subject, now + stream_token::PLACED_TTL_SECS))
    });
    let mut parameters = vec![
        ("CallRef", reference.as_str()),
        ("From", &from),
        ("To", &call.to),
    ];
    if let Some(token) = &token {
        parameters.push((stream_token::PARAMETER, token));
    }
    let xml = twiml::connect_stream(
        config.intro_message.as_deref(),
        &stream,
        &parameters,
        &config.fallback_message,
    );
    if xml.len() > MAX_TWIML {
        let _ = state.store.take_settings(&reference).await;
        return Err(ApiError::invalid("to", "the generated TwiML exceeds Twilio's 4000 characters; shorten INTRO_MESSAGE or FALLBACK_MESSAGE"));
    }
    let callback = format!(
        "{}/twilio/status",
        public_base(config.public_url.as_deref(), headers)
    );
    let request = CreateCall {
        to: call.to.clone(),
        from: from.clone(),
        twiml: xml,
        status_callback: Some(callback),
        status_callback_events: ["initiated", "ringing", "answered", "completed"]
            .map(String::from)
            .to_vec(),
        timeout_s: None,
    };
    let created = match twilio.create_call(&request).await {
        Ok(created) => created,
        Err(e) => {
            let _ = state.store.take_settings(&reference).await;
            return Err(e.into());
        }
    };
    info!(call_sid = %created.sid, to = %created.to, "placed an outbound call");
    let metadata = call.metadata.clone();
    state
        .store
        .update(
            &created.sid,
            || CallRecord::new(&created.sid, "outbound-api", &created.status),
            |r| {
                r.from = Some(from.clone());
                r.to = Some(call.to.clone());
                r.metadata = metadata;
            },
        )
        .await;
    Ok(
        json!({"call_sid": created.sid, "status": created.status, "to": created.to, "from": created.from}),
    )
}

/// `?limit=` of `GET /api/calls`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
}

/// `GET /api/calls` → `{"calls":[…]}`: calls in progress first, then newest first (limit ≤ 1000, default 50).
/// 503 `store_unavailable` when the store fails.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let calls = state
        .store
        .list(limit)
        .await
        .map_err(|e| ApiError::store(&state.stats, e))?;
    Ok(Json(json!({ "calls": calls })))
}

async fn read_transcript(state: &AppState, call_sid: &str) -> Result<Option<Transcript>, ApiError> {
    state
        .store
        .transcript(call_sid)
        .await
        .map_err(|e| ApiError::store(&state.stats, e))
}

pub(super) async fn read_record(
    state: &AppState,
    call_sid: &str,
) -> Result<Option<CallRecord>, ApiError> {
    state
        .store
        .get(call_sid)
        .await
        .map_err(|e| ApiError::store(&state.stats, e))
}

/// `GET /api/calls/{call_sid}` → the record plus `"transcript"` (or `null`).
pub async fn show(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = read_record(&state, &call_sid).await?;
    let transcript = read_transcript(&state, &call_sid).await?;
    if record.is_none() && transcript.is_none() {
        return Err(ApiError::NotFound(format!("no call {call_sid}")));
    }
    let mut body = match record {
        Some(r) => serde_json::to_value(r).map_err(|e| ApiError::Internal(e.into()))?,
        None => json!({"call_sid": call_sid}),
    };
    body["transcript"] =
        serde_json::to_value(transcript).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(body))
}

/// `?format=text|json` of the transcript endpoint.
#[derive(Debug, Deserialize)]
pub struct TranscriptQuery {
    format: Option<String>,
}

/// `GET /api/calls/{call_sid}/transcript` → the transcript JSON, or with `?format=text`
/// `Caller: …` / `Assistant: …` / `Agent: …` lines.
pub async fn transcript(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
    Query(q): Query<TranscriptQuery>,
) -> Result<Response, ApiError> {
    let t = read_transcript(&state, &call_sid)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no transcript for {call_sid}")))?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(t).into_response()),
        Some("text") => {
            let text: String = t
                .turns
                .iter()
                .map(|turn| format!("{}: {}\n", turn.role.label(), turn.text))
                .collect();
            Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
        }
        Some(other) => Err(ApiError::invalid(
            "format",
            format!("{other:?} is not json or text"),
        )),
    }
}

/// `POST /api/calls/{call_sid}/hangup` → Twilio `Status=completed`, or `Status=canceled` while
/// the call's record says it has not been answered (see [`TwilioRest::hang_up`]). A Twilio 20404
/// for a call this relay knows (in progress or on record) means it had already ended: 200 with
/// that said; for a call neither knows, 404. With several instances ([`crate::cluster`]) a call
/// streaming on another one counts as in progress here: that instance records `api_hangup`
/// before Twilio is asked (waiting at most [`crate::cluster::ACK_TIMEOUT`] for it) and ends
/// the stream once Twilio accepts. A stream of the call that starts (on any instance) while
/// Twilio is being asked begins with `api_hangup` as its reason. A `call_sid` that is not `CA` + 32 hex digits is 422
/// and never reaches Twilio.
pub async fn hang_up(
    State(state): State<AppState>,
    Path(call_sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    end_call(&state, &call_sid).await.map(Json)
}

/// End `call_sid` as [`hang_up`] describes (the console's hang-up button comes here too):
/// `{"call_sid","status"[,"message"]}`.
///
/// # Errors
/// As [`hang_up`]: 422 for a malformed SID, 404 for a call nobody knows, 502 when Twilio fails.
pub async fn end_call(state: &AppState, call_sid: &str) -> Result<Value, ApiError> {
    let call_sid = call_sid.to_string();
    if !is_call_sid(&call_sid) {
        return Err(ApiError::invalid(
            "call_sid",
            format!("{call_sid:?} is not a CallSid (CA followed by 32 hexadecimal digits)"),
        ));
    }
    let twilio = twilio(state)?;
    // Say why before Twilio's `stop` arrives, so the transcript does not blame the caller.
    // A stream that starts while Twilio is being asked picks the reason up when it registers.
    let handle = state.active.announce_end(&call_sid, EndReason::ApiHangup);
    let record = match read_record(state, &call_sid).await {
        Ok(record) => record,
        Err(e) => {
            state.active.withdraw(&call_sid, EndReason::ApiHangup);
            return Err(e);
        }
    };
    // Not here: the instance holding its stream (if any) says why, and acknowledges first.
    let held_elsewhere = match (&handle, &state.cluster) {
        (None, Some(cluster)) => cluster.prepare_hangup(&call_sid).await,
        _ => false,
    };
    let streaming = handle.is_some() || held_elsewhere;
    let on_record = streaming || record.is_some();
    // A call whose media stream is up is in progress, whatever the callbacks said so far.
    let known_status = if streaming {
        None
    } else {
        record.map(|r| r.status)
    };
    let (body, final_status) = match twilio.hang_up(&call_sid, known_status.as_deref()).await {
        Ok(call) => {
            let status = if is_terminal(&call.status) {
                call.status.clone()
            } else {
                "completed".to_string()
            };
            (json!({"call_sid": call_sid, "status": call.status}), status)
        }
        Err(e) if e.is_not_found() && on_record => (
            json!({"call_sid": call_sid, "status": "completed",
                "message": "the call had already ended (Twilio 20404)"}),
            "completed".to_string(),
        ),
        Err(e) => {
            state.active.withdraw(&call_sid, EndReason::ApiHangup);
            if e.is_not_found() {
                return Err(ApiError::NotFound(format!(
                    "no call {call_sid}: not in this relay's records and unknown to Twilio (20404)"
                )));
            }
            return Err(e.into());
        }
    };
    // Also a stream that started here while Twilio was being asked.
    state.active.end(&call_sid, EndReason::ApiHangup);
    if let (true, Some(cluster)) = (held_elsewhere, &state.cluster) {
        cluster.finish_hangup(&call_sid).await;
    }
    state
        .store
        .update_existing(&call_sid, |r| {
            r.end(&final_status, Some(EndReason::ApiHangup))
        })
        .await;
    info!(%call_sid, "hung up through the API");
    Ok(body)
}

/// `GET /api/numbers` → `{"numbers":[{"sid","phone_number","friendly_name"}]}` (all pages).
pub async fn numbers(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let numbers = twilio(&state)?.incoming_numbers().await?;
    Ok(Json(json!({ "numbers": numbers })))
}
