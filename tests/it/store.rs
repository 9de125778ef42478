//! The store as a user meets it, on SQLite: records and transcripts outlive a restart, turns
//! are stored while the call goes on, a crashed instance's calls are closed as `server_lost`
//! at restart, `import` loads old files once, and `/health` reports the database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::{FakeOptions, Mode};
use twilio_realtime_relay::records::CallRecord;
use twilio_realtime_relay::sim;
use twilio_realtime_relay::store::import;
use twilio_realtime_relay::transcript::{EndReason, Role, Transcript};

use crate::support::{call_options, clip, eventually, spawn_app, spawn_with_fake, sqlite_url};

fn parrot() -> FakeOptions {
    FakeOptions {
        mode: Mode::Parrot,
        ..FakeOptions::default()
    }
}

async fn get_json(app: &crate::support::TestApp, path: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header("authorization", "Bearer test-token")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = app.request(req).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn records_and_transcripts_survive_a_restart_on_the_same_database() {
    let db = tempfile::tempdir().unwrap();
    let url = sqlite_url(db.path());
    let tweak = |c: &mut Config| {
        c.database_url = url.clone();
        c.api_token = Some("test-token".into());
    };
    let (a, _fake) = spawn_with_fake(parrot(), tweak).await;
    let report = sim::run(call_options(&a, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    a.calls_finished().await;
    let path = format!("/api/calls/{}", report.call_sid);
    let (_, before) = get_json(&a, &path).await;
    assert_eq!(
        before["transcript"]["turns"].as_array().unwrap().len(),
        2,
        "{before:#}"
    );
    a.shutdown().await;

    let (b, _fake) = spawn_with_fake(parrot(), tweak).await;
    let (status, after) = get_json(&b, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before, "record and transcript as they were");
    assert_eq!(after["status"], "completed");
    assert_eq!(after["end_reason"], "caller_hung_up");
    let (_, list) = get_json(&b, "/api/calls").await;
    assert_eq!(list["calls"][0]["call_sid"], report.call_sid.as_str());
    b.shutdown().await;
}

#[tokio::test]
async fn transcript_turns_are_in_the_store_before_the_call_ends() {
    let (app, _fake) = spawn_with_fake(parrot(), |_| {}).await;
    let mut call = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-hello.wav")],
    );
    let sid = "CA00000000000000000000000000000013".to_string();
    call.call_sid = Some(sid.clone());
    let running = tokio::spawn(sim::run(call));
    let store = app.state.store.clone();
    eventually("the first exchange is stored mid-call", 20, || async {
        store
            .transcript(&sid)
            .await
            .unwrap()
            .is_some_and(|t| t.turns.len() >= 2)
    })
    .await;
    let mid = store.transcript(&sid).await.unwrap().unwrap();
    assert!(mid.ended_at.is_none(), "read while the call is live");
    assert!(!running.is_finished(), "the caller is still on the line");
    assert!(!store.get(&sid).await.unwrap().unwrap().is_ended());
    running.await.unwrap().expect("call");
    app.calls_finished().await;
    let end = store.transcript(&sid).await.unwrap().unwrap();
    assert_eq!(end.turns.len(), 4);
    assert_eq!(
        end.turns[..mid.turns.len()],
        mid.turns[..],
        "the stored turns were final"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn leftover_calls_are_closed_as_server_lost_at_restart() {
    let db = tempfile::tempdir().unwrap();
    let url = sqlite_url(db.path());
    let config = || Config {
        database_url: url.clone(),
        instance_id: Some("relay-a".into()),
        ..Config::default()
    };
    let a = spawn_app(config()).await;
    let store = a.state.store.clone();
    eventually("relay-a registered", 5, || async {
        store.instances().await.is_ok_and(|i| i.len() == 1)
    })
    .await;
    // A call in progress on relay-a, one turn in.
    let sid = "CA00000000000000000000000000000042";
    store
        .update(
            sid,
            || CallRecord::new(sid, "inbound", "in-progress"),
            |r| r.instance_id = Some("relay-a".into()),
        )
        .await;
    let mut t = Transcript::new(sid, "MZ1", None, None);
    t.complete("i", Role::Caller, "hello");
    store.finish_transcript(&t).await;
    let _dir = a.crash();
    let last_beat = store.instances().await.unwrap()[0].heartbeat_at;

    // relay-a comes back (same id): its leftover is closed before it serves, and an open
    // feed of the call ends.
    let state = twilio_realtime_relay::app::AppState::new(Config {
        transcript_dir: db.path().join("transcripts"),
        ..config()
    });
    let mut feed = state.events.subscribe(sid);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(twilio_realtime_relay::app::serve(
        listener,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), feed.recv())
        .await
        .expect("call.ended within 10 s")
        .unwrap();
    assert_eq!(
        ended,
        CallEvent::Ended {
            end_reason: EndReason::ServerLost,
            at: last_beat
        }
    );
    let record = state.store.get(sid).await.unwrap().unwrap();
    assert_eq!(record.status, "completed");
    assert_eq!(record.end_reason, Some(EndReason::ServerLost));
    assert_eq!(
        record.ended_at,
        Some(last_beat),
        "ended at the last heartbeat"
    );
    let stored = state.store.transcript(sid).await.unwrap().unwrap();
    assert_eq!(stored.end_reason, Some(EndReason::ServerLost));
    assert_eq!(stored.turns.len(), 1, "the turn is kept");
    let exported = db.path().join(format!("transcripts/{sid}.json"));
    assert!(exported.exists(), "the closed transcript is exported");
    stop.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn import_loads_a_directory_once() {
    let old = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(old.path().join("calls")).unwrap();
    let mut t = Transcript::new("CA1", "MZ1", Some("+15550001".into()), None);
    t.complete("i", Role::Caller, "hello from before");
    t.finish(EndReason::CallerHungUp);
    t.save(old.path()).await.unwrap();
    let mut record = CallRecord::new("CA1", "inbound", "in-progress");
    record.end("completed", Some(EndReason::CallerHungUp));
    std::fs::write(
        old.path().join("calls/CA1.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    std::fs::write(old.path().join("calls/broken.json"), b"{").unwrap();

    let app = spawn_app(Config::default()).await;
    let first = import::import(&app.state.store, old.path()).await.unwrap();
    assert_eq!(
        (
            first.records_added,
            first.transcripts_added,
            first.unreadable
        ),
        (1, 1, 1)
    );
    let second = import::import(&app.state.store, old.path()).await.unwrap();
    assert_eq!(
        (second.records_added, second.records_present),
        (0, 1),
        "nothing twice"
    );
    assert_eq!(
        (second.transcripts_added, second.transcripts_present),
        (0, 1)
    );
    let stored = app.state.store.transcript("CA1").await.unwrap().unwrap();
    assert_eq!(stored.turns[0].text, "hello from before");
    assert_eq!(
        app.state.store.get("CA1").await.unwrap().unwrap().status,
        "completed"
    );
    assert_eq!(app.state.store.list(10).await.unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn health_reports_the_database_and_answers_503_while_it_is_unreachable() {
    let app = spawn_app(Config::default()).await;
    let (status, health) = get_json(&app, "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["database"], "ok");
    app.shutdown().await;

    // A PostgreSQL server that is not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app(Config {
        database_url: format!("postgres://postgres@127.0.0.1:{port}/relay"),
        ..Config::default()
    })
    .await;
    let (status, health) = get_json(&app, "/health").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["database"], "error");
    assert_eq!(health["status"], "unhealthy");
    app.shutdown().await;
}
