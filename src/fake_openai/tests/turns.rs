//! Caller turns, responses, barge-in and truncation.

use super::*;
use crate::realtime::session::{AudioConfig, AudioFormat, AudioInput, InputTranscription};
use crate::realtime::session::{SessionKind, TurnDetection};
use crate::realtime::Session;

/// Switch on transcription (and set `interrupt_response`); wait for `session.updated`.
async fn configure(client: &mut Client, interrupt_response: bool) {
    let session = Session {
        kind: SessionKind::Realtime,
        model: None,
        output_modalities: None,
        instructions: None,
        audio: Some(AudioConfig {
            input: Some(AudioInput {
                format: AudioFormat::pcmu(),
                transcription: Some(InputTranscription {
                    model: "gpt-4o-mini-transcribe".into(),
                    language: None,
                }),
                turn_detection: Some(TurnDetection::ServerVad {
                    threshold: None,
                    prefix_padding_ms: None,
                    silence_duration_ms: None,
                    create_response: None,
                    interrupt_response: Some(interrupt_response),
                    idle_timeout_ms: None,
                }),
            }),
            output: None,
        }),
        tools: None,
        tool_choice: None,
        reasoning: None,
    };
    let update = ClientEvent::SessionUpdate {
        session: Box::new(session),
    };
    client.send(&update).await;
    assert_eq!(client.recv().await["type"], "session.updated");
}

/// 800 ms silence, 1 s tone, 1 s silence: one caller turn and its parroted reply.
async fn parrot_turn(client: &mut Client) -> Vec<Value> {
    let mut audio = silence(800);
    audio.extend(tone(1000));
    audio.extend(silence(1000));
    client.append(&audio).await;
    client.recv_until("response.done").await
}

#[tokio::test]
async fn caller_turn_is_detected_transcribed_and_parroted() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    configure(&mut client, true).await;
    let events = parrot_turn(&mut client).await;
    let kinds = types(&events);
    let mut expected = vec![
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
    ];
    expected.extend(["response.output_audio.delta"; 9]);
    expected.extend([
        "response.output_audio_transcript.done",
        "response.output_audio.done",
        "response.output_item.done",
        "response.done",
    ]);
    assert_eq!(kinds, expected);

    let started = first(&events, "input_audio_buffer.speech_started");
    assert_eq!(
        started["audio_start_ms"],
        800 - 300,
        "start minus prefix padding"
    );
    let user_item = started["item_id"].as_str().unwrap();
    let stopped = first(&events, "input_audio_buffer.speech_stopped");
    assert_eq!(
        stopped["audio_end_ms"],
        800 + 1000 + 500,
        "includes the silence"
    );
    assert_eq!(stopped["item_id"], user_item);
    let committed = first(&events, "input_audio_buffer.committed");
    assert_eq!(committed["item_id"], user_item);
    assert!(committed["previous_item_id"].is_null());
    let transcribed = first(
        &events,
        "conversation.item.input_audio_transcription.completed",
    );
    assert_eq!(transcribed["transcript"], "[caller speech 1.00 s]");
    assert_eq!(transcribed["item_id"], user_item);

    let created = first(&events, "response.created");
    assert_eq!(created["response"]["status"], "in_progress");
    let response_id = created["response"]["id"].as_str().unwrap();
    let delta = first(&events, "response.output_audio.delta");
    assert_eq!(delta["response_id"], response_id);
    assert_eq!(
        (&delta["output_index"], &delta["content_index"]),
        (&0.into(), &0.into())
    );
    assert_eq!(
        unb64(delta["delta"].as_str().unwrap()).len(),
        800,
        "100 ms chunks"
    );
    assert_eq!(
        delta_audio(&events),
        tone(1000),
        "the reply replays the caller"
    );
    let transcript = first(&events, "response.output_audio_transcript.done");
    assert_eq!(transcript["transcript"], "You said: [caller speech 1.00 s]");
    let done = first(&events, "response.done");
    assert_eq!(done["response"]["id"], response_id);
    assert_eq!(done["response"]["status"], "completed");

    let ids: std::collections::HashSet<_> = events.iter().map(|e| e["event_id"].clone()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");
    let recorded = fake
        .wait_for(WAIT, |logs| {
            logs[0].appended_audio.len() == 2800 * BYTES_PER_MS
        })
        .await;
    assert!(recorded);
    assert_eq!(fake.connections()[0].sent_audio, tone(1000));
}

#[tokio::test]
async fn truncate_is_checked_against_the_audio_generated() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    configure(&mut client, true).await;
    let events = parrot_turn(&mut client).await;
    let item_id = first(&events, "response.output_audio.delta")["item_id"]
        .as_str()
        .unwrap()
        .to_string();
    let truncate = |item_id: &str, audio_end_ms| ClientEvent::ConversationItemTruncate {
        item_id: item_id.to_string().into(),
        content_index: 0,
        audio_end_ms,
    };
    client.send(&truncate(&item_id, 1500)).await;
    let error = client.expect_error("invalid_value").await;
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("exceeds the audio length"), "{message}");
    client.send(&truncate(&item_id, 400)).await;
    let truncated = client.recv().await;
    assert_eq!(
        truncated["type"], "conversation.item.truncated",
        "{truncated}"
    );
    assert_eq!(truncated["item_id"], item_id.as_str());
    assert_eq!(truncated["audio_end_ms"], 400);
    client.send(&truncate("item_999", 100)).await;
    client.expect_error("invalid_value").await;

    let log = &fake.connections()[0];
    let expected = [
        (item_id.clone(), 1500),
        (item_id, 400),
        ("item_999".into(), 100),
    ];
    assert_eq!(log.truncates, expected);
    assert_eq!(log.errors_sent, ["invalid_value", "invalid_value"]);
}

#[tokio::test]
async fn greeting_gets_an_audible_tone_with_the_item_text() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = Client::connect(&fake).await;
    client
        .send(&ClientEvent::user_text("Greet the caller."))
        .await;
    client.send(&ClientEvent::ResponseCreate {}).await;
    let events = client.recv_until("response.done").await;
    assert_eq!(
        types(&events)[..2],
        ["conversation.item.added", "conversation.item.done"]
    );
    assert_eq!(events[0]["item"]["role"], "user");
    let transcript = first(&events, "response.output_audio_transcript.done");
    assert_eq!(transcript["transcript"], "(greeting) Greet the caller.");
    let audio = delta_audio(&events);
    assert_eq!(audio.len(), 1200 * BYTES_PER_MS);
    assert!(audio
        .chunks(FRAME_BYTES)
        .all(|w| crate::audio::rms(w) > 2000.0));
    assert_eq!(
        first(&events, "response.done")["response"]["status"],
        "completed"
    );
}

#[tokio::test]
async fn caller_speech_during_a_response_cancels_it() {
    let fake = FakeOpenAi::spawn(FakeOptions {
        pace: 1.0,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(&fake).await;
    client
        .send(&ClientEvent::user_text("Greet the caller."))
        .await;
    client.send(&ClientEvent::ResponseCreate {}).await;
    client.recv_until("response.created").await;
    client.append(&tone(200)).await;
    let events = client.recv_until("response.done").await;
    let kinds = types(&events);
    let started = kinds
        .iter()
        .position(|k| *k == "input_audio_buffer.speech_started");
    assert!(started.is_some_and(|i| i < kinds.len() - 1), "{kinds:?}");
    assert_eq!(events.last().unwrap()["response"]["status"], "cancelled");
    assert!(!kinds.contains(&"response.output_audio.done"), "{kinds:?}");
    // Nothing more is streamed: the next event answers the next request.
    client.send(&ClientEvent::ResponseCancel {}).await;
    client.expect_error("response_cancel_not_active").await;
    assert!(fake.connections()[0].sent_audio.len() < 1200 * BYTES_PER_MS);
}

#[tokio::test]
async fn speech_does_not_cancel_when_interrupt_response_is_off() {
    // 600 ms of response: long enough for the speech to land inside it.
    let fake = FakeOpenAi::spawn(FakeOptions {
        pace: 2.0,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(&fake).await;
    configure(&mut client, false).await;
    client.send(&ClientEvent::ResponseCreate {}).await;
    client.recv_until("response.created").await;
    client.append(&tone(200)).await;
    let events = client.recv_until("response.done").await;
    assert!(types(&events).contains(&"input_audio_buffer.speech_started"));
    assert_eq!(events.last().unwrap()["response"]["status"], "completed");
    assert_eq!(delta_audio(&events).len(), 1200 * BYTES_PER_MS);
}

#[tokio::test]
async fn response_cancel_stops_the_response_in_flight() {
    let fake = FakeOpenAi::spawn(FakeOptions {
        pace: 1.0,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let mut client = Client::connect(&fake).await;
    client.send(&ClientEvent::ResponseCreate {}).await;
    let created = client.recv_until("response.created").await;
    let id = created.last().unwrap()["response"]["id"].clone();
    client.send(&ClientEvent::ResponseCancel {}).await;
    let done = client.recv_until("response.done").await;
    assert_eq!(done.last().unwrap()["response"]["id"], id);
    assert_eq!(done.last().unwrap()["response"]["status"], "cancelled");
    client.send(&ClientEvent::ResponseCancel {}).await;
    client.expect_error("response_cancel_not_active").await;
}
