//! Session renewal: a Realtime session lasts at most 60 minutes, a phone call can last four hours.
//!
//! Two ways a session is replaced mid-call, neither of them a failure (no fallback, no error
//! counted, `session_renewals_total{trigger}` and the transcript's `session_renewals` count them):
//! - **Proactive** (`SESSION_RENEW_SECS` after the session opened): the next session's socket is
//!   opened while this one keeps serving, and the call switches to it at the first quiet moment
//!   ([`Outbound::quiet`]: nothing unplayed at Twilio, no response in progress, the caller not in a
//!   turn), so the caller hears no gap.
//! - **On expiry**: at its limit the API sends `error` `session_expired` and closes the socket
//!   (`PROTOCOLS.md` § "Where the newer facts come from", "Session limit"). The call moves to the
//!   socket opened in advance if there is one, else opens a new one, keeping the caller's audio
//!   meanwhile. If the caller was in the middle of a turn, the new session is asked to answer
//!   ([`FollowUp`]).
//!
//! Either way the new session gets the call's `session.update` and the conversation so far
//! ([`Outbound::resume`]). Real failures (drops, refusals) are handled by the supervisor's
//! one-reconnect policy instead.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

use super::outbound::Outbound;
use crate::app::AppState;
use crate::stats::ErrorKind;
use crate::transcript::{EndReason, Role};
use crate::upstream::{self, UpstreamError, UpstreamSocket};

/// The `error.code` the Realtime API sends when a session reaches its maximum duration.
pub(crate) const SESSION_EXPIRED: &str = "session_expired";

/// After an expiry mid-turn, how long the new session may take to hear the rest of the caller's
/// utterance before it is asked to answer anyway.
pub(super) const FOLLOW_UP_AFTER: Duration = Duration::from_millis(1500);

/// Why one upstream session ended while the call goes on.
pub(super) enum SessionEnd {
    /// The API ended the session at its maximum duration; `next` is a socket opened in advance.
    Expired { next: Option<UpstreamSocket> },
    /// Switched at a quiet moment to this already-open socket.
    Renewed(UpstreamSocket),
    /// The session failed (dropped, closed, refused): the supervisor's reconnect policy applies.
    Failed(EndReason),
}

/// What the caller's turn was doing when the session expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum FollowUp {
    /// Nothing in flight.
    #[default]
    None,
    /// The caller had finished speaking (or a reply was being generated): ask for the reply.
    Respond,
    /// The caller was speaking: the new session hears the rest; if it hears no speech within
    /// [`FOLLOW_UP_AFTER`], ask for the reply anyway.
    RespondIfSilent,
}

impl FollowUp {
    /// What the next session must do when the session expired with the caller's turn at
    /// `caller_turn` and a response in progress or not.
    pub fn after_expiry(caller_turn: CallerTurn, response_active: bool) -> Self {
        match (caller_turn, response_active) {
            (CallerTurn::Speaking, _) => FollowUp::RespondIfSilent,
            (CallerTurn::Stopped, _) | (_, true) => FollowUp::Respond,
            (CallerTurn::Quiet, false) => FollowUp::None,
        }
    }

    /// For logs: `none`, `respond`, `respond_if_silent`.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowUp::None => "none",
            FollowUp::Respond => "respond",
            FollowUp::RespondIfSilent => "respond_if_silent",
        }
    }
}

/// Where the caller's turn is, as the server's turn detection reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum CallerTurn {
    /// No turn in progress (or it has been answered).
    #[default]
    Quiet,
    /// `speech_started` without `speech_stopped`.
    Speaking,
    /// `speech_stopped`, no response created for it yet.
    Stopped,
}

/// One session's proactive renewal: when it is due, the socket being opened, the socket ready.
pub(super) struct Renewal {
    due: Option<Instant>,
    opening: Option<AbortOnDropHandle<Result<(UpstreamSocket, Duration), UpstreamError>>>,
    pub(super) ready: Option<UpstreamSocket>,
}

impl Renewal {
    /// For a session opened now; `after` = `SESSION_RENEW_SECS` (0: never renew proactively).
    pub fn new(after_secs: u64) -> Self {
        Renewal {
            due: (after_secs > 0).then(|| Instant::now() + Duration::from_secs(after_secs)),
            opening: None,
            ready: None,
        }
    }

    /// When the next session should start opening, if it has not yet.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Start opening the next session's socket in the background.
    pub fn start(&mut self, app: &AppState) {
        self.due = None;
        let app = app.clone();
        info!("session renewal due: opening the next Realtime session in the background");
        self.opening = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            upstream::connect(&app.config).await
        })));
    }

    /// Resolves when the background open finishes (never, if none is running).
    pub async fn opened(&mut self) -> Result<(UpstreamSocket, Duration), UpstreamError> {
        match self.opening.as_mut() {
            Some(handle) => {
                let result = handle.await;
                self.opening = None;
                result.unwrap_or_else(|e| Err(UpstreamError::Request(format!("task failed: {e}"))))
            }
            None => std::future::pending().await,
        }
    }

    /// The background open finished: keep the socket until a quiet moment, or give up on
    /// proactive renewal for this session (renewal on expiry still works).
    pub fn settle(
        &mut self,
        app: &AppState,
        result: Result<(UpstreamSocket, Duration), UpstreamError>,
    ) {
        match result {
            Ok((socket, took)) => {
                app.stats.upstream_connected(took);
                info!(
                    connect_ms = took.as_millis() as u64,
                    "next Realtime session open; switching at the first quiet moment"
                );
                self.ready = Some(socket);
            }
            Err(e) => {
                app.stats.error(ErrorKind::UpstreamConnect);
                warn!(error = %e, "could not open the next Realtime session early; the call renews when the session expires");
            }
        }
    }

    /// Whether a background open is running.
    pub fn opening(&self) -> bool {
        self.opening.is_some()
    }
}

impl Outbound {
    /// A quiet moment: nothing unplayed at Twilio, no response in progress or about to start, the
    /// caller not in a turn (its transcript, if transcribed, arrived), no ending or update pending.
    pub(super) fn quiet(&self) -> bool {
        !self.playback.is_playing()
            && self.pacer.is_empty()
            && !self.response_active
            && self.caller_turn == CallerTurn::Quiet
            && self.ending.is_none()
            && self.pending_updates == 0
            && !(self.transcribes_caller
                && self
                    .transcript
                    .as_ref()
                    .is_some_and(|t| t.has_pending(Role::Caller)))
    }

    /// The API expired the session: decide what the next session must do for the turn in flight.
    pub(super) fn expired(&mut self) {
        self.follow_up = FollowUp::after_expiry(self.caller_turn, self.response_active);
        info!(
            follow_up = self.follow_up.as_str(),
            "the Realtime session reached its maximum duration; renewing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_mid_turn_makes_the_next_session_answer_the_caller() {
        use CallerTurn::*;
        assert_eq!(FollowUp::after_expiry(Quiet, false), FollowUp::None);
        assert_eq!(
            FollowUp::after_expiry(Quiet, true),
            FollowUp::Respond,
            "a reply was cut off"
        );
        assert_eq!(
            FollowUp::after_expiry(Stopped, false),
            FollowUp::Respond,
            "no reply yet"
        );
        assert_eq!(
            FollowUp::after_expiry(Speaking, true),
            FollowUp::RespondIfSilent,
            "the new session hears the rest of the utterance"
        );
    }

    #[test]
    fn proactive_renewal_is_due_after_session_renew_secs_or_never() {
        assert!(Renewal::new(0).due().is_none());
        let due = Renewal::new(3300).due().expect("due");
        let expected = Instant::now() + Duration::from_secs(3300);
        assert!(due <= expected && due + Duration::from_secs(1) > expected);
    }
}
