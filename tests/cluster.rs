//! Two instances of the real binary behind a real load balancer (HAProxy, round-robin, WebSocket
//! upgrades passed through) on one PostgreSQL database: an outbound call placed through the
//! balancer on one instance streams to the other with its own settings, its record and events are
//! seen through either instance, and a `kill -9` of the instance holding a call leaves the call
//! `server_lost` within the heartbeat timeout while the other instance keeps serving.
//!
//! Runs when `TEST_DATABASE_URL` names a PostgreSQL server and `haproxy` is on PATH (`.ci/run`
//! provides both); says it was skipped otherwise.

#[path = "common/relay_bin.rs"]
mod relay_bin;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use twilio_realtime_relay::fake_openai::{ConnectionLog, FakeOpenAi, FakeOptions};
use twilio_realtime_relay::fake_twilio::{Callee, FakeTwilio, FakeTwilioOptions, PhoneNumber};
use twilio_realtime_relay::store::scratch;

use relay_bin::{clip, free_port, Relay};

const TOKEN: &str = "cluster-api-token";
const FROM: &str = "+15005550006";
const TO: &str = "+15551230001";
/// Heartbeat every second: an instance is lost after three missed beats.
const HEARTBEAT_SECS: u64 = 1;

/// HAProxy in front of the two relays, killed on drop.
struct Balancer {
    child: Child,
    port: u16,
    admin: PathBuf,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// Round-robin over `servers` (name, port) on `port`, health-checked on `/health`, with an
    /// admin socket to take a server out of rotation and `X-Served-By` naming the server that
    /// answered each request.
    async fn start(port: u16, servers: &[(&str, u16)]) -> Balancer {
        let dir = tempfile::tempdir().expect("temp dir");
        let admin = dir.path().join("admin.sock");
        let mut config = format!(
            "global\n  stats socket {} level admin\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n  timeout server 60s\n  \
             timeout tunnel 1h\n  option redispatch\n  retries 2\n\
             frontend relay\n  bind 127.0.0.1:{port}\n  default_backend relays\n\
             backend relays\n  balance roundrobin\n  option httpchk GET /health\n  \
             http-response set-header X-Served-By %[srv_name]\n",
            admin.display()
        );
        for (name, server_port) in servers {
            config += &format!(
                "  server {name} 127.0.0.1:{server_port} check inter 300ms fall 2 rise 1\n"
            );
        }
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        let balancer = Balancer {
            child,
            port,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while reqwest::get(balancer.url("/health")).await.is_err() {
            assert!(Instant::now() < deadline, "haproxy did not start serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        balancer
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Run one command on the admin socket; its answer.
    async fn admin(&self, command: &str) -> String {
        let mut socket = UnixStream::connect(&self.admin)
            .await
            .expect("admin socket");
        socket
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("admin write");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_string(&mut answer))
            .await
            .expect("admin answers within 5 s")
            .expect("admin read");
        answer
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn haproxy_available() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| Path::new(&dir).join("haproxy").is_file())
    })
}

async fn api(request: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let response = request
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("API request");
    let status = response.status().as_u16();
    let served_by = response
        .headers()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.expect("body");
    (
        status,
        served_by,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn has_instructions(c: &ConnectionLog, instructions: &str) -> bool {
    c.client_events
        .iter()
        .any(|e| e["type"] == "session.update" && e["session"]["instructions"] == instructions)
}

/// Poll `GET url` (bearer) until `f` accepts the JSON body; `None` after `timeout`.
async fn poll(url: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Result<Value, String> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        let (status, _, body) = api(http.get(url)).await;
        if status == 200 && f(&body) {
            return Ok(body);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {timeout:?}, {url} answered {status}: {body}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The relay instances by name (`INSTANCE_ID`, also HAProxy's server name).
type Relays = HashMap<&'static str, Relay>;

/// `serve` as `id`, on the shared database, placing calls through `twilio`, behind `public_url`.
async fn start_instance(
    id: &'static str,
    realtime: &FakeOpenAi,
    twilio: &FakeTwilio,
    database_url: &str,
    public_url: &str,
) -> Relay {
    let heartbeat = HEARTBEAT_SECS.to_string();
    let base = twilio.base_url();
    let env = [
        ("DATABASE_URL", database_url),
        ("INSTANCE_ID", id),
        ("INSTANCE_HEARTBEAT_SECS", heartbeat.as_str()),
        ("TWILIO_API_BASE", base.as_str()),
        ("TWILIO_ACCOUNT_SID", twilio.account_sid.as_str()),
        ("TWILIO_AUTH_TOKEN", twilio.auth_token.as_str()),
        ("TWILIO_PHONE_NUMBER", FROM),
        ("API_TOKEN", TOKEN),
        ("PUBLIC_URL", public_url),
    ];
    Relay::start_with(realtime, 5, &env).await
}

#[tokio::test]
async fn two_instances_behind_haproxy_share_calls_and_a_killed_one_s_calls_end_as_server_lost() {
    let Some(db) = scratch::postgres("cluster::two_instances_behind_haproxy")
        .await
        .expect("scratch database")
    else {
        return;
    };
    if !haproxy_available() {
        eprintln!("cluster::two_instances_behind_haproxy: skipped (haproxy is not on PATH)");
        db.drop_database().await.expect("drop database");
        return;
    }
    let realtime = FakeOpenAi::spawn(FakeOptions::default())
        .await
        .expect("Realtime stand-in");
    let twilio = FakeTwilio::start(FakeTwilioOptions {
        numbers: vec![PhoneNumber::new(FROM)],
        callee: Callee {
            clips: vec![clip("caller-hello.wav"); 8],
            quiet_ms: 400,
            reply_timeout_ms: 8_000,
            max_call_ms: 90_000,
            ..Callee::default()
        },
        ring: Duration::from_millis(300),
        ..FakeTwilioOptions::default()
    })
    .await
    .expect("Twilio stand-in");
    let lb_port = free_port();
    let public_url = format!("http://127.0.0.1:{lb_port}");
    let mut relays = Relays::new();
    for id in ["relay-a", "relay-b"] {
        let relay = start_instance(id, &realtime, &twilio, &db.url, &public_url).await;
        relays.insert(id, relay);
    }
    let lb = Balancer::start(
        lb_port,
        &[
            ("relay-a", relays["relay-a"].addr.port()),
            ("relay-b", relays["relay-b"].addr.port()),
        ],
    )
    .await;
    let http = reqwest::Client::new();

    // Place a call through the balancer, then take the instance that answered out of rotation
    // (HAProxy `drain`), so the call's stream and its callbacks land on the other one.
    let instructions = "You are the cluster test's own assistant.";
    let body =
        json!({"to": TO, "instructions": instructions, "greeting": "Hello from the cluster."});
    let (status, served_by, placed) = api(http.post(lb.url("/api/calls")).json(&body)).await;
    assert_eq!(status, 201, "{placed}");
    let placed_on: &'static str = match served_by.as_deref() {
        Some("relay-a") => "relay-a",
        Some("relay-b") => "relay-b",
        other => panic!("X-Served-By: {other:?}"),
    };
    let streamed_on = if placed_on == "relay-a" {
        "relay-b"
    } else {
        "relay-a"
    };
    let answer = lb
        .admin(&format!("set server relays/{placed_on} state drain"))
        .await;
    assert!(answer.trim().is_empty(), "haproxy admin: {answer}");
    let sid = placed["call_sid"].as_str().expect("call_sid").to_string();

    // The other instance applies the call's own instructions, taken from the database.
    assert!(
        realtime
            .wait_for(Duration::from_secs(15), |c| c
                .iter()
                .any(|c| has_instructions(c, instructions)))
            .await,
        "the Realtime stand-in never saw the call's own instructions"
    );
    lb.admin(&format!("set server relays/{placed_on} state ready"))
        .await;
    let placed_addr = relays[placed_on].addr;
    let record = poll(
        &format!("http://{placed_addr}/api/calls/{sid}"),
        Duration::from_secs(10),
        |r| r["status"] == "in-progress",
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the placing instance sees the call in progress (its callbacks went to the other): {e}"
        )
    });
    assert_eq!(record["direction"], "outbound-api", "{record}");

    // The call's event feed, through the instance that placed it, streams its turns.
    let mut feed = http
        .get(format!("http://{placed_addr}/api/calls/{sid}/events"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("events feed");
    assert_eq!(feed.status(), 200);
    let mut seen = String::new();
    let turn = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = feed.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("transcript.final") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(
        turn,
        "no transcript turn through the placing instance: {seen}"
    );

    // kill -9 the instance holding the stream, mid-call: the survivor closes the call as
    // server_lost within the heartbeat timeout (three missed beats), and the feed ends.
    let killed = relays.remove(streamed_on).expect("the stream's instance");
    let killed_at = Instant::now();
    let status = Command::new("kill")
        .args(["-KILL", &killed.pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let lost = poll(
        &format!("http://{placed_addr}/api/calls/{sid}"),
        Duration::from_secs(5 * HEARTBEAT_SECS + 10),
        |r| r["end_reason"] == "server_lost",
    )
    .await
    .unwrap_or_else(|e| panic!("the killed instance's call is closed as server_lost: {e}"));
    let took = killed_at.elapsed();
    assert!(
        took <= Duration::from_secs(5 * HEARTBEAT_SECS + 3),
        "server_lost after {took:?}"
    );
    assert!(lost["ended_at"].is_string(), "{lost}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(chunk)) = feed.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains("call.ended") {
                return true;
            }
        }
        seen.contains("call.ended")
    })
    .await
    .unwrap_or(false);
    assert!(ended, "the feed did not end with call.ended: {seen}");

    // The survivor keeps serving: a new call through the balancer streams, and hanging it up
    // through the balancer records api_hangup. `answered` can come before the stream starts, so
    // the hang-up may reach the relay while the stream is still connecting (CI saw that: the
    // record then said the caller hung up).
    let (status, _, second) = api(http.post(lb.url("/api/calls")).json(&body)).await;
    assert_eq!(status, 201, "{second}");
    let second_sid = second["call_sid"].as_str().expect("call_sid").to_string();
    poll(
        &lb.url(&format!("/api/calls/{second_sid}")),
        Duration::from_secs(15),
        |r| r["status"] == "in-progress",
    )
    .await
    .unwrap_or_else(|e| panic!("the second call is answered and streaming on the survivor: {e}"));
    let (status, _, hung_up) =
        api(http.post(lb.url(&format!("/api/calls/{second_sid}/hangup")))).await;
    assert_eq!(status, 200, "hang-up through the balancer: {hung_up}");
    twilio
        .wait_for_completion(&second_sid, Duration::from_secs(20))
        .await
        .expect("the second call completes");
    poll(
        &lb.url(&format!("/api/calls/{second_sid}")),
        Duration::from_secs(10),
        |r| r["end_reason"] == "api_hangup" && r["status"] == "completed",
    )
    .await
    .unwrap_or_else(|e| panic!("the second call's record says api_hangup: {e}"));
    drop(killed);
    drop(relays);
    db.drop_database().await.expect("drop database");
}
