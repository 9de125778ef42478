//! The stand-in's REST API: basic auth, `Calls.json`, `Calls/{CA}.json` and
//! `IncomingPhoneNumbers.json` in Twilio's JSON shapes (`PROTOCOLS.md` § "Twilio REST API").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tracing::info;

use super::call::{self, Callbacks, Placed, Source};
use super::log::{CallLog, Control};
use super::{callback, fresh_sid, twiml, PhoneNumber, Shared};

/// REST changes waiting for one call's task.
const CONTROL_QUEUE: usize = 8;
/// Twilio's limit on inline `Twiml`, characters.
const MAX_TWIML: usize = 4000;
/// The status callback events Twilio knows.
const EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

type Form = Vec<(String, String)>;

/// Twilio's error answer: `{"code","message","more_info","status"}` with that HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("{message} (Twilio error {code})")]
pub(crate) struct TwilioApiError {
    status: StatusCode,
    code: u32,
    message: String,
}

fn error(status: StatusCode, code: u32, message: impl Into<String>) -> TwilioApiError {
    TwilioApiError {
        status,
        code,
        message: message.into(),
    }
}

fn bad(code: u32, message: impl Into<String>) -> TwilioApiError {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn not_found(uri: &Uri) -> TwilioApiError {
    let message = format!("The requested resource {} was not found", uri.path());
    error(StatusCode::NOT_FOUND, 20404, message)
}

impl IntoResponse for TwilioApiError {
    fn into_response(self) -> Response {
        info!(code = self.code, message = %self.message, "Twilio stand-in refused a request");
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.code == 20003 {
            let challenge = header::HeaderValue::from_static("Basic realm=\"Twilio API\"");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

type Answer = Result<Response, TwilioApiError>;

/// The API's routes; anything else is 404 20404.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let account = "/2010-04-01/Accounts/{account}";
    Router::new()
        .route(&format!("{account}/Calls.json"), post(create_call))
        .route(
            &format!("{account}/Calls/{{file}}"),
            get(show_call).post(update_call),
        )
        .route(
            &format!("{account}/IncomingPhoneNumbers.json"),
            get(numbers_page),
        )
        .fallback(|uri: Uri| async move { not_found(&uri) })
        .with_state(shared)
}

/// Basic auth with the account SID and auth token or the API key, for this account's path.
fn authenticate(shared: &Shared, headers: &HeaderMap, account: &str) -> Result<(), TwilioApiError> {
    let refused = || error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    let (user, password) = basic_auth(headers).ok_or_else(refused)?;
    let same = |a: &str, b: &str| bool::from(a.as_bytes().ct_eq(b.as_bytes()));
    let token = user == shared.account_sid && same(&password, &shared.auth_token);
    let key = shared
        .api_key
        .as_ref()
        .is_some_and(|(sid, secret)| user == *sid && same(&password, secret));
    if (token || key) && account == shared.account_sid {
        Ok(())
    } else {
        Err(refused())
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.strip_prefix("Basic ")?)
        .ok()?;
    let (user, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((user.into(), password.into()))
}

fn parse_form(body: &[u8]) -> Result<Form, TwilioApiError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| bad(20001, "Expected an application/x-www-form-urlencoded body"))
}

fn field<'a>(form: &'a Form, key: &str) -> Option<&'a str> {
    let found = form.iter().find(|(k, _)| k == key);
    found
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

fn rfc2822(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |t| json!(t.to_rfc2822()))
}

/// Twilio's call resource for `call`.
fn call_json(account_sid: &str, call: &CallLog) -> Value {
    json!({
        "sid": call.sid,
        "account_sid": account_sid,
        "to": call.to,
        "to_formatted": call.to,
        "from": call.from,
        "from_formatted": call.from,
        "status": call.status,
        "direction": call.direction,
        "date_created": call.created_at.to_rfc2822(),
        "start_time": rfc2822(call.answered_at),
        "end_time": rfc2822(call.ended_at),
        "duration": call.duration_s.map(|d| d.to_string()),
        "answered_by": null,
        "parent_call_sid": null,
        "price": null,
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Calls/{}.json", call.sid),
    })
}

/// `POST …/Calls.json`: validate, answer 201 `queued`, and place the call in the background.
async fn create_call(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    authenticate(&shared, &headers, &account)?;
    let form = parse_form(&body)?;
    let to = field(&form, "To").ok_or_else(|| bad(21201, "No 'To' number is specified"))?;
    let from =
        field(&form, "From").ok_or_else(|| bad(21603, "A 'From' phone number is required."))?;
    if !shared.numbers.is_empty() && !shared.numbers.iter().any(|n| n.phone_number == from) {
        let message = format!("The source phone number provided, {from}, is not yet verified for your account. You may only make calls from phone numbers that you've verified or purchased from Twilio.");
        return Err(bad(21210, message));
    }
    let source = match (field(&form, "Twiml"), field(&form, "Url")) {
        (Some(xml), _) if xml.chars().count() > MAX_TWIML => {
            return Err(bad(
                20001,
                format!("Twiml is longer than {MAX_TWIML} characters"),
            ))
        }
        (Some(xml), _) => Source::Twiml(xml.into()),
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(21205, format!("Url is not a valid URL: {url}")));
            }
            let method =
                callback::method(field(&form, "Method"), "Method").map_err(|m| bad(20001, m))?;
            Source::Url {
                url: url.into(),
                method,
            }
        }
        (None, None) => return Err(bad(21205, "Url or Twiml parameter is required.")),
    };
    let callbacks = match field(&form, "StatusCallback") {
        None => None,
        Some(url) => {
            let method =
                callback::method(field(&form, "StatusCallbackMethod"), "StatusCallbackMethod")
                    .map_err(|m| bad(20001, m))?;
            // Repeated keys or one space-separated value, as Twilio's libraries send either.
            let mut events: Vec<String> = form
                .iter()
                .filter(|(k, _)| k == "StatusCallbackEvent")
                .flat_map(|(_, v)| v.split_whitespace())
                .filter(|e| EVENTS.contains(e))
                .map(str::to_string)
                .collect();
            if events.is_empty() {
                events.push("completed".into());
            }
            Some(Callbacks {
                url: url.into(),
                method,
                events,
            })
        }
    };
    let placed = Placed {
        sid: fresh_sid("CA"),
        to: to.into(),
        from: from.into(),
        source,
        callbacks,
    };
    let log = CallLog {
        sid: placed.sid.clone(),
        to: placed.to.clone(),
        from: placed.from.clone(),
        direction: "outbound-api".into(),
        status: "queued".into(),
        created_at: Utc::now(),
        answered_at: None,
        ended_at: None,
        duration_s: None,
        documents: Vec::new(),
        callbacks: Vec::new(),
        streams: Vec::new(),
        said: Vec::new(),
        dialed: Vec::new(),
        notes: Vec::new(),
        finished: false,
    };
    let body = call_json(&shared.account_sid, &log);
    let (control, controlled) = mpsc::channel(CONTROL_QUEUE);
    if !shared.table.insert(log, control) {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            20429,
            "Too Many Requests",
        ));
    }
    info!(call_sid = %placed.sid, to, from, "placing a call");
    shared
        .tasks
        .spawn(call::run(shared.clone(), placed, controlled));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `CA….json` → `CA…`.
fn call_sid<'a>(file: &'a str, uri: &Uri) -> Result<&'a str, TwilioApiError> {
    file.strip_suffix(".json").ok_or_else(|| not_found(uri))
}

/// `GET …/Calls/{CA}.json`.
async fn show_call(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    authenticate(&shared, &headers, &account)?;
    let call = shared
        .table
        .get(call_sid(&file, &uri)?)
        .ok_or_else(|| not_found(&uri))?;
    Ok(Json(call_json(&shared.account_sid, &call)).into_response())
}

/// `POST …/Calls/{CA}.json`: `Status=completed|canceled` or `Twiml=…`.
async fn update_call(
    State(shared): State<Arc<Shared>>,
    Path((account, file)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Answer {
    authenticate(&shared, &headers, &account)?;
    let form = parse_form(&body)?;
    let sid = call_sid(&file, &uri)?;
    let call = shared.table.get(sid).ok_or_else(|| not_found(&uri))?;
    let live = call.ended_at.is_none();
    let control = if let Some(xml) = field(&form, "Twiml") {
        if !live {
            return Err(bad(21220, "Call is not in-progress. Cannot redirect."));
        }
        twiml::parse(xml).map_err(|e| bad(12100, format!("Document parse failure: {e}")))?;
        Some(Control::Twiml(xml.into()))
    } else {
        let unanswered = matches!(call.status.as_str(), "queued" | "initiated" | "ringing");
        match field(&form, "Status") {
            // As Twilio documents: `canceled` only ends a call that has not been answered yet;
            // `completed` ends it in any state; an ended call stays as it is.
            Some("completed") if live => Some(Control::End("completed")),
            Some("canceled") if live && unanswered => Some(Control::End("canceled")),
            Some("completed" | "canceled") => None,
            _ => {
                return Err(bad(
                    20001,
                    "Status must be 'completed' or 'canceled', or give Twiml",
                ))
            }
        }
    };
    if let Some(control) = control {
        if let Control::End(status) = &control {
            // The answer already says so, as Twilio's does; the call task does the rest.
            shared.table.update(sid, |c| c.status = (*status).into());
        }
        let sender = shared.table.control(sid).ok_or_else(|| not_found(&uri))?;
        sender.try_send(control).map_err(|_| {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                20429,
                "Too many changes to this call at once",
            )
        })?;
        info!(call_sid = sid, "call updated through the REST API");
    }
    let call = shared.table.get(sid).ok_or_else(|| not_found(&uri))?;
    Ok(Json(call_json(&shared.account_sid, &call)).into_response())
}

/// `GET …/IncomingPhoneNumbers.json?PageSize=&Page=&PageToken=`: one page and its links.
async fn numbers_page(
    State(shared): State<Arc<Shared>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    authenticate(&shared, &headers, &account)?;
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let size = param("PageSize").and_then(|s| s.parse().ok());
    let size: usize = size.unwrap_or(shared.page_size).clamp(1, 1000);
    let page: usize = param("Page").and_then(|s| s.parse().ok()).unwrap_or(0);
    if page > 0 && param("PageToken") != Some(page_token(page).as_str()) {
        return Err(bad(20001, "Invalid PageToken for the requested Page"));
    }
    Ok(Json(numbers_json(
        &shared.account_sid,
        &shared.numbers,
        page,
        size,
    ))
    .into_response())
}

/// Page `page` (from 0) of `size` of `numbers` as Twilio's `IncomingPhoneNumbers.json` answers
/// it: the numbers, `page`, `page_size`, `start`/`end`, and the `uri`, `first_page_uri`,
/// `next_page_uri` and `previous_page_uri` links (with the page's `PageToken`). Shared with
/// the tests' recording fake of the REST API.
pub fn numbers_json(account_sid: &str, numbers: &[PhoneNumber], page: usize, size: usize) -> Value {
    let start = page.saturating_mul(size);
    let slice = numbers
        .get(start..numbers.len().min(start.saturating_add(size)))
        .unwrap_or(&[]);
    let base = format!("/2010-04-01/Accounts/{account_sid}/IncomingPhoneNumbers.json");
    let uri = |p: usize| match p {
        0 => format!("{base}?PageSize={size}&Page=0"),
        p => format!(
            "{base}?PageSize={size}&Page={p}&PageToken={}",
            page_token(p)
        ),
    };
    let listed: Vec<Value> = slice
        .iter()
        .map(|n| {
            json!({
                "sid": n.sid,
                "account_sid": account_sid,
                "phone_number": n.phone_number,
                "friendly_name": n.friendly_name,
                "capabilities": {"voice": true, "sms": true, "mms": true, "fax": false},
                "voice_url": null,
            })
        })
        .collect();
    let more = start.saturating_add(size) < numbers.len();
    json!({
        "incoming_phone_numbers": listed,
        "page": page,
        "page_size": size,
        "start": start,
        "end": start + slice.len().saturating_sub(1),
        "uri": uri(page),
        "first_page_uri": uri(0),
        "next_page_uri": if more { json!(uri(page + 1)) } else { Value::Null },
        "previous_page_uri": if page > 0 { json!(uri(page - 1)) } else { Value::Null },
    })
}

/// The `PageToken` of page `page` (opaque to clients, checked on the way back).
pub fn page_token(page: usize) -> String {
    format!("PT{page:08}")
}
