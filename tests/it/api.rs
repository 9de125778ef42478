//! The HTTP API (`/api/*`) and Twilio's status callback, against a recording fake of Twilio's
//! REST API and the Realtime stand-in.

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions};
use twilio_realtime_relay::sim;

use crate::fake_twilio::{FakeNumber, FakeTwilio};
use crate::support::{call_options, clip, spawn_app, spawn_with_fake, twiml_parameters, TestApp};

const TOKEN: &str = "test-api-token-0123456789";

async fn api_app(twilio: &FakeTwilio, tweak: impl FnOnce(&mut Config)) -> (TestApp, FakeOpenAi) {
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    spawn_with_fake(FakeOptions::default(), move |c| {
        c.api_token = Some(TOKEN.into());
        c.public_url = Some("https://relay.example.com".into());
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_phone_number = Some("+15550009999".into());
        // These tests exercise the API; signatures have their own tests.
        c.twilio_validate_signature = false;
        tweak(c);
    })
    .await
}

fn api(method: &str, path: &str, body: Option<Value>) -> Request<Body> {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    match body {
        Some(b) => builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => builder.body(Body::empty()).unwrap(),
    }
}

async fn json_of(app: &TestApp, req: Request<Body>) -> (StatusCode, Value) {
    let (status, _, body) = app.request(req).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn without_api_token_every_api_endpoint_answers_503_saying_how_to_enable_it() {
    let app = spawn_app(Config::default()).await;
    for (method, path) in [
        ("GET", "/api/calls"),
        ("POST", "/api/calls"),
        ("GET", "/api/calls/CA1"),
        ("GET", "/api/calls/CA1/transcript"),
        ("POST", "/api/calls/CA1/hangup"),
        ("GET", "/api/numbers"),
    ] {
        let (status, body) = json_of(&app, api(method, path, None)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{method} {path}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("API_TOKEN"),
            "{body}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_token_gets_401_and_is_counted() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let no_auth = Request::get("/api/calls").body(Body::empty()).unwrap();
    let wrong = Request::post("/api/calls")
        .header(header::AUTHORIZATION, "Bearer not-the-token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"to": "+15551234567"}).to_string()))
        .unwrap();
    for req in [no_auth, wrong] {
        let (status, body) = json_of(&app, req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    assert!(twilio.requests().is_empty(), "nothing reached Twilio");
    assert_eq!(app.state.stats.errors(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn placing_a_call_sends_a_stream_twiml_with_a_call_reference_and_a_status_callback() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let (status, body) = json_of(
        &app,
        api(
            "POST",
            "/api/calls",
            Some(json!({"to": "+15551234567", "metadata": {"order": 42}})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sid = body["call_sid"].as_str().unwrap().to_string();
    assert!(sid.starts_with("CA"));
    assert_eq!(body["to"], "+15551234567");
    assert_eq!(
        body["from"], "+15550009999",
        "TWILIO_PHONE_NUMBER is the default caller ID"
    );

    let request = twilio.requests().pop().unwrap();
    assert_eq!(
        request.path,
        format!("/2010-04-01/Accounts/{}/Calls.json", twilio.account_sid)
    );
    assert_eq!(
        request.auth_user.as_deref(),
        Some(twilio.account_sid.as_str())
    );
    assert_eq!(
        request.form_values("StatusCallback"),
        ["https://relay.example.com/twilio/status"]
    );
    assert_eq!(
        request.form_values("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    let xml = request.form_values("Twiml")[0].to_string();
    let doc = roxmltree::Document::parse(&xml).expect("inline TwiML is XML");
    let stream = doc
        .descendants()
        .find(|n| n.has_tag_name("Stream"))
        .unwrap();
    assert_eq!(
        stream.attribute("url"),
        Some("wss://relay.example.com/media-stream")
    );
    let call_ref = doc
        .descendants()
        .find(|n| n.attribute("name") == Some("CallRef"));
    assert!(call_ref.is_some_and(|n| n.attribute("value").is_some_and(|v| !v.is_empty())));

    let (_, health) = json_of(&app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(health["twilio_configured"], true);

    let (_, list) = json_of(&app, api("GET", "/api/calls?limit=10", None)).await;
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["call_sid"], sid.as_str());
    assert_eq!(calls[0]["direction"], "outbound-api");
    assert_eq!(calls[0]["metadata"]["order"], 42);
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_calls_are_422_with_the_field_named_and_never_reach_twilio() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |c| {
        c.allowed_destinations = vec!["+44".into()];
    })
    .await;
    for (body, field) in [
        (json!({"to": "5551234567"}), "to"),
        (json!({"to": "+15551234567"}), "to"), // not in ALLOWED_DESTINATIONS
        (json!({"to": "+447700900123", "from": "me"}), "from"),
        (json!({"to": "+447700900123", "voice": "robot"}), "voice"),
    ] {
        let (status, err) = json_of(&app, api("POST", "/api/calls", Some(body.clone()))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["error"]["field"], field, "{body}: {err}");
    }
    let (status, _) = json_of(
        &app,
        api(
            "POST",
            "/api/calls",
            Some(json!({"to": "+447700900123", "colour": "red"})),
        ),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown fields are rejected"
    );
    assert!(twilio.requests().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn twilio_errors_pass_through_with_their_code_as_502() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    twilio.fail_next(
        400,
        21211,
        "The 'To' number +15551234567 is not a valid phone number.",
    );
    let (status, body) = json_of(
        &app,
        api("POST", "/api/calls", Some(json!({"to": "+15551234567"}))),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["error"]["code"], 21211);
    assert_eq!(body["error"]["source"], "twilio");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a valid phone number"));
    let (_, list) = json_of(&app, api("GET", "/api/calls", None)).await;
    assert!(
        list["calls"].as_array().unwrap().is_empty(),
        "no record for a call never placed"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn per_call_instructions_voice_and_greeting_reach_that_calls_session() {
    let twilio = FakeTwilio::start().await;
    let (app, fake) = api_app(&twilio, |_| {}).await;
    let (status, _) = json_of(
        &app,
        api(
            "POST",
            "/api/calls",
            Some(json!({"to": "+15551234567",
            "instructions": "You are calling about appointment X.", "voice": "cedar",
            "greeting": "Hi, this is the clinic."})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // Play Twilio: answer with the stream and the parameters the TwiML carries.
    let xml = twilio.requests().pop().unwrap().form_values("Twiml")[0].to_string();
    let params = twiml_parameters(&xml);
    let mut opts = call_options(&app, vec![clip("caller-hello.wav")]);
    opts.params = params;
    let report = sim::run(opts).await.unwrap();
    app.calls_finished().await;

    let events = &fake.connections()[0].client_events;
    let updates: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "session.update")
        .collect();
    assert_eq!(
        updates.len(),
        2,
        "defaults first, then this call's overrides"
    );
    assert_eq!(
        updates[1]["session"]["instructions"],
        "You are calling about appointment X."
    );
    assert_eq!(updates[1]["session"]["audio"]["output"]["voice"], "cedar");
    let greeting = events
        .iter()
        .find(|e| e["type"] == "conversation.item.create")
        .unwrap();
    assert!(greeting["item"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Hi, this is the clinic."));
    assert!(report.replies_started >= 2, "{}", report.summary());
    app.shutdown().await;
}

#[tokio::test]
async fn hanging_up_a_live_call_ends_it_with_api_hangup_and_an_ended_call_is_200_too() {
    let twilio = FakeTwilio::start().await;
    let (app, fake) = api_app(&twilio, |_| {}).await;
    let mut opts = call_options(&app, vec![clip("caller-hello.wav"); 4]);
    opts.max_call_ms = 60_000;
    let call = tokio::spawn(sim::run(opts));
    // Wait until the call is live: the stand-in has its session and audio flows.
    assert!(
        fake.wait_for(std::time::Duration::from_secs(10), |c| c
            .first()
            .is_some_and(|c| c.appended_audio.len() > 1600))
            .await
    );
    let (_, list) = json_of(&app, api("GET", "/api/calls", None)).await;
    let sid = list["calls"][0]["call_sid"].as_str().unwrap().to_string();
    assert_eq!(list["calls"][0]["status"], "in-progress");

    let (status, body) =
        json_of(&app, api("POST", &format!("/api/calls/{sid}/hangup"), None)).await;
    // The fake Twilio never placed this (inbound) call, so it answers 20404: already ended.
    assert_eq!(status, StatusCode::OK, "{body}");
    let report = call.await.unwrap().unwrap();
    assert!(report.closed_by_server, "the relay ended the stream");
    app.calls_finished().await;
    let t = app.transcript(&sid);
    assert_eq!(t["end_reason"], "api_hangup");
    let hangup = twilio.requests().pop().unwrap();
    assert_eq!(
        hangup.path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{sid}.json",
            twilio.account_sid
        )
    );
    assert_eq!(hangup.form_values("Status"), ["completed"]);
    let (_, record) = json_of(&app, api("GET", &format!("/api/calls/{sid}"), None)).await;
    assert_eq!(record["end_reason"], "api_hangup");
    assert!(record["ended_at"].is_string());
    app.shutdown().await;
}

#[tokio::test]
async fn a_hang_up_asked_while_the_stream_connects_is_recorded_as_api_hangup() {
    let twilio = FakeTwilio::start().await;
    let (app, fake) = api_app(&twilio, |_| {}).await;
    let (_, placed) = json_of(
        &app,
        api("POST", "/api/calls", Some(json!({"to": "+15551234567"}))),
    )
    .await;
    let sid = placed["call_sid"].as_str().unwrap().to_string();
    let xml = twilio.requests().pop().unwrap().form_values("Twiml")[0].to_string();
    // Answered, as the callback says, but its media stream has not started yet.
    twilio.set_call_status(&sid, "in-progress");
    let answered = format!("CallSid={sid}&CallStatus=in-progress&SequenceNumber=2");
    let (status, _, _) = app.request(status_callback(&answered)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // The stream starts while the relay waits for Twilio to accept the hang-up.
    let release = twilio.hold_next();
    let mut opts = call_options(&app, vec![clip("caller-hello.wav"); 4]);
    opts.params = twiml_parameters(&xml);
    opts.call_sid = Some(sid.clone());
    opts.max_call_ms = 60_000;
    let hang_up = app.request(api("POST", &format!("/api/calls/{sid}/hangup"), None));
    let connect = async {
        twilio.wait_for_requests(2).await;
        let call = tokio::spawn(sim::run(opts));
        assert!(
            fake.wait_for(std::time::Duration::from_secs(10), |c| c
                .first()
                .is_some_and(|c| !c.appended_audio.is_empty()))
                .await,
            "the stream never reached the Realtime stand-in"
        );
        drop(release);
        // Ends once the hang-up, polled beside this, has ended the stream.
        call.await.unwrap().unwrap()
    };
    let ((status, _, body), report) = tokio::join!(hang_up, connect);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        report.closed_by_server,
        "the relay ended the stream that started meanwhile: {}",
        report.summary()
    );
    app.calls_finished().await;
    assert_eq!(app.transcript(&sid)["end_reason"], "api_hangup");
    let (_, record) = json_of(&app, api("GET", &format!("/api/calls/{sid}"), None)).await;
    assert_eq!(record["end_reason"], "api_hangup", "{record}");
    assert_eq!(record["status"], "completed", "{record}");
    app.shutdown().await;
}

#[tokio::test]
async fn hanging_up_a_placed_call_that_is_still_ringing_cancels_it() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let (_, placed) = json_of(
        &app,
        api("POST", "/api/calls", Some(json!({"to": "+15551234567"}))),
    )
    .await;
    let sid = placed["call_sid"].as_str().unwrap().to_string();
    twilio.set_call_status(&sid, "ringing");
    let ringing = format!("CallSid={sid}&CallStatus=ringing&SequenceNumber=1");
    let (status, _, _) = app.request(status_callback(&ringing)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, body) =
        json_of(&app, api("POST", &format!("/api/calls/{sid}/hangup"), None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "canceled");
    let hangup = twilio.requests().pop().unwrap();
    assert_eq!(hangup.form_values("Status"), ["canceled"]);
    assert_eq!(twilio.calls()[0].status, "canceled");
    let (_, record) = json_of(&app, api("GET", &format!("/api/calls/{sid}"), None)).await;
    assert_eq!(record["status"], "canceled");
    assert_eq!(record["end_reason"], "api_hangup");
    app.shutdown().await;
}

#[tokio::test]
async fn hanging_up_a_call_nobody_knows_is_404_and_a_mistyped_sid_is_422() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let unknown = "CA0123456789abcdef0123456789abcdef";
    let (status, body) = json_of(
        &app,
        api("POST", &format!("/api/calls/{unknown}/hangup"), None),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert_eq!(twilio.requests().len(), 1, "Twilio was asked");
    assert!(
        app.state.store.get(unknown).await.unwrap().is_none(),
        "no record invented"
    );

    for mistyped in [
        "CA0123456789abcdef0123456789abcde",
        "CAnothex0123456789abcdef012345678",
        "PN0123456789abcdef0123456789abcdef",
    ] {
        let (status, body) = json_of(
            &app,
            api("POST", &format!("/api/calls/{mistyped}/hangup"), None),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{mistyped}: {body}"
        );
        assert_eq!(body["error"]["field"], "call_sid");
    }
    assert_eq!(
        twilio.requests().len(),
        1,
        "mistyped SIDs never reach Twilio"
    );

    // A call on record that Twilio no longer knows had already ended: still 200.
    let ended = "CAfedcba9876543210fedcba9876543210";
    let callback = format!("CallSid={ended}&CallStatus=completed&SequenceNumber=1");
    let (status, _, _) = app.request(status_callback(&callback)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = json_of(
        &app,
        api("POST", &format!("/api/calls/{ended}/hangup"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["message"].as_str().unwrap().contains("already ended"));
    app.shutdown().await;
}

#[tokio::test]
async fn numbers_are_listed_across_all_of_twilios_pages() {
    let twilio = FakeTwilio::start().await;
    let numbers: Vec<FakeNumber> = (0..5)
        .map(|i| FakeNumber::new(&format!("+1555000000{i}"), &format!("line {i}")))
        .collect();
    twilio.set_numbers(numbers, 2);
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let (status, body) = json_of(&app, api("GET", "/api/numbers", None)).await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<&str> = body["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            "+15550000000",
            "+15550000001",
            "+15550000002",
            "+15550000003",
            "+15550000004"
        ]
    );
    assert_eq!(twilio.requests().len(), 3, "three pages");
    app.shutdown().await;
}

fn status_callback(body: &str) -> Request<Body> {
    Request::post("/twilio/status")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn status_callbacks_update_records_in_sequence_order_and_survive_a_restart() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    for body in [
        "CallSid=CA77&CallStatus=ringing&SequenceNumber=1&Direction=outbound-api&To=%2B15551234567",
        "CallSid=CA77&CallStatus=completed&SequenceNumber=3&CallDuration=42",
        "CallSid=CA77&CallStatus=in-progress&SequenceNumber=2",
    ] {
        let (status, _, _) = app.request(status_callback(body)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (_, record) = json_of(&app, api("GET", "/api/calls/CA77", None)).await;
    assert_eq!(
        record["status"], "completed",
        "a late in-progress does not reopen the call"
    );
    assert_eq!(record["duration_s"], 42);
    assert_eq!(record["to"], "+15551234567");
    let (status, _, _) = app.request(status_callback("CallStatus=completed")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no CallSid");

    // A new server over the same database still knows the call.
    let again = twilio_realtime_relay::app::AppState::new(twilio_realtime_relay::config::Config {
        database_url: crate::support::sqlite_url(app.dir.path()),
        ..Default::default()
    });
    let record = again.store.get("CA77").await.unwrap().unwrap();
    assert_eq!(record.duration_s, Some(42));
    app.shutdown().await;
}

#[tokio::test]
async fn a_finished_calls_record_transcript_text_and_event_feed_are_served() {
    let twilio = FakeTwilio::start().await;
    let (app, _fake) = api_app(&twilio, |_| {}).await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .unwrap();
    app.calls_finished().await;
    let sid = &report.call_sid;

    let (status, record) = json_of(&app, api("GET", &format!("/api/calls/{sid}"), None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["direction"], "inbound");
    assert_eq!(record["status"], "completed");
    assert_eq!(record["from"], "+15550001111");
    assert_eq!(record["transcript"]["turns"].as_array().unwrap().len(), 2);

    let (status, headers, text) = app
        .request(api(
            "GET",
            &format!("/api/calls/{sid}/transcript?format=text"),
            None,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("Caller: ") && lines[1].starts_with("Assistant: "),
        "{text}"
    );

    let (_, _, feed) = app
        .request(api("GET", &format!("/api/calls/{sid}/events"), None))
        .await;
    assert!(feed.contains("event: call.ended"), "{feed}");
    assert!(feed.contains("caller_hung_up"), "{feed}");

    let (status, _) = json_of(&app, api("GET", "/api/calls/CAnope/transcript", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.shutdown().await;
}
