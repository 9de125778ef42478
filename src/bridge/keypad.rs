//! The caller's keypad: Twilio's `dtmf` keys pressed within `DTMF_GAP_MS` of each other become
//! one user message ("The caller pressed 4 2 7 #", then `response.create`) and one caller turn
//! with `dtmf`; the gap is one more deadline of the loop's single timer ([`super::clock`]).

use chrono::Utc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::outbound::Outbound;
use crate::events::CallEvent;
use crate::realtime::ClientEvent;
use crate::transcript::{Role, Turn};

/// Keys held before they are sent without waiting for the gap.
const MAX_DTMF_KEYS: usize = 32;
/// The keys Twilio reports.
const DTMF_KEYS: &str = "0123456789*#ABCDabcd";

impl Outbound {
    /// Twilio reported a key press.
    pub(super) async fn dtmf(&mut self, key: &str) {
        if !self.tools.dtmf_enabled {
            info!(
                digit = key,
                "caller pressed a key (DTMF=off: not passed on)"
            );
            return;
        }
        if key.len() != 1 || !DTMF_KEYS.contains(key) {
            warn!(digit = key, "ignored a DTMF event that is not a key");
            return;
        }
        self.tools.keys.push_str(key);
        self.tools.keys_due = Some(Instant::now() + self.tools.dtmf_gap);
        if self.tools.keys.len() >= MAX_DTMF_KEYS {
            self.send_keys().await;
        }
    }

    /// The gap after the last key passed: the keys reach the model as one user message.
    pub(super) async fn send_keys(&mut self) {
        self.tools.keys_due = None;
        let keys = std::mem::take(&mut self.tools.keys);
        if keys.is_empty() {
            return;
        }
        let spaced: Vec<String> = keys.chars().map(String::from).collect();
        let text = format!("The caller pressed {}", spaced.join(" "));
        info!(keys, "the caller pressed keys");
        self.upstream(ClientEvent::user_text(text.clone()).to_json())
            .await;
        self.request_response().await;
        let at = Utc::now();
        self.publish(CallEvent::Final {
            speaker: Role::Caller,
            text: text.clone(),
            at,
        });
        if let Some(t) = self.transcript.as_mut() {
            let mut turn = Turn::new(Role::Caller, text, at);
            turn.dtmf = Some(keys);
            if t.add(turn) {
                self.save().await;
            }
        }
    }
}
