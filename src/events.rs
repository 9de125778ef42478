//! Live call events for `GET /api/calls/{sid}/events` (Server-Sent Events): one broadcast channel
//! per call, created on first use and dropped when the call ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::transcript::{EndReason, Role};

/// Events buffered per subscriber before the slowest one starts missing interim lines.
const CAPACITY: usize = 256;

/// One event on a call's feed. The SSE `event:` name is [`CallEvent::name`]; `data:` is the JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum CallEvent {
    /// Partial text that may still change.
    Interim {
        speaker: Role,
        text: String,
        at: DateTime<Utc>,
    },
    /// Settled text, also written to the transcript.
    Final {
        speaker: Role,
        text: String,
        at: DateTime<Utc>,
    },
    /// The assistant called a tool (`tool.called`).
    ToolCalled {
        tool: String,
        call_id: String,
        arguments: serde_json::Value,
        at: DateTime<Utc>,
    },
    /// A tool answered (`tool.result`): `outcome` as in `tool_calls_total`, the model's `output`.
    ToolResult {
        tool: String,
        call_id: String,
        outcome: &'static str,
        output: serde_json::Value,
        duration_ms: u64,
        at: DateTime<Utc>,
    },
    /// The call is over; the feed closes after this.
    Ended {
        end_reason: EndReason,
        at: DateTime<Utc>,
    },
}

impl CallEvent {
    /// `transcript.interim`, `transcript.final`, `tool.called`, `tool.result` or `call.ended`.
    pub fn name(&self) -> &'static str {
        match self {
            CallEvent::Interim { .. } => "transcript.interim",
            CallEvent::Final { .. } => "transcript.final",
            CallEvent::ToolCalled { .. } => "tool.called",
            CallEvent::ToolResult { .. } => "tool.result",
            CallEvent::Ended { .. } => "call.ended",
        }
    }
}

/// Per-call broadcast channels. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct EventHub {
    calls: Arc<Mutex<HashMap<String, broadcast::Sender<CallEvent>>>>,
}

impl EventHub {
    /// Publish `event` for `call_sid` (dropped if nobody listens). `Ended` closes the channel.
    pub fn publish(&self, call_sid: &str, event: CallEvent) {
        let mut calls = self.calls.lock().expect("event hub lock poisoned");
        let ended = matches!(event, CallEvent::Ended { .. });
        let sender = if ended {
            calls.remove(call_sid)
        } else {
            calls.get(call_sid).cloned()
        };
        if let Some(sender) = sender {
            let _ = sender.send(event);
        }
    }

    /// Subscribe to `call_sid`'s events from now on.
    pub fn subscribe(&self, call_sid: &str) -> broadcast::Receiver<CallEvent> {
        let mut calls = self.calls.lock().expect("event hub lock poisoned");
        calls
            .entry(call_sid.to_string())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_get_events_in_order_and_the_end_closes_the_feed() {
        let hub = EventHub::default();
        let mut rx = hub.subscribe("CA1");
        let at = Utc::now();
        hub.publish(
            "CA1",
            CallEvent::Interim {
                speaker: Role::Caller,
                text: "hel".into(),
                at,
            },
        );
        hub.publish(
            "CA2",
            CallEvent::Final {
                speaker: Role::Agent,
                text: "other call".into(),
                at,
            },
        );
        hub.publish(
            "CA1",
            CallEvent::Final {
                speaker: Role::Caller,
                text: "hello".into(),
                at,
            },
        );
        hub.publish(
            "CA1",
            CallEvent::Ended {
                end_reason: EndReason::CallerHungUp,
                at,
            },
        );
        assert_eq!(rx.recv().await.unwrap().name(), "transcript.interim");
        let CallEvent::Final { text, .. } = rx.recv().await.unwrap() else {
            panic!()
        };
        assert_eq!(text, "hello");
        assert_eq!(rx.recv().await.unwrap().name(), "call.ended");
        assert!(rx.recv().await.is_err(), "feed closed after the end");
    }
}
