//! Silent callers (`CALLER_IDLE_SECS`, `CALLER_IDLE_PROMPTS`): after that long with nothing said
//! on the line, the assistant asks whether the caller is still there; after that many prompts with
//! no caller speech in between, it says goodbye and the call ends (`caller_idle`).
//!
//! With `server_vad` the server does the prompting: the session's `turn_detection.idle_timeout_ms`
//! makes it send `input_audio_buffer.timeout_triggered` and respond (`PROTOCOLS.md` § "Where the
//! newer facts come from", "Idle callers"), and the relay counts those. Once the prompts are used
//! up the relay sends a `session.update` without the timeout (so the server stops prompting) and
//! its own clock decides when to say goodbye. With `semantic_vad` (which has no idle timeout) the
//! relay's clock does both. The clock starts at a quiet moment ([`Outbound::quiet`]: the
//! assistant's audio has played, nothing is in progress) and any activity stops it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::outbound::Outbound;
use crate::config::{Config, TurnDetectionKind};
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::ClientEvent;
use crate::transcript::EndReason;

/// What the model is told when the caller has been quiet too long.
const IDLE_GOODBYE_PROMPT: &str = "The caller has not said anything for a while. Say a short goodbye; the call will then end. Do not ask anything.";

/// The idle clock of one call.
#[derive(Debug)]
pub(super) struct IdleWatch {
    /// `CALLER_IDLE_SECS`; `None`: off.
    after: Option<Duration>,
    /// `CALLER_IDLE_PROMPTS`.
    allowed: u32,
    /// Prompts since the caller last spoke.
    prompts: u32,
    /// `server_vad`: the server prompts through `idle_timeout_ms`.
    server_prompts: bool,
    /// Since when the line has been quiet.
    since: Option<Instant>,
}

/// What the relay's idle clock asks for when it runs out.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum IdleAction {
    Prompt,
    Goodbye,
}

impl IdleWatch {
    pub fn new(config: &Config) -> Self {
        IdleWatch {
            after: (config.caller_idle_secs > 0)
                .then(|| Duration::from_secs(config.caller_idle_secs)),
            allowed: config.caller_idle_prompts,
            prompts: 0,
            server_prompts: config.turn_detection == TurnDetectionKind::ServerVad,
            since: None,
        }
    }

    /// Whether idle prompts are on at all.
    pub fn enabled(&self) -> bool {
        self.after.is_some()
    }

    /// `turn_detection.idle_timeout_ms` for the next `session.update`: set while the server is
    /// to prompt (server VAD, prompts left), ms.
    pub fn server_timeout_ms(&self) -> Option<u64> {
        let after = self.after?;
        (self.server_prompts && self.prompts < self.allowed).then_some(after.as_millis() as u64)
    }

    /// Start the clock at a quiet moment, stop it at any activity.
    pub fn observe(&mut self, quiet: bool) {
        match (quiet, self.since) {
            (true, None) => self.since = Some(Instant::now()),
            (false, Some(_)) => self.since = None,
            _ => {}
        }
    }

    /// When the relay's own clock runs out: always with `semantic_vad`, and with `server_vad`
    /// once the server's prompts are used up.
    pub fn deadline(&self) -> Option<Instant> {
        let relay_driven = !self.server_prompts || self.prompts >= self.allowed;
        match (self.after, self.since) {
            (Some(after), Some(since)) if relay_driven => Some(since + after),
            _ => None,
        }
    }

    /// The relay's clock ran out: prompt again, or say goodbye.
    pub fn fired(&mut self) -> IdleAction {
        self.since = None;
        if self.prompts < self.allowed {
            self.prompts += 1;
            IdleAction::Prompt
        } else {
            IdleAction::Goodbye
        }
    }

    /// The server prompted (`timeout_triggered`). Returns whether that used up the prompts, so
    /// the server must be told to stop (a `session.update` without the timeout).
    pub fn server_prompted(&mut self) -> bool {
        self.prompts += 1;
        self.server_prompts && self.prompts == self.allowed
    }

    /// The caller spoke: the prompts start over. Returns whether the server must be told to
    /// prompt again (it had been stopped).
    pub fn caller_spoke(&mut self) -> bool {
        let stopped = self.server_prompts && self.enabled() && self.prompts >= self.allowed;
        self.prompts = 0;
        stopped && self.allowed > 0
    }

    /// Prompts since the caller last spoke.
    pub fn prompts(&self) -> u32 {
        self.prompts
    }
}

impl Outbound {
    /// The relay's idle clock ran out.
    pub(super) async fn idle_timeout(&mut self) {
        let secs = self.ctx.app.config.caller_idle_secs;
        match self.idle.fired() {
            IdleAction::Prompt => {
                info!(
                    idle_s = secs,
                    prompt = self.idle.prompts(),
                    "the caller is silent; the assistant checks they are still there"
                );
                let text = format!("The caller has not said anything for {secs} seconds. Briefly ask whether they are still there.");
                let message = ClientEvent::ConversationItemCreate {
                    item: Item::Message {
                        role: "system".into(),
                        content: vec![ContentPart::InputText { text }],
                    },
                };
                self.upstream(message.to_json()).await;
                self.upstream(ClientEvent::ResponseCreate {}.to_json())
                    .await;
            }
            IdleAction::Goodbye => {
                info!(
                    prompts = self.idle.prompts(),
                    "the caller stayed silent; the assistant says goodbye"
                );
                self.say_goodbye(EndReason::CallerIdle, IDLE_GOODBYE_PROMPT)
                    .await;
            }
        }
    }

    /// `input_audio_buffer.timeout_triggered`: the server prompted the caller.
    pub(super) async fn server_idle_prompt(&mut self) {
        info!(
            prompt = self.idle.prompts() + 1,
            "the caller is silent; the Realtime API prompts them"
        );
        if self.idle.server_prompted() {
            let update = self.session_update();
            self.upstream(update).await;
        }
    }

    /// The caller started speaking: idle prompts start over.
    pub(super) async fn caller_spoke(&mut self) {
        if self.idle.caller_spoke() {
            let update = self.session_update();
            self.upstream(update).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(kind: TurnDetectionKind, prompts: u32) -> IdleWatch {
        IdleWatch::new(&Config {
            caller_idle_secs: 8,
            caller_idle_prompts: prompts,
            turn_detection: kind,
            ..Config::default()
        })
    }

    #[test]
    fn with_server_vad_the_server_prompts_then_the_relay_says_goodbye() {
        let mut w = watch(TurnDetectionKind::ServerVad, 2);
        assert_eq!(w.server_timeout_ms(), Some(8000));
        w.observe(true);
        assert_eq!(w.deadline(), None, "the server's clock runs, not ours");
        assert!(!w.server_prompted());
        assert!(w.server_prompted(), "the second prompt uses them up");
        assert_eq!(w.server_timeout_ms(), None);
        assert!(w.deadline().is_some());
        assert_eq!(w.fired(), IdleAction::Goodbye);
        assert!(
            w.caller_spoke(),
            "speech turns the server's prompts back on"
        );
        assert_eq!(w.server_timeout_ms(), Some(8000));
    }

    #[test]
    fn with_semantic_vad_the_relay_prompts_and_says_goodbye() {
        let mut w = watch(TurnDetectionKind::SemanticVad, 1);
        assert_eq!(w.server_timeout_ms(), None);
        w.observe(true);
        assert!(w.deadline().is_some());
        assert_eq!(w.fired(), IdleAction::Prompt);
        assert_eq!(
            w.deadline(),
            None,
            "the clock restarts at the next quiet moment"
        );
        w.observe(false);
        w.observe(true);
        assert_eq!(w.fired(), IdleAction::Goodbye);
        assert!(!w.caller_spoke());
        assert_eq!(w.prompts(), 0);
    }

    #[test]
    fn off_by_default() {
        let mut w = IdleWatch::new(&Config::default());
        w.observe(true);
        assert!(!w.enabled());
        assert_eq!(w.deadline(), None);
        assert_eq!(w.server_timeout_ms(), None);
    }
}
