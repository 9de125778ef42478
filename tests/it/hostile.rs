//! Failures and bad input: an unreachable or refusing upstream, malformed Twilio traffic.

use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, spawn_app, spawn_with_fake};

#[tokio::test]
async fn an_upstream_refusing_the_key_closes_twilios_socket_and_counts_the_error() {
    let refuse = FakeOptions {
        reject_status: Some(401),
        ..FakeOptions::default()
    };
    let (app, _fake) = spawn_with_fake(refuse, |_| {}).await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    assert!(
        report.closed_by_server,
        "Twilio's socket must close so it plays the fallback"
    );
    assert!(report.heard.is_empty());
    assert_eq!(app.state.stats.errors(), 1);
    assert_eq!(app.state.stats.active(), 0);
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "upstream_error");
    app.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_closes_twilios_socket() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app(Config {
        openai_api_key: Some("sk-test".into()),
        openai_realtime_url: format!("ws://127.0.0.1:{port}/v1/realtime"),
        ..Config::default()
    })
    .await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;
    assert!(report.closed_by_server);
    assert_eq!(app.state.stats.errors(), 1);
    assert_eq!(app.state.stats.active(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_and_unknown_twilio_messages_are_counted_and_the_call_goes_on() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.inject_after_start = vec![
        Message::text("this is not JSON"),
        Message::text(r#"{"event":"party","streamSid":"MZ1"}"#),
        Message::binary(vec![0xFF; 160]),
        Message::text(r#"{"event":"media","streamSid":"MZ1","media":{"track":"inbound"}}"#),
        Message::text(r#"{"event":"mark","mark":{"name":"never-sent"}}"#),
    ];
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    // Four bad messages (the stray mark echo is valid protocol and harmless).
    assert_eq!(app.state.stats.errors(), 4);
    assert!(!report.closed_by_server);
    assert!(!report.heard.is_empty(), "the call still got its answer");
    assert_eq!(fake.connections()[0].appended_audio, report.sent_audio);
    assert_eq!(app.state.stats.active(), 0);
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up");
    app.shutdown().await;
}
