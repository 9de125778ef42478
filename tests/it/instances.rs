//! Two relay instances on one PostgreSQL database (skipped without `TEST_DATABASE_URL`; each
//! test has a scratch database of its own): one view of every call, settings applied where the
//! stream lands, and a crashed instance's calls closed by the other.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::records::CallRecord;
use twilio_realtime_relay::sim;
use twilio_realtime_relay::store::scratch;
use twilio_realtime_relay::transcript::EndReason;

use crate::fake_twilio::FakeTwilio;
use crate::support::{call_options, clip, eventually, spawn_with_fake, twiml_parameters, TestApp};

const TOKEN: &str = "instances-token";

/// An instance `id` on `database_url`, its Twilio REST pointed at `twilio`.
async fn instance(id: &str, database_url: &str, twilio: &FakeTwilio) -> (TestApp, FakeOpenAi) {
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    let (id, url) = (id.to_string(), database_url.to_string());
    spawn_with_fake(FakeOptions::default(), move |c| {
        c.database_url = url;
        c.instance_id = Some(id);
        c.instance_heartbeat_secs = 1;
        c.api_token = Some(TOKEN.into());
        c.public_url = Some("https://relay.example.com".into());
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_phone_number = Some("+15550009999".into());
        c.twilio_validate_signature = false;
    })
    .await
}

async fn call(app: &TestApp, req: Request<Body>) -> (StatusCode, Value) {
    let (status, _, body) = app.request(req).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn api(method: &str, path: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    match body {
        Some(b) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string())),
        None => builder.body(Body::empty()),
    }
    .unwrap()
}

#[tokio::test]
async fn on_postgres_a_call_placed_on_one_instance_streams_to_another_with_its_own_settings() {
    let name = "on_postgres_a_call_placed_on_one_instance_streams_to_another_with_its_own_settings";
    let Some(db) = scratch::postgres(name).await.unwrap() else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let (a, fake_a) = instance("relay-a", &db.url, &twilio).await;
    let (b, fake_b) = instance("relay-b", &db.url, &twilio).await;

    let placed = json!({"to": "+15551234567", "instructions": "You are calling about invoice 77."});
    let (status, created) = call(&a, api("POST", "/api/calls", Some(placed))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let sid = created["call_sid"].as_str().unwrap().to_string();

    // Play Twilio: the call's stream lands on B with the TwiML's parameters.
    let xml = twilio.requests().pop().unwrap().form_values("Twiml")[0].to_string();
    let params = twiml_parameters(&xml);
    let mut opts = call_options(&b, vec![clip("caller-hello.wav")]);
    opts.params = params;
    opts.call_sid = Some(sid.clone());
    sim::run(opts).await.expect("call");
    b.calls_finished().await;
    assert!(fake_a.connections().is_empty(), "A never streamed");
    let updates: Vec<Value> = fake_b.connections()[0]
        .client_events
        .iter()
        .filter(|e| e["type"] == "session.update")
        .cloned()
        .collect();
    assert_eq!(
        updates.last().unwrap()["session"]["instructions"],
        "You are calling about invoice 77.",
        "B applied the settings A kept"
    );

    // A status callback on B updates the record A created; both list it.
    let callback = Request::post("/twilio/status")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "CallSid={sid}&CallStatus=completed&SequenceNumber=9&CallDuration=7"
        )))
        .unwrap();
    assert_eq!(b.request(callback).await.0, StatusCode::NO_CONTENT);
    let (_, on_a) = call(&a, api("GET", &format!("/api/calls/{sid}"), None)).await;
    assert_eq!(on_a["direction"], "outbound-api", "{on_a:#}");
    assert_eq!(on_a["status"], "completed");
    assert_eq!(on_a["duration_s"], 7);
    assert_eq!(
        on_a["instance_id"], "relay-b",
        "the instance that held the stream"
    );
    assert_eq!(on_a["transcript"]["turns"].as_array().unwrap().len(), 2);
    let (_, list) = call(&b, api("GET", "/api/calls", None)).await;
    assert_eq!(list["calls"][0]["call_sid"], sid.as_str());
    a.shutdown().await;
    b.shutdown().await;
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn on_postgres_a_crashed_instances_calls_are_closed_by_another_within_the_heartbeat_timeout()
{
    let name =
        "on_postgres_a_crashed_instances_calls_are_closed_by_another_within_the_heartbeat_timeout";
    let Some(db) = scratch::postgres(name).await.unwrap() else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let (a, _fa) = instance("relay-a", &db.url, &twilio).await;
    let (b, _fb) = instance("relay-b", &db.url, &twilio).await;
    let store = b.state.store.clone();
    eventually("both instances registered", 5, || async {
        store.instances().await.is_ok_and(|i| i.len() == 2)
    })
    .await;
    let sid = "CA000000000000000000000000000000a1";
    a.state
        .store
        .update(
            sid,
            || CallRecord::new(sid, "inbound", "in-progress"),
            |r| r.instance_id = Some("relay-a".into()),
        )
        .await;
    // A second call of A's whose stream died with it: Twilio's `completed` reaches B first,
    // before any of its turns were written.
    let twilio_first = "CA000000000000000000000000000000a2";
    a.state
        .store
        .update(
            twilio_first,
            || CallRecord::new(twilio_first, "outbound-api", "in-progress"),
            |r| r.instance_id = Some("relay-a".into()),
        )
        .await;
    let mut feed = b.state.events.subscribe(sid);
    let mut twilio_first_feed = b.state.events.subscribe(twilio_first);
    let a_store = a.state.store.clone();
    let _dir = a.crash();
    let crashed = Instant::now();
    let completed = Request::post("/twilio/status")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "CallSid={twilio_first}&CallStatus=completed&SequenceNumber=4&CallDuration=2"
        )))
        .unwrap();
    assert_eq!(b.request(completed).await.0, StatusCode::NO_CONTENT);

    let ended = tokio::time::timeout(Duration::from_secs(10), feed.recv())
        .await
        .expect("B closed A's call within 10 s")
        .unwrap();
    // Dead after 3 missed 1 s heartbeats, found by B's next sweep: 4 s and scheduling.
    assert!(
        crashed.elapsed() < Duration::from_secs(6),
        "{:?}",
        crashed.elapsed()
    );
    let a_row = a_store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == "relay-a")
        .unwrap();
    assert_eq!(a_row.state, "lost");
    assert_eq!(
        ended,
        CallEvent::Ended {
            end_reason: EndReason::ServerLost,
            at: a_row.heartbeat_at
        }
    );
    let record = store.get(sid).await.unwrap().unwrap();
    assert_eq!(record.end_reason, Some(EndReason::ServerLost));
    assert_eq!(
        record.ended_at,
        Some(a_row.heartbeat_at),
        "ended at A's last heartbeat"
    );
    assert_eq!(record.status, "completed");
    let ended = tokio::time::timeout(Duration::from_secs(10), twilio_first_feed.recv())
        .await
        .expect("B closed the call Twilio had completed")
        .unwrap();
    assert!(
        matches!(
            ended,
            CallEvent::Ended {
                end_reason: EndReason::ServerLost,
                ..
            }
        ),
        "{ended:?}"
    );
    let record = store.get(twilio_first).await.unwrap().unwrap();
    assert_eq!(
        record.end_reason,
        Some(EndReason::ServerLost),
        "not hidden by Twilio's callback: {record:?}"
    );
    assert_eq!(record.status, "completed");
    let (status, _) = call(&b, api("GET", "/api/calls", None)).await;
    assert_eq!(status, StatusCode::OK, "B keeps serving");
    b.shutdown().await;
    db.drop_database().await.unwrap();
}
