//! A recording tool webhook on 127.0.0.1:0: answers every POST as scripted (a status and body, or
//! never) and records each request (headers, body) for tests to check.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the webhook answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status and `application/json` body.
    Json(u16, String),
    /// Never: the request hangs until the client gives up.
    Never,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
}

struct Shared {
    answer: Answer,
    received: Mutex<Vec<Received>>,
    seen: watch::Sender<usize>,
}

/// The running webhook; dropping it stops the server.
pub struct FakeWebhook {
    /// `http://127.0.0.1:PORT/tool`.
    pub url: String,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for FakeWebhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeWebhook {
    /// Serve `answer` to every request.
    pub async fn start(answer: Answer) -> Self {
        let shared = Arc::new(Shared {
            answer,
            received: Mutex::new(Vec::new()),
            seen: watch::channel(0).0,
        });
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind webhook");
        let addr = listener.local_addr().expect("webhook addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("webhook serve");
        });
        FakeWebhook {
            url: format!("http://{addr}/tool"),
            shared,
            server,
        }
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("webhook lock").clone()
    }

    /// Wait (at most 10 s) for the `n`-th request; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let mut seen = self.shared.seen.subscribe();
        tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|&c| c >= n))
            .await
            .unwrap_or_else(|_| panic!("fewer than {n} webhook requests within 10 s"))
            .expect("webhook alive");
        self.received()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let count = {
        let mut received = shared.received.lock().expect("webhook lock");
        received.push(Received { headers, body });
        received.len()
    };
    shared.seen.send_replace(count);
    match &shared.answer {
        Answer::Json(status, body) => (
            StatusCode::from_u16(*status).expect("status"),
            [("content-type", "application/json")],
            body.clone(),
        )
            .into_response(),
        Answer::Never => std::future::pending().await,
    }
}
