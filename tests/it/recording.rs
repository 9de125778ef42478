//! Call recordings (`RECORDING=on`): the stereo WAV (caller left, assistant right as the caller
//! heard it, cut at barge-in), its reference in the record, the authenticated download with
//! `Range`, retention, nothing written when off, and a failing disk that never ends the call.

use std::path::Path;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use twilio_realtime_relay::audio::ulaw_to_linear;
use twilio_realtime_relay::config::{Config, RecordingMode};
use twilio_realtime_relay::fake_openai::{FakeOptions, Mode};
use twilio_realtime_relay::recording::RecordingRef;
use twilio_realtime_relay::records::CallRecord;
use twilio_realtime_relay::sim::{self, CallReport};

use crate::support::{call_options, clip, eventually, metric, spawn_app, spawn_with_fake, TestApp};

const TOKEN: &str = "test-token-0123456789";
/// Samples per ms at 8 kHz.
const PER_MS: usize = 8;

fn parrot() -> FakeOptions {
    FakeOptions {
        mode: Mode::Parrot,
        ..FakeOptions::default()
    }
}

fn recorded(c: &mut Config) {
    c.recording = RecordingMode::On;
    c.api_token = Some(TOKEN.into());
}

/// The recording's two channels, 16-bit samples.
fn channels(path: &Path) -> (Vec<i16>, Vec<i16>) {
    let mut reader = hound::WavReader::open(path).expect("a WAV");
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 8000, 16),
        "stereo 8 kHz 16-bit"
    );
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let left = samples.iter().step_by(2).copied().collect();
    let right = samples.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

fn wav_of(app: &TestApp, sid: &str) -> std::path::PathBuf {
    app.state.config.recording_dir.join(format!("{sid}.wav"))
}

async fn record_of(app: &TestApp, sid: &str) -> CallRecord {
    app.state.store.get(sid).await.unwrap().expect("a record")
}

async fn one_call(app: &TestApp, clips: Vec<Vec<u8>>, interrupt: Option<u64>) -> CallReport {
    let mut opts = call_options(app, clips);
    opts.interrupt_after_ms = interrupt;
    let report = sim::run(opts).await.expect("call");
    app.calls_finished().await;
    report
}

/// Where `needle` first occurs in `haystack`.
fn find<T: PartialEq>(haystack: &[T], needle: &[T]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn pcm(ulaw: &[u8]) -> Vec<i16> {
    ulaw.iter().map(|&b| ulaw_to_linear(b)).collect()
}

/// Where the reply the caller received first starts on the right channel, samples, and where
/// it should start: when its first audio reached the caller (`first_audio_latency_ms` after the
/// first clip ended at `clip_end` samples).
fn reply_on_the_right(right: &[i16], report: &CallReport, clip_end: usize) -> (usize, usize) {
    let first_sound = report
        .received_audio
        .iter()
        .position(|&b| ulaw_to_linear(b) != 0)
        .expect("the caller heard a reply");
    let needle = pcm(&report.received_audio[first_sound..first_sound + 100 * PER_MS]);
    let found = find(right, &needle).expect("the reply is on the right");
    let latency = report.first_audio_latency_ms.expect("answered") as usize;
    (found - first_sound, clip_end + latency * PER_MS)
}

#[tokio::test]
async fn a_recorded_call_has_the_caller_left_and_the_assistant_right_when_it_played() {
    let (app, _fake) = spawn_with_fake(parrot(), recorded).await;
    let hello = clip("caller-hello.wav");
    let report = one_call(&app, vec![hello.clone()], None).await;
    let path = wav_of(&app, &report.call_sid);
    let (left, right) = channels(&path);

    // Left: the caller's clip, where it was sent (within a frame), sample for sample.
    let sent_at = find(&report.sent_audio, &hello[..800]).expect("the clip was sent");
    let on_left = find(&left, &pcm(&hello)).expect("the whole clip is on the left");
    assert!(
        sent_at.abs_diff(on_left) <= 20 * PER_MS,
        "the clip is at {} ms on the left, was sent at {} ms",
        on_left / PER_MS,
        sent_at / PER_MS
    );
    let clip_end = on_left + hello.len();

    // Right: silent while the caller speaks, then the reply from when it reached the caller.
    assert!(
        right[..clip_end].iter().all(|&s| s == 0),
        "the assistant is silent while the caller speaks"
    );
    let (start, expected) = reply_on_the_right(&right, &report, sent_at + hello.len());
    assert!(
        start.abs_diff(expected) <= 60 * PER_MS,
        "the reply starts at {} ms on the right; it reached the caller at {} ms",
        start / PER_MS,
        expected / PER_MS
    );
    let heard = pcm(&report.heard);
    assert_eq!(
        &right[start..start + heard.len()],
        &heard[..],
        "the right channel is what the caller heard"
    );

    let record = record_of(&app, &report.call_sid).await;
    let bytes = std::fs::metadata(&path).unwrap().len();
    assert_eq!(
        record.recording,
        Some(RecordingRef {
            url: format!("/api/calls/{}/recording.wav", report.call_sid),
            duration_ms: left.len() as u64 / 8,
            bytes,
        })
    );
    let files = names(&app.state.config.recording_dir);
    assert_eq!(
        files,
        [format!("{}.wav", report.call_sid)],
        "temp tracks are gone"
    );
    app.shutdown().await;
}

fn names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn a_barge_in_cuts_the_assistant_channel_where_the_caller_stopped_hearing_it() {
    let (app, _fake) = spawn_with_fake(parrot(), recorded).await;
    let hello = clip("caller-hello.wav");
    let clips = vec![hello.clone(), clip("caller-question.wav")];
    let report = one_call(&app, clips, Some(700)).await;
    assert!(report.clears >= 1, "{}", report.summary());
    let (_, right) = channels(&wav_of(&app, &report.call_sid));
    let sent_at = find(&report.sent_audio, &hello[..800]).expect("the clip was sent");
    let (start, _) = reply_on_the_right(&right, &report, sent_at + hello.len());
    let heard_ms = report.heard_ms_at_clear[0] as usize;
    let cut = start + heard_ms * PER_MS;
    // Within two frames of the cut: before it the reply, after it silence (the caller's
    // second clip is still playing, so no other reply has started).
    let before = &right[cut - 300 * PER_MS..cut - 40 * PER_MS];
    assert!(
        before.iter().any(|&s| s != 0),
        "the reply plays until the barge-in at {} ms",
        cut / PER_MS
    );
    let after = &right[cut + 40 * PER_MS..cut + 400 * PER_MS];
    assert!(
        after.iter().all(|&s| s == 0),
        "the right channel is silent after the barge-in at {} ms (heard {heard_ms} ms)",
        cut / PER_MS
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_recording_off_nothing_is_written() {
    let (app, _fake) = spawn_with_fake(parrot(), |c| c.api_token = Some(TOKEN.into())).await;
    let report = one_call(&app, vec![clip("caller-hello.wav")], None).await;
    assert!(!report.heard.is_empty(), "the call was answered");
    assert!(names(&app.state.config.recording_dir).is_empty());
    let record = record_of(&app, &report.call_sid).await;
    assert_eq!(record.recording, None);
    let (status, _, body) = app.request(get(&report.call_sid, None, true)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("recording"), "{body}");
    app.shutdown().await;
}

/// `GET /api/calls/{sid}` (`wav`: its recording), with the token if `auth`.
fn get(sid: &str, range: Option<&str>, auth: bool) -> Request<Body> {
    let uri = match range {
        Some(_) => format!("/api/calls/{sid}/recording.wav"),
        None => format!("/api/calls/{sid}"),
    };
    let mut req = Request::get(uri);
    if auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    if let Some(range) = range.filter(|r| !r.is_empty()) {
        req = req.header(header::RANGE, range);
    }
    req.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn the_recording_is_served_behind_the_token_with_ranges() {
    let (app, _fake) = spawn_with_fake(parrot(), recorded).await;
    let report = one_call(&app, vec![clip("caller-hello.wav")], None).await;
    let sid = &report.call_sid;
    let file = std::fs::read(wav_of(&app, sid)).unwrap();

    let (status, _, _) = app.request(get(sid, Some(""), false)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let response = app_bytes(&app, get(sid, Some(""), true)).await;
    assert_eq!(response.0, StatusCode::OK);
    assert_eq!(response.1[header::CONTENT_TYPE], "audio/wav");
    assert_eq!(response.2, file);

    let (status, headers, body) = app_bytes(&app, get(sid, Some("bytes=0-43"), true)).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &file[..44], "the WAV header");
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes 0-43/{}", file.len()).as_str()
    );

    // The record points at it, as the console uses it.
    let (_, _, body) = app.request(get(sid, None, true)).await;
    let record: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        record["recording"]["url"],
        format!("/api/calls/{sid}/recording.wav")
    );
    assert_eq!(record["recording"]["bytes"], file.len());

    for missing in ["CA00000000000000000000000000000000", "..%2Fetc%2Fpasswd"] {
        let (status, _, _) = app.request(get(missing, Some(""), true)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
    }
    app.shutdown().await;
}

/// Like `TestApp::request`, with the body as bytes.
async fn app_bytes(
    app: &TestApp,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = twilio_realtime_relay::app::build_router(app.state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

#[tokio::test]
async fn recordings_past_the_retention_are_deleted_and_their_reference_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    let (old, new) = (
        "CA11111111111111111111111111111111",
        "CA22222222222222222222222222222222",
    );
    for sid in [old, new] {
        std::fs::write(recordings.join(format!("{sid}.wav")), b"RIFF").unwrap();
    }
    let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(recordings.join(format!("{old}.wav")))
        .unwrap()
        .set_modified(ten_days_ago)
        .unwrap();
    let config = Config {
        recording: RecordingMode::On,
        recording_dir: recordings.clone(),
        recording_retention_days: Some(7),
        database_url: crate::support::sqlite_url(dir.path()),
        ..Config::default()
    };
    // The records as calls would have left them.
    let store = twilio_realtime_relay::app::AppState::new(config.clone()).store;
    for sid in [old, new] {
        let mut record = CallRecord::new(sid, "inbound", "completed");
        record.recording = Some(RecordingRef {
            url: format!("/api/calls/{sid}/recording.wav"),
            duration_ms: 1,
            bytes: 4,
        });
        store.insert_record_if_absent(&record).await.unwrap();
    }
    let app = spawn_app(config).await;
    eventually("the old recording is deleted at start-up", 10, || async {
        !recordings.join(format!("{old}.wav")).exists()
            && record_of(&app, old).await.recording.is_none()
    })
    .await;
    assert!(
        recordings.join(format!("{new}.wav")).exists(),
        "a recent one is kept"
    );
    assert!(record_of(&app, new).await.recording.is_some());
    app.shutdown().await;
}

/// Writing through `path` fails with ENOSPC from now on, as on a full disk.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_recording_that_cannot_be_written_is_counted_and_the_call_completes() {
    let (app, _fake) = spawn_with_fake(parrot(), recorded).await;
    let sid = "CA0123456789abcdef0123456789abcdef";
    let dir = &app.state.config.recording_dir;
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join(format!("{sid}.caller.part"))).unwrap();
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.call_sid = Some(sid.into());
    let report = sim::run(call).await.expect("the call goes on");
    app.calls_finished().await;
    assert!(!report.heard.is_empty(), "the caller was answered");
    assert!(!report.closed_by_server, "the call was not cut");
    let metrics = app.metrics().await;
    assert_eq!(metric(&metrics, r#"errors_total{kind="recording"}"#), 1.0);
    assert!(
        names(dir).is_empty(),
        "no recording and no temp files: {:?}",
        names(dir)
    );
    let record = record_of(&app, sid).await;
    assert_eq!(record.recording, None);
    assert_eq!(record.status, "completed");
    app.shutdown().await;
}
