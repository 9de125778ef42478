//! The [`Registry`]: every tool the relay can declare, built once at start-up, and per call which
//! of them it declares (`POST /api/calls` `tools`/`transfer`) and what runs each name.

use std::sync::Arc;

use serde_json::Value;

use super::schema::ArgumentSchema;
use super::transfer::{self, Destination};
use super::webhook::WebhookClient;
use super::{signing, Function, Handler, TRANSFER_TOOL};
use crate::active::CallSettings;
use crate::config::{end_call_tool, Config, END_CALL_TOOL};
use crate::realtime::session::Tool;

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

    /// The configured functions' names, then the MCP servers' labels: what a call's `tools`
    /// may name.
    pub fn names(&self) -> Vec<&str> {
        let functions = self.functions.iter().map(|f| f.spec.name.as_str());
        let mcp = self.mcp.iter().map(|m| m.server_label.as_str());
        functions.chain(mcp).collect()
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
    use crate::tools::{Action, FunctionCall, Outcome, ToolsFile};

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
