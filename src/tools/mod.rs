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

pub mod file;
pub mod schema;
pub mod signing;
pub mod transfer;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use crate::active::CallSettings;
use crate::config::{end_call_tool, Config, END_CALL_TOOL};
use crate::realtime::session::Tool;
use file::FunctionSpec;
use schema::ArgumentSchema;
use transfer::Destination;
use webhook::WebhookClient;

pub use file::ToolsFile;

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
    schema: ArgumentSchema,
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

/// Every tool the relay can declare, built once at start-up from the configuration.
#[derive(Debug, Default)]
pub struct Registry {
    functions: Vec<Arc<Function>>,
    mcp: Vec<crate::realtime::session::McpTool>,
    /// Destinations and the declaration's schema, when `transfer_call` is declared.
    transfer: Option<(Arc<[Destination]>, Arc<ArgumentSchema>)>,
    client: Option<WebhookClient>,
}

impl Registry {
    /// The tools of `config` (its `TOOLS_FILE` was loaded by `Config::validate`). `transfer_call`
    /// is declared only with destinations and Twilio credentials (start-up says why not).
    pub fn new(config: &Config) -> Self {
        let mut registry = Registry::default();
        for spec in &config.tools.functions {
            match ArgumentSchema::compile(&spec.parameters) {
                Ok(schema) => registry.functions.push(Arc::new(Function {
                    spec: spec.clone(),
                    schema,
                })),
                Err(e) => tracing::error!(name = %spec.name, error = %e, "tool not declared"),
            }
        }
        registry.mcp = config.tools.mcp.clone();
        if !registry.functions.is_empty() {
            let signer = config
                .tools_webhook_secret
                .as_ref()
                .and_then(|s| signing::Signer::from_secret(s.expose()).ok());
            match WebhookClient::new(signer) {
                Ok(client) => registry.client = Some(client),
                Err(e) => tracing::error!(error = format!("{e:#}"), "tool webhooks disabled"),
            }
        }
        let destinations = &config.transfer_destinations;
        if !destinations.is_empty() {
            if config.twilio_configured() {
                let tool = transfer::transfer_tool(destinations);
                let schema = ArgumentSchema::compile(&tool.parameters)
                    .expect("the transfer schema compiles");
                registry.transfer = Some((destinations.clone().into(), Arc::new(schema)));
            } else {
                tracing::warn!(
                    "TRANSFER_DESTINATIONS is set but Twilio credentials are not: transfer_call is not declared (set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)"
                );
            }
        }
        if registry
            .mcp
            .iter()
            .any(|m| m.require_approval != Some(Value::from("never")))
        {
            tracing::warn!(
                "an MCP entry may require approval: the relay cannot approve MCP calls, so set \"require_approval\": \"never\" for tools the assistant should use"
            );
        }
        registry
    }

    /// Whether `transfer_call` can be declared.
    pub fn has_transfer(&self) -> bool {
        self.transfer.is_some()
    }

    /// The names in `names` that are not configured functions or MCP server labels.
    pub fn unknown<'a>(&self, names: &'a [String]) -> Vec<&'a str> {
        let known = |n: &str| {
            self.functions.iter().any(|f| f.spec.name == n)
                || self.mcp.iter().any(|m| m.server_label == n)
        };
        names
            .iter()
            .map(String::as_str)
            .filter(|n| !known(n))
            .collect()
    }

    fn selected(settings: &CallSettings, name: &str) -> bool {
        settings
            .tools
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }

    fn transfer_for(
        &self,
        settings: &CallSettings,
    ) -> Option<&(Arc<[Destination]>, Arc<ArgumentSchema>)> {
        self.transfer
            .as_ref()
            .filter(|_| settings.transfer != Some(false))
    }

    /// `session.tools` for a call with `settings`: `end_call`, the selected functions,
    /// `transfer_call` unless withheld, the selected MCP servers.
    pub fn declarations(&self, settings: &CallSettings) -> Vec<Tool> {
        let mut tools = vec![Tool::Function(end_call_tool())];
        for f in self
            .functions
            .iter()
            .filter(|f| Self::selected(settings, &f.spec.name))
        {
            tools.push(Tool::Function(crate::realtime::session::FunctionTool {
                name: f.spec.name.clone(),
                description: f.spec.description.clone(),
                parameters: f.spec.parameters.clone(),
            }));
        }
        if let Some((destinations, _)) = self.transfer_for(settings) {
            tools.push(Tool::Function(transfer::transfer_tool(destinations)));
        }
        for m in self
            .mcp
            .iter()
            .filter(|m| Self::selected(settings, &m.server_label))
        {
            tools.push(Tool::Mcp(m.clone()));
        }
        tools
    }

    /// The handler of `name` for a call with `settings`, if the call declared it.
    pub fn resolve(&self, name: &str, settings: &CallSettings) -> Option<Handler> {
        if name == END_CALL_TOOL {
            return Some(Handler::EndCall);
        }
        if name == TRANSFER_TOOL {
            let (destinations, schema) = self.transfer_for(settings)?;
            return Some(Handler::Transfer(destinations.clone(), schema.clone()));
        }
        let f = self
            .functions
            .iter()
            .find(|f| f.spec.name == name && Self::selected(settings, name))?;
        Some(Handler::Webhook(f.clone(), self.client.clone()?))
    }

    /// The `name` label for metrics: a declared tool's name, else `unknown` (the model's
    /// inventions must not grow the series without bound).
    pub fn metric_name<'a>(&self, name: &'a str) -> &'a str {
        let known = name == END_CALL_TOOL
            || name == TRANSFER_TOOL
            || self.functions.iter().any(|f| f.spec.name == name);
        if known {
            name
        } else {
            "unknown"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tools: &str, destinations: &str) -> Config {
        let mut c = Config {
            twilio_account_sid: Some("AC123".into()),
            twilio_auth_token: Some("tok".into()),
            tools_webhook_secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
            ..Config::default()
        };
        c.tools = ToolsFile::parse(tools, |_| Some("t".into())).unwrap();
        c.transfer_destinations = destinations
            .split(',')
            .filter(|d| !d.is_empty())
            .map(|d| transfer::parse_destination(d).unwrap())
            .collect();
        c
    }

    const TOOLS: &str = r#"{"functions": [
        {"name": "a", "url": "http://127.0.0.1:9/a"}, {"name": "b", "url": "http://127.0.0.1:9/b"}],
        "mcp": [{"server_label": "crm", "server_url": "https://mcp.example.com/mcp", "require_approval": "never"}]}"#;

    #[test]
    fn a_call_declares_the_tools_it_selected() {
        let registry = Registry::new(&config(TOOLS, "sales=+15551230001"));
        let names = |s: &CallSettings| -> Vec<String> {
            registry
                .declarations(s)
                .iter()
                .map(|t| t.name().to_string())
                .collect()
        };
        assert_eq!(
            names(&CallSettings::default()),
            ["end_call", "a", "b", "transfer_call", "crm"]
        );
        let some = CallSettings {
            tools: Some(vec!["b".into()]),
            transfer: Some(false),
            ..CallSettings::default()
        };
        assert_eq!(names(&some), ["end_call", "b"]);
        assert!(registry.resolve("a", &some).is_none());
        assert!(registry.resolve("transfer_call", &some).is_none());
        assert!(registry.resolve("b", &some).is_some());
        assert_eq!(
            registry.unknown(&["a".into(), "crm".into(), "zzz".into()]),
            ["zzz"]
        );
        assert_eq!(registry.metric_name("invented"), "unknown");
    }

    #[test]
    fn without_twilio_credentials_transfer_is_not_declared() {
        let mut c = config(TOOLS, "sales=+15551230001");
        c.twilio_auth_token = None;
        let registry = Registry::new(&c);
        assert!(!registry.has_transfer());
        assert!(registry
            .resolve(TRANSFER_TOOL, &CallSettings::default())
            .is_none());
    }

    #[test]
    fn a_transfer_names_a_configured_destination_or_nothing() {
        let registry = Registry::new(&config("{}", "sales=+15551230001"));
        let handler = registry
            .resolve(TRANSFER_TOOL, &CallSettings::default())
            .unwrap();
        let call = |args: Value| FunctionCall {
            name: TRANSFER_TOOL.into(),
            call_id: "call_1".into(),
            arguments: args,
        };
        let ok = handler
            .answer_now(&call(serde_json::json!({"destination": "sales"})))
            .unwrap();
        assert_eq!(
            ok.output,
            r#"{"status":"transferring","destination":"sales"}"#
        );
        assert!(matches!(ok.action, Some(Action::Transfer(ref d)) if d.target == "+15551230001"));
        assert!(handler
            .check(&serde_json::json!({"destination": "+15559999999"}))
            .is_err());
        let refused = handler
            .answer_now(&call(serde_json::json!({"destination": "x"})))
            .unwrap();
        assert_eq!(refused.outcome, Outcome::InvalidArguments);
        assert!(refused.action.is_none());
    }
}
