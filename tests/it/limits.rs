//! Limits: `MAX_CONCURRENT_CALLS` (busy TwiML, 503 upgrades) and the 64 KiB HTTP body cap.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tokio_tungstenite::tungstenite;
use twilio_realtime_relay::app::MAX_BODY_BYTES;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim;

use crate::hostile::{tone, RawTwilio};
use crate::support::{call_options, spawn_with_fake, TestApp};

fn webhook(body: String, content_length: bool) -> Request<Body> {
    let mut req = Request::post("/incoming-call")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if content_length {
        req = req.header(header::CONTENT_LENGTH, body.len());
    }
    req.body(Body::from(body)).expect("request")
}

/// The element names directly under `<Response>`, and the `<Reject>`'s reason if any.
async fn twiml_answer(app: &TestApp) -> (Vec<String>, Option<String>) {
    let (status, _, body) = app
        .request(webhook("CallSid=CA2&From=%2B15550001111".into(), true))
        .await;
    assert_eq!(status, StatusCode::OK);
    let doc = roxmltree::Document::parse(&body).expect("TwiML is XML");
    let names = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name().to_string())
        .collect();
    let reason = doc
        .descendants()
        .find(|n| n.has_tag_name("Reject"))
        .and_then(|n| n.attribute("reason").map(str::to_string));
    (names, reason)
}

/// The HTTP status a `/media-stream` upgrade gets (101 when accepted, then closed at once).
async fn upgrade_status(app: &TestApp) -> u16 {
    match tokio_tungstenite::connect_async(app.media_url()).await {
        Ok((mut ws, response)) => {
            let _ = ws.close(None).await;
            response.status().as_u16()
        }
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test]
async fn at_max_concurrent_calls_new_calls_are_rejected_as_busy_until_one_ends() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |c| c.max_concurrent_calls = 1).await;
    let mut live = RawTwilio::connect(&app, "live").await;
    live.start().await;
    assert!(
        fake.wait_for(Duration::from_secs(5), |c| c.len() == 1)
            .await,
        "the first call is live"
    );
    assert_eq!(app.state.stats.active(), 1);

    let (names, reason) = twiml_answer(&app).await;
    assert_eq!(names, ["Reject"]);
    assert_eq!(reason.as_deref(), Some("busy"));
    assert_eq!(upgrade_status(&app).await, 503);
    assert_eq!(app.state.stats.rejected_total(), 2);
    assert_eq!(
        fake.connections().len(),
        1,
        "no OpenAI session for the refused stream"
    );
    assert_eq!(app.state.stats.active(), 1, "the live call is unaffected");

    live.stop().await;
    assert!(live.closed_by_server().await);
    app.calls_finished().await;
    assert_eq!(app.state.stats.active(), 0);

    let (names, _) = twiml_answer(&app).await;
    assert_eq!(names, ["Connect", "Say"], "calls are accepted again");
    let mut opts = call_options(&app, vec![tone(400)]);
    opts.quiet_ms = 400;
    let report = sim::run(opts).await.expect("the next call is accepted");
    assert!(!report.closed_by_server);
    assert!(!report.heard.is_empty(), "and answered");
    app.calls_finished().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_body_over_64_kib_gets_413() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let big = format!("CallSid=CA1&Pad={}", "x".repeat(MAX_BODY_BYTES));
    let (status, _, _) = app.request(webhook(big, true)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // A body just under the cap is still a normal webhook.
    let fits = format!("CallSid=CA1&Pad={}", "x".repeat(MAX_BODY_BYTES - 100));
    let (status, _, body) = app.request(webhook(fits, true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<Connect>"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_streamed_webhook_body_over_64_kib_gets_413_too() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let big = format!("CallSid=CA1&Pad={}", "x".repeat(MAX_BODY_BYTES));
    let (status, _, body) = app.request(webhook(big, false)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    app.shutdown().await;
}
