//! Failures and bad input: an unreachable or refusing upstream, hostile Twilio and Realtime
//! traffic, oversized frames, and Twilio's socket vanishing without `stop`.

use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use twilio_realtime_relay::audio::{self, BYTES_PER_MS, ULAW_SILENCE};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::routes::MAX_TWILIO_MESSAGE_BYTES;
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, spawn_app, spawn_with_fake, TestApp};

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

// ---------------------------------------------------------------------------------------------
// Hostile Twilio traffic, upstream hostility and dropped sockets (issue 4, "Bad input").
// ---------------------------------------------------------------------------------------------

/// `ms` of a 440 Hz tone at amplitude 8000, μ-law: loud enough for the stand-in's VAD, short
/// enough that a whole call takes about three seconds.
pub(crate) fn tone(ms: usize) -> Vec<u8> {
    let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
        .map(|n| (8000.0 * (TAU * 440.0 * n as f64 / 8000.0).sin()) as i16)
        .collect();
    audio::encode(&pcm)
}

/// A quick call: one short tone, answered by the parrot stand-in.
fn quick_call(app: &TestApp) -> sim::CallOptions {
    let mut opts = call_options(app, vec![tone(400)]);
    opts.quiet_ms = 400;
    opts
}

/// A hand-driven Twilio Media Stream: every frame is chosen by the test, nothing is automatic.
pub(crate) struct RawTwilio {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub call_sid: String,
    pub stream_sid: String,
}

impl RawTwilio {
    /// Open `/media-stream` of `app` for a call labelled `label`: its SIDs are Twilio-shaped
    /// (`CA`/`MZ` + 32 hex digits, the label's bytes in hex, zero-padded).
    pub(crate) async fn connect(app: &TestApp, label: &str) -> RawTwilio {
        let (ws, _) = tokio_tungstenite::connect_async(app.media_url())
            .await
            .expect("upgrade");
        let hex: String = label.bytes().map(|b| format!("{b:02x}")).collect();
        let digits = format!("{hex:0<32}");
        RawTwilio {
            ws,
            call_sid: format!("CA{}", &digits[..32]),
            stream_sid: format!("MZ{}", &digits[..32]),
        }
    }

    pub(crate) async fn send(&mut self, message: Message) {
        self.ws.send(message).await.expect("send to the relay");
    }

    pub(crate) async fn json(&mut self, value: Value) {
        self.send(Message::text(value.to_string())).await;
    }

    /// `connected` then `start`, as PROTOCOLS.md shows them.
    pub(crate) async fn start(&mut self) {
        self.json(json!({"event":"connected","protocol":"Call","version":"1.0.0"}))
            .await;
        let start = json!({"event":"start","sequenceNumber":"1","streamSid":self.stream_sid,
            "start":{"accountSid":"AC00000000000000000000000000000001","streamSid":self.stream_sid,"callSid":self.call_sid,
            "tracks":["inbound"],"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1},
            "customParameters":{"From":"+15550001111"}}});
        self.json(start).await;
    }

    /// One `media` frame of `ulaw` for this stream.
    pub(crate) async fn media(&mut self, ulaw: &[u8]) {
        let frame = json!({"event":"media","sequenceNumber":"2","streamSid":self.stream_sid,
            "media":{"track":"inbound","chunk":"1","timestamp":"0","payload":BASE64.encode(ulaw)}});
        self.json(frame).await;
    }

    pub(crate) async fn stop(&mut self) {
        let stop = json!({"event":"stop","sequenceNumber":"9","streamSid":self.stream_sid,
            "stop":{"accountSid":"AC1","callSid":self.call_sid}});
        self.json(stop).await;
    }

    /// Wait (at most 5 s) for the relay to end the stream: a close frame or the end of the socket.
    pub(crate) async fn closed_by_server(mut self) -> bool {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(msg)) = self.ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await
        .is_ok()
    }
}

/// Every kind of broken message a hostile or buggy Twilio peer might send after `start`. None is
/// valid Twilio traffic, so each one must be ignored and counted exactly once.
fn hostile_corpus() -> Vec<Message> {
    let loud = BASE64.encode([0x00u8; 160]);
    let texts = [
        // Not JSON at all, and JSON cut short.
        "this is not JSON".to_string(),
        r#"{"event":"media","streamSid":"#.to_string(),
        // JSON that is not an object.
        "null".into(),
        "42".into(),
        r#""media""#.into(),
        "{}".into(),
        // Wrong types.
        r#"{"event":7,"streamSid":"MZ1"}"#.into(),
        r#"{"event":"media","streamSid":"MZ1","media":5}"#.into(),
        format!(r#"{{"event":"media","streamSid":5,"media":{{"payload":"{loud}"}}}}"#),
        r#"{"event":"start","start":5}"#.into(),
        r#"{"event":"stop","stop":5}"#.into(),
        r#"{"event":"mark"}"#.into(),
        r#"{"event":"dtmf","dtmf":{}}"#.into(),
        // Audio for another stream: must not reach OpenAI.
        format!(
            r#"{{"event":"media","streamSid":"MZ-not-this-call","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{loud}"}}}}"#
        ),
        // Missing streamSid and a payload that is not base64 (bad characters, bad length).
        r#"{"event":"media","media":{"track":"inbound","payload":"%%%not base64%%%"}}"#.into(),
        r#"{"event":"media","media":{"track":"inbound","payload":"AAA"}}"#.into(),
        // No payload at all.
        r#"{"event":"media","media":{"track":"inbound"}}"#.into(),
        // Events Twilio never sends.
        r#"{"event":"party","streamSid":"MZ1"}"#.into(),
    ];
    let mut corpus: Vec<Message> = texts.into_iter().map(Message::text).collect();
    corpus.push(Message::binary(vec![0xFF; 160]));
    corpus.push(Message::binary(Vec::new()));
    corpus
}

async fn health_errors(app: &TestApp) -> u64 {
    let (_, _, body) = app
        .request(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    let health: Value = serde_json::from_str(&body).expect("health JSON");
    health["errors"].as_u64().expect("errors")
}

#[tokio::test]
async fn a_corpus_of_hostile_twilio_messages_is_counted_and_harms_neither_that_call_nor_the_next() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let corpus = hostile_corpus();
    let bad = corpus.len() as u64;
    let mut opts = quick_call(&app);
    opts.inject_after_start = corpus;
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    assert!(!report.closed_by_server, "{}", report.summary());
    let conn = &fake.connections()[0];
    assert_eq!(
        conn.appended_audio, report.sent_audio,
        "only this stream's valid audio reached OpenAI"
    );
    assert!(!report.heard.is_empty(), "the caller heard the answer");
    assert_eq!(report.heard, conn.sent_audio);
    assert!(report.unexpected_messages.is_empty());
    assert_eq!(
        app.state.stats.errors(),
        bad,
        "each bad message counted once"
    );
    assert_eq!(health_errors(&app).await, bad);
    assert_eq!(app.state.stats.active(), 0);
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );

    let next = sim::run(quick_call(&app)).await.expect("next call");
    app.calls_finished().await;
    let conn = &fake.connections()[1];
    assert_eq!(conn.appended_audio, next.sent_audio);
    assert!(!next.heard.is_empty());
    assert_eq!(next.heard, conn.sent_audio, "the next call is bit-exact");
    assert_eq!(
        app.state.stats.errors(),
        bad,
        "the next call adds no errors"
    );
    assert_eq!(app.state.stats.active(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_json_array_is_not_taken_for_a_twilio_event() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = quick_call(&app);
    // Twilio sends JSON objects only: `["stop"]` is not a hang-up and the three-element array
    // is not caller audio.
    let loud = BASE64.encode([0x00u8; 160]);
    opts.inject_after_start = vec![
        Message::text(format!(r#"["media",null,{{"payload":"{loud}"}}]"#)),
        Message::text(r#"["stop"]"#),
    ];
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    assert!(
        !report.closed_by_server,
        "a [\"stop\"] array ended the call: {}",
        report.summary()
    );
    assert!(!report.heard.is_empty(), "the call went on to its answer");
    assert_eq!(fake.connections()[0].appended_audio, report.sent_audio);
    assert_eq!(
        app.state.stats.errors(),
        2,
        "both arrays ignored and counted"
    );
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_ten_thousand_malformed_messages_is_counted_and_the_call_still_gets_its_answer()
{
    const BURST: usize = 10_000;
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = quick_call(&app);
    opts.inject_after_start = (0..BURST)
        .map(|i| match i % 4 {
            0 => Message::text(format!("garbage #{i}")),
            1 => Message::text(format!(r#"{{"event":"flood","n":{i}}}"#)),
            2 => Message::text(r#"{"event":"media","media":{"payload":"***"}}"#),
            _ => Message::binary(vec![i as u8; 32]),
        })
        .collect();
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    assert_eq!(app.state.stats.errors(), BURST as u64);
    assert!(!report.closed_by_server, "{}", report.summary());
    assert!(!report.heard.is_empty(), "the caller heard the answer");
    let conn = &fake.connections()[0];
    assert_eq!(conn.appended_audio, report.sent_audio);
    assert_eq!(report.heard, conn.sent_audio);
    assert_eq!(app.state.stats.active(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn media_before_start_and_bad_base64_are_counted_while_the_streams_audio_is_relayed() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut twilio = RawTwilio::connect(&app, "early").await;
    let call_sid = twilio.call_sid.clone();
    twilio
        .json(json!({"event":"connected","protocol":"Call","version":"1.0.0"}))
        .await;
    // Before `start` nobody knows which call this audio belongs to.
    twilio.media(&[0x11; 160]).await;
    twilio.start().await;
    let first = [0x22u8; 160];
    twilio.media(&first).await;
    let bad = json!({"event":"media","sequenceNumber":"3","streamSid":twilio.stream_sid,
        "media":{"track":"inbound","chunk":"2","timestamp":"20","payload":"@@@@"}});
    twilio.json(bad).await;
    // Twilio always names the stream; one that does not is counted but still taken as this
    // call's audio (one stream per socket: nothing is ambiguous, and nothing is lost).
    let unnamed = [0x33u8; 160];
    let frame =
        json!({"event":"media","media":{"track":"inbound","payload":BASE64.encode(unnamed)}});
    twilio.json(frame).await;
    assert!(
        fake.wait_for(Duration::from_secs(5), |c| c
            .first()
            .is_some_and(|c| c.appended_audio.len() >= 320))
            .await,
        "the stream's audio reached OpenAI"
    );
    twilio.stop().await;
    assert!(twilio.closed_by_server().await);
    app.calls_finished().await;

    let expected: Vec<u8> = first.iter().chain(&unnamed).copied().collect();
    assert_eq!(fake.connections()[0].appended_audio, expected);
    assert_eq!(
        app.state.stats.errors(),
        3,
        "media before start + bad base64 + no streamSid"
    );
    assert_eq!(app.state.stats.active(), 0);
    assert_eq!(app.transcript(&call_sid)["end_reason"], "caller_hung_up");
    app.shutdown().await;
}

#[tokio::test]
async fn an_oversized_frame_ends_only_its_own_call_and_the_transcript_is_finalized() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = quick_call(&app);
    let huge = format!(
        r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
        "A".repeat(MAX_TWILIO_MESSAGE_BYTES + 4)
    );
    opts.inject_after_start = vec![Message::text(huge)];
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    assert!(report.closed_by_server, "the relay hung up that stream");
    assert!(report.heard.is_empty());
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "twilio_disconnected");
    assert!(t["ended_at"].is_string());
    assert!(
        fake.wait_for(Duration::from_secs(2), |c| c.iter().all(|c| c.closed))
            .await,
        "no OpenAI session left open"
    );
    assert_eq!(app.state.stats.active(), 0);

    let errors = app.state.stats.errors();
    let next = sim::run(quick_call(&app)).await.expect("next call");
    app.calls_finished().await;
    let conn = fake.connections().last().cloned().expect("a session");
    assert!(!next.closed_by_server);
    assert!(!next.heard.is_empty());
    assert_eq!(conn.appended_audio, next.sent_audio);
    assert_eq!(next.heard, conn.sent_audio);
    assert_eq!(
        app.state.stats.errors(),
        errors,
        "the next call adds no errors"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn twilio_vanishing_without_stop_closes_the_upstream_within_a_second_and_saves_the_transcript(
) {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    // First the TCP connection just goes away; then a close frame arrives without `stop`.
    for (n, abrupt) in [(0, true), (1, false)] {
        let mut twilio = RawTwilio::connect(&app, &format!("gone{n}")).await;
        let call_sid = twilio.call_sid.clone();
        twilio.start().await;
        for _ in 0..5 {
            twilio.media(&[0xFF; 160]).await;
        }
        assert!(
            fake.wait_for(Duration::from_secs(5), |c| c
                .get(n)
                .is_some_and(|c| c.appended_audio.len() == 800))
                .await,
            "the call is live"
        );
        let gone = Instant::now();
        if abrupt {
            drop(twilio);
        } else {
            twilio.send(Message::Close(None)).await;
        }
        assert!(
            fake.wait_for(Duration::from_secs(2), |c| c[n].closed).await,
            "the OpenAI socket was left open"
        );
        let took = gone.elapsed();
        assert!(took < Duration::from_secs(1), "closed after {took:?}");
        app.calls_finished().await;
        let t = app.transcript(&call_sid);
        assert_eq!(t["end_reason"], "twilio_disconnected", "{t:#}");
        assert!(t["ended_at"].is_string());
        assert_eq!(app.state.stats.active(), 0);
    }
    app.shutdown().await;
}

/// A one-connection Realtime stand-in written for these tests: it answers the relay's
/// `session.update` with the `on_session` frames and the caller's first loud audio with the
/// `on_speech` frames. The task returns every client event it received.
async fn scripted_upstream(
    on_session: Vec<Message>,
    on_speech: Vec<Message>,
) -> (String, JoinHandle<Vec<Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}/v1/realtime", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("the relay connects");
        let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
        let (mut on_session, mut on_speech) = (Some(on_session), Some(on_speech));
        let mut events = Vec::new();
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            let event: Value = serde_json::from_str(text.as_str()).expect("client events are JSON");
            let frames = match event["type"].as_str() {
                Some("session.update") => on_session.take(),
                Some("input_audio_buffer.append") => {
                    let audio = BASE64.decode(event["audio"].as_str().unwrap()).unwrap();
                    let loud = audio.iter().any(|&b| b != ULAW_SILENCE);
                    loud.then(|| on_speech.take()).flatten()
                }
                _ => None,
            };
            for frame in frames.unwrap_or_default() {
                ws.send(frame).await.expect("send to the relay");
            }
            events.push(event);
        }
        events
    });
    (url, task)
}

/// `response.output_audio.delta` for `item_id` carrying `delta` as is.
fn delta_event(item_id: &str, delta: &str) -> Message {
    let event = json!({"type":"response.output_audio.delta","event_id":"event_9",
        "response_id":"resp_1","item_id":item_id,"output_index":0,"content_index":0,"delta":delta});
    Message::text(event.to_string())
}

/// Non-silent reply audio with every byte value but silence, so any corruption shows.
fn reply_audio() -> Vec<u8> {
    (0..1600).map(|i| (i % 255) as u8).collect()
}

/// One short call through [`scripted_upstream`]; returns the relay (calls finished), the
/// caller's report and the client events the stand-in received.
async fn call_through(
    on_session: Vec<Message>,
    on_speech: Vec<Message>,
) -> (TestApp, sim::CallReport, Vec<Value>) {
    let (upstream, task) = scripted_upstream(on_session, on_speech).await;
    let app = spawn_app(Config {
        openai_api_key: Some("sk-test".into()),
        openai_realtime_url: upstream,
        ..Config::default()
    })
    .await;
    let mut opts = call_options(&app, vec![tone(200)]);
    opts.quiet_ms = 300;
    opts.reply_timeout_ms = 5_000;
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;
    let events = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the relay closed the upstream socket")
        .expect("stand-in task");
    (app, report, events)
}

#[tokio::test]
async fn hostile_realtime_events_are_counted_and_the_valid_audio_still_reaches_the_caller_bit_exact(
) {
    let hostile = vec![
        Message::text("{not json"),
        // A known event with a field of the wrong type.
        Message::text(r#"{"type":"input_audio_buffer.speech_started","item_id":5}"#),
        Message::text(
            r#"{"type":"error","event_id":"event_3","error":{"type":"invalid_request_error","code":"x","message":"y"}}"#,
        ),
        Message::binary(vec![1, 2, 3]),
        // New event types appear as the API evolves: ignored, and not an error.
        Message::text(r#"{"type":"brand_new.event","event_id":"event_5"}"#),
    ];
    let reply = vec![delta_event("item_1", &BASE64.encode(reply_audio()))];
    let (app, report, events) = call_through(hostile, reply).await;

    assert_eq!(events[0]["type"], "session.update");
    assert_eq!(
        app.state.stats.errors(),
        4,
        "malformed JSON, wrong type, error event and binary frame each counted"
    );
    assert!(
        !report.closed_by_server,
        "the call went on: {}",
        report.summary()
    );
    assert_eq!(report.received_audio, reply_audio());
    assert_eq!(report.heard, reply_audio(), "heard bit-exact");
    assert!(
        report.unexpected_messages.is_empty(),
        "{:?}",
        report.unexpected_messages
    );
    assert_eq!(
        report.clears, 0,
        "the wrong-typed speech_started was not a barge-in"
    );
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );
    assert_eq!(app.state.stats.active(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn an_audio_delta_that_is_not_base64_is_dropped_and_counted_not_sent_to_twilio() {
    let on_speech = vec![
        delta_event("item_0", "%%% not audio %%%"),
        delta_event("item_1", &BASE64.encode(reply_audio())),
    ];
    let (app, report, _) = call_through(Vec::new(), on_speech).await;
    assert!(
        report.unexpected_messages.is_empty(),
        "{:?}",
        report.unexpected_messages
    );
    assert_eq!(report.heard, reply_audio());
    assert_eq!(app.state.stats.errors(), 1);
    app.shutdown().await;
}
