//! Upgrades, refusals, echo-frames mode, recording and shutdown.

use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::CancellationToken;

use super::*;

#[tokio::test]
async fn echo_frames_echoes_every_payload_bit_exact() {
    let opts = FakeOptions {
        mode: Mode::EchoFrames,
        ..FakeOptions::default()
    };
    let fake = FakeOpenAi::spawn(opts).await.unwrap();
    let mut client = Client::connect(&fake).await;
    let mut ids = Vec::new();
    for n in 0..5u8 {
        let frame: Vec<u8> = (0..FRAME_BYTES)
            .map(|i| (i as u8).wrapping_mul(n + 7))
            .collect();
        let payload = b64(&frame);
        client
            .send(&ClientEvent::InputAudioBufferAppend {
                audio: payload.as_str().into(),
            })
            .await;
        let echo = client.recv().await;
        assert_eq!(echo["type"], "response.output_audio.delta", "{echo}");
        assert_eq!(echo["delta"], payload.as_str());
        ids.push((echo["response_id"].clone(), echo["item_id"].clone()));
    }
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "one response/item per connection"
    );
    // The echoed audio counts as generated for truncation: 5 × 20 ms.
    let item_id = ids[0].1.as_str().unwrap().to_string();
    let truncate = ClientEvent::ConversationItemTruncate {
        item_id: item_id.into(),
        content_index: 0,
        audio_end_ms: 100,
    };
    client.send(&truncate).await;
    assert_eq!(client.recv().await["type"], "conversation.item.truncated");
    let log = &fake.connections()[0];
    assert!(log.appended_audio.is_empty() && log.sent_audio.is_empty());
    assert_eq!(log.client_events.len(), 1, "only the truncate is recorded");
}

#[tokio::test]
async fn reject_status_fails_the_upgrade_with_that_status_and_a_json_error() {
    let opts = FakeOptions {
        reject_status: Some(401),
        ..FakeOptions::default()
    };
    let fake = FakeOpenAi::spawn(opts).await.unwrap();
    let url = format!("{}?model=gpt-realtime", fake.url());
    let Err(WsError::Http(response)) = tokio_tungstenite::connect_async(url).await else {
        panic!("the upgrade should be refused with an HTTP response");
    };
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let refused = fake
        .wait_for(WAIT, |logs| logs.len() == 1 && logs[0].closed)
        .await;
    assert!(refused);
    let log = &fake.connections()[0];
    assert_eq!(log.path_and_query, "/v1/realtime?model=gpt-realtime");
    assert_eq!(log.errors_sent, ["invalid_api_key"]);
}

#[tokio::test]
async fn beta_header_gets_beta_api_shape_disabled_and_a_close() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client {
        ws: Client::connect_raw(&fake, Some(("OpenAI-Beta", "realtime=v1"))).await,
    };
    client.expect_error("beta_api_shape_disabled").await;
    let end = tokio::time::timeout(WAIT, client.ws.next()).await.unwrap();
    assert!(matches!(end, None | Some(Ok(Message::Close(_)))), "{end:?}");
    assert!(fake.wait_for(WAIT, |logs| logs[0].closed).await);
}

#[tokio::test]
async fn connections_record_path_authorization_events_and_close() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    client.append(&tone(40)).await;
    client.send(&ClientEvent::InputAudioBufferClear {}).await;
    assert_eq!(client.recv().await["type"], "input_audio_buffer.cleared");
    client.ws.close(None).await.unwrap();
    assert!(fake.wait_for(WAIT, |logs| logs[0].closed).await);
    let log = &fake.connections()[0];
    assert_eq!(log.path_and_query, "/v1/realtime?model=gpt-realtime");
    assert_eq!(log.authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(
        types(&log.client_events),
        [
            "input_audio_buffer.append",
            "input_audio_buffer.append",
            "input_audio_buffer.clear"
        ]
    );
    assert_eq!(log.appended_audio, tone(40));
}

#[tokio::test]
async fn serve_closes_connections_and_returns_on_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(super::super::serve(listener, fast(), shutdown.clone()));
    let url = format!("ws://{addr}/v1/realtime?model=gpt-realtime");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let created = ws.next().await.unwrap().unwrap();
    assert!(created.to_text().unwrap().contains("session.created"));
    shutdown.cancel();
    let end = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert!(matches!(end, None | Some(Ok(Message::Close(_)))), "{end:?}");
    tokio::time::timeout(WAIT, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_frames_serves_many_connections_at_once() {
    let opts = FakeOptions {
        mode: Mode::EchoFrames,
        ..FakeOptions::default()
    };
    let fake = FakeOpenAi::spawn(opts).await.unwrap();
    let calls = (0..100u8).map(|n| {
        let fake = fake.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(&fake).await;
            let frame = vec![n; FRAME_BYTES];
            client.append(&frame.repeat(10)).await;
            for _ in 0..10 {
                let echo = client.recv().await;
                assert_eq!(unb64(echo["delta"].as_str().unwrap()), frame);
            }
        })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap();
    }
    assert_eq!(fake.connections().len(), 100);
}
