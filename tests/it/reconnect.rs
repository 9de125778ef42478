//! The Realtime API dropping mid-call: one reconnect with the conversation so far, or the
//! fallback when that fails too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, metric, spawn_app};

/// What a scripted upstream saw, per connection.
#[derive(Default)]
struct Seen {
    connections: Vec<Vec<Value>>,
}

/// A Realtime stand-in that answers its first connection with one caller transcript and then
/// drops the socket; later connections (while `accept_more`) acknowledge `session.update` and
/// record what they get.
async fn flaky_upstream(accept_more: bool) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((tcp, _)) = listener.accept().await {
            n += 1;
            if n > 1 && !accept_more {
                return; // the listener is dropped: the reconnect is refused
            }
            let index = {
                let mut s = seen2.lock().unwrap();
                s.connections.push(Vec::new());
                s.connections.len() - 1
            };
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let mut appends = 0;
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap();
                    let kind = event["type"].as_str().unwrap_or("").to_string();
                    seen.lock().unwrap().connections[index].push(event);
                    if kind == "session.update" {
                        let ack =
                            json!({"type": "session.updated", "session": {"type": "realtime"}});
                        ws.send(Message::text(ack.to_string())).await.unwrap();
                    }
                    if kind == "input_audio_buffer.append" {
                        appends += 1;
                        if index == 0 && appends == 25 {
                            for e in [
                                json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": "item_a"}),
                                json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_a", "content_index": 0, "transcript": "I need a table for two"}),
                            ] {
                                ws.send(Message::text(e.to_string())).await.unwrap();
                            }
                        }
                        if index == 0 && appends == 50 {
                            return; // drop the socket without a close frame
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

/// A relay with a dummy key, bridging to the scripted upstream at `url`; `tweak` adjusts the rest.
async fn relay_to(url: String, tweak: impl FnOnce(&mut Config)) -> crate::support::TestApp {
    let mut config = Config {
        openai_api_key: Some("sk-test".into()),
        openai_realtime_url: url,
        ..Config::default()
    };
    tweak(&mut config);
    spawn_app(config).await
}

#[tokio::test]
async fn a_dropped_upstream_is_reconnected_once_with_the_conversation_so_far() {
    let (url, seen) = flaky_upstream(true).await;
    let app = relay_to(url, |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.reply_timeout_ms = 500; // the scripted upstream never replies
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;

    assert!(!report.closed_by_server, "the caller never noticed");
    let connections = std::mem::take(&mut seen.lock().unwrap().connections);
    assert_eq!(connections.len(), 2);
    let second = &connections[1];
    assert_eq!(second[0]["type"], "session.update");
    assert_eq!(second[1]["type"], "conversation.item.create");
    assert_eq!(second[1]["item"]["role"], "system");
    let seed = second[1]["item"]["content"][0]["text"].as_str().unwrap();
    assert!(seed.contains("Caller: I need a table for two"), "{seed}");
    assert!(
        second
            .iter()
            .skip(2)
            .any(|e| e["type"] == "input_audio_buffer.append"),
        "audio flows again"
    );

    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up");
    assert_eq!(t["upstream_reconnects"], 1);
    assert_eq!(t["turns"][0]["text"], "I need a table for two");
    app.shutdown().await;
}

#[tokio::test]
async fn when_the_reconnect_fails_too_the_stream_closes_so_twilio_plays_the_fallback() {
    let (url, seen) = flaky_upstream(false).await;
    let app = relay_to(url, |c| c.openai_connect_timeout_ms = 2000).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.reply_timeout_ms = 500;
    let report = tokio::time::timeout(Duration::from_secs(20), sim::run(opts))
        .await
        .expect("the call ends")
        .unwrap();
    app.calls_finished().await;
    assert!(report.closed_by_server);
    assert_eq!(seen.lock().unwrap().connections.len(), 1);
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "upstream_error");
    assert_eq!(
        t["turns"][0]["text"], "I need a table for two",
        "nothing already heard is lost"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, r#"errors_total{kind="upstream_socket"}"#),
        1.0
    );
    assert_eq!(
        metric(&metrics, r#"errors_total{kind="upstream_connect"}"#),
        1.0
    );
    app.shutdown().await;
}

/// How one connection of [`quiet_upstream`] behaves.
#[derive(Clone, Copy, PartialEq)]
enum Quiet {
    /// Accepts the socket and never says anything.
    Mute,
    /// Confirms the session, starts a response on the first audio, then goes silent.
    StallMidResponse,
    /// Confirms the session and listens.
    Listen,
    /// Confirms the session and answers the first audio with one audio delta of this many
    /// μ-law bytes.
    OneDelta(usize),
}

/// A Realtime stand-in whose n-th connection behaves as `script[n]` (the last entry repeats).
async fn quiet_upstream(script: Vec<Quiet>) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/v1/realtime", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let index = {
                let mut s = seen2.lock().unwrap();
                s.connections.push(Vec::new());
                s.connections.len() - 1
            };
            let mode = script[index.min(script.len() - 1)];
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                let mut responded = false;
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    let event: Value = serde_json::from_str(text.as_str()).unwrap();
                    let kind = event["type"].as_str().unwrap_or("").to_string();
                    seen.lock().unwrap().connections[index].push(event);
                    if mode == Quiet::Mute {
                        continue;
                    }
                    let mut out = Vec::new();
                    if kind == "session.update" {
                        out.push(
                            json!({"type": "session.updated", "session": {"type": "realtime"}}),
                        );
                    }
                    if kind == "input_audio_buffer.append" && !responded {
                        let delta = match mode {
                            Quiet::StallMidResponse => Some("//8=".to_string()),
                            Quiet::OneDelta(bytes) => Some(BASE64.encode(vec![0x55u8; bytes])),
                            _ => None,
                        };
                        if let Some(delta) = delta {
                            responded = true;
                            out.push(json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}));
                            out.push(json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0, "delta": delta}));
                        }
                    }
                    for e in out {
                        if ws.send(Message::text(e.to_string())).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn an_upstream_that_never_confirms_the_session_gets_one_retry_then_the_caller_hears_the_fallback(
) {
    let (url, seen) = quiet_upstream(vec![Quiet::Mute]).await;
    let app = relay_to(url, |c| c.openai_connect_timeout_ms = 700).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.max_call_ms = 20_000;
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;
    assert!(
        report.closed_by_server,
        "the stream closed: Twilio plays the fallback"
    );
    assert!(!report.hit_call_limit, "long before the caller gave up");
    assert_eq!(seen.lock().unwrap().connections.len(), 2, "one reconnect");
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "upstream_error"
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, r#"errors_total{kind="upstream_timeout"}"#),
        2.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_response_that_stalls_is_a_failed_session_and_the_call_reconnects() {
    let (url, seen) = quiet_upstream(vec![Quiet::StallMidResponse, Quiet::Listen]).await;
    let app = relay_to(url, |c| c.openai_stall_timeout_ms = 700).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.reply_timeout_ms = 3_000;
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;
    assert!(
        !report.closed_by_server,
        "the call went on after the reconnect"
    );
    let connections = std::mem::take(&mut seen.lock().unwrap().connections);
    assert_eq!(connections.len(), 2);
    assert!(connections[1]
        .iter()
        .any(|e| e["type"] == "input_audio_buffer.append"));
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["upstream_reconnects"], 1);
    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, r#"errors_total{kind="upstream_timeout"}"#),
        1.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_long_audio_delta_reaches_twilio_whole_in_twilio_sized_messages() {
    let (url, _seen) = quiet_upstream(vec![Quiet::OneDelta(80_000)]).await;
    let app = relay_to(url, |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.max_call_ms = 4_000;
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;
    assert_eq!(
        report.received_audio,
        vec![0x55u8; 80_000],
        "all 10 s of it"
    );
    assert!(
        report.largest_media_bytes <= 12_000,
        "split into messages of at most 1.5 s: {}",
        report.largest_media_bytes
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_upstream_message_over_1_mib_ends_that_session_and_the_call_reconnects() {
    let (url, seen) = quiet_upstream(vec![Quiet::OneDelta(1 << 20), Quiet::Listen]).await;
    let app = relay_to(url, |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.reply_timeout_ms = 2_000;
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;
    assert!(
        report.received_audio.is_empty(),
        "nothing of the oversized message was played"
    );
    assert!(!report.closed_by_server, "the call went on");
    assert_eq!(seen.lock().unwrap().connections.len(), 2);
    assert_eq!(app.transcript(&report.call_sid)["upstream_reconnects"], 1);
    app.shutdown().await;
}
