//! Ending a call after a goodbye: the assistant's `end_call` (and `transfer_call`'s handoff line,
//! see [`super::tools`]), the call-length cap
//! (`MAX_CALL_SECS`) and a silent caller (`CALLER_IDLE_SECS`). In each case the relay waits for the
//! goodbye's response to finish and its audio to play out (the last mark echoed, at most
//! [`GOODBYE_LIMIT`]), then hangs up through Twilio's REST API when credentials are configured —
//! otherwise closes the stream, and Twilio moves on to the TwiML after `<Connect>` (the fallback
//! `<Say>`).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::outbound::Outbound;
use super::playback::Playback;
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::ClientEvent;
use crate::transcript::EndReason;

/// Longest wait for the goodbye to finish playing before hanging up anyway.
const GOODBYE_LIMIT: Duration = Duration::from_secs(15);

/// What the model is told when the call reaches `MAX_CALL_SECS`.
const MAX_DURATION_PROMPT: &str = "The call has reached its time limit and will end now. Tell the caller so in one short sentence and say goodbye. Do not ask anything.";

/// A goodbye in progress: hang up once its response is done and has played.
#[derive(Debug)]
pub(super) struct Ending {
    reason: EndReason,
    /// The response carrying the goodbye; `None`: the next response created.
    response_id: Option<String>,
    response_done: bool,
    deadline: Instant,
}

impl Ending {
    /// The model called `end_call` in response `response_id`.
    pub fn end_call(response_id: &str) -> Self {
        Ending {
            reason: EndReason::AssistantHungUp,
            response_id: Some(response_id.to_string()),
            // Without a response id we cannot wait for its end; rely on playback alone.
            response_done: response_id.is_empty(),
            deadline: Instant::now() + GOODBYE_LIMIT,
        }
    }

    /// The relay asked for a goodbye: it is the next response the session creates.
    pub fn goodbye(reason: EndReason) -> Self {
        Ending {
            reason,
            response_id: None,
            response_done: false,
            deadline: Instant::now() + GOODBYE_LIMIT,
        }
    }

    /// `response.created` arrived: the first one after a requested goodbye carries it.
    pub fn response_created(&mut self, response_id: &str) {
        if self.response_id.is_none() {
            self.response_id = Some(response_id.to_string());
        }
    }

    /// `response.done` arrived for `response_id`.
    pub fn response_done(&mut self, response_id: &str) {
        if self.response_id.as_deref() == Some(response_id) {
            self.response_done = true;
        }
    }

    /// The session ended (renewed or reconnected): its response cannot go on, so hang up once
    /// what Twilio has queued has played.
    pub fn session_ended(&mut self) {
        self.response_done = true;
    }

    /// Hang up now: the response is over and Twilio has played all its audio.
    pub fn ready(&self, playback: &Playback) -> bool {
        self.response_done && !playback.is_playing()
    }

    /// When to hang up even if the goodbye has not finished.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The call's `end_reason` once hung up.
    pub fn reason(&self) -> EndReason {
        self.reason
    }
}

impl Outbound {
    /// The call reached `MAX_CALL_SECS`: ask for a one-sentence goodbye, then hang up.
    pub(super) async fn max_duration_reached(&mut self) {
        self.max_call_at = None;
        info!(
            max_call_secs = self.ctx.app.config.max_call_secs,
            "the call reached its maximum length; the assistant says goodbye"
        );
        self.say_goodbye(EndReason::MaxDuration, MAX_DURATION_PROMPT)
            .await;
    }

    /// Tell the model to say goodbye now (`prompt`, as a system message) and end the call with
    /// `reason` once it has played. A response in progress is cancelled first; an ending already
    /// under way is left to finish.
    pub(super) async fn say_goodbye(&mut self, reason: EndReason, prompt: &str) {
        if self.ending.is_some() {
            return;
        }
        if self.response_active {
            self.upstream(ClientEvent::ResponseCancel {}.to_json())
                .await;
        }
        let message = ClientEvent::ConversationItemCreate {
            item: Item::Message {
                role: "system".into(),
                content: vec![ContentPart::InputText {
                    text: prompt.into(),
                }],
            },
        };
        self.upstream(message.to_json()).await;
        self.upstream(ClientEvent::ResponseCreate {}.to_json())
            .await;
        self.ending = Some(Ending::goodbye(reason));
    }

    /// Hang up through Twilio when possible. The reason is recorded first so that the `stop`
    /// Twilio sends in response is not taken for the caller hanging up.
    pub(super) async fn hang_up(&mut self, reason: EndReason) {
        self.ctx.handle.set_reason(reason);
        let (Some(twilio), Some(call_sid)) = (self.ctx.app.twilio.clone(), self.call_sid.clone())
        else {
            info!(
                end_reason = reason.as_str(),
                "ending the call; no Twilio credentials, so closing the stream"
            );
            return;
        };
        // The stream is up, so the call is in progress: `completed`.
        match twilio.hang_up(&call_sid, None).await {
            Ok(_) => info!(end_reason = reason.as_str(), "hung up the call"),
            Err(e) if e.is_not_found() => info!("the call had already ended"),
            Err(e) => {
                self.ctx
                    .app
                    .stats
                    .error(crate::stats::ErrorKind::TwilioRest);
                warn!(error = %e, "could not hang up through Twilio; closing the stream");
            }
        }
    }
}
