//! Forked calls end to end: the simulator forks both tracks of a call (caller on `inbound`, agent
//! on `outbound`) into `/transcription-stream`; each backend runs against its local stand-in.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim::{self, CallOptions, CallReport, ForkTracks};
use twilio_realtime_relay::transcribe::Backend;
use twilio_realtime_relay::transcript::Role;

use crate::fake_deepgram::FakeDeepgram;
use crate::fake_whisper::FakeWhisper;
use crate::support::{clip, metric, spawn_app, spawn_with_fake, TestApp};

/// Fork options: caller says `caller-hello.wav`, then the agent says `caller-question.wav`.
pub(crate) fn fork_options(app: &TestApp, call_sid: &str) -> CallOptions {
    let url = format!("ws://{}/transcription-stream", app.addr);
    let mut opts = CallOptions::new(url, vec![clip("caller-hello.wav")]);
    opts.fork = Some(ForkTracks::Both);
    opts.agent_clips = vec![clip("caller-question.wav")];
    opts.call_sid = Some(call_sid.to_string());
    opts.quiet_ms = 600;
    opts.max_call_ms = 30_000;
    opts.params = vec![
        ("From".into(), "+15550001111".into()),
        ("To".into(), "+15550002222".into()),
    ];
    opts
}

/// Every event of the call up to `call.ended` (the feed closes after it).
async fn collect(mut rx: broadcast::Receiver<CallEvent>) -> Vec<CallEvent> {
    let mut events = Vec::new();
    loop {
        match rx.recv().await {
            Ok(event) => {
                let ended = matches!(event, CallEvent::Ended { .. });
                events.push(event);
                if ended {
                    return events;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return events,
            Err(e) => panic!("event feed: {e}"),
        }
    }
}

/// Run one forked call; returns the simulator's report and the call's events.
pub(crate) async fn fork_call(app: &TestApp, opts: CallOptions) -> (CallReport, Vec<CallEvent>) {
    let sid = opts.call_sid.clone().expect("tests pick the call SID");
    let feed = tokio::spawn(collect(app.state.events.subscribe(&sid)));
    let report = sim::run(opts).await.expect("fork call");
    app.calls_finished().await;
    let events = tokio::time::timeout(Duration::from_secs(5), feed)
        .await
        .expect("call.ended within 5 s of the call")
        .expect("collector");
    (report, events)
}

/// `(speaker, text)` of the final events, in order.
pub(crate) fn finals(events: &[CallEvent]) -> Vec<(Role, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Final { speaker, text, .. } => Some((*speaker, text.clone())),
            _ => None,
        })
        .collect()
}

/// What every fork must show: silence towards Twilio, a clean end, the record and the transcript
/// agreeing with the final events. Returns the transcript file.
pub(crate) async fn check_fork(app: &TestApp, report: &CallReport, events: &[CallEvent]) -> Value {
    assert!(
        report.unexpected_messages.is_empty(),
        "a fork must receive nothing: {:?}",
        report.unexpected_messages
    );
    assert!(!report.closed_by_server && !report.hit_call_limit);
    assert!(!report.sent_audio.is_empty() && !report.sent_agent_audio.is_empty());
    let Some(CallEvent::Ended { end_reason, .. }) = events.last() else {
        panic!("the feed ends with call.ended: {events:?}")
    };
    assert_eq!(serde_json::to_value(end_reason).unwrap(), "caller_hung_up");

    let record = app
        .state
        .store
        .get(&report.call_sid)
        .await
        .unwrap()
        .expect("call record");
    assert_eq!(record.direction, "fork");
    assert_eq!(record.status, "completed");
    assert!(record.is_ended());
    assert_eq!(record.from.as_deref(), Some("+15550001111"));
    assert_eq!(record.to.as_deref(), Some("+15550002222"));

    let t = app.transcript(&report.call_sid);
    assert_eq!(t["stream_sid"], report.stream_sid.as_str());
    assert_eq!(t["from"], "+15550001111");
    assert_eq!(t["end_reason"], "caller_hung_up");
    let turns = t["turns"].as_array().unwrap();
    let from_file: Vec<(String, String)> = turns
        .iter()
        .map(|t| {
            (
                t["role"].as_str().unwrap().into(),
                t["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    let from_events: Vec<(String, String)> = finals(events)
        .into_iter()
        .map(|(role, text)| {
            (
                serde_json::to_value(role).unwrap().as_str().unwrap().into(),
                text,
            )
        })
        .collect();
    assert_eq!(from_file, from_events, "the file and the feed agree");
    let times: Vec<&str> = turns
        .iter()
        .map(|t| t["started_at"].as_str().unwrap())
        .collect();
    let parsed: Vec<chrono::DateTime<chrono::Utc>> =
        times.iter().map(|s| s.parse().unwrap()).collect();
    assert!(
        parsed.windows(2).all(|w| w[0] <= w[1]),
        "turns in time order: {times:?}"
    );
    assert_eq!(app.state.stats.active(), 0);
    t
}

/// Each speaker's interims come before that speaker's final.
fn interims_precede_finals(events: &[CallEvent]) {
    for speaker in [Role::Caller, Role::Agent] {
        let kinds: Vec<&str> = events
            .iter()
            .filter(|e| match e {
                CallEvent::Interim { speaker: s, .. } | CallEvent::Final { speaker: s, .. } => {
                    *s == speaker
                }
                _ => false,
            })
            .map(CallEvent::name)
            .collect();
        assert!(kinds.len() >= 2, "{speaker:?}: {kinds:?}");
        assert_eq!(
            kinds.first(),
            Some(&"transcript.interim"),
            "{speaker:?}: {kinds:?}"
        );
        assert_eq!(
            kinds.last(),
            Some(&"transcript.final"),
            "{speaker:?}: {kinds:?}"
        );
    }
}

#[tokio::test]
async fn openai_transcribes_both_tracks_with_interims_and_never_answers_twilio() {
    let (app, fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkopenai")).await;
    let t = check_fork(&app, &report, &events).await;
    interims_precede_finals(&events);
    let finals = finals(&events);
    let speakers: Vec<Role> = finals.iter().map(|(s, _)| *s).collect();
    assert_eq!(speakers, [Role::Caller, Role::Agent], "{finals:?}");
    assert!(
        finals.iter().all(|(_, text)| text.starts_with("[speech ")),
        "{finals:?}"
    );
    assert_eq!(t["turns"][0]["role"], "caller");
    assert_eq!(t["turns"][1]["role"], "agent");

    let conns = fake.connections();
    assert_eq!(conns.len(), 2, "one transcription session per track");
    for conn in &conns {
        assert_eq!(conn.path_and_query, "/v1/realtime?intent=transcription");
        assert_eq!(conn.authorization.as_deref(), Some("Bearer sk-test-key"));
        let update = &conn.client_events[0];
        assert_eq!(update["type"], "session.update");
        assert_eq!(update["session"]["type"], "transcription");
        assert_eq!(
            update["session"]["audio"]["input"]["format"]["type"],
            "audio/pcmu"
        );
        assert_eq!(
            update["session"]["audio"]["input"]["transcription"]["model"],
            "gpt-4o-transcribe"
        );
        assert!(conn.errors_sent.is_empty(), "{:?}", conn.errors_sent);
    }
    // Each track's audio reached its own session unchanged (then the end-of-track silence).
    for sent in [&report.sent_audio, &report.sent_agent_audio] {
        assert!(
            conns.iter().any(|c| c.appended_audio.starts_with(sent)),
            "a session got exactly this track's audio"
        );
    }
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn deepgram_streams_each_track_on_its_own_connection() {
    let deepgram = FakeDeepgram::spawn("dg-test-key").await;
    let mut config = Config::default();
    config.transcribe.transcribe_backend = Backend::Deepgram;
    config.transcribe.deepgram_api_key = Some("dg-test-key".into());
    config.transcribe.deepgram_url = deepgram.url();
    let app = spawn_app(config).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkdeepgram")).await;
    check_fork(&app, &report, &events).await;
    interims_precede_finals(&events);
    let finals = finals(&events);
    let speakers: Vec<Role> = finals.iter().map(|(s, _)| *s).collect();
    assert_eq!(speakers, [Role::Caller, Role::Agent], "{finals:?}");
    assert!(
        finals
            .iter()
            .all(|(_, t)| t.starts_with("[deepgram speech ")),
        "{finals:?}"
    );

    let conns = deepgram.connections();
    assert_eq!(conns.len(), 2, "one connection per track: {conns:?}");
    let mut bytes: Vec<usize> = conns.iter().map(|c| c.bytes).collect();
    let mut sent = vec![report.sent_audio.len(), report.sent_agent_audio.len()];
    bytes.sort_unstable();
    sent.sort_unstable();
    assert_eq!(
        bytes, sent,
        "every μ-law byte of each track, as binary frames"
    );
    for conn in &conns {
        assert!(!conn.refused && conn.close_stream, "{conn:?}");
        for param in [
            "model=nova-3",
            "encoding=mulaw",
            "sample_rate=8000",
            "channels=1",
            "interim_results=true",
        ] {
            assert!(
                conn.query.split('&').any(|p| p == param),
                "{param} in {}",
                conn.query
            );
        }
        assert_eq!(conn.keepalives, 0, "audio flowed the whole time");
        assert!(conn.unknown_text.is_empty(), "{:?}", conn.unknown_text);
    }
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_dropped_backend_connection_is_reopened_once_and_earlier_finals_are_kept() {
    let deepgram = FakeDeepgram::spawn_with("dg-test-key", true).await;
    let mut config = Config::default();
    config.transcribe.transcribe_backend = Backend::Deepgram;
    config.transcribe.deepgram_api_key = Some("dg-test-key".into());
    config.transcribe.deepgram_url = deepgram.url();
    let app = spawn_app(config).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkreconnect")).await;
    let t = check_fork(&app, &report, &events).await;
    let speakers: Vec<Role> = finals(&events).iter().map(|(s, _)| *s).collect();
    assert_eq!(speakers, [Role::Caller, Role::Agent], "no gap: {t:#}");

    let conns = deepgram.connections();
    assert_eq!(conns.len(), 3, "one track reconnected once: {conns:?}");
    assert_eq!(conns.iter().filter(|c| c.dropped).count(), 1);
    assert_eq!(conns.iter().filter(|c| c.close_stream).count(), 2);
    let received: usize = conns.iter().map(|c| c.bytes).sum();
    let sent = report.sent_audio.len() + report.sent_agent_audio.len();
    assert!(
        received <= sent && received + 8 * 1000 > sent,
        "little audio lost in the switch"
    );
    assert_eq!(app.state.stats.errors(), 1, "the drop is counted");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_twilio_input_on_a_fork_is_counted_but_never_ends_it() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let mut opts = fork_options(&app, "CAforkhostile");
    opts.fork = Some(ForkTracks::Inbound);
    opts.agent_clips.clear();
    let media = |track: &str, payload: &str| {
        serde_json::json!({"event": "media", "streamSid": "MZx", "media": {"track": track, "payload": payload}}).to_string()
    };
    opts.inject_after_start = vec![
        Message::text("not json"),
        Message::binary(vec![1u8, 2, 3]),
        Message::text(r#"{"event":"party"}"#),
        Message::text(r#"{"event":"mark","streamSid":"MZx","mark":{"name":"m"}}"#),
        Message::text(media("sideways", "//8=")),
        Message::text(media("inbound", "***")),
    ];
    let (report, events) = fork_call(&app, opts).await;
    assert!(
        report.unexpected_messages.is_empty(),
        "{:?}",
        report.unexpected_messages
    );
    assert!(!report.closed_by_server);
    assert!(report.sent_agent_audio.is_empty(), "inbound track only");
    let speakers: Vec<Role> = finals(&events).iter().map(|(s, _)| *s).collect();
    assert_eq!(speakers, [Role::Caller]);
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );
    assert_eq!(app.state.stats.errors(), 6, "each bad message counted");
    app.shutdown().await;
}

/// A relay whose forks go to the `whisper` backend at `whisper`.
pub(crate) async fn whisper_app(whisper: &FakeWhisper) -> TestApp {
    let mut config = Config {
        openai_api_key: Some("sk-test-key".into()),
        ..Config::default()
    };
    config.transcribe.transcribe_backend = Backend::Whisper;
    config.transcribe.whisper_url = whisper.url();
    spawn_app(config).await
}

#[tokio::test]
async fn whisper_uploads_one_wav_per_utterance_and_reports_finals_only() {
    let whisper = FakeWhisper::spawn("sk-test-key").await;
    let app = whisper_app(&whisper).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkwhisper")).await;
    check_fork(&app, &report, &events).await;
    assert!(
        events.iter().all(|e| e.name() != "transcript.interim"),
        "finals only"
    );
    let finals = finals(&events);
    let speakers: Vec<Role> = finals.iter().map(|(s, _)| *s).collect();
    assert_eq!(speakers, [Role::Caller, Role::Agent], "{finals:?}");
    assert!(
        finals.iter().all(|(_, t)| t.starts_with("[whisper chunk ")),
        "{finals:?}"
    );

    let uploads = whisper.uploads();
    assert_eq!(uploads.len(), 2, "silence is never uploaded: {uploads:?}");
    for upload in &uploads {
        assert_eq!(upload.status, 200, "{upload:?}");
        assert_eq!(upload.model.as_deref(), Some("whisper-1"));
        assert_eq!(upload.response_format.as_deref(), Some("json"));
        assert_eq!(upload.filename.as_deref(), Some("chunk.wav"));
        assert_eq!(upload.file_type.as_deref(), Some("audio/wav"));
        assert_eq!(upload.format, Some((8000, 1, 16)));
        assert!((2.0..=5.0).contains(&upload.seconds), "{upload:?}");
    }
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}

#[tokio::test]
async fn whisper_finals_of_a_track_come_out_in_spoken_order_when_a_later_upload_answers_first() {
    let whisper = FakeWhisper::spawn_holding_first("sk-test-key", 2).await;
    let app = whisper_app(&whisper).await;
    let mut opts = fork_options(&app, "CAforkwhisperorder");
    opts.fork = Some(ForkTracks::Inbound);
    opts.clips = vec![clip("caller-hello.wav"), clip("caller-question.wav")];
    opts.agent_clips = Vec::new();
    let (_, events) = fork_call(&app, opts).await;

    let uploads = whisper.uploads();
    assert_eq!(uploads.len(), 2, "one upload per utterance: {uploads:?}");
    // The fake answered the second upload first; the finals still follow the speech.
    let texts: Vec<String> = finals(&events).into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].starts_with("[whisper chunk 1:"), "{texts:?}");
    assert!(texts[1].starts_with("[whisper chunk 2:"), "{texts:?}");
    let t = app.transcript("CAforkwhisperorder");
    let file: Vec<&str> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|turn| turn["text"].as_str().unwrap())
        .collect();
    assert_eq!(file, texts, "the file and the feed agree");
    app.shutdown().await;
}

#[tokio::test]
async fn a_refusing_backend_leaves_a_gap_per_track_and_the_call_still_ends_cleanly() {
    let deepgram = FakeDeepgram::spawn("the-right-key").await;
    let mut config = Config::default();
    config.transcribe.transcribe_backend = Backend::Deepgram;
    config.transcribe.deepgram_api_key = Some("a-wrong-key".into());
    config.transcribe.deepgram_url = deepgram.url();
    let app = spawn_app(config).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkrefused")).await;
    let t = check_fork(&app, &report, &events).await;

    let conns = deepgram.connections();
    assert_eq!(conns.len(), 4, "each track tries twice: {conns:?}");
    assert!(conns.iter().all(|c| c.refused));
    let mut roles: Vec<&str> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["agent", "caller"], "one gap per track: {t:#}");
    for turn in t["turns"].as_array().unwrap() {
        let text = turn["text"].as_str().unwrap();
        assert!(
            text.starts_with("[transcription unavailable from ") && text.ends_with(" UTC]"),
            "{text}"
        );
    }
    assert!(events.iter().all(|e| e.name() != "transcript.interim"));
    assert_eq!(app.state.stats.errors(), 4, "each refusal counted once");
    app.shutdown().await;
}

#[tokio::test]
async fn transcribe_call_answers_twiml_that_forks_both_tracks_and_dials_the_forward_target() {
    let mut config = Config {
        public_url: Some("https://relay.example.com".into()),
        ..Config::default()
    };
    config.transcribe.transcribe_forward_to = Some("+15550003333".into());
    let app = spawn_app(config).await;
    let request =
        Request::get("/transcribe-call?CallSid=CA1&From=%2B15550001111&To=%2B15550002222")
            .body(Body::empty())
            .unwrap();
    let (status, headers, body) = app.request(request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/xml");
    let doc = roxmltree::Document::parse(&body).unwrap();
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    assert_eq!(
        stream.attribute("url"),
        Some("wss://relay.example.com/transcription-stream")
    );
    assert_eq!(stream.attribute("track"), Some("both_tracks"));
    let from = stream
        .children()
        .find(|n| n.attribute("name") == Some("From"))
        .unwrap();
    assert_eq!(from.attribute("value"), Some("+15550001111"));
    let dial = doc.descendants().find(|n| n.has_tag_name("Dial")).unwrap();
    assert_eq!(dial.text(), Some("+15550003333"));
    app.shutdown().await;
}

#[tokio::test]
async fn forked_calls_are_counted_in_metrics_by_track_finals_and_failed_backends() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let before = app.metrics().await;
    for series in [
        r#"fork_frames_total{track="inbound"}"#,
        r#"fork_frames_total{track="outbound"}"#,
        "fork_finals_total",
        r#"fork_backend_failures_total{backend="openai"}"#,
        r#"fork_backend_failures_total{backend="deepgram"}"#,
    ] {
        assert_eq!(
            metric(&before, series),
            0.0,
            "{series} exported from start-up"
        );
    }
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkmetrics")).await;
    check_fork(&app, &report, &events).await;
    let after = app.metrics().await;
    assert_eq!(
        metric(&after, r#"fork_frames_total{track="inbound"}"#),
        (report.sent_audio.len() / 160) as f64
    );
    assert_eq!(
        metric(&after, r#"fork_frames_total{track="outbound"}"#),
        (report.sent_agent_audio.len() / 160) as f64
    );
    assert_eq!(
        metric(&after, "fork_finals_total"),
        finals(&events).len() as f64
    );
    assert_eq!(
        metric(&after, r#"fork_backend_failures_total{backend="openai"}"#),
        0.0
    );
    app.shutdown().await;

    // A backend that refuses every connection: each track gives up once, and is counted.
    let deepgram = FakeDeepgram::spawn("the-right-key").await;
    let mut config = Config::default();
    config.transcribe.transcribe_backend = Backend::Deepgram;
    config.transcribe.deepgram_api_key = Some("a-wrong-key".into());
    config.transcribe.deepgram_url = deepgram.url();
    let app = spawn_app(config).await;
    let (report, events) = fork_call(&app, fork_options(&app, "CAforkmetricsgap")).await;
    check_fork(&app, &report, &events).await;
    let after = app.metrics().await;
    assert_eq!(
        metric(&after, r#"fork_backend_failures_total{backend="deepgram"}"#),
        2.0
    );
    assert_eq!(metric(&after, "fork_finals_total"), 0.0);
    app.shutdown().await;
}
