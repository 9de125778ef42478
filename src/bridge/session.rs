//! One call's Realtime session setup: Twilio's `start` (record, registry entry, per-call
//! overrides), the `session.update`s (`PROTOCOLS.md` § "OpenAI Realtime API — GA only"), the
//! greeting once every update is applied, and the conversation handed to a new session after a
//! reconnect.

use tracing::info;

use super::outbound::Outbound;
use super::CallInfo;
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::ClientEvent;
use crate::records::CallRecord;
use crate::twilio::media::MediaJson;

impl Outbound {
    /// Twilio's `start`: the call's record, registry entry, transcript and overrides.
    pub(super) async fn started(&mut self, info: CallInfo) {
        let app = &self.ctx.app;
        app.active.register(&info.call_sid, self.ctx.handle.clone());
        let (from, to) = (info.param("From"), info.param("To"));
        app.records
            .update(
                &info.call_sid,
                || CallRecord::new(&info.call_sid, "inbound", "in-progress"),
                |r| {
                    if !r.is_ended() {
                        r.status = "in-progress".into();
                    }
                    r.from = r.from.take().or(from.map(str::to_string));
                    r.to = r.to.take().or(to.map(str::to_string));
                },
            )
            .await;
        if let Some(settings) = info.param("CallRef").and_then(|r| app.pending.take(r)) {
            let changes_session = settings.instructions.is_some() || settings.voice.is_some();
            self.settings = settings;
            if changes_session {
                let update = self.session_update();
                self.upstream(update).await;
                info!("applied this call's instructions/voice");
            }
        }
        self.transcript = Some(info.transcript());
        self.call_sid = Some(info.call_sid);
        self.media_json = Some(MediaJson::new(&info.stream_sid));
        self.stream_sid = Some(info.stream_sid);
        self.maybe_greet().await;
    }

    /// Ask for the greeting once every `session.update` is applied and Twilio has started.
    pub(super) async fn maybe_greet(&mut self) {
        let greeting = self
            .settings
            .greeting
            .clone()
            .or_else(|| self.ctx.app.config.greeting.clone());
        let Some(greeting) = greeting else {
            return;
        };
        if self.greeted || self.pending_updates > 0 || self.stream_sid.is_none() {
            return;
        }
        self.greeted = true;
        let prompt = format!("Greet the caller by saying exactly: \"{greeting}\"");
        self.upstream(ClientEvent::user_text(prompt).to_json())
            .await;
        self.upstream(ClientEvent::ResponseCreate {}.to_json())
            .await;
    }

    /// A `session.update` with this call's settings; counted until `session.updated` answers.
    pub(super) fn session_update(&mut self) -> String {
        self.pending_updates += 1;
        let session = self.ctx.app.config.session_for(&self.settings);
        ClientEvent::SessionUpdate {
            session: Box::new(session),
        }
        .to_json()
    }

    /// After a reconnect: forget the old session's in-flight state and return the events that
    /// give the new session the conversation so far (one system message with the transcript).
    pub(super) fn resume(&mut self) -> Vec<String> {
        self.muted_item = None;
        self.ending = None;
        self.speech_stopped_at = None;
        let Some(t) = &self.transcript else {
            return Vec::new();
        };
        if t.turns.is_empty() {
            return Vec::new();
        }
        let history: String = t
            .turns
            .iter()
            .map(|turn| format!("{}: {}\n", turn.role.label(), turn.text))
            .collect();
        let text = format!(
            "The call's connection to you was interrupted and has been restored. Continue the conversation naturally without mentioning it. The conversation so far:\n{history}"
        );
        vec![ClientEvent::ConversationItemCreate {
            item: Item::Message {
                role: "system".into(),
                content: vec![ContentPart::InputText { text }],
            },
        }
        .to_json()]
    }
}
