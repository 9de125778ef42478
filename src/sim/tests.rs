//! End-to-end tests of [`super::run`] against a tiny in-test relay on `127.0.0.1:0`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use super::{run, CallOptions, CallReport};
use crate::audio::ULAW_SILENCE;
use crate::twilio::media::TwilioCommand;

/// How the fake relay answers: `replies[i]` after clip `i` ends, and `clear` when a later clip starts.
struct Plan {
    replies: Vec<Vec<u8>>,
    clear_on_barge_in: bool,
}

/// What the fake relay saw.
struct Seen {
    messages: Vec<Value>,
    test_header: Option<String>,
}

// The handshake callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
async fn fake_relay(listener: TcpListener, plan: Plan) -> Seen {
    let (tcp, _) = listener.accept().await.unwrap();
    let mut test_header = None;
    let callback = |request: &Request, response: Response| {
        test_header = request
            .headers()
            .get("x-test")
            .map(|v| v.to_str().unwrap().to_string());
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tcp, callback)
        .await
        .unwrap();
    let (mut messages, mut stream_sid) = (Vec::new(), String::new());
    let (mut speaking, mut clip) = (false, 0usize);
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).unwrap();
        messages.push(value.clone());
        let mut replies = Vec::new();
        match value["event"].as_str().unwrap() {
            "start" => stream_sid = value["streamSid"].as_str().unwrap().to_string(),
            "media" => {
                let payload = BASE64
                    .decode(value["media"]["payload"].as_str().unwrap())
                    .unwrap();
                let speech = payload.iter().any(|&b| b != ULAW_SILENCE);
                if speech && !speaking && clip > 0 && plan.clear_on_barge_in {
                    replies.push(TwilioCommand::clear(&stream_sid).to_json());
                }
                if !speech && speaking {
                    for part in plan.replies[clip].chunks(320) {
                        let b64 = BASE64.encode(part);
                        replies.push(TwilioCommand::media(&stream_sid, &b64).to_json());
                    }
                    let name = format!("reply-{clip}");
                    replies.push(TwilioCommand::mark(&stream_sid, &name).to_json());
                    clip += 1;
                }
                speaking = speech;
            }
            _ => {}
        }
        for reply in replies {
            ws.send(Message::text(reply)).await.unwrap();
        }
    }
    Seen {
        messages,
        test_header,
    }
}

async fn call(plan: Plan, opts: impl FnOnce(String) -> CallOptions) -> (CallReport, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media-stream", listener.local_addr().unwrap());
    let server = tokio::spawn(fake_relay(listener, plan));
    let report = tokio::time::timeout(Duration::from_secs(10), run(opts(url)))
        .await
        .expect("the call ends on its own")
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the relay sees the close")
        .unwrap();
    (report, seen)
}

/// Non-silent test audio (never 0xFF).
fn tone(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8 % 100).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn a_call_sends_the_clip_plays_the_reply_echoes_the_mark_and_hangs_up() {
    let clip = tone(400, 1); // 50 ms
    let reply = tone(800, 3); // 100 ms
    let plan = Plan {
        replies: vec![reply.clone()],
        clear_on_barge_in: false,
    };
    let (report, seen) = call(plan, |url| {
        let mut opts = CallOptions::new(url, vec![clip.clone()]);
        opts.quiet_ms = 100;
        opts.reply_timeout_ms = 3000;
        opts.params = vec![("From".into(), "+15550001111".into())];
        opts.extra_headers = vec![("X-Test".into(), "yes".into())];
        opts
    })
    .await;

    let msgs = &seen.messages;
    assert_eq!(seen.test_header.as_deref(), Some("yes"));
    assert_eq!(
        msgs[0],
        serde_json::json!({"event":"connected","protocol":"Call","version":"1.0.0"})
    );
    let start = &msgs[1]["start"];
    assert_eq!(msgs[1]["event"], "start");
    assert_eq!(msgs[1]["streamSid"], report.stream_sid.as_str());
    assert_eq!(start["callSid"], report.call_sid.as_str());
    assert_eq!(start["accountSid"], report.account_sid.as_str());
    assert_eq!(start["tracks"], serde_json::json!(["inbound"]));
    assert_eq!(
        start["mediaFormat"],
        serde_json::json!({"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1})
    );
    assert_eq!(start["customParameters"]["From"], "+15550001111");
    for (sid, prefix) in [(&report.call_sid, "CA"), (&report.stream_sid, "MZ")] {
        assert!(sid.starts_with(prefix) && sid.len() == 34, "{sid}");
        assert!(sid[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
    for (i, msg) in msgs[1..].iter().enumerate() {
        assert_eq!(msg["sequenceNumber"], (i + 1).to_string(), "{msg}");
        assert_eq!(msg["streamSid"], report.stream_sid.as_str());
    }

    // Every frame is 160 bytes, numbered from 1, and together they are `sent_audio`.
    let media: Vec<&Value> = msgs.iter().filter(|m| m["event"] == "media").collect();
    let mut inbound = Vec::new();
    for (i, m) in media.iter().enumerate() {
        assert_eq!(m["media"]["chunk"], (i + 1).to_string());
        assert_eq!(m["media"]["track"], "inbound");
        assert!(m["media"]["timestamp"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok());
        let payload = BASE64
            .decode(m["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(payload.len(), 160);
        inbound.extend(payload);
    }
    assert_eq!(inbound, report.sent_audio);
    let at = inbound.iter().position(|&b| b != ULAW_SILENCE).unwrap();
    assert_eq!(at % 160, 0, "the clip starts on a frame");
    assert!(at >= 100 * 8, "the clip waits for 100 ms of quiet");
    assert_eq!(&inbound[at..at + clip.len()], &clip[..]);

    assert_eq!(report.received_audio, reply);
    assert_eq!(report.heard, reply);
    assert_eq!(report.heard_ms(), 100);
    assert_eq!((report.marks_received, report.marks_echoed), (1, 1));
    assert_eq!(report.replies_started, 1);
    assert!(report.first_audio_latency_ms.is_some_and(|ms| ms < 1000));
    assert!(!report.closed_by_server);
    assert!(
        report.unexpected_messages.is_empty(),
        "{:?}",
        report.unexpected_messages
    );

    let echo = msgs.iter().position(|m| m["event"] == "mark").unwrap();
    assert_eq!(msgs[echo]["mark"]["name"], "reply-0");
    let stop = msgs.last().unwrap();
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["stop"]["callSid"], report.call_sid.as_str());
    assert_eq!(stop["stop"]["accountSid"], report.account_sid.as_str());
    assert!(echo < msgs.len() - 1);
    assert!(report.summary().contains(&report.call_sid));
}

#[tokio::test]
async fn barge_in_gets_a_clear_that_drops_the_reply_and_echoes_its_mark() {
    let plan = Plan {
        replies: vec![tone(16_000, 3), tone(400, 5)], // 2 s, then 50 ms
        clear_on_barge_in: true,
    };
    let (report, seen) = call(plan, |url| {
        let mut opts = CallOptions::new(url, vec![tone(160, 1), tone(160, 2)]);
        opts.quiet_ms = 100;
        opts.interrupt_after_ms = Some(200);
        opts
    })
    .await;
    assert_eq!(report.clears, 1);
    assert_eq!(report.replies_started, 2);
    let at_clear = report.heard_ms_at_clear[0];
    assert!(
        (200..=260).contains(&at_clear),
        "heard {at_clear} ms at clear"
    );
    assert_eq!(report.heard_ms(), at_clear + 50);
    assert_eq!((report.marks_received, report.marks_echoed), (2, 2));
    let marks: Vec<&Value> = seen
        .messages
        .iter()
        .filter(|m| m["event"] == "mark")
        .collect();
    assert_eq!(marks[0]["mark"]["name"], "reply-0");
    assert_eq!(marks[1]["mark"]["name"], "reply-1");
    assert!(!report.closed_by_server);
}

#[tokio::test]
async fn garbage_from_the_relay_is_reported_and_a_server_close_ends_the_call() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media-stream", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        for frame in [
            Message::text("not json"),
            Message::text(r#"{"event":"clear","streamSid":"MZwrong"}"#),
            Message::binary(vec![1u8, 2, 3]),
        ] {
            ws.send(frame).await.unwrap();
        }
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
    });
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        run(CallOptions::new(url, vec![tone(160, 1)])),
    )
    .await
    .unwrap()
    .unwrap();
    server.await.unwrap();
    assert!(report.closed_by_server);
    assert_eq!(
        report.unexpected_messages.len(),
        3,
        "{:?}",
        report.unexpected_messages
    );
    assert_eq!(report.clears, 0);
}
