//! Everything in a session's OpenAI → Twilio loop that happens at a time rather than on a
//! message: the goodbye's limit, proactive renewal, `MAX_CALL_SECS`, the caller-idle clock, the
//! follow-up after an expiry, the keypad's `DTMF_GAP_MS`, and the two upstream watchdogs (`session.updated` within
//! `OPENAI_CONNECT_TIMEOUT_MS`, no stall longer than `OPENAI_STALL_TIMEOUT_MS` while a response
//! is in progress).
//!
//! One timer serves them all: the loop computes the earliest deadline (a handful of comparisons)
//! and resets its one `Sleep` only when that changes, so a frame costs no timer work. Deadlines
//! that would move on every frame (the stall watchdog) are re-armed lazily when they fire.

use tokio::time::Instant;
use tracing::warn;

use super::outbound::Outbound;
use super::renewal::Renewal;
use crate::stats::ErrorKind;
use crate::transcript::EndReason;

/// What one session's loop must do after its timer fired.
pub(super) enum Fired {
    /// Nothing ends: go on.
    Continue,
    /// The call ends (a goodbye ran out of time and was hung up).
    CallEnded,
    /// The session failed (a watchdog fired): the supervisor's reconnect policy applies.
    SessionFailed(EndReason),
}

/// The watchdogs of one upstream session.
#[derive(Debug)]
pub(super) struct Watchdogs {
    /// `session.updated` must arrive by then (cleared when it does).
    pub configured_by: Option<Instant>,
    /// While a response is in progress: check for a stall then.
    pub stall_check_at: Option<Instant>,
    /// When the last upstream event arrived.
    pub last_event: Instant,
}

impl Watchdogs {
    /// For a session whose `session.update` was just sent.
    pub fn new(out: &Outbound) -> Self {
        let now = Instant::now();
        Watchdogs {
            configured_by: Some(now + out.connect_timeout()),
            stall_check_at: None,
            last_event: now,
        }
    }
}

impl Outbound {
    /// The earliest deadline of this session's loop, if any.
    pub(super) fn next_deadline(&self, renewal: &Renewal, dogs: &Watchdogs) -> Option<Instant> {
        [
            self.ending.as_ref().map(|e| e.deadline()),
            renewal.due(),
            self.max_call_at,
            self.idle.deadline(),
            self.follow_up_at,
            self.tools.keys_due(),
            dogs.configured_by,
            dogs.stall_check_at,
            self.voice_deadline(),
            self.pace_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A response started or ended: arm or disarm the stall watchdog.
    pub(super) fn watch_response(&self, dogs: &mut Watchdogs) {
        match (self.response_active, dogs.stall_check_at) {
            (true, None) => dogs.stall_check_at = Some(Instant::now() + self.stall_timeout()),
            (false, Some(_)) => dogs.stall_check_at = None,
            _ => {}
        }
    }

    /// The timer fired at `now`: handle every deadline that is due, earliest concern first.
    pub(super) async fn on_timer(
        &mut self,
        now: Instant,
        renewal: &mut Renewal,
        dogs: &mut Watchdogs,
    ) -> Fired {
        if self.ending.as_ref().is_some_and(|e| e.deadline() <= now) {
            warn!("the goodbye did not finish playing in time; hanging up now");
            let reason = self
                .ending
                .as_ref()
                .map_or(EndReason::AssistantHungUp, |e| e.reason());
            if self.end_now(reason).await {
                self.ctx.end(reason);
                return Fired::CallEnded;
            }
        }
        if dogs.configured_by.is_some_and(|at| at <= now) {
            return self.watchdog_failed(
                "the Realtime API accepted the socket but never confirmed the session.update",
            );
        }
        if dogs.stall_check_at.is_some_and(|at| at <= now) {
            let stalls_at = dogs.last_event + self.stall_timeout();
            if stalls_at > now {
                dogs.stall_check_at = Some(stalls_at);
            } else {
                return self.watchdog_failed(
                    "a response stalled: no event from the Realtime API within OPENAI_STALL_TIMEOUT_MS",
                );
            }
        }
        if renewal.due().is_some_and(|at| at <= now) {
            renewal.start(&self.ctx.app);
        }
        if self.max_call_at.is_some_and(|at| at <= now) {
            self.max_duration_reached().await;
        }
        if self.idle.deadline().is_some_and(|at| at <= now) {
            self.idle_timeout().await;
        }
        if self.follow_up_at.is_some_and(|at| at <= now) {
            self.follow_up().await;
        }
        if self.tools.keys_due().is_some_and(|at| at <= now) {
            self.send_keys().await;
        }
        if self.voice_deadline().is_some_and(|at| at <= now) && self.voice_timer(now).await.is_err()
        {
            self.ctx.end(EndReason::TwilioDisconnected);
            return Fired::CallEnded;
        }
        if self.pace_deadline().is_some_and(|at| at <= now) && self.pump().await.is_err() {
            self.ctx.end(EndReason::TwilioDisconnected);
            return Fired::CallEnded;
        }
        Fired::Continue
    }

    fn watchdog_failed(&self, why: &str) -> Fired {
        self.ctx.app.stats.error(ErrorKind::UpstreamTimeout);
        warn!(reason = why, "treating the Realtime session as failed");
        Fired::SessionFailed(EndReason::UpstreamError)
    }
}
