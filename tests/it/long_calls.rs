//! Long calls: Realtime sessions renewed at their maximum duration (on expiry and proactively at
//! a quiet moment), the call-length cap, and silent callers.

use std::time::Duration;

use serde_json::Value;
use twilio_realtime_relay::config::TurnDetectionKind;
use twilio_realtime_relay::fake_openai::{ConnectionLog, FakeOptions, Mode};
use twilio_realtime_relay::sim;

use crate::fake_twilio::FakeTwilio;
use crate::support::{call_options, clip, metric, spawn_with_fake, TestApp};

/// The caller audio every session received, in order, as one stream.
fn appended(conns: &[ConnectionLog]) -> Vec<u8> {
    conns
        .iter()
        .flat_map(|c| c.appended_audio.clone())
        .collect()
}

fn turns(t: &Value) -> Vec<(String, String)> {
    t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| {
            (
                turn["role"].as_str().unwrap().to_string(),
                turn["started_at"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Client events of one session whose type is `kind`.
fn events<'a>(conn: &'a ConnectionLog, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    conn.client_events.iter().filter(move |e| e["type"] == kind)
}

/// System messages the relay sent one session.
fn system_messages(conn: &ConnectionLog) -> Vec<String> {
    events(conn, "conversation.item.create")
        .filter(|e| e["item"]["role"] == "system")
        .map(|e| {
            e["item"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_call_across_several_session_expiries_is_answered_throughout_and_loses_no_caller_audio() {
    let expiring = FakeOptions {
        mode: Mode::Parrot,
        expire_after: Some(Duration::from_secs(4)),
        ..FakeOptions::default()
    };
    let (app, fake) = spawn_with_fake(expiring, |_| {}).await;
    let clips = vec![
        clip("caller-hello.wav"),
        clip("caller-question.wav"),
        clip("caller-hello.wav"),
        clip("caller-question.wav"),
    ];
    let report = sim::run(call_options(&app, clips)).await.expect("call");
    app.calls_finished().await;

    let conns = fake.connections();
    assert!(conns.len() >= 4, "at least three expiries: {}", conns.len());
    for conn in &conns[..conns.len() - 1] {
        assert_eq!(
            conn.errors_sent,
            ["session_expired"],
            "each session expired once"
        );
    }
    assert_eq!(
        report.reply_timeouts, 0,
        "every caller utterance was answered"
    );
    assert!(!report.closed_by_server, "no fallback: the caller hung up");
    // Every caller frame reached a session; a turn an expiry cut off was heard again whole by
    // the next session (and counted as replayed).
    let replayed = metric(&app.metrics().await, "frames_replayed_total") as usize;
    assert_eq!(
        appended(&conns).len(),
        report.sent_audio.len() + replayed * 160,
        "nothing dropped, only the cut turns replayed"
    );
    assert!(replayed > 0, "an expiry cut the caller off at least once");
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up");
    assert_eq!(t["session_renewals"], conns.len() as u64 - 1);
    assert!(
        t.get("upstream_reconnects").is_none(),
        "renewals are not reconnects"
    );
    let turns = turns(&t);
    let mut sorted = turns.clone();
    sorted.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(turns, sorted, "turns in the order they were spoken");
    // Each clip was heard whole by some session (2.82 s and 2.10 s of speech), never a fragment.
    let caller: Vec<&str> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|turn| turn["role"] == "caller")
        .map(|turn| turn["text"].as_str().unwrap())
        .collect();
    assert!(caller.len() >= 4, "{t:#}");
    assert!(
        caller.iter().all(|text| text.contains(" 2.")),
        "only whole utterances: {caller:?}"
    );
    assert!(
        turns.iter().filter(|(role, _)| role == "assistant").count() >= 3,
        "{t:#}"
    );
    // The new sessions got the conversation so far.
    let last = conns.last().unwrap();
    assert_eq!(last.client_events[0]["type"], "session.update");
    assert!(system_messages(last)[0].contains("The conversation so far"));
    let renewals = metric(
        &app.metrics().await,
        r#"session_renewals_total{trigger="expired"}"#,
    );
    assert_eq!(renewals, conns.len() as f64 - 1.0);
    assert_eq!(
        metric(
            &app.metrics().await,
            r#"errors_total{kind="upstream_socket"}"#
        ),
        0.0
    );
    assert_eq!(metric(&app.metrics().await, "frames_dropped_total"), 0.0);
    app.shutdown().await;
}

#[tokio::test]
async fn proactive_renewal_switches_at_a_quiet_moment_to_a_session_opened_in_advance() {
    // Every upgrade after the first takes 1 s: a relay that closed the old session before
    // opening the next would leave the caller's audio waiting that long.
    let slow_reconnects = FakeOptions {
        mode: Mode::Parrot,
        later_upgrade_delay: Some(Duration::from_secs(1)),
        ..FakeOptions::default()
    };
    let (app, fake) = spawn_with_fake(slow_reconnects, |c| c.session_renew_secs = 1).await;
    let clips = vec![clip("caller-hello.wav"), clip("caller-question.wav")];
    let report = sim::run(call_options(&app, clips)).await.expect("call");
    app.calls_finished().await;

    let conns = fake.connections();
    assert!(conns.len() >= 2, "renewed at least once");
    assert!(conns.iter().all(|c| c.errors_sent.is_empty()));
    assert_eq!(report.reply_timeouts, 0);
    assert_eq!(report.clears, 0, "no assistant audio was cut");
    let assistant: Vec<u8> = conns.iter().flat_map(|c| c.sent_audio.clone()).collect();
    assert_eq!(
        report.heard, assistant,
        "the caller heard every reply whole"
    );
    assert_eq!(appended(&conns), report.sent_audio, "no caller audio lost");
    for pair in conns.windows(2) {
        let gap = pair[1].first_append_at.unwrap() - pair[0].last_append_at.unwrap();
        assert!(
            gap < Duration::from_millis(300),
            "caller audio paused {gap:?} at the switch (a frame is 20 ms; a late open would be ≥ 1 s)"
        );
    }
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up");
    assert_eq!(t["session_renewals"], conns.len() as u64 - 1);
    let proactive = metric(
        &app.metrics().await,
        r#"session_renewals_total{trigger="proactive"}"#,
    );
    assert!(proactive >= 1.0);
    app.shutdown().await;
}

/// Simulator options for a caller who says nothing and never hangs up.
fn silent_caller(app: &TestApp) -> sim::CallOptions {
    let mut opts = call_options(app, vec![]);
    opts.quiet_ms = 60_000;
    opts.max_call_ms = 30_000;
    opts
}

#[tokio::test]
async fn max_call_secs_ends_the_call_with_a_goodbye_and_max_duration() {
    let twilio = FakeTwilio::start().await;
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    let (app, fake) = spawn_with_fake(FakeOptions::default(), move |c| {
        c.max_call_secs = 2;
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_validate_signature = false;
    })
    .await;
    let report = sim::run(silent_caller(&app)).await.expect("call");
    app.calls_finished().await;

    assert!(report.closed_by_server && !report.hit_call_limit);
    let conn = &fake.connections()[0];
    let goodbye = system_messages(conn);
    assert!(
        goodbye.iter().any(|m| m.contains("time limit")),
        "{goodbye:?}"
    );
    assert!(!conn.sent_audio.is_empty(), "the goodbye was spoken");
    assert_eq!(report.heard, conn.sent_audio, "and heard to its end");
    let hangup = twilio
        .requests()
        .pop()
        .expect("Twilio was asked to hang up");
    assert!(hangup
        .path
        .ends_with(&format!("/Calls/{}.json", report.call_sid)));
    assert_eq!(hangup.form_values("Status"), ["completed"]);
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "max_duration");
    app.shutdown().await;
}

#[tokio::test]
async fn a_silent_caller_is_prompted_by_the_server_then_the_call_ends_as_caller_idle() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.caller_idle_secs = 1;
        c.caller_idle_prompts = 2;
    })
    .await;
    let report = sim::run(silent_caller(&app)).await.expect("call");
    app.calls_finished().await;

    assert!(report.closed_by_server, "the relay ended the call");
    assert_eq!(report.replies_started, 3, "two prompts and a goodbye");
    let conn = &fake.connections()[0];
    let updates: Vec<&Value> = events(conn, "session.update").collect();
    let idle_ms =
        |u: &Value| u["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"].clone();
    assert_eq!(idle_ms(updates[0]), 1000, "the server prompts first");
    assert_eq!(
        idle_ms(updates.last().unwrap()),
        Value::Null,
        "then it is told to stop"
    );
    let messages = system_messages(conn);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("goodbye"));
    assert_eq!(
        report.heard, conn.sent_audio,
        "the goodbye played to its end"
    );
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_idle");
    app.shutdown().await;
}

#[tokio::test]
async fn with_semantic_vad_the_relay_prompts_a_silent_caller_itself() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.turn_detection = TurnDetectionKind::SemanticVad;
        c.caller_idle_secs = 1;
        c.caller_idle_prompts = 1;
    })
    .await;
    let report = sim::run(silent_caller(&app)).await.expect("call");
    app.calls_finished().await;

    assert!(report.closed_by_server);
    assert_eq!(report.replies_started, 2, "one prompt and a goodbye");
    let messages = system_messages(&fake.connections()[0]);
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(messages[0].contains("still there"));
    assert!(messages[1].contains("goodbye"));
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_idle");
    app.shutdown().await;
}
