//! The requests the stand-in sends as Twilio: status callbacks and the `Url` fetch, both signed
//! with the account's auth token (`X-Twilio-Signature`, `PROTOCOLS.md` § "Twilio request
//! signatures"), each under a 5 s timeout.

use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;

use crate::twilio::signature;
use crate::verify::SIGNATURE_HEADER;

/// Per-request timeout, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest TwiML document read from a `Url`, bytes (Twilio's own limit is 64 KB).
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// The one HTTP client the stand-in sends with.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    crate::upstream::ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the stand-in's HTTP client")
}

/// Send `params` to `url` as Twilio does: a form POST signed over the URL and the parameters, or
/// a GET with them in the query, signed over the whole URL. Returns the status and the body (at
/// most 64 KB; a longer body is an error).
///
/// # Errors
/// The request fails or times out, or the body is too long.
pub(crate) async fn send(
    http: &reqwest::Client,
    auth_token: &str,
    method: &Method,
    url: &str,
    params: &[(String, String)],
) -> anyhow::Result<(u16, String)> {
    let request = if *method == Method::GET {
        let query = serde_urlencoded::to_string(params).context("encoding the query")?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let full = format!("{url}{separator}{query}");
        let signed = signature::sign(auth_token, &full, &[]);
        http.get(full).header(SIGNATURE_HEADER, signed)
    } else {
        let signed = signature::sign(auth_token, url, params);
        http.post(url).header(SIGNATURE_HEADER, signed).form(params)
    };
    let mut response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {url}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            bail!("{url} answered more than {MAX_DOCUMENT_BYTES} bytes");
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET` or `POST` (Twilio's default) from a `…Method` form field; anything else is an error
/// naming the field.
pub(crate) fn method(value: Option<&str>, field: &str) -> Result<Method, String> {
    match value.map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => Ok(Method::POST),
        Some("GET") => Ok(Method::GET),
        Some(other) => Err(format!("{field} must be GET or POST, not {other}")),
    }
}
