//! Server events: what GPT-Live sends (and what the stand-in produces).
//!
//! Shapes from openai-python 3.51.0 `types/live/server_event.py` and the event files it names
//! (`session_started_event.py`, `output_audio_delta_event.py`, `input_transcript_delta_event.py`,
//! `output_transcript_delta_event.py`, `response_event.py`, `session_closed_event.py`,
//! `session_usage.py`, `error_event.py`, `error.py`, `info_event.py`). Only the fields the relay
//! uses are typed; `event_id` only where the transcript grouper needs it (deduplication). Unknown
//! types parse as [`ServerEvent::Unknown`]; audio deltas borrow from the frame (and
//! [`EventProbe`] reads them in one flat pass).

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize};

use super::session::SessionResource;

/// `type` of an assistant audio chunk, the one event on the per-frame path.
pub const OUTPUT_AUDIO_DELTA: &str = "session.output_audio.delta";

/// A server event, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerEvent<'a> {
    /// The session started; `session` is the resolved configuration (`None` when it does not
    /// match our model: the relay only needs to know it started).
    #[serde(rename = "session.started")]
    SessionStarted {
        #[serde(default, deserialize_with = "resource_if_valid")]
        session: Option<Box<SessionResource>>,
    },
    /// Assistant audio in the startup format (base64). `start_ms`/`end_ms` only on sideband
    /// connections; omitted on the primary WebSocket.
    #[serde(rename = "session.output_audio.delta")]
    OutputAudioDelta {
        #[serde(borrow)]
        delta: Cow<'a, str>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_ms: Option<u64>,
    },
    /// Caller transcript fragment; ms on the session timeline. No "done" event exists.
    #[serde(rename = "session.input_transcript.delta")]
    InputTranscriptDelta {
        #[serde(borrow)]
        event_id: Cow<'a, str>,
        #[serde(borrow)]
        delta: Cow<'a, str>,
        start_ms: u64,
        end_ms: u64,
    },
    /// Assistant transcript fragment; ms on the session timeline. No "done" event exists.
    #[serde(rename = "session.output_transcript.delta")]
    OutputTranscriptDelta {
        #[serde(borrow)]
        event_id: Cow<'a, str>,
        #[serde(borrow)]
        delta: Cow<'a, str>,
        start_ms: u64,
        end_ms: u64,
    },
    /// A Responses API stream event from the delegated backend (function calls arrive here).
    #[serde(rename = "response.event")]
    ResponseEvent {
        event: ResponsesEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delegation_id: Option<String>,
    },
    /// Acknowledges `session.input_audio.mute`.
    #[serde(rename = "session.input_audio.muted")]
    InputAudioMuted {},
    /// Acknowledges `session.input_audio.unmute`.
    #[serde(rename = "session.input_audio.unmuted")]
    InputAudioUnmuted {},
    /// Terminal: the session finished finalizing. Closing without it does not confirm
    /// finalization.
    #[serde(rename = "session.closed")]
    SessionClosed {
        reason: CloseReason,
        usage: SessionUsage,
    },
    /// An error, such as an invalid client command.
    #[serde(rename = "error")]
    Error { error: LiveError },
    /// An informational notice, e.g. `data_channel_permissions`.
    #[serde(rename = "info")]
    Info { code: String, message: String },
    /// Any other event type (decisions, delegation, usage updates, sideband transport events).
    #[serde(other)]
    Unknown,
}

/// Why the session ended (`session_closed_event.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// The application asked (`session.close`) or hung up.
    CloseRequested,
    /// The session duration limit.
    Expired,
    /// A safety filter.
    Content,
    /// A graceful remote disconnect.
    RemoteHangup,
    /// An unexpected primary or upstream disconnection.
    ConnectionLost,
}

impl CloseReason {
    /// The wire name, e.g. `close_requested`.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::CloseRequested => "close_requested",
            CloseReason::Expired => "expired",
            CloseReason::Content => "content",
            CloseReason::RemoteHangup => "remote_hangup",
            CloseReason::ConnectionLost => "connection_lost",
        }
    }
}

/// Cumulative audio usage of the session (`session_usage.py`): a total, never summed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SessionUsage {
    /// Seconds of Live audio.
    pub seconds: f64,
}

/// The `error` object (`error.py`): `code`, `message` and `type` are always present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    /// e.g. `invalid_request_error`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The client `event_id` of the command that caused it, when supplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_event_id: Option<String>,
    /// The offending parameter, e.g. `session.audio.format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// The nested Responses streaming event of `response.event` (openai-python
/// `types/responses/response_output_item_done_event.py`); only a finished output item is typed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResponsesEvent {
    /// An output item is done: for a `function_call`, its arguments are complete.
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        item: OutputItem,
        #[serde(default)]
        output_index: u32,
        #[serde(default)]
        sequence_number: u64,
    },
    /// Any other Responses stream event (`response.created`, deltas, `response.completed`, …).
    #[serde(other)]
    Other,
}

/// A Responses output item; only function calls are typed
/// (`types/responses/response_function_tool_call.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OutputItem {
    /// Run function `name` with `arguments` (a JSON string), answer with `call_id`.
    #[serde(rename = "function_call")]
    FunctionCall {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        call_id: String,
        name: String,
        arguments: String,
        /// `in_progress`, `completed` or `incomplete`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
    },
    /// Messages, reasoning and every other item type.
    #[serde(other)]
    Other,
}

impl ServerEvent<'_> {
    /// The completed function call this event carries, if it is one: `(call_id, name, arguments)`.
    pub fn function_call(&self) -> Option<(&str, &str, &str)> {
        match self {
            ServerEvent::ResponseEvent {
                event:
                    ResponsesEvent::OutputItemDone {
                        item:
                            OutputItem::FunctionCall {
                                call_id,
                                name,
                                arguments,
                                status,
                                ..
                            },
                        ..
                    },
                ..
            } if status.as_deref().is_none_or(|s| s == "completed") => {
                Some((call_id, name, arguments))
            }
            _ => None,
        }
    }
}

fn resource_if_valid<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<SessionResource>>, D::Error> {
    let value = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok().map(Box::new))
}

/// Hot-path view of any server event: its `type` and, for audio deltas, `delta`. One flat pass,
/// no buffering; callers parse [`ServerEvent`] for every other type.
#[derive(Debug, Deserialize)]
pub struct EventProbe<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "crate::borrowed::optional_str")]
    pub delta: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ServerEvent<'_> {
        serde_json::from_str(s).expect(s)
    }

    #[test]
    fn sdk_shaped_events_parse() {
        let started = parse(
            r#"{"type":"session.started","event_id":"ev_1","session":{"id":"sess_1","expires_at":1790000000,
            "model":"gpt-live-1","status":"active","audio":{"format":{"type":"audio/pcmu","rate":8000},
            "output":{"voice":"marin"}},"delegation":null,"instructions":"x"}}"#,
        );
        let ServerEvent::SessionStarted { session: Some(s) } = started else {
            panic!("{started:?}")
        };
        assert_eq!((s.id.as_str(), s.model.as_str()), ("sess_1", "gpt-live-1"));

        let delta = parse(
            r#"{"type":"session.input_transcript.delta","event_id":"ev_2","delta":"Hello","start_ms":120,"end_ms":480}"#,
        );
        assert_eq!(
            delta,
            ServerEvent::InputTranscriptDelta {
                event_id: "ev_2".into(),
                delta: "Hello".into(),
                start_ms: 120,
                end_ms: 480
            }
        );
        let closed = parse(
            r#"{"type":"session.closed","event_id":"ev_3","reason":"expired","session":{"id":"s"},"usage":{"seconds":61.5}}"#,
        );
        assert_eq!(
            closed,
            ServerEvent::SessionClosed {
                reason: CloseReason::Expired,
                usage: SessionUsage { seconds: 61.5 }
            }
        );
        let error = parse(
            r#"{"type":"error","event_id":"ev_4","error":{"code":"unknown_parameter","message":"m","type":"invalid_request_error","param":"session.voice","client_event_id":"c1"}}"#,
        );
        let ServerEvent::Error { error } = error else {
            panic!()
        };
        assert_eq!(error.param.as_deref(), Some("session.voice"));
        assert_eq!(error.client_event_id.as_deref(), Some("c1"));
        assert_eq!(
            parse(
                r#"{"type":"info","event_id":"e","code":"data_channel_permissions","message":"m"}"#
            ),
            ServerEvent::Info {
                code: "data_channel_permissions".into(),
                message: "m".into()
            }
        );
    }

    #[test]
    fn every_close_reason_parses() {
        for reason in [
            CloseReason::CloseRequested,
            CloseReason::Expired,
            CloseReason::Content,
            CloseReason::RemoteHangup,
            CloseReason::ConnectionLost,
        ] {
            let json = format!(
                r#"{{"type":"session.closed","event_id":"e","reason":"{}","usage":{{"seconds":1}}}}"#,
                reason.as_str()
            );
            assert!(
                matches!(parse(&json), ServerEvent::SessionClosed { reason: r, .. } if r == reason)
            );
        }
    }

    #[test]
    fn a_completed_function_call_comes_out_of_a_response_event() {
        let e = parse(
            r#"{"type":"response.event","event_id":"ev_9","delegation_id":"del_1","event":{"type":"response.output_item.done",
            "output_index":1,"sequence_number":7,"item":{"type":"function_call","id":"fc_1","call_id":"call_1",
            "name":"end_call","arguments":"{\"reason\":\"bye\"}","status":"completed"}}}"#,
        );
        assert_eq!(
            e.function_call(),
            Some(("call_1", "end_call", r#"{"reason":"bye"}"#))
        );
        for other in [
            r#"{"type":"response.event","event_id":"e","event":{"type":"response.created","response":{}}}"#,
            r#"{"type":"response.event","event_id":"e","event":{"type":"response.output_item.done","output_index":0,"sequence_number":1,"item":{"type":"message","id":"m"}}}"#,
        ] {
            assert!(parse(other).function_call().is_none(), "{other}");
        }
    }

    #[test]
    fn the_probe_borrows_an_audio_delta_and_unknown_events_are_unknown() {
        let e = r#"{"type":"session.output_audio.delta","delta":"//8="}"#;
        let probe: EventProbe = serde_json::from_str(e).unwrap();
        assert_eq!(probe.kind, OUTPUT_AUDIO_DELTA);
        assert!(matches!(probe.delta, Some(Cow::Borrowed("//8="))));
        assert!(matches!(
            parse(e),
            ServerEvent::OutputAudioDelta {
                delta: Cow::Borrowed("//8="),
                start_ms: None,
                ..
            }
        ));
        for sample in [
            r#"{"type":"session.usage.updated","event_id":"e","usage":{"seconds":3}}"#,
            r#"{"type":"session.delegation.created","event_id":"e"}"#,
            r#"{"type":"transport.ringing","event_id":"e","session_id":"s"}"#,
        ] {
            assert_eq!(parse(sample), ServerEvent::Unknown);
        }
    }
}
