//! Calls on GPT-Live (`OPENAI_API=live`): simulator (as Twilio) → relay → the stand-in speaking
//! GPT-Live, and the stand-in's own validation of client events.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::config::{Config, VoiceApi};
use twilio_realtime_relay::fake_openai::{ConnectionLog, FakeOpenAi, FakeOptions};
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, spawn_with_fake, TestApp};

/// The relay on GPT-Live, pointed at the stand-in's `/v1/live/sessions`.
async fn on_live(opts: FakeOptions, tweak: impl FnOnce(&mut Config)) -> (TestApp, FakeOpenAi) {
    spawn_with_fake(opts, |c| {
        c.openai_api = VoiceApi::Live;
        c.openai_live_url = c
            .openai_realtime_url
            .replace("/v1/realtime", "/v1/live/sessions");
        tweak(c);
    })
    .await
}

fn types(conn: &ConnectionLog) -> Vec<String> {
    conn.client_events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[tokio::test]
async fn a_call_on_gpt_live_starts_with_its_settings_talks_uses_a_tool_and_closes_gracefully() {
    let (app, fake) = on_live(
        FakeOptions {
            end_call_after: Some(2),
            ..FakeOptions::default()
        },
        |c| c.greeting = Some("Thanks for calling.".into()),
    )
    .await;
    let report = sim::run(call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    ))
    .await
    .expect("call");
    app.calls_finished().await;

    let conns = fake.connections();
    assert_eq!(conns.len(), 1, "one GPT-Live session");
    let conn = &conns[0];
    assert_eq!(
        conn.path_and_query, "/v1/live/sessions",
        "no model in the URL"
    );
    assert_eq!(conn.authorization.as_deref(), Some("Bearer sk-test-key"));
    assert!(
        conn.errors_sent.is_empty(),
        "refused: {:?}",
        conn.errors_sent
    );
    let start = &conn.client_events[0];
    assert_eq!(start["type"], "session.start", "{start}");
    let session = &start["session"];
    assert_eq!(session["model"], "gpt-live-1");
    assert_eq!(
        session["audio"]["format"],
        json!({"type": "audio/pcmu", "rate": 8000})
    );
    assert_eq!(session["audio"]["output"]["voice"], Config::default().voice);
    assert_eq!(session["instructions"], Config::default().instructions);
    assert_eq!(session["delegation"]["type"], "responses");
    assert!(session["delegation"]["responses"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "end_call"));
    let sent = types(conn);
    assert!(
        sent.contains(&"session.commentary.append".to_string()),
        "greeting: {sent:?}"
    );
    assert!(
        sent.contains(&"response.item.create".to_string()),
        "tool output: {sent:?}"
    );
    assert_eq!(
        sent.last().map(String::as_str),
        Some("session.close"),
        "{sent:?}"
    );
    for realtime_only in [
        "session.update",
        "input_audio_buffer.append",
        "conversation.item.truncate",
    ] {
        assert!(
            !sent.iter().any(|t| t == realtime_only),
            "{realtime_only} sent to GPT-Live"
        );
    }
    // The caller's audio reached the API unchanged (up to the hang-up).
    let n = conn.appended_audio.len();
    assert!(
        n * 10 >= report.sent_audio.len() * 9,
        "{n} of {} bytes",
        report.sent_audio.len()
    );
    assert!(
        conn.appended_audio == report.sent_audio[..n],
        "the audio changed on the way"
    );

    assert_eq!(
        report.replies_started,
        3,
        "greeting and two answers: {}",
        report.summary()
    );
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "assistant_hung_up", "{t:#}");
    assert_eq!(t["upstream_close_reason"], "close_requested", "{t:#}");
    let usage = t["upstream_usage_seconds"].as_f64().unwrap();
    let sent_s = report.sent_audio.len() as f64 / 8000.0;
    assert!(
        (usage - sent_s).abs() < 0.5,
        "usage {usage} s for {sent_s} s sent"
    );
    let turns: Vec<(&str, &str)> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| {
            (
                turn["role"].as_str().unwrap(),
                turn["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(turns[0], ("assistant", "Thanks for calling."), "{turns:?}");
    let callers: Vec<&str> = turns
        .iter()
        .filter(|t| t.0 == "caller")
        .map(|t| t.1)
        .collect();
    assert_eq!(callers.len(), 2, "{turns:?}");
    assert!(
        callers.iter().all(|c| c.starts_with("[speech ")),
        "{turns:?}"
    );
    assert!(
        turns
            .iter()
            .any(|t| t.0 == "tool" && t.1.contains("end_call")),
        "{turns:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn on_gpt_live_the_relay_hears_the_barge_in_clears_twilio_and_keeps_little_queued() {
    // The stand-in sends its reply 4× faster than real time: the relay keeps most of it and
    // Twilio has PLAYBACK_AHEAD_MS queued when the caller speaks.
    let (app, fake) = on_live(FakeOptions::default(), |_| {}).await;
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
    let heard = report.heard_ms_at_clear[0];
    // The reply replays the 2.87 s clip: the caller heard part of it, then the clear came.
    assert!(
        (700..2000).contains(&heard),
        "heard {heard} ms of the reply before the clear"
    );
    // Paced: never much more than PLAYBACK_AHEAD_MS (400) plus one 120 ms piece waits at Twilio
    // (the stand-in sends 4× faster than real time, so unpaced it would be seconds).
    assert!(
        report.max_queued_ms <= 400 + 120 + 40,
        "{} ms queued at Twilio at once",
        report.max_queued_ms
    );
    let conn = &fake.connections()[0];
    assert!(!types(conn)
        .iter()
        .any(|t| t == "conversation.item.truncate"));
    let t = app.transcript(&report.call_sid);
    let interrupted: Vec<&Value> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|turn| turn["interrupted"] == true)
        .collect();
    assert_eq!(interrupted.len(), 1, "{t:#}");
    assert_eq!(interrupted[0]["role"], "assistant");
    let heard_ms = interrupted[0]["heard_ms"].as_u64().unwrap();
    assert!(
        heard_ms.abs_diff(heard) <= 60,
        "transcript says {heard_ms} ms heard, caller heard {heard}"
    );
    assert_eq!(
        report.reply_timeouts,
        0,
        "the interrupting question was answered: {}",
        report.summary()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn when_gpt_live_stops_talking_first_the_turn_is_still_marked_interrupted() {
    // Output at real time: the server hears the caller and stops before much is queued, so
    // Twilio plays out the little it has; the relay marks the turn interrupted, all of it heard.
    let (app, fake) = on_live(
        FakeOptions {
            pace: 1.0,
            ..FakeOptions::default()
        },
        |_| {},
    )
    .await;
    let mut opts = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    );
    opts.interrupt_after_ms = Some(700);
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    let conn = &fake.connections()[0];
    assert!(conn.interruptions >= 1, "the server stopped its reply");
    let t = app.transcript(&report.call_sid);
    let turns = t["turns"].as_array().unwrap();
    let first_reply = turns
        .iter()
        .find(|turn| turn["role"] == "assistant")
        .expect("a reply");
    assert_eq!(first_reply["interrupted"], true, "{t:#}");
    let heard = first_reply["heard_ms"].as_u64().unwrap();
    // About 700 ms plus what the server sent before it heard the caller; far from the 2.87 s.
    assert!((600..2000).contains(&heard), "heard {heard} ms: {t:#}");
    assert_eq!(report.reply_timeouts, 0, "{}", report.summary());
    app.shutdown().await;
}

#[tokio::test]
async fn a_gpt_live_session_that_expires_is_renewed_and_the_call_goes_on() {
    let (app, fake) = on_live(
        FakeOptions {
            expire_after: Some(Duration::from_secs(6)),
            ..FakeOptions::default()
        },
        |_| {},
    )
    .await;
    let mut opts = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    );
    opts.quiet_ms = 2500;
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;

    let conns = fake.connections();
    assert!(conns.len() >= 2, "a second session: {}", conns.len());
    assert_eq!(conns[1].client_events[0]["type"], "session.start");
    assert!(
        types(&conns[1]).contains(&"session.thinking.append".to_string()),
        "the conversation so far went along: {:?}",
        types(&conns[1])
    );
    assert_eq!(report.reply_timeouts, 0, "{}", report.summary());
    let t = app.transcript(&report.call_sid);
    assert!(t["session_renewals"].as_u64().unwrap() >= 1, "{t:#}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_gpt_live_stand_in_refuses_what_the_protocol_does_not_allow() {
    let fake = FakeOpenAi::spawn(FakeOptions::default()).await.unwrap();
    let connect = || async {
        let mut request = fake.live_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Authorization", "Bearer sk-test".parse().unwrap());
        tokio_tungstenite::connect_async(request).await.unwrap().0
    };
    async fn next(
        ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
    ) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .expect("an answer")
                .expect("open")
                .expect("frame");
            if let Message::Text(text) = frame {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }
    let mut ws = connect().await;
    // Before session.start, and unknown types: an error, and the connection stays open.
    ws.send(Message::text(
        r#"{"type":"session.input_audio.append","audio":"//8="}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["error"]["code"], "session_not_started");
    ws.send(Message::text(
        r#"{"type":"input_audio_buffer.append","audio":"//8="}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["error"]["code"], "unknown_event");
    let start = json!({"type": "session.start", "session": {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcmu", "rate": 8000}}}});
    ws.send(Message::text(start.to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "session.started");
    ws.send(Message::text(start.to_string())).await.unwrap();
    assert_eq!(
        next(&mut ws).await["error"]["code"],
        "session_already_started"
    );
    ws.send(Message::text(r#"{"type":"session.close"}"#))
        .await
        .unwrap();
    let closed = next(&mut ws).await;
    assert_eq!(
        (closed["type"].as_str(), closed["reason"].as_str()),
        (Some("session.closed"), Some("close_requested"))
    );
    // A format the relay must never ask for: refused, and the session ends.
    let mut ws = connect().await;
    let pcm = json!({"type": "session.start", "session": {"model": "gpt-live-1", "audio": {"format": {"type": "audio/pcm", "rate": 24000}}}});
    ws.send(Message::text(pcm.to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["error"]["code"], "invalid_value");
    let logs = fake.connections();
    assert!(logs.iter().all(|l| l.path_and_query == "/v1/live/sessions"));
}
