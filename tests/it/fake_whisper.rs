//! A loopback stand-in for `POST /v1/audio/transcriptions` (PROTOCOLS.md § "Batch transcription").
//!
//! Checks the bearer key (else 401 with OpenAI's error JSON), that `model` is set and that `file`
//! is a RIFF WAV, 8 kHz, mono, 16-bit PCM (else 400), and answers
//! `{"text":"[whisper chunk N: X.XX s]"}` (N counts arrivals). Records every upload. With
//! [`FakeWhisper::spawn_holding_first`] the first upload is answered only once later ones have
//! arrived, so its answer comes back last. The multipart body is parsed by
//! hand: axum is built without its `multipart` feature.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes_helper::parts;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use twilio_realtime_relay::transcribe::whisper::TranscriptionResponse;

/// One upload as received.
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub authorization: Option<String>,
    pub model: Option<String>,
    pub response_format: Option<String>,
    pub language: Option<String>,
    pub filename: Option<String>,
    pub file_type: Option<String>,
    /// WAV format as parsed: (sample rate Hz, channels, bits per sample).
    pub format: Option<(u32, u16, u16)>,
    /// Length of the audio, s.
    pub seconds: f64,
    /// The status answered.
    pub status: u16,
}

#[derive(Clone)]
struct Shared {
    key: String,
    uploads: Arc<Mutex<Vec<Upload>>>,
    /// Uploads arrived so far.
    arrivals: Arc<tokio::sync::watch::Sender<usize>>,
    /// Hold the first upload's answer until this many have arrived (0: never hold).
    hold_first_until: usize,
}

/// The stand-in, serving until dropped.
pub struct FakeWhisper {
    pub addr: std::net::SocketAddr,
    uploads: Arc<Mutex<Vec<Upload>>>,
    _stop: DropGuard,
}

impl FakeWhisper {
    /// Serve on 127.0.0.1:0, accepting only `Bearer {key}`.
    pub async fn spawn(key: &str) -> FakeWhisper {
        Self::spawn_holding_first(key, 0).await
    }

    /// Like [`FakeWhisper::spawn`], but the first upload is answered only after `until` uploads
    /// have arrived (or 10 s have passed): a slow first request, without a timed delay.
    pub async fn spawn_holding_first(key: &str, until: usize) -> FakeWhisper {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Shared {
            key: key.to_string(),
            uploads: Arc::default(),
            arrivals: Arc::new(tokio::sync::watch::channel(0).0),
            hold_first_until: until,
        };
        let uploads = shared.uploads.clone();
        let app = Router::new()
            .route("/v1/audio/transcriptions", post(transcriptions))
            .with_state(shared);
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        FakeWhisper {
            addr,
            uploads,
            _stop: stop.drop_guard(),
        }
    }

    /// `http://127.0.0.1:PORT/v1/audio/transcriptions`, for `WHISPER_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/v1/audio/transcriptions", self.addr)
    }

    /// Every upload so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.uploads.lock().unwrap().clone()
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    (status, Json(body)).into_response()
}

async fn transcriptions(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut arrival = 0;
    shared.arrivals.send_modify(|n| {
        *n += 1;
        arrival = *n;
    });
    if arrival == 1 && shared.hold_first_until > 1 {
        let mut arrivals = shared.arrivals.subscribe();
        let later = arrivals.wait_for(|&n| n >= shared.hold_first_until);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), later).await;
    }
    let mut upload = Upload {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        ..Upload::default()
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut wav = None;
    for part in parts(content_type, &body) {
        let text = || String::from_utf8_lossy(&part.body).into_owned();
        match part.name.as_str() {
            "model" => upload.model = Some(text()),
            "response_format" => upload.response_format = Some(text()),
            "language" => upload.language = Some(text()),
            "file" => {
                upload.filename = part.filename.clone();
                upload.file_type = part.content_type.clone();
                wav = Some(part.body.clone());
            }
            _ => {}
        }
    }
    let response = if upload.authorization.as_deref() != Some(&format!("Bearer {}", shared.key)) {
        error(StatusCode::UNAUTHORIZED, "Incorrect API key provided.")
    } else if upload.model.as_deref().is_none_or(str::is_empty) {
        error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
        )
    } else {
        match wav
            .as_deref()
            .map(|w| hound::WavReader::new(Cursor::new(w)))
        {
            Some(Ok(reader)) if &wav.as_deref().unwrap_or_default()[..4] == b"RIFF" => {
                let spec = reader.spec();
                upload.format = Some((spec.sample_rate, spec.channels, spec.bits_per_sample));
                upload.seconds = f64::from(reader.duration()) / f64::from(spec.sample_rate);
                let pcm16 =
                    spec.sample_format == hound::SampleFormat::Int && spec.bits_per_sample == 16;
                if spec.sample_rate == 8000 && spec.channels == 1 && pcm16 {
                    let text = format!("[whisper chunk {arrival}: {:.2} s]", upload.seconds);
                    Json(TranscriptionResponse { text }).into_response()
                } else {
                    error(StatusCode::BAD_REQUEST, "expected 8 kHz mono 16-bit PCM")
                }
            }
            _ => error(StatusCode::BAD_REQUEST, "Invalid file format."),
        }
    };
    upload.status = response.status().as_u16();
    shared.uploads.lock().unwrap().push(upload);
    response
}

/// Just enough of RFC 7578 to read what reqwest sends.
mod bytes_helper {
    /// One part of a `multipart/form-data` body.
    pub struct Part {
        pub name: String,
        pub filename: Option<String>,
        pub content_type: Option<String>,
        pub body: Vec<u8>,
    }

    /// The parts of `body`, given the request's `Content-Type` (with its `boundary`).
    pub fn parts(content_type: &str, body: &[u8]) -> Vec<Part> {
        let Some(boundary) = content_type.split("boundary=").nth(1) else {
            return Vec::new();
        };
        let delimiter = format!("--{}", boundary.trim_matches('"'));
        let mut parts = Vec::new();
        for chunk in split(body, delimiter.as_bytes()).into_iter().skip(1) {
            let Some(chunk) = chunk.strip_prefix(b"\r\n") else {
                break;
            }; // "--" ends the body
            let Some(at) = find(chunk, b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&chunk[..at]).into_owned();
            let mut content = &chunk[at + 4..];
            content = content.strip_suffix(b"\r\n").unwrap_or(content);
            let attr = |key: &str| {
                let marker = format!("{key}=\"");
                let from = head.find(&marker)? + marker.len();
                Some(head[from..].split('"').next()?.to_string())
            };
            let content_type = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-type:")
                    .then(|| l[13..].trim().to_string())
            });
            parts.push(Part {
                name: attr(" name").unwrap_or_default(),
                filename: attr("filename"),
                content_type,
                body: content.to_vec(),
            });
        }
        parts
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
        let mut pieces = Vec::new();
        while let Some(at) = find(body, delimiter) {
            pieces.push(&body[..at]);
            body = &body[at + delimiter.len()..];
        }
        pieces.push(body);
        pieces
    }
}
