//! What operators read: log fields in their plain form (`from="+1555…"`, not `Some("+1555…")`;
//! `end_reason="caller_hung_up"`, the transcript's name) and expected HTTP errors at WARN with
//! their reason, never at ERROR.
//!
//! Each test captures the events of its own thread as JSON lines (as `LOG_FORMAT=json` writes
//! them): `#[tokio::test]` runs the test, the relay and its call tasks on that one thread.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::fmt::MakeWriter;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;

use crate::fake_twilio::FakeTwilio;
use crate::fork::{fork_call, fork_options};
use crate::support::{spawn_app, spawn_with_fake};

/// Every event formatted on this thread while the guard lives.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Capture {
    type Writer = Capture;
    fn make_writer(&self) -> Capture {
        self.clone()
    }
}

impl Capture {
    /// Capture this thread's events at `info` and above, formatted as the relay's JSON logs.
    fn start() -> (Capture, DefaultGuard) {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(capture.clone())
            .finish();
        (capture, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("capture").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The first line whose message is `message`, logged by the relay (not the simulator).
    fn find(&self, message: &str) -> Value {
        let lines = self.lines();
        lines
            .iter()
            .find(|l| {
                l["message"] == message
                    && l["target"].as_str().is_some_and(|t| !t.contains("::sim"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
    }
}

fn api(token: &str, method: &str, path: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json");
    builder
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap()
}

#[tokio::test]
async fn expected_http_errors_are_logged_at_warn_with_their_reason_and_none_at_error() {
    let (capture, _guard) = Capture::start();
    // Credentials Twilio refuses: its 401 becomes our 502.
    let twilio = FakeTwilio::start().await;
    let (base, account) = (twilio.base_url.clone(), twilio.account_sid.clone());
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), move |c| {
        c.api_token = Some("tok".into());
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some("not-the-token".into());
        c.twilio_validate_signature = false;
    })
    .await;
    let place = json!({"to": "+15551234567", "from": "+15550009999"});
    let (status, _, _) = app
        .request(api("tok", "POST", "/api/calls", Some(place)))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let (status, _, _) = app.request(api("wrong", "GET", "/api/calls", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
    // Without API_TOKEN the API answers 503.
    let disabled = spawn_app(Config::default()).await;
    let (status, _, _) = disabled
        .request(api("tok", "GET", "/api/numbers", None))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    disabled.shutdown().await;

    let refused = capture.find("Twilio refused the request");
    assert_eq!(refused["level"], "WARN");
    assert_eq!(refused["status"], 502);
    assert_eq!(refused["twilio_status"], 401);
    assert_eq!(refused["twilio_code"], 20003);
    assert_eq!(refused["reason"], "Authenticate");
    let unauthorized = capture.find("rejected an /api request without a valid bearer token");
    assert_eq!(unauthorized["level"], "WARN");
    assert_eq!(unauthorized["path"], "/api/calls");
    let off = capture.find("HTTP API request failed");
    assert_eq!(off["level"], "WARN");
    assert_eq!(off["status"], 503);
    assert!(
        off["reason"].as_str().unwrap().contains("API_TOKEN"),
        "{off}"
    );
    let errors: Vec<Value> = capture
        .lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[tokio::test]
async fn call_logs_show_plain_values_and_the_transcripts_end_reason() {
    let (capture, _guard) = Capture::start();
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    fork_call(&app, fork_options(&app, "CAforklogs")).await;
    let callback = Request::post("/twilio/status")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(
            "CallSid=CAforklogs&CallStatus=completed&SequenceNumber=7",
        ))
        .unwrap();
    let (status, _, _) = app.request(callback).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.shutdown().await;

    let started = capture.find("fork started");
    assert_eq!(started["from"], "+15550001111", "{started}");
    assert_eq!(started["to"], "+15550002222", "{started}");
    assert_eq!(started["tracks"], "inbound,outbound", "{started}");
    let ended = capture.find("fork ended");
    assert_eq!(ended["end_reason"], "caller_hung_up", "{ended}");
    let final_line = capture.find("final");
    assert!(
        final_line["text"]
            .as_str()
            .is_some_and(|t| !t.starts_with('"')),
        "{final_line}"
    );
    let status = capture.find("Twilio status callback");
    assert_eq!(status["sequence"], 7, "{status}");
}
