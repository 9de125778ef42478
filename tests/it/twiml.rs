//! Every TwiML document the relay emits stays well-formed XML whatever the caller's parameters or
//! the configured messages contain: characters XML 1.0 forbids (C0 controls other than tab, line
//! feed and carriage return, U+FFFE, U+FFFF) are dropped, markup is escaped, and what remains
//! reaches Twilio unchanged. Each document is parsed with a strict parser (roxmltree), as
//! Twilio's own parser would reject an ill-formed one and the caller would hear an error message.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::json;
use twilio_realtime_relay::config::Config;

use crate::fake_twilio::FakeTwilio;
use crate::support::{spawn_app, spawn_with_fake, TestApp};

/// A value with every kind of character XML forbids, markup and whitespace that must survive.
const HOSTILE: &str =
    "+1555\u{0}\u{1}\u{8}\u{b}\u{c}\u{e}\u{1b}[31m\u{1f}\u{fffe}\u{ffff}\t\"<x>&'\r\nend";
/// [`HOSTILE`] as Twilio should receive it: the forbidden characters gone, the rest kept.
const CLEANED: &str = "+1555[31m\t\"<x>&'\r\nend";

fn form(path: &str, pairs: &[(&str, &str)]) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(serde_urlencoded::to_string(pairs).unwrap()))
        .unwrap()
}

/// Parse `xml` strictly; panics with the parser's reason and the document.
fn parse(xml: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("ill-formed TwiML ({e}): {xml:?}"))
}

fn parameter<'a>(doc: &'a roxmltree::Document<'a>, name: &str) -> Option<&'a str> {
    doc.descendants()
        .find(|n| n.has_tag_name("Parameter") && n.attribute("name") == Some(name))
        .and_then(|n| n.attribute("value"))
}

fn says(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("Say"))
        .map(|n| n.text().unwrap_or_default().to_string())
        .collect()
}

fn hostile_messages(c: &mut Config) {
    c.public_url = Some("https://relay.example.com".into());
    c.intro_message = Some(format!("intro {HOSTILE}"));
    c.fallback_message = format!("fallback {HOSTILE}");
}

async fn post_twiml(app: &TestApp, path: &str) -> String {
    let (status, headers, body) = app
        .request(form(
            path,
            &[("CallSid", "CA1"), ("From", HOSTILE), ("To", HOSTILE)],
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/xml", "{path}");
    body
}

#[tokio::test]
async fn incoming_call_twiml_is_well_formed_for_hostile_parameters_and_messages() {
    let (app, _fake) = spawn_with_fake(Default::default(), hostile_messages).await;
    let body = post_twiml(&app, "/incoming-call").await;
    let doc = parse(&body);
    assert_eq!(parameter(&doc, "From"), Some(CLEANED));
    assert_eq!(parameter(&doc, "To"), Some(CLEANED));
    assert_eq!(
        says(&doc),
        [format!("intro {CLEANED}"), format!("fallback {CLEANED}")]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn fallback_twiml_is_well_formed_for_a_hostile_message() {
    let mut config = Config::default();
    hostile_messages(&mut config);
    let app = spawn_app(config).await;
    let body = post_twiml(&app, "/incoming-call").await;
    let doc = parse(&body);
    assert_eq!(says(&doc), [format!("fallback {CLEANED}")]);
    assert!(doc.descendants().any(|n| n.has_tag_name("Hangup")));
    app.shutdown().await;
}

#[tokio::test]
async fn transcribe_call_twiml_is_well_formed_for_hostile_parameters() {
    let mut config = Config::default();
    hostile_messages(&mut config);
    config.transcribe.transcribe_forward_to = Some("+15550003333".into());
    let app = spawn_app(config).await;
    let body = post_twiml(&app, "/transcribe-call").await;
    let doc = parse(&body);
    assert_eq!(parameter(&doc, "From"), Some(CLEANED));
    assert_eq!(parameter(&doc, "To"), Some(CLEANED));
    let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(dial.text(), Some("+15550003333"));
    app.shutdown().await;
}

#[tokio::test]
async fn outbound_call_twiml_is_well_formed_for_hostile_messages() {
    let twilio = FakeTwilio::start().await;
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    let (app, _fake) = spawn_with_fake(Default::default(), move |c| {
        hostile_messages(c);
        c.api_token = Some("test-api-token".into());
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_validate_signature = false;
    })
    .await;
    let request = Request::post("/api/calls")
        .header(header::AUTHORIZATION, "Bearer test-api-token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"to": "+15551234567", "from": "+15550009999"}).to_string(),
        ))
        .unwrap();
    let (status, _, body) = app.request(request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let placed = twilio.requests().pop().unwrap();
    let xml = placed.form_values("Twiml")[0].to_string();
    let doc = parse(&xml);
    assert_eq!(parameter(&doc, "To"), Some("+15551234567"));
    assert_eq!(
        says(&doc),
        [format!("intro {CLEANED}"), format!("fallback {CLEANED}")]
    );
    app.shutdown().await;
}
