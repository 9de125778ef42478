//! Live call events for `GET /api/calls/{sid}/events` (Server-Sent Events): one broadcast channel
//! per call, created on first use and dropped when the call ends.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

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

/// Called with `(call_sid, event)` for every event published here by [`EventHub::publish`]:
/// the cluster's forwarder ([`crate::cluster`]). It runs on the caller's task, so it must not
/// block or wait (queue and return).
pub type Forward = Box<dyn Fn(&str, &CallEvent) + Send + Sync>;

/// Per-call broadcast channels. Cheap to clone.
#[derive(Clone, Default)]
pub struct EventHub {
    calls: Arc<Mutex<HashMap<String, broadcast::Sender<CallEvent>>>>,
    /// Set once when the relay runs as one of several instances; unset, publishing stays local.
    forward: Arc<OnceLock<Forward>>,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("forwarding", &self.forward.get().is_some())
            .finish_non_exhaustive()
    }
}

impl EventHub {
    /// Hand every event published from now on to `forward` too. Only the first call takes
    /// effect; returns whether this one did.
    pub fn set_forward(&self, forward: Forward) -> bool {
        self.forward.set(forward).is_ok()
    }

    /// Publish `event` for `call_sid` (dropped if nobody listens here), and hand it to the
    /// forwarder if one is set. `Ended` closes the channel.
    pub fn publish(&self, call_sid: &str, event: CallEvent) {
        if let Some(forward) = self.forward.get() {
            forward(call_sid, &event);
        }
        self.publish_remote(call_sid, event);
    }

    /// Publish an event that came from another instance: to this instance's subscribers only,
    /// never to the forwarder (it would loop back out).
    pub fn publish_remote(&self, call_sid: &str, event: CallEvent) {
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

    #[tokio::test]
    async fn the_forwarder_sees_local_events_but_not_remote_ones() {
        let hub = EventHub::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        assert!(hub.set_forward(Box::new(move |sid, event| {
            log.lock().unwrap().push((sid.to_string(), event.name()));
        })));
        assert!(!hub.set_forward(Box::new(|_, _| {})), "set once");
        let mut rx = hub.subscribe("CA1");
        let at = Utc::now();
        let remote = CallEvent::Final {
            speaker: Role::Agent,
            text: "from elsewhere".into(),
            at,
        };
        hub.publish_remote("CA1", remote.clone());
        hub.publish(
            "CA1",
            CallEvent::Ended {
                end_reason: EndReason::ApiHangup,
                at,
            },
        );
        assert_eq!(
            rx.recv().await.unwrap(),
            remote,
            "subscribers get remote events"
        );
        assert_eq!(rx.recv().await.unwrap().name(), "call.ended");
        assert_eq!(
            *seen.lock().unwrap(),
            [("CA1".to_string(), "call.ended")],
            "only the local event was forwarded"
        );
    }
}
