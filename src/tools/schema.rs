//! Function arguments against the JSON Schema their tool declares, through the `jsonschema`
//! crate (drafts 4 to 2020-12; `$ref`s to other documents are never fetched).

use serde_json::Value;

/// A compiled argument schema.
pub struct ArgumentSchema(jsonschema::Validator);

impl std::fmt::Debug for ArgumentSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArgumentSchema")
    }
}

/// Whether `schema` can declare a Realtime function's parameters: a valid JSON Schema whose
/// top-level `type` is `object`. The error says why not.
pub fn check(schema: &Value) -> Result<(), String> {
    if !schema.is_object() || schema.get("type") != Some(&Value::from("object")) {
        return Err("must be a JSON Schema object with \"type\": \"object\"".into());
    }
    jsonschema::meta::validate(schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    jsonschema::validator_for(schema).map_err(|e| format!("not a usable JSON Schema: {e}"))?;
    Ok(())
}

impl ArgumentSchema {
    /// Compile `schema` (see [`check`]).
    pub fn compile(schema: &Value) -> Result<Self, String> {
        check(schema)?;
        jsonschema::validator_for(schema)
            .map(ArgumentSchema)
            .map_err(|e| e.to_string())
    }

    /// `Ok` when `arguments` satisfy the schema; else the first violation, short enough to hand
    /// to the model: `"/order_id: 5 is not of type \"string\""`.
    pub fn validate(&self, arguments: &Value) -> Result<(), String> {
        self.0.validate(arguments).map_err(|e| {
            let path = e.instance_path().to_string();
            let mut reason = e.to_string();
            reason.truncate(200);
            if path.is_empty() {
                reason
            } else {
                format!("{path}: {reason}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_checked_against_the_declared_schema() {
        let schema = ArgumentSchema::compile(&json!({"type": "object",
            "properties": {"order_id": {"type": "string"}}, "required": ["order_id"],
            "additionalProperties": false}))
        .unwrap();
        assert!(schema.validate(&json!({"order_id": "427"})).is_ok());
        let missing = schema.validate(&json!({})).unwrap_err();
        assert!(missing.contains("order_id"), "{missing}");
        let wrong = schema.validate(&json!({"order_id": 427})).unwrap_err();
        assert!(wrong.starts_with("/order_id: "), "{wrong}");
        assert!(schema.validate(&json!({"order_id": "1", "x": 1})).is_err());
    }

    #[test]
    fn only_object_schemas_are_accepted() {
        assert!(check(&json!({"type": "object"})).is_ok());
        assert!(check(&json!({"type": "array"})).is_err());
        assert!(check(&json!([])).is_err());
        assert!(check(&json!({"type": "object", "properties": {"a": {"type": "nope"}}})).is_err());
    }
}
