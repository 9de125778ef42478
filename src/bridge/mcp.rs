//! MCP tools run by the API itself: their calls (`mcp_call` items) are recorded as `tool` turns
//! and counted, their progress events (`response.mcp_call.*`, `mcp_list_tools.*`) logged, and a
//! failed tool listing counted. Function call items are passed on to [`super::tools`].

use chrono::Utc;
use serde_json::Value;
use tracing::{debug, info, warn};

use super::outbound::Outbound;
use crate::realtime::server::OutputItem;
use crate::transcript::ToolCallRecord;

impl Outbound {
    /// An output or conversation item is done: a function call, an MCP call or tool list.
    pub(super) async fn item_done(&mut self, response_id: &str, item: OutputItem) {
        match item {
            OutputItem::FunctionCall {
                call_id,
                name,
                arguments,
                status,
            } => {
                if matches!(status.as_deref(), None | Some("completed")) {
                    self.tool_call(&name, &call_id, response_id, &arguments)
                        .await;
                }
            }
            OutputItem::McpCall {
                id,
                server_label,
                name,
                arguments,
                output,
                error,
            } => {
                if !self.tools.first_sighting(&id) {
                    return;
                }
                let known = self
                    .ctx
                    .app
                    .config
                    .tools
                    .mcp
                    .iter()
                    .any(|m| m.server_label == server_label);
                let full_name = format!("{server_label}.{name}");
                let label = if known { full_name.as_str() } else { "unknown" };
                let outcome = if error.is_some() { "mcp_error" } else { "ok" };
                self.ctx.app.stats.tool_call(label, outcome, None);
                let error = error.map(|e| {
                    let message = e.get("message").and_then(Value::as_str).map(str::to_string);
                    message.unwrap_or_else(|| e.to_string())
                });
                match &error {
                    Some(e) => warn!(tool = %full_name, error = %e, "MCP tool call failed"),
                    None => info!(tool = %full_name, "MCP tool call answered"),
                }
                let parse = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| Value::from(s));
                let record = ToolCallRecord {
                    name: full_name,
                    arguments: parse(&arguments),
                    output: output.as_deref().map(parse),
                    error,
                    duration_ms: 0,
                };
                self.add_tool_turn(record, Utc::now()).await;
            }
            OutputItem::McpListTools {
                server_label,
                tools,
                ..
            } => {
                let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
                info!(
                    server_label,
                    tools = names.join(","),
                    "MCP server tools listed"
                );
            }
            OutputItem::Other => {}
        }
    }

    /// `mcp_list_tools.*` and `response.mcp_call.*` progress events: logged; failures counted.
    pub(super) fn mcp_event(&self, kind: &'static str, item_id: &str) {
        match kind {
            "mcp_list_tools.failed" => {
                self.ctx
                    .app
                    .stats
                    .tool_call("mcp_list_tools", "mcp_error", None);
                warn!(
                    item_id,
                    "an MCP server's tools could not be listed: the assistant cannot use them"
                );
            }
            "mcp_list_tools.completed" => {
                self.ctx.app.stats.tool_call("mcp_list_tools", "ok", None);
                debug!(item_id, kind, "MCP event");
            }
            _ => debug!(item_id, kind, "MCP event"),
        }
    }
}
