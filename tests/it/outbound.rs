//! The whole outbound flow offline: the relay's API places a call through the in-process Twilio
//! stand-in (`fake_twilio`), which rings, runs the relay's TwiML and connects a simulated callee
//! to the signed stream; the relay checks every signature.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use twilio_realtime_relay::config::Config;
use twilio_realtime_relay::fake_openai::{ConnectionLog, FakeOpenAi, FakeOptions};
use twilio_realtime_relay::fake_twilio::{
    CallLog, Callee, FakeTwilio, FakeTwilioOptions, PhoneNumber,
};
use twilio_realtime_relay::twilio::rest::{TwilioAuth, TwilioRest};
use twilio_realtime_relay::twilio::{signature, twiml};

use crate::support::{clip, metric, spawn_app_on, TestApp};

const FROM: &str = "+15550100001";
const TO: &str = "+15550100002";
const TOKEN: &str = "outbound-api-token";
const INSTRUCTIONS: &str = "You are calling to confirm order 427 for tomorrow.";
/// Long enough for a few turns on a slow machine.
const CALL: Duration = Duration::from_secs(60);

/// The relay, the Twilio stand-in and the Realtime stand-in, wired as in production.
struct Outbound {
    app: TestApp,
    twilio: FakeTwilio,
    realtime: FakeOpenAi,
    http: reqwest::Client,
}

/// A callee saying `clips` with the tests' short gaps.
fn callee(clips: Vec<Vec<u8>>) -> Callee {
    Callee {
        clips,
        quiet_ms: 600,
        interrupt_after_ms: None,
        reply_timeout_ms: 8_000,
        max_call_ms: 40_000,
    }
}

async fn outbound(callee: Callee) -> Outbound {
    let realtime = FakeOpenAi::spawn(FakeOptions::default())
        .await
        .expect("Realtime stand-in");
    let twilio = FakeTwilio::start(FakeTwilioOptions {
        numbers: vec![PhoneNumber::new(FROM)],
        callee,
        ring: Duration::from_millis(100),
        say: Duration::from_millis(100),
        ..FakeTwilioOptions::default()
    })
    .await
    .expect("Twilio stand-in");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Config {
        openai_api_key: Some("sk-test-key".into()),
        openai_realtime_url: realtime.url(),
        twilio_api_base: twilio.base_url(),
        twilio_account_sid: Some(twilio.account_sid.clone()),
        twilio_auth_token: Some(twilio.auth_token.as_str().into()),
        twilio_phone_number: Some(FROM.into()),
        twilio_validate_signature: true,
        api_token: Some(TOKEN.into()),
        public_url: Some(format!("http://{addr}")),
        ..Config::default()
    };
    Outbound {
        app: spawn_app_on(listener, config).await,
        twilio,
        realtime,
        http: reqwest::Client::new(),
    }
}

impl Outbound {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.addr)
    }

    async fn api(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.bearer_auth(TOKEN).send().await.expect("relay API");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /api/calls` with this call's own instructions; the CallSid.
    async fn place(&self) -> String {
        let body =
            json!({"to": TO, "instructions": INSTRUCTIONS, "greeting": "Hi, about your order."});
        let (status, answer) = self
            .api(self.http.post(self.url("/api/calls")).json(&body))
            .await;
        assert_eq!(status, 201, "{answer}");
        assert_eq!(answer["status"], "queued");
        assert_eq!(answer["from"], FROM);
        answer["call_sid"].as_str().expect("call_sid").to_string()
    }

    async fn record(&self, sid: &str) -> Value {
        let (status, record) = self
            .api(self.http.get(self.url(&format!("/api/calls/{sid}"))))
            .await;
        assert_eq!(status, 200, "{record}");
        record
    }

    /// Wait until the relay has bridged the call and applied its own instructions upstream.
    async fn bridged(&self) {
        let applied = self
            .realtime
            .wait_for(Duration::from_secs(15), |c| c.iter().any(has_instructions))
            .await;
        assert!(
            applied,
            "the Realtime stand-in never saw this call's instructions"
        );
    }

    async fn completed(&self, sid: &str) -> CallLog {
        let log = self.twilio.wait_for_completion(sid, CALL).await;
        log.unwrap_or_else(|| panic!("call {sid} did not complete: {:?}", self.twilio.call(sid)))
    }
}

fn has_instructions(c: &ConnectionLog) -> bool {
    c.client_events
        .iter()
        .any(|e| e["type"] == "session.update" && e["session"]["instructions"] == INSTRUCTIONS)
}

fn events(log: &CallLog) -> Vec<(&str, &str, u64, Option<u16>)> {
    let cbs = log.callbacks.iter();
    cbs.map(|c| {
        (
            c.event.as_str(),
            c.status.as_str(),
            c.sequence,
            c.http_status,
        )
    })
    .collect()
}

#[tokio::test]
async fn an_api_call_rings_streams_with_its_own_instructions_and_completes_on_record() {
    let o = outbound(callee(vec![clip("caller-hello.wav")])).await;
    let sid = o.place().await;
    o.bridged().await;
    // While the callee talks, the relay's record says the call was answered.
    assert_eq!(o.record(&sid).await["status"], "in-progress");
    let log = o.completed(&sid).await;

    assert_eq!(
        events(&log),
        [
            ("initiated", "initiated", 0, Some(204)),
            ("ringing", "ringing", 1, Some(204)),
            ("answered", "in-progress", 2, Some(204)),
            ("completed", "completed", 3, Some(204)),
        ],
        "every callback signed and accepted, in order"
    );
    assert_eq!(log.streams.len(), 1, "{:?}", log.notes);
    let stream = &log.streams[0];
    assert_eq!(stream.url, format!("ws://{}/media-stream", o.app.addr));
    assert_eq!(stream.ended_by.as_deref(), Some("callee_hung_up"));
    let names: Vec<&str> = stream.parameters.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&"CallRef") && names.contains(&"StreamToken"),
        "{names:?}"
    );
    let report = stream.report.as_ref().expect("the callee's report");
    assert_eq!(
        report.call_sid, sid,
        "the stream carries the call's own CallSid"
    );
    assert!(
        report.replies_started >= 1,
        "the callee heard the assistant"
    );
    assert_eq!(o.twilio.call(&sid).expect("call").status, "completed");

    o.app.calls_finished().await;
    let record = o.record(&sid).await;
    assert_eq!(record["status"], "completed");
    assert_eq!(record["direction"], "outbound-api");
    assert_eq!(record["to"], TO);
    assert_eq!(
        record["duration_s"],
        json!(log.duration_s.expect("duration"))
    );
    let roles: Vec<&str> = record["transcript"]["turns"]
        .as_array()
        .expect("turns")
        .iter()
        .filter_map(|t| t["role"].as_str())
        .collect();
    assert!(
        roles.contains(&"caller") && roles.contains(&"assistant"),
        "{roles:?}"
    );
    let metrics = o.app.metrics().await;
    assert_eq!(metric(&metrics, r#"errors_total{kind="signature"}"#), 0.0);
}

#[tokio::test]
async fn a_status_callback_with_a_bad_signature_is_refused() {
    let o = outbound(callee(Vec::new())).await;
    let callback = o.url("/twilio/status");
    let params: Vec<(String, String)> = [
        ("AccountSid", o.twilio.account_sid.as_str()),
        ("CallSid", "CA0123456789abcdef0123456789abcdef"),
        ("CallStatus", "ringing"),
        ("SequenceNumber", "1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let good = signature::sign(&o.twilio.auth_token, &callback, &params);
    let post = |params: &[(String, String)], signature: &str| {
        o.http
            .post(&callback)
            .header("X-Twilio-Signature", signature)
            .form(params)
            .send()
    };
    let mut flipped = good.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    assert_eq!(post(&params, &flipped).await.expect("post").status(), 403);
    let mut altered = params.clone();
    altered[2].1 = "completed".into();
    assert_eq!(post(&altered, &good).await.expect("post").status(), 403);
    assert_eq!(post(&params, &good).await.expect("post").status(), 204);

    // The stand-in's own callbacks (a <Say>-only call) are signed the same way and accepted.
    let rest = o.twilio.base_url();
    let calls = format!(
        "{rest}/2010-04-01/Accounts/{}/Calls.json",
        o.twilio.account_sid
    );
    let form = [
        ("To", TO),
        ("From", FROM),
        (
            "Twiml",
            "<Response><Say>Your order ships tomorrow.</Say></Response>",
        ),
        ("StatusCallback", callback.as_str()),
        ("StatusCallbackEvent", "ringing completed"),
    ];
    let placed = o
        .http
        .post(calls)
        .basic_auth(&o.twilio.account_sid, Some(&o.twilio.auth_token));
    let answer: Value = placed
        .form(&form)
        .send()
        .await
        .expect("Calls.json")
        .json()
        .await
        .expect("JSON");
    let log = o.completed(answer["sid"].as_str().expect("sid")).await;
    assert_eq!(log.said, ["Your order ships tomorrow."]);
    assert!(log.streams.is_empty());
    assert_eq!(
        events(&log),
        [
            ("ringing", "ringing", 0, Some(204)),
            ("completed", "completed", 1, Some(204))
        ]
    );
    let metrics = o.app.metrics().await;
    assert_eq!(metric(&metrics, r#"errors_total{kind="signature"}"#), 2.0);
}

#[tokio::test]
async fn hanging_up_through_the_api_ends_the_simulated_stream_and_records_api_hangup() {
    let o = outbound(callee(vec![clip("caller-hello.wav"); 6])).await;
    let sid = o.place().await;
    o.bridged().await;
    let (status, answer) = o
        .api(o.http.post(o.url(&format!("/api/calls/{sid}/hangup"))))
        .await;
    assert_eq!(status, 200, "{answer}");
    let log = o.completed(&sid).await;
    let stream = &log.streams[0];
    assert_eq!(stream.ended_by.as_deref(), Some("call_ended"));
    assert!(stream.error.is_none(), "{:?}", stream.error);
    assert_eq!(
        log.callbacks.last().map(|c| c.status.as_str()),
        Some("completed")
    );

    o.app.calls_finished().await;
    let record = o.record(&sid).await;
    assert_eq!(record["status"], "completed");
    assert_eq!(record["end_reason"], "api_hangup");
    assert_eq!(record["transcript"]["end_reason"], "api_hangup");
}

#[tokio::test]
async fn a_twiml_update_with_dial_ends_the_stream_and_the_call_goes_on_to_the_target() {
    let o = outbound(callee(vec![clip("caller-hello.wav"); 6])).await;
    let sid = o.place().await;
    o.bridged().await;
    let auth = TwilioAuth::AuthToken(o.twilio.auth_token.as_str().into());
    let rest = TwilioRest::new(&o.twilio.base_url(), &o.twilio.account_sid, auth).expect("client");
    let updated = rest
        .update_twiml(&sid, &twiml::dial("+15550003333", Some(FROM)))
        .await
        .expect("Twiml update");
    assert_eq!(updated.status, "in-progress");
    let log = o.completed(&sid).await;
    let stream = &log.streams[0];
    assert_eq!(stream.ended_by.as_deref(), Some("twiml_updated"));
    let report = stream.report.as_ref().expect("report");
    assert!(
        !report.closed_by_server,
        "the stand-in sent stop, as Twilio does"
    );
    assert_eq!(log.dialed, ["+15550003333"]);
    assert_eq!(log.status, "completed");
    assert_eq!(log.documents.len(), 2, "the relay's TwiML, then the update");

    o.app.calls_finished().await;
    assert_eq!(o.record(&sid).await["status"], "completed");
    // An ended call cannot be redirected.
    let again = rest
        .update_twiml(&sid, &twiml::dial("+15550003333", None))
        .await;
    assert_eq!(again.expect_err("ended").code(), Some(21220));
}

#[tokio::test]
async fn a_url_call_fetches_its_twiml_with_a_signed_request() {
    let o = outbound(callee(vec![clip("caller-hello.wav")])).await;
    let calls = format!(
        "{}/2010-04-01/Accounts/{}/Calls.json",
        o.twilio.base_url(),
        o.twilio.account_sid
    );
    let url = o.url("/incoming-call");
    let form = [("To", TO), ("From", FROM), ("Url", url.as_str())];
    let placed = o
        .http
        .post(calls)
        .basic_auth(&o.twilio.account_sid, Some(&o.twilio.auth_token));
    let response = placed.form(&form).send().await.expect("Calls.json");
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.expect("JSON");
    let log = o.completed(answer["sid"].as_str().expect("sid")).await;
    assert!(log.notes.is_empty(), "{:?}", log.notes);
    let report = log.streams[0]
        .report
        .as_ref()
        .expect("the callee joined the relay's stream");
    assert!(report.replies_started >= 1);
    assert!(log.callbacks.is_empty(), "no StatusCallback was asked for");
}

#[tokio::test]
async fn the_rest_api_answers_like_twilio() {
    let numbers: Vec<PhoneNumber> = (1..=5)
        .map(|i| PhoneNumber::new(&format!("+1555010000{i}")))
        .collect();
    let twilio = FakeTwilio::start(FakeTwilioOptions {
        numbers: numbers.clone(),
        page_size: 2,
        ..FakeTwilioOptions::default()
    })
    .await
    .expect("stand-in");
    let base = format!(
        "{}/2010-04-01/Accounts/{}",
        twilio.base_url(),
        twilio.account_sid
    );
    let http = reqwest::Client::new();
    let authed =
        |r: reqwest::RequestBuilder| r.basic_auth(&twilio.account_sid, Some(&twilio.auth_token));
    let json = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<Value>().await.expect("JSON"))
    };

    // IncomingPhoneNumbers pages, as the relay's client follows them.
    let auth = TwilioAuth::AuthToken(twilio.auth_token.as_str().into());
    let rest = TwilioRest::new(&twilio.base_url(), &twilio.account_sid, auth).expect("client");
    let listed = rest.incoming_numbers().await.expect("numbers");
    let listed: Vec<&str> = listed.iter().map(|n| n.phone_number.as_str()).collect();
    let expected: Vec<&str> = numbers.iter().map(|n| n.phone_number.as_str()).collect();
    assert_eq!(listed, expected);
    let (status, first) = json(
        authed(http.get(format!("{base}/IncomingPhoneNumbers.json")))
            .send()
            .await
            .expect("get"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        first["incoming_phone_numbers"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        (first["page"].clone(), first["page_size"].clone()),
        (json!(0), json!(2))
    );
    let next = first["next_page_uri"].as_str().expect("a next page");
    assert!(
        next.starts_with("/2010-04-01/") && next.contains("Page=1"),
        "{next}"
    );
    let last = http.get(format!(
        "{base}/IncomingPhoneNumbers.json?PageSize=4&Page=1&PageToken=PT00000001"
    ));
    let (_, last) = json(authed(last).send().await.expect("get")).await;
    assert_eq!(
        last["incoming_phone_numbers"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(last["next_page_uri"].is_null());

    // Errors in Twilio's shape.
    let wrong = http
        .post(format!("{base}/Calls.json"))
        .basic_auth(&twilio.account_sid, Some("nope"));
    let (status, body) = json(wrong.form(&[("To", TO)]).send().await.expect("post")).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], 20003);
    assert_eq!(
        body["more_info"],
        "https://www.twilio.com/docs/errors/20003"
    );
    let (status, body) = json(
        authed(http.post(format!("{base}/Calls.json")))
            .form(&[("From", FROM)])
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!((status, body["code"].clone()), (400, json!(21201)));
    let strange = [
        ("To", TO),
        ("From", "+15559999999"),
        ("Twiml", "<Response/>"),
    ];
    let (status, body) = json(
        authed(http.post(format!("{base}/Calls.json")))
            .form(&strange)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(
        (status, body["code"].clone()),
        (400, json!(21210)),
        "{body}"
    );
    let unknown = format!("{base}/Calls/CA0123456789abcdef0123456789abcdef.json");
    let (status, body) = json(authed(http.get(unknown)).send().await.expect("get")).await;
    assert_eq!(
        (status, body["code"].clone(), body["status"].clone()),
        (404, json!(20404), json!(404))
    );

    // A call: 201 queued, then GET shows it ended; canceling an ended call changes nothing.
    let form = [
        ("To", TO),
        ("From", numbers[0].phone_number.as_str()),
        ("Twiml", "<Response><Hangup/></Response>"),
    ];
    let (status, call) = json(
        authed(http.post(format!("{base}/Calls.json")))
            .form(&form)
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        (call["status"].clone(), call["direction"].clone()),
        (json!("queued"), json!("outbound-api"))
    );
    let sid = call["sid"].as_str().expect("sid");
    assert!(twilio.wait_for_completion(sid, CALL).await.is_some());
    let one = format!("{base}/Calls/{sid}.json");
    let (status, shown) = json(authed(http.get(&one)).send().await.expect("get")).await;
    assert_eq!((status, shown["status"].clone()), (200, json!("completed")));
    let (status, shown) = json(
        authed(http.post(&one))
            .form(&[("Status", "canceled")])
            .send()
            .await
            .expect("post"),
    )
    .await;
    assert_eq!((status, shown["status"].clone()), (200, json!("completed")));
}

/// `demo --outbound`, the real binary: it must print an assistant turn and a completed record.
#[test]
fn demo_outbound_prints_the_callbacks_an_assistant_turn_and_a_completed_record() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_twilio-realtime-relay"))
        .args(["demo", "--outbound", "--transcript-dir"])
        .arg(dir.path().join("transcripts"))
        .arg("--out")
        .arg(dir.path().join("heard.wav"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    // Both pipes read while it runs, so a full pipe never stalls it.
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo --outbound did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.join().expect("stdout reader");
    let err = stderr.join().expect("stderr reader");
    assert!(status.success(), "{out}\n{err}");
    assert!(out.contains("→ 201"), "{out}");
    assert!(out.contains("#3 completed"), "{out}");
    assert!(out.contains("  Assistant: "), "{out}");
    assert!(out.contains(r#""status": "completed""#), "{out}");
    assert!(
        out.contains("received this call's own instructions"),
        "{out}"
    );
    assert!(
        dir.path()
            .join("heard.wav")
            .metadata()
            .expect("heard.wav")
            .len()
            > 44
    );
}

#[tokio::test]
async fn a_twiml_update_with_another_stream_moves_the_callee_there() {
    let o = outbound(callee(vec![clip("caller-hello.wav"); 2])).await;
    // Another relay (no signature checks) to move the stream to.
    let (other, _other_realtime) =
        crate::support::spawn_with_fake(FakeOptions::default(), |_| {}).await;
    let sid = o.place().await;
    o.bridged().await;
    let auth = TwilioAuth::AuthToken(o.twilio.auth_token.as_str().into());
    let rest = TwilioRest::new(&o.twilio.base_url(), &o.twilio.account_sid, auth).expect("client");
    let moved = format!(
        r#"<Response><Connect><Stream url="{}"><Parameter name="Moved" value="yes"/></Stream></Connect></Response>"#,
        other.media_url()
    );
    rest.update_twiml(&sid, &moved).await.expect("Twiml update");
    let log = o.completed(&sid).await;
    assert_eq!(log.streams.len(), 2, "{:?}", log.notes);
    assert_eq!(log.streams[0].ended_by.as_deref(), Some("twiml_updated"));
    let second = &log.streams[1];
    assert_eq!(second.url, other.media_url());
    assert_eq!(
        second.parameters,
        [("Moved".to_string(), "yes".to_string())]
    );
    assert_eq!(second.ended_by.as_deref(), Some("callee_hung_up"));
    let report = second.report.as_ref().expect("report");
    assert_eq!(report.call_sid, sid);
    assert!(report.replies_started >= 1, "the other relay answered");
}
