//! Tools the assistant can use: a function call in, an output out, whatever runs it.
//!
//! The model calls a function (`response.function_call_arguments.done` or a completed
//! `function_call` output item, `PROTOCOLS.md` § "Where the newer facts come from", function
//! tools); the [`Registry`] resolves its name to a [`Handler`]: the built-in `end_call` or
//! `transfer_call`, or a webhook declared in `TOOLS_FILE`. Arguments are checked against the
//! declared schema first; an invalid call never reaches its handler. Every handler answers a
//! [`ToolOutput`]: the `function_call_output` text (JSON), an [`Outcome`] for logs and metrics, and
//! for built-ins an [`Action`] the call carries out (hang up, transfer). MCP servers are declared
//! only: the API calls them itself.
//!
//! # Layout
//! - `file`: `TOOLS_FILE` parsing and checks, `${VAR}` substitution.
//! - `schema`: argument checks (JSON Schema).
//! - `signing`: Standard Webhooks signatures.
//! - `webhook`: the signed POST and what its answer becomes.
//! - `transfer`: `TRANSFER_DESTINATIONS` and the `transfer_call` declaration.
//! - `registry`: which tools a call declares, and what runs each name.

pub mod file;
mod registry;
pub mod schema;
pub mod signing;
pub mod transfer;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::active::CallSettings;
use file::FunctionSpec;
use schema::ArgumentSchema;
use transfer::Destination;
use webhook::WebhookClient;

pub use file::ToolsFile;
pub use registry::Registry;

/// Name of the built-in transfer tool.
pub const TRANSFER_TOOL: &str = "transfer_call";
/// Tool calls of one call running at once; more wait for a free slot.
pub const MAX_CONCURRENT_PER_CALL: usize = 4;
/// `<Parameter>`s the relay sets for itself: never passed to a webhook.
const INTERNAL_PARAMETERS: [&str; 2] = ["CallRef", "StreamToken"];

/// One function call of the model.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// `call_…`: what the output answers.
    pub call_id: String,
    /// The parsed arguments.
    pub arguments: Value,
}

/// What a webhook is told about the call it serves (`call` of the request body).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallContext {
    pub call_sid: String,
    pub stream_sid: String,
    /// `inbound` or `outbound` (placed through `POST /api/calls`).
    pub direction: &'static str,
    pub from: Option<String>,
    pub to: Option<String>,
    /// The TwiML `<Parameter>`s, less the relay's own.
    pub parameters: BTreeMap<String, String>,
    /// `metadata` of `POST /api/calls`; `{}` otherwise.
    pub metadata: Value,
}

impl CallContext {
    /// The context of a call from Twilio's `start` parameters and its settings.
    pub fn new(
        call_sid: &str,
        stream_sid: &str,
        parameters: &BTreeMap<String, String>,
        settings: &CallSettings,
    ) -> Self {
        let outbound = parameters.contains_key("CallRef");
        CallContext {
            call_sid: call_sid.into(),
            stream_sid: stream_sid.into(),
            direction: if outbound { "outbound" } else { "inbound" },
            from: parameters.get("From").cloned(),
            to: parameters.get("To").cloned(),
            parameters: parameters
                .iter()
                .filter(|(k, _)| !INTERNAL_PARAMETERS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            metadata: settings
                .metadata
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default())),
        }
    }
}

/// How a tool call went, the `outcome` label of `tool_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The tool answered (a webhook's 2xx JSON, a built-in's acknowledgement).
    Ok,
    /// The arguments are not JSON or break the schema: the handler was not called.
    InvalidArguments,
    /// No tool of that name for this call.
    UnknownTool,
    /// The webhook did not answer within its `timeout_ms`.
    Timeout,
    /// The webhook answered a non-2xx status.
    HttpError,
    /// The answer was over 64 KiB or not JSON.
    InvalidResponse,
    /// No connection, or it broke.
    Unreachable,
    /// Twilio refused the transfer.
    TwilioError,
    /// The call ended first.
    Cancelled,
}

impl Outcome {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::InvalidArguments => "invalid_arguments",
            Outcome::UnknownTool => "unknown_tool",
            Outcome::Timeout => "timeout",
            Outcome::HttpError => "http_error",
            Outcome::InvalidResponse => "invalid_response",
            Outcome::Unreachable => "unreachable",
            Outcome::TwilioError => "twilio_error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What a built-in asks the call to do once its output is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Hang up after the goodbye has played (`end_call`).
    HangUp,
    /// Hand the call to this destination after the handoff line has played.
    Transfer(Destination),
}

/// A tool's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The `function_call_output` text: compact JSON.
    pub output: String,
    pub outcome: Outcome,
    pub action: Option<Action>,
}

impl ToolOutput {
    /// A successful answer.
    pub fn ok(output: String) -> Self {
        ToolOutput {
            output,
            outcome: Outcome::Ok,
            action: None,
        }
    }

    /// `{"error": reason}`: the model can tell the caller.
    pub fn error(outcome: Outcome, reason: &str) -> Self {
        ToolOutput {
            output: serde_json::json!({ "error": reason }).to_string(),
            outcome,
            action: None,
        }
    }

    /// The short reason of an error output, if this is one.
    pub fn error_reason(&self) -> Option<String> {
        if self.outcome == Outcome::Ok {
            return None;
        }
        let value: Value = serde_json::from_str(&self.output).ok()?;
        value.get("error")?.as_str().map(str::to_string)
    }
}

/// A webhook function with its compiled schema.
#[derive(Debug)]
pub struct Function {
    pub spec: FunctionSpec,
    pub(crate) schema: ArgumentSchema,
}

/// What runs a resolved tool.
#[derive(Debug, Clone)]
pub enum Handler {
    /// `end_call`, answered at once.
    EndCall,
    /// `transfer_call`, answered at once.
    Transfer(Arc<[Destination]>, Arc<ArgumentSchema>),
    /// A `TOOLS_FILE` function, run as a webhook off the call's tasks.
    Webhook(Arc<Function>, WebhookClient),
}

impl Handler {
    /// Check the arguments (`end_call` takes anything, as it always has).
    pub fn check(&self, arguments: &Value) -> Result<(), String> {
        match self {
            Handler::EndCall => Ok(()),
            Handler::Transfer(_, schema) => schema.validate(arguments),
            Handler::Webhook(f, _) => f.schema.validate(arguments),
        }
    }

    /// A built-in's answer, given at once (its action must be in place before the response that
    /// called it is done); `None` for handlers that must be [`Handler::run`] off the call's tasks.
    pub fn answer_now(&self, call: &FunctionCall) -> Option<ToolOutput> {
        match self {
            Handler::EndCall => Some(ToolOutput {
                output: r#"{"ok":true}"#.into(),
                outcome: Outcome::Ok,
                action: Some(Action::HangUp),
            }),
            Handler::Transfer(destinations, _) => {
                let wanted = call.arguments.get("destination").and_then(Value::as_str);
                // The schema's enum already refused anything else; this is the second lock.
                let Some(destination) = destinations
                    .iter()
                    .find(|d| Some(d.name.as_str()) == wanted)
                else {
                    return Some(ToolOutput::error(
                        Outcome::InvalidArguments,
                        "unknown destination",
                    ));
                };
                Some(ToolOutput {
                    // As documented: `{"status":"transferring","destination":"sales"}`, in that order.
                    output: format!(
                        r#"{{"status":"transferring","destination":{}}}"#,
                        Value::from(destination.name.as_str())
                    ),
                    outcome: Outcome::Ok,
                    action: Some(Action::Transfer(destination.clone())),
                })
            }
            Handler::Webhook(..) => None,
        }
    }

    /// Run the tool (webhooks; built-ins answer as [`Handler::answer_now`]).
    pub async fn run(&self, call: &FunctionCall, ctx: &CallContext) -> ToolOutput {
        match self {
            Handler::Webhook(f, client) => client.call(&f.spec, call, ctx).await,
            builtin => builtin.answer_now(call).expect("built-ins answer at once"),
        }
    }
}
