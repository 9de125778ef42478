//! `input_audio_buffer.commit`: what is buffered becomes an item (transcribed in a transcription
//! session), too little is refused as empty, and at realtime pace a commit waits for the audio
//! appended before it.

use tokio::time::Instant;

use super::transcription::connect_as_the_relay;
use super::*;

const COMMIT: ClientEvent<'static> = ClientEvent::InputAudioBufferCommit {};

#[tokio::test]
async fn a_commit_takes_the_utterance_in_progress_and_transcribes_it() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = connect_as_the_relay(&fake).await;
    // The speaker is still talking when the client commits: no speech_stopped ever comes.
    let mut audio = silence(400);
    audio.extend(tone(1000));
    client.append(&audio).await;
    let started = client.recv().await;
    assert_eq!(started["type"], "input_audio_buffer.speech_started");
    client.send(&COMMIT).await;
    let events = client
        .recv_until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(
        types(&events),
        [
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.delta",
            "conversation.item.input_audio_transcription.completed",
        ]
    );
    assert!(
        events.iter().all(|e| e["item_id"] == started["item_id"]),
        "the commit is the utterance that started: {events:?}"
    );
    assert_eq!(events[3]["transcript"], "[speech 1.00 s]");
}

#[tokio::test]
async fn a_commit_with_less_than_100_ms_buffered_is_refused_as_empty() {
    let fake = FakeOpenAi::spawn(fast()).await.unwrap();
    let mut client = connect_as_the_relay(&fake).await;
    client.send(&COMMIT).await;
    let refused = client.expect_error("input_audio_buffer_commit_empty").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Expected at least 100ms of audio, but buffer only has 0.00ms"),
        "{refused}"
    );

    // The VAD commits the utterance after 500 ms of quiet; 40 ms more is not enough to commit.
    let mut audio = silence(400);
    audio.extend(tone(1000));
    audio.extend(silence(540));
    client.append(&audio).await;
    let events = client
        .recv_until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(events[2]["type"], "input_audio_buffer.committed");
    client.send(&COMMIT).await;
    let refused = client.expect_error("input_audio_buffer_commit_empty").await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("buffer only has 40.00ms"),
        "{refused}"
    );

    // 100 ms of silence can be committed: an item whose transcription is empty.
    client.append(&silence(60)).await;
    client.send(&COMMIT).await;
    let events = client
        .recv_until("conversation.item.input_audio_transcription.completed")
        .await;
    assert_eq!(
        types(&events),
        [
            "input_audio_buffer.committed",
            "conversation.item.input_audio_transcription.completed"
        ]
    );
    assert_eq!(events[1]["transcript"], "");
    assert_eq!(
        fake.connections()[0].errors_sent,
        ["input_audio_buffer_commit_empty"; 2]
    );
}

#[tokio::test]
async fn at_realtime_pace_a_commit_waits_for_the_audio_appended_before_it() {
    let fake = FakeOpenAi::spawn(FakeOptions {
        realtime_pace: true,
        ..fast()
    })
    .await
    .unwrap();
    let mut client = connect_as_the_relay(&fake).await;
    // 800 ms of audio in a burst, the commit right behind it: the server hears the speech start
    // about 260 ms in and commits once all 800 ms are heard, not at once.
    let mut audio = silence(200);
    audio.extend(tone(600));
    let sent = Instant::now();
    client.append(&audio).await;
    client.send(&COMMIT).await;
    let started = client.recv().await;
    assert_eq!(started["type"], "input_audio_buffer.speech_started");
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "heard at once"
    );
    let events = client
        .recv_until("conversation.item.input_audio_transcription.completed")
        .await;
    assert!(
        sent.elapsed() >= Duration::from_millis(780),
        "committed before the audio was heard: {:?}",
        sent.elapsed()
    );
    assert_eq!(events[0]["type"], "input_audio_buffer.committed");
    assert_eq!(events[0]["item_id"], started["item_id"]);
    assert_eq!(events.last().unwrap()["transcript"], "[speech 0.60 s]");
    assert_eq!(fake.connections()[0].appended_audio, audio);
}
