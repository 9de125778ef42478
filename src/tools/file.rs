//! `TOOLS_FILE`: the operator's tool declarations, read and checked once at start-up.
//!
//! Shape (README § Tools): `{"functions": [{"name", "description", "parameters", "url",
//! "timeout_ms", "headers"}], "mcp": [{"server_label", "server_url", "headers", "allowed_tools",
//! "require_approval", …}]}`. MCP entries take the fields of openai-python 3.51's
//! `types/realtime/realtime_tools_config_union_param.py` (class `Mcp`). `${VAR}` in header values
//! (and an MCP entry's `authorization`) is replaced from the environment, so secrets stay out of
//! the file. Every problem is one error naming the file, the entry and the field.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::config::Secret;
use crate::realtime::session::McpTool;

/// `timeout_ms` when an entry gives none, ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 8000;
/// Allowed `timeout_ms`, ms.
pub const TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
/// Names the relay declares itself.
pub const BUILT_IN_NAMES: [&str; 2] = [crate::config::END_CALL_TOOL, super::TRANSFER_TOOL];
/// Headers the relay sets on every tool call: an entry may not override them.
const RESERVED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "host",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The parsed, checked file. `Default`: no file, no tools.
#[derive(Debug, Clone, Default)]
pub struct ToolsFile {
    /// Where it was read from.
    pub path: Option<PathBuf>,
    /// Webhook functions, in file order.
    pub functions: Vec<FunctionSpec>,
    /// MCP servers passed to the API as `mcp` tools, `${VAR}`s replaced.
    pub mcp: Vec<McpTool>,
}

/// One `functions` entry.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique, not a built-in's.
    pub name: String,
    pub description: String,
    /// An object JSON Schema of the arguments (checked to compile).
    pub parameters: Value,
    /// http(s) URL the call is POSTed to.
    pub url: reqwest::Url,
    /// 100–30000 ms, default 8000.
    pub timeout_ms: u64,
    /// Extra request headers, `${VAR}`s replaced; values are secrets.
    pub headers: Vec<(String, Secret)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    functions: Vec<Value>,
    #[serde(default)]
    mcp: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<Value>,
    url: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Whether `name` is a valid function or server name: `^[A-Za-z0-9_-]{1,64}$`.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ToolsFile {
    /// Read and check `path`, replacing `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Self::parse(&text, |var| std::env::var(var).ok())
            .map(|mut file| {
                file.path = Some(path.to_path_buf());
                file
            })
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Check the file's `text`; `env` resolves `${VAR}`. Errors name the entry and the field.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let raw: RawFile =
            serde_json::from_str(text).map_err(|e| format!("not a tools file: {e}"))?;
        let mut names = HashSet::new();
        let mut file = ToolsFile::default();
        for (i, entry) in raw.functions.into_iter().enumerate() {
            let label = entry_label("functions", i, &entry, "name");
            let spec = function(entry, &env).map_err(|e| format!("{label}: {e}"))?;
            claim(&mut names, &spec.name).map_err(|e| format!("{label}: name: {e}"))?;
            file.functions.push(spec);
        }
        for (i, entry) in raw.mcp.into_iter().enumerate() {
            let label = entry_label("mcp", i, &entry, "server_label");
            let tool = mcp(entry, &env).map_err(|e| format!("{label}: {e}"))?;
            claim(&mut names, &tool.server_label)
                .map_err(|e| format!("{label}: server_label: {e}"))?;
            file.mcp.push(tool);
        }
        Ok(file)
    }

    /// Every configured name: functions, then MCP server labels.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let functions = self.functions.iter().map(|f| f.name.as_str());
        functions.chain(self.mcp.iter().map(|m| m.server_label.as_str()))
    }
}

/// `functions[0] ("lookup_order")`.
fn entry_label(list: &str, index: usize, entry: &Value, key: &str) -> String {
    match entry.get(key).and_then(Value::as_str) {
        Some(name) => format!("{list}[{index}] ({name:?})"),
        None => format!("{list}[{index}]"),
    }
}

fn claim(names: &mut HashSet<String>, name: &str) -> Result<(), String> {
    if !is_tool_name(name) {
        return Err(format!("{name:?} must match ^[A-Za-z0-9_-]{{1,64}}$"));
    }
    if BUILT_IN_NAMES.contains(&name) {
        return Err(format!("{name:?} is a built-in tool of the relay"));
    }
    if !names.insert(name.to_string()) {
        return Err(format!("{name:?} is declared twice"));
    }
    Ok(())
}

fn function(entry: Value, env: &impl Fn(&str) -> Option<String>) -> Result<FunctionSpec, String> {
    let raw: RawFunction = serde_json::from_value(entry).map_err(|e| e.to_string())?;
    let parameters = raw
        .parameters
        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
    super::schema::check(&parameters).map_err(|e| format!("parameters: {e}"))?;
    let url = http_url(&raw.url).map_err(|e| format!("url: {e}"))?;
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !TIMEOUT_RANGE_MS.contains(&timeout_ms) {
        return Err(format!(
            "timeout_ms: {timeout_ms} is outside {}–{} ms",
            TIMEOUT_RANGE_MS.start(),
            TIMEOUT_RANGE_MS.end()
        ));
    }
    let headers = headers(raw.headers, env)?
        .into_iter()
        .map(|(k, v)| (k, Secret::from(v.as_str())))
        .collect();
    Ok(FunctionSpec {
        name: raw.name,
        description: raw.description,
        parameters,
        url,
        timeout_ms,
        headers,
    })
}

fn mcp(entry: Value, env: &impl Fn(&str) -> Option<String>) -> Result<McpTool, String> {
    const FIELDS: [&str; 9] = [
        "server_label",
        "server_url",
        "connector_id",
        "tunnel_id",
        "headers",
        "allowed_tools",
        "require_approval",
        "authorization",
        "server_description",
    ];
    let object = entry.as_object().ok_or("must be a JSON object")?;
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "{unknown}: unknown field; expected one of {}",
            FIELDS.join(", ")
        ));
    }
    let mut tool: McpTool = serde_json::from_value(entry).map_err(|e| e.to_string())?;
    let sources = [&tool.server_url, &tool.connector_id, &tool.tunnel_id];
    if sources.iter().filter(|s| s.is_some()).count() != 1 {
        return Err("server_url: give exactly one of server_url, connector_id, tunnel_id".into());
    }
    if let Some(url) = &tool.server_url {
        http_url(url).map_err(|e| format!("server_url: {e}"))?;
    }
    check_allowed_tools(tool.allowed_tools.as_ref()).map_err(|e| format!("allowed_tools: {e}"))?;
    check_approval(tool.require_approval.as_ref()).map_err(|e| format!("require_approval: {e}"))?;
    if let Some(headers) = tool.headers.take() {
        tool.headers = Some(self::headers(headers, env)?.into_iter().collect());
    }
    if let Some(auth) = &tool.authorization {
        tool.authorization =
            Some(substitute(auth, env).map_err(|e| format!("authorization: {e}"))?);
    }
    Ok(tool)
}

/// `["name", …]` or `{"read_only": bool, "tool_names": ["name", …]}` (SDK `McpAllowedTools`).
fn check_allowed_tools(value: Option<&Value>) -> Result<(), String> {
    match value {
        None => Ok(()),
        Some(Value::Array(names)) if names.iter().all(Value::is_string) => Ok(()),
        Some(filter @ Value::Object(_)) => check_filter(filter),
        Some(_) => Err("must be a list of tool names or {\"read_only\", \"tool_names\"}".into()),
    }
}

/// `"always"`, `"never"` or `{"always": filter, "never": filter}` (SDK `McpRequireApproval`).
fn check_approval(value: Option<&Value>) -> Result<(), String> {
    match value {
        None => Ok(()),
        Some(Value::String(s)) if s == "always" || s == "never" => Ok(()),
        Some(Value::Object(map)) => map.iter().try_for_each(|(key, filter)| match key.as_str() {
            "always" | "never" => check_filter(filter),
            other => Err(format!("{other}: unknown key; expected always or never")),
        }),
        Some(_) => Err("must be \"always\", \"never\" or {\"always\": …, \"never\": …}".into()),
    }
}

fn check_filter(filter: &Value) -> Result<(), String> {
    let Some(map) = filter.as_object() else {
        return Err("a filter must be an object".into());
    };
    map.iter()
        .try_for_each(|(key, value)| match (key.as_str(), value) {
            ("read_only", Value::Bool(_)) => Ok(()),
            ("tool_names", Value::Array(names)) if names.iter().all(Value::is_string) => Ok(()),
            (other, _) => Err(format!(
                "{other}: a filter takes read_only (bool) and tool_names (list of names)"
            )),
        })
}

fn http_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?} is not an http(s) URL"));
    }
    Ok(parsed)
}

/// Header names checked, values `${VAR}`-substituted and checked as HTTP header values.
fn headers(
    raw: BTreeMap<String, String>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        let field = format!("headers.{name}");
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("{field}: not a valid header name"));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!("{field}: set by the relay itself"));
        }
        let value = substitute(&value, env).map_err(|e| format!("{field}: {e}"))?;
        if reqwest::header::HeaderValue::from_str(&value).is_err() {
            return Err(format!(
                "{field}: not a valid header value once substituted"
            ));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Replace every `${VAR}` (`VAR`: letters, digits, `_`) in `value`; an unset variable or an
/// unterminated `${` is an error naming it (never the value).
pub fn substitute(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or("an unterminated ${")?;
        let var = &after[..end];
        let valid = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!("${{{var}}} is not a variable name"));
        }
        let resolved =
            env(var).ok_or_else(|| format!("${{{var}}} is not set in the environment"))?;
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "functions": [
        {"name": "lookup_order", "description": "Find an order by its number",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
         "url": "https://backend.example.com/tools/lookup_order", "timeout_ms": 8000,
         "headers": {"Authorization": "Bearer ${BACKEND_TOKEN}"}}
      ],
      "mcp": [
        {"server_label": "crm", "server_url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer ${CRM_TOKEN}"},
         "allowed_tools": ["find_customer"], "require_approval": "never"}
      ]
    }"#;

    fn env(var: &str) -> Option<String> {
        match var {
            "BACKEND_TOKEN" => Some("backend-secret".into()),
            "CRM_TOKEN" => Some("crm-secret".into()),
            _ => None,
        }
    }

    fn parse_with(edit: impl FnOnce(&mut Value)) -> Result<ToolsFile, String> {
        let mut value: Value = serde_json::from_str(EXAMPLE).unwrap();
        edit(&mut value);
        ToolsFile::parse(&value.to_string(), env)
    }

    #[test]
    fn the_documented_example_loads_with_its_variables_replaced() {
        let file = ToolsFile::parse(EXAMPLE, env).unwrap();
        let f = &file.functions[0];
        assert_eq!(f.name, "lookup_order");
        assert_eq!(f.timeout_ms, 8000);
        assert_eq!(f.headers[0].1.expose(), "Bearer backend-secret");
        assert!(!format!("{file:?}").contains("secret"), "{file:?}");
        let crm = &file.mcp[0];
        assert_eq!(
            crm.headers.as_ref().unwrap()["Authorization"],
            "Bearer crm-secret"
        );
        assert_eq!(file.names().collect::<Vec<_>>(), ["lookup_order", "crm"]);
    }

    #[test]
    fn each_mistake_names_the_entry_and_the_field() {
        type Edit = Box<dyn FnOnce(&mut Value)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|v| v["functions"][0]["name"] = "bad name".into()),
                "functions[0] (\"bad name\"): name:",
            ),
            (
                Box::new(|v| v["functions"][0]["name"] = "end_call".into()),
                "built-in",
            ),
            (
                Box::new(|v| v["mcp"][0]["server_label"] = "lookup_order".into()),
                "mcp[0] (\"lookup_order\"): server_label: \"lookup_order\" is declared twice",
            ),
            (
                Box::new(|v| v["functions"][0]["url"] = "ftp://x/y".into()),
                "functions[0] (\"lookup_order\"): url:",
            ),
            (
                Box::new(|v| v["functions"][0]["timeout_ms"] = 30_001.into()),
                "timeout_ms: 30001",
            ),
            (
                Box::new(|v| {
                    v["functions"][0]["parameters"] = serde_json::json!({"type": "string"})
                }),
                "parameters:",
            ),
            (
                Box::new(|v| {
                    v["functions"][0]["parameters"] =
                        serde_json::json!({"type": "object", "properties": {"x": {"type": 5}}})
                }),
                "parameters:",
            ),
            (
                Box::new(|v| v["functions"][0]["headers"]["X"] = "${NOPE}".into()),
                "headers.X: ${NOPE} is not set",
            ),
            (
                Box::new(|v| v["functions"][0]["urll"] = "x".into()),
                "unknown field `urll`",
            ),
            (
                Box::new(|v| v["mcp"][0]["server_urll"] = "x".into()),
                "mcp[0] (\"crm\"): server_urll: unknown field",
            ),
            (
                Box::new(|v| v["mcp"][0]["require_approval"] = "sometimes".into()),
                "require_approval:",
            ),
            (
                Box::new(|v| v["mcp"][0]["allowed_tools"] = 3.into()),
                "allowed_tools:",
            ),
            (
                Box::new(|v| v["mcp"][0]["connector_id"] = "connector_gmail".into()),
                "exactly one of",
            ),
        ];
        for (edit, expected) in cases {
            let err = parse_with(edit).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
            assert!(!err.contains("backend-secret"), "{err}");
        }
    }

    #[test]
    fn variables_are_replaced_and_unset_ones_are_named() {
        let env = |v: &str| (v == "A").then(|| "1".to_string());
        assert_eq!(substitute("x${A}y${A}", &env).unwrap(), "x1y1");
        assert_eq!(substitute("plain", &env).unwrap(), "plain");
        assert!(substitute("${B}", &env).unwrap_err().contains("${B}"));
        assert!(substitute("${A", &env).is_err());
        assert!(substitute("${1A}", &env).is_err());
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = ToolsFile::load(Path::new("/nonexistent/tools.json")).unwrap_err();
        assert!(
            err.starts_with("/nonexistent/tools.json: cannot read"),
            "{err}"
        );
    }
}
