//! Opening the Realtime API WebSocket: `ws://` or `wss://` (rustls, platform roots), bearer auth,
//! `TCP_NODELAY`, a connect timeout, and HTTP refusals turned into errors that say why.
//!
//! Follows `PROTOCOLS.md` § "OpenAI Realtime API — GA only": `Authorization: Bearer KEY` only, no
//! `OpenAI-Beta` header (the GA server rejects beta-shaped sessions).

use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, warn};

use crate::config::Config;

/// Largest message accepted from an upstream (the Realtime API, a transcription backend),
/// bytes: an audio delta of 1 MiB is over a minute of μ-law.
pub const MAX_UPSTREAM_MESSAGE_BYTES: usize = 1 << 20;

/// The upstream socket.
pub type UpstreamSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why the upstream socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("OPENAI_API_KEY is not set")]
    NotConfigured,
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The server answered the upgrade with an HTTP error (401 bad key, 403, 429 rate limit, 5xx).
    #[error("upgrade refused with HTTP {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("invalid upstream URL or header: {0}")]
    Request(String),
    #[error("{0}")]
    Connect(#[from] tokio_tungstenite::tungstenite::Error),
}

/// rustls (WebSockets and reqwest) needs one process-wide crypto provider; ring is the one
/// compiled in. Idempotent; keeps a provider someone else installed first.
pub fn ensure_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The TLS settings for `wss://`: the platform's roots (and `SSL_CERT_FILE`/`SSL_CERT_DIR`),
/// read once per process rather than on every call, which would cost milliseconds of CPU each.
fn tls_connector() -> Connector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        ensure_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            warn!(%error, "could not read a platform root certificate");
        }
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            warn!("no root certificates found: wss:// upstreams will fail (install ca-certificates or set SSL_CERT_FILE)");
        }
        debug!(added, ignored, "loaded root certificates");
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    Connector::Rustls(config.clone())
}

/// Open a call's voice session socket for `config` (`OPENAI_API`: the Realtime API or GPT-Live)
/// within `OPENAI_CONNECT_TIMEOUT_MS`.
/// Returns the socket and how long the handshake took.
pub async fn connect(config: &Config) -> Result<(UpstreamSocket, Duration), UpstreamError> {
    let key = config
        .openai_api_key
        .as_ref()
        .ok_or(UpstreamError::NotConfigured)?;
    let timeout = Duration::from_millis(config.openai_connect_timeout_ms);
    open(
        &config.voice_url(),
        &format!("Bearer {}", key.expose()),
        timeout,
    )
    .await
}

/// Open the WebSocket at `url` (`ws://` or `wss://`) with `Authorization: {authorization}`
/// within `timeout`, `TCP_NODELAY` on. Used for the Realtime API and the transcription backends.
/// Returns the socket and how long the handshake took.
///
/// # Errors
/// [`UpstreamError::Refused`] with the HTTP status and the body's message (an OpenAI or Deepgram
/// error JSON, or the first 200 bytes), `Timeout`, `Request` (bad URL or header), `Connect`.
pub async fn open(
    url: &str,
    authorization: &str,
    timeout: Duration,
) -> Result<(UpstreamSocket, Duration), UpstreamError> {
    ensure_crypto_provider();
    let mut request = url
        .into_client_request()
        .map_err(|e| UpstreamError::Request(e.to_string()))?;
    let auth = HeaderValue::from_str(authorization).map_err(|_| {
        UpstreamError::Request("the API key has characters not allowed in a header".into())
    })?;
    request.headers_mut().insert("Authorization", auth);
    let started = Instant::now();
    let connector = request
        .uri()
        .scheme_str()
        .is_some_and(|s| s == "wss")
        .then(tls_connector);
    // Small read buffer: see `routes::READ_BUFFER_BYTES`. Messages are capped well below
    // tungstenite's 64 MiB default: a bigger one ends the session (counted, reconnected).
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(crate::routes::READ_BUFFER_BYTES)
        .max_message_size(Some(MAX_UPSTREAM_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_UPSTREAM_MESSAGE_BYTES));
    let handshake =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
    match tokio::time::timeout(timeout, handshake).await {
        Err(_) => Err(UpstreamError::Timeout(
            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        )),
        Ok(Ok((socket, _response))) => Ok((socket, started.elapsed())),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            Err(UpstreamError::Refused {
                status: response.status().as_u16(),
                message: error_message(response.body().as_deref().unwrap_or_default()),
            })
        }
        Ok(Err(e)) => Err(UpstreamError::Connect(e)),
    }
}

/// The message of an error body: OpenAI's `{"error":{"message"}}`, Deepgram's `{"err_msg"}`
/// (or `{"message"}`), else the body itself cut to 200 bytes.
pub fn error_message(body: &[u8]) -> String {
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
    fn refusal_bodies_yield_their_message() {
        let body = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(error_message(body), "Incorrect API key provided");
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
        let config = Config {
            openai_api_key: Some("sk-test".into()),
            openai_realtime_url: format!("ws://{addr}/v1/realtime"),
            ..Config::default()
        };
        assert!(matches!(
            connect(&config).await,
            Err(UpstreamError::Connect(_))
        ));
    }
}
