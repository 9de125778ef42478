//! A loopback stand-in for Deepgram live streaming (PROTOCOLS.md § "Deepgram live streaming").
//!
//! Checks `Authorization: Token KEY` (else HTTP 401 with Deepgram's error JSON) and the query
//! (`encoding=mulaw`, `sample_rate=8000`, else 400). Runs an energy VAD over the binary μ-law it
//! receives (20 ms windows, RMS > 800): an interim `Results` (`is_final: false`) when speech starts
//! and every 500 ms of it, a final `Results` (`is_final`, `speech_final`) with the placeholder
//! `[deepgram speech X.XX s]` after 500 ms of quiet. `Finalize` answers at once with the final of
//! the utterance in progress (`from_finalize: true`), as Deepgram does; `CloseStream` flushes
//! likewise and closes. Records every connection (refused ones too). Optionally drops one
//! connection after its first final.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::{CancellationToken, DropGuard};
use twilio_realtime_relay::audio::{rms, BYTES_PER_MS, FRAME_BYTES};
use twilio_realtime_relay::transcribe::deepgram::{
    Alternative, Channel, Control, ListenEvent, Results,
};

/// RMS (16-bit units) above which a 20 ms window is speech.
const LOUD_RMS: f64 = 800.0;
/// Quiet that ends an utterance, ms.
const ENDPOINT_MS: usize = 500;
/// Speech between two interim results, ms.
const INTERIM_EVERY_MS: usize = 500;

/// What one connection did.
#[derive(Debug, Clone, Default)]
pub struct DgConn {
    pub query: String,
    pub authorization: Option<String>,
    /// Refused at the upgrade (wrong key or query).
    pub refused: bool,
    /// μ-law bytes received in binary frames.
    pub bytes: usize,
    pub keepalives: usize,
    /// `Finalize` messages received.
    pub finalizes: usize,
    /// Finals sent in answer to `Finalize`.
    pub finals_from_finalize: usize,
    pub close_stream: bool,
    pub interims_sent: usize,
    pub finals_sent: usize,
    /// Dropped by `drop_once` right after its first final.
    pub dropped: bool,
    /// Text frames that are not a known control message.
    pub unknown_text: Vec<String>,
}

/// The stand-in, serving until dropped.
pub struct FakeDeepgram {
    pub addr: std::net::SocketAddr,
    conns: Arc<Mutex<Vec<DgConn>>>,
    _stop: DropGuard,
}

impl FakeDeepgram {
    /// Serve on 127.0.0.1:0, accepting only `Token {key}`.
    pub async fn spawn(key: &str) -> FakeDeepgram {
        Self::spawn_with(key, false).await
    }

    /// Like [`FakeDeepgram::spawn`]; with `drop_once`, the first connection to send a final
    /// then drops without a close handshake (a mid-call failure), once per stand-in.
    pub async fn spawn_with(key: &str, drop_once: bool) -> FakeDeepgram {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (token, recorded, expected) = (stop.clone(), conns.clone(), format!("Token {key}"));
        let drop_once = Arc::new(AtomicBool::new(drop_once));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((tcp, _)) = accepted else { continue };
                let conn = serve(
                    tcp,
                    recorded.clone(),
                    expected.clone(),
                    drop_once.clone(),
                    token.clone(),
                );
                tokio::spawn(conn);
            }
        });
        FakeDeepgram {
            addr,
            conns,
            _stop: stop.drop_guard(),
        }
    }

    /// `ws://127.0.0.1:PORT/v1/listen`, for `DEEPGRAM_URL`.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/listen", self.addr)
    }

    /// Every connection so far.
    pub fn connections(&self) -> Vec<DgConn> {
        self.conns.lock().unwrap().clone()
    }
}

fn refusal(status: StatusCode, message: &str) -> ErrorResponse {
    let body =
        serde_json::json!({"err_code": "INVALID_AUTH", "err_msg": message, "request_id": "fake"});
    let mut response = ErrorResponse::new(Some(body.to_string()));
    *response.status_mut() = status;
    response
}

#[allow(clippy::result_large_err)] // tungstenite's callback error type
async fn serve(
    tcp: TcpStream,
    conns: Arc<Mutex<Vec<DgConn>>>,
    expected: String,
    drop_once: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut log = DgConn::default();
    let callback = |req: &Request, resp: Response| {
        log.query = req.uri().query().unwrap_or_default().to_string();
        log.authorization = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        if log.authorization.as_deref() != Some(expected.as_str()) {
            log.refused = true;
            return Err(refusal(StatusCode::UNAUTHORIZED, "Invalid credentials."));
        }
        let params: Vec<&str> = log.query.split('&').collect();
        if !params.contains(&"encoding=mulaw") || !params.contains(&"sample_rate=8000") {
            log.refused = true;
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "Expected encoding=mulaw&sample_rate=8000.",
            ));
        }
        Ok(resp)
    };
    let accepted = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
    let index = {
        let mut conns = conns.lock().unwrap();
        conns.push(log);
        conns.len() - 1
    };
    let Ok(mut ws) = accepted else { return };
    let update = |f: &mut dyn FnMut(&mut DgConn)| f(&mut conns.lock().unwrap()[index]);
    let mut vad = Vad::default();
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => return,
            frame = ws.next() => frame,
        };
        let mut replies = Vec::new();
        match frame {
            Some(Ok(Message::Binary(bytes))) => {
                update(&mut |c| c.bytes += bytes.len());
                replies = vad.push(&bytes);
            }
            Some(Ok(Message::Text(text))) => match serde_json::from_str::<Control>(text.as_str()) {
                Ok(Control::KeepAlive) => update(&mut |c| c.keepalives += 1),
                Ok(Control::Finalize) => {
                    update(&mut |c| c.finalizes += 1);
                    replies.extend(vad.flush().map(|mut event| {
                        if let ListenEvent::Results(r) = &mut event {
                            r.from_finalize = true;
                        }
                        event
                    }));
                }
                Ok(Control::CloseStream) => {
                    update(&mut |c| c.close_stream = true);
                    if let Some(event) = vad.flush() {
                        update(&mut |c| c.finals_sent += 1);
                        let _ = ws
                            .send(Message::text(serde_json::to_string(&event).unwrap()))
                            .await;
                    }
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = ws.next().await {}
                    return;
                }
                Err(_) => update(&mut |c| c.unknown_text.push(text.to_string())),
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
        for event in replies {
            let ListenEvent::Results(r) = &event else {
                continue;
            };
            let (is_final, from_finalize) = (r.is_final, r.from_finalize);
            update(&mut |c| {
                if is_final {
                    c.finals_sent += 1
                } else {
                    c.interims_sent += 1
                }
                if from_finalize {
                    c.finals_from_finalize += 1
                }
            });
            if ws
                .send(Message::text(serde_json::to_string(&event).unwrap()))
                .await
                .is_err()
            {
                return;
            }
            if is_final && drop_once.swap(false, Ordering::SeqCst) {
                update(&mut |c| c.dropped = true);
                return; // the TCP stream is dropped without a close frame
            }
        }
    }
}

/// Energy VAD over the received stream; positions in bytes (8 per ms).
#[derive(Default)]
struct Vad {
    partial: Vec<u8>,
    pos: usize,
    /// Start of the utterance in progress and where its loud part last ended.
    speech: Option<(usize, usize)>,
    quiet_ms: usize,
    since_interim_ms: usize,
}

impl Vad {
    fn push(&mut self, bytes: &[u8]) -> Vec<ListenEvent> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while self.partial.len() >= FRAME_BYTES {
            let window: Vec<u8> = self.partial.drain(..FRAME_BYTES).collect();
            let start = self.pos;
            self.pos += FRAME_BYTES;
            let loud = rms(&window) > LOUD_RMS;
            match (&mut self.speech, loud) {
                (None, false) => {}
                (None, true) => {
                    self.speech = Some((start, self.pos));
                    self.quiet_ms = 0;
                    self.since_interim_ms = 0;
                    events.push(self.results(false));
                }
                (Some((_, last_loud)), true) => {
                    *last_loud = self.pos;
                    self.quiet_ms = 0;
                    self.since_interim_ms += 20;
                    if self.since_interim_ms >= INTERIM_EVERY_MS {
                        self.since_interim_ms = 0;
                        events.push(self.results(false));
                    }
                }
                (Some(_), false) => {
                    self.quiet_ms += 20;
                    if self.quiet_ms >= ENDPOINT_MS {
                        events.extend(self.flush());
                    }
                }
            }
        }
        events
    }

    /// The final of the utterance in progress, if any.
    fn flush(&mut self) -> Option<ListenEvent> {
        self.speech?;
        let event = self.results(true);
        self.speech = None;
        Some(event)
    }

    fn results(&self, is_final: bool) -> ListenEvent {
        let (start, end) = self.speech.expect("only called during speech");
        let secs = |bytes: usize| bytes as f64 / (BYTES_PER_MS * 1000) as f64;
        let transcript = if is_final {
            format!("[deepgram speech {:.2} s]", secs(end - start))
        } else {
            "[deepgram hearing]".to_string()
        };
        ListenEvent::Results(Results {
            channel_index: vec![0, 1],
            start: secs(start),
            duration: secs(end - start),
            is_final,
            speech_final: is_final,
            from_finalize: false,
            channel: Channel {
                alternatives: vec![Alternative {
                    transcript,
                    confidence: 0.99,
                }],
            },
        })
    }
}
