//! HTTP timeouts and the connection cap (issue 11, item 3), driven over raw TCP the way slow or
//! hostile clients behave; and a WebSocket call that outlives every one of those timeouts.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::FakeOptions;
use twilio_realtime_relay::sim;

use crate::support::{call_options, clip, spawn_app, spawn_with_fake, TestApp};

/// Longest wait for anything the server should do on its own within a test's short timeouts.
const WITHIN: Duration = Duration::from_secs(5);

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n";

fn webhook_post() -> Vec<u8> {
    let body = "CallSid=CA1&From=%2B15550001111&To=%2B15550002222";
    format!(
        "POST /incoming-call HTTP/1.1\r\nHost: relay\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

/// Wait (at most [`WITHIN`]) for the server to close the connection; what it sent before.
async fn closed(tcp: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(WITHIN, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "still open after {WITHIN:?}; received {got:?}"
    );
    got
}

/// One response (head and `Content-Length` body) within [`WITHIN`]: status, lower-cased head, body.
async fn response(tcp: &mut (impl AsyncRead + Unpin)) -> (u16, String, String) {
    tokio::time::timeout(WITHIN, async {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before a response; got {raw:?}");
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
        let status = head[9..12].parse().expect("status code");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        while raw.len() < head_end + length {
            let n = tcp.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed inside the body");
            raw.extend_from_slice(&buf[..n]);
        }
        let body = String::from_utf8_lossy(&raw[head_end..head_end + length]).to_string();
        (status, head, body)
    })
    .await
    .expect("no response in time")
}

/// The value of one sample of `/metrics`, e.g. `errors_total{kind="http_timeout"}`.
fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app
        .state
        .stats
        .prometheus(twilio_realtime_relay::metrics::Exposition::Classic);
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{sample} missing from\n{text}"))
        .parse()
        .expect("a number")
}

fn errors(app: &TestApp, kind: &str) -> f64 {
    metric(app, &format!("errors_total{{kind=\"{kind}\"}}"))
}

/// Wait (at most [`WITHIN`]) until `/metrics` shows `n` open HTTP connections.
async fn open_connections(app: &TestApp, n: f64) {
    let until = Instant::now() + WITHIN;
    while metric(app, "http_connections") != n {
        assert!(Instant::now() < until, "never {n} open connections");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_client_that_sends_half_a_header_is_disconnected_after_the_header_timeout() {
    let app = spawn_app(Config {
        http_header_timeout_ms: 300,
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    let mut half = connect(&app).await;
    half.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
        .await
        .unwrap();
    let mut silent = connect(&app).await;

    let got = closed(&mut half).await;
    assert!(got.is_empty(), "half a request gets no answer: {got:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(closed(&mut silent).await.is_empty(), "nor does silence");
    assert_eq!(errors(&app, "http_timeout"), 2.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_body_still_incomplete_at_the_body_timeout_gets_408_even_if_it_trickles() {
    let app = spawn_app(Config {
        openai_api_key: Some("sk-test".into()),
        http_body_timeout_ms: 500,
        ..Config::default()
    })
    .await;
    let started = Instant::now();
    let tcp = connect(&app).await;
    let (mut read, mut write) = tcp.into_split();
    write
        .write_all(b"POST /incoming-call HTTP/1.1\r\nHost: relay\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nCallSid=CA1")
        .await
        .unwrap();
    // A byte every 100 ms: no gap between frames is ever long, the whole body is.
    let trickle = tokio::spawn(async move {
        while write.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let (status, head, body) = response(&mut read).await;
    assert_eq!(status, 408, "{head}{body}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(head.contains("connection: close"), "{head}");
    assert!(body.contains("500 ms"), "{body}");
    closed(&mut read).await;
    trickle.abort();
    assert_eq!(errors(&app, "http_timeout"), 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_the_header_timeout() {
    let app = spawn_app(Config {
        http_header_timeout_ms: 200,
        http_idle_timeout_secs: 1,
        ..Config::default()
    })
    .await;
    let mut tcp = connect(&app).await;
    tcp.write_all(GET_HEALTH).await.unwrap();
    let (status, head, _) = response(&mut tcp).await;
    assert_eq!(status, 200);
    assert!(!head.contains("connection: close"), "kept alive: {head}");

    let sent = Instant::now();
    tcp.write_all(GET_HEALTH).await.unwrap();
    let (status, _, _) = response(&mut tcp).await;
    assert_eq!(status, 200, "a second request on the kept-alive connection");
    closed(&mut tcp).await;
    let idle = sent.elapsed();
    assert!(
        idle >= Duration::from_secs(1),
        "closed after {idle:?}: the 200 ms header timeout must not cut the 1 s keep-alive wait"
    );
    assert_eq!(errors(&app, "http_timeout"), 0.0, "idling is not an error");
    app.shutdown().await;
}

/// A client that has sent half a request head and stops there.
async fn slow_client(app: &TestApp) -> TcpStream {
    let mut tcp = connect(app).await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: ")
        .await
        .unwrap();
    tcp
}

#[tokio::test]
async fn with_the_connection_cap_filled_by_slow_clients_health_and_incoming_call_still_answer() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.max_http_connections = 8;
        // Far longer than the test: only making room can free a slot.
        c.http_header_timeout_ms = 60_000;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(slow_client(&app).await);
        // One at a time, so the oldest is known.
        open_connections(&app, slow.len() as f64).await;
    }

    let mut health = connect(&app).await;
    health.write_all(GET_HEALTH).await.unwrap();
    let (status, head, body) = response(&mut health).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("connection: close"),
        "past the reserve nothing is kept alive: {head}"
    );
    assert!(
        closed(&mut slow[0]).await.is_empty(),
        "the oldest slow client made room"
    );
    closed(&mut health).await;
    // Fill the cap again (the health check's connection closed after its answer).
    open_connections(&app, 7.0).await;
    slow.push(slow_client(&app).await);
    open_connections(&app, 8.0).await;

    let mut webhook = connect(&app).await;
    webhook.write_all(&webhook_post()).await.unwrap();
    let (status, _, twiml) = response(&mut webhook).await;
    assert_eq!(status, 200);
    assert!(twiml.contains("<Connect>"), "{twiml}");
    assert!(
        closed(&mut slow[1]).await.is_empty(),
        "the next oldest made room"
    );

    // A stream upgrade past the reserve keeps its `Connection: upgrade`.
    open_connections(&app, 7.0).await;
    slow.push(slow_client(&app).await);
    open_connections(&app, 8.0).await;
    let (mut ws, answer) = tokio_tungstenite::connect_async(app.media_url())
        .await
        .expect("the upgrade goes through at the cap");
    assert_eq!(answer.status(), 101);
    assert!(closed(&mut slow[2]).await.is_empty());
    ws.close(None).await.expect("close");

    assert_eq!(errors(&app, "http_overload"), 3.0);
    assert!(metric(&app, "http_connections") <= 8.0);
    drop(slow);
    app.calls_finished().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_websocket_call_outlives_every_http_timeout() {
    let (app, _fake) = spawn_with_fake(FakeOptions::default(), |c| {
        c.http_header_timeout_ms = 300;
        c.http_body_timeout_ms = 300;
        c.http_idle_timeout_secs = 1;
    })
    .await;
    let started = Instant::now();
    let clips = vec![clip("caller-hello.wav"), clip("caller-question.wav")];
    let report = sim::run(call_options(&app, clips)).await.expect("call");
    let lasted = started.elapsed();
    assert!(
        lasted > Duration::from_secs(3),
        "the call must last longer than every timeout: {lasted:?}"
    );
    assert!(!report.closed_by_server, "the server never cut the call");
    assert!(!report.heard.is_empty(), "and answered it");
    app.calls_finished().await;
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );
    assert_eq!(errors(&app, "http_timeout"), 0.0);
    assert_eq!(
        metric(&app, "http_connections"),
        0.0,
        "a call holds no HTTP slot"
    );
    app.shutdown().await;
}
