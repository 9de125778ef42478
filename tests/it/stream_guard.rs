//! What a Media Stream must show before it costs anything, and how long it may go quiet: the
//! start timeout, the idle timeout, one `start` per socket with well-formed SIDs for a call that
//! is neither live nor over, and (with signatures on) a stream token that cannot be replayed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim;
use twilio_realtime_relay::twilio::signature::sign;
use twilio_realtime_relay::twilio::stream_token;

use crate::support::{call_options, clip, metric, spawn_with_fake, TestApp};

const TOKEN: &str = "12345";
const PUBLIC: &str = "https://relay.example.com";
const SIGNED_URL: &str = "wss://relay.example.com/media-stream";

/// A raw socket to `/media-stream`, with these upgrade headers.
async fn socket(
    app: &TestApp,
    headers: &[(&'static str, String)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = app.media_url().into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Wait (at most `within`) for the relay to close the socket; panics if it stays open.
async fn closed_within<S>(ws: &mut S, within: Duration)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let closed = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the relay kept the socket open past {within:?}"
    );
}

fn start(call_sid: &str, stream_sid: &str, parameters: Value) -> Message {
    Message::text(
        json!({"event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"accountSid": "AC00000000000000000000000000000000", "streamSid": stream_sid,
                "callSid": call_sid, "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters}})
        .to_string(),
    )
}

const CALL: &str = "CA0123456789abcdef0123456789abcdef";
const STREAM: &str = "MZ0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_socket_that_never_starts_is_closed_and_costs_no_upstream_session() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.stream_start_timeout_secs = 1;
    })
    .await;
    let mut ws = socket(&app, &[]).await;
    closed_within(&mut ws, Duration::from_secs(5)).await;
    app.calls_finished().await;
    assert!(
        fake.connections().is_empty(),
        "no Realtime session for a stranger's socket"
    );
    assert_eq!(app.state.stats.active(), 0, "its call slot is free again");
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"errors_total{kind="twilio_timeout"}"#
        ),
        1.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_started_stream_that_goes_silent_ends_as_twilio_timeout() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.stream_idle_timeout_secs = 1;
    })
    .await;
    let mut ws = socket(&app, &[]).await;
    ws.send(start(CALL, STREAM, json!({"From": "+15550001111"})))
        .await
        .unwrap();
    closed_within(&mut ws, Duration::from_secs(6)).await;
    app.calls_finished().await;
    let t = app.transcript(CALL);
    assert_eq!(t["end_reason"], "twilio_timeout");
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"errors_total{kind="twilio_timeout"}"#
        ),
        1.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_second_start_is_ignored_and_a_finished_call_is_never_reopened() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.call_sid = Some(CALL.into());
    opts.inject_after_start = vec![start(
        "CAffffffffffffffffffffffffffffffff",
        "MZffffffffffffffffffffffffffffffff",
        json!({}),
    )];
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;
    assert!(!report.heard.is_empty());
    let first = app.transcript(CALL);
    assert!(!first["turns"].as_array().unwrap().is_empty());
    assert!(
        !app.dir
            .path()
            .join("CAffffffffffffffffffffffffffffffff.json")
            .exists(),
        "the second start did not re-bind the socket to another call"
    );

    // Another stream claiming the finished call is refused; its transcript is untouched.
    let mut ws = socket(&app, &[]).await;
    ws.send(start(CALL, "MZ11111111111111111111111111111111", json!({})))
        .await
        .unwrap();
    closed_within(&mut ws, Duration::from_secs(5)).await;
    app.calls_finished().await;
    assert_eq!(app.transcript(CALL), first);
    app.shutdown().await;
}

#[tokio::test]
async fn sids_that_are_not_twilio_s_are_refused_and_write_no_file() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    for (call, stream) in [("CA../../etc/passwd", STREAM), (CALL, "not-a-stream-sid")] {
        let mut ws = socket(&app, &[]).await;
        ws.send(start(call, stream, json!({}))).await.unwrap();
        closed_within(&mut ws, Duration::from_secs(5)).await;
    }
    app.calls_finished().await;
    assert_eq!(
        std::fs::read_dir(app.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count(),
        0
    );
    assert!(fake.connections().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_replayed_upgrade_signature_without_this_call_s_stream_token_opens_nothing() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.twilio_auth_token = Some(TOKEN.into());
        c.public_url = Some(PUBLIC.into());
    })
    .await;
    let signature = sign(TOKEN, SIGNED_URL, &[]);
    let header = [("X-Twilio-Signature", signature)];
    let expires = chrono::Utc::now().timestamp() + 60;
    let other_call = "CA99999999999999999999999999999999";
    let refused = [
        json!({}),
        json!({"StreamToken": "garbage"}),
        json!({"StreamToken": stream_token::issue(TOKEN, other_call, expires)}),
        json!({"StreamToken": stream_token::issue(TOKEN, CALL, chrono::Utc::now().timestamp() - 1)}),
    ];
    for parameters in refused {
        let mut ws = socket(&app, &header).await;
        ws.send(start(CALL, STREAM, parameters)).await.unwrap();
        closed_within(&mut ws, Duration::from_secs(5)).await;
    }
    app.calls_finished().await;
    assert_eq!(
        metric(&app.metrics().await, r#"errors_total{kind="signature"}"#),
        4.0
    );
    assert!(!app.dir.path().join(format!("{CALL}.json")).exists());

    // The genuine call, as Twilio runs the relay's TwiML, goes through once; its token cannot
    // open a second stream.
    let token = stream_token::issue(TOKEN, CALL, expires);
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.call_sid = Some(CALL.into());
    opts.auth_token = Some(TOKEN.into());
    opts.signed_url = Some(SIGNED_URL.into());
    opts.params.push(("StreamToken".into(), token.clone()));
    let report = sim::run(opts).await.unwrap();
    assert!(!report.heard.is_empty(), "the genuine call was answered");
    app.calls_finished().await;
    let mut ws = socket(&app, &header).await;
    ws.send(start(
        "CA88888888888888888888888888888888",
        "MZ88888888888888888888888888888888",
        json!({"StreamToken": token}),
    ))
    .await
    .unwrap();
    closed_within(&mut ws, Duration::from_secs(5)).await;
    app.calls_finished().await;
    assert_eq!(
        metric(&app.metrics().await, r#"errors_total{kind="signature"}"#),
        5.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn incoming_call_twiml_carries_a_stream_token_for_its_call_sid() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.twilio_auth_token = Some(TOKEN.into());
        c.twilio_validate_signature = false;
    })
    .await;
    let no_token = app
        .request(
            axum::http::Request::post("/incoming-call")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(format!("CallSid={CALL}")))
                .unwrap(),
        )
        .await
        .2;
    assert!(
        !no_token.contains("StreamToken"),
        "checks off: no token: {no_token}"
    );
    app.shutdown().await;

    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.twilio_auth_token = Some(TOKEN.into());
        c.twilio_validate_signature = true;
        c.public_url = Some(PUBLIC.into());
    })
    .await;
    let body = format!("CallSid={CALL}");
    let signature = sign(
        TOKEN,
        &format!("{PUBLIC}/incoming-call"),
        &[("CallSid".into(), CALL.into())],
    );
    let twiml = app
        .request(
            axum::http::Request::post("/incoming-call")
                .header("content-type", "application/x-www-form-urlencoded")
                .header("X-Twilio-Signature", signature)
                .body(axum::body::Body::from(body))
                .unwrap(),
        )
        .await
        .2;
    let doc = roxmltree::Document::parse(&twiml).unwrap();
    let token = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("StreamToken"))
        .and_then(|n| n.attribute("value"))
        .unwrap_or_else(|| panic!("no StreamToken in {twiml}"));
    let now = chrono::Utc::now().timestamp();
    assert!(stream_token::verify(TOKEN, CALL, Some(token), now).is_ok());
    app.shutdown().await;
}

#[tokio::test]
async fn the_demo_still_works_once_twilio_auth_token_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let config = twilio_realtime_relay::config::Config {
        twilio_auth_token: Some(TOKEN.into()),
        transcript_dir: dir.path().join("transcripts"),
        database_url: format!("sqlite://{}/relay.db", dir.path().display()),
        ..twilio_realtime_relay::config::Config::default()
    };
    assert!(
        config.validates_signatures(),
        "the relay checks signatures and tokens"
    );
    let args = twilio_realtime_relay::demo::DemoArgs {
        config,
        audio: Vec::new(),
        interrupt_after_ms: None,
        out: dir.path().join("demo-reply.wav"),
        tools: false,
        outbound: false,
    };
    twilio_realtime_relay::demo::run(args)
        .await
        .expect("the demo's own call is signed and carries its stream token");
    assert!(
        std::fs::metadata(dir.path().join("demo-reply.wav"))
            .unwrap()
            .len()
            > 44
    );
}
