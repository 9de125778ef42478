//! Secrets never reach the logs or `Debug` output, even at `trace`.
//!
//! One scenario runs once per process with a global subscriber capturing every event (ours and,
//! through the `log` bridge, our dependencies') as JSON lines: the configuration printed with
//! `Debug`, a signed call through the Realtime stand-in, `/health`, `/api` with a wrong and the
//! right bearer token, a hang-up through Twilio's REST API with the API key, and a forged
//! webhook. The tests then search the capture for each secret.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing_subscriber::fmt::MakeWriter;
use twilio_realtime_relay::app::{self, AppState};
use twilio_realtime_relay::audio;
use twilio_realtime_relay::config::{Config, Secret};
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::sim::{self, CallOptions};

const OPENAI_KEY: &str = "sk-proj-SECRETopenai4f7a9c";
const TWILIO_TOKEN: &str = "SECRETtwilioauthtoken8d2e";
const API_TOKEN: &str = "SECRETapitoken1b6c0000000";
const KEY_SECRET: &str = "SECRETtwiliokeysecret3e9a";
const DEEPGRAM_KEY: &str = "SECRETdeepgramkey5c1d";
const SECRETS: [&str; 5] = [
    OPENAI_KEY,
    TWILIO_TOKEN,
    API_TOKEN,
    KEY_SECRET,
    DEEPGRAM_KEY,
];

/// Every formatted event, appended as written.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl MakeWriter<'_> for Capture {
    type Writer = Capture;
    fn make_writer(&self) -> Capture {
        self.clone()
    }
}

/// What the scenario left behind.
struct Run {
    /// One JSON object per event.
    logs: Vec<Value>,
    debug_config: String,
    /// The `Authorization` header the stand-in received.
    upstream_auth: Option<String>,
    call_sid: String,
}

/// Run the scenario once per process (both tests read the same capture).
fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let capture = Capture::default();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(twilio_realtime_relay::telemetry::guarded(
                tracing_subscriber::EnvFilter::new("trace"),
            ))
            .with_writer(capture.clone())
            .try_init()
            .expect("the only subscriber in this binary");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let mut run = runtime.block_on(scenario());
        drop(runtime);
        let bytes = capture.0.lock().expect("capture lock").clone();
        run.logs = String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| Value::String(l.into())))
            .collect();
        run
    })
}

fn config(fake: &FakeOpenAi, relay: SocketAddr, twilio_api: SocketAddr) -> Config {
    let mut config = Config {
        openai_api_key: Some(OPENAI_KEY.into()),
        openai_realtime_url: fake.url(),
        public_url: Some(format!("http://{relay}")),
        twilio_account_sid: Some("AC00000000000000000000000000000000".into()),
        twilio_auth_token: Some(TWILIO_TOKEN.into()),
        twilio_api_key_sid: Some("SK00000000000000000000000000000000".into()),
        twilio_api_key_secret: Some(KEY_SECRET.into()),
        twilio_api_base: format!("http://{twilio_api}"),
        api_token: Some(API_TOKEN.into()),
        ..Config::default()
    };
    config.transcribe.deepgram_api_key = Some(Secret::from(DEEPGRAM_KEY));
    config.validate().expect("valid config")
}

async fn scenario() -> Run {
    let fake = FakeOpenAi::spawn(FakeOptions::default())
        .await
        .expect("stand-in");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Twilio's REST API at a port nobody listens on: the hang-up request is built and fails.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let twilio_api = closed.local_addr().expect("addr");
    drop(closed);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&fake, addr, twilio_api);
    config.transcript_dir = dir.path().to_path_buf();
    config.database_url = format!("sqlite://{}/relay.db", dir.path().display());

    let debug_config = format!("{config:?}");
    tracing::info!(?config, "configuration");
    let state = AppState::new(config);
    let stop = CancellationToken::new();
    let server = tokio::spawn(app::serve(
        listener,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));

    let pcm: Vec<i16> = (0..400 * 8)
        .map(|n| (8000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16)
        .collect();
    let url = format!("ws://{addr}/media-stream");
    let mut opts = CallOptions::new(url.clone(), vec![audio::encode(&pcm)]);
    opts.quiet_ms = 400;
    opts.auth_token = Some(TWILIO_TOKEN.into());
    opts.signed_url = Some(url.clone());
    let report = sim::run(opts).await.expect("call");
    assert!(
        !report.heard.is_empty(),
        "the call went through: {}",
        report.summary()
    );

    let router = app::build_router(state.clone());
    let send = |req: Request<Body>| async {
        router
            .clone()
            .oneshot(req)
            .await
            .expect("infallible")
            .status()
    };
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        req.body(Body::empty()).expect("request")
    };
    assert_eq!(send(get("/health", None)).await, StatusCode::OK);
    assert_eq!(
        send(get("/api/calls", Some("wrong-token"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(get("/api/calls", Some(API_TOKEN))).await,
        StatusCode::OK
    );
    let hangup = Request::post("/api/calls/CA00000000000000000000000000000000/hangup")
        .header(header::AUTHORIZATION, format!("Bearer {API_TOKEN}"))
        .body(Body::empty())
        .expect("request");
    assert!(
        send(hangup).await.is_server_error(),
        "Twilio is unreachable"
    );
    let forged = Request::post("/incoming-call")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", "Zm9yZ2VkIHNpZ25hdHVyZQ==")
        .body(Body::from("CallSid=CA1&From=%2B15550001111"))
        .expect("request");
    assert_eq!(send(forged).await, StatusCode::FORBIDDEN);

    state.calls.close();
    tokio::time::timeout(Duration::from_secs(10), state.calls.wait())
        .await
        .expect("the call finished");
    stop.cancel();
    server.await.expect("server task").expect("server");
    Run {
        logs: Vec::new(),
        debug_config,
        upstream_auth: fake.connections()[0].authorization.clone(),
        call_sid: report.call_sid,
    }
}

/// Every captured event at one of `levels` that contains a secret, with the secret.
fn leaks<'a>(logs: &'a [Value], levels: &[&str]) -> Vec<(&'static str, &'a Value)> {
    let mut found = Vec::new();
    for line in logs {
        let level = line["level"].as_str().unwrap_or("TRACE");
        if !levels.contains(&level) {
            continue;
        }
        let text = line.to_string();
        for secret in SECRETS {
            if text.contains(secret) {
                found.push((secret, line));
            }
        }
    }
    found
}

#[test]
fn secrets_appear_neither_in_debug_output_nor_in_logs_up_to_debug_level() {
    let run = run();
    assert_eq!(
        run.upstream_auth.as_deref(),
        Some(format!("Bearer {OPENAI_KEY}").as_str()),
        "the key was used"
    );
    for secret in SECRETS {
        assert!(!run.debug_config.contains(secret), "{}", run.debug_config);
    }
    assert!(run.debug_config.contains("[redacted]"));
    let logged = |needle: &str| run.logs.iter().any(|l| l.to_string().contains(needle));
    assert!(logged(&run.call_sid), "the capture holds the call");
    assert!(logged("call ended"));
    assert!(logged(
        "rejected a request without a valid X-Twilio-Signature"
    ));
    let leaks = leaks(&run.logs, &["ERROR", "WARN", "INFO", "DEBUG"]);
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:#?}");
}

#[test]
fn secrets_do_not_appear_in_trace_logs_either() {
    let run = run();
    assert!(!run.logs.is_empty());
    let leaks = leaks(&run.logs, &["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]);
    assert!(leaks.is_empty(), "secrets in the logs: {leaks:#?}");
}
