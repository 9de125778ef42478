//! The grouper against the Python SDK: each scenario's expected closes were produced by running
//! openai-python 3.51.0 `lib/live/_transcript_state.py` + `_transcript_grouping.py` on the same
//! steps (a local clock equal to the session timeline).

use super::*;

enum Step {
    User(&'static str, &'static str, u64, u64),
    Assistant(&'static str, &'static str, u64, u64),
    Tick(u64),
    Close,
}
use Step::*;

fn reason_name(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::SpeakerChange => "speaker_change",
        CloseReason::Inactivity => "inactivity",
        CloseReason::TimestampReset => "timestamp_reset",
        CloseReason::SessionClosed => "session_closed",
        CloseReason::Manual => "manual",
    }
}

/// The closes of a scenario as `closed <speaker> '<text>' <start>-<end> <reason>`.
fn run(steps: &[Step]) -> Vec<String> {
    let mut grouper = TranscriptGrouper::default();
    let mut closes = Vec::new();
    for step in steps {
        let updates = match *step {
            User(id, text, s, e) => grouper.push(Speaker::User, id, text, s, e).unwrap(),
            Assistant(id, text, s, e) => grouper.push(Speaker::Assistant, id, text, s, e).unwrap(),
            Tick(now) => grouper.advance(now),
            Close => grouper.flush(),
        };
        for update in updates {
            if let Update::Closed { segment: s, reason } = update {
                let speaker = match s.speaker {
                    Speaker::User => "user",
                    Speaker::Assistant => "assistant",
                };
                closes.push(format!(
                    "closed {speaker} '{}' {}-{} {}",
                    s.text,
                    s.start_ms,
                    s.end_ms,
                    reason_name(reason)
                ));
            }
        }
    }
    closes
}

#[test]
fn a_reply_closes_the_caller_turn_and_silence_closes_the_reply() {
    let closes = run(&[
        User("1", "Hello", 0, 400),
        User("2", " there", 400, 800),
        Assistant("3", "Hi!", 1500, 2000),
        Assistant("4", " How can I help?", 2000, 3000),
        Tick(5100),
    ]);
    assert_eq!(
        closes,
        [
            "closed user 'Hello there' 0-800 speaker_change",
            "closed assistant 'Hi! How can I help?' 1500-3000 inactivity"
        ]
    );
}

#[test]
fn an_assistant_backchannel_the_caller_talks_past_is_dropped() {
    let closes = run(&[
        User("1", "I was calling", 0, 1000),
        Assistant("2", "Mhm.", 1100, 1400),
        User("3", " about my bill", 1200, 2500),
        User("4", " from March", 2600, 3500),
        Close,
    ]);
    assert_eq!(
        closes,
        ["closed user 'I was calling about my bill from March' 0-3500 manual"]
    );
}

#[test]
fn a_quick_reply_waits_for_the_separation_then_becomes_the_next_turn() {
    let closes = run(&[
        User("1", "Hi", 0, 400),
        Assistant("2", "Hello", 600, 1000),
        Tick(1000),
        Assistant("3", " there", 1000, 1400),
        Close,
    ]);
    assert_eq!(
        closes,
        [
            "closed user 'Hi' 0-400 speaker_change",
            "closed assistant 'Hello there' 600-1400 manual"
        ]
    );
}

#[test]
fn the_caller_interrupting_closes_the_assistant_turn_at_once() {
    let mut grouper = TranscriptGrouper::default();
    grouper
        .push(Speaker::Assistant, "1", "Let me tell you", 0, 1500)
        .unwrap();
    grouper.advance(1500);
    // The caller's fragment waits for a same-interval pair (the SDK: 50 ms), then commits.
    assert!(grouper
        .push(Speaker::User, "2", "Wait", 1600, 1900)
        .unwrap()
        .is_empty());
    let updates = grouper.advance(1900);
    let closed: Vec<_> = updates.iter().filter_map(Update::closed).collect();
    assert_eq!(closed.len(), 1, "{updates:?}");
    assert_eq!(closed[0].text, "Let me tell you");
    assert_eq!(
        run(&[
            Assistant("1", "Let me tell you", 0, 1500),
            User("2", "Wait", 1600, 1900),
            Close
        ]),
        [
            "closed assistant 'Let me tell you' 0-1500 speaker_change",
            "closed user 'Wait' 1600-1900 manual"
        ]
    );
}

#[test]
fn duplicates_and_empty_text_are_ignored_and_a_timestamp_reset_closes_all() {
    let closes = run(&[
        User("1", "One", 0, 300),
        User("1", "One", 0, 300),
        User("2", "", 300, 400),
        Assistant("3", "Two", 1000, 1500),
        User("4", "Three", 200, 600),
        Close,
    ]);
    assert_eq!(
        closes,
        [
            "closed user 'One' 0-300 speaker_change",
            "closed assistant 'Two' 1000-1500 timestamp_reset",
            "closed user 'Three' 200-600 manual"
        ]
    );
}

#[test]
fn simultaneous_fragments_of_both_speakers_keep_both() {
    let closes = run(&[
        User("1", "Yes", 1000, 1400),
        Assistant("2", "Okay", 1000, 1400),
        Close,
    ]);
    assert_eq!(
        closes,
        [
            "closed user 'Yes' 1000-1400 manual",
            "closed assistant 'Okay' 1000-1400 manual"
        ]
    );
}

#[test]
fn invalid_deltas_are_refused_and_session_closed_finishes() {
    let mut grouper = TranscriptGrouper::default();
    assert_eq!(
        grouper.push(Speaker::User, "", "x", 0, 1),
        Err(InvalidDelta)
    );
    assert_eq!(
        grouper.push(Speaker::User, "1", "x", 5, 1),
        Err(InvalidDelta)
    );
    let delta: ServerEvent = serde_json::from_str(
        r#"{"type":"session.input_transcript.delta","event_id":"e1","delta":"Bye","start_ms":0,"end_ms":300}"#,
    )
    .unwrap();
    assert!(
        grouper.push_event(&delta).unwrap().is_empty(),
        "waits for a pair"
    );
    assert_eq!(grouper.deadline(), Some(300));
    let closed: ServerEvent = serde_json::from_str(
        r#"{"type":"session.closed","event_id":"e2","reason":"close_requested","usage":{"seconds":1}}"#,
    )
    .unwrap();
    let updates = grouper.push_event(&closed).unwrap();
    assert!(matches!(
        updates.last(),
        Some(Update::Closed { segment, reason: CloseReason::SessionClosed }) if segment.text == "Bye"
    ));
    assert!(grouper.flush().is_empty(), "closes once");
    assert_eq!(grouper.deadline(), None);
}

#[test]
fn acknowledgments_are_normalized_like_the_sdk() {
    assert_eq!(policy::normalize("  Mm-Hmm!! "), "mm hmm");
    assert_eq!(policy::normalize("\"OK.\""), "ok");
    assert_eq!(policy::normalize("uh\t huh"), "uh huh");
}
