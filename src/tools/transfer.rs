//! The built-in `transfer_call` tool: `TRANSFER_DESTINATIONS` (`sales=+15551230001,support=sip:help@example.com`)
//! and the tool the model sees, whose one parameter `destination` is an enum of the configured
//! names, so the model cannot invent a number.

use serde_json::json;

use crate::realtime::session::FunctionTool;

/// One `TRANSFER_DESTINATIONS` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// What the model says: `^[A-Za-z0-9_-]{1,64}$`.
    pub name: String,
    /// An E.164 number (`+15551230001`) or a `sip:`/`sips:` URI with a host.
    pub target: String,
}

impl Destination {
    /// Whether the target is a SIP URI (dialled with `<Sip>`) rather than a number.
    pub fn is_sip(&self) -> bool {
        is_sip(&self.target)
    }
}

fn is_sip(target: &str) -> bool {
    let lower = target.to_ascii_lowercase();
    (lower.starts_with("sip:") || lower.starts_with("sips:")) && target.contains('@')
}

/// Parse one `name=target` item of `TRANSFER_DESTINATIONS`.
pub fn parse_destination(item: &str) -> Result<Destination, String> {
    let (name, target) = item
        .trim()
        .split_once('=')
        .ok_or_else(|| format!("{item:?} is not name=target (e.g. sales=+15551230001)"))?;
    let (name, target) = (name.trim(), target.trim());
    if !super::file::is_tool_name(name) {
        return Err(format!("{name:?}: names match ^[A-Za-z0-9_-]{{1,64}}$"));
    }
    if !(crate::config::is_e164(target) || is_sip(target)) {
        return Err(format!(
            "{name}: {target:?} is neither an E.164 number (+15551230001) nor a SIP URI (sip:user@host)"
        ));
    }
    Ok(Destination {
        name: name.into(),
        target: target.into(),
    })
}

/// The `transfer_call` declaration for `destinations` (at least one).
pub fn transfer_tool(destinations: &[Destination]) -> FunctionTool {
    let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
    FunctionTool {
        name: super::TRANSFER_TOOL.into(),
        description: format!(
            "Transfer the caller to a person: one of {}. First tell the caller in one short sentence that you are transferring them, then call this. The call with you ends once the transfer starts.",
            names.join(", ")
        ),
        parameters: json!({
            "type": "object",
            "properties": {
                "destination": {"type": "string", "enum": names, "description": "Who to transfer the caller to."}
            },
            "required": ["destination"],
            "additionalProperties": false
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_numbers_or_sip_uris_under_a_name() {
        let sales = parse_destination(" sales = +15551230001 ").unwrap();
        assert_eq!((sales.name.as_str(), sales.is_sip()), ("sales", false));
        assert!(parse_destination("support=sip:help@example.com")
            .unwrap()
            .is_sip());
        for bad in [
            "sales",
            "sales=5551230001",
            "a b=+15551230001",
            "x=sip:nohost",
            "=+1555",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_model_can_only_name_a_configured_destination() {
        let tool = transfer_tool(&[
            parse_destination("sales=+15551230001").unwrap(),
            parse_destination("support=sip:help@example.com").unwrap(),
        ]);
        let schema = super::super::schema::ArgumentSchema::compile(&tool.parameters).unwrap();
        assert_eq!(
            tool.parameters["properties"]["destination"]["enum"],
            json!(["sales", "support"])
        );
        assert!(schema.validate(&json!({"destination": "sales"})).is_ok());
        for invented in [
            json!({"destination": "+15559999999"}),
            json!({}),
            json!({"destination": "sales", "number": "+1"}),
        ] {
            assert!(schema.validate(&invented).is_err(), "{invented}");
        }
    }
}
