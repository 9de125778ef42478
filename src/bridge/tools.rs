//! The bridge side of tools: the model's function calls, the caller's keypad, MCP events.
//!
//! A function call (`response.function_call_arguments.done`, or a completed `function_call`
//! output item: the second announcement of a `call_id` is ignored) is resolved by the
//! [`crate::tools::Registry`] for this call's settings and its arguments checked; an unknown name
//! or invalid arguments get an error output at once. Built-ins answer at once too: `end_call`
//! starts the goodbye ([`super::ending`]), `transfer_call` the handoff, carried out by
//! [`Outbound::end_now`] once its line has played. Webhooks run in their own tasks, at most
//! [`MAX_CONCURRENT_PER_CALL`] at once per call, so neither audio direction ever waits for them;
//! their results come back to the outbound loop through a bounded channel, and the call's
//! cancellation ends the ones still running. Every output is a `function_call_output` followed by
//! `response.create` (deferred while a response is in progress, so none is refused); a result that
//! outlived its session reaches the next one as a system message, since its `call_id` means
//! nothing there.
//!
//! The caller's keypad is in [`super::keypad`], MCP events in [`super::mcp`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::ending::Ending;
use super::outbound::Outbound;
use crate::config::Config;
use crate::events::CallEvent;
use crate::realtime::client::{ContentPart, Item};
use crate::realtime::ClientEvent;
use crate::stats::ErrorKind;
use crate::tools::transfer::Destination;
use crate::tools::{
    Action, CallContext, FunctionCall, Handler, Outcome, ToolOutput, MAX_CONCURRENT_PER_CALL,
    TRANSFER_TOOL,
};
use crate::transcript::{EndReason, Role, ToolCallRecord, Turn};

/// Finished tool calls waiting for the outbound loop.
const RESULTS_CAPACITY: usize = 16;
/// `call_id`s (and MCP item ids) remembered to ignore a call's second announcement.
const SEEN_CALLS: usize = 64;

/// A webhook call that finished, on its way back to the outbound loop.
pub(super) struct Finished {
    /// The upstream session it was called in.
    session: u32,
    call: FunctionCall,
    output: ToolOutput,
    started_at: DateTime<Utc>,
    took: Duration,
}

/// One call's tool state; lives as long as the call, across upstream sessions.
pub(super) struct CallTools {
    results_tx: mpsc::Sender<Finished>,
    /// Read by the outbound loop.
    pub(super) results: mpsc::Receiver<Finished>,
    permits: Arc<Semaphore>,
    seen: VecDeque<String>,
    /// Counts upstream sessions: a result of an earlier one cannot answer its `call_id`.
    session: u32,
    /// A `response.create` of ours is on its way (until `response.created`).
    response_requested: bool,
    /// Ask for a response once the one in progress is done.
    respond_after_done: bool,
    /// What webhooks are told about the call (from Twilio's `start`).
    context: Option<Arc<CallContext>>,
    /// The destination of the handoff in progress.
    transfer: Option<Destination>,
    pub(super) dtmf_enabled: bool,
    pub(super) dtmf_gap: Duration,
    /// Keys pressed and not yet sent.
    pub(super) keys: String,
    /// When the keys pressed so far are sent, if any are held.
    pub(super) keys_due: Option<Instant>,
}

impl CallTools {
    /// For a new call.
    pub(super) fn new(config: &Config) -> Self {
        let (results_tx, results) = mpsc::channel(RESULTS_CAPACITY);
        CallTools {
            results_tx,
            results,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT_PER_CALL)),
            seen: VecDeque::new(),
            session: 0,
            response_requested: false,
            respond_after_done: false,
            context: None,
            transfer: None,
            dtmf_enabled: config.dtmf,
            dtmf_gap: Duration::from_millis(config.dtmf_gap_ms),
            keys: String::new(),
            keys_due: None,
        }
    }

    /// Twilio's `start`: what webhooks will be told about the call.
    pub(super) fn call_started(&mut self, context: CallContext) {
        self.context = Some(Arc::new(context));
    }

    /// A new upstream session: the old one's ids and pending responses mean nothing to it.
    pub(super) fn new_session(&mut self) {
        self.session += 1;
        self.seen.clear();
        self.response_requested = false;
        self.respond_after_done = false;
    }

    /// When the keys held must be sent (the `DTMF_GAP_MS` after the last one).
    pub(super) fn keys_due(&self) -> Option<Instant> {
        self.keys_due
    }

    /// `response.created`: our request, if any, has been taken.
    pub(super) fn response_created(&mut self) {
        self.response_requested = false;
    }

    /// Whether `id` is new (and remember it).
    pub(super) fn first_sighting(&mut self, id: &str) -> bool {
        if self.seen.iter().any(|s| s == id) {
            return false;
        }
        if self.seen.len() == SEEN_CALLS {
            self.seen.pop_front();
        }
        self.seen.push_back(id.to_string());
        true
    }
}

impl Outbound {
    /// The model called `name` in response `response_id` with `arguments` (a JSON string).
    pub(super) async fn tool_call(
        &mut self,
        name: &str,
        call_id: &str,
        response_id: &str,
        arguments: &str,
    ) {
        if !self.tools.first_sighting(call_id) {
            return;
        }
        let parsed = serde_json::from_str::<Value>(arguments);
        let call = FunctionCall {
            name: name.to_string(),
            call_id: call_id.to_string(),
            arguments: parsed
                .as_ref()
                .map_or_else(|_| arguments.into(), Value::clone),
        };
        self.publish(CallEvent::ToolCalled {
            tool: call.name.clone(),
            call_id: call.call_id.clone(),
            arguments: call.arguments.clone(),
            at: Utc::now(),
        });
        let now = Utc::now();
        let Some(handler) = self.ctx.app.tools.resolve(name, &self.settings) else {
            warn!(name, "the model called a tool this call does not declare");
            let output = ToolOutput::error(Outcome::UnknownTool, "unknown function");
            return self.answer(call, output, now, None, response_id).await;
        };
        let checked = parsed
            .map_err(|_| "the arguments are not JSON".to_string())
            .and_then(|args| handler.check(&args));
        if let Err(reason) = checked {
            info!(
                name,
                reason, "invalid tool arguments: the tool is not called"
            );
            let output = ToolOutput::error(
                Outcome::InvalidArguments,
                &format!("invalid arguments: {reason}"),
            );
            return self.answer(call, output, now, None, response_id).await;
        }
        match handler.answer_now(&call) {
            Some(output) => self.answer(call, output, now, None, response_id).await,
            None => self.spawn_tool(handler, call),
        }
    }

    /// Run a webhook in its own task; its result comes back through `tools.results`.
    fn spawn_tool(&mut self, handler: Handler, call: FunctionCall) {
        let tools = &self.tools;
        let context = tools.context.clone().unwrap_or_else(|| {
            let sid = self.call_sid.clone().unwrap_or_default();
            let stream = self.stream_sid.clone().unwrap_or_default();
            Arc::new(CallContext::new(
                &sid,
                &stream,
                &Default::default(),
                &self.settings,
            ))
        });
        let (results, permits, session) = (
            tools.results_tx.clone(),
            tools.permits.clone(),
            tools.session,
        );
        let cancelled = self.ctx.cancel().clone();
        let stats = self.ctx.app.stats.clone();
        let label = self.ctx.app.tools.metric_name(&call.name).to_string();
        info!(name = %call.name, call_id = %call.call_id, "calling the tool");
        let task = async move {
            let run = async {
                // The semaphore is never closed.
                let _permit = permits.acquire_owned().await.ok()?;
                let (started_at, began) = (Utc::now(), std::time::Instant::now());
                let output = handler.run(&call, &context).await;
                let took = began.elapsed();
                Some(Finished {
                    session,
                    call,
                    output,
                    started_at,
                    took,
                })
            };
            tokio::select! {
                biased;
                () = cancelled.cancelled() => {
                    stats.tool_call(&label, Outcome::Cancelled.label(), None);
                    debug!(name = %label, "tool call cancelled: the call ended");
                }
                finished = run => {
                    if let Some(finished) = finished {
                        // The receiver is gone only once the call has ended.
                        let _ = results.send(finished).await;
                    }
                }
            }
        };
        self.ctx
            .app
            .calls
            .spawn(task.instrument(tracing::Span::current()));
    }

    /// A webhook call finished.
    pub(super) async fn tool_finished(&mut self, done: Finished) {
        let took = Some(done.took);
        if done.session == self.tools.session {
            return self
                .answer(done.call, done.output, done.started_at, took, "")
                .await;
        }
        self.record_tool(&done.call, &done.output, done.started_at, took)
            .await;
        let text = format!(
            "The tool call {} from before the connection was restored has answered: {}",
            done.call.name, done.output.output
        );
        self.upstream(system_message(text)).await;
        self.request_response().await;
    }

    /// Send `output` for `call`, record it, and carry out a built-in's action (hang up or hand
    /// over after the response `response_id` has played) or ask the model to go on.
    async fn answer(
        &mut self,
        call: FunctionCall,
        output: ToolOutput,
        started_at: DateTime<Utc>,
        took: Option<Duration>,
        response_id: &str,
    ) {
        self.record_tool(&call, &output, started_at, took).await;
        let item = ClientEvent::ConversationItemCreate {
            item: Item::FunctionCallOutput {
                call_id: call.call_id.clone(),
                output: output.output.clone(),
            },
        };
        self.upstream(item.to_json()).await;
        match output.action {
            None => self.request_response().await,
            Some(_) if self.ending.is_some() => {
                info!(name = %call.name, "an ending is already under way");
            }
            Some(Action::HangUp) => {
                info!(arguments = %call.arguments, "the assistant is ending the call; waiting for its goodbye to play");
                self.ending = Some(Ending::end_call(response_id));
            }
            Some(Action::Transfer(destination)) => {
                info!(destination = %destination.name, "the assistant is transferring the call; waiting for its handoff line to play");
                self.tools.transfer = Some(destination);
                self.ending = Some(Ending::end_call(response_id));
            }
        }
    }

    /// The transcript's `tool` turn, `tool_calls_total`, the `tool.result` event, one log line.
    async fn record_tool(
        &mut self,
        call: &FunctionCall,
        output: &ToolOutput,
        started_at: DateTime<Utc>,
        took: Option<Duration>,
    ) {
        let error = output.error_reason();
        let duration_ms = took.map_or(0, |t| t.as_millis() as u64);
        let outcome = output.outcome.label();
        let label = self.ctx.app.tools.metric_name(&call.name);
        self.ctx.app.stats.tool_call(label, outcome, took);
        match &error {
            Some(reason) => {
                warn!(name = %call.name, outcome, reason, duration_ms, "tool call failed")
            }
            None => info!(name = %call.name, duration_ms, "tool answered"),
        }
        let answer: Value =
            serde_json::from_str(&output.output).unwrap_or_else(|_| output.output.as_str().into());
        self.publish(CallEvent::ToolResult {
            tool: call.name.clone(),
            call_id: call.call_id.clone(),
            outcome,
            output: answer.clone(),
            duration_ms,
            at: Utc::now(),
        });
        let record = ToolCallRecord {
            name: call.name.clone(),
            arguments: call.arguments.clone(),
            output: error.is_none().then_some(answer),
            error,
            duration_ms,
        };
        self.add_tool_turn(record, started_at).await;
    }

    pub(super) async fn add_tool_turn(
        &mut self,
        record: ToolCallRecord,
        started_at: DateTime<Utc>,
    ) {
        let Some(t) = self.transcript.as_mut() else {
            return;
        };
        let result = match (&record.output, &record.error) {
            (_, Some(error)) => format!("error: {error}"),
            (Some(output), None) => output.to_string(),
            (None, None) => String::new(),
        };
        let mut text = format!("{} {} → {result}", record.name, record.arguments);
        if text.len() > 1000 {
            let cut = (0..=1000)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            text.truncate(cut);
            text.push('…');
        }
        let mut turn = Turn::new(Role::Tool, text, started_at);
        turn.tool = Some(record);
        if t.add(turn) {
            self.save().await;
        }
    }

    pub(super) fn publish(&self, event: CallEvent) {
        if let Some(sid) = &self.call_sid {
            self.ctx.app.events.publish(sid, event);
        }
    }

    /// Ask the model to respond: now, or once the response in progress (or requested) is done.
    pub(super) async fn request_response(&mut self) {
        if self.response_active || self.tools.response_requested {
            self.tools.respond_after_done = true;
            return;
        }
        self.tools.response_requested = true;
        self.upstream(ClientEvent::ResponseCreate {}.to_json())
            .await;
    }

    /// `response.done`: a response deferred meanwhile is asked for now.
    pub(super) async fn tools_response_done(&mut self) {
        self.tools.response_requested = false;
        if std::mem::take(&mut self.tools.respond_after_done) {
            self.request_response().await;
        }
    }

    /// Carry out the ending that is due: the handoff the model asked for, else the hang-up.
    /// `false` when Twilio refused the transfer: the model is told and the call goes on.
    pub(super) async fn end_now(&mut self, reason: EndReason) -> bool {
        let Some(destination) = self.tools.transfer.take() else {
            self.hang_up(reason).await;
            return true;
        };
        let (Some(twilio), Some(call_sid)) = (self.ctx.app.twilio.clone(), self.call_sid.clone())
        else {
            // Not reached: transfer_call is declared only with Twilio credentials.
            self.hang_up(reason).await;
            return true;
        };
        // Before the request: the `stop` Twilio sends once it has the new TwiML may come first.
        self.ctx.handle.set_reason(EndReason::Transferred);
        let from = self.tools.context.as_ref().and_then(|c| c.from.clone());
        let caller_id = from.filter(|f| crate::config::is_e164(f));
        let twiml = crate::twilio::twiml::dial(&destination.target, caller_id.as_deref());
        match twilio.update_twiml(&call_sid, &twiml).await {
            Ok(_) => {
                info!(destination = %destination.name, "transferred the call");
                if let Some(t) = self.transcript.as_mut() {
                    t.transferred_to = Some(destination.name);
                }
                true
            }
            Err(e) => {
                self.ctx.handle.retract_reason(EndReason::Transferred);
                self.ctx.app.stats.error(ErrorKind::TwilioRest);
                warn!(error = %e, destination = %destination.name, "Twilio refused the transfer; the call goes on");
                self.ending = None;
                let call = FunctionCall {
                    name: TRANSFER_TOOL.into(),
                    call_id: String::new(),
                    arguments: serde_json::json!({"destination": destination.name}),
                };
                let output = ToolOutput::error(Outcome::TwilioError, "the transfer failed");
                self.record_tool(&call, &output, Utc::now(), None).await;
                let text = format!(
                    "The transfer to {} failed, so the caller is still with you. Apologize briefly and offer to help another way.",
                    destination.name
                );
                self.upstream(system_message(text)).await;
                self.request_response().await;
                false
            }
        }
    }
}

/// A system message item.
fn system_message(text: String) -> String {
    ClientEvent::ConversationItemCreate {
        item: Item::Message {
            role: "system".into(),
            content: vec![ContentPart::InputText { text }],
        },
    }
    .to_json()
}
