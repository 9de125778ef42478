//! Round trips of every call event, and where the inline/stored line falls.

use super::*;
use chrono::TimeZone;

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
}

fn final_text(text: String) -> Message {
    Message::Event {
        origin: "0b5c2f8e-0000-4000-8000-000000000001".into(),
        call_sid: "CA0123456789abcdef0123456789abcdef".into(),
        event: WireEvent::from(&CallEvent::Final {
            speaker: Role::Caller,
            text,
            at: at(),
        }),
    }
}

fn round_trip(message: &Message) -> Message {
    let (Outgoing::Inline(json) | Outgoing::Stored(json)) = plan(message);
    serde_json::from_str(&json).expect("decodes")
}

#[test]
fn every_call_event_survives_the_trip_with_its_kind() {
    let events = [
        CallEvent::Interim {
            speaker: Role::Caller,
            text: "hel".into(),
            at: at(),
        },
        CallEvent::Final {
            speaker: Role::Agent,
            text: "hello".into(),
            at: at(),
        },
        CallEvent::ToolCalled {
            tool: "lookup".into(),
            call_id: "call_1".into(),
            arguments: serde_json::json!({"order": 42}),
            at: at(),
        },
        CallEvent::ToolResult {
            tool: "lookup".into(),
            call_id: "call_1".into(),
            outcome: "http_error",
            output: serde_json::json!({"error": "503"}),
            duration_ms: 17,
            at: at(),
        },
        CallEvent::Ended {
            end_reason: EndReason::ApiHangup,
            at: at(),
        },
    ];
    for event in events {
        let message = Message::Event {
            origin: "a".into(),
            call_sid: "CA1".into(),
            event: WireEvent::from(&event),
        };
        let Message::Event { event: wire, .. } = round_trip(&message) else {
            panic!("not an event")
        };
        assert_eq!(wire.into_event().unwrap(), event);
    }
}

#[test]
fn unknown_event_names_and_outcomes_are_errors_not_guesses() {
    let unknown = WireEvent {
        name: "call.exploded".into(),
        data: serde_json::json!({}),
    };
    assert!(unknown.into_event().is_err());
    let odd = WireEvent {
        name: "tool.result".into(),
        data: serde_json::json!({"tool": "t", "call_id": "c", "outcome": "weird",
            "output": null, "duration_ms": 1, "at": "2026-01-02T03:04:05Z"}),
    };
    let error = odd.into_event().unwrap_err().to_string();
    assert!(error.contains("weird"), "{error}");
}

#[test]
fn payloads_shorter_than_8000_bytes_go_inline_and_longer_ones_are_stored() {
    let Outgoing::Inline(empty) = plan(&final_text(String::new())) else {
        panic!("an empty turn is small")
    };
    let room = NOTIFY_LIMIT - 1 - empty.len();
    let Outgoing::Inline(largest) = plan(&final_text("a".repeat(room))) else {
        panic!("7999 bytes fit")
    };
    assert_eq!(largest.len(), NOTIFY_LIMIT - 1);
    let Outgoing::Stored(stored) = plan(&final_text("a".repeat(room + 1))) else {
        panic!("8000 bytes do not fit")
    };
    assert_eq!(stored.len(), NOTIFY_LIMIT);
}

#[test]
fn the_limit_counts_bytes_not_characters() {
    // 3000 characters, 9000 bytes of UTF-8: PostgreSQL would refuse it inline.
    let text = "€".repeat(3000);
    let message = final_text(text.clone());
    let Outgoing::Stored(json) = plan(&message) else {
        panic!("9000 bytes must be stored")
    };
    assert!(json.chars().count() < NOTIFY_LIMIT);
    assert_eq!(round_trip(&message), message);
}

#[test]
fn hang_up_messages_are_small_and_carry_their_addresses() {
    let ack = Message::HangupAck {
        origin: "b".into(),
        to: "a".into(),
        request_id: "r1".into(),
    };
    let Outgoing::Inline(json) = plan(&ack) else {
        panic!("small")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&json).unwrap(),
        serde_json::json!({"type": "hangup_ack", "origin": "b", "to": "a", "request_id": "r1"})
    );
    assert_eq!(round_trip(&ack).origin(), "b");
}
