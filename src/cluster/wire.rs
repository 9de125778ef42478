//! What instances say to each other on the PostgreSQL channel [`CHANNEL`]: typed JSON messages,
//! and the rule that sends a payload inline or through the `cluster_events` table.
//!
//! PostgreSQL's `NOTIFY` payload "must be shorter than 8000 bytes" (PostgreSQL manual, `NOTIFY`);
//! a longer call event (a long transcript turn, a large tool result) is stored as a row and the
//! notification carries only its id.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::CallEvent;
use crate::transcript::{EndReason, Role};

/// The `LISTEN`/`NOTIFY` channel every instance uses.
pub const CHANNEL: &str = "relay_cluster";

/// PostgreSQL's limit: a payload must be shorter than this many bytes (not characters).
pub const NOTIFY_LIMIT: usize = 8000;

/// One notification. `origin` is the sending instance's id: an instance ignores its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// A call event published on `origin`, whole.
    Event {
        origin: String,
        call_sid: String,
        event: WireEvent,
    },
    /// A call event too long to notify: its [`Message::Event`] JSON is row `id` of `cluster_events`.
    StoredEvent { origin: String, id: i64 },
    /// `origin` is about to ask Twilio to hang `call_sid` up: whoever holds its stream records
    /// `api_hangup` and answers [`Message::HangupAck`]; the others keep the reason for a stream
    /// of that call that lands on them meanwhile ([`crate::active::ActiveCalls::announce_end`]).
    HangupRequest {
        origin: String,
        request_id: String,
        call_sid: String,
    },
    /// The holder of the call recorded the reason; addressed to instance `to`.
    HangupAck {
        origin: String,
        to: String,
        request_id: String,
    },
    /// Twilio accepted the hang-up: the holder ends the stream now rather than wait for `stop`.
    HangupEnd { origin: String, call_sid: String },
}

impl Message {
    /// The sending instance.
    pub fn origin(&self) -> &str {
        match self {
            Message::Event { origin, .. }
            | Message::StoredEvent { origin, .. }
            | Message::HangupRequest { origin, .. }
            | Message::HangupAck { origin, .. }
            | Message::HangupEnd { origin, .. } => origin,
        }
    }
}

/// A [`CallEvent`] with its name, so the receiver knows which one it is (the SSE JSON alone
/// cannot tell `transcript.interim` from `transcript.final`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// [`CallEvent::name`].
    pub name: String,
    /// The event's JSON, as the SSE feed sends it.
    pub data: Value,
}

impl From<&CallEvent> for WireEvent {
    fn from(event: &CallEvent) -> Self {
        WireEvent {
            name: event.name().to_string(),
            data: serde_json::to_value(event).expect("call events serialize"),
        }
    }
}

#[derive(Deserialize)]
struct Text {
    speaker: Role,
    text: String,
    at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Called {
    tool: String,
    call_id: String,
    arguments: Value,
    at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Answered {
    tool: String,
    call_id: String,
    outcome: String,
    output: Value,
    duration_ms: u64,
    at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Ended {
    end_reason: EndReason,
    at: DateTime<Utc>,
}

/// The `outcome` labels a tool result can carry ([`crate::tools::Outcome::label`], and MCP's).
const OUTCOMES: [&str; 10] = [
    "ok",
    "invalid_arguments",
    "unknown_tool",
    "timeout",
    "http_error",
    "invalid_response",
    "unreachable",
    "twilio_error",
    "cancelled",
    "mcp_error",
];

impl WireEvent {
    /// Back to the event.
    ///
    /// # Errors
    /// An unknown name, or data that does not fit it (another version of the relay).
    pub fn into_event(self) -> anyhow::Result<CallEvent> {
        Ok(match self.name.as_str() {
            "transcript.interim" | "transcript.final" => {
                let Text { speaker, text, at } = serde_json::from_value(self.data)?;
                if self.name == "transcript.final" {
                    CallEvent::Final { speaker, text, at }
                } else {
                    CallEvent::Interim { speaker, text, at }
                }
            }
            "tool.called" => {
                let c: Called = serde_json::from_value(self.data)?;
                CallEvent::ToolCalled {
                    tool: c.tool,
                    call_id: c.call_id,
                    arguments: c.arguments,
                    at: c.at,
                }
            }
            "tool.result" => {
                let a: Answered = serde_json::from_value(self.data)?;
                let outcome = OUTCOMES
                    .into_iter()
                    .find(|o| *o == a.outcome)
                    .ok_or_else(|| anyhow::anyhow!("unknown tool outcome {:?}", a.outcome))?;
                CallEvent::ToolResult {
                    tool: a.tool,
                    call_id: a.call_id,
                    outcome,
                    output: a.output,
                    duration_ms: a.duration_ms,
                    at: a.at,
                }
            }
            "call.ended" => {
                let Ended { end_reason, at } = serde_json::from_value(self.data)?;
                CallEvent::Ended { end_reason, at }
            }
            other => anyhow::bail!("unknown call event {other:?}"),
        })
    }
}

/// How one message goes out.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// Short enough: `NOTIFY` with this payload.
    Inline(String),
    /// Too long: store this payload in `cluster_events`, then notify a [`Message::StoredEvent`].
    Stored(String),
}

/// Encode `message` and decide how it travels: inline while shorter than [`NOTIFY_LIMIT`] bytes.
pub fn plan(message: &Message) -> Outgoing {
    let payload = serde_json::to_string(message).expect("cluster messages serialize");
    if payload.len() < NOTIFY_LIMIT {
        Outgoing::Inline(payload)
    } else {
        Outgoing::Stored(payload)
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
