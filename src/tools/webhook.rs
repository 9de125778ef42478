//! Function tools run as HTTP webhooks: one signed `application/json` POST per call.
//!
//! Request body: `{"type":"function_call","name","call_id","arguments":{…},"call":{"call_sid",
//! "stream_sid","direction","from","to","parameters","metadata"}}`, signed per Standard Webhooks
//! ([`super::signing`]). A 2xx answer whose body is JSON (at most [`MAX_RESPONSE_BYTES`])
//! becomes the `function_call_output`, compacted but otherwise as sent; anything else (another
//! status, the entry's `timeout_ms`, a larger or non-JSON body, no connection) gives the model
//! `{"error": "<short reason>"}`. Redirects are not followed: the signed body goes only where
//! the file says.

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use serde_json::Value;

use super::file::FunctionSpec;
use super::signing::{Signer, HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP};
use super::{CallContext, FunctionCall, Outcome, ToolOutput};

/// Largest answer body accepted, bytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The HTTP client every webhook call of the process shares.
#[derive(Debug, Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    signer: Option<Signer>,
}

/// The body POSTed to a function's URL.
#[derive(Debug, Serialize)]
pub struct WebhookRequest<'a> {
    /// Always `function_call`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: &'a str,
    pub call_id: &'a str,
    /// The model's arguments, already checked against the function's schema.
    pub arguments: &'a Value,
    pub call: &'a CallContext,
}

impl WebhookClient {
    /// A client signing with `signer` (unsigned without one: only for tests and `demo`).
    pub fn new(signer: Option<Signer>) -> anyhow::Result<Self> {
        crate::upstream::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the tools HTTP client")?;
        Ok(WebhookClient { http, signer })
    }

    /// POST `call` to `spec.url` and turn the answer into the model's output.
    pub async fn call(
        &self,
        spec: &FunctionSpec,
        call: &FunctionCall,
        ctx: &CallContext,
    ) -> ToolOutput {
        let body = WebhookRequest {
            kind: "function_call",
            name: &call.name,
            call_id: &call.call_id,
            arguments: &call.arguments,
            call: ctx,
        };
        let body = serde_json::to_vec(&body).expect("webhook requests serialize");
        let timeout = Duration::from_millis(spec.timeout_ms);
        match tokio::time::timeout(timeout, self.send(spec, body)).await {
            Ok(output) => output,
            Err(_) => ToolOutput::error(
                Outcome::Timeout,
                &format!("the tool did not answer within {} ms", spec.timeout_ms),
            ),
        }
    }

    async fn send(&self, spec: &FunctionSpec, body: Vec<u8>) -> ToolOutput {
        let mut request = self
            .http
            .post(spec.url.clone())
            .header(CONTENT_TYPE, "application/json");
        for (name, value) in &spec.headers {
            // Both were checked when the file was loaded.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose()),
            ) {
                request = request.header(name, value);
            }
        }
        if let Some(signer) = &self.signer {
            let signed = signer.sign_now(&body);
            request = request
                .header(HEADER_ID, signed.id)
                .header(HEADER_TIMESTAMP, signed.timestamp.to_string())
                .header(HEADER_SIGNATURE, signed.signature);
        }
        let mut response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(error = %e, "tool webhook unreachable");
                return ToolOutput::error(Outcome::Unreachable, "the tool could not be reached");
            }
        };
        let status = response.status();
        if !status.is_success() {
            return ToolOutput::error(
                Outcome::HttpError,
                &format!("the tool failed (HTTP {})", status.as_u16()),
            );
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return ToolOutput::error(Outcome::InvalidResponse, "the tool's answer is over 64 KiB");
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return ToolOutput::error(
                            Outcome::InvalidResponse,
                            "the tool's answer is over 64 KiB",
                        );
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    return ToolOutput::error(Outcome::Unreachable, "the tool's answer was cut off")
                }
            }
        }
        match compact_json(&bytes) {
            Some(output) => ToolOutput::ok(output),
            None => ToolOutput::error(Outcome::InvalidResponse, "the tool's answer is not JSON"),
        }
    }
}

/// `bytes` as compact JSON text with members in the order sent (whitespace outside strings
/// removed), if they are one JSON value.
pub fn compact_json(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_compacted_in_the_order_sent() {
        let body = br#" { "status" : "shipped",
            "eta":"to morrow", "a\"b": [1, 2 ,{"z": null}] } "#;
        assert_eq!(
            compact_json(body).unwrap(),
            r#"{"status":"shipped","eta":"to morrow","a\"b":[1,2,{"z":null}]}"#
        );
        assert_eq!(compact_json(b"\"x \\\\ y\"").unwrap(), r#""x \\ y""#);
        assert!(compact_json(b"not json").is_none());
        assert!(compact_json(b"").is_none());
        assert!(compact_json(b"{} {}").is_none());
    }
}
