//! `X-Twilio-Signature` on what Twilio calls: webhooks, the status callback, stream upgrades.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim;
use twilio_realtime_relay::twilio::signature::sign;

use crate::support::{call_options, clip, spawn_app, spawn_with_fake};

const TOKEN: &str = "12345";
const PUBLIC: &str = "https://relay.example.com";

fn signed_config() -> Config {
    Config {
        openai_api_key: Some("sk-test".into()),
        twilio_auth_token: Some(TOKEN.into()),
        public_url: Some(PUBLIC.into()),
        ..Config::default()
    }
}

fn params() -> Vec<(String, String)> {
    [
        ("CallSid", "CA1234567890ABCDE"),
        ("From", "+14158675309"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn webhook(body: &str, signature: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/incoming-call")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "attacker.example");
    if let Some(sig) = signature {
        req = req.header("X-Twilio-Signature", sig);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

const BODY: &str = "CallSid=CA1234567890ABCDE&From=%2B14158675309&To=%2B18005551212";

#[tokio::test]
async fn a_genuinely_signed_webhook_is_answered_and_forgeries_get_403() {
    let app = spawn_app(signed_config()).await;
    let good = sign(TOKEN, &format!("{PUBLIC}/incoming-call"), &params());
    let (status, _, body) = app.request(webhook(BODY, Some(&good))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<Connect>"));

    let tampered = BODY.replace("To=%2B18005551212", "To=%2B19005551212");
    let wrong_token = sign("54321", &format!("{PUBLIC}/incoming-call"), &params());
    let other_url = sign(TOKEN, "https://attacker.example/incoming-call", &params());
    for (body, sig) in [
        (tampered.as_str(), Some(good.as_str())),
        (BODY, Some(wrong_token.as_str())),
        (BODY, Some(other_url.as_str())),
        (BODY, None),
    ] {
        let (status, _, text) = app.request(webhook(body, sig)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body} {sig:?}");
        assert!(!text.contains(&good), "the signature is not echoed");
    }
    assert_eq!(app.state.stats.errors(), 4, "each rejection is counted");
    app.shutdown().await;
}

#[tokio::test]
async fn get_webhooks_and_status_callbacks_are_checked_too() {
    let app = spawn_app(signed_config()).await;
    let url = format!("{PUBLIC}/incoming-call?From=%2B1555&To=%2B1666");
    let sig = sign(TOKEN, &url, &[]);
    let get = |sig: &str| {
        Request::get("/incoming-call?From=%2B1555&To=%2B1666")
            .header("X-Twilio-Signature", sig)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(app.request(get(&sig)).await.0, StatusCode::OK);
    assert_eq!(app.request(get("AAAA")).await.0, StatusCode::FORBIDDEN);

    let form = "CallSid=CA9&CallStatus=ringing&SequenceNumber=1";
    let cb_params: Vec<(String, String)> = [
        ("CallSid", "CA9"),
        ("CallStatus", "ringing"),
        ("SequenceNumber", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // Twilio's libraries accept the default port in the signed URL as well.
    let cb_sig = sign(TOKEN, &format!("{}:443/twilio/status", PUBLIC), &cb_params);
    let callback = |sig: &str| {
        Request::post("/twilio/status")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("X-Twilio-Signature", sig)
            .body(Body::from(form))
            .unwrap()
    };
    assert_eq!(
        app.request(callback(&cb_sig)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.request(callback(&sig)).await.0, StatusCode::FORBIDDEN);
    assert!(app.state.store.get("CA9").await.unwrap().is_some());
    app.shutdown().await;
}

#[tokio::test]
async fn the_stream_upgrade_must_be_signed_against_the_wss_url() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.twilio_auth_token = Some(TOKEN.into());
        c.public_url = Some(PUBLIC.into());
    })
    .await;
    let unsigned = sim::run(call_options(&app, vec![])).await;
    assert!(unsigned.is_err(), "an unsigned upgrade is refused");
    assert!(
        fake.connections().is_empty(),
        "no OpenAI session was opened for it"
    );

    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.auth_token = Some(TOKEN.into());
    opts.signed_url = Some("wss://relay.example.com/media-stream".into());
    let report = sim::run(opts).await.expect("a signed upgrade is accepted");
    assert!(!report.heard.is_empty());
    app.calls_finished().await;
    assert_eq!(app.state.stats.errors(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn turning_checks_off_accepts_unsigned_requests() {
    let app = spawn_app(Config {
        twilio_validate_signature: false,
        ..signed_config()
    })
    .await;
    assert_eq!(app.request(webhook(BODY, None)).await.0, StatusCode::OK);
    app.shutdown().await;
}
