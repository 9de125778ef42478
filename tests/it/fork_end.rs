//! The end of a forked call: whatever was said before Twilio's `stop` reaches the transcript,
//! whichever backend transcribes it and however far behind the audio it is.

use base64::Engine;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::audio::{BYTES_PER_MS, FRAME_BYTES, ULAW_SILENCE};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim::{CallOptions, CallReport};
use twilio_realtime_relay::transcribe::Backend;
use twilio_realtime_relay::transcript::Role;

use crate::fake_deepgram::FakeDeepgram;
use crate::fake_whisper::FakeWhisper;
use crate::fork::{check_fork, finals, fork_call, fork_options, whisper_app};
use crate::support::{clip, spawn_app, spawn_with_fake, TestApp};

/// When [`hang_up_mid_sentence`] hangs up, ms after `start`: the caller's clip plays from 600 ms
/// to 3.48 s, the agent's (2.19 s) from 4.08 s, so the agent is 1.1 s into it.
const HANG_UP_AT_MS: u64 = 5_200;

/// [`fork_options`], hung up while the agent is still talking.
fn hang_up_mid_sentence(app: &TestApp, call_sid: &str) -> CallOptions {
    let mut opts = fork_options(app, call_sid);
    opts.max_call_ms = HANG_UP_AT_MS;
    opts
}

/// [`check_fork`] for a call hung up by [`hang_up_mid_sentence`] (the simulator's call limit is
/// how it hangs up early; that is not a failure here).
async fn check_hung_up_fork(app: &TestApp, report: &CallReport, events: &[CallEvent]) -> Value {
    assert!(report.hit_call_limit, "hung up at {HANG_UP_AT_MS} ms");
    let report = CallReport {
        hit_call_limit: false,
        ..report.clone()
    };
    check_fork(app, &report, events).await
}

fn silence(ms: usize) -> Vec<u8> {
    vec![ULAW_SILENCE; ms * BYTES_PER_MS]
}

/// `lead` ms of quiet, `first`, 700 ms of quiet, `second`: two utterances.
fn two_utterances(lead: usize, first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut audio = silence(lead);
    audio.extend(first);
    audio.extend(silence(700));
    audio.extend(second);
    audio
}

/// Twilio `media` frames (20 ms) carrying `inbound` and `outbound` side by side, as a fork of
/// both tracks sends them; the shorter track is padded with quiet.
fn both_tracks(inbound: &[u8], outbound: &[u8]) -> Vec<Message> {
    let len = inbound.len().max(outbound.len());
    let padded = |audio: &[u8]| {
        let mut audio = audio.to_vec();
        audio.resize(len, ULAW_SILENCE);
        audio
    };
    let (inbound, outbound) = (padded(inbound), padded(outbound));
    let media = |track: &str, ulaw: &[u8]| {
        let payload = base64::engine::general_purpose::STANDARD.encode(ulaw);
        let event = json!({"event": "media", "streamSid": "MZburst",
            "media": {"track": track, "payload": payload}});
        Message::text(event.to_string())
    };
    inbound
        .chunks(FRAME_BYTES)
        .zip(outbound.chunks(FRAME_BYTES))
        .flat_map(|(i, o)| [media("inbound", i), media("outbound", o)])
        .collect()
}

/// The seconds in a stand-in transcript `[speech X.XX s]`.
fn speech_secs(text: &str) -> f64 {
    text.strip_prefix("[speech ")
        .and_then(|t| t.strip_suffix(" s]"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a stand-in transcript: {text}"))
}

/// Each speaker's finals, in order.
fn finals_of(events: &[CallEvent], speaker: Role) -> Vec<String> {
    finals(events)
        .into_iter()
        .filter(|(s, _)| *s == speaker)
        .map(|(_, text)| text)
        .collect()
}

/// The transcriber hears audio no faster than real time (`realtime_pace`), and this one is
/// seconds behind when the call ends: 6.8 s of both tracks (caller, agent, caller, agent taking
/// turns, 2–3 s each) reach the relay in one burst right after `start` (as after a network stall,
/// or a session that opened late), and Twilio sends `stop` 1.5 s later, when the Realtime API has
/// heard only the start of each track's first utterance. Each track's last utterance must still
/// be transcribed.
#[tokio::test]
async fn openai_keeps_the_last_utterance_of_both_tracks_when_the_transcriber_is_behind_at_the_end()
{
    let paced = FakeOptions {
        realtime_pace: true,
        ..FakeOptions::default()
    };
    let (app, fake) = spawn_with_fake(paced, |_| {}).await;
    let (hello, question) = (clip("caller-hello.wav"), clip("caller-question.wav"));
    let mut opts = fork_options(&app, "CAforkbehind");
    opts.clips.clear();
    opts.agent_clips.clear();
    opts.inject_after_start = both_tracks(
        &two_utterances(0, &hello, &question),
        &two_utterances(1000, &question, &hello),
    );
    let (report, events) = fork_call(&app, opts).await;
    check_fork(&app, &report, &events).await;

    let secs = |audio: &[u8]| audio.len() as f64 / (BYTES_PER_MS * 1000) as f64;
    let said = [Role::Caller, Role::Agent].map(|speaker| (speaker, finals_of(&events, speaker)));
    assert!(
        said.iter().all(|(_, finals)| finals.len() == 2),
        "each speaker said two things: {said:?}"
    );
    for ((speaker, finals), last) in said.iter().zip([&question, &hello]) {
        // The stand-in's transcript is the length of the loud part of the utterance.
        let heard = speech_secs(&finals[1]);
        assert!(
            (secs(last) - 0.4..=secs(last)).contains(&heard),
            "{speaker:?}'s last utterance ({:.2} s) is all there: {finals:?}",
            secs(last)
        );
    }
    for conn in fake.connections() {
        assert!(
            conn.errors_sent
                .iter()
                .all(|code| code == "input_audio_buffer_commit_empty"),
            "{:?}",
            conn.errors_sent
        );
    }
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}

/// The agent is mid-sentence when the caller hangs up: Deepgram has not reached an endpoint, so
/// the relay's `Finalize` is what makes it send the agent's last words, and they are recorded.
#[tokio::test]
async fn deepgram_is_finalized_at_the_end_and_the_agent_s_words_up_to_the_hang_up_are_kept() {
    let deepgram = FakeDeepgram::spawn("dg-test-key").await;
    let mut config = Config::default();
    config.transcribe.transcribe_backend = Backend::Deepgram;
    config.transcribe.deepgram_api_key = Some("dg-test-key".into());
    config.transcribe.deepgram_url = deepgram.url();
    let app = spawn_app(config).await;
    let (report, events) = fork_call(&app, hang_up_mid_sentence(&app, "CAforkfinalize")).await;
    let t = check_hung_up_fork(&app, &report, &events).await;

    let agent = finals_of(&events, Role::Agent);
    assert_eq!(agent.len(), 1, "{agent:?}");
    let secs: f64 = agent[0]
        .strip_prefix("[deepgram speech ")
        .and_then(|t| t.strip_suffix(" s]"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{agent:?}"));
    assert!((0.8..=1.2).contains(&secs), "the agent's 1.1 s: {agent:?}");
    assert_eq!(t["turns"][1]["role"], "agent");
    assert_eq!(t["turns"][1]["text"], agent[0].as_str());
    assert_eq!(finals_of(&events, Role::Caller).len(), 1);

    let conns = deepgram.connections();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(
        conns.iter().all(|c| c.finalizes == 1 && c.close_stream),
        "each track is finalized, then closed: {conns:?}"
    );
    let mut flushed: Vec<usize> = conns.iter().map(|c| c.finals_from_finalize).collect();
    flushed.sort_unstable();
    assert_eq!(
        flushed,
        [0, 1],
        "only the agent was still talking: {conns:?}"
    );
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}

/// The agent is mid-sentence when the caller hangs up: the Whisper chunk in progress is cut at
/// the end of the track, uploaded, and its text recorded before the call is finished.
#[tokio::test]
async fn whisper_uploads_the_last_chunk_at_the_end_and_the_agent_s_words_up_to_the_hang_up_are_kept(
) {
    let whisper = FakeWhisper::spawn("sk-test-key").await;
    let app = whisper_app(&whisper).await;
    let (report, events) = fork_call(&app, hang_up_mid_sentence(&app, "CAforkwhisperend")).await;
    let t = check_hung_up_fork(&app, &report, &events).await;

    let agent = finals_of(&events, Role::Agent);
    assert_eq!(agent.len(), 1, "{agent:?}");
    assert!(agent[0].starts_with("[whisper chunk 2: "), "{agent:?}");
    assert_eq!(t["turns"][1]["text"], agent[0].as_str());
    let uploads = whisper.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    // The agent's 1.1 s plus the chunk's 300 ms of quiet before the speech.
    let last = &uploads[1];
    assert_eq!(last.status, 200, "{last:?}");
    assert!((1.2..=1.6).contains(&last.seconds), "{last:?}");
    assert_eq!(app.state.stats.errors(), 0);
    app.shutdown().await;
}
