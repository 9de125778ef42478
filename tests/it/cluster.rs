//! Two relay instances on one PostgreSQL database (`src/cluster`): a call's event feed and its
//! hang-up through the instance that does not hold it. Skipped without `TEST_DATABASE_URL`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::Utc;
use serde_json::Value;
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::sim;
use twilio_realtime_relay::transcript::{EndReason, Role};

use crate::fake_twilio::FakeTwilio;
use crate::pg::TestDb;
use crate::support::{call_options, clip, metric, spawn_with_fake, TestApp};

const TOKEN: &str = "test-api-token-0123456789";

/// One relay instance on `db`, with the API on and, if given, Twilio's REST API at `twilio`.
async fn instance(db: &TestDb, twilio: Option<&FakeTwilio>) -> (TestApp, FakeOpenAi) {
    let url = db.url.clone();
    let twilio = twilio.map(|t| {
        (
            t.base_url.clone(),
            t.account_sid.clone(),
            t.auth_token.clone(),
        )
    });
    let (app, fake) = spawn_with_fake(FakeOptions::default(), move |c| {
        c.api_token = Some(TOKEN.into());
        c.database_url = url;
        if let Some((base, account, token)) = twilio {
            c.twilio_api_base = base;
            c.twilio_account_sid = Some(account);
            c.twilio_auth_token = Some(token.as_str().into());
            c.twilio_validate_signature = false;
        }
    })
    .await;
    assert!(
        app.state.cluster.is_some(),
        "a postgres:// URL joins the cluster"
    );
    (app, fake)
}

fn fresh_sid() -> String {
    format!("CA{}", uuid::Uuid::new_v4().simple())
}

/// Open `GET /api/calls/{sid}/events` on `app` over real HTTP; resolves once the handler has
/// subscribed (the response head is out), and the task yields the whole feed when it ends.
async fn subscribe(app: &TestApp, sid: &str) -> tokio::task::JoinHandle<String> {
    twilio_realtime_relay::upstream::ensure_crypto_provider();
    let response = reqwest::Client::new()
        .get(format!("http://{}/api/calls/{sid}/events", app.addr))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("event feed");
    assert_eq!(response.status(), 200);
    tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(30), response.text())
            .await
            .expect("the feed ended within 30 s")
            .expect("feed body")
    })
}

/// `(event name, data)` of every event in an SSE body.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_string()))
            };
            let data = field("data:")?;
            Some((field("event:")?, serde_json::from_str(&data).expect("JSON")))
        })
        .collect()
}

#[tokio::test]
async fn the_event_feed_on_one_instance_streams_a_call_running_on_the_other() {
    let Some(db) =
        TestDb::create("the_event_feed_on_one_instance_streams_a_call_running_on_the_other").await
    else {
        return;
    };
    let (a, _) = instance(&db, None).await;
    let (b, _fake_b) = instance(&db, None).await;
    let sid = fresh_sid();
    let feed = subscribe(&a, &sid).await;

    let mut opts = call_options(&b, vec![clip("caller-hello.wav")]);
    opts.call_sid = Some(sid.clone());
    sim::run(opts).await.expect("call on B");
    let events = sse_events(&feed.await.unwrap());
    b.calls_finished().await;

    let (last, ended) = events.last().expect("events arrived on A");
    assert_eq!(last, "call.ended", "{events:?}");
    assert_eq!(ended["end_reason"], "caller_hung_up");
    let finals: Vec<&str> = events
        .iter()
        .filter(|(name, _)| name == "transcript.final")
        .map(|(_, data)| data["text"].as_str().unwrap())
        .collect();
    let transcript = b.transcript(&sid);
    let turns: Vec<&str> = transcript["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert_eq!(turns.len(), 2, "{transcript}");
    assert_eq!(
        finals, turns,
        "A saw B's transcript, turn by turn, in order"
    );
    let received = metric(
        &a.metrics().await,
        r#"cluster_notifications_total{event="received"}"#,
    );
    assert!(
        received >= events.len() as f64,
        "{received} received for {} events: {events:?}",
        events.len()
    );
    assert!(
        metric(
            &b.metrics().await,
            r#"cluster_notifications_total{event="sent"}"#
        ) >= events.len() as f64
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn an_event_over_8000_bytes_arrives_whole_and_in_order() {
    let Some(db) = TestDb::create("an_event_over_8000_bytes_arrives_whole_and_in_order").await
    else {
        return;
    };
    let (a, _) = instance(&db, None).await;
    let (b, _) = instance(&db, None).await;
    let sid = fresh_sid();
    let feed = subscribe(&a, &sid).await;
    // 12,000 bytes of UTF-8 in 4,000 characters: too long for a NOTIFY payload.
    let long = format!("{} the end", "€uro".repeat(2000));
    let at = Utc::now();
    let sent = [
        CallEvent::Interim {
            speaker: Role::Agent,
            text: "short".into(),
            at,
        },
        CallEvent::Final {
            speaker: Role::Agent,
            text: long.clone(),
            at,
        },
        CallEvent::Ended {
            end_reason: EndReason::AssistantHungUp,
            at,
        },
    ];
    for event in sent {
        b.state.events.publish(&sid, event);
    }
    let events = sse_events(&feed.await.unwrap());
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["transcript.interim", "transcript.final", "call.ended"]
    );
    assert_eq!(events[1].1["text"], long.as_str());
    let mut conn = db.connect().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM cluster_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the long event went through the table");
    a.shutdown().await;
    b.shutdown().await;
}

fn hangup(sid: &str) -> Request<Body> {
    Request::post(format!("/api/calls/{sid}/hangup"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

/// Start a simulated call `sid` of `turns` caller turns on `b` and wait until its audio reaches
/// the stand-in.
async fn live_call(
    b: &TestApp,
    fake_b: &FakeOpenAi,
    sid: &str,
    turns: usize,
) -> tokio::task::JoinHandle<anyhow::Result<sim::CallReport>> {
    let mut opts = call_options(b, vec![clip("caller-hello.wav"); turns]);
    opts.max_call_ms = 60_000;
    opts.call_sid = Some(sid.to_string());
    let call = tokio::spawn(sim::run(opts));
    assert!(
        fake_b
            .wait_for(Duration::from_secs(10), |c| c
                .first()
                .is_some_and(|c| c.appended_audio.len() > 1600))
            .await,
        "the call on B is live"
    );
    call
}

#[tokio::test]
async fn hanging_up_through_one_instance_a_call_on_the_other_records_api_hangup_there() {
    let Some(db) = TestDb::create(
        "hanging_up_through_one_instance_a_call_on_the_other_records_api_hangup_there",
    )
    .await
    else {
        return;
    };
    let twilio = FakeTwilio::start().await;
    let (a, _) = instance(&db, Some(&twilio)).await;
    let (b, fake_b) = instance(&db, Some(&twilio)).await;
    let sid = fresh_sid();
    twilio.add_inbound_call(&sid, "+15550001111", "+15550002222");
    let call = live_call(&b, &fake_b, &sid, 4).await;

    let (status, _, body) = a.request(hangup(&sid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = call.await.unwrap().unwrap();
    assert!(report.closed_by_server, "B ended the stream");
    b.calls_finished().await;
    assert_eq!(b.transcript(&sid)["end_reason"], "api_hangup");
    let record = b
        .state
        .store
        .get(&sid)
        .await
        .expect("store")
        .expect("B's record");
    assert_eq!(record.end_reason, Some(EndReason::ApiHangup));
    let request = twilio.requests().pop().expect("Twilio was asked");
    assert!(request.path.ends_with(&format!("/Calls/{sid}.json")));
    assert_eq!(request.form_values("Status"), ["completed"]);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_holder_records_api_hangup_before_twilios_stop_and_nobody_answers_for_unknown_calls() {
    let Some(db) = TestDb::create(
        "the_holder_records_api_hangup_before_twilios_stop_and_nobody_answers_for_unknown_calls",
    )
    .await
    else {
        return;
    };
    let (a, _) = instance(&db, None).await;
    let (b, fake_b) = instance(&db, None).await;
    let cluster = a.state.cluster.clone().unwrap();
    let sid = fresh_sid();
    let call = live_call(&b, &fake_b, &sid, 2).await;
    assert!(cluster.prepare_hangup(&sid).await, "B acknowledged");
    // Twilio would now send `stop`: the simulated caller ends the call itself, as Twilio does.
    let report = call.await.unwrap().unwrap();
    assert!(!report.closed_by_server, "the caller's side ended it");
    b.calls_finished().await;
    assert_eq!(
        b.transcript(&sid)["end_reason"],
        "api_hangup",
        "the stop that followed is not blamed on the caller"
    );
    assert!(
        !cluster.prepare_hangup(&fresh_sid()).await,
        "no instance holds an unknown call: the wait times out"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn events_resume_after_the_listening_connection_is_killed() {
    let Some(db) = TestDb::create("events_resume_after_the_listening_connection_is_killed").await
    else {
        return;
    };
    let (a, _) = instance(&db, None).await;
    let (b, _) = instance(&db, None).await;
    let cluster = a.state.cluster.clone().unwrap();
    let mut conn = db.connect().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'",
    )
    .bind(&db.name)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        killed,
        [true, true],
        "both instances' listeners were killed"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cluster.reconnects() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "A did not reconnect within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sid = fresh_sid();
    let feed = subscribe(&a, &sid).await;
    let at = Utc::now();
    b.state.events.publish(
        &sid,
        CallEvent::Final {
            speaker: Role::Caller,
            text: "still there?".into(),
            at,
        },
    );
    b.state.events.publish(
        &sid,
        CallEvent::Ended {
            end_reason: EndReason::CallerHungUp,
            at,
        },
    );
    let events = sse_events(&feed.await.unwrap());
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].1["text"], "still there?");
    assert_eq!(events[1].0, "call.ended");
    a.shutdown().await;
    b.shutdown().await;
}
