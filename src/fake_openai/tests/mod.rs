//! Tests of the Realtime stand-in, driven by a tokio-tungstenite client over real sockets.

mod commit;
mod session_events;
mod transcription;
mod transport;
mod turns;

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{FakeOpenAi, FakeOptions, Mode};
use crate::audio::{encode, BYTES_PER_MS, FRAME_BYTES, ULAW_SILENCE};
use crate::realtime::ClientEvent;

/// Upper bound for any single expected event; never reached when things work.
const WAIT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 from the stand-in")
}

/// `ms` of a 440 Hz sine at amplitude 8000, μ-law.
fn tone(ms: usize) -> Vec<u8> {
    let pcm: Vec<i16> = (0..ms * BYTES_PER_MS)
        .map(|n| (8000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16)
        .collect();
    encode(&pcm)
}

fn silence(ms: usize) -> Vec<u8> {
    vec![ULAW_SILENCE; ms * BYTES_PER_MS]
}

fn fast() -> FakeOptions {
    FakeOptions {
        pace: 1000.0,
        ..FakeOptions::default()
    }
}

/// The `type` of every event.
fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?"))
        .collect()
}

/// All audio of the `response.output_audio.delta` events, decoded.
fn delta_audio(events: &[Value]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e["type"] == "response.output_audio.delta")
        .flat_map(|e| unb64(e["delta"].as_str().expect("delta is a string")))
        .collect()
}

fn first<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {:?}", types(events)))
}

/// A Realtime client as the relay would be: `?model=gpt-realtime`, a bearer key.
struct Client {
    ws: Ws,
}

impl Client {
    async fn connect_raw(fake: &FakeOpenAi, extra_header: Option<(&'static str, &str)>) -> Ws {
        let mut request = format!("{}?model=gpt-realtime", fake.url())
            .into_client_request()
            .unwrap();
        let headers = request.headers_mut();
        headers.insert("Authorization", "Bearer sk-test".parse().unwrap());
        if let Some((name, value)) = extra_header {
            headers.insert(name, value.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request).await.unwrap().0
    }

    /// Connect and read `session.created`.
    async fn connect(fake: &FakeOpenAi) -> Client {
        let mut client = Client {
            ws: Self::connect_raw(fake, None).await,
        };
        let created = client.recv().await;
        assert_eq!(created["type"], "session.created", "{created}");
        client
    }

    async fn send(&mut self, event: &ClientEvent<'_>) {
        self.send_raw(&event.to_json()).await;
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Append μ-law audio in 20 ms frames, as the relay passes Twilio's frames on.
    async fn append(&mut self, ulaw: &[u8]) {
        for frame in ulaw.chunks(FRAME_BYTES) {
            let event = ClientEvent::InputAudioBufferAppend {
                audio: b64(frame).into(),
            };
            self.ws.feed(Message::text(event.to_json())).await.unwrap();
        }
        self.ws.flush().await.unwrap();
    }

    /// The next server event.
    async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a server event in time")
                .expect("socket open")
                .expect("a frame");
            if let Message::Text(text) = frame {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                assert!(
                    event["event_id"]
                        .as_str()
                        .is_some_and(|id| id.starts_with("event_")),
                    "{event}"
                );
                return event;
            }
        }
    }

    /// Every event up to and including the first of type `kind`.
    async fn recv_until(&mut self, kind: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let event = self.recv().await;
            let done = event["type"] == kind;
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Expect an `error` event with `code` next.
    async fn expect_error(&mut self, code: &str) -> Value {
        let event = self.recv().await;
        assert_eq!(event["type"], "error", "{event}");
        assert_eq!(event["error"]["code"], code, "{event}");
        assert_eq!(event["error"]["type"], "invalid_request_error", "{event}");
        event
    }
}

#[test]
fn scripted_tool_calls_parse_from_the_command_line_as_given() {
    let call = super::parse_tool_call(r#"lookup_order={"order_id": 427}"#).unwrap();
    assert_eq!(call.name, "lookup_order");
    assert_eq!(
        call.arguments, r#"{"order_id": 427}"#,
        "kept as given, even invalid"
    );
    let eq = super::parse_tool_call("f=a=b").unwrap();
    assert_eq!((eq.name.as_str(), eq.arguments.as_str()), ("f", "a=b"));
    assert!(super::parse_tool_call("no_arguments").is_err());
    assert!(super::parse_tool_call("={}").is_err());
}
