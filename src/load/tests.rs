//! End to end: the generator against an in-test WebSocket server that plays relay and echo stand-in
//! at once, answering each `media` with a Twilio `media` (same payload) and a `mark`.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use super::{run, LoadOptions};
use crate::twilio::media::{TwilioCommand, TwilioEvent};

/// What the echo server saw, over all calls.
#[derive(Default)]
struct Seen {
    media: AtomicU64,
    marks_echoed: AtomicU64,
    stops: AtomicU64,
}

async fn echo_server(seen: Arc<Seen>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(echo_call(tcp, seen.clone()));
        }
    });
    format!("ws://{addr}/media-stream")
}

async fn echo_call(tcp: TcpStream, seen: Arc<Seen>) {
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    let mut stream_sid = String::new();
    let mut chunks = 0u64;
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else {
            continue;
        };
        match serde_json::from_str::<TwilioEvent>(text.as_str()).unwrap() {
            TwilioEvent::Start {
                stream_sid: sid,
                start,
                ..
            } => stream_sid = sid.map_or(start.stream_sid, Cow::into_owned),
            TwilioEvent::Media { media, .. } => {
                seen.media.fetch_add(1, Ordering::Relaxed);
                chunks += 1;
                let name = format!("item_1@{}", chunks * 20);
                let media = TwilioCommand::media(&stream_sid, &media.payload).to_json();
                let mark = TwilioCommand::mark(&stream_sid, &name).to_json();
                ws.feed(Message::text(media)).await.unwrap();
                ws.send(Message::text(mark)).await.unwrap();
            }
            TwilioEvent::Mark { mark, .. } => {
                assert!(mark.name.starts_with("item_1@"), "{}", mark.name);
                seen.marks_echoed.fetch_add(1, Ordering::Relaxed);
            }
            TwilioEvent::Stop { .. } => {
                seen.stops.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tagged_frame_comes_back_and_every_mark_is_echoed() {
    let seen = Arc::new(Seen::default());
    let url = echo_server(seen.clone()).await;
    let mut opts = LoadOptions::new(url, 2, 1.0);
    opts.workers = 2;
    let report = tokio::time::timeout(Duration::from_secs(10), run(opts))
        .await
        .expect("the run ends on its own")
        .unwrap();

    assert_eq!(
        (
            report.calls_connected,
            report.calls_failed,
            report.calls_dropped
        ),
        (2, 0, 0)
    );
    assert_eq!(report.frames_sent, 100, "2 calls × 50 frames");
    assert_eq!(seen.media.load(Ordering::Relaxed), 100);
    assert_eq!(report.frames_received, 100);
    assert_eq!(report.frames_lost, 0);
    assert_eq!((report.frames_corrupt, report.frames_duplicated), (0, 0));
    assert_eq!(report.rtt.samples, 100);
    assert!(
        report.rtt.p50_ms > 0.0 && report.rtt.max_ms < 1000.0,
        "{:?}",
        report.rtt
    );
    assert_eq!(report.marks_received + report.marks_after_stop, 100);
    assert_eq!(report.marks_echoed, report.marks_received);
    assert_eq!(
        seen.marks_echoed.load(Ordering::Relaxed),
        report.marks_echoed
    );
    assert!(report.marks_echoed >= 98, "{}", report.marks_echoed);
    assert_eq!(seen.stops.load(Ordering::Relaxed), 2);
    assert_eq!(report.unexpected_messages, 0);
    assert!(report.window.is_none(), "a 1 s run has no CPU window");
}

#[tokio::test]
async fn calls_that_cannot_connect_are_counted_not_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let report = run(LoadOptions::new(
        format!("ws://{addr}/media-stream"),
        2,
        0.1,
    ))
    .await
    .unwrap();
    assert_eq!((report.calls_connected, report.calls_failed), (0, 2));
    assert_eq!(report.frames_sent, 0);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0].starts_with("2× connecting to"),
        "{:?}",
        report.errors
    );
}

#[test]
fn invalid_options_are_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for opts in [
        LoadOptions::new("ws://127.0.0.1:9/x", 0, 1.0),
        LoadOptions::new("ws://127.0.0.1:9/x", 1, 0.0),
        LoadOptions {
            ramp: -1.0,
            ..LoadOptions::new("ws://127.0.0.1:9/x", 1, 1.0)
        },
    ] {
        assert!(runtime.block_on(run(opts)).is_err());
    }
}
