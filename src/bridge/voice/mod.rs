//! The seam between a call and the upstream voice API (`OPENAI_API`): one module per API.
//!
//! The bridge speaks one vocabulary, the Realtime API's typed events ([`crate::realtime`]): it
//! sends [`ClientEvent`]s (caller audio, the session's settings, function call outputs,
//! responses asked for, truncates) and handles [`ServerEvent`]s (assistant audio, transcript
//! turns, caller speech, function calls, the end of a session). Each API here translates between
//! that vocabulary and its own wire format, in two halves because a call's two tasks own the two
//! halves of the socket: an [`Encoder`] on the inbound task (what goes upstream) and a
//! [`Decoder`] on the outbound task (what comes back).
//!
//! - `realtime`: the identity (the Realtime API is the vocabulary); costs nothing per frame.
//! - [`live`]: GPT-Live. It has no items, no responses and no speech events, so the decoder
//!   makes them up from the stream (see its docs), and the bridge detects barge-in itself
//!   ([`Decoder::detects_barge_in_locally`]) and paces its audio to Twilio.
//!
//! A third API is one more module here: an encoder from these client events, a decoder to these
//! server events, and its entries in the two enums below.

pub(crate) mod live;

use std::borrow::Cow;
use std::time::Duration;

use crate::config::{Config, VoiceApi};
use crate::realtime::{ClientEvent, ServerEvent};

/// At the end of a call, how long the server has to confirm a graceful close (GPT-Live
/// `session.close` → `session.closed`).
pub(crate) const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What one upstream frame means to the bridge.
pub(crate) enum Step<'a> {
    /// Assistant audio of item `item_id`: base64 μ-law, any length.
    Audio {
        item_id: Cow<'a, str>,
        delta: Cow<'a, str>,
    },
    /// An event in the bridge's vocabulary.
    Event(ServerEvent<'a>),
    /// The server ended the session (GPT-Live `session.closed`): why, and the audio it counted
    /// (seconds, cumulative for the session).
    Closed {
        reason: String,
        usage_seconds: Option<f64>,
    },
    /// A caller turn began (its words are on the way): item `item_id`.
    CallerTurn { item_id: String },
    /// A notice from the server (GPT-Live `info`): logged and counted.
    Info { code: String, message: String },
    /// An event type the bridge does not use: counted, never fatal.
    Unknown(String),
    /// A frame that could not be read: logged once with `reason` and counted by the caller.
    Malformed(String),
}

/// The upstream-bound half of a call's voice session (owned by the inbound task).
pub(crate) enum Encoder {
    Realtime,
    Live(live::Encoder),
}

impl Encoder {
    pub fn new(config: &Config) -> Self {
        match config.openai_api {
            VoiceApi::Realtime => Encoder::Realtime,
            VoiceApi::Live => Encoder::Live(live::Encoder::new(config)),
        }
    }

    /// A new upstream session starts: forget what the last one was told.
    pub fn new_session(&mut self) {
        if let Encoder::Live(e) = self {
            e.new_session();
        }
    }

    /// The upstream frame carrying one Twilio `media` payload (checked base64), built by copying:
    /// the per-frame path.
    pub fn append_json(&self, audio: &str) -> String {
        match self {
            Encoder::Realtime => crate::realtime::append_json(audio),
            Encoder::Live(_) => live::append_json(audio),
        }
    }

    /// The frames that carry one of the bridge's client events (JSON of a [`ClientEvent`]):
    /// itself on the Realtime API; zero or more on others (an event an API has no equivalent
    /// for is dropped, with a debug line).
    pub fn encode(&mut self, json: String) -> Vec<String> {
        match self {
            Encoder::Realtime => vec![json],
            Encoder::Live(e) => match serde_json::from_str::<ClientEvent>(&json) {
                Ok(event) => e.encode(event),
                Err(error) => {
                    tracing::warn!(%error, "a client event the bridge built does not parse: not sent");
                    Vec::new()
                }
            },
        }
    }

    /// The frame asking the server to end the session gracefully, if the API has one
    /// (GPT-Live `session.close`, answered by `session.closed`).
    pub fn close_request(&self) -> Option<String> {
        match self {
            Encoder::Realtime => None,
            Encoder::Live(_) => Some(live::close_json()),
        }
    }
}

/// The Twilio-bound half of a call's voice session (owned by the outbound task).
pub(crate) enum Decoder {
    Realtime,
    Live(live::Decoder),
}

impl Decoder {
    pub fn new(config: &Config) -> Self {
        match config.openai_api {
            VoiceApi::Realtime => Decoder::Realtime,
            VoiceApi::Live => Decoder::Live(live::Decoder::default()),
        }
    }

    /// Whether the API reports neither the caller's speech nor interruptions, so the bridge
    /// must hear barge-in itself and pace its audio to Twilio.
    pub fn detects_barge_in_locally(&self) -> bool {
        matches!(self, Decoder::Live(_))
    }

    /// Whether the API ends sessions with a closing event worth waiting for at the end of a call.
    pub fn closes_gracefully(&self) -> bool {
        matches!(self, Decoder::Live(_))
    }
}
