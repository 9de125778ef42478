//! Live call events for `GET /api/calls/{sid}/events` (Server-Sent Events): one broadcast channel
//! per call, created on first use and dropped when the call ends; and one hub-wide channel of
//! every call's events plus `call.started` and `call.state` for the console's live page, with
//! the table of calls in progress it renders on load.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::transcript::{EndReason, Role};

/// Events buffered per subscriber before the slowest one starts missing interim lines.
const CAPACITY: usize = 256;
/// Events of all calls buffered per console subscriber; one further behind gets `Lagged` (the
/// console reloads its page) rather than holding memory for it.
pub const ALL_CAPACITY: usize = 1024;

/// What a call in progress is doing, as the console's live page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CallState {
    /// Placed, not answered yet (from the record's status).
    #[serde(rename = "ringing")]
    Ringing,
    /// Streaming; nobody's tool is running and the assistant is silent.
    #[serde(rename = "talking")]
    Talking,
    /// The assistant's audio of a response is being sent.
    #[serde(rename = "assistant speaking")]
    AssistantSpeaking,
    /// A tool call is waiting for its result.
    #[serde(rename = "tool running")]
    ToolRunning,
}

impl CallState {
    /// `ringing`, `talking`, `assistant speaking` or `tool running`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Ringing => "ringing",
            CallState::Talking => "talking",
            CallState::AssistantSpeaking => "assistant speaking",
            CallState::ToolRunning => "tool running",
        }
    }
}

/// A call in progress as the console lists it (`call.started`'s data, with `state`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCall {
    pub call_sid: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// As in the call record: `inbound`, `outbound-api` or `fork`.
    pub direction: String,
    pub started_at: DateTime<Utc>,
    pub state: CallState,
}

/// One event of the hub-wide feed: `name` is the SSE `event:` name, `data` its JSON object,
/// which always carries `call_sid`.
#[derive(Debug, Clone, PartialEq)]
pub struct HubEvent {
    pub call_sid: String,
    pub name: &'static str,
    pub data: serde_json::Value,
}

/// The hub-wide channel and the calls in progress it has seen start here.
struct Wide {
    tx: broadcast::Sender<HubEvent>,
    live: Mutex<HashMap<String, LiveCall>>,
}

impl Default for Wide {
    fn default() -> Self {
        Wide {
            tx: broadcast::channel(ALL_CAPACITY).0,
            live: Mutex::default(),
        }
    }
}

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
    /// Every call's events, for the console.
    wide: Arc<Wide>,
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
            let _ = sender.send(event.clone());
        }
        drop(calls);
        match &event {
            CallEvent::ToolCalled { .. } => self.set_state(call_sid, CallState::ToolRunning),
            CallEvent::ToolResult { .. } => self.set_state(call_sid, CallState::Talking),
            CallEvent::Ended { .. } => {
                self.lock_live().remove(call_sid);
            }
            _ => {}
        }
        let mut data = serde_json::to_value(&event).expect("call events serialize");
        data["call_sid"] = call_sid.into();
        self.send_wide(call_sid, event.name(), data);
    }

    /// A call started streaming here: list it as live and publish `call.started` (its
    /// [`LiveCall`] as data) on the hub-wide feed. Local only, as `call.state` is.
    pub fn started(&self, call: LiveCall) {
        let data = serde_json::to_value(&call).expect("live calls serialize");
        let sid = call.call_sid.clone();
        self.lock_live().insert(sid.clone(), call);
        self.send_wide(&sid, "call.started", data);
    }

    /// `call_sid` now does `state`: publish `call.state` (`{"call_sid","state"}`) when that
    /// changes what the live table shows.
    pub fn set_state(&self, call_sid: &str, state: CallState) {
        if let Some(call) = self.lock_live().get_mut(call_sid) {
            if call.state == state {
                return;
            }
            call.state = state;
        }
        let data = serde_json::json!({"call_sid": call_sid, "state": state});
        self.send_wide(call_sid, "call.state", data);
    }

    /// The caller interrupted the assistant on `call_sid`: `call.barge_in` (`{"call_sid","at"}`)
    /// on the hub-wide feed, so the live transcript marks it.
    pub fn barge_in(&self, call_sid: &str) {
        let data = serde_json::json!({"call_sid": call_sid, "at": Utc::now()});
        self.send_wide(call_sid, "call.barge_in", data);
    }

    /// The calls that started here and have not ended, oldest first.
    pub fn live_calls(&self) -> Vec<LiveCall> {
        let mut calls: Vec<LiveCall> = self.lock_live().values().cloned().collect();
        calls.sort_by(|a, b| a.started_at.cmp(&b.started_at));
        calls
    }

    /// Subscribe to every call's events from now on (at most [`ALL_CAPACITY`] behind).
    pub fn subscribe_all(&self) -> broadcast::Receiver<HubEvent> {
        self.wide.tx.subscribe()
    }

    fn send_wide(&self, call_sid: &str, name: &'static str, data: serde_json::Value) {
        let _ = self.wide.tx.send(HubEvent {
            call_sid: call_sid.to_string(),
            name,
            data,
        });
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveCall>> {
        // A poisoned lock still holds a valid table.
        self.wide.live.lock().unwrap_or_else(|p| p.into_inner())
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

    #[tokio::test]
    async fn the_hub_wide_feed_carries_every_call_with_states_and_the_live_table() {
        let hub = EventHub::default();
        let mut all = hub.subscribe_all();
        let at = Utc::now();
        hub.started(LiveCall {
            call_sid: "CA1".into(),
            from: Some("+15550001".into()),
            to: None,
            direction: "inbound".into(),
            started_at: at,
            state: CallState::Talking,
        });
        hub.publish(
            "CA1",
            CallEvent::ToolCalled {
                tool: "lookup".into(),
                call_id: "c1".into(),
                arguments: serde_json::json!({}),
                at,
            },
        );
        assert_eq!(hub.live_calls()[0].state, CallState::ToolRunning);
        hub.set_state("CA1", CallState::ToolRunning); // unchanged: not published again
        hub.publish(
            "CA1",
            CallEvent::Ended {
                end_reason: EndReason::CallerHungUp,
                at,
            },
        );
        let mut names = Vec::new();
        while let Ok(event) = all.try_recv() {
            assert_eq!(event.data["call_sid"], "CA1");
            names.push(event.name);
        }
        assert_eq!(
            names,
            ["call.started", "call.state", "tool.called", "call.ended"]
        );
        assert!(hub.live_calls().is_empty(), "ended calls leave the table");
    }

    #[tokio::test]
    async fn a_lagging_hub_wide_subscriber_is_told_rather_than_buffered() {
        let hub = EventHub::default();
        let mut all = hub.subscribe_all();
        for _ in 0..ALL_CAPACITY + 10 {
            hub.set_state("CA9", CallState::Talking);
        }
        assert!(matches!(
            all.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
    }
}
