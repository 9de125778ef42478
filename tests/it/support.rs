//! Shared test helpers: spawn the app on port 0 with every upstream pointed at a local fake.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use twilio_realtime_relay::app::{self, AppState};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::wav;

/// A relay serving on a free loopback port, writing transcripts to a temporary directory.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub dir: TempDir,
    stop: CancellationToken,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Start the relay with `config` (its transcript directory replaced by a temporary one).
pub async fn spawn_app(config: Config) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    spawn_app_on(listener, config).await
}

/// [`spawn_app`] on an already-bound listener (for a `PUBLIC_URL` naming its port).
pub async fn spawn_app_on(listener: TcpListener, mut config: Config) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    config.transcript_dir = dir.path().to_path_buf();
    if config.recording_dir.as_os_str() == twilio_realtime_relay::config::DEFAULT_RECORDING_DIR {
        config.recording_dir = dir.path().join("recordings");
    }
    if config.database_url == twilio_realtime_relay::config::DEFAULT_DATABASE_URL {
        config.database_url = sqlite_url(dir.path());
    }
    let addr = listener.local_addr().expect("addr");
    let mut state = AppState::new(config);
    // `serve` refuses to start without its database; tests of an unreachable one still serve.
    if let Err(e) = state.start_cluster().await {
        eprintln!("cluster not started: {e:#}");
    }
    let stop = CancellationToken::new();
    let server = tokio::spawn(app::serve(
        listener,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));
    TestApp {
        addr,
        state,
        dir,
        stop,
        server: Some(server),
    }
}

/// `sqlite://DIR/relay.db`: a test's own database in its own directory.
pub fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/relay.db", dir.display())
}

/// Poll `check` every 20 ms until it holds, for at most `secs` seconds; panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in plus a relay pointed at it with a dummy key; `tweak` adjusts the config.
pub async fn spawn_with_fake(
    opts: FakeOptions,
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, FakeOpenAi) {
    let fake = FakeOpenAi::spawn(opts).await.expect("stand-in");
    let mut config = Config {
        openai_api_key: Some("sk-test-key".into()),
        openai_realtime_url: fake.url(),
        ..Config::default()
    };
    tweak(&mut config);
    (spawn_app(config).await, fake)
}

impl TestApp {
    /// `ws://…/media-stream` of this relay.
    pub fn media_url(&self) -> String {
        format!("ws://{}/media-stream", self.addr)
    }

    /// Send one HTTP request through the same router; returns status, headers and body text.
    pub async fn request(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let response = app::build_router(self.state.clone())
            .oneshot(req)
            .await
            .expect("router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            headers,
            String::from_utf8(body.to_vec()).expect("utf-8 body"),
        )
    }

    /// `GET /metrics` (no `Accept`: the classic text format).
    pub async fn metrics(&self) -> String {
        let request = Request::get("/metrics")
            .body(Body::empty())
            .expect("request");
        let (status, _, body) = self.request(request).await;
        assert_eq!(status, StatusCode::OK);
        body
    }

    /// Wait (at most 10 s) until every call task has finished: transcripts written, counters final.
    pub async fn calls_finished(&self) {
        self.state.calls.close();
        tokio::time::timeout(Duration::from_secs(10), self.state.calls.wait())
            .await
            .expect("call tasks did not finish within 10 s");
        self.state.calls.reopen();
    }

    /// The transcript file of `call_sid`, parsed.
    pub fn transcript(&self, call_sid: &str) -> serde_json::Value {
        let path = self.dir.path().join(format!("{call_sid}.json"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).expect("transcript is JSON")
    }

    /// End the server as a crash would: its task (and with it the heartbeat) is dropped, no
    /// clean shutdown. Returns the directory, which the caller keeps alive.
    pub fn crash(mut self) -> TempDir {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.dir
    }

    /// Stop the server and wait for it.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server");
        }
    }
}

/// The value of the sample `series` (a name with its labels, exactly as exported) in a
/// `/metrics` body; panics naming it when it is missing.
pub fn metric(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
}

/// A bundled caller clip as 8 kHz μ-law.
pub fn clip(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "assets", name]
        .iter()
        .collect();
    wav::read_ulaw(&path).expect("bundled clip")
}

/// Simulator options tuned for tests: shorter quiet gaps, same protocol behaviour.
pub fn call_options(app: &TestApp, clips: Vec<Vec<u8>>) -> twilio_realtime_relay::sim::CallOptions {
    let mut opts = twilio_realtime_relay::sim::CallOptions::new(app.media_url(), clips);
    opts.quiet_ms = 600;
    opts.reply_timeout_ms = 8_000;
    opts.max_call_ms = 40_000;
    opts.params = vec![
        ("From".into(), "+15550001111".into()),
        ("To".into(), "+15550002222".into()),
    ];
    opts
}

/// The `<Parameter name value>` pairs of a TwiML document, in order (what Twilio sends as the
/// stream's `start.customParameters`). Panics on TwiML that is not XML.
pub fn twiml_parameters(xml: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(xml).expect("TwiML is XML");
    doc.descendants()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| {
            let attribute = |a| n.attribute(a).unwrap_or_default().to_string();
            (attribute("name"), attribute("value"))
        })
        .collect()
}
