//! A recording fake of the parts of Twilio's REST API the relay uses, served on 127.0.0.1:0.
//!
//! It checks basic auth against one (user, password) pair, places, redirects (`Twiml`) and hangs up
//! calls, pages through
//! a list of numbers, answers in Twilio's JSON shapes (errors included), can be scripted to answer
//! the next request(s) with anything or to hold its answer until the test releases it, and
//! records every request so tests can assert what was sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use twilio_realtime_relay::fake_twilio::{numbers_json, page_token, PhoneNumber};

/// Who the fake accepts and what it serves at start.
pub struct FakeTwilioOptions {
    pub account_sid: String,
    pub auth_token: String,
    /// When set, the only accepted credentials are this `(SK…, secret)` pair instead of
    /// `(account_sid, auth_token)`.
    pub api_key: Option<(String, String)>,
    pub numbers: Vec<FakeNumber>,
    /// Numbers per page when the request has no `PageSize`.
    pub page_size: usize,
}

impl Default for FakeTwilioOptions {
    fn default() -> Self {
        FakeTwilioOptions {
            account_sid: sid("AC"),
            auth_token: hex32(),
            api_key: None,
            numbers: Vec::new(),
            page_size: 50,
        }
    }
}

/// One request as received (recorded before auth is checked).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Query pairs in order.
    pub query: Vec<(String, String)>,
    /// The basic-auth user, if the header decoded.
    pub auth_user: Option<String>,
    pub accept: Option<String>,
    /// Body form fields in order, repeated keys preserved (empty for GET).
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// Every value of form field `key`, in order.
    pub fn form_values(&self, key: &str) -> Vec<&str> {
        let values = self.form.iter().filter(|(k, _)| k == key);
        values.map(|(_, v)| v.as_str()).collect()
    }
}

/// A call placed through the fake.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeCall {
    pub sid: String,
    pub to: String,
    pub from: String,
    pub twiml: Option<String>,
    pub url: Option<String>,
    /// `queued`, then `completed` or `canceled` once hung up.
    pub status: String,
}

/// A number on the fake account.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeNumber {
    pub sid: String,
    pub phone_number: String,
    pub friendly_name: String,
}

impl FakeNumber {
    /// A number with a fresh `PN…` SID.
    pub fn new(phone_number: &str, friendly_name: &str) -> Self {
        FakeNumber {
            sid: sid("PN"),
            phone_number: phone_number.into(),
            friendly_name: friendly_name.into(),
        }
    }
}

/// A scripted answer for the next request.
struct Scripted {
    status: StatusCode,
    content_type: &'static str,
    body: String,
}

#[derive(Default)]
struct Inner {
    requests: Vec<RecordedRequest>,
    scripted: VecDeque<Scripted>,
    /// Released (sent or dropped) by the test before the next request is answered.
    holds: VecDeque<oneshot::Receiver<()>>,
    calls: Vec<FakeCall>,
    numbers: Vec<FakeNumber>,
    page_size: usize,
}

struct Shared {
    account_sid: String,
    user: String,
    password: String,
    inner: Mutex<Inner>,
    /// Number of requests recorded so far, for [`FakeTwilio::wait_for_requests`].
    seen: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("fake Twilio state poisoned")
    }
}

/// The running fake. Dropping it stops the server.
pub struct FakeTwilio {
    /// `http://127.0.0.1:PORT`, to pass as the client's base URL.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    pub api_key: Option<(String, String)>,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTwilio {
    /// A fake with a fresh account SID and auth token and no numbers.
    pub async fn start() -> Self {
        Self::start_with(FakeTwilioOptions::default()).await
    }

    /// A fake configured by `opts`.
    pub async fn start_with(opts: FakeTwilioOptions) -> Self {
        let (user, password) = opts
            .api_key
            .clone()
            .unwrap_or_else(|| (opts.account_sid.clone(), opts.auth_token.clone()));
        let shared = Arc::new(Shared {
            account_sid: opts.account_sid.clone(),
            user,
            password,
            inner: Mutex::new(Inner {
                numbers: opts.numbers,
                page_size: opts.page_size.max(1),
                ..Inner::default()
            }),
            seen: watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake Twilio serve");
        });
        FakeTwilio {
            base_url: format!("http://{addr}"),
            account_sid: opts.account_sid,
            auth_token: opts.auth_token,
            api_key: opts.api_key,
            shared,
            server,
        }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Wait (at most 5 s) until `n` requests have arrived; returns them all. For tests where the
    /// request is sent by a background task.
    #[allow(dead_code)]
    pub async fn wait_for_requests(&self, n: usize) -> Vec<RecordedRequest> {
        let mut seen = self.shared.seen.subscribe();
        tokio::time::timeout(Duration::from_secs(5), seen.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} requests reached fake Twilio within 5 s"))
            .expect("fake Twilio alive");
        self.requests()
    }

    /// Every call placed so far, with its current status.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.shared.lock().calls.clone()
    }

    /// Know a call Twilio did not place through the REST API (an inbound call), `in-progress`.
    #[allow(dead_code)]
    pub fn add_inbound_call(&self, call_sid: &str, from: &str, to: &str) {
        self.shared.lock().calls.push(FakeCall {
            sid: call_sid.into(),
            to: to.into(),
            from: from.into(),
            twiml: None,
            url: None,
            status: "in-progress".into(),
        });
    }

    /// Move a placed call to `status` (`ringing`, `in-progress`, …), as the callee's phone would.
    pub fn set_call_status(&self, call_sid: &str, status: &str) {
        let mut inner = self.shared.lock();
        let call = inner.calls.iter_mut().find(|c| c.sid == call_sid);
        call.expect("a call this fake placed").status = status.into();
    }

    /// Answer the next request not yet scripted with `status` and Twilio's error JSON.
    pub fn fail_next(&self, status: u16, code: i64, message: &str) {
        let body = error_json(status, code, message).to_string();
        self.respond_next(status, "application/json", &body);
    }

    /// Answer the next request not yet scripted with exactly this (success or failure).
    pub fn respond_next(&self, status: u16, content_type: &'static str, body: &str) {
        let status = StatusCode::from_u16(status).expect("valid HTTP status");
        self.shared.lock().scripted.push_back(Scripted {
            status,
            content_type,
            body: body.into(),
        });
    }

    /// Hold the answer to the next request until the returned sender is used or dropped (at most
    /// 10 s), so a test can act while the relay waits on Twilio. Recorded on arrival as ever.
    #[allow(dead_code)]
    pub fn hold_next(&self) -> oneshot::Sender<()> {
        let (release, held) = oneshot::channel();
        self.shared.lock().holds.push_back(held);
        release
    }

    /// Replace the account's numbers and the default page size.
    pub fn set_numbers(&self, numbers: Vec<FakeNumber>, page_size: usize) {
        let mut inner = self.shared.lock();
        inner.numbers = numbers;
        inner.page_size = page_size.max(1);
    }
}

fn hex32() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn sid(prefix: &str) -> String {
    format!("{prefix}{}", hex32())
}

fn error_json(status: u16, code: i64, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
}

fn twilio_error(status: StatusCode, code: i64, message: &str) -> Response {
    (status, Json(error_json(status.as_u16(), code, message))).into_response()
}

fn not_found(path: &str) -> Response {
    let message = format!("The requested resource {path} was not found");
    twilio_error(StatusCode::NOT_FOUND, 20404, &message)
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// The one handler: record, play a scripted answer if any, check auth, then route by path.
async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::<Vec<(String, String)>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default();
    let credentials = basic_auth(req.headers());
    let accept = req.headers().get(header::ACCEPT);
    let accept = accept.and_then(|v| v.to_str().ok()).map(str::to_string);
    let form = if method == Method::POST {
        match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(form)) => Some(form),
            Err(_) => None,
        }
    } else {
        Some(Vec::new())
    };
    let scripted = {
        let mut inner = shared.lock();
        inner.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            auth_user: credentials.as_ref().map(|(user, _)| user.clone()),
            accept,
            form: form.clone().unwrap_or_default(),
        });
        let count = inner.requests.len();
        shared.seen.send_replace(count);
        (inner.scripted.pop_front(), inner.holds.pop_front())
    };
    let (scripted, held) = scripted;
    if let Some(held) = held {
        let _ = tokio::time::timeout(Duration::from_secs(10), held).await;
    }
    if let Some(s) = scripted {
        return (s.status, [(header::CONTENT_TYPE, s.content_type)], s.body).into_response();
    }
    let authenticated = credentials.is_some_and(|(u, p)| u == shared.user && p == shared.password);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let account = match segments.as_slice() {
        ["2010-04-01", "Accounts", account, ..] => *account,
        _ => "",
    };
    if !authenticated || account != shared.account_sid {
        let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        let challenge = header::HeaderValue::from_static("Basic realm=\"Twilio API\"");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge);
        return response;
    }
    let Some(form) = form else {
        let message = "Expected an application/x-www-form-urlencoded body";
        return twilio_error(StatusCode::BAD_REQUEST, 20001, message);
    };
    match (&method, &segments[3..]) {
        (&Method::POST, ["Calls.json"]) => create_call(&shared, &form),
        (&Method::POST, ["Calls", file]) => match file.strip_suffix(".json") {
            Some(call_sid) => update_call(&shared, call_sid, &form, &path),
            None => not_found(&path),
        },
        (&Method::GET, ["IncomingPhoneNumbers.json"]) => numbers_page(&shared, &query),
        (_, ["Calls.json"] | ["Calls", _] | ["IncomingPhoneNumbers.json"]) => {
            twilio_error(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed")
        }
        _ => not_found(&path),
    }
}

fn field<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let found = form.iter().find(|(k, _)| k == key);
    found.map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
}

fn call_json(account_sid: &str, call: &FakeCall) -> Value {
    json!({
        "sid": call.sid,
        "account_sid": account_sid,
        "to": call.to,
        "to_formatted": call.to,
        "from": call.from,
        "from_formatted": call.from,
        "status": call.status,
        "direction": "outbound-api",
        "duration": if call.status == "queued" { Value::Null } else { json!("0") },
        "price": null,
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{account_sid}/Calls/{}.json", call.sid),
    })
}

fn create_call(shared: &Shared, form: &[(String, String)]) -> Response {
    let bad = |code, message| twilio_error(StatusCode::BAD_REQUEST, code, message);
    let Some(to) = field(form, "To") else {
        return bad(21201, "No 'To' number is specified");
    };
    let Some(from) = field(form, "From") else {
        return bad(21603, "A 'From' phone number is required.");
    };
    let (twiml, url) = (field(form, "Twiml"), field(form, "Url"));
    if twiml.is_none() && url.is_none() {
        return bad(21205, "Url or Twiml parameter is required.");
    }
    let call = FakeCall {
        sid: sid("CA"),
        to: to.into(),
        from: from.into(),
        twiml: twiml.map(str::to_string),
        url: url.map(str::to_string),
        status: "queued".into(),
    };
    let body = call_json(&shared.account_sid, &call);
    shared.lock().calls.push(call);
    (StatusCode::CREATED, Json(body)).into_response()
}

fn update_call(shared: &Shared, call_sid: &str, form: &[(String, String)], path: &str) -> Response {
    if let Some(twiml) = field(form, "Twiml") {
        // New instructions for a live call (a transfer): Twilio runs them at once.
        let mut inner = shared.lock();
        let Some(call) = inner.calls.iter_mut().find(|c| c.sid == call_sid) else {
            return not_found(path);
        };
        call.twiml = Some(twiml.to_string());
        let body = call_json(&shared.account_sid, call);
        return (StatusCode::OK, Json(body)).into_response();
    }
    let status = match field(form, "Status") {
        Some(s @ ("completed" | "canceled")) => s,
        _ => {
            let message = "Status must be 'completed' or 'canceled' (the fake supports only these)";
            return twilio_error(StatusCode::BAD_REQUEST, 20001, message);
        }
    };
    let mut inner = shared.lock();
    let Some(call) = inner.calls.iter_mut().find(|c| c.sid == call_sid) else {
        return not_found(path);
    };
    // As Twilio documents: `canceled` only ends a call that has not been answered yet;
    // `completed` ends it in any state.
    let unanswered = matches!(call.status.as_str(), "queued" | "initiated" | "ringing");
    if status == "completed" || unanswered {
        call.status = status.into();
    }
    let body = call_json(&shared.account_sid, call);
    (StatusCode::OK, Json(body)).into_response()
}

fn numbers_page(shared: &Shared, query: &[(String, String)]) -> Response {
    let param = |key: &str| {
        query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let inner = shared.lock();
    let size = param("PageSize").and_then(|s| s.parse().ok());
    let size: usize = size.unwrap_or(inner.page_size).max(1);
    let page: usize = param("Page").and_then(|s| s.parse().ok()).unwrap_or(0);
    if page > 0 && param("PageToken") != Some(page_token(page).as_str()) {
        let message = "Invalid PageToken for the requested Page";
        return twilio_error(StatusCode::BAD_REQUEST, 20001, message);
    }
    let numbers: Vec<PhoneNumber> = inner
        .numbers
        .iter()
        .map(|n| PhoneNumber {
            sid: n.sid.clone(),
            phone_number: n.phone_number.clone(),
            friendly_name: n.friendly_name.clone(),
        })
        .collect();
    Json(numbers_json(&shared.account_sid, &numbers, page, size)).into_response()
}
