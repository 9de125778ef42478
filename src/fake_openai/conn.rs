//! One stand-in connection's I/O: the WebSocket upgrade (recording, refusal) and the read/tick loop.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::live::LiveConn;
use super::recorder::{ConnectionLog, Recorder};
use super::session::Conn;
use super::FakeOptions;

/// What the upgrade request said.
#[derive(Debug, Default)]
struct Upgrade {
    path_and_query: String,
    authorization: Option<String>,
    beta_header: bool,
}

/// Serve one TCP connection until either side closes or `shutdown` fires. Errors are logged here.
pub(super) async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    opts: Arc<FakeOptions>,
    recorder: Option<Recorder>,
    shutdown: CancellationToken,
    upgrade_delay: Option<std::time::Duration>,
) {
    if let Some(delay) = upgrade_delay {
        tokio::time::sleep(delay).await;
    }
    let mut upgrade = Upgrade::default();
    let reject_status = opts.reject_status;
    // The error type is tungstenite's (`ErrorResponse`); boxing it is not ours to choose.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        upgrade.path_and_query = req
            .uri()
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default();
        upgrade.authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        upgrade.beta_header = req.headers().contains_key("openai-beta");
        match reject_status {
            Some(status) => Err(refusal(status)),
            None => Ok(resp),
        }
    };
    let accepted = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    let log = ConnectionLog {
        path_and_query: upgrade.path_and_query.clone(),
        authorization: upgrade.authorization.clone(),
        ..ConnectionLog::default()
    };
    let mut ws = match accepted {
        Ok(ws) => ws,
        Err(e) => {
            debug!(%peer, error = %e, "stand-in upgrade failed or refused");
            if let (Some(recorder), Some(_)) = (&recorder, reject_status) {
                recorder.open(ConnectionLog {
                    errors_sent: vec!["invalid_api_key".into()],
                    closed: true,
                    ..log
                });
            }
            return;
        }
    };
    let rec = recorder.map(|r| r.open(log));
    info!(%peer, path = %upgrade.path_and_query, "stand-in connection opened");
    if upgrade.path_and_query.starts_with(crate::live::PATH) {
        let mut conn = LiveConn::new(&opts, upgrade.authorization.as_deref(), rec);
        match run(&mut ws, &mut conn, &shutdown).await {
            Ok(()) => info!(%peer, "stand-in GPT-Live connection closed"),
            Err(e) => info!(%peer, error = %e, "stand-in GPT-Live connection ended"),
        }
        conn.finish();
        return;
    }
    let mut conn = Conn::new(opts.mode, opts.pace, &upgrade.path_and_query, rec);
    conn.end_call_after = opts.end_call_after;
    conn.tool_calls = opts.tool_calls.clone();
    conn.expires_at = opts.expire_after.map(|after| Instant::now() + after);
    conn.realtime_pace = opts.realtime_pace;
    conn.start(upgrade.beta_header);
    match run(&mut ws, &mut conn, &shutdown).await {
        Ok(()) => info!(%peer, "stand-in connection closed"),
        Err(e) => info!(%peer, error = %e, "stand-in connection ended"),
    }
    conn.finish();
}

/// The refusal for `reject_status`: that HTTP status and the API's JSON error body.
fn refusal(status: u16) -> ErrorResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
    let body = serde_json::json!({"error": {
        "message": format!("Incorrect API key provided (refused by the stand-in with HTTP {}).", status.as_u16()),
        "type": "invalid_request_error",
        "code": "invalid_api_key",
        "param": null,
    }});
    let mut response = ErrorResponse::new(Some(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// After our close: record what the client sent before it saw the close (it still reached the
/// server), until its close arrives or 2 s pass. Nothing more is answered.
async fn drain_after_close<M: Machine>(
    ws: &mut WebSocketStream<TcpStream>,
    conn: &mut M,
) -> anyhow::Result<()> {
    let drained = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(frame)) = ws.next().await {
            if let Message::Text(text) = frame {
                conn.on_text(text.as_str(), Instant::now());
                conn.take_output();
            }
        }
    });
    let _ = drained.await;
    Ok(())
}

/// Read client frames and send due audio chunks until the connection ends.
async fn run<M: Machine>(
    ws: &mut WebSocketStream<TcpStream>,
    conn: &mut M,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let out = conn.take_output();
        if !out.is_empty() {
            for frame in out {
                ws.feed(Message::text(frame)).await?;
            }
            ws.flush().await?;
        }
        if conn.closing() {
            ws.close(None).await?;
            return drain_after_close(ws, conn).await;
        }
        let deadline = conn.next_deadline();
        tokio::select! {
            // Client frames first, so that a barge-in is seen before the next chunk goes out.
            biased;
            () = shutdown.cancelled() => {
                ws.close(None).await?;
                return Ok(());
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => conn.on_text(text.as_str(), Instant::now()),
                Some(Ok(Message::Binary(_))) => conn.on_binary(),
                Some(Ok(Message::Close(_))) | None => {
                    // tungstenite queued the close reply; push it out before dropping the socket.
                    let _ = ws.flush().await;
                    return Ok(());
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                conn.on_tick(Instant::now());
            }
        }
    }
}

/// A connection's state machine: the Realtime API's ([`Conn`]) or GPT-Live's ([`LiveConn`]).
trait Machine {
    fn on_text(&mut self, text: &str, now: Instant);
    fn on_binary(&mut self);
    fn on_tick(&mut self, now: Instant);
    fn take_output(&mut self) -> Vec<String>;
    fn next_deadline(&self) -> Option<Instant>;
    fn closing(&self) -> bool;
}

macro_rules! machine {
    ($t:ty) => {
        impl Machine for $t {
            fn on_text(&mut self, text: &str, now: Instant) {
                <$t>::on_text(self, text, now)
            }
            fn on_binary(&mut self) {
                <$t>::on_binary(self)
            }
            fn on_tick(&mut self, now: Instant) {
                <$t>::on_tick(self, now)
            }
            fn take_output(&mut self) -> Vec<String> {
                <$t>::take_output(self)
            }
            fn next_deadline(&self) -> Option<Instant> {
                <$t>::next_deadline(self)
            }
            fn closing(&self) -> bool {
                self.closing
            }
        }
    };
}
machine!(Conn);
machine!(LiveConn);
