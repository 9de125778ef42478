//! Whole calls through the relay: simulator (as Twilio) → relay → stand-in (as OpenAI) and back.

use std::time::Duration;

use serde_json::Value;
use twilio_realtime_relay::fake_openai::{FakeOptions, Mode};
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, spawn_with_fake};

fn parrot() -> FakeOptions {
    FakeOptions {
        mode: Mode::Parrot,
        ..FakeOptions::default()
    }
}

#[tokio::test]
async fn a_call_relays_audio_bit_exact_both_ways_writes_a_transcript_and_shows_in_metrics() {
    let (app, fake) = spawn_with_fake(parrot(), |_| {}).await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    let conns = fake.connections();
    assert_eq!(conns.len(), 1, "one upstream session per call");
    let conn = &conns[0];
    assert_eq!(conn.path_and_query, "/v1/realtime?model=gpt-realtime-2.1");
    assert_eq!(conn.authorization.as_deref(), Some("Bearer sk-test-key"));
    // Every caller frame, silence included, reached OpenAI unchanged and in order.
    assert!(!report.sent_audio.is_empty());
    assert_eq!(conn.appended_audio, report.sent_audio);
    // Every byte OpenAI produced reached Twilio unchanged and in order.
    assert!(!conn.sent_audio.is_empty(), "the stand-in answered");
    assert_eq!(report.received_audio, conn.sent_audio);
    assert_eq!(
        report.heard, conn.sent_audio,
        "nothing was cleared, so all was heard"
    );
    assert!(report.marks_received > 0);
    assert_eq!(report.marks_echoed, report.marks_received);
    assert_eq!(report.clears, 0);
    assert!(!report.closed_by_server);

    let t = app.transcript(&report.call_sid);
    assert_eq!(t["call_sid"], report.call_sid.as_str());
    assert_eq!(t["stream_sid"], report.stream_sid.as_str());
    assert_eq!(t["from"], "+15550001111");
    assert_eq!(t["to"], "+15550002222");
    assert_eq!(t["end_reason"], "caller_hung_up");
    assert!(t["ended_at"].is_string());
    let turns = t["turns"].as_array().unwrap();
    let roles: Vec<&str> = turns.iter().map(|t| t["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["caller", "assistant"], "{t:#}");
    assert!(turns
        .iter()
        .all(|t| !t["text"].as_str().unwrap().is_empty()));
    assert!(turns.iter().all(|t| t["interrupted"] == false));

    assert_eq!(app.state.stats.active(), 0);
    assert_eq!(app.state.stats.total(), 1);
    assert_eq!(app.state.stats.errors(), 0);

    let (status, headers, metrics) = app
        .request(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, axum::http::StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{metrics}"))
    };
    assert_eq!(value("calls_total"), 1.0);
    assert_eq!(value("calls_active"), 0.0);
    let frames_in = report.sent_audio.len() as f64 / 160.0;
    assert_eq!(
        value(r#"frames_total{direction="twilio_to_openai"}"#),
        frames_in
    );
    assert_eq!(
        value(r#"bytes_total{direction="openai_to_twilio"}"#),
        conn.sent_audio.len() as f64
    );
    assert_eq!(
        value("response_latency_seconds_count"),
        1.0,
        "one reply after one utterance"
    );
    assert_eq!(value("upstream_connect_seconds_count"), 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_session_update_is_ga_shaped_and_comes_first() {
    let (app, fake) = spawn_with_fake(parrot(), |c| {
        c.voice = "cedar".into();
        c.instructions = "Be brief.".into();
    })
    .await;
    // Waiting for the session is enough: no audio needs to flow. The caller stays on the line
    // (silent) until then.
    let mut opts = call_options(&app, vec![]);
    opts.quiet_ms = 60_000;
    opts.max_call_ms = 2_000;
    let call = tokio::spawn(sim::run(opts));
    assert!(
        fake.wait_for(Duration::from_secs(10), |c| c
            .first()
            .is_some_and(|c| !c.client_events.is_empty()))
            .await
    );
    let first = fake.connections()[0].client_events[0].clone();
    let expected: Value = serde_json::json!({
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime-2.1",
            "output_modalities": ["audio"],
            "instructions": "Be brief.",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                        "silence_duration_ms": 500, "create_response": true, "interrupt_response": true}
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "cedar"}
            },
            "tools": [{"type": "function", "name": "end_call",
                "description": twilio_realtime_relay::config::end_call_tool().description,
                "parameters": {"type": "object", "properties": {"reason": {"type": "string",
                    "description": "Why the call is ending, in a few words."}}}}],
            "tool_choice": "auto"
        }
    });
    assert_eq!(first, expected);
    call.await.unwrap().unwrap();
    app.calls_finished().await;
    app.shutdown().await;
}

#[tokio::test]
async fn barge_in_clears_twilio_and_truncates_at_what_the_caller_heard() {
    let (app, fake) = spawn_with_fake(parrot(), |_| {}).await;
    let mut opts = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    );
    opts.interrupt_after_ms = Some(700);
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    assert!(
        report.clears >= 1,
        "Twilio was told to clear: {}",
        report.summary()
    );
    let conn = &fake.connections()[0];
    assert!(
        conn.errors_sent.is_empty(),
        "stand-in rejected something: {:?}",
        conn.errors_sent
    );
    let (item, audio_end_ms) = conn
        .truncates
        .first()
        .cloned()
        .expect("a truncate was sent");
    let heard = report.heard_ms_at_clear[0];
    assert!(
        audio_end_ms.abs_diff(heard) <= 40,
        "truncated at {audio_end_ms} ms, caller heard {heard} ms"
    );
    // Not a trivial cut: the caller heard part of the reply, not all of it.
    assert!(heard >= 600 && (heard as usize) < conn.sent_audio.len() / 8);

    let t = app.transcript(&report.call_sid);
    let interrupted: Vec<&Value> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["interrupted"] == true)
        .collect();
    assert_eq!(interrupted.len(), 1, "{t:#}");
    assert_eq!(interrupted[0]["role"], "assistant");
    assert_eq!(interrupted[0]["heard_ms"], audio_end_ms);
    assert!(!item.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_greeting_is_requested_once_the_session_is_ready_and_heard_first() {
    let (app, fake) = spawn_with_fake(parrot(), |c| {
        c.greeting = Some("Thanks for calling Bella's.".into());
    })
    .await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    let events = &fake.connections()[0].client_events;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let create = types
        .iter()
        .position(|t| *t == "conversation.item.create")
        .expect("item");
    assert_eq!(types[0], "session.update");
    assert_eq!(types[create + 1], "response.create");
    let text = events[create]["item"]["content"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("Thanks for calling Bella's."), "{text}");
    assert!(
        report.replies_started >= 2,
        "greeting and answer: {}",
        report.summary()
    );
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["turns"][0]["role"], "assistant", "{t:#}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_assistant_hangs_up_through_twilio_after_its_goodbye_has_played() {
    let twilio = crate::fake_twilio::FakeTwilio::start().await;
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    let goodbye = FakeOptions {
        end_call_after: Some(1),
        ..parrot()
    };
    let (app, fake) = spawn_with_fake(goodbye, move |c| {
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_validate_signature = false;
    })
    .await;
    let report = sim::run(call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    ))
    .await
    .expect("call");
    app.calls_finished().await;

    let conn = &fake.connections()[0];
    let output = conn
        .client_events
        .iter()
        .find(|e| e["item"]["type"] == "function_call_output")
        .expect("the function call was answered");
    assert_eq!(output["item"]["output"], r#"{"ok":true}"#);
    assert_eq!(
        report.heard, conn.sent_audio,
        "the whole goodbye was heard before the hang-up"
    );
    assert!(
        report.closed_by_server,
        "the call ended before the caller's second clip"
    );
    let hangup = twilio
        .requests()
        .pop()
        .expect("Twilio was asked to hang up");
    assert_eq!(
        hangup.path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{}.json",
            twilio.account_sid, report.call_sid
        )
    );
    assert_eq!(hangup.form_values("Status"), ["completed"]);
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "assistant_hung_up");
    let roles: Vec<&str> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["caller", "assistant", "tool"], "{t:#}");
    assert_eq!(t["turns"][2]["name"], "end_call");
    assert_eq!(t["turns"][2]["output"], serde_json::json!({"ok": true}));
    app.shutdown().await;
}

#[tokio::test]
async fn without_twilio_credentials_the_assistant_ends_the_call_by_closing_the_stream() {
    let goodbye = FakeOptions {
        end_call_after: Some(1),
        ..parrot()
    };
    let (app, fake) = spawn_with_fake(goodbye, |_| {}).await;
    let report = sim::run(call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    ))
    .await
    .expect("call");
    app.calls_finished().await;
    assert!(report.closed_by_server);
    assert_eq!(report.heard, fake.connections()[0].sent_audio);
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "assistant_hung_up"
    );
    app.shutdown().await;
}
