//! One call's Realtime session setup: Twilio's `start` (record, registry entry, per-call
//! overrides), the `session` of every `session.update` (`PROTOCOLS.md` § "OpenAI Realtime API —
//! GA only"), the greeting once every update is applied, and the conversation handed to a new
//! session after a reconnect or a renewal.

use tokio::time::Instant;
use tracing::info;

use super::outbound::Outbound;
use super::renewal::{CallerTurn, FollowUp, FOLLOW_UP_AFTER};
use super::CallInfo;
use crate::active::CallSettings;
use crate::config::{end_call_tool, Config, TurnDetectionKind};
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::session::{
    AudioConfig, AudioFormat, AudioInput, AudioOutput, InputTranscription, Reasoning, SessionKind,
    TurnDetection,
};
use crate::realtime::{ClientEvent, Session};
use crate::records::CallRecord;
use crate::twilio::media::MediaJson;

/// The `session` of a call's `session.update`: the configuration with one call's overrides.
/// Declares the built-in `end_call` tool; `idle_timeout_ms` (server VAD only, ms) asks the server
/// to prompt a silent caller. Shape: `PROTOCOLS.md` § "OpenAI Realtime API — GA only", client events.
pub fn call_session(
    config: &Config,
    settings: &CallSettings,
    idle_timeout_ms: Option<u64>,
) -> Session {
    let turn_detection = match config.turn_detection {
        TurnDetectionKind::ServerVad => TurnDetection::ServerVad {
            threshold: Some(config.vad_threshold),
            prefix_padding_ms: Some(config.vad_prefix_padding_ms),
            silence_duration_ms: Some(config.vad_silence_duration_ms),
            create_response: Some(true),
            interrupt_response: Some(true),
            idle_timeout_ms,
        },
        TurnDetectionKind::SemanticVad => TurnDetection::SemanticVad {
            eagerness: None,
            create_response: Some(true),
            interrupt_response: Some(true),
        },
    };
    let transcription = transcribes_caller(config).then(|| InputTranscription {
        model: config.transcription_model.clone(),
        language: None,
    });
    Session {
        kind: SessionKind::Realtime,
        model: Some(config.openai_model.clone()),
        output_modalities: Some(vec!["audio".into()]),
        instructions: Some(
            settings
                .instructions
                .clone()
                .unwrap_or_else(|| config.instructions.clone()),
        ),
        audio: Some(AudioConfig {
            input: Some(AudioInput {
                format: AudioFormat::pcmu(),
                transcription,
                turn_detection: Some(turn_detection),
            }),
            output: Some(AudioOutput {
                format: AudioFormat::pcmu(),
                voice: Some(
                    settings
                        .voice
                        .clone()
                        .unwrap_or_else(|| config.voice.clone()),
                ),
            }),
        }),
        tools: Some(vec![crate::realtime::session::Tool::Function(
            end_call_tool(),
        )]),
        tool_choice: Some("auto".into()),
        reasoning: config.reasoning_effort.map(|effort| Reasoning { effort }),
    }
}

/// Whether the session transcribes the caller (`TRANSCRIPTION_MODEL` is not `none`).
pub fn transcribes_caller(config: &Config) -> bool {
    !config.transcription_model.eq_ignore_ascii_case("none")
}

impl Outbound {
    /// Twilio's `start`: the call's record, registry entry, transcript and overrides.
    pub(super) async fn started(&mut self, info: CallInfo) {
        self.recorder = info
            .recording
            .as_ref()
            .map(crate::recording::CallRecording::assistant);
        let app = &self.ctx.app;
        app.active.register(&info.call_sid, self.ctx.handle.clone());
        let (from, to) = (info.param("From"), info.param("To"));
        let instance = app.store.instance_id().to_string();
        let record = app
            .store
            .update(
                &info.call_sid,
                || CallRecord::new(&info.call_sid, "inbound", "in-progress"),
                |r| {
                    if !r.is_ended() {
                        r.status = "in-progress".into();
                    }
                    r.from = r.from.take().or(from.map(str::to_string));
                    r.to = r.to.take().or(to.map(str::to_string));
                    r.instance_id = Some(instance);
                },
            )
            .await;
        app.events.started(crate::events::LiveCall {
            call_sid: info.call_sid.clone(),
            from: record.from,
            to: record.to,
            direction: record.direction,
            started_at: record.started_at,
            state: crate::events::CallState::Talking,
        });
        let settings = match info.param("CallRef") {
            Some(reference) => match app.store.take_settings(reference).await {
                Ok(settings) => settings,
                Err(e) => {
                    // The call goes on with the configured defaults.
                    app.store.failed("taking this call's settings", &e);
                    None
                }
            },
            None => None,
        };
        if let Some(settings) = settings {
            let changes_session = settings.instructions.is_some()
                || settings.voice.is_some()
                || settings.tools.is_some()
                || settings.transfer.is_some();
            self.settings = settings;
            if changes_session {
                let update = self.session_update();
                self.upstream(update).await;
                info!("applied this call's instructions/voice");
            }
        }
        self.tools.call_started(crate::tools::CallContext::new(
            &info.call_sid,
            &info.stream_sid,
            &info.parameters,
            &self.settings,
        ));
        self.transcript = Some(info.transcript());
        self.call_sid = Some(info.call_sid);
        self.media_json = Some(MediaJson::new(&info.stream_sid));
        self.stream_sid = Some(info.stream_sid);
        let max_call_secs = self.ctx.app.config.max_call_secs;
        if max_call_secs > 0 {
            self.max_call_at = Some(Instant::now() + std::time::Duration::from_secs(max_call_secs));
        }
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
        // GPT-Live speaks commentary as given; the Realtime API is asked to say it.
        let prompt = if self.voice.detects_barge_in_locally() {
            greeting
        } else {
            format!("Greet the caller by saying exactly: \"{greeting}\"")
        };
        self.upstream(ClientEvent::user_text(prompt).to_json())
            .await;
        self.upstream(ClientEvent::ResponseCreate {}.to_json())
            .await;
    }

    /// A `session.update` with this call's settings; counted until `session.updated` answers.
    pub(super) fn session_update(&mut self) -> String {
        self.pending_updates += 1;
        let mut session = call_session(
            &self.ctx.app.config,
            &self.settings,
            self.idle.server_timeout_ms(),
        );
        session.tools = Some(self.ctx.app.tools.declarations(&self.settings));
        ClientEvent::SessionUpdate {
            session: Box::new(session),
        }
        .to_json()
    }

    /// The first events of a new upstream session: its `session.update` and, when it replaces
    /// another (`resumed`: a reconnect or a renewal), the conversation so far.
    pub(super) fn session_setup(&mut self, resumed: bool) -> Vec<String> {
        if resumed {
            self.forget_session();
        }
        let mut setup = vec![self.session_update()];
        if resumed {
            setup.extend(self.resume());
        }
        setup
    }

    /// The old session's in-flight state means nothing to the new one. Audio already sent to
    /// Twilio keeps playing (and `playback` keeps tracking it); an ending in progress still hangs
    /// up once that audio has played, as its response cannot continue.
    fn forget_session(&mut self) {
        self.muted_item = None;
        self.stale_items = self.playback.unplayed_items();
        self.speech_stopped_at = None;
        self.pending_updates = 0;
        self.response_active = false;
        self.caller_turn = CallerTurn::Quiet;
        self.session_expired = false;
        self.session_configured = false;
        self.tools.new_session();
        if let Some(ending) = self.ending.as_mut() {
            ending.session_ended();
        }
        // The old session's item ids mean nothing now (a new session may reuse them).
        if let Some(t) = self.transcript.as_mut() {
            t.settle_pending();
        }
    }

    /// The events that give a new session the conversation so far (one system message with the
    /// transcript) and, after an expiry mid-turn, what it takes to answer the caller.
    fn resume(&mut self) -> Vec<String> {
        let follow_up = std::mem::take(&mut self.follow_up);
        let mut events = Vec::new();
        let history: String = self
            .transcript
            .iter()
            .flat_map(|t| &t.turns)
            .map(|turn| format!("{}: {}\n", turn.role.label(), turn.text))
            .collect();
        if !history.is_empty() || follow_up != FollowUp::None {
            let cut_off = if follow_up == FollowUp::None {
                ""
            } else {
                " The caller may have been cut off mid-sentence: if you did not hear what they asked, ask them briefly to repeat it."
            };
            let text = format!(
                "The call's connection to you was interrupted and has been restored. Continue the conversation naturally without mentioning it.{cut_off} The conversation so far:\n{history}"
            );
            events.push(
                ClientEvent::ConversationItemCreate {
                    item: Item::Message {
                        role: "system".into(),
                        content: vec![ContentPart::InputText { text }],
                    },
                }
                .to_json(),
            );
        }
        match follow_up {
            FollowUp::None => {}
            FollowUp::Respond => events.push(ClientEvent::ResponseCreate {}.to_json()),
            FollowUp::RespondIfSilent => self.follow_up_at = Some(Instant::now() + FOLLOW_UP_AFTER),
        }
        events
    }

    /// The new session heard no speech since an expiry cut the caller off: ask it to answer.
    pub(super) async fn follow_up(&mut self) {
        self.follow_up_at = None;
        if self.caller_turn == CallerTurn::Quiet && !self.response_active {
            info!("no speech heard since the renewal: asking the new session to answer the caller");
            self.upstream(ClientEvent::ResponseCreate {}.to_json())
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::models::ReasoningEffort;

    #[test]
    fn transcription_none_disables_caller_transcription() {
        let c = Config {
            transcription_model: "none".into(),
            ..Config::default()
        };
        let session = call_session(&c, &CallSettings::default(), None);
        assert!(session
            .audio
            .unwrap()
            .input
            .unwrap()
            .transcription
            .is_none());
    }

    #[test]
    fn reasoning_effort_and_idle_timeout_reach_the_session() {
        let c = Config {
            reasoning_effort: Some(ReasoningEffort::Low),
            ..Config::default()
        };
        let json =
            serde_json::to_value(call_session(&c, &CallSettings::default(), Some(8000))).unwrap();
        assert_eq!(json["reasoning"], serde_json::json!({"effort": "low"}));
        assert_eq!(json["model"], "gpt-realtime-2.1");
        assert_eq!(
            json["audio"]["input"]["turn_detection"]["idle_timeout_ms"],
            8000
        );
        let plain = serde_json::to_value(call_session(
            &Config::default(),
            &CallSettings::default(),
            None,
        ))
        .unwrap();
        assert!(plain.get("reasoning").is_none(), "{plain}");
        assert!(plain["audio"]["input"]["turn_detection"]
            .get("idle_timeout_ms")
            .is_none());
    }
}
