//! A typed client for the parts of Twilio's REST API we use: place a call, hang it up, list our
//! numbers; plus the form Twilio POSTs to a call's status callback.
//!
//! Follows `PROTOCOLS.md` § "Twilio REST API (2010-04-01)": form-encoded bodies, `Accept:
//! application/json`, HTTP basic auth with the account SID and auth token (or an `SK…` API key SID
//! and its secret; the account SID is still in the path). Secrets never reach `Debug` output or an
//! error string: every error text is scrubbed of the secret before it leaves this module.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Secret;

/// Twilio's production API host; tests point [`TwilioRest::new`] at a loopback fake instead.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// Per-request timeout, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pagination stops with an error after this many pages (Twilio's default page holds 50 numbers),
/// so a server that keeps answering with a `next_page_uri` cannot loop us forever.
const MAX_PAGES: usize = 100;
/// How much of a non-JSON error body (an HTML 502 from a proxy) is kept, in characters.
const ERROR_BODY_CHARS: usize = 200;

/// reqwest is built without a crypto provider: the relay installs rustls' ring one.
pub use crate::upstream::ensure_crypto_provider;

/// How we authenticate: the basic-auth user is the account SID (`AC…`) or an API key SID (`SK…`).
#[derive(Debug, Clone)]
pub enum TwilioAuth {
    /// `AccountSid:AuthToken`.
    AuthToken(Secret),
    /// `SK…:secret`; the account SID still goes in the path.
    ApiKey { sid: String, secret: Secret },
}

/// The REST client. `Debug` shows the base URL and account SID, never the secret.
#[derive(Debug, Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    /// Without a trailing slash; `next_page_uri` paths are appended to it.
    base_url: String,
    account_sid: String,
    auth: TwilioAuth,
}

/// A call to place (`POST …/Calls.json`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateCall {
    /// E.164 number (or `client:`/`sip:` address) to call.
    pub to: String,
    /// One of our Twilio numbers, E.164.
    pub from: String,
    /// The TwiML document to run when answered (Twilio's limit: 4 000 characters).
    pub twiml: String,
    /// Absolute URL Twilio POSTs call progress to; the events below are sent only with it.
    pub status_callback: Option<String>,
    /// `initiated`, `ringing`, `answered`, `completed`, in the order to send them.
    pub status_callback_events: Vec<String>,
    /// How long to let the phone ring, s (Twilio: 5–600, default 60).
    pub timeout_s: Option<u32>,
}

/// The call resource Twilio answers with (other fields are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CallResource {
    /// `CA` + 32 hex digits.
    pub sid: String,
    /// `queued initiated ringing in-progress completed busy failed no-answer canceled`.
    pub status: String,
    pub to: String,
    pub from: String,
    /// `outbound-api`, `inbound`, …
    #[serde(default)]
    pub direction: Option<String>,
    /// Whole seconds as a string; null until the call ends.
    #[serde(default)]
    pub duration: Option<String>,
}

/// One of the account's phone numbers (`IncomingPhoneNumbers.json`; other fields are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct IncomingNumber {
    /// `PN` + 32 hex digits.
    pub sid: String,
    /// E.164.
    pub phone_number: String,
    pub friendly_name: String,
}

/// Why a REST call failed. No variant ever contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum TwilioError {
    /// Twilio answered with an error: its JSON `{"code","message","more_info","status"}`, or for a
    /// non-JSON body (an HTML 502) `code: None` and the first 200 characters of the body.
    #[error("Twilio answered HTTP {http_status}{}: {message}", code_suffix(*.code))]
    Api {
        http_status: u16,
        code: Option<i64>,
        message: String,
        more_info: Option<String>,
    },
    /// No usable answer: connection refused, DNS, TLS, the 10 s timeout.
    #[error("Twilio request failed: {0}")]
    Transport(String),
    /// A success status with a body that is not the resource we asked for.
    #[error("unexpected Twilio response: {0}")]
    Decode(String),
}

fn code_suffix(code: Option<i64>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

impl TwilioError {
    /// Twilio's error code, when it sent one (e.g. 20404, 21211).
    pub fn code(&self) -> Option<i64> {
        match self {
            TwilioError::Api { code, .. } => *code,
            _ => None,
        }
    }

    /// Twilio error 20404, "resource not found": for a hang-up, the call has already ended.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(20404)
    }
}

/// Twilio's error body; every field optional so a partial one still parses.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
    more_info: Option<String>,
}

/// One page of `IncomingPhoneNumbers.json`.
#[derive(Deserialize)]
struct NumbersPage {
    incoming_phone_numbers: Vec<IncomingNumber>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

impl TwilioRest {
    /// A client for `base_url` (e.g. [`DEFAULT_BASE_URL`]; http or https, any trailing `/`
    /// ignored) acting on `account_sid`. Errors: a base URL that is not http(s), an account SID that
    /// is empty or not alphanumeric, or a TLS set-up failure.
    pub fn new(base_url: &str, account_sid: &str, auth: TwilioAuth) -> anyhow::Result<Self> {
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        let parsed =
            Url::parse(&base_url).with_context(|| format!("Twilio base URL {base_url}"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "Twilio base URL {base_url} must be http:// or https://"
        );
        anyhow::ensure!(
            is_sid(account_sid),
            "Twilio account SID must be non-empty and alphanumeric"
        );
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the Twilio HTTP client")?;
        Ok(TwilioRest {
            http,
            base_url,
            account_sid: account_sid.to_string(),
            auth,
        })
    }

    /// The account SID in every path.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// Place a call: `POST /2010-04-01/Accounts/{AC}/Calls.json` with `To`, `From`, `Twiml`, then
    /// (only with a callback URL) `StatusCallback`, `StatusCallbackMethod=POST` and one
    /// `StatusCallbackEvent` per event, then `Timeout` if set. Returns the queued call.
    pub async fn create_call(&self, call: &CreateCall) -> Result<CallResource, TwilioError> {
        let timeout = call.timeout_s.map(|t| t.to_string());
        let mut form: Vec<(&str, &str)> = vec![
            ("To", &call.to),
            ("From", &call.from),
            ("Twiml", &call.twiml),
        ];
        if let Some(url) = &call.status_callback {
            form.push(("StatusCallback", url));
            form.push(("StatusCallbackMethod", "POST"));
            for event in &call.status_callback_events {
                form.push(("StatusCallbackEvent", event));
            }
        }
        if let Some(t) = &timeout {
            form.push(("Timeout", t));
        }
        let url = self.account_url("Calls.json");
        self.send(self.http.post(url).form(&form), "call").await
    }

    /// Hang up: `POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json` with `Status=completed`, or
    /// `Status=canceled` when `known_status` says the call has not been answered (`queued`,
    /// `initiated`, `ringing`; `PROTOCOLS.md` § "Twilio REST"). Canceling does not touch a call
    /// that is in progress, so if Twilio answers that the call was answered meanwhile (status
    /// `in-progress`), it is completed with a second request. Returns the call as Twilio last
    /// described it. A call that does not exist (or has a malformed SID, rejected without a
    /// request) is Twilio's 404 20404, see [`TwilioError::is_not_found`].
    pub async fn hang_up(
        &self,
        call_sid: &str,
        known_status: Option<&str>,
    ) -> Result<CallResource, TwilioError> {
        if matches!(known_status, Some("queued" | "initiated" | "ringing")) {
            let call = self.set_status(call_sid, "canceled").await?;
            if call.status != "in-progress" {
                return Ok(call);
            }
        }
        self.set_status(call_sid, "completed").await
    }

    /// Give a live call new instructions: `POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json` with
    /// `Twiml=…` (at most 4 000 characters). Twilio stops what the call is doing (our
    /// `<Connect><Stream>`, whose socket it closes) and runs `twiml`, e.g. a `<Dial>` to transfer
    /// the caller. A call that does not exist is 404 20404, see [`TwilioError::is_not_found`].
    pub async fn update_twiml(
        &self,
        call_sid: &str,
        twiml: &str,
    ) -> Result<CallResource, TwilioError> {
        if !is_sid(call_sid) {
            return Err(TwilioError::Api {
                http_status: 404,
                code: Some(20404),
                message: "not a call SID (expected CA + hex digits)".into(),
                more_info: None,
            });
        }
        let url = self.account_url(&format!("Calls/{call_sid}.json"));
        let form = [("Twiml", twiml)];
        self.send(self.http.post(url).form(&form), "call").await
    }

    /// `POST …/Calls/{CA}.json` with `Status=status`.
    async fn set_status(&self, call_sid: &str, status: &str) -> Result<CallResource, TwilioError> {
        if !is_sid(call_sid) {
            return Err(TwilioError::Api {
                http_status: 404,
                code: Some(20404),
                message: "not a call SID (expected CA + hex digits)".into(),
                more_info: None,
            });
        }
        let url = self.account_url(&format!("Calls/{call_sid}.json"));
        let form = [("Status", status)];
        self.send(self.http.post(url).form(&form), "call").await
    }

    /// Every number on the account, in Twilio's order: `GET
    /// /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json`, then each `next_page_uri` (a path,
    /// appended to the base URL) until it is null. A `next_page_uri` that is not a path (another
    /// host would receive our credentials) or more than 100 pages is a `Decode` error.
    pub async fn incoming_numbers(&self) -> Result<Vec<IncomingNumber>, TwilioError> {
        let mut url = self.account_url("IncomingPhoneNumbers.json");
        let mut numbers = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: NumbersPage = self.send(self.http.get(&url), "numbers page").await?;
            numbers.extend(page.incoming_phone_numbers);
            match page.next_page_uri {
                None => return Ok(numbers),
                Some(next) if next.starts_with('/') && !next.starts_with("//") => {
                    url = format!("{}{next}", self.base_url);
                }
                Some(_) => {
                    return Err(TwilioError::Decode(
                        "next_page_uri is not a path on the API host".into(),
                    ))
                }
            }
        }
        Err(TwilioError::Decode(format!(
            "more than {MAX_PAGES} pages of numbers"
        )))
    }

    fn account_url(&self, rest: &str) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/{rest}",
            self.base_url, self.account_sid
        )
    }

    fn credentials(&self) -> (&str, &Secret) {
        match &self.auth {
            TwilioAuth::AuthToken(token) => (&self.account_sid, token),
            TwilioAuth::ApiKey { sid, secret } => (sid, secret),
        }
    }

    /// Authenticate, send, and turn the answer into `T` or a [`TwilioError`].
    async fn send<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &str,
    ) -> Result<T, TwilioError> {
        let (user, secret) = self.credentials();
        let response = request
            .basic_auth(user, Some(secret.expose()))
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| TwilioError::Transport(self.redact(error_chain(&e))))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| TwilioError::Transport(self.redact(error_chain(&e))))?;
        tracing::debug!(status = status.as_u16(), what, "Twilio REST answer");
        if !status.is_success() {
            return Err(self.api_error(status.as_u16(), &body));
        }
        serde_json::from_str(&body)
            .map_err(|e| TwilioError::Decode(self.redact(format!("{what}: {e}"))))
    }

    fn api_error(&self, http_status: u16, body: &str) -> TwilioError {
        let (code, message, more_info) = match serde_json::from_str::<ErrorBody>(body) {
            Ok(ErrorBody {
                code,
                message: Some(message),
                more_info,
            }) => (code, message, more_info),
            _ => (
                None,
                body.trim().chars().take(ERROR_BODY_CHARS).collect(),
                None,
            ),
        };
        TwilioError::Api {
            http_status,
            code,
            message: self.redact(message),
            more_info: more_info.map(|m| self.redact(m)),
        }
    }

    /// Remove the secret, and the basic-auth header value made from it, from text we did not write.
    fn redact(&self, text: String) -> String {
        let (user, secret) = self.credentials();
        let secret = secret.expose();
        if secret.is_empty() {
            return text;
        }
        let header = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        text.replace(&header, "[redacted]")
            .replace(secret, "[redacted]")
    }
}

/// SIDs are two letters and hex digits; anything else must not be spliced into a path.
fn is_sid(sid: &str) -> bool {
    !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// reqwest's top-level message hides the cause ("error sending request"); keep the whole chain.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The form Twilio POSTs to a call's `StatusCallback` (PROTOCOLS.md § Twilio REST API, status
/// callbacks). Only `CallSid` is required; numbers arrive as strings and are parsed on demand, so
/// an absent or odd value never rejects the callback. Unknown fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusCallback {
    pub call_sid: String,
    pub account_sid: Option<String>,
    /// `queued initiated ringing in-progress completed busy failed no-answer canceled`.
    pub call_status: Option<String>,
    /// Call length in s; terminal events only.
    pub call_duration: Option<String>,
    /// RFC 2822 date, e.g. `Tue, 04 Mar 2025 10:00:00 +0000`.
    pub timestamp: Option<String>,
    /// 0-based order of this callback for the call; callbacks may arrive out of order.
    pub sequence_number: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    /// `inbound`, `outbound-api`, `outbound-dial`.
    pub direction: Option<String>,
}

impl StatusCallback {
    /// `CallDuration` in s, if present and numeric.
    pub fn duration_s(&self) -> Option<u64> {
        self.call_duration.as_deref()?.trim().parse().ok()
    }

    /// `SequenceNumber`, if present and numeric.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence_number.as_deref()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::FromRequest;

    fn client() -> TwilioRest {
        let auth = TwilioAuth::AuthToken("tok-very-secret".into());
        TwilioRest::new("http://127.0.0.1:9/", "AC123", auth).expect("client")
    }

    async fn parse_form(body: &str) -> Result<StatusCallback, String> {
        let req = axum::http::Request::post("/status")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(axum::body::Body::from(body.to_string()))
            .expect("request");
        axum::Form::<StatusCallback>::from_request(req, &())
            .await
            .map(|f| f.0)
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn status_callbacks_parse_leniently() {
        let full = parse_form(
            "CallSid=CA1&AccountSid=AC1&CallStatus=completed&CallDuration=42&Timestamp=Tue%2C+04+Mar+2025+10%3A00%3A00+%2B0000&SequenceNumber=3&From=%2B15550001111&To=%2B15550002222&Direction=outbound-api&Caller=%2B1",
        )
        .await
        .expect("full callback");
        assert_eq!(full.call_status.as_deref(), Some("completed"));
        assert_eq!(full.duration_s(), Some(42));
        assert_eq!(full.sequence(), Some(3));
        assert_eq!(full.from.as_deref(), Some("+15550001111"));
        assert_eq!(
            full.timestamp.as_deref(),
            Some("Tue, 04 Mar 2025 10:00:00 +0000")
        );

        let sparse = parse_form("CallSid=CA2&CallStatus=ringing&CallDuration=&SequenceNumber=x")
            .await
            .expect("sparse callback");
        assert_eq!(sparse.duration_s(), None);
        assert_eq!(sparse.sequence(), None);
        assert_eq!(sparse.direction, None);

        assert!(parse_form("CallStatus=ringing").await.is_err());
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let c = client();
        let json = r#"{"code":20404,"message":"The requested resource /x was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404}"#;
        let e = c.api_error(404, json);
        assert!(e.is_not_found());
        assert_eq!(
            e.to_string(),
            "Twilio answered HTTP 404 (code 20404): The requested resource /x was not found"
        );

        let html = format!("<html>{}tok-very-secret</html>", "x".repeat(300));
        match c.api_error(502, &html) {
            TwilioError::Api { code, message, .. } => {
                assert_eq!(code, None);
                assert_eq!(message.chars().count(), ERROR_BODY_CHARS);
                assert!(message.starts_with("<html>xxx"));
            }
            other => panic!("{other:?}"),
        }
        let echoed = c.api_error(500, "token tok-very-secret leaked");
        assert!(!echoed.to_string().contains("very-secret"), "{echoed}");
    }

    #[test]
    fn new_rejects_bad_base_urls_and_sids() {
        let auth = || TwilioAuth::AuthToken("t".into());
        assert!(TwilioRest::new("ftp://x", "AC1", auth()).is_err());
        assert!(TwilioRest::new("not a url", "AC1", auth()).is_err());
        assert!(TwilioRest::new(DEFAULT_BASE_URL, "AC/../x", auth()).is_err());
        assert!(TwilioRest::new(DEFAULT_BASE_URL, "", auth()).is_err());
        let shown = format!("{:?}", client());
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
