//! The barge-in targets on the bundled clips and synthetic line noise, in audio time.

use super::cases::{self, Case};
use super::*;

const TARGET_MS: usize = 250;

fn named(prefix: &str) -> Vec<Case> {
    let found: Vec<Case> = cases::all()
        .expect("bundled clips decode")
        .into_iter()
        .filter(|c| c.name.starts_with(prefix))
        .collect();
    assert!(!found.is_empty(), "no case named {prefix}*");
    found
}

fn assert_in_time(case: &Case, settings: &DetectorSettings) {
    let outcome = cases::run(case, settings);
    assert_eq!(
        outcome.false_onsets(case),
        0,
        "{}: cleared before the caller spoke",
        case.name
    );
    let latency = outcome.latency_ms(case);
    assert!(
        latency.is_some_and(|ms| ms <= TARGET_MS),
        "{}: onset after {latency:?} ms of speech, target {TARGET_MS}",
        case.name
    );
}

fn assert_no_clear(case: &Case, settings: &DetectorSettings) {
    let outcome = cases::run(case, settings);
    assert!(
        outcome.onsets.is_empty(),
        "{}: false clears at {:?}",
        case.name,
        outcome.onsets
    );
}

#[test]
fn both_clips_over_line_noise_are_confirmed_within_250_ms_also_10_db_quieter() {
    let cases = named("speech/");
    assert_eq!(cases.len(), 4, "two clips at 0 and -10 dB");
    for case in &cases {
        assert_in_time(case, &DetectorSettings::default());
    }
}

#[test]
fn ten_seconds_of_line_noise_never_clear() {
    for case in &named("noise/") {
        assert_no_clear(case, &DetectorSettings::default());
    }
}

#[test]
fn the_assistants_own_echo_at_minus_20_db_never_clears_at_any_delay() {
    let cases = named("echo/");
    assert_eq!(cases.len(), cases::ECHO_DELAYS_MS.len());
    for case in &cases {
        assert_no_clear(case, &DetectorSettings::default());
    }
}

#[test]
fn the_echo_is_voice_to_the_vad_so_the_echo_rule_is_what_rejects_it() {
    let no_rule = DetectorSettings {
        echo_margin_db: 60.0,
        ..DetectorSettings::default()
    };
    let cleared = named("echo/")
        .iter()
        .filter(|case| !cases::run(case, &no_rule).onsets.is_empty())
        .count();
    assert!(cleared > 0, "without the echo rule the echo should clear");
}

#[test]
fn a_caller_talking_over_the_assistants_echo_is_detected_within_250_ms() {
    let case = named("double-talk/0dB").remove(0);
    assert_in_time(&case, &DetectorSettings::default());
}

/// Where the speech began by the detector's account, in caller samples (±1 ms of rounding).
fn onset_start(case: &Case, frame_bytes: usize) -> Option<u64> {
    let mut detector = Detector::new(DetectorSettings::default());
    let mut at = 0u64;
    for frame in case.caller.chunks(frame_bytes) {
        at += frame.len() as u64;
        if let Some(onset) = detector.caller_frame(frame) {
            return Some(at - u64::from(onset.audio_ms_since_onset) * 8);
        }
    }
    None
}

#[test]
fn any_frame_length_finds_the_same_onset() {
    let case = named("speech/question/0dB").remove(0);
    let twenty_ms = onset_start(&case, 160).expect("onset in 20 ms frames");
    for bytes in [1, 7, 1000] {
        let start = onset_start(&case, bytes).expect("onset in odd frames");
        assert!(
            start.abs_diff(twenty_ms) <= 8,
            "{bytes}-byte frames: {start} vs {twenty_ms}"
        );
    }
}

#[test]
fn an_onset_is_reported_once_per_run_and_again_after_a_reset() {
    let case = named("speech/hello/0dB").remove(0);
    let mut detector = Detector::new(DetectorSettings::default());
    let mut frames = case.caller.chunks(160);
    let first = frames
        .by_ref()
        .position(|f| detector.caller_frame(f).is_some());
    assert!(first.is_some() && detector.is_active());
    // 200 ms more of the same speech: no second onset.
    assert!(frames
        .by_ref()
        .take(10)
        .all(|f| detector.caller_frame(f).is_none()));
    detector.reset();
    assert!(!detector.is_active());
    assert!(
        frames.any(|f| detector.caller_frame(f).is_some()),
        "the caller still talking after a reset is a new onset"
    );
}

#[test]
fn a_detector_can_move_to_another_task() {
    fn send<T: Send>() {}
    send::<Detector>();
}
