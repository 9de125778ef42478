//! Session configuration, item creation and error handling.

use serde_json::json;

use super::*;
use crate::realtime::client::Item;
use crate::realtime::session::{
    AudioConfig, AudioFormat, AudioInput, InputTranscription, SessionKind, TurnDetection,
};
use crate::realtime::Session;

fn update_with_input(input: AudioInput) -> ClientEvent<'static> {
    ClientEvent::SessionUpdate {
        session: Box::new(Session {
            kind: SessionKind::Realtime,
            model: None,
            output_modalities: None,
            instructions: Some("Be brief.".into()),
            audio: Some(AudioConfig {
                input: Some(input),
                output: None,
            }),
            tools: None,
            tool_choice: None,
            reasoning: None,
        }),
    }
}

#[tokio::test]
async fn session_created_announces_the_model_pcmu_and_server_vad() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut ws = Client::connect_raw(&fake, None).await;
    let frame = ws.next().await.unwrap().unwrap();
    let created: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(created["type"], "session.created");
    assert_eq!(created["event_id"], "event_1");
    let session: Session = serde_json::from_value(created["session"].clone()).unwrap();
    assert_eq!(session.kind, SessionKind::Realtime);
    assert_eq!(session.model.as_deref(), Some("gpt-realtime"));
    let input = session.audio.as_ref().unwrap().input.as_ref().unwrap();
    assert_eq!(input.format, AudioFormat::pcmu());
    assert!(matches!(
        input.turn_detection,
        Some(TurnDetection::ServerVad { .. })
    ));
    let output = session.audio.as_ref().unwrap().output.as_ref().unwrap();
    assert_eq!(output.format, AudioFormat::pcmu());
}

#[tokio::test]
async fn session_update_is_merged_into_session_updated() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    client
        .send(&update_with_input(AudioInput {
            format: AudioFormat::pcmu(),
            transcription: Some(InputTranscription {
                model: "gpt-4o-mini-transcribe".into(),
                language: None,
            }),
            turn_detection: Some(TurnDetection::ServerVad {
                threshold: Some(0.7),
                prefix_padding_ms: None,
                silence_duration_ms: Some(700),
                create_response: Some(false),
                interrupt_response: None,
                idle_timeout_ms: None,
            }),
        }))
        .await;
    let updated = client.recv().await;
    assert_eq!(updated["type"], "session.updated", "{updated}");
    let session: Session = serde_json::from_value(updated["session"].clone()).unwrap();
    assert_eq!(session.instructions.as_deref(), Some("Be brief."));
    assert_eq!(session.model.as_deref(), Some("gpt-realtime"), "kept");
    let audio = session.audio.unwrap();
    let input = audio.input.unwrap();
    assert_eq!(input.transcription.unwrap().model, "gpt-4o-mini-transcribe");
    assert_eq!(
        input.turn_detection,
        Some(TurnDetection::ServerVad {
            threshold: Some(0.7),
            prefix_padding_ms: Some(300),
            silence_duration_ms: Some(700),
            create_response: Some(false),
            interrupt_response: Some(true),
            idle_timeout_ms: None,
        })
    );
    assert_eq!(
        audio.output.unwrap().voice.as_deref(),
        Some("marin"),
        "kept"
    );

    // `transcription: null` switches transcription off again.
    client
        .send_raw(
            &json!({"type": "session.update", "session": {"type": "realtime",
            "audio": {"input": {"format": {"type": "audio/pcmu"}, "transcription": null}}}})
            .to_string(),
        )
        .await;
    let updated = client.recv().await;
    let input = &updated["session"]["audio"]["input"];
    assert!(input.get("transcription").is_none(), "{updated}");
    assert_eq!(input["turn_detection"]["silence_duration_ms"], 700, "kept");
}

#[tokio::test]
async fn session_update_without_pcmu_or_type_is_refused() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    client
        .send(&update_with_input(AudioInput {
            format: AudioFormat {
                kind: "audio/pcm".into(),
            },
            transcription: None,
            turn_detection: None,
        }))
        .await;
    let error = client.expect_error("invalid_value").await;
    assert_eq!(error["error"]["param"], "session.audio.input.format.type");
    client
        .send_raw(r#"{"type":"session.update","event_id":"ev_1","session":{"instructions":"x"}}"#)
        .await;
    let error = client.expect_error("missing_required_parameter").await;
    assert_eq!(error["error"]["param"], "session.type");
    assert_eq!(error["error"]["event_id"], "ev_1");
    let codes = &fake.connections()[0].errors_sent;
    assert_eq!(codes, &["invalid_value", "missing_required_parameter"]);
}

#[tokio::test]
async fn unknown_and_malformed_events_get_errors_and_the_connection_stays_open() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    client.send_raw("this is not json").await;
    client.expect_error("invalid_json").await;
    client.send_raw(r#"{"type":"response.audio.delta"}"#).await;
    client.expect_error("unknown_event").await;
    client.send(&ClientEvent::ResponseCancel {}).await;
    client.expect_error("response_cancel_not_active").await;
    client
        .send(&update_with_input(AudioInput {
            format: AudioFormat::pcmu(),
            transcription: None,
            turn_detection: None,
        }))
        .await;
    assert_eq!(client.recv().await["type"], "session.updated");
    let log = &fake.connections()[0];
    assert_eq!(log.client_events.len(), 3, "invalid JSON is not an event");
    assert_eq!(log.client_events[0]["type"], "response.audio.delta");
}

#[tokio::test]
async fn function_call_output_is_acknowledged_without_a_response() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    let item = Item::FunctionCallOutput {
        call_id: "call_1".into(),
        output: r#"{"ok":true}"#.into(),
    };
    client
        .send(&ClientEvent::ConversationItemCreate { item })
        .await;
    let added = client.recv().await;
    assert_eq!(added["type"], "conversation.item.added", "{added}");
    assert_eq!(added["item"]["type"], "function_call_output");
    assert_eq!(added["item"]["call_id"], "call_1");
    assert_eq!(added["item"]["id"], "item_1");
    assert_eq!(client.recv().await["type"], "conversation.item.done");
    // No response started: cancelling finds none.
    client.send(&ClientEvent::ResponseCancel {}).await;
    client.expect_error("response_cancel_not_active").await;
}
