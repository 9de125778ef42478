//! The assistant's tools end to end: the stand-in (as the model) calls tools, the relay runs them
//! against a recording webhook and fake Twilio (all on 127.0.0.1:0), the simulator is the caller.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::Message;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::events::CallEvent;
use twilio_realtime_relay::fake_openai::{FakeOpenAi, FakeOptions, ScriptedCall};
use twilio_realtime_relay::sim;

use crate::fake_twilio::FakeTwilio;
use crate::fake_webhook::{Answer, FakeWebhook};
use crate::support::{call_options, clip, metric, spawn_with_fake, twiml_parameters, TestApp};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn scripted(calls: &[(&str, &str)]) -> FakeOptions {
    FakeOptions {
        tool_calls: calls
            .iter()
            .map(|(name, arguments)| ScriptedCall {
                name: (*name).into(),
                arguments: (*arguments).into(),
            })
            .collect(),
        ..FakeOptions::default()
    }
}

/// `lookup_order` at `url` (with `timeout_ms`) and the `crm` MCP server.
fn tools_json(url: &str, timeout_ms: u64) -> Value {
    json!({
        "functions": [{"name": "lookup_order", "description": "Find an order by its number",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
            "url": url, "timeout_ms": timeout_ms, "headers": {"Authorization": "Bearer backend-token"}}],
        "mcp": [{"server_label": "crm", "server_url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": "Bearer crm-token"}, "allowed_tools": ["find_customer"],
            "require_approval": "never"}]
    })
}

/// A relay with `tools` written to a `TOOLS_FILE` and loaded as at start-up (`Config::validate`).
async fn tools_app(
    opts: FakeOptions,
    tools: Value,
    tweak: impl FnOnce(&mut Config),
) -> (TestApp, FakeOpenAi, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("tools.json");
    std::fs::write(&path, tools.to_string()).unwrap();
    let (app, fake) = spawn_with_fake(opts, move |c| {
        c.tools_file = Some(path);
        c.tools_webhook_secret = Some(SECRET.into());
        c.dtmf_gap_ms = 300;
        tweak(c);
        *c = c
            .clone()
            .validate()
            .expect("the test configuration is valid");
    })
    .await;
    (app, fake, dir)
}

/// Point the relay at fake Twilio (credentials, no signature checks).
fn with_twilio(twilio: &FakeTwilio) -> impl FnOnce(&mut Config) {
    let (base, account, token) = (
        twilio.base_url.clone(),
        twilio.account_sid.clone(),
        twilio.auth_token.clone(),
    );
    move |c| {
        c.twilio_api_base = base;
        c.twilio_account_sid = Some(account);
        c.twilio_auth_token = Some(token.as_str().into());
        c.twilio_validate_signature = false;
        c.transfer_destinations = ["sales=+15551230001", "support=sip:help@example.com"]
            .iter()
            .map(|d| twilio_realtime_relay::tools::transfer::parse_destination(d).unwrap())
            .collect();
    }
}

fn events(fake: &FakeOpenAi) -> Vec<Value> {
    fake.connections()[0].client_events.clone()
}

/// The index of the first `function_call_output`, and the event.
fn first_output(events: &[Value]) -> (usize, Value) {
    let at = events
        .iter()
        .position(|e| e["item"]["type"] == "function_call_output")
        .unwrap_or_else(|| panic!("no function_call_output in {events:#?}"));
    (at, events[at].clone())
}

/// The type of the first event after `at` that is not caller audio (frames keep flowing between
/// any two events the relay sends).
fn next_type(events: &[Value], at: usize) -> &str {
    let next = events[at + 1..]
        .iter()
        .find(|e| e["type"] != "input_audio_buffer.append");
    next.and_then(|e| e["type"].as_str()).unwrap_or("(none)")
}

fn tool_turns(transcript: &Value) -> Vec<Value> {
    let turns = transcript["turns"].as_array().unwrap();
    turns
        .iter()
        .filter(|t| t["role"] == "tool")
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_webhook_gets_the_arguments_call_context_and_a_valid_signature_and_its_answer_reaches_the_model_verbatim(
) {
    let webhook = FakeWebhook::start(Answer::Json(
        200,
        r#"{ "status": "shipped",  "eta": "tomorrow" }"#.into(),
    ))
    .await;
    let opts = scripted(&[("lookup_order", r#"{"order_id":"427"}"#)]);
    let (app, fake, _dir) = tools_app(opts, tools_json(&webhook.url, 8000), |_| {}).await;
    let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    let mut feed = app.state.events.subscribe(&sid);
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.call_sid = Some(sid.clone());
    let report = sim::run(call).await.expect("call");
    app.calls_finished().await;

    let requests = webhook.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["authorization"], "Bearer backend-token");
    standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(&request.body, &request.headers)
        .expect("a Standard Webhooks library accepts the signature");
    let body = request.json();
    let call_id = body["call_id"].as_str().unwrap().to_string();
    assert!(call_id.starts_with("call_"), "{body}");
    assert_eq!(
        body,
        json!({"type": "function_call", "name": "lookup_order", "call_id": call_id,
            "arguments": {"order_id": "427"},
            "call": {"call_sid": report.call_sid, "stream_sid": report.stream_sid,
                "direction": "inbound", "from": "+15550001111", "to": "+15550002222",
                "parameters": {"From": "+15550001111", "To": "+15550002222"}, "metadata": {}}})
    );

    let events = events(&fake);
    let (at, output) = first_output(&events);
    assert_eq!(output["item"]["call_id"], call_id.as_str());
    assert_eq!(
        output["item"]["output"], r#"{"status":"shipped","eta":"tomorrow"}"#,
        "the webhook's JSON, compacted, members in its order"
    );
    assert_eq!(
        next_type(&events, at),
        "response.create",
        "{:#?}",
        &events[at..]
    );

    let t = app.transcript(&report.call_sid);
    let tools = tool_turns(&t);
    assert_eq!(tools.len(), 1, "{t:#}");
    assert_eq!(tools[0]["name"], "lookup_order");
    assert_eq!(tools[0]["arguments"], json!({"order_id": "427"}));
    assert_eq!(
        tools[0]["output"],
        json!({"status": "shipped", "eta": "tomorrow"})
    );
    assert!(tools[0]["duration_ms"].is_u64());
    let assistant = t["turns"].as_array().unwrap().iter().any(|turn| {
        turn["text"]
            .as_str()
            .unwrap()
            .contains("The tool answered: {\"status\":\"shipped\"")
    });
    assert!(assistant, "the model answered with the output: {t:#}");

    let mut names = Vec::new();
    while let Ok(event) = feed.try_recv() {
        if let CallEvent::ToolResult { outcome, .. } = &event {
            assert_eq!(*outcome, "ok");
        }
        names.push(event.name());
    }
    let called = names
        .iter()
        .position(|n| *n == "tool.called")
        .expect("tool.called");
    let result = names
        .iter()
        .position(|n| *n == "tool.result")
        .expect("tool.result");
    assert!(called < result, "{names:?}");

    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="lookup_order",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(metric(&metrics, "tool_call_duration_seconds_count"), 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_slow_webhook_times_out_with_an_error_output_while_caller_audio_keeps_flowing() {
    let webhook = FakeWebhook::start(Answer::Never).await;
    let opts = scripted(&[("lookup_order", r#"{"order_id":"427"}"#)]);
    let (app, fake, _dir) = tools_app(opts, tools_json(&webhook.url, 1000), |_| {}).await;
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.quiet_ms = 3000;
    let running = tokio::spawn(sim::run(call));
    webhook.wait_for(1).await;
    let sent_before = fake.connections()[0].client_events.len();
    let report = running.await.unwrap().expect("call");
    app.calls_finished().await;

    let events = events(&fake);
    let (at, output) = first_output(&events);
    assert_eq!(
        output["item"]["output"],
        r#"{"error":"the tool did not answer within 1000 ms"}"#
    );
    assert_eq!(next_type(&events, at), "response.create");
    let appended = events[sent_before..at]
        .iter()
        .filter(|e| e["type"] == "input_audio_buffer.append")
        .count();
    assert!(
        appended >= 25,
        "caller frames kept reaching the model while the tool was running (1 s = 50): {appended}"
    );
    let t = app.transcript(&report.call_sid);
    assert_eq!(
        tool_turns(&t)[0]["error"],
        "the tool did not answer within 1000 ms"
    );
    assert!(!report.closed_by_server, "the call went on");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="lookup_order",outcome="timeout"}"#
        ),
        1.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_arguments_and_unknown_tools_get_error_outputs_and_never_reach_the_webhook() {
    let webhook = FakeWebhook::start(Answer::Json(200, "{}".into())).await;
    let opts = scripted(&[
        ("lookup_order", r#"{"order_id": 427}"#),
        ("make_coffee", "{}"),
    ]);
    let (app, fake, _dir) = tools_app(opts, tools_json(&webhook.url, 8000), |_| {}).await;
    let call = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    );
    let report = sim::run(call).await.expect("call");
    app.calls_finished().await;

    assert!(
        webhook.received().is_empty(),
        "the webhook was never called"
    );
    let events = events(&fake);
    let outputs: Vec<&Value> = events
        .iter()
        .filter(|e| e["item"]["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 2, "{events:#?}");
    let invalid = outputs[0]["item"]["output"].as_str().unwrap();
    assert!(
        invalid.starts_with(r#"{"error":"invalid arguments: /order_id: 427 is not of type"#),
        "{invalid}"
    );
    assert_eq!(
        outputs[1]["item"]["output"],
        r#"{"error":"unknown function"}"#
    );
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="lookup_order",outcome="invalid_arguments"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="unknown",outcome="unknown_tool"}"#
        ),
        1.0
    );
    assert_eq!(tool_turns(&app.transcript(&report.call_sid)).len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_transfer_dials_the_destination_through_twilio_only_after_the_handoff_line_played() {
    let twilio = FakeTwilio::start().await;
    let opts = scripted(&[("transfer_call", r#"{"destination":"sales"}"#)]);
    let (app, fake, _dir) = tools_app(opts, json!({}), with_twilio(&twilio)).await;
    let mut call = call_options(
        &app,
        vec![clip("caller-hello.wav"), clip("caller-question.wav")],
    );
    let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
    twilio.add_inbound_call(&sid, "+15550001111", "+15550002222");
    call.call_sid = Some(sid.clone());
    let report = sim::run(call).await.expect("call");
    app.calls_finished().await;

    let events = events(&fake);
    let declared: Vec<&str> = events[0]["session"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(declared.contains(&"transfer_call"), "{declared:?}");
    let (at, output) = first_output(&events);
    assert_eq!(
        output["item"]["output"],
        r#"{"status":"transferring","destination":"sales"}"#
    );
    assert!(
        events[at + 1..]
            .iter()
            .all(|e| e["type"] != "response.create"),
        "the handoff line is the model's last word"
    );
    let update = twilio
        .requests()
        .pop()
        .expect("Twilio was asked to transfer");
    assert_eq!(
        update.path,
        format!(
            "/2010-04-01/Accounts/{}/Calls/{sid}.json",
            twilio.account_sid
        )
    );
    assert_eq!(
        update.form_values("Twiml"),
        [r#"<Response><Dial callerId="+15550001111">+15551230001</Dial></Response>"#]
    );
    assert_eq!(
        report.heard,
        fake.connections()[0].sent_audio,
        "the whole handoff line was heard before the call was handed over"
    );
    assert!(
        report.closed_by_server,
        "the stream ended with the transfer"
    );
    let t = app.transcript(&sid);
    assert_eq!(t["end_reason"], "transferred");
    assert_eq!(t["transferred_to"], "sales");
    app.shutdown().await;
}

#[tokio::test]
async fn an_undeclared_destination_is_refused_and_never_dialled() {
    let twilio = FakeTwilio::start().await;
    let opts = scripted(&[("transfer_call", r#"{"destination":"+15559999999"}"#)]);
    let (app, fake, _dir) = tools_app(opts, json!({}), with_twilio(&twilio)).await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    let declared = events(&fake)[0]["session"]["tools"].clone();
    let transfer = declared
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "transfer_call")
        .unwrap();
    assert_eq!(
        transfer["parameters"]["properties"]["destination"]["enum"],
        json!(["sales", "support"]),
        "the model sees names only"
    );
    let (_, output) = first_output(&events(&fake));
    assert!(output["item"]["output"]
        .as_str()
        .unwrap()
        .contains("invalid arguments"));
    assert!(twilio.requests().is_empty(), "nothing was dialled");
    assert!(!report.closed_by_server);
    assert_eq!(
        app.transcript(&report.call_sid)["end_reason"],
        "caller_hung_up"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_transfer_twilio_refuses_is_told_to_the_model_and_the_call_goes_on() {
    let twilio = FakeTwilio::start().await;
    let opts = scripted(&[("transfer_call", r#"{"destination":"support"}"#)]);
    let (app, fake, _dir) = tools_app(opts, json!({}), with_twilio(&twilio)).await;
    twilio.fail_next(400, 21220, "Invalid call state");
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    let update = twilio.requests().pop().expect("a transfer was attempted");
    assert_eq!(
        update.form_values("Twiml"),
        [
            r#"<Response><Dial callerId="+15550001111"><Sip>sip:help@example.com</Sip></Dial></Response>"#
        ]
    );
    let events = events(&fake);
    let told = events.iter().position(|e| {
        e["item"]["role"] == "system"
            && e["item"]["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .contains("transfer to support failed")
    });
    let told = told.expect("the model was told");
    assert_eq!(next_type(&events, told), "response.create");
    assert!(!report.closed_by_server, "the call went on");
    let t = app.transcript(&report.call_sid);
    assert_eq!(t["end_reason"], "caller_hung_up");
    assert!(t.get("transferred_to").is_none());
    let tools = tool_turns(&t);
    assert_eq!(tools.last().unwrap()["error"], "the transfer failed");
    app.shutdown().await;
}

#[tokio::test]
async fn keys_pressed_together_reach_the_model_as_one_message_and_one_caller_turn() {
    let (app, fake, _dir) = tools_app(FakeOptions::default(), json!({}), |_| {}).await;
    let mut call = call_options(&app, vec![]);
    call.quiet_ms = 2500;
    call.inject_after_start = ["4", "2", "7", "#"]
        .iter()
        .enumerate()
        .map(|(i, digit)| {
            Message::text(
                json!({"event": "dtmf", "sequenceNumber": (i + 2).to_string(), "streamSid": "MZ0",
                    "dtmf": {"track": "inbound_track", "digit": digit}})
                .to_string(),
            )
        })
        .collect();
    let report = sim::run(call).await.expect("call");
    app.calls_finished().await;

    let events = events(&fake);
    let messages: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "conversation.item.create" && e["item"]["role"] == "user")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(messages.len(), 1, "{events:#?}");
    let item = &events[messages[0]]["item"];
    assert_eq!(
        item["content"],
        json!([{"type": "input_text", "text": "The caller pressed 4 2 7 #"}])
    );
    assert_eq!(next_type(&events, messages[0]), "response.create");
    let t = app.transcript(&report.call_sid);
    let keyed: Vec<&Value> = t["turns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.get("dtmf").is_some())
        .collect();
    assert_eq!(keyed.len(), 1, "{t:#}");
    assert_eq!(keyed[0]["role"], "caller");
    assert_eq!(keyed[0]["dtmf"], "427#");
    assert!(
        report.replies_started >= 1,
        "the assistant answered the keys"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn mcp_servers_are_declared_in_the_sdks_shape_and_their_calls_are_recorded_and_counted() {
    let opts = scripted(&[("crm.find_customer", r#"{"phone":"+15550001111"}"#)]);
    let (app, fake, _dir) = tools_app(opts, tools_json("http://127.0.0.1:9/x", 8000), |_| {}).await;
    let report = sim::run(call_options(&app, vec![clip("caller-hello.wav")]))
        .await
        .expect("call");
    app.calls_finished().await;

    let tools = events(&fake)[0]["session"]["tools"].clone();
    let mcp: Vec<&Value> = tools
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "mcp")
        .collect();
    assert_eq!(
        mcp,
        [
            &json!({"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example.com/mcp",
            "headers": {"Authorization": "Bearer crm-token"}, "allowed_tools": ["find_customer"],
            "require_approval": "never"})
        ]
    );
    let t = app.transcript(&report.call_sid);
    let turns = tool_turns(&t);
    assert_eq!(turns.len(), 1, "{t:#}");
    assert_eq!(turns[0]["name"], "crm.find_customer");
    assert_eq!(turns[0]["arguments"], json!({"phone": "+15550001111"}));
    assert_eq!(turns[0]["output"], json!({"ran": "find_customer"}));
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="crm.find_customer",outcome="ok"}"#
        ),
        1.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_api_call_chooses_its_tools_and_unknown_names_are_422() {
    let twilio = FakeTwilio::start().await;
    let webhook = FakeWebhook::start(Answer::Json(200, r#"{"ok":true}"#.into())).await;
    let opts = scripted(&[("lookup_order", r#"{"order_id":"1"}"#)]);
    let token = "tools-api-token-0123456789";
    let configure = with_twilio(&twilio);
    let (app, fake, _dir) = tools_app(opts, tools_json(&webhook.url, 8000), move |c| {
        configure(c);
        c.api_token = Some(token.into());
        c.public_url = Some("https://relay.example.com".into());
        c.twilio_phone_number = Some("+15550009999".into());
    })
    .await;
    let post = |body: Value| {
        axum::http::Request::post("/api/calls")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    };
    let (status, _, body) = app
        .request(post(
            json!({"to": "+15551234567", "tools": ["lookup_order", "nope", "end_call"]}),
        ))
        .await;
    assert_eq!(status, 422, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["field"], "tools");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("nope, end_call"),
        "{body}"
    );
    assert!(twilio.requests().is_empty());

    let (status, _, body) = app
        .request(post(
            json!({"to": "+15551234567", "tools": ["lookup_order"], "transfer": false,
            "metadata": {"customer": 7}}),
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    let xml = twilio.requests().pop().unwrap().form_values("Twiml")[0].to_string();
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.params = twiml_parameters(&xml);
    sim::run(call).await.expect("call");
    app.calls_finished().await;

    let events = events(&fake);
    let updates: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "session.update")
        .collect();
    let names: Vec<&str> = updates.last().unwrap()["session"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["end_call", "lookup_order"],
        "no crm, no transfer_call for this call"
    );
    let request = webhook.wait_for(1).await[0].json();
    assert_eq!(request["call"]["direction"], "outbound");
    assert_eq!(request["call"]["metadata"], json!({"customer": 7}));
    assert!(request["call"]["parameters"].get("CallRef").is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn tool_calls_still_running_when_the_call_ends_are_cancelled() {
    let webhook = FakeWebhook::start(Answer::Never).await;
    let opts = scripted(&[("lookup_order", r#"{"order_id":"9"}"#)]);
    let (app, _fake, _dir) = tools_app(opts, tools_json(&webhook.url, 30_000), |_| {}).await;
    let mut call = call_options(&app, vec![clip("caller-hello.wav")]);
    call.quiet_ms = 300;
    sim::run(call).await.expect("call");
    webhook.wait_for(1).await;
    // Within 10 s, not the tool's 30 s timeout: the call's end cancelled the request.
    tokio::time::timeout(Duration::from_secs(10), app.calls_finished())
        .await
        .expect("the call's tasks ended");
    let metrics = app.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"tool_calls_total{name="lookup_order",outcome="cancelled"}"#
        ),
        1.0
    );
    app.shutdown().await;
}
