//! The real binary: SIGTERM (new calls are turned away while calls in progress get the grace
//! period, then every call is ended cleanly, every transcript written, and the exit is 0),
//! start-up warnings, and real calls going through hostile load with memory coming back.
//!
//! Each test runs `twilio-realtime-relay serve` on `127.0.0.1:0` (the address is read from its
//! JSON log on stderr) against the Realtime stand-in, and drives it like Twilio would.

#[path = "common/relay_bin.rs"]
mod relay_bin;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use relay_bin::{clip, get, post_form, Relay};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use twilio_realtime_relay::config::DEFAULT_FALLBACK;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::sim::{self, CallReport};

/// Wait until the stand-in has the call's session: the call is live end to end.
async fn session_open(fake: &FakeOpenAi) {
    assert!(
        fake.wait_for(Duration::from_secs(10), |c| c
            .first()
            .is_some_and(|c| !c.client_events.is_empty()))
            .await,
        "the call reached OpenAI"
    );
}

fn is_draining(line: &Value) -> bool {
    line["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("shutting down"))
}

#[tokio::test]
async fn sigterm_turns_new_calls_away_then_ends_live_calls_after_the_grace_period_and_exits_0() {
    const GRACE: Duration = Duration::from_secs(2);
    let fake = FakeOpenAi::spawn(FakeOptions::default())
        .await
        .expect("stand-in");
    let mut relay = Relay::start(&fake, GRACE.as_secs()).await;
    // Three turns of real speech: far longer than the grace period.
    let clips = vec![
        clip("caller-hello.wav"),
        clip("caller-question.wav"),
        clip("caller-hello.wav"),
    ];
    let call = tokio::spawn(sim::run(relay.call(clips)));
    session_open(&fake).await;

    let term = Instant::now();
    relay.sigterm();
    relay.log(Duration::from_secs(5), is_draining).await;

    let (status, body) = get(relay.addr, "/health").await;
    assert_eq!(
        status, 503,
        "load balancers stop routing to a draining server: {body}"
    );
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "draining");
    assert_eq!(health["connections"]["active"], 1, "the call still running");

    let (status, body) =
        post_form(relay.addr, "/incoming-call", "CallSid=CAnew&From=%2B1555").await;
    assert_eq!(status, 200);
    let doc = roxmltree::Document::parse(&body).expect("TwiML");
    let names: Vec<_> = doc
        .root_element()
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(names, ["Say", "Hangup"], "{body}");
    assert_eq!(
        doc.root_element().first_element_child().unwrap().text(),
        Some(DEFAULT_FALLBACK)
    );
    match tokio_tungstenite::connect_async(format!("ws://{}/media-stream", relay.addr)).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!(
            "a new stream during shutdown was not refused: {:?}",
            other.map(|r| r.1)
        ),
    }

    let status = relay
        .exit_within(GRACE + Duration::from_secs(5))
        .await
        .expect("the relay exits within the grace period + 5 s");
    let took = term.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= GRACE - Duration::from_millis(100),
        "the live call got the grace period: {took:?}"
    );

    let report: CallReport = call.await.expect("call task").expect("call");
    assert!(report.closed_by_server, "the server ended the live call");
    let t = relay.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "server_shutdown", "{t:#}");
    assert!(t["ended_at"].is_string());
    assert!(
        fake.wait_for(Duration::from_secs(2), |c| c.iter().all(|c| c.closed))
            .await,
        "the OpenAI session was closed"
    );
}

#[tokio::test]
async fn a_call_that_ends_during_the_grace_period_lets_the_relay_exit_early() {
    const GRACE: Duration = Duration::from_secs(20);
    let fake = FakeOpenAi::spawn(FakeOptions::default())
        .await
        .expect("stand-in");
    let mut relay = Relay::start(&fake, GRACE.as_secs()).await;
    let tone: Vec<i16> = (0..400 * 8)
        .map(|n| (8000.0 * (std::f64::consts::TAU * 440.0 * n as f64 / 8000.0).sin()) as i16)
        .collect();
    let call = tokio::spawn(sim::run(
        relay.call(vec![twilio_realtime_relay::audio::encode(&tone)]),
    ));
    session_open(&fake).await;

    let term = Instant::now();
    relay.sigterm();
    relay.log(Duration::from_secs(5), is_draining).await;
    let report: CallReport = call.await.expect("call task").expect("call");
    let status = relay
        .exit_within(Duration::from_secs(5))
        .await
        .expect("the relay exits once its last call is over");
    let took = term.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took < GRACE / 2,
        "exited {took:?} after SIGTERM, not at the end of the grace period"
    );

    assert!(
        !report.closed_by_server,
        "the call was not cut: {}",
        report.summary()
    );
    assert!(
        !report.heard.is_empty(),
        "the caller still got the answer while draining"
    );
    let t = relay.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up", "{t:#}");
}

#[tokio::test]
async fn a_model_announced_for_shutdown_is_named_at_start_up_and_in_health() {
    let fake = FakeOpenAi::spawn(FakeOptions::default()).await.unwrap();
    let mut relay = Relay::start_with(&fake, 1, &[("OPENAI_MODEL", "gpt-realtime-mini")]).await;
    let warning = relay
        .startup
        .iter()
        .find(|l| l["level"] == "WARN" && l["model"] == "gpt-realtime-mini")
        .unwrap_or_else(|| panic!("no shutdown warning in {:#?}", relay.startup));
    assert_eq!(warning["shutdown_date"], "2027-01-20");
    assert_eq!(warning["replacement"], "gpt-realtime-2.1-mini");
    let (status, body) = get(relay.addr, "/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["model"], "gpt-realtime-mini");
    assert_eq!(health["model_shutdown_date"], "2027-01-20");
    relay.sigterm();
    assert!(relay
        .exit_within(Duration::from_secs(10))
        .await
        .unwrap()
        .success());
}

/// RSS of `pid`, KiB (`VmRSS` in `/proc/{pid}/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Wait (at most `within`) until the server closes `tcp` (EOF or reset); false if it stays open.
async fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// One round of hostile load against `relay` while `calls` real simulated calls run: `sockets`
/// Media Streams that never send `start` and `slow` HTTP clients that never finish their
/// headers. Asserts every call completes with its audio and every hostile connection is closed
/// by the server within its timeout (plus `slack`).
async fn hostile_round(relay: &Relay, calls: usize, sockets: usize, slow: usize, slack: Duration) {
    let addr = relay.addr;
    let hostile_ws = (0..sockets).map(|_| async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/media-stream"))
            .await
            .expect("upgrade");
        let opened = Instant::now();
        let closed = tokio::time::timeout(START_TIMEOUT + slack, async {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a socket that never started stayed open");
        opened.elapsed()
    });
    let hostile_http = (0..slow).map(|_| async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
            .await
            .expect("write");
        let opened = Instant::now();
        assert!(
            closed_by_server(&mut tcp, HEADER_TIMEOUT + slack).await,
            "a client sending its headers slowly stayed connected"
        );
        opened.elapsed()
    });
    let genuine = (0..calls).map(|_| {
        let opts = relay.call(vec![clip("caller-hello.wav")]);
        async move { sim::run(opts).await.expect("a genuine call connects") }
    });
    let (ws_times, http_times, reports) = tokio::join!(
        futures_util::future::join_all(hostile_ws),
        futures_util::future::join_all(hostile_http),
        futures_util::future::join_all(genuine),
    );
    for report in &reports {
        assert!(
            !report.heard.is_empty(),
            "a genuine call was answered: {}",
            report.summary()
        );
        assert_eq!(report.reply_timeouts, 0, "{}", report.summary());
        assert!(!report.closed_by_server, "{}", report.summary());
    }
    let slowest = |times: &[Duration]| times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "hostile round: {calls} calls answered; {sockets} silent sockets closed after at most {:?}, {slow} slow clients after at most {:?}",
        slowest(&ws_times),
        slowest(&http_times)
    );
}

/// `/health`'s active calls, once it answers.
async fn active_calls(addr: SocketAddr) -> u64 {
    let (status, body) = get(addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    health["connections"]["active"].as_u64().unwrap()
}

const START_TIMEOUT: Duration = Duration::from_secs(2);
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds of hostile load: the first warms up, rounds 2–3 are compared with rounds 6–8.
const ROUNDS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_calls_go_through_hostile_load_and_memory_comes_back() {
    let fake = FakeOpenAi::spawn(FakeOptions::default()).await.unwrap();
    let relay = Relay::start_with(
        &fake,
        1,
        &[
            ("STREAM_START_TIMEOUT_SECS", "2"),
            ("HTTP_HEADER_TIMEOUT_MS", "2000"),
            ("HTTP_BODY_TIMEOUT_MS", "2000"),
            ("MAX_CONCURRENT_CALLS", "600"),
        ],
    )
    .await;
    let slack = Duration::from_secs(3);
    let mut rss = Vec::new();
    for _ in 0..ROUNDS {
        hostile_round(&relay, 20, 500, 500, slack).await;
        rss.push(rss_kib(relay.pid));
    }
    eprintln!("RSS after each round, KiB: {rss:?}");
    assert_eq!(
        active_calls(relay.addr).await,
        0,
        "every slot was given back"
    );
    // The first round grows the allocator's arenas and the runtime's buffers to this load. After
    // that one reading moves by a few MiB either way with how many hostile connections happened
    // to be open at once (more on a busy machine: CI saw +10% between two rounds with no leak),
    // so single readings are not compared. A leak shows as the late rounds all staying above
    // every early round: with two rounds between the groups, a growth of 1.5 MiB a round
    // (1.5 KiB per hostile connection, or 75 KiB per call) fails the 8% below.
    let early_peak = *rss[1..3].iter().max().unwrap();
    let late_low = *rss[5..].iter().min().unwrap();
    assert!(
        late_low * 100 <= early_peak * 108,
        "RSS kept growing under the same load: the late rounds' lowest reading {late_low} KiB is above the early rounds' highest {early_peak} KiB (readings {rss:?})"
    );
}
