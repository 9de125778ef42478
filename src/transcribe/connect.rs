//! Opening a backend WebSocket (OpenAI transcription, Deepgram): the relay's own upstream opener
//! ([`crate::upstream::open`]: ws/wss, one `Authorization` header, timeout, refusals read into
//! errors) without the handshake timing.

use std::time::Duration;

pub(super) use crate::upstream::{ensure_crypto_provider, error_message};
use crate::upstream::{UpstreamError, UpstreamSocket};

/// Open `url` with `Authorization: {authorization}` within `timeout`; see [`crate::upstream::open`].
pub(super) async fn connect(
    url: &str,
    authorization: &str,
    timeout: Duration,
) -> Result<UpstreamSocket, UpstreamError> {
    crate::upstream::open(url, authorization, timeout)
        .await
        .map(|(socket, _)| socket)
}
