//! Transcription sessions (`?intent=transcription`): VAD events and interim + final text, no replies.

use super::*;
use crate::transcribe::config::TranscribeConfig;
use crate::transcribe::openai::transcription_session;

/// Connect as the relay's transcription backend does: no model, `intent=transcription`.
pub(super) async fn connect(fake: &FakeOpenAi) -> Client {
    let mut request = format!("{}?intent=transcription", fake.url())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", "Bearer sk-test".parse().unwrap());
    let ws = tokio_tungstenite::connect_async(request).await.unwrap().0;
    let mut client = Client { ws };
    let created = client.recv().await;
    assert_eq!(created["session"]["type"], "transcription", "{created}");
    assert!(created["session"].get("model").is_none(), "{created}");
    client
}

/// Connect and configure the session the relay's `openai` transcription backend sends.
pub(super) async fn connect_as_the_relay(fake: &FakeOpenAi) -> Client {
    let mut client = connect(fake).await;
    let config = TranscribeConfig {
        transcribe_language: Some("en".into()),
        ..TranscribeConfig::default()
    };
    let session = transcription_session(&config);
    client
        .send(&ClientEvent::SessionUpdate {
            session: Box::new(session),
        })
        .await;
    assert_eq!(client.recv().await["type"], "session.updated");
    client
}

#[tokio::test]
async fn transcription_sessions_send_interim_deltas_then_the_final_text_and_never_reply() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = connect_as_the_relay(&fake).await;

    for _ in 0..2 {
        let mut audio = silence(400);
        audio.extend(tone(1000));
        audio.extend(silence(700));
        client.append(&audio).await;
        let events = client
            .recv_until("conversation.item.input_audio_transcription.completed")
            .await;
        assert_eq!(
            types(&events),
            [
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed",
            ]
        );
        let item = events[0]["item_id"].as_str().unwrap();
        assert!(events.iter().all(|e| e["item_id"] == item), "{events:?}");
        let deltas: String = events[3..5]
            .iter()
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, "[speech 1.00 s]");
        assert_eq!(events[5]["transcript"], "[speech 1.00 s]");
    }
    // Nothing else follows: no response in a transcription session.
    let more = tokio::time::timeout(Duration::from_millis(300), client.ws.next()).await;
    assert!(more.is_err(), "unexpected event: {more:?}");
}
