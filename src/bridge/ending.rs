//! The assistant ends the call: after `end_call`, wait for the response to finish and its audio
//! to play out (the last mark echoed), then hang up through Twilio's REST API when credentials
//! are configured — otherwise close the stream, and Twilio moves on to the TwiML after
//! `<Connect>` (the fallback `<Say>`).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::outbound::Outbound;
use super::playback::Playback;
use crate::config::END_CALL_TOOL;
use crate::realtime::client::Item;
use crate::realtime::ClientEvent;
use crate::transcript::EndReason;

/// Longest wait for the goodbye to finish playing before hanging up anyway.
const GOODBYE_LIMIT: Duration = Duration::from_secs(15);

/// An `end_call` in progress.
#[derive(Debug)]
pub(super) struct Ending {
    response_id: String,
    response_done: bool,
    deadline: Instant,
}

impl Ending {
    /// The model called `end_call` in response `response_id`.
    pub fn new(response_id: &str) -> Self {
        Ending {
            response_id: response_id.to_string(),
            // Without a response id we cannot wait for its end; rely on playback alone.
            response_done: response_id.is_empty(),
            deadline: Instant::now() + GOODBYE_LIMIT,
        }
    }

    /// `response.done` arrived for `response_id`.
    pub fn response_done(&mut self, response_id: &str) {
        if response_id == self.response_id {
            self.response_done = true;
        }
    }

    /// Hang up now: the response is over and Twilio has played all its audio.
    pub fn ready(&self, playback: &Playback) -> bool {
        self.response_done && !playback.is_playing()
    }

    /// When to hang up even if the goodbye has not finished.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

impl Outbound {
    /// The model called a function: `end_call` starts the ending, anything else gets an error
    /// output and a new response.
    pub(super) async fn function_call(
        &mut self,
        name: &str,
        call_id: &str,
        response_id: &str,
        arguments: &str,
    ) {
        let known = name == END_CALL_TOOL;
        let output = if known {
            r#"{"ok":true}"#
        } else {
            r#"{"error":"unknown function"}"#
        };
        let answer = ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: call_id.to_string(),
                output: output.to_string(),
            },
        };
        self.upstream(answer.to_json()).await;
        if known {
            info!(
                arguments,
                "the assistant is ending the call; waiting for its goodbye to play"
            );
            self.ending = Some(Ending::new(response_id));
        } else {
            warn!(name, "the model called an unknown function");
            self.upstream(ClientEvent::ResponseCreate {}.to_json())
                .await;
        }
    }

    /// Hang up through Twilio when possible. The reason is recorded first so that the `stop`
    /// Twilio sends in response is not taken for the caller hanging up.
    pub(super) async fn hang_up(&mut self) {
        self.ctx.handle.set_reason(EndReason::AssistantHungUp);
        let (Some(twilio), Some(call_sid)) = (self.ctx.app.twilio.clone(), self.call_sid.clone())
        else {
            info!("the assistant ended the call; no Twilio credentials, so closing the stream");
            return;
        };
        // The stream is up, so the call is in progress: `completed`.
        match twilio.hang_up(&call_sid, None).await {
            Ok(_) => info!("the assistant hung up the call"),
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
