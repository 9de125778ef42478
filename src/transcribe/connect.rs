//! Opening a backend WebSocket (OpenAI transcription, Deepgram): `ws://` or `wss://` (rustls with
//! the ring provider), one `Authorization` header, a connect timeout, refusals read into errors.

use std::sync::Once;
use std::time::Duration;

use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::upstream::{UpstreamError, UpstreamSocket};

/// rustls (WebSockets and reqwest) needs one process-wide crypto provider; ring is compiled in.
pub(super) fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Open `url` with `Authorization: {authorization}` within `timeout`.
///
/// # Errors
/// [`UpstreamError::Refused`] with the HTTP status and the body's message (an OpenAI or Deepgram
/// error JSON, or the first 200 bytes), `Timeout`, `Request` (bad URL or header), `Connect`.
pub(super) async fn connect(
    url: &str,
    authorization: &str,
    timeout: Duration,
) -> Result<UpstreamSocket, UpstreamError> {
    ensure_crypto_provider();
    let mut request = url
        .into_client_request()
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let auth = HeaderValue::from_str(authorization).map_err(|_| {
        UpstreamError::Request("the API key has characters not allowed in a header".into())
    })?;
    request.headers_mut().insert("Authorization", auth);
    let handshake = tokio_tungstenite::connect_async_tls_with_config(request, None, true, None);
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(UpstreamError::Timeout(timeout_ms)),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(WsError::Http(response))) => Err(UpstreamError::Refused {
            status: response.status().as_u16(),
            message: error_message(response.body().as_deref().unwrap_or_default()),
        }),
        Ok(Err(e)) => Err(UpstreamError::Connect(e)),
    }
}

/// The message of an error body: OpenAI's `{"error":{"message"}}`, Deepgram's `{"err_msg"}`
/// (or `{"message"}`), else the body itself cut to 200 bytes.
pub(super) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Body {
        OpenAi {
            error: crate::realtime::server::ApiError,
        },
        Deepgram {
            err_msg: String,
        },
        Plain {
            message: String,
        },
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body::OpenAi { error }) => error.message,
        Ok(Body::Deepgram { err_msg: message }) | Ok(Body::Plain { message }) => message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_both_vendors_yield_their_message() {
        let openai =
            br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error"}}"#;
        assert_eq!(error_message(openai), "Incorrect API key provided");
        let deepgram =
            br#"{"err_code":"INVALID_AUTH","err_msg":"Invalid credentials.","request_id":"x"}"#;
        assert_eq!(error_message(deepgram), "Invalid credentials.");
        assert_eq!(error_message(b"Bad Gateway"), "Bad Gateway");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_error_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let result = connect(
            &format!("ws://{addr}/v1/listen"),
            "Token x",
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(result, Err(UpstreamError::Connect(_))));
    }
}
